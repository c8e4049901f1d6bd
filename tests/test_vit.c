/* test_vit.c - ViT and MAE against PyTorch (tests/make_model_fixtures.py), the position tables,
   checkpoint loading into models, model ids, and the real-size ViT-S/14 parity (when torch is
   installed; skipped with a note otherwise). */
#include "testlib.h"
#include "tiny_vit.h"

#define MODELS "tests/fixtures/models/"

static hv_mae_desc tiny_mae_desc(void) {
    hv_mae_desc d;
    memset(&d, 0, sizeof d);
    d.encoder = tiny_vit_desc(2, 0, 0);
    d.decoder_embed_dim = 16;
    d.decoder_depth = 1;
    d.decoder_num_heads = 2;
    d.mask_ratio = 0.75f;
    return d;
}

static void test_sincos_and_interpolation(hv_ctx *ctx) {
    hv_state_dict *t = hv_safetensors_load(ctx, MODELS "tables.safetensors");
    hv_tensor *a = hv_tensor_new(ctx, HV_F32, HV_SHAPE(1 + 49, 64)), *b = hv_tensor_new(ctx, HV_F32, HV_SHAPE(1 + 256, 384));
    CHECK_NOTNULL(t);
    if (!t) return;
    CHECK(hv_sincos_pos_embed(a, 7, 64) == 0 && hv_sincos_pos_embed(b, 16, 384) == 0, "%s", hv_last_error());
    CHECK(tl_err_vs(a, t, "sincos_g7_d64", 1e-6) < 1e-6, "sin-cos 7x7x64 differs from upstream");
    CHECK(tl_err_vs(b, t, "sincos_g16_d384", 1e-6) < 1e-6, "sin-cos 16x16x384 differs from upstream");
    {
        hv_tensor *in = hv_state_dict_get(t, "interp_in"), *up = hv_pos_embed_interpolate(in, 8), *down = hv_pos_embed_interpolate(in, 3);
        CHECK(tl_err_vs(up, t, "interp_g8", 1e-6) < 1e-5, "bicubic pos-embed 5->8: %g", tl_err_vs(up, t, "interp_g8", 1e-6));
        CHECK(tl_err_vs(down, t, "interp_g3", 1e-6) < 1e-5, "bicubic pos-embed 5->3: %g", tl_err_vs(down, t, "interp_g3", 1e-6));
        hv_tensor_free(up);
        hv_tensor_free(down);
    }
    CHECK(hv_sincos_pos_embed(a, 7, 62) != 0 && strstr(hv_last_error(), "multiple of 4"), "dim 62: %s", hv_last_error());
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_state_dict_free(t);
}

static void test_mae_matches_pytorch(hv_ctx *ctx) {
    hv_mae_desc d = tiny_mae_desc();
    hv_mae *mae = hv_mae_new(ctx, &d);
    hv_state_dict *io = hv_safetensors_load(ctx, MODELS "mae_tiny_io.safetensors");
    hv_load_result res;
    const hv_param_list *pl;
    hv_tensor *loss, *pred, *mask;
    int i;
    double worst = 0;
    CHECK_NOTNULL(mae);
    CHECK_NOTNULL(io);
    if (!mae || !io) return;
    pl = hv_mae_params(mae);
    CHECK(hv_params_load_file(pl, MODELS "mae_tiny.pth", NULL, &res) == 0, "load: %s", hv_last_error());
    CHECK(res.missing_count == 0 && res.unexpected_count == 0, "%d missing, %d unexpected keys", res.missing_count, res.unexpected_count);
    loss = hv_mae_forward(mae, hv_state_dict_get(io, "images"), hv_state_dict_get(io, "noise"), &pred, &mask);
    CHECK_NOTNULL(loss);
    if (!loss) return;
    CHECK(tl_err_vs(loss, io, "loss", 1e-6) < 1e-5, "loss %.7g vs PyTorch: %g", hv_item(loss), tl_err_vs(loss, io, "loss", 1e-6));
    CHECK(tl_err_vs(pred, io, "pred", 1e-6) < 1e-4, "pred: %g", tl_err_vs(pred, io, "pred", 1e-6));
    CHECK(tl_err_vs(mask, io, "mask", 1e-6) == 0, "mask differs");
    CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
    for (i = 0; i < pl->count; i++) {
        char key[160];
        double e;
        if (!hv_requires_grad(pl->tensors[i])) continue;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        e = tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6);
        if (e > worst) worst = e;
        CHECK(e <= 1e-3, "%s: %g", key, e);
    }
    /* the backward releases the model's internal activations; what it handed out stays */
    CHECK(tl_err_vs(pred, io, "pred", 1e-6) < 1e-4, "pred after the backward: %g", tl_err_vs(pred, io, "pred", 1e-6));
    CHECK(tl_err_vs(mask, io, "mask", 1e-6) == 0, "mask differs after the backward");
    printf("  MAE tiny: loss %.7g, worst parameter-gradient error %.2g\n", hv_item(loss), worst);
    hv_step_end(ctx);
    /* norm_pix_loss on the same weights and mask */
    {
        hv_mae *np;
        d.norm_pix_loss = 1;
        np = hv_mae_new(ctx, &d);
        CHECK(hv_params_load_file(hv_mae_params(np), MODELS "mae_tiny.pth", NULL, NULL) == 0, "load: %s", hv_last_error());
        loss = hv_mae_forward(np, hv_state_dict_get(io, "images"), hv_state_dict_get(io, "noise"), NULL, NULL);
        CHECK(tl_err_vs(loss, io, "loss_norm_pix", 1e-6) < 1e-5, "norm_pix loss: %g", tl_err_vs(loss, io, "loss_norm_pix", 1e-6));
        hv_mae_free(np);
    }
    hv_load_result_free(&res);
    hv_state_dict_free(io);
    hv_mae_free(mae);
}

static void test_vit_finetuned_matches_pytorch(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_state_dict *io = hv_safetensors_load(ctx, MODELS "vit_tiny_ft_io.safetensors");
    const hv_param_list *pl;
    hv_tensor *logits, *feat;
    double gscale = 0, worst = 0;
    int i;
    d = tiny_vit_desc(2, 5, 0);
    vit = hv_vit_new(ctx, &d);
    CHECK_NOTNULL(vit);
    CHECK_NOTNULL(io);
    if (!vit || !io) return;
    pl = hv_vit_params(vit);
    CHECK(hv_params_load_file(pl, MODELS "vit_tiny_ft.pth", NULL, NULL) == 0, "load: %s", hv_last_error());
    hv_set_grad_enabled(ctx, 0);
    logits = hv_vit_forward(vit, hv_state_dict_get(io, "images"), 0);
    CHECK(tl_err_vs(logits, io, "logits_eval", 1e-6) < 1e-4, "eval logits: %g", tl_err_vs(logits, io, "logits_eval", 1e-6));
    {
        hv_vit_desc fd = d;
        hv_vit *trunk;
        hv_load_result res;
        fd.num_classes = 0;
        trunk = hv_vit_new(ctx, &fd);
        /* the finetuned file loaded into a headless model: the head keys are unexpected */
        CHECK(hv_params_load_file(hv_vit_params(trunk), MODELS "vit_tiny_ft.pth", NULL, &res) == 0, "%s", hv_last_error());
        CHECK(res.unexpected_count == 5 && res.missing_count == 0, "%d unexpected (want the 5 head.* keys), %d missing", res.unexpected_count,
              res.missing_count);
        feat = hv_vit_forward(trunk, hv_state_dict_get(io, "images"), 0);
        CHECK(tl_err_vs(feat, io, "features", 1e-6) < 1e-4, "features: %g", tl_err_vs(feat, io, "features", 1e-6));
        hv_load_result_free(&res);
        hv_vit_free(trunk);
    }
    hv_set_grad_enabled(ctx, 1);
    hv_step_end(ctx);
    /* training mode: batch statistics in the head, running statistics updated, gradients */
    logits = hv_vit_forward(vit, hv_state_dict_get(io, "images"), 1);
    CHECK(tl_err_vs(logits, io, "logits_train", 1e-6) < 1e-4, "train logits: %g", tl_err_vs(logits, io, "logits_train", 1e-6));
    CHECK(hv_backward(hv_sum(hv_mul(logits, hv_state_dict_get(io, "r")), 0, NULL, 0)) == 0, "%s", hv_last_error());
    /* the gradients of the final norm are ~0 (the head's batch norm cancels shifts): compare each
       gradient relative to the largest gradient of the model, not to its own near-zero size */
    for (i = 0; i < pl->count; i++) {
        char key[160];
        hv_tensor *r;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        if ((r = hv_state_dict_get(io, key)) != NULL) {
            hv_set_grad_enabled(ctx, 0);
            {
                float m = hv_item(hv_max(hv_mul(r, r), 0, NULL, 0));
                if (m > gscale) gscale = m;
            }
            hv_set_grad_enabled(ctx, 1);
        }
    }
    gscale = sqrt(gscale);
    for (i = 0; i < pl->count; i++) {
        char key[160];
        double e;
        if (!hv_requires_grad(pl->tensors[i])) continue;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        e = tl_err_vs(hv_grad(pl->tensors[i]), io, key, gscale);
        if (e > worst) worst = e;
        CHECK(e <= 1e-4, "%s: %g", key, e);
    }
    CHECK(tl_err_vs(pl->tensors[pl->count - 5], io, "running_mean_after", 1e-6) < 1e-5, "running mean after a training step");
    CHECK(tl_err_vs(pl->tensors[pl->count - 4], io, "running_var_after", 1e-6) < 1e-5, "running var after a training step");
    printf("  ViT tiny finetuned: worst gradient error %.2g (relative to the largest gradient)\n", worst);
    hv_state_dict_free(io);
    hv_vit_free(vit);
}

static void test_vit_global_pool_matches_pytorch(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_state_dict *io = hv_safetensors_load(ctx, MODELS "vit_tiny_gp_io.safetensors");
    const hv_param_list *pl;
    hv_load_result res;
    hv_tensor *feat;
    int i;
    d = tiny_vit_desc(1, 0, 1);
    vit = hv_vit_new(ctx, &d);
    CHECK_NOTNULL(vit);
    CHECK_NOTNULL(io);
    if (!vit || !io) return;
    pl = hv_vit_params(vit);
    CHECK(hv_params_load_file(pl, MODELS "vit_tiny_gp.pth", NULL, &res) == 0, "load: %s", hv_last_error());
    CHECK(res.missing_count == 0 && res.unexpected_count == 0, "%d missing, %d unexpected (fc_norm naming?)", res.missing_count,
          res.unexpected_count);
    feat = hv_vit_forward(vit, hv_state_dict_get(io, "images"), 1);
    CHECK(tl_err_vs(feat, io, "features", 1e-6) < 1e-4, "global-pool features: %g", tl_err_vs(feat, io, "features", 1e-6));
    CHECK(hv_backward(hv_sum(hv_mul(feat, hv_state_dict_get(io, "r")), 0, NULL, 0)) == 0, "%s", hv_last_error());
    for (i = 0; i < pl->count; i++) {
        char key[160];
        if (!hv_requires_grad(pl->tensors[i])) continue;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        CHECK(tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6) <= 1e-4, "%s: %g", key, tl_err_vs(hv_grad(pl->tensors[i]), io, key, 1e-6));
    }
    hv_load_result_free(&res);
    hv_state_dict_free(io);
    hv_vit_free(vit);
}

static void test_load_errors(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_state_dict *sd;
    hv_tensor *bad;
    d = tiny_vit_desc(2, 0, 0);
    vit = hv_vit_new(ctx, &d);
    sd = hv_state_dict_new(ctx);
    bad = hv_zeros(ctx, HV_SHAPE(1, 17, 16));
    hv_state_dict_add(sd, "pos_embed", bad);
    CHECK(hv_params_load(hv_vit_params(vit), sd, NULL) == -1, "shape mismatch accepted");
    CHECK(strstr(hv_last_error(), "pos_embed") && strstr(hv_last_error(), "(1, 17, 16)") && strstr(hv_last_error(), "(1, 17, 32)"),
          "message: %s", hv_last_error());
    CHECK(hv_params_load_file(hv_vit_params(vit), "tests/fixtures/models/nope.pth", NULL, NULL) == -1 && strstr(hv_last_error(), "nope.pth"),
          "missing file: %s", hv_last_error());
    hv_state_dict_free(sd);
    hv_tensor_free(bad);
    hv_vit_free(vit);
    d.embed_dim = 30;
    CHECK(hv_vit_new(ctx, &d) == NULL && strstr(hv_last_error(), "dim 30"), "bad dims: %s", hv_last_error());
    {
        hv_vit_desc s;
        hv_vit *v;
        s = tiny_vit_desc(1, 0, 0);
        v = hv_vit_new(ctx, &s);
        CHECK_ERROR(hv_vit_forward(v, hv_tensor_temp(ctx, HV_F32, HV_SHAPE(1, 3, 32, 32)), 0), "hv_vit_forward", "(1, 3, 32, 32)", "28");
        hv_vit_free(v);
    }
}

static void test_model_ids(hv_ctx *ctx) {
    hv_model_id id;
    char path[512];
    (void)ctx;
    CHECK(hv_model_id_parse("vith14@476_1.0_1", &id) == 0 && id.preset == HV_VIT_H14_476 && id.seed == 1 && !strcmp(id.fraction, "1.0"),
          "parse: %s", hv_last_error());
    CHECK(hv_model_id_parse("vits14_0.01_3", &id) == 0 && id.preset == HV_VIT_S14 && id.seed == 3, "parse 2");
    CHECK(hv_model_id_parse("vitx14_1.0_1", &id) == -1 && strstr(hv_last_error(), "vitx14"), "bad arch: %s", hv_last_error());
    CHECK(hv_model_id_parse("vits14_0.5_1", &id) == -1 && strstr(hv_last_error(), "0.5"), "bad fraction");
    CHECK(hv_model_id_parse("vits14_1.0_2", &id) == -1 && strstr(hv_last_error(), "seed"), "seed 2 with fraction 1.0");
    CHECK(hv_model_id_parse("vits14", &id) == -1, "no fraction");
    /* resolution: a models directory laid out as the hub repository */
    CHECK(hv_model_resolve("vits14_0.1_2", 1, "tests/fixtures/models/no-such-dir", path, sizeof path) == -1, "absent file found");
    CHECK(strstr(hv_last_error(), "finetuned_vits14/vits14_0.1_2.pth") && strstr(hv_last_error(), "huggingface.co/eminorhan/humanlike-vits"),
          "message should say what to download and from where: %s", hv_last_error());
    {
        FILE *f;
        int rc;
        rc = system("mkdir -p build/test_models/vith14@448");
        f = fopen("build/test_models/vith14@448/vith14@448_0.001_2.pth", "wb");
        CHECK(rc == 0 && f, "cannot make the fake models directory");
        if (f) fclose(f);
        CHECK(hv_model_resolve("vith14@448_0.001_2", 0, "build/test_models", path, sizeof path) == 0 &&
                  !strcmp(path, "build/test_models/vith14@448/vith14@448_0.001_2.pth"),
              "resolve: %s", hv_last_error());
    }
}

/* ViT-S/14 at 224 against PyTorch: the file is made at test time when torch is there */
static void test_vits14_real_size(hv_ctx *ctx) {
    hv_vit_desc d;
    hv_vit *vit;
    hv_state_dict *io;
    hv_tensor *feat;
    if (system("python3 -c 'import torch, safetensors' >/dev/null 2>&1") != 0) {
        printf("  SKIP real-size ViT-S/14 parity: PyTorch is not installed (pip install torch safetensors to run it)\n");
        return;
    }
    CHECK(system("python3 tests/make_model_fixtures.py --vits14 build/vits14 >/dev/null") == 0, "make_model_fixtures.py --vits14 failed");
    memset(&d, 0, sizeof d);
    d.preset = HV_VIT_S14;
    vit = hv_vit_new(ctx, &d);
    io = hv_safetensors_load(ctx, "build/vits14/vits14_io.safetensors");
    CHECK_NOTNULL(io);
    if (!io) return;
    CHECK(hv_params_load_file(hv_vit_params(vit), "build/vits14/vits14.pth", NULL, NULL) == 0, "%s", hv_last_error());
    hv_set_grad_enabled(ctx, 0);
    feat = hv_vit_forward(vit, hv_state_dict_get(io, "images"), 0);
    CHECK(tl_err_vs(feat, io, "features", 1e-6) < 1e-4, "ViT-S/14 features: %g", tl_err_vs(feat, io, "features", 1e-6));
    printf("  ViT-S/14 at 224: CLS feature error %.2g vs PyTorch\n", tl_err_vs(feat, io, "features", 1e-6));
    hv_set_grad_enabled(ctx, 1);
    hv_state_dict_free(io);
    hv_vit_free(vit);
}

/* The backward gives the memory of dead gradients and of the model's internal activations back
   for reuse (hv__store in humanvit.h): a training step then needs little arena beyond its forward.
   Without the reuse the backward adds about as much again as the forward (1.4x here). */
static void test_training_memory(hv_ctx *ctx) {
    hv_vit_desc d = tiny_vit_desc(4, 5, 0);
    hv_vit *vit = hv_vit_new(ctx, &d);
    hv_tensor *images = hv_randn(ctx, HV_SHAPE(16, 3, 28, 28), 0, 1), *labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(16));
    float before[16 * 5], after[16 * 5];
    size_t fwd[2] = {0, 0}, bwd[2] = {0, 0};
    int i, step;
    CHECK_NOTNULL(vit);
    CHECK_NOTNULL(labels);
    if (!vit || !labels) return;
    for (i = 0; i < 16; i++) hv_data_i32(labels)[i] = i % 5;
    for (step = 0; step < 2; step++) {
        hv_tensor *logits = hv_vit_forward(vit, images, 1), *loss = hv_cross_entropy(logits, labels);
        CHECK_NOTNULL(loss);
        if (!loss) break;
        fwd[step] = hv_arena_used(ctx);
        hv_tensor_copy_to(logits, before, sizeof before);
        CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
        bwd[step] = hv_arena_used(ctx);
        hv_tensor_copy_to(logits, after, sizeof after); /* handed out: still readable */
        CHECK(memcmp(before, after, sizeof before) == 0, "the logits changed during the backward");
        hv_step_end(ctx);
    }
    printf("  arena: %.0f KiB after the forward, %.0f KiB after the backward\n", fwd[1] / 1024.0, bwd[1] / 1024.0);
    CHECK(bwd[1] - fwd[1] < fwd[1] / 3, "the backward grew the arena from %zu to %zu bytes", fwd[1], bwd[1]);
    CHECK(fwd[0] == fwd[1] && bwd[0] == bwd[1], "steps differ: %zu/%zu then %zu/%zu bytes", fwd[0], bwd[0], fwd[1], bwd[1]);
    hv_vit_free(vit);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    TL_RUN(ctx, test_sincos_and_interpolation);
    TL_RUN(ctx, test_mae_matches_pytorch);
    TL_RUN(ctx, test_vit_finetuned_matches_pytorch);
    TL_RUN(ctx, test_vit_global_pool_matches_pytorch);
    TL_RUN(ctx, test_training_memory);
    TL_RUN(ctx, test_load_errors);
    TL_RUN(ctx, test_model_ids);
    TL_RUN(ctx, test_vits14_real_size);
    hv_shutdown(ctx);
    TL_DONE();
}
