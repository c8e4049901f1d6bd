/* bench.c - SGEMM speed against the machine's own FMA peak and, where PyTorch is installed, against
   torch.matmul on the same shapes, threads and machine (bench/torch_compare.py measures those).

       ./build.sh bench                      (builds build/bench/bench, runs torch, then this)
       build/bench/bench [--quick] [--runs N] [--threads LIST] [--json FILE] [--torch FILE] [--list]
                         [--no-bf16 | --only-bf16] [--only TEXT]
       build/bench/bench --backend vulkan [--quick | --smoke] [...]

   --backend B     cpu (default: this program) or vulkan: runs build/bench/bench_vulkan, next to
                   this program, with the other arguments (GEMM, kernel and model-step rows on the
                   Vulkan device, each checked against the CPU; see bench_vulkan.c)

   --list          print the cases as JSON lines (what torch_compare.py reads) and exit
   --torch FILE    JSON lines from torch_compare.py: adds torch_ms and speedup (torch_ms / ms)
   --json FILE     one JSON object per line and case: bench, shape, threads, ms, gflops, ...
   --threads LIST  comma-separated thread counts (default: 1 and all the machine's cores)
   --quick         fewer cases and runs (a smoke test)
   --no-bf16, --only-bf16   leave out the bf16 rows, or the f32 ones (bf16's "vs f32" needs both)
   --only TEXT     only the cases whose name contains TEXT

   With one thread the table also gives CPU-time figures (this thread's CPU time, torch's
   likewise): on a machine shared with other busy processes the wall clock mostly measures them.

   Peak: a register-only loop of independent FMAs (16 accumulators of the widest vector the
   compiler may use), per core and with every thread at once; the best of 20 tries.
   GEMM: C = op(A) op(B), beta 0, through the backend's gemm (the kernel hv_matmul uses); median of
   N runs after one warm-up. Shapes are M x N x K; NN/NT/TN say which operand is stored transposed.
   ViT-S/16 at batch 8: M = 8 * 257 = 2056 tokens, width 384, MLP 1536, qkv 1152, 6 heads of 64.
   bf16 (the *_bf16 rows, where the CPU has AVX512_BF16): the same GEMMs with the bf16 kernel
   (hv_set_gemm_precision); % of the measured vdpbf16ps peak (a register-only loop like the FMA
   one), "vs f32" = the f32 row's ms / this row's ms in the same run; torch runs torch.matmul on
   bf16 tensors (bf16 output; humanvit's C stays f32). */
#define HUMANVIT_IMPLEMENTATION
#include "humanvit.h"
#include "bench_common.h"
#include <time.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__) || defined(__AVX__) || defined(__AVX512BF16__)
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

/* CPU time of the calling thread: with one thread it excludes the time other processes held the
   core, so on a shared machine it is the steadier measure (it still sees their cache traffic) */
static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- FMA peak ------------------------------------------------------------------------------- */

/* `iters` rounds of 16 independent FMAs on the widest vector; returns the flops done. Sixteen
   named accumulators (an array would live in memory) hide the FMA latency on any core; the inputs
   come through volatile so the compiler can neither fold nor drop the chains. */
static volatile float peak_x = 0.999f, peak_y = 0.0001f;
static volatile float peak_sink;
#define PEAK_16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#if defined(__AVX512F__)
typedef __m512 pvec;
#define PEAK_LANES 16
#define PEAK_SET(v) _mm512_set1_ps(v)
#define PEAK_FMA(a, x, y) _mm512_fmadd_ps(a, x, y)
#define PEAK_ADD(a, b) _mm512_add_ps(a, b)
static float peak_lane0(pvec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 pvec;
#define PEAK_LANES 8
#define PEAK_SET(v) _mm256_set1_ps(v)
#define PEAK_FMA(a, x, y) _mm256_fmadd_ps(a, x, y)
#define PEAK_ADD(a, b) _mm256_add_ps(a, b)
static float peak_lane0(pvec v) { return _mm256_cvtss_f32(v); }
#elif defined(__ARM_NEON) && defined(__aarch64__)
typedef float32x4_t pvec;
#define PEAK_LANES 4
#define PEAK_SET(v) vdupq_n_f32(v)
#define PEAK_FMA(a, x, y) vfmaq_f32(y, a, x)
#define PEAK_ADD(a, b) vaddq_f32(a, b)
static float peak_lane0(pvec v) { return vgetq_lane_f32(v, 0); }
#else
typedef float pvec;
#define PEAK_LANES 1
#define PEAK_SET(v) (v)
#define PEAK_FMA(a, x, y) ((a) * (x) + (y))
#define PEAK_ADD(a, b) ((a) + (b))
static float peak_lane0(pvec v) { return v; }
#endif
static double fma_loop(int64_t iters) {
    pvec x = PEAK_SET(peak_x), y = PEAK_SET(peak_y);
    int64_t it;
#define PEAK_DECL(i) pvec a##i = PEAK_SET((float)(i));
#define PEAK_STEP(i) a##i = PEAK_FMA(a##i, x, y);
#define PEAK_SUM(i) a0 = PEAK_ADD(a0, a##i);
    PEAK_16(PEAK_DECL)
    for (it = 0; it < iters; it++) {
        PEAK_16(PEAK_STEP)
    }
    PEAK_16(PEAK_SUM)
    peak_sink = peak_lane0(a0);
    return 2.0 * 16 * PEAK_LANES * (double)iters;
}

#ifdef __AVX512BF16__
/* the bf16 peak: the same loop with vdpbf16ps (16 lanes x 2 products x 2 flops each) */
static double dpbf16_loop(int64_t iters) {
    __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(peak_x), _mm512_set1_ps(peak_x)),
             y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(peak_y), _mm512_set1_ps(peak_y));
    int64_t it;
#define DP_DECL(i) __m512 a##i = _mm512_set1_ps((float)(i));
#define DP_STEP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
#define DP_SUM(i) a0 = _mm512_add_ps(a0, a##i);
    PEAK_16(DP_DECL)
    for (it = 0; it < iters; it++) {
        PEAK_16(DP_STEP)
    }
    PEAK_16(DP_SUM)
    peak_sink = _mm512_cvtss_f32(a0);
    return 4.0 * 16 * 16 * (double)iters;
}
#endif

/* GFLOP/s of `threads` threads running `loop` at once: the best of 20 tries of ~50 ms, as the
   peak is what the machine can do, and on a shared machine a short quiet moment is likelier than
   a long one; *cpu gets the single-thread figure by CPU time */
static double loop_peak(double (*loop)(int64_t), int threads, double *cpu) {
    double best = 0;
    int t;
    int64_t iters = 1000000;
    *cpu = 0;
    for (t = 0; t < 20; t++) {
        double flops = 0, t0 = now_s(), c0 = cpu_s(), g;
        if (threads == 1) {
            flops = loop(iters);
            g = flops / (cpu_s() - c0) * 1e-9;
            if (g > *cpu) *cpu = g;
        } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : flops)
#endif
            flops += loop(iters);
        }
        g = flops / (now_s() - t0) * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

/* ---- torch numbers: JSON lines {"bench": ..., "threads": T, "torch_ms": X, ...} ------------- */

#define MAX_TORCH 256
static struct {
    char name[64];
    int threads;
    double ms, cpu_ms;
} torch_rows[MAX_TORCH];
static int ntorch;

/* the number after "key": in a JSON line (enough for the flat lines torch_compare.py writes) */
static int json_num(const char *line, const char *key, double *out) {
    char pat[80];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(line, pat);
    if (!p) return 0;
    return sscanf(p + strlen(pat), " %lf", out) == 1;
}
static int json_str(const char *line, const char *key, char *out, size_t n) {
    char pat[80];
    const char *p, *e;
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    p = strstr(line, pat);
    if (!p) return 0;
    p += strlen(pat);
    e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= n) return 0;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
    return 1;
}
static void load_torch(const char *path) {
    char line[1024];
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench: cannot read %s; no torch column\n", path);
        return;
    }
    while (ntorch < MAX_TORCH && fgets(line, sizeof line, f)) {
        double th, ms;
        if (!json_str(line, "bench", torch_rows[ntorch].name, sizeof torch_rows[ntorch].name)) continue;
        if (!json_num(line, "threads", &th) || !json_num(line, "torch_ms", &ms)) continue;
        torch_rows[ntorch].threads = (int)th;
        torch_rows[ntorch].ms = ms;
        if (!json_num(line, "torch_cpu_ms", &torch_rows[ntorch].cpu_ms)) torch_rows[ntorch].cpu_ms = 0;
        ntorch++;
    }
    fclose(f);
}
static double torch_ms(const char *name, int threads, double *cpu_ms) {
    int i;
    *cpu_ms = 0;
    for (i = 0; i < ntorch; i++)
        if (torch_rows[i].threads == threads && !strcmp(torch_rows[i].name, name)) {
            *cpu_ms = torch_rows[i].cpu_ms;
            return torch_rows[i].ms;
        }
    return 0;
}

/* ---- timing --------------------------------------------------------------------------------- */

/* the 1-minute load average (Linux), printed with the results: on a shared machine other
   processes take cores and cache, and every number here with them */
static double load_avg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

/* median ms of `runs` GEMMs (after one warm-up that also grows the packing buffers); *cpu_ms the
   median CPU time of the calling thread (meaningful with one thread) */
static double time_case(hv_ctx *ctx, const bcase *c, int runs, double *cpu_ms) {
    int64_t sa = c->m * c->k, sb = c->k * c->n, sc = c->m * c->n, i;
    float *A = (float *)malloc(sizeof(float) * (size_t)(sa * c->batch));
    float *B = (float *)malloc(sizeof(float) * (size_t)(sb * c->batch));
    float *C = (float *)malloc(sizeof(float) * (size_t)(sc * c->batch));
    double t[64], tc[64], med;
    hv__gemm_args g;
    int r;
    if (!A || !B || !C) {
        fprintf(stderr, "bench: out of memory for %s\n", c->name);
        exit(1);
    }
    for (i = 0; i < sa * c->batch; i++) A[i] = hv_rng_uniform(ctx) - 0.5f;
    for (i = 0; i < sb * c->batch; i++) B[i] = hv_rng_uniform(ctx) - 0.5f;
    memset(C, 0, sizeof(float) * (size_t)(sc * c->batch));
    g = case_args(c, A, B, C);
    if (runs > 64) runs = 64;
    hv_set_gemm_precision(ctx, c->bf16 ? HV_GEMM_BF16 : HV_GEMM_F32);
    if (c->op) { /* (8, 6, rows, cols) tensors over the same data; the product lives in the arena */
        int prev = hv_set_grad_enabled(ctx, 0);
        hv_tensor *ta = hv_tensor_new(ctx, HV_F32, HV_SHAPE(8, c->batch / 8, c->ta ? c->k : c->m, c->ta ? c->m : c->k));
        hv_tensor *tb = hv_tensor_new(ctx, HV_F32, HV_SHAPE(8, c->batch / 8, c->tb ? c->n : c->k, c->tb ? c->k : c->n));
        hv_tensor_copy_from(ta, A, sizeof(float) * (size_t)(sa * c->batch));
        hv_tensor_copy_from(tb, B, sizeof(float) * (size_t)(sb * c->batch));
        for (r = -1; r < runs; r++) { /* r = -1: the warm-up */
            double t0 = now_s(), c0 = cpu_s();
            hv_matmul(ta, tb, c->ta, c->tb);
            if (r >= 0) t[r] = (now_s() - t0) * 1e3, tc[r] = (cpu_s() - c0) * 1e3;
            hv_step_end(ctx);
        }
        hv_tensor_free(ta);
        hv_tensor_free(tb);
        hv_set_grad_enabled(ctx, prev);
    } else {
        ctx->be->gemm(ctx, &g);
        for (r = 0; r < runs; r++) {
            double t0 = now_s(), c0 = cpu_s();
            ctx->be->gemm(ctx, &g);
            t[r] = (now_s() - t0) * 1e3;
            tc[r] = (cpu_s() - c0) * 1e3;
        }
    }
    hv_set_gemm_precision(ctx, HV_GEMM_F32);
    med = median(t, runs);
    *cpu_ms = median(tc, runs);
    free(A);
    free(B);
    free(C);
    return med;
}

/* --backend vulkan: the Vulkan rows are a program of their own (built with HUMANVIT_VULKAN when
   the Vulkan headers are there), so this one builds and runs on any machine; argv without the
   --backend pair goes to it */
static int run_vulkan(int argc, char **argv) {
    char path[4096];
    const char *slash = strrchr(argv[0], '/');
    char **args = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int i, n = 0;
    if (!args) return 1;
    snprintf(path, sizeof path, "%.*sbench_vulkan", slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
    args[n++] = path;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) i++;
        else args[n++] = argv[i];
    }
    args[n] = NULL;
    if (slash) execv(path, args);
    else execvp(path, args);
    fprintf(stderr, "bench: --backend vulkan runs %s, which is not there (it is built by ./build.sh bench where the Vulkan headers are "
                    "installed: apt-get install libvulkan-dev)\n", path);
    free(args);
    return 77;
}

int main(int argc, char **argv) {
    const char *json_path = NULL, *torch_path = NULL, *threads_arg = NULL, *only = NULL;
    int quick = 0, runs = 0, i, nthr = 0, thr[8], all, no_bf16 = 0, only_bf16 = 0, have_bf16;
    FILE *json = NULL;
    hv_ctx *ctx;
    for (i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--backend")) {
            if (!strcmp(argv[i + 1], "vulkan")) return run_vulkan(argc, argv);
            if (strcmp(argv[i + 1], "cpu")) {
                fprintf(stderr, "bench: --backend must be cpu or vulkan, not '%s'\n", argv[i + 1]);
                return 2;
            }
        }
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) i++; /* cpu */
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--torch") && i + 1 < argc) torch_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads_arg = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-bf16")) no_bf16 = 1;
        else if (!strcmp(argv[i], "--only-bf16")) only_bf16 = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--list")) {
            for (i = 0; i < NCASES; i++)
                printf("{\"bench\": \"%s\", \"m\": %lld, \"n\": %lld, \"k\": %lld, \"batch\": %lld, \"ta\": %d, \"tb\": %d, \"quick\": %d, "
                       "\"bf16\": %d}\n",
                       cases[i].name, (long long)cases[i].m, (long long)cases[i].n, (long long)cases[i].k, (long long)cases[i].batch,
                       cases[i].ta, cases[i].tb, cases[i].quick, cases[i].bf16);
            return 0;
        } else {
            fprintf(stderr, "usage: %s [--backend cpu|vulkan] [--quick] [--runs N] [--threads 1,2] [--json FILE] [--torch FILE] [--list] "
                    "[--no-bf16 | --only-bf16] [--only TEXT]\n",
                    argv[0]);
            return 2;
        }
    }
    ctx = hv_init(NULL);
    if (!ctx) {
        fprintf(stderr, "bench: %s\n", hv_last_error());
        return 1;
    }
    all = hv_get_threads(ctx);
    if (threads_arg) {
        const char *p = threads_arg;
        while (*p && nthr < 8) {
            thr[nthr] = atoi(p);
            if (thr[nthr] > 0) nthr++;
            p = strchr(p, ',');
            if (!p) break;
            p++;
        }
    } else {
        thr[nthr++] = 1;
        if (all > 1) thr[nthr++] = all;
    }
    if (runs <= 0) runs = quick ? 3 : 11;
    if (torch_path) load_torch(torch_path);
    if (json_path && !(json = fopen(json_path, "w"))) {
        fprintf(stderr, "bench: cannot write %s\n", json_path);
        return 1;
    }
    have_bf16 = hv_set_gemm_precision(ctx, HV_GEMM_BF16) == HV_GEMM_BF16;
    hv_set_gemm_precision(ctx, HV_GEMM_F32);
    printf("humanvit SGEMM benchmark: kernel %s%s, %d core(s) available, median of %d runs, load average %.2f\n", hv_cpu_isa(ctx),
           have_bf16 ? " (and bf16)" : "", all, runs, load_avg());
    if (!have_bf16 && !no_bf16) printf("no bf16 rows: this CPU or build has no bf16 GEMM kernel (AVX512_BF16)\n");
    for (i = 0; i < nthr; i++) {
        int t = thr[i], c;
        double cpu_peak, peak = loop_peak(fma_loop, t, &cpu_peak), f32_ms[NCASES], f32_cms[NCASES];
        printf("\nthreads %d: FMA peak %.1f GFLOP/s (register-only loop, best of 20)", t, peak);
        if (t == 1) printf("; by CPU time %.1f", cpu_peak);
        printf("\n%-20s %-24s %9s %9s %7s %9s %8s", "bench", "shape (MxNxK)", "ms", "GFLOP/s", "%peak", "torch ms", "speedup");
        if (t == 1) printf(" | CPU time: %7s %8s", "%peak", "speedup");
        printf("\n");
        hv_set_threads(ctx, t);
        for (c = 0; c < NCASES; c++) {
            const bcase *bc = &cases[c];
            double flops = 2.0 * (double)bc->m * (double)bc->n * (double)bc->k * (double)bc->batch, ms, gf, tms, cms, tcms, vs = 0;
            char shape[64];
            int r = runs, twin;
            f32_ms[c] = f32_cms[c] = 0;
            if ((quick && !bc->quick) || (only && !strstr(bc->name, only))) continue;
            if (bc->bf16 ? (no_bf16 || !have_bf16) : only_bf16) continue;
            if (bc->bf16 && (c == 0 || !cases[c - 1].bf16)) { /* the first bf16 row: its peak and header */
#ifdef __AVX512BF16__
                peak = loop_peak(dpbf16_loop, t, &cpu_peak);
                printf("bf16 kernel: vdpbf16ps peak %.1f GFLOP/s", peak);
                if (t == 1) printf("; by CPU time %.1f", cpu_peak);
                printf("; %%peak of that, \"vs f32\" at the end\n");
#else
                printf("bf16 kernel (peak not measured: bench built without -mavx512bf16; %%peak of the FMA peak)\n");
#endif
            }
            if (flops > 1e11 && r > 5) r = 5; /* 4096^3: a second and a half per run on one core */
            shape_str(bc, shape, sizeof shape);
            ms = time_case(ctx, bc, r, &cms);
            gf = flops / (ms * 1e-3) * 1e-9;
            tms = torch_ms(bc->name, t, &tcms);
            f32_ms[c] = ms;
            f32_cms[c] = cms;
            for (twin = 0; bc->bf16 && twin < c; twin++) /* the f32 case of the same GEMM */
                if (!cases[twin].bf16 && !strncmp(cases[twin].name, bc->name, strlen(bc->name) - 5) && !cases[twin].name[strlen(bc->name) - 5])
                    break;
            if (bc->bf16 && twin < c && f32_ms[twin] > 0) vs = (t == 1 ? f32_cms[twin] / cms : f32_ms[twin] / ms);
            printf("%-20s %-24s %9.3f %9.1f %6.1f%%", bc->name, shape, ms, gf, 100.0 * gf / peak);
            if (tms > 0) printf(" %9.3f %7.2fx", tms, tms / ms);
            else printf(" %9s %8s", "-", "-");
            if (t == 1) {
                printf(" |           %6.1f%%", 100.0 * flops / (cms * 1e-3) * 1e-9 / cpu_peak);
                if (tcms > 0) printf(" %7.2fx", tcms / cms);
                else if (vs > 0) printf(" %8s", "-");
            }
            if (vs > 0) printf(" | vs f32 %5.2fx%s", vs, t == 1 ? " (CPU time)" : "");
            printf("\n");
            fflush(stdout);
            if (json) {
                fprintf(json, "{\"bench\": \"%s\", \"shape\": \"%s\", \"threads\": %d, \"ms\": %.4f, \"gflops\": %.2f, \"peak_gflops\": %.2f, \"isa\": \"%s\"",
                        bc->name, shape, t, ms, gf, peak, hv_cpu_isa(ctx));
                if (tms > 0) fprintf(json, ", \"torch_ms\": %.4f, \"speedup\": %.3f", tms, tms / ms);
                if (t == 1) fprintf(json, ", \"cpu_ms\": %.4f, \"cpu_peak_gflops\": %.2f", cms, cpu_peak);
                if (t == 1 && tcms > 0) fprintf(json, ", \"torch_cpu_ms\": %.4f, \"cpu_speedup\": %.3f", tcms, tcms / cms);
                if (bc->bf16) fprintf(json, ", \"precision\": \"bf16\"");
                if (vs > 0) fprintf(json, ", \"vs_f32\": %.3f", vs);
                fprintf(json, "}\n");
            }
        }
    }
    printf("\nload average at the end: %.2f (more than a few tenths: other processes shared the cores)\n", load_avg());
    if (json) fclose(json);
    hv_shutdown(ctx);
    return 0;
}
