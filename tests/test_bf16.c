/* test_bf16.c - the opt-in bf16 GEMM (hv_init_desc.gemm_precision = HV_GEMM_BF16, the cpu-bf16
   section of humanvit.h): its switch, its accuracy against f32, and a ViT with it.

   Where the CPU or build has no bf16 kernel (no AVX512_BF16), asking for it leaves the context in
   f32: the accuracy tests then print a SKIP line and check that the results are the f32 ones, bit
   for bit. test_gemm runs the bf16 kernel through every kernel test (transposes, alpha/beta,
   padding, batches, threads, no steady allocation) against its worst-case bound.

   Accuracy stated here and in README.md. Per element, with S = sum_k |a_ik b_kj|:
     worst case (each operand rounded to bf16, relative 2^-8 each, then f32 sums):
         |C - C_exact| <= (1.01 * 2^-7 + (k + 4) * 2^-23) * S          (checked on every element)
     k = 1 reaches it (measured 2^-7.1). Over k products the independent rounding errors mostly
     cancel: measured max |C - C_exact| / S is 2^-7.6 for k <= 65 and 2^-10.0 for k >= 257
     (checked: <= 2^-9), and with uniform [-1, 1) operands the relative Frobenius error
     ||C - C_exact|| / ||C_exact|| is 2^-8.4 (checked: <= 2^-7), whatever k. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "humanvit.h"
#include "testlib.h"

#define LARGE_K_BOUND (1.0 / 512) /* max |C - C_exact| / sum_k |a_ik b_kj| at k >= 257 */
#define FROB_BOUND (1.0 / 128)    /* ||C - C_exact||_F / ||C_exact||_F, uniform operands */
#define VIT_BOUND 0.05          /* ViT-S features, relative (measured ~0.01) */

static int have_bf16; /* the bf16 kernel runs on this machine */

/* a persistent (d0, d1) tensor, uniform in [-1, 1) times 10^u with u uniform in [-3, 3) per row
   (row_scale) or per column: operands whose products span many magnitudes */
static hv_tensor *scaled(hv_ctx *ctx, int64_t d0, int64_t d1, int row_scale) {
    int64_t dims[2], i, j;
    hv_tensor *t;
    float *p;
    double *f = (double *)malloc(sizeof(double) * (size_t)(row_scale ? d0 : d1));
    dims[0] = d0;
    dims[1] = d1;
    t = hv_uniform(ctx, hv_shape_of(2, dims), -1.0f, 1.0f);
    p = hv_data(t);
    for (i = 0; i < (row_scale ? d0 : d1); i++) f[i] = pow(10.0, 6.0 * hv_rng_uniform(ctx) - 3.0);
    for (i = 0; i < d0; i++)
        for (j = 0; j < d1; j++) p[i * d1 + j] *= (float)f[row_scale ? i : j];
    free(f);
    return t;
}

/* defaults, the descriptor, the setter and the environment variable */
static void test_precision_switch(hv_ctx *ctx) {
    hv_init_desc d;
    hv_ctx *c2;
    int r;
    CHECK(hv_get_gemm_precision(ctx) == HV_GEMM_F32, "the default is not f32");
    r = hv_set_gemm_precision(ctx, HV_GEMM_BF16);
    CHECK(r == (have_bf16 ? HV_GEMM_BF16 : HV_GEMM_F32), "set bf16 returned %d", r);
    CHECK(hv_get_gemm_precision(ctx) == (hv_gemm_precision)r, "get disagrees with set");
    CHECK(hv_set_gemm_precision(ctx, HV_GEMM_F32) == HV_GEMM_F32 && hv_get_gemm_precision(ctx) == HV_GEMM_F32, "back to f32");
    hv_clear_error();
    CHECK(hv_set_gemm_precision(ctx, (hv_gemm_precision)7) == -1 && strstr(hv_last_error(), "HV_GEMM_BF16"), "bad value: %s",
          hv_last_error());
    CHECK(hv_get_gemm_precision(ctx) == HV_GEMM_F32, "a bad value changed the precision");

    memset(&d, 0, sizeof d);
    d.gemm_precision = HV_GEMM_BF16;
    c2 = hv_init(&d);
    CHECK_NOTNULL(c2);
    if (c2) CHECK(hv_get_gemm_precision(c2) == (have_bf16 ? HV_GEMM_BF16 : HV_GEMM_F32), "hv_init_desc.gemm_precision ignored");
    hv_shutdown(c2);
    d.gemm_precision = (hv_gemm_precision)3;
    CHECK_ERROR(hv_init(&d), "hv_init", "gemm_precision", "3");

    /* the environment overrides the descriptor, both ways */
    setenv("HUMANVIT_GEMM_PRECISION", "bf16", 1);
    c2 = hv_init(NULL);
    CHECK(c2 && hv_get_gemm_precision(c2) == (have_bf16 ? HV_GEMM_BF16 : HV_GEMM_F32), "HUMANVIT_GEMM_PRECISION=bf16 ignored");
    hv_shutdown(c2);
    setenv("HUMANVIT_GEMM_PRECISION", "f32", 1);
    d.gemm_precision = HV_GEMM_BF16;
    c2 = hv_init(&d);
    CHECK(c2 && hv_get_gemm_precision(c2) == HV_GEMM_F32, "HUMANVIT_GEMM_PRECISION=f32 ignored");
    hv_shutdown(c2);
    setenv("HUMANVIT_GEMM_PRECISION", "half", 1);
    CHECK_ERROR(hv_init(NULL), "HUMANVIT_GEMM_PRECISION", "half");
    unsetenv("HUMANVIT_GEMM_PRECISION");
}

/* hv_matmul in bf16 against a double reference on random shapes, odd sizes and all four transpose
   cases, half of them with scaled operands; every element within the worst-case bound, and the
   measured errors printed and held to the stated typical bounds. Without a bf16 kernel: the f32
   results, bit for bit. */
static void test_bf16_accuracy(hv_ctx *ctx) {
    static const int64_t dims[] = {1, 7, 13, 31, 65, 257, 300, 1000};
    double worst_k1 = 0, worst_small = 0, worst_large = 0, worst_frob = 0;
    int s;
    if (!have_bf16) printf("  SKIP bf16 accuracy: no bf16 GEMM kernel on this CPU or build; checking the f32 fallback instead\n");
    for (s = 0; s < 48; s++) {
        int ta = s & 1, tb = (s >> 1) & 1, plain = (s >> 2) & 1;
        int64_t m = dims[hv_rng_u64(ctx) % 8], n = dims[hv_rng_u64(ctx) % 8], k = s < 8 ? 1500 : dims[hv_rng_u64(ctx) % 8], i, j, p, bad = 0;
        hv_tensor *a = plain ? tl_rand(ctx, HV_SHAPE(ta ? k : m, ta ? m : k), -1, 1) : scaled(ctx, ta ? k : m, ta ? m : k, !ta);
        hv_tensor *b = plain ? tl_rand(ctx, HV_SHAPE(tb ? n : k, tb ? k : n), -1, 1) : scaled(ctx, tb ? n : k, tb ? k : n, tb);
        hv_tensor *c16, *c32;
        const float *pa = hv_data(a), *pb = hv_data(b), *q16, *q32;
        double e2 = 0, r2 = 0, wn = 0, *worst = k == 1 ? &worst_k1 : k < 257 ? &worst_small : &worst_large;
        hv_set_gemm_precision(ctx, HV_GEMM_BF16);
        c16 = hv_matmul(a, b, ta, tb);
        hv_set_gemm_precision(ctx, HV_GEMM_F32);
        c32 = hv_matmul(a, b, ta, tb);
        CHECK_NOTNULL(c16);
        CHECK_NOTNULL(c32);
        if (!c16 || !c32) return;
        q16 = hv_data(c16);
        q32 = hv_data(c32);
        if (!have_bf16) {
            CHECK(memcmp(q16, q32, sizeof(float) * (size_t)(m * n)) == 0, "fallback: %lldx%lldx%lld differs from f32", (long long)m,
                  (long long)n, (long long)k);
        } else {
            for (i = 0; i < m; i++)
                for (j = 0; j < n; j++) {
                    double r = 0, sabs = 0, d;
                    for (p = 0; p < k; p++) {
                        double x = ta ? pa[p * m + i] : pa[i * k + p], y = tb ? pb[j * k + p] : pb[p * n + j];
                        r += x * y;
                        sabs += fabs(x * y);
                    }
                    d = fabs((double)q16[i * n + j] - r);
                    if (!(d <= (1.01 * ldexp(1.0, -7) + (double)(k + 4) * ldexp(1.0, -23)) * sabs)) bad++; /* NaN fails */
                    e2 += d * d;
                    r2 += r * r;
                    if (sabs > 0 && d / sabs > wn) wn = d / sabs;
                }
            if (wn > *worst) *worst = wn;
            if (plain && sqrt(e2 / r2) > worst_frob) worst_frob = sqrt(e2 / r2);
            CHECK(!bad, "ta=%d tb=%d %lldx%lldx%lld: %lld elements past the worst-case bound", ta, tb, (long long)m, (long long)n, (long long)k,
                  (long long)bad);
            /* the bf16 kernel did run: with k > 1 products some element must differ from f32 */
            if (k > 1 && m * n > 16) CHECK(memcmp(q16, q32, sizeof(float) * (size_t)(m * n)) != 0, "bf16 result equals f32's: kernel not used?");
        }
        hv_tensor_free(a);
        hv_tensor_free(b);
        hv_step_end(ctx);
    }
    if (!have_bf16) return;
    printf("  bf16 GEMM, max |C - C_exact| / sum_k |a b|: k = 1: %.3g (2^%.1f), 7 <= k <= 65: %.3g (2^%.1f), k >= 257: %.3g (2^%.1f)\n",
           worst_k1, log2(worst_k1 + 1e-300), worst_small, log2(worst_small + 1e-300), worst_large, log2(worst_large + 1e-300));
    printf("  bf16 GEMM, uniform [-1, 1) operands: max ||C - C_exact|| / ||C_exact|| = %.3g (2^%.1f)\n", worst_frob, log2(worst_frob + 1e-300));
    CHECK(worst_large <= LARGE_K_BOUND, "k >= 257: normalised error %.3g > %.3g", worst_large, LARGE_K_BOUND);
    CHECK(worst_frob <= FROB_BOUND, "Frobenius error %.3g > %.3g", worst_frob, FROB_BOUND);
}

/* a ViT-S/14 forward (random weights, 2 images) in bf16 stays close to f32; and a tiny ViT's
   training gradients likewise (the backward GEMMs run in bf16 too) */
static void test_bf16_vit(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_tensor *img, *f16, *f32;
    int64_t i, n;
    double e2 = 0, r2 = 0;
    if (!have_bf16) {
        printf("  SKIP bf16 ViT: no bf16 GEMM kernel on this CPU or build\n");
        return;
    }
    memset(&d, 0, sizeof d);
    d.preset = HV_VIT_S14;
    vit = hv_vit_new(ctx, &d);
    img = hv_randn(ctx, HV_SHAPE(2, 3, 224, 224), 0.0f, 1.0f);
    CHECK_NOTNULL(vit);
    CHECK_NOTNULL(img);
    if (!vit || !img) return;
    hv_set_grad_enabled(ctx, 0);
    hv_set_gemm_precision(ctx, HV_GEMM_BF16);
    f16 = hv_vit_forward(vit, img, 0);
    hv_set_gemm_precision(ctx, HV_GEMM_F32);
    f32 = hv_vit_forward(vit, img, 0);
    hv_set_grad_enabled(ctx, 1);
    CHECK_NOTNULL(f16);
    CHECK_NOTNULL(f32);
    if (f16 && f32) {
        n = hv_numel(f32);
        for (i = 0; i < n; i++) {
            double dd = (double)hv_data(f16)[i] - hv_data(f32)[i];
            e2 += dd * dd;
            r2 += (double)hv_data(f32)[i] * hv_data(f32)[i];
        }
        printf("  ViT-S/14 features (2 x 384), bf16 vs f32: relative error %.3g\n", sqrt(e2 / r2));
        CHECK(sqrt(e2 / r2) < VIT_BOUND, "ViT-S features: relative error %.3g >= %g", sqrt(e2 / r2), VIT_BOUND);
    }
    hv_vit_free(vit);
    hv_tensor_free(img);
}

/* every gradient of a tiny ViT (cross-entropy, batch 4) into one vector, with the given precision */
static double *tiny_grads(hv_ctx *ctx, hv_vit *vit, hv_tensor *img, hv_tensor *labels, hv_gemm_precision prec, int64_t *count, float *loss) {
    const hv_param_list *pl = hv_vit_params(vit);
    hv_tensor *l;
    double *g;
    int64_t total = 0, at = 0, i;
    int q;
    for (q = 0; q < pl->count; q++) total += hv_numel(pl->tensors[q]);
    for (q = 0; q < pl->count; q++) hv_zero_grad(pl->tensors[q]);
    hv_set_gemm_precision(ctx, prec);
    l = hv_cross_entropy(hv_vit_forward(vit, img, 0), labels); /* eval head: batch-norm statistics of 4 would cancel most of the gradient */
    if (!l || hv_backward(l)) return NULL;
    hv_set_gemm_precision(ctx, HV_GEMM_F32);
    *loss = hv_item(l);
    g = (double *)calloc((size_t)total, sizeof(double));
    for (q = 0; q < pl->count; q++) {
        hv_tensor *gt = hv_grad(pl->tensors[q]);
        int64_t n = hv_numel(pl->tensors[q]);
        if (gt)
            for (i = 0; i < n; i++) g[at + i] = hv_data(gt)[i];
        at += n;
    }
    hv_step_end(ctx);
    *count = total;
    return g;
}

static void test_bf16_vit_grads(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_tensor *img, *labels;
    double *g16, *g32, e2 = 0, r2 = 0;
    int64_t n16 = 0, n32 = 0, i;
    float l16 = 0, l32 = 0;
    if (!have_bf16) {
        printf("  SKIP bf16 ViT gradients: no bf16 GEMM kernel on this CPU or build\n");
        return;
    }
    memset(&d, 0, sizeof d);
    d.img_size = 28;
    d.patch_size = 7;
    d.embed_dim = 64;
    d.depth = 2;
    d.num_heads = 4;
    d.num_classes = 5;
    vit = hv_vit_new(ctx, &d);
    img = hv_randn(ctx, HV_SHAPE(4, 3, 28, 28), 0.0f, 1.0f);
    labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(4));
    CHECK_NOTNULL(vit);
    if (!vit || !img || !labels) return;
    for (i = 0; i < 4; i++) hv_data_i32(labels)[i] = (int32_t)(i + 1);
    g32 = tiny_grads(ctx, vit, img, labels, HV_GEMM_F32, &n32, &l32);
    g16 = tiny_grads(ctx, vit, img, labels, HV_GEMM_BF16, &n16, &l16);
    CHECK(g32 && g16 && n16 == n32, "backward failed: %s", hv_last_error());
    if (g32 && g16) {
        for (i = 0; i < n32; i++) {
            e2 += (g16[i] - g32[i]) * (g16[i] - g32[i]);
            r2 += g32[i] * g32[i];
        }
        printf("  tiny ViT: loss %.6f (bf16) vs %.6f (f32); all gradients, relative error %.3g\n", l16, l32, sqrt(e2 / r2));
        CHECK(fabs(l16 - l32) < VIT_BOUND * fabs(l32), "loss %g vs %g", l16, l32);
        CHECK(sqrt(e2 / r2) < VIT_BOUND, "gradients: relative error %.3g >= %g", sqrt(e2 / r2), VIT_BOUND);
    }
    free(g16);
    free(g32);
    hv_vit_free(vit);
    hv_tensor_free(img);
    hv_tensor_free(labels);
}

int main(void) {
    hv_ctx *ctx;
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsetenv("HUMANVIT_GEMM_PRECISION"); /* these tests set it themselves */
    ctx = hv_init(NULL);
    hv_rng_seed(ctx, 5);
    have_bf16 = hv_set_gemm_precision(ctx, HV_GEMM_BF16) == HV_GEMM_BF16;
    hv_set_gemm_precision(ctx, HV_GEMM_F32);
    printf("  bf16 GEMM kernel: %s (GEMM isa %s)\n", have_bf16 ? "yes" : "no", hv_cpu_isa(ctx));
    TL_RUN(ctx, test_precision_switch);
    TL_RUN(ctx, test_bf16_accuracy);
    TL_RUN(ctx, test_bf16_vit);
    TL_RUN(ctx, test_bf16_vit_grads);
    hv_shutdown(ctx);
    TL_DONE();
}
