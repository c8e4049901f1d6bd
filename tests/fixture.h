/* fixture.h - reads the .hvfx reference fixtures that tests/make_fixtures.py writes (PyTorch
   inputs, outputs and gradients), so that the C suite can compare against PyTorch without Python.

   FILE FORMAT  (.hvfx, version 1; one file per case; the same text heads make_fixtures.py)
       magic     4 bytes   "HVFX"
       version   u32       1
       count     u32       number of arrays that follow
       count times, one array:
           name_len  u32       1..63
           name      name_len bytes, printable ASCII, no NUL; unique within the file
           dtype     u32       0 = f32 (IEEE 754 binary32), 1 = i32 (two's complement): hv_dtype's values
           ndim      u32       0..8 (0: a scalar, one element)
           dims      ndim x u32, the row-major shape
           data      numel x 4 bytes, row-major
       checksum  u32       FNV-1a 32-bit hash of every byte before it (catches flipped data bytes)
   Every integer and every element is little-endian. Nothing may follow the checksum.

   ARRAY NAMES (a convention of make_fixtures.py; the reader does not care)
       inputs by role ("x", "w", "idx", or timm parameter names such as "attn.qkv.weight"),
       "out" the output, "r" the random weights of the loss L = sum(out * r), "grad.<input>" dL/d input,
       "cfg.<name>" op arguments (strides, eps, ...), "torch32_err" how far PyTorch's own float32
       computation lands from the stored float64 reference: [forward error, worst gradient error].

   API
       fx_file f;
       if (fx_open(&f, "conv2d_s2p1d2g2") != 0) puts(fx_error());   // tests/fixtures/<case>.hvfx
       hv_tensor *x = fx_tensor(ctx, &f, "x");                      // persistent; NULL + fx_error()
       const fx_array *a = fx_get(&f, "out");                       // raw access: a->f32, a->shape
       fx_free(&f);
   fx_load(path) reads any file, fx_parse(buffer) any bytes (the corruption tests use it). Every
   failure returns -1 or NULL with a one-line reason in fx_error(); nothing aborts. Fixtures are
   found under $HV_FIXTURES when set, else tests/fixtures/ relative to the working directory (the
   repository root under build.sh). */
#ifndef HV_FIXTURE_H
#define HV_FIXTURE_H

#include "humanvit.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FX_VERSION 1
#define FX_MAX_NAME 63
#define FX_MAX_DIMS 8 /* of the format; fx_tensor needs ndim <= HV_MAX_DIMS besides */

typedef struct fx_array {
    char name[FX_MAX_NAME + 1];
    hv_dtype dtype; /* HV_F32 or HV_I32 */
    int ndim;
    int64_t shape[FX_MAX_DIMS];
    int64_t numel;
    float *f32;   /* the data when dtype is HV_F32, else NULL */
    int32_t *i32; /* the data when dtype is HV_I32, else NULL */
} fx_array;

typedef struct fx_file {
    char label[512]; /* the path, or the label given to fx_parse */
    int count;
    fx_array *arrays;
} fx_file;

static inline char *fx__err_buf(void) {
    static char buf[512];
    return buf;
}
static inline const char *fx_error(void) { return fx__err_buf(); }
static inline int fx__fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fx__err_buf(), 512, fmt, ap);
    va_end(ap);
    return -1;
}

static inline uint32_t fx__u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint32_t fx__fnv1a(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static inline void fx_free(fx_file *f) {
    int i;
    if (!f) return;
    for (i = 0; i < f->count; i++) {
        free(f->arrays[i].f32);
        free(f->arrays[i].i32);
    }
    free(f->arrays);
    f->arrays = NULL;
    f->count = 0;
}

/* parses n bytes; on failure f holds nothing (fx_free is still safe) */
static inline int fx_parse(fx_file *f, const unsigned char *buf, size_t n, const char *label) {
    size_t pos = 12, end;
    uint32_t count, i;
    memset(f, 0, sizeof *f);
    snprintf(f->label, sizeof f->label, "%s", label ? label : "(buffer)");
    if (n < 16) return fx__fail("%s: %zu bytes is too short for a .hvfx file (at least 16)", f->label, n);
    if (memcmp(buf, "HVFX", 4) != 0) return fx__fail("%s: not a .hvfx file (magic is not \"HVFX\")", f->label);
    if (fx__u32(buf + 4) != FX_VERSION)
        return fx__fail("%s: format version %u, this reader knows %d", f->label, fx__u32(buf + 4), FX_VERSION);
    end = n - 4; /* the checksum */
    if (fx__u32(buf + end) != fx__fnv1a(buf, end))
        return fx__fail("%s: checksum mismatch (corrupt or truncated file)", f->label);
    count = fx__u32(buf + 8);
    if (count > (end - pos) / 16) /* each array takes at least 16 bytes */
        return fx__fail("%s: header claims %u arrays, more than the file can hold", f->label, count);
    f->arrays = (fx_array *)calloc(count ? count : 1, sizeof(fx_array));
    if (!f->arrays) return fx__fail("%s: out of memory", f->label);
    for (i = 0; i < count; i++) {
        fx_array *a = &f->arrays[i];
        uint32_t len, dt, nd, k;
        size_t bytes;
        int j;
        f->count = (int)i + 1; /* so that fx_free releases what was read so far */
        if (end - pos < 4) goto truncated;
        len = fx__u32(buf + pos);
        pos += 4;
        if (len < 1 || len > FX_MAX_NAME) {
            fx__fail("%s: array %u: name length %u is outside 1..%d", f->label, i, len, FX_MAX_NAME);
            goto fail;
        }
        if (end - pos < len + 8) goto truncated;
        for (k = 0; k < len; k++)
            if (buf[pos + k] < 32 || buf[pos + k] > 126) {
                fx__fail("%s: array %u: name has a non-printable byte", f->label, i);
                goto fail;
            }
        memcpy(a->name, buf + pos, len);
        a->name[len] = 0;
        pos += len;
        for (j = 0; j < (int)i; j++)
            if (strcmp(f->arrays[j].name, a->name) == 0) {
                fx__fail("%s: array name '%s' appears twice", f->label, a->name);
                goto fail;
            }
        dt = fx__u32(buf + pos);
        nd = fx__u32(buf + pos + 4);
        pos += 8;
        if (dt != 0 && dt != 1) {
            fx__fail("%s: array '%s': dtype %u is neither 0 (f32) nor 1 (i32)", f->label, a->name, dt);
            goto fail;
        }
        if (nd > FX_MAX_DIMS) {
            fx__fail("%s: array '%s': ndim %u is more than %d", f->label, a->name, nd, FX_MAX_DIMS);
            goto fail;
        }
        if (end - pos < (size_t)nd * 4) goto truncated;
        a->dtype = dt == 0 ? HV_F32 : HV_I32;
        a->ndim = (int)nd;
        a->numel = 1;
        for (k = 0; k < nd; k++) {
            a->shape[k] = fx__u32(buf + pos);
            pos += 4;
            /* no overflow: the product stays below the file size, checked step by step */
            if (a->shape[k] && a->numel > (int64_t)((end - pos) / 4) / a->shape[k]) goto truncated;
            a->numel *= a->shape[k];
        }
        bytes = (size_t)a->numel * 4;
        if (end - pos < bytes) goto truncated;
        if (a->dtype == HV_F32) {
            a->f32 = (float *)malloc(bytes ? bytes : 1);
            if (!a->f32) goto oom;
            for (k = 0; k < (uint32_t)a->numel; k++) {
                uint32_t u = fx__u32(buf + pos + 4 * (size_t)k);
                memcpy(&a->f32[k], &u, 4);
            }
        } else {
            a->i32 = (int32_t *)malloc(bytes ? bytes : 1);
            if (!a->i32) goto oom;
            for (k = 0; k < (uint32_t)a->numel; k++) {
                uint32_t u = fx__u32(buf + pos + 4 * (size_t)k);
                memcpy(&a->i32[k], &u, 4);
            }
        }
        pos += bytes;
    }
    if (pos != end) {
        fx__fail("%s: %zu stray bytes after the last array", f->label, end - pos);
        goto fail;
    }
    return 0;
truncated:
    fx__fail("%s: truncated inside array %u of %u", f->label, f->count - 1, count);
    goto fail;
oom:
    fx__fail("%s: out of memory", f->label);
fail:
    fx_free(f);
    return -1;
}

static inline int fx_load(fx_file *f, const char *path) {
    FILE *fp;
    long n;
    unsigned char *buf;
    int rc;
    memset(f, 0, sizeof *f);
    fp = fopen(path, "rb");
    if (!fp)
        return fx__fail("%s: cannot open (run ./build.sh from the repository root, or regenerate the fixtures with "
                        "python3 tests/make_fixtures.py)",
                        path);
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return fx__fail("%s: cannot determine the file size", path);
    }
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (!buf) {
        fclose(fp);
        return fx__fail("%s: out of memory for %ld bytes", path, n);
    }
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        fclose(fp);
        return fx__fail("%s: read error", path);
    }
    fclose(fp);
    rc = fx_parse(f, buf, (size_t)n, path);
    free(buf);
    return rc;
}

/* the fixture of one case: $HV_FIXTURES/<name>.hvfx, else tests/fixtures/<name>.hvfx */
static inline int fx_open(fx_file *f, const char *case_name) {
    char path[512];
    const char *dir = getenv("HV_FIXTURES");
    snprintf(path, sizeof path, "%s/%s.hvfx", dir && dir[0] ? dir : "tests/fixtures", case_name);
    return fx_load(f, path);
}

static inline const fx_array *fx_get(const fx_file *f, const char *name) {
    int i;
    for (i = 0; i < f->count; i++)
        if (strcmp(f->arrays[i].name, name) == 0) return &f->arrays[i];
    fx__fail("%s: no array named '%s'", f->label, name);
    return NULL;
}

/* a persistent hv tensor (f32 or i32) with the array's shape and values */
static inline hv_tensor *fx_tensor(hv_ctx *ctx, const fx_file *f, const char *name) {
    const fx_array *a = fx_get(f, name);
    hv_tensor *t;
    if (!a) return NULL;
    if (a->ndim > HV_MAX_DIMS) {
        fx__fail("%s: array '%s' has %d dims, humanvit tensors at most %d", f->label, name, a->ndim, HV_MAX_DIMS);
        return NULL;
    }
    t = hv_tensor_new(ctx, a->dtype, hv_shape_of(a->ndim, a->shape));
    if (!t) {
        fx__fail("%s: array '%s': %s", f->label, name, hv_last_error());
        return NULL;
    }
    if (hv_tensor_copy_from(t, a->dtype == HV_F32 ? (const void *)a->f32 : (const void *)a->i32, (size_t)a->numel * 4) != 0) {
        fx__fail("%s: array '%s': %s", f->label, name, hv_last_error());
        hv_tensor_free(t);
        return NULL;
    }
    hv_tensor_set_name(t, name);
    return t;
}

#endif
