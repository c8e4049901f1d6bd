/* hv_kit.h - the training toolkit shared by the trainers in examples/ and the demo: command-line
   flags, progress lines, CSV logs, SVG plots, checkpoints, and the recipes themselves (MAE
   pretraining, finetuning / linear probe, evaluation, feature extraction, Perceptual MAE) as
   functions, so that mae_pretrain, finetune, extract_features, pmae_train and the demo run the
   very same loops.

   DO THIS in *one* C file, after humanvit.h and hv_data.h (with its implementation):

       #define HV_KIT_IMPLEMENTATION
       #include "hv_kit.h"

   Names are hvk_ (public) and hvk__ (private). Same stb style and error convention as hv_data.h:
   NULL or -1, and hvk_last_error() says why.

   OPTIMIZER: the library's hv_optim (AdamW, or Adam with hvk_run.optim; PyTorch's formulas),
   NaN/Inf checks with hv_check_finite, weights loaded with hv_params_load_file (safetensors or
   PyTorch .pth).

   FILES a training run writes in its output folder:
     checkpoint.hvts     the library's train state (hv_train_state_save: every parameter, the
                         AdamW moments, the RNG, the step), for --resume; written every
                         --save-every steps and at the end, through a temporary file renamed
                         over the old one, so the last checkpoint on disk is always whole
                         (finetuning: its meta text holds the best evaluation so far)
     model.safetensors   the weights alone under their PyTorch names, what finetune and
                         extract_features (and PyTorch's safetensors) read
     model_best.safetensors  finetuning with a validation set: the weights of the evaluation
                         with the best top-1 so far (upstream eval_finetune.py keeps that one)
     log.csv             step, epoch, loss, lr, images/s, elapsed seconds, one row per step;
                         finetuning adds val_top1, val_top5 (percent) on the evaluated steps
     loss.svg            the loss curve, drawn at the end
   A step whose loss or gradients are NaN or Inf stops the run before the update and before any
   save: the files on disk are those of the last good checkpoint.
*/
#ifndef HV_KIT_H
#define HV_KIT_H

#include "humanvit.h"
#include "hv_data.h"
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

const char *hvk_last_error(void);
double hvk_now(void); /* seconds, monotonic */

/* ---- flags ---------------------------------------------------------------------------------- */
typedef enum { HVK_INT, HVK_FLOAT, HVK_STR, HVK_BOOL } hvk_flag_type;
typedef struct hvk_flag {
    const char *name;  /* "--batch-size"; '_' and '-' are interchangeable when matching */
    const char *alias; /* another spelling ("--batch_size_per_gpu") or NULL */
    hvk_flag_type type;
    void *ptr;         /* int*, double*, const char**, int* (BOOL: set to 1, no value) */
    const char *help;
} hvk_flag;
/* --name value or --name=value. Returns 0 to go on, 1 after printing --help (exit 0), 2 after
   printing an error to stderr (exit 2). */
int hvk_parse_flags(const char *prog, const char *summary, int argc, char **argv, const hvk_flag *flags, int n);
void hvk_print_help(FILE *f, const char *prog, const char *summary, const hvk_flag *flags, int n);
/* "cpu" or "vulkan"; an error (printed) for another name */
int hvk_check_backend(const char *prog, const char *backend);
/* The model's context on `backend` ("cpu" or "vulkan"; NULL: cpu), with hv_last_error() set when
   it cannot be made (Vulkan not compiled in, no loader or device). With Vulkan a CPU context is
   made beside it for the data: the kit's loaders fill batches there and upload them explicitly
   (hvk_data_ctx). Free both with hvk_shutdown. */
hv_ctx *hvk_init(const char *backend, uint64_t seed, int threads);
hv_ctx *hvk_data_ctx(hv_ctx *ctx); /* the CPU context of hvk_init's device context (else ctx) */
void hvk_shutdown(hv_ctx *ctx);

/* ---- files, logs, plots --------------------------------------------------------------------- */
int hvk_mkdirs(const char *path);                 /* mkdir -p */
/* a file written whole: fopen(<path>.tmp), then hvk_commit renames it over path */
FILE *hvk_open_tmp(const char *path, char *tmp_path, size_t n);
int hvk_commit(FILE *f, const char *tmp_path, const char *path);

typedef struct hvk_series {
    const char *name;
    int n;
    const double *x, *y;
    const double *ylo, *yhi; /* optional error bars (NULL) */
    const char *color;       /* NULL: a palette colour */
    int markers;             /* dots at the points */
    int dashed;
} hvk_series;
typedef struct hvk_plot {
    const char *title, *xlabel, *ylabel;
    int logx;                /* log10 x axis */
    double ymin, ymax;       /* both 0: from the data */
    int width, height;       /* [860 x 440]; the legend takes the right 210 pixels */
} hvk_plot;
/* an SVG line chart (axes, ticks, grid, polylines, legend), written atomically */
int hvk_svg_plot(const char *path, const hvk_plot *plot, const hvk_series *series, int nseries);

/* ---- data sets from a path ------------------------------------------------------------------ */
/* a folder -> image folder (hvd_dataset_folder); a file -> IDX images, with labels from
   labels_path, or else from the file named like it with "images-idx3" -> "labels-idx1" when that
   exists (unlabeled otherwise) */
hvd_dataset *hvk_open_dataset(const char *path, const char *labels_path);
/* "0.485,0.456,0.406" -> 1 or 3 floats (a single value is used for all channels); 0 or -1 */
int hvk_parse_floats3(const char *s, float out[3]);
/* --norm-mean / --norm-std (either NULL: left as they are) into tf; -1 with a message */
int hvk_set_norm(hvd_transform *tf, const char *mean, const char *std);
/* the upstream evaluation transform: Resize(resize, bicubic; 0: img + 32), CenterCrop(img) */
hvd_transform hvk_eval_transform(int img, int chans, int resize);

/* (rows, cols) f32 -> .npy through hv_npy_save (atomic) */
int hvk_npy_save_f32(hv_ctx *ctx, const char *path, const float *data, int64_t rows, int64_t cols);
/* (n) i32 labels -> .npy ('<i4') */
int hvk_npy_save_i32(hv_ctx *ctx, const char *path, const int32_t *data, int64_t n);

/* ---- model flags shared by the trainers ---------------------------------------------------- */
typedef struct hvk_model_opts {
    const char *model;   /* vits14 vitb14 vitl14 vith14 vith14@448 vith14@476, or "custom" */
    int img_size, patch_size, embed_dim, depth, num_heads, in_chans; /* 0: the preset's */
} hvk_model_opts;
/* the rows of a trainer's flag table (hvk_flag[]) that every trainer has alike */
#define HVK_MODEL_FLAGS(mo)                                                                                                   \
    {"--model", "--arch", HVK_STR, &(mo).model, "vits14 vitb14 vitl14 vith14 vith14@448 vith14@476, or custom"},               \
        {"--img-size", "--input_size", HVK_INT, &(mo).img_size, "image size (0: the model's)"},                                \
        {"--patch-size", NULL, HVK_INT, &(mo).patch_size, "patch size (0: the model's)"},                                      \
        {"--embed-dim", NULL, HVK_INT, &(mo).embed_dim, "encoder width (0: the model's)"},                                     \
        {"--depth", NULL, HVK_INT, &(mo).depth, "encoder blocks (0: the model's)"},                                            \
        {"--num-heads", NULL, HVK_INT, &(mo).num_heads, "encoder heads (0: the model's)"},                                     \
        {"--in-chans", NULL, HVK_INT, &(mo).in_chans, "input channels, 3 or 1 (0: 3)"}
#define HVK_NORM_FLAGS(mean, std)                                                                                             \
    {"--norm-mean", NULL, HVK_STR, &(mean), "Normalize mean, 1 or 3 values (default ImageNet's)"},                             \
        {"--norm-std", NULL, HVK_STR, &(std), "Normalize std, 1 or 3 values (default ImageNet's)"}
/* AdamW's flags, into an hvk_run */
#define HVK_OPTIM_FLAGS(run)                                                                                                  \
    {"--batch-size", "--batch_size_per_gpu", HVK_INT, &(run).batch_size, "images per step"},                                  \
        {"--lr", NULL, HVK_FLOAT, &(run).lr, "learning rate (constant)"},                                                      \
        {"--weight-decay", "--weight_decay", HVK_FLOAT, &(run).weight_decay, "AdamW weight decay"},                            \
        {"--beta1", NULL, HVK_FLOAT, &(run).beta1, "AdamW beta1"}, {"--beta2", NULL, HVK_FLOAT, &(run).beta2, "AdamW beta2"}
/* sizes read off a ViT's or MAE's parameters (patch_embed.proj.weight, pos_embed, blocks.N) */
void hvk_geometry(const hv_param_list *pl, int *img, int *patch, int *chans, int *dim, int *depth);
/* the encoder's descriptor; -1 (hvk_last_error) for an unknown name or missing custom sizes */
int hvk_vit_desc_from(const hvk_model_opts *o, hv_vit_desc *d);

/* ---- checkpoints ---------------------------------------------------------------------------- */
/* <dir>/checkpoint.hvts (train state, resumable; meta: text kept in it, NULL for none) and
   <dir>/model.safetensors (weights) */
int hvk_save_run(const char *dir, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt, int64_t step, const char *meta);
/* the weights alone as safetensors (device weights are downloaded first) */
int hvk_save_weights(const char *path, hv_ctx *ctx, const hv_param_list *params);
/* what hvk_load_weights did */
typedef struct hvk_loaded {
    int loaded, missing;      /* parameters filled / left alone (not in the file) */
    char missing_names[400];  /* the latter, comma-separated (cut short when long) */
    int grid_from, grid_to;   /* pos_embed interpolated from a grid_from^2 to a grid_to^2 table
                                 (another image size); both 0 when it was not */
} hvk_loaded;
/* load weights into params (strict=False: what matches by name; a shape mismatch is an error),
   as upstream load_model: a pos_embed of another grid is first interpolated (bicubic, CLS row
   kept: interpolate_pos_embed). Accepts safetensors and .pth; a .hvts is refused with a pointer
   to the model.safetensors beside it. */
int hvk_load_weights(const char *path, const hv_param_list *params, hvk_loaded *out);
/* --finetune / --weights: a file, else a published model id looked up by hv_model_resolve
   (models_dir, $HUMANVIT_MODELS, the Hugging Face cache); -1 with a message naming flag */
int hvk_resolve_weights(const char *flag, const char *arg, const char *models_dir, char *path, size_t n);
/* hvk_load_weights into a ViT, printing "[prog] loaded ..." (and the interpolation); an error
   when nothing matched, or with whole_trunk when any trunk parameter is not in the file */
int hvk_vit_load(hv_vit *vit, const char *path, const char *prog, int whole_trunk);

/* ---- recipes -------------------------------------------------------------------------------- */
typedef struct hvk_run {
    const char *prog;        /* prefix of progress lines */
    const char *output_dir;  /* log.csv, loss.svg, checkpoint.hvts, model.safetensors (NULL: none) */
    int64_t iters;           /* optimizer steps */
    int batch_size;
    double lr, beta1, beta2, eps, weight_decay;
    hv_optim_type optim;     /* [AdamW]; HV_OPTIM_ADAM: weight decay as L2 (the TC recipe's torch.optim.Adam) */
    int print_freq;          /* progress line every N steps [20]; 0 = quiet */
    int save_every;          /* checkpoint every N steps (0: only at the end) */
    int resume;              /* continue from output_dir/checkpoint.hvts when it exists */
    int workers;             /* loader threads */
    uint64_t seed;
    int quiet;               /* no progress lines at all */
    /* finetuning with a validation set (upstream eval_finetune.py evaluates every epoch) */
    int64_t eval_every;      /* evaluate every N steps, and at the last (0: at the last only) */
    int64_t steps_per_epoch; /* for the epoch numbers of evaluation lines (0: steps only) */
    int keep_best;           /* write model_best.safetensors whenever val top-1 improves */
} hvk_run;
typedef struct hvk_result {
    int64_t steps;           /* the step reached */
    int64_t start_step;      /* the step it resumed from (0: a new run); steps == start_step: none run */
    double final_loss;       /* of the last step, this run's or, with no step run, the checkpoint's
                                (NaN: a checkpoint that predates it) */
    double seconds, images_per_s;
    double top1, top5;       /* finetune / evaluate: the last evaluation */
    double best_top1, best_top5; /* finetune: the evaluation with the best top-1 (resume keeps it) */
    int64_t best_step;       /* its step (0: none) */
    int stopped_nan;
} hvk_result;
/* a run with these settings, print_freq 20, one loader worker and the rest 0: the trainers'
   defaults, which their flags then change in place */
hvk_run hvk_run_defaults(const char *prog, int batch_size, double lr, double weight_decay, double beta1, double beta2, int save_every);
/* the "done:" phrase of a run: "40 steps, final loss 0.1234", or for a resumed run with no step
   left "no step left to run (resumed at step 40), final loss 0.1234 as saved then" */
const char *hvk_steps_text(const hvk_result *res, char *buf, size_t n);

/* MAE pretraining on `data` with `tf` (the MAE recipe: hvd_transform_mae_pretrain). */
int hvk_mae_pretrain(hv_ctx *ctx, hv_mae *mae, hvd_dataset *data, const hvd_transform *tf, const hvk_run *run, hvk_result *res);
/* supervised training of a ViT with a head (all weights, or the head only with freeze_trunk)
   on `train`; top-1/top-5 on `val` (when not NULL) with `val_tf` every run->eval_every steps
   and at the end, the best one kept (run->keep_best) and remembered across --resume. */
int hvk_finetune(hv_ctx *ctx, hv_vit *vit, hvd_dataset *train, const hvd_transform *tf, hvd_dataset *val, const hvd_transform *val_tf,
                 int freeze_trunk, const hvk_run *run, hvk_result *res);
/* temporal classification (HSSL train_tc.py): a ResNeXt with fc, cross-entropy on the episode
   labels of `data`, BatchNorm in training mode; every weight trained */
int hvk_tc_train(hv_ctx *ctx, hv_resnext *net, hvd_dataset *data, const hvd_transform *tf, const hvk_run *run, hvk_result *res);
/* top-1 / top-5 of a ViT with a head on ds (no grad, eval-mode BatchNorm) */
int hvk_evaluate(hv_ctx *ctx, hv_vit *vit, hvd_dataset *ds, const hvd_transform *tf, int batch_size, int workers, double *top1,
                 double *top5);
/* CLS features (N, D) of a headless ViT, row i = sample i; malloc'd floats or NULL */
float *hvk_features(hv_ctx *ctx, hv_vit *vit, hvd_dataset *ds, const hvd_transform *tf, int batch_size, int workers, const char *prog);
/* linear probe on fixed features: BatchNorm1d(affine=False) + Linear trained with AdamW on
   (n, D) features, evaluated on (nt, D); the frozen-trunk condition without recomputing the
   trunk at every step (no augmentation) */
int hvk_probe_features(hv_ctx *ctx, const float *feat, const int32_t *labels, int64_t n, const float *test_feat,
                       const int32_t *test_labels, int64_t nt, int dim, int classes, int epochs, const hvk_run *run, hvk_result *res);

/* Perceptual MAE (LS-GAN variant) on `data` with `tf` (224x224 images: the discriminator takes
   no other size): per batch a generator step (disc frozen, hv_pmae_generator_loss) then a
   discriminator step (hv_pmae_disc_loss), each with its own MAE forward and random mask; Adam
   for each (run->lr, betas, no weight decay); the generator's lr times gamma every lr_step epochs
   (StepLR per epoch); copy refreshed from disc before every step of the epochs divisible by
   copy_every. Files: checkpoint.hvts + model.safetensors (the generator, as MAE pretraining
   writes them), discriminator.hvts (disc and its Adam), discriminator_copy.safetensors; log.csv
   has the generator loss, then d_loss and the unweighted terms l1, gan, perc, style. */
typedef struct hvk_pmae_opts {
    int copy_every;            /* [5] epochs */
    int lr_step;               /* [30] epochs */
    double lr_gamma;           /* [0.9] */
    int64_t steps_per_epoch;   /* batches per epoch (required) */
    hv_pmae_loss_desc weights; /* zeros: gan_perceptual's 1, 0.05, 40, 0.7 */
} hvk_pmae_opts;
int hvk_pmae_train(hv_ctx *ctx, hv_mae *mae, hv_disc *disc, hv_disc *copy, hvd_dataset *data, const hvd_transform *tf,
                   const hvk_pmae_opts *po, const hvk_run *run, hvk_result *res);

#ifdef __cplusplus
}
#endif
#endif /* HV_KIT_H */

/* ============================================================================================== */
#ifdef HV_KIT_IMPLEMENTATION
#ifndef HV_KIT_IMPLEMENTATION_DONE
#define HV_KIT_IMPLEMENTATION_DONE

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static char hvk__err[1024];
const char *hvk_last_error(void) { return hvk__err; }
static int hvk__fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hvk__err, sizeof hvk__err, fmt, ap);
    va_end(ap);
    return -1;
}

double hvk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- flags ---------------------------------------------------------------------------------- */

static int hvk__flag_eq(const char *a, const char *b, size_t blen) {
    size_t i;
    for (i = 0; i < blen; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (!a[i] || x != y) return 0;
    }
    return a[blen] == 0;
}

void hvk_print_help(FILE *f, const char *prog, const char *summary, const hvk_flag *flags, int n) {
    int i;
    fprintf(f, "usage: %s [flags]\n%s\n\nflags:\n", prog, summary);
    for (i = 0; i < n; i++) {
        char left[96];
        const char *arg = flags[i].type == HVK_INT ? " N" : flags[i].type == HVK_FLOAT ? " X" : flags[i].type == HVK_STR ? " S" : "";
        snprintf(left, sizeof left, "%s%s", flags[i].name, arg);
        fprintf(f, "  %-26s %s", left, flags[i].help);
        if (flags[i].type == HVK_INT) fprintf(f, " [%d]", *(int *)flags[i].ptr);
        else if (flags[i].type == HVK_FLOAT) fprintf(f, " [%g]", *(double *)flags[i].ptr);
        else if (flags[i].type == HVK_STR && *(const char **)flags[i].ptr) fprintf(f, " [%s]", *(const char **)flags[i].ptr);
        if (flags[i].alias) fprintf(f, " (also %s)", flags[i].alias);
        fputc('\n', f);
    }
    fprintf(f, "  %-26s %s\n", "--help", "this text");
}

int hvk_parse_flags(const char *prog, const char *summary, int argc, char **argv, const hvk_flag *flags, int n) {
    int a, i;
    for (a = 1; a < argc; a++) {
        const char *arg = argv[a], *eq, *val = NULL;
        size_t len;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            hvk_print_help(stdout, prog, summary, flags, n);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s' (flags start with --; see --help)\n", prog, arg);
            return 2;
        }
        eq = strchr(arg, '=');
        len = eq ? (size_t)(eq - arg) : strlen(arg);
        for (i = 0; i < n; i++)
            if (hvk__flag_eq(flags[i].name, arg, len) || (flags[i].alias && hvk__flag_eq(flags[i].alias, arg, len))) break;
        if (i == n) {
            fprintf(stderr, "%s: unknown flag '%.*s' (see --help)\n", prog, (int)len, arg);
            return 2;
        }
        if (flags[i].type == HVK_BOOL) {
            if (eq) {
                fprintf(stderr, "%s: %s takes no value\n", prog, flags[i].name);
                return 2;
            }
            *(int *)flags[i].ptr = 1;
            continue;
        }
        if (eq) val = eq + 1;
        else if (a + 1 < argc) val = argv[++a];
        else {
            fprintf(stderr, "%s: %s needs a value\n", prog, flags[i].name);
            return 2;
        }
        if (flags[i].type == HVK_STR) {
            *(const char **)flags[i].ptr = val;
        } else {
            char *end;
            double v;
            errno = 0;
            v = strtod(val, &end);
            if (!*val || *end || errno || v != v) {
                fprintf(stderr, "%s: %s: '%s' is not a number\n", prog, flags[i].name, val);
                return 2;
            }
            if (flags[i].type == HVK_INT) {
                if (v != floor(v) || v < -2147483647.0 || v > 2147483647.0) {
                    fprintf(stderr, "%s: %s: '%s' is not an integer\n", prog, flags[i].name, val);
                    return 2;
                }
                *(int *)flags[i].ptr = (int)v;
            } else {
                *(double *)flags[i].ptr = v;
            }
        }
    }
    return 0;
}

int hvk_check_backend(const char *prog, const char *backend) {
    if (!backend || !strcmp(backend, "cpu") || !strcmp(backend, "vulkan")) return 0;
    if (!strcmp(backend, "cuda")) fprintf(stderr, "%s: --backend cuda: not compiled in (CUDA kernels are planned)\n", prog);
    else fprintf(stderr, "%s: --backend '%s' is unknown (cpu, vulkan)\n", prog, backend);
    return -1;
}

/* the one device context of a program and its CPU companion (the examples make one of each) */
static hv_ctx *hvk__dev, *hvk__host;
hv_ctx *hvk_init(const char *backend, uint64_t seed, int threads) {
    hv_init_desc d;
    memset(&d, 0, sizeof d);
    d.seed = seed;
    d.threads = threads;
    if (!backend || strcmp(backend, "vulkan")) {
        hv_ctx *ctx = hv_init(&d);
        if (!ctx) hvk__fail("%s", hv_last_error());
        return ctx;
    }
    if (hvk__dev) return hvk__fail("hvk_init: one Vulkan context per program"), (hv_ctx *)NULL;
    if (!(hvk__host = hv_init(&d))) return NULL;
    d.backend = HV_BACKEND_VULKAN;
    if (!(hvk__dev = hv_init(&d))) {
        char why[512];
        snprintf(why, sizeof why, "%s", hv_last_error());
        hv_shutdown(hvk__host);
        hvk__host = NULL;
        hvk__fail("--backend vulkan: %s", why);
        return NULL;
    }
    return hvk__dev;
}
hv_ctx *hvk_data_ctx(hv_ctx *ctx) { return ctx && ctx == hvk__dev ? hvk__host : ctx; }
void hvk_shutdown(hv_ctx *ctx) {
    if (ctx && ctx == hvk__dev) {
        hv_shutdown(hvk__host);
        hvk__dev = hvk__host = NULL;
    }
    hv_shutdown(ctx);
}

/* a batch tensor of the data context, on the model's context: t itself on the CPU; else an
   explicit upload into *keep when it has t's shape (made on first use, so a training loop
   allocates nothing), or into a new tensor *fresh the caller frees (a short last batch) */
static hv_tensor *hvk__upload(hv_ctx *ctx, hv_tensor *t, hv_tensor **keep, hv_tensor **fresh) {
    hv_tensor *d = *keep;
    hv_shape a, b;
    *fresh = NULL;
    if (!t || hv_tensor_ctx(t) == ctx) return t;
    a = hv_tensor_shape(t);
    if (d) b = hv_tensor_shape(d);
    if (d && a.ndim == b.ndim && !memcmp(a.d, b.d, sizeof(int64_t) * (size_t)a.ndim) && hv_is_contiguous(t)) {
        const void *h = hv_tensor_dtype(t) == HV_I32 ? (const void *)hv_data_i32(t) : (const void *)hv_data(t);
        if (hv_tensor_copy_from(d, h, 4 * (size_t)hv_numel(t))) return hvk__fail("upload: %s", hv_last_error()), (hv_tensor *)NULL;
        return d;
    }
    if (!(d = hv_tensor_to(t, ctx))) return hvk__fail("upload: %s", hv_last_error()), (hv_tensor *)NULL;
    if (!*keep) *keep = d;
    else *fresh = d;
    return d;
}

/* ---- files ---------------------------------------------------------------------------------- */

int hvk_mkdirs(const char *path) {
    char buf[1024];
    size_t i, n = strlen(path);
    struct stat st;
    if (n == 0 || n >= sizeof buf) return hvk__fail("bad folder name '%s'", path);
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return hvk__fail("cannot create folder %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return hvk__fail("%s exists and is not a folder", path);
    return 0;
}

FILE *hvk_open_tmp(const char *path, char *tmp_path, size_t n) {
    FILE *f;
    snprintf(tmp_path, n, "%s.tmp", path);
    f = fopen(tmp_path, "wb");
    if (!f) hvk__fail("cannot write %s: %s", tmp_path, strerror(errno));
    return f;
}
int hvk_commit(FILE *f, const char *tmp_path, const char *path) {
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(tmp_path);
        return hvk__fail("error writing %s", tmp_path);
    }
    if (rename(tmp_path, path) != 0) {
        remove(tmp_path);
        return hvk__fail("cannot rename %s to %s: %s", tmp_path, path, strerror(errno));
    }
    return 0;
}

hvd_dataset *hvk_open_dataset(const char *path, const char *labels_path) {
    struct stat st;
    hvd_dataset *ds;
    if (!path || !*path) {
        hvk__fail("no data set given (--data-path)");
        return NULL;
    }
    if (stat(path, &st) != 0) {
        hvk__fail("data set %s: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) ds = hvd_dataset_folder(path);
    else {
        char guess[1100];
        const char *p = strstr(path, "images-idx3");
        if (!labels_path && p) {
            FILE *f;
            snprintf(guess, sizeof guess, "%.*slabels-idx1%s", (int)(p - path), path, p + strlen("images-idx3"));
            if ((f = fopen(guess, "rb")) != NULL) {
                fclose(f);
                labels_path = guess;
            }
        }
        ds = hvd_dataset_idx(path, labels_path);
    }
    if (!ds) hvk__fail("%s", hvd_last_error());
    return ds;
}

int hvk_vit_desc_from(const hvk_model_opts *o, hv_vit_desc *d) {
    memset(d, 0, sizeof *d);
    if (o->model && strcmp(o->model, "custom") != 0) {
        d->preset = hv_vit_preset_from_name(o->model);
        if (!d->preset) return hvk__fail("--model '%s' is unknown (vits14, vitb14, vitl14, vith14, vith14@448, vith14@476, custom)", o->model);
    } else if (!o->img_size || !o->patch_size || !o->embed_dim || !o->depth || !o->num_heads) {
        return hvk__fail("--model custom needs --img-size, --patch-size, --embed-dim, --depth and --num-heads");
    }
    d->img_size = o->img_size;
    d->patch_size = o->patch_size;
    d->embed_dim = o->embed_dim;
    d->depth = o->depth;
    d->num_heads = o->num_heads;
    d->in_chans = o->in_chans;
    return 0;
}

int hvk_npy_save_f32(hv_ctx *ctx, const char *path, const float *data, int64_t rows, int64_t cols) {
    hv_tensor *t = hv_tensor_from(ctx, HV_SHAPE(rows, cols), data);
    int r = t ? hv_npy_save(path, t) : -1;
    if (r) hvk__fail("%s: %s", path, hv_last_error());
    hv_tensor_free(t);
    return r;
}
int hvk_npy_save_i32(hv_ctx *ctx, const char *path, const int32_t *data, int64_t n) {
    hv_tensor *t = hv_tensor_new(ctx, HV_I32, HV_SHAPE(n));
    int r = t ? hv_tensor_copy_from(t, data, sizeof(int32_t) * (size_t)n) : -1;
    if (!r) r = hv_npy_save(path, t);
    if (r) hvk__fail("%s: %s", path, hv_last_error());
    hv_tensor_free(t);
    return r;
}

void hvk_geometry(const hv_param_list *pl, int *img, int *patch, int *chans, int *dim, int *depth) {
    int i, grid = 0;
    *img = *patch = *chans = *dim = *depth = 0;
    for (i = 0; i < pl->count; i++) {
        const char *n = pl->names[i];
        hv_tensor *t = pl->tensors[i];
        if (!strcmp(n, "patch_embed.proj.weight")) {
            *dim = (int)hv_dim(t, 0);
            *chans = (int)hv_dim(t, 1);
            *patch = (int)hv_dim(t, 2);
        } else if (!strcmp(n, "pos_embed")) {
            int64_t L = hv_dim(t, 1) - 1;
            while ((int64_t)(grid + 1) * (grid + 1) <= L) grid++;
        } else if (!strncmp(n, "blocks.", 7) && strstr(n, ".norm1.weight")) {
            (*depth)++;
        }
    }
    *img = grid * *patch;
}

int hvk_parse_floats3(const char *s, float out[3]) {
    int n = 0;
    char *end;
    while (*s && n < 3) {
        double v = strtod(s, &end);
        if (end == s) return -1;
        out[n++] = (float)v;
        s = end;
        if (*s == ',') s++;
        else break;
    }
    if (*s) return -1;
    if (n == 1) out[1] = out[2] = out[0];
    else if (n != 3) return -1;
    return 0;
}
int hvk_set_norm(hvd_transform *tf, const char *mean, const char *std) {
    if ((mean && hvk_parse_floats3(mean, tf->mean)) || (std && hvk_parse_floats3(std, tf->std)))
        return hvk__fail("--norm-mean/--norm-std take 1 or 3 comma-separated numbers");
    return 0;
}
hvd_transform hvk_eval_transform(int img, int chans, int resize) {
    hvd_transform tf = hvd_transform_eval(img);
    tf.resize = resize ? resize : img + 32;
    tf.channels = chans;
    return tf;
}

/* ---- SVG plots ------------------------------------------------------------------------------ */

static double hvk__nice_step(double range, int target) {
    double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}
static void hvk__xml(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

int hvk_svg_plot(const char *path, const hvk_plot *p, const hvk_series *s, int ns) {
    static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"};
    int W = p->width ? p->width : 860, H = p->height ? p->height : 440, L = 72, R = 24, T = 40, B = 56, i, k, named = 0;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, step, t;
    char tmp[1100];
    FILE *f;
    for (i = 0; i < ns; i++) named += s[i].name != NULL;
    if (named) R = 210; /* the legend sits right of the plot, clear of the data */
    for (i = 0; i < ns; i++)
        for (k = 0; k < s[i].n; k++) {
            double x = s[i].x[k], y = s[i].y[k], lo = s[i].ylo ? s[i].ylo[k] : y, hi = s[i].yhi ? s[i].yhi[k] : y;
            if (!isfinite(x) || !isfinite(y) || (p->logx && x <= 0)) continue;
            if (p->logx) x = log10(x);
            x0 = x < x0 ? x : x0;
            x1 = x > x1 ? x : x1;
            y0 = lo < y0 ? lo : y0;
            y1 = hi > y1 ? hi : y1;
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (p->ymin != 0 || p->ymax != 0) y0 = p->ymin, y1 = p->ymax;
    if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
    if (p->logx) x0 = floor(x0 + 1e-9), x1 = ceil(x1 - 1e-9);
    if (p->ymin == 0 && p->ymax == 0) { /* pad the data range to round ticks */
        step = hvk__nice_step(y1 - y0, 5);
        y0 = floor(y0 / step) * step;
        y1 = ceil(y1 / step) * step;
    }
    if (!(f = hvk_open_tmp(path, tmp, sizeof tmp))) return -1;
#define HVK__PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define HVK__PY(y) (H - B - ((y) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", W / 2);
    hvk__xml(f, p->title);
    fprintf(f, "</text>\n");
    /* y ticks and grid */
    step = hvk__nice_step(y1 - y0, 5);
    for (t = ceil(y0 / step - 1e-9) * step; t <= y1 + step * 1e-6; t += step) {
        double py = HVK__PY(t);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", L, py, W - R, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, py + 4, fabs(t) < step * 1e-6 ? 0.0 : t);
    }
    /* x ticks */
    if (p->logx) {
        for (t = x0; t <= x1 + 1e-9; t += 1) {
            double px = HVK__PX(t);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>\n", px, T, px, H - B);
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", px, H - B + 18, pow(10, t));
        }
    } else {
        step = hvk__nice_step(x1 - x0, 6);
        for (t = ceil(x0 / step - 1e-9) * step; t <= x1 + step * 1e-6; t += step) {
            double px = HVK__PX(t);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>\n", px, T, px, H - B);
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", px, H - B + 18, fabs(t) < step * 1e-6 ? 0.0 : t);
        }
    }
    /* axes and labels */
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T, L, H - B);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (L + W - R) / 2, H - 14);
    hvk__xml(f, p->xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(18 %d) rotate(-90)\" text-anchor=\"middle\">", (T + H - B) / 2);
    hvk__xml(f, p->ylabel);
    fprintf(f, "</text>\n");
    /* series */
    for (i = 0; i < ns; i++) {
        const char *col = s[i].color ? s[i].color : palette[i % 8];
        int first = 1;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"", col, s[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (k = 0; k < s[i].n; k++) {
            double x = s[i].x[k], y = s[i].y[k];
            if (!isfinite(x) || !isfinite(y) || (p->logx && x <= 0)) continue;
            if (p->logx) x = log10(x);
            fprintf(f, "%s%.1f,%.1f", first ? "" : " ", HVK__PX(x), HVK__PY(y));
            first = 0;
        }
        fprintf(f, "\"/>\n");
        for (k = 0; k < s[i].n; k++) {
            double x = s[i].x[k], y = s[i].y[k];
            if (!isfinite(x) || !isfinite(y) || (p->logx && x <= 0)) continue;
            if (p->logx) x = log10(x);
            if (s[i].ylo && s[i].yhi)
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", HVK__PX(x), HVK__PY(s[i].ylo[k]),
                        HVK__PX(x), HVK__PY(s[i].yhi[k]), col);
            if (s[i].markers) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", HVK__PX(x), HVK__PY(y), col);
        }
        /* legend entry */
        if (s[i].name) {
            int ly = T + 8 + 18 * i, lx = W - R + 14;
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", lx, ly, lx + 24, ly, col,
                    s[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
            fprintf(f, "<text x=\"%d\" y=\"%d\">", lx + 30, ly + 4);
            hvk__xml(f, s[i].name);
            fprintf(f, "</text>\n");
        }
    }
#undef HVK__PX
#undef HVK__PY
    fprintf(f, "</svg>\n");
    return hvk_commit(f, tmp, path);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

int hvk_save_weights(const char *path, hv_ctx *ctx, const hv_param_list *params) {
    hv_state_dict *sd;
    int r = 0;
    if (hvk_data_ctx(ctx) != ctx) { /* device weights: downloaded explicitly, one tensor at a time */
        hv_ctx *host = hvk_data_ctx(ctx);
        int i;
        if (!(sd = hv_state_dict_new(host))) return hvk__fail("%s: %s", path, hv_last_error());
        for (i = 0; i < params->count; i++) {
            hv_tensor *h = hv_tensor_to(params->tensors[i], host);
            if (!h || hv_state_dict_add(sd, params->names[i], h)) {
                hv_tensor_free(h);
                r = -1;
                break;
            }
        }
        if (i == params->count) r = hv_safetensors_save(sd, path);
        for (i = 0; i < hv_state_dict_count(sd); i++) hv_tensor_free(hv_state_dict_at(sd, i));
    } else {
        if (!(sd = hv_params_state_dict(ctx, params))) return hvk__fail("%s: %s", path, hv_last_error());
        r = hv_safetensors_save(sd, path);
    }
    hv_state_dict_free(sd);
    return r ? hvk__fail("%s", hv_last_error()) : 0;
}

int hvk_save_run(const char *dir, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt, int64_t step, const char *meta) {
    char path[1100];
    hv_train_info info;
    memset(&info, 0, sizeof info);
    info.step = step;
    info.user[0] = step; /* batches consumed: one per step */
    if (meta) snprintf(info.meta, sizeof info.meta, "%s", meta);
    snprintf(path, sizeof path, "%s/checkpoint.hvts", dir);
    if (hv_train_state_save(path, ctx, params, opt, &info)) return hvk__fail("%s", hv_last_error());
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return hvk_save_weights(path, ctx, params);
}

/* side of the square grid of a (1, 1 + g*g, D) position table; 0 when it is not one */
static int hvk__pos_grid(const hv_tensor *t) {
    int64_t L = hv_tensor_shape(t).ndim == 3 ? hv_dim(t, 1) - 1 : -1, g = 0;
    while ((g + 1) * (g + 1) <= L) g++;
    return L > 0 && g * g == L ? (int)g : 0;
}

/* hv_params_load_file's map: a pos_embed table of another grid and the model's width is
   interpolated to the model's grid (upstream interpolate_pos_embed) on its way in; every other
   tensor, and a mismatch of another kind, goes to the strict-shape load as it is */
static hv_tensor *hvk__pos_embed_map(void *user, const char *name, hv_tensor *t, const hv_tensor *dst) {
    hvk_loaded *out = (hvk_loaded *)user;
    int from = hvk__pos_grid(t), to = hvk__pos_grid(dst);
    hv_tensor *interp;
    if (strcmp(name, "pos_embed") || !from || !to || from == to || hv_dim(t, 2) != hv_dim(dst, 2)) return t;
    if (!(interp = hv_pos_embed_interpolate(t, to))) return NULL;
    out->grid_from = from;
    out->grid_to = to;
    return interp;
}

/* the parameters of host tensors from path, in one pass over the file (one checkpoint tensor in
   memory at a time) */
static int hvk__load_host(const hv_param_list *params, const char *path, hv_load_result *res, hvk_loaded *out) {
    if (hv_params_load_file_map(params, path, NULL, res, hvk__pos_embed_map, out)) return hvk__fail("%s", hv_last_error());
    return 0;
}

int hvk_load_weights(const char *path, const hv_param_list *params, hvk_loaded *out) {
    hv_load_result res;
    size_t len = strlen(path), used = 0;
    int i;
    memset(out, 0, sizeof *out);
    if (len > 5 && !strcmp(path + len - 5, ".hvts"))
        return hvk__fail("%s is a resumable train state; load the weights from the model.safetensors beside it", path);
    memset(&res, 0, sizeof res);
    if (params->count > 0 && hvk_data_ctx(hv_tensor_ctx(params->tensors[0])) != hv_tensor_ctx(params->tensors[0])) {
        /* device parameters: loaded into host copies, then uploaded explicitly */
        hv_ctx *host = hvk_data_ctx(hv_tensor_ctx(params->tensors[0]));
        hv_tensor **h = (hv_tensor **)calloc((size_t)params->count, sizeof *h);
        hv_param_list hl;
        int rc = 0;
        if (!h) return hvk__fail("out of memory");
        for (i = 0; i < params->count && rc == 0; i++)
            if (!(h[i] = hv_tensor_to(params->tensors[i], host))) rc = hvk__fail("%s", hv_last_error());
        hl.count = params->count;
        hl.names = params->names;
        hl.tensors = h;
        if (rc == 0) rc = hvk__load_host(&hl, path, &res, out);
        for (i = 0; rc == 0 && i < params->count; i++) {
            const void *src = hv_tensor_dtype(h[i]) == HV_I32 ? (const void *)hv_data_i32(h[i]) : (const void *)hv_data(h[i]);
            if (hv_tensor_copy_from(params->tensors[i], src, 4 * (size_t)hv_numel(h[i]))) rc = hvk__fail("%s", hv_last_error());
        }
        for (i = 0; i < params->count; i++) hv_tensor_free(h[i]);
        free(h);
        if (rc) return rc;
    } else if (hvk__load_host(params, path, &res, out))
        return -1;
    out->loaded = res.loaded;
    out->missing = res.missing_count;
    for (i = 0; i < res.missing_count; i++)
        if (used + strlen(res.missing[i]) + 3 < sizeof out->missing_names)
            used += (size_t)snprintf(out->missing_names + used, sizeof out->missing_names - used, "%s%s", used ? ", " : "", res.missing[i]);
    hv_load_result_free(&res);
    return 0;
}

int hvk_resolve_weights(const char *flag, const char *arg, const char *models_dir, char *path, size_t n) {
    FILE *f = fopen(arg, "rb");
    hv_model_id id;
    if (f) {
        fclose(f);
        snprintf(path, n, "%s", arg);
        return 0;
    }
    if (hv_model_id_parse(arg, &id) != 0) return hvk__fail("%s %s: no such file, and not a model id (%s)", flag, arg, hv_last_error());
    if (hv_model_resolve(arg, 0, models_dir, path, n) != 0) return hvk__fail("%s: %s", flag, hv_last_error());
    return 0;
}

int hvk_vit_load(hv_vit *vit, const char *path, const char *prog, int whole_trunk) {
    hvk_loaded ld;
    int img, patch, chans, dim, depth;
    if (hvk_load_weights(path, hv_vit_params(vit), &ld)) return -1;
    if (ld.loaded == 0) return hvk__fail("%s: no tensor of this model in the file (another architecture? check --model and the sizes)", path);
    if (whole_trunk && ld.missing > 0)
        return hvk__fail("%s does not hold this model's trunk (%d tensors matched, missing: %s); check --model and the sizes", path, ld.loaded,
                         ld.missing_names);
    hvk_geometry(hv_vit_params(vit), &img, &patch, &chans, &dim, &depth);
    if (ld.grid_from)
        printf("[%s] interpolated pos_embed from grid %dx%d to %dx%d (bicubic, CLS row kept): the checkpoint was trained on %d-pixel "
               "images, this model takes %d\n",
               prog, ld.grid_from, ld.grid_from, ld.grid_to, ld.grid_to, ld.grid_from * patch, img);
    printf("[%s] loaded %d tensors from %s; %d not in the file (new): %s\n", prog, ld.loaded, path, ld.missing, ld.missing ? ld.missing_names : "-");
    return 0;
}

/* ---- progress, logs ------------------------------------------------------------------------- */

static void hvk__hms(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}
static void hvk__progress(const char *prog, int64_t step, int64_t total, int64_t epoch, double loss, double lr, double ips,
                          double elapsed) {
    char el[32], eta[32];
    hvk__hms(elapsed, el, sizeof el);
    hvk__hms(step > 0 ? elapsed / (double)step * (double)(total - step) : 0, eta, sizeof eta);
    printf("[%s] step %lld/%lld  epoch %lld  loss %.4f  lr %.2e  %.0f img/s  elapsed %s  ETA %s\n", prog, (long long)step,
           (long long)total, (long long)epoch, loss, lr, ips, el, eta);
    fflush(stdout);
}

typedef struct hvk__log {
    FILE *csv;
    double *steps, *losses;
    int64_t n, cap;
} hvk__log;
/* extra: more header columns (",val_top1,val_top5") or NULL */
static int hvk__log_open(hvk__log *lg, const char *dir, int append, const char *extra) {
    char path[1100];
    memset(lg, 0, sizeof *lg);
    if (!dir) return 0;
    snprintf(path, sizeof path, "%s/log.csv", dir);
    lg->csv = fopen(path, append ? "ab" : "wb");
    if (!lg->csv) return hvk__fail("cannot write %s: %s", path, strerror(errno));
    if (!append || ftell(lg->csv) == 0) fprintf(lg->csv, "step,epoch,loss,lr,images_per_s,elapsed_s%s\n", extra ? extra : "");
    return 0;
}
/* extra: the cells of the extra columns (",12.5,40.1" or ",,") or NULL */
static void hvk__log_row(hvk__log *lg, int64_t step, int64_t epoch, double loss, double lr, double ips, double el, const char *extra) {
    if (lg->n == lg->cap) {
        int64_t cap = lg->cap ? lg->cap * 2 : 1024;
        double *a = (double *)realloc(lg->steps, sizeof(double) * (size_t)cap), *b;
        if (!a) return;
        lg->steps = a;
        b = (double *)realloc(lg->losses, sizeof(double) * (size_t)cap);
        if (!b) return;
        lg->losses = b;
        lg->cap = cap;
    }
    lg->steps[lg->n] = (double)step;
    lg->losses[lg->n++] = loss;
    if (lg->csv) {
        fprintf(lg->csv, "%lld,%lld,%.6f,%.6g,%.1f,%.2f%s\n", (long long)step, (long long)epoch, loss, lr, ips, el, extra ? extra : "");
        fflush(lg->csv);
    }
}
/* the loss curve: per-step losses (light) and their running mean over ~2% of the run (dark) */
static void hvk__log_close(hvk__log *lg, const char *dir, const char *title) {
    if (dir && lg->n > 0) {
        char path[1100];
        hvk_series s[2];
        hvk_plot p;
        double *smooth = (double *)malloc(sizeof(double) * (size_t)lg->n), acc = 0;
        int64_t i, w = lg->n / 50 > 1 ? lg->n / 50 : 1;
        memset(s, 0, sizeof s);
        memset(&p, 0, sizeof p);
        if (smooth) {
            for (i = 0; i < lg->n; i++) {
                acc += lg->losses[i];
                if (i >= w) acc -= lg->losses[i - w];
                smooth[i] = acc / (double)(i + 1 < w ? i + 1 : w);
            }
        }
        s[0].name = "loss";
        s[0].n = (int)lg->n;
        s[0].x = lg->steps;
        s[0].y = lg->losses;
        s[0].color = "#9ecae1";
        s[1].name = "running mean";
        s[1].n = smooth ? (int)lg->n : 0;
        s[1].x = lg->steps;
        s[1].y = smooth;
        s[1].color = "#08519c";
        p.title = title;
        p.xlabel = "step";
        p.ylabel = "training loss";
        snprintf(path, sizeof path, "%s/loss.svg", dir);
        if (hvk_svg_plot(path, &p, s, 2)) fprintf(stderr, "warning: %s\n", hvk_last_error());
        free(smooth);
    }
    if (lg->csv) fclose(lg->csv);
    free(lg->steps);
    free(lg->losses);
    memset(lg, 0, sizeof *lg);
}

/* ---- the training loop shared by pretraining and finetuning --------------------------------- */

typedef hv_tensor *(*hvk__loss_fn)(void *model, hv_tensor *images, hv_tensor *labels);

static hv_optim *hvk__optimizer(hv_ctx *ctx, const hv_param_list *params, const hvk_run *run) {
    hv_optim_desc od;
    memset(&od, 0, sizeof od);
    od.type = run->optim;
    od.lr = (float)run->lr;
    od.beta1 = (float)(run->beta1 ? run->beta1 : 0.9);
    od.beta2 = (float)(run->beta2 ? run->beta2 : 0.999);
    od.eps = (float)(run->eps ? run->eps : 1e-8);
    od.weight_decay = (float)run->weight_decay;
    od.decay_rule = HV_DECAY_ALL; /* humanlike-vits: every parameter (and wd 0 in pretraining) */
    return hv_optim_new(ctx, params, &od);
}

/* finetuning's validation inside the training loop: every run->eval_every steps and at the last,
   the best top-1 kept (model_best.safetensors) and carried in the train state's meta text */
typedef struct hvk__val {
    hv_vit *vit;
    hvd_dataset *ds;
    const hvd_transform *tf;
    int64_t last_step;          /* of the latest evaluation (-1: none in this process) */
    double top1, top5;          /* the latest */
    int64_t best_step;          /* 0: none yet */
    double best1, best5;
    char meta[160], cells[64];  /* "best_step ..." for the checkpoint; this step's log cells */
} hvk__val;

/* "epoch 3" at an epoch's end, "epoch 2.50" inside one, "" without epochs */
static const char *hvk__epoch_str(const hvk_run *run, int64_t step, char *buf, size_t n) {
    int64_t spe = run->steps_per_epoch;
    if (spe <= 0) buf[0] = 0;
    else if (step % spe == 0) snprintf(buf, n, " (epoch %lld)", (long long)(step / spe));
    else snprintf(buf, n, " (epoch %.2f)", (double)step / (double)spe);
    return buf;
}

/* the train state with its meta text, read back on --resume: the best-so-far and the loss of the
   last step (the final loss of a resumed run with no step left) */
static int hvk__save_state(const char *dir, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt, int64_t step, double loss,
                           const hvk__val *val) {
    char meta[240];
    snprintf(meta, sizeof meta, "%s%slast_loss %.9g", val ? val->meta : "", val && val->meta[0] ? " " : "", loss);
    return hvk_save_run(dir, ctx, params, opt, step, meta);
}

/* the best-so-far, and its part of the train state's meta text */
static void hvk__val_best(hvk__val *v, int64_t step, double top1, double top5) {
    v->best_step = step;
    v->best1 = top1;
    v->best5 = top5;
    snprintf(v->meta, sizeof v->meta, "best_step %lld best_top1 %.17g best_top5 %.17g", (long long)step, top1, top5);
}

static int hvk__validate(hv_ctx *ctx, hvk__val *v, const hvk_run *run, const hv_param_list *params, int64_t step) {
    double t = hvk_now();
    char ep[48], bep[48];
    int better;
    if (hvk_evaluate(ctx, v->vit, v->ds, v->tf, run->batch_size * 2, run->workers, &v->top1, &v->top5)) return -1;
    v->last_step = step;
    better = v->best_step == 0 || v->top1 > v->best1;
    if (better) hvk__val_best(v, step, v->top1, v->top5);
    if (better && run->keep_best && run->output_dir) {
        char path[1100];
        snprintf(path, sizeof path, "%s/model_best.safetensors", run->output_dir);
        if (hvk_save_weights(path, ctx, params)) return -1;
    }
    snprintf(v->cells, sizeof v->cells, ",%.4f,%.4f", 100 * v->top1, 100 * v->top5);
    if (!run->quiet)
        printf("[%s] validation at step %lld%s: top-1 %.2f%%  top-5 %.2f%%  (%lld images, %.1f s); best top-1 %.2f%% at step %lld%s%s\n",
               run->prog, (long long)step, hvk__epoch_str(run, step, ep, sizeof ep), 100 * v->top1, 100 * v->top5,
               (long long)hvd_dataset_size(v->ds), hvk_now() - t, 100 * v->best1, (long long)v->best_step,
               hvk__epoch_str(run, v->best_step, bep, sizeof bep), better && run->keep_best && run->output_dir ? ", saved model_best.safetensors" : "");
    return 0;
}

/* the shuffled, drop-last batch stream of a training run from batch `step` on (a resumed run
   continues the same stream), loaded on the CPU context of ctx; NULL with hvd_last_error set */
static hvd_loader *hvk__train_loader(hv_ctx *ctx, hvd_dataset *data, const hvd_transform *tf, const hvk_run *run, int64_t step) {
    hvd_loader_desc ld;
    memset(&ld, 0, sizeof ld);
    ld.dataset = data;
    ld.transform = *tf;
    ld.batch_size = run->batch_size;
    ld.shuffle = 1;
    ld.drop_last = 1;
    ld.workers = run->workers;
    ld.seed = run->seed;
    ld.start_batch = step;
    return hvd_loader_new(hvk_data_ctx(ctx), &ld);
}
static int hvk__train(hv_ctx *ctx, const char *title, void *model, hvk__loss_fn loss_fn, const hv_param_list *params, hvd_dataset *data,
                      const hvd_transform *tf, const hvk_run *run, hvk__val *val, hvk_result *res) {
    hvd_loader *loader = NULL;
    hv_optim *opt;
    hv_tensor *xd = NULL, *yd = NULL; /* the batch on the model's context (Vulkan) */
    hvk__log lg;
    char ckpt[1100];
    const char *dir = run->output_dir;
    int64_t step = 0, start;
    long long best_step;
    double b1, b5, t0, t_last, seen_since = 0, ips = 0, loss_v = NAN;
    int rc = 0, print_freq = run->quiet ? 0 : (run->print_freq ? run->print_freq : 20);
    memset(res, 0, sizeof *res);
    ckpt[0] = 0;
    if (dir) snprintf(ckpt, sizeof ckpt, "%s/checkpoint.hvts", dir);
    if (!(opt = hvk__optimizer(ctx, params, run))) return hvk__fail("optimizer: %s", hv_last_error());
    if (run->resume && ckpt[0]) {
        FILE *f = fopen(ckpt, "rb");
        if (f) {
            hv_train_info info;
            const char *m;
            fclose(f);
            if (hv_train_state_load(ckpt, ctx, params, opt, &info)) {
                hv_optim_free(opt);
                return hvk__fail("--resume: %s", hv_last_error());
            }
            step = info.step;
            if ((m = strstr(info.meta, "last_loss ")) != NULL) loss_v = strtod(m + 10, NULL);
            if (val && (m = strstr(info.meta, "best_step ")) != NULL &&
                sscanf(m, "best_step %lld best_top1 %lf best_top5 %lf", &best_step, &b1, &b5) == 3 && best_step > 0)
                hvk__val_best(val, (int64_t)best_step, b1, b5);
            if (!run->quiet) printf("[%s] resumed from %s at step %lld%s\n", run->prog, ckpt, (long long)step, val && val->best_step ? ", best-so-far kept" : "");
        } else if (!run->quiet) {
            printf("[%s] --resume: no %s yet, starting from scratch\n", run->prog, ckpt);
        }
    }
    start = step;
    memset(&lg, 0, sizeof lg); /* log.csv is opened after the first good step: a run that fails at
                                  once (bad data, bad model) leaves the output folder as it was */
    if (step >= run->iters) goto finish;
    if (!(loader = hvk__train_loader(ctx, data, tf, run, step))) {
        rc = hvk__fail("%s", hvd_last_error());
        goto finish;
    }
    t0 = t_last = hvk_now();
    while (step < run->iters) {
        hv_tensor *x, *y, *loss, *fx, *fy;
        int n = hvd_loader_next(loader, &x, &y);
        if (n <= 0) {
            rc = hvk__fail("data: %s", n < 0 ? hvd_last_error() : "the loader ended early");
            break;
        }
        { /* Vulkan: the batch goes up explicitly; drop_last, so always into the kept buffers */
            hv_tensor *hy = y;
            x = hvk__upload(ctx, x, &xd, &fx);
            y = x ? hvk__upload(ctx, y, &yd, &fy) : NULL;
            if (!x || (hy && !y)) {
                rc = -1;
                break;
            }
        }
        loss = loss_fn(model, x, y);
        hv_optim_zero_grad(opt);
        if (!loss || hv_backward(loss)) {
            rc = hvk__fail("step %lld: %s", (long long)step + 1, hv_last_error());
            break;
        }
        loss_v = hv_item(loss);
        if (hv_check_finite(loss, params, NULL)) {
            res->stopped_nan = 1;
            rc = hvk__fail("step %lld: %s; stopped before the update%s%s", (long long)step + 1, hv_last_error(),
                           ckpt[0] && step > start ? ", the last good checkpoint is " : " (nothing saved)",
                           ckpt[0] && step > start ? ckpt : "");
            break;
        }
        hv_optim_step(opt);
        hv_step_end(ctx);
        hv_tensor_free(fx); /* NULL: drop_last gives one batch shape */
        hv_tensor_free(fy);
        step++;
        seen_since += n;
        if (step == start + 1 && hvk__log_open(&lg, dir, start > 0, val ? ",val_top1,val_top5" : NULL)) {
            rc = -1;
            break;
        }
        {
            double now = hvk_now();
            if (now - t_last > 0.5 || step == run->iters) {
                ips = seen_since / (now - t_last);
                seen_since = 0;
                t_last = now;
            }
            if (print_freq && (step % print_freq == 0 || step == run->iters || step == start + 1))
                hvk__progress(run->prog, step, run->iters, hvd_loader_epoch(loader), loss_v, run->lr, ips, now - t0);
            /* before the checkpoint, so that it holds the best-so-far */
            if (val && (step == run->iters || (run->eval_every > 0 && step % run->eval_every == 0)) &&
                hvk__validate(ctx, val, run, params, step)) {
                rc = -1;
                break;
            }
            hvk__log_row(&lg, step, hvd_loader_epoch(loader), loss_v, run->lr, ips, now - t0,
                         !val ? NULL : val->last_step == step ? val->cells : ",,");
        }
        if (dir && run->save_every > 0 && step % run->save_every == 0 && step < run->iters &&
            hvk__save_state(dir, ctx, params, opt, step, loss_v, val)) {
            rc = -1;
            break;
        }
    }
    res->seconds = hvk_now() - t0;
    res->images_per_s = res->seconds > 0 ? (double)(step - start) * run->batch_size / res->seconds : 0;
    if (rc == 0 && dir && hvk__save_state(dir, ctx, params, opt, step, loss_v, val)) rc = -1;
finish:
    hv_step_end(ctx);
    res->steps = step;
    res->start_step = start;
    res->final_loss = loss_v;
    hvd_loader_free(loader);
    hv_tensor_free(xd);
    hv_tensor_free(yd);
    hvk__log_close(&lg, dir, title);
    hv_optim_free(opt);
    return rc;
}

hvk_run hvk_run_defaults(const char *prog, int batch_size, double lr, double weight_decay, double beta1, double beta2, int save_every) {
    hvk_run r;
    memset(&r, 0, sizeof r);
    r.prog = prog;
    r.batch_size = batch_size;
    r.lr = lr;
    r.weight_decay = weight_decay;
    r.beta1 = beta1;
    r.beta2 = beta2;
    r.save_every = save_every;
    r.print_freq = 20;
    r.workers = 1;
    return r;
}

const char *hvk_steps_text(const hvk_result *res, char *buf, size_t n) {
    char loss[32];
    if (isnan(res->final_loss)) snprintf(loss, sizeof loss, "unknown"); /* a checkpoint that does not carry it */
    else snprintf(loss, sizeof loss, "%.4f", res->final_loss);
    if (res->steps > res->start_step) snprintf(buf, n, "%lld steps, final loss %s", (long long)res->steps, loss);
    else snprintf(buf, n, "no step left to run (resumed at step %lld), final loss %s as saved then", (long long)res->steps, loss);
    return buf;
}

static hv_tensor *hvk__mae_loss(void *model, hv_tensor *images, hv_tensor *labels) {
    (void)labels;
    return hv_mae_forward((hv_mae *)model, images, NULL, NULL, NULL);
}
int hvk_mae_pretrain(hv_ctx *ctx, hv_mae *mae, hvd_dataset *data, const hvd_transform *tf, const hvk_run *run, hvk_result *res) {
    return hvk__train(ctx, "MAE pretraining loss", mae, hvk__mae_loss, hv_mae_params(mae), data, tf, run, NULL, res);
}

static hv_tensor *hvk__tc_loss(void *model, hv_tensor *images, hv_tensor *labels) {
    return hv_cross_entropy(hv_resnext_forward((hv_resnext *)model, images, 1), labels);
}
int hvk_tc_train(hv_ctx *ctx, hv_resnext *net, hvd_dataset *data, const hvd_transform *tf, const hvk_run *run, hvk_result *res) {
    return hvk__train(ctx, "temporal classification loss", net, hvk__tc_loss, hv_resnext_params(net), data, tf, run, NULL, res);
}

static hv_tensor *hvk__ce_loss(void *model, hv_tensor *images, hv_tensor *labels) {
    return hv_cross_entropy(hv_vit_forward((hv_vit *)model, images, 1), labels);
}
int hvk_finetune(hv_ctx *ctx, hv_vit *vit, hvd_dataset *train, const hvd_transform *tf, hvd_dataset *val, const hvd_transform *val_tf,
                 int freeze_trunk, const hvk_run *run, hvk_result *res) {
    const hv_param_list *pl = hv_vit_params(vit);
    hvk__val v;
    int i, rc;
    int *was = (int *)calloc((size_t)pl->count + 1, sizeof(int));
    if (!was) return hvk__fail("out of memory");
    for (i = 0; i < pl->count; i++) {
        was[i] = hv_requires_grad(pl->tensors[i]);
        if (freeze_trunk && strncmp(pl->names[i], "head.", 5) != 0) hv_set_trainable(pl->tensors[i], 0);
    }
    memset(&v, 0, sizeof v);
    v.vit = vit;
    v.ds = val;
    v.tf = val_tf;
    v.last_step = -1;
    rc = hvk__train(ctx, freeze_trunk ? "linear probe loss" : "finetuning loss", vit, hvk__ce_loss, pl, train, tf, run, val ? &v : NULL, res);
    for (i = 0; i < pl->count; i++) hv_set_trainable(pl->tensors[i], was[i]);
    free(was);
    /* a resumed run with no step left still reports its final accuracy */
    if (rc == 0 && val && v.last_step != res->steps) rc = hvk__validate(ctx, &v, run, pl, res->steps);
    if (rc == 0 && val) {
        res->top1 = v.top1;
        res->top5 = v.top5;
        res->best_top1 = v.best1;
        res->best_top5 = v.best5;
        res->best_step = v.best_step;
    }
    return rc;
}

/* one pass over ds in order: calls fn(ctx, x, y, n, offset, arg) per batch, no grad */
typedef int (*hvk__batch_fn)(hv_tensor *x, hv_tensor *y, int n, int64_t offset, void *arg);
static int hvk__for_batches(hv_ctx *ctx, hvd_dataset *ds, const hvd_transform *tf, int batch_size, int workers, hvk__batch_fn fn, void *arg) {
    hvd_loader_desc d;
    hvd_loader *ld;
    hv_tensor *x, *y, *xd = NULL, *yd = NULL, *fx = NULL, *fy = NULL;
    int n, rc = 0, prev = hv_set_grad_enabled(ctx, 0);
    int64_t off = 0;
    memset(&d, 0, sizeof d);
    d.dataset = ds;
    d.transform = *tf;
    d.batch_size = batch_size;
    d.epochs = 1;
    d.workers = workers;
    if (!(ld = hvd_loader_new(hvk_data_ctx(ctx), &d))) {
        hv_set_grad_enabled(ctx, prev);
        return hvk__fail("%s", hvd_last_error());
    }
    while ((n = hvd_loader_next(ld, &x, &y)) > 0) {
        hv_tensor *ux = hvk__upload(ctx, x, &xd, &fx), *uy = ux ? hvk__upload(ctx, y, &yd, &fy) : NULL;
        if (!ux || (y && !uy)) {
            rc = -1;
            break;
        }
        rc = fn(ux, uy, n, off, arg);
        hv_tensor_free(fx);
        hv_tensor_free(fy);
        fx = fy = NULL;
        if (rc != 0) break;
        off += n;
        hv_step_end(ctx);
    }
    hv_tensor_free(fx);
    hv_tensor_free(fy);
    hv_tensor_free(xd);
    hv_tensor_free(yd);
    if (n < 0) rc = hvk__fail("data: %s", hvd_last_error());
    hv_step_end(ctx);
    hvd_loader_free(ld);
    hv_set_grad_enabled(ctx, prev);
    return rc;
}

typedef struct hvk__eval_acc {
    hv_vit *vit;
    double hit1, hit5, n;
} hvk__eval_acc;
static int hvk__eval_batch(hv_tensor *x, hv_tensor *y, int n, int64_t off, void *arg) {
    hvk__eval_acc *a = (hvk__eval_acc *)arg;
    hv_tensor *logits = hv_vit_forward(a->vit, x, 0);
    float t1, t5;
    (void)off;
    if (!logits) return hvk__fail("%s", hv_last_error());
    t1 = hv_topk_accuracy(logits, y, 1);
    t5 = hv_topk_accuracy(logits, y, hv_dim(logits, 1) < 5 ? (int)hv_dim(logits, 1) : 5);
    a->hit1 += (double)t1 * n;
    a->hit5 += (double)t5 * n;
    a->n += n;
    return 0;
}
int hvk_evaluate(hv_ctx *ctx, hv_vit *vit, hvd_dataset *ds, const hvd_transform *tf, int batch_size, int workers, double *top1,
                 double *top5) {
    hvk__eval_acc a;
    memset(&a, 0, sizeof a);
    a.vit = vit;
    if (hvk__for_batches(ctx, ds, tf, batch_size, workers, hvk__eval_batch, &a)) return -1;
    *top1 = a.n ? a.hit1 / a.n : 0;
    *top5 = a.n ? a.hit5 / a.n : 0;
    return 0;
}

typedef struct hvk__feat_acc {
    hv_vit *vit;
    float *out;
    int dim;
    int64_t total;
    const char *prog;
    double t0;
} hvk__feat_acc;
static int hvk__feat_batch(hv_tensor *x, hv_tensor *y, int n, int64_t off, void *arg) {
    hvk__feat_acc *a = (hvk__feat_acc *)arg;
    hv_tensor *f = hv_vit_forward(a->vit, x, 0);
    (void)y;
    if (!f || hv_tensor_copy_to(f, a->out + off * a->dim, sizeof(float) * (size_t)n * a->dim))
        return hvk__fail("%s", hv_last_error());
    if (a->prog && ((off / n) % 20 == 19 || off + n == a->total)) {
        double el = hvk_now() - a->t0;
        printf("[%s] features %lld/%lld  %.0f img/s\n", a->prog, (long long)(off + n), (long long)a->total, (double)(off + n) / el);
        fflush(stdout);
    }
    return 0;
}
float *hvk_features(hv_ctx *ctx, hv_vit *vit, hvd_dataset *ds, const hvd_transform *tf, int batch_size, int workers, const char *prog) {
    hvk__feat_acc a;
    hv_vit_desc d = hv_vit_config(vit);
    if (d.num_classes) {
        hvk__fail("hvk_features: the ViT has a classification head; features come from a headless one");
        return NULL;
    }
    memset(&a, 0, sizeof a);
    a.vit = vit;
    a.dim = d.embed_dim;
    a.total = hvd_dataset_size(ds);
    a.prog = prog;
    a.t0 = hvk_now();
    a.out = (float *)malloc(sizeof(float) * (size_t)a.total * (size_t)a.dim);
    if (!a.out) {
        hvk__fail("out of memory for %lld x %d features", (long long)a.total, a.dim);
        return NULL;
    }
    if (hvk__for_batches(ctx, ds, tf, batch_size, workers, hvk__feat_batch, &a)) {
        free(a.out);
        return NULL;
    }
    return a.out;
}

int hvk_probe_features(hv_ctx *ctx, const float *feat, const int32_t *labels, int64_t n, const float *test_feat,
                       const int32_t *test_labels, int64_t nt, int dim, int classes, int epochs, const hvk_run *run, hvk_result *res) {
    /* the head of the finetuned models: BatchNorm1d(D, affine=False, eps 1e-6) + Linear(D, classes),
       weights N(0, 0.01), bias 0 */
    hv_tensor *w = hv_randn(ctx, HV_SHAPE(classes, dim), 0.0f, 0.01f), *b = hv_zeros(ctx, HV_SHAPE(classes));
    hv_tensor *rm = hv_zeros(ctx, HV_SHAPE(dim)), *rv = hv_ones(ctx, HV_SHAPE(dim));
    int B = run->batch_size < n ? run->batch_size : (int)n, e, rc = 0;
    hv_tensor *xb = hv_tensor_new(ctx, HV_F32, HV_SHAPE(B, dim)), *yb = hv_tensor_new(ctx, HV_I32, HV_SHAPE(B));
    int64_t *perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)n), i, k, step = 0;
    const char *names[2] = {"head.1.weight", "head.1.bias"};
    hv_tensor *ts[2];
    hv_param_list pl;
    hv_optim *opt = NULL;
    double t0 = hvk_now(), hit1 = 0, hit5 = 0, loss_v = NAN;
    memset(res, 0, sizeof *res);
    ts[0] = w;
    ts[1] = b;
    pl.count = 2;
    pl.names = names;
    pl.tensors = ts;
    if (!w || !b || !rm || !rv || !xb || !yb || !perm || n < 2) {
        rc = hvk__fail("probe: out of memory or fewer than 2 samples");
        goto done;
    }
    hv_set_trainable(w, 1);
    hv_set_trainable(b, 1);
    if (!(opt = hvk__optimizer(ctx, &pl, run))) {
        rc = hvk__fail("optimizer: %s", hv_last_error());
        goto done;
    }
    for (e = 0; e < epochs && rc == 0; e++) {
        hvd__permutation(run->seed * 1000003u + (uint64_t)e, n, perm);
        for (i = 0; i + B <= n; i += B) { /* drop_last */
            hv_tensor *loss;
            for (k = 0; k < B; k++) {
                memcpy(hv_data(xb) + k * dim, feat + perm[i + k] * dim, sizeof(float) * (size_t)dim);
                hv_data_i32(yb)[k] = labels[perm[i + k]];
            }
            loss = hv_cross_entropy(hv_linear(hv_batch_norm(xb, NULL, NULL, rm, rv, 1, 0.1f, 1e-6f), w, b), yb);
            hv_optim_zero_grad(opt);
            if (!loss || hv_backward(loss)) {
                rc = hvk__fail("probe: %s", hv_last_error());
                break;
            }
            loss_v = hv_item(loss);
            if (!isfinite(loss_v)) {
                rc = hvk__fail("probe: the loss is %g", loss_v);
                res->stopped_nan = 1;
                break;
            }
            hv_optim_step(opt);
            hv_step_end(ctx);
            step++;
        }
    }
    /* evaluation with the running statistics */
    if (rc == 0) {
        int prev = hv_set_grad_enabled(ctx, 0);
        hv_tensor *xt = hv_tensor_new(ctx, HV_F32, HV_SHAPE(B, dim)), *yt = hv_tensor_new(ctx, HV_I32, HV_SHAPE(B));
        for (i = 0; xt && yt && i < nt; i += B) {
            int m = (int)(nt - i < B ? nt - i : B);
            hv_tensor *xv = m == B ? xt : hv_slice(xt, 0, 0, m, 1), *yv = m == B ? yt : hv_slice(yt, 0, 0, m, 1), *logits;
            memcpy(hv_data(xt), test_feat + i * dim, sizeof(float) * (size_t)m * dim);
            memcpy(hv_data_i32(yt), test_labels + i, sizeof(int32_t) * (size_t)m);
            logits = hv_linear(hv_batch_norm(xv, NULL, NULL, rm, rv, 0, 0.1f, 1e-6f), w, b);
            if (!logits) {
                rc = hvk__fail("probe eval: %s", hv_last_error());
                break;
            }
            hit1 += (double)hv_topk_accuracy(logits, yv, 1) * m;
            hit5 += (double)hv_topk_accuracy(logits, yv, classes < 5 ? classes : 5) * m;
            hv_step_end(ctx);
        }
        hv_tensor_free(xt);
        hv_tensor_free(yt);
        hv_set_grad_enabled(ctx, prev);
        res->top1 = nt ? hit1 / (double)nt : 0;
        res->top5 = nt ? hit5 / (double)nt : 0;
    }
    res->steps = step;
    res->final_loss = loss_v;
    res->seconds = hvk_now() - t0;
done:
    hv_step_end(ctx);
    hv_optim_free(opt);
    free(perm);
    hv_tensor_free(w);
    hv_tensor_free(b);
    hv_tensor_free(rm);
    hv_tensor_free(rv);
    hv_tensor_free(xb);
    hv_tensor_free(yb);
    return rc;
}

/* ---- Perceptual MAE (LS-GAN): alternating generator and discriminator steps ----------------- */

static hv_optim *hvk__adam(hv_ctx *ctx, const hv_param_list *params, const hvk_run *run) {
    hv_optim_desc od;
    memset(&od, 0, sizeof od);
    od.type = HV_OPTIM_ADAM; /* upstream's configure_optimizers: torch.optim.Adam, no decay */
    od.lr = (float)run->lr;
    od.beta1 = (float)(run->beta1 ? run->beta1 : 0.9);
    od.beta2 = (float)(run->beta2 ? run->beta2 : 0.999);
    od.eps = (float)(run->eps ? run->eps : 1e-8);
    return hv_optim_new(ctx, params, &od);
}
/* discriminator files first, the generator's checkpoint.hvts last: a resume checks the steps agree */
static int hvk__pmae_save(const char *dir, hv_ctx *ctx, hv_mae *mae, hv_disc *disc, hv_disc *copy, hv_optim *opt_g, hv_optim *opt_d,
                          int64_t step) {
    char path[1100];
    hv_train_info info;
    memset(&info, 0, sizeof info);
    info.step = step;
    info.user[0] = step;
    snprintf(path, sizeof path, "%s/discriminator.hvts", dir);
    if (hv_train_state_save(path, ctx, hv_disc_params(disc), opt_d, &info)) return hvk__fail("%s", hv_last_error());
    snprintf(path, sizeof path, "%s/discriminator_copy.safetensors", dir);
    if (hvk_save_weights(path, ctx, hv_disc_params(copy))) return -1;
    return hvk_save_run(dir, ctx, hv_mae_params(mae), opt_g, step, NULL);
}
static int hvk__pmae_resume(const char *dir, hv_ctx *ctx, hv_mae *mae, hv_disc *disc, hv_disc *copy, hv_optim *opt_g, hv_optim *opt_d,
                            int64_t *step) {
    char path[1100];
    hv_train_info gi, di;
    FILE *f;
    snprintf(path, sizeof path, "%s/checkpoint.hvts", dir);
    if (!(f = fopen(path, "rb"))) return 0; /* nothing to resume */
    fclose(f);
    if (hv_train_state_load(path, ctx, hv_mae_params(mae), opt_g, &gi)) return hvk__fail("--resume: %s", hv_last_error());
    snprintf(path, sizeof path, "%s/discriminator.hvts", dir);
    if (hv_train_state_load(path, ctx, hv_disc_params(disc), opt_d, &di)) return hvk__fail("--resume: %s", hv_last_error());
    if (di.step != gi.step)
        return hvk__fail("--resume: %s is from step %lld but checkpoint.hvts from step %lld (a save was cut short)", path, (long long)di.step,
                         (long long)gi.step);
    snprintf(path, sizeof path, "%s/discriminator_copy.safetensors", dir);
    if (hv_params_load_file(hv_disc_params(copy), path, NULL, NULL)) return hvk__fail("--resume: %s", hv_last_error());
    *step = gi.step;
    return 1;
}
int hvk_pmae_train(hv_ctx *ctx, hv_mae *mae, hv_disc *disc, hv_disc *copy, hvd_dataset *data, const hvd_transform *tf,
                   const hvk_pmae_opts *po, const hvk_run *run, hvk_result *res) {
    const hv_param_list *gp = hv_mae_params(mae), *dp = hv_disc_params(disc);
    hvd_loader *loader = NULL;
    hv_optim *opt_g = NULL, *opt_d = NULL;
    hvk__log lg;
    const char *dir = run->output_dir;
    int64_t step = 0, start;
    int img, patch, chans, dim, depth, rc = 0, print_freq = run->quiet ? 0 : (run->print_freq ? run->print_freq : 20);
    int copy_every = po->copy_every > 0 ? po->copy_every : 5, lr_step = po->lr_step > 0 ? po->lr_step : 30;
    double gamma = po->lr_gamma > 0 ? po->lr_gamma : 0.9, t0, t_last, seen_since = 0, ips = 0, g_v = NAN, lr_g = run->lr;
    memset(res, 0, sizeof *res);
    memset(&lg, 0, sizeof lg);
    if (hvk_data_ctx(ctx) != ctx) return hvk__fail("Perceptual MAE training runs on the CPU backend only");
    if (po->steps_per_epoch <= 0) return hvk__fail("steps_per_epoch must be positive");
    hvk_geometry(gp, &img, &patch, &chans, &dim, &depth);
    if (img != 224 || tf->size != 224)
        return hvk__fail("the discriminator takes 224x224 images; the model's are %dx%d and the transform's %d", img, img, tf->size);
    if (!(opt_g = hvk__adam(ctx, gp, run)) || !(opt_d = hvk__adam(ctx, dp, run))) {
        rc = hvk__fail("optimizer: %s", hv_last_error());
        goto finish;
    }
    hv_disc_set_trainable(copy, 0);
    if (run->resume && dir) {
        int r = hvk__pmae_resume(dir, ctx, mae, disc, copy, opt_g, opt_d, &step);
        if (r < 0) {
            rc = -1;
            goto finish;
        }
        if (!run->quiet)
            printf(r ? "[%s] resumed from %s/checkpoint.hvts at step %lld\n" : "[%s] --resume: no %s/checkpoint.hvts yet, starting from scratch\n",
                   run->prog, dir, (long long)step);
    }
    start = step;
    if (step >= run->iters) goto finish;
    if (!(loader = hvk__train_loader(ctx, data, tf, run, step))) {
        rc = hvk__fail("%s", hvd_last_error());
        goto finish;
    }
    t0 = t_last = hvk_now();
    while (step < run->iters) {
        hv_tensor *x, *y, *pred, *g_loss, *d_loss;
        hv_pmae_loss_parts parts;
        int64_t epoch = step / po->steps_per_epoch;
        double d_v, terms[4];
        char cells[160];
        int n = hvd_loader_next(loader, &x, &y), prev;
        if (n <= 0) {
            rc = hvk__fail("data: %s", n < 0 ? hvd_last_error() : "the loader ended early");
            break;
        }
        lr_g = run->lr * pow(gamma, (double)(epoch / lr_step));
        hv_optim_set_lr(opt_g, (float)lr_g);
        if (epoch % copy_every == 0 && hv_disc_copy(copy, disc)) {
            rc = hvk__fail("%s", hv_last_error());
            break;
        }
        /* generator step: the discriminator frozen, as Lightning's toggle_optimizer */
        hv_disc_set_trainable(disc, 0);
        pred = NULL;
        hv_mae_forward(mae, x, NULL, &pred, NULL);
        g_loss = hv_pmae_generator_loss(disc, copy, hv_unpatchify(pred, patch, chans), x, &po->weights, &parts);
        hv_optim_zero_grad(opt_g);
        if (!g_loss || hv_backward(g_loss)) {
            hv_disc_set_trainable(disc, 1);
            rc = hvk__fail("step %lld (generator): %s", (long long)step + 1, hv_last_error());
            break;
        }
        g_v = hv_item(g_loss);
        terms[0] = hv_item(parts.l1); /* read before hv_step_end frees them */
        terms[1] = hv_item(parts.gan);
        terms[2] = hv_item(parts.perc);
        terms[3] = hv_item(parts.style);
        snprintf(cells, sizeof cells, ",%.6f,%.6f,%.6f,%.6f", terms[0], terms[1], terms[2], terms[3]);
        hv_disc_set_trainable(disc, 1);
        if (hv_check_finite(g_loss, gp, NULL)) goto nan;
        hv_optim_step(opt_g);
        hv_step_end(ctx);
        /* discriminator step: a new forward and mask; the generator records nothing */
        prev = hv_set_grad_enabled(ctx, 0);
        pred = NULL;
        hv_mae_forward(mae, x, NULL, &pred, NULL);
        hv_set_grad_enabled(ctx, prev);
        d_loss = hv_pmae_disc_loss(disc, hv_unpatchify(pred, patch, chans), x);
        hv_optim_zero_grad(opt_d);
        if (!d_loss || hv_backward(d_loss)) {
            rc = hvk__fail("step %lld (discriminator): %s", (long long)step + 1, hv_last_error());
            break;
        }
        d_v = hv_item(d_loss);
        if (hv_check_finite(d_loss, dp, NULL)) goto nan;
        hv_optim_step(opt_d);
        hv_step_end(ctx);
        step++;
        seen_since += n;
        if (step == start + 1 && hvk__log_open(&lg, dir, start > 0, ",d_loss,l1,gan,perc,style")) {
            rc = -1;
            break;
        }
        {
            double now = hvk_now();
            char extra[200];
            if (now - t_last > 0.5 || step == run->iters) {
                ips = seen_since / (now - t_last);
                seen_since = 0;
                t_last = now;
            }
            if (print_freq && (step % print_freq == 0 || step == run->iters || step == start + 1)) {
                hvk__progress(run->prog, step, run->iters, step / po->steps_per_epoch, g_v, lr_g, ips, now - t0);
                printf("[%s]   d_loss %.4f  l1 %.4f  gan %.4f  perc %.4f  style %.5f\n", run->prog, d_v, terms[0], terms[1], terms[2],
                       terms[3]);
            }
            snprintf(extra, sizeof extra, ",%.6f%s", d_v, cells);
            hvk__log_row(&lg, step, step / po->steps_per_epoch, g_v, lr_g, ips, now - t0, extra);
        }
        if (dir && run->save_every > 0 && step % run->save_every == 0 && step < run->iters &&
            hvk__pmae_save(dir, ctx, mae, disc, copy, opt_g, opt_d, step)) {
            rc = -1;
            break;
        }
        continue;
    nan:
        res->stopped_nan = 1;
        rc = hvk__fail("step %lld: %s; stopped before the update%s%s", (long long)step + 1, hv_last_error(),
                       dir && step > start ? ", the last good checkpoint is in " : " (nothing saved)", dir && step > start ? dir : "");
        break;
    }
    res->seconds = hvk_now() - t0;
    res->images_per_s = res->seconds > 0 ? (double)(step - start) * run->batch_size / res->seconds : 0;
    if (rc == 0 && dir && hvk__pmae_save(dir, ctx, mae, disc, copy, opt_g, opt_d, step)) rc = -1;
finish:
    hv_step_end(ctx);
    res->steps = step;
    res->final_loss = g_v;
    hvd_loader_free(loader);
    hvk__log_close(&lg, dir, "Perceptual MAE generator loss");
    hv_optim_free(opt_g);
    hv_optim_free(opt_d);
    return rc;
}

#endif /* HV_KIT_IMPLEMENTATION_DONE */
#endif /* HV_KIT_IMPLEMENTATION */
