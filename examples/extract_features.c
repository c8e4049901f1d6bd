/* extract_features.c - the CLS features (after the final LayerNorm) of a pretrained ViT for every
   image of a folder (or an IDX file), written as an (N, D) float32 .npy, with the class labels
   as an (N,) int32 .npy beside it and the file names in a .txt, rows in data-set order (classes
   sorted, files sorted). Images go through the upstream evaluation transform: Resize(size + 32,
   bicubic) of the shorter side, CenterCrop(size), ImageNet normalisation.

   example:
     extract_features --model vits14 --weights vits14_1.0_1 --data-path images/ \
                      --output feats.npy          # also feats.labels.npy, feats.files.txt */
#define _POSIX_C_SOURCE 200809L
#include "humanvit.h"
#define HV_DATA_IMPLEMENTATION
#include "hv_data.h"
#define HV_KIT_IMPLEMENTATION
#include "hv_kit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PROG "extract_features"

static int fail(const char *msg) {
    fprintf(stderr, "%s: %s\n", PROG, msg);
    exit(1);
}

/* "<base without .npy><suffix>" */
static void sibling(const char *out, const char *suffix, char *buf, size_t n) {
    size_t len = strlen(out);
    if (len > 4 && !strcmp(out + len - 4, ".npy")) len -= 4;
    snprintf(buf, n, "%.*s%s", (int)len, out, suffix);
}

int main(int argc, char **argv) {
    hvk_model_opts mo = {"vits14", 0, 0, 0, 0, 0, 0};
    const char *data_path = NULL, *output = NULL, *weights_arg = NULL, *models_dir = NULL, *backend = "cpu", *norm_mean = NULL,
               *norm_std = NULL;
    int batch = 64, threads = 0, workers = 1, resize = 0, allow_random = 0;
    const hvk_flag flags[] = {
        {"--data-path", "--data_path", HVK_STR, &data_path, "image folder (one sub-folder per class) or IDX images"},
        {"--output", "-o", HVK_STR, &output, "the (N, D) .npy to write (required)"},
        {"--weights", "--finetune", HVK_STR, &weights_arg, "checkpoint (safetensors/.pth) or published model id"},
        {"--random-init", NULL, HVK_BOOL, &allow_random, "no --weights: features of a randomly initialised ViT"},
        {"--models-dir", NULL, HVK_STR, &models_dir, "where published .pth files are"},
        HVK_MODEL_FLAGS(mo),
        {"--resize", NULL, HVK_INT, &resize, "Resize of the shorter side before the centre crop (0: size + 32)"},
        HVK_NORM_FLAGS(norm_mean, norm_std),
        {"--batch-size", NULL, HVK_INT, &batch, "images per forward pass"},
        {"--threads", NULL, HVK_INT, &threads, "compute threads (0: all cores)"},
        {"--workers", NULL, HVK_INT, &workers, "image decoding threads"},
        {"--backend", NULL, HVK_STR, &backend, "cpu or vulkan (the model and optimizer on the GPU; batches are uploaded, checkpoints downloaded)"},
    };
    int r, img, patch, chans, dim, depth;
    hv_ctx *ctx;
    hv_vit *vit;
    hv_vit_desc vd;
    hvd_dataset *ds;
    hvd_transform tf;
    float *feat;
    int32_t *labels;
    int64_t n, i;
    char weights[1100], path[1200];

    r = hvk_parse_flags(PROG, "CLS features of a folder of images to .npy.", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]));
    if (r) return r == 1 ? 0 : 2;
    if (hvk_check_backend(PROG, backend)) exit(2);
    if (!data_path || !output) {
        fprintf(stderr, "%s: --data-path and --output are required (see --help)\n", PROG);
        exit(2);
    }
    if (!weights_arg && !allow_random) {
        fprintf(stderr, "%s: give --weights (or --random-init for an untrained baseline)\n", PROG);
        exit(2);
    }
    if (batch < 1 || threads < 0 || workers < 0 || resize < 0) {
        fprintf(stderr, "%s: --batch-size must be >= 1, counts non-negative\n", PROG);
        exit(2);
    }
    if (hvk_vit_desc_from(&mo, &vd)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    weights[0] = 0;
    if (weights_arg && hvk_resolve_weights("--weights", weights_arg, models_dir, weights, sizeof weights)) fail(hvk_last_error());
    { /* the output's folder must exist before the (long) extraction starts */
        char dir[1100];
        const char *slash = strrchr(output, '/');
        struct stat st;
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - output) : 1, slash ? output : ".");
        if (!dir[0]) snprintf(dir, sizeof dir, "/");
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "%s: --output %s: %s is not an existing folder\n", PROG, output, dir);
            exit(1);
        }
    }
    if (!(ds = hvk_open_dataset(data_path, NULL))) fail(hvk_last_error());
    ctx = hvk_init(backend, 0, threads);
    if (!ctx) fail(hvk_last_error());
    if (!(vit = hv_vit_new(ctx, &vd))) {
        fprintf(stderr, "%s: model: %s\n", PROG, hv_last_error());
        exit(2);
    }
    if (weights[0] && hvk_vit_load(vit, weights, PROG, 1)) fail(hvk_last_error());
    hvk_geometry(hv_vit_params(vit), &img, &patch, &chans, &dim, &depth);
    tf = hvk_eval_transform(img, chans, resize);
    if (hvk_set_norm(&tf, norm_mean, norm_std)) {
        fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
        exit(2);
    }
    n = hvd_dataset_size(ds);
    printf("[%s] %lld images from %s; model img %d patch %d dim %d depth %d; weights %s\n", PROG, (long long)n, data_path, img, patch, dim,
           depth, weights[0] ? weights : "(random init)");
    if (!(feat = hvk_features(ctx, vit, ds, &tf, batch, workers, PROG))) fail(hvk_last_error());
    labels = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    if (!labels) fail("out of memory");
    for (i = 0; i < n; i++) labels[i] = hvd_dataset_label(ds, i);
    r = hvk_npy_save_f32(ctx, output, feat, n, dim);
    sibling(output, ".labels.npy", path, sizeof path);
    if (!r) r = hvk_npy_save_i32(ctx, path, labels, n);
    if (!r) {
        FILE *f;
        char tmp[1300], name[1100];
        sibling(output, ".files.txt", path, sizeof path);
        if (!(f = hvk_open_tmp(path, tmp, sizeof tmp))) r = -1;
        else {
            for (i = 0; i < n; i++) fprintf(f, "%s\n", hvd_dataset_name(ds, i, name, sizeof name));
            r = hvk_commit(f, tmp, path);
        }
    }
    if (r) fprintf(stderr, "%s: %s\n", PROG, hvk_last_error());
    else printf("[%s] wrote %s (%lld x %d float32), labels and file names beside it\n", PROG, output, (long long)n, dim);
    free(feat);
    free(labels);
    hvd_dataset_free(ds);
    hv_vit_free(vit);
    hvk_shutdown(ctx);
    return r ? 1 : 0;
}
