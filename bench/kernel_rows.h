/* kernel_rows.h - the kernel rows of bench_kernels.c (CPU: reference against fast kernel), shared
   with bench_vulkan.c (the same rows on a Vulkan device, checked against the CPU). Included after
   humanvit.h with the implementation: a row calls the backend table's entry directly.

   A row's tensors live on b->ctx. run(b, 1) calls the kernel of b->ctx's backend table (the CPU's
   fast kernels, or the Vulkan shaders); run(b, 0) the CPU's scalar reference kernel. Inputs come
   from the context's seeded RNG, so two contexts with the same seed get the same inputs. */
#ifndef BENCH_KERNEL_ROWS_H
#define BENCH_KERNEL_ROWS_H

#define KR_NT 16 /* persistent tensors of a row */

typedef struct bench {
    const char *name, *shape;
    void (*setup)(struct bench *b);       /* makes the inputs from p[] */
    void (*run)(struct bench *b, int fast); /* one call of the reference (fast 0) or the table's kernel */
    int64_t p[10];                        /* shape parameters */
    double flops;                         /* of one call, 0 when not meaningful */
    hv_ctx *ctx;                          /* where the tensors live */
    hv_tensor *t[KR_NT];                  /* persistent tensors, freed after the row */
    hv_tensor *v[4];                      /* views into them */
    int64_t g[8];
    float f;
    double ms_ref, ms_fast, ms_torch;
} bench;

/* the kernel of b's backend table (fast) or the CPU reference */
#define KR_FN(b, fast, field, ref) ((fast) ? (b)->ctx->be->field : ref)
#define KR_BE(b) ((b)->ctx->be)

static hv_tensor *kr_randn(bench *b, hv_shape s, float std) { return hv_randn(b->ctx, s, 0.0f, std); }
static hv_tensor *kr_zeros(bench *b, hv_shape s) { return hv_zeros(b->ctx, s); }
static void kr_free(bench *b) {
    int j;
    for (j = 0; j < KR_NT; j++) hv_tensor_free(b->t[j]), b->t[j] = NULL;
}

/* ---- attention: q, k, v are strided views of a (B, N, 3, H, d) qkv, as in the ViT block ----- */
static void att_setup(bench *b) {
    const int perm[4] = {0, 2, 1, 3};
    const int64_t B = b->p[0], N = b->p[1], H = b->p[2], d = b->p[3];
    int i;
    b->t[0] = kr_randn(b, HV_SHAPE(B, N, 3, H, d), 1.0f);
    for (i = 0; i < 3; i++) b->v[i] = hv_permute(hv_select(b->t[0], 2, i), perm);
    b->t[3] = kr_zeros(b, HV_SHAPE(B, H, N, d));  /* o */
    b->t[4] = kr_zeros(b, HV_SHAPE(B, H, N));     /* lse */
    b->t[5] = kr_randn(b, HV_SHAPE(B, H, N, d), 1); /* go */
    b->t[6] = kr_zeros(b, HV_SHAPE(B, H, N, d));  /* gq */
    b->t[7] = kr_zeros(b, HV_SHAPE(B, H, N, d));  /* gk */
    b->t[8] = kr_zeros(b, HV_SHAPE(B, H, N, d));  /* gv */
    b->t[9] = kr_zeros(b, HV_SHAPE(B, H, N));     /* delta */
    b->f = 1.0f / sqrtf((float)d);
    b->flops = (b->p[4] ? 10.0 : 4.0) * B * H * N * N * d; /* 2 or 5 products of 2 N^2 d flops */
    KR_BE(b)->attention(b->ctx, b->t[3], b->t[4], b->v[0], b->v[1], b->v[2], b->f);
}
static void att_fwd(bench *b, int fast) {
    KR_FN(b, fast, attention, hv__cpu_attention)(b->ctx, b->t[3], b->t[4], b->v[0], b->v[1], b->v[2], b->f);
}
static void att_bwd(bench *b, int fast) {
    KR_FN(b, fast, attention_bwd, hv__cpu_attention_bwd)(b->ctx, b->t[6], b->t[7], b->t[8], b->t[9], b->v[0], b->v[1], b->v[2],
                                                         b->t[3], b->t[4], b->t[5], b->f);
}

/* ---- convolution: p = N, cin, H, W, cout, k, stride, pad, groups --------------------------- */
static void conv_setup(bench *b) {
    const int64_t N = b->p[0], cin = b->p[1], H = b->p[2], W = b->p[3], cout = b->p[4], k = b->p[5], s = b->p[6], pad = b->p[7];
    const int64_t G = b->p[8] ? b->p[8] : 1, OH = (H + 2 * pad - k) / s + 1, OW = (W + 2 * pad - k) / s + 1;
    b->t[0] = kr_randn(b, HV_SHAPE(N, cin, H, W), 1);
    b->t[1] = kr_randn(b, HV_SHAPE(cout, cin / G, k, k), 0.05f);
    b->t[2] = kr_randn(b, HV_SHAPE(cout), 0.1f);
    b->t[3] = kr_zeros(b, HV_SHAPE(N, cout, OH, OW)); /* y */
    b->t[4] = kr_randn(b, HV_SHAPE(N, cout, OH, OW), 1); /* gy */
    b->t[5] = kr_zeros(b, HV_SHAPE(N, cin, H, W));    /* gx */
    b->t[6] = kr_zeros(b, HV_SHAPE(cout, cin / G, k, k)); /* gw */
    b->t[7] = kr_zeros(b, HV_SHAPE(cout));            /* gb */
    b->g[0] = b->g[1] = s;
    b->g[2] = b->g[3] = pad;
    b->g[4] = b->g[5] = 1;
    b->g[6] = G;
    b->flops = 2.0 * N * cout * OH * OW * (cin / G) * k * k;
}
static void conv_fwd(bench *b, int fast) {
    KR_FN(b, fast, conv2d, hv__cpu_conv2d)(b->ctx, b->t[3], b->t[0], b->t[1], b->t[2], b->g);
}
static void conv_bwd_data(bench *b, int fast) {
    KR_FN(b, fast, conv2d_bwd_data, hv__cpu_conv2d_bwd_data)(b->ctx, b->t[5], b->t[4], b->t[1], b->g);
}
static void conv_bwd_weight(bench *b, int fast) {
    KR_FN(b, fast, conv2d_bwd_weight, hv__cpu_conv2d_bwd_weight)(b->ctx, b->t[6], b->t[7], b->t[0], b->t[4], b->g);
}

/* ---- row kernels at ViT-S shapes: p = rows, width ------------------------------------------- */
static void rows_setup(bench *b) {
    const int64_t R = b->p[0], D = b->p[1];
    int64_t sh[2];
    b->t[0] = kr_randn(b, HV_SHAPE(R, D), 1);  /* x */
    b->t[1] = kr_randn(b, HV_SHAPE(D), 1);     /* w, or a bias */
    b->t[2] = kr_randn(b, HV_SHAPE(D), 1);     /* b */
    b->t[3] = kr_zeros(b, HV_SHAPE(R, D));     /* y */
    b->t[4] = kr_zeros(b, HV_SHAPE(R));        /* mean */
    b->t[5] = kr_zeros(b, HV_SHAPE(R));        /* rstd */
    b->t[6] = kr_randn(b, HV_SHAPE(R, D), 1);  /* gy */
    b->t[7] = kr_zeros(b, HV_SHAPE(R, D));     /* gx */
    b->t[8] = kr_zeros(b, HV_SHAPE(D));        /* gw */
    b->t[9] = kr_zeros(b, HV_SHAPE(D));        /* gb */
    b->t[10] = kr_zeros(b, HV_SHAPE(1, D));    /* a column sum */
    b->t[12] = hv_ones(b->ctx, HV_SHAPE(1));   /* the gradient of a scalar loss */
    b->t[13] = kr_zeros(b, HV_SHAPE(1));       /* a scalar loss */
    sh[0] = R;
    sh[1] = D;
    b->v[0] = hv__expand(b->t[1], 2, sh); /* the bias broadcast over rows */
    KR_BE(b)->layer_norm(b->ctx, b->t[3], b->t[4], b->t[5], b->t[0], b->t[1], b->t[2], 1e-6f);
}
static void ln_fwd(bench *b, int fast) {
    KR_FN(b, fast, layer_norm, hv__cpu_layer_norm)(b->ctx, b->t[3], b->t[4], b->t[5], b->t[0], b->t[1], b->t[2], 1e-6f);
}
static void ln_bwd(bench *b, int fast) {
    KR_FN(b, fast, layer_norm_bwd, hv__cpu_layer_norm_bwd)(b->ctx, b->t[7], b->t[8], b->t[9], b->t[0], b->t[1], b->t[4], b->t[5],
                                                           b->t[6]);
}
static void gelu_fwd(bench *b, int fast) { KR_FN(b, fast, unary, hv__cpu_unary)(b->ctx, HV__GELU, 0, b->t[3], b->t[0]); }
static void gelu_bwd(bench *b, int fast) {
    KR_FN(b, fast, unary_bwd, hv__cpu_unary_bwd)(b->ctx, HV__GELU, 0, b->t[7], b->t[0], b->t[3], b->t[6]);
}
static void bias_add(bench *b, int fast) { KR_FN(b, fast, binary, hv__cpu_binary)(b->ctx, HV__ADD, b->t[3], b->t[0], b->v[0]); }
static void bias_grad(bench *b, int fast) { KR_FN(b, fast, reduce, hv__cpu_reduce)(b->ctx, HV__RED_SUM, b->t[10], b->t[6]); }
static void softmax_fwd(bench *b, int fast) {
    KR_FN(b, fast, softmax, hv__cpu_softmax)(b->ctx, 0, b->t[3], b->t[0], b->p[0], b->p[1], 1);
}
static void softmax_bwd(bench *b, int fast) {
    KR_FN(b, fast, softmax_bwd, hv__cpu_softmax_bwd)(b->ctx, 0, b->t[7], b->t[3], b->t[6], b->p[0], b->p[1], 1);
}
static void ce_setup(bench *b) {
    int64_t i, n = b->p[0];
    int32_t *lab = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    rows_setup(b);
    b->t[11] = hv_tensor_new(b->ctx, HV_I32, HV_SHAPE(n));
    for (i = 0; i < n; i++) lab[i] = (int32_t)(i * 7 % b->p[1]);
    hv_tensor_copy_from(b->t[11], lab, sizeof(int32_t) * (size_t)n);
    free(lab);
    b->t[14] = kr_zeros(b, HV_SHAPE(n, 2)); /* lse */
    hv_tensor_fill(b->t[13], 1); /* the loss, and the backward's gloss */
    KR_BE(b)->cross_entropy(b->ctx, b->t[13], b->t[14], b->t[4], b->t[0], b->t[11]);
}
static void ce_fwd(bench *b, int fast) {
    KR_FN(b, fast, cross_entropy, hv__cpu_cross_entropy)(b->ctx, b->t[13], b->t[14], b->t[4], b->t[0], b->t[11]);
}
static void ce_bwd(bench *b, int fast) {
    KR_FN(b, fast, cross_entropy_bwd, hv__cpu_cross_entropy_bwd)(b->ctx, b->t[7], b->t[0], b->t[11], b->t[14], b->t[13]);
}
static void mse_fwd(bench *b, int fast) { KR_FN(b, fast, diff_loss, hv__cpu_diff_loss)(b->ctx, HV__LOSS_MSE, b->t[13], b->t[0], b->t[6]); }
static void mse_bwd(bench *b, int fast) {
    KR_FN(b, fast, diff_loss_bwd, hv__cpu_diff_loss_bwd)(b->ctx, HV__LOSS_MSE, b->t[7], NULL, b->t[0], b->t[6], b->t[12]);
}

/* ---- pooling, resize, batch norm: p = N, C, H, W, then k, stride, pad (pools) or OH, OW (resize) */
static void nchw_setup(bench *b) {
    const int64_t N = b->p[0], C = b->p[1], H = b->p[2], W = b->p[3], k = b->p[4], s = b->p[5], pad = b->p[6];
    const int64_t OH = b->p[7] ? b->p[7] : (H + 2 * pad - k) / s + 1, OW = b->p[8] ? b->p[8] : (W + 2 * pad - k) / s + 1;
    b->t[0] = kr_randn(b, HV_SHAPE(N, C, H, W), 1);   /* x */
    b->t[1] = kr_zeros(b, HV_SHAPE(N, C, OH, OW));    /* y */
    b->t[2] = hv_tensor_new(b->ctx, HV_I32, HV_SHAPE(N, C, OH, OW)); /* argmax */
    b->t[3] = kr_randn(b, HV_SHAPE(N, C, OH, OW), 1); /* gy */
    b->t[4] = kr_zeros(b, HV_SHAPE(N, C, H, W));      /* gx */
    b->t[5] = kr_randn(b, HV_SHAPE(C), 1);            /* w */
    b->t[6] = kr_randn(b, HV_SHAPE(C), 1);            /* b */
    b->t[7] = kr_zeros(b, HV_SHAPE(C));               /* mean */
    b->t[8] = kr_zeros(b, HV_SHAPE(C));               /* var */
    b->t[9] = kr_zeros(b, HV_SHAPE(C));               /* gw */
    b->t[10] = kr_zeros(b, HV_SHAPE(C));              /* gb */
    b->t[11] = kr_randn(b, HV_SHAPE(N, C, H, W), 1);  /* gy of batch norm */
    b->g[0] = b->g[1] = k;
    b->g[2] = b->g[3] = s;
    b->g[4] = b->g[5] = pad;
    b->g[6] = 0;
    if (k) KR_BE(b)->max_pool2d(b->ctx, b->t[1], b->t[2], b->t[0], b->g);
    KR_BE(b)->batch_norm_stats(b->ctx, b->t[7], b->t[8], b->t[0]);
}
static void maxpool_fwd(bench *b, int fast) { KR_FN(b, fast, max_pool2d, hv__cpu_max_pool2d)(b->ctx, b->t[1], b->t[2], b->t[0], b->g); }
static void maxpool_bwd(bench *b, int fast) { KR_FN(b, fast, max_pool2d_bwd, hv__cpu_max_pool2d_bwd)(b->ctx, b->t[4], b->t[3], b->t[2]); }
static void avgpool_fwd(bench *b, int fast) { KR_FN(b, fast, avg_pool2d, hv__cpu_avg_pool2d)(b->ctx, b->t[1], b->t[0], b->g); }
static void avgpool_bwd(bench *b, int fast) { KR_FN(b, fast, avg_pool2d_bwd, hv__cpu_avg_pool2d_bwd)(b->ctx, b->t[4], b->t[3], b->g); }
static void resize_fwd(bench *b, int fast) { KR_FN(b, fast, resize_bilinear, hv__cpu_resize_bilinear)(b->ctx, b->t[1], b->t[0], 0); }
static void resize_bwd(bench *b, int fast) { KR_FN(b, fast, resize_bilinear_bwd, hv__cpu_resize_bilinear_bwd)(b->ctx, b->t[4], b->t[3], 0); }
/* training-mode forward: the batch statistics, then y (torch: F.batch_norm(training=True)) */
static void bn_fwd(bench *b, int fast) {
    KR_FN(b, fast, batch_norm_stats, hv__cpu_batch_norm_stats)(b->ctx, b->t[7], b->t[8], b->t[0]);
    KR_FN(b, fast, batch_norm, hv__cpu_batch_norm)(b->ctx, b->t[4], b->t[0], b->t[7], b->t[8], b->t[5], b->t[6], 1e-5f);
}
static void bn_bwd(bench *b, int fast) {
    KR_FN(b, fast, batch_norm_bwd, hv__cpu_batch_norm_bwd)(b->ctx, b->t[4], b->t[9], b->t[10], b->t[0], b->t[11], b->t[7], b->t[8], b->t[5],
                                                           1e-5f, 1);
}

/* ---- sizes ---------------------------------------------------------------------------------- */

static void kr_shrink(bench *b, int small) {
    int64_t *p = b->p;
    p[0] = p[0] >= 2056 ? p[0] / 8 : p[0] == 8 ? 1 : p[0];
    if (small < 2) return;
    if (b->setup == att_setup) p[1] = (p[1] - 1) / 4 + 1; /* tokens: 257 -> 65 */
    else if (b->setup == conv_setup) p[2] /= 4, p[3] /= 4; /* image sides */
    else if (b->setup == nchw_setup) p[2] /= 4, p[3] /= 4, p[7] /= 4, p[8] /= 4;
    else p[0] = (p[0] + 3) / 4;                             /* rows */
}

/* ---- the table -------------------------------------------------------------------------------- */

/* fills bs (room for 64) with the rows whose name contains filter (NULL: all); returns the count.
   small 1: batch 1 instead of 8 (the rows' first parameter; rows of 2056 or more become 257), and
   no ViT-H rows: sizes a CPU-emulated Vulkan device (lavapipe) gets through in seconds. small 2:
   also a quarter of the tokens, rows and image sides (a smoke test). The shape strings are those
   of the full sizes (bench_vulkan.c prints the real ones). */
static int kr_rows(bench *bs, const char *filter, int small) {
    int nb = 0;
    /* name (the torch script uses the same names), shape, setup, run, shape parameters */
#define ADD(nm, shp, su, fn, ...)                                                                  \
    do {                                                                                           \
        if ((!filter || strstr(nm, filter)) && !(small && strstr(nm, "vith"))) {                   \
            bench *b_ = &bs[nb++];                                                                 \
            int64_t p_[] = {__VA_ARGS__};                                                          \
            memset(b_, 0, sizeof *b_);                                                             \
            b_->name = nm;                                                                         \
            b_->shape = shp;                                                                       \
            b_->setup = su;                                                                        \
            b_->run = fn;                                                                          \
            memcpy(b_->p, p_, sizeof p_);                                                          \
            if (small) kr_shrink(b_, small);                                                       \
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
#undef CONV3
#undef ADD
    return nb;
}

#endif
