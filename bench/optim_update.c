/* optim_update.c - the AdamW update over every parameter of vits14 (22M floats): the scalar
   reference loop (hv__adam_ref) against the vectorised kernel (hv__adam_fast, HV-SECTION cpu-optim)
   and, with --torch, PyTorch's AdamW (single-tensor, foreach and fused) on the same shapes
   (bench/torch_optim.py). Results: bench/KERNELS.md.

   usage: build/bench/optim_update [--reps N] [--threads T] [--torch]
   Times are medians of N updates (default 11) after a warm-up; with 1 thread the thread's CPU
   time (the machine is shared: wall time drifts), with more the wall time. */
#define _POSIX_C_SOURCE 200809L
#define HUMANVIT_IMPLEMENTATION
#include "../humanvit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double now_ms(int cpu) {
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

typedef void (*adam_fn)(hv_ctx *, float *, const float *, float *, float *, int64_t, const hv__adamw_args *);

/* one optimizer step: every parameter in turn, as hv_optim_step calls the kernel */
static double time_step(hv_ctx *ctx, adam_fn fn, const hv_param_list *pl, float **w, float **g, float **m, float **v, int cpu) {
    hv__adamw_args a;
    double t0;
    int i;
    a.decay = 1.0f - 1e-4f * 0.05f;
    a.l2 = 0;
    a.b1c = 0.1f;
    a.beta2 = 0.999f;
    a.b2c = 0.001f;
    a.bc2_sqrt = 0.5f;
    a.eps = 1e-8f;
    a.neg_step = -1e-3f;
    t0 = now_ms(cpu);
    for (i = 0; i < pl->count; i++) fn(ctx, w[i], g[i], m[i], v[i], hv_numel(pl->tensors[i]), &a);
    return now_ms(cpu) - t0;
}

int main(int argc, char **argv) {
    int reps = 11, threads = 1, torch = 0, i, r, k;
    hv_ctx *ctx;
    hv_vit *vit;
    const hv_param_list *pl;
    float **buf[4];
    int64_t total = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--torch")) torch = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: %s [--reps N] [--threads T] [--torch]\n", argv[0]);
            return 0;
        } /* other flags (./build.sh bench passes its own, e.g. --quick) are ignored */
    }
    ctx = hv_init(&(hv_init_desc){.seed = 1, .threads = threads});
    vit = hv_vit_new(ctx, &(hv_vit_desc){.preset = HV_VIT_S14});
    if (!vit) return fprintf(stderr, "%s\n", hv_last_error()), 1;
    pl = hv_vit_params(vit);
    for (k = 0; k < 4; k++) buf[k] = (float **)malloc(sizeof(float *) * (size_t)pl->count);
    for (i = 0; i < pl->count; i++) {
        int64_t n = hv_numel(pl->tensors[i]), j;
        total += n;
        for (k = 0; k < 4; k++) {
            buf[k][i] = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
            for (j = 0; j < n; j++) buf[k][i][j] = k == 3 ? 1e-3f : hv_rng_normal(ctx) * (k == 2 ? 1e-2f : 1.0f);
        }
    }
    printf("AdamW update, vits14: %d tensors, %lld floats, %d thread(s), median of %d (%s time)\n", pl->count, (long long)total,
           threads, reps, threads == 1 ? "thread CPU" : "wall");
    for (k = 0; k < 2; k++) {
        adam_fn fn = k ? hv__adam_fast : hv__adam_ref;
        double *t = (double *)malloc(sizeof(double) * (size_t)reps), med;
        time_step(ctx, fn, pl, buf[0], buf[1], buf[2], buf[3], threads == 1);
        for (r = 0; r < reps; r++) t[r] = time_step(ctx, fn, pl, buf[0], buf[1], buf[2], buf[3], threads == 1);
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        med = t[reps / 2];
        printf("  %-34s %8.2f ms  %6.2f GB/s (7 x 4 bytes per float)\n", k ? "humanvit vectorised (hv__adam_fast)" : "humanvit scalar (hv__adam_ref)",
               med, 28.0 * (double)total / (med * 1e6));
        free(t);
    }
    if (torch) {
        FILE *f = fopen("build/bench/vits14_shapes.txt", "w");
        char cmd[256];
        if (!f) return perror("build/bench/vits14_shapes.txt"), 1;
        for (i = 0; i < pl->count; i++) {
            const hv_tensor *t = pl->tensors[i];
            hv_shape s = hv_tensor_shape((hv_tensor *)t);
            for (k = 0; k < s.ndim; k++) fprintf(f, k ? " %lld" : "%lld", (long long)s.d[k]);
            fprintf(f, "\n");
        }
        fclose(f);
        snprintf(cmd, sizeof cmd, "python3 bench/torch_optim.py build/bench/vits14_shapes.txt %d %d", threads, reps);
        fflush(stdout);
        if (system(cmd) != 0) fprintf(stderr, "bench/torch_optim.py failed (is torch installed?)\n");
    }
    hv_vit_free(vit);
    hv_shutdown(ctx);
    return 0;
}
