/* test_pmae.c - the Perceptual MAE pieces (LS-GAN variant) against PyTorch
   (tests/make_pmae_fixtures.py): the single-scale discriminator (outputs in training and eval
   mode, every parameter gradient, the input gradient, BatchNorm statistics, the conv1..conv4
   features, loading from a Lightning .ckpt), the generator and discriminator losses, and the
   Gram / LSGAN / style terms by finite differences. */
#include "testlib.h"

#include <stdint.h>

#define PMAE "tests/fixtures/pmae/"
#define NDF 4          /* the fixtures' discriminator; upstream's is 64 */
#define ROW0 100       /* the rows of the input gradients the fixtures store */
#define ROW1 108

/* make_pmae_fixtures.py images(): k/128 - 1, k the top byte of a multiplicative hash of the index */
static hv_tensor *pmae_images(hv_ctx *ctx, int64_t batch, uint32_t seed, float scale, float shift) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, HV_SHAPE(batch, 3, 224, 224));
    float *p = hv_data(t);
    int64_t i, n = hv_numel(t);
    for (i = 0; i < n; i++) {
        uint32_t v = (uint32_t)i * 2654435761u + seed * 40503u;
        p[i] = ((float)(v >> 24) / 128.0f - 1.0f) * scale + shift;
    }
    return t;
}

static int same_i32(hv_tensor *got, hv_state_dict *ref, const char *name) {
    hv_tensor *r = hv_state_dict_get(ref, name);
    return got && r && hv_tensor_dtype(r) == HV_I32 && hv_data_i32(got)[0] == hv_data_i32(r)[0];
}

/* a fixture discriminator loaded from the .ckpt under prefix ("discriminator." or the copy's) */
static hv_disc *load_disc(hv_ctx *ctx, const char *prefix) {
    hv_disc_desc dd;
    hv_load_result res;
    hv_disc *d;
    memset(&dd, 0, sizeof dd);
    dd.ndf = NDF;
    dd.prefix = prefix;
    d = hv_disc_new(ctx, &dd);
    if (!d) return NULL;
    if (hv_params_load_file(hv_disc_params(d), PMAE "pmae.ckpt", "state_dict", &res)) {
        printf("  load: %s\n", hv_last_error());
        hv_disc_free(d);
        return NULL;
    }
    CHECK(res.loaded == hv_disc_params(d)->count && res.missing_count == 0, "loaded %d of %d (%d missing)", res.loaded,
          hv_disc_params(d)->count, res.missing_count);
    CHECK(res.unexpected_count > 0, "the other keys of the checkpoint should be reported unexpected");
    hv_load_result_free(&res);
    return d;
}
static hv_tensor *rows(hv_tensor *g) { return g ? hv_contiguous(hv_slice(g, 2, ROW0, ROW1, 1)) : NULL; }

static void test_disc_layout_and_errors(hv_ctx *ctx) {
    hv_disc *d = hv_disc_new(ctx, NULL);
    const hv_param_list *pl = hv_disc_params(d);
    int64_t n = 0;
    int i;
    CHECK_NOTNULL(d);
    if (!d) return;
    /* upstream's state dict: conv1.0.weight, conv2..5 (.0.weight + 5 BatchNorm entries), conv6.weight, final_layer.* */
    CHECK(pl->count == 28, "%d entries", pl->count);
    CHECK(!strcmp(pl->names[0], "conv1.0.weight") && !strcmp(pl->names[6], "conv2.1.num_batches_tracked") &&
              !strcmp(pl->names[25], "conv6.weight") && !strcmp(pl->names[27], "final_layer.bias"),
          "names %s %s %s %s", pl->names[0], pl->names[6], pl->names[25], pl->names[27]);
    for (i = 0; i < pl->count; i++)
        if (hv_requires_grad(pl->tensors[i])) n += hv_numel(pl->tensors[i]);
    CHECK(n == 4579793, "%lld trainable values (PyTorch: 4579793)", (long long)n);
    CHECK(hv_dim(pl->tensors[13], 0) == 512 && hv_dim(pl->tensors[13], 1) == 256 && hv_dim(pl->tensors[13], 3) == 3, "conv4 weight shape");
    {
        hv_tensor *small = hv_zeros(ctx, HV_SHAPE(1, 3, 112, 112)), *feats[4];
        CHECK_ERROR(hv_disc_forward(d, small, 0), "hv_disc_forward", "(1, 3, 112, 112)", "224");
        hv_clear_error();
        CHECK(hv_disc_features(d, small, 0, feats) == -1 && strstr(hv_last_error(), "224"), "features: %s", hv_last_error());
        hv_tensor_free(small);
    }
    {
        hv_disc_desc dd;
        memset(&dd, 0, sizeof dd);
        dd.ndf = 8;
        hv_disc *other = hv_disc_new(ctx, &dd);
        CHECK(hv_disc_copy(other, d) == -1 && strstr(hv_last_error(), "ndf"), "copy between sizes: %s", hv_last_error());
        hv_disc_free(other);
    }
    hv_disc_free(d);
}

static void test_disc_matches_pytorch(hv_ctx *ctx) {
    hv_state_dict *io = hv_safetensors_load(ctx, PMAE "pmae_io.safetensors");
    hv_disc *d = load_disc(ctx, "discriminator.");
    hv_tensor *x = pmae_images(ctx, 2, 1, 1.0f, 0.0f), *out, *r;
    const hv_param_list *pl;
    char key[160];
    int i;
    CHECK_NOTNULL(io);
    CHECK_NOTNULL(d);
    if (!io || !d) goto done;
    pl = hv_disc_params(d);
    hv_set_trainable(x, 1);
    out = hv_disc_forward(d, x, 1);
    CHECK(out && hv_ndim(out) == 1 && hv_dim(out, 0) == 2, "output shape");
    CHECK(tl_err_vs(out, io, "disc.out_train", 1e-6) < 1e-5, "train output error %.3g", tl_err_vs(out, io, "disc.out_train", 1e-6));
    r = hv_state_dict_get(io, "disc.r");
    CHECK(hv_backward(hv_sum(hv_mul(out, r), 0, NULL, 0)) == 0, "backward: %s", hv_last_error());
    for (i = 0; i < pl->count; i++) {
        const char *name = pl->names[i] + strlen("discriminator.");
        if (strstr(name, "running_")) {
            snprintf(key, sizeof key, "disc.after.%s", name);
            CHECK(tl_err_vs(pl->tensors[i], io, key, 1e-6) < 1e-5, "%s: error %.3g", key, tl_err_vs(pl->tensors[i], io, key, 1e-6));
        } else if (strstr(name, "num_batches")) {
            snprintf(key, sizeof key, "disc.after.%s", name);
            CHECK(same_i32(pl->tensors[i], io, key), "%s", key);
        } else {
            snprintf(key, sizeof key, "disc.grad.%s", name);
            CHECK(tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6) < 1e-4, "%s: error %.3g", key,
                  tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6));
        }
    }
    CHECK(tl_err_vs(rows(hv_grad(x)), io, "disc.grad_images_rows", 1e-6) < 1e-4, "input gradient error %.3g",
          tl_err_vs(rows(hv_grad(x)), io, "disc.grad_images_rows", 1e-6));
    /* eval mode on the statistics the training forward left */
    out = hv_disc_forward(d, x, 0);
    CHECK(tl_err_vs(out, io, "disc.out_eval", 1e-6) < 1e-5, "eval output error %.3g", tl_err_vs(out, io, "disc.out_eval", 1e-6));
done:
    hv_tensor_free(x);
    hv_disc_free(d);
    hv_state_dict_free(io);
}

static void test_disc_features_and_copy(hv_ctx *ctx) {
    hv_state_dict *io = hv_safetensors_load(ctx, PMAE "pmae_io.safetensors");
    hv_disc *d = load_disc(ctx, "discriminator."), *copy = load_disc(ctx, "loss_fnc.disc_model_copy."), *d2;
    hv_tensor *x = pmae_images(ctx, 2, 1, 1.0f, 0.0f), *feats[4];
    static const int64_t hw[4] = {110, 54, 25, 12};
    int i, axes[2] = {2, 3}, differ = 0;
    char key[64];
    CHECK_NOTNULL(io);
    if (!io || !d || !copy) goto done;
    CHECK(hv_disc_features(d, x, 1, feats) == 0, "features: %s", hv_last_error());
    for (i = 0; i < 4; i++) {
        CHECK(feats[i] && hv_dim(feats[i], 1) == NDF << (i < 3 ? i : 3) && hv_dim(feats[i], 2) == hw[i] && hv_dim(feats[i], 3) == hw[i],
              "feature %d shape", i + 1);
        snprintf(key, sizeof key, "disc.feat_mean.%d", i + 1);
        CHECK(tl_err_vs(hv_mean(feats[i], 2, axes, 0), io, key, 1e-6) < 1e-5, "%s: error %.3g", key,
              tl_err_vs(hv_mean(feats[i], 2, axes, 0), io, key, 1e-6));
    }
    /* the copy holds other weights; hv_disc_copy makes every tensor (statistics too) equal */
    for (i = 0; i < hv_disc_params(d)->count; i++)
        if (hv_tensor_dtype(hv_disc_params(d)->tensors[i]) == HV_F32 &&
            memcmp(hv_data(hv_disc_params(d)->tensors[i]), hv_data(hv_disc_params(copy)->tensors[i]), 4) != 0)
            differ++;
    CHECK(differ > 10, "the copy should differ before hv_disc_copy (%d tensors do)", differ);
    d2 = hv_disc_new(ctx, &(hv_disc_desc){.ndf = NDF});
    CHECK(hv_disc_copy(d2, copy) == 0, "copy: %s", hv_last_error());
    for (i = 0; d2 && i < hv_disc_params(d2)->count; i++) {
        hv_tensor *a = hv_disc_params(d2)->tensors[i], *b = hv_disc_params(copy)->tensors[i];
        CHECK(memcmp(hv_tensor_dtype(a) == HV_F32 ? (void *)hv_data(a) : (void *)hv_data_i32(a),
                     hv_tensor_dtype(b) == HV_F32 ? (void *)hv_data(b) : (void *)hv_data_i32(b), 4 * (size_t)hv_numel(a)) == 0,
              "%s differs after the copy", hv_disc_params(d2)->names[i]);
    }
    /* freezing leaves the statistics alone and stops the learnable tensors' gradients */
    hv_disc_set_trainable(d2, 0);
    for (i = 0; d2 && i < hv_disc_params(d2)->count; i++) CHECK(!hv_requires_grad(hv_disc_params(d2)->tensors[i]), "frozen %d", i);
    hv_disc_set_trainable(d2, 1);
    for (i = 0; d2 && i < hv_disc_params(d2)->count; i++) {
        const char *n = hv_disc_params(d2)->names[i];
        int learnable = !strstr(n, "running_") && !strstr(n, "num_batches");
        CHECK(hv_requires_grad(hv_disc_params(d2)->tensors[i]) == learnable, "%s trainable %d", n, learnable);
    }
    hv_disc_free(d2);
done:
    hv_tensor_free(x);
    hv_disc_free(d);
    hv_disc_free(copy);
    hv_state_dict_free(io);
}

static void test_generator_loss_matches_pytorch(hv_ctx *ctx) {
    hv_state_dict *io = hv_safetensors_load(ctx, PMAE "pmae_io.safetensors");
    hv_disc *d = load_disc(ctx, "discriminator."), *copy = load_disc(ctx, "loss_fnc.disc_model_copy.");
    hv_tensor *x = pmae_images(ctx, 2, 1, 1.0f, 0.0f), *fake = pmae_images(ctx, 2, 2, 0.75f, 0.125f), *loss;
    hv_pmae_loss_parts parts;
    int i;
    CHECK_NOTNULL(io);
    if (!io || !d || !copy) goto done;
    hv_disc_set_trainable(d, 0);
    hv_disc_set_trainable(copy, 0);
    hv_set_trainable(fake, 1);
    loss = hv_pmae_generator_loss(d, copy, fake, x, NULL, &parts);
    CHECK_NOTNULL(loss);
    CHECK(tl_err_vs(loss, io, "gen.total", 1e-6) < 1e-5, "total error %.3g", tl_err_vs(loss, io, "gen.total", 1e-6));
    CHECK(tl_err_vs(parts.l1, io, "gen.l1", 1e-6) < 1e-5, "l1 error %.3g", tl_err_vs(parts.l1, io, "gen.l1", 1e-6));
    CHECK(tl_err_vs(parts.gan, io, "gen.gan", 1e-6) < 1e-5, "gan error %.3g", tl_err_vs(parts.gan, io, "gen.gan", 1e-6));
    CHECK(tl_err_vs(parts.perc, io, "gen.perc", 1e-6) < 1e-5, "perc error %.3g", tl_err_vs(parts.perc, io, "gen.perc", 1e-6));
    CHECK(tl_err_vs(parts.style, io, "gen.style", 1e-6) < 1e-5, "style error %.3g", tl_err_vs(parts.style, io, "gen.style", 1e-6));
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    CHECK(tl_err_vs(rows(hv_grad(fake)), io, "gen.grad_fake_rows", 1e-6) < 1e-4, "fake gradient error %.3g",
          tl_err_vs(rows(hv_grad(fake)), io, "gen.grad_fake_rows", 1e-6));
    for (i = 0; i < hv_disc_params(d)->count; i++)
        CHECK(!hv_grad(hv_disc_params(d)->tensors[i]) && !hv_grad(hv_disc_params(copy)->tensors[i]), "a frozen tensor got a gradient");
    /* weights: a negative one turns its term off */
    {
        hv_pmae_loss_desc only_l1;
        memset(&only_l1, 0, sizeof only_l1);
        only_l1.perc = only_l1.style = only_l1.gan = -1;
        loss = hv_pmae_generator_loss(d, copy, fake, x, &only_l1, NULL);
        CHECK(loss && fabsf(hv_item(loss) - 2 * hv_item(parts.l1)) <= 1e-6f * hv_item(loss), "l1 only: %g vs 2 x %g",
              loss ? hv_item(loss) : -1.0, hv_item(parts.l1));
    }
    CHECK_ERROR(hv_pmae_generator_loss(d, copy, hv_tensor_temp(ctx, HV_F32, HV_SHAPE(2, 3, 224, 112)), x, NULL, NULL), "hv_pmae_generator_loss",
                "fake (2, 3, 224, 112)");
done:
    hv_tensor_free(x);
    hv_tensor_free(fake);
    hv_disc_free(d);
    hv_disc_free(copy);
    hv_state_dict_free(io);
}

static void test_disc_step_matches_pytorch(hv_ctx *ctx) {
    hv_state_dict *io = hv_safetensors_load(ctx, PMAE "pmae_io.safetensors");
    hv_disc *d = load_disc(ctx, "discriminator.");
    hv_tensor *x = pmae_images(ctx, 2, 1, 1.0f, 0.0f), *fake = pmae_images(ctx, 2, 2, 0.75f, 0.125f), *loss;
    const hv_param_list *pl;
    char key[160];
    int i;
    CHECK_NOTNULL(io);
    if (!io || !d) goto done;
    pl = hv_disc_params(d);
    hv_set_trainable(fake, 1); /* detached inside: it must get no gradient */
    loss = hv_pmae_disc_loss(d, fake, x);
    CHECK(tl_err_vs(loss, io, "dstep.loss", 1e-6) < 1e-5, "loss error %.3g", tl_err_vs(loss, io, "dstep.loss", 1e-6));
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    CHECK(!hv_grad(fake), "the fake images got a gradient through the discriminator loss");
    for (i = 0; i < pl->count; i++) {
        if (!hv_requires_grad(pl->tensors[i])) continue;
        snprintf(key, sizeof key, "dstep.grad.%s", pl->names[i] + strlen("discriminator."));
        CHECK(tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6) < 1e-4, "%s: error %.3g", key, tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6));
    }
done:
    hv_tensor_free(x);
    hv_tensor_free(fake);
    hv_disc_free(d);
    hv_state_dict_free(io);
}

/* ---- the loss terms on small tensors: finite differences and the fixture -------------------- */

static hv_tensor *op_gram(hv_tensor **in, void *user) {
    (void)user;
    return hv_gram_matrix(in[0]);
}
static void ref_gram(const double *const *in, double *out, void *user) {
    const int64_t B = 2, C = 3, N = 20;
    int64_t b, i, j, k;
    (void)user;
    for (b = 0; b < B; b++)
        for (i = 0; i < C; i++)
            for (j = 0; j < C; j++) {
                double s = 0;
                for (k = 0; k < N; k++) s += in[0][(b * C + i) * N + k] * in[0][(b * C + j) * N + k];
                out[(b * C + i) * C + j] = s / (double)(C * N);
            }
}
/* 40 L1(gram a, gram b) + 0.05 L1(a, b): the style and perceptual terms of one feature map */
static hv_tensor *op_style(hv_tensor **in, void *user) {
    (void)user;
    return hv_add(hv_scale(hv_l1_loss(hv_gram_matrix(in[0]), hv_gram_matrix(in[1])), 40.0f), hv_scale(hv_l1_loss(in[0], in[1]), 0.05f));
}
static void ref_style(const double *const *in, double *out, void *user) {
    double ga[18], gb[18], s = 0, p = 0;
    int i;
    (void)user;
    ref_gram(in, ga, NULL);
    ref_gram(in + 1, gb, NULL);
    for (i = 0; i < 18; i++) s += fabs(ga[i] - gb[i]);
    for (i = 0; i < 120; i++) p += fabs(in[0][i] - in[1][i]);
    out[0] = 40.0 * s / 18 + 0.05 * p / 120;
}
static hv_tensor *op_lsgan_d(hv_tensor **in, void *user) {
    (void)user;
    return hv_lsgan_d_loss(in[0], in[1]);
}
static hv_tensor *op_lsgan_g(hv_tensor **in, void *user) {
    (void)user;
    return hv_lsgan_g_loss(in[0]);
}
static double mean5(const double *p) { return (p[0] + p[1] + p[2] + p[3] + p[4]) / 5; }
static void ref_lsgan_d(const double *const *in, double *out, void *user) {
    double a = mean5(in[0]) - 1, b = mean5(in[1]);
    (void)user;
    out[0] = 0.5 * (a * a + b * b);
}
static void ref_lsgan_g(const double *const *in, double *out, void *user) {
    double a = mean5(in[0]) - 1;
    (void)user;
    out[0] = 0.5 * a * a;
}

static void test_loss_terms(hv_ctx *ctx) {
    hv_state_dict *io = hv_safetensors_load(ctx, PMAE "pmae_io.safetensors");
    hv_tensor *a = hv_tensor_to(hv_state_dict_get(io, "gram.x"), ctx), *b = hv_tensor_to(hv_state_dict_get(io, "style.y"), ctx);
    hv_tensor *pr = hv_tensor_to(hv_state_dict_get(io, "lsgan.real"), ctx), *pf = hv_tensor_to(hv_state_dict_get(io, "lsgan.fake"), ctx);
    hv_tensor *out;
    CHECK_NOTNULL(io);
    if (!io || !a || !b || !pr || !pf) goto done;
    {
        tl_case c;
        memset(&c, 0, sizeof c);
        c.label = "gram";
        c.nin = 1;
        c.in[0] = a;
        c.grad_mask = 1;
        c.op = op_gram;
        c.ref = ref_gram;
        tl_check_op(&c);
        c.label = "style + perceptual";
        c.nin = 2;
        c.in[1] = b;
        c.grad_mask = 3;
        c.op = op_style;
        c.ref = ref_style;
        tl_check_op(&c);
        c.label = "lsgan d";
        c.in[0] = pr;
        c.in[1] = pf;
        c.op = op_lsgan_d;
        c.ref = ref_lsgan_d;
        tl_check_op(&c);
        c.label = "lsgan g";
        c.nin = 1;
        c.in[0] = pf;
        c.grad_mask = 1;
        c.op = op_lsgan_g;
        c.ref = ref_lsgan_g;
        tl_check_op(&c);
    }
    /* the same against PyTorch */
    hv_set_trainable(a, 1);
    out = hv_gram_matrix(a);
    CHECK(tl_err_vs(out, io, "gram.out", 1e-6) < 1e-6, "gram error %.3g", tl_err_vs(out, io, "gram.out", 1e-6));
    hv_backward(hv_sum(hv_mul(out, hv_state_dict_get(io, "gram.r")), 0, NULL, 0));
    CHECK(tl_err_vs(hv_grad(a), io, "gram.grad_x", 1e-6) < 1e-5, "gram grad error %.3g", tl_err_vs(hv_grad(a), io, "gram.grad_x", 1e-6));
    hv_zero_grad(a);
    out = op_style((hv_tensor *[]){a, b}, NULL);
    CHECK(tl_err_vs(out, io, "style.loss", 1e-6) < 1e-5, "style error %.3g", tl_err_vs(out, io, "style.loss", 1e-6));
    hv_backward(out);
    CHECK(tl_err_vs(hv_grad(a), io, "style.grad_x", 1e-6) < 1e-5, "style grad error %.3g", tl_err_vs(hv_grad(a), io, "style.grad_x", 1e-6));
    hv_set_trainable(pr, 1);
    hv_set_trainable(pf, 1);
    out = hv_lsgan_d_loss(pr, pf);
    CHECK(tl_err_vs(out, io, "lsgan.d", 1e-6) < 1e-6, "lsgan d error");
    hv_backward(out);
    CHECK(tl_err_vs(hv_grad(pr), io, "lsgan.d_grad_real", 1e-6) < 1e-5 && tl_err_vs(hv_grad(pf), io, "lsgan.d_grad_fake", 1e-6) < 1e-5,
          "lsgan d grads");
    hv_zero_grad(pf);
    out = hv_lsgan_g_loss(pf);
    CHECK(tl_err_vs(out, io, "lsgan.g", 1e-6) < 1e-6, "lsgan g error");
    hv_backward(out);
    CHECK(tl_err_vs(hv_grad(pf), io, "lsgan.g_grad_fake", 1e-6) < 1e-5, "lsgan g grad");
    CHECK_ERROR(hv_gram_matrix(pr), "hv_gram_matrix", "(B, C, H, W)");
done:
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_tensor_free(pr);
    hv_tensor_free(pf);
    hv_state_dict_free(io);
}

/* a generator + discriminator step pair, as pmae_train runs it, allocates nothing once warm */
static int pmae_step_pair(hv_ctx *ctx, hv_mae *mae, hv_disc *d, hv_disc *copy, hv_optim *og, hv_optim *od, hv_tensor *x) {
    hv_tensor *pred = NULL, *loss;
    int prev, rc = 0;
    hv_disc_set_trainable(d, 0);
    hv_mae_forward(mae, x, NULL, &pred, NULL);
    loss = hv_pmae_generator_loss(d, copy, hv_unpatchify(pred, 32, 3), x, NULL, NULL);
    hv_optim_zero_grad(og);
    rc |= hv_backward(loss) | hv_optim_step(og);
    hv_step_end(ctx);
    hv_disc_set_trainable(d, 1);
    prev = hv_set_grad_enabled(ctx, 0);
    hv_mae_forward(mae, x, NULL, &pred, NULL);
    hv_set_grad_enabled(ctx, prev);
    loss = hv_pmae_disc_loss(d, hv_unpatchify(pred, 32, 3), x);
    hv_optim_zero_grad(od);
    rc |= hv_backward(loss) | hv_optim_step(od);
    hv_step_end(ctx);
    return rc;
}
static void test_step_pair_allocates_nothing(hv_ctx *ctx) {
    hv_mae_desc md;
    hv_mae *mae;
    hv_disc *d = hv_disc_new(ctx, &(hv_disc_desc){.ndf = NDF}), *copy = hv_disc_new(ctx, &(hv_disc_desc){.ndf = NDF});
    hv_optim *og, *od;
    hv_tensor *x = pmae_images(ctx, 2, 1, 1.0f, 0.0f);
    uint64_t before;
    int i;
    memset(&md, 0, sizeof md);
    md.encoder.img_size = 224;
    md.encoder.patch_size = 32;
    md.encoder.embed_dim = 32;
    md.encoder.depth = 1;
    md.encoder.num_heads = 2;
    md.decoder_embed_dim = 16;
    md.decoder_depth = 1;
    md.decoder_num_heads = 2;
    mae = hv_mae_new(ctx, &md);
    CHECK_NOTNULL(mae);
    if (!mae || !d || !copy) return;
    hv_disc_set_trainable(copy, 0);
    og = hv_optim_new(ctx, hv_mae_params(mae), &(hv_optim_desc){.type = HV_OPTIM_ADAM, .lr = 1.5e-4f, .beta2 = 0.95f});
    od = hv_optim_new(ctx, hv_disc_params(d), &(hv_optim_desc){.type = HV_OPTIM_ADAM, .lr = 1.5e-4f, .beta2 = 0.95f});
    for (i = 0; i < 3; i++) CHECK(pmae_step_pair(ctx, mae, d, copy, og, od, x) == 0, "warm-up step: %s", hv_last_error());
    before = hv_alloc_count();
    CHECK(hv_disc_copy(copy, d) == 0 && pmae_step_pair(ctx, mae, d, copy, og, od, x) == 0, "step: %s", hv_last_error());
    CHECK(hv_alloc_count() == before, "a warm step pair allocated %llu times", (unsigned long long)(hv_alloc_count() - before));
    hv_optim_free(og);
    hv_optim_free(od);
    hv_mae_free(mae);
    hv_disc_free(d);
    hv_disc_free(copy);
    hv_tensor_free(x);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    TL_RUN(ctx, test_disc_layout_and_errors);
    TL_RUN(ctx, test_disc_matches_pytorch);
    TL_RUN(ctx, test_disc_features_and_copy);
    TL_RUN(ctx, test_generator_loss_matches_pytorch);
    TL_RUN(ctx, test_disc_step_matches_pytorch);
    TL_RUN(ctx, test_loss_terms);
    TL_RUN(ctx, test_step_pair_allocates_nothing);
    hv_shutdown(ctx);
    TL_DONE();
}
