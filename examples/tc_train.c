/* tc_train.c - temporal classification, the self-supervised objective of "Are we there yet?"
   (Orhan 2021; HSSL train_tc.py): a video's frames are cut into fixed-length episodes, one
   folder per episode, and a ResNeXt learns to tell which episode a frame comes from (softmax
   cross-entropy over the episodes). The upstream recipe: torchvision resnext101_32x8d (or
   resnext50_32x4d), random init, fc = Linear(2048, episodes); Adam lr 5e-4, betas (0.9, 0.999),
   weight decay 0, batch 256, 12 epochs, fp32. Augmentation here by default: RandomResizedCrop(224,
   scale 0.08-1) + horizontal flip + ImageNet normalisation; --strong-augment adds train_tc.py's
   colour jitter (0.9, 0.9, 0.9, 0.5) p 0.9, grayscale p 0.2 and Gaussian blur p 0.5.

   examples:
     tc_train --data-path frames_by_episode/ --model resnext101_32x8d --output-dir runs/tc
     tc_train --data-path frames/ --model resnext50_32x4d --epochs 12 --strong-augment --output-dir runs/tc50
     tc_train ... --output-dir runs/tc --resume                   (continues from checkpoint.hvts)

   --weights starts from a checkpoint instead of random init: a model.safetensors of ours, or a
   train_tc.py .tar ('model_state_dict', 'module.' prefixes) or torchvision .pth (strict=False:
   what matches by name; a wrong shape is an error naming the key).
   Writes <output-dir>/checkpoint.hvts (resumable: weights, BatchNorm statistics, Adam moments,
   RNG, step), model.safetensors (torchvision names: loads into PyTorch with load_state_dict
   after safetensors.torch.load_file, or into hv_resnext with hv_params_load_file), log.csv,
   loss.svg. */
#define _POSIX_C_SOURCE 200809L
#include "humanvit.h"
#define HV_DATA_IMPLEMENTATION
#include "hv_data.h"
#define HV_KIT_IMPLEMENTATION
#include "hv_kit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "tc_train"

/* "3,4,6,3" -> depths; 0 or -1 */
static int parse_depths(const char *s, int d[4]) {
    char *end;
    int k;
    for (k = 0; k < 4; k++) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1000 || (k < 3 && *end != ',') || (k == 3 && *end)) return -1;
        d[k] = (int)v;
        s = end + 1;
    }
    return 0;
}

static void die(int status, const char *what, const char *msg) {
    fprintf(stderr, "%s: %s%s%s\n", PROG, what ? what : "", what ? ": " : "", msg);
    exit(status);
}

int main(int argc, char **argv) {
    const char *data_path = NULL, *output_dir = NULL, *backend = "cpu", *model = "resnext101_32x8d", *depths = NULL, *weights = NULL;
    const char *norm_mean = NULL, *norm_std = NULL;
    int threads = 0, epochs = 12, iters = 0, classes = 0, img = 224, groups = 0, width = 0, base = 0, strong = 0;
    double seed = 0, scale_min = 0.08;
    hvk_run run = hvk_run_defaults(PROG, 256, 5e-4, 0.0, 0.9, 0.999, 0);
    const hvk_flag flags[] = {
        {"--data-path", "--data", HVK_STR, &data_path, "image folder, one sub-folder per episode (the class), sorted by name"},
        {"--model", "--arch", HVK_STR, &model, "resnext101_32x8d, resnext50_32x4d, or custom (give --depths)"},
        {"--depths", NULL, HVK_STR, &depths, "blocks per stage, e.g. 3,4,6,3 (overrides the preset's)"},
        {"--groups", NULL, HVK_INT, &groups, "groups of the 3x3 convs (0: the preset's)"},
        {"--width-per-group", NULL, HVK_INT, &width, "width per group (0: the preset's)"},
        {"--base-planes", NULL, HVK_INT, &base, "stem channels and stage-1 planes (0: 64)"},
        {"--num-classes", "--n-out", HVK_INT, &classes, "episodes (fc outputs; 0: the data's number of folders)"},
        {"--img-size", NULL, HVK_INT, &img, "RandomResizedCrop size"},
        {"--weights", "--finetune", HVK_STR, &weights, "start from these weights (.safetensors, train_tc.py .tar, torchvision .pth)"},
        HVK_OPTIM_FLAGS(run),
        {"--epochs", NULL, HVK_INT, &epochs, "passes over the data (when --iters is 0)"},
        {"--iters", NULL, HVK_INT, &iters, "optimizer steps instead of epochs"},
        {"--scale-min", NULL, HVK_FLOAT, &scale_min, "RandomResizedCrop smallest area fraction"},
        {"--strong-augment", NULL, HVK_BOOL, &strong, "train_tc.py's full augmentation: + colour jitter, grayscale, blur"},
        HVK_NORM_FLAGS(norm_mean, norm_std),
        {"--output-dir", "--output_dir", HVK_STR, &output_dir, "where checkpoint.hvts, model.safetensors, log.csv, loss.svg go (required)"},
        {"--resume", NULL, HVK_BOOL, &run.resume, "continue this run from <output-dir>/checkpoint.hvts"},
        {"--save-every", NULL, HVK_INT, &run.save_every, "checkpoint every N steps (0: at each epoch's end)"},
        {"--print-freq", "--print_freq", HVK_INT, &run.print_freq, "progress line every N steps"},
        {"--seed", NULL, HVK_FLOAT, &seed, "seed of the initialisation and augmentation"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", "--num_workers", HVK_INT, &run.workers, "data loader threads"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded)"},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), r;
    int64_t spe, nparam = 0;
    hv_ctx *ctx;
    hv_resnext *net;
    hv_resnext_desc nd;
    hvd_dataset *data;
    hvd_transform tf;
    hvk_result res;
    const hv_param_list *pl;

    r = hvk_parse_flags(PROG, "Temporal classification of video frames with a ResNeXt (the \"Are we there yet?\" recipe).", argc, argv, flags,
                        nflags);
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) exit(2);
    if (!data_path || !output_dir) die(2, NULL, "--data-path and --output-dir are required (see --help)");
    if (run.batch_size < 2 || run.lr <= 0 || run.weight_decay < 0 || threads < 0 || run.workers < 0 || epochs < 0 || iters < 0 ||
        classes < 0 || img < 1 || groups < 0 || width < 0 || base < 0 || run.save_every < 0 || run.print_freq < 0 || scale_min <= 0 ||
        scale_min > 1)
        die(2, NULL, "out of range: need --batch-size >= 2, --lr > 0, --weight-decay >= 0, --img-size >= 1, 0 < --scale-min <= 1, "
                     "non-negative counts");
    memset(&nd, 0, sizeof nd);
    nd.preset = hv_resnext_preset_from_name(model);
    if (!nd.preset && strcmp(model, "custom") != 0) die(2, "--model", "unknown model (resnext101_32x8d, resnext50_32x4d, custom)");
    if (depths && parse_depths(depths, nd.depths)) die(2, "--depths", "want four block counts 1..1000, e.g. 3,4,23,3");
    if (!nd.preset && !depths) die(2, "--model custom", "needs --depths");
    nd.groups = groups;
    nd.width_per_group = width;
    nd.base_planes = base;

    if (!(data = hvk_open_dataset(data_path, NULL))) die(1, NULL, hvk_last_error());
    if (hvd_dataset_label(data, 0) < 0) die(1, data_path, "has no episode folders (want <data-path>/<episode>/<frame>.jpg)");
    nd.num_classes = classes ? classes : hvd_dataset_classes(data);
    if (nd.num_classes < hvd_dataset_classes(data)) {
        fprintf(stderr, "%s: --num-classes %d is fewer than the %d episode folders of %s\n", PROG, nd.num_classes, hvd_dataset_classes(data),
                data_path);
        exit(2);
    }
    if (hvd_dataset_size(data) < run.batch_size) {
        fprintf(stderr, "%s: %lld images are fewer than one batch of %d; lower --batch-size\n", PROG, (long long)hvd_dataset_size(data),
                run.batch_size);
        exit(2);
    }
    spe = hvd_dataset_size(data) / run.batch_size;
    run.iters = iters ? iters : (int64_t)epochs * spe;
    if (run.iters <= 0) die(2, NULL, "give --epochs E or --iters N");
    if (!run.save_every) run.save_every = (int)(spe < 2147483647 ? spe : 2147483647); /* upstream saves every epoch */

    tf = strong ? hvd_transform_tc(img) : hvd_transform_finetune(img);
    tf.scale_min = (float)scale_min;
    if (hvk_set_norm(&tf, norm_mean, norm_std)) die(2, NULL, hvk_last_error());

    if (!(ctx = hvk_init(backend, (uint64_t)seed, threads))) die(1, NULL, hvk_last_error());
    if (!(net = hv_resnext_new(ctx, &nd))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        hvk_shutdown(ctx);
        exit(2);
    }
    pl = hv_resnext_params(net);
    if (weights) {
        hvk_loaded ld;
        if (hvk_load_weights(weights, pl, &ld)) die(1, NULL, hvk_last_error());
        if (ld.loaded == 0) die(1, weights, "no tensor of this model in the file (another architecture? check --model and the sizes)");
        printf("[%s] loaded %d tensors from %s; %d not in the file (new): %s\n", PROG, ld.loaded, weights, ld.missing,
               ld.missing ? ld.missing_names : "-");
    }
    for (r = 0; r < pl->count; r++)
        if (hv_requires_grad(pl->tensors[r])) nparam += hv_numel(pl->tensors[r]);
    nd = hv_resnext_config(net);
    printf("[%s] data %s: %lld images in %d episodes; %s (stages %d,%d,%d,%d, %d groups x %d, base %d), %d classes, %lld parameters; "
           "Adam lr %g betas (%g, %g) wd %g; batch %d, %lld steps (%lld per epoch); %s augmentation at %d px; %d thread(s), %d loader "
           "worker(s)\n",
           PROG, data_path, (long long)hvd_dataset_size(data), hvd_dataset_classes(data), model, nd.depths[0], nd.depths[1], nd.depths[2],
           nd.depths[3], nd.groups, nd.width_per_group, nd.base_planes, nd.num_classes, (long long)nparam, run.lr, run.beta1, run.beta2,
           run.weight_decay, run.batch_size, (long long)run.iters, (long long)spe, strong ? "train_tc.py's full" : "RandomResizedCrop + flip",
           img, hv_get_threads(ctx), run.workers);

    if (hvk_mkdirs(output_dir)) die(1, NULL, hvk_last_error());
    run.output_dir = output_dir;
    run.seed = (uint64_t)seed;
    run.optim = HV_OPTIM_ADAM;
    r = hvk_tc_train(ctx, net, data, &tf, &run, &res);
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else
        printf("[%s] done: %lld steps, final loss %.4f, %.1f img/s; wrote %s/checkpoint.hvts, model.safetensors, log.csv, loss.svg\n", PROG,
               (long long)res.steps, res.final_loss, res.images_per_s, output_dir);
    hvd_dataset_free(data);
    hv_resnext_free(net);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
