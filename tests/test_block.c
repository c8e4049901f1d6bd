/* test_block.c - the composite check: two stacked ViT blocks (tests/block.h, built from
   hv_layer_norm, hv_linear, reshape/permute/slice, hv_attention, hv_gelu, hv_add) against a plain-C
   double-precision forward of the same two blocks. tl_check_op compares the forward and every
   gradient (the input and all 2 x 12 parameters) with central finite differences of the double
   forward. The 24 parameters are packed into two flat tensors, one per block (TL_MAX_IN is 6), and
   cut apart inside the op with hv_slice and hv_reshape, so those ops' backwards are on the path too.

   The double reference is itself anchored to PyTorch: test_reference_matches_pytorch runs it on
   the vit_block fixture (timm's Block, D=32, 4 heads) and must land within 1e-6 of PyTorch's
   float64 output (rounded to float32). */
#include "testlib.h"
#include "fixture.h"
#include "block.h"

/* ---- the double-precision reference --------------------------------------------------------- */

typedef struct ref_dims {
    int B, N, D, H;
    double eps;
} ref_dims;

static int64_t block_numel(int64_t D) {
    int64_t n = 0, r, c;
    int i;
    for (i = 0; i < TB_NPARAMS; i++) n += tb_param_shape(i, D, &r, &c);
    return n;
}

/* y (rows, D) = LayerNorm over the last axis, affine */
static void ref_layer_norm(const double *x, const double *w, const double *b, double *y, int rows, int D, double eps) {
    int i, j;
    for (i = 0; i < rows; i++) {
        const double *xr = x + (size_t)i * D;
        double mean = 0, var = 0;
        for (j = 0; j < D; j++) mean += xr[j];
        mean /= D;
        for (j = 0; j < D; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= D; /* biased, as PyTorch's LayerNorm */
        for (j = 0; j < D; j++) y[(size_t)i * D + j] = (xr[j] - mean) / sqrt(var + eps) * w[j] + b[j];
    }
}
/* y (rows, out) = x (rows, in) w^T + b, w (out, in) */
static void ref_linear(const double *x, const double *w, const double *b, double *y, int rows, int in, int out) {
    int i, o, k;
    for (i = 0; i < rows; i++)
        for (o = 0; o < out; o++) {
            double s = b[o];
            for (k = 0; k < in; k++) s += x[(size_t)i * in + k] * w[(size_t)o * in + k];
            y[(size_t)i * out + o] = s;
        }
}

/* one block: x (B, N, D) -> y; p the parameters packed in tb_param_names order */
static void ref_block(const ref_dims *dm, const double *x, const double *p, double *y) {
    int B = dm->B, N = dm->N, D = dm->D, H = dm->H, hd = D / H, rows = B * N;
    const double *prm[TB_NPARAMS];
    double *h = (double *)malloc(sizeof(double) * (size_t)rows * D);
    double *qkv = (double *)malloc(sizeof(double) * (size_t)rows * 3 * D);
    double *att = (double *)malloc(sizeof(double) * (size_t)rows * D);
    double *x1 = (double *)malloc(sizeof(double) * (size_t)rows * D);
    double *hid = (double *)malloc(sizeof(double) * (size_t)rows * 4 * D);
    double *s = (double *)malloc(sizeof(double) * (size_t)N);
    double scale = 1.0 / sqrt((double)hd);
    int64_t off = 0, r, c;
    int i, j, b, hh, d;
    for (i = 0; i < TB_NPARAMS; i++) {
        prm[i] = p + off;
        off += tb_param_shape(i, D, &r, &c);
    }
    ref_layer_norm(x, prm[TB_NORM1_W], prm[TB_NORM1_B], h, rows, D, dm->eps);
    ref_linear(h, prm[TB_QKV_W], prm[TB_QKV_B], qkv, rows, D, 3 * D);
    /* row (b, i) of qkv holds [q | k | v], each D = H heads of hd */
    for (b = 0; b < B; b++)
        for (hh = 0; hh < H; hh++)
            for (i = 0; i < N; i++) {
                const double *q = qkv + (size_t)(b * N + i) * 3 * D + hh * hd;
                double mx = -INFINITY, z = 0;
                for (j = 0; j < N; j++) {
                    const double *k = qkv + (size_t)(b * N + j) * 3 * D + D + hh * hd;
                    double dot = 0;
                    for (d = 0; d < hd; d++) dot += q[d] * k[d];
                    s[j] = dot * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (j = 0; j < N; j++) z += (s[j] = exp(s[j] - mx));
                for (d = 0; d < hd; d++) {
                    double acc = 0;
                    for (j = 0; j < N; j++) acc += s[j] / z * qkv[(size_t)(b * N + j) * 3 * D + 2 * D + hh * hd + d];
                    att[(size_t)(b * N + i) * D + hh * hd + d] = acc;
                }
            }
    ref_linear(att, prm[TB_PROJ_W], prm[TB_PROJ_B], x1, rows, D, D);
    for (i = 0; i < rows * D; i++) x1[i] += x[i];
    ref_layer_norm(x1, prm[TB_NORM2_W], prm[TB_NORM2_B], h, rows, D, dm->eps);
    ref_linear(h, prm[TB_FC1_W], prm[TB_FC1_B], hid, rows, D, 4 * D);
    for (i = 0; i < rows * 4 * D; i++) hid[i] = 0.5 * hid[i] * (1.0 + erf(hid[i] / sqrt(2.0)));
    ref_linear(hid, prm[TB_FC2_W], prm[TB_FC2_B], y, rows, 4 * D, D);
    for (i = 0; i < rows * D; i++) y[i] += x1[i];
    free(h);
    free(qkv);
    free(att);
    free(x1);
    free(hid);
    free(s);
}

/* ---- the reference against PyTorch ---------------------------------------------------------- */

static void test_reference_matches_pytorch(hv_ctx *ctx) {
    fx_file f;
    ref_dims dm;
    const fx_array *x, *out, *a;
    double *xd, *pd, *yd;
    int64_t total, off = 0, i, r, c;
    int k;
    (void)ctx;
    if (fx_open(&f, "vit_block") != 0) {
        CHECK(0, "%s", fx_error());
        return;
    }
    x = fx_get(&f, "x");
    out = fx_get(&f, "out");
    a = fx_get(&f, "cfg.heads");
    if (!x || !out || !a || x->ndim != 3) {
        CHECK(0, "vit_block fixture: %s", fx_error());
        fx_free(&f);
        return;
    }
    dm.B = (int)x->shape[0];
    dm.N = (int)x->shape[1];
    dm.D = (int)x->shape[2];
    dm.H = a->i32[0];
    dm.eps = 1e-6;
    total = block_numel(dm.D);
    xd = (double *)malloc(sizeof(double) * (size_t)x->numel);
    yd = (double *)malloc(sizeof(double) * (size_t)x->numel);
    pd = (double *)malloc(sizeof(double) * (size_t)total);
    for (i = 0; i < x->numel; i++) xd[i] = x->f32[i];
    for (k = 0; k < TB_NPARAMS; k++) {
        const fx_array *p = fx_get(&f, tb_param_names[k]);
        int64_t n = tb_param_shape(k, dm.D, &r, &c);
        CHECK(p && p->numel == n && p->shape[0] == r, "parameter %s missing or misshapen in the fixture", tb_param_names[k]);
        for (i = 0; i < n; i++) pd[off + i] = p && p->numel == n ? p->f32[i] : 0.0;
        off += n;
    }
    ref_block(&dm, xd, pd, yd);
    {
        float *g = (float *)malloc(sizeof(float) * (size_t)out->numel);
        double *ref = (double *)malloc(sizeof(double) * (size_t)out->numel), e;
        /* compare the double result, rounded, against PyTorch's rounded one */
        for (i = 0; i < out->numel; i++) {
            g[i] = (float)yd[i];
            ref[i] = out->f32[i];
        }
        e = tl_rel_err(g, ref, out->numel, 1e-6);
        CHECK(e <= 1e-6, "double reference vs PyTorch's timm Block: error %.3g", e);
        free(g);
        free(ref);
    }
    free(xd);
    free(yd);
    free(pd);
    fx_free(&f);
}

/* ---- two blocks: hv against finite differences ---------------------------------------------- */

enum { TWO_B = 2, TWO_N = 5, TWO_D = 8, TWO_H = 2 };
static const ref_dims two_dims = {TWO_B, TWO_N, TWO_D, TWO_H, 1e-6};

static void ref_two_blocks(const double *const *in, double *out, void *user) {
    double *mid = (double *)malloc(sizeof(double) * TWO_B * TWO_N * TWO_D);
    (void)user;
    ref_block(&two_dims, in[0], in[1], mid);
    ref_block(&two_dims, mid, in[2], out);
    free(mid);
}

/* the 12 parameters of a block as views of its flat tensor */
static void unpack(hv_tensor *flat, hv_tensor **p) {
    int64_t off = 0, r, c, n;
    int i;
    for (i = 0; i < TB_NPARAMS; i++) {
        n = tb_param_shape(i, TWO_D, &r, &c);
        p[i] = hv_slice(flat, 0, off, off + n, 1);
        if (c) p[i] = hv_reshape(p[i], HV_SHAPE(r, c));
        off += n;
    }
}
static hv_tensor *op_two_blocks(hv_tensor **in, void *user) {
    hv_tensor *p1[TB_NPARAMS], *p2[TB_NPARAMS];
    (void)user;
    unpack(in[1], p1);
    unpack(in[2], p2);
    return block_forward(block_forward(in[0], p1, TWO_H, 1e-6f), p2, TWO_H, 1e-6f);
}

/* parameters at the scales of a trained block: LayerNorm near (1, 0), weights ~ 1/sqrt(fan_in) */
static hv_tensor *random_block_params(hv_ctx *ctx) {
    hv_tensor *t = hv_zeros(ctx, HV_SHAPE(block_numel(TWO_D)));
    float *p = hv_data(t);
    int64_t off = 0, r, c, n, j;
    int i;
    for (i = 0; i < TB_NPARAMS; i++) {
        n = tb_param_shape(i, TWO_D, &r, &c);
        for (j = 0; j < n; j++) {
            float z = hv_rng_normal(ctx);
            if (i == TB_NORM1_W || i == TB_NORM2_W) p[off + j] = 1.0f + 0.2f * z;
            else if (c) p[off + j] = z / sqrtf((float)c);
            else p[off + j] = 0.2f * z;
        }
        off += n;
    }
    return t;
}

static void test_two_blocks_finite_differences(hv_ctx *ctx) {
    tl_case tc;
    int k;
    memset(&tc, 0, sizeof tc);
    tc.label = "two ViT blocks (D 8, 2 heads, 5 tokens, batch 2): input, block-1 and block-2 parameters";
    tc.nin = 3;
    tc.in[0] = hv_randn(ctx, HV_SHAPE(TWO_B, TWO_N, TWO_D), 0.0f, 1.0f);
    tc.in[1] = random_block_params(ctx);
    tc.in[2] = random_block_params(ctx);
    tc.grad_mask = 7;
    tc.op = op_two_blocks;
    tc.ref = ref_two_blocks;
    tl_check_op(&tc);
    for (k = 0; k < 3; k++) hv_tensor_free(tc.in[k]);
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 2024});
    TL_RUN(ctx, test_reference_matches_pytorch);
    TL_RUN(ctx, test_two_blocks_finite_differences);
    hv_shutdown(ctx);
    TL_DONE();
}
