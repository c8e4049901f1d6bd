/* fmnist_demo.c - the central experiment of the seed papers, in miniature, on Fashion-MNIST
   (what `./build.sh demo` runs).

   "How much human-like visual experience do self-supervised learners need?" (Orhan 2021, 2023):
   pretrain the same network, self-supervised, on 100%, 10% and 1% of an unlabeled image stream,
   then measure how well each has learned to see by (a) a linear probe on its frozen features
   and (b) few-shot finetuning of all its weights with ~1% and 2% of the labels; a network with no
   pretraining at all is the baseline. Here the stream is the 60,000 Fashion-MNIST training
   images (labels withheld during pretraining), the learner a small ViT trained as a masked
   autoencoder with the humanlike-vits recipe (mask ratio 0.8, AdamW betas (0.9, 0.95), weight
   decay 0, constant lr, RandomResizedCrop(0.2-1, bicubic) + flip), and the test the 10,000
   test images (a seeded subset of --test-images of them). Every pretraining run takes the same
   number of steps: only the amount of distinct experience changes, as in the papers' Figure 1.

   Writes <output-dir>/results.md (settings, the table, timings), results.csv, accuracy.svg
   (top-1 against the number of pretraining images, log scale, baseline dashed) and, per run,
   pretrain_<frac>/ and finetune_<model>_<labels>/ with log.csv, loss.svg and a checkpoint; the
   finetuning runs also keep, as finetune does, the weights of their best evaluation in
   model_best.safetensors (the test subset is evaluated FT_EVALS times a run, the last at the end;
   the table reports the end's accuracy).

   usage: fmnist_demo [--quick] [--data-dir DIR] [--output-dir DIR] [--threads N] [...]; --help */
#define _POSIX_C_SOURCE 200809L
#include "humanvit.h"
#define HV_DATA_IMPLEMENTATION
#include "hv_data.h"
#define HV_KIT_IMPLEMENTATION
#include "hv_kit.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "fmnist_demo"
#define NFRAC 3
#define NMODEL (NFRAC + 1) /* the baseline first, then the pretrained ones */
#define FM_MEAN 0.2860f
#define FM_STD 0.3530f
#define FT_EVALS 5 /* evaluations per finetuning run, for model_best (finetune's evaluates every epoch:
                      too many for the demo's short runs, where an epoch is a few steps) */

typedef struct settings {
    int quick, threads, workers;
    const char *data_dir, *output_dir;
    /* model */
    int img, patch, dim, depth, heads, dec_dim, dec_depth, dec_heads;
    /* pretraining */
    int pre_steps, pre_batch;
    double pre_lr, mask_ratio;
    /* evaluation */
    int probe_images, probe_epochs, test_images;
    int ft_steps, ft_batch;
    double ft_lr, ft_wd, ft_scale_min, probe_lr;
    double seed;
} settings;

typedef struct model_result {
    const char *name;
    double frac;        /* of the unlabeled stream; 0 for the baseline */
    int64_t images;     /* distinct pretraining images */
    double pre_loss, pre_seconds;
    double probe1, probe5, ft1[2], ft5[2];
    double probe_seconds, ft_seconds[2];
} model_result;

static const double fracs[NFRAC] = {0.01, 0.1, 1.0};
static const double label_fracs[2] = {0.010147, 0.02}; /* the upstream "~1%" and "2%" conditions */

static void die(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s%s%s\n", PROG, what ? what : "", what ? ": " : "", msg);
    exit(1);
}

static int file_exists(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* copy every tensor of src whose name and size match one of dst (MAE encoder -> ViT); the count, -1 on error */
static int copy_params(const hv_param_list *dst, const hv_param_list *src) {
    int i, j, n = 0;
    for (i = 0; i < dst->count; i++)
        for (j = 0; j < src->count; j++)
            if (!strcmp(dst->names[i], src->names[j]) && hv_numel(dst->tensors[i]) == hv_numel(src->tensors[j]) &&
                hv_tensor_dtype(src->tensors[j]) == HV_F32) {
                if (hv_tensor_assign(dst->tensors[i], src->tensors[j])) return -1; /* on the tensors' backend */
                n++;
                break;
            }
    return n;
}

static hv_vit_desc vit_desc(const settings *s, int classes) {
    hv_vit_desc d;
    memset(&d, 0, sizeof d);
    d.img_size = s->img;
    d.patch_size = s->patch;
    d.embed_dim = s->dim;
    d.depth = s->depth;
    d.num_heads = s->heads;
    d.in_chans = 1;
    d.num_classes = classes;
    return d;
}

static hvk_run base_run(const settings *s, const char *prog, const char *dir) {
    hvk_run r;
    memset(&r, 0, sizeof r);
    r.prog = prog;
    r.output_dir = dir;
    r.workers = s->workers;
    r.seed = (uint64_t)s->seed;
    return r;
}

static void fmt_time(double sec, char *buf, size_t n) {
    if (sec >= 60) snprintf(buf, n, "%dm%02ds", (int)(sec / 60), (int)fmod(sec, 60));
    else snprintf(buf, n, "%.1fs", sec);
}

static void write_outputs(const settings *s, const model_result *m, int64_t train_n, int64_t test_n, double total_s, const char *data_desc) {
    char path[1100], tmp[1200], t[32];
    FILE *f;
    int i, k;
    const char *cols[3] = {"linear probe", "few-shot ~1% labels", "few-shot 2% labels"};
    /* results.csv */
    snprintf(path, sizeof path, "%s/results.csv", s->output_dir);
    if ((f = hvk_open_tmp(path, tmp, sizeof tmp)) != NULL) {
        fprintf(f, "model,pretrain_fraction,pretrain_images,pretrain_final_loss,probe_top1,probe_top5,ft1_top1,ft1_top5,ft2_top1,ft2_top5\n");
        for (i = 0; i < NMODEL; i++)
            fprintf(f, "%s,%g,%lld,%.4f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f\n", m[i].name, m[i].frac, (long long)m[i].images, m[i].pre_loss,
                    100 * m[i].probe1, 100 * m[i].probe5, 100 * m[i].ft1[0], 100 * m[i].ft5[0], 100 * m[i].ft1[1], 100 * m[i].ft5[1]);
        if (hvk_commit(f, tmp, path)) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    }
    /* results.md */
    snprintf(path, sizeof path, "%s/results.md", s->output_dir);
    if ((f = hvk_open_tmp(path, tmp, sizeof tmp)) != NULL) {
        fmt_time(total_s, t, sizeof t);
        fprintf(f, "# Fashion-MNIST: how much unlabeled experience does a masked autoencoder need?\n\n");
        fprintf(f, "%s run of `fmnist_demo` (humanvit), %d thread(s), %s in all.\n\n", s->quick ? "Quick (--quick)" : "Full", s->threads, t);
        fprintf(f, "- data: %s; %lld training images (the unlabeled stream and the label pool), %lld test images evaluated\n", data_desc,
                (long long)train_n, (long long)test_n);
        fprintf(f, "- model: ViT, %dx%d grayscale input, patch %d, width %d, depth %d, %d heads; MAE decoder width %d, depth %d\n", s->img,
                s->img, s->patch, s->dim, s->depth, s->heads, s->dec_dim, s->dec_depth);
        fprintf(f, "- pretraining (each fraction): %d steps of %d images, mask ratio %.2f, AdamW lr %g betas (0.9, 0.95) wd 0, "
                   "RandomResizedCrop(0.2-1, bicubic) + flip\n", s->pre_steps, s->pre_batch, s->mask_ratio, s->pre_lr);
        fprintf(f, "- linear probe: BatchNorm1d(affine=False) + Linear on frozen CLS features of %d labelled images, %d epochs, AdamW lr %g\n",
                s->probe_images, s->probe_epochs, s->probe_lr);
        fprintf(f, "- few-shot finetuning (all weights, same head): %d steps of %d, AdamW lr %g wd %g, RandomResizedCrop(%.2f-1) + flip; "
                   "labels: %.4g%% and %g%% of the training images; evaluated %d times (the table: the last, at the end), the best "
                   "evaluation's weights kept in finetune_*/model_best.safetensors\n\n", s->ft_steps, s->ft_batch, s->ft_lr, s->ft_wd,
                s->ft_scale_min, 100 * label_fracs[0], 100 * label_fracs[1], FT_EVALS);
        fprintf(f, "Top-1 accuracy on the test images (%%; chance is 10%%; top-5 in brackets):\n\n");
        fprintf(f, "| pretraining | images seen | MAE loss | %s | %s | %s |\n|---|---:|---:|---:|---:|---:|\n", cols[0], cols[1], cols[2]);
        for (i = 0; i < NMODEL; i++) {
            fprintf(f, "| %s | %lld | ", m[i].name, (long long)m[i].images);
            if (m[i].frac > 0) fprintf(f, "%.3f | ", m[i].pre_loss);
            else fprintf(f, "- | ");
            fprintf(f, "%.2f (%.1f) | %.2f (%.1f) | %.2f (%.1f) |\n", 100 * m[i].probe1, 100 * m[i].probe5, 100 * m[i].ft1[0],
                    100 * m[i].ft5[0], 100 * m[i].ft1[1], 100 * m[i].ft5[1]);
        }
        fprintf(f, "\n![accuracy against pretraining data](accuracy.svg)\n\nTimings (seconds):\n\n| model | pretraining | probe | few-shot 1%% | few-shot 2%% |\n|---|---:|---:|---:|---:|\n");
        for (i = 0; i < NMODEL; i++)
            fprintf(f, "| %s | %.1f | %.1f | %.1f | %.1f |\n", m[i].name, m[i].pre_seconds, m[i].probe_seconds, m[i].ft_seconds[0],
                    m[i].ft_seconds[1]);
        fprintf(f, "\nLoss curves: pretrain_*/loss.svg, finetune_*/loss.svg. Upstream numbers for the real thing (ImageNet, "
                   "thousands of hours of video) are in the humanlike-vits and \"are we there yet?\" READMEs.\n");
        if (hvk_commit(f, tmp, path)) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    }
    /* accuracy.svg: like Figure 1 of "are we there yet?" */
    {
        double x[NFRAC], y[3][NFRAC], bx[2], by[3][2], lo = 1e9, hi = 0;
        hvk_series ser[6];
        hvk_plot p;
        static const char *colors[3] = {"#1f77b4", "#d62728", "#2ca02c"};
        static const char *names[3] = {"linear probe", "finetuned, ~1% labels", "finetuned, 2% labels"};
        static const char *bnames[3] = {"dashed: no pretraining", NULL, NULL};
        memset(ser, 0, sizeof ser);
        memset(&p, 0, sizeof p);
        for (k = 0; k < NFRAC; k++) {
            x[k] = (double)m[k + 1].images;
            y[0][k] = 100 * m[k + 1].probe1;
            y[1][k] = 100 * m[k + 1].ft1[0];
            y[2][k] = 100 * m[k + 1].ft1[1];
        }
        bx[0] = x[0];
        bx[1] = x[NFRAC - 1];
        by[0][0] = by[0][1] = 100 * m[0].probe1;
        by[1][0] = by[1][1] = 100 * m[0].ft1[0];
        by[2][0] = by[2][1] = 100 * m[0].ft1[1];
        for (i = 0; i < 3; i++) {
            ser[i].name = names[i];
            ser[i].n = NFRAC;
            ser[i].x = x;
            ser[i].y = y[i];
            ser[i].color = colors[i];
            ser[i].markers = 1;
            ser[3 + i].name = bnames[i];
            ser[3 + i].n = 2;
            ser[3 + i].x = bx;
            ser[3 + i].y = by[i];
            ser[3 + i].color = colors[i];
            ser[3 + i].dashed = 1;
            for (k = 0; k < NFRAC; k++) {
                lo = y[i][k] < lo ? y[i][k] : lo;
                hi = y[i][k] > hi ? y[i][k] : hi;
            }
            lo = by[i][0] < lo ? by[i][0] : lo;
            hi = by[i][0] > hi ? by[i][0] : hi;
        }
        p.title = "Fashion-MNIST top-1 against unlabeled pretraining images (MAE, ViT)";
        p.xlabel = "distinct images seen in self-supervised pretraining (log scale)";
        p.ylabel = "top-1 accuracy on test images (%)";
        p.logx = 1;
        p.ymin = floor((lo - 5) / 10) * 10;
        p.ymax = ceil((hi + 5) / 10) * 10;
        if (p.ymin < 0) p.ymin = 0;
        if (p.ymax > 100) p.ymax = 100;
        snprintf(path, sizeof path, "%s/accuracy.svg", s->output_dir);
        if (hvk_svg_plot(path, &p, ser, 6)) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    }
}

int main(int argc, char **argv) {
    settings s;
    const char *data_dir = NULL, *output_dir = "demo_out", *backend = "cpu";
    int quick = 0, threads = 0, workers = 1, pre_steps = 0, ft_steps = 0, probe_images = 0, test_images = 0;
    double seed = 1, pre_lr = 0, ft_lr = 0;
    const hvk_flag flags[] = {
        {"--quick", NULL, HVK_BOOL, &quick, "the same pipeline, small: the embedded 2000 images, ~1 minute (CI)"},
        {"--data-dir", NULL, HVK_STR, &data_dir, "folder with the four Fashion-MNIST IDX .gz files (default: the Debian package's, else the embedded subset)"},
        {"--output-dir", NULL, HVK_STR, &output_dir, "where results.md, accuracy.svg and the runs go"},
        {"--pretrain-steps", NULL, HVK_INT, &pre_steps, "MAE steps per pretraining run (0: the mode's default)"},
        {"--finetune-steps", NULL, HVK_INT, &ft_steps, "steps per few-shot run (0: default)"},
        {"--probe-images", NULL, HVK_INT, &probe_images, "labelled images of the linear probe (0: default)"},
        {"--test-images", NULL, HVK_INT, &test_images, "test images evaluated (0: default)"},
        {"--pretrain-lr", NULL, HVK_FLOAT, &pre_lr, "MAE learning rate (0: default)"},
        {"--finetune-lr", NULL, HVK_FLOAT, &ft_lr, "finetuning learning rate (0: default)"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of everything"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", NULL, HVK_INT, &workers, "data loader threads"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded, checkpoints downloaded)"},
    };
    char train_img[1100], test_img[1100], data_desc[1200], dir[1200];
    hvd_dataset *train, *test, *test_eval, *probe_set, *pools[NFRAC], *labelled[2];
    hv_ctx *ctx;
    hv_mae *maes[NFRAC];
    model_result m[NMODEL];
    double t_start = hvk_now();
    int i, k, r;
    float *test_feat = NULL;
    int32_t *test_lab, *probe_lab;

    r = hvk_parse_flags(PROG, "Fashion-MNIST in miniature: MAE pretraining on 1%, 10%, 100% of the images, then linear probe and few-shot finetuning.",
                        argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) return 2;
    if (threads < 0 || workers < 0 || pre_steps < 0 || ft_steps < 0 || probe_images < 0 || test_images < 0 || pre_lr < 0 || ft_lr < 0) {
        fprintf(stderr, "%s: counts and rates must not be negative\n", PROG);
        return 2;
    }

    /* ---- settings: full and quick differ only in sizes ---------------------------------------- */
    memset(&s, 0, sizeof s);
    s.quick = quick;
    s.img = 28;
    s.patch = 7;
    s.dim = 64;
    s.depth = 4;
    s.heads = 4;
    s.dec_dim = 64;
    s.dec_depth = 1;
    s.dec_heads = 4;
    s.mask_ratio = 0.8;
    s.pre_lr = 1e-3;
    s.ft_lr = 3e-4;
    s.ft_wd = 0.05;
    s.ft_scale_min = 0.35;
    s.probe_lr = 1e-3;
    s.seed = seed;
    s.workers = workers;
    if (quick) {
        s.pre_steps = 60;
        s.pre_batch = 64;
        s.probe_images = 1000;
        s.probe_epochs = 20;
        s.test_images = 500;
        s.ft_steps = 40;
        s.ft_batch = 20;
    } else {
        s.pre_steps = 500;
        s.pre_batch = 256;
        s.probe_images = 10000;
        s.probe_epochs = 30;
        s.test_images = 10000;
        s.ft_steps = 250;
        s.ft_batch = 64;
    }
    if (pre_steps) s.pre_steps = pre_steps;
    if (ft_steps) s.ft_steps = ft_steps;
    if (probe_images) s.probe_images = probe_images;
    if (test_images) s.test_images = test_images;
    if (pre_lr > 0) s.pre_lr = pre_lr;
    if (ft_lr > 0) s.ft_lr = ft_lr;
    s.output_dir = output_dir;

    /* ---- data ------------------------------------------------------------------------------ */
    if (!data_dir) {
        if (!quick && file_exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) data_dir = "/usr/share/datasets/fashion-mnist";
        else {
            data_dir = "examples/data/fmnist-mini";
            if (!quick)
                printf("[%s] the full Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using the embedded "
                       "2000 + 500 image subset in %s\n", PROG, data_dir);
        }
    }
    s.data_dir = data_dir;
    snprintf(train_img, sizeof train_img, "%s/train-images-idx3-ubyte.gz", data_dir);
    snprintf(test_img, sizeof test_img, "%s/t10k-images-idx3-ubyte.gz", data_dir);
    if (!file_exists(train_img)) {
        fprintf(stderr, "%s: %s not found: --data-dir needs train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (apt-get install dataset-fashion-mnist puts them in "
                        "/usr/share/datasets/fashion-mnist)\n", PROG, train_img);
        return 1;
    }
    if (!(train = hvk_open_dataset(train_img, NULL))) die("data", hvk_last_error());
    if (!(test = hvk_open_dataset(test_img, NULL))) die("data", hvk_last_error());
    if (hvd_dataset_label(train, 0) < 0 || hvd_dataset_label(test, 0) < 0) die(data_dir, "the labels-idx1 files are missing");
    if (s.probe_images > hvd_dataset_size(train)) s.probe_images = (int)hvd_dataset_size(train);
    if (s.test_images > hvd_dataset_size(test)) s.test_images = (int)hvd_dataset_size(test);
    snprintf(data_desc, sizeof data_desc, "%s (%s)", data_dir, hvd_dataset_size(train) >= 60000 ? "full Fashion-MNIST" : "embedded subset");
    test_eval = hvd_dataset_fraction(test, (double)s.test_images / (double)hvd_dataset_size(test), (uint64_t)seed + 7);
    probe_set = hvd_dataset_fraction(train, (double)s.probe_images / (double)hvd_dataset_size(train), (uint64_t)seed + 11);
    for (k = 0; k < NFRAC; k++)
        if (!(pools[k] = hvd_dataset_fraction(train, fracs[k], (uint64_t)seed))) die("subset", hvd_last_error());
    for (k = 0; k < 2; k++)
        if (!(labelled[k] = hvd_dataset_fraction(train, label_fracs[k], (uint64_t)seed + 3))) die("subset", hvd_last_error());
    if (!test_eval || !probe_set) die("subset", hvd_last_error());
    if (hvk_mkdirs(output_dir)) die(NULL, hvk_last_error());

    ctx = hvk_init(backend, (uint64_t)seed, threads);
    if (!ctx) die(NULL, hvk_last_error());
    s.threads = hv_get_threads(ctx);
    printf("[%s] %s mode: data %s: %lld train / %lld test images (evaluating %d); ViT %dx%d patch %d dim %d depth %d; %d thread(s)\n",
           PROG, quick ? "quick" : "full", data_dir, (long long)hvd_dataset_size(train), (long long)hvd_dataset_size(test),
           s.test_images, s.img, s.img, s.patch, s.dim, s.depth, s.threads);
    printf("[%s] plan: 3 MAE pretraining runs (%d steps x %d images) on %lld / %lld / %lld distinct images, then for them and an "
           "untrained baseline: a linear probe (%d labelled images) and few-shot finetuning with %lld and %lld labels\n",
           PROG, s.pre_steps, s.pre_batch, (long long)hvd_dataset_size(pools[0]), (long long)hvd_dataset_size(pools[1]),
           (long long)hvd_dataset_size(pools[2]), s.probe_images, (long long)hvd_dataset_size(labelled[0]),
           (long long)hvd_dataset_size(labelled[1]));
    fflush(stdout);

    /* ---- 1. pretraining -------------------------------------------------------------------- */
    memset(m, 0, sizeof m);
    m[0].name = "none (random init)";
    for (k = 0; k < NFRAC; k++) {
        hv_mae_desc md;
        hvd_transform tf = hvd_transform_mae_pretrain(s.img);
        hvk_run run;
        hvk_result res;
        static const char *names[NFRAC] = {"MAE on 1%", "MAE on 10%", "MAE on 100%"};
        memset(&md, 0, sizeof md);
        md.encoder = vit_desc(&s, 0);
        md.decoder_embed_dim = s.dec_dim;
        md.decoder_depth = s.dec_depth;
        md.decoder_num_heads = s.dec_heads;
        md.mask_ratio = (float)s.mask_ratio;
        hv_rng_seed(ctx, (uint64_t)seed); /* the same initial weights for every fraction */
        if (!(maes[k] = hv_mae_new(ctx, &md))) die("model", hv_last_error());
        tf.channels = 1;
        tf.mean[0] = FM_MEAN;
        tf.std[0] = FM_STD;
        snprintf(dir, sizeof dir, "%s/pretrain_%g", output_dir, fracs[k]);
        if (hvk_mkdirs(dir)) die(NULL, hvk_last_error());
        printf("\n== pretraining %d/%d: MAE on %g%% of the images (%lld distinct)\n", k + 1, NFRAC, 100 * fracs[k],
               (long long)hvd_dataset_size(pools[k]));
        fflush(stdout);
        run = base_run(&s, "pretrain", dir);
        run.iters = s.pre_steps;
        run.batch_size = s.pre_batch;
        run.lr = s.pre_lr;
        run.beta1 = 0.9;
        run.beta2 = 0.95;
        run.weight_decay = 0;
        run.print_freq = quick ? 8 : 100;
        if (hvd_dataset_size(pools[k]) < run.batch_size) run.batch_size = (int)hvd_dataset_size(pools[k]);
        if (hvk_mae_pretrain(ctx, maes[k], pools[k], &tf, &run, &res)) die("pretraining", hvk_last_error());
        m[k + 1].name = names[k];
        m[k + 1].frac = fracs[k];
        m[k + 1].images = hvd_dataset_size(pools[k]);
        m[k + 1].pre_loss = res.final_loss;
        m[k + 1].pre_seconds = res.seconds;
    }

    /* ---- 2. evaluation: features, linear probe, few-shot finetuning -------------------------- */
    {
        hvd_transform ev = hvd_transform_eval(s.img), ft = hvd_transform_finetune(s.img);
        int64_t nt = hvd_dataset_size(test_eval), np = hvd_dataset_size(probe_set);
        ev.resize = 0;
        ev.channels = ft.channels = 1;
        ev.mean[0] = ft.mean[0] = FM_MEAN;
        ev.std[0] = ft.std[0] = FM_STD;
        ft.scale_min = (float)s.ft_scale_min;
        test_lab = (int32_t *)malloc(sizeof(int32_t) * (size_t)nt);
        probe_lab = (int32_t *)malloc(sizeof(int32_t) * (size_t)np);
        if (!test_lab || !probe_lab) die(NULL, "out of memory");
        for (i = 0; i < nt; i++) test_lab[i] = hvd_dataset_label(test_eval, i);
        for (i = 0; i < np; i++) probe_lab[i] = hvd_dataset_label(probe_set, i);
        for (i = 0; i < NMODEL; i++) {
            hv_vit_desc vd = vit_desc(&s, 0);
            hv_vit *vit;
            float *pf;
            hvk_run run;
            hvk_result res;
            double t0 = hvk_now();
            printf("\n== evaluating %d/%d: %s\n", i + 1, NMODEL, m[i].name);
            fflush(stdout);
            /* linear probe on frozen features */
            hv_rng_seed(ctx, (uint64_t)seed + 100);
            if (!(vit = hv_vit_new(ctx, &vd))) die("model", hv_last_error());
            if (i > 0 && copy_params(hv_vit_params(vit), hv_mae_params(maes[i - 1])) <= 0) die("copy", "no encoder tensors matched (or a copy failed)");
            pf = hvk_features(ctx, vit, probe_set, &ev, 256, s.workers, NULL);
            test_feat = pf ? hvk_features(ctx, vit, test_eval, &ev, 256, s.workers, NULL) : NULL;
            if (!pf || !test_feat) die("features", hvk_last_error());
            hv_vit_free(vit);
            run = base_run(&s, "probe", NULL);
            run.batch_size = 256;
            run.lr = s.probe_lr;
            run.weight_decay = 0;
            if (hvk_probe_features(hvk_data_ctx(ctx), pf, probe_lab, np, test_feat, test_lab, nt, s.dim, 10, s.probe_epochs, &run, &res))
                die("linear probe", hvk_last_error());
            free(pf);
            free(test_feat);
            m[i].probe1 = res.top1;
            m[i].probe5 = res.top5;
            m[i].probe_seconds = hvk_now() - t0;
            printf("[probe] %s: linear probe top-1 %.2f%%  top-5 %.2f%%  (%.1f s)\n", m[i].name, 100 * res.top1, 100 * res.top5,
                   m[i].probe_seconds);
            /* few-shot finetuning of all weights */
            for (k = 0; k < 2; k++) {
                hvk_result fr;
                vd = vit_desc(&s, 10);
                hv_rng_seed(ctx, (uint64_t)seed + 200);
                if (!(vit = hv_vit_new(ctx, &vd))) die("model", hv_last_error());
                if (i > 0 && copy_params(hv_vit_params(vit), hv_mae_params(maes[i - 1])) <= 0) die("copy", hv_last_error());
                {
                    static const char *model_tag[NMODEL] = {"none", "mae1pct", "mae10pct", "mae100pct"};
                    snprintf(dir, sizeof dir, "%s/finetune_%s_%s", output_dir, model_tag[i], k == 0 ? "labels1pct" : "labels2pct");
                }
                if (hvk_mkdirs(dir)) die(NULL, hvk_last_error());
                run = base_run(&s, "finetune", dir);
                run.iters = s.ft_steps;
                run.batch_size = s.ft_batch < hvd_dataset_size(labelled[k]) ? s.ft_batch : (int)hvd_dataset_size(labelled[k]);
                run.lr = s.ft_lr;
                run.beta1 = 0.9;
                run.beta2 = 0.999;
                run.weight_decay = s.ft_wd;
                run.quiet = 1;
                run.eval_every = (s.ft_steps + FT_EVALS - 1) / FT_EVALS;
                run.steps_per_epoch = hvd_dataset_size(labelled[k]) / run.batch_size;
                run.keep_best = 1;
                if (hvk_finetune(ctx, vit, labelled[k], &ft, test_eval, &ev, 0, &run, &fr)) die("finetuning", hvk_last_error());
                m[i].ft1[k] = fr.top1;
                m[i].ft5[k] = fr.top5;
                m[i].ft_seconds[k] = fr.seconds;
                printf("[finetune] %s, %lld labels: top-1 %.2f%%  top-5 %.2f%%  (final loss %.3f, %.1f s); best top-1 %.2f%% at step %lld, "
                       "kept in %s/model_best.safetensors\n", m[i].name, (long long)hvd_dataset_size(labelled[k]), 100 * fr.top1,
                       100 * fr.top5, fr.final_loss, fr.seconds, 100 * fr.best_top1, (long long)fr.best_step, dir);
                fflush(stdout);
                hv_vit_free(vit);
            }
        }
    }

    /* ---- 3. report ------------------------------------------------------------------------- */
    {
        double total = hvk_now() - t_start;
        char t[32];
        write_outputs(&s, m, hvd_dataset_size(train), hvd_dataset_size(test_eval), total, data_desc);
        fmt_time(total, t, sizeof t);
        printf("\nTop-1 accuracy on %lld test images (%%; chance 10%%):\n\n", (long long)hvd_dataset_size(test_eval));
        printf("  %-20s %12s %10s %14s %14s %14s\n", "pretraining", "images", "MAE loss", "linear probe", "few-shot ~1%", "few-shot 2%");
        for (i = 0; i < NMODEL; i++) {
            char loss[16];
            if (m[i].frac > 0) snprintf(loss, sizeof loss, "%.3f", m[i].pre_loss);
            else snprintf(loss, sizeof loss, "-");
            printf("  %-20s %12lld %10s %14.2f %14.2f %14.2f\n", m[i].name, (long long)m[i].images, loss, 100 * m[i].probe1, 100 * m[i].ft1[0],
                   100 * m[i].ft1[1]);
        }
        printf("\n[%s] done in %s; wrote %s/results.md, results.csv, accuracy.svg\n", PROG, t, output_dir);
    }
    for (k = 0; k < NFRAC; k++) {
        hv_mae_free(maes[k]);
        hvd_dataset_free(pools[k]);
    }
    for (k = 0; k < 2; k++) hvd_dataset_free(labelled[k]);
    hvd_dataset_free(test_eval);
    hvd_dataset_free(probe_set);
    hvd_dataset_free(train);
    hvd_dataset_free(test);
    free(test_lab);
    free(probe_lab);
    hvk_shutdown(ctx);
    return 0;
}
