/* finetune.c - few-shot finetuning and linear probe of a pretrained ViT, as the humanlike-vits
   evaluation (EMAE eval_finetune.py): the classifier head is BatchNorm1d(D, affine=False, eps
   1e-6) + Linear(D, classes) on the CLS feature; AdamW on all weights, lr 1e-4, weight decay
   0.05, betas (0.9, 0.999), batch 128, no schedule; RandomResizedCrop(size) (scale 0.08-1,
   bilinear) + flip for training, Resize(size + 32, bicubic) + CenterCrop(size) for validation.
   --frac-retained keeps that fraction of the labelled images (0.010147 and 0.02 are the
   upstream "~1%" and "2%" conditions: 13,000 and 25,623 ImageNet images); --freeze-trunk trains
   the head only (linear probe: upstream runs it on all labels, with Adam lr 5e-4).

   examples:
     finetune --model vits14 --finetune vits14_1.0_1 --data-path imagenet/train \
              --val-path imagenet/val --frac-retained 0.02 --output-dir runs/ft
     finetune --model vits14 --finetune runs/vits14/checkpoint.safetensors --freeze-trunk \
              --lr 5e-4 --weight-decay 0 --data-path ... --val-path ... --output-dir runs/lp

   --finetune takes the model.safetensors of a mae_pretrain run, any safetensors or PyTorch .pth
   with timm/MAE names (the published files keep them under "model"), or a published model id
   such as vits14_1.0_1, looked up in --models-dir, $HUMANVIT_MODELS and the Hugging Face cache.
   A checkpoint of another image size (a 224 model finetuned at 448) has its pos_embed
   interpolated as upstream interpolate_pos_embed (bicubic, CLS row kept).

   As upstream, the validation set is evaluated after every epoch (--eval-every), the weights of
   the best top-1 are kept in model_best.safetensors, and the published numbers are that best
   epoch's: eval.txt gives the final and the best evaluation (best_* lines).
   Writes <output-dir>/checkpoint.hvts (resumable; it carries the best-so-far), model.safetensors,
   model_best.safetensors, log.csv (val_top1/val_top5 on the evaluated steps), loss.svg, eval.txt. */
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

#define PROG "finetune"

static int fail(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s%s%s\n", PROG, what ? what : "", what ? ": " : "", msg);
    exit(1);
}

int main(int argc, char **argv) {
    hvk_model_opts mo = {"vits14", 0, 0, 0, 0, 0, 0};
    const char *data_path = NULL, *val_path = NULL, *output_dir = NULL, *backend = "cpu", *pretrained = NULL, *models_dir = NULL;
    const char *norm_mean = NULL, *norm_std = NULL;
    int threads = 0, freeze = 0, epochs = 50, iters = 0, classes = 0, eval_resize = 0, no_aug = 0, eval_every = 1, eval_steps = 0;
    double frac = 1.0, seed = 0, subset_seed = 0, scale_min = 0.08;
    hvk_run run = hvk_run_defaults(PROG, 128, 1e-4, 0.05, 0.9, 0.999, 0);
    const hvk_flag flags[] = {
        {"--data-path", "--data_path", HVK_STR, &data_path, "labelled training images: image folder or IDX (.gz ok; labels beside it)"},
        {"--val-path", NULL, HVK_STR, &val_path, "validation images (same forms); none: no evaluation"},
        {"--frac-retained", "--frac_retained", HVK_FLOAT, &frac, "fraction of the labelled images kept (0.010147, 0.02, 1)"},
        {"--subset-seed", NULL, HVK_FLOAT, &subset_seed, "seed of the labelled subset"},
        {"--finetune", "--pretrained", HVK_STR, &pretrained, "pretrained weights: file or model id (none: random init)"},
        {"--models-dir", NULL, HVK_STR, &models_dir, "where published .pth files are (else $HUMANVIT_MODELS, HF cache)"},
        {"--freeze-trunk", "--freeze_trunk", HVK_BOOL, &freeze, "train the head only (linear probe)"},
        HVK_MODEL_FLAGS(mo),
        {"--num-classes", "--nb_classes", HVK_INT, &classes, "classes (0: the training set's)"},
        HVK_OPTIM_FLAGS(run),
        {"--epochs", NULL, HVK_INT, &epochs, "passes over the retained images (when --iters is 0)"},
        {"--iters", NULL, HVK_INT, &iters, "optimizer steps instead of epochs"},
        {"--scale-min", NULL, HVK_FLOAT, &scale_min, "RandomResizedCrop smallest area fraction"},
        {"--no-aug", NULL, HVK_BOOL, &no_aug, "no training augmentation (the evaluation transform)"},
        {"--eval-resize", NULL, HVK_INT, &eval_resize, "validation Resize of the shorter side (0: size + 32)"},
        {"--eval-every", NULL, HVK_INT, &eval_every, "with --epochs: evaluate --val-path every N epochs (0: at the end only); the best kept"},
        {"--eval-every-steps", NULL, HVK_INT, &eval_steps, "evaluate every N steps instead (0: with --iters, at the end only)"},
        HVK_NORM_FLAGS(norm_mean, norm_std),
        {"--output-dir", "--output_dir", HVK_STR, &output_dir, "where checkpoints, model_best, logs and eval.txt go (required)"},
        {"--resume", NULL, HVK_BOOL, &run.resume, "continue this run from <output-dir>/checkpoint.hvts"},
        {"--save-every", NULL, HVK_INT, &run.save_every, "checkpoint every N steps (0: at the end only)"},
        {"--print-freq", "--print_freq", HVK_INT, &run.print_freq, "progress line every N steps"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of the head's initialisation and augmentation"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", "--num_workers", HVK_INT, &run.workers, "data loader threads"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded, checkpoints downloaded)"},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), r, img, patch, chans, dim, depth;
    int64_t spe;
    hv_ctx *ctx;
    hv_vit *vit;
    hv_vit_desc vd;
    hvd_dataset *all = NULL, *train = NULL, *val = NULL;
    hvd_transform tf, vtf;
    hvk_result res;
    char weights[1100], every[80], done[160];

    r = hvk_parse_flags(PROG, "Few-shot finetuning (all weights) or linear probe (--freeze-trunk) of a ViT; top-1/top-5 on --val-path.",
                        argc, argv, flags, nflags);
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) exit(2);
    if (!data_path || !output_dir) {
        fprintf(stderr, "%s: --data-path and --output-dir are required (see --help)\n", PROG);
        exit(2);
    }
    if (run.batch_size < 2 || run.lr <= 0 || run.weight_decay < 0 || !(frac > 0 && frac <= 1) || threads < 0 || run.workers < 0 ||
        epochs < 0 || iters < 0 || classes < 0 || run.save_every < 0 || run.print_freq < 0 || scale_min <= 0 || scale_min > 1 ||
        eval_resize < 0 || eval_every < 0 || eval_steps < 0) {
        fprintf(stderr, "%s: out of range: need --batch-size >= 2, --lr > 0, --weight-decay >= 0, 0 < --frac-retained <= 1, "
                        "0 < --scale-min <= 1, non-negative counts\n", PROG);
        exit(2);
    }
    if (hvk_vit_desc_from(&mo, &vd)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    weights[0] = 0;
    if (pretrained && hvk_resolve_weights("--finetune", pretrained, models_dir, weights, sizeof weights)) fail(NULL, hvk_last_error());
    /* data */
    if (!(all = hvk_open_dataset(data_path, NULL))) fail(NULL, hvk_last_error());
    if (hvd_dataset_label(all, 0) < 0) fail(data_path, "has no labels (IDX: put the labels-idx1 file beside the images)");
    if (!(train = hvd_dataset_fraction(all, frac, (uint64_t)subset_seed))) fail("--frac-retained", hvd_last_error());
    if (val_path && !(val = hvk_open_dataset(val_path, NULL))) fail(NULL, hvk_last_error());
    if (val && hvd_dataset_label(val, 0) < 0) fail(val_path, "has no labels");
    if (!classes) classes = hvd_dataset_classes(all);
    if (classes < 2) fail(data_path, "fewer than 2 classes");
    if (hvd_dataset_size(train) < run.batch_size) {
        fprintf(stderr, "%s: %lld retained images are fewer than one batch of %d; lower --batch-size\n", PROG,
                (long long)hvd_dataset_size(train), run.batch_size);
        exit(2);
    }
    vd.num_classes = classes;
    ctx = hvk_init(backend, (uint64_t)seed, threads);
    if (!ctx) fail(NULL, hvk_last_error());
    if (!(vit = hv_vit_new(ctx, &vd))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        exit(2);
    }
    hvk_geometry(hv_vit_params(vit), &img, &patch, &chans, &dim, &depth);
    if (weights[0] && hvk_vit_load(vit, weights, PROG, 0)) fail(NULL, hvk_last_error());
    /* transforms */
    vtf = hvk_eval_transform(img, chans, eval_resize);
    if (no_aug) tf = vtf;
    else {
        tf = hvd_transform_finetune(img);
        tf.scale_min = (float)scale_min;
        tf.channels = chans;
    }
    if (hvk_set_norm(&tf, norm_mean, norm_std) || hvk_set_norm(&vtf, norm_mean, norm_std)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    /* steps; evaluations every --eval-every epochs (upstream: every epoch), or --eval-every-steps */
    spe = hvd_dataset_size(train) / run.batch_size; /* drop_last */
    run.steps_per_epoch = spe;
    if (eval_steps) run.eval_every = eval_steps;
    else if (!iters) run.eval_every = (int64_t)eval_every * spe;
    run.iters = iters ? iters : (int64_t)epochs * spe;
    run.keep_best = 1;
    run.output_dir = output_dir;
    run.seed = (uint64_t)seed;
    if (run.iters <= 0) {
        fprintf(stderr, "%s: nothing to do: give --epochs or --iters\n", PROG);
        exit(2);
    }
    if (run.eval_every > 0) snprintf(every, sizeof every, ", evaluated every %lld steps and at the end", (long long)run.eval_every);
    else snprintf(every, sizeof every, "%s", val ? ", evaluated at the end" : "");
    printf("[%s] %s: %lld of %lld labelled images (frac-retained %g), %d classes; val %s (%lld%s); model img %d patch %d dim %d depth %d; "
           "%s; AdamW lr %g wd %g; batch %d; %lld steps (%lld an epoch); %d thread(s)\n",
           PROG, data_path, (long long)hvd_dataset_size(train), (long long)hvd_dataset_size(all), frac, classes, val_path ? val_path : "-",
           (long long)hvd_dataset_size(val), every, img, patch, dim, depth,
           freeze ? "linear probe (trunk frozen)" : "all weights trained", run.lr, run.weight_decay, run.batch_size, (long long)run.iters,
           (long long)spe, hv_get_threads(ctx));
    if (hvk_mkdirs(output_dir)) fail(NULL, hvk_last_error());
    r = hvk_finetune(ctx, vit, train, &tf, val, &vtf, freeze, &run, &res);
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else {
        char path[1200], tmp[1300], ep[64];
        FILE *f;
        snprintf(path, sizeof path, "%s/eval.txt", output_dir);
        if ((f = hvk_open_tmp(path, tmp, sizeof tmp)) != NULL) {
            fprintf(f, "train_images %lld\nfrac_retained %g\nsteps %lld\n", (long long)hvd_dataset_size(train), frac, (long long)res.steps);
            if (!isnan(res.final_loss)) fprintf(f, "final_loss %.6f\n", res.final_loss); /* unknown: a checkpoint that lacks it */
            if (val) {
                fprintf(f, "val_images %lld\ntop1 %.4f\ntop5 %.4f\n", (long long)hvd_dataset_size(val), 100 * res.top1, 100 * res.top5);
                fprintf(f, "best_step %lld\nbest_epoch %g\nbest_top1 %.4f\nbest_top5 %.4f\n", (long long)res.best_step,
                        (double)res.best_step / (double)spe, 100 * res.best_top1, 100 * res.best_top5);
            }
            if (hvk_commit(f, tmp, path)) fprintf(stderr, "%s: warning: %s\n", PROG, hvk_last_error());
        }
        printf("[%s] done: %s%s", PROG, hvk_steps_text(&res, done, sizeof done), val ? "" : "\n");
        if (val) {
            snprintf(ep, sizeof ep, "%g", (double)res.best_step / (double)spe);
            printf(", top-1 %.2f%%, top-5 %.2f%%; best top-1 %.2f%%, top-5 %.2f%% at step %lld (epoch %s), in model_best.safetensors\n",
                   100 * res.top1, 100 * res.top5, 100 * res.best_top1, 100 * res.best_top5, (long long)res.best_step, ep);
        }
    }
    hvd_dataset_free(train);
    hvd_dataset_free(all);
    hvd_dataset_free(val);
    hv_vit_free(vit);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
