/* test_fast.c - the fast CPU kernels (humanvit.h, "CPU BACKEND: fast kernels": SIMD, tiled,
   fused) against the scalar reference kernels they replace, on random shapes including odd
   sizes, and 1 thread against 2 threads bit for bit.

   This file defines HUMANVIT_IMPLEMENTATION itself, so it sees the static kernels and calls both
   versions of each directly with the same inputs. Errors are max |fast - ref| / max |ref| over a
   whole output (the relative max error); each kernel's tolerance is stated at its test and is
   about 10x what was measured. The existing tests (test_nn, test_conv, test_fixtures) check the
   same ops through the backend table against double references, finite differences and PyTorch. */
#define HUMANVIT_IMPLEMENTATION
#define HV__CONV_COL_FLOATS 6000 /* small im2col chunks, so that the chunking over images is exercised */
#include "testlib.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* The fast kernels under test: this file's own (hv__fast_*), or in the dispatch variant (built
   with -DHUMANVIT_CPU_DISPATCH and linked to kernels_cpu/, as test_gemm_dispatch) each ISA's copy,
   taken from its hv__fast_fill_<isa> into fk: the same checks, the same bounds, once per ISA the
   CPU runs. The vector exp/erf test sees this file's build only (the scalar one there: libm). */
#if defined(HV__SGEMM_DISPATCH)
static hv__backend fk;
#define FAST(name) fk.name
#else
#define FAST(name) hv__fast_##name
#endif

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
    FAST(attention)(ctx, o_fast, lse_fast, q, k, v, scale);
    snprintf(label, sizeof label, "attention B=%lld H=%lld Nq=%lld Nk=%lld d=%lld%s", (long long)c->B, (long long)c->H, (long long)c->Nq,
             (long long)c->Nk, (long long)c->d, c->strided ? " strided" : "");
    CHECK_CLOSE(label, hv_data(o_fast), hv_data(o_ref), hv_numel(o_ref), 2e-5);
    CHECK_CLOSE("  lse", hv_data(lse_fast), hv_data(lse_ref), hv_numel(lse_ref), 2e-5);
    for (i = 0; i < 3; i++) {
        g_ref[i] = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, i ? kshape : qshape));
        g_fast[i] = hv_tensor_temp(ctx, HV_F32, hv_shape_of(4, i ? kshape : qshape));
    }
    hv__cpu_attention_bwd(ctx, g_ref[0], g_ref[1], g_ref[2], delta, q, k, v, o_ref, lse_ref, go, scale);
    FAST(attention_bwd)(ctx, g_fast[0], g_fast[1], g_fast[2], delta, q, k, v, o_ref, lse_ref, go, scale);
    if (c->Nk == 1) { /* one key: the softmax is constant, dq = dk = 0 exactly, and both kernels
                          leave rounding noise (of the unit-scale inputs) that a relative error would blow up */
        float worst = 0;
        int64_t j;
        for (i = 0; i < 2; i++)
            for (j = 0; j < hv_numel(g_ref[i]); j++) {
                float e = fabsf(hv_data(g_fast[i])[j] - hv_data(g_ref[i])[j]);
                if (!(e <= worst)) worst = e;
            }
        if (fx_verbose) printf("    %-58s abs err %.3g (tol 5e-05)\n", "  dq, dk (exactly 0)", (double)worst);
        CHECK(worst <= 5e-5f, "%s: dq, dk absolute error %.3g > 5e-5", label, (double)worst);
    } else {
        CHECK_CLOSE("  dq", hv_data(g_fast[0]), hv_data(g_ref[0]), hv_numel(g_ref[0]), 5e-5);
        CHECK_CLOSE("  dk", hv_data(g_fast[1]), hv_data(g_ref[1]), hv_numel(g_ref[1]), 5e-5);
    }
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
            FAST(attention_bwd)(ctx, g_t[t][0], g_t[t][1], g_t[t][2], delta, q, k, v, o_ref, lse_ref, go, scale);
        }
        hv_set_threads(ctx, 1);
        FAST(attention)(ctx, o1, l1, q, k, v, scale);
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
    FAST(attention_bwd)(ctx, gq_f, NULL, NULL, delta, q, k, v, o, lse, go, scale);
    CHECK_CLOSE("attention dq only", hv_data(gq_f), hv_data(gq_r), hv_numel(gq_r), 1e-4);
    hv__cpu_attention_bwd(ctx, NULL, NULL, gv_r, delta, q, k, v, o, lse, go, scale);
    FAST(attention_bwd)(ctx, NULL, NULL, gv_f, delta, q, k, v, o, lse, go, scale);
    CHECK_CLOSE("attention dv only", hv_data(gv_f), hv_data(gv_r), hv_numel(gv_r), 1e-4);
}

/* ---- convolution: the direct kernels, im2col / 1x1 + GEMM, and the dispatch between them ------ */

typedef struct conv_case {
    int64_t N, cin, H, W, cout, KH, KW, sh, sw, ph, pw, dh, dw, G;
    int bias;
} conv_case;

/* the direct kernels on any shape, whatever hv__dconv_pick would choose (strided backward data:
   the phase split), and the bias gradient from the GEMM path */
static void conv_direct(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(x, y, w, g);
    CHECK(hv__dconv(ctx, &c, hv_data((hv_tensor *)x), hv_data(y), hv_data((hv_tensor *)w), b ? hv_data((hv_tensor *)b) : NULL, 0), "direct conv: no room");
}
static void conv_direct_bwd_data(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(gx, gy, w, g);
    CHECK(hv__dconv(ctx, &c, hv_data((hv_tensor *)gy), hv_data(gx), hv_data((hv_tensor *)w), NULL, 1), "direct conv dx: no room");
}
static void conv_direct_bwd_weight(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(x, gy, gw, g);
    CHECK(hv__dconv_bwd_weight(ctx, &c, hv_data((hv_tensor *)x), hv_data((hv_tensor *)gy), hv_data(gw)), "direct conv dw: no room");
    hv__conv2d_gemm_bwd_weight(ctx, NULL, gb, x, gy, g);
}
typedef struct conv_kernels {
    const char *name;
    void (*fwd)(hv_ctx *, hv_tensor *, const hv_tensor *, const hv_tensor *, const hv_tensor *, const int64_t *);
    void (*bwd_data)(hv_ctx *, hv_tensor *, const hv_tensor *, const hv_tensor *, const int64_t *);
    void (*bwd_weight)(hv_ctx *, hv_tensor *, hv_tensor *, const hv_tensor *, const hv_tensor *, const int64_t *);
} conv_kernels;
/* the forced kernel sets; the table's own (FAST: the ISA build under test) is checked first */
static const conv_kernels conv_sets[] = {
    {"direct", conv_direct, conv_direct_bwd_data, conv_direct_bwd_weight},
    {"gemm", hv__conv2d_gemm, hv__conv2d_gemm_bwd_data, hv__conv2d_gemm_bwd_weight},
};

/* Tolerances: forward and data gradient 1e-5, weight and bias gradients 2e-5 (the reference sums
   in double; measured at most 9.7e-7 (dx) and 7.2e-7 (dw) over these cases, run with -v;
   the direct kernels' float sums are no worse than the GEMM's). Each kernel set
   runs with 2 threads and with 1, which must give the same bits. The gradients are accumulated
   (+=) into random values. */
static void conv_check(hv_ctx *ctx, const conv_case *c) {
    int64_t g[7] = {c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->G};
    int64_t OH = (c->H + 2 * c->ph - c->dh * (c->KH - 1) - 1) / c->sh + 1, OW = (c->W + 2 * c->pw - c->dw * (c->KW - 1) - 1) / c->sw + 1;
    hv_tensor *x = fx_randn(ctx, HV_SHAPE(c->N, c->cin, c->H, c->W), 1), *w = fx_randn(ctx, HV_SHAPE(c->cout, c->cin / c->G, c->KH, c->KW), 0.3f);
    hv_tensor *b = c->bias ? fx_randn(ctx, HV_SHAPE(c->cout), 1) : NULL, *gy = fx_randn(ctx, HV_SHAPE(c->N, c->cout, OH, OW), 1);
    hv_tensor *y_r = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW));
    hv_tensor *gx0 = fx_randn(ctx, HV_SHAPE(c->N, c->cin, c->H, c->W), 1), *gx_r = fx_clone(gx0);
    hv_tensor *gw0 = fx_randn(ctx, hv_tensor_shape(w), 1), *gw_r = fx_clone(gw0);
    hv_tensor *gb0 = fx_randn(ctx, HV_SHAPE(c->cout), 1), *gb_r = fx_clone(gb0);
    char label[240];
    size_t k;
    hv__cpu_conv2d(ctx, y_r, x, w, b, g);
    hv__cpu_conv2d_bwd_data(ctx, gx_r, gy, w, g);
    hv__cpu_conv2d_bwd_weight(ctx, gw_r, gb_r, x, gy, g);
    for (k = 0; k <= sizeof conv_sets / sizeof conv_sets[0]; k++) {
        conv_kernels table = {"dispatch", FAST(conv2d), FAST(conv2d_bwd_data), FAST(conv2d_bwd_weight)};
        const conv_kernels *ks = k ? &conv_sets[k - 1] : &table;
        hv_tensor *y_f = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW)), *y_1 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->cout, OH, OW));
        hv_tensor *gx_f = fx_clone(gx0), *gx_1 = fx_clone(gx0), *gw_f = fx_clone(gw0), *gw_1 = fx_clone(gw0), *gb_f = fx_clone(gb0), *gb_1 = fx_clone(gb0);
        int threads = hv_get_threads(ctx);
        snprintf(label, sizeof label, "conv %s x (%lld, %lld, %lld, %lld) w %lldx%lld s (%lld, %lld) p (%lld, %lld) d (%lld, %lld) G %lld -> %lld",
                 ks->name, (long long)c->N, (long long)c->cin, (long long)c->H, (long long)c->W, (long long)c->KH, (long long)c->KW,
                 (long long)c->sh, (long long)c->sw, (long long)c->ph, (long long)c->pw, (long long)c->dh, (long long)c->dw, (long long)c->G,
                 (long long)c->cout);
        ks->fwd(ctx, y_f, x, w, b, g);
        ks->bwd_data(ctx, gx_f, gy, w, g);
        ks->bwd_weight(ctx, gw_f, gb_f, x, gy, g);
        hv_set_threads(ctx, 1);
        ks->fwd(ctx, y_1, x, w, b, g);
        ks->bwd_data(ctx, gx_1, gy, w, g);
        ks->bwd_weight(ctx, gw_1, gb_1, x, gy, g);
        hv_set_threads(ctx, threads);
        CHECK_CLOSE(label, hv_data(y_f), hv_data(y_r), hv_numel(y_r), 1e-5);
        CHECK_CLOSE("  dx", hv_data(gx_f), hv_data(gx_r), hv_numel(gx_r), 1e-5);
        CHECK_CLOSE("  dw", hv_data(gw_f), hv_data(gw_r), hv_numel(gw_r), 2e-5);
        CHECK_CLOSE("  db", hv_data(gb_f), hv_data(gb_r), hv_numel(gb_r), 2e-5);
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
        {2, 3, 32, 32, 24, 16, 16, 16, 16, 0, 0, 1, 1, 1, 1},  /* ViT patch embedding */
        {2, 3, 30, 30, 8, 14, 14, 14, 14, 0, 0, 1, 1, 1, 1},   /* patch 14, 2 x 2 patches */
        {3, 16, 9, 11, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0},      /* 1x1: a plain GEMM */
        {2, 32, 7, 7, 16, 1, 1, 1, 1, 0, 0, 1, 1, 4, 1},       /* 1x1 grouped */
        {2, 16, 10, 10, 8, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1},      /* 1x1 stride 2 (ResNeXt downsample) */
        {2, 32, 13, 13, 32, 3, 3, 1, 1, 1, 1, 1, 1, 8, 1},     /* 3x3 grouped (ResNeXt, 4 per group) */
        {2, 64, 9, 17, 64, 3, 3, 1, 1, 1, 1, 1, 1, 8, 0},      /* 3x3 grouped, 8 per group, odd sizes */
        {2, 32, 14, 14, 32, 3, 3, 2, 2, 1, 1, 1, 1, 8, 0},     /* 3x3 grouped, stride 2 */
        {2, 3, 29, 31, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1},       /* 7x7 stride 2 stem, odd sizes */
        {1, 3, 40, 38, 64, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1},      /* the stem's 64 outputs, 20 x 19 */
        {1, 6, 12, 12, 6, 3, 3, 1, 1, 2, 2, 2, 2, 6, 1},       /* depthwise, dilation 2 */
        {2, 4, 5, 9, 6, 3, 2, 3, 1, 0, 1, 1, 2, 2, 1},         /* mixed strides, padding, dilation */
        {1, 2, 3, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1},         /* one output pixel */
        {2, 10, 11, 37, 15, 5, 3, 1, 1, 2, 0, 1, 3, 5, 1},     /* cout 3 per group, dilated columns, rows 37 */
        {1, 4, 8, 8, 7, 3, 3, 1, 1, 4, 3, 1, 1, 1, 1},         /* padding past the kernel (dx: negative padding) */
        {2, 6, 13, 21, 9, 4, 5, 3, 2, 1, 2, 2, 1, 3, 0},       /* stride 3 x 2, even kernel, dilated rows */
        {1, 72, 6, 6, 80, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},       /* wide dense: the dispatch picks the GEMM */
        /* strided backward data by output phase: odd sizes, strides 2 to 4, phases that no tap reaches */
        {2, 24, 15, 17, 24, 3, 3, 2, 2, 1, 1, 1, 1, 8, 0},     /* grouped 3x3 stride 2, 3 per group, odd sizes */
        {2, 16, 13, 14, 16, 3, 3, 2, 2, 1, 1, 1, 1, 16, 1},    /* depthwise stride 2 */
        {1, 12, 16, 19, 12, 3, 3, 3, 3, 1, 1, 1, 1, 4, 1},     /* stride 3: one tap per phase */
        {2, 8, 12, 11, 8, 3, 3, 2, 2, 2, 2, 2, 2, 4, 0},       /* stride 2, dilation 2: every tap in one phase */
        {1, 6, 11, 13, 6, 2, 2, 4, 4, 1, 1, 1, 1, 2, 1},       /* kernel 2 stride 4: half the phases get no tap */
        {1, 4, 7, 9, 5, 3, 3, 2, 2, 3, 3, 1, 1, 1, 1},         /* padding past the kernel, stride 2 */
        {1, 6, 17, 10, 9, 5, 3, 3, 2, 2, 1, 3, 2, 3, 0},       /* stride 3 x 2, dilation 3 x 2 */
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_check(ctx, &cases[i]);
    { /* the dispatch rule on the shapes it was measured on (bench/KERNELS.md) */
        hv__conv_geo c;
        memset(&c, 0, sizeof c);
        c.KH = c.KW = c.sh = c.sw = c.dh = c.dw = 1;
        c.cin_g = 256, c.cout_g = 128, c.direct = 1;
        CHECK(!hv__dconv_pick(&c, 0), "1x1 should stay on the GEMM");
        c.direct = 0, c.KH = c.KW = c.sh = c.sw = 16, c.cin_g = 3, c.cout_g = 384;
        CHECK(!hv__dconv_pick(&c, 0) && !hv__dconv_pick(&c, 1), "the patch embedding should stay on the GEMM");
        c.KH = c.KW = 3, c.sh = c.sw = 1, c.ph = c.pw = 1, c.cin_g = c.cout_g = 4;
        CHECK(hv__dconv_pick(&c, 0) && hv__dconv_pick(&c, 1), "grouped 3x3 should go direct");
        c.cin_g = c.cout_g = 64;
        CHECK(hv__dconv_pick(&c, 0) && hv__dconv_pick(&c, 1), "a 64-channel dense 3x3 should go direct");
        c.cin_g = c.cout_g = 128;
        CHECK(!hv__dconv_pick(&c, 0) && !hv__dconv_pick(&c, 1), "a 128-channel dense 3x3 should stay on the GEMM");
        c.KH = c.KW = 7, c.sh = c.sw = 2, c.ph = c.pw = 3, c.cin_g = 3, c.cout_g = 64;
        CHECK(hv__dconv_pick(&c, 0) && hv__dconv_pick(&c, 1), "the stem should go direct");
        c.KH = c.KW = 3, c.sh = c.sw = 2, c.ph = c.pw = 1, c.cin_g = c.cout_g = 8;
        CHECK(hv__dconv_pick(&c, 0) && hv__dconv_pick(&c, 1), "grouped 3x3 stride 2 should go direct");
    }
}

/* ---- exp and erf: the vector polynomials against double precision, in ulps ------------------- */

static double fx_ulps(float got, double want) {
    float w = (float)want;
    double ulp = (double)nextafterf(fabsf(w), INFINITY) - fabs((double)w);
    if (w == 0 || ulp < 1.4e-45) ulp = 1.4e-45;
    return fabs((double)got - want) / ulp;
}
/* every 257th float bit pattern of the range (a million or so samples) */
static void test_exp_erf_ulps(hv_ctx *ctx) {
    double worst_exp = 0, worst_erf = 0, worst_gelu = 0;
    float at_exp = 0, at_erf = 0;
    uint32_t u;
    (void)ctx;
    for (u = 0; u < 0x7f800000u; u += 257) {
        float x, buf[HV__VN], out[HV__VN];
        int sign;
        memcpy(&x, &u, sizeof x);
        for (sign = 0; sign < 2; sign++) {
            float xs = sign ? -x : x;
            double e;
            int i;
            for (i = 0; i < HV__VN; i++) buf[i] = xs;
            if (xs >= -87.0f && xs <= 88.0f) { /* normal results (denormals have ulps of their own) */
                hv__vst(out, hv__vexp(hv__vld(buf)));
                e = fx_ulps(out[0], exp((double)xs));
                if (e > worst_exp) worst_exp = e, at_exp = xs;
            }
            if (fabsf(xs) <= 6.0f) {
                hv__vst(out, hv__verf(hv__vld(buf)));
                e = fx_ulps(out[0], erf((double)xs));
                if (e > worst_erf) worst_erf = e, at_erf = xs;
                hv__vst(out, hv__vgelu(hv__vld(buf))); /* against the reference kernel's erff form */
                /* relative to |x| / 2, the scale of 1 + erf: both forms lose digits to it for x << 0 */
                e = fabs((double)out[0] - (double)hv__gelu_f(xs)) / (0.5 * fabs((double)xs) + 1e-30);
                if (e > worst_gelu) worst_gelu = e;
            }
        }
    }
    if (fx_verbose)
        printf("    exp max %.2f ulp (at %g), erf max %.2f ulp (at %g), gelu vs the erff form max error / (|x| / 2) %.3g\n", worst_exp, (double)at_exp,
               worst_erf, (double)at_erf, worst_gelu);
    /* the scalar build uses libm itself (0.5 ulp or so) */
    CHECK(worst_exp <= 2.0, "vector exp: %.2f ulp at %g", worst_exp, (double)at_exp);
    CHECK(worst_erf <= 2.0, "vector erf: %.2f ulp at %g", worst_erf, (double)at_erf);
    /* 1 + erf lies in [0, 2), where one ulp is up to 2.4e-7: allow 2 */
    CHECK(worst_gelu <= 4.8e-7, "vector gelu: error / (|x| / 2) %.3g", worst_gelu);
    {
        float sp[HV__VN], out[HV__VN];
        int i;
        for (i = 0; i < HV__VN; i++) sp[i] = i % 3 == 0 ? -INFINITY : i % 3 == 1 ? NAN : INFINITY;
        hv__vst(out, hv__vexp(hv__vld(sp)));
        for (i = 0; i < HV__VN; i++)
            CHECK(i % 3 == 0 ? out[i] == 0 : i % 3 == 1 ? out[i] != out[i] : out[i] == INFINITY, "exp(%g) = %g", (double)sp[i], (double)out[i]);
        hv__vst(out, hv__verf(hv__vld(sp)));
        for (i = 0; i < HV__VN; i++)
            CHECK(i % 3 == 0 ? out[i] == -1 : i % 3 == 1 ? out[i] != out[i] : out[i] == 1, "erf(%g) = %g", (double)sp[i], (double)out[i]);
    }
}

/* ---- softmax, layer norm -------------------------------------------------------------------- */

/* declares got, want and one: copies of out0 (the kernels may accumulate) passed as o_ to the
   fast kernel, the reference, and the fast kernel on 1 thread; checks that one == got bit for bit.
   Use inside a block of its own. */
#define FX_BOTH(ctx, out0, got, want, one, call_fast, call_ref)                                    \
    int th_ = hv_get_threads(ctx);                                                                 \
    hv_tensor *got = fx_clone(out0), *want = fx_clone(out0), *one = fx_clone(out0);                \
    {                                                                                              \
        hv_tensor *o_ = got;                                                                       \
        call_fast;                                                                                 \
        o_ = want;                                                                                 \
        call_ref;                                                                                  \
        o_ = one;                                                                                  \
        hv_set_threads(ctx, 1);                                                                    \
        call_fast;                                                                                 \
        hv_set_threads(ctx, th_);                                                                  \
    }                                                                                              \
    CHECK_SAME("1 vs 2 threads", hv_data(one), hv_data(got), hv_numel(got))

/* Tolerance 1e-6 for softmax and log-softmax, forward and backward (measured <= 2e-7) */
static void test_softmax_fast(hv_ctx *ctx) {
    static const int64_t shapes[][3] = {{7, 257, 1}, {3, 1, 1}, {5, 33, 1}, {2, 1000, 1}, {2, 17, 5}, {3, 10, 40}, {1, 9, 16}, {4, 300, 3}};
    size_t i;
    int is_log;
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (is_log = 0; is_log < 2; is_log++) {
            int64_t o = shapes[i][0], n = shapes[i][1], in = shapes[i][2];
            char label[96];
            hv_tensor *x = fx_randn(ctx, HV_SHAPE(o, n, in), i % 2 ? 30.0f : 3.0f), *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(o, n, in));
            hv_tensor *gy = fx_randn(ctx, HV_SHAPE(o, n, in), 1), *gx0 = fx_randn(ctx, HV_SHAPE(o, n, in), 1);
            snprintf(label, sizeof label, "%ssoftmax (%lld, %lld, %lld)", is_log ? "log-" : "", (long long)o, (long long)n, (long long)in);
            {
                FX_BOTH(ctx, y0, yf, yr, y1, FAST(softmax)(ctx, is_log, o_, x, o, n, in), hv__cpu_softmax(ctx, is_log, o_, x, o, n, in));
                CHECK_CLOSE(label, hv_data(yf), hv_data(yr), hv_numel(yr), 1e-6);
                {
                    FX_BOTH(ctx, gx0, gf, gr, g1, FAST(softmax_bwd)(ctx, is_log, o_, yr, gy, o, n, in),
                            hv__cpu_softmax_bwd(ctx, is_log, o_, yr, gy, o, n, in));
                    CHECK_CLOSE("  backward", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
                }
            }
        }
}

/* Tolerances: 1e-6 forward and input gradient (measured <= 1.6e-7), 1e-5 for the saved mean and
   rstd, 3e-5 for the weight/bias gradients (sums over all rows, added to random values: usually
   <= 9e-7, but a short sum that cancels against its starting value leaves a small result next to
   f32 rounding of O(1) terms: 1.2e-5 seen for 5 rows of width 1); rows offset by 100 keep them
   (the statistics are two-pass, about the row's first value) */
static void test_layer_norm_fast(hv_ctx *ctx) {
    static const int64_t shapes[][2] = {{37, 384}, {5, 1}, {3, 17}, {9, 80}, {300, 64}, {2, 1000}};
    size_t i;
    int aff;
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (aff = 0; aff < 3; aff++) {
            int64_t R = shapes[i][0], D = shapes[i][1], j;
            char label[96];
            hv_tensor *x = fx_randn(ctx, HV_SHAPE(R, D), 2), *w = aff ? fx_randn(ctx, HV_SHAPE(D), 1) : NULL, *b = aff == 1 ? fx_randn(ctx, HV_SHAPE(D), 1) : NULL;
            hv_tensor *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(R, D)), *mr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(R));
            hv_tensor *sr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(R)), *mf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(R)), *sf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(R));
            hv_tensor *gy = fx_randn(ctx, HV_SHAPE(R, D), 1), *gx0 = fx_randn(ctx, HV_SHAPE(R, D), 1), *gw0 = fx_randn(ctx, HV_SHAPE(D), 1);
            if (i % 2)
                for (j = 0; j < R * D; j++) hv_data(x)[j] += 100.0f;
            snprintf(label, sizeof label, "layer norm (%lld, %lld)%s", (long long)R, (long long)D, aff == 0 ? "" : aff == 1 ? " w b" : " w");
            {
                FX_BOTH(ctx, y0, yf, yr, y1, FAST(layer_norm)(ctx, o_, mf, sf, x, w, b, 1e-6f), hv__cpu_layer_norm(ctx, o_, mr, sr, x, w, b, 1e-6f));
                CHECK_CLOSE(label, hv_data(yf), hv_data(yr), hv_numel(yr), 1e-6);
                CHECK_CLOSE("  mean", hv_data(mf), hv_data(mr), R, 1e-5); /* means near 0 next to large ones */
                CHECK_CLOSE("  rstd", hv_data(sf), hv_data(sr), R, 1e-5);
            }
            {
                FX_BOTH(ctx, gx0, gf, gr, g1, FAST(layer_norm_bwd)(ctx, o_, NULL, NULL, x, w, mr, sr, gy),
                        hv__cpu_layer_norm_bwd(ctx, o_, NULL, NULL, x, w, mr, sr, gy));
                CHECK_CLOSE("  dx", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
            }
            {
                FX_BOTH(ctx, gw0, gf, gr, g1, FAST(layer_norm_bwd)(ctx, NULL, o_, NULL, x, w, mr, sr, gy),
                        hv__cpu_layer_norm_bwd(ctx, NULL, o_, NULL, x, w, mr, sr, gy));
                CHECK_CLOSE("  dw", hv_data(gf), hv_data(gr), hv_numel(gr), 3e-5);
            }
            {
                FX_BOTH(ctx, gw0, gf, gr, g1, FAST(layer_norm_bwd)(ctx, NULL, NULL, o_, x, w, mr, sr, gy),
                        hv__cpu_layer_norm_bwd(ctx, NULL, NULL, o_, x, w, mr, sr, gy));
                CHECK_CLOSE("  db", hv_data(gf), hv_data(gr), hv_numel(gr), 3e-5);
            }
            hv_step_end(ctx);
        }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

/* Tolerances: forward 1e-6 for the polynomial ops (exp, sigmoid, gelu; measured <= 1.2e-7) and 0
   for the rest (the same float operations as the reference); backward 1e-6 (measured <= 1e-7: an
   FMA where the reference rounds the product) */
static void test_unary_fast(hv_ctx *ctx) {
    static const int ops[] = {HV__EXP, HV__LOG, HV__SQRT, HV__TANH, HV__SIGMOID, HV__RELU, HV__LEAKY_RELU, HV__GELU, HV__SCALE, HV__ADD_SCALAR};
    static const char *names[] = {"exp", "log", "sqrt", "tanh", "sigmoid", "relu", "leaky_relu", "gelu", "scale", "add_scalar"};
    const int perm[3] = {0, 2, 1};
    size_t i;
    int strided;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
        for (strided = 0; strided < 2; strided++) {
            int op = ops[i], poly = op == HV__EXP || op == HV__SIGMOID || op == HV__GELU;
            double tol = poly ? 1e-6 : 0;
            char label[64];
            hv_tensor *base = fx_randn(ctx, HV_SHAPE(3, 67, 45), op == HV__EXP ? 4.0f : 3.0f), *x, *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(3, 67, 45));
            hv_tensor *gy = fx_randn(ctx, HV_SHAPE(3, 67, 45), 1), *gx0 = fx_randn(ctx, HV_SHAPE(3, 67, 45), 1);
            int64_t j;
            if (op == HV__LOG || op == HV__SQRT)
                for (j = 0; j < hv_numel(base); j++) hv_data(base)[j] = fabsf(hv_data(base)[j]) + 0.01f;
            x = strided ? hv_permute(fx_randn(ctx, HV_SHAPE(3, 45, 67), 1), perm) : base;
            if (strided) hv__cpu_copy(ctx, x, base, 0);
            snprintf(label, sizeof label, "unary %s%s", names[i], strided ? " (strided x)" : "");
            {
                FX_BOTH(ctx, y0, yf, yr, y1, FAST(unary)(ctx, op, 0.2f, o_, x), hv__cpu_unary(ctx, op, 0.2f, o_, x));
                CHECK_CLOSE(label, hv_data(yf), hv_data(yr), hv_numel(yr), tol);
                if (!strided) {
                    FX_BOTH(ctx, gx0, gf, gr, g1, FAST(unary_bwd)(ctx, op, 0.2f, o_, x, yr, gy), hv__cpu_unary_bwd(ctx, op, 0.2f, o_, x, yr, gy));
                    CHECK_CLOSE("  backward", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
                }
            }
            hv_step_end(ctx);
        }
}
/* same float operations as the reference: bit-identical */
static void test_binary_copy_fast(hv_ctx *ctx) {
    const int perm[3] = {0, 2, 1};
    static const int64_t bshapes[][3] = {{5, 31, 47}, {1, 1, 47}, {5, 31, 1}, {1, 1, 1}, {5, 1, 47}};
    size_t i;
    int op;
    hv_tensor *a = fx_randn(ctx, HV_SHAPE(5, 31, 47), 1);
    for (i = 0; i < sizeof bshapes / sizeof bshapes[0]; i++)
        for (op = HV__ADD; op <= HV__DIV; op++) {
            int64_t sh[3] = {5, 31, 47};
            hv_tensor *b = fx_randn(ctx, hv_shape_of(3, bshapes[i]), 1), *ea = hv__expand(a, 3, sh), *eb = hv__expand(b, 3, sh);
            hv_tensor *out0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(5, 31, 47));
            char label[96];
            snprintf(label, sizeof label, "binary op %d with b (%lld, %lld, %lld)", op, (long long)bshapes[i][0], (long long)bshapes[i][1],
                     (long long)bshapes[i][2]);
            {
                FX_BOTH(ctx, out0, of, orf, o1, FAST(binary)(ctx, op, o_, ea, eb), hv__cpu_binary(ctx, op, o_, ea, eb));
                CHECK_CLOSE(label, hv_data(of), hv_data(orf), hv_numel(orf), 0);
            }
        }
    { /* copies into and out of strided views, plain and accumulating */
        hv_tensor *big = fx_randn(ctx, HV_SHAPE(5, 47, 31), 1), *view = hv_permute(big, perm), *acc;
        int accumulate;
        for (accumulate = 0; accumulate < 2; accumulate++) {
            hv_tensor *d0 = fx_randn(ctx, HV_SHAPE(5, 31, 47), 1);
            FX_BOTH(ctx, d0, df, dr, d1, FAST(copy)(ctx, o_, view, accumulate), hv__cpu_copy(ctx, o_, view, accumulate));
            CHECK_CLOSE(accumulate ? "copy += strided" : "copy = strided", hv_data(df), hv_data(dr), hv_numel(dr), 0);
        }
        acc = fx_clone(big);
        FAST(copy)(ctx, hv_permute(acc, perm), a, 1);
        hv__cpu_copy(ctx, view, a, 1);
        CHECK_CLOSE("copy += into a strided view", hv_data(acc), hv_data(big), hv_numel(big), 0);
    }
}

/* Tolerance 1e-6 (the reference sums in double; runs of 256 floats here) */
static void test_reduce_fast(hv_ctx *ctx) {
    static const int64_t outs[][3] = {{1, 1, 47}, {5, 31, 1}, {1, 31, 47}, {5, 1, 1}, {1, 1, 1}, {5, 1, 47}};
    size_t i;
    int op;
    hv_tensor *x = fx_randn(ctx, HV_SHAPE(5, 31, 47), 1), *xn = fx_clone(x);
    hv_data(xn)[5 * 47 + 3] = NAN;
    for (i = 0; i < sizeof outs / sizeof outs[0]; i++)
        for (op = HV__RED_SUM; op <= HV__RED_MAX; op++) {
            hv_tensor *o0 = hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, outs[i]));
            char label[96];
            snprintf(label, sizeof label, "%s to (%lld, %lld, %lld)", op == HV__RED_SUM ? "sum" : "max", (long long)outs[i][0], (long long)outs[i][1],
                     (long long)outs[i][2]);
            {
                FX_BOTH(ctx, o0, rf, rr, r1, FAST(reduce)(ctx, op, o_, x), hv__cpu_reduce(ctx, op, o_, x));
                CHECK_CLOSE(label, hv_data(rf), hv_data(rr), hv_numel(rr), op == HV__RED_SUM ? 1e-6 : 0);
            }
            if (op == HV__RED_MAX) { /* NaN wins where it is reduced */
                hv_tensor *a = fx_clone(o0), *b = fx_clone(o0);
                int64_t j;
                FAST(reduce)(ctx, op, a, xn);
                hv__cpu_reduce(ctx, op, b, xn);
                for (j = 0; j < hv_numel(a); j++)
                    CHECK((hv_data(a)[j] != hv_data(a)[j]) == (hv_data(b)[j] != hv_data(b)[j]), "%s: NaN at %lld", label, (long long)j);
            }
        }
    { /* the bias gradient of a linear layer: (2056, 384) -> (384) */
        hv_tensor *g = fx_randn(ctx, HV_SHAPE(2056, 384), 1), *o0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1, 384));
        FX_BOTH(ctx, o0, rf, rr, r1, FAST(reduce)(ctx, HV__RED_SUM, o_, g), hv__cpu_reduce(ctx, HV__RED_SUM, o_, g));
        CHECK_CLOSE("sum over 2056 rows", hv_data(rf), hv_data(rr), hv_numel(rr), 1e-6);
    }
}

/* gather bit-identical; scatter-add bit-identical (same order per element) */
static void test_gather_scatter_fast(hv_ctx *ctx) {
    const int64_t outer = 6, n = 50, k = 37, inner = 40;
    hv_tensor *src = fx_randn(ctx, HV_SHAPE(outer, n, inner), 1), *idx = hv_tensor_temp(ctx, HV_I32, HV_SHAPE(outer, k));
    hv_tensor *g0 = fx_randn(ctx, HV_SHAPE(outer, k, inner), 1), *s0 = fx_randn(ctx, HV_SHAPE(outer, n, inner), 1);
    int64_t j;
    int acc;
    for (j = 0; j < outer * k; j++) hv_data_i32(idx)[j] = (int32_t)(hv_rng_u64(ctx) % (uint64_t)(j % 3 ? n : 4)); /* repeats */
    for (acc = 0; acc < 2; acc++) {
        FX_BOTH(ctx, g0, gf, gr, g1, FAST(gather)(ctx, acc, o_, src, idx, outer, n, k, inner), hv__cpu_gather(ctx, acc, o_, src, idx, outer, n, k, inner));
        CHECK_CLOSE(acc ? "gather +=" : "gather", hv_data(gf), hv_data(gr), hv_numel(gr), 0);
    }
    {
        FX_BOTH(ctx, s0, sf, sr, s1, FAST(scatter_add)(ctx, o_, g0, idx, outer, n, k, inner), hv__cpu_scatter_add(ctx, o_, g0, idx, outer, n, k, inner));
        CHECK_CLOSE("scatter_add", hv_data(sf), hv_data(sr), hv_numel(sr), 0);
    }
}

/* Tolerances: cross-entropy 1e-6 (loss, lse, gradient), MSE/L1 1e-6 (loss), 0 (gradients) */
static void test_losses_fast(hv_ctx *ctx) {
    static const int64_t ce[][2] = {{37, 1000}, {5, 3}, {1, 1}, {64, 17}};
    static const int64_t ns[] = {1, 1000, 100003};
    size_t i;
    int mode;
    for (i = 0; i < sizeof ce / sizeof ce[0]; i++) {
        int64_t N = ce[i][0], C = ce[i][1], j;
        hv_tensor *x = fx_randn(ctx, HV_SHAPE(N, C), i == 3 ? 300.0f : 3.0f), *lab = hv_tensor_temp(ctx, HV_I32, HV_SHAPE(N));
        hv_tensor *lf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1)), *lr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1));
        hv_tensor *sf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(N, 2)), *sr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(N, 2));
        hv_tensor *rl = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(N)), *g0 = fx_randn(ctx, HV_SHAPE(N, C), 1), *gl = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1));
        char label[64];
        for (j = 0; j < N; j++) hv_data_i32(lab)[j] = (int32_t)(hv_rng_u64(ctx) % (uint64_t)C);
        hv_data(gl)[0] = 1.7f;
        snprintf(label, sizeof label, "cross-entropy (%lld, %lld)", (long long)N, (long long)C);
        FAST(cross_entropy)(ctx, lf, sf, rl, x, lab);
        hv__cpu_cross_entropy(ctx, lr, sr, rl, x, lab);
        CHECK_CLOSE(label, hv_data(lf), hv_data(lr), 1, 1e-6);
        CHECK_CLOSE("  max and log-sum", hv_data(sf), hv_data(sr), 2 * N, 1e-6);
        {
            FX_BOTH(ctx, g0, gf, gr, g1, FAST(cross_entropy_bwd)(ctx, o_, x, lab, sr, gl), hv__cpu_cross_entropy_bwd(ctx, o_, x, lab, sr, gl));
            CHECK_CLOSE("  backward", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
        }
    }
    for (i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (mode = HV__LOSS_MSE; mode <= HV__LOSS_L1; mode++) {
            int64_t n = ns[i];
            hv_tensor *a = fx_randn(ctx, HV_SHAPE(n), 1), *b = fx_randn(ctx, HV_SHAPE(n), 1), *lf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1));
            hv_tensor *lr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1)), *l1 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1));
            hv_tensor *ga0 = fx_randn(ctx, HV_SHAPE(n), 1), *gl = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1));
            char label[64];
            int th = hv_get_threads(ctx);
            hv_data(b)[0] = hv_data(a)[0]; /* a zero difference: L1's gradient is 0 there */
            hv_data(gl)[0] = 0.3f;
            snprintf(label, sizeof label, "%s loss n=%lld", mode == HV__LOSS_MSE ? "mse" : "l1", (long long)n);
            FAST(diff_loss)(ctx, mode, lf, a, b);
            hv__cpu_diff_loss(ctx, mode, lr, a, b);
            hv_set_threads(ctx, 1);
            FAST(diff_loss)(ctx, mode, l1, a, b);
            hv_set_threads(ctx, th);
            CHECK_CLOSE(label, hv_data(lf), hv_data(lr), 1, 1e-6);
            CHECK_SAME(label, hv_data(l1), hv_data(lf), 1);
            {
                FX_BOTH(ctx, ga0, gf, gr, g1, FAST(diff_loss_bwd)(ctx, mode, o_, o_, a, b, gl), hv__cpu_diff_loss_bwd(ctx, mode, o_, o_, a, b, gl));
                CHECK_CLOSE("  backward (a and b into one buffer)", hv_data(gf), hv_data(gr), n, 0);
            }
            {
                FX_BOTH(ctx, ga0, gf, gr, g1, FAST(diff_loss_bwd)(ctx, mode, o_, NULL, a, b, gl), hv__cpu_diff_loss_bwd(ctx, mode, o_, NULL, a, b, gl));
                CHECK_CLOSE("  backward of a", hv_data(gf), hv_data(gr), n, 0);
            }
        }
}

/* ---- the optimizer update (HV-SECTION cpu-optim) -------------------------------------------- */

/* The vectorised Adam(W) does the reference's float operations in the same order without FMA, so
   the bits match exactly (gcc; a compiler that contracts a * b + c in the scalar reference, as
   clang does by default, may differ by rounding: 1e-6 there). Sizes: under one vector, odd tails,
   around the parallel block; both Adam (l2) and AdamW (decay) coefficients, 4 steps, 1 and 2
   threads. */
static void test_adamw_fast(hv_ctx *ctx) {
    static const int64_t sizes[] = {1, 7, 17, 1003, 8192, 8193, 100003};
#if defined(__GNUC__) && !defined(__clang__)
    const double tol = 0;
#else
    const double tol = 1e-6;
#endif
    int si, kind, step, th = hv_get_threads(ctx);
    for (si = 0; si < (int)(sizeof sizes / sizeof sizes[0]); si++)
        for (kind = 0; kind < 2; kind++) {
            int64_t n = sizes[si], i;
            hv_tensor *w0 = fx_randn(ctx, HV_SHAPE(n), 1.0f), *w[3], *m[3], *v[3], *g;
            char label[96];
            int k;
            for (k = 0; k < 3; k++) {
                w[k] = fx_clone(w0);
                m[k] = hv_zeros(ctx, HV_SHAPE(n));
                v[k] = hv_zeros(ctx, HV_SHAPE(n));
            }
            for (step = 1; step <= 4; step++) {
                hv__adamw_args a;
                double lr = 1e-2, wd = 0.05, bc1 = 1.0 - pow(0.9, step), bc2 = 1.0 - pow(0.95, step);
                g = fx_randn(ctx, HV_SHAPE(n), 1.0f);
                for (i = 0; i < n; i += 7) hv_data(g)[i] *= 1e-3f; /* small gradients: eps matters */
                a.decay = kind ? (float)(1.0 - lr * wd) : 1.0f;
                a.l2 = kind ? 0.0f : (float)wd;
                a.b1c = 0.1f;
                a.beta2 = 0.95f;
                a.b2c = (float)(1.0 - 0.95f);
                a.bc2_sqrt = (float)sqrt(bc2);
                a.eps = 1e-8f;
                a.neg_step = (float)(-lr / bc1);
                hv__adam_fast(ctx, hv_data(w[0]), hv_data(g), hv_data(m[0]), hv_data(v[0]), n, &a);
                hv__adam_ref(ctx, hv_data(w[1]), hv_data(g), hv_data(m[1]), hv_data(v[1]), n, &a);
                hv_set_threads(ctx, 1);
                hv__adam_fast(ctx, hv_data(w[2]), hv_data(g), hv_data(m[2]), hv_data(v[2]), n, &a);
                hv_set_threads(ctx, th);
            }
            snprintf(label, sizeof label, "%s n=%lld: param after 4 steps", kind ? "AdamW" : "Adam", (long long)n);
            CHECK_CLOSE(label, hv_data(w[0]), hv_data(w[1]), n, tol);
            CHECK_CLOSE("  exp_avg", hv_data(m[0]), hv_data(m[1]), n, tol);
            CHECK_CLOSE("  exp_avg_sq", hv_data(v[0]), hv_data(v[1]), n, tol);
            CHECK_SAME(label, hv_data(w[2]), hv_data(w[0]), n);
            for (k = 0; k < 3; k++) {
                hv_tensor_free(m[k]);
                hv_tensor_free(v[k]);
            }
            hv_step_end(ctx);
        }
}

/* ---- pooling, resize, batch norm (HV-SECTION cpu-fast-pool-bn) -------------------------------- */

typedef struct pool_case {
    int64_t N, C, H, W, KH, KW, sh, sw, ph, pw;
} pool_case;

/* Tolerances: max pool (values and argmax), avg pool forward and batch-norm forward 0 (the
   reference's operations in its order); avg-pool and resize backward 1e-6 (each output row is
   summed along W before it is added: measured <= 2.7e-7); resize forward 1e-6 (the same
   operations, but a compiler may contract the reference's a * b + c * d); batch-norm statistics
   1e-6, backward 1e-5 (float-run sums against the reference's doubles: measured <= 4e-7) */
static void pool_check(hv_ctx *ctx, const pool_case *c, int nan) {
    const int64_t OH = (c->H + 2 * c->ph - c->KH) / c->sh + 1, OW = (c->W + 2 * c->pw - c->KW) / c->sw + 1;
    hv_tensor *x = fx_randn(ctx, HV_SHAPE(c->N, c->C, c->H, c->W), 1), *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c->N, c->C, OH, OW));
    hv_tensor *a_f = hv_tensor_temp(ctx, HV_I32, HV_SHAPE(c->N, c->C, OH, OW)), *a_r = hv_tensor_temp(ctx, HV_I32, HV_SHAPE(c->N, c->C, OH, OW));
    hv_tensor *gy = fx_randn(ctx, HV_SHAPE(c->N, c->C, OH, OW), 1), *gx0 = fx_randn(ctx, HV_SHAPE(c->N, c->C, c->H, c->W), 1);
    int64_t j, n = hv_numel(x), excl;
    char label[160];
    if (nan) /* NaN, -inf and ties: argmax must still pick the reference's element */
        for (j = 0; j < n; j++) {
            float *v = &hv_data(x)[j];
            if (j % 13 == 0) *v = -INFINITY;
            else if (j % 29 == 0) *v = NAN;
            else if (j % 3 == 0) *v = 0.5f;
        }
    snprintf(label, sizeof label, "max pool (%lld, %lld, %lld, %lld) k %lldx%lld s (%lld, %lld) p (%lld, %lld)%s", (long long)c->N, (long long)c->C,
             (long long)c->H, (long long)c->W, (long long)c->KH, (long long)c->KW, (long long)c->sh, (long long)c->sw, (long long)c->ph,
             (long long)c->pw, nan ? " NaN, -inf, ties" : "");
    {
        int64_t g[7] = {c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, 0};
        FX_BOTH(ctx, y0, yf, yr, y1, FAST(max_pool2d)(ctx, o_, a_f, x, g), hv__cpu_max_pool2d(ctx, o_, a_r, x, g));
        for (j = 0; j < hv_numel(yr); j++) {
            float f = hv_data(yf)[j], r = hv_data(yr)[j];
            if (!(f == r || (f != f && r != r))) break;
        }
        CHECK(j == hv_numel(yr), "%s: value %lld differs", label, (long long)j);
        CHECK(memcmp(hv_data_i32(a_f), hv_data_i32(a_r), sizeof(int32_t) * (size_t)hv_numel(a_r)) == 0, "%s: argmax differs", label);
        FAST(max_pool2d)(ctx, yf, NULL, x, g); /* without argmax (eval) */
        CHECK(memcmp(hv_data(yf), hv_data(y1), sizeof(float) * (size_t)hv_numel(yf)) == 0, "%s: values without argmax differ", label);
    }
    if (nan) return;
    for (excl = 0; excl < 2; excl++) {
        int64_t g[7] = {c->KH, c->KW, c->sh, c->sw, c->ph, c->pw, excl};
        snprintf(label, sizeof label, "avg pool (%lld, %lld, %lld, %lld) k %lldx%lld s (%lld, %lld) p (%lld, %lld)%s", (long long)c->N,
                 (long long)c->C, (long long)c->H, (long long)c->W, (long long)c->KH, (long long)c->KW, (long long)c->sh, (long long)c->sw,
                 (long long)c->ph, (long long)c->pw, excl ? " exclude pad" : "");
        {
            FX_BOTH(ctx, y0, yf, yr, y1, FAST(avg_pool2d)(ctx, o_, x, g), hv__cpu_avg_pool2d(ctx, o_, x, g));
            CHECK_CLOSE(label, hv_data(yf), hv_data(yr), hv_numel(yr), 0);
        }
        {
            FX_BOTH(ctx, gx0, gf, gr, g1, FAST(avg_pool2d_bwd)(ctx, o_, gy, g), hv__cpu_avg_pool2d_bwd(ctx, o_, gy, g));
            CHECK_CLOSE("  backward", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
        }
    }
    hv_step_end(ctx);
}
static void test_pool_fast(hv_ctx *ctx) {
    static const pool_case cases[] = {
        /* N C H W KH KW sh sw ph pw */
        {2, 3, 112, 112, 3, 3, 2, 2, 1, 1}, /* the ResNeXt stem's max pool */
        {1, 2, 37, 41, 3, 3, 1, 1, 1, 1},   {2, 2, 7, 7, 7, 7, 7, 7, 0, 0}, /* global */
        {1, 3, 50, 67, 2, 2, 2, 2, 0, 0},   {1, 2, 40, 53, 3, 5, 3, 3, 1, 2}, /* stride 3: gathered taps */
        {1, 1, 9, 200, 1, 3, 1, 2, 0, 1},   {1, 2, 5, 4, 3, 3, 2, 2, 1, 1},  /* no interior vector */
        {3, 1, 33, 95, 5, 4, 2, 1, 2, 2},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) pool_check(ctx, &cases[i], 0);
    pool_check(ctx, &cases[0], 1);
    pool_check(ctx, &cases[4], 1);
}

static void test_resize_fast(hv_ctx *ctx) {
    static const int64_t cases[][6] = {{2, 3, 28, 28, 56, 56}, {1, 2, 57, 61, 20, 33}, {1, 1, 5, 7, 5, 7},
                                       {1, 2, 1, 1, 4, 5},     {1, 2, 6, 9, 1, 1},     {2, 2, 13, 17, 31, 9}};
    size_t i;
    int ac;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (ac = 0; ac < 2; ac++) {
            const int64_t *c = cases[i];
            hv_tensor *x = fx_randn(ctx, HV_SHAPE(c[0], c[1], c[2], c[3]), 1), *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(c[0], c[1], c[4], c[5]));
            hv_tensor *gy = fx_randn(ctx, HV_SHAPE(c[0], c[1], c[4], c[5]), 1), *gx0 = fx_randn(ctx, HV_SHAPE(c[0], c[1], c[2], c[3]), 1);
            char label[128];
            snprintf(label, sizeof label, "resize (%lld, %lld, %lld, %lld) -> %lld x %lld%s", (long long)c[0], (long long)c[1], (long long)c[2],
                     (long long)c[3], (long long)c[4], (long long)c[5], ac ? " align_corners" : "");
            {
                FX_BOTH(ctx, y0, yf, yr, y1, FAST(resize_bilinear)(ctx, o_, x, ac), hv__cpu_resize_bilinear(ctx, o_, x, ac));
                CHECK_CLOSE(label, hv_data(yf), hv_data(yr), hv_numel(yr), 1e-6);
            }
            {
                FX_BOTH(ctx, gx0, gf, gr, g1, FAST(resize_bilinear_bwd)(ctx, o_, gy, ac), hv__cpu_resize_bilinear_bwd(ctx, o_, gy, ac));
                CHECK_CLOSE("  backward", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-6);
            }
            hv_step_end(ctx);
        }
}

static void test_batch_norm_fast(hv_ctx *ctx) {
    static const int64_t shapes[][4] = {{8, 16, 14, 14}, {3, 5, 7, 9}, {2, 3, 1, 17}, {4, 6, 1, 1}, {2, 8, 56, 56}, {1, 2, 3, 100}};
    size_t i;
    int aff;
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (aff = 0; aff < 2; aff++) {
            const int64_t *s = shapes[i], C = s[1];
            hv_tensor *x = fx_randn(ctx, HV_SHAPE(s[0], C, s[2], s[3]), 2), *w = aff ? fx_randn(ctx, HV_SHAPE(C), 1) : NULL;
            hv_tensor *b = aff ? fx_randn(ctx, HV_SHAPE(C), 1) : NULL, *y0 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(s[0], C, s[2], s[3]));
            hv_tensor *mf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C)), *vf = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C));
            hv_tensor *mr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C)), *vr = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C));
            hv_tensor *m1 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C)), *v1 = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(C));
            hv_tensor *gy = fx_randn(ctx, HV_SHAPE(s[0], C, s[2], s[3]), 1), *gx0 = fx_randn(ctx, HV_SHAPE(s[0], C, s[2], s[3]), 1);
            hv_tensor *gc0 = fx_randn(ctx, HV_SHAPE(C), 1);
            int64_t j, th = hv_get_threads(ctx);
            int bs;
            char label[128];
            if (i % 2) /* far from zero: the variance must keep its digits */
                for (j = 0; j < hv_numel(x); j++) hv_data(x)[j] += 100.0f;
            snprintf(label, sizeof label, "batch norm (%lld, %lld, %lld, %lld)%s", (long long)s[0], (long long)C, (long long)s[2], (long long)s[3],
                     aff ? " w b" : "");
            FAST(batch_norm_stats)(ctx, mf, vf, x);
            hv__cpu_batch_norm_stats(ctx, mr, vr, x);
            hv_set_threads(ctx, 1);
            FAST(batch_norm_stats)(ctx, m1, v1, x);
            hv_set_threads(ctx, (int)th);
            CHECK_CLOSE(label, hv_data(mf), hv_data(mr), C, 1e-6);
            CHECK_CLOSE("  variance", hv_data(vf), hv_data(vr), C, 1e-6);
            CHECK_SAME("  mean", hv_data(m1), hv_data(mf), C);
            CHECK_SAME("  variance", hv_data(v1), hv_data(vf), C);
            {
                FX_BOTH(ctx, y0, yf, yr, y1, FAST(batch_norm)(ctx, o_, x, mr, vr, w, b, 1e-5f), hv__cpu_batch_norm(ctx, o_, x, mr, vr, w, b, 1e-5f));
                CHECK_CLOSE("  forward", hv_data(yf), hv_data(yr), hv_numel(yr), 0);
            }
            for (bs = 0; bs < 2; bs++) {
                {
                    FX_BOTH(ctx, gx0, gf, gr, g1, FAST(batch_norm_bwd)(ctx, o_, NULL, NULL, x, gy, mr, vr, w, 1e-5f, bs),
                            hv__cpu_batch_norm_bwd(ctx, o_, NULL, NULL, x, gy, mr, vr, w, 1e-5f, bs));
                    CHECK_CLOSE(bs ? "  dx (batch statistics)" : "  dx (running statistics)", hv_data(gf), hv_data(gr), hv_numel(gr), 1e-5);
                }
                {
                    FX_BOTH(ctx, gc0, gf, gr, g1, FAST(batch_norm_bwd)(ctx, NULL, o_, NULL, x, gy, mr, vr, w, 1e-5f, bs),
                            hv__cpu_batch_norm_bwd(ctx, NULL, o_, NULL, x, gy, mr, vr, w, 1e-5f, bs));
                    CHECK_CLOSE("  dw", hv_data(gf), hv_data(gr), C, 1e-5);
                }
                {
                    FX_BOTH(ctx, gc0, gf, gr, g1, FAST(batch_norm_bwd)(ctx, NULL, NULL, o_, x, gy, mr, vr, w, 1e-5f, bs),
                            hv__cpu_batch_norm_bwd(ctx, NULL, NULL, o_, x, gy, mr, vr, w, 1e-5f, bs));
                    CHECK_CLOSE("  db", hv_data(gf), hv_data(gr), C, 1e-5);
                }
            }
            hv_step_end(ctx);
        }
}

static void run_all(hv_ctx *ctx) {
    TL_RUN(ctx, test_attention_fast);
    TL_RUN(ctx, test_attention_fast_partial);
    TL_RUN(ctx, test_conv_fast);
    TL_RUN(ctx, test_exp_erf_ulps);
    TL_RUN(ctx, test_softmax_fast);
    TL_RUN(ctx, test_layer_norm_fast);
    TL_RUN(ctx, test_unary_fast);
    TL_RUN(ctx, test_binary_copy_fast);
    TL_RUN(ctx, test_reduce_fast);
    TL_RUN(ctx, test_gather_scatter_fast);
    TL_RUN(ctx, test_losses_fast);
    TL_RUN(ctx, test_adamw_fast);
    TL_RUN(ctx, test_pool_fast);
    TL_RUN(ctx, test_resize_fast);
    TL_RUN(ctx, test_batch_norm_fast);
}

#if defined(HV__SGEMM_DISPATCH)
static const char *fk_isa;
/* hv_init chose the best ISA the CPU runs, for the fast kernels as for the GEMM */
static void test_dispatch_pick(hv_ctx *ctx) {
    CHECK(!strcmp(hv_cpu_isa(ctx), fk_isa), "hv_cpu_isa says %s, expected %s", hv_cpu_isa(ctx), fk_isa);
    CHECK(ctx->be->layer_norm == fk.layer_norm && ctx->be->attention == fk.attention && ctx->be->batch_norm == fk.batch_norm &&
              ctx->be->unary == fk.unary && ctx->be->adamw == fk.adamw,
          "the context's table does not hold the %s fast kernels", fk_isa);
}
#endif

int main(int argc, char **argv) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 2024, .threads = 2});
    fx_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
#if defined(HV__SGEMM_DISPATCH)
    {
        static const char *isas[] = {"avx512", "avx2"};
        static void (*fills[])(hv__backend *) = {hv__fast_fill_avx512, hv__fast_fill_avx2};
        int i, tested = 0;
        __builtin_cpu_init();
        for (i = 0; i < 2; i++) {
            if (i == 0 && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                            __builtin_cpu_supports("fma")))
                continue;
            if (i == 1 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) continue;
            memset(&fk, 0, sizeof fk);
            fills[i](&fk);
            fk_isa = isas[i];
            if (!tested++) TL_RUN(ctx, test_dispatch_pick);
            printf("-- the fast kernels of kernels_cpu/hv_cpu_%s.c\n", isas[i]);
            run_all(ctx);
        }
        if (!tested) printf("(no AVX2 on this CPU: no ISA build of the fast kernels to test)\n");
    }
#else
    run_all(ctx);
#endif
    hv_shutdown(ctx);
    TL_DONE();
}
