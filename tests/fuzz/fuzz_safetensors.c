/* fuzz_safetensors.c - libFuzzer target: the safetensors loader on arbitrary bytes.
   Each input is tried twice: as a whole file (header length, JSON header, data) and as a bare
   JSON header (hv__safetensors_parse_header), so mutations reach the JSON parser directly.
   Build and run: tests/fuzz/run.sh SECONDS */
#define HUMANVIT_IMPLEMENTATION
#include "../../humanvit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static hv_ctx *ctx;
    hv_state_dict *sd;
    hv__st_hdr h;
    hv__src src;
    if (!ctx) ctx = hv_init(NULL);
    sd = hv_safetensors_load_memory(ctx, data, size);
    hv_state_dict_free(sd);
    hv__src_memory(&src, "fuzz", data, size);
    if (hv__safetensors_parse_header(data, size, 1u << 20, &h, &src) == 0) hv__st_hdr_free(&h);
    return 0;
}
