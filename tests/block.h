/* block.h - one pre-norm ViT transformer block (timm 0.3.2's Block, as the HLV / MAE encoders use
   it) built from humanvit ops, for the tests: test_fixtures.c checks it against PyTorch,
   test_block.c checks two stacked blocks against finite differences. The library's own ViT block
   arrives later; this is the test-side definition it will be held to.

       x = x + proj(attention(split_heads(qkv(LN1(x)))))      LN eps 1e-6, scale hd^-0.5
       x = x + fc2(GELU(fc1(LN2(x))))                         exact (erf) GELU, hidden 4D
   qkv's 3D output rows are [q; k; v], each head-major (reshape (B, N, 3, H, hd)). */
#ifndef HV_TEST_BLOCK_H
#define HV_TEST_BLOCK_H

#include "humanvit.h"

/* the parameters in timm's state-dict order and names */
enum {
    TB_NORM1_W, TB_NORM1_B, TB_QKV_W, TB_QKV_B, TB_PROJ_W, TB_PROJ_B,
    TB_NORM2_W, TB_NORM2_B, TB_FC1_W, TB_FC1_B, TB_FC2_W, TB_FC2_B, TB_NPARAMS
};
static const char *const tb_param_names[TB_NPARAMS] = {
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};

/* shape of parameter i for width D (rows, cols; cols 0 for a vector); returns its numel */
static inline int64_t tb_param_shape(int i, int64_t D, int64_t *rows, int64_t *cols) {
    static const int r[TB_NPARAMS] = {1, 1, 3, 3, 1, 1, 1, 1, 4, 4, 1, 1}; /* rows in units of D */
    static const int c[TB_NPARAMS] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 0}; /* cols in units of D */
    *rows = r[i] * D;
    *cols = c[i] * D;
    return *rows * (*cols ? *cols : 1);
}

/* x (B, N, D) -> (B, N, D); p[TB_NPARAMS] the parameters in the order above */
static inline hv_tensor *block_forward(hv_tensor *x, hv_tensor *const *p, int heads, float eps) {
    static const int to_heads[5] = {2, 0, 3, 1, 4}; /* (B, N, 3, H, hd) -> (3, B, H, N, hd) */
    static const int to_tokens[4] = {0, 2, 1, 3};   /* (B, H, N, hd) -> (B, N, H, hd) */
    int64_t B, N, D, hd;
    hv_tensor *h, *qkv, *q, *k, *v, *a;
    if (!x) return NULL;
    B = hv_dim(x, 0);
    N = hv_dim(x, 1);
    D = hv_dim(x, 2);
    hd = D / heads;
    h = hv_layer_norm(x, p[TB_NORM1_W], p[TB_NORM1_B], eps);
    qkv = hv_linear(h, p[TB_QKV_W], p[TB_QKV_B]);                            /* (B, N, 3D) */
    qkv = hv_permute(hv_reshape(qkv, HV_SHAPE(B, N, 3, heads, hd)), to_heads); /* (3, B, H, N, hd) */
    q = hv_reshape(hv_slice(qkv, 0, 0, 1, 1), HV_SHAPE(B, heads, N, hd));
    k = hv_reshape(hv_slice(qkv, 0, 1, 2, 1), HV_SHAPE(B, heads, N, hd));
    v = hv_reshape(hv_slice(qkv, 0, 2, 3, 1), HV_SHAPE(B, heads, N, hd));
    a = hv_attention(q, k, v, 0.0f);                                          /* (B, H, N, hd) */
    a = hv_reshape(hv_permute(a, to_tokens), HV_SHAPE(B, N, D));
    x = hv_add(x, hv_linear(a, p[TB_PROJ_W], p[TB_PROJ_B]));
    h = hv_layer_norm(x, p[TB_NORM2_W], p[TB_NORM2_B], eps);
    h = hv_linear(hv_gelu(hv_linear(h, p[TB_FC1_W], p[TB_FC1_B])), p[TB_FC2_W], p[TB_FC2_B]);
    return hv_add(x, h);
}

#endif
