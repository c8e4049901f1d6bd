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
#include <sys/resource.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static double peak_rss_mb(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_maxrss / 1024.0;
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
    int threads = 0, iters = 5, batch = 8, i, warmup = 2;
    hv_init_desc id;
    hv_ctx *ctx;
    hv_vit *vit = NULL;
    hv_mae *mae = NULL;
    hv_optim *opt = NULL;
    hv_tensor *images, *labels = NULL;
    double *ms;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--step") && i + 1 < argc) step = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_models --step vits14_infer|vitb14_infer|vits14_train|mae_vits14 [--threads T] [--iters N] [--batch B]\n");
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
    images = hv_randn(ctx, HV_SHAPE(batch, 3, 224, 224), 0, 1);
    if (!strcmp(step, "vits14_infer") || !strcmp(step, "vitb14_infer") || !strcmp(step, "vits14_train")) {
        hv_vit_desc d;
        memset(&d, 0, sizeof d);
        d.preset = step[3] == 'b' ? HV_VIT_B14 : HV_VIT_S14;
        if (!strcmp(step, "vits14_train")) {
            hv_optim_desc od;
            d.num_classes = 1000;
            vit = hv_vit_new(ctx, &d);
            if (!vit) die("hv_vit_new");
            memset(&od, 0, sizeof od);
            od.lr = 1e-4f;
            od.weight_decay = 0.05f;
            opt = hv_optim_new(ctx, hv_vit_params(vit), &od);
            labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(batch));
            for (i = 0; i < batch; i++) hv_data_i32(labels)[i] = (int32_t)(hv_rng_u64(ctx) % 1000);
        } else {
            vit = hv_vit_new(ctx, &d);
            hv_set_grad_enabled(ctx, 0);
        }
        if (!vit) die("hv_vit_new");
    } else if (!strcmp(step, "mae_vits14")) {
        hv_mae_desc d;
        hv_optim_desc od;
        memset(&d, 0, sizeof d);
        d.encoder.preset = HV_VIT_S14;
        d.mask_ratio = 0.8f;
        mae = hv_mae_new(ctx, &d);
        if (!mae) die("hv_mae_new");
        memset(&od, 0, sizeof od);
        od.lr = 3e-4f;
        od.beta2 = 0.95f;
        opt = hv_optim_new(ctx, hv_mae_params(mae), &od);
    } else {
        fprintf(stderr, "bench_models: unknown step '%s'\n", step);
        return 2;
    }
    ms = (double *)malloc(sizeof(double) * (size_t)iters);
    for (i = -warmup; i < iters; i++) {
        double t0 = now_ms();
        hv_tensor *loss = NULL;
        if (mae) loss = hv_mae_forward(mae, images, NULL, NULL, NULL);
        else if (opt) loss = hv_cross_entropy(hv_vit_forward(vit, images, 1), labels);
        else if (!hv_vit_forward(vit, images, 0)) die("forward");
        if (opt) {
            if (!loss) die("forward");
            hv_optim_zero_grad(opt);
            if (hv_backward(loss)) die("backward");
            hv_optim_step(opt);
        }
        hv_step_end(ctx);
        if (i >= 0) ms[i] = now_ms() - t0;
    }
    qsort(ms, (size_t)iters, sizeof(double), cmp_double);
    printf("{\"bench\": \"%s\", \"shape\": \"batch %d, 224x224\", \"threads\": %d, \"ms\": %.3f, \"images_per_s\": %.3f, \"peak_rss_mb\": "
           "%.1f}\n",
           step, batch, hv_get_threads(ctx), ms[iters / 2], batch * 1000.0 / ms[iters / 2], peak_rss_mb());
    free(ms);
    hv_optim_free(opt);
    hv_vit_free(vit);
    hv_mae_free(mae);
    hv_shutdown(ctx);
    return 0;
}
