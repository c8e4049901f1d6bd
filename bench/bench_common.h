/* bench_common.h - what bench.c (the CPU) and bench_vulkan.c (the same rows on a Vulkan device)
   share: the clock, medians, and the GEMM cases. Included after humanvit.h (the implementation:
   the cases call the backend's gemm through its internal argument struct). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* ---- cases ---------------------------------------------------------------------------------- */

typedef struct bcase {
    const char *name;
    int ta, tb;
    int64_t m, n, k, batch;
    int quick; /* part of --quick */
    int bf16;  /* the bf16 kernel; its f32 twin is the case named without "_bf16" */
    int op;    /* through hv_matmul on (8, 6, ...) tensors (its batch loop), not one backend call */
} bcase;

static const bcase cases[] = {
    {"sgemm_512", 0, 0, 512, 512, 512, 1, 1, 0, 0},
    {"sgemm_1024", 0, 0, 1024, 1024, 1024, 1, 1, 0, 0},
    {"sgemm_2048", 0, 0, 2048, 2048, 2048, 1, 0, 0, 0},
    {"sgemm_4096", 0, 0, 4096, 4096, 4096, 1, 0, 0, 0},
    /* forward: y = x W^T, W stored (out, in) */
    {"vit_s_qkv_fwd", 0, 1, 2056, 1152, 384, 1, 1, 0, 0},
    {"vit_s_proj_fwd", 0, 1, 2056, 384, 384, 1, 0, 0, 0},
    {"vit_s_fc1_fwd", 0, 1, 2056, 1536, 384, 1, 0, 0, 0},
    {"vit_s_fc2_fwd", 0, 1, 2056, 384, 1536, 1, 1, 0, 0},
    /* backward, input gradient: dX = dY W */
    {"vit_s_qkv_dx", 0, 0, 2056, 384, 1152, 1, 0, 0, 0},
    {"vit_s_proj_dx", 0, 0, 2056, 384, 384, 1, 0, 0, 0},
    {"vit_s_fc1_dx", 0, 0, 2056, 384, 1536, 1, 1, 0, 0},
    {"vit_s_fc2_dx", 0, 0, 2056, 1536, 384, 1, 0, 0, 0},
    /* backward, weight gradient: dW = dY^T X (a sum over the 2056 tokens) */
    {"vit_s_qkv_dw", 1, 0, 1152, 384, 2056, 1, 0, 0, 0},
    {"vit_s_proj_dw", 1, 0, 384, 384, 2056, 1, 0, 0, 0},
    {"vit_s_fc1_dw", 1, 0, 1536, 384, 2056, 1, 1, 0, 0},
    {"vit_s_fc2_dw", 1, 0, 384, 1536, 2056, 1, 0, 0, 0},
    /* attention products, batch 8 x 6 heads: S = Q K^T, O = P V */
    {"vit_s_attn_qk", 0, 1, 257, 257, 64, 48, 0, 0, 0},
    {"vit_s_attn_pv", 0, 0, 257, 64, 257, 48, 0, 0, 0},
    /* bf16 (after the f32 cases) */
    {"sgemm_1024_bf16", 0, 0, 1024, 1024, 1024, 1, 1, 1, 0},
    {"sgemm_2048_bf16", 0, 0, 2048, 2048, 2048, 1, 0, 1, 0},
    {"vit_s_qkv_fwd_bf16", 0, 1, 2056, 1152, 384, 1, 1, 1, 0},
    {"vit_s_proj_fwd_bf16", 0, 1, 2056, 384, 384, 1, 0, 1, 0},
    {"vit_s_fc1_fwd_bf16", 0, 1, 2056, 1536, 384, 1, 0, 1, 0},
    {"vit_s_fc2_fwd_bf16", 0, 1, 2056, 384, 1536, 1, 1, 1, 0},
    {"vit_s_qkv_dx_bf16", 0, 0, 2056, 384, 1152, 1, 0, 1, 0},
    {"vit_s_fc1_dx_bf16", 0, 0, 2056, 384, 1536, 1, 0, 1, 0},
    {"vit_s_fc2_dx_bf16", 0, 0, 2056, 1536, 384, 1, 0, 1, 0},
    {"vit_s_qkv_dw_bf16", 1, 0, 1152, 384, 2056, 1, 0, 1, 0},
    {"vit_s_fc1_dw_bf16", 1, 0, 1536, 384, 2056, 1, 0, 1, 0},
    {"vit_s_fc2_dw_bf16", 1, 0, 384, 1536, 2056, 1, 0, 1, 0},
    {"vit_s_attn_qk_bf16", 0, 1, 257, 257, 64, 48, 0, 1, 0},
    {"vit_s_attn_pv_bf16", 0, 0, 257, 64, 257, 48, 0, 1, 0},
    /* the same through hv_matmul (B = 8, H = 6 batch axes): what the model's attention calls */
    {"vit_s_attn_qk_op", 0, 1, 257, 257, 64, 48, 0, 0, 1},
    {"vit_s_attn_pv_op", 0, 0, 257, 64, 257, 48, 0, 0, 1},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static const char *op_name(const bcase *c) { return c->ta ? (c->tb ? "TT" : "TN") : (c->tb ? "NT" : "NN"); }
static void shape_str(const bcase *c, char *buf, size_t n) {
    if (c->batch > 1)
        snprintf(buf, n, "%lldx(%lldx%lldx%lld) %s", (long long)c->batch, (long long)c->m, (long long)c->n, (long long)c->k, op_name(c));
    else snprintf(buf, n, "%lldx%lldx%lld %s", (long long)c->m, (long long)c->n, (long long)c->k, op_name(c));
}

/* the backend GEMM arguments of a case: C = op(A) op(B), beta 0, dense row-major operands (host
   pointers on the CPU, device addresses on Vulkan) */
static hv__gemm_args case_args(const bcase *c, const float *A, const float *B, float *C) {
    hv__gemm_args g;
    int64_t sa = c->m * c->k, sb = c->k * c->n, sc = c->m * c->n;
    memset(&g, 0, sizeof g);
    g.trans_a = c->ta;
    g.trans_b = c->tb;
    g.m = c->m;
    g.n = c->n;
    g.k = c->k;
    g.batch = c->batch;
    g.alpha = 1.0f;
    g.beta = 0.0f;
    g.a = A;
    g.lda = c->ta ? c->m : c->k;
    g.batch_stride_a = sa;
    g.b = B;
    g.ldb = c->tb ? c->k : c->n;
    g.batch_stride_b = sb;
    g.c = C;
    g.ldc = c->n;
    g.batch_stride_c = sc;
    return g;
}

#endif
