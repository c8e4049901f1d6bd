/* models.c - model-step benchmarks: images per second and peak resident memory of one step kind
   per process, so that each peak is that step's own.

   usage: bench_models --step NAME [--threads T] [--iters N] [--batch B]
     NAME: vits14_infer, vitb14_infer (forward, no grad), vits14_train (forward, backward, AdamW;
           1000-class head, cross-entropy), mae_vits14 (MAE pretraining step: mask 0.8, decoder
           512/8/16, AdamW betas 0.9/0.95)
   Prints one JSON object: {"bench", "shape", "threads", "ms" (median over iters), "images_per_s",
   "peak_rss_mb"}. bench/models.py runs every step here and in PyTorch and prints the table. */
#include "humanvit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "peak_rss.h"
#include <time.h>
#include "model_steps.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static void die(const char *what) {
    fprintf(stderr, "bench_models: %s: %s\n", what, hv_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    const char *step = NULL;
    int threads = 0, iters = 5, batch = 8, i, warmup = 2, rc;
    hv_init_desc id;
    hv_ctx *ctx;
    mstep s;
    double *ms;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--step") && i + 1 < argc) step = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_models --step " MSTEP_NAMES " [--threads T] [--iters N] [--batch B]\n");
            return 2;
        }
    }
    if (!step || iters < 1 || batch < 1) {
        fprintf(stderr, "bench_models: --step is required; --iters and --batch must be >= 1\n");
        return 2;
    }
    memset(&id, 0, sizeof id);
    id.threads = threads;
    id.seed = 1;
    ctx = hv_init(&id);
    if (!ctx) die("hv_init");
    rc = mstep_new(&s, ctx, step, batch, 0, 0);
    if (rc == 2) {
        fprintf(stderr, "bench_models: unknown step '%s'\n", step);
        return 2;
    }
    if (rc) die(step);
    ms = (double *)malloc(sizeof(double) * (size_t)iters);
    for (i = -warmup; i < iters; i++) {
        double t0 = now_ms();
        hv_tensor *out = mstep_forward(&s);
        if (!out) die("forward");
        if (s.opt) {
            if (mstep_backward(&s, out)) die("backward");
            hv_optim_step(s.opt);
        }
        hv_step_end(ctx);
        if (i >= 0) ms[i] = now_ms() - t0;
    }
    qsort(ms, (size_t)iters, sizeof(double), cmp_double);
    printf("{\"bench\": \"%s\", \"shape\": \"batch %d, 224x224\", \"threads\": %d, \"ms\": %.3f, \"images_per_s\": %.3f, \"peak_rss_mb\": "
           "%.1f}\n",
           step, batch, hv_get_threads(ctx), ms[iters / 2], batch * 1000.0 / ms[iters / 2], peak_rss_mb());
    free(ms);
    mstep_free(&s);
    hv_shutdown(ctx);
    return 0;
}
