/* bench_kernels.c - the CPU kernels other than GEMM, at ViT-S/14 and ResNeXt shapes: the scalar
   reference kernel, the fast kernel of humanvit.h ("CPU BACKEND: fast kernels"), and (when
   python3 can import torch) the same work in PyTorch on the same machine with the same thread
   count, run by bench/torch_kernels.py in this same run (before and after our rows; the faster
   of the two).

       ./build.sh bench                       (builds and runs every bench program)
       build/bench/bench_kernels [--threads N] [--reps N] [--cpu] [--no-torch] [--no-ref] [filter]

   Times are medians over --reps runs (default 9; the reference 3, or 1 when a call takes over 2 s)
   after one warm-up, in milliseconds. --cpu (with --threads 1) times with the calling thread's CPU
   time, ours and torch's: on a machine shared with other jobs it is much steadier than the wall
   clock, which counts the time the thread was not running. Each row calls the kernel through the same entry points the ops use (the fast
   ones are what the backend table holds), on inputs made once. The convolutions also time the
   backend GEMM they call, so they speed up again when the SIMD GEMM is in. */
#define _POSIX_C_SOURCE 200809L
#define HUMANVIT_IMPLEMENTATION
#include "../humanvit.h"
#include "kernel_rows.h"
#include <time.h>

static int cpu_clock; /* --cpu: the calling thread's CPU time instead of the wall clock (with --threads 1) */
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static hv_ctx *ctx;
static int reps = 9, do_ref = 1;

static double time_it(bench *b, int fast, int n) {
    double t[64];
    int i;
    if (n > 64) n = 64;
    t[0] = now_ms();
    b->run(b, fast); /* warm-up: also grows the arena to its size */
    if (now_ms() - t[0] > 2000 && n > 1) n = 1; /* the slowest references: one timed run */
    for (i = 0; i < n; i++) {
        double t0 = now_ms();
        b->run(b, fast);
        t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return t[n / 2];
}

/* ---- PyTorch, run by bench/torch_kernels.py ------------------------------------------------- */

typedef struct torch_row {
    char name[64];
    double ms;
} torch_row;
static torch_row trows[64];
static int ntrows;

/* runs the torch script and keeps, per kernel, the smaller of this and an earlier run's median
   (the script runs before and after our rows: a machine whose speed drifts favours neither side) */
static void run_torch(int threads, const char *filter) {
    char cmd[512], name[64];
    double ms;
    FILE *p;
    int i;
    snprintf(cmd, sizeof cmd, "python3 bench/torch_kernels.py --threads %d --reps %d%s %s", threads, reps, cpu_clock ? " --cpu" : "",
             filter ? filter : "");
    p = popen(cmd, "r");
    if (!p) return;
    while (fscanf(p, "%63s %lf", name, &ms) == 2) {
        for (i = 0; i < ntrows && strcmp(trows[i].name, name); i++) {
        }
        if (i == ntrows) {
            if (ntrows == 64) continue;
            ntrows++;
            snprintf(trows[i].name, sizeof trows[i].name, "%s", name);
            trows[i].ms = ms;
        } else if (ms < trows[i].ms) {
            trows[i].ms = ms;
        }
    }
    pclose(p);
}
static double torch_ms(const char *name) {
    int i;
    for (i = 0; i < ntrows; i++)
        if (strcmp(trows[i].name, name) == 0) return trows[i].ms;
    return 0;
}

int main(int argc, char **argv) {
    int threads = 0, torch = 1, i, nb = 0;
    const char *filter = NULL;
    static bench bs[64];
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else if (!strcmp(argv[i], "--no-ref")) do_ref = 0;
        else if (!strcmp(argv[i], "--cpu")) cpu_clock = 1, threads = 1;
        else filter = argv[i];
    }
    ctx = hv_init(&(hv_init_desc){.seed = 1, .threads = threads});
    threads = hv_get_threads(ctx);

    nb = kr_rows(bs, filter, 0);

    if (torch && system("python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        printf("(PyTorch is not importable by python3: no torch column)\n");
        torch = 0;
    }
    if (torch) run_torch(threads, filter);
    for (i = 0; i < nb; i++) {
        bench *b = &bs[i];
        b->ctx = ctx;
        b->setup(b);
        b->ms_fast = time_it(b, 1, reps);
        b->ms_ref = do_ref ? time_it(b, 0, reps < 3 ? reps : 3) : 0;
        fprintf(stderr, "  %s done\n", b->name);
        kr_free(b);
        hv_step_end(ctx);
    }
    if (torch) run_torch(threads, filter);
    printf("humanvit kernels, %d thread%s; medians in ms (%s); speedup = reference / fast; vs torch = torch / fast (> 1: faster)\n",
           threads, threads == 1 ? "" : "s", cpu_clock ? "CPU time" : "wall clock");
    printf("%-20s %-26s %11s %11s %8s %11s %8s %9s\n", "kernel", "shape", "reference", "fast", "speedup", "torch", "vs torch", "GFLOP/s");
    for (i = 0; i < nb; i++) {
        bench *b = &bs[i];
        b->ms_torch = torch_ms(b->name);
        printf("%-20s %-26s %11.3f %11.3f %7.1fx", b->name, b->shape, b->ms_ref, b->ms_fast, b->ms_ref / b->ms_fast);
        if (b->ms_torch > 0) printf(" %11.3f %7.2fx", b->ms_torch, b->ms_torch / b->ms_fast);
        else printf(" %11s %8s", "-", "-");
        if (b->flops > 0) printf(" %9.1f", b->flops / (b->ms_fast * 1e6));
        printf("\n");
    }
    hv_shutdown(ctx);
    return 0;
}
