/* test_train.c - the training toolkit: optimizers and parameter groups against PyTorch, LR
   schedules, gradient clipping, non-finite checks, train-state files (bit-identical resume, atomic
   writes, corrupt and truncated files), determinism and the no-malloc promise.

   The PyTorch references are tests/fixtures/train/ (.hvfx files), written by tests/make_train_fixtures.py:
   five optimizer steps over a tiny ViT-like parameter list, computed in float64 from the same
   float32 inputs and rounded once. TOLERANCE: every parameter after every step and every final
   optimizer state must be within 1e-6 of the reference, measured as max |hv - ref| / max |ref| per
   tensor. PyTorch's own float32 run of the same cases lands at 1.2e-7..2.7e-7 (torch32_err in
   each file), so a correct float32 implementation has about 4x of margin; a formula mistake (a
   missing bias correction, decay applied to the wrong group, a wrong layer scale) is off by 1e-3 or
   more. Schedules (computed in double, rounded once) and the clipped norm are held to 1e-6
   relative as well. Resumed training is held to bit identity. */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L /* getpid, setrlimit, SIGXFSZ */
#endif
#include "testlib.h"
#include "fixture.h"
#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#define TT_POSIX 1
#endif

#define OPT_TOL 1e-6
#define SCHED_TOL 1e-6

/* ---- helpers -------------------------------------------------------------------------------- */

/* the cases run so far, for test_every_fixture_is_used */
static char tt_ran[64][FX_MAX_NAME + 1];
static int tt_nran;
static int tt_open(fx_file *f, const char *name) {
    char path[128];
    if (tt_nran < 64) snprintf(tt_ran[tt_nran++], FX_MAX_NAME + 1, "%s", name);
    snprintf(path, sizeof path, "train/%s", name);
    return fx_open(f, path);
}

static float fx_scalar(const fx_file *f, const char *name, float dflt) {
    const fx_array *a = fx_get(f, name);
    if (!a) return dflt;
    return a->dtype == HV_F32 ? a->f32[0] : (float)a->i32[0];
}

/* max |a - ref| / max(max |ref|, 1e-12) */
static double rel_err_f(const float *a, const float *ref, int64_t n) {
    double maxref = 1e-12, maxdiff = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= maxdiff)) maxdiff = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    return maxdiff / maxref;
}

/* an int-returning call that must fail with every fragment in the message */
#define CHECK_FAILS(expr, ...)                                                                     \
    do {                                                                                           \
        const char *tt_frags_[] = {__VA_ARGS__, NULL};                                             \
        int tt_i_;                                                                                 \
        hv_clear_error();                                                                          \
        if ((expr) == 0) {                                                                         \
            tl_fail_msg(__FILE__, __LINE__, "expected %s to fail", #expr);                         \
        } else {                                                                                   \
            for (tt_i_ = 0; tt_frags_[tt_i_]; tt_i_++)                                             \
                if (!strstr(hv_last_error(), tt_frags_[tt_i_]))                                    \
                    tl_fail_msg(__FILE__, __LINE__, "error \"%s\" lacks \"%s\"", hv_last_error(),   \
                                tt_frags_[tt_i_]);                                                 \
        }                                                                                          \
    } while (0)

/* a growable named parameter list over persistent tensors */
#define TT_MAXP 48
typedef struct tt_params {
    int count;
    char names[TT_MAXP][64];
    const char *name_ptrs[TT_MAXP];
    hv_tensor *tensors[TT_MAXP];
    hv_param_list list;
} tt_params;
static void tt_params_add(tt_params *p, const char *name, hv_tensor *t) {
    snprintf(p->names[p->count], 64, "%s", name);
    p->name_ptrs[p->count] = p->names[p->count];
    p->tensors[p->count] = t;
    p->count++;
    p->list.count = p->count;
    p->list.names = p->name_ptrs;
    p->list.tensors = p->tensors;
}
static void tt_params_free(tt_params *p) {
    int i;
    for (i = 0; i < p->count; i++) hv_tensor_free(p->tensors[i]);
    memset(p, 0, sizeof *p);
}

/* sets the gradient of each trainable tensor with a non-NULL value to exactly that value, through
   hv_backward of sum_i sum(p_i * g_i) (d/dp = 1 * g, exact). Gradients already there are zeroed
   first; a tensor given NULL keeps no gradient contribution. */
static int tt_set_grads(hv_ctx *ctx, tt_params *p, const float *const *values) {
    hv_tensor *total = NULL;
    int i;
    for (i = 0; i < p->count; i++) hv_zero_grad(p->tensors[i]);
    for (i = 0; i < p->count; i++) {
        hv_tensor *g, *term;
        if (!values[i] || !hv_requires_grad(p->tensors[i])) continue;
        g = hv_tensor_temp(ctx, HV_F32, hv_tensor_shape(p->tensors[i]));
        hv_tensor_copy_from(g, values[i], sizeof(float) * (size_t)hv_numel(g));
        term = hv_sum(hv_mul(p->tensors[i], g), 0, NULL, 0);
        total = total ? hv_add(total, term) : term;
    }
    return total ? hv_backward(total) : 0;
}

/* ---- optimizers against PyTorch ------------------------------------------------------------- */

static void run_optim_case(hv_ctx *ctx, const char *name) {
    fx_file f;
    tt_params P;
    hv_optim_desc d;
    hv_optim *opt;
    hv_tensor *buf_mean, *buf_count;
    const fx_array *lr, *scale, *wd;
    int i, k, slot, nparams;
    double worst = 0;
    memset(&P, 0, sizeof P);
    if (tt_open(&f, name) != 0) {
        CHECK(0, "%s", fx_error());
        return;
    }
    memset(&d, 0, sizeof d);
    d.type = (hv_optim_type)(int)fx_scalar(&f, "cfg.type", 0);
    d.beta1 = fx_scalar(&f, "cfg.beta1", 0);
    d.beta2 = fx_scalar(&f, "cfg.beta2", 0);
    d.eps = fx_scalar(&f, "cfg.eps", 0);
    d.weight_decay = fx_scalar(&f, "cfg.weight_decay", 0);
    d.momentum = fx_scalar(&f, "cfg.momentum", 0);
    d.dampening = fx_scalar(&f, "cfg.dampening", 0);
    d.nesterov = (int)fx_scalar(&f, "cfg.nesterov", 0);
    d.trust_coefficient = fx_scalar(&f, "cfg.trust_coefficient", 0);
    d.decay_rule = (hv_decay_rule)(int)fx_scalar(&f, "cfg.decay_rule", 0);
    d.layer_decay = fx_scalar(&f, "cfg.layer_decay", 0);
    d.num_layers = (int)fx_scalar(&f, "cfg.num_layers", 0);
    lr = fx_get(&f, "cfg.lr");
    scale = fx_get(&f, "lr_scale");
    wd = fx_get(&f, "wd");
    CHECK(lr && scale && wd, "%s: %s", name, fx_error());
    if (!lr || !scale || !wd) goto done;

    for (i = 0; i < f.count; i++)
        if (!strncmp(f.arrays[i].name, "p.", 2)) {
            hv_tensor *t = fx_tensor(ctx, &f, f.arrays[i].name);
            hv_set_trainable(t, 1);
            tt_params_add(&P, f.arrays[i].name + 2, t);
        }
    nparams = P.count;
    /* buffers an optimizer must leave alone (a model's BatchNorm statistics and counter) */
    buf_mean = hv_full(ctx, HV_SHAPE(4), 0.5f);
    buf_count = hv_tensor_new(ctx, HV_I32, HV_SHAPE(1));
    tt_params_add(&P, "head.0.running_mean", buf_mean);
    tt_params_add(&P, "head.0.num_batches_tracked", buf_count);

    opt = hv_optim_new(ctx, &P.list, &d);
    CHECK_NOTNULL(opt);
    if (!opt) goto done;
    /* the parameter groups */
    for (i = 0; i < nparams; i++) {
        float s = -1, w = -1;
        CHECK(hv_optim_param_group(opt, i, &s, &w) == 0, "%s: no group for %s", name, P.names[i]);
        CHECK(fabsf(s - scale->f32[i]) <= 1e-7f * scale->f32[i] && w == wd->f32[i], "%s: %s: lr_scale %.9g wd %g, PyTorch %.9g %g", name,
              P.names[i], s, w, scale->f32[i], wd->f32[i]);
    }
    CHECK(hv_optim_param_group(opt, nparams, NULL, NULL) == -1 && hv_optim_param_group(opt, nparams + 1, NULL, NULL) == -1,
          "buffers must not be in a group");

    for (k = 0; k < lr->numel; k++) {
        const float *g[TT_MAXP];
        int frozen[TT_MAXP];
        memset(frozen, 0, sizeof frozen);
        for (i = 0; i < P.count; i++) {
            char key[96];
            const fx_array *a;
            g[i] = NULL;
            if (i >= nparams) continue;
            snprintf(key, sizeof key, "g%d.%s", k, P.names[i]);
            a = fx_get(&f, key);
            g[i] = a ? a->f32 : NULL;
        }
        CHECK(tt_set_grads(ctx, &P, g) == 0, "%s: %s", name, hv_last_error());
        /* PyTorch's grad None: a parameter with a gradient buffer from earlier steps is frozen for
           this step (a never-touched one simply has no gradient yet) */
        for (i = 0; i < nparams; i++)
            if (!g[i] && hv_grad(P.tensors[i])) {
                hv_set_trainable(P.tensors[i], 0);
                frozen[i] = 1;
            }
        hv_optim_set_lr(opt, lr->f32[k]);
        CHECK(hv_optim_step(opt) == 0, "%s", hv_last_error());
        for (i = 0; i < nparams; i++)
            if (frozen[i]) hv_set_trainable(P.tensors[i], 1);
        hv_step_end(ctx);
        for (i = 0; i < nparams; i++) {
            char key[96];
            const fx_array *a;
            double e;
            snprintf(key, sizeof key, "w%d.%s", k, P.names[i]);
            a = fx_get(&f, key);
            if (!a) {
                CHECK(0, "%s", fx_error());
                continue;
            }
            e = rel_err_f(hv_data(P.tensors[i]), a->f32, a->numel);
            if (e > worst) worst = e;
            CHECK(e <= OPT_TOL, "%s: step %d: %s off by %.3g > %.1g", name, k, P.names[i], e, OPT_TOL);
        }
    }
    for (i = 0; i < nparams; i++)
        for (slot = 0; slot < 2; slot++) {
            char key[96];
            const fx_array *a;
            hv_tensor *s = hv_optim_state(opt, i, slot);
            snprintf(key, sizeof key, "s%d.%s", slot, P.names[i]);
            a = fx_get(&f, key);
            CHECK((a != NULL) == (s != NULL), "%s: state %s: PyTorch has %s, hv %s", name, key, a ? "one" : "none", s ? "one" : "none");
            if (a && s) {
                double e = rel_err_f(hv_data(s), a->f32, a->numel);
                if (e > worst) worst = e;
                CHECK(e <= OPT_TOL, "%s: state %s off by %.3g", name, key, e);
            }
        }
    /* per-parameter step counts: PyTorch counts only the steps where the gradient was not None */
    for (i = 0; i < nparams; i++) {
        int64_t want = (!strcmp(P.names[i], "head.weight") || !strcmp(P.names[i], "norm.bias")) ? 4 : 5;
        CHECK(hv_optim_param_steps(opt, i) == want, "%s: %s did %lld steps, want %lld", name, P.names[i],
              (long long)hv_optim_param_steps(opt, i), (long long)want);
    }
    CHECK(hv_data(buf_mean)[0] == 0.5f && hv_data_i32(buf_count)[0] == 0, "%s: a buffer was touched", name);
    if (getenv("HV_FIXTURES_VERBOSE")) printf("  %-24s worst %.2e (PyTorch f32 %.2e)\n", name, worst, fx_scalar(&f, "torch32_err", 0));
    hv_optim_free(opt);
done:
    tt_params_free(&P);
    fx_free(&f);
}

static void test_optim_fixtures(hv_ctx *ctx) {
    static const char *cases[] = {"adamw", "adamw_lrd", "adamw_skip1d", "adam_wd", "sgd_nesterov", "sgd_momentum_dampening", "sgd_plain",
                                  "lars"};
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) run_optim_case(ctx, cases[i]);
}

static void test_param_groups(hv_ctx *ctx) {
    static const char *names[] = {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.bias",
                                  "norm.weight", "fc_norm.bias", "head.weight", "decoder_blocks.3.norm1.weight", "mask_token"};
    static const int ids[] = {0, 0, 0, 1, 12, 13, 13, 13, 13, 13};
    tt_params P;
    hv_optim *opt;
    hv_optim_desc d;
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(hv_vit_layer_id(names[i], 12) == ids[i], "layer id of %s: %d, want %d", names[i], hv_vit_layer_id(names[i], 12), ids[i]);
    /* the three decay rules on a token, a 2-D weight, a bias, a 1-D gain and decoder_pos_embed */
    memset(&P, 0, sizeof P);
    tt_params_add(&P, "cls_token", hv_zeros(ctx, HV_SHAPE(1, 1, 4)));
    tt_params_add(&P, "blocks.0.attn.proj.weight", hv_zeros(ctx, HV_SHAPE(4, 4)));
    tt_params_add(&P, "blocks.0.attn.proj.bias", hv_zeros(ctx, HV_SHAPE(4)));
    tt_params_add(&P, "norm.weight", hv_zeros(ctx, HV_SHAPE(4)));
    tt_params_add(&P, "decoder_pos_embed", hv_zeros(ctx, HV_SHAPE(1, 2, 4)));
    tt_params_add(&P, "head.1.running_var", hv_zeros(ctx, HV_SHAPE(4))); /* not trainable */
    for (i = 0; i < 5; i++) hv_set_trainable(P.tensors[i], 1);
    {
        static const float want[3][5] = {{.1f, .1f, .1f, .1f, .1f}, {0, .1f, 0, 0, 0}, {.1f, .1f, 0, 0, .1f}};
        int rule;
        for (rule = 0; rule < 3; rule++) {
            memset(&d, 0, sizeof d);
            d.weight_decay = 0.1f;
            d.decay_rule = (hv_decay_rule)rule;
            opt = hv_optim_new(ctx, &P.list, &d);
            CHECK_NOTNULL(opt);
            for (i = 0; opt && i < 5; i++) {
                float s, w;
                hv_optim_param_group(opt, (int)i, &s, &w);
                CHECK(w == want[rule][i] && s == 1.0f, "rule %d: %s has wd %g lr_scale %g", rule, P.names[i], w, s);
            }
            CHECK(hv_optim_param_group(opt, 5, NULL, NULL) == -1, "a buffer got a group");
            CHECK(hv_optim_state(opt, 5, 0) == NULL && hv_optim_state(opt, 0, 0) != NULL, "state of a buffer / a parameter");
            hv_optim_free(opt);
        }
    }
    /* layer decay with an explicit depth and overrides */
    memset(&d, 0, sizeof d);
    d.layer_decay = 0.5f;
    d.num_layers = 3;
    opt = hv_optim_new(ctx, &P.list, &d);
    if (opt) {
        float s, w;
        hv_optim_param_group(opt, 0, &s, &w);
        CHECK(s == 0.0625f, "cls_token scale %g, want 0.5^4", s);
        hv_optim_param_group(opt, 1, &s, &w);
        CHECK(s == 0.125f, "blocks.0 scale %g, want 0.5^3", s);
        hv_optim_param_group(opt, 3, &s, &w);
        CHECK(s == 1.0f, "norm scale %g, want 1", s);
        CHECK(hv_optim_set_param_group(opt, 3, 2.0f, 0.3f) == 0, "%s", hv_last_error());
        hv_optim_param_group(opt, 3, &s, &w);
        CHECK(s == 2.0f && w == 0.3f, "override not kept");
        CHECK_FAILS(hv_optim_set_param_group(opt, 5, 1, 0), "not updated");
        CHECK_FAILS(hv_optim_set_param_group(opt, 3, -1, 0), ">= 0");
        CHECK(hv_optim_config(opt).num_layers == 3, "num_layers");
    }
    hv_optim_free(opt);
    /* defaults and bad settings */
    opt = hv_optim_new(ctx, &P.list, NULL);
    if (opt) {
        hv_optim_desc c = hv_optim_config(opt);
        CHECK(c.type == HV_OPTIM_ADAMW && c.lr == 1e-3f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f && c.weight_decay == 0,
              "AdamW defaults");
        CHECK(hv_optim_get_lr(opt) == 1e-3f, "lr");
    }
    hv_optim_free(opt);
    memset(&d, 0, sizeof d);
    d.type = HV_OPTIM_LARS;
    opt = hv_optim_new(ctx, &P.list, &d);
    CHECK(opt && hv_optim_config(opt).momentum == 0.9f && hv_optim_config(opt).trust_coefficient == 1e-3f, "LARS defaults");
    hv_optim_free(opt);
    memset(&d, 0, sizeof d);
    d.type = HV_OPTIM_SGD;
    d.nesterov = 1;
    CHECK_ERROR(hv_optim_new(ctx, &P.list, &d), "Nesterov");
    memset(&d, 0, sizeof d);
    d.type = (hv_optim_type)7;
    CHECK_ERROR(hv_optim_new(ctx, &P.list, &d), "unknown optimizer type 7");
    memset(&d, 0, sizeof d);
    d.lr = -1;
    CHECK_ERROR(hv_optim_new(ctx, &P.list, &d), "bad settings");
    CHECK_ERROR(hv_optim_new(ctx, NULL, NULL), "params");
    {   /* a trainable tensor that an optimizer cannot update */
        hv_tensor *iw = hv_tensor_new(ctx, HV_I32, HV_SHAPE(3));
        tt_params Q;
        memset(&Q, 0, sizeof Q);
        tt_params_add(&Q, "weird.weight", iw);
        hv_set_trainable(iw, 1);
        CHECK_ERROR(hv_optim_new(ctx, &Q.list, NULL), "weird.weight", "f32");
        tt_params_free(&Q);
    }
    CHECK(hv_optim_step(NULL) == -1, "NULL optimizer");
    tt_params_free(&P);
}

/* ---- schedules ------------------------------------------------------------------------------ */

static void test_schedules(hv_ctx *ctx) {
    static const char *cases[] = {"sched_cosine", "sched_constant_warmup", "sched_step"};
    size_t c;
    hv_schedule_desc s;
    (void)ctx;
    for (c = 0; c < 3; c++) {
        fx_file f;
        const fx_array *t, *lr, *ms;
        int64_t i;
        if (tt_open(&f, cases[c]) != 0) {
            CHECK(0, "%s", fx_error());
            continue;
        }
        memset(&s, 0, sizeof s);
        s.type = (hv_schedule_type)(int)fx_scalar(&f, "cfg.type", 0);
        s.lr = fx_scalar(&f, "cfg.lr", 0);
        s.min_lr = fx_get(&f, "cfg.min_lr") ? fx_scalar(&f, "cfg.min_lr", 0) : 0;
        s.warmup = fx_get(&f, "cfg.warmup") ? fx_scalar(&f, "cfg.warmup", 0) : 0;
        s.total = fx_get(&f, "cfg.total") ? fx_scalar(&f, "cfg.total", 0) : 0;
        s.gamma = fx_get(&f, "cfg.gamma") ? fx_scalar(&f, "cfg.gamma", 0) : 0;
        ms = fx_get(&f, "cfg.milestones");
        for (i = 0; ms && i < ms->numel; i++) s.milestones[s.num_milestones++] = ms->f32[i];
        t = fx_get(&f, "t");
        lr = fx_get(&f, "lr");
        for (i = 0; t && lr && i < t->numel; i++) {
            float got = hv_lr_at(&s, t->f32[i]);
            CHECK(fabs((double)got - lr->f32[i]) <= SCHED_TOL * fabs((double)lr->f32[i]), "%s at t=%g: %.9g, want %.9g", cases[c],
                  (double)t->f32[i], got, lr->f32[i]);
        }
        fx_free(&f);
    }
    /* past the end the cosine stays at min_lr; without warm-up it starts at lr */
    memset(&s, 0, sizeof s);
    s.type = HV_SCHED_COSINE;
    s.lr = 1e-3f;
    s.min_lr = 1e-5f;
    s.total = 10;
    CHECK(hv_lr_at(&s, 0) == 1e-3f && hv_lr_at(&s, 10) == 1e-5f && hv_lr_at(&s, 1e9) == 1e-5f, "cosine ends");
    CHECK(fabsf(hv_lr_at(&s, 5) - 0.5f * (1e-3f + 1e-5f)) < 1e-9f, "cosine midpoint");
    s.warmup = 10;
    CHECK(isnan(hv_lr_at(&s, 11)) && strstr(hv_last_error(), "total"), "total <= warmup must be an error");
    s.warmup = -1;
    CHECK(isnan(hv_lr_at(&s, 1)), "negative warmup");
    CHECK(isnan(hv_lr_at(NULL, 1)), "NULL schedule");
    memset(&s, 0, sizeof s);
    s.type = HV_SCHED_STEP; /* gamma 0: 0.1 */
    s.lr = 1.0f;
    s.num_milestones = 2;
    s.milestones[0] = 2;
    s.milestones[1] = 4;
    CHECK(hv_lr_at(&s, 1.9) == 1.0f && hv_lr_at(&s, 2) == 0.1f && hv_lr_at(&s, 5) == (float)(1.0 * 0.1 * 0.1), "step, default gamma");
}

/* ---- clipping and non-finite checks --------------------------------------------------------- */

static void load_grad_params(hv_ctx *ctx, fx_file *f, tt_params *P, const char *prefix) {
    const float *g[TT_MAXP];
    int i;
    size_t len = strlen(prefix);
    memset(P, 0, sizeof *P);
    for (i = 0; i < f->count; i++)
        if (!strncmp(f->arrays[i].name, prefix, len)) {
            hv_tensor *t = hv_zeros(ctx, hv_shape_of(f->arrays[i].ndim, f->arrays[i].shape));
            hv_set_trainable(t, 1);
            g[P->count] = f->arrays[i].f32;
            tt_params_add(P, f->arrays[i].name + len, t);
        }
    tt_set_grads(ctx, P, g);
    hv_step_end(ctx);
}

static void test_clip_grad_norm(hv_ctx *ctx) {
    static const char *cases[] = {"clip_grad_norm", "clip_grad_norm_noclip"};
    int c, i;
    for (c = 0; c < 2; c++) {
        fx_file f;
        tt_params P;
        double norm, want;
        if (tt_open(&f, cases[c]) != 0) {
            CHECK(0, "%s", fx_error());
            continue;
        }
        load_grad_params(ctx, &f, &P, "g.");
        want = fx_scalar(&f, "total_norm", 0);
        /* measuring only changes nothing */
        norm = hv_clip_grad_norm(&P.list, 0);
        CHECK(fabs(norm - want) <= 1e-6 * want, "%s: norm %.9g, PyTorch %.9g", cases[c], norm, want);
        norm = hv_clip_grad_norm(&P.list, fx_scalar(&f, "cfg.max_norm", 0));
        CHECK(fabs(norm - want) <= 1e-6 * want, "%s: norm %.9g, PyTorch %.9g", cases[c], norm, want);
        for (i = 0; i < P.count; i++) {
            char key[96];
            const fx_array *a;
            snprintf(key, sizeof key, "clipped.%s", P.names[i]);
            a = fx_get(&f, key);
            CHECK(a && rel_err_f(hv_data(hv_grad(P.tensors[i])), a->f32, a->numel) <= 1e-6, "%s: %s", cases[c], key);
        }
        tt_params_free(&P);
        fx_free(&f);
    }
}

static void test_nonfinite(hv_ctx *ctx) {
    tt_params P;
    hv_tensor *loss;
    int bad = 7;
    float g0[6] = {3, 4, 0, 0, 0, 0}, g1[6] = {1, 1, 1, 1, 1, 1};
    const float *g[2];
    double norm;
    memset(&P, 0, sizeof P);
    tt_params_add(&P, "a.weight", hv_zeros(ctx, HV_SHAPE(2, 3)));
    tt_params_add(&P, "a.bias", hv_zeros(ctx, HV_SHAPE(6)));
    hv_set_trainable(P.tensors[0], 1);
    hv_set_trainable(P.tensors[1], 1);
    g[0] = g0;
    g[1] = g1;
    tt_set_grads(ctx, &P, g);
    hv_step_end(ctx);
    loss = hv_full(ctx, HV_SHAPE(1), 0.25f);
    CHECK(hv_check_finite(loss, &P.list, &bad) == 0 && bad == 0, "finite: %s", hv_last_error());
    CHECK(hv_check_finite(NULL, NULL, NULL) == 0, "nothing to check");
    hv_data(loss)[0] = NAN;
    CHECK(hv_check_finite(loss, &P.list, &bad) == -1 && bad == -1 && strstr(hv_last_error(), "loss is NaN"), "NaN loss: %s",
          hv_last_error());
    hv_data(loss)[0] = 1;
    hv_data(hv_grad(P.tensors[1]))[2] = INFINITY;
    hv_data(hv_grad(P.tensors[1]))[4] = NAN;
    CHECK(hv_check_finite(loss, &P.list, &bad) == -1 && bad == 1, "Inf gradient not found");
    CHECK(strstr(hv_last_error(), "a.bias") && strstr(hv_last_error(), "2 non-finite") && strstr(hv_last_error(), "index 2 is +Inf"),
          "message: %s", hv_last_error());
    /* a non-finite norm is returned and nothing is scaled */
    norm = hv_clip_grad_norm(&P.list, 1.0f);
    CHECK(!isfinite(norm), "norm %g", norm);
    CHECK(hv_data(hv_grad(P.tensors[0]))[0] == 3.0f, "gradients were scaled by a NaN norm");
    CHECK(hv_clip_grad_norm(NULL, 1.0f) == -1.0, "NULL params");
    hv_tensor_free(loss);
    tt_params_free(&P);
}

/* ---- determinism and allocation ------------------------------------------------------------- */

/* three optimizer steps of type `type` on a large parameter, then its bits */
static void big_steps(int threads, hv_optim_type type, float *out_w, float *out_norm) {
    hv_ctx *c = hv_init(&(hv_init_desc){.seed = 3, .threads = threads});
    tt_params P;
    hv_optim *opt;
    float *g = (float *)malloc(sizeof(float) * 300000);
    const float *gp[2];
    int s, i;
    memset(&P, 0, sizeof P);
    tt_params_add(&P, "w", hv_randn(c, HV_SHAPE(600, 500), 0, 1));
    tt_params_add(&P, "b", hv_randn(c, HV_SHAPE(300000), 0, 1));
    hv_set_trainable(P.tensors[0], 1);
    hv_set_trainable(P.tensors[1], 1);
    opt = hv_optim_new(c, &P.list, &(hv_optim_desc){.type = type, .lr = 0.01f, .weight_decay = 0.1f, .momentum = 0.9f});
    for (s = 0; s < 3; s++) {
        for (i = 0; i < 300000; i++) g[i] = hv_rng_normal(c);
        gp[0] = g;
        gp[1] = g;
        tt_set_grads(c, &P, gp);
        *out_norm = (float)hv_clip_grad_norm(&P.list, 10.0f);
        hv_optim_step(opt);
        hv_step_end(c);
    }
    memcpy(out_w, hv_data(P.tensors[0]), sizeof(float) * 300000);
    hv_optim_free(opt);
    tt_params_free(&P);
    free(g);
    hv_shutdown(c);
}
static void test_thread_determinism(hv_ctx *ctx) {
    float *a = (float *)malloc(sizeof(float) * 300000), *b = (float *)malloc(sizeof(float) * 300000), na, nb;
    int type;
    (void)ctx;
    for (type = 0; type < 4; type++) {
        big_steps(1, (hv_optim_type)type, a, &na);
        big_steps(4, (hv_optim_type)type, b, &nb);
        CHECK(memcmp(a, b, sizeof(float) * 300000) == 0 && na == nb, "optimizer %d: 1 and 4 threads differ", type);
    }
    free(a);
    free(b);
}

static void test_steady_state_no_malloc(hv_ctx *ctx) {
    hv_tensor *x = tl_rand(ctx, HV_SHAPE(16, 8), -1, 1), *w = tl_rand(ctx, HV_SHAPE(4, 8), -1, 1), *b = hv_zeros(ctx, HV_SHAPE(4));
    tt_params P;
    hv_schedule_desc sched;
    uint64_t before = 0;
    int type, step;
    memset(&P, 0, sizeof P);
    memset(&sched, 0, sizeof sched);
    sched.type = HV_SCHED_COSINE;
    sched.lr = 1e-2f;
    sched.warmup = 2;
    sched.total = 10;
    tt_params_add(&P, "fc.weight", w);
    tt_params_add(&P, "fc.bias", b);
    hv_set_trainable(w, 1);
    hv_set_trainable(b, 1);
    for (type = 0; type < 4; type++) {
        hv_optim *opt = hv_optim_new(ctx, &P.list, &(hv_optim_desc){.type = (hv_optim_type)type, .weight_decay = 0.01f, .momentum = 0.9f});
        for (step = 0; step < 6; step++) {
            hv_tensor *loss;
            if (step == 3) before = hv_alloc_count();
            hv_optim_set_lr(opt, hv_lr_at(&sched, step));
            loss = hv_mean(hv_tanh(hv_linear(x, w, b)), 0, NULL, 0);
            hv_optim_zero_grad(opt);
            CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
            CHECK(hv_check_finite(loss, &P.list, NULL) == 0, "%s", hv_last_error());
            hv_clip_grad_norm(&P.list, 0.01f);
            hv_optim_step(opt);
            hv_step_end(ctx);
        }
        CHECK(hv_alloc_count() == before, "optimizer %d: %llu allocations in 3 steady-state steps", type,
              (unsigned long long)(hv_alloc_count() - before));
        hv_optim_free(opt);
    }
    hv_tensor_free(x);
    tt_params_free(&P);
}

/* ---- train-state files ---------------------------------------------------------------------- */

static char tt_dir[256];
static long tt_pid;
/* a scratch file; the process id keeps concurrent runs (test and asan) apart */
static void tt_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/hv-test-train-%ld-%s", tt_dir, tt_pid, name);
}
static unsigned char *tt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long len;
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}
static void tt_write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(buf, 1, n, f);
    fclose(f);
}
static int tt_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* the file checksum, written here from the format's description in humanvit.h */
static uint64_t tt_le64(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t tt_hv64(const unsigned char *p, size_t n) {
    const uint64_t P = 0x100000001b3ULL;
    uint64_t lane[4], r;
    size_t i, blocks = n / 32;
    int j;
    for (j = 0; j < 4; j++) lane[j] = 0xcbf29ce484222325ULL ^ (uint64_t)j;
    for (i = 0; i < blocks; i++)
        for (j = 0; j < 4; j++) lane[j] = (lane[j] ^ tt_le64(p + 32 * i + 8 * j)) * P;
    for (i = blocks * 32; i < n; i++) lane[0] = (lane[0] ^ p[i]) * P;
    r = lane[0];
    for (j = 1; j < 4; j++) r = (r ^ lane[j]) * P;
    return (r ^ (uint64_t)n) * P;
}
static void tt_reseal(unsigned char *buf, size_t n) {
    uint64_t h = tt_hv64(buf, n - 8);
    int i;
    for (i = 0; i < 8; i++) buf[n - 8 + i] = (unsigned char)(h >> (8 * i));
}
static void tt_put_u32(unsigned char *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* a small model: a trainable weight and bias, BatchNorm-like buffers (f32 and i32) */
static void tt_small(hv_ctx *ctx, tt_params *P) {
    memset(P, 0, sizeof *P);
    tt_params_add(P, "fc.weight", hv_randn(ctx, HV_SHAPE(3, 5), 0, 1));
    tt_params_add(P, "fc.bias", hv_randn(ctx, HV_SHAPE(3), 0, 1));
    tt_params_add(P, "bn.running_mean", hv_randn(ctx, HV_SHAPE(5), 0, 1));
    tt_params_add(P, "bn.num_batches_tracked", hv_tensor_new(ctx, HV_I32, HV_SHAPE(1)));
    hv_set_trainable(P->tensors[0], 1);
    hv_set_trainable(P->tensors[1], 1);
    hv_data_i32(P->tensors[3])[0] = 17;
}
static void tt_small_train(hv_ctx *ctx, tt_params *P, hv_optim *opt, int steps) {
    int s;
    for (s = 0; s < steps; s++) {
        hv_tensor *loss = hv_sum(hv_mul(P->tensors[0], P->tensors[0]), 0, NULL, 0);
        loss = hv_add(loss, hv_sum(hv_exp(P->tensors[1]), 0, NULL, 0));
        hv_optim_zero_grad(opt);
        hv_backward(loss);
        hv_optim_step(opt);
        hv_step_end(ctx);
    }
}
/* all the bytes a state holds: tensors, optimizer state, RNG */
static size_t tt_snapshot(hv_ctx *ctx, tt_params *P, hv_optim *opt, unsigned char *out) {
    size_t n = 0;
    int i, s;
    uint64_t rng[4];
    for (i = 0; i < P->count; i++) {
        size_t b = (size_t)hv_numel(P->tensors[i]) * 4;
        memcpy(out + n, hv_data(P->tensors[i]) ? (void *)hv_data(P->tensors[i]) : (void *)hv_data_i32(P->tensors[i]), b);
        n += b;
        for (s = 0; opt && s < 2; s++)
            if (hv_optim_state(opt, i, s)) {
                memcpy(out + n, hv_data(hv_optim_state(opt, i, s)), b);
                n += b;
            }
        if (opt) {
            int64_t st = hv_optim_param_steps(opt, i);
            memcpy(out + n, &st, 8);
            n += 8;
        }
    }
    hv_rng_get_state(ctx, rng);
    memcpy(out + n, rng, sizeof rng);
    return n + sizeof rng;
}

static void test_state_roundtrip(hv_ctx *ctx) {
    char path[512];
    tt_params P;
    hv_optim *opt;
    hv_train_info info, back;
    unsigned char snap1[4096], snap2[4096];
    size_t n1, n2, fsize;
    unsigned char *bytes;
    int i;
    tt_path(path, sizeof path, "roundtrip.hvts");
    tt_small(ctx, &P);
    opt = hv_optim_new(ctx, &P.list, &(hv_optim_desc){.beta2 = 0.95f, .weight_decay = 0.05f});
    tt_small_train(ctx, &P, opt, 3);
    memset(&info, 0, sizeof info);
    info.step = 3;
    for (i = 0; i < HV_TRAIN_USER_INTS; i++) info.user[i] = (int64_t)i * 1000000007LL - 5;
    snprintf(info.meta, sizeof info.meta, "{\"model\": \"tiny\", \"lr\": 1e-3}");
    n1 = tt_snapshot(ctx, &P, opt, snap1);
    CHECK(hv_train_state_save(path, ctx, &P.list, opt, &info) == 0, "%s", hv_last_error());
    {   /* the checksum is the one the format describes */
        bytes = tt_read_file(path, &fsize);
        CHECK(bytes && fsize > 8 && tt_hv64(bytes, fsize - 8) == tt_le64(bytes + fsize - 8), "checksum differs from the documented hv64");
        CHECK(bytes && !memcmp(bytes, "HVTRAIN", 8), "magic");
        free(bytes);
    }
    /* scramble everything, then load it back */
    tt_small_train(ctx, &P, opt, 2);
    hv_data_i32(P.tensors[3])[0] = 99;
    hv_data(P.tensors[2])[1] = 1234.0f;
    hv_rng_u64(ctx);
    memset(&back, 0x55, sizeof back);
    CHECK(hv_train_state_load(path, ctx, &P.list, opt, &back) == 0, "%s", hv_last_error());
    n2 = tt_snapshot(ctx, &P, opt, snap2);
    CHECK(n1 == n2 && !memcmp(snap1, snap2, n1), "loaded state differs from the saved one");
    CHECK(back.step == 3 && !memcmp(back.user, info.user, sizeof info.user) && !strcmp(back.meta, info.meta), "info differs: meta '%s'",
          back.meta);
    /* tensors only, into a run without an optimizer */
    CHECK(hv_train_state_load(path, ctx, &P.list, NULL, NULL) == 0, "%s", hv_last_error());
    /* saved without an optimizer, loaded with one: an error */
    CHECK(hv_train_state_save(path, ctx, &P.list, NULL, NULL) == 0, "%s", hv_last_error());
    CHECK_FAILS(hv_train_state_load(path, ctx, &P.list, opt, NULL), path, "no optimizer state");
    CHECK(hv_train_state_load(path, ctx, &P.list, NULL, &back) == 0 && back.step == 0 && back.meta[0] == 0, "%s", hv_last_error());
    /* bad arguments */
    CHECK_FAILS(hv_train_state_save(NULL, ctx, &P.list, opt, NULL), "path");
    CHECK_FAILS(hv_train_state_save(path, NULL, &P.list, opt, NULL), "ctx");
    memset(info.meta, 'x', sizeof info.meta);
    CHECK_FAILS(hv_train_state_save(path, ctx, &P.list, opt, &info), "meta");
    CHECK_FAILS(hv_train_state_load("/no/such/dir/state.hvts", ctx, &P.list, opt, NULL), "/no/such/dir/state.hvts", "cannot open");
    {   /* an optimizer made for another list */
        tt_params Q;
        hv_optim *o2;
        tt_small(ctx, &Q);
        o2 = hv_optim_new(ctx, &Q.list, NULL);
        CHECK_FAILS(hv_train_state_save(path, ctx, &P.list, o2, NULL), "different parameter list");
        hv_optim_free(o2);
        tt_params_free(&Q);
    }
    hv_optim_free(opt);
    tt_params_free(&P);
    remove(path);
}

/* a writer that dies: failures midway leave the previous file whole, and no temp file behind */
static void test_state_atomic(hv_ctx *ctx) {
    char path[512], tmp[600], bad[600];
    tt_params P;
    hv_optim *opt;
    unsigned char snap1[4096], snap2[4096], *good, *copy;
    size_t n1, n2, gsize, csize;
    tt_path(path, sizeof path, "atomic.hvts");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    tt_small(ctx, &P);
    opt = hv_optim_new(ctx, &P.list, &(hv_optim_desc){.type = HV_OPTIM_SGD, .lr = 0.1f, .momentum = 0.9f});
    tt_small_train(ctx, &P, opt, 2);
    n1 = tt_snapshot(ctx, &P, opt, snap1);
    CHECK(hv_train_state_save(path, ctx, &P.list, opt, NULL) == 0, "%s", hv_last_error());
    CHECK(!tt_exists(tmp), "the temp file stayed behind");
    good = tt_read_file(path, &gsize);
    tt_small_train(ctx, &P, opt, 2); /* the state moves on */

    /* a folder that does not exist, a "folder" that is a file */
    tt_path(bad, sizeof bad, "no-such-dir/state.hvts");
    CHECK_FAILS(hv_train_state_save(bad, ctx, &P.list, opt, NULL), "no-such-dir/state.hvts.tmp", "cannot create");
    snprintf(bad, sizeof bad, "%s/state.hvts", path);
    CHECK_FAILS(hv_train_state_save(bad, ctx, &P.list, opt, NULL), "cannot create");

#ifdef TT_POSIX
    {   /* the disk fills up midway: the file-size limit makes write() fail after 200 bytes */
        struct rlimit old, lim;
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        if (getrlimit(RLIMIT_FSIZE, &old) == 0) {
            lim = old;
            lim.rlim_cur = 200;
            if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
                int rc = hv_train_state_save(path, ctx, &P.list, opt, NULL);
                char err[2048];
                snprintf(err, sizeof err, "%s", hv_last_error());
                setrlimit(RLIMIT_FSIZE, &old);
                CHECK(rc == -1 && strstr(err, "failed writing") && strstr(err, "unchanged"), "a failing write: rc %d, '%s'", rc, err);
                CHECK(!tt_exists(tmp), "the temp file of a failed write stayed behind");
            } else {
                printf("  (setrlimit unavailable: midway-failure case skipped)\n");
            }
        }
        signal(SIGXFSZ, prev);
    }
#endif
    copy = tt_read_file(path, &csize);
    CHECK(copy && csize == gsize && !memcmp(copy, good, gsize), "the previous file changed");
    free(copy);

    /* a killed writer leaves a truncated temp file: the state file is untouched and loads */
    tt_write_file(tmp, good, gsize / 2);
    CHECK(hv_train_state_load(path, ctx, &P.list, opt, NULL) == 0, "%s", hv_last_error());
    n2 = tt_snapshot(ctx, &P, opt, snap2);
    CHECK(n1 == n2 && !memcmp(snap1, snap2, n1), "the previous state did not load back");
    /* and the next save replaces the stale temp file */
    CHECK(hv_train_state_save(path, ctx, &P.list, opt, NULL) == 0 && !tt_exists(tmp), "%s", hv_last_error());
    free(good);
    hv_optim_free(opt);
    tt_params_free(&P);
    remove(path);
    remove(tmp);
}

/* load must reject each broken file cleanly and change nothing */
static void expect_load_fails(hv_ctx *ctx, tt_params *P, hv_optim *opt, const char *path, const unsigned char *buf, size_t n,
                              const char *frag, const char *what, int line) {
    unsigned char before[4096], after[4096];
    size_t nb, na;
    int rc;
    hv_train_info info;
    tt_write_file(path, buf, n);
    memset(&info, 0x11, sizeof info);
    nb = tt_snapshot(ctx, P, opt, before);
    hv_clear_error();
    rc = hv_train_state_load(path, ctx, &P->list, opt, &info);
    na = tt_snapshot(ctx, P, opt, after);
    if (getenv("HV_FIXTURES_VERBOSE")) printf("  %-22s -> %s\n", what, hv_last_error());
    if (rc != -1) tl_fail_msg(__FILE__, line, "%s: loaded without an error", what);
    else if (!strstr(hv_last_error(), path) || !strstr(hv_last_error(), frag))
        tl_fail_msg(__FILE__, line, "%s: error \"%s\" lacks the path or \"%s\"", what, hv_last_error(), frag);
    if (nb != na || memcmp(before, after, nb) || info.step != 0x1111111111111111LL)
        tl_fail_msg(__FILE__, line, "%s: a failed load modified the state", what);
}
#define EXPECT_LOAD_FAILS(buf, n, frag, what) expect_load_fails(ctx, &P, opt, path, buf, n, frag, what, __LINE__)

static void test_state_corrupt(hv_ctx *ctx) {
    char path[512], good_path[512];
    tt_params P, Q;
    hv_optim *opt, *sgd;
    hv_train_info info;
    unsigned char *good, *buf;
    size_t n, cut, meta_len = 4, rec;
    static const size_t cuts[] = {0, 5, 8, 11, 16, 60, 123, 131, 140, 150, 200};
    char what[64];
    tt_path(path, sizeof path, "corrupt.hvts");
    tt_path(good_path, sizeof good_path, "good.hvts");
    tt_small(ctx, &P);
    opt = hv_optim_new(ctx, &P.list, &(hv_optim_desc){.weight_decay = 0.1f});
    tt_small_train(ctx, &P, opt, 2);
    memset(&info, 0, sizeof info);
    info.step = 2;
    snprintf(info.meta, sizeof info.meta, "abcd"); /* meta_len 4 */
    CHECK(hv_train_state_save(good_path, ctx, &P.list, opt, &info) == 0, "%s", hv_last_error());
    good = tt_read_file(good_path, &n);
    if (!good) {
        CHECK(0, "cannot read %s", good_path);
        goto done;
    }
    tt_small_train(ctx, &P, opt, 1); /* the live state differs from the file's */
    buf = (unsigned char *)malloc(n + 16);

    /* truncated anywhere */
    for (cut = 0; cut < sizeof cuts / sizeof cuts[0]; cut++) {
        snprintf(what, sizeof what, "truncated to %zu bytes", cuts[cut]);
        EXPECT_LOAD_FAILS(good, cuts[cut], cuts[cut] < 8 ? "HVTRAIN" : "truncated", what);
    }
    EXPECT_LOAD_FAILS(good, n / 2, "truncated", "truncated to half");
    EXPECT_LOAD_FAILS(good, n - 1, "truncated", "one byte short");
    EXPECT_LOAD_FAILS(good, n - 8, "truncated", "no checksum");
    /* a flipped bit in the data, in a name, in a dimension */
    rec = 132 + meta_len; /* the first record: name_len u32, "fc.weight", dtype, ndim, dims */
    memcpy(buf, good, n);
    buf[rec + 4 + 9 + 8 + 16 + 12 + 10] ^= 0x10; /* inside fc.weight's values */
    EXPECT_LOAD_FAILS(buf, n, "checksum mismatch: the file is corrupt", "flipped data bit");
    memcpy(buf, good, n);
    buf[n - 20] ^= 0x10; /* the last record's step count */
    EXPECT_LOAD_FAILS(buf, n, "checksum mismatch", "flipped field bit");
    memcpy(buf, good, n);
    buf[rec + 4] ^= 0x01;
    EXPECT_LOAD_FAILS(buf, n, "corrupt or truncated", "flipped name bit");
    memcpy(buf, good, n);
    buf[rec + 4 + 9 + 8] ^= 0x01;
    EXPECT_LOAD_FAILS(buf, n, "corrupt or truncated", "flipped dim bit");
    /* stray bytes after the checksum */
    memcpy(buf, good, n);
    memcpy(buf + n, "junk", 4);
    EXPECT_LOAD_FAILS(buf, n + 4, "stray bytes", "trailing junk");
    /* structurally wrong but correctly sealed: the structural checks name the problem */
    memcpy(buf, good, n);
    tt_put_u32(buf + 8, 2);
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "format version 2", "version");
    memcpy(buf, good, n);
    tt_put_u32(buf + 12, 3);
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "unknown flags", "flags");
    memcpy(buf, good, n);
    tt_put_u32(buf + 120, 100000);
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "metadata length", "meta length");
    memcpy(buf, good, n);
    tt_put_u32(buf + rec, 0);
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "name length 0", "name length");
    memcpy(buf, good, n);
    buf[rec + 4] = 'g'; /* "gc.weight" */
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "'gc.weight' is in the file but not in params", "unknown name");
    memcpy(buf, good, n);
    buf[rec + 4 + 9 + 8] = 4; /* dims (4, 5) */
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "shape (4, 5) in the file, (3, 5) in params", "shape");
    memcpy(buf, good, n);
    tt_put_u32(buf + rec + 4 + 9, 1); /* dtype i32 */
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "dtype 1 in the file", "dtype");
    memcpy(buf, good, n);
    tt_put_u32(buf + 128 + meta_len, 5); /* count */
    tt_reseal(buf, n);
    EXPECT_LOAD_FAILS(buf, n, "5 tensors, params has 4", "count");
    memcpy(buf, good, n);
    buf[0] = 'X';
    EXPECT_LOAD_FAILS(buf, n, "HVTRAIN", "magic");
    free(buf);

    /* the file is fine but does not match what it is loaded into */
    tt_write_file(path, good, n);
    sgd = hv_optim_new(ctx, &P.list, &(hv_optim_desc){.type = HV_OPTIM_SGD, .momentum = 0.9f});
    CHECK_FAILS(hv_train_state_load(path, ctx, &P.list, sgd, NULL), path, "holds AdamW state but the optimizer is SGD");
    hv_optim_free(sgd);
    tt_small(ctx, &Q);
    hv_set_trainable(Q.tensors[1], 0); /* fc.bias frozen now */
    sgd = hv_optim_new(ctx, &Q.list, NULL);
    CHECK_FAILS(hv_train_state_load(path, ctx, &Q.list, sgd, NULL), "'fc.bias' is optimized in the file but not optimized");
    hv_optim_free(sgd);
    tt_params_add(&Q, "extra", hv_zeros(ctx, HV_SHAPE(2)));
    CHECK_FAILS(hv_train_state_load(path, ctx, &Q.list, NULL, NULL), "4 tensors, params has 5");
    tt_params_free(&Q);
    /* after all that, the good file still loads */
    CHECK(hv_train_state_load(good_path, ctx, &P.list, opt, &info) == 0 && info.step == 2 && !strcmp(info.meta, "abcd"), "%s",
          hv_last_error());
    free(good);
done:
    hv_optim_free(opt);
    tt_params_free(&P);
    remove(path);
    remove(good_path);
}

/* ---- resume a tiny MAE bit for bit ---------------------------------------------------------- */

typedef struct tt_mae_run {
    hv_ctx *ctx;
    hv_mae *mae;
    hv_optim *opt;
    hv_tensor *images;
} tt_mae_run;

static int tt_mae_setup(tt_mae_run *r, uint64_t seed) {
    hv_mae_desc d;
    memset(&d, 0, sizeof d);
    d.encoder.img_size = 28;
    d.encoder.patch_size = 7;
    d.encoder.embed_dim = 32;
    d.encoder.depth = 1;
    d.encoder.num_heads = 2;
    d.decoder_embed_dim = 16;
    d.decoder_depth = 1;
    d.decoder_num_heads = 2;
    r->ctx = hv_init(&(hv_init_desc){.seed = seed});
    r->mae = hv_mae_new(r->ctx, &d);
    if (!r->mae) return -1;
    r->opt = hv_optim_new(r->ctx, hv_mae_params(r->mae),
                          &(hv_optim_desc){.type = HV_OPTIM_ADAMW, .lr = 1e-3f, .beta2 = 0.95f, .weight_decay = 0.05f,
                                           .decay_rule = HV_DECAY_SKIP_1D});
    r->images = hv_tensor_new(r->ctx, HV_F32, HV_SHAPE(2, 3, 28, 28));
    return r->opt && r->images ? 0 : -1;
}
static void tt_mae_teardown(tt_mae_run *r) {
    hv_optim_free(r->opt);
    hv_mae_free(r->mae);
    hv_shutdown(r->ctx);
}
/* one training step on the batch at data position `step`; the loss */
static float tt_mae_step(tt_mae_run *r, int64_t step) {
    static float img[2 * 3 * 28 * 28];
    hv_schedule_desc s;
    hv_tensor *loss;
    float v;
    int i;
    for (i = 0; i < 2 * 3 * 28 * 28; i++) img[i] = (float)sin(0.37 * i + 1.3 * (double)step) * 0.8f;
    hv_tensor_copy_from(r->images, img, sizeof img);
    memset(&s, 0, sizeof s);
    s.type = HV_SCHED_COSINE;
    s.lr = 1e-3f;
    s.min_lr = 1e-5f;
    s.warmup = 2;
    s.total = 8;
    hv_optim_set_lr(r->opt, hv_lr_at(&s, (double)step));
    loss = hv_mae_forward(r->mae, r->images, NULL, NULL, NULL); /* masking noise from the context RNG */
    hv_optim_zero_grad(r->opt);
    if (!loss || hv_backward(loss) != 0) return NAN;
    v = hv_item(loss);
    hv_clip_grad_norm(hv_mae_params(r->mae), 0.5f);
    hv_optim_step(r->opt);
    hv_step_end(r->ctx);
    return v;
}
static float *tt_mae_params_copy(tt_mae_run *r, size_t *n) {
    const hv_param_list *pl = hv_mae_params(r->mae);
    size_t total = 0, at = 0;
    float *out;
    int i;
    for (i = 0; i < pl->count; i++) total += (size_t)hv_numel(pl->tensors[i]);
    out = (float *)malloc(sizeof(float) * total);
    for (i = 0; i < pl->count; i++) {
        size_t k = (size_t)hv_numel(pl->tensors[i]);
        hv_tensor_copy_to(pl->tensors[i], out + at, sizeof(float) * k);
        at += k;
    }
    *n = total;
    return out;
}

#define TT_N 6
#define TT_K 3
static void test_mae_resume_bit_identical(hv_ctx *ctx) {
    char path_a[512], path_b[512];
    tt_mae_run r;
    float loss_a[TT_N], loss_c[TT_N], *final_a = NULL, *final_c = NULL;
    size_t na = 0, nc = 0, fa, fb;
    unsigned char *bytes_a, *bytes_b;
    hv_train_info info;
    int64_t s;
    (void)ctx;
    tt_path(path_a, sizeof path_a, "mae_a.hvts");
    tt_path(path_b, sizeof path_b, "mae_b.hvts");
    memset(&info, 0, sizeof info);

    /* A: uninterrupted, saving on the way (saving must not disturb the run) */
    if (tt_mae_setup(&r, 5)) {
        CHECK(0, "setup: %s", hv_last_error());
        return;
    }
    for (s = 0; s < TT_N; s++) {
        if (s == TT_K) {
            info.step = s;
            info.user[0] = s; /* the data position */
            CHECK(hv_train_state_save(path_a, r.ctx, hv_mae_params(r.mae), r.opt, &info) == 0, "%s", hv_last_error());
        }
        loss_a[s] = tt_mae_step(&r, s);
    }
    final_a = tt_mae_params_copy(&r, &na);
    tt_mae_teardown(&r);

    /* B: the same run, stopped at step K */
    tt_mae_setup(&r, 5);
    for (s = 0; s < TT_K; s++) CHECK(tt_mae_step(&r, s) == loss_a[s], "step %d differs before the save", (int)s);
    info.step = TT_K;
    info.user[0] = TT_K;
    CHECK(hv_train_state_save(path_b, r.ctx, hv_mae_params(r.mae), r.opt, &info) == 0, "%s", hv_last_error());
    tt_mae_teardown(&r);
    bytes_a = tt_read_file(path_a, &fa);
    bytes_b = tt_read_file(path_b, &fb);
    CHECK(bytes_a && bytes_b && fa == fb && !memcmp(bytes_a, bytes_b, fa), "the two state files at step %d differ", TT_K);
    free(bytes_a);
    free(bytes_b);

    /* C: a fresh process-alike with another seed (another init, another RNG) resumes from B */
    tt_mae_setup(&r, 12345);
    memset(&info, 0, sizeof info);
    CHECK(hv_train_state_load(path_b, r.ctx, hv_mae_params(r.mae), r.opt, &info) == 0, "%s", hv_last_error());
    CHECK(info.step == TT_K && info.user[0] == TT_K, "info: step %lld", (long long)info.step);
    for (s = info.user[0]; s < TT_N; s++) {
        loss_c[s] = tt_mae_step(&r, s);
        CHECK(memcmp(&loss_c[s], &loss_a[s], sizeof(float)) == 0, "step %d: loss %.9g resumed, %.9g uninterrupted", (int)s, loss_c[s],
              loss_a[s]);
    }
    final_c = tt_mae_params_copy(&r, &nc);
    CHECK(na == nc && final_a && final_c && !memcmp(final_a, final_c, sizeof(float) * na), "final parameters are not bit-identical");
    tt_mae_teardown(&r);
    /* the test can tell: resumed with another RNG state, the masks and so the loss differ */
    tt_mae_setup(&r, 12345);
    CHECK(hv_train_state_load(path_b, r.ctx, hv_mae_params(r.mae), r.opt, NULL) == 0, "%s", hv_last_error());
    hv_rng_seed(r.ctx, 777);
    CHECK(tt_mae_step(&r, TT_K) != loss_a[TT_K], "the loss does not depend on the RNG state: the resume test proves nothing");
    tt_mae_teardown(&r);
    free(final_a);
    free(final_c);
    remove(path_a);
    remove(path_b);
}

/* freeing a parameter that has a gradient, while older and newer tensors live on, must keep them
   on the context's list so that hv_shutdown frees them (a core bug found by the resume test:
   AddressSanitizer's leak check is what catches a regression here) */
static void test_free_param_with_grad(hv_ctx *ctx) {
    hv_ctx *c = hv_init(NULL);
    hv_tensor *older = hv_zeros(c, HV_SHAPE(3)), *w = hv_ones(c, HV_SHAPE(3)), *newer = hv_zeros(c, HV_SHAPE(5));
    (void)ctx;
    hv_set_trainable(w, 1);
    CHECK(hv_backward(hv_sum(hv_mul(w, w), 0, NULL, 0)) == 0 && hv_grad(w), "%s", hv_last_error());
    hv_step_end(c);
    hv_tensor_free(w);
    CHECK(older && newer, "tensors");
    hv_shutdown(c); /* frees older and newer */
}

/* ---- every fixture has a test ----------------------------------------------------------------- */

static void test_every_fixture_is_used(hv_ctx *ctx) {
    const char *dir = getenv("HV_FIXTURES");
    char path[512], line[128];
    FILE *fp;
    int n = 0;
    (void)ctx;
    snprintf(path, sizeof path, "%s/train/MANIFEST", dir && dir[0] ? dir : "tests/fixtures");
    fp = fopen(path, "r");
    if (!fp) {
        CHECK(0, "cannot open %s", path);
        return;
    }
    while (fgets(line, sizeof line, fp)) {
        int i, found = 0;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        n++;
        for (i = 0; i < tt_nran && !found; i++) found = strcmp(tt_ran[i], line) == 0;
        CHECK(found, "fixture 'train/%s' is in the MANIFEST but no test runs it", line);
    }
    fclose(fp);
    CHECK(n > 0, "empty MANIFEST");
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 42});
    const char *tmp = getenv("TMPDIR");
#ifdef TT_POSIX
    snprintf(tt_dir, sizeof tt_dir, "%s", tmp && tmp[0] ? tmp : "/tmp");
    tt_pid = (long)getpid();
#else
    (void)tmp;
    snprintf(tt_dir, sizeof tt_dir, ".");
#endif
    setvbuf(stdout, NULL, _IOLBF, 0);
    TL_RUN(ctx, test_optim_fixtures);
    TL_RUN(ctx, test_param_groups);
    TL_RUN(ctx, test_schedules);
    TL_RUN(ctx, test_clip_grad_norm);
    TL_RUN(ctx, test_nonfinite);
    TL_RUN(ctx, test_thread_determinism);
    TL_RUN(ctx, test_steady_state_no_malloc);
    TL_RUN(ctx, test_state_roundtrip);
    TL_RUN(ctx, test_state_atomic);
    TL_RUN(ctx, test_state_corrupt);
    TL_RUN(ctx, test_mae_resume_bit_identical);
    TL_RUN(ctx, test_free_param_with_grad);
    TL_RUN(ctx, test_every_fixture_is_used);
    hv_shutdown(ctx);
    TL_DONE();
}
