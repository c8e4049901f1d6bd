/* test_nn.c - softmax, layer norm, attention, gather/scatter, losses: forward against double
   references written from the definitions, backward against finite differences of them */
#include "testlib.h"

/* a case for tl_check_op; the caller adds the inputs */
static tl_case nn_case(const char *label, int nin, unsigned grad_mask, tl_op_fn op, tl_ref_fn ref, void *user) {
    tl_case tc;
    memset(&tc, 0, sizeof tc);
    tc.label = label;
    tc.nin = nin;
    tc.grad_mask = grad_mask;
    tc.op = op;
    tc.ref = ref;
    tc.user = user;
    return tc;
}
static void free_inputs(tl_case *tc) {
    int k;
    for (k = 0; k < tc->nin; k++) hv_tensor_free(tc->in[k]);
}
/* check the case, then free its (persistent) inputs; a macro so failures name the caller's line */
#define CHECK_OP_FREE(tc)                                                                          \
    do {                                                                                           \
        tl_check_op(tc);                                                                           \
        free_inputs(tc);                                                                           \
    } while (0)

/* ---- softmax and log-softmax ---------------------------------------------------------------- */

typedef struct sm_case {
    int ndim, axis, is_log, transposed; /* transposed: the op gets x^T (last two axes swapped) */
    int64_t s[4];                       /* the shape the op normalises (after any transpose) */
} sm_case;
static void ref_softmax(const double *const *in, double *out, void *user) {
    sm_case *c = (sm_case *)user;
    int a = c->axis < 0 ? c->axis + c->ndim : c->axis, i;
    int64_t outer = 1, inner = 1, n = c->s[a], o, t, j, total = 1;
    double *x;
    for (i = 0; i < c->ndim; i++) total *= c->s[i];
    for (i = 0; i < a; i++) outer *= c->s[i];
    for (i = a + 1; i < c->ndim; i++) inner *= c->s[i];
    x = (double *)malloc(sizeof(double) * (size_t)total);
    if (c->transposed) { /* the input is (..., P, Q) dense; the op sees (..., Q, P) */
        int64_t P = c->s[c->ndim - 1], Q = c->s[c->ndim - 2], lead = total / (P * Q), l, p, q;
        for (l = 0; l < lead; l++)
            for (q = 0; q < Q; q++)
                for (p = 0; p < P; p++) x[(l * Q + q) * P + p] = in[0][(l * P + p) * Q + q];
    } else {
        memcpy(x, in[0], sizeof(double) * (size_t)total);
    }
    for (o = 0; o < outer; o++)
        for (t = 0; t < inner; t++) {
            double m = -1e300, s = 0;
            for (j = 0; j < n; j++) m = fmax(m, x[(o * n + j) * inner + t]);
            for (j = 0; j < n; j++) s += exp(x[(o * n + j) * inner + t] - m);
            for (j = 0; j < n; j++) {
                double v = x[(o * n + j) * inner + t] - m;
                out[(o * n + j) * inner + t] = c->is_log ? v - log(s) : exp(v) / s;
            }
        }
    free(x);
}
static hv_tensor *op_softmax(hv_tensor **in, void *user) {
    sm_case *c = (sm_case *)user;
    hv_tensor *x = c->transposed ? hv_transpose(in[0], -1, -2) : in[0];
    return c->is_log ? hv_log_softmax(x, c->axis) : hv_softmax(x, c->axis);
}
static void test_softmax(hv_ctx *ctx) {
    static const int axes[] = {0, 1, 2, -1, -2};
    int ai, lg, tr;
    for (lg = 0; lg < 2; lg++)
        for (tr = 0; tr < 2; tr++)
            for (ai = 0; ai < 5; ai++) {
                sm_case c;
                tl_case tc;
                char label[80];
                memset(&c, 0, sizeof c);
                c.ndim = 3;
                c.s[0] = 3;
                c.s[1] = 5;
                c.s[2] = 4;
                c.axis = axes[ai];
                c.is_log = lg;
                c.transposed = tr;
                snprintf(label, sizeof label, "%s axis %d%s", lg ? "log_softmax" : "softmax", c.axis, tr ? " of a transposed view" : "");
                tc = nn_case(label, 1, 1, op_softmax, ref_softmax, &c);
                tc.in[0] = tl_rand(ctx, tr ? HV_SHAPE(3, 4, 5) : HV_SHAPE(3, 5, 4), -3, 3);
                CHECK_OP_FREE(&tc);
            }
    { /* 1-d and 2-d with odd sizes */
        sm_case c;
        tl_case tc;
        memset(&c, 0, sizeof c);
        c.ndim = 1;
        c.s[0] = 7;
        tc = nn_case("softmax 1-d (7)", 1, 1, op_softmax, ref_softmax, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(7), -2, 2);
        CHECK_OP_FREE(&tc);
    }
}
static void test_softmax_large_values(hv_ctx *ctx) {
    /* exp(1000) overflows: the max is subtracted first */
    float v[6] = {1000, 1001, 999, -1000, -1001, -999}, y[6], ly[6];
    hv_tensor *x = hv_tensor_from(ctx, HV_SHAPE(2, 3), v);
    hv_tensor_copy_to(hv_softmax(x, 1), y, sizeof y);
    hv_tensor_copy_to(hv_log_softmax(x, 1), ly, sizeof ly);
    CHECK(fabs(y[1] - 0.66524096) < 1e-6 && fabs(y[4] - 0.09003057) < 1e-6, "softmax of large values: %g %g", y[1], y[4]);
    CHECK(fabs(ly[0] - -1.40760596) < 1e-5 && fabs(ly[5] - -0.40760596) < 1e-5, "log_softmax of large values: %g %g", ly[0], ly[5]);
    {
        int32_t lab[2] = {0, 2};
        hv_tensor *y = hv_tensor_new(ctx, HV_I32, HV_SHAPE(2));
        float ce;
        hv_tensor_copy_from(y, lab, sizeof lab);
        ce = hv_item(hv_cross_entropy(x, y));
        CHECK(fabsf(ce - 0.90760596f) < 1e-6f, "cross_entropy of large logits %.8g, want 0.90760596", ce);
        hv_tensor_free(y);
    }
    hv_tensor_free(x);
}

/* ---- layer norm ----------------------------------------------------------------------------- */

typedef struct ln_case {
    int64_t rows, D;
    int affine; /* bit 0: weight, bit 1: bias */
    float eps;
} ln_case;
static void ref_layer_norm(const double *const *in, double *out, void *user) {
    ln_case *c = (ln_case *)user;
    const double *w = (c->affine & 1) ? in[1] : NULL, *b = (c->affine & 2) ? in[(c->affine & 1) ? 2 : 1] : NULL;
    int64_t r, j, D = c->D;
    for (r = 0; r < c->rows; r++) {
        const double *x = in[0] + r * D;
        double mu = 0, var = 0;
        for (j = 0; j < D; j++) mu += x[j];
        mu /= D;
        for (j = 0; j < D; j++) var += (x[j] - mu) * (x[j] - mu);
        var /= D;
        for (j = 0; j < D; j++) {
            double v = (x[j] - mu) / sqrt(var + c->eps);
            out[r * D + j] = v * (w ? w[j] : 1) + (b ? b[j] : 0);
        }
    }
}
static hv_tensor *op_layer_norm(hv_tensor **in, void *user) {
    ln_case *c = (ln_case *)user;
    hv_tensor *w = (c->affine & 1) ? in[1] : NULL, *b = (c->affine & 2) ? in[(c->affine & 1) ? 2 : 1] : NULL;
    return hv_layer_norm(in[0], w, b, c->eps);
}
static void test_layer_norm(hv_ctx *ctx) {
    int affine;
    for (affine = 0; affine < 4; affine++) {
        ln_case c;
        tl_case tc;
        char label[64];
        int k = 1;
        c.rows = 2 * 3;
        c.D = 7;
        c.affine = affine;
        c.eps = 1e-5f;
        snprintf(label, sizeof label, "layer_norm (2, 3, 7)%s%s", affine & 1 ? " weight" : "", affine & 2 ? " bias" : "");
        tc = nn_case(label, 0, 0, op_layer_norm, ref_layer_norm, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(2, 3, 7), -2, 2);
        if (affine & 1) tc.in[k++] = tl_rand(ctx, HV_SHAPE(7), 0.5f, 1.5f);
        if (affine & 2) tc.in[k++] = tl_rand(ctx, HV_SHAPE(7), -1, 1);
        tc.nin = k;
        tc.grad_mask = (1u << k) - 1;
        CHECK_OP_FREE(&tc);
    }
    { /* a large eps and a single row of odd width */
        ln_case c;
        tl_case tc;
        c.rows = 1;
        c.D = 13;
        c.affine = 3;
        c.eps = 0.5f;
        tc = nn_case("layer_norm (13) eps 0.5", 3, 7, op_layer_norm, ref_layer_norm, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(13), -1, 1);
        tc.in[1] = tl_rand(ctx, HV_SHAPE(13), -1, 1);
        tc.in[2] = tl_rand(ctx, HV_SHAPE(13), -1, 1);
        CHECK_OP_FREE(&tc);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct at_case {
    int64_t B, H, Nq, Nk, d;
    float scale;  /* <= 0: default */
    int permuted; /* inputs given as (B, N, H, d), permuted to (B, H, N, d) in the op */
} at_case;
/* element (b, h, i, t) of a dense input of the case's layout */
static double at_get(const at_case *c, const double *x, int64_t N, int64_t b, int64_t h, int64_t i, int64_t t) {
    return c->permuted ? x[((b * N + i) * c->H + h) * c->d + t] : x[((b * c->H + h) * N + i) * c->d + t];
}
static void ref_attention(const double *const *in, double *out, void *user) {
    at_case *c = (at_case *)user;
    double scale = c->scale > 0 ? c->scale : 1 / sqrt((double)c->d), *s = (double *)malloc(sizeof(double) * (size_t)c->Nk);
    int64_t b, h, i, j, t;
    for (b = 0; b < c->B; b++)
        for (h = 0; h < c->H; h++)
            for (i = 0; i < c->Nq; i++) {
                double m = -1e300, z = 0;
                for (j = 0; j < c->Nk; j++) {
                    s[j] = 0;
                    for (t = 0; t < c->d; t++) s[j] += at_get(c, in[0], c->Nq, b, h, i, t) * at_get(c, in[1], c->Nk, b, h, j, t);
                    s[j] *= scale;
                    m = fmax(m, s[j]);
                }
                for (j = 0; j < c->Nk; j++) z += (s[j] = exp(s[j] - m));
                for (t = 0; t < c->d; t++) {
                    double acc = 0;
                    for (j = 0; j < c->Nk; j++) acc += s[j] / z * at_get(c, in[2], c->Nk, b, h, j, t);
                    out[((b * c->H + h) * c->Nq + i) * c->d + t] = acc;
                }
            }
    free(s);
}
static hv_tensor *op_attention(hv_tensor **in, void *user) {
    at_case *c = (at_case *)user;
    if (c->permuted) {
        int perm[4] = {0, 2, 1, 3};
        return hv_attention(hv_permute(in[0], perm), hv_permute(in[1], perm), hv_permute(in[2], perm), c->scale);
    }
    return hv_attention(in[0], in[1], in[2], c->scale);
}
static void test_attention(hv_ctx *ctx) {
    static const at_case cases[] = {
        {2, 3, 5, 7, 4, 0, 0},     /* Nq != Nk, default scale */
        {1, 2, 6, 6, 8, 0.3f, 0},  /* self-attention shape, explicit scale */
        {2, 1, 7, 3, 5, 0, 0},     /* more queries than keys */
        {2, 3, 4, 5, 3, 0, 1},     /* strided q, k, v (a permuted view) */
        {1, 1, 1, 1, 1, 0, 0},     /* one key: output = v */
        {1, 2, 3, 4, 2, 4.0f, 0},  /* a sharp softmax */
    };
    size_t ci;
    for (ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        at_case c = cases[ci];
        tl_case tc;
        char label[96];
        snprintf(label, sizeof label, "attention B=%lld H=%lld Nq=%lld Nk=%lld d=%lld scale=%g%s", (long long)c.B, (long long)c.H,
                 (long long)c.Nq, (long long)c.Nk, (long long)c.d, c.scale, c.permuted ? " permuted" : "");
        tc = nn_case(label, 3, 7, op_attention, ref_attention, &c);
        if (c.permuted) {
            tc.in[0] = tl_rand(ctx, HV_SHAPE(c.B, c.Nq, c.H, c.d), -1, 1);
            tc.in[1] = tl_rand(ctx, HV_SHAPE(c.B, c.Nk, c.H, c.d), -1, 1);
            tc.in[2] = tl_rand(ctx, HV_SHAPE(c.B, c.Nk, c.H, c.d), -1, 1);
        } else {
            tc.in[0] = tl_rand(ctx, HV_SHAPE(c.B, c.H, c.Nq, c.d), -1, 1);
            tc.in[1] = tl_rand(ctx, HV_SHAPE(c.B, c.H, c.Nk, c.d), -1, 1);
            tc.in[2] = tl_rand(ctx, HV_SHAPE(c.B, c.H, c.Nk, c.d), -1, 1);
        }
        CHECK_OP_FREE(&tc);
    }
}
/* only some inputs trainable: the backward must leave the others alone and still be right */
static void test_attention_partial_grad(hv_ctx *ctx) {
    at_case c = {2, 2, 3, 5, 4, 0, 0};
    unsigned mask;
    for (mask = 1; mask < 7; mask++) {
        tl_case tc;
        char label[64];
        snprintf(label, sizeof label, "attention grads of q,k,v mask %u", mask);
        tc = nn_case(label, 3, mask, op_attention, ref_attention, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(2, 2, 3, 4), -1, 1);
        tc.in[1] = tl_rand(ctx, HV_SHAPE(2, 2, 5, 4), -1, 1);
        tc.in[2] = tl_rand(ctx, HV_SHAPE(2, 2, 5, 4), -1, 1);
        tl_check_op(&tc);
        CHECK((mask & 2) || !hv_grad(tc.in[1]), "k got a gradient it did not ask for");
        free_inputs(&tc);
    }
}

/* ---- gather and scatter --------------------------------------------------------------------- */

typedef struct gs_case {
    int scatter, axis, ndim;
    int64_t s[3]; /* the shape of x */
    int64_t k;    /* gather: picks per row */
    int64_t n;    /* scatter: extent of the result's axis */
} gs_case;
static void gs_geom(const gs_case *c, int64_t *outer, int64_t *inner) {
    int i;
    *outer = 1;
    *inner = 1;
    for (i = 0; i < c->axis; i++) *outer *= c->s[i];
    for (i = c->axis + 1; i < c->ndim; i++) *inner *= c->s[i];
}
static void ref_gather_scatter(const double *const *in, double *out, void *user) {
    gs_case *c = (gs_case *)user;
    int64_t outer, inner, o, j, t, n = c->s[c->axis];
    gs_geom(c, &outer, &inner);
    if (!c->scatter) {
        for (o = 0; o < outer; o++)
            for (j = 0; j < c->k; j++)
                for (t = 0; t < inner; t++) out[(o * c->k + j) * inner + t] = in[0][(o * n + (int64_t)in[1][o * c->k + j]) * inner + t];
    } else {
        memset(out, 0, sizeof(double) * (size_t)(outer * c->n * inner));
        for (o = 0; o < outer; o++)
            for (j = 0; j < n; j++)
                for (t = 0; t < inner; t++) out[(o * c->n + (int64_t)in[1][o * n + j]) * inner + t] += in[0][(o * n + j) * inner + t];
    }
}
static hv_tensor *op_gather_scatter(hv_tensor **in, void *user) {
    gs_case *c = (gs_case *)user;
    return c->scatter ? hv_scatter(in[0], c->axis, in[1], c->n) : hv_gather(in[0], c->axis, in[1]);
}
static void test_gather_scatter(hv_ctx *ctx) {
    static const gs_case cases[] = {
        {0, 1, 3, {2, 6, 3}, 4, 0},  /* MAE keep: (B, N, D), idx (B, K) */
        {0, 1, 3, {2, 3, 3}, 7, 0},  /* more picks than rows: repeats in the backward's scatter-add */
        {0, 0, 2, {5, 3, 0}, 4, 0},  /* axis 0 */
        {0, 2, 3, {2, 3, 5}, 4, 0},  /* the last axis: inner 1 */
        {1, 1, 3, {2, 4, 3}, 0, 6},  /* scatter with repeated indices */
        {1, 1, 3, {2, 5, 3}, 0, 2},  /* many repeats into few rows */
        {1, 0, 2, {4, 3, 0}, 0, 5},  /* axis 0 */
        {1, 2, 3, {2, 3, 4}, 0, 3},  /* the last axis */
    };
    size_t ci;
    for (ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        gs_case c = cases[ci];
        tl_case tc;
        char label[64];
        int64_t ishape[3];
        int i;
        for (i = 0; i < c.axis; i++) ishape[i] = c.s[i];
        ishape[c.axis] = c.scatter ? c.s[c.axis] : c.k;
        snprintf(label, sizeof label, "%s axis %d case %d", c.scatter ? "scatter" : "gather", c.axis, (int)ci);
        tc = nn_case(label, 2, 1, op_gather_scatter, ref_gather_scatter, &c);
        tc.in[0] = tl_rand(ctx, hv_shape_of(c.ndim, c.s), -1, 1);
        tc.in[1] = tl_rand_index(ctx, hv_shape_of(c.axis + 1, ishape), (int)(c.scatter ? c.n : c.s[c.axis]));
        if (ci == 4) { /* force a repeat */
            int32_t *p = hv_data_i32(tc.in[1]);
            p[1] = p[0];
            p[5] = p[6];
        }
        CHECK_OP_FREE(&tc);
    }
}
/* MAE's shuffle and unshuffle: scatter by a permutation undoes the gather by it */
static void test_gather_scatter_roundtrip(hv_ctx *ctx) {
    hv_tensor *x = tl_rand(ctx, HV_SHAPE(3, 8, 5), -1, 1), *idx = hv_tensor_new(ctx, HV_I32, HV_SHAPE(3, 8)), *y;
    int64_t perm[8];
    int b, i;
    for (b = 0; b < 3; b++) {
        hv_rng_permutation(ctx, 8, perm);
        for (i = 0; i < 8; i++) hv_data_i32(idx)[b * 8 + i] = (int32_t)perm[i];
    }
    y = hv_scatter(hv_gather(x, 1, idx), 1, idx, 8);
    CHECK_NOTNULL(y);
    if (y) CHECK(memcmp(hv_data(y), hv_data(x), sizeof(float) * 120) == 0, "scatter(gather(x, p), p) != x");
    hv_tensor_free(x);
    hv_tensor_free(idx);
}

/* ---- classification ------------------------------------------------------------------------- */

typedef struct ce_case {
    int64_t N, C;
} ce_case;
static void ref_cross_entropy(const double *const *in, double *out, void *user) {
    ce_case *c = (ce_case *)user;
    int64_t r, j;
    double total = 0;
    for (r = 0; r < c->N; r++) {
        const double *x = in[0] + r * c->C;
        double m = -1e300, s = 0;
        for (j = 0; j < c->C; j++) m = fmax(m, x[j]);
        for (j = 0; j < c->C; j++) s += exp(x[j] - m);
        total += m + log(s) - x[(int64_t)in[1][r]];
    }
    out[0] = total / c->N;
}
static hv_tensor *op_cross_entropy(hv_tensor **in, void *user) {
    (void)user;
    return hv_cross_entropy(in[0], in[1]);
}
static void test_cross_entropy(hv_ctx *ctx) {
    static const ce_case cases[] = {{5, 4}, {7, 3}, {1, 1}, {3, 11}};
    size_t ci;
    for (ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        ce_case c = cases[ci];
        tl_case tc;
        char label[64];
        snprintf(label, sizeof label, "cross_entropy (%lld, %lld)", (long long)c.N, (long long)c.C);
        tc = nn_case(label, 2, 1, op_cross_entropy, ref_cross_entropy, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(c.N, c.C), -3, 3);
        tc.in[1] = tl_rand_index(ctx, HV_SHAPE(c.N), (int)c.C);
        CHECK_OP_FREE(&tc);
    }
}
/* cross-entropy equals the NLL of log_softmax built from the other ops */
static void test_cross_entropy_matches_log_softmax(hv_ctx *ctx) {
    hv_tensor *x = tl_rand(ctx, HV_SHAPE(4, 6), -2, 2), *y = tl_rand_index(ctx, HV_SHAPE(4), 6), *ls;
    float ce, want = 0, l[24];
    int r;
    ce = hv_item(hv_cross_entropy(x, y));
    ls = hv_log_softmax(x, -1);
    hv_tensor_copy_to(ls, l, sizeof l);
    for (r = 0; r < 4; r++) want -= l[r * 6 + hv_data_i32(y)[r]] / 4;
    CHECK(fabsf(ce - want) < 1e-5f, "cross_entropy %g, -mean log_softmax %g", ce, want);
    hv_tensor_free(x);
    hv_tensor_free(y);
}
static void test_topk_accuracy(hv_ctx *ctx) {
    /* rows: label is the max; label second; label tied with one larger... */
    float v[4 * 4] = {
        0.1f, 0.9f, 0.3f, 0.2f, /* label 1: top-1 */
        0.5f, 0.4f, 0.9f, 0.1f, /* label 0: second, top-2 */
        0.7f, 0.7f, 0.1f, 0.2f, /* label 1: tied for first, nothing strictly larger: top-1 */
        0.9f, 0.8f, 0.7f, 0.6f, /* label 3: last, top-4 only */
    };
    int32_t lab[4] = {1, 0, 1, 3};
    hv_tensor *x = hv_tensor_from(ctx, HV_SHAPE(4, 4), v), *y = hv_tensor_new(ctx, HV_I32, HV_SHAPE(4));
    hv_tensor_copy_from(y, lab, sizeof lab);
    CHECK(hv_topk_accuracy(x, y, 1) == 0.5f, "top-1 %g, want 0.5", hv_topk_accuracy(x, y, 1));
    CHECK(hv_topk_accuracy(x, y, 2) == 0.75f, "top-2 %g, want 0.75", hv_topk_accuracy(x, y, 2));
    CHECK(hv_topk_accuracy(x, y, 3) == 0.75f, "top-3 %g, want 0.75", hv_topk_accuracy(x, y, 3));
    CHECK(hv_topk_accuracy(x, y, 4) == 1.0f, "top-4 %g, want 1", hv_topk_accuracy(x, y, 4));
    CHECK(isnan(hv_topk_accuracy(x, y, 5)) && strstr(hv_last_error(), "k = 5"), "k > C: %s", hv_last_error());
    CHECK(isnan(hv_topk_accuracy(x, y, 0)) && strstr(hv_last_error(), "hv_topk_accuracy"), "k = 0: %s", hv_last_error());
    lab[2] = 4;
    hv_tensor_copy_from(y, lab, sizeof lab);
    hv_clear_error();
    CHECK(isnan(hv_topk_accuracy(x, y, 1)) && strstr(hv_last_error(), "labels[2] = 4"), "bad label: %s", hv_last_error());
    hv_tensor_free(x);
    hv_tensor_free(y);
}

/* ---- regression losses ---------------------------------------------------------------------- */

typedef struct loss_case {
    int which;           /* 0 mse, 1 l1, 2 masked_mean */
    int64_t n, mask_rep; /* elements of a; masked_mean: x values per mask value (trailing axis) */
} loss_case;
static void ref_loss(const double *const *in, double *out, void *user) {
    loss_case *c = (loss_case *)user;
    int64_t i;
    double s = 0, m = 0;
    for (i = 0; i < c->n; i++) {
        if (c->which == 0) s += (in[0][i] - in[1][i]) * (in[0][i] - in[1][i]);
        else if (c->which == 1) s += fabs(in[0][i] - in[1][i]);
        else {
            s += in[0][i] * in[1][i / c->mask_rep];
            m += in[1][i / c->mask_rep];
        }
    }
    out[0] = c->which == 2 ? s / m : s / c->n;
}
static hv_tensor *op_loss(hv_tensor **in, void *user) {
    loss_case *c = (loss_case *)user;
    return c->which == 0 ? hv_mse_loss(in[0], in[1]) : c->which == 1 ? hv_l1_loss(in[0], in[1]) : hv_masked_mean(in[0], in[1]);
}
static void test_losses(hv_ctx *ctx) {
    int which, rep;
    for (which = 0; which < 2; which++) {
        loss_case c;
        tl_case tc;
        int64_t i;
        float *a, *b;
        c.which = which;
        c.n = 3 * 5 * 2;
        c.mask_rep = 1;
        tc = nn_case(which ? "l1_loss (3, 5, 2)" : "mse_loss (3, 5, 2)", 2, 3, op_loss, ref_loss, &c);
        tc.in[0] = tl_rand(ctx, HV_SHAPE(3, 5, 2), -1, 1);
        tc.in[1] = tl_rand(ctx, HV_SHAPE(3, 5, 2), -1, 1);
        a = hv_data(tc.in[0]);
        b = hv_data(tc.in[1]);
        for (i = 0; i < c.n; i++) /* l1: keep |a - b| away from the kink */
            if (fabsf(a[i] - b[i]) < 0.05f) b[i] = a[i] + 0.1f;
        CHECK_OP_FREE(&tc);
    }
    for (rep = 1; rep <= 3; rep += 2) { /* mask (2, 5) on x (2, 5), and mask (2, 5, 1) on x (2, 5, 3) */
        loss_case c;
        tl_case tc;
        int i;
        c.which = 2;
        c.n = 10 * rep;
        c.mask_rep = rep;
        tc = nn_case(rep == 1 ? "masked_mean x (2, 5) mask (2, 5)" : "masked_mean x (2, 5, 3) mask (2, 5, 1)", 2, 1, op_loss, ref_loss, &c);
        tc.in[0] = rep == 1 ? tl_rand(ctx, HV_SHAPE(2, 5), -1, 1) : tl_rand(ctx, HV_SHAPE(2, 5, 3), -1, 1);
        tc.in[1] = rep == 1 ? hv_zeros(ctx, HV_SHAPE(2, 5)) : hv_zeros(ctx, HV_SHAPE(2, 5, 1));
        for (i = 0; i < 10; i++) hv_data(tc.in[1])[i] = (i % 3 == 0 || i == 7) ? 1.0f : 0.0f;
        CHECK_OP_FREE(&tc);
    }
}
static void test_l1_gradient_at_zero(hv_ctx *ctx) {
    float av[3] = {1, 2, 3}, bv[3] = {1, 0, 5}, g[3];
    hv_tensor *a = hv_tensor_from(ctx, HV_SHAPE(3), av), *b = hv_tensor_from(ctx, HV_SHAPE(3), bv), *mask;
    hv_set_trainable(a, 1);
    CHECK(hv_backward(hv_l1_loss(a, b)) == 0, "%s", hv_last_error());
    hv_tensor_copy_to(hv_grad(a), g, sizeof g);
    CHECK(g[0] == 0 && fabsf(g[1] - 1.0f / 3) < 1e-7f && fabsf(g[2] + 1.0f / 3) < 1e-7f, "l1 grads %g %g %g", g[0], g[1], g[2]);
    /* the mask gets no gradient even when it is trainable */
    mask = hv_ones(ctx, HV_SHAPE(3));
    hv_set_trainable(mask, 1);
    CHECK(hv_backward(hv_masked_mean(a, mask)) == 0, "%s", hv_last_error());
    CHECK(hv_grad(mask) == NULL, "masked_mean gave the mask a gradient");
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_tensor_free(mask);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(hv_ctx *ctx) {
    hv_tensor *x = hv_zeros(ctx, HV_SHAPE(2, 3, 4)), *w5 = hv_zeros(ctx, HV_SHAPE(5)), *ix = hv_tensor_new(ctx, HV_I32, HV_SHAPE(2, 3));
    hv_tensor *q = hv_zeros(ctx, HV_SHAPE(2, 3, 5, 4)), *k = hv_zeros(ctx, HV_SHAPE(2, 3, 7, 4)), *v6 = hv_zeros(ctx, HV_SHAPE(2, 3, 7, 6));
    hv_tensor *k0 = hv_zeros(ctx, HV_SHAPE(2, 3, 0, 4)), *q3 = hv_zeros(ctx, HV_SHAPE(2, 5, 4));
    hv_tensor *logits = hv_zeros(ctx, HV_SHAPE(4, 10)), *labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(4)), *lab3 = hv_tensor_new(ctx, HV_I32, HV_SHAPE(3));
    hv_tensor *idx = hv_tensor_new(ctx, HV_I32, HV_SHAPE(2, 5)), *idxf = hv_zeros(ctx, HV_SHAPE(2, 5)), *empty = hv_zeros(ctx, HV_SHAPE(2, 0));
    hv_tensor *m0 = hv_zeros(ctx, HV_SHAPE(2, 3, 1)), *m_wide = hv_ones(ctx, HV_SHAPE(3, 2, 3, 4));

    CHECK_ERROR(hv_softmax(x, 3), "hv_softmax", "axis 3", "(2, 3, 4)");
    CHECK_ERROR(hv_log_softmax(x, -4), "hv_log_softmax", "axis -4", "(2, 3, 4)");
    CHECK_ERROR(hv_softmax(ix, 0), "hv_softmax", "f32", "(2, 3)");
    CHECK_ERROR(hv_layer_norm(x, w5, NULL, 1e-5f), "hv_layer_norm", "weight (5)", "(2, 3, 4)");
    CHECK_ERROR(hv_layer_norm(x, NULL, w5, 1e-5f), "hv_layer_norm", "bias (5)", "(2, 3, 4)");
    CHECK_ERROR(hv_layer_norm(x, NULL, NULL, -1.0f), "hv_layer_norm", "eps");
    CHECK_ERROR(hv_layer_norm(empty, NULL, NULL, 1e-5f), "hv_layer_norm", "(2, 0)");
    CHECK_ERROR(hv_attention(q3, q3, q3, 0), "hv_attention", "(2, 5, 4)");
    CHECK_ERROR(hv_attention(q, k, v6, 0), "hv_attention", "(2, 3, 5, 4)", "(2, 3, 7, 4)", "(2, 3, 7, 6)");
    CHECK_ERROR(hv_attention(q, q3, k, 0), "hv_attention", "(2, 5, 4)");
    CHECK_ERROR(hv_attention(q, v6, v6, 0), "hv_attention", "(2, 3, 5, 4)", "(2, 3, 7, 6)"); /* d differs */
    CHECK_ERROR(hv_attention(q, k0, k0, 0), "hv_attention", "key", "(2, 3, 0, 4)");

    /* gather and scatter: out-of-range indices are named, never read */
    hv_data_i32(idx)[7] = 9;
    CHECK_ERROR(hv_gather(x, 1, idx), "hv_gather", "idx[1, 2] = 9", "[0, 3)", "(2, 3, 4)"); /* 5 picks of 3 rows is fine, 9 is not */
    CHECK_ERROR(hv_gather(x, 2, idx), "hv_gather", "idx", "(2, 5)", "(2, 3, 4)");
    {
        hv_tensor *idx3 = hv_tensor_new(ctx, HV_I32, HV_SHAPE(2, 3, 5));
        hv_data_i32(idx3)[7] = 9;
        CHECK_ERROR(hv_gather(x, 2, idx3), "hv_gather", "idx[0, 1, 2] = 9", "[0, 4)", "(2, 3, 4)");
        hv_data_i32(idx3)[7] = -1;
        CHECK_ERROR(hv_gather(x, 2, idx3), "hv_gather", "idx[0, 1, 2] = -1");
        hv_tensor_free(idx3);
    }
    CHECK_ERROR(hv_gather(x, 1, idxf), "hv_gather", "i32", "(2, 5)");
    CHECK_ERROR(hv_gather(x, 3, ix), "hv_gather", "axis 3");
    hv_data_i32(ix)[4] = 6;
    CHECK_ERROR(hv_scatter(x, 1, ix, 6), "hv_scatter", "idx[1, 1] = 6", "[0, 6)", "(2, 6, 4)");
    CHECK_ERROR(hv_scatter(x, 1, idx, 6), "hv_scatter", "idx (2, 5)", "(2, 3, 4)");
    CHECK_ERROR(hv_scatter(x, 1, ix, -2), "hv_scatter", "n must be >= 0");

    /* cross-entropy */
    hv_data_i32(labels)[3] = 10;
    CHECK_ERROR(hv_cross_entropy(logits, labels), "hv_cross_entropy", "labels[3] = 10", "[0, 10)", "(4, 10)");
    hv_data_i32(labels)[3] = -100;
    CHECK_ERROR(hv_cross_entropy(logits, labels), "hv_cross_entropy", "labels[3] = -100");
    CHECK_ERROR(hv_cross_entropy(logits, lab3), "hv_cross_entropy", "(4, 10)", "(3)");
    CHECK_ERROR(hv_cross_entropy(x, labels), "hv_cross_entropy", "(2, 3, 4)");
    CHECK_ERROR(hv_cross_entropy(logits, logits), "hv_cross_entropy", "i32");

    /* losses */
    CHECK_ERROR(hv_mse_loss(x, q3), "hv_mse_loss", "(2, 3, 4)", "(2, 5, 4)");
    CHECK_ERROR(hv_l1_loss(x, ix), "hv_l1_loss", "f32");
    CHECK_ERROR(hv_mse_loss(empty, empty), "hv_mse_loss", "no elements");
    CHECK_ERROR(hv_masked_mean(x, m0), "hv_masked_mean", "sums to 0", "(2, 3, 1)", "(2, 3, 4)");
    CHECK_ERROR(hv_masked_mean(x, m_wide), "hv_masked_mean", "(3, 2, 3, 4)", "(2, 3, 4)");
    CHECK_ERROR(hv_masked_mean(x, w5), "hv_masked_mean", "(5)", "(2, 3, 4)");

    /* NULL in, NULL out, first error kept */
    hv_clear_error();
    CHECK(hv_softmax(hv_layer_norm(x, w5, NULL, 1e-5f), 0) == NULL && strstr(hv_last_error(), "hv_layer_norm"), "first error kept: %s",
          hv_last_error());
    CHECK(hv_attention(NULL, k, k, 0) == NULL && hv_gather(NULL, 0, ix) == NULL && hv_cross_entropy(logits, NULL) == NULL, "NULL in");
    CHECK(isnan(hv_topk_accuracy(NULL, labels, 1)), "topk of NULL");

    hv_tensor_free(x);
    hv_tensor_free(w5);
    hv_tensor_free(ix);
    hv_tensor_free(q);
    hv_tensor_free(k);
    hv_tensor_free(v6);
    hv_tensor_free(k0);
    hv_tensor_free(q3);
    hv_tensor_free(logits);
    hv_tensor_free(labels);
    hv_tensor_free(lab3);
    hv_tensor_free(idx);
    hv_tensor_free(idxf);
    hv_tensor_free(empty);
    hv_tensor_free(m0);
    hv_tensor_free(m_wide);
}

/* ---- a transformer-ish step: determinism across threads, no malloc in steady state ---------- */

/* (B, N, D) tokens -> layer norm -> attention with H heads -> gather of K tokens -> cross-entropy
   on their mean + mse to a target + masked mean; big enough that the kernels run in parallel */
typedef struct net {
    hv_ctx *ctx;
    hv_tensor *x, *w, *b, *wq, *wk, *wv, *idx, *labels, *target, *mask;
} net;
enum { NB = 4, NN = 32, ND = 48, NH = 4, NK = 24, NC = ND };
static void net_init(net *n, int threads) {
    hv_ctx *c = hv_init(&(hv_init_desc){.seed = 99, .threads = threads});
    int i;
    n->ctx = c;
    n->x = hv_randn(c, HV_SHAPE(NB, NN, ND), 0, 1);
    n->w = hv_randn(c, HV_SHAPE(ND), 1, 0.1f);
    n->b = hv_randn(c, HV_SHAPE(ND), 0, 0.1f);
    n->wq = hv_randn(c, HV_SHAPE(ND, ND), 0, 0.2f);
    n->wk = hv_randn(c, HV_SHAPE(ND, ND), 0, 0.2f);
    n->wv = hv_randn(c, HV_SHAPE(ND, ND), 0, 0.2f);
    n->idx = tl_rand_index(c, HV_SHAPE(NB, NK), NN);
    n->labels = tl_rand_index(c, HV_SHAPE(NB * NK), NC);
    n->target = hv_randn(c, HV_SHAPE(NB, NK, ND), 0, 1);
    n->mask = hv_zeros(c, HV_SHAPE(NB, NK, 1));
    for (i = 0; i < NB * NK; i++) hv_data(n->mask)[i] = (float)(i % 2);
    hv_set_trainable(n->x, 1);
    hv_set_trainable(n->w, 1);
    hv_set_trainable(n->b, 1);
    hv_set_trainable(n->wq, 1);
    hv_set_trainable(n->wk, 1);
    hv_set_trainable(n->wv, 1);
}
static hv_tensor *heads(hv_tensor *t) { /* (B, N, D) -> (B, H, N, D/H), a strided view */
    int perm[4] = {0, 2, 1, 3};
    return hv_permute(hv_reshape(t, HV_SHAPE(NB, NN, NH, ND / NH)), perm);
}
static hv_tensor *net_loss(net *n) {
    int perm[4] = {0, 2, 1, 3};
    hv_tensor *h = hv_layer_norm(n->x, n->w, n->b, 1e-6f);
    hv_tensor *a = hv_attention(heads(hv_linear(h, n->wq, NULL)), heads(hv_linear(h, n->wk, NULL)), heads(hv_linear(h, n->wv, NULL)), 0);
    hv_tensor *t = hv_reshape(hv_permute(a, perm), HV_SHAPE(NB, NN, ND)); /* (B, N, D) */
    hv_tensor *kept = hv_gather(hv_add(t, n->x), 1, n->idx);            /* (B, K, D) */
    hv_tensor *logits = hv_reshape(hv_slice(kept, 2, 0, NC, 1), HV_SHAPE(NB * NK, NC));
    hv_tensor *sm = hv_softmax(kept, 1);
    hv_tensor *l = hv_add(hv_cross_entropy(logits, n->labels), hv_mse_loss(kept, n->target));
    l = hv_add(l, hv_masked_mean(hv_mul(sm, sm), n->mask));
    return hv_add(l, hv_l1_loss(hv_scatter(kept, 1, n->idx, NN), n->x));
}
static void run_net(int threads, float *loss, float *gx, float *gwq) {
    net n;
    hv_tensor *l;
    net_init(&n, threads);
    l = net_loss(&n);
    if (!l || hv_backward(l) != 0) {
        printf("  net failed: %s\n", hv_last_error());
        *loss = NAN;
    } else {
        *loss = hv_item(l);
        memcpy(gx, hv_data(hv_grad(n.x)), sizeof(float) * NB * NN * ND);
        memcpy(gwq, hv_data(hv_grad(n.wq)), sizeof(float) * ND * ND);
    }
    hv_shutdown(n.ctx);
}
static void test_thread_determinism(hv_ctx *ctx) {
    static float gx1[NB * NN * ND], gx3[NB * NN * ND], gw1[ND * ND], gw3[ND * ND];
    float l1, l3;
    (void)ctx;
    run_net(1, &l1, gx1, gw1);
    run_net(3, &l3, gx3, gw3);
    CHECK(l1 == l1 && memcmp(&l1, &l3, sizeof l1) == 0, "loss differs: %.9g vs %.9g", l1, l3);
    CHECK(memcmp(gx1, gx3, sizeof gx1) == 0, "grad of x differs between 1 and 3 threads");
    CHECK(memcmp(gw1, gw3, sizeof gw1) == 0, "grad of wq differs between 1 and 3 threads");
}
static void test_steady_state_no_malloc(hv_ctx *ctx) {
    net n;
    uint64_t before = 0;
    int step;
    (void)ctx;
    net_init(&n, 0);
    for (step = 0; step < 6; step++) {
        hv_tensor *l;
        if (step == 3) before = hv_alloc_count();
        l = net_loss(&n);
        CHECK(l && hv_backward(l) == 0, "%s", hv_last_error());
        CHECK(hv_topk_accuracy(hv_reshape(hv_slice(hv_gather(n.x, 1, n.idx), 2, 0, NC, 1), HV_SHAPE(NB * NK, NC)), n.labels, 3) >= 0,
              "topk: %s", hv_last_error());
        hv_step_end(n.ctx);
    }
    CHECK(hv_alloc_count() == before, "%llu allocations in 3 steady-state steps", (unsigned long long)(hv_alloc_count() - before));
    hv_shutdown(n.ctx);
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 4321});
    TL_RUN(ctx, test_softmax);
    TL_RUN(ctx, test_softmax_large_values);
    TL_RUN(ctx, test_layer_norm);
    TL_RUN(ctx, test_attention);
    TL_RUN(ctx, test_attention_partial_grad);
    TL_RUN(ctx, test_gather_scatter);
    TL_RUN(ctx, test_gather_scatter_roundtrip);
    TL_RUN(ctx, test_cross_entropy);
    TL_RUN(ctx, test_cross_entropy_matches_log_softmax);
    TL_RUN(ctx, test_topk_accuracy);
    TL_RUN(ctx, test_losses);
    TL_RUN(ctx, test_l1_gradient_at_zero);
    TL_RUN(ctx, test_errors);
    TL_RUN(ctx, test_thread_determinism);
    TL_RUN(ctx, test_steady_state_no_malloc);
    hv_shutdown(ctx);
    TL_DONE();
}
