/* bench_vulkan.c - the GEMM rows of bench.c, the kernel rows of bench_kernels.c and the model steps
   of models.c on a Vulkan device, each checked against the CPU backend on the same inputs.

       build/bench/bench --backend vulkan [--quick | --smoke] [--runs N] [--json FILE] [--device D]
                                          [--tol X] [--no-models] [--verbose] [filter]
       (bench.c hands --backend vulkan over to this program, build/bench/bench_vulkan)

   --device D   index or part of the name (default: as hv_init picks, $HUMANVIT_VULKAN_DEVICE)
   --tol X      the error bound of GEMM and kernel rows (default 1e-5; model steps 10 X)
   --verbose    name the tensors over the bound;  filter: only rows whose name contains it

   Every row makes its inputs on a CPU context and on the Vulkan context from the same seed (so
   they are equal), uploads them once (the Vulkan context's constructors do), runs the work once
   on both and prints the normalised error max |vulkan - cpu| / max |cpu| over every tensor the row
   holds (model steps: the output, and every parameter gradient relative to the model's largest
   gradient, as tests/test_vulkan.c compares training steps). Then it times the Vulkan
   side: one warm-up, then --runs calls, each ending in hv_sync (submit and wait), so queued work
   is counted; medians in ms, GFLOP/s for GEMM and kernels, images/s for model steps.

   Sizes. Default: the CPU benchmarks' own shapes (batch 8 at 224 px). --quick: the quick GEMM
   cases, kernel rows at batch 1 without the ViT-H rows, model steps at batch 4 and 56 px (the
   same networks, 16 patches), 3 runs: what a CPU-emulated device (Mesa's lavapipe) gets through in
   about 25 minutes on a loaded 2-core machine. --smoke: also a quarter of the GEMM M and N, of the kernels' tokens, rows and
   image sides, model steps of depth 2 at 42 px, batch 2 (the training step 4), one run and no
   warm-up: a correctness check in about a minute on lavapipe (./build.sh test runs it, as
   test_bench_vulkan). On lavapipe the timings are CPU emulation, not GPU numbers.

   The training rows time whole steps: forward, backward, AdamW (hv_optim_step on the device) and
   hv_step_end. Their check covers the loss and the gradients, not the AdamW update: on the ViT
   some gradients are rounding noise (see step_err), and AdamW's first update, lr * g / |g|, turns
   noise into full-size steps of either sign (the optimizer kernels are checked by test_vulkan).

   Exit status: 0; 1 when a row failed or its error is over --tol; 77 when there is no Vulkan
   loader or device (the message says why). The last line counts the rows checked. */
#define _POSIX_C_SOURCE 200809L
#define HUMANVIT_VULKAN
#define HUMANVIT_IMPLEMENTATION
#include "../humanvit.h"
#include "bench_common.h"
#include "kernel_rows.h"
#include "model_steps.h"

static hv_ctx *cpu, *vk;
static FILE *json;
static int runs, n_ok, n_bad, verbose;
static double tol = 1e-5;
static char device[256]; /* the device name, JSON-safe */

/* --tol for GEMM and kernel rows; model steps get 10 times that (1e-4, test_vulkan's bound for
   its training steps): after many layers float rounding in another order compounds, and a
   batch-statistics BatchNorm over 4 images divides by small deviations */
static double row_tol(const char *group) { return strcmp(group, "model") ? tol : 10 * tol; }

/* ---- comparing ------------------------------------------------------------------------------ */

static float *download(const hv_tensor *t) {
    int64_t n = hv_numel(t);
    float *h = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (h && hv_tensor_copy_to(t, h, sizeof(float) * (size_t)n)) {
        free(h);
        return NULL;
    }
    return h;
}

/* max |got - ref| of two f32 tensors of one shape, and *ref_max = max |ref|; INFINITY when either
   cannot be read or a value is not finite */
static double max_diff(const hv_tensor *got, const hv_tensor *ref, double *ref_max) {
    int64_t n, i;
    float *a, *b;
    double d = 0;
    *ref_max = 0;
    if (!got || !ref || hv_numel(got) != hv_numel(ref)) return INFINITY;
    if (hv_tensor_dtype(ref) != HV_F32) return 0; /* indices: inputs only */
    n = hv_numel(ref);
    a = download(got);
    b = download(ref);
    if (!a || !b) d = INFINITY;
    for (i = 0; a && b && i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = e; /* NaN propagates */
        if (fabs((double)b[i]) > *ref_max) *ref_max = fabs((double)b[i]);
    }
    free(a);
    free(b);
    return d;
}

/* the normalised error max |got - ref| / max(max |ref|, 1e-6) */
static double norm_err(const hv_tensor *got, const hv_tensor *ref) {
    double m, d = max_diff(got, ref, &m);
    return d / (m > 1e-6 ? m : 1e-6);
}

/* ---- printing ------------------------------------------------------------------------------- */

/* one row: the table line and, with --json, the JSON line. ms <= 0: not timed (why says so);
   work: flops (GFLOP/s) or, with images > 0, images per run (images/s) */
static void row(const char *group, const char *name, const char *shape, double ms, double flops, int images, double err,
                const char *why) {
    int ok = why == NULL && err <= row_tol(group);
    vk->kernel_failed = 0; /* said; the next row starts clean */
    if (ok) n_ok++;
    else n_bad++;
    printf("%-22s %-30s", name, shape);
    if (ms > 0) printf(" %10.3f", ms);
    else printf(" %10s", "-");
    if (ms > 0 && images > 0) printf(" %9.2f img/s", images * 1e3 / ms);
    else if (ms > 0 && flops > 0) printf(" %9.2f GFLOP/s", flops / (ms * 1e6));
    else printf(" %17s", "");
    if (why) printf("  %s\n", why);
    else printf("  %9.2e%s\n", err, ok ? "" : "  OVER TOLERANCE");
    fflush(stdout);
    if (!json) return;
    fprintf(json, "{\"bench\": \"%s\", \"group\": \"%s\", \"shape\": \"%s\", \"backend\": \"vulkan\", \"device\": \"%s\"", name, group,
            shape, device);
    if (ms > 0) fprintf(json, ", \"ms\": %.4f", ms);
    if (ms > 0 && images > 0) fprintf(json, ", \"images_per_s\": %.3f", images * 1e3 / ms);
    else if (ms > 0 && flops > 0) fprintf(json, ", \"gflops\": %.2f", flops / (ms * 1e6));
    if (why) fprintf(json, ", \"error\": \"%s\"", why);
    else fprintf(json, ", \"max_err\": %.3e", err);
    fprintf(json, "}\n");
}

static void heading(const char *what, const char *unit) {
    printf("\n%-22s %-30s %10s %17s  %9s\n", what, "shape", "ms", unit, "max err");
}

/* ---- timing: one warm-up (unless n is 1: --smoke), then the median of n calls, each ending in a
   full sync ---------------------------------------------------------------------------------- */

typedef void (*work_fn)(void *arg);
static double time_vk(work_fn fn, void *arg, int n) {
    double t[64];
    int r;
    if (n > 64) n = 64;
    if (n > 1) {
        fn(arg);
        hv_sync(vk);
    }
    for (r = 0; r < n; r++) {
        double t0 = now_s();
        fn(arg);
        hv_sync(vk);
        t[r] = (now_s() - t0) * 1e3;
    }
    return median(t, n);
}

/* ---- GEMM ----------------------------------------------------------------------------------- */

typedef struct gemm_work {
    hv__gemm_args g;
} gemm_work;
static void gemm_run(void *arg) { vk->be->gemm(vk, &((gemm_work *)arg)->g); }

/* smoke: a quarter of M and N */
static void bench_gemm(const bcase *full, int smoke) {
    bcase cs = *full, *c = &cs;
    hv_tensor *a, *b, *cc, *av, *bv, *cv;
    gemm_work w;
    hv__gemm_args gc;
    double flops = 2.0 * (double)c->m * (double)c->n * (double)c->k * (double)c->batch, err, ms;
    char shape[64];
    if (smoke) c->m /= 4, c->n /= 4, flops /= 16;
    shape_str(c, shape, sizeof shape);
    a = hv_randn(cpu, HV_SHAPE(c->batch * c->m * c->k), 0, 1);
    b = hv_randn(cpu, HV_SHAPE(c->batch * c->k * c->n), 0, 1);
    cc = hv_zeros(cpu, HV_SHAPE(c->batch * c->m * c->n));
    av = hv_tensor_to(a, vk);
    bv = hv_tensor_to(b, vk);
    cv = hv_zeros(vk, HV_SHAPE(c->batch * c->m * c->n));
    if (!a || !b || !cc || !av || !bv || !cv) {
        row("gemm", c->name, shape, 0, 0, 0, 0, hv_last_error());
    } else {
        gc = case_args(c, (const float *)a->data, (const float *)b->data, (float *)cc->data);
        w.g = case_args(c, (const float *)av->data, (const float *)bv->data, (float *)cv->data);
        cpu->be->gemm(cpu, &gc);
        gemm_run(&w);
        err = norm_err(cv, cc);
        ms = time_vk(gemm_run, &w, runs);
        row("gemm", c->name, shape, ms, flops, 0, err, vk->kernel_failed ? hv_last_error() : NULL);
    }
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_tensor_free(cc);
    hv_tensor_free(av);
    hv_tensor_free(bv);
    hv_tensor_free(cv);
}

/* ---- kernels -------------------------------------------------------------------------------- */

/* the sizes a kernel row really has (kr_rows shrinks them), as text */
static void kr_shape(const bench *b, char *buf, size_t n) {
    const int64_t *p = b->p;
    if (b->setup == att_setup)
        snprintf(buf, n, "B%lld H%lld N%lld d%lld", (long long)p[0], (long long)p[2], (long long)p[1], (long long)p[3]);
    else if (b->setup == conv_setup)
        snprintf(buf, n, "%lldx%lldx%lldx%lld -> %lld k%lld s%lld g%lld", (long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3],
                 (long long)p[4], (long long)p[5], (long long)p[6], (long long)(p[8] ? p[8] : 1));
    else snprintf(buf, n, "%lld x %lld", (long long)p[0], (long long)p[1]);
}

static void kernel_run(void *arg) {
    bench *b = (bench *)arg;
    b->run(b, 1);
}

static void bench_kernel(bench *bc, int seed) {
    bench bv = *bc;
    double err = 0, ms;
    char shape[64];
    int j;
    kr_shape(bc, shape, sizeof shape);
    bc->ctx = cpu;
    bv.ctx = vk;
    hv_rng_seed(cpu, (uint64_t)seed);
    hv_rng_seed(vk, (uint64_t)seed);
    bc->setup(bc);
    bv.setup(&bv);
    bc->run(bc, 1);
    bv.run(&bv, 1);
    for (j = 0; j < KR_NT; j++) {
        double e;
        if (!bc->t[j]) continue;
        e = norm_err(bv.t[j], bc->t[j]);
        if (!(e <= err)) err = e;
    }
    ms = time_vk(kernel_run, &bv, runs);
    row("kernel", bc->name, shape, ms, bv.flops, 0, err, vk->kernel_failed ? hv_last_error() : NULL);
    kr_free(bc);
    kr_free(&bv);
    hv_step_end(cpu);
    hv_step_end(vk);
}

/* ---- model steps ---------------------------------------------------------------------------- */

static void step_run(void *arg) {
    mstep *s = (mstep *)arg;
    hv_tensor *out = mstep_forward(s);
    if (out && s->opt && !mstep_backward(s, out)) hv_optim_step(s->opt);
    hv_sync(vk);
    hv_step_end(vk);
}

/* the largest error over the step's output (normalised by its own scale) and, for a training
   step, every parameter gradient, normalised by the largest gradient of the model: some
   gradients are zero in exact arithmetic (the final norm's bias under the batch-statistics
   BatchNorm head sums to zero over the batch), and their rounding noise over their own scale
   says nothing (tests/test_vulkan.c compares its training steps the same way) */
static double step_err(mstep *sv, mstep *sc, const char **why) {
    hv_tensor *ov = mstep_forward(sv), *oc = mstep_forward(sc);
    double err, scale = 1e-30, m, *d;
    int i, n = sc->params->count;
    *why = NULL;
    if (!ov || !oc) {
        *why = hv_last_error();
        return INFINITY;
    }
    err = norm_err(ov, oc);
    if (verbose && !(err <= row_tol("model"))) printf("    output: error %.3g\n", err);
    if (sc->opt) {
        if (mstep_backward(sv, ov) || mstep_backward(sc, oc)) {
            *why = hv_last_error();
            return INFINITY;
        }
        d = (double *)calloc((size_t)(n ? n : 1), sizeof(double));
        for (i = 0; i < n; i++) {
            hv_tensor *gc = hv_grad(sc->params->tensors[i]), *gv = hv_grad(sv->params->tensors[i]);
            if (!gc && !gv) continue;
            d[i] = max_diff(gv, gc, &m);
            if (m > scale) scale = m;
        }
        for (i = 0; i < n; i++) {
            if (verbose && !(d[i] / scale <= row_tol("model"))) printf("    gradient of %s: error %.3g\n", sc->params->names[i], d[i] / scale);
            if (!(d[i] / scale <= err)) err = d[i] / scale;
        }
        free(d);
    }
    hv_step_end(vk);
    hv_step_end(cpu);
    return err;
}

static void bench_step(const char *name, int batch, int img, int depth, int iters, int seed) {
    mstep sc, sv;
    const char *why = NULL;
    char shape[64];
    double err = INFINITY, ms = 0;
    snprintf(shape, sizeof shape, "batch %d, %dx%d%s", batch, img, img, depth ? ", depth 2" : "");
    hv_rng_seed(cpu, (uint64_t)seed);
    hv_rng_seed(vk, (uint64_t)seed);
    if (mstep_new(&sc, cpu, name, batch, img, depth) || mstep_new(&sv, vk, name, batch, img, depth)) {
        why = hv_last_error();
    } else {
        err = step_err(&sv, &sc, &why);
        if (!why) {
            ms = time_vk(step_run, &sv, iters);
            if (vk->kernel_failed) why = hv_last_error();
        }
    }
    row("model", name, shape, ms, 0, batch, err, why);
    mstep_free(&sc);
    mstep_free(&sv);
    hv_set_grad_enabled(cpu, 1); /* the inference steps turn it off */
    hv_set_grad_enabled(vk, 1);
    hv_step_end(cpu);
    hv_step_end(vk);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    static const char *steps[] = {"vits14_infer", "vitb14_infer", "vits14_train", "mae_vits14"};
    static bench rows[64];
    const char *json_path = NULL, *dev = NULL, *filter = NULL;
    int quick = 0, smoke = 0, models = 1, i, nrows, batch, img, depth, iters;
    hv_init_desc id;
    const char *p;
    char *q;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) dev = argv[++i];
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc) tol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--smoke")) quick = smoke = 1;
        else if (!strcmp(argv[i], "--no-models")) models = 0;
        else if (!strcmp(argv[i], "--verbose")) verbose = 1;
        else if (argv[i][0] != '-' && !filter) filter = argv[i];
        else {
            fprintf(stderr, "usage: bench --backend vulkan [--quick | --smoke] [--runs N] [--json FILE] [--device D] [--tol X] "
                            "[--no-models] [--verbose] [filter]\n(unknown or incomplete flag '%s')\n", argv[i]);
            return 2;
        }
    }
    if (runs <= 0) runs = smoke ? 1 : quick ? 3 : 11;
    memset(&id, 0, sizeof id);
    id.seed = 1;
    if (!(cpu = hv_init(&id))) {
        fprintf(stderr, "bench: %s\n", hv_last_error());
        return 1;
    }
    id.backend = HV_BACKEND_VULKAN;
    id.device = dev;
    if (!(vk = hv_init(&id))) {
        fprintf(stderr, "bench: --backend vulkan: %s\n", hv_last_error());
        hv_shutdown(cpu);
        return 77;
    }
    for (p = hv_ctx_device_name(vk), q = device; *p && q < device + sizeof device - 1; p++) *q++ = *p == '"' || *p == '\\' ? '\'' : *p;
    *q = 0;
    if (json_path && !(json = fopen(json_path, "w"))) {
        fprintf(stderr, "bench: cannot write %s\n", json_path);
        return 1;
    }
    printf("humanvit on Vulkan: device \"%s\"%s\n", device,
           ((hv__vk *)vk->dev)->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU
               ? " (a CPU device: these timings are CPU emulation, not GPU numbers; the errors are what counts)"
               : "");
    printf("median of %d run%s after a warm-up, each ending in a full sync (hv_sync); sizes: %s\n", runs, runs == 1 ? "" : "s",
           smoke ? "--smoke (GEMM M, N / 4; kernels at batch 1, 1/4 of the tokens and sides; model steps of depth 2 at batch 2 (training 4), 42 px)"
                 : quick ? "--quick (quick GEMM cases; kernels at batch 1; model steps at batch 4, 56 px)"
                         : "full (the CPU benchmarks' shapes)");
    printf("max err = max |vulkan - cpu| / max |cpu| over every tensor of the row (CPU: %d threads, its fast kernels); tolerance %.0e, "
           "model steps %.0e\n",
           hv_get_threads(cpu), tol, row_tol("model"));

    heading("GEMM", "GFLOP/s");
    for (i = 0; i < NCASES; i++) {
        if (cases[i].bf16 || cases[i].op) continue; /* the CPU's bf16 kernel; hv_matmul's batch loop: CPU rows */
        if ((!quick || cases[i].quick) && (!filter || strstr(cases[i].name, filter))) bench_gemm(&cases[i], smoke);
    }

    heading("kernel", "GFLOP/s");
    nrows = kr_rows(rows, filter, smoke ? 2 : quick);
    for (i = 0; i < nrows; i++) bench_kernel(&rows[i], 100 + i);

    if (models) {
        batch = quick ? 4 : 8;
        img = smoke ? 42 : quick ? 56 : 224;
        depth = smoke ? 2 : 0;
        iters = smoke ? 1 : quick ? 2 : 5;
        heading("model step", "images/s");
        for (i = 0; i < 4; i++)
            if (!filter || strstr(steps[i], filter))
                /* --smoke: batch 2 but for vits14_train: its head's BatchNorm makes two images'
                   features exactly +-1, and the backbone's gradients rounding noise */
                bench_step(steps[i], smoke && i != 2 ? 2 : batch, img, depth, iters, 200 + i);
    }

    printf("\ncorrectness: %d rows within tolerance of the CPU, %d over or failed\n", n_ok, n_bad);
    if (json) fclose(json);
    hv_shutdown(vk);
    hv_shutdown(cpu);
    return n_bad ? 1 : 0;
}
