/* test_conv.c - conv2d, max/avg/global pooling, bilinear resize and batch norm: forward against
   double references written from the definitions (PyTorch semantics), backward against finite
   differences, running statistics, errors, thread determinism and the no-malloc steady state. */
#include "testlib.h"

static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t or1(int v) { return v ? v : 1; }

/* the output of the op must have the shape the reference assumes */
static hv_tensor *check_shape4(hv_tensor *y, int64_t n, int64_t c, int64_t h, int64_t w) {
    if (y && (hv_ndim(y) != 4 || hv_dim(y, 0) != n || hv_dim(y, 1) != c || hv_dim(y, 2) != h || hv_dim(y, 3) != w)) {
        CHECK(0, "output shape (%lld, %lld, %lld, %lld), want (%lld, %lld, %lld, %lld)", (long long)hv_dim(y, 0), (long long)hv_dim(y, 1),
              (long long)hv_dim(y, 2), (long long)hv_dim(y, 3), (long long)n, (long long)c, (long long)h, (long long)w);
        return NULL;
    }
    return y;
}

/* ---- conv2d --------------------------------------------------------------------------------- */

typedef struct conv_case {
    int64_t n, cin, h, w, cout, kh, kw;
    hv_conv2d_desc d;
    int bias;
    int64_t oh, ow; /* from the definition, filled by run_conv */
} conv_case;

static void ref_conv(const double *const *in, double *out, void *user) {
    conv_case *c = (conv_case *)user;
    int64_t sh = or1(c->d.stride_h), sw = or1(c->d.stride_w), dh = or1(c->d.dilation_h), dw = or1(c->d.dilation_w), G = or1(c->d.groups);
    int64_t cin_g = c->cin / G, cout_g = c->cout / G, ni, co, oh, ow, ci, kh, kw;
    for (ni = 0; ni < c->n; ni++)
        for (co = 0; co < c->cout; co++)
            for (oh = 0; oh < c->oh; oh++)
                for (ow = 0; ow < c->ow; ow++) {
                    double s = c->bias ? in[2][co] : 0;
                    for (ci = 0; ci < cin_g; ci++)
                        for (kh = 0; kh < c->kh; kh++)
                            for (kw = 0; kw < c->kw; kw++) {
                                int64_t ih = oh * sh - c->d.pad_h + kh * dh, iw = ow * sw - c->d.pad_w + kw * dw;
                                int64_t xc = (co / cout_g) * cin_g + ci;
                                if (ih < 0 || ih >= c->h || iw < 0 || iw >= c->w) continue; /* zero padding */
                                s += in[0][((ni * c->cin + xc) * c->h + ih) * c->w + iw] * in[1][((co * cin_g + ci) * c->kh + kh) * c->kw + kw];
                            }
                    out[((ni * c->cout + co) * c->oh + oh) * c->ow + ow] = s;
                }
}
static hv_tensor *op_conv(hv_tensor **in, void *user) {
    conv_case *c = (conv_case *)user;
    return check_shape4(hv_conv2d(in[0], in[1], c->bias ? in[2] : NULL, &c->d), c->n, c->cout, c->oh, c->ow);
}
static void run_conv(hv_ctx *ctx, conv_case *c, const char *label) {
    tl_case tc;
    int k;
    c->oh = (c->h + 2 * c->d.pad_h - or1(c->d.dilation_h) * (c->kh - 1) - 1) / or1(c->d.stride_h) + 1;
    c->ow = (c->w + 2 * c->d.pad_w - or1(c->d.dilation_w) * (c->kw - 1) - 1) / or1(c->d.stride_w) + 1;
    memset(&tc, 0, sizeof tc);
    tc.label = label;
    tc.nin = c->bias ? 3 : 2;
    tc.in[0] = tl_rand(ctx, HV_SHAPE(c->n, c->cin, c->h, c->w), -1, 1);
    tc.in[1] = tl_rand(ctx, HV_SHAPE(c->cout, c->cin / or1(c->d.groups), c->kh, c->kw), -1, 1);
    if (c->bias) tc.in[2] = tl_rand(ctx, HV_SHAPE(c->cout), -1, 1);
    tc.grad_mask = c->bias ? 7 : 3;
    tc.op = op_conv;
    tc.ref = ref_conv;
    tc.user = c;
    tl_check_op(&tc);
    for (k = 0; k < tc.nin; k++) hv_tensor_free(tc.in[k]);
}

static void test_conv2d(hv_ctx *ctx) {
    /* n, cin, h, w, cout, kh, kw, {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups}, bias */
    static const conv_case cases[] = {
        {2, 4, 7, 6, 3, 3, 3, {0, 0, 1, 1, 0, 0, 0}, 1, 0, 0},  /* plain 3x3, same padding */
        {2, 4, 7, 6, 5, 3, 2, {2, 2, 1, 1, 1, 1, 1}, 0, 0, 0},  /* stride 2, non-square kernel, no bias */
        {2, 4, 7, 6, 3, 3, 3, {1, 1, 3, 2, 2, 2, 1}, 1, 0, 0},  /* padding 3, dilation 2 */
        {2, 4, 7, 6, 6, 2, 3, {2, 1, 1, 2, 1, 2, 2}, 1, 0, 0},  /* groups 2, mixed stride/dilation */
        {2, 4, 7, 6, 8, 3, 3, {2, 2, 1, 1, 1, 1, 4}, 1, 0, 0},  /* depthwise, channel multiplier 2 */
        {2, 4, 7, 6, 4, 3, 3, {1, 1, 1, 1, 1, 1, 4}, 0, 0, 0},  /* depthwise, no bias */
        {2, 4, 7, 6, 3, 1, 1, {2, 2, 0, 0, 0, 0, 0}, 1, 0, 0},  /* 1x1, stride 2 */
        {2, 3, 5, 4, 2, 7, 4, {1, 1, 1, 0, 0, 0, 1}, 1, 0, 0},  /* kernel = padded input: 1x1 out */
        {1, 2, 3, 9, 4, 1, 5, {1, 3, 0, 0, 1, 1, 0}, 1, 0, 0},  /* wide input, stride 3 along W */
        {2, 4, 6, 7, 2, 3, 3, {2, 3, 3, 3, 2, 1, 2}, 0, 0, 0},  /* groups, stride, padding 3, dilation */
    };
    int i;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        conv_case c = cases[i];
        char label[64];
        snprintf(label, sizeof label, "conv2d case %d", i);
        run_conv(ctx, &c, label);
    }
}

/* a strided (transposed) input goes through a recorded copy: same values, gradient lands on the
   original layout */
static void test_conv2d_strided_input(hv_ctx *ctx) {
    hv_tensor *xt = tl_rand(ctx, HV_SHAPE(2, 3, 6, 5), -1, 1), *w = tl_rand(ctx, HV_SHAPE(4, 3, 3, 3), -1, 1), *xc, *ya, *yb;
    hv_conv2d_desc d;
    float a[2 * 4 * 5 * 6], b[2 * 4 * 5 * 6], ga[2 * 3 * 6 * 5], gb[2 * 3 * 5 * 6];
    int64_t i, j, k;
    memset(&d, 0, sizeof d);
    d.pad_h = d.pad_w = 1;
    hv_set_trainable(xt, 1);
    xc = hv_zeros(ctx, HV_SHAPE(2, 3, 5, 6));
    hv_tensor_copy_to(hv_transpose(xt, 2, 3), hv_data(xc), sizeof(float) * 180);
    hv_set_trainable(xc, 1);
    /* one graph per backward: a backward consumes the whole tape */
    ya = hv_conv2d(hv_transpose(xt, 2, 3), w, NULL, &d);
    CHECK_NOTNULL(ya);
    if (!ya) return;
    hv_tensor_copy_to(ya, a, sizeof a);
    CHECK(hv_backward(hv_sum(hv_mul(ya, ya), 0, NULL, 0)) == 0, "%s", hv_last_error());
    yb = hv_conv2d(xc, w, NULL, &d);
    CHECK_NOTNULL(yb);
    if (!yb) return;
    hv_tensor_copy_to(yb, b, sizeof b);
    CHECK(memcmp(a, b, sizeof a) == 0, "strided input gives a different forward");
    CHECK(hv_backward(hv_sum(hv_mul(yb, yb), 0, NULL, 0)) == 0, "%s", hv_last_error());
    if (!hv_grad(xt) || !hv_grad(xc)) {
        CHECK(0, "no gradient reached the inputs");
        return;
    }
    hv_tensor_copy_to(hv_grad(xt), ga, sizeof ga);
    hv_tensor_copy_to(hv_grad(xc), gb, sizeof gb);
    for (i = 0; i < 6; i++)
        for (j = 0; j < 6; j++)
            for (k = 0; k < 5; k++) CHECK(ga[(i * 6 + j) * 5 + k] == gb[(i * 5 + k) * 6 + j], "grad differs at plane %lld", (long long)i);
    hv_tensor_free(xt);
    hv_tensor_free(xc);
    hv_tensor_free(w);
}

/* ---- pooling -------------------------------------------------------------------------------- */

typedef struct pool_case {
    int64_t n, c, h, w;
    hv_pool2d_desc d;
    int max;
    int64_t oh, ow;
} pool_case;

static void ref_pool(const double *const *in, double *out, void *user) {
    pool_case *p = (pool_case *)user;
    int64_t sh = p->d.stride_h ? p->d.stride_h : p->d.kernel_h, sw = p->d.stride_w ? p->d.stride_w : p->d.kernel_w;
    int64_t plane, oh, ow, kh, kw;
    for (plane = 0; plane < p->n * p->c; plane++)
        for (oh = 0; oh < p->oh; oh++)
            for (ow = 0; ow < p->ow; ow++) {
                double m = -INFINITY, s = 0;
                int64_t cnt = 0;
                for (kh = 0; kh < p->d.kernel_h; kh++)
                    for (kw = 0; kw < p->d.kernel_w; kw++) {
                        int64_t ih = oh * sh - p->d.pad_h + kh, iw = ow * sw - p->d.pad_w + kw;
                        double v;
                        if (ih < 0 || ih >= p->h || iw < 0 || iw >= p->w) continue; /* padding: -inf or 0 */
                        v = in[0][(plane * p->h + ih) * p->w + iw];
                        m = v > m ? v : m;
                        s += v;
                        cnt++;
                    }
                /* without ceil_mode every window lies inside the padded input, so including the
                   padding always divides by the full kernel */
                out[(plane * p->oh + oh) * p->ow + ow] = p->max ? m : s / (double)(p->d.count_exclude_pad ? cnt : p->d.kernel_h * p->d.kernel_w);
            }
}
static hv_tensor *op_pool(hv_tensor **in, void *user) {
    pool_case *p = (pool_case *)user;
    return check_shape4(p->max ? hv_max_pool2d(in[0], &p->d) : hv_avg_pool2d(in[0], &p->d), p->n, p->c, p->oh, p->ow);
}
/* distinct values at least 0.05 apart, shuffled: no ties, and finite differences never swap a max */
static hv_tensor *distinct_rand(hv_ctx *ctx, hv_shape s) {
    hv_tensor *t = hv_zeros(ctx, s);
    int64_t i, n = hv_numel(t), *perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    hv_rng_permutation(ctx, n, perm);
    for (i = 0; i < n; i++) hv_data(t)[i] = (float)perm[i] * 0.05f - 2.0f;
    free(perm);
    return t;
}
static void test_pools(hv_ctx *ctx) {
    /* n, c, h, w, {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_exclude_pad} */
    static const pool_case cases[] = {
        {2, 3, 7, 6, {3, 3, 2, 2, 1, 1, 0}, 0, 0, 0}, /* the ResNet stem pool */
        {2, 3, 7, 6, {3, 2, 1, 2, 1, 0, 0}, 0, 0, 0}, /* non-square, stride != kernel */
        {2, 3, 7, 6, {2, 2, 0, 0, 0, 0, 0}, 0, 0, 0}, /* stride 0 = kernel; odd H drops a row */
        {1, 2, 5, 8, {2, 3, 3, 1, 1, 1, 0}, 0, 0, 0}, /* stride > kernel along H */
        {2, 3, 7, 6, {3, 3, 2, 2, 1, 1, 1}, 0, 0, 0}, /* same windows, excluding padding */
        {1, 2, 5, 8, {2, 3, 3, 1, 1, 1, 1}, 0, 0, 0},
        {1, 2, 4, 4, {4, 4, 0, 0, 0, 0, 0}, 0, 0, 0}, /* one window over the whole plane */
    };
    int i, max;
    for (max = 0; max < 2; max++)
        for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
            pool_case p = cases[i];
            tl_case tc;
            char label[64];
            if (max && p.d.count_exclude_pad) continue; /* means nothing to max pooling */
            p.max = max;
            p.oh = (p.h + 2 * p.d.pad_h - p.d.kernel_h) / (p.d.stride_h ? p.d.stride_h : p.d.kernel_h) + 1;
            p.ow = (p.w + 2 * p.d.pad_w - p.d.kernel_w) / (p.d.stride_w ? p.d.stride_w : p.d.kernel_w) + 1;
            snprintf(label, sizeof label, "%s_pool2d case %d", max ? "max" : "avg", i);
            memset(&tc, 0, sizeof tc);
            tc.label = label;
            tc.nin = 1;
            tc.in[0] = distinct_rand(ctx, HV_SHAPE(p.n, p.c, p.h, p.w));
            tc.grad_mask = 1;
            tc.op = op_pool;
            tc.ref = ref_pool;
            tc.user = &p;
            tl_check_op(&tc);
            hv_tensor_free(tc.in[0]);
        }
}

/* padding is -inf for max pooling: an all-negative plane keeps its negative maxima */
static void test_max_pool_negative(hv_ctx *ctx) {
    float v[9] = {-9, -8, -7, -6, -5, -4, -3, -2, -1}, out[4];
    hv_tensor *x = hv_tensor_from(ctx, HV_SHAPE(1, 1, 3, 3), v), *y;
    hv_pool2d_desc d;
    memset(&d, 0, sizeof d);
    d.kernel_h = d.kernel_w = 2;
    d.stride_h = d.stride_w = 2;
    d.pad_h = d.pad_w = 1;
    y = hv_max_pool2d(x, &d); /* windows {-9}, {-8,-7}, {-6,-3}, {-5,-4,-2,-1} */
    CHECK_NOTNULL(y);
    if (y) {
        hv_tensor_copy_to(y, out, sizeof out);
        CHECK(out[0] == -9 && out[1] == -7 && out[2] == -3 && out[3] == -1, "max pool %g %g %g %g", out[0], out[1], out[2], out[3]);
    }
    hv_tensor_free(x);
}

/* ties send the gradient to the first maximum in scan order, and NaN propagates, as in PyTorch */
static void test_max_pool_ties_nan(hv_ctx *ctx) {
    hv_tensor *x = hv_ones(ctx, HV_SHAPE(1, 1, 3, 3)), *y;
    hv_pool2d_desc d;
    float g[9], out[4];
    int i;
    memset(&d, 0, sizeof d);
    d.kernel_h = d.kernel_w = 2;
    d.stride_h = d.stride_w = 1;
    hv_set_trainable(x, 1);
    y = hv_max_pool2d(x, &d);
    CHECK(y && hv_backward(hv_sum(y, 0, NULL, 0)) == 0, "%s", hv_last_error());
    if (!hv_grad(x)) return;
    hv_tensor_copy_to(hv_grad(x), g, sizeof g);
    for (i = 0; i < 9; i++) CHECK(g[i] == ((i == 0 || i == 1 || i == 3 || i == 4) ? 1.0f : 0.0f), "tie grad[%d] = %g", i, g[i]);
    hv_set_trainable(x, 0);
    hv_data(x)[4] = NAN;
    hv_data(x)[8] = 5;
    y = hv_max_pool2d(x, &d);
    CHECK_NOTNULL(y);
    if (!y) return;
    hv_tensor_copy_to(y, out, sizeof out);
    for (i = 0; i < 4; i++) CHECK(out[i] != out[i], "window %d over a NaN gave %g", i, out[i]);
    hv_tensor_free(x);
}

static void ref_gap(const double *const *in, double *out, void *user) {
    int64_t p, j;
    (void)user;
    for (p = 0; p < 2 * 5; p++) {
        double s = 0;
        for (j = 0; j < 7 * 3; j++) s += in[0][p * 21 + j];
        out[p] = s / 21;
    }
}
static hv_tensor *op_gap(hv_tensor **in, void *user) {
    hv_tensor *y = hv_global_avg_pool(in[0]);
    (void)user;
    CHECK(!y || (hv_ndim(y) == 2 && hv_dim(y, 0) == 2 && hv_dim(y, 1) == 5), "global_avg_pool shape");
    return y;
}
static void test_global_avg_pool(hv_ctx *ctx) {
    tl_case tc;
    memset(&tc, 0, sizeof tc);
    tc.label = "global_avg_pool";
    tc.nin = 1;
    tc.in[0] = tl_rand(ctx, HV_SHAPE(2, 5, 7, 3), -2, 2);
    tc.grad_mask = 1;
    tc.op = op_gap;
    tc.ref = ref_gap;
    tl_check_op(&tc);
    hv_tensor_free(tc.in[0]);
}

/* ---- bilinear resize ------------------------------------------------------------------------ */

typedef struct resize_case {
    int64_t n, c, h, w, oh, ow;
    int align;
} resize_case;

/* torch.nn.functional.interpolate(mode='bilinear'): the source coordinate of output index d */
static void ref_src(int64_t d, int64_t in, int64_t out, int align, int64_t *i0, int64_t *i1, double *l1) {
    double src;
    if (align) src = out > 1 ? (double)d * (double)(in - 1) / (double)(out - 1) : 0.0;
    else src = ((double)d + 0.5) * (double)in / (double)out - 0.5;
    if (src < 0) src = 0;
    *i0 = imin((int64_t)floor(src), in - 1);
    *i1 = imin(*i0 + 1, in - 1);
    *l1 = src - (double)*i0;
}
static void ref_resize(const double *const *in, double *out, void *user) {
    resize_case *r = (resize_case *)user;
    int64_t p, oh, ow, h0, h1, w0, w1;
    double lh, lw;
    for (p = 0; p < r->n * r->c; p++)
        for (oh = 0; oh < r->oh; oh++)
            for (ow = 0; ow < r->ow; ow++) {
                const double *x = in[0] + p * r->h * r->w;
                ref_src(oh, r->h, r->oh, r->align, &h0, &h1, &lh);
                ref_src(ow, r->w, r->ow, r->align, &w0, &w1, &lw);
                out[(p * r->oh + oh) * r->ow + ow] = (1 - lh) * ((1 - lw) * x[h0 * r->w + w0] + lw * x[h0 * r->w + w1]) +
                                                     lh * ((1 - lw) * x[h1 * r->w + w0] + lw * x[h1 * r->w + w1]);
            }
}
static hv_tensor *op_resize(hv_tensor **in, void *user) {
    resize_case *r = (resize_case *)user;
    return check_shape4(hv_resize_bilinear(in[0], r->oh, r->ow, r->align), r->n, r->c, r->oh, r->ow);
}
static void test_resize_bilinear(hv_ctx *ctx) {
    static const int64_t sizes[][2] = {{8, 7}, {3, 2}, {1, 1}, {9, 3}, {5, 4}, {10, 8}, {2, 5}};
    int i, align;
    for (align = 0; align < 2; align++)
        for (i = 0; i < (int)(sizeof sizes / sizeof sizes[0]); i++) {
            resize_case r;
            tl_case tc;
            char label[64];
            r.n = 2;
            r.c = 3;
            r.h = 5;
            r.w = 4;
            r.oh = sizes[i][0];
            r.ow = sizes[i][1];
            r.align = align;
            snprintf(label, sizeof label, "resize (5, 4) -> (%lld, %lld) align_corners=%d", (long long)r.oh, (long long)r.ow, align);
            memset(&tc, 0, sizeof tc);
            tc.label = label;
            tc.nin = 1;
            tc.in[0] = tl_rand(ctx, HV_SHAPE(r.n, r.c, r.h, r.w), -1, 1);
            tc.grad_mask = 1;
            tc.op = op_resize;
            tc.ref = ref_resize;
            tc.user = &r;
            tl_check_op(&tc);
            hv_tensor_free(tc.in[0]);
        }
}

/* ---- batch norm ----------------------------------------------------------------------------- */

typedef struct bn_case {
    int ndim;
    int64_t shape[4];
    int has_w, has_b, running, training;
    float momentum, eps;
    hv_tensor *rm, *rv;   /* running statistics (persistent) or NULL */
    double rm0[8], rv0[8]; /* their values before the op */
} bn_case;

static void bn_dims(const bn_case *b, int64_t *N, int64_t *C, int64_t *S) {
    int i;
    *N = b->shape[0];
    *C = b->shape[1];
    *S = 1;
    for (i = 2; i < b->ndim; i++) *S *= b->shape[i];
}
/* per channel batch mean and biased variance */
static void bn_batch_stats(const bn_case *b, const double *x, double *mean, double *var) {
    int64_t N, C, S, c, ni, j;
    bn_dims(b, &N, &C, &S);
    for (c = 0; c < C; c++) {
        double s = 0, v = 0;
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) s += x[(ni * C + c) * S + j];
        mean[c] = s / (double)(N * S);
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) v += (x[(ni * C + c) * S + j] - mean[c]) * (x[(ni * C + c) * S + j] - mean[c]);
        var[c] = v / (double)(N * S);
    }
}
static void ref_bn(const double *const *in, double *out, void *user) {
    bn_case *b = (bn_case *)user;
    int64_t N, C, S, c, ni, j;
    double mean[8], var[8];
    const double *w = b->has_w ? in[1] : NULL, *bias = b->has_b ? in[b->has_w ? 2 : 1] : NULL;
    bn_dims(b, &N, &C, &S);
    if (b->training || !b->running) bn_batch_stats(b, in[0], mean, var);
    else
        for (c = 0; c < C; c++) {
            mean[c] = b->rm0[c];
            var[c] = b->rv0[c];
        }
    for (ni = 0; ni < N; ni++)
        for (c = 0; c < C; c++)
            for (j = 0; j < S; j++) {
                int64_t k = (ni * C + c) * S + j;
                out[k] = (in[0][k] - mean[c]) / sqrt(var[c] + b->eps) * (w ? w[c] : 1.0) + (bias ? bias[c] : 0.0);
            }
}
static hv_tensor *op_bn(hv_tensor **in, void *user) {
    bn_case *b = (bn_case *)user;
    hv_tensor *w = b->has_w ? in[1] : NULL, *bias = b->has_b ? in[b->has_w ? 2 : 1] : NULL;
    return hv_batch_norm(in[0], w, bias, b->rm, b->rv, b->training, b->momentum, b->eps);
}
static void run_bn(hv_ctx *ctx, bn_case *b, const char *label) {
    tl_case tc;
    int64_t N, C, S, c;
    int k;
    bn_dims(b, &N, &C, &S);
    memset(&tc, 0, sizeof tc);
    tc.label = label;
    tc.nin = 1;
    tc.in[0] = tl_rand(ctx, hv_shape_of(b->ndim, b->shape), -2, 3);
    if (b->has_w) tc.in[tc.nin++] = tl_rand(ctx, HV_SHAPE(C), 0.5f, 1.5f);
    if (b->has_b) tc.in[tc.nin++] = tl_rand(ctx, HV_SHAPE(C), -1, 1);
    tc.grad_mask = (1u << tc.nin) - 1;
    b->rm = b->rv = NULL;
    if (b->running) {
        b->rm = tl_rand(ctx, HV_SHAPE(C), -0.5f, 0.5f);
        b->rv = tl_rand(ctx, HV_SHAPE(C), 0.5f, 2.0f);
        for (c = 0; c < C; c++) {
            b->rm0[c] = hv_data(b->rm)[c];
            b->rv0[c] = hv_data(b->rv)[c];
        }
    }
    tc.op = op_bn;
    tc.ref = ref_bn;
    tc.user = b;
    tc.fwd_tol = 2e-5;
    tl_check_op(&tc);
    if (b->running) {
        /* training: r = (1 - m) r + m stat with the unbiased variance; eval: untouched */
        double *x = tl_to_double(tc.in[0]), mean[8], var[8];
        bn_batch_stats(b, x, mean, var);
        for (c = 0; c < C; c++) {
            double m = b->training ? b->momentum : 0.0, M = (double)(N * S);
            double want_m = (1 - m) * b->rm0[c] + m * mean[c], want_v = (1 - m) * b->rv0[c] + m * var[c] * M / (M - 1);
            double got_m = hv_data(b->rm)[c], got_v = hv_data(b->rv)[c];
            CHECK(fabs(got_m - want_m) <= 1e-5 * (1 + fabs(want_m)) && fabs(got_v - want_v) <= 1e-5 * (1 + fabs(want_v)),
                  "%s: running stats of channel %lld: (%.7g, %.7g), want (%.7g, %.7g)", label, (long long)c, got_m, got_v, want_m, want_v);
        }
        free(x);
        hv_tensor_free(b->rm);
        hv_tensor_free(b->rv);
    }
    for (k = 0; k < tc.nin; k++) hv_tensor_free(tc.in[k]);
}

static void test_batch_norm(hv_ctx *ctx) {
    /* ndim, shape, has_w, has_b, running, training, momentum, eps */
    static const bn_case cases[] = {
        {2, {6, 4, 0, 0}, 1, 1, 1, 1, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* (N, C) training, affine, running */
        {3, {3, 4, 5, 0}, 0, 0, 0, 1, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* (N, C, L) training, plain */
        {4, {2, 3, 4, 3}, 1, 1, 1, 1, 0.3f, 1e-3f, NULL, NULL, {0}, {0}},    /* (N, C, H, W) training */
        {4, {2, 3, 4, 3}, 1, 1, 1, 0, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* eval: running stats */
        {3, {3, 4, 5, 0}, 1, 1, 0, 0, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* eval without running: batch stats */
        {4, {2, 3, 4, 3}, 1, 0, 0, 1, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* weight only */
        {4, {3, 2, 2, 3}, 0, 1, 1, 1, 0.5f, 1e-5f, NULL, NULL, {0}, {0}},    /* bias only */
        {2, {6, 4, 0, 0}, 0, 0, 1, 0, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* (N, C) eval, plain */
        {3, {3, 3, 1, 0}, 1, 1, 1, 1, 0.1f, 1e-5f, NULL, NULL, {0}, {0}},    /* L = 1: three values per channel */
    };
    int i;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        bn_case b = cases[i];
        char label[80];
        snprintf(label, sizeof label, "batch_norm case %d (%dd, %s)", i, b.ndim, b.training ? "training" : "eval");
        run_bn(ctx, &b, label);
    }
}

/* running statistics update in training even without grad mode, never in eval, and a backward
   after a later update still uses the statistics of its own forward */
static void test_batch_norm_running(hv_ctx *ctx) {
    float xv[8] = {1, 2, 3, 5, -1, 0, 4, 4}, rm[2], rv[2], g1[8], g2[8];
    hv_tensor *x = hv_tensor_from(ctx, HV_SHAPE(4, 2), xv), *m = hv_zeros(ctx, HV_SHAPE(2)), *v = hv_ones(ctx, HV_SHAPE(2)), *y;
    int prev = hv_set_grad_enabled(ctx, 0);
    /* channel 0: 1, 3, -1, 4 -> mean 1.75, unbiased var 14.75/3; channel 1: 2, 5, 0, 4 -> 2.75, 14.75/3 */
    CHECK_NOTNULL(hv_batch_norm(x, NULL, NULL, m, v, 1, 0.25f, 1e-5f));
    hv_set_grad_enabled(ctx, prev);
    hv_tensor_copy_to(m, rm, sizeof rm);
    hv_tensor_copy_to(v, rv, sizeof rv);
    CHECK(fabsf(rm[0] - 0.4375f) < 1e-6f && fabsf(rm[1] - 0.6875f) < 1e-6f, "running mean %g %g", rm[0], rm[1]);
    CHECK(fabsf(rv[0] - (0.75f + 0.25f * 14.75f / 3)) < 1e-5f && fabsf(rv[1] - rv[0]) < 1e-6f, "running var %g %g", rv[0], rv[1]);
    CHECK_NOTNULL(hv_batch_norm(x, NULL, NULL, m, v, 0, 0.25f, 1e-5f));
    hv_tensor_copy_to(m, rm, sizeof rm);
    CHECK(rm[0] == 0.4375f, "eval changed the running mean to %g", rm[0]);
    /* training: sum(xhat^2) is nearly constant, so its gradient nearly vanishes */
    hv_set_trainable(x, 1);
    y = hv_batch_norm(x, NULL, NULL, m, v, 1, 0.25f, 1e-5f);
    CHECK(hv_backward(hv_sum(hv_mul(y, y), 0, NULL, 0)) == 0, "%s", hv_last_error());
    hv_tensor_copy_to(hv_grad(x), g1, sizeof g1);
    CHECK(fabsf(g1[0]) < 1e-4f, "sum of squared normalised values has gradient %g, want ~0", g1[0]);
    /* eval: a running-stat update between forward and backward must not change the gradient */
    hv_zero_grad(x);
    y = hv_batch_norm(x, NULL, NULL, m, v, 0, 0.25f, 1e-5f);
    CHECK(hv_backward(hv_sum(hv_mul(y, y), 0, NULL, 0)) == 0, "%s", hv_last_error());
    hv_tensor_copy_to(hv_grad(x), g1, sizeof g1);
    hv_zero_grad(x);
    y = hv_batch_norm(x, NULL, NULL, m, v, 0, 0.25f, 1e-5f);
    hv_set_grad_enabled(ctx, 0);
    hv_batch_norm(x, NULL, NULL, m, v, 1, 0.9f, 1e-5f); /* moves the running stats after y */
    hv_set_grad_enabled(ctx, 1);
    CHECK(hv_backward(hv_sum(hv_mul(y, y), 0, NULL, 0)) == 0, "%s", hv_last_error());
    hv_tensor_copy_to(hv_grad(x), g2, sizeof g2);
    hv_tensor_copy_to(m, rm, sizeof rm);
    CHECK(rm[0] != 0.4375f, "the second training call did not move the running mean");
    CHECK(memcmp(g1, g2, sizeof g1) == 0, "eval backward did not use the statistics of its own forward");
    hv_tensor_free(x);
    hv_tensor_free(m);
    hv_tensor_free(v);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(hv_ctx *ctx) {
    hv_tensor *x = hv_zeros(ctx, HV_SHAPE(2, 4, 7, 6)), *w = hv_zeros(ctx, HV_SHAPE(6, 2, 3, 3)), *w4 = hv_zeros(ctx, HV_SHAPE(6, 4, 3, 3));
    hv_tensor *x3 = hv_zeros(ctx, HV_SHAPE(2, 4, 7)), *b5 = hv_zeros(ctx, HV_SHAPE(5)), *xi = hv_tensor_new(ctx, HV_I32, HV_SHAPE(2, 4, 7, 6));
    hv_tensor *big = hv_zeros(ctx, HV_SHAPE(6, 4, 9, 3)), *c4 = hv_zeros(ctx, HV_SHAPE(4)), *c3 = hv_zeros(ctx, HV_SHAPE(3));
    hv_tensor *one = hv_zeros(ctx, HV_SHAPE(1, 4)), *x5 = hv_zeros(ctx, HV_SHAPE(1, 2, 1, 1, 1));
    hv_conv2d_desc d;
    hv_pool2d_desc p;
    memset(&d, 0, sizeof d);
    memset(&p, 0, sizeof p);
    /* conv2d */
    CHECK_ERROR(hv_conv2d(x3, w4, NULL, &d), "hv_conv2d", "(2, 4, 7)", "4-D");
    CHECK_ERROR(hv_conv2d(x, c4, NULL, &d), "hv_conv2d", "weight (4)", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_conv2d(xi, w4, NULL, &d), "hv_conv2d", "f32", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_conv2d(x, w, NULL, &d), "hv_conv2d", "weight (6, 2, 3, 3)", "x (2, 4, 7, 6)", "groups 1");
    d.groups = 3;
    CHECK_ERROR(hv_conv2d(x, w, NULL, &d), "hv_conv2d", "divisible by groups 3", "(2, 4, 7, 6)", "(6, 2, 3, 3)");
    d.groups = 0;
    CHECK_ERROR(hv_conv2d(x, w4, b5, &d), "hv_conv2d", "bias (5)", "(6, 4, 3, 3)", "want bias (6)");
    CHECK_ERROR(hv_conv2d(x, big, NULL, &d), "hv_conv2d", "larger", "(6, 4, 9, 3)", "(2, 4, 7, 6)");
    d.pad_h = 1;
    CHECK(hv_conv2d(x, big, NULL, &d) != NULL, "kernel 9 fits 7 + 2 * 1: %s", hv_last_error());
    d.pad_h = 0;
    d.dilation_w = 3; /* 3 taps 3 apart span 7 > 6 */
    CHECK_ERROR(hv_conv2d(x, w4, NULL, &d), "hv_conv2d", "larger", "(2, 4, 7, 6)");
    d.dilation_w = 0;
    d.stride_h = -1;
    CHECK_ERROR(hv_conv2d(x, w4, NULL, &d), "hv_conv2d", "stride (-1, 0)", "(2, 4, 7, 6)");
    d.stride_h = 0;
    d.dilation_h = -2;
    CHECK_ERROR(hv_conv2d(x, w4, NULL, &d), "hv_conv2d", "dilation (-2, 0)");
    d.dilation_h = 0;
    d.pad_w = -1;
    CHECK_ERROR(hv_conv2d(x, w4, NULL, &d), "hv_conv2d", "padding (0, -1)", "(2, 4, 7, 6)");
    d.pad_w = 0;
    CHECK(hv_conv2d(x, w4, NULL, NULL) != NULL, "NULL desc means defaults: %s", hv_last_error());
    /* pooling */
    CHECK_ERROR(hv_max_pool2d(x, NULL), "hv_max_pool2d", "descriptor", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_avg_pool2d(x3, &p), "hv_avg_pool2d", "(2, 4, 7)", "4-D");
    CHECK_ERROR(hv_max_pool2d(x, &p), "hv_max_pool2d", "kernel (0, 0)", "(2, 4, 7, 6)");
    p.kernel_h = p.kernel_w = 3;
    p.pad_h = 2;
    CHECK_ERROR(hv_max_pool2d(x, &p), "hv_max_pool2d", "half the kernel", "(2, 4, 7, 6)");
    p.pad_h = 0;
    p.stride_w = -2;
    CHECK_ERROR(hv_avg_pool2d(x, &p), "hv_avg_pool2d", "stride (0, -2)", "(2, 4, 7, 6)");
    p.stride_w = 0;
    p.kernel_h = 8;
    CHECK_ERROR(hv_avg_pool2d(x, &p), "hv_avg_pool2d", "larger", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_max_pool2d(xi, &p), "hv_max_pool2d", "f32");
    CHECK_ERROR(hv_global_avg_pool(x3), "hv_global_avg_pool", "(2, 4, 7)");
    /* resize */
    CHECK_ERROR(hv_resize_bilinear(x, 0, 3, 0), "hv_resize_bilinear", "(0, 3)", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_resize_bilinear(x3, 4, 4, 0), "hv_resize_bilinear", "(2, 4, 7)");
    /* batch norm */
    CHECK_ERROR(hv_batch_norm(c4, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "x (4)");
    CHECK_ERROR(hv_batch_norm(x5, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "(1, 2, 1, 1, 1)");
    CHECK_ERROR(hv_batch_norm(x, c3, NULL, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "weight (3)", "(2, 4, 7, 6)", "want (4)");
    CHECK_ERROR(hv_batch_norm(x, NULL, b5, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "bias (5)");
    CHECK_ERROR(hv_batch_norm(x, NULL, NULL, c3, c4, 1, 0.1f, 1e-5f), "hv_batch_norm", "running_mean (3)", "(2, 4, 7, 6)");
    CHECK_ERROR(hv_batch_norm(x, NULL, NULL, c4, c3, 0, 0.1f, 1e-5f), "hv_batch_norm", "running_var (3)");
    CHECK_ERROR(hv_batch_norm(x, NULL, NULL, c4, NULL, 0, 0.1f, 1e-5f), "hv_batch_norm", "both");
    CHECK_ERROR(hv_batch_norm(one, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "(1, 4)", "more than one");
    CHECK(hv_batch_norm(one, NULL, NULL, c4, c4, 0, 0.1f, 1e-5f) != NULL, "eval of one sample: %s", hv_last_error());
    CHECK_ERROR(hv_batch_norm(xi, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f), "hv_batch_norm", "f32");
    /* names appear, NULL inputs propagate with the first error */
    hv_tensor_set_name(w, "conv1.weight");
    CHECK_ERROR(hv_conv2d(x, w, NULL, &d), "'conv1.weight'");
    hv_clear_error();
    CHECK(hv_max_pool2d(hv_conv2d(x, w, NULL, &d), &p) == NULL && strstr(hv_last_error(), "hv_conv2d"), "first error kept: %s",
          hv_last_error());
    hv_tensor_free(x);
    hv_tensor_free(w);
    hv_tensor_free(w4);
    hv_tensor_free(x3);
    hv_tensor_free(b5);
    hv_tensor_free(xi);
    hv_tensor_free(big);
    hv_tensor_free(c4);
    hv_tensor_free(c3);
    hv_tensor_free(one);
    hv_tensor_free(x5);
}

/* ---- a small conv net: thread determinism and the no-malloc steady state --------------------- */

typedef struct net {
    hv_tensor *x, *w1, *b1, *g1, *be1, *rm, *rv, *w2;
} net;
static void net_make(hv_ctx *c, net *n, int64_t batch, int64_t hw) {
    n->x = hv_randn(c, HV_SHAPE(batch, 8, hw, hw), 0, 1);
    n->w1 = hv_randn(c, HV_SHAPE(16, 4, 3, 3), 0, 0.2f);
    n->b1 = hv_randn(c, HV_SHAPE(16), 0, 0.1f);
    n->g1 = hv_ones(c, HV_SHAPE(16));
    n->be1 = hv_zeros(c, HV_SHAPE(16));
    n->rm = hv_zeros(c, HV_SHAPE(16));
    n->rv = hv_ones(c, HV_SHAPE(16));
    n->w2 = hv_randn(c, HV_SHAPE(16, 1, 3, 3), 0, 0.2f);
    hv_set_trainable(n->w1, 1);
    hv_set_trainable(n->b1, 1);
    hv_set_trainable(n->g1, 1);
    hv_set_trainable(n->be1, 1);
    hv_set_trainable(n->w2, 1);
}
/* grouped conv -> BN -> relu -> max pool -> depthwise dilated conv -> upsample -> avg pool -> GAP */
static hv_tensor *net_loss(net *n) {
    hv_conv2d_desc d1, d2;
    hv_pool2d_desc mp, ap;
    hv_tensor *h;
    memset(&d1, 0, sizeof d1);
    memset(&d2, 0, sizeof d2);
    memset(&mp, 0, sizeof mp);
    memset(&ap, 0, sizeof ap);
    d1.pad_h = d1.pad_w = 1;
    d1.groups = 2;
    d2.pad_h = d2.pad_w = 2;
    d2.dilation_h = d2.dilation_w = 2;
    d2.groups = 16;
    mp.kernel_h = mp.kernel_w = 3;
    mp.stride_h = mp.stride_w = 2;
    mp.pad_h = mp.pad_w = 1;
    ap.kernel_h = ap.kernel_w = 3;
    ap.stride_h = ap.stride_w = 2;
    ap.pad_h = ap.pad_w = 1;
    ap.count_exclude_pad = 1;
    h = hv_conv2d(n->x, n->w1, n->b1, &d1);
    h = hv_relu(hv_batch_norm(h, n->g1, n->be1, n->rm, n->rv, 1, 0.1f, 1e-5f));
    h = hv_max_pool2d(h, &mp);
    h = hv_conv2d(h, n->w2, NULL, &d2);
    h = hv_resize_bilinear(h, 2 * hv_dim(h, 2) + 1, 2 * hv_dim(h, 3) - 1, 0);
    h = hv_avg_pool2d(h, &ap);
    h = hv_global_avg_pool(h);
    return hv_mean(hv_mul(h, h), 0, NULL, 0);
}

static void run_net(int threads, float *out, int64_t nout) {
    hv_ctx *c = hv_init(&(hv_init_desc){.seed = 11, .threads = threads});
    net n;
    hv_tensor *loss, *ps[5];
    int64_t k = 0, i;
    int j;
    net_make(c, &n, 4, 24);
    loss = net_loss(&n);
    CHECK(loss && hv_backward(loss) == 0, "net: %s", hv_last_error());
    out[k++] = loss ? hv_item(loss) : 0;
    ps[0] = n.w1;
    ps[1] = n.b1;
    ps[2] = n.g1;
    ps[3] = n.be1;
    ps[4] = n.w2;
    for (j = 0; j < 5; j++)
        for (i = 0; hv_grad(ps[j]) && i < hv_numel(ps[j]) && k < nout; i++) out[k++] = hv_data(hv_grad(ps[j]))[i];
    for (i = 0; i < 16 && k < nout; i++) out[k++] = hv_data(n.rv)[i];
    CHECK(k == nout, "collected %lld values, want %lld", (long long)k, (long long)nout);
    hv_shutdown(c);
}
static void test_thread_determinism(hv_ctx *ctx) {
    enum { NV = 1 + 16 * 4 * 9 + 16 * 3 + 16 * 9 + 16 };
    static float a[NV], b[NV];
    (void)ctx;
    run_net(1, a, NV);
    run_net(3, b, NV);
    CHECK(memcmp(a, b, sizeof a) == 0, "results differ between 1 and 3 threads");
    CHECK(a[0] > 0 && a[1] != 0, "degenerate net: loss %g, first grad %g", a[0], a[1]);
}

static void test_steady_state_no_malloc(hv_ctx *ctx) {
    net n;
    uint64_t before = 0;
    int step;
    net_make(ctx, &n, 2, 12);
    for (step = 0; step < 6; step++) {
        hv_tensor *loss;
        if (step == 3) before = hv_alloc_count();
        loss = net_loss(&n);
        CHECK(loss && hv_backward(loss) == 0, "%s", hv_last_error());
        hv_step_end(ctx);
    }
    CHECK(hv_alloc_count() == before, "%llu allocations in 3 steady-state steps", (unsigned long long)(hv_alloc_count() - before));
    hv_tensor_free(n.x);
    hv_tensor_free(n.w1);
    hv_tensor_free(n.b1);
    hv_tensor_free(n.g1);
    hv_tensor_free(n.be1);
    hv_tensor_free(n.rm);
    hv_tensor_free(n.rv);
    hv_tensor_free(n.w2);
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 4321});
    setvbuf(stdout, NULL, _IOLBF, 0);
    TL_RUN(ctx, test_conv2d);
    TL_RUN(ctx, test_conv2d_strided_input);
    TL_RUN(ctx, test_pools);
    TL_RUN(ctx, test_max_pool_negative);
    TL_RUN(ctx, test_max_pool_ties_nan);
    TL_RUN(ctx, test_global_avg_pool);
    TL_RUN(ctx, test_resize_bilinear);
    TL_RUN(ctx, test_batch_norm);
    TL_RUN(ctx, test_batch_norm_running);
    TL_RUN(ctx, test_errors);
    TL_RUN(ctx, test_thread_determinism);
    TL_RUN(ctx, test_steady_state_no_malloc);
    hv_shutdown(ctx);
    TL_DONE();
}
