/* fuzz_zip.c - libFuzzer target: whole torch.save archives (zip reader, pickle, tensor
   materialisation) through hv_torch_load_memory, plus the zip reader alone: every entry's
   data is located through its local header. Seeds: the .pth fixtures.
   Build and run: tests/fuzz/run.sh SECONDS */
#define HUMANVIT_IMPLEMENTATION
#include "../../humanvit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static hv_ctx *ctx;
    hv_state_dict *sd;
    hv__src src;
    hv__zip z;
    if (!ctx) ctx = hv_init(NULL);
    sd = hv_torch_load_memory(ctx, data, size, NULL);
    hv_state_dict_free(sd);
    hv__src_memory(&src, "fuzz", data, size);
    if (hv__zip_open(&z, &src) == 0) {
        size_t k;
        uint64_t off;
        for (k = 0; k < z.n; k++) {
            if (hv__zip_data(&z, &z.e[k], &off) == 0 && z.e[k].usize) {
                /* touch the first and last byte of the entry: asan checks the bounds */
                volatile uint8_t first = data[off], last = data[off + z.e[k].usize - 1];
                (void)first;
                (void)last;
            }
            hv__zip_find(&z, z.e[k].name, z.e[k].nlen);
        }
        hv__zip_close(&z);
    }
    return 0;
}
