/* fuzz_pickle.c - libFuzzer target: arbitrary bytes as data.pkl. The input runs on the pickle
   machine alone (hv__pickle_run, then the weights-dict selection), and wrapped as
   "archive/data.pkl" in a zip next to storages data/0..data/3 (f32, f16, i64, bf16 bytes), so
   that tensors it describes are materialised. Seeds: data.pkl of the fixtures.
   Build and run: tests/fuzz/run.sh SECONDS */
#define HUMANVIT_IMPLEMENTATION
#include "../../humanvit.h"
#include "../ckpt_zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static hv_ctx *ctx;
    static unsigned char storage[256];
    const char *names[5] = {"archive/data.pkl", "archive/data/0", "archive/data/1", "archive/data/2", "archive/data/3"};
    const unsigned char *bufs[5];
    size_t sizes[5], n, k;
    unsigned char *zip;
    hv_state_dict *sd;
    hv__pickle P;
    hv__src src;
    hv__pv *root;
    if (!ctx) {
        ctx = hv_init(NULL);
        for (k = 0; k < sizeof storage; k++) storage[k] = (unsigned char)(k * 37 + 11);
    }
    /* the pickle machine alone */
    hv__src_memory(&src, "fuzz", data, size);
    memset(&P, 0, sizeof P);
    P.src = &src;
    root = hv__pickle_run(&P, data, size);
    if (root) {
        const char *chosen;
        const hv__pv *d = hv__pk_select(&src, root, NULL, &chosen);
        if (d) hv__pk_keys(d);
    }
    hv__pickle_free(&P);
    /* and as a checkpoint */
    bufs[0] = data;
    sizes[0] = size;
    for (k = 1; k < 5; k++) {
        bufs[k] = storage;
        sizes[k] = 64 * k; /* 64, 128, 192, 256 bytes */
    }
    zip = cz_make(5, names, bufs, sizes, &n);
    sd = hv_torch_load_memory(ctx, zip, n, NULL);
    hv_state_dict_free(sd);
    free(zip);
    return 0;
}
