/* mae_pretrain.c - Masked-Autoencoder pretraining of a ViT on unlabeled images, with the
   humanlike-vits recipe by default (EMAE train_mae.py + train_mae_sayavakepicutego4d.sh): mask
   ratio 0.8, no norm_pix loss, AdamW betas (0.9, 0.95), weight decay 0, constant lr 3e-4,
   RandomResizedCrop(size, scale (0.2, 1), bicubic) + horizontal flip + ImageNet normalisation.

   examples:
     mae_pretrain --model vits14 --data-path frames/ --output-dir runs/vits14 --iters 500000
     mae_pretrain --model custom --img-size 28 --patch-size 7 --embed-dim 64 --depth 4 \
                  --num-heads 4 --in-chans 1 --decoder-embed-dim 64 --decoder-depth 2 \
                  --decoder-num-heads 4 --data-path train-images-idx3-ubyte.gz \
                  --data-fraction 0.1 --norm-mean 0.286 --norm-std 0.353 --output-dir runs/fm

   Writes <output-dir>/checkpoint.hvts (the resumable train state: weights, AdamW moments, RNG,
   step), model.safetensors (the weights under their PyTorch names: what finetune and
   extract_features read), log.csv (step, epoch, loss, lr, images/s, elapsed) and loss.svg. */
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

#define PROG "mae_pretrain"

int main(int argc, char **argv) {
    hvk_model_opts mo = {"vits14", 0, 0, 0, 0, 0, 0};
    const char *data_path = NULL, *output_dir = NULL, *backend = "cpu", *norm_mean = NULL, *norm_std = NULL;
    int threads = 0, norm_pix = 0, epochs = 0, dec_dim = 512, dec_depth = 8, dec_heads = 16, iters = 0;
    double mask_ratio = 0.8, fraction = 1.0, seed = 0, subset_seed = 1, scale_min = 0.2;
    hvk_run run = hvk_run_defaults(PROG, 512, 3e-4, 0.0, 0.9, 0.95, 10000);
    const hvk_flag flags[] = {
        {"--data-path", "--data_path", HVK_STR, &data_path, "image folder (one sub-folder per class/episode) or IDX images (.gz ok)"},
        {"--data-fraction", "--class-fraction", HVK_FLOAT, &fraction, "fraction of the images used (the 'visual experience')"},
        {"--subset-seed", NULL, HVK_FLOAT, &subset_seed, "seed of the subset choice (the z of the model ids)"},
        HVK_MODEL_FLAGS(mo),
        {"--decoder-embed-dim", NULL, HVK_INT, &dec_dim, "decoder width"},
        {"--decoder-depth", NULL, HVK_INT, &dec_depth, "decoder blocks"},
        {"--decoder-num-heads", NULL, HVK_INT, &dec_heads, "decoder heads"},
        {"--mask-ratio", "--mask_ratio", HVK_FLOAT, &mask_ratio, "fraction of patches hidden"},
        {"--norm-pix-loss", "--norm_pix_loss", HVK_BOOL, &norm_pix, "normalise each target patch (official MAE; off in humanlike-vits)"},
        HVK_OPTIM_FLAGS(run),
        {"--scale-min", NULL, HVK_FLOAT, &scale_min, "RandomResizedCrop smallest area fraction"},
        HVK_NORM_FLAGS(norm_mean, norm_std),
        {"--iters", NULL, HVK_INT, &iters, "optimizer steps (the upstream runs are an infinite stream)"},
        {"--epochs", NULL, HVK_INT, &epochs, "passes over the data (when --iters is 0)"},
        {"--output-dir", "--output_dir", HVK_STR, &output_dir, "where checkpoint, log.csv and loss.svg go (required)"},
        {"--resume", NULL, HVK_BOOL, &run.resume, "continue from <output-dir>/checkpoint.hvts"},
        {"--save-every", "--save_freq", HVK_INT, &run.save_every, "checkpoint every N steps (and at the end)"},
        {"--print-freq", "--print_freq", HVK_INT, &run.print_freq, "progress line every N steps"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of initialisation, masks and augmentation"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", "--num_workers", HVK_INT, &run.workers, "data loader threads (0: load in the training thread)"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded, checkpoints downloaded)"},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), r;
    hv_ctx *ctx;
    hv_mae *mae;
    hv_mae_desc md;
    hvd_dataset *all, *data;
    hvd_transform tf;
    hvk_result res;
    char done[160];

    r = hvk_parse_flags(PROG, "Masked-autoencoder pretraining (humanlike-vits recipe by default).", argc, argv, flags, nflags);
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) exit(2);
    if (!data_path || !output_dir) {
        fprintf(stderr, "%s: --data-path and --output-dir are required (see --help)\n", PROG);
        exit(2);
    }
    if (run.batch_size < 2 || run.lr <= 0 || run.weight_decay < 0 || mask_ratio <= 0 || mask_ratio >= 1 || !(fraction > 0 && fraction <= 1) ||
        threads < 0 || run.workers < 0 || iters < 0 || epochs < 0 || run.save_every < 0 || run.print_freq < 0 || scale_min <= 0 ||
        scale_min > 1) {
        fprintf(stderr, "%s: out of range: need --batch-size >= 2, --lr > 0, --weight-decay >= 0, 0 < --mask-ratio < 1, "
                        "0 < --data-fraction <= 1, 0 < --scale-min <= 1, non-negative counts\n", PROG);
        exit(2);
    }
    memset(&md, 0, sizeof md);
    if (hvk_vit_desc_from(&mo, &md.encoder)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    md.decoder_embed_dim = dec_dim;
    md.decoder_depth = dec_depth;
    md.decoder_num_heads = dec_heads;
    md.mask_ratio = (float)mask_ratio;
    md.norm_pix_loss = norm_pix;

    ctx = hvk_init(backend, (uint64_t)seed, threads);
    if (!ctx) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(1);
    }
    if (!(mae = hv_mae_new(ctx, &md))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        hvk_shutdown(ctx);
        exit(2);
    }
    if (!(all = hvk_open_dataset(data_path, NULL))) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        hvk_shutdown(ctx);
        exit(1);
    }
    data = hvd_dataset_fraction(all, fraction, (uint64_t)subset_seed);
    tf = hvd_transform_mae_pretrain(0);
    tf.scale_min = (float)scale_min;
    if (hvk_set_norm(&tf, norm_mean, norm_std)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    {
        const hv_param_list *pl = hv_mae_params(mae);
        int64_t nparam = 0;
        int i;
        int img, patch, chans, dim, depth;
        for (i = 0; i < pl->count; i++) nparam += hv_numel(pl->tensors[i]);
        hvk_geometry(pl, &img, &patch, &chans, &dim, &depth);
        tf.size = img;
        tf.channels = chans;
        run.iters = iters ? iters : epochs > 0 ? (int64_t)epochs * (hvd_dataset_size(data) / run.batch_size) : 0;
        if (run.iters <= 0) {
            fprintf(stderr, "%s: give --iters N (or --epochs E with at least one full batch of data)\n", PROG);
            exit(2);
        }
        printf("[%s] data %s: %lld of %lld images (fraction %g); model img %d patch %d dim %d depth %d heads %d (0: the preset's), decoder %d/%d/%d, "
               "%lld parameters; mask %.2f; AdamW lr %g betas (%g, %g) wd %g; batch %d; %lld steps; %d thread(s), %d loader worker(s)\n",
               PROG, data_path, (long long)hvd_dataset_size(data), (long long)hvd_dataset_size(all), fraction, img, patch, dim, depth,
               md.encoder.num_heads, dec_dim, dec_depth, dec_heads, (long long)nparam, mask_ratio, run.lr, run.beta1, run.beta2,
               run.weight_decay, run.batch_size, (long long)run.iters, hv_get_threads(ctx), run.workers);
    }
    if (hvk_mkdirs(output_dir)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(1);
    }
    run.output_dir = output_dir;
    run.seed = (uint64_t)seed;
    r = hvk_mae_pretrain(ctx, mae, data, &tf, &run, &res);
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else if (res.steps == res.start_step)
        printf("[%s] done: %s; %s left as it was\n", PROG, hvk_steps_text(&res, done, sizeof done), output_dir);
    else
        printf("[%s] done: %s, %.0f img/s; wrote %s/checkpoint.hvts, model.safetensors, log.csv, loss.svg\n", PROG,
               hvk_steps_text(&res, done, sizeof done), res.images_per_s, output_dir);
    hvd_dataset_free(data);
    hvd_dataset_free(all);
    hv_mae_free(mae);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
