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

typedef struct bench {
    const char *name, *shape;
    void (*setup)(struct bench *b);       /* makes the inputs from p[] */
    void (*run)(struct bench *b, int fast); /* one call of the reference (fast 0) or fast kernel */
    int64_t p[10];                        /* shape parameters */
    double flops;                         /* of one call, 0 when not meaningful */
    hv_tensor *t[12];                     /* persistent tensors, freed after the row */
    hv_tensor *v[4];                      /* views into them (arena) */
    int64_t g[8];
    float f;
    double ms_ref, ms_fast, ms_torch;
} bench;

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

static hv_tensor *randn(hv_shape s, float std) { return hv_randn(ctx, s, 0.0f, std); }
static hv_tensor *zeros(hv_shape s) { return hv_zeros(ctx, s); }

/* ---- attention: q, k, v are strided views of a (B, N, 3, H, d) qkv, as in the ViT block ----- */
static void att_setup(bench *b) {
    const int perm[4] = {0, 2, 1, 3};
    const int64_t B = b->p[0], N = b->p[1], H = b->p[2], d = b->p[3];
    int i;
    b->t[0] = randn(HV_SHAPE(B, N, 3, H, d), 1.0f);
    for (i = 0; i < 3; i++) b->v[i] = hv_permute(hv_select(b->t[0], 2, i), perm);
    b->t[3] = zeros(HV_SHAPE(B, H, N, d));  /* o */
    b->t[4] = zeros(HV_SHAPE(B, H, N));     /* lse */
    b->t[5] = randn(HV_SHAPE(B, H, N, d), 1); /* go */
    b->t[6] = zeros(HV_SHAPE(B, H, N, d));  /* gq */
    b->t[7] = zeros(HV_SHAPE(B, H, N, d));  /* gk */
    b->t[8] = zeros(HV_SHAPE(B, H, N, d));  /* gv */
    b->t[9] = zeros(HV_SHAPE(B, H, N));     /* delta */
    b->f = 1.0f / sqrtf((float)d);
    b->flops = (b->p[4] ? 10.0 : 4.0) * B * H * N * N * d; /* 2 or 5 products of 2 N^2 d flops */
    hv__cpu_attention(ctx, b->t[3], b->t[4], b->v[0], b->v[1], b->v[2], b->f);
}
static void att_fwd(bench *b, int fast) {
    (fast ? hv__fast_attention : hv__cpu_attention)(ctx, b->t[3], b->t[4], b->v[0], b->v[1], b->v[2], b->f);
}
static void att_bwd(bench *b, int fast) {
    (fast ? hv__fast_attention_bwd : hv__cpu_attention_bwd)(ctx, b->t[6], b->t[7], b->t[8], b->t[9], b->v[0], b->v[1], b->v[2], b->t[3],
                                                            b->t[4], b->t[5], b->f);
}

/* ---- convolution: p = N, cin, H, W, cout, k, stride, pad, groups --------------------------- */
static void conv_setup(bench *b) {
    const int64_t N = b->p[0], cin = b->p[1], H = b->p[2], W = b->p[3], cout = b->p[4], k = b->p[5], s = b->p[6], pad = b->p[7];
    const int64_t G = b->p[8] ? b->p[8] : 1, OH = (H + 2 * pad - k) / s + 1, OW = (W + 2 * pad - k) / s + 1;
    b->t[0] = randn(HV_SHAPE(N, cin, H, W), 1);
    b->t[1] = randn(HV_SHAPE(cout, cin / G, k, k), 0.05f);
    b->t[2] = randn(HV_SHAPE(cout), 0.1f);
    b->t[3] = zeros(HV_SHAPE(N, cout, OH, OW)); /* y */
    b->t[4] = randn(HV_SHAPE(N, cout, OH, OW), 1); /* gy */
    b->t[5] = zeros(HV_SHAPE(N, cin, H, W));    /* gx */
    b->t[6] = zeros(HV_SHAPE(cout, cin / G, k, k)); /* gw */
    b->t[7] = zeros(HV_SHAPE(cout));            /* gb */
    b->g[0] = b->g[1] = s;
    b->g[2] = b->g[3] = pad;
    b->g[4] = b->g[5] = 1;
    b->g[6] = G;
    b->flops = 2.0 * N * cout * OH * OW * (cin / G) * k * k;
}
static void conv_fwd(bench *b, int fast) { (fast ? hv__fast_conv2d : hv__cpu_conv2d)(ctx, b->t[3], b->t[0], b->t[1], b->t[2], b->g); }
static void conv_bwd_data(bench *b, int fast) { (fast ? hv__fast_conv2d_bwd_data : hv__cpu_conv2d_bwd_data)(ctx, b->t[5], b->t[4], b->t[1], b->g); }
static void conv_bwd_weight(bench *b, int fast) {
    (fast ? hv__fast_conv2d_bwd_weight : hv__cpu_conv2d_bwd_weight)(ctx, b->t[6], b->t[7], b->t[0], b->t[4], b->g);
}

/* ---- row kernels at ViT-S shapes: p = rows, width ------------------------------------------- */
static void rows_setup(bench *b) {
    const int64_t R = b->p[0], D = b->p[1];
    int64_t sh[2];
    b->t[0] = randn(HV_SHAPE(R, D), 1);  /* x */
    b->t[1] = randn(HV_SHAPE(D), 1);     /* w, or a bias */
    b->t[2] = randn(HV_SHAPE(D), 1);     /* b */
    b->t[3] = zeros(HV_SHAPE(R, D));     /* y */
    b->t[4] = zeros(HV_SHAPE(R));        /* mean */
    b->t[5] = zeros(HV_SHAPE(R));        /* rstd */
    b->t[6] = randn(HV_SHAPE(R, D), 1);  /* gy */
    b->t[7] = zeros(HV_SHAPE(R, D));     /* gx */
    b->t[8] = zeros(HV_SHAPE(D));        /* gw */
    b->t[9] = zeros(HV_SHAPE(D));        /* gb */
    b->t[10] = zeros(HV_SHAPE(1, D));    /* a column sum */
    sh[0] = R;
    sh[1] = D;
    b->v[0] = hv__expand(b->t[1], 2, sh); /* the bias broadcast over rows */
    hv__cpu_layer_norm(ctx, b->t[3], b->t[4], b->t[5], b->t[0], b->t[1], b->t[2], 1e-6f);
}
static void ln_fwd(bench *b, int fast) {
    (fast ? hv__fast_layer_norm : hv__cpu_layer_norm)(ctx, b->t[3], b->t[4], b->t[5], b->t[0], b->t[1], b->t[2], 1e-6f);
}
static void ln_bwd(bench *b, int fast) {
    (fast ? hv__fast_layer_norm_bwd : hv__cpu_layer_norm_bwd)(ctx, b->t[7], b->t[8], b->t[9], b->t[0], b->t[1], b->t[4], b->t[5], b->t[6]);
}
static void gelu_fwd(bench *b, int fast) { (fast ? hv__fast_unary : hv__cpu_unary)(ctx, HV__GELU, 0, b->t[3], b->t[0]); }
static void gelu_bwd(bench *b, int fast) { (fast ? hv__fast_unary_bwd : hv__cpu_unary_bwd)(ctx, HV__GELU, 0, b->t[7], b->t[0], b->t[3], b->t[6]); }
static void bias_add(bench *b, int fast) { (fast ? hv__fast_binary : hv__cpu_binary)(ctx, HV__ADD, b->t[3], b->t[0], b->v[0]); }
static void bias_grad(bench *b, int fast) { (fast ? hv__fast_reduce : hv__cpu_reduce)(ctx, HV__RED_SUM, b->t[10], b->t[6]); }
static void softmax_fwd(bench *b, int fast) { (fast ? hv__fast_softmax : hv__cpu_softmax)(ctx, 0, b->t[3], b->t[0], b->p[0], b->p[1], 1); }
static void softmax_bwd(bench *b, int fast) {
    (fast ? hv__fast_softmax_bwd : hv__cpu_softmax_bwd)(ctx, 0, b->t[7], b->t[3], b->t[6], b->p[0], b->p[1], 1);
}
static void ce_setup(bench *b) {
    int64_t i;
    rows_setup(b);
    b->t[11] = hv_tensor_new(ctx, HV_I32, HV_SHAPE(b->p[0]));
    for (i = 0; i < b->p[0]; i++) hv_data_i32(b->t[11])[i] = (int32_t)(i * 7 % b->p[1]);
    b->v[1] = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1)); /* loss */
    b->v[2] = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(b->p[0], 2)); /* lse */
    hv_data(b->v[1])[0] = 1;
    hv__cpu_cross_entropy(ctx, b->v[1], b->v[2], b->t[4], b->t[0], b->t[11]);
}
static void ce_fwd(bench *b, int fast) { (fast ? hv__fast_cross_entropy : hv__cpu_cross_entropy)(ctx, b->v[1], b->v[2], b->t[4], b->t[0], b->t[11]); }
static void ce_bwd(bench *b, int fast) { (fast ? hv__fast_cross_entropy_bwd : hv__cpu_cross_entropy_bwd)(ctx, b->t[7], b->t[0], b->t[11], b->v[2], b->v[1]); }
static void mse_fwd(bench *b, int fast) { (fast ? hv__fast_diff_loss : hv__cpu_diff_loss)(ctx, HV__LOSS_MSE, b->t[4], b->t[0], b->t[6]); }
static void mse_bwd(bench *b, int fast) {
    hv_data(b->t[5])[0] = 1;
    (fast ? hv__fast_diff_loss_bwd : hv__cpu_diff_loss_bwd)(ctx, HV__LOSS_MSE, b->t[7], NULL, b->t[0], b->t[6], b->t[5]);
}

/* ---- pooling, resize, batch norm: p = N, C, H, W, then k, stride, pad (pools) or OH, OW (resize) */
static void nchw_setup(bench *b) {
    const int64_t N = b->p[0], C = b->p[1], H = b->p[2], W = b->p[3], k = b->p[4], s = b->p[5], pad = b->p[6];
    const int64_t OH = b->p[7] ? b->p[7] : (H + 2 * pad - k) / s + 1, OW = b->p[8] ? b->p[8] : (W + 2 * pad - k) / s + 1;
    b->t[0] = randn(HV_SHAPE(N, C, H, W), 1);   /* x */
    b->t[1] = zeros(HV_SHAPE(N, C, OH, OW));    /* y */
    b->t[2] = hv_tensor_new(ctx, HV_I32, HV_SHAPE(N, C, OH, OW)); /* argmax */
    b->t[3] = randn(HV_SHAPE(N, C, OH, OW), 1); /* gy */
    b->t[4] = zeros(HV_SHAPE(N, C, H, W));      /* gx */
    b->t[5] = randn(HV_SHAPE(C), 1);            /* w */
    b->t[6] = randn(HV_SHAPE(C), 1);            /* b */
    b->t[7] = zeros(HV_SHAPE(C));               /* mean */
    b->t[8] = zeros(HV_SHAPE(C));               /* var */
    b->t[9] = zeros(HV_SHAPE(C));               /* gw */
    b->t[10] = zeros(HV_SHAPE(C));              /* gb */
    b->t[11] = randn(HV_SHAPE(N, C, H, W), 1);  /* gy of batch norm */
    b->g[0] = b->g[1] = k;
    b->g[2] = b->g[3] = s;
    b->g[4] = b->g[5] = pad;
    b->g[6] = 0;
    if (k) hv__cpu_max_pool2d(ctx, b->t[1], b->t[2], b->t[0], b->g);
    hv__cpu_batch_norm_stats(ctx, b->t[7], b->t[8], b->t[0]);
}
static void maxpool_fwd(bench *b, int fast) { (fast ? hv__fast_max_pool2d : hv__cpu_max_pool2d)(ctx, b->t[1], b->t[2], b->t[0], b->g); }
static void maxpool_bwd(bench *b, int fast) { (void)fast; hv__cpu_max_pool2d_bwd(ctx, b->t[4], b->t[3], b->t[2]); } /* one kernel */
static void avgpool_fwd(bench *b, int fast) { (fast ? hv__fast_avg_pool2d : hv__cpu_avg_pool2d)(ctx, b->t[1], b->t[0], b->g); }
static void avgpool_bwd(bench *b, int fast) { (fast ? hv__fast_avg_pool2d_bwd : hv__cpu_avg_pool2d_bwd)(ctx, b->t[4], b->t[3], b->g); }
static void resize_fwd(bench *b, int fast) { (fast ? hv__fast_resize_bilinear : hv__cpu_resize_bilinear)(ctx, b->t[1], b->t[0], 0); }
static void resize_bwd(bench *b, int fast) { (fast ? hv__fast_resize_bilinear_bwd : hv__cpu_resize_bilinear_bwd)(ctx, b->t[4], b->t[3], 0); }
/* training-mode forward: the batch statistics, then y (torch: F.batch_norm(training=True)) */
static void bn_fwd(bench *b, int fast) {
    (fast ? hv__fast_batch_norm_stats : hv__cpu_batch_norm_stats)(ctx, b->t[7], b->t[8], b->t[0]);
    (fast ? hv__fast_batch_norm : hv__cpu_batch_norm)(ctx, b->t[4], b->t[0], b->t[7], b->t[8], b->t[5], b->t[6], 1e-5f);
}
static void bn_bwd(bench *b, int fast) {
    (fast ? hv__fast_batch_norm_bwd : hv__cpu_batch_norm_bwd)(ctx, b->t[4], b->t[9], b->t[10], b->t[0], b->t[11], b->t[7], b->t[8], b->t[5], 1e-5f, 1);
}

/* ---- the table -------------------------------------------------------------------------------- */

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

    /* name (the torch script uses the same names), shape, setup, run, shape parameters */
#define ADD(nm, shp, su, fn, ...)                                                                  \
    do {                                                                                           \
        if (!filter || strstr(nm, filter)) {                                                       \
            bench *b_ = &bs[nb++];                                                                 \
            int64_t p_[] = {__VA_ARGS__};                                                          \
            b_->name = nm;                                                                         \
            b_->shape = shp;                                                                       \
            b_->setup = su;                                                                        \
            b_->run = fn;                                                                          \
            memcpy(b_->p, p_, sizeof p_);                                                          \
        }                                                                                          \
    } while (0)
    ADD("attn_fwd_vits", "B8 H6 N257 d64", att_setup, att_fwd, 8, 257, 6, 64, 0);
    ADD("attn_bwd_vits", "B8 H6 N257 d64", att_setup, att_bwd, 8, 257, 6, 64, 1);
    ADD("attn_fwd_vith476", "B1 H16 N1157 d80", att_setup, att_fwd, 1, 1157, 16, 80, 0);
    ADD("attn_bwd_vith476", "B1 H16 N1157 d80", att_setup, att_bwd, 1, 1157, 16, 80, 1);
#define CONV3(tag, shp, ...)                                                                       \
    ADD("conv_fwd_" tag, shp, conv_setup, conv_fwd, __VA_ARGS__);                                  \
    ADD("conv_bwdx_" tag, shp, conv_setup, conv_bwd_data, __VA_ARGS__);                           \
    ADD("conv_bwdw_" tag, shp, conv_setup, conv_bwd_weight, __VA_ARGS__)
    ADD("layernorm_fwd", "2056 x 384 (B8 N257 D384)", rows_setup, ln_fwd, 2056, 384);
    ADD("layernorm_bwd", "2056 x 384, dx dw db", rows_setup, ln_bwd, 2056, 384);
    ADD("gelu_fwd", "2056 x 1536 (MLP)", rows_setup, gelu_fwd, 2056, 1536);
    ADD("gelu_bwd", "2056 x 1536", rows_setup, gelu_bwd, 2056, 1536);
    ADD("bias_add", "2056 x 1536 + 1536", rows_setup, bias_add, 2056, 1536);
    ADD("bias_grad", "sum 2056 x 1536 over rows", rows_setup, bias_grad, 2056, 1536);
    ADD("softmax_fwd", "12336 x 257 (B8 H6 N257)", rows_setup, softmax_fwd, 12336, 257);
    ADD("softmax_bwd", "12336 x 257", rows_setup, softmax_bwd, 12336, 257);
    ADD("xent_fwd", "256 x 1000", ce_setup, ce_fwd, 256, 1000);
    ADD("xent_bwd", "256 x 1000", ce_setup, ce_bwd, 256, 1000);
    ADD("mse_fwd", "1568 x 768 (MAE B8 196 p)", rows_setup, mse_fwd, 1568, 768);
    ADD("mse_bwd", "1568 x 768", rows_setup, mse_bwd, 1568, 768);
    ADD("maxpool_fwd", "8x64x112 k3 s2 p1 (stem)", nchw_setup, maxpool_fwd, 8, 64, 112, 112, 3, 2, 1, 0, 0);
    ADD("maxpool_bwd", "8x64x112 k3 s2 p1", nchw_setup, maxpool_bwd, 8, 64, 112, 112, 3, 2, 1, 0, 0);
    ADD("avgpool_fwd", "8x256x56 k3 s1 p1", nchw_setup, avgpool_fwd, 8, 256, 56, 56, 3, 1, 1, 0, 0);
    ADD("avgpool_bwd", "8x256x56 k3 s1 p1", nchw_setup, avgpool_bwd, 8, 256, 56, 56, 3, 1, 1, 0, 0);
    ADD("resize_fwd", "8x64x56 -> 112 bilinear", nchw_setup, resize_fwd, 8, 64, 56, 56, 0, 1, 0, 112, 112);
    ADD("resize_bwd", "8x64x56 -> 112 bilinear", nchw_setup, resize_bwd, 8, 64, 56, 56, 0, 1, 0, 112, 112);
    ADD("batchnorm_fwd", "8x64x112 (stats + y)", nchw_setup, bn_fwd, 8, 64, 112, 112, 0, 1, 0, 1, 1);
    ADD("batchnorm_bwd", "8x64x112, dx dw db", nchw_setup, bn_bwd, 8, 64, 112, 112, 0, 1, 0, 1, 1);
    CONV3("patch16", "8x3x224 -> 384 k16 s16", 8, 3, 224, 224, 384, 16, 16, 0, 1);
    CONV3("1x1", "8x256x56 -> 128 k1", 8, 256, 56, 56, 128, 1, 1, 0, 1);
    CONV3("3x3g32", "8x128x56 -> 128 k3 g32", 8, 128, 56, 56, 128, 3, 1, 1, 32);
    CONV3("3x3g32c8", "8x256x28 -> 256 k3 g32", 8, 256, 28, 28, 256, 3, 1, 1, 32);
    CONV3("3x3g32s2", "8x256x56 -> 256 k3 s2 g32", 8, 256, 56, 56, 256, 3, 2, 1, 32);
    CONV3("7x7s2", "8x3x224 -> 64 k7 s2", 8, 3, 224, 224, 64, 7, 2, 3, 1);
    CONV3("3x3dws2", "8x256x56 -> 256 k3 s2 depthwise", 8, 256, 56, 56, 256, 3, 2, 1, 256);

    if (torch && system("python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        printf("(PyTorch is not importable by python3: no torch column)\n");
        torch = 0;
    }
    if (torch) run_torch(threads, filter);
    for (i = 0; i < nb; i++) {
        bench *b = &bs[i];
        int j;
        b->setup(b);
        b->ms_fast = time_it(b, 1, reps);
        b->ms_ref = do_ref ? time_it(b, 0, reps < 3 ? reps : 3) : 0;
        fprintf(stderr, "  %s done\n", b->name);
        for (j = 0; j < 12; j++) hv_tensor_free(b->t[j]);
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
