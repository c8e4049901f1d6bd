/* ckpt_memory.c - peak resident memory of loading a checkpoint into a ViT, against the size of
   its weights (the checkpoint issue: loading vith14 must stay near 1x the weights).

   usage: ckpt_memory FILE.pth [ARCH [CLASSES]]     e.g. ckpt_memory /tmp/vith14.pth vith14 1000
   A random-weight file of the right layout comes from bench/make_vit_checkpoint.py. */
#include "humanvit.h"
#include <stdio.h>
#include <stdlib.h>
#include "peak_rss.h"


int main(int argc, char **argv) {
    hv_ctx *ctx;
    hv_vit_desc d = {0};
    hv_vit *vit;
    const hv_param_list *pl;
    hv_load_result res;
    double n = 0, before, after, weights_mb;
    int i;
    if (argc < 2) {
        fprintf(stderr, "usage: ckpt_memory FILE.pth [ARCH [CLASSES]]\n");
        return 2;
    }
    d.preset = hv_vit_preset_from_name(argc > 2 ? argv[2] : "vith14");
    d.num_classes = argc > 3 ? atoi(argv[3]) : 1000;
    if (!d.preset) {
        fprintf(stderr, "ckpt_memory: unknown architecture %s\n", argv[2]);
        return 2;
    }
    ctx = hv_init(NULL);
    vit = hv_vit_new(ctx, &d);
    if (!vit) {
        fprintf(stderr, "ckpt_memory: %s\n", hv_last_error());
        return 1;
    }
    pl = hv_vit_params(vit);
    for (i = 0; i < pl->count; i++) n += (double)hv_numel(pl->tensors[i]);
    weights_mb = n * 4 / 1048576;
    before = peak_rss_mb();
    if (hv_params_load_file(pl, argv[1], NULL, &res) != 0) {
        fprintf(stderr, "ckpt_memory: %s\n", hv_last_error());
        return 1;
    }
    after = peak_rss_mb();
    printf("%s: %.0f parameters = %.1f MiB of f32 weights; peak RSS %.1f MiB after building the model, %.1f MiB after loading "
           "(%.3fx the weights); %d tensors loaded, %d missing, %d unexpected\n",
           argv[1], n, weights_mb, before, after, after / weights_mb, res.loaded, res.missing_count, res.unexpected_count);
    hv_load_result_free(&res);
    hv_vit_free(vit);
    hv_shutdown(ctx);
    return 0;
}
