/* convert_checkpoint.c - a PyTorch checkpoint (.pth / .tar, torch.save's zip format) to
   safetensors, same keys, loadable by PyTorch's safetensors package.

   usage: convert_checkpoint IN.pth OUT.safetensors [--entry KEY]

   --entry picks the top-level key that holds the weights ("model" for humanlike-vits files,
   "model_state_dict" for the temporal-classification ones); by default the first of those that
   exists, else the top level. A leading "module." is stripped from every key. The output is
   written to a temporary file and renamed, so an existing OUT is never left half-written. */
#include "humanvit.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *entry = NULL;
    hv_ctx *ctx;
    hv_state_dict *sd;
    int i, n;
    double params = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: convert_checkpoint IN.pth OUT.safetensors [--entry KEY]\n");
            return 0;
        } else if (!strcmp(argv[i], "--entry")) {
            if (++i >= argc) {
                fprintf(stderr, "convert_checkpoint: --entry needs a key\n");
                return 2;
            }
            entry = argv[i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "convert_checkpoint: unknown flag '%s'\nusage: convert_checkpoint IN.pth OUT.safetensors [--entry KEY]\n", argv[i]);
            return 2;
        } else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else {
            fprintf(stderr, "convert_checkpoint: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "usage: convert_checkpoint IN.pth OUT.safetensors [--entry KEY]\n");
        return 2;
    }
    ctx = hv_init(NULL);
    sd = ctx ? hv_torch_load(ctx, in, entry) : NULL;
    if (!sd) {
        fprintf(stderr, "convert_checkpoint: %s\n", hv_last_error());
        hv_shutdown(ctx);
        return 1;
    }
    n = hv_state_dict_count(sd);
    for (i = 0; i < n; i++) params += (double)hv_numel(hv_state_dict_at(sd, i));
    if (hv_safetensors_save(sd, out) != 0) {
        fprintf(stderr, "convert_checkpoint: %s\n", hv_last_error());
        hv_state_dict_free(sd);
        hv_shutdown(ctx);
        return 1;
    }
    printf("%s: %d tensors, %.0f values -> %s\n", in, n, params, out);
    hv_state_dict_free(sd);
    hv_shutdown(ctx);
    return 0;
}
