/* model_steps.h - the model steps of models.c (one per process, against PyTorch), shared with
   bench_vulkan.c (the same steps on a Vulkan device, checked against the CPU). Included after
   humanvit.h.

   Steps: vits14_infer, vitb14_infer (forward, no grad), vits14_train (forward, backward, AdamW;
   1000-class head, cross-entropy), mae_vits14 (MAE pretraining step: mask 0.8, decoder 512/8/16,
   AdamW betas 0.9/0.95). Everything comes from the context's seeded RNG (weights, images,
   labels, the MAE mask), so two contexts with the same seed run the same step. */
#ifndef BENCH_MODEL_STEPS_H
#define BENCH_MODEL_STEPS_H

#define MSTEP_NAMES "vits14_infer|vitb14_infer|vits14_train|mae_vits14"

typedef struct mstep {
    hv_ctx *ctx;
    hv_vit *vit;
    hv_mae *mae;
    hv_optim *opt; /* the training steps */
    hv_tensor *images, *labels;
    const hv_param_list *params;
} mstep;

static void mstep_free(mstep *s) {
    hv_optim_free(s->opt);
    hv_vit_free(s->vit);
    hv_mae_free(s->mae);
    hv_tensor_free(s->images);
    hv_tensor_free(s->labels);
    memset(s, 0, sizeof *s);
}

/* the step's model, optimizer and inputs on ctx: batch images of img_size (0: the preset's 224);
   depth > 0: that many blocks (the MAE decoder too) instead of the preset's (a smoke test).
   0, -1 (error set), or 2 for an unknown name */
static int mstep_new(mstep *s, hv_ctx *ctx, const char *step, int batch, int img_size, int depth) {
    hv_optim_desc od;
    memset(s, 0, sizeof *s);
    memset(&od, 0, sizeof od);
    s->ctx = ctx;
    if (!strcmp(step, "vits14_infer") || !strcmp(step, "vitb14_infer") || !strcmp(step, "vits14_train")) {
        hv_vit_desc d;
        memset(&d, 0, sizeof d);
        d.preset = step[3] == 'b' ? HV_VIT_B14 : HV_VIT_S14;
        d.img_size = img_size;
        d.depth = depth;
        if (!strcmp(step, "vits14_train")) d.num_classes = 1000;
        if (!(s->vit = hv_vit_new(ctx, &d))) return -1;
        s->params = hv_vit_params(s->vit);
        od.lr = 1e-4f;
        od.weight_decay = 0.05f;
    } else if (!strcmp(step, "mae_vits14")) {
        hv_mae_desc d;
        memset(&d, 0, sizeof d);
        d.encoder.preset = HV_VIT_S14;
        d.encoder.img_size = img_size;
        d.encoder.depth = depth;
        d.decoder_depth = depth;
        d.mask_ratio = 0.8f;
        if (!(s->mae = hv_mae_new(ctx, &d))) return -1;
        s->params = hv_mae_params(s->mae);
        od.lr = 3e-4f;
        od.beta2 = 0.95f;
    } else {
        return 2;
    }
    if (!(s->images = hv_randn(ctx, HV_SHAPE(batch, 3, img_size ? img_size : 224, img_size ? img_size : 224), 0, 1))) return -1;
    if (s->mae || strstr(step, "train")) {
        if (!(s->opt = hv_optim_new(ctx, s->params, &od))) return -1;
    } else {
        hv_set_grad_enabled(ctx, 0);
    }
    if (s->vit && s->opt) {
        int32_t *lab = (int32_t *)malloc(sizeof(int32_t) * (size_t)batch);
        int i;
        for (i = 0; i < batch; i++) lab[i] = (int32_t)(hv_rng_u64(ctx) % 1000);
        s->labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(batch));
        if (!s->labels || hv_tensor_copy_from(s->labels, lab, sizeof(int32_t) * (size_t)batch)) {
            free(lab);
            return -1;
        }
        free(lab);
    }
    return 0;
}

/* the forward: the loss of a training step, else the model's output; NULL on error */
static hv_tensor *mstep_forward(mstep *s) {
    if (s->mae) return hv_mae_forward(s->mae, s->images, NULL, NULL, NULL);
    if (s->opt) return hv_cross_entropy(hv_vit_forward(s->vit, s->images, 1), s->labels);
    return hv_vit_forward(s->vit, s->images, 0);
}

/* a training step's gradients of the loss out: zero, then backward. 0 or -1 */
static int mstep_backward(mstep *s, hv_tensor *out) {
    hv_optim_zero_grad(s->opt);
    return hv_backward(out);
}

#endif
