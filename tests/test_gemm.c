/* test_gemm.c - every fast SGEMM path (the cpu-simd section of humanvit.h) against a double
   precision reference, and the scalar hv__cpu_gemm against the same reference.

   This file compiles the implementation itself, to reach the kernels directly. build.sh builds
   it twice: as tests/test_gemm (the kernel the compiler flags select, -march=native) and, with
   -DHUMANVIT_CPU_DISPATCH linked to kernels_cpu/hv_cpu_*.c, as the dispatch variant, which checks every
   ISA kernel the CPU can run plus the run-time choice.

   Error bound, per element (the classic gamma_k bound of a k-term dot product, with a factor 2):
       |C - C_exact| <= (k + 4) * 2^-23 * (|alpha| * sum_p |A_ip B_pj| + |beta| * |C0_ij|)
   The bf16 kernel (opt-in, AVX512_BF16 CPUs) runs every test here too, with the rounding of its
   operands added: each product is off by at most (1 + 2^-8)^2 - 1 < 1.01 * 2^-7 of itself, so
       |C - C_exact| <= ((k + 4) * 2^-23 + 1.01 * 2^-7) * |alpha| * sum_p |A_ip B_pj| + (f32 beta term)
   (a worst case: tests/test_bf16.c measures the typical error of the bf16 path).
   Anything reading outside the matrices (the gaps of lda/ldb/ldc hold NaN), writing outside C
   (the gaps of ldc hold a sentinel) or reading C when beta = 0 (C holds NaN) fails it. */
#define HUMANVIT_IMPLEMENTATION
#include "humanvit.h"
#include "testlib.h"

typedef struct kern {
    const char *isa;
    hv__sgemm_fn fn; /* NULL: the scalar reference hv__cpu_gemm */
    double rounding; /* relative error of each product from rounding the operands (bf16); 0: f32 */
} kern;
static kern kerns[5];
static int nkerns;

static void find_kernels(void) {
#if defined(HV__SGEMM_DISPATCH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma")) {
        kerns[nkerns].isa = "avx512";
        kerns[nkerns++].fn = hv__sgemm_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        kerns[nkerns].isa = "avx2";
        kerns[nkerns++].fn = hv__sgemm_avx2;
    }
#else
    if (hv__sgemm_cur) {
        kerns[nkerns].isa = hv__sgemm_cur_isa;
        kerns[nkerns++].fn = hv__sgemm_cur;
    }
#endif
    if (hv__sgemm_bf16_cur) {
        kerns[nkerns].isa = "avx512 bf16";
        kerns[nkerns].rounding = 1.01 * ldexp(1.0, -7);
        kerns[nkerns++].fn = hv__sgemm_bf16_cur;
    } else {
        printf("  SKIP the bf16 kernel: none for this CPU or build (needs AVX512_BF16 and gcc >= 10 or clang >= 9)\n");
    }
    kerns[nkerns].isa = "scalar reference";
    kerns[nkerns++].fn = NULL;
}

static const float SENTINEL = 12345.0f;

static float frand(hv_ctx *ctx) { return hv_rng_uniform(ctx) * 2.0f - 1.0f; }

/* one GEMM case: matrices with padded leading dimensions and batch strides, run through `k`
   and checked element by element. bmode bit 0: A broadcast (stride 0), bit 1: B broadcast,
   bit 2: every product accumulates into one C (stride 0, applied in order, as the reference). */
typedef struct gcase {
    int ta, tb;
    int64_t m, n, k, batch, pad;
    float alpha, beta;
    int bmode;
} gcase;

static int run_case(hv_ctx *ctx, const kern *kn, const gcase *c, const char *file, int line) {
    int64_t ar = c->ta ? c->k : c->m, ac = c->ta ? c->m : c->k; /* stored shapes */
    int64_t br = c->tb ? c->n : c->k, bc = c->tb ? c->k : c->n;
    int64_t lda = ac + c->pad, ldb = bc + c->pad, ldc = c->n + c->pad;
    int64_t sa = (c->bmode & 1) ? 0 : ar * lda, sb = (c->bmode & 2) ? 0 : br * ldb, sc = (c->bmode & 4) ? 0 : c->m * ldc;
    int64_t na = (c->bmode & 1) ? 1 : c->batch, nb = (c->bmode & 2) ? 1 : c->batch, ncm = (c->bmode & 4) ? 1 : c->batch;
    size_t la = (size_t)(na * ar * lda + 1), lb = (size_t)(nb * br * ldb + 1), lc = (size_t)(ncm * c->m * ldc + 1);
    float *A = (float *)malloc(sizeof(float) * la), *B = (float *)malloc(sizeof(float) * lb);
    float *C = (float *)malloc(sizeof(float) * lc);
    double *ref = (double *)malloc(sizeof(double) * lc), *bound = (double *)malloc(sizeof(double) * lc);
    int64_t i, j, p, bi, bad = 0;
    hv__gemm_args g;
    double worst = 0;
    for (i = 0; i < (int64_t)la; i++) A[i] = ((i % lda) < ac) ? frand(ctx) : NAN;
    for (i = 0; i < (int64_t)lb; i++) B[i] = ((i % ldb) < bc) ? frand(ctx) : NAN;
    for (i = 0; i < (int64_t)lc; i++) {
        C[i] = ((i % ldc) < c->n) ? (c->beta == 0.0f ? NAN : frand(ctx)) : SENTINEL;
        ref[i] = C[i];
        bound[i] = 0;
    }
    /* the reference: the batch in order, in double */
    for (bi = 0; bi < c->batch; bi++) {
        const float *a = A + bi * sa, *b = B + bi * sb;
        double *r = ref + bi * sc, *bd = bound + bi * sc;
        for (i = 0; i < c->m; i++)
            for (j = 0; j < c->n; j++) {
                double s = 0, sabs = 0, c0 = c->beta == 0.0f ? 0.0 : r[i * ldc + j];
                for (p = 0; p < c->k; p++) {
                    double x = c->ta ? a[p * lda + i] : a[i * lda + p], y = c->tb ? b[j * ldb + p] : b[p * ldb + j];
                    s += x * y;
                    sabs += fabs(x * y);
                }
                r[i * ldc + j] = (double)c->alpha * s + (double)c->beta * c0;
                bd[i * ldc + j] = (double)(c->k + 4) * ldexp(1.0, -23) * (fabs((double)c->alpha) * sabs + fabs((double)c->beta * c0)) +
                                  kn->rounding * fabs((double)c->alpha) * sabs + fabs((double)c->beta) * bd[i * ldc + j];
            }
    }
    memset(&g, 0, sizeof g);
    g.trans_a = c->ta;
    g.trans_b = c->tb;
    g.m = c->m;
    g.n = c->n;
    g.k = c->k;
    g.batch = c->batch;
    g.alpha = c->alpha;
    g.beta = c->beta;
    g.a = A;
    g.lda = lda;
    g.batch_stride_a = sa;
    g.b = B;
    g.ldb = ldb;
    g.batch_stride_b = sb;
    g.c = C;
    g.ldc = ldc;
    g.batch_stride_c = sc;
    if (kn->fn) hv__sgemm_run(ctx, kn->fn, &g);
    else hv__cpu_gemm(ctx, &g);
    for (i = 0; i < (int64_t)lc - 1; i++) {
        double d;
        if ((i % ldc) >= c->n) {
            if (C[i] != SENTINEL) bad++;
            continue;
        }
        d = fabs((double)C[i] - ref[i]);
        if (!(d <= bound[i] + 1e-30)) bad++; /* NaN fails */
        if (d / (bound[i] + 1e-30) > worst) worst = d / (bound[i] + 1e-30);
    }
    if (bad)
        tl_fail_msg(file, line,
                    "%s: ta=%d tb=%d m=%lld n=%lld k=%lld batch=%lld pad=%lld alpha=%g beta=%g bmode=%d: %lld bad elements "
                    "(worst error / bound %.3g)",
                    kn->isa, c->ta, c->tb, (long long)c->m, (long long)c->n, (long long)c->k, (long long)c->batch, (long long)c->pad,
                    c->alpha, c->beta, c->bmode, (long long)bad, worst);
    free(A);
    free(B);
    free(C);
    free(ref);
    free(bound);
    return bad == 0;
}
#define RUN_CASE(ctx, kn, c) run_case((ctx), (kn), (c), __FILE__, __LINE__)

static void test_isa(hv_ctx *ctx) {
    const char *isa = hv_cpu_isa(ctx);
    int i;
    CHECK(!strcmp(isa, "avx512") || !strcmp(isa, "avx2") || !strcmp(isa, "neon") || !strcmp(isa, "scalar"), "unknown isa '%s'", isa);
    /* the choice is the best kernel this test found runnable (the first of the list) */
    CHECK(!strcmp(isa, nkerns > 1 ? kerns[0].isa : "scalar"), "hv_cpu_isa says %s, expected %s", isa, kerns[0].isa);
    CHECK(!hv__sgemm_bf16_cur || hv__sgemm_cur, "a bf16 kernel without an f32 one");
    printf("  hv_cpu_isa: %s; kernels under test:", isa);
    for (i = 0; i < nkerns; i++) printf(" %s", kerns[i].isa);
    printf("\n");
#if defined(__AVX512F__) && !defined(HV__SGEMM_DISPATCH)
    CHECK(!strcmp(isa, "avx512"), "built with AVX-512 but the kernel is %s", isa);
#endif
}

/* all four transpose cases over the odd sizes, with alpha/beta and padded leading dimensions */
static void test_gemm_shapes(hv_ctx *ctx) {
    static const int64_t dims[] = {1, 7, 13, 31, 65, 257};
    static const float alphas[] = {1.0f, 0.5f, -2.0f}, betas[] = {0.0f, 1.0f, 0.3f};
    int q, t, s;
    for (q = 0; q < nkerns; q++)
        for (t = 0; t < 4; t++)
            for (s = 0; s < 18; s++) {
                gcase c;
                memset(&c, 0, sizeof c);
                c.ta = t & 1;
                c.tb = t >> 1;
                c.m = dims[hv_rng_u64(ctx) % 6];
                c.n = dims[hv_rng_u64(ctx) % 6];
                c.k = dims[hv_rng_u64(ctx) % 6];
                c.batch = 1;
                c.pad = s % 3 == 0 ? 0 : (int64_t)(hv_rng_u64(ctx) % 5 + 1);
                c.alpha = alphas[s % 3];
                c.beta = betas[(s / 3) % 3];
                if (!RUN_CASE(ctx, &kerns[q], &c)) return;
            }
}

/* sizes around 1000 (several cache blocks in every direction), one large dimension at a time */
static void test_gemm_large(hv_ctx *ctx) {
    /* {33, 2100, 900}: more B than one packing phase holds (two phases over K, two NC blocks) */
    static const int64_t shapes[][3] = {{1000, 65, 31}, {31, 1031, 65}, {65, 31, 1000}, {300, 257, 520}, {129, 2100, 7}, {7, 33, 1500}, {33, 2100, 900}};
    int q, t, s;
    for (q = 0; q < nkerns; q++)
        for (s = 0; s < 7; s++)
            for (t = 0; t < 4; t++) {
                gcase c;
                memset(&c, 0, sizeof c);
                c.ta = t & 1;
                c.tb = t >> 1;
                c.m = shapes[s][0];
                c.n = shapes[s][1];
                c.k = shapes[s][2];
                c.batch = 1;
                c.pad = t;
                c.alpha = t == 2 ? 0.75f : 1.0f;
                c.beta = (s + t) % 2 ? 0.0f : 1.0f;
                if (!RUN_CASE(ctx, &kerns[q], &c)) return;
            }
}

/* batches: separate operands, broadcast A or B (stride 0), and one C accumulating every product */
static void test_gemm_batch(hv_ctx *ctx) {
    static const int64_t shapes[][4] = {{5, 13, 17, 9}, {3, 65, 70, 80}, {6, 1, 31, 7}, {4, 40, 257, 64}};
    int q, s, bm;
    for (q = 0; q < nkerns; q++)
        for (s = 0; s < 4; s++)
            for (bm = 0; bm < 8; bm++) {
                gcase c;
                memset(&c, 0, sizeof c);
                c.ta = bm & 1;
                c.tb = (s + bm) & 1;
                c.batch = shapes[s][0];
                c.m = shapes[s][1];
                c.n = shapes[s][2];
                c.k = shapes[s][3];
                c.pad = s;
                c.alpha = 1.0f;
                c.beta = (bm & 4) ? 1.0f : (s % 2 ? 0.0f : 0.5f);
                c.bmode = bm;
                if (!RUN_CASE(ctx, &kerns[q], &c)) return;
            }
}

/* nothing to multiply: k = 0 gives C = beta * C; alpha = 0 reads neither A nor B (as BLAS); empty
   outputs touch nothing */
static void test_gemm_degenerate(hv_ctx *ctx) {
    int q;
    for (q = 0; q < nkerns; q++) {
        hv__gemm_args g;
        float C[6] = {1, 2, 3, 4, 5, 6}, A[4] = {NAN, NAN, NAN, NAN}, B[4] = {NAN, NAN, NAN, NAN};
        int i;
        if (!kerns[q].fn) continue; /* the reference multiplies alpha * NaN; it is not BLAS here */
        memset(&g, 0, sizeof g);
        g.m = 2;
        g.n = 3;
        g.k = 0;
        g.batch = 1;
        g.alpha = 1.0f;
        g.beta = 0.5f;
        g.a = A;
        g.lda = 1;
        g.b = B;
        g.ldb = 3;
        g.c = C;
        g.ldc = 3;
        hv__sgemm_run(ctx, kerns[q].fn, &g);
        for (i = 0; i < 6; i++) CHECK(C[i] == 0.5f * (float)(i + 1), "%s: k=0 beta=0.5: C[%d] = %g", kerns[q].isa, i, C[i]);
        g.k = 2;
        g.lda = 2;
        g.alpha = 0.0f;
        g.beta = 0.0f;
        hv__sgemm_run(ctx, kerns[q].fn, &g);
        for (i = 0; i < 6; i++) CHECK(C[i] == 0.0f, "%s: alpha=0 beta=0: C[%d] = %g", kerns[q].isa, i, C[i]);
        g.m = 0;
        g.beta = 2.0f;
        C[0] = 7.0f;
        hv__sgemm_run(ctx, kerns[q].fn, &g);
        CHECK(C[0] == 7.0f, "%s: m=0 wrote C", kerns[q].isa);
    }
}

/* 1, 2, 3, 4 and 7 threads give the same bits (the DETERMINISM promise), on shapes that take the
   shared-B path with row and column splits, the whole-matrix-per-thread batch path and the
   accumulate-in-order batch path */
static void test_gemm_threads_bit_identical(hv_ctx *ctx) {
    static const int64_t shapes[][5] = {/* batch, m, n, k, bmode */
                                        {1, 257, 300, 700, 0}, {1, 1100, 96, 130, 0}, {1, 40, 2100, 900, 0},
                                        {12, 65, 70, 480, 0},  {5, 100, 90, 400, 4}};
    int saved = hv_get_threads(ctx), q, s, t, th;
    static const int threads[] = {2, 3, 4, 7};
    for (q = 0; q < nkerns; q++) {
        if (!kerns[q].fn) continue;
        for (s = 0; s < 5; s++)
            for (t = 0; t < 4; t++) {
                int64_t b = shapes[s][0], m = shapes[s][1], n = shapes[s][2], k = shapes[s][3], i;
                int bm = (int)shapes[s][4];
                size_t la = (size_t)(b * m * k), lb = (size_t)(b * k * n), lc = (size_t)(b * m * n);
                float *A = (float *)malloc(sizeof(float) * la), *B = (float *)malloc(sizeof(float) * lb);
                float *C1 = (float *)malloc(sizeof(float) * lc), *CT = (float *)malloc(sizeof(float) * lc);
                hv__gemm_args g;
                for (i = 0; i < (int64_t)la; i++) A[i] = frand(ctx);
                for (i = 0; i < (int64_t)lb; i++) B[i] = frand(ctx);
                for (i = 0; i < (int64_t)lc; i++) C1[i] = frand(ctx);
                memcpy(CT, C1, sizeof(float) * lc);
                memset(&g, 0, sizeof g);
                g.trans_a = t & 1;
                g.trans_b = t >> 1;
                g.m = m;
                g.n = n;
                g.k = k;
                g.batch = b;
                g.alpha = 0.9f;
                g.beta = 0.7f;
                g.a = A;
                g.lda = g.trans_a ? m : k;
                g.batch_stride_a = m * k;
                g.b = B;
                g.ldb = g.trans_b ? k : n;
                g.batch_stride_b = k * n;
                g.ldc = n;
                g.batch_stride_c = (bm & 4) ? 0 : m * n;
                hv_set_threads(ctx, 1);
                g.c = C1;
                hv__sgemm_run(ctx, kerns[q].fn, &g);
                for (th = 0; th < 4; th++) {
                    float *C = (float *)malloc(sizeof(float) * lc);
                    memcpy(C, CT, sizeof(float) * lc);
                    hv_set_threads(ctx, threads[th]);
                    g.c = C;
                    hv__sgemm_run(ctx, kerns[q].fn, &g);
                    CHECK(memcmp(C, C1, sizeof(float) * lc) == 0, "%s: batch=%lld m=%lld n=%lld k=%lld ta=%d tb=%d: %d threads differ from 1",
                          kerns[q].isa, (long long)b, (long long)m, (long long)n, (long long)k, g.trans_a, g.trans_b, hv_get_threads(ctx));
                    free(C);
                }
                free(A);
                free(B);
                free(C1);
                free(CT);
            }
    }
    hv_set_threads(ctx, saved);
}

/* the packing buffers grow once: the same GEMMs again allocate nothing */
static void test_gemm_no_steady_alloc(hv_ctx *ctx) {
    static const int64_t shapes[][3] = {{300, 200, 500}, {20, 30, 40}, {1000, 64, 64}};
    int q, s, round;
    for (q = 0; q < nkerns; q++) {
        uint64_t before = 0;
        if (!kerns[q].fn) continue;
        for (round = 0; round < 3; round++) {
            if (round == 1) before = hv_alloc_count();
            for (s = 0; s < 3; s++) {
                int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], i;
                float *A = (float *)malloc(sizeof(float) * (size_t)(m * k)), *B = (float *)malloc(sizeof(float) * (size_t)(k * n));
                float *C = (float *)malloc(sizeof(float) * (size_t)(m * n));
                hv__gemm_args g;
                for (i = 0; i < m * k; i++) A[i] = 1.0f;
                for (i = 0; i < k * n; i++) B[i] = 1.0f;
                memset(&g, 0, sizeof g);
                g.m = m;
                g.n = n;
                g.k = k;
                g.batch = 1;
                g.alpha = 1.0f;
                g.a = A;
                g.lda = k;
                g.b = B;
                g.ldb = n;
                g.c = C;
                g.ldc = n;
                hv__sgemm_run(ctx, kerns[q].fn, &g);
                CHECK(C[m * n - 1] == (float)k, "%s: C = %g, want %lld", kerns[q].isa, C[m * n - 1], (long long)k);
                free(A);
                free(B);
                free(C);
            }
        }
        CHECK(hv_alloc_count() == before, "%s: %llu allocations in steady state", kerns[q].isa, (unsigned long long)(hv_alloc_count() - before));
    }
}

/* the ops reach the fast kernel: hv_matmul through the backend table against the reference */
static void test_matmul_uses_fast_path(hv_ctx *ctx) {
    int64_t da[2], db[2], i;
    hv_tensor *a, *b, *c;
    float *pa, *pb, *pc;
    double worst = 0;
    da[0] = 70;
    da[1] = 90;
    db[0] = 90;
    db[1] = 50;
    a = hv_uniform(ctx, hv_shape_of(2, da), -1, 1);
    b = hv_uniform(ctx, hv_shape_of(2, db), -1, 1);
    c = hv_matmul(a, b, 0, 0);
    CHECK_NOTNULL(c);
    if (!c) return;
    CHECK(ctx->be->gemm == (hv__sgemm_cur ? hv__cpu_gemm_simd : hv__cpu_gemm), "backend gemm is not the chosen kernel");
    pa = hv_data(a);
    pb = hv_data(b);
    pc = hv_data(c);
    for (i = 0; i < 70 * 50; i++) {
        int64_t r = i / 50, col = i % 50, p;
        double s = 0;
        for (p = 0; p < 90; p++) s += (double)pa[r * 90 + p] * pb[p * 50 + col];
        if (fabs(s - pc[i]) > worst) worst = fabs(s - pc[i]);
    }
    CHECK(worst < 1e-4, "hv_matmul error %g", worst);
    hv_tensor_free(a);
    hv_tensor_free(b);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    hv_rng_seed(ctx, 42);
    find_kernels();
    TL_RUN(ctx, test_isa);
    TL_RUN(ctx, test_gemm_shapes);
    TL_RUN(ctx, test_gemm_large);
    TL_RUN(ctx, test_gemm_batch);
    TL_RUN(ctx, test_gemm_degenerate);
    TL_RUN(ctx, test_gemm_threads_bit_identical);
    TL_RUN(ctx, test_gemm_no_steady_alloc);
    TL_RUN(ctx, test_matmul_uses_fast_path);
    hv_shutdown(ctx);
    TL_DONE();
}
