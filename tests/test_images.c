/* test_images.c - image decoding (PNG, JPEG, PPM/PGM), PIL-exact resizing, the evaluation
   transform, and .npy files, against references made by Pillow, torchvision and numpy
   (tests/make_image_fixtures.py). Also every truncation and many corruptions of each fixture:
   a decoder must fail cleanly or succeed, never crash (run under ./build.sh asan). */
#include "testlib.h"

#define FIXDIR "tests/fixtures/images/"

/* ---- helpers -------------------------------------------------------------------------------- */

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) *len = (size_t)n;
    return buf;
}

/* the call must return non-zero and the error must contain each fragment */
#define CHECK_FAILS(expr, ...)                                                                     \
    do {                                                                                           \
        const char *frags_[] = {__VA_ARGS__, NULL};                                                \
        int i_;                                                                                    \
        hv_clear_error();                                                                          \
        if ((expr) == 0) {                                                                         \
            tl_fail_msg(__FILE__, __LINE__, "expected an error from %s", #expr);                   \
        } else {                                                                                   \
            for (i_ = 0; frags_[i_]; i_++)                                                         \
                if (!strstr(hv_last_error(), frags_[i_]))                                          \
                    tl_fail_msg(__FILE__, __LINE__, "error \"%s\" lacks \"%s\"", hv_last_error(), frags_[i_]); \
        }                                                                                          \
    } while (0)

/* decodes FIXDIR name and compares with FIXDIR name.ref (Pillow's pixels); returns max |diff|
   (-1 on a failure already reported), and the mean |diff| in *mean */
static int compare_with_ref(const char *name, int w, int h, int c, double *mean) {
    char path[256], refpath[256];
    hv_image img;
    unsigned char *ref;
    size_t n, i;
    int maxd = 0;
    double sum = 0;
    snprintf(path, sizeof path, FIXDIR "%s", name);
    snprintf(refpath, sizeof refpath, FIXDIR "%.*s.ref", (int)(strrchr(name, '.') - name), name);
    if (hv_image_load(path, &img) != 0) {
        tl_fail_msg(__FILE__, __LINE__, "%s: %s", name, hv_last_error());
        return -1;
    }
    ref = read_all(refpath, &n);
    if (!ref) {
        tl_fail_msg(__FILE__, __LINE__, "%s: cannot read %s", name, refpath);
        hv_image_free(&img);
        return -1;
    }
    if (img.width != w || img.height != h || img.channels != c || n != (size_t)w * h * c) {
        tl_fail_msg(__FILE__, __LINE__, "%s: decoded %dx%dx%d, expected %dx%dx%d (ref %zu bytes)", name, img.width, img.height,
                    img.channels, w, h, c, n);
        maxd = -1;
    } else {
        for (i = 0; i < n; i++) {
            int d = abs((int)img.pixels[i] - (int)ref[i]);
            if (d > maxd) maxd = d;
            sum += d;
        }
        if (mean) *mean = sum / (double)n;
    }
    free(ref);
    hv_image_free(&img);
    return maxd;
}

/* ---- decoding ------------------------------------------------------------------------------- */

static void test_png_matches_pillow(hv_ctx *ctx) {
    static const int depths[5][6] = {{0, 1, 2, 4, 8, 16}, {2, 8, 16}, {3, 1, 2, 4, 8}, {4, 8, 16}, {6, 8, 16}};
    static const int ndepth[5] = {5, 2, 4, 2, 2};
    static const struct { const char *name; int w, h, c; } more[] = {
        {"png_pal_trns.png", 23, 17, 3}, {"png_stored.png", 23, 17, 3}, {"png_fixed.png", 23, 17, 3},
        {"png_text.png", 23, 17, 3},     {"png_rgb_i_1x1.png", 1, 1, 3}, {"png_rgb_i_3x2.png", 3, 2, 3},
        {"png_rgb_i_9x9.png", 9, 9, 3},  {"png_pillow.png", 31, 20, 3},  {"src_rgb.png", 64, 48, 3},
        {"src_gray.png", 40, 57, 1},     {"eval_land.png", 121, 75, 3},  {"eval_port.png", 45, 70, 1}};
    int t, k, il, count = 0;
    size_t i;
    (void)ctx;
    for (t = 0; t < 5; t++)
        for (k = 1; k <= ndepth[t]; k++)
            for (il = 0; il < 2; il++) {
                char name[64];
                int ct = depths[t][0], c = (ct == 0 || ct == 4) ? 1 : 3, d;
                snprintf(name, sizeof name, "png_c%d_d%d%s.png", ct, depths[t][k], il ? "_i" : "");
                d = compare_with_ref(name, 23, 17, c, NULL);
                CHECK(d == 0, "%s differs from Pillow by up to %d levels", name, d);
                count++;
            }
    for (i = 0; i < sizeof more / sizeof more[0]; i++) {
        int d = compare_with_ref(more[i].name, more[i].w, more[i].h, more[i].c, NULL);
        CHECK(d == 0, "%s differs from Pillow by up to %d levels", more[i].name, d);
        count++;
    }
    CHECK(count == 42, "ran %d PNG comparisons", count);
}

static void test_ppm_matches_pillow(hv_ctx *ctx) {
    static const struct { const char *name; int c; } files[] = {{"ppm_p6.ppm", 3}, {"ppm_p5.pgm", 1}, {"ppm_p3.ppm", 3},
                                                                 {"ppm_p2.pgm", 1}, {"ppm_p6_16.ppm", 3}, {"ppm_p5_1000.pgm", 1}};
    size_t i;
    (void)ctx;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        int d = compare_with_ref(files[i].name, 13, 7, files[i].c, NULL);
        CHECK(d == 0, "%s differs from the reference by up to %d levels", files[i].name, d);
    }
}

/* The JPEG decoder follows libjpeg-turbo's default path (islow IDCT, fancy upsampling, its
   YCbCr tables): on these files it matches Pillow bit for bit. The test allows 1 level so that
   a Pillow built on another libjpeg does not fail it; the report prints what was achieved. */
static void test_jpeg_matches_pillow(hv_ctx *ctx) {
    static const struct { const char *name; int w, h, c; } files[] = {
        {"jpg_444.jpg", 45, 31, 3},     {"jpg_422.jpg", 45, 31, 3},     {"jpg_420.jpg", 45, 31, 3},      {"jpg_gray.jpg", 45, 31, 1},
        {"jpg_420_rst.jpg", 45, 31, 3}, {"jpg_420_opt.jpg", 45, 31, 3}, {"jpg_420_q100.jpg", 16, 16, 3}, {"jpg_420_3x3.jpg", 3, 3, 3},
        {"jpg_422_odd.jpg", 17, 9, 3},  {"jpg_420_scans.jpg", 45, 31, 3}, {"jpg_422_scans.jpg", 45, 31, 3}};
    size_t i;
    int worst = 0;
    double worst_mean = 0;
    (void)ctx;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        double mean = 0;
        int d = compare_with_ref(files[i].name, files[i].w, files[i].h, files[i].c, &mean);
        CHECK(d >= 0 && d <= 1 && mean < 0.05, "%s: max diff %d, mean %.4f vs Pillow", files[i].name, d, mean);
        if (d > worst) worst = d;
        if (mean > worst_mean) worst_mean = mean;
    }
    printf("  JPEG vs Pillow (libjpeg-turbo): max abs diff %d, worst mean %.4f over %d files\n", worst, worst_mean,
           (int)(sizeof files / sizeof files[0]));
}

static void test_jpeg_unsupported(hv_ctx *ctx) {
    hv_image img;
    (void)ctx;
    CHECK_FAILS(hv_image_load(FIXDIR "jpg_progressive.jpg", &img), "jpg_progressive.jpg", "progressive JPEG not supported");
    CHECK(img.pixels == NULL && img.width == 0, "failed load leaves the image zeroed");
    CHECK_FAILS(hv_image_load(FIXDIR "jpg_cmyk.jpg", &img), "jpg_cmyk.jpg", "CMYK");
}

/* ---- bad input: truncations, corruptions, wrong magic, absurd sizes, missing files ------------ */

static const char *const robust_files[] = {
    "png_c0_d1.png", "png_c0_d2_i.png", "png_c0_d16.png", "png_c2_d8.png", "png_c2_d16_i.png", "png_c3_d1.png", "png_c3_d4_i.png",
    "png_c3_d8.png", "png_c4_d8.png", "png_c4_d16_i.png", "png_c6_d8_i.png", "png_c6_d16.png", "png_stored.png", "png_fixed.png",
    "png_pal_trns.png", "png_rgb_i_3x2.png", "png_pillow.png", "jpg_444.jpg", "jpg_422.jpg", "jpg_420.jpg", "jpg_gray.jpg",
    "jpg_420_rst.jpg", "jpg_420_opt.jpg", "jpg_420_3x3.jpg", "jpg_422_odd.jpg", "jpg_420_scans.jpg", "jpg_progressive.jpg", "ppm_p6.ppm",
    "ppm_p2.pgm", "ppm_p3.ppm", "ppm_p6_16.ppm"};

/* one decode of untrusted bytes: either a valid image or -1 with a zeroed image and a message */
static int decode_checked(const unsigned char *buf, size_t len, const char *what, size_t at) {
    hv_image img;
    int rc;
    hv_clear_error();
    rc = hv_image_load_memory(buf, len, &img);
    if (rc == 0) {
        CHECK(img.pixels && img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3), "%s at %zu: odd success",
              what, at);
        hv_image_free(&img);
    } else {
        CHECK(rc == -1 && img.pixels == NULL && img.width == 0, "%s at %zu: failure left a non-empty image", what, at);
        CHECK(strstr(hv_last_error(), "<memory>") != NULL, "%s at %zu: message '%s' does not name the source", what, at, hv_last_error());
    }
    return rc;
}

static void test_every_truncation(hv_ctx *ctx) {
    size_t f, n, len, ok = 0, fail = 0;
    (void)ctx;
    for (f = 0; f < sizeof robust_files / sizeof robust_files[0]; f++) {
        char path[256];
        unsigned char *buf;
        snprintf(path, sizeof path, FIXDIR "%s", robust_files[f]);
        buf = read_all(path, &len);
        CHECK(buf != NULL, "cannot read %s", path);
        if (!buf) continue;
        for (n = 0; n < len; n++) {
            /* a copy of exactly n bytes, so ASan sees any read past the end */
            unsigned char *cut = (unsigned char *)malloc(n ? n : 1);
            memcpy(cut, buf, n);
            if (decode_checked(n ? cut : NULL, n, robust_files[f], n) == 0)
                ok++;
            else
                fail++;
            free(cut);
        }
        free(buf);
    }
    printf("  %zu truncated files: %zu failed cleanly, %zu decoded\n", ok + fail, fail, ok);
}

static void test_corrupted_bytes(hv_ctx *ctx) {
    size_t f, i, len, ok = 0, fail = 0;
    unsigned seed = 12345;
    (void)ctx;
    for (f = 0; f < sizeof robust_files / sizeof robust_files[0]; f++) {
        char path[256];
        unsigned char *buf;
        snprintf(path, sizeof path, FIXDIR "%s", robust_files[f]);
        buf = read_all(path, &len);
        if (!buf) continue;
        for (i = 0; i < len; i++) {
            unsigned char *bad = (unsigned char *)malloc(len);
            int k;
            memcpy(bad, buf, len);
            bad[i] ^= 0xFF; /* every byte flipped in turn */
            if (decode_checked(bad, len, robust_files[f], i) == 0) ok++; else fail++;
            /* and a few random bytes rewritten at once */
            memcpy(bad, buf, len);
            for (k = 0; k < 4; k++) {
                seed = seed * 1103515245u + 12345u;
                bad[(seed >> 8) % len] = (unsigned char)(seed >> 24);
            }
            if (decode_checked(bad, len, robust_files[f], i) == 0) ok++; else fail++;
            free(bad);
        }
        free(buf);
    }
    printf("  %zu corrupted files: %zu failed cleanly, %zu decoded\n", ok + fail, fail, ok);
}

/* a PNG of the given header with a tiny (valid) IDAT; CRCs computed here */
static unsigned long crc32_of(const unsigned char *p, size_t n) {
    unsigned long c = 0xFFFFFFFFul;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320ul ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFul;
}
static void put32(unsigned char *p, unsigned long v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static size_t make_png(unsigned char *out, unsigned long w, unsigned long h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    static const unsigned char idat[] = {0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01}; /* zlib of {0, 0} */
    size_t n = 0;
    memcpy(out, sig, 8);
    n = 8;
    put32(out + n, 13);
    memcpy(out + n + 4, "IHDR", 4);
    put32(out + n + 8, w);
    put32(out + n + 12, h);
    out[n + 16] = 8; /* depth */
    out[n + 17] = 0; /* gray */
    out[n + 18] = out[n + 19] = out[n + 20] = 0;
    put32(out + n + 21, crc32_of(out + n + 4, 17));
    n += 25;
    put32(out + n, sizeof idat);
    memcpy(out + n + 4, "IDAT", 4);
    memcpy(out + n + 8, idat, sizeof idat);
    put32(out + n + 8 + sizeof idat, crc32_of(out + n + 4, 4 + sizeof idat));
    n += 12 + sizeof idat;
    put32(out + n, 0);
    memcpy(out + n + 4, "IEND", 4);
    put32(out + n + 8, crc32_of(out + n + 4, 4));
    return n + 12;
}

static void test_bad_headers(hv_ctx *ctx) {
    unsigned char png[128];
    size_t n;
    hv_image img;
    (void)ctx;
    /* the minimal PNG itself decodes: a 1x1 gray pixel */
    n = make_png(png, 1, 1);
    CHECK(hv_image_load_memory(png, n, &img) == 0 && img.width == 1 && img.channels == 1 && img.pixels[0] == 0, "minimal PNG: %s",
          hv_last_error());
    hv_image_free(&img);
    n = make_png(png, 100000, 100000);
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "<memory>", "over the limit");
    n = make_png(png, 0xFFFFFFFFul, 1);
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "over the limit");
    n = make_png(png, 16000, 16000); /* under the side limit, over the pixel limit */
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "over the limit");
    n = make_png(png, 8000, 6000); /* allowed size, but 10 bytes of data cannot hold it */
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "cannot hold");
    n = make_png(png, 0, 5);
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "empty");
    n = make_png(png, 1, 1);
    png[n - 20] ^= 1; /* a byte of IDAT data: CRC mismatch */
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "CRC mismatch", "IDAT");
    n = make_png(png, 1, 1);
    png[1] = 'Q';
    CHECK_FAILS(hv_image_load_memory(png, n, &img), "unknown image format");
    CHECK_FAILS(hv_image_load_memory("GIF89a\x01\x00\x01\x00", 10, &img), "unknown image format", "PNG, JPEG and PPM");
    CHECK_FAILS(hv_image_load_memory("", 0, &img), "empty");
    CHECK_FAILS(hv_image_load_memory(NULL, 0, &img), "empty");
    {
        /* JPEG: absurd and implausible frame sizes */
        static const unsigned char sof_big[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x03,
                                                0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
        static const unsigned char sof_plaus[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x1F, 0x40, 0x1F, 0x40, 0x03,
                                                  0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
        static const unsigned char sof_12bit[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x0B, 0x0C, 0x00, 0x10, 0x00, 0x10, 0x01, 0x01, 0x11, 0x00};
        static const unsigned char no_frame[] = {0xFF, 0xD8, 0xFF, 0xD9};
        CHECK_FAILS(hv_image_load_memory(sof_big, sizeof sof_big, &img), "over the limit");
        CHECK_FAILS(hv_image_load_memory(sof_plaus, sizeof sof_plaus, &img), "cannot hold");
        CHECK_FAILS(hv_image_load_memory(sof_12bit, sizeof sof_12bit, &img), "12-bit");
        CHECK_FAILS(hv_image_load_memory(no_frame, sizeof no_frame, &img), "no frame header");
    }
    CHECK_FAILS(hv_image_load_memory("P6 100000 100000 255\n", 21, &img), "over the limit");
    CHECK_FAILS(hv_image_load_memory("P6 4000 4000 255\n\x01\x02", 19, &img), "truncated");
    CHECK_FAILS(hv_image_load_memory("P5 0 3 255\n", 11, &img), "empty");
    CHECK_FAILS(hv_image_load_memory("P5 2 2 70000\n1234", 17, &img), "maxval");
    CHECK_FAILS(hv_image_load_memory("P2 2 1 10 3 11", 14, &img), "above maxval");
    CHECK_FAILS(hv_image_load_memory("P2 2 1 10 3 x", 13, &img), "unexpected character");
    CHECK_FAILS(hv_image_load_memory("P5 99999999999 1 255\n", 21, &img), "absurdly large");
    CHECK(hv_image_load_memory("P1 3 1 1 0 1", 12, &img) == 0 && img.pixels[0] == 0 && img.pixels[1] == 255, "P1: %s", hv_last_error());
    hv_image_free(&img);
    CHECK(hv_image_load_memory("P4 3 1\n\xA0", 8, &img) == 0 && img.pixels[0] == 0 && img.pixels[1] == 255 && img.pixels[2] == 0, "P4: %s",
          hv_last_error());
    hv_image_free(&img);
}

static void test_missing_file(hv_ctx *ctx) {
    hv_image img;
    (void)ctx;
    CHECK_FAILS(hv_image_load(FIXDIR "does_not_exist.png", &img), "hv_image_load", "does_not_exist.png", "cannot open");
    CHECK_FAILS(hv_image_load(NULL, &img), "path is NULL");
    CHECK_FAILS(hv_image_load("tests/fixtures", &img), "tests/fixtures", "cannot read");
    CHECK_FAILS(hv_image_load(FIXDIR "npy_f4.npy", &img), "npy_f4.npy", "unknown image format");
}

static void test_save_ppm_round_trip(hv_ctx *ctx) {
    static const char *const names[] = {FIXDIR "png_c2_d8.png", FIXDIR "png_c0_d8.png"};
    const char *tmp = "build_test_images_tmp.ppm";
    int k;
    (void)ctx;
    for (k = 0; k < 2; k++) {
        hv_image a, b;
        CHECK(hv_image_load(names[k], &a) == 0, "%s", hv_last_error());
        CHECK(hv_image_save_ppm(tmp, &a) == 0, "%s", hv_last_error());
        CHECK(hv_image_load(tmp, &b) == 0, "%s", hv_last_error());
        CHECK(a.width == b.width && a.height == b.height && a.channels == b.channels &&
                  memcmp(a.pixels, b.pixels, (size_t)a.width * a.height * a.channels) == 0,
              "PPM round trip of %s differs", names[k]);
        hv_image_free(&a);
        hv_image_free(&b);
    }
    remove(tmp);
    {
        hv_image four;
        CHECK(hv_image_alloc(&four, 2, 2, 4) == 0, "%s", hv_last_error());
        CHECK_FAILS(hv_image_save_ppm(tmp, &four), "1 or 3 channels");
        hv_image_free(&four);
        CHECK_FAILS(hv_image_alloc(&four, 2, 2, 5), "channels");
    }
}

/* ---- resizing and the evaluation transform ---------------------------------------------------- */

static int max_diff_u8(const unsigned char *a, const unsigned char *b, size_t n) {
    size_t i;
    int m = 0;
    for (i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

/* PIL's Image.resize, reproduced: the same bytes */
static void test_resize_matches_pillow(hv_ctx *ctx) {
    static const struct { const char *src; int w, h, filter; const char *ref; } cases[] = {
        {"src_rgb.png", 31, 23, HV_RESIZE_BICUBIC, "resize_rgb_31x23_bicubic.ref"},
        {"src_rgb.png", 100, 37, HV_RESIZE_BICUBIC, "resize_rgb_100x37_bicubic.ref"},
        {"src_rgb.png", 64, 20, HV_RESIZE_BILINEAR, "resize_rgb_64x20_bilinear.ref"},
        {"src_rgb.png", 17, 70, HV_RESIZE_BILINEAR, "resize_rgb_17x70_bilinear.ref"},
        {"src_rgb.png", 9, 5, HV_RESIZE_BICUBIC, "resize_rgb_9x5_bicubic.ref"},
        {"src_rgb.png", 96, 72, HV_RESIZE_BICUBIC, "resize_rgb_96x72_bicubic.ref"},
        {"src_rgb.png", 50, 48, HV_RESIZE_LANCZOS, "resize_rgb_50x48_lanczos.ref"},
        {"src_rgb.png", 21, 33, HV_RESIZE_BOX, "resize_rgb_21x33_box.ref"},
        {"src_rgb.png", 70, 30, HV_RESIZE_HAMMING, "resize_rgb_70x30_hamming.ref"},
        {"src_gray.png", 25, 80, HV_RESIZE_BICUBIC, "resize_gray_25x80_bicubic.ref"},
        {"src_gray.png", 13, 19, HV_RESIZE_BILINEAR, "resize_gray_13x19_bilinear.ref"}};
    size_t i;
    int worst = 0;
    (void)ctx;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        hv_image src, out;
        unsigned char *ref;
        size_t n;
        snprintf(path, sizeof path, FIXDIR "%s", cases[i].src);
        if (hv_image_load(path, &src) != 0) {
            CHECK(0, "%s", hv_last_error());
            continue;
        }
        snprintf(path, sizeof path, FIXDIR "%s", cases[i].ref);
        ref = read_all(path, &n);
        CHECK(hv_image_resize(&src, cases[i].w, cases[i].h, cases[i].filter, &out) == 0, "%s", hv_last_error());
        if (ref && out.pixels && n == (size_t)out.width * out.height * out.channels) {
            int d = max_diff_u8(out.pixels, ref, n);
            CHECK(d == 0, "%s: differs from PIL by up to %d levels", cases[i].ref, d);
            if (d > worst) worst = d;
        } else {
            CHECK(0, "%s: missing reference or wrong size", cases[i].ref);
        }
        free(ref);
        hv_image_free(&out);
        hv_image_free(&src);
    }
    printf("  resize vs PIL: max abs diff %d over %d cases\n", worst, (int)(sizeof cases / sizeof cases[0]));
}

static void test_resize_and_crop_args(hv_ctx *ctx) {
    hv_image a, b;
    int x, y;
    (void)ctx;
    CHECK(hv_image_alloc(&a, 5, 4, 1) == 0, "%s", hv_last_error());
    for (y = 0; y < 4; y++)
        for (x = 0; x < 5; x++) a.pixels[y * 5 + x] = (uint8_t)(10 * y + x);
    CHECK_FAILS(hv_image_resize(&a, 0, 3, HV_RESIZE_BICUBIC, &b), "empty");
    CHECK_FAILS(hv_image_resize(&a, 3, 3, 42, &b), "unknown filter");
    CHECK_FAILS(hv_image_resize(NULL, 3, 3, HV_RESIZE_BICUBIC, &b), "in is NULL");
    /* same size: a copy */
    CHECK(hv_image_resize(&a, 5, 4, HV_RESIZE_BICUBIC, &b) == 0 && memcmp(a.pixels, b.pixels, 20) == 0, "identity resize");
    hv_image_free(&b);
    /* center crop: (5 - 2) / 2 = 1.5 -> 2 and (4 - 1) / 2 = 1.5 -> 2, Python's round half to even */
    CHECK(hv_image_center_crop(&a, 2, 1, &b) == 0, "%s", hv_last_error());
    CHECK(b.pixels[0] == 22 && b.pixels[1] == 23, "crop offsets: got %d %d", b.pixels[0], b.pixels[1]);
    hv_image_free(&b);
    /* (5 - 4) / 2 = 0.5 -> 0 */
    CHECK(hv_image_center_crop(&a, 4, 4, &b) == 0 && b.pixels[0] == 0 && b.pixels[3] == 3, "crop offset 0.5 -> 0");
    hv_image_free(&b);
    /* larger than the image: zero padding, left = (7 - 5) // 2 = 1, top = (5 - 4) // 2 = 0 */
    CHECK(hv_image_center_crop(&a, 7, 5, &b) == 0, "%s", hv_last_error());
    CHECK(b.pixels[0] == 0 && b.pixels[7 + 2] == 11 && b.pixels[6] == 0 && b.pixels[7 * 3 + 5] == 34 && b.pixels[7 * 3 + 6] == 0 &&
              b.pixels[7 * 4 + 1] == 0,
          "crop padding");
    hv_image_free(&b);
    hv_image_free(&a);
}

static void test_to_tensor_gray(hv_ctx *ctx) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    hv_image g;
    float out[3 * 6];
    int i, c;
    (void)ctx;
    CHECK(hv_image_alloc(&g, 3, 2, 1) == 0, "%s", hv_last_error());
    for (i = 0; i < 6; i++) g.pixels[i] = (uint8_t)(i * 51);
    CHECK(hv_image_to_tensor(&g, mean, std, out) == 0, "%s", hv_last_error());
    for (c = 0; c < 3; c++)
        for (i = 0; i < 6; i++) {
            float want = ((float)(i * 51) / 255.0f - mean[c]) / std[c];
            CHECK(out[c * 6 + i] == want, "channel %d pixel %d: %g vs %g", c, i, out[c * 6 + i], want);
        }
    CHECK(hv_image_to_tensor(&g, NULL, NULL, out) == 0 && out[5] == 1.0f && out[6 + 1] == 0.2f, "no normalisation");
    hv_image_free(&g);
}

/* the eval transform against torchvision, and its intermediate uint8 crop */
static void check_eval(hv_ctx *ctx, const char *img_name, int size, const char *npy_name, const char *u8_name) {
    char path[256];
    hv_image img;
    hv_tensor *ref;
    float *out;
    int64_t n, i;
    double maxd = 0;
    snprintf(path, sizeof path, FIXDIR "%s", img_name);
    if (hv_image_load(path, &img) != 0) {
        CHECK(0, "%s", hv_last_error());
        return;
    }
    snprintf(path, sizeof path, FIXDIR "%s", npy_name);
    ref = hv_npy_load(ctx, path);
    CHECK_NOTNULL(ref);
    n = (int64_t)3 * size * size;
    out = (float *)malloc(sizeof(float) * (size_t)n);
    CHECK(hv_image_eval_transform(&img, size, out) == 0, "%s", hv_last_error());
    if (ref && hv_numel(ref) == n && hv_dim(ref, 0) == 3 && hv_dim(ref, 1) == size) {
        const float *r = hv_data(ref);
        for (i = 0; i < n; i++) {
            double d = fabs((double)out[i] - (double)r[i]);
            if (!(d <= maxd)) maxd = d;
        }
        /* one uint8 level is 1 / (255 * 0.225) = 0.0174 after normalisation */
        CHECK(maxd <= 1e-6, "%s: eval transform differs from torchvision by %g", img_name, maxd);
        printf("  eval transform %s (size %d) vs torchvision: max abs diff %.3g\n", img_name, size, maxd);
    } else {
        CHECK(0, "%s: reference shape", npy_name);
    }
    if (u8_name) { /* the uint8 image before ToTensor */
        hv_image resized, crop;
        unsigned char *u8;
        size_t len;
        int w = img.width, h = img.height, s = size + 32, nw, nh;
        if (w <= h) {
            nw = s;
            nh = (int)((double)s * h / w);
        } else {
            nh = s;
            nw = (int)((double)s * w / h);
        }
        snprintf(path, sizeof path, FIXDIR "%s", u8_name);
        u8 = read_all(path, &len);
        CHECK(hv_image_resize(&img, nw, nh, HV_RESIZE_BICUBIC, &resized) == 0, "%s", hv_last_error());
        CHECK(hv_image_center_crop(&resized, size, size, &crop) == 0, "%s", hv_last_error());
        if (u8 && crop.pixels) {
            /* torchvision's crop is of the RGB-converted image: compare channel 0 for gray */
            size_t k, npix = (size_t)size * size;
            int m = 0;
            for (k = 0; k < npix; k++) {
                int cc;
                for (cc = 0; cc < 3; cc++) {
                    int d = abs((int)crop.pixels[k * crop.channels + (crop.channels == 3 ? cc : 0)] - (int)u8[k * 3 + cc]);
                    if (d > m) m = d;
                }
            }
            CHECK(len == npix * 3 && m == 0, "%s: uint8 crop differs by %d levels", u8_name, m);
        }
        free(u8);
        hv_image_free(&resized);
        hv_image_free(&crop);
    }
    free(out);
    if (ref) hv_tensor_free(ref);
    hv_image_free(&img);
}

static void test_eval_transform(hv_ctx *ctx) {
    check_eval(ctx, "eval_land.png", 35, "eval_land_35.npy", "eval_land_35.u8");
    check_eval(ctx, "eval_port.png", 42, "eval_port_42.npy", "eval_port_42.u8");
    check_eval(ctx, "jpg_420.jpg", 24, "eval_jpg_420_24.npy", NULL);
    {
        hv_image img;
        float out[3];
        CHECK(hv_image_alloc(&img, 4, 4, 3) == 0, "%s", hv_last_error());
        CHECK_FAILS(hv_image_eval_transform(&img, 0, out), "size 0");
        hv_image_free(&img);
    }
}

/* ---- .npy ------------------------------------------------------------------------------------- */

static void test_npy_load_numpy_files(hv_ctx *ctx) {
    hv_tensor *t;
    int i;
    t = hv_npy_load(ctx, FIXDIR "npy_f4.npy");
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_ndim(t) == 3 && hv_dim(t, 0) == 2 && hv_dim(t, 1) == 3 && hv_dim(t, 2) == 4 && hv_tensor_dtype(t) == HV_F32, "npy_f4 shape");
        for (i = 0; i < 24; i++) CHECK(hv_data(t)[i] == ((float)i - 7.25f) / 3.0f, "npy_f4[%d] = %g", i, hv_data(t)[i]);
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_f8.npy"); /* linspace(-1.5, 2.5, 7) as f64 -> f32 */
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_ndim(t) == 1 && hv_dim(t, 0) == 7 && hv_data(t)[0] == -1.5f && hv_data(t)[6] == 2.5f &&
                  hv_data(t)[1] == (float)(-1.5 + 4.0 / 6.0),
              "npy_f8 values");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_i4.npy");
    CHECK_NOTNULL(t);
    if (t) {
        const int32_t *d = hv_data_i32(t);
        CHECK(hv_tensor_dtype(t) == HV_I32 && hv_dim(t, 0) == 3 && hv_dim(t, 1) == 2 && d[1] == -2 && d[3] == 2147483647 &&
                  d[4] == (-2147483647 - 1),
              "npy_i4 values");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_i8.npy");
    CHECK_NOTNULL(t);
    if (t) {
        const int32_t *d = hv_data_i32(t);
        CHECK(hv_tensor_dtype(t) == HV_I32 && d[0] == 5 && d[1] == -6 && d[2] == 2147483647 && d[3] == (-2147483647 - 1), "npy_i8 values");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_scalar.npy");
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_ndim(t) == 0 && hv_item(t) == 3.5f, "npy_scalar");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_empty.npy");
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_ndim(t) == 2 && hv_dim(t, 0) == 0 && hv_dim(t, 1) == 3, "npy_empty shape");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_6d.npy");
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_ndim(t) == 6 && hv_data(t)[63] == 63.0f, "npy_6d");
        hv_tensor_free(t);
    }
    t = hv_npy_load(ctx, FIXDIR "npy_v2.npy");
    CHECK_NOTNULL(t);
    if (t) {
        CHECK(hv_numel(t) == 5 && hv_data(t)[4] == 8.0f, "npy_v2 (format 2.0)");
        hv_tensor_free(t);
    }
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, n, f);
        fclose(f);
    }
}

static void test_npy_errors(hv_ctx *ctx) {
    const char *tmp = "build_test_images_tmp.npy";
    unsigned char *buf;
    size_t len;
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "npy_fortran.npy"), "npy_fortran.npy", "fortran_order");
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "npy_be.npy"), "npy_be.npy", "'>f4' is not supported");
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "npy_u8.npy"), "'|u1' is not supported");
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "npy_i8_big.npy"), "outside int32");
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "no_such.npy"), "no_such.npy", "cannot open");
    CHECK_ERROR(hv_npy_load(ctx, FIXDIR "png_c2_d8.png"), "png_c2_d8.png", "not a .npy file");
    buf = read_all(FIXDIR "npy_f4.npy", &len);
    if (buf) {
        size_t n;
        for (n = 0; n < len; n += (n < 140 ? 1 : 7)) { /* every header truncation, some data ones */
            write_bytes(tmp, buf, n);
            CHECK_ERROR(hv_npy_load(ctx, tmp), tmp);
        }
        memcpy(buf + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3 4), }", 62);
        write_bytes(tmp, buf, len);
        CHECK_ERROR(hv_npy_load(ctx, tmp), "corrupt .npy header");
        memcpy(buf + 10, "{'descr': '<f4', 'fortran_order': False, 'shapes': (2, 3, 4) }", 62);
        write_bytes(tmp, buf, len);
        CHECK_ERROR(hv_npy_load(ctx, tmp), "unknown key 'shapes'");
        memcpy(buf + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (9999999, 9) }", 64);
        write_bytes(tmp, buf, len);
        CHECK_ERROR(hv_npy_load(ctx, tmp), "truncated");
        memcpy(buf + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1)}", 66);
        write_bytes(tmp, buf, len);
        CHECK_ERROR(hv_npy_load(ctx, tmp), "more than 6 axes");
        free(buf);
    }
    remove(tmp);
}

static void test_npy_save(hv_ctx *ctx) {
    const char *tmp = "build_test_images_tmp.npy";
    static const struct { const char *ref; int dtype; int ndim; int64_t dims[2]; } cases[] = {
        {"npy_save_f4.npy", HV_F32, 2, {3, 4}}, {"npy_save_i4.npy", HV_I32, 1, {7, 0}}, {"npy_save_wide.npy", HV_F32, 2, {1234567, 0}}};
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[256];
        hv_tensor *t = hv_tensor_new(ctx, (hv_dtype)cases[k].dtype, hv_shape_of(cases[k].ndim, cases[k].dims));
        unsigned char *want, *got;
        size_t wn, gn;
        int64_t i, n = hv_numel(t);
        for (i = 0; i < n; i++) {
            if (cases[k].dtype == HV_F32)
                hv_data(t)[i] = ((float)i - 5.5f) * 0.25f;
            else
                hv_data_i32(t)[i] = (int32_t)i - 3;
        }
        CHECK(hv_npy_save(tmp, t) == 0, "%s", hv_last_error());
        snprintf(path, sizeof path, FIXDIR "%s", cases[k].ref);
        want = read_all(path, &wn);
        got = read_all(tmp, &gn);
        CHECK(want && got && wn == gn && memcmp(want, got, wn) == 0, "hv_npy_save differs from np.save for %s (%zu vs %zu bytes)",
              cases[k].ref, gn, wn);
        free(want);
        free(got);
        hv_tensor_free(t);
    }
    {
        /* round trip of a strided view: written densely in its logical order */
        int64_t d2[2] = {3, 5};
        hv_tensor *a = hv_randn(ctx, hv_shape_of(2, d2), 0.0f, 1.0f), *at = hv_transpose(a, 0, 1), *b;
        float dense[15];
        CHECK(hv_npy_save(tmp, at) == 0, "%s", hv_last_error());
        b = hv_npy_load(ctx, tmp);
        CHECK_NOTNULL(b);
        hv_tensor_copy_to(at, dense, sizeof dense);
        CHECK(b && hv_dim(b, 0) == 5 && hv_dim(b, 1) == 3 && memcmp(hv_data(b), dense, sizeof dense) == 0, "strided round trip");
        if (b) hv_tensor_free(b);
        hv_tensor_free(a);
        /* an existing file is replaced whole; no temporary file is left behind */
        CHECK(hv_npy_save(tmp, hv_ones(ctx, hv_shape_of(1, d2))) == 0, "%s", hv_last_error());
        b = hv_npy_load(ctx, tmp);
        CHECK(b && hv_numel(b) == 3 && hv_data(b)[2] == 1.0f, "overwrite");
        if (b) hv_tensor_free(b);
        {
            FILE *f = fopen("build_test_images_tmp.npy.hvtmp", "rb");
            CHECK(f == NULL, "temporary file left behind");
            if (f) fclose(f);
        }
    }
    CHECK_FAILS(hv_npy_save("no_such_dir/x.npy", hv_ones(ctx, hv_shape_of(1, cases[0].dims))), "no_such_dir/x.npy");
    CHECK_FAILS(hv_npy_save(tmp, NULL), "tensor is NULL");
    remove(tmp);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!ctx) {
        printf("hv_init failed: %s\n", hv_last_error());
        return 1;
    }
    TL_RUN(ctx, test_png_matches_pillow);
    TL_RUN(ctx, test_ppm_matches_pillow);
    TL_RUN(ctx, test_jpeg_matches_pillow);
    TL_RUN(ctx, test_jpeg_unsupported);
    TL_RUN(ctx, test_every_truncation);
    TL_RUN(ctx, test_corrupted_bytes);
    TL_RUN(ctx, test_bad_headers);
    TL_RUN(ctx, test_missing_file);
    TL_RUN(ctx, test_save_ppm_round_trip);
    TL_RUN(ctx, test_resize_matches_pillow);
    TL_RUN(ctx, test_resize_and_crop_args);
    TL_RUN(ctx, test_to_tensor_gray);
    TL_RUN(ctx, test_eval_transform);
    TL_RUN(ctx, test_npy_load_numpy_files);
    TL_RUN(ctx, test_npy_errors);
    TL_RUN(ctx, test_npy_save);
    hv_shutdown(ctx);
    TL_DONE();
}
