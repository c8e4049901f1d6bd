/* fuzz_image.c - libFuzzer target for the image decoders of humanvit.h (PNG, JPEG, PPM/PGM/PBM),
   what follows a successful decode (PIL resize, the eval transform), and the .npy header parser.

   build (from the repository root):
       clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_image.c -lm -o build/fuzz_image
   HUMANVIT_STATIC (below) makes every library function static, so the compiler drops what the
   target does not use: the fuzzer links even while parts of the library are still missing.
   run, seeded with the test fixtures (new inputs go to the first folder):
       mkdir -p build/fuzz_corpus
       ./build/fuzz_image build/fuzz_corpus tests/fixtures/images -max_total_time=300 -rss_limit_mb=2048
   A crash leaves crash-<sha1> in the current folder; replay it with ./build/fuzz_image crash-<sha1>. */
#define HUMANVIT_IMPLEMENTATION
#define HUMANVIT_STATIC
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wundefined-internal"
#endif
#include "../../humanvit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    hv_image img, small;
    if (size >= 10 && memcmp(data, "\x93NUMPY", 6) == 0) { /* the .npy header, as hv_npy_load parses it */
        hv__imgsrc s;
        hv__npyhdr h;
        size_t hlen = (size_t)data[8] | ((size_t)data[9] << 8);
        s.op = "fuzz";
        s.name = "<fuzz>";
        if (hlen > size - 10) hlen = size - 10;
        (void)hv__npy_parse_header(&s, (const char *)data + 10, hlen, &h);
        return 0;
    }
    if (hv_image_load_memory(data, size, &img) != 0) return 0;
    if ((int64_t)img.width * img.height <= 4096 * 4) {
        float t[3 * 8 * 8];
        if (hv_image_resize(&img, img.width / 3 + 1, img.height * 2 + 1, HV_RESIZE_BICUBIC, &small) == 0) hv_image_free(&small);
        (void)hv_image_eval_transform(&img, 8, t);
    }
    hv_image_free(&img);
    return 0;
}
