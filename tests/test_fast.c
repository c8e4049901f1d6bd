/* test_fast.c - the fast CPU kernels (humanvit.h section 7b: SIMD, tiled, fused) against the
   scalar reference kernels they replace, on random shapes including odd sizes, and 1 thread
   against 2 threads bit for bit.

   This file defines HUMANVIT_IMPLEMENTATION itself, so it sees the static kernels and calls both
   versions of each directly with the same inputs. Errors are max |fast - ref| / max |ref| over a
   whole output (the relative max error); each kernel's tolerance is stated at its test and is
   about 10x what was measured. The existing tests (test_nn, test_conv, test_fixtures) check the
   same ops through the backend table against double references, finite differences and PyTorch. */
#define HUMANVIT_IMPLEMENTATION
#define HV__CONV_COL_FLOATS 6000 /* small im2col chunks, so that the chunking over images is exercised */
#include "testlib.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static double fx_rel(const float *got, const float *ref, int64_t n) {
    double maxref = 1e-30, maxdiff = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN counts as an error */
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    return maxdiff / maxref;
}
static int fx_verbose;
#define CHECK_CLOSE(label, got, ref, n, tol)                                                        \
    do {                                                                                           \
        double e_ = fx_rel((got), (ref), (n));                                                     \
        if (fx_verbose) printf("    %-58s rel err %.3g (tol %.0e)\n", (label), e_, (double)(tol));   \
        CHECK(e_ <= (tol), "%s: relative error %.3g > %.3g", (label), e_, (double)(tol));          \
    } while (0)
#define CHECK_SAME(label, a, b, n)                                                                 \
    CHECK(memcmp((a), (b), sizeof(float) * (size_t)(n)) == 0, "%s: 1 and 2 threads differ", (label))

/* a contiguous arena tensor with N(0, std) values (same stream for every call order) */
static hv_tensor *fx_randn(hv_ctx *ctx, hv_shape s, float std) {
    hv_tensor *t = hv_tensor_temp(ctx, HV_F32, s);
    int64_t i, n = hv_numel(t);
    for (i = 0; i < n; i++) hv_data(t)[i] = std * hv_rng_normal(ctx);
    return t;
}
static hv_tensor *fx_clone(hv_tensor *t) {
    hv_tensor *c = hv_tensor_temp(hv_tensor_ctx(t), HV_F32, hv_tensor_shape(t));
    hv_tensor_copy_to(t, hv_data(c), sizeof(float) * (size_t)hv_numel(t));
    return c;
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct att_case {
    int64_t B, H, Nq, Nk, d;
    int strided; /* q (B, Nq, H, d) and k, v from (B, Nk, 2, H, d), permuted: the model's layout */
    float qstd;  /* spread of q: larger makes peakier softmax rows */
} att_case;

/* Tolerances: forward 2e-5, backward 5e-5 (measured at most 1.4e-6 and 2.6e-6 over these cases;
   d = 80, N = 1157 is the worst). The gradients are checked from zero; that they accumulate (+=)
   is checked on top of random values in the 1-thread run. */
static void att_check(hv_ctx *ctx, const att_case *c) {
    const int perm[4] = {0, 2, 1, 3};
    char label[160];
    hv_tensor *q, *k, *v, *o_ref, *o_fast, *lse_ref, *lse_fast, *go, *delta, *g_ref[3], *g_fast[3];
    int64_t qshape[4] = {c->B, c->H, c->Nq, c->d}, kshape[4] = {c->B, c->H, c->Nk, c->d};
    float scale = 1.0f / sqrtf((float)c->d);
    int i, prev = hv_set_grad_enabled(ctx, 0);
    if (c->strided) {
        hv_tensor *qs = fx_randn(ctx, HV_SHAPE(c->B, c->Nq, c->H, c->d), c->qstd);
        hv_tensor *kv = fx_randn(ctx, HV_SHAPE(c->B, c->Nk, 2, c->H, c->d), 1.0f);
        q = hv_permute(qs, perm);
        k = hv_permute(hv_select(kv, 2, 0), perm);
        v = hv_permute(hv_select(kv, 2, 1), perm);
    } else {
        q = fx_randn(ctx, hv_shape_of(4, qshape), c->qstd);
        k = fx_randn(ctx, hv_shape_of(4, kshape), 1.0f);
        v = fx_randn(ctx, hv_shape_of(4, kshape), 1.0f);
    }
    o_ref = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, qshape));
    o_fast = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, qshape));
    lse_ref = hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, qshape));
    lse_fast = hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, qshape));
    delta = hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, qshape));
    go = fx_randn(ctx, hv_shape_of(4, qshape), 1.0f);
    hv__cpu_attention(ctx, o_ref, lse_ref, q, k, v, scale);
    hv__fast_attention(ctx, o_fast, lse_fast, q, k, v, scale);
    snprintf(label, sizeof label, "attention B=%lld H=%lld Nq=%lld Nk=%lld d=%lld%s", (long long)c->B, (long long)c->H, (long long)c->Nq,
             (long long)c->Nk, (long long)c->d, c->strided ? " strided" : "");
    CHECK_CLOSE(label, hv_data(o_fast), hv_data(o_ref), hv_numel(o_ref), 2e-5);
    CHECK_CLOSE("  lse", hv_data(lse_fast), hv_data(lse_ref), hv_numel(lse_ref), 2e-5);
    for (i = 0; i < 3; i++) {
        g_ref[i] = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, i ? kshape : qshape));
        g_fast[i] = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, i ? kshape : qshape));
    }
    hv__cpu_attention_bwd(ctx, g_ref[0], g_ref[1], g_ref[2], delta, q, k, v, o_ref, lse_ref, go, scale);
    hv__fast_attention_bwd(ctx, g_fast[0], g_fast[1], g_fast[2], delta, q, k, v, o_ref, lse_ref, go, scale);
    CHECK_CLOSE("  dq", hv_data(g_fast[0]), hv_data(g_ref[0]), hv_numel(g_ref[0]), 5e-5);
    CHECK_CLOSE("  dk", hv_data(g_fast[1]), hv_data(g_ref[1]), hv_numel(g_ref[1]), 5e-5);
    CHECK_CLOSE("  dv", hv_data(g_fast[2]), hv_data(g_ref[2]), hv_numel(g_ref[2]), 5e-5);
    /* threads and accumulation: from random starting values, 1 and 2 threads give the same bits
       (the backward may even split the work differently), and (start + g) - start is g up to the
       rounding of the sum */
    {
        int threads = hv_get_threads(ctx), t;
        hv_tensor *init[3], *g_t[2][3];
        hv_tensor *o1 = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, qshape)), *l1 = hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, qshape));
        for (i = 0; i < 3; i++) init[i] = fx_randn(ctx, hv_shape_of(4, i ? kshape : qshape), 1.0f);
        for (t = 0; t < 2; t++) {
            hv_set_threads(ctx, t + 1);
            for (i = 0; i < 3; i++) g_t[t][i] = fx_clone(init[i]);
            hv__fast_attention_bwd(ctx, g_t[t][0], g_t[t][1], g_t[t][2], delta, q, k, v, o_ref, lse_ref, go, scale);
        }
        hv_set_threads(ctx, 1);
        hv__fast_attention(ctx, o1, l1, q, k, v, scale);
        hv_set_threads(ctx, threads);
        CHECK_SAME(label, hv_data(o1), hv_data(o_fast), hv_numel(o1));
        CHECK_SAME(label, hv_data(l1), hv_data(lse_fast), hv_numel(l1));
        for (i = 0; i < 3; i++) {
            int64_t j, n = hv_numel(init[i]);
            float *g1 = hv_data(g_t[0][i]), *g0 = hv_data(init[i]), *gf = hv_data(g_fast[i]), worst = 0;
            CHECK_SAME(label, hv_data(g_t[0][i]), hv_data(g_t[1][i]), n);
            for (j = 0; j < n; j++) {
                float e = fabsf((g1[j] - g0[j]) - gf[j]) / (fabsf(g0[j]) + fabsf(gf[j]) + 1e-30f);
                if (!(e <= worst)) worst = e;
            }
            CHECK(worst <= 2e-7f, "%s: gradient %d does not accumulate (+=): error %g", label, i, (double)worst);
        }
    }
    hv_set_grad_enabled(ctx, prev);
    hv_step_end(ctx);
}

static void test_attention_fast(hv_ctx *ctx) {
    static const att_case cases[] = {
        {1, 1, 1, 1, 64, 0, 1.0f},      {2, 3, 7, 7, 64, 1, 1.0f},     {1, 2, 65, 65, 80, 1, 1.0f},   {2, 6, 257, 257, 64, 1, 1.0f},
        {1, 1, 1157, 1157, 64, 1, 1.0f}, {1, 2, 1157, 1157, 80, 0, 1.0f}, {2, 2, 5, 300, 64, 0, 1.0f},  {1, 3, 130, 9, 80, 1, 1.0f},
        {3, 1, 33, 50, 8, 0, 1.0f},     {1, 1, 49, 49, 1, 0, 1.0f},    {1, 2, 100, 100, 24, 1, 4.0f}, {1, 1, 200, 200, 64, 0, 8.0f},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) att_check(ctx, &cases[i]);
}
/* only dq, or only dk and dv: the backward's other branches */
static void test_attention_fast_partial(hv_ctx *ctx) {
    const int64_t B = 2, H = 3, N = 70, d = 64;
    hv_tensor *q = fx_randn(ctx, HV_SHAPE(B, H, N, d), 1), *k = fx_randn(ctx, HV_SHAPE(B, H, N, d), 1), *v = fx_randn(ctx, HV_SHAPE(B, H, N, d), 1);
    hv_tensor *o = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N, d)), *lse = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N));
    hv_tensor *delta = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N)), *go = fx_randn(ctx, HV_SHAPE(B, H, N, d), 1);
    hv_tensor *gq_r = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N, d)), *gq_f = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N, d));
    hv_tensor *gv_r = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N, d)), *gv_f = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(B, H, N, d));
    float scale = 0.125f;
    hv__cpu_attention(ctx, o, lse, q, k, v, scale);
    hv__cpu_attention_bwd(ctx, gq_r, NULL, NULL, delta, q, k, v, o, lse, go, scale);
    hv__fast_attention_bwd(ctx, gq_f, NULL, NULL, delta, q, k, v, o, lse, go, scale);
    CHECK_CLOSE("attention dq only", hv_data(gq_f), hv_data(gq_r), hv_numel(gq_r), 1e-4);
    hv__cpu_attention_bwd(ctx, NULL, NULL, gv_r, delta, q, k, v, o, lse, go, scale);
    hv__fast_attention_bwd(ctx, NULL, NULL, gv_f, delta, q, k, v, o, lse, go, scale);
    CHECK_CLOSE("attention dv only", hv_data(gv_f), hv_data(gv_r), hv_numel(gv_r), 1e-4);
}

/* ---- convolution (im2col / 1x1 + GEMM) ------------------------------------------------------ */

typedef struct conv_case {
    int64_t N, cin, H, W, cout, KH, KW, sh, sw, ph, pw, dh, dw, G;
    int bias;
} conv_case;

/* Tolerances: forward and data gradient 1e-5, weight and bias gradients 2e-5 (the reference sums
   in double; measured at most ~1e-6) */
static void conv_check(hv_ctx *ctx, const conv_case *c) {
    int64_t g[7] = {c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->G};
    int64_t OH = (c->H + 2 * c->ph - c->dh * (c->KH - 1) - 1) / c->sh + 1, OW = (c->W + 2 * c->pw - c->dw * (c->KW - 1) - 1) / c->sw + 1;
    hv_tensor *x = fx_randn(ctx, HV_SHAPE(c->N, c->cin, c->H, c->W), 1), *w = fx_randn(ctx, HV_SHAPE(c->cout, c->cin / c->G, c->KH, c->KW), 0.3f);
    hv_tensor *b = c->bias ? fx_randn(ctx, HV_SHAPE(c->cout), 1) : NULL, *gy = fx_randn(ctx, HV_SHAPE(c->N, c->cout, OH, OW), 1);
    hv_tensor *y_r = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW)), *y_f = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW));
    hv_tensor *gx_r = fx_randn(ctx, HV_SHAPE(c->N, c->cin, c->H, c->W), 1), *gx_f = fx_clone(gx_r), *gx_1 = fx_clone(gx_r);
    hv_tensor *gw_r = fx_randn(ctx, hv_tensor_shape(w), 1), *gw_f = fx_clone(gw_r), *gw_1 = fx_clone(gw_r);
    hv_tensor *gb_r = fx_randn(ctx, HV_SHAPE(c->cout), 1), *gb_f = fx_clone(gb_r), *gb_1 = fx_clone(gb_r);
    hv_tensor *y_1 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW));
    char label[200];
    snprintf(label, sizeof label, "conv x (%lld, %lld, %lld, %lld) w %lldx%lld s (%lld, %lld) p (%lld, %lld) d (%lld, %lld) G %lld -> %lld",
             (long long)c->N, (long long)c->cin, (long long)c->H, (long long)c->W, (long long)c->KH, (long long)c->KW, (long long)c->sh,
             (long long)c->sw, (long long)c->ph, (long long)c->pw, (long long)c->dh, (long long)c->dw, (long long)c->G, (long long)c->cout);
    hv__cpu_conv2d(ctx, y_r, x, w, b, g);
    hv__fast_conv2d(ctx, y_f, x, w, b, g);
    CHECK_CLOSE(label, hv_data(y_f), hv_data(y_r), hv_numel(y_r), 1e-5);
    /* gradients add to what is there */
    hv__cpu_conv2d_bwd_data(ctx, gx_r, gy, w, g);
    hv__fast_conv2d_bwd_data(ctx, gx_f, gy, w, g);
    CHECK_CLOSE("  dx", hv_data(gx_f), hv_data(gx_r), hv_numel(gx_r), 1e-5);
    hv__cpu_conv2d_bwd_weight(ctx, gw_r, gb_r, x, gy, g);
    hv__fast_conv2d_bwd_weight(ctx, gw_f, gb_f, x, gy, g);
    CHECK_CLOSE("  dw", hv_data(gw_f), hv_data(gw_r), hv_numel(gw_r), 2e-5);
    CHECK_CLOSE("  db", hv_data(gb_f), hv_data(gb_r), hv_numel(gb_r), 2e-5);
    {
        int threads = hv_get_threads(ctx);
        hv_set_threads(ctx, 1);
        hv__fast_conv2d(ctx, y_1, x, w, b, g);
        hv__fast_conv2d_bwd_data(ctx, gx_1, gy, w, g);
        hv__fast_conv2d_bwd_weight(ctx, gw_1, gb_1, x, gy, g);
        hv_set_threads(ctx, threads);
        CHECK_SAME(label, hv_data(y_1), hv_data(y_f), hv_numel(y_f));
        CHECK_SAME(label, hv_data(gx_1), hv_data(gx_f), hv_numel(gx_f));
        CHECK_SAME(label, hv_data(gw_1), hv_data(gw_f), hv_numel(gw_f));
        CHECK_SAME(label, hv_data(gb_1), hv_data(gb_f), hv_numel(gb_f));
    }
    hv_step_end(ctx);
}
static void test_conv_fast(hv_ctx *ctx) {
    static const conv_case cases[] = {
        /* N cin H W cout KH KW sh sw ph pw dh dw G bias */
        {2, 3, 32, 32, 24, 16, 16, 16, 16, 0, 0, 1, 1, 1, 1}, /* ViT patch embedding */
        {2, 3, 30, 30, 8, 14, 14, 14, 14, 0, 0, 1, 1, 1, 1},  /* patch 14, 2 x 2 patches */
        {3, 16, 9, 11, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0},     /* 1x1: a plain GEMM */
        {2, 32, 7, 7, 16, 1, 1, 1, 1, 0, 0, 1, 1, 4, 1},      /* 1x1 grouped */
        {2, 16, 10, 10, 8, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1},     /* 1x1 stride 2 (ResNeXt downsample) */
        {2, 32, 13, 13, 32, 3, 3, 1, 1, 1, 1, 1, 1, 8, 1},    /* 3x3 grouped (ResNeXt) */
        {2, 32, 14, 14, 32, 3, 3, 2, 2, 1, 1, 1, 1, 8, 0},    /* 3x3 grouped, stride 2 */
        {2, 3, 29, 31, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1},      /* 7x7 stride 2 stem, odd sizes */
        {1, 6, 12, 12, 6, 3, 3, 1, 1, 2, 2, 2, 2, 6, 1},      /* depthwise, dilation 2 */
        {2, 4, 5, 9, 6, 3, 2, 3, 1, 0, 1, 1, 2, 2, 1},        /* mixed strides, padding, dilation */
        {1, 2, 3, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1},        /* one output pixel */
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_check(ctx, &cases[i]);
}

int main(int argc, char **argv) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 2024, .threads = 2});
    fx_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    TL_RUN(ctx, test_attention_fast);
    TL_RUN(ctx, test_attention_fast_partial);
    TL_RUN(ctx, test_conv_fast);
    hv_shutdown(ctx);
    TL_DONE();
}
