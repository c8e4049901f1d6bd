/* test_data.c - examples/hv_data.h: gzip and IDX parsing (valid, truncated, corrupt), image
   folders, subsets, transforms deterministic under a seed, and the loader giving the same
   batches whatever its number of worker threads. */
#define _POSIX_C_SOURCE 200809L
#include "testlib.h"
#define HV_DATA_IMPLEMENTATION
#include "examples/hv_data.h"
#include <unistd.h>

#define MINI "examples/data/fmnist-mini/"

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hv_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
}
static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}
static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void test_gunzip_and_idx(hv_ctx *ctx) {
    hvd_idx im, lb;
    size_t n, i;
    uint8_t *gz;
    int bad_ok = 1, flips_caught = 0;
    (void)ctx;
    CHECK(hvd_idx_load(MINI "train-images-idx3-ubyte.gz", &im) == 0, "%s", hvd_last_error());
    CHECK(im.type == 8 && im.ndim == 3 && im.dims[0] == 2000 && im.dims[1] == 28 && im.dims[2] == 28, "dims %lld %lld %lld",
          (long long)im.dims[0], (long long)im.dims[1], (long long)im.dims[2]);
    CHECK(hvd_idx_load(MINI "train-labels-idx1-ubyte.gz", &lb) == 0, "%s", hvd_last_error());
    CHECK(lb.ndim == 1 && lb.dims[0] == 2000, "labels");
    if (lb.data) {
        int count[10] = {0}, ok = 1;
        for (i = 0; i < 2000; i++) count[lb.data[i] < 10 ? lb.data[i] : 0]++;
        for (i = 0; i < 10; i++) ok &= count[i] == 200;
        CHECK(ok, "the mini set has 200 images per class");
    }
    hvd_idx_free(&im);
    hvd_idx_free(&lb);

    /* every truncation of a real .gz is a clean error */
    gz = hvd_read_file(MINI "t10k-labels-idx1-ubyte.gz", &n);
    CHECK_NOTNULL(gz);
    if (!gz) return;
    for (i = 0; i < n; i++) {
        size_t on;
        uint8_t *out = hvd_gunzip(gz, i, &on, "cut.gz");
        if (out) {
            bad_ok = 0;
            free(out);
        } else if (!strstr(hvd_last_error(), "cut.gz")) {
            bad_ok = 0;
        }
    }
    CHECK(bad_ok, "a truncated gzip must fail and name the file");
    /* every single-byte corruption of the compressed body is caught (CRC, length or structure),
       except in the unused padding bits of the deflate stream's last byte (gzip -t misses it too) */
    for (i = 10; i < n; i++) {
        size_t on;
        uint8_t *out;
        gz[i] ^= 0x5a;
        out = hvd_gunzip(gz, n, &on, "flip.gz");
        if (!out) flips_caught++;
        free(out);
        gz[i] ^= 0x5a;
    }
    CHECK(flips_caught >= (int)(n - 11), "%d of %d corruptions caught", flips_caught, (int)(n - 10));
    free(gz);
}

static void test_idx_errors(hv_ctx *ctx) {
    uint8_t buf[64];
    hvd_idx idx;
    char path[512], path2[512];
    (void)ctx;
    memset(buf, 0, sizeof buf);
    /* a valid 2x3x2 u8 IDX */
    buf[2] = 8;
    buf[3] = 3;
    buf[7] = 2;
    buf[11] = 3;
    buf[15] = 2;
    CHECK(hvd_idx_parse(buf, 16 + 12, &idx, "ok.idx") == 0, "%s", hvd_last_error());
    CHECK(hvd_idx_parse(buf, 16 + 11, &idx, "short.idx") == -1 && strstr(hvd_last_error(), "truncated IDX data"), "%s", hvd_last_error());
    CHECK(hvd_idx_parse(buf, 10, &idx, "hdr.idx") == -1 && strstr(hvd_last_error(), "truncated IDX header"), "%s", hvd_last_error());
    buf[2] = 0x42;
    CHECK(hvd_idx_parse(buf, 28, &idx, "type.idx") == -1 && strstr(hvd_last_error(), "element type"), "%s", hvd_last_error());
    buf[2] = 8;
    buf[0] = 1;
    CHECK(hvd_idx_parse(buf, 28, &idx, "magic.idx") == -1 && strstr(hvd_last_error(), "not an IDX"), "%s", hvd_last_error());
    buf[0] = 0;
    buf[3] = 0;
    CHECK(hvd_idx_parse(buf, 28, &idx, "nd.idx") == -1 && strstr(hvd_last_error(), "dimensions"), "%s", hvd_last_error());
    buf[3] = 3;
    buf[4] = 0xff; /* 4 billion images */
    CHECK(hvd_idx_parse(buf, 28, &idx, "big.idx") == -1, "huge dims");
    buf[4] = 0;
    /* files: missing, labels that do not match the images, an empty file */
    CHECK(hvd_dataset_idx("/nonexistent/images.idx", NULL) == NULL && strstr(hvd_last_error(), "/nonexistent/images.idx"), "%s",
          hvd_last_error());
    snprintf(path, sizeof path, "%s/img.idx", tmpdir);
    write_bytes(path, buf, 28);
    snprintf(path2, sizeof path2, "%s/lab.idx", tmpdir);
    {
        uint8_t lab[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
        write_bytes(path2, lab, sizeof lab);
    }
    CHECK(hvd_dataset_idx(path, path2) == NULL && strstr(hvd_last_error(), "lab.idx"), "mismatched labels: %s", hvd_last_error());
    {
        hvd_dataset *ds = hvd_dataset_idx(path, NULL);
        CHECK(ds && hvd_dataset_size(ds) == 2 && hvd_dataset_label(ds, 0) == -1, "unlabeled IDX");
        hvd_dataset_free(ds);
    }
    write_bytes(path2, "", 0);
    CHECK(hvd_dataset_idx(path2, NULL) == NULL && strstr(hvd_last_error(), "not an IDX"), "empty: %s", hvd_last_error());
    {
        uint8_t gz[20] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
        write_bytes(path2, gz, sizeof gz);
        CHECK(hvd_dataset_idx(path2, NULL) == NULL && strstr(hvd_last_error(), "lab.idx"), "corrupt gz: %s", hvd_last_error());
    }
}

/* one pass in order over ds (the evaluation transform at `size` pixels, no resize), as the
   trainers' evaluation reads a data set */
static hvd_loader *one_pass_loader(hv_ctx *ctx, hvd_dataset *ds, int size, int batch_size, int workers) {
    hvd_loader_desc d;
    memset(&d, 0, sizeof d);
    d.dataset = ds;
    d.transform = hvd_transform_eval(size);
    d.transform.resize = 0;
    d.batch_size = batch_size;
    d.workers = workers;
    d.epochs = 1;
    return hvd_loader_new(ctx, &d);
}

static void write_pgm(const char *path, int w, int h, int seed) {
    char hdr[64];
    uint8_t px[64 * 64];
    int n = snprintf(hdr, sizeof hdr, "P5\n%d %d\n255\n", w, h), i;
    FILE *f = fopen(path, "wb");
    for (i = 0; i < w * h; i++) px[i] = (uint8_t)(i * 7 + seed * 31);
    fwrite(hdr, 1, (size_t)n, f);
    fwrite(px, 1, (size_t)(w * h), f);
    fclose(f);
}

static void test_image_folder(hv_ctx *ctx) {
    char root[300], p[400];
    hvd_dataset *ds;
    (void)ctx;
    snprintf(root, sizeof root, "%s/folder", tmpdir);
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/b_shirt", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/a_coat", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/a_coat/2.pgm", root);
    write_pgm(p, 20, 16, 1);
    snprintf(p, sizeof p, "%s/a_coat/10.PGM", root);
    write_pgm(p, 16, 20, 2);
    snprintf(p, sizeof p, "%s/a_coat/notes.txt", root);
    write_bytes(p, "x", 1);
    snprintf(p, sizeof p, "%s/b_shirt/x.pgm", root);
    write_pgm(p, 24, 24, 3);
    ds = hvd_dataset_folder(root);
    CHECK_NOTNULL(ds);
    if (ds) {
        char name[512];
        CHECK(hvd_dataset_size(ds) == 3 && hvd_dataset_classes(ds) == 2, "3 images in 2 classes, got %lld / %d",
              (long long)hvd_dataset_size(ds), hvd_dataset_classes(ds));
        /* sorted bytewise: "10.PGM" < "2.pgm"; classes a_coat = 0, b_shirt = 1 */
        CHECK(strstr(hvd_dataset_name(ds, 0, name, sizeof name), "a_coat/10.PGM") != NULL, "first file %s", name);
        CHECK(hvd_dataset_label(ds, 0) == 0 && hvd_dataset_label(ds, 2) == 1, "labels");
        {
            hv_image im;
            CHECK(hvd_dataset_get(ds, 1, &im) == 0 && im.width == 20 && im.height == 16, "decoded size");
            hv_image_free(&im);
        }
        hvd_dataset_free(ds);
    }
    /* an unreadable image: the loader reports it with the file's name */
    snprintf(p, sizeof p, "%s/b_shirt/y.pgm", root);
    write_bytes(p, "P5\n99 99\n255\nshort", 18);
    ds = hvd_dataset_folder(root);
    if (ds) {
        hvd_loader *ld = one_pass_loader(ctx, ds, 8, 2, 1);
        hv_tensor *x, *y;
        int r = 1, k;
        CHECK_NOTNULL(ld);
        for (k = 0; ld && k < 3 && r > 0; k++) r = hvd_loader_next(ld, &x, &y);
        CHECK(r == -1 && strstr(hvd_last_error(), "y.pgm"), "unreadable image error: r %d, %s", r, hvd_last_error());
        hvd_loader_free(ld);
        hvd_dataset_free(ds);
    }
    CHECK(hvd_dataset_folder("/nonexistent/dataset") == NULL && strstr(hvd_last_error(), "no such folder"), "%s", hvd_last_error());
    snprintf(p, sizeof p, "%s/empty", tmpdir);
    mkdir(p, 0755);
    CHECK(hvd_dataset_folder(p) == NULL && strstr(hvd_last_error(), "no class sub-folders"), "%s", hvd_last_error());
}

static void test_subsets(hv_ctx *ctx) {
    int64_t N = 1281167, i;
    uint8_t *px = (uint8_t *)calloc((size_t)N, 1);
    int32_t *lab = (int32_t *)malloc(sizeof(int32_t) * (size_t)N);
    hvd_dataset *ds, *a, *b, *c;
    (void)ctx;
    for (i = 0; i < N; i++) lab[i] = (int32_t)(i % 1000);
    ds = hvd_dataset_memory((int)N, 1, 1, 1, px, lab, 1000);
    a = hvd_dataset_fraction(ds, 0.010147, 7);
    b = hvd_dataset_fraction(ds, 0.02, 7);
    c = hvd_dataset_fraction(ds, 0.010147, 7);
    /* the upstream sizes: 13000 and 25623 ImageNet images */
    CHECK(hvd_dataset_size(a) == 13000 && hvd_dataset_size(b) == 25623, "sizes %lld %lld", (long long)hvd_dataset_size(a),
          (long long)hvd_dataset_size(b));
    {
        int same = 1;
        for (i = 0; i < 13000; i++) same &= hvd_dataset_label(a, i) == hvd_dataset_label(c, i);
        CHECK(same, "same seed, same subset");
    }
    hvd_dataset_free(c);
    c = hvd_dataset_fraction(ds, 0.010147, 8);
    {
        int same = 1;
        for (i = 0; i < 13000; i++) same &= hvd_dataset_label(a, i) == hvd_dataset_label(c, i);
        CHECK(!same, "another seed, another subset");
    }
    hvd_dataset_free(c);
    c = hvd_dataset_class_block(ds, 0.01, 3); /* 10 contiguous classes of 1000 */
    {
        int lo = 1 << 30, hi = -1;
        for (i = 0; i < hvd_dataset_size(c); i++) {
            int l = hvd_dataset_label(c, i);
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
        }
        CHECK(hi - lo == 9 && hvd_dataset_size(c) > 0, "a block of 10 classes: %d..%d", lo, hi);
    }
    CHECK(hvd_dataset_fraction(ds, 0.0, 1) == NULL && hvd_dataset_fraction(ds, 1.5, 1) == NULL, "bad fractions rejected");
    hvd_dataset_free(a);
    hvd_dataset_free(b);
    hvd_dataset_free(c);
    hvd_dataset_free(ds);
    free(px);
    free(lab);
}

static void test_transform_determinism(hv_ctx *ctx) {
    hv_image im;
    hvd_transform tf = hvd_transform_tc(24);
    float a[3 * 24 * 24], b[3 * 24 * 24], c[3 * 24 * 24];
    int i, box[4], in_bounds = 1, varied = 0, fallback_ok;
    (void)ctx;
    hv_image_alloc(&im, 40, 30, 3);
    for (i = 0; i < 40 * 30 * 3; i++) im.pixels[i] = (uint8_t)((i * 37) ^ (i >> 3));
    CHECK(hvd_transform_apply(&tf, &im, 123, a) == 0 && hvd_transform_apply(&tf, &im, 123, b) == 0 &&
              hvd_transform_apply(&tf, &im, 124, c) == 0,
          "%s", hvd_last_error());
    CHECK(!memcmp(a, b, sizeof a), "same seed, same pixels");
    CHECK(memcmp(a, c, sizeof a) != 0, "another seed, other pixels");
    for (i = 0; i < 500; i++) {
        int prev[4];
        memcpy(prev, box, sizeof prev);
        hvd_rrc_params(40, 30, &tf, hvd_sample_seed(1, 0, i), box);
        in_bounds &= box[0] >= 0 && box[1] >= 0 && box[2] > 0 && box[3] > 0 && box[0] + box[2] <= 40 && box[1] + box[3] <= 30;
        if (i && memcmp(prev, box, sizeof box)) varied++;
    }
    CHECK(in_bounds && varied > 400, "crops inside the image and varied (%d)", varied);
    /* no crop of scale >= 1 with ratio 2..3 fits a square: torchvision's centre-crop fallback */
    tf.scale_min = tf.scale_max = 1.0f;
    tf.ratio_min = 2.0f;
    tf.ratio_max = 3.0f;
    hvd_rrc_params(30, 30, &tf, 5, box);
    fallback_ok = box[0] == 0 && box[2] == 30 && box[3] == 15 && box[1] == 7;
    CHECK(fallback_ok, "fallback box %d %d %d %d", box[0], box[1], box[2], box[3]);
    /* plain evaluation transform of a gray image to 1 channel: exact (p/255 - m)/s */
    {
        hv_image g;
        hvd_transform ev = hvd_transform_eval(4);
        float o[16];
        ev.resize = 0;
        ev.channels = 1;
        ev.mean[0] = 0.5f;
        ev.std[0] = 0.25f;
        hv_image_alloc(&g, 4, 4, 1);
        for (i = 0; i < 16; i++) g.pixels[i] = (uint8_t)(i * 16);
        CHECK(hvd_transform_apply(&ev, &g, 0, o) == 0 && fabsf(o[5] - ((80.0f / 255.0f - 0.5f) / 0.25f)) < 1e-6f, "eval values");
        ev.hflip_p = 1.0f;
        CHECK(hvd_transform_apply(&ev, &g, 0, o) == 0 && fabsf(o[0] - ((48.0f / 255.0f - 0.5f) / 0.25f)) < 1e-6f, "flip");
        hv_image_free(&g);
    }
    hv_image_free(&im);
}

/* all batches of 2 epochs, for a given number of workers */
static float *all_batches(hv_ctx *ctx, hvd_dataset *ds, int workers, int *count) {
    hvd_loader_desc d;
    hvd_loader *ld;
    hv_tensor *x, *y;
    float *out = (float *)malloc(sizeof(float) * 2 * 2000 * 28 * 28 + 4000 * sizeof(float));
    int n, total = 0;
    memset(&d, 0, sizeof d);
    d.dataset = ds;
    d.transform = hvd_transform_mae_pretrain(28);
    d.transform.channels = 1;
    d.batch_size = 64;
    d.shuffle = 1;
    d.drop_last = 1;
    d.epochs = 2;
    d.workers = workers;
    d.seed = 42;
    ld = hvd_loader_new(ctx, &d);
    if (!ld) return out;
    while ((n = hvd_loader_next(ld, &x, &y)) > 0) {
        int k;
        memcpy(out + (size_t)total * 28 * 28, hv_data(x), sizeof(float) * (size_t)n * 28 * 28);
        for (k = 0; k < n; k++) out[2 * 2000 * 28 * 28 + total + k] = (float)hv_data_i32(y)[k];
        total += n;
        hv_step_end(ctx);
    }
    hvd_loader_free(ld);
    *count = total;
    return out;
}

static void test_loader_threads(hv_ctx *ctx) {
    hvd_dataset *ds = hvd_dataset_idx(MINI "train-images-idx3-ubyte.gz", MINI "train-labels-idx1-ubyte.gz");
    int n0 = 0, n1 = 0, n3 = 0;
    float *a, *b, *c;
    CHECK_NOTNULL(ds);
    if (!ds) return;
    a = all_batches(ctx, ds, 0, &n0);
    b = all_batches(ctx, ds, 1, &n1);
    c = all_batches(ctx, ds, 3, &n3);
    CHECK(n0 == 2 * 31 * 64 && n1 == n0 && n3 == n0, "2 epochs of 31 full batches: %d %d %d", n0, n1, n3);
    CHECK(!memcmp(a, b, sizeof(float) * (2 * 2000 * 28 * 28 + 4000)), "0 and 1 workers give the same batches");
    CHECK(!memcmp(a, c, sizeof(float) * (2 * 2000 * 28 * 28 + 4000)), "0 and 3 workers give the same batches");
    /* epoch 2 is another order than epoch 1 */
    CHECK(memcmp(a, a + (size_t)31 * 64 * 28 * 28, sizeof(float) * 64 * 28 * 28) != 0, "reshuffled each epoch");
    free(a);
    free(b);
    free(c);
    /* evaluation order: no shuffle, short last batch, then 0 */
    {
        hvd_loader *ld = one_pass_loader(ctx, ds, 28, 300, 2);
        hv_tensor *x, *y;
        int n, last = 0, batches = 0;
        while (ld && (n = hvd_loader_next(ld, &x, &y)) > 0) {
            last = n;
            batches++;
            CHECK(hv_dim(x, 0) == n && hv_dim(y, 0) == n, "view sizes");
            hv_step_end(ctx);
        }
        CHECK(batches == 7 && last == 200, "7 batches, the last of 200: %d, %d", batches, last);
        hvd_loader_free(ld);
    }
    hvd_dataset_free(ds);
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 1});
    setvbuf(stdout, NULL, _IOLBF, 0);
    make_tmpdir();
    TL_RUN(ctx, test_gunzip_and_idx);
    TL_RUN(ctx, test_idx_errors);
    TL_RUN(ctx, test_image_folder);
    TL_RUN(ctx, test_subsets);
    TL_RUN(ctx, test_transform_determinism);
    TL_RUN(ctx, test_loader_threads);
    rm_rf(tmpdir);
    hv_shutdown(ctx);
    TL_DONE();
}
