/* pmae_train.c - Perceptual MAE pretraining, LS-GAN variant (tractableai/perceptual-mae,
   configs/models/masked_image/ls_gan.yaml): an MAE ViT-B/16 generator (mask 0.75, decoder
   512/8/16) against the single-scale discriminator, generator loss gan_perceptual (L1 + 0.7 LSGAN
   + [L1 + 0.05 perceptual + 40 style] on the conv1..conv4 features of a frozen copy of the
   discriminator), Adam lr 1.5e-4 betas (0.9, 0.95) for each, StepLR(30 epochs, 0.9) on the
   generator. Per batch a generator step then a discriminator step, each with its own forward
   and random mask, as upstream's Lightning loop. Images: RandomResizedCrop(224, scale (0.2, 1),
   bicubic) + horizontal flip + ImageNet normalisation (upstream's random gamma and colour
   scaling are not applied). The discriminator takes 224x224 images only.

   examples:
     pmae_train --data-path imagenet/train --output-dir runs/pmae --epochs 300 --batch-size 16
     pmae_train --model custom --img-size 224 --patch-size 32 --embed-dim 64 --depth 2 --num-heads 2 \
                --decoder-embed-dim 32 --decoder-depth 1 --decoder-num-heads 2 --ndf 8 \
                --data-path photos/ --output-dir runs/tiny --iters 100

   Writes <output-dir>/checkpoint.hvts and model.safetensors (the generator, as mae_pretrain:
   finetune and extract_features read model.safetensors), discriminator.hvts (the discriminator
   and its Adam state), discriminator_copy.safetensors (the feature extractor), log.csv (the
   generator loss, the discriminator loss and the unweighted terms) and loss.svg. */
#define _POSIX_C_SOURCE 200809L
#include "humanvit.h"
#define HV_DATA_IMPLEMENTATION
#include "hv_data.h"
#define HV_KIT_IMPLEMENTATION
#include "hv_kit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "pmae_train"

int main(int argc, char **argv) {
    hvk_model_opts mo = {"vitb14", 0, 16, 0, 0, 0, 0}; /* ViT-B with 16-pixel patches: ViT-B/16 */
    const char *data_path = NULL, *output_dir = NULL, *norm_mean = NULL, *norm_std = NULL;
    int threads = 0, epochs = 0, dec_dim = 512, dec_depth = 8, dec_heads = 16, iters = 0, ndf = 64, lr_step = 30, copy_every = 5;
    double lr_gamma = 0.9, mask_ratio = 0.75, fraction = 1.0, seed = 0, subset_seed = 1, w_l1 = 1.0, w_perc = 0.05, w_style = 40.0, w_gan = 0.7;
    hvk_pmae_opts po;
    hvk_run run = hvk_run_defaults(PROG, 16, 1.5e-4, 0.0, 0.9, 0.95, 1000);
    const hvk_flag flags[] = {
        {"--data-path", "--data_path", HVK_STR, &data_path, "image folder (one sub-folder per class) or IDX images (.gz ok)"},
        {"--data-fraction", NULL, HVK_FLOAT, &fraction, "fraction of the images used"},
        {"--subset-seed", NULL, HVK_FLOAT, &subset_seed, "seed of the subset choice"},
        HVK_MODEL_FLAGS(mo),
        {"--decoder-embed-dim", NULL, HVK_INT, &dec_dim, "decoder width"},
        {"--decoder-depth", NULL, HVK_INT, &dec_depth, "decoder blocks"},
        {"--decoder-num-heads", NULL, HVK_INT, &dec_heads, "decoder heads"},
        {"--mask-ratio", "--mask_ratio", HVK_FLOAT, &mask_ratio, "fraction of patches hidden"},
        {"--ndf", NULL, HVK_INT, &ndf, "discriminator width (conv1 channels)"},
        {"--l1-weight", NULL, HVK_FLOAT, &w_l1, "weight of the perceptual loss's L1 (on top of the GAN loss's own L1)"},
        {"--perc-weight", NULL, HVK_FLOAT, &w_perc, "weight of the feature L1"},
        {"--style-weight", NULL, HVK_FLOAT, &w_style, "weight of the Gram-matrix L1"},
        {"--gan-weight", NULL, HVK_FLOAT, &w_gan, "weight of the LSGAN generator term"},
        {"--lr-step", NULL, HVK_INT, &lr_step, "generator lr times --lr-gamma every N epochs (StepLR)"},
        {"--lr-gamma", NULL, HVK_FLOAT, &lr_gamma, "StepLR factor"},
        {"--copy-every", NULL, HVK_INT, &copy_every, "epochs divisible by N refresh the feature-extractor copy at every step"},
        {"--batch-size", "--batch_size", HVK_INT, &run.batch_size, "images per step"},
        {"--lr", NULL, HVK_FLOAT, &run.lr, "Adam learning rate (generator and discriminator)"},
        {"--beta1", NULL, HVK_FLOAT, &run.beta1, "Adam beta1"},
        {"--beta2", NULL, HVK_FLOAT, &run.beta2, "Adam beta2"},
        HVK_NORM_FLAGS(norm_mean, norm_std),
        {"--iters", NULL, HVK_INT, &iters, "batches (each a generator and a discriminator step)"},
        {"--epochs", NULL, HVK_INT, &epochs, "passes over the data (when --iters is 0)"},
        {"--output-dir", "--output_dir", HVK_STR, &output_dir, "where the checkpoints, log.csv and loss.svg go (required)"},
        {"--resume", NULL, HVK_BOOL, &run.resume, "continue from <output-dir>/checkpoint.hvts and discriminator.hvts"},
        {"--save-every", NULL, HVK_INT, &run.save_every, "checkpoint every N batches (and at the end)"},
        {"--print-freq", NULL, HVK_INT, &run.print_freq, "progress lines every N batches"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of initialisation, masks and augmentation"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", NULL, HVK_INT, &run.workers, "data loader threads (0: load in the training thread)"},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), r;
    hv_ctx *ctx;
    hv_mae *mae;
    hv_disc *disc, *copy;
    hv_mae_desc md;
    hv_disc_desc dd;
    hvd_dataset *all, *data;
    hvd_transform tf;
    hvk_result res;

    r = hvk_parse_flags(PROG, "Perceptual MAE pretraining, LS-GAN variant (upstream's ls_gan recipe by default).", argc, argv, flags, nflags);
    if (r) return r == 1 ? 0 : 2;
    if (!data_path || !output_dir) {
        fprintf(stderr, "%s: --data-path and --output-dir are required (see --help)\n", PROG);
        exit(2);
    }
    if (run.batch_size < 2 || run.lr <= 0 || mask_ratio <= 0 || mask_ratio >= 1 || !(fraction > 0 && fraction <= 1) || ndf <= 0 ||
        threads < 0 || run.workers < 0 || iters < 0 || epochs < 0 || run.save_every < 0 || run.print_freq < 0 || w_l1 < 0 || w_perc < 0 ||
        w_style < 0 || w_gan < 0 || lr_step <= 0 || copy_every <= 0 || lr_gamma <= 0) {
        fprintf(stderr, "%s: out of range: need --batch-size >= 2, --lr > 0, 0 < --mask-ratio < 1, 0 < --data-fraction <= 1, "
                        "--ndf, --lr-step, --copy-every, --lr-gamma > 0, non-negative weights and counts\n", PROG);
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
    memset(&po, 0, sizeof po);
    po.lr_step = lr_step;
    po.lr_gamma = lr_gamma;
    po.copy_every = copy_every;
    /* the library's weights: 0 means the default, a negative value turns a term off */
    po.weights.l1 = w_l1 > 0 ? (float)w_l1 : -1.0f;
    po.weights.perc = w_perc > 0 ? (float)w_perc : -1.0f;
    po.weights.style = w_style > 0 ? (float)w_style : -1.0f;
    po.weights.gan = w_gan > 0 ? (float)w_gan : -1.0f;

    ctx = hvk_init("cpu", (uint64_t)seed, threads);
    if (!ctx) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(1);
    }
    memset(&dd, 0, sizeof dd);
    dd.ndf = ndf;
    dd.prefix = "discriminator."; /* upstream's Lightning keys */
    dd.in_chans = md.encoder.in_chans; /* 0: 3 for both */
    if (!(mae = hv_mae_new(ctx, &md)) || !(disc = hv_disc_new(ctx, &dd))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        hvk_shutdown(ctx);
        exit(2);
    }
    dd.prefix = "loss_fnc.disc_model_copy.";
    if (!(copy = hv_disc_new(ctx, &dd))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        hvk_shutdown(ctx);
        exit(1);
    }
    if (!(all = hvk_open_dataset(data_path, NULL))) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        hvk_shutdown(ctx);
        exit(1);
    }
    data = hvd_dataset_fraction(all, fraction, (uint64_t)subset_seed);
    tf = hvd_transform_mae_pretrain(0);
    if (hvk_set_norm(&tf, norm_mean, norm_std)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    {
        int64_t ng = 0, nd = 0;
        int i, img, patch, chans, dim, depth;
        const hv_param_list *gp = hv_mae_params(mae), *dp = hv_disc_params(disc);
        for (i = 0; i < gp->count; i++) ng += hv_numel(gp->tensors[i]);
        for (i = 0; i < dp->count; i++) nd += hv_numel(dp->tensors[i]);
        hvk_geometry(gp, &img, &patch, &chans, &dim, &depth);
        tf.size = img;
        tf.channels = chans;
        po.steps_per_epoch = hvd_dataset_size(data) / run.batch_size;
        run.iters = iters ? iters : (int64_t)epochs * po.steps_per_epoch;
        if (img != 224) {
            fprintf(stderr, "%s: the discriminator takes 224x224 images; this model's are %dx%d (--img-size 224)\n", PROG, img, img);
            exit(2);
        }
        if (run.iters <= 0 || po.steps_per_epoch <= 0) {
            fprintf(stderr, "%s: give --iters N or --epochs E, with at least one full batch of data\n", PROG);
            exit(2);
        }
        printf("[%s] data %s: %lld of %lld images; generator img %d patch %d dim %d depth %d, decoder %d/%d/%d, %lld parameters; "
               "discriminator ndf %d, %lld parameters; mask %.2f; Adam lr %g betas (%g, %g); batch %d; %lld batches (%lld per epoch); "
               "%d thread(s)\n",
               PROG, data_path, (long long)hvd_dataset_size(data), (long long)hvd_dataset_size(all), img, patch, dim, depth, dec_dim, dec_depth,
               dec_heads, (long long)ng, ndf, (long long)nd, mask_ratio, run.lr, run.beta1, run.beta2, run.batch_size, (long long)run.iters,
               (long long)po.steps_per_epoch, hv_get_threads(ctx));
    }
    if (hvk_mkdirs(output_dir)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(1);
    }
    run.output_dir = output_dir;
    run.seed = (uint64_t)seed;
    r = hvk_pmae_train(ctx, mae, disc, copy, data, &tf, &po, &run, &res);
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else
        printf("[%s] done: %lld steps, final generator loss %.4f, %.1f img/s; wrote %s/checkpoint.hvts, model.safetensors, "
               "discriminator.hvts, log.csv, loss.svg\n",
               PROG, (long long)res.steps, res.final_loss, res.images_per_s, output_dir);
    hvd_dataset_free(data);
    hvd_dataset_free(all);
    hv_disc_free(copy);
    hv_disc_free(disc);
    hv_mae_free(mae);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
