/* test_resnext.c - the ResNeXt model against PyTorch (tests/make_resnext_fixtures.py: a tiny
   torchvision-layout ResNeXt), loading torchvision and train_tc.py checkpoints, bad inputs, the
   parameter counts of the full presets, and the memory of a training step. */
#include "testlib.h"

#define MODELS "tests/fixtures/models/"

/* the tiny model of the fixtures: stages [1, 2, 1, 1], 4 groups of width 16, base planes 4 */
static hv_resnext_desc tiny_desc(int num_classes) {
    hv_resnext_desc d;
    memset(&d, 0, sizeof d);
    d.depths[0] = 1;
    d.depths[1] = 2;
    d.depths[2] = 1;
    d.depths[3] = 1;
    d.groups = 4;
    d.width_per_group = 16;
    d.base_planes = 4;
    d.num_classes = num_classes;
    return d;
}

static int64_t trainable_count(const hv_param_list *pl) {
    int64_t n = 0;
    int i;
    for (i = 0; i < pl->count; i++)
        if (hv_requires_grad(pl->tensors[i])) n += hv_numel(pl->tensors[i]);
    return n;
}

static int param_index(const hv_param_list *pl, const char *name) {
    int i;
    for (i = 0; i < pl->count; i++)
        if (!strcmp(pl->names[i], name)) return i;
    return -1;
}

static void test_resnext_matches_pytorch(hv_ctx *ctx) {
    hv_resnext_desc d = tiny_desc(5);
    hv_resnext *r = hv_resnext_new(ctx, &d);
    hv_state_dict *io = hv_safetensors_load(ctx, MODELS "resnext_tiny_io.safetensors");
    const hv_param_list *pl;
    hv_load_result res;
    hv_tensor *images, *logits, *loss;
    double gscale = 0, worst = 0, e;
    int i, nstats = 0;
    CHECK_NOTNULL(r);
    CHECK_NOTNULL(io);
    if (!r || !io) return;
    pl = hv_resnext_params(r);
    images = hv_state_dict_get(io, "images");
    CHECK(hv_params_load_file(pl, MODELS "resnext_tiny.pth", NULL, &res) == 0, "load: %s", hv_last_error());
    CHECK(res.loaded == pl->count && res.missing_count == 0 && res.unexpected_count == 0, "loaded %d of %d, %d missing, %d unexpected",
          res.loaded, pl->count, res.missing_count, res.unexpected_count);
    hv_load_result_free(&res);

    /* eval mode, no tape: running statistics, each layer's temporaries freed as it ends */
    hv_set_grad_enabled(ctx, 0);
    logits = hv_resnext_forward(r, images, 0);
    e = tl_err_vs(logits, io, "logits_eval", 1e-6);
    CHECK(e < 1e-5, "eval logits: %g", e);
    {
        /* the same file into a model without fc: the pooled features; fc.* are unexpected */
        hv_resnext_desc fd = tiny_desc(0);
        hv_resnext *trunk = hv_resnext_new(ctx, &fd);
        CHECK_NOTNULL(trunk);
        if (trunk) {
            CHECK(hv_params_load_file(hv_resnext_params(trunk), MODELS "resnext_tiny.pth", NULL, &res) == 0, "%s", hv_last_error());
            CHECK(res.unexpected_count == 2 && res.missing_count == 0, "%d unexpected (want fc.weight, fc.bias), %d missing",
                  res.unexpected_count, res.missing_count);
            hv_load_result_free(&res);
            e = tl_err_vs(hv_resnext_forward(trunk, images, 0), io, "features_eval", 1e-6);
            CHECK(e < 1e-5, "eval features: %g", e);
            CHECK(hv_resnext_num_features(trunk) == 128, "features %d, want 128", hv_resnext_num_features(trunk));
            hv_resnext_free(trunk);
        }
    }
    hv_set_grad_enabled(ctx, 1);
    hv_step_end(ctx);

    /* training mode: batch statistics, running statistics updated, gradients of the loss */
    logits = hv_resnext_forward(r, images, 1);
    e = tl_err_vs(logits, io, "logits_train", 1e-6);
    CHECK(e < 1e-5, "train logits: %g", e);
    loss = hv_cross_entropy(logits, hv_state_dict_get(io, "labels"));
    e = tl_err_vs(loss, io, "loss_train", 1e-6);
    CHECK(e < 1e-5, "train loss: %g", e);
    CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
    /* every gradient relative to the largest gradient of the model (some are near zero) */
    for (i = 0; i < pl->count; i++) {
        char key[160];
        hv_tensor *g;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        if ((g = hv_state_dict_get(io, key)) != NULL) {
            double *v = tl_to_double(g);
            int64_t j;
            for (j = 0; j < hv_numel(g); j++)
                if (fabs(v[j]) > gscale) gscale = fabs(v[j]);
            free(v);
        }
    }
    for (i = 0; i < pl->count; i++) {
        char key[160];
        if (!hv_requires_grad(pl->tensors[i])) continue;
        snprintf(key, sizeof key, "grad.%s", pl->names[i]);
        e = tl_err_vs(hv_grad(pl->tensors[i]), io, key, gscale);
        if (e > worst) worst = e;
        CHECK(e <= 5e-5, "%s: %g", key, e);
    }
    for (i = 0; i < pl->count; i++) {
        char key[160];
        if (strstr(pl->names[i], "running_")) {
            snprintf(key, sizeof key, "after.%s", pl->names[i]);
            e = tl_err_vs(pl->tensors[i], io, key, 1e-6);
            CHECK(e < 1e-5, "%s after a training forward: %g", pl->names[i], e);
            nstats++;
        } else if (strstr(pl->names[i], "num_batches_tracked")) {
            int32_t count = -1;
            hv_tensor_copy_to(pl->tensors[i], &count, sizeof count);
            CHECK(count == 4, "%s = %d after one training forward, want 3 + 1", pl->names[i], (int)count);
        }
    }
    /* stem + 5 blocks x 3 + 4 downsamples = 20 BatchNorms */
    CHECK(nstats == 2 * 20, "%d running statistics, want 40", nstats);
    printf("  tiny ResNeXt: worst gradient error %.2g (relative to the largest gradient)\n", worst);
    hv_state_dict_free(io);
    hv_resnext_free(r);
}

/* a train_tc.py checkpoint: {'model_state_dict': {'module.conv1.weight': ...}, 'optimizer_state_dict',
   'acc1_list'}; the entry is found and the DataParallel prefix stripped without being asked */
static void test_resnext_tc_checkpoint(hv_ctx *ctx) {
    hv_resnext_desc d = tiny_desc(5);
    hv_resnext *r = hv_resnext_new(ctx, &d);
    hv_state_dict *io = hv_safetensors_load(ctx, MODELS "resnext_tiny_io.safetensors");
    hv_load_result res;
    double e;
    CHECK_NOTNULL(r);
    CHECK_NOTNULL(io);
    if (!r || !io) return;
    CHECK(hv_params_load_file(hv_resnext_params(r), MODELS "resnext_tiny_tc.tar", NULL, &res) == 0, "load: %s", hv_last_error());
    CHECK(res.loaded == hv_resnext_params(r)->count && res.missing_count == 0 && res.unexpected_count == 0,
          "loaded %d of %d, %d missing, %d unexpected", res.loaded, hv_resnext_params(r)->count, res.missing_count, res.unexpected_count);
    hv_load_result_free(&res);
    CHECK(hv_params_load_file(hv_resnext_params(r), MODELS "resnext_tiny_tc.tar", "model_state_dict", NULL) == 0, "by name: %s",
          hv_last_error());
    e = tl_err_vs(hv_resnext_forward(r, hv_state_dict_get(io, "images"), 0), io, "logits_eval_tc", 1e-6);
    CHECK(e < 1e-5, "eval logits with the .tar's weights: %g", e);
    hv_state_dict_free(io);
    hv_resnext_free(r);
}

static void test_resnext_bad_inputs(hv_ctx *ctx) {
    hv_resnext_desc d = tiny_desc(5);
    hv_resnext *r = hv_resnext_new(ctx, &d);
    hv_tensor *gray = hv_zeros(ctx, HV_SHAPE(2, 1, 48, 48)), *tiny = hv_randn(ctx, HV_SHAPE(1, 3, 16, 16), 0, 1);
    hv_tensor *flat = hv_zeros(ctx, HV_SHAPE(2, 3 * 48 * 48)), *out;
    CHECK_NOTNULL(r);
    if (!r) return;
    CHECK_ERROR(hv_resnext_forward(r, gray, 0), "hv_resnext_forward", "(2, 1, 48, 48)", "3-channel");
    CHECK_ERROR(hv_resnext_forward(r, flat, 0), "hv_resnext_forward", "(B, 3, H, W)");
    CHECK(hv_resnext_forward(r, NULL, 0) == NULL, "a NULL input gives NULL (keeping the first error, as every op)");
    CHECK_ERROR(hv_resnext_forward(NULL, tiny, 0), "NULL");
    /* one 16 x 16 image: layer4's map is 1 x 1, one value per channel for a training BatchNorm */
    CHECK_ERROR(hv_resnext_forward(r, tiny, 1), "too small", "(1, 3, 16, 16)", "1 x 1");
    out = hv_resnext_forward(r, tiny, 0); /* eval has no such limit, as PyTorch */
    CHECK(out && hv_dim(out, 0) == 1 && hv_dim(out, 1) == 5, "eval of a 16 x 16 image: %s", hv_last_error());
    hv_step_end(ctx);
    {
        /* a checkpoint of another shape: the error names the key; nothing crashes */
        hv_resnext_desc wd = tiny_desc(7);
        hv_resnext *wrong = hv_resnext_new(ctx, &wd);
        hv_resnext_desc gd = tiny_desc(5);
        hv_resnext *regrouped;
        gd.groups = 2;
        gd.width_per_group = 32; /* the same widths, other groups: conv2 weights (w, w/2, 3, 3) */
        regrouped = hv_resnext_new(ctx, &gd);
        CHECK_NOTNULL(wrong);
        CHECK_NOTNULL(regrouped);
        if (wrong) {
            hv_clear_error();
            CHECK(hv_params_load_file(hv_resnext_params(wrong), MODELS "resnext_tiny.pth", NULL, NULL) == -1, "loaded a 5-class file into 7 classes");
            CHECK(strstr(hv_last_error(), "'fc.weight'") && strstr(hv_last_error(), "(5, 128)") && strstr(hv_last_error(), "(7, 128)"),
                  "error: %s", hv_last_error());
            hv_resnext_free(wrong);
        }
        if (regrouped) {
            hv_clear_error();
            CHECK(hv_params_load_file(hv_resnext_params(regrouped), MODELS "resnext_tiny_tc.tar", NULL, NULL) == -1, "loaded 4 groups into 2");
            CHECK(strstr(hv_last_error(), "'layer1.0.conv2.weight'") != NULL, "error: %s", hv_last_error());
            hv_resnext_free(regrouped);
        }
    }
    {
        /* descriptors that cannot make a model */
        hv_resnext_desc bad = tiny_desc(5);
        bad.depths[3] = 0;
        CHECK_ERROR(hv_resnext_new(ctx, &bad), "hv_resnext_new", "depths");
        bad = tiny_desc(5);
        bad.width_per_group = 8; /* int(4 * 8 / 64) = 0 channels per group */
        CHECK_ERROR(hv_resnext_new(ctx, &bad), "hv_resnext_new", "0 channels");
        bad = tiny_desc(5);
        bad.preset = (hv_resnext_preset)7;
        CHECK_ERROR(hv_resnext_new(ctx, &bad), "unknown preset");
        CHECK_ERROR(hv_resnext_new(NULL, NULL), "ctx");
        memset(&bad, 0, sizeof bad); /* custom without depths */
        CHECK_ERROR(hv_resnext_new(ctx, &bad), "depths");
    }
    hv_tensor_free(gray);
    hv_tensor_free(tiny);
    hv_tensor_free(flat);
    hv_resnext_free(r);
}

/* torchvision's published sizes, counted over the built models (nothing runs) */
static void test_resnext_presets(hv_ctx *ctx) {
    static const struct {
        const char *name;
        hv_resnext_preset preset;
        int64_t params;
        int conv2_width, blocks;
    } cases[] = {
        {"resnext50_32x4d", HV_RESNEXT50_32X4D, 25028904, 1024, 16},
        {"resnext101_32x8d", HV_RESNEXT101_32X8D, 88791336, 2048, 33},
    };
    int c;
    for (c = 0; c < 2; c++) {
        hv_resnext_desc d;
        hv_resnext *r;
        const hv_param_list *pl;
        int i;
        memset(&d, 0, sizeof d);
        d.preset = hv_resnext_preset_from_name(cases[c].name);
        CHECK(d.preset == cases[c].preset, "%s: preset %d", cases[c].name, (int)d.preset);
        d.num_classes = 1000;
        r = hv_resnext_new(ctx, &d);
        CHECK_NOTNULL(r);
        if (!r) continue;
        pl = hv_resnext_params(r);
        CHECK(trainable_count(pl) == cases[c].params, "%s: %lld parameters, torchvision has %lld", cases[c].name,
              (long long)trainable_count(pl), (long long)cases[c].params);
        CHECK(hv_resnext_num_features(r) == 2048, "%s: %d features", cases[c].name, hv_resnext_num_features(r));
        CHECK(!strcmp(pl->names[0], "conv1.weight") && !strcmp(pl->names[pl->count - 1], "fc.bias"), "%s: first %s, last %s", cases[c].name,
              pl->names[0], pl->names[pl->count - 1]);
        i = param_index(pl, "layer4.0.conv2.weight");
        CHECK(i >= 0 && hv_dim(pl->tensors[i], 0) == cases[c].conv2_width && hv_dim(pl->tensors[i], 1) == cases[c].conv2_width / 32,
              "%s: layer4.0.conv2.weight missing or misshaped", cases[c].name);
        CHECK(param_index(pl, "layer3.0.downsample.1.num_batches_tracked") >= 0 && param_index(pl, "layer3.1.downsample.0.weight") < 0,
              "%s: downsample only on each stage's first block", cases[c].name);
        {
            hv_resnext_desc got = hv_resnext_config(r);
            CHECK(got.depths[0] + got.depths[1] + got.depths[2] + got.depths[3] == cases[c].blocks && got.groups == 32 &&
                      got.base_planes == 64 && got.in_chans == 3 && got.bn_eps == 1e-5f && got.bn_momentum == 0.1f,
                  "%s: resolved config", cases[c].name);
        }
        if (c == 0) { /* torchvision's init: BN (1, 0), kaiming_normal fan_out for convs */
            hv_tensor *w = pl->tensors[param_index(pl, "layer1.0.conv3.weight")];
            double s2 = 0;
            int64_t j, n = hv_numel(w);
            for (j = 0; j < n; j++) s2 += (double)hv_data(w)[j] * hv_data(w)[j];
            /* std sqrt(2 / fan_out), fan_out = 256 * 1 * 1 */
            CHECK(fabs(sqrt(s2 / (double)n) / sqrt(2.0 / 256) - 1) < 0.05, "conv3 std %g, want %g", sqrt(s2 / (double)n), sqrt(2.0 / 256));
            CHECK(hv_data(pl->tensors[param_index(pl, "bn1.weight")])[5] == 1.0f && hv_data(pl->tensors[param_index(pl, "bn1.bias")])[5] == 0,
                  "bn1 not (1, 0)");
        }
        hv_resnext_free(r);
    }
    CHECK(hv_resnext_preset_from_name("resnet50") == HV_RESNEXT_CUSTOM, "unknown names are custom");
    {
        /* a custom model without groups is a plain ResNet: depths [3, 4, 6, 3] give ResNet-50 (25,557,032) */
        hv_resnext_desc d;
        hv_resnext *r;
        memset(&d, 0, sizeof d);
        d.depths[0] = 3;
        d.depths[1] = 4;
        d.depths[2] = 6;
        d.depths[3] = 3;
        d.num_classes = 1000;
        r = hv_resnext_new(ctx, &d);
        CHECK_NOTNULL(r);
        if (r) CHECK(trainable_count(hv_resnext_params(r)) == 25557032, "resnet50: %lld", (long long)trainable_count(hv_resnext_params(r)));
        hv_resnext_free(r);
    }
}

/* training steps: the steady state allocates nothing, the backward releases the forward's
   activations (the arena does not grow by more than a fraction in it), logits stay readable */
static void test_resnext_training_memory(hv_ctx *ctx) {
    hv_resnext_desc d = tiny_desc(5);
    hv_resnext *r = hv_resnext_new(ctx, &d);
    hv_tensor *images = hv_randn(ctx, HV_SHAPE(4, 3, 64, 64), 0, 1), *labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(4));
    hv_optim *opt;
    float before[4 * 5], after[4 * 5];
    size_t fwd[4], bwd[4];
    uint64_t allocs = 0;
    int i, step;
    CHECK_NOTNULL(r);
    if (!r || !labels) return;
    for (i = 0; i < 4; i++) hv_data_i32(labels)[i] = i;
    opt = hv_optim_new(ctx, hv_resnext_params(r), &(hv_optim_desc){.type = HV_OPTIM_ADAM, .lr = 5e-4f});
    CHECK_NOTNULL(opt);
    for (step = 0; step < 4; step++) {
        hv_tensor *logits = hv_resnext_forward(r, images, 1), *loss = hv_cross_entropy(logits, labels);
        if (step == 2) allocs = hv_alloc_count();
        CHECK_NOTNULL(loss);
        if (!loss) break;
        fwd[step] = hv_arena_used(ctx);
        hv_tensor_copy_to(logits, before, sizeof before);
        hv_optim_zero_grad(opt);
        CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
        bwd[step] = hv_arena_used(ctx);
        hv_tensor_copy_to(logits, after, sizeof after);
        CHECK(memcmp(before, after, sizeof before) == 0, "the logits changed during the backward");
        CHECK(hv_optim_step(opt) == 0, "%s", hv_last_error());
        hv_step_end(ctx);
    }
    CHECK(hv_alloc_count() == allocs, "%llu allocations in 2 steady-state steps", (unsigned long long)(hv_alloc_count() - allocs));
    printf("  arena: %.0f KiB after the forward, %.0f KiB after the backward\n", fwd[3] / 1024.0, bwd[3] / 1024.0);
    CHECK(bwd[3] < fwd[3] + fwd[3] / 2, "the backward grew the arena from %zu to %zu bytes", fwd[3], bwd[3]);
    CHECK(fwd[2] == fwd[3] && bwd[2] == bwd[3], "steps differ: %zu/%zu then %zu/%zu bytes", fwd[2], bwd[2], fwd[3], bwd[3]);
    hv_optim_free(opt);
    hv_tensor_free(images);
    hv_tensor_free(labels);
    hv_resnext_free(r);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    TL_RUN(ctx, test_resnext_matches_pytorch);
    TL_RUN(ctx, test_resnext_tc_checkpoint);
    TL_RUN(ctx, test_resnext_bad_inputs);
    TL_RUN(ctx, test_resnext_presets);
    TL_RUN(ctx, test_resnext_training_memory);
    hv_shutdown(ctx);
    TL_DONE();
}
