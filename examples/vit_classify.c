/* vit_classify.c - run a published humanlike-vits model (or any checkpoint of the same layout) on
   images or arrays, from C.

   usage: vit_classify (--checkpoint PATH | --model-id ID [--models-dir DIR]) [--finetuned]
                       [--arch ARCH] --input FILE [--input FILE ...] [--topk K]
                       [--save-output OUT.npy] [--threads N]

   --model-id   e.g. vith14@476_1.0_1; the file is found in --models-dir, $HUMANVIT_MODELS or the
                Hugging Face cache (see hv_model_resolve); --finetuned picks finetuned_<arch>/
   --checkpoint a .pth (torch.save zip) or .safetensors file; --arch (vits14 ... vith14@476) names
                its architecture, else it is read off the file's tensor shapes
   --input      an image (PNG, JPEG, PPM/PGM: resized to size+32 bicubic, centre-cropped, ImageNet
                normalised, as upstream test_model.py) or a float32 .npy array (N, 3, H, W)
                already normalised. Repeat --input for several images.
   --topk K     print the K most likely classes per input (finetuned models; default 5)
   --save-output  logits (finetuned, (N, classes)) or CLS features (pretrained, (N, D)) as .npy */
#include "humanvit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 256

static void usage(FILE *f) {
    fprintf(f, "usage: vit_classify (--checkpoint PATH | --model-id ID [--models-dir DIR]) [--finetuned] [--arch ARCH]\n"
               "                    --input FILE [--input FILE ...] [--topk K] [--save-output OUT.npy] [--threads N]\n");
}
static int fail(const char *what) {
    fprintf(stderr, "vit_classify: %s\n", what);
    return 1;
}

/* the preset whose embedding width and token count match a state dict */
static hv_vit_preset infer_arch(hv_state_dict *sd) {
    hv_tensor *pos = hv_state_dict_get(sd, "pos_embed");
    int64_t D, T;
    if (!pos || hv_ndim(pos) != 3) return HV_VIT_CUSTOM;
    D = hv_dim(pos, 2);
    T = hv_dim(pos, 1);
    if (T == 257) return D == 384 ? HV_VIT_S14 : D == 768 ? HV_VIT_B14 : D == 1024 ? HV_VIT_L14 : D == 1280 ? HV_VIT_H14 : HV_VIT_CUSTOM;
    if (D == 1280 && T == 1025) return HV_VIT_H14_448;
    if (D == 1280 && T == 1157) return HV_VIT_H14_476;
    return HV_VIT_CUSTOM;
}

int main(int argc, char **argv) {
    const char *checkpoint = NULL, *model_id = NULL, *models_dir = NULL, *arch = NULL, *save = NULL, *inputs[MAX_INPUTS];
    int ninputs = 0, finetuned = 0, topk = 5, threads = 0, i, n_images = 0;
    char path[1024];
    hv_ctx *ctx;
    hv_init_desc idesc;
    hv_vit_desc vd;
    hv_vit *vit;
    hv_state_dict *sd = NULL;
    hv_tensor *batch, *out;
    hv_load_result res;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--finetuned")) {
            finetuned = 1;
            continue;
        }
        if (!has_value) {
            fprintf(stderr, "vit_classify: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--checkpoint")) checkpoint = argv[++i];
        else if (!strcmp(a, "--model-id")) model_id = argv[++i];
        else if (!strcmp(a, "--models-dir")) models_dir = argv[++i];
        else if (!strcmp(a, "--arch")) arch = argv[++i];
        else if (!strcmp(a, "--save-output")) save = argv[++i];
        else if (!strcmp(a, "--topk") || !strcmp(a, "--threads")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < (a[2] == 't' && a[3] == 'o' ? 1 : 0) || v > 100000) {
                fprintf(stderr, "vit_classify: %s: '%s' is not a valid count\n", a, argv[i]);
                return 2;
            }
            if (a[3] == 'o') topk = (int)v;
            else threads = (int)v;
        } else if (!strcmp(a, "--input")) {
            if (ninputs == MAX_INPUTS) return fail("too many --input files (at most 256)");
            inputs[ninputs++] = argv[++i];
        } else {
            fprintf(stderr, "vit_classify: unknown flag '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!checkpoint == !model_id) {
        fprintf(stderr, "vit_classify: give exactly one of --checkpoint and --model-id\n");
        usage(stderr);
        return 2;
    }
    if (!ninputs) {
        fprintf(stderr, "vit_classify: no --input\n");
        usage(stderr);
        return 2;
    }

    memset(&idesc, 0, sizeof idesc);
    idesc.threads = threads;
    ctx = hv_init(&idesc);
    if (!ctx) return fail(hv_last_error());
    memset(&vd, 0, sizeof vd);
    if (model_id) {
        hv_model_id mid;
        if (hv_model_id_parse(model_id, &mid) || hv_model_resolve(model_id, finetuned, models_dir, path, sizeof path)) return fail(hv_last_error());
        checkpoint = path;
        vd.preset = mid.preset;
    } else if (arch) {
        vd.preset = hv_vit_preset_from_name(arch);
        if (!vd.preset) return fail("--arch must be one of vits14, vitb14, vitl14, vith14, vith14@448, vith14@476");
    } else {
        /* no architecture given: read it off the file (the weights are then held twice while loading) */
        sd = hv_ckpt_load(ctx, checkpoint, NULL);
        if (!sd) return fail(hv_last_error());
        vd.preset = infer_arch(sd);
        if (!vd.preset) return fail("cannot tell the architecture from the checkpoint's pos_embed; give --arch");
        if (hv_state_dict_get(sd, "head.1.weight")) finetuned = 1;
    }
    if (finetuned) vd.num_classes = 1000;
    if (sd && hv_state_dict_get(sd, "head.1.weight")) vd.num_classes = (int)hv_dim(hv_state_dict_get(sd, "head.1.weight"), 0);
    vit = hv_vit_new(ctx, &vd);
    if (!vit) return fail(hv_last_error());
    if ((sd ? hv_params_load(hv_vit_params(vit), sd, &res) : hv_params_load_file(hv_vit_params(vit), checkpoint, NULL, &res)) != 0)
        return fail(hv_last_error());
    fprintf(stderr, "vit_classify: %s: %d tensors loaded", checkpoint, res.loaded);
    if (res.missing_count) fprintf(stderr, ", %d missing (first: %s)", res.missing_count, res.missing[0]);
    if (res.unexpected_count) fprintf(stderr, ", %d unexpected (first: %s; an MAE decoder is expected here)", res.unexpected_count, res.unexpected[0]);
    fprintf(stderr, "\n");
    if (res.missing_count && finetuned) return fail("a finetuned model needs every key; is this a pretrained file? (drop --finetuned)");
    hv_load_result_free(&res);
    hv_state_dict_free(sd);

    /* the inputs, as one (N, 3, S, S) batch */
    {
        hv_vit_desc c = hv_vit_config(vit);
        int64_t S = c.img_size, per = 3 * S * S;
        float *buf = NULL;
        for (i = 0; i < ninputs; i++) {
            hv_tensor *arr = NULL;
            int64_t k = 1;
            const char *dot = strrchr(inputs[i], '.');
            if (dot && !strcmp(dot, ".npy")) {
                arr = hv_npy_load(ctx, inputs[i]);
                if (!arr) return fail(hv_last_error());
                if (hv_tensor_dtype(arr) != HV_F32 || hv_ndim(arr) != 4 || hv_dim(arr, 1) != 3 || hv_dim(arr, 2) != S || hv_dim(arr, 3) != S) {
                    fprintf(stderr, "vit_classify: %s: want a float32 array (N, 3, %lld, %lld)\n", inputs[i], (long long)S, (long long)S);
                    return 1;
                }
                k = hv_dim(arr, 0);
            }
            buf = (float *)realloc(buf, sizeof(float) * (size_t)((n_images + k) * per));
            if (!buf) return fail("out of memory");
            if (arr) {
                memcpy(buf + n_images * per, hv_data(arr), sizeof(float) * (size_t)(k * per));
                hv_tensor_free(arr);
            } else {
                hv_image img;
                if (hv_image_load(inputs[i], &img) != 0) return fail(hv_last_error());
                if (hv_image_eval_transform(&img, (int)S, buf + n_images * per) != 0) return fail(hv_last_error());
                hv_image_free(&img);
            }
            n_images += (int)k;
        }
        {
            int64_t shape[4];
            shape[0] = n_images;
            shape[1] = 3;
            shape[2] = S;
            shape[3] = S;
            batch = hv_tensor_from(ctx, hv_shape_of(4, shape), buf);
        }
        free(buf);
    }

    hv_set_grad_enabled(ctx, 0);
    out = hv_vit_forward(vit, batch, 0);
    if (!out) return fail(hv_last_error());
    if (vd.num_classes) {
        hv_tensor *prob = hv_softmax(out, -1);
        int64_t C = hv_dim(out, 1), b;
        const float *p = hv_data(hv_contiguous(prob));
        char *chosen = (char *)calloc((size_t)C, 1);
        if (!chosen) return fail("out of memory");
        for (b = 0; b < n_images; b++) {
            int k;
            printf("input %lld:", (long long)b);
            for (k = 0; k < topk && k < C; k++) {
                /* the k-th most likely class: the largest not already printed (ties by index) */
                int64_t best = -1, j;
                for (j = 0; j < C; j++) {
                    float pj = p[b * C + j];
                    if (chosen[j]) continue;
                    if (best < 0 || pj > p[b * C + best]) best = j;
                }
                chosen[best] = 1;
                printf("  class %lld (%.1f%%)", (long long)best, 100.0 * p[b * C + best]);
            }
            memset(chosen, 0, (size_t)C);
            printf("\n");
        }
        free(chosen);
    } else {
        printf("CLS features: %lld x %lld\n", (long long)hv_dim(out, 0), (long long)hv_dim(out, 1));
    }
    if (save) {
        if (hv_npy_save(save, hv_contiguous(out)) != 0) return fail(hv_last_error());
        fprintf(stderr, "vit_classify: wrote %s\n", save);
    }
    hv_vit_free(vit);
    hv_shutdown(ctx);
    return 0;
}
