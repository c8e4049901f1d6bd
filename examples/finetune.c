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
   Writes <output-dir>/checkpoint.hvts (resumable), model.safetensors, log.csv, loss.svg, eval.txt. */
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
    int batch = 128, threads = 0, workers = 1, print_freq = 20, save_every = 0, resume = 0, freeze = 0, epochs = 50, iters = 0;
    int classes = 0, eval_resize = 0, no_aug = 0;
    double lr = 1e-4, wd = 0.05, beta1 = 0.9, beta2 = 0.999, frac = 1.0, seed = 0, subset_seed = 0, scale_min = 0.08;
    const hvk_flag flags[] = {
        {"--data-path", "--data_path", HVK_STR, &data_path, "labelled training images: image folder or IDX (.gz ok; labels beside it)"},
        {"--val-path", NULL, HVK_STR, &val_path, "validation images (same forms); none: no evaluation"},
        {"--frac-retained", "--frac_retained", HVK_FLOAT, &frac, "fraction of the labelled images kept (0.010147, 0.02, 1)"},
        {"--subset-seed", NULL, HVK_FLOAT, &subset_seed, "seed of the labelled subset"},
        {"--finetune", "--pretrained", HVK_STR, &pretrained, "pretrained weights: file or model id (none: random init)"},
        {"--models-dir", NULL, HVK_STR, &models_dir, "where published .pth files are (else $HUMANVIT_MODELS, HF cache)"},
        {"--freeze-trunk", "--freeze_trunk", HVK_BOOL, &freeze, "train the head only (linear probe)"},
        {"--model", "--arch", HVK_STR, &mo.model, "vits14 vitb14 vitl14 vith14 vith14@448 vith14@476, or custom"},
        {"--img-size", "--input_size", HVK_INT, &mo.img_size, "image size (0: the model's)"},
        {"--patch-size", NULL, HVK_INT, &mo.patch_size, "patch size (0: the model's)"},
        {"--embed-dim", NULL, HVK_INT, &mo.embed_dim, "width (0: the model's)"},
        {"--depth", NULL, HVK_INT, &mo.depth, "blocks (0: the model's)"},
        {"--num-heads", NULL, HVK_INT, &mo.num_heads, "heads (0: the model's)"},
        {"--in-chans", NULL, HVK_INT, &mo.in_chans, "input channels, 3 or 1 (0: 3)"},
        {"--num-classes", "--nb_classes", HVK_INT, &classes, "classes (0: the training set's)"},
        {"--batch-size", "--batch_size_per_gpu", HVK_INT, &batch, "images per step"},
        {"--lr", NULL, HVK_FLOAT, &lr, "learning rate (constant)"},
        {"--weight-decay", "--weight_decay", HVK_FLOAT, &wd, "AdamW weight decay"},
        {"--beta1", NULL, HVK_FLOAT, &beta1, "AdamW beta1"},
        {"--beta2", NULL, HVK_FLOAT, &beta2, "AdamW beta2"},
        {"--epochs", NULL, HVK_INT, &epochs, "passes over the retained images (when --iters is 0)"},
        {"--iters", NULL, HVK_INT, &iters, "optimizer steps instead of epochs"},
        {"--scale-min", NULL, HVK_FLOAT, &scale_min, "RandomResizedCrop smallest area fraction"},
        {"--no-aug", NULL, HVK_BOOL, &no_aug, "no training augmentation (the evaluation transform)"},
        {"--eval-resize", NULL, HVK_INT, &eval_resize, "validation Resize of the shorter side (0: size + 32)"},
        {"--norm-mean", NULL, HVK_STR, &norm_mean, "Normalize mean, 1 or 3 values (default ImageNet's)"},
        {"--norm-std", NULL, HVK_STR, &norm_std, "Normalize std, 1 or 3 values (default ImageNet's)"},
        {"--output-dir", "--output_dir", HVK_STR, &output_dir, "where checkpoint, logs and eval.txt go (required)"},
        {"--resume", NULL, HVK_BOOL, &resume, "continue this run from <output-dir>/checkpoint.hvts"},
        {"--save-every", NULL, HVK_INT, &save_every, "checkpoint every N steps (0: at the end only)"},
        {"--print-freq", "--print_freq", HVK_INT, &print_freq, "progress line every N steps"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of the head's initialisation and augmentation"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", "--num_workers", HVK_INT, &workers, "data loader threads"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded, checkpoints downloaded)"},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), r, img, patch, chans, dim, depth;
    hv_ctx *ctx;
    hv_vit *vit;
    hv_vit_desc vd;
    hvd_dataset *all = NULL, *train = NULL, *val = NULL;
    hvd_transform tf, vtf;
    hvk_run run;
    hvk_result res;
    char weights[1100];

    r = hvk_parse_flags(PROG, "Few-shot finetuning (all weights) or linear probe (--freeze-trunk) of a ViT; top-1/top-5 on --val-path.",
                        argc, argv, flags, nflags);
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) exit(2);
    if (!data_path || !output_dir) {
        fprintf(stderr, "%s: --data-path and --output-dir are required (see --help)\n", PROG);
        exit(2);
    }
    if (batch < 2 || lr <= 0 || wd < 0 || !(frac > 0 && frac <= 1) || threads < 0 || workers < 0 || epochs < 0 || iters < 0 ||
        classes < 0 || save_every < 0 || print_freq < 0 || scale_min <= 0 || scale_min > 1 || eval_resize < 0) {
        fprintf(stderr, "%s: out of range: need --batch-size >= 2, --lr > 0, --weight-decay >= 0, 0 < --frac-retained <= 1, "
                        "0 < --scale-min <= 1, non-negative counts\n", PROG);
        exit(2);
    }
    if (hvk_vit_desc_from(&mo, &vd)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    /* the pretrained file: a path, else a published model id */
    weights[0] = 0;
    if (pretrained) {
        FILE *f = fopen(pretrained, "rb");
        if (f) {
            fclose(f);
            snprintf(weights, sizeof weights, "%s", pretrained);
        } else {
            hv_model_id id;
            if (hv_model_id_parse(pretrained, &id) != 0) {
                fprintf(stderr, "%s: --finetune %s: no such file, and not a model id (%s)\n", PROG, pretrained, hv_last_error());
                exit(1);
            }
            if (hv_model_resolve(pretrained, 0, models_dir, weights, sizeof weights) != 0) fail("--finetune", hv_last_error());
        }
    }
    /* data */
    if (!(all = hvk_open_dataset(data_path, NULL))) fail(NULL, hvk_last_error());
    if (hvd_dataset_label(all, 0) < 0) fail(data_path, "has no labels (IDX: put the labels-idx1 file beside the images)");
    if (!(train = hvd_dataset_fraction(all, frac, (uint64_t)subset_seed))) fail("--frac-retained", hvd_last_error());
    if (val_path && !(val = hvk_open_dataset(val_path, NULL))) fail(NULL, hvk_last_error());
    if (val && hvd_dataset_label(val, 0) < 0) fail(val_path, "has no labels");
    if (!classes) classes = hvd_dataset_classes(all);
    if (classes < 2) fail(data_path, "fewer than 2 classes");
    if (hvd_dataset_size(train) < batch) {
        fprintf(stderr, "%s: %lld retained images are fewer than one batch of %d; lower --batch-size\n", PROG,
                (long long)hvd_dataset_size(train), batch);
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
    if (weights[0]) {
        int copied, missing;
        char names[400];
        if (hvk_load_weights(weights, hv_vit_params(vit), &copied, &missing, names, sizeof names)) fail(NULL, hvk_last_error());
        if (copied == 0) fail(weights, "no tensor of this model in the file (another architecture? check --model and the sizes)");
        printf("[%s] loaded %d tensors from %s; %d not in the file (new): %s\n", PROG, copied, weights, missing, missing ? names : "-");
    }
    /* transforms */
    vtf = hvd_transform_eval(img);
    vtf.resize = eval_resize ? eval_resize : img + 32;
    if (no_aug) tf = vtf;
    else {
        tf = hvd_transform_finetune(img);
        tf.scale_min = (float)scale_min;
    }
    tf.channels = vtf.channels = chans;
    if ((norm_mean && hvk_parse_floats3(norm_mean, tf.mean)) || (norm_std && hvk_parse_floats3(norm_std, tf.std))) {
        fprintf(stderr, "%s: --norm-mean/--norm-std take 1 or 3 comma-separated numbers\n", PROG);
        exit(2);
    }
    memcpy(vtf.mean, tf.mean, sizeof tf.mean);
    memcpy(vtf.std, tf.std, sizeof tf.std);
    if (!iters) iters = (int)((int64_t)epochs * (hvd_dataset_size(train) / batch));
    if (iters <= 0) {
        fprintf(stderr, "%s: nothing to do: give --epochs or --iters\n", PROG);
        exit(2);
    }
    printf("[%s] %s: %lld of %lld labelled images (frac-retained %g), %d classes; val %s (%lld); model img %d patch %d dim %d "
           "depth %d; %s; AdamW lr %g wd %g; batch %d; %d steps; %d thread(s)\n",
           PROG, data_path, (long long)hvd_dataset_size(train), (long long)hvd_dataset_size(all), frac, classes, val_path ? val_path : "-",
           (long long)hvd_dataset_size(val), img, patch, dim, depth, freeze ? "linear probe (trunk frozen)" : "all weights trained", lr,
           wd, batch, iters, hv_get_threads(ctx));
    if (hvk_mkdirs(output_dir)) fail(NULL, hvk_last_error());
    memset(&run, 0, sizeof run);
    run.prog = PROG;
    run.output_dir = output_dir;
    run.iters = iters;
    run.batch_size = batch;
    run.lr = lr;
    run.beta1 = beta1;
    run.beta2 = beta2;
    run.weight_decay = wd;
    run.print_freq = print_freq;
    run.save_every = save_every;
    run.resume = resume;
    run.workers = workers;
    run.seed = (uint64_t)seed;
    r = hvk_finetune(ctx, vit, train, &tf, val, &vtf, freeze, &run, &res);
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else {
        char path[1200];
        FILE *f;
        snprintf(path, sizeof path, "%s/eval.txt", output_dir);
        if ((f = fopen(path, "w")) != NULL) {
            fprintf(f, "train_images %lld\nfrac_retained %g\nsteps %lld\nfinal_loss %.6f\n", (long long)hvd_dataset_size(train), frac,
                    (long long)res.steps, res.final_loss);
            if (val) fprintf(f, "val_images %lld\ntop1 %.4f\ntop5 %.4f\n", (long long)hvd_dataset_size(val), 100 * res.top1, 100 * res.top5);
            fclose(f);
        }
        printf("[%s] done: %lld steps, final loss %.4f%s", PROG, (long long)res.steps, res.final_loss, val ? "" : "\n");
        if (val) printf(", top-1 %.2f%%, top-5 %.2f%%\n", 100 * res.top1, 100 * res.top5);
    }
    hvd_dataset_free(train);
    hvd_dataset_free(all);
    hvd_dataset_free(val);
    hv_vit_free(vit);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
