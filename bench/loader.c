/* loader.c - the data pipeline's throughput: images per second that hvd_loader (decode-free
   in-memory 256x256 RGB images, the humanlike-vits pretraining augmentation RandomResizedCrop(224,
   0.2-1, bicubic) + flip, ImageNet normalisation) delivers with 0, 1 and 2 worker threads (with
   workers, batches are prepared ahead while the trainer computes). Compare with bench/models'
   images/s: a trainer is data-bound only when the loader is slower than its step.

   usage: bench_loader [--batches N] */
#define HV_DATA_IMPLEMENTATION
#include "../examples/hv_data.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    const int n = 64, side = 256, batch = 8;
    int batches = argc > 2 && !strcmp(argv[1], "--batches") ? atoi(argv[2]) : 24, workers, i;
    uint8_t *pixels = (uint8_t *)malloc((size_t)n * side * side * 3);
    int32_t *labels = (int32_t *)malloc(sizeof(int32_t) * n);
    hv_ctx *ctx = hv_init(NULL);
    hvd_dataset *ds;
    for (i = 0; i < n * side * side * 3; i++) pixels[i] = (uint8_t)(i * 2654435761u >> 24);
    for (i = 0; i < n; i++) labels[i] = i % 10;
    ds = hvd_dataset_memory(n, side, side, 3, pixels, labels, 10);
    if (!ds) {
        fprintf(stderr, "bench_loader: %s\n", hvd_last_error());
        return 1;
    }
    for (workers = 0; workers <= 2; workers++) {
        hvd_loader_desc d;
        hvd_loader *ld;
        hv_tensor *x, *y;
        double t0;
        memset(&d, 0, sizeof d);
        d.dataset = ds;
        d.transform = hvd_transform_mae_pretrain(224);
        d.batch_size = batch;
        d.shuffle = 1;
        d.drop_last = 1;
        d.workers = workers;
        d.seed = 1;
        ld = hvd_loader_new(ctx, &d);
        if (!ld || hvd_loader_next(ld, &x, &y) <= 0) { /* the first batch warms the workers up */
            fprintf(stderr, "bench_loader: %s\n", hvd_last_error());
            return 1;
        }
        t0 = now_ms();
        for (i = 0; i < batches; i++)
            if (hvd_loader_next(ld, &x, &y) <= 0) return 1;
        {
            double ms = (now_ms() - t0) / batches;
            printf("{\"bench\": \"loader_mae_pretrain\", \"shape\": \"%dx%d RGB -> RRC 224 + flip, batch %d\", \"threads\": %d, \"ms\": %.3f, "
                   "\"images_per_s\": %.1f}\n",
                   side, side, batch, workers, ms, batch * 1000.0 / ms);
        }
        hvd_loader_free(ld);
    }
    hvd_dataset_free(ds);
    hv_shutdown(ctx);
    free(pixels);
    free(labels);
    return 0;
}
