/* hv_data.h - datasets, augmentations and a prefetching batch loader for the humanvit trainers.
   Part of the examples, not of the library: the trainers in examples/ include it, and so can you.

   DO THIS in *one* C file (after humanvit.h, with POSIX enabled):

       #define _POSIX_C_SOURCE 200809L      // first line of the file: dirent, pthreads, clocks
       #include "humanvit.h"
       #define HV_DATA_IMPLEMENTATION
       #include "hv_data.h"

   link with -lpthread (glibc 2.34+ has it in libc). Names are hvd_ (public) and hvd__ (private).

   WHY A SEPARATE HEADER: humanvit.h is the portable C99 core (tensors, models, formats) and starts
   no threads of its own. Reading folders (dirent) and prefetching in the background (pthreads)
   are POSIX, and what a data pipeline should do is a trainer's policy, so that lives here, next
   to the trainers, in the same stb style.

   WHAT IS HERE
     - files: whole-file reads, gzip (.gz) decompression (RFC 1951/1952 inflate), IDX (MNIST format)
     - datasets: IDX image+label pairs (Fashion-MNIST, MNIST, .gz or not), image folders
       (torchvision ImageFolder: one sub-folder per class or episode, both sorted), raw memory;
       subsets: a seeded fraction of the samples, the first k of a seeded permutation (the
       upstream --frac-retained), a contiguous block of classes (the temporal-classification code)
     - transforms, as torchvision does them on PIL images: RandomResizedCrop (10 tries, then the
       centre-crop fallback), horizontal flip, resize of the shorter side + centre crop, colour
       jitter (brightness, contrast, saturation, hue, in a random order), random grayscale, Gaussian
       blur, then ToTensor + Normalize. Every random choice of sample i in epoch e is drawn from
       a stream seeded by (seed, epoch, i): the same seed gives the same pixels whatever the
       number of loader threads and whatever order they run in.
     - a batch loader: shuffles per epoch (seeded), and a pool of worker threads fills
       (B, C, H, W) f32 images + (B) i32 labels into persistent tensors, several batches ahead, so
       decoding and augmenting overlap the training step. workers 0 loads in the caller's thread.

   ERRORS: functions return NULL or -1 and hvd_last_error() (per thread) says what went wrong,
   naming the file. A worker's error (an unreadable image) surfaces from hvd_loader_next.
*/
#ifndef HV_DATA_H
#define HV_DATA_H

#include "humanvit.h"
#include <stddef.h>
#include <stdint.h>

#ifndef HV_IMAGE_MAX_SIDE
#error "hv_data.h needs the image section of humanvit.h (hv_image_load, hv_image_resize)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

const char *hvd_last_error(void);

/* ---- files ---------------------------------------------------------------------------------- */
/* the whole file in a malloc'd buffer (free() it); NULL on error */
uint8_t *hvd_read_file(const char *path, size_t *size);
/* gzip member(s) -> malloc'd bytes; checks the CRC-32 and length. name is for messages */
uint8_t *hvd_gunzip(const uint8_t *gz, size_t size, size_t *out_size, const char *name);
/* the file, gunzipped when it starts with the gzip magic (whatever its name) */
uint8_t *hvd_read_maybe_gz(const char *path, size_t *size);

/* ---- IDX (the MNIST file format: big-endian magic 0 0 type ndim, ndim u32 sizes, data) ------ */
typedef struct hvd_idx {
    int type;        /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int ndim;
    int64_t dims[8];
    uint8_t *data;   /* big-endian as in the file; for u8 the values themselves */
    size_t bytes;    /* of data */
    uint8_t *file_;  /* owned buffer */
} hvd_idx;
int hvd_idx_load(const char *path, hvd_idx *out); /* .gz or raw; 0 or -1 */
int hvd_idx_parse(const uint8_t *buf, size_t size, hvd_idx *out, const char *name); /* borrows buf */
void hvd_idx_free(hvd_idx *idx);

/* ---- datasets ------------------------------------------------------------------------------- */
typedef struct hvd_dataset hvd_dataset;

/* IDX images (N, H, W) u8 and labels (N) u8; labels_path may be NULL (unlabeled, label -1) */
hvd_dataset *hvd_dataset_idx(const char *images_path, const char *labels_path);
/* root/<class>/<file>, classes and files sorted by name (bytewise), files filtered by extension
   (.jpg .jpeg .png .ppm .pgm .bmp .tif .tiff .webp, any case) as torchvision's ImageFolder */
hvd_dataset *hvd_dataset_folder(const char *root);
/* n images of w x h x c bytes (copied); labels may be NULL */
hvd_dataset *hvd_dataset_memory(int n, int w, int h, int c, const uint8_t *pixels, const int32_t *labels, int num_classes);
/* a subset (a view: keeps base alive, free the subset before base): the samples idx[0..n) */
hvd_dataset *hvd_dataset_subset(hvd_dataset *base, const int64_t *idx, int64_t n);
/* the first k = max(1, (int64_t)(fraction * N)) samples of a seeded permutation, kept in
   permutation order (upstream: np.random.shuffle then [:k]); fraction 1 keeps all in order */
hvd_dataset *hvd_dataset_fraction(hvd_dataset *base, double fraction, uint64_t seed);
/* the samples of a contiguous block of ceil(fraction * classes) classes starting at a seeded
   offset (the temporal-classification code's subsets of episodes); fraction 1: all */
hvd_dataset *hvd_dataset_class_block(hvd_dataset *base, double fraction, uint64_t seed);
void hvd_dataset_free(hvd_dataset *ds);

int64_t hvd_dataset_size(const hvd_dataset *ds);
int hvd_dataset_classes(const hvd_dataset *ds);
int hvd_dataset_label(const hvd_dataset *ds, int64_t i); /* -1 when unlabeled */
const char *hvd_dataset_name(const hvd_dataset *ds, int64_t i, char *buf, size_t n); /* file or "images.idx[i]" */
/* sample i decoded (caller frees with hv_image_free); 0 or -1. Thread-safe. */
int hvd_dataset_get(const hvd_dataset *ds, int64_t i, hv_image *out);

/* ---- transforms ----------------------------------------------------------------------------- */
typedef struct hvd_transform {
    int size;          /* output H = W (required) */
    int channels;      /* output channels: 3 (gray replicated, as PIL's convert('RGB')) or 1 */
    /* training augmentation (all off when zero) */
    int random_resized_crop;          /* RandomResizedCrop(size, scale, ratio) */
    float scale_min, scale_max;       /* [0.08, 1] */
    float ratio_min, ratio_max;       /* [3/4, 4/3] */
    int interpolation;                /* HV_RESIZE_BICUBIC or HV_RESIZE_BILINEAR [bilinear] */
    float hflip_p;                    /* RandomHorizontalFlip(p) */
    float jitter_p, brightness, contrast, saturation, hue; /* RandomApply(ColorJitter(...), p) */
    float gray_p;                     /* RandomGrayscale(p) */
    float blur_p, blur_min, blur_max; /* RandomApply(GaussianBlur(radius U[min,max]), p) */
    /* evaluation: Resize(resize, shorter side) then CenterCrop(size); resize 0: straight to
       size x size when the image differs, else untouched */
    int resize;
    int resize_interpolation;         /* [bicubic] */
    /* Normalize after ToTensor; mean = std = 0 means ImageNet's */
    float mean[3], std[3];
} hvd_transform;
/* the upstream presets */
hvd_transform hvd_transform_mae_pretrain(int size); /* RRC(0.2-1, bicubic) + flip (humanlike-vits) */
hvd_transform hvd_transform_finetune(int size);     /* RRC(0.08-1, bilinear) + flip */
hvd_transform hvd_transform_eval(int size);         /* Resize(size + 32, bicubic) + CenterCrop(size) */
hvd_transform hvd_transform_tc(int size);           /* temporal classification: RRC + jitter + gray + blur + flip */

/* one sample: out has channels * size * size floats. seed: the sample's own (hvd_sample_seed) */
int hvd_transform_apply(const hvd_transform *tf, const hv_image *in, uint64_t seed, float *out);
uint64_t hvd_sample_seed(uint64_t seed, int64_t epoch, int64_t index);
/* the crop box RandomResizedCrop picks for a w x h image (exposed for tests); x, y, cw, ch */
void hvd_rrc_params(int w, int h, const hvd_transform *tf, uint64_t seed, int box[4]);

/* ---- batch loader --------------------------------------------------------------------------- */
typedef struct hvd_loader_desc {
    hvd_dataset *dataset;
    hvd_transform transform;
    int batch_size;
    int shuffle;       /* a new seeded permutation each epoch */
    int drop_last;     /* training: only full batches. Else the last batch is short. */
    int epochs;        /* stop after this many passes (0: forever) */
    int workers;       /* threads that prepare batches (0: in hvd_loader_next itself) */
    int prefetch;      /* batches prepared ahead [2 + workers] */
    uint64_t seed;
    int64_t start_batch; /* skip this many batches (resume) without decoding them */
} hvd_loader_desc;
typedef struct hvd_loader hvd_loader;
hvd_loader *hvd_loader_new(hv_ctx *ctx, const hvd_loader_desc *desc);
/* the next batch: *images (n, C, size, size) f32 and *labels (n) i32 are views of persistent
   tensors valid until the following call (a short last batch is an arena view: keep it within
   the step). Returns n > 0, 0 at the end, -1 on an error (hvd_last_error names the sample). */
int hvd_loader_next(hvd_loader *ld, hv_tensor **images, hv_tensor **labels);
int64_t hvd_loader_epoch(const hvd_loader *ld);  /* epoch of the last batch returned */
int64_t hvd_loader_batches_per_epoch(const hvd_loader *ld);
void hvd_loader_free(hvd_loader *ld); /* stops the workers */

#ifdef __cplusplus
}
#endif
#endif /* HV_DATA_H */

/* ============================================================================================== */
#ifdef HV_DATA_IMPLEMENTATION
#ifndef HV_DATA_IMPLEMENTATION_DONE
#define HV_DATA_IMPLEMENTATION_DONE

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__GNUC__) || defined(__clang__)
#define HVD__TLS __thread
#else
#define HVD__TLS
#endif

static HVD__TLS char hvd__err[1024];
const char *hvd_last_error(void) { return hvd__err; }
static int hvd__fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hvd__err, sizeof hvd__err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- files ---------------------------------------------------------------------------------- */

uint8_t *hvd_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    struct stat st;
    if (!f) {
        hvd__fail("%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        hvd__fail("%s: is a directory, not a file", path);
        return NULL;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            uint8_t *nb;
            cap = cap ? cap * 2 : 1 << 16;
            nb = (uint8_t *)realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                hvd__fail("%s: out of memory reading it", path);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        hvd__fail("%s: read error", path);
        return NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

/* inflate (RFC 1951), in the style of zlib's puff.c: a bit reader and canonical Huffman tables
   decoded one bit at a time, which is plenty for data sets read once */
typedef struct hvd__bits {
    const uint8_t *in;
    size_t n, pos;
    uint32_t buf;
    int cnt;
    uint8_t *out;
    size_t out_n, out_cap;
} hvd__bits;
typedef struct hvd__huff {
    short count[16], symbol[288];
} hvd__huff;

static int hvd__getbits(hvd__bits *s, int need, uint32_t *v) {
    uint32_t val = s->buf;
    while (s->cnt < need) {
        if (s->pos >= s->n) return -1;
        val |= (uint32_t)s->in[s->pos++] << s->cnt;
        s->cnt += 8;
    }
    s->buf = need == 32 ? 0 : val >> need;
    s->cnt -= need;
    *v = val & (need == 32 ? 0xffffffffu : ((1u << need) - 1));
    return 0;
}
static int hvd__put(hvd__bits *s, uint8_t c) {
    if (s->out_n == s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap * 2 : 1 << 16;
        uint8_t *nb = (uint8_t *)realloc(s->out, cap);
        if (!nb) return -2;
        s->out = nb;
        s->out_cap = cap;
    }
    s->out[s->out_n++] = c;
    return 0;
}
static int hvd__decode(hvd__bits *s, const hvd__huff *h) {
    int code = 0, first = 0, index = 0, len;
    for (len = 1; len < 16; len++) {
        uint32_t b;
        int count;
        if (hvd__getbits(s, 1, &b)) return -1;
        code |= (int)b;
        count = h->count[len];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    return -1;
}
static int hvd__construct(hvd__huff *h, const short *length, int n) {
    short offs[16];
    int sym, len, left = 1;
    memset(h->count, 0, sizeof h->count);
    for (sym = 0; sym < n; sym++) h->count[length[sym]]++;
    if (h->count[0] == n) return 0;
    for (len = 1; len < 16; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0) return -1; /* over-subscribed */
    }
    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = (short)(offs[len] + h->count[len]);
    for (sym = 0; sym < n; sym++)
        if (length[sym]) h->symbol[offs[length[sym]]++] = (short)sym;
    return left;
}
static int hvd__codes(hvd__bits *s, const hvd__huff *lencode, const hvd__huff *distcode) {
    static const short lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const short lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const short dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                                    4097, 6145, 8193, 12289, 16385, 24577};
    static const short dext[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    for (;;) {
        int sym = hvd__decode(s, lencode);
        uint32_t v;
        if (sym < 0) return -1;
        if (sym < 256) {
            if (hvd__put(s, (uint8_t)sym)) return -2;
        } else if (sym == 256) {
            return 0;
        } else {
            size_t len, dist, k;
            sym -= 257;
            if (sym >= 29) return -1;
            if (hvd__getbits(s, lext[sym], &v)) return -1;
            len = (size_t)lbase[sym] + v;
            sym = hvd__decode(s, distcode);
            if (sym < 0 || sym >= 30) return -1;
            if (hvd__getbits(s, dext[sym], &v)) return -1;
            dist = (size_t)dbase[sym] + v;
            if (dist > s->out_n) return -1; /* reaches before the start */
            for (k = 0; k < len; k++)
                if (hvd__put(s, s->out[s->out_n - dist])) return -2;
        }
    }
}
/* returns 0, -1 corrupt, -2 out of memory; s->pos ends just after the last block */
static int hvd__inflate(hvd__bits *s) {
    int last;
    do {
        uint32_t b, type;
        if (hvd__getbits(s, 1, &b) || hvd__getbits(s, 2, &type)) return -1;
        last = (int)b;
        if (type == 0) { /* stored */
            size_t len, k;
            s->buf = 0;
            s->cnt = 0;
            if (s->pos + 4 > s->n) return -1;
            len = s->in[s->pos] | (size_t)s->in[s->pos + 1] << 8;
            if ((len ^ 0xffff) != (size_t)(s->in[s->pos + 2] | s->in[s->pos + 3] << 8)) return -1;
            s->pos += 4;
            if (s->pos + len > s->n) return -1;
            for (k = 0; k < len; k++)
                if (hvd__put(s, s->in[s->pos + k])) return -2;
            s->pos += len;
        } else if (type == 1 || type == 2) {
            hvd__huff lencode, distcode;
            short lengths[320];
            int err, i;
            if (type == 1) { /* fixed codes */
                for (i = 0; i < 144; i++) lengths[i] = 8;
                for (; i < 256; i++) lengths[i] = 9;
                for (; i < 280; i++) lengths[i] = 7;
                for (; i < 288; i++) lengths[i] = 8;
                hvd__construct(&lencode, lengths, 288);
                for (i = 0; i < 30; i++) lengths[i] = 5;
                hvd__construct(&distcode, lengths, 30);
            } else {
                static const short order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
                uint32_t nlen, ndist, ncode, v;
                int index;
                if (hvd__getbits(s, 5, &nlen) || hvd__getbits(s, 5, &ndist) || hvd__getbits(s, 4, &ncode)) return -1;
                nlen += 257;
                ndist += 1;
                ncode += 4;
                if (nlen > 286 || ndist > 30) return -1;
                for (index = 0; index < (int)ncode; index++) {
                    if (hvd__getbits(s, 3, &v)) return -1;
                    lengths[order[index]] = (short)v;
                }
                for (; index < 19; index++) lengths[order[index]] = 0;
                if (hvd__construct(&lencode, lengths, 19) != 0) return -1;
                index = 0;
                while (index < (int)(nlen + ndist)) {
                    int sym = hvd__decode(s, &lencode), len = 0;
                    if (sym < 0) return -1;
                    if (sym < 16) lengths[index++] = (short)sym;
                    else {
                        if (sym == 16) {
                            if (index == 0) return -1;
                            len = lengths[index - 1];
                            if (hvd__getbits(s, 2, &v)) return -1;
                            sym = 3 + (int)v;
                        } else if (sym == 17) {
                            if (hvd__getbits(s, 3, &v)) return -1;
                            sym = 3 + (int)v;
                        } else {
                            if (hvd__getbits(s, 7, &v)) return -1;
                            sym = 11 + (int)v;
                        }
                        if (index + sym > (int)(nlen + ndist)) return -1;
                        while (sym--) lengths[index++] = (short)len;
                    }
                }
                if (lengths[256] == 0) return -1;
                err = hvd__construct(&lencode, lengths, (int)nlen);
                if (err < 0 || (err > 0 && nlen - lencode.count[0] != 1)) return -1;
                err = hvd__construct(&distcode, lengths + nlen, (int)ndist);
                if (err < 0 || (err > 0 && ndist - distcode.count[0] != 1)) return -1;
            }
            if ((err = hvd__codes(s, &lencode, &distcode)) != 0) return err;
        } else {
            return -1;
        }
    } while (!last);
    return 0;
}

static uint32_t hvd__crc32(uint32_t crc, const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    size_t i;
    if (!ready) { /* idempotent: racing threads write the same values */
        uint32_t c, k;
        int j;
        for (k = 0; k < 256; k++) {
            c = k;
            for (j = 0; j < 8; j++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[k] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint8_t *hvd_gunzip(const uint8_t *gz, size_t size, size_t *out_size, const char *name) {
    hvd__bits s;
    size_t pos = 0;
    memset(&s, 0, sizeof s);
    if (!name) name = "(memory)";
    if (size == 0) {
        hvd__fail("%s: empty file, not gzip data", name);
        return NULL;
    }
    while (pos < size) { /* concatenated members, as gzip -d accepts */
        uint8_t flg;
        size_t start = s.out_n;
        int r;
        uint32_t crc, isize;
        if (size - pos < 18 || gz[pos] != 0x1f || gz[pos + 1] != 0x8b) {
            if (pos > 0 && gz[pos] == 0) break; /* trailing zero padding */
            free(s.out);
            hvd__fail("%s: not a gzip file, or truncated (%zu bytes at offset %zu)", name, size - pos, pos);
            return NULL;
        }
        if (gz[pos + 2] != 8) {
            free(s.out);
            hvd__fail("%s: gzip compression method %d is not deflate", name, gz[pos + 2]);
            return NULL;
        }
        flg = gz[pos + 3];
        pos += 10;
        if (flg & 4) { /* FEXTRA */
            size_t xlen;
            if (pos + 2 > size) goto truncated;
            xlen = gz[pos] | (size_t)gz[pos + 1] << 8;
            pos += 2 + xlen;
        }
        if (flg & 8) { /* FNAME */
            while (pos < size && gz[pos]) pos++;
            pos++;
        }
        if (flg & 16) { /* FCOMMENT */
            while (pos < size && gz[pos]) pos++;
            pos++;
        }
        if (flg & 2) pos += 2; /* FHCRC */
        if (pos >= size) goto truncated;
        s.in = gz;
        s.n = size;
        s.pos = pos;
        s.buf = 0;
        s.cnt = 0;
        r = hvd__inflate(&s);
        if (r == -2) {
            free(s.out);
            hvd__fail("%s: out of memory decompressing", name);
            return NULL;
        }
        if (r) {
            free(s.out);
            hvd__fail("%s: corrupt or truncated deflate data (%zu bytes decoded)", name, s.out_n);
            return NULL;
        }
        pos = s.pos;
        if (pos + 8 > size) goto truncated;
        crc = (uint32_t)gz[pos] | (uint32_t)gz[pos + 1] << 8 | (uint32_t)gz[pos + 2] << 16 | (uint32_t)gz[pos + 3] << 24;
        isize = (uint32_t)gz[pos + 4] | (uint32_t)gz[pos + 5] << 8 | (uint32_t)gz[pos + 6] << 16 | (uint32_t)gz[pos + 7] << 24;
        pos += 8;
        if (crc != hvd__crc32(0, s.out + start, s.out_n - start) || isize != (uint32_t)(s.out_n - start)) {
            free(s.out);
            hvd__fail("%s: gzip CRC or length check failed (corrupt file)", name);
            return NULL;
        }
    }
    if (!s.out) s.out = (uint8_t *)malloc(1);
    *out_size = s.out_n;
    return s.out;
truncated:
    free(s.out);
    hvd__fail("%s: truncated gzip file", name);
    return NULL;
}

uint8_t *hvd_read_maybe_gz(const char *path, size_t *size) {
    size_t n;
    uint8_t *raw = hvd_read_file(path, &n), *out;
    if (!raw) return NULL;
    if (n < 2 || raw[0] != 0x1f || raw[1] != 0x8b) {
        *size = n;
        return raw;
    }
    out = hvd_gunzip(raw, n, size, path);
    free(raw);
    return out;
}

/* ---- IDX ------------------------------------------------------------------------------------ */

static int hvd__idx_elem_size(int type) {
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

int hvd_idx_parse(const uint8_t *buf, size_t size, hvd_idx *out, const char *name) {
    size_t need = 1;
    int i, es;
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    if (size < 4 || buf[0] != 0 || buf[1] != 0)
        return hvd__fail("%s: not an IDX file (the first two bytes must be zero; %zu bytes)", name, size);
    out->type = buf[2];
    out->ndim = buf[3];
    es = hvd__idx_elem_size(out->type);
    if (!es) return hvd__fail("%s: unknown IDX element type 0x%02x", name, out->type);
    if (out->ndim < 1 || out->ndim > 8) return hvd__fail("%s: IDX with %d dimensions (1 to 8 supported)", name, out->ndim);
    if (size < 4 + 4 * (size_t)out->ndim) return hvd__fail("%s: truncated IDX header", name);
    for (i = 0; i < out->ndim; i++) {
        const uint8_t *p = buf + 4 + 4 * i;
        out->dims[i] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        if (out->dims[i] > 0 && need > ((size_t)1 << 40) / (size_t)out->dims[i])
            return hvd__fail("%s: IDX dimensions too large", name);
        need *= (size_t)out->dims[i];
    }
    need *= (size_t)es;
    if (size - 4 - 4 * (size_t)out->ndim < need)
        return hvd__fail("%s: truncated IDX data: the header promises %zu bytes, the file has %zu", name, need,
                         size - 4 - 4 * (size_t)out->ndim);
    out->data = (uint8_t *)buf + 4 + 4 * out->ndim;
    out->bytes = need;
    return 0;
}

int hvd_idx_load(const char *path, hvd_idx *out) {
    size_t n;
    uint8_t *buf = hvd_read_maybe_gz(path, &n);
    memset(out, 0, sizeof *out);
    if (!buf) return -1;
    if (hvd_idx_parse(buf, n, out, path)) {
        free(buf);
        return -1;
    }
    out->file_ = buf;
    return 0;
}
void hvd_idx_free(hvd_idx *idx) {
    if (!idx) return;
    free(idx->file_);
    memset(idx, 0, sizeof *idx);
}

/* ---- datasets ------------------------------------------------------------------------------- */

enum { HVD__MEMORY, HVD__FOLDER, HVD__SUBSET };

struct hvd_dataset {
    int kind;
    int64_t n;
    int classes;
    int32_t *labels;      /* (n), -1 unlabeled; subsets keep their own copy */
    /* memory / IDX */
    int w, h, c;
    uint8_t *pixels;      /* n * w * h * c */
    char source[256];     /* for messages */
    /* folder */
    char **paths;
    char **class_names;
    /* subset */
    hvd_dataset *base;
    int64_t *idx;
};

static hvd_dataset *hvd__ds_new(int kind) {
    hvd_dataset *ds = (hvd_dataset *)calloc(1, sizeof *ds);
    if (!ds) hvd__fail("out of memory");
    else ds->kind = kind;
    return ds;
}

hvd_dataset *hvd_dataset_memory(int n, int w, int h, int c, const uint8_t *pixels, const int32_t *labels, int num_classes) {
    hvd_dataset *ds;
    size_t bytes = (size_t)n * (size_t)w * (size_t)h * (size_t)c;
    int64_t i;
    if (n <= 0 || w <= 0 || h <= 0 || (c != 1 && c != 3) || !pixels) {
        hvd__fail("hvd_dataset_memory: bad arguments (n %d, %dx%dx%d)", n, w, h, c);
        return NULL;
    }
    if (!(ds = hvd__ds_new(HVD__MEMORY))) return NULL;
    ds->n = n;
    ds->w = w;
    ds->h = h;
    ds->c = c;
    ds->pixels = (uint8_t *)malloc(bytes);
    ds->labels = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    if (!ds->pixels || !ds->labels) {
        hvd_dataset_free(ds);
        hvd__fail("out of memory");
        return NULL;
    }
    memcpy(ds->pixels, pixels, bytes);
    for (i = 0; i < n; i++) {
        ds->labels[i] = labels ? labels[i] : -1;
        if (labels && labels[i] >= ds->classes) ds->classes = labels[i] + 1;
    }
    if (num_classes > ds->classes) ds->classes = num_classes;
    snprintf(ds->source, sizeof ds->source, "memory");
    return ds;
}

hvd_dataset *hvd_dataset_idx(const char *images_path, const char *labels_path) {
    hvd_idx im, lb;
    hvd_dataset *ds;
    int64_t i;
    memset(&lb, 0, sizeof lb);
    if (hvd_idx_load(images_path, &im)) return NULL;
    if (im.type != 0x08 || (im.ndim != 3 && im.ndim != 4) || (im.ndim == 4 && im.dims[3] != 1 && im.dims[3] != 3) || im.dims[0] < 1 ||
        im.dims[1] < 1 || im.dims[2] < 1) {
        hvd__fail("%s: expected IDX u8 images (N, H, W) or (N, H, W, 1|3), got type 0x%02x with %d dims", images_path, im.type, im.ndim);
        hvd_idx_free(&im);
        return NULL;
    }
    if (labels_path) {
        if (hvd_idx_load(labels_path, &lb)) {
            hvd_idx_free(&im);
            return NULL;
        }
        if (lb.type != 0x08 || lb.ndim != 1 || lb.dims[0] != im.dims[0]) {
            hvd__fail("%s: expected %lld u8 labels (IDX 1-D, type 0x08) for %s, got type 0x%02x with %d dims (first %lld)", labels_path,
                      (long long)im.dims[0], images_path, lb.type, lb.ndim, (long long)lb.dims[0]);
            hvd_idx_free(&im);
            hvd_idx_free(&lb);
            return NULL;
        }
    }
    if (im.dims[0] > 0x7fffffff) {
        hvd__fail("%s: too many images", images_path);
        hvd_idx_free(&im);
        hvd_idx_free(&lb);
        return NULL;
    }
    {
        int n = (int)im.dims[0], h = (int)im.dims[1], w = (int)im.dims[2], c = im.ndim == 4 ? (int)im.dims[3] : 1;
        int32_t *labels = NULL;
        if (labels_path) {
            labels = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
            if (!labels) {
                hvd_idx_free(&im);
                hvd_idx_free(&lb);
                hvd__fail("out of memory");
                return NULL;
            }
            for (i = 0; i < n; i++) labels[i] = lb.data[i];
        }
        ds = hvd_dataset_memory(n, w, h, c, im.data, labels, 0);
        free(labels);
    }
    hvd_idx_free(&im);
    hvd_idx_free(&lb);
    if (ds) snprintf(ds->source, sizeof ds->source, "%s", images_path);
    return ds;
}

static int hvd__cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
static int hvd__has_image_ext(const char *name) {
    static const char *exts[] = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"};
    const char *dot = strrchr(name, '.');
    size_t i, k;
    if (!dot) return 0;
    for (i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        if (strlen(dot) != strlen(exts[i])) continue;
        for (k = 0; dot[k] && tolower((unsigned char)dot[k]) == exts[i][k]; k++) {
        }
        if (!dot[k]) return 1;
    }
    return 0;
}
/* sorted names of the entries of dir that are directories (want_dirs) or image files */
static char **hvd__list(const char *dir, int want_dirs, int *count) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL, path[4096];
    int n = 0, cap = 0;
    *count = 0;
    if (!d) {
        hvd__fail("%s: cannot open folder (%s)", dir, strerror(errno));
        return NULL;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.') continue; /* hidden files, ".", ".." (as torchvision's scandir) */
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0) continue;
        if (want_dirs ? !S_ISDIR(st.st_mode) : (!S_ISREG(st.st_mode) || !hvd__has_image_ext(e->d_name))) continue;
        if (n == cap) {
            char **nn;
            cap = cap ? cap * 2 : 64;
            nn = (char **)realloc(names, sizeof(char *) * (size_t)cap);
            if (!nn) goto oom;
            names = nn;
        }
        if (!(names[n] = (char *)malloc(strlen(e->d_name) + 1))) goto oom;
        strcpy(names[n++], e->d_name);
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), hvd__cmp_str);
    *count = n;
    if (!names) names = (char **)calloc(1, sizeof(char *));
    return names;
oom:
    closedir(d);
    while (n > 0) free(names[--n]);
    free(names);
    hvd__fail("out of memory listing %s", dir);
    return NULL;
}

hvd_dataset *hvd_dataset_folder(const char *root) {
    hvd_dataset *ds;
    char **classes;
    int nc, c, total_cap = 0;
    struct stat st;
    if (stat(root, &st) != 0) {
        hvd__fail("%s: no such folder (%s)", root, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        hvd__fail("%s: not a folder (an image folder has one sub-folder per class)", root);
        return NULL;
    }
    if (!(classes = hvd__list(root, 1, &nc))) return NULL;
    if (nc == 0) {
        free(classes);
        hvd__fail("%s: no class sub-folders (expected %s/<class>/<image>)", root, root);
        return NULL;
    }
    if (!(ds = hvd__ds_new(HVD__FOLDER))) {
        free(classes);
        return NULL;
    }
    ds->class_names = classes;
    ds->classes = nc;
    snprintf(ds->source, sizeof ds->source, "%s", root);
    for (c = 0; c < nc; c++) {
        char sub[4096];
        char **files;
        int nf, k;
        snprintf(sub, sizeof sub, "%s/%s", root, classes[c]);
        if (!(files = hvd__list(sub, 0, &nf))) {
            hvd_dataset_free(ds);
            return NULL;
        }
        if (ds->n + nf > total_cap) {
            int cap = (int)(ds->n + nf) * 2;
            char **np = (char **)realloc(ds->paths, sizeof(char *) * (size_t)cap);
            int32_t *nl = (int32_t *)realloc(ds->labels, sizeof(int32_t) * (size_t)cap);
            if (np) ds->paths = np;
            if (nl) ds->labels = nl;
            if (!np || !nl) {
                for (k = 0; k < nf; k++) free(files[k]);
                free(files);
                hvd_dataset_free(ds);
                hvd__fail("out of memory");
                return NULL;
            }
            total_cap = cap;
        }
        for (k = 0; k < nf; k++) {
            size_t len = strlen(sub) + strlen(files[k]) + 2;
            char *p = (char *)malloc(len);
            if (p) snprintf(p, len, "%s/%s", sub, files[k]);
            free(files[k]);
            ds->paths[ds->n] = p;
            ds->labels[ds->n++] = c;
            if (!p) {
                for (k++; k < nf; k++) free(files[k]);
                free(files);
                hvd_dataset_free(ds);
                hvd__fail("out of memory");
                return NULL;
            }
        }
        free(files);
    }
    if (ds->n == 0) {
        hvd_dataset_free(ds);
        hvd__fail("%s: %d class folders but no image files in them (.jpg .jpeg .png .ppm .pgm .bmp .tif .tiff .webp)", root, nc);
        return NULL;
    }
    return ds;
}

hvd_dataset *hvd_dataset_subset(hvd_dataset *base, const int64_t *idx, int64_t n) {
    hvd_dataset *ds;
    int64_t i;
    if (!base || n < 0) {
        hvd__fail("hvd_dataset_subset: bad arguments");
        return NULL;
    }
    for (i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= base->n) {
            hvd__fail("hvd_dataset_subset: index %lld out of range (size %lld)", (long long)idx[i], (long long)base->n);
            return NULL;
        }
    if (!(ds = hvd__ds_new(HVD__SUBSET))) return NULL;
    ds->base = base;
    ds->n = n;
    ds->classes = base->classes;
    ds->idx = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    ds->labels = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!ds->idx || !ds->labels) {
        hvd_dataset_free(ds);
        hvd__fail("out of memory");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        ds->idx[i] = idx[i];
        ds->labels[i] = base->labels[idx[i]];
    }
    snprintf(ds->source, sizeof ds->source, "%s", base->source);
    return ds;
}

/* splitmix64: seeds, per-sample streams and permutations; fixed, documented, platform-independent */
static uint64_t hvd__mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
typedef struct hvd__rng {
    uint64_t s;
} hvd__rng;
static uint64_t hvd__next(hvd__rng *r) {
    r->s += 0x9e3779b97f4a7c15ull;
    return hvd__mix(r->s);
}
static double hvd__unif(hvd__rng *r) { return (double)(hvd__next(r) >> 11) * (1.0 / 9007199254740992.0); } /* [0, 1) */
static double hvd__unif_range(hvd__rng *r, double lo, double hi) { return lo + (hi - lo) * hvd__unif(r); }
static int64_t hvd__randint(hvd__rng *r, int64_t n) { return n <= 1 ? 0 : (int64_t)(hvd__unif(r) * (double)n); } /* [0, n) */
static void hvd__permutation(uint64_t seed, int64_t n, int64_t *out) {
    hvd__rng r;
    int64_t i;
    r.s = hvd__mix(seed);
    for (i = 0; i < n; i++) out[i] = i;
    for (i = n - 1; i > 0; i--) {
        int64_t j = hvd__randint(&r, i + 1), t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

uint64_t hvd_sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
    return hvd__mix(hvd__mix(hvd__mix(seed) ^ (uint64_t)epoch) ^ (uint64_t)index);
}

hvd_dataset *hvd_dataset_fraction(hvd_dataset *base, double fraction, uint64_t seed) {
    int64_t *perm, k;
    hvd_dataset *ds;
    if (!base || !(fraction > 0) || fraction > 1) {
        hvd__fail("fraction %g must be in (0, 1]", fraction);
        return NULL;
    }
    if (!(perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)base->n))) {
        hvd__fail("out of memory");
        return NULL;
    }
    k = (int64_t)(fraction * (double)base->n);
    if (k < 1) k = 1;
    if (fraction == 1) {
        int64_t i;
        for (i = 0; i < base->n; i++) perm[i] = i;
        k = base->n;
    } else {
        hvd__permutation(seed ^ 0x5eed5ab5e7ull, base->n, perm);
    }
    ds = hvd_dataset_subset(base, perm, k);
    free(perm);
    return ds;
}

hvd_dataset *hvd_dataset_class_block(hvd_dataset *base, double fraction, uint64_t seed) {
    int64_t i, n = 0, *idx;
    int k, start = 0;
    hvd_dataset *ds;
    if (!base || !(fraction > 0) || fraction > 1 || base->classes < 1) {
        hvd__fail("class fraction %g must be in (0, 1] (and the data set labelled)", fraction);
        return NULL;
    }
    k = (int)ceil(fraction * base->classes);
    if (k < base->classes) {
        hvd__rng r;
        r.s = hvd__mix(seed ^ 0xb10cull);
        start = (int)hvd__randint(&r, base->classes - k + 1);
    }
    if (!(idx = (int64_t *)malloc(sizeof(int64_t) * (size_t)(base->n ? base->n : 1)))) {
        hvd__fail("out of memory");
        return NULL;
    }
    for (i = 0; i < base->n; i++)
        if (base->labels[i] >= start && base->labels[i] < start + k) idx[n++] = i;
    ds = hvd_dataset_subset(base, idx, n);
    free(idx);
    return ds;
}

void hvd_dataset_free(hvd_dataset *ds) {
    int64_t i;
    if (!ds) return;
    free(ds->labels);
    free(ds->pixels);
    free(ds->idx);
    if (ds->paths)
        for (i = 0; i < ds->n; i++) free(ds->paths[i]);
    free(ds->paths);
    if (ds->class_names)
        for (i = 0; i < ds->classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    free(ds);
}

int64_t hvd_dataset_size(const hvd_dataset *ds) { return ds ? ds->n : 0; }
int hvd_dataset_classes(const hvd_dataset *ds) { return ds ? ds->classes : 0; }
int hvd_dataset_label(const hvd_dataset *ds, int64_t i) { return ds && i >= 0 && i < ds->n ? ds->labels[i] : -1; }

const char *hvd_dataset_name(const hvd_dataset *ds, int64_t i, char *buf, size_t n) {
    while (ds->kind == HVD__SUBSET) {
        i = ds->idx[i];
        ds = ds->base;
    }
    if (ds->kind == HVD__FOLDER) snprintf(buf, n, "%s", ds->paths[i]);
    else snprintf(buf, n, "%s[%lld]", ds->source, (long long)i);
    return buf;
}

int hvd_dataset_get(const hvd_dataset *ds, int64_t i, hv_image *out) {
    memset(out, 0, sizeof *out);
    if (!ds || i < 0 || i >= ds->n) return hvd__fail("sample %lld out of range", (long long)i);
    while (ds->kind == HVD__SUBSET) {
        i = ds->idx[i];
        ds = ds->base;
    }
    if (ds->kind == HVD__FOLDER) {
        if (hv_image_load(ds->paths[i], out)) return hvd__fail("%s", hv_last_error());
        return 0;
    }
    if (hv_image_alloc(out, ds->w, ds->h, ds->c)) return hvd__fail("out of memory");
    memcpy(out->pixels, ds->pixels + (size_t)i * ds->w * ds->h * ds->c, (size_t)ds->w * ds->h * ds->c);
    return 0;
}

/* ---- transforms ----------------------------------------------------------------------------- */

static void hvd__tf_defaults(hvd_transform *t, int size) {
    memset(t, 0, sizeof *t);
    t->size = size;
    t->channels = 3;
    t->scale_min = 0.08f;
    t->scale_max = 1.0f;
    t->ratio_min = 3.0f / 4.0f;
    t->ratio_max = 4.0f / 3.0f;
    t->interpolation = HV_RESIZE_BILINEAR;
    t->resize_interpolation = HV_RESIZE_BICUBIC;
}
hvd_transform hvd_transform_mae_pretrain(int size) {
    hvd_transform t;
    hvd__tf_defaults(&t, size);
    t.random_resized_crop = 1;
    t.scale_min = 0.2f;
    t.interpolation = HV_RESIZE_BICUBIC;
    t.hflip_p = 0.5f;
    return t;
}
hvd_transform hvd_transform_finetune(int size) {
    hvd_transform t;
    hvd__tf_defaults(&t, size);
    t.random_resized_crop = 1;
    t.hflip_p = 0.5f;
    return t;
}
hvd_transform hvd_transform_eval(int size) {
    hvd_transform t;
    hvd__tf_defaults(&t, size);
    t.resize = size + 32;
    return t;
}
hvd_transform hvd_transform_tc(int size) {
    hvd_transform t = hvd_transform_finetune(size);
    t.jitter_p = 0.9f;
    t.brightness = t.contrast = t.saturation = 0.9f;
    t.hue = 0.5f;
    t.gray_p = 0.2f;
    t.blur_p = 0.5f;
    t.blur_min = 0.1f;
    t.blur_max = 2.0f;
    return t;
}

static double hvd__round_even(double x) { /* Python's round() */
    double r = floor(x + 0.5);
    if (r - x == 0.5 && fmod(r, 2.0) != 0) r -= 1;
    return r;
}

void hvd_rrc_params(int width, int height, const hvd_transform *tf, uint64_t seed, int box[4]) {
    /* torchvision RandomResizedCrop.get_params */
    hvd__rng r;
    double area = (double)width * height, lr0 = log(tf->ratio_min), lr1 = log(tf->ratio_max), in_ratio;
    int attempt, w, h;
    r.s = seed;
    for (attempt = 0; attempt < 10; attempt++) {
        double target = area * hvd__unif_range(&r, tf->scale_min, tf->scale_max);
        double aspect = exp(hvd__unif_range(&r, lr0, lr1));
        w = (int)hvd__round_even(sqrt(target * aspect));
        h = (int)hvd__round_even(sqrt(target / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            box[1] = (int)hvd__randint(&r, height - h + 1);
            box[0] = (int)hvd__randint(&r, width - w + 1);
            box[2] = w;
            box[3] = h;
            return;
        }
    }
    in_ratio = (double)width / height; /* fallback: the centre crop */
    if (in_ratio < tf->ratio_min) {
        w = width;
        h = (int)hvd__round_even(w / tf->ratio_min);
    } else if (in_ratio > tf->ratio_max) {
        h = height;
        w = (int)hvd__round_even(h * tf->ratio_max);
    } else {
        w = width;
        h = height;
    }
    box[0] = (width - w) / 2;
    box[1] = (height - h) / 2;
    box[2] = w;
    box[3] = h;
}

static int hvd__crop(const hv_image *in, int x, int y, int w, int h, hv_image *out) {
    int r;
    if (hv_image_alloc(out, w, h, in->channels)) return -1;
    for (r = 0; r < h; r++) { /* PIL crops outside the image as zeros */
        int sy = y + r, c0;
        for (c0 = 0; c0 < w; c0++) {
            int sx = x + c0, ch;
            for (ch = 0; ch < in->channels; ch++)
                out->pixels[((size_t)r * w + c0) * in->channels + ch] =
                    (sx >= 0 && sx < in->width && sy >= 0 && sy < in->height) ? in->pixels[((size_t)sy * in->width + sx) * in->channels + ch] : 0;
        }
    }
    return 0;
}
static void hvd__swap(hv_image *a, hv_image *b) {
    hv_image t = *a;
    *a = *b;
    *b = t;
}
static uint8_t hvd__luma(const uint8_t *p) { /* PIL's L = R 299/1000 + G 587/1000 + B 114/1000 */
    return (uint8_t)(((uint32_t)p[0] * 19595 + (uint32_t)p[1] * 38470 + (uint32_t)p[2] * 7471 + 0x8000) >> 16);
}
/* PIL Image.blend(a, b, alpha) where a is given per pixel (degenerate) */
static uint8_t hvd__blend(int a, int b, float alpha) {
    float t = (float)a + alpha * (float)(b - a);
    return t <= 0 ? 0 : t >= 255 ? 255 : (uint8_t)t;
}
static void hvd__rgb2hsv(const uint8_t *in, uint8_t *out) { /* PIL's rgb2hsv */
    int r = in[0], g = in[1], b = in[2];
    int maxc = r > g ? (r > b ? r : b) : (g > b ? g : b), minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    out[2] = (uint8_t)maxc;
    if (minc == maxc) {
        out[0] = out[1] = 0;
    } else {
        float cr = (float)(maxc - minc), s = cr / (float)maxc, rc = (float)(maxc - r) / cr, gc = (float)(maxc - g) / cr,
              bc = (float)(maxc - b) / cr, h;
        int ih, is;
        if (r == maxc) h = bc - gc;
        else if (g == maxc) h = 2.0f + rc - bc;
        else h = 4.0f + gc - rc;
        h = (float)fmod(h / 6.0 + 1.0, 1.0);
        ih = (int)(h * 255.0f);
        is = (int)(s * 255.0f);
        out[0] = (uint8_t)(ih < 0 ? 0 : ih > 255 ? 255 : ih);
        out[1] = (uint8_t)(is < 0 ? 0 : is > 255 ? 255 : is);
    }
}
static uint8_t hvd__clip8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }
static void hvd__hsv2rgb(const uint8_t *in, uint8_t *out) { /* PIL's hsv2rgb */
    int h = in[0], s = in[1], v = in[2];
    if (s == 0) {
        out[0] = out[1] = out[2] = (uint8_t)v;
    } else {
        int i = (int)floor((float)h * 6.0f / 255.0f);
        float f = (float)h * 6.0f / 255.0f - (float)i, fs = (float)s / 255.0f;
        uint8_t p = hvd__clip8(floor((float)v * (1.0f - fs) + 0.5)), q = hvd__clip8(floor((float)v * (1.0f - fs * f) + 0.5)),
                t = hvd__clip8(floor((float)v * (1.0f - fs * (1.0f - f)) + 0.5)), V = (uint8_t)v;
        switch (i % 6) {
        case 0: out[0] = V; out[1] = t; out[2] = p; break;
        case 1: out[0] = q; out[1] = V; out[2] = p; break;
        case 2: out[0] = p; out[1] = V; out[2] = t; break;
        case 3: out[0] = p; out[1] = q; out[2] = V; break;
        case 4: out[0] = t; out[1] = p; out[2] = V; break;
        default: out[0] = V; out[1] = p; out[2] = q; break;
        }
    }
}
static void hvd__color_jitter(hv_image *im, const hvd_transform *tf, hvd__rng *r) {
    /* torchvision ColorJitter.get_params: a random order, then each factor */
    int order[4] = {0, 1, 2, 3}, k;
    double bf, cf, sf, hf;
    size_t n = (size_t)im->width * im->height, i;
    int C = im->channels;
    for (k = 3; k > 0; k--) {
        int j = (int)hvd__randint(r, k + 1), t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    bf = tf->brightness > 0 ? hvd__unif_range(r, fmax(0, 1 - tf->brightness), 1 + tf->brightness) : -1;
    cf = tf->contrast > 0 ? hvd__unif_range(r, fmax(0, 1 - tf->contrast), 1 + tf->contrast) : -1;
    sf = tf->saturation > 0 ? hvd__unif_range(r, fmax(0, 1 - tf->saturation), 1 + tf->saturation) : -1;
    hf = tf->hue > 0 ? hvd__unif_range(r, -tf->hue, tf->hue) : -2;
    for (k = 0; k < 4; k++) {
        switch (order[k]) {
        case 0: /* brightness: blend with black */
            if (bf >= 0)
                for (i = 0; i < n * C; i++) im->pixels[i] = hvd__blend(0, im->pixels[i], (float)bf);
            break;
        case 1: /* contrast: blend with the mean luma, int(mean + 0.5) */
            if (cf >= 0) {
                double sum = 0;
                int mean;
                for (i = 0; i < n; i++) sum += C == 3 ? hvd__luma(im->pixels + 3 * i) : im->pixels[i];
                mean = (int)(sum / (double)n + 0.5);
                for (i = 0; i < n * C; i++) im->pixels[i] = hvd__blend(mean, im->pixels[i], (float)cf);
            }
            break;
        case 2: /* saturation: blend with the luma image (a no-op on gray) */
            if (sf >= 0 && C == 3)
                for (i = 0; i < n; i++) {
                    uint8_t *p = im->pixels + 3 * i, l = hvd__luma(p);
                    p[0] = hvd__blend(l, p[0], (float)sf);
                    p[1] = hvd__blend(l, p[1], (float)sf);
                    p[2] = hvd__blend(l, p[2], (float)sf);
                }
            break;
        default: /* hue: shift H in PIL's 8-bit HSV by uint8(hue * 255), wrapping */
            if (hf > -2 && C == 3) {
                uint8_t shift = (uint8_t)(int)(hf * 255.0); /* np.uint8 of a negative number wraps */
                for (i = 0; i < n; i++) {
                    uint8_t hsv[3], *p = im->pixels + 3 * i;
                    hvd__rgb2hsv(p, hsv);
                    hsv[0] = (uint8_t)(hsv[0] + shift);
                    hvd__hsv2rgb(hsv, p);
                }
            }
        }
    }
}
/* PIL's GaussianBlur: three extended box blurs per axis with the box radius of Gwosdek et al. */
static void hvd__box_blur_line(const uint8_t *in, uint8_t *out, int n, int stride, float radius) {
    int ri = (int)radius, i, k;
    float frac = radius - (float)ri, norm = 1.0f / (2.0f * radius + 1.0f);
    for (i = 0; i < n; i++) {
        float acc = 0;
        for (k = -ri; k <= ri; k++) {
            int j = i + k < 0 ? 0 : i + k >= n ? n - 1 : i + k;
            acc += in[j * stride];
        }
        {
            int a = i - ri - 1 < 0 ? 0 : i - ri - 1, b = i + ri + 1 >= n ? n - 1 : i + ri + 1;
            acc += frac * (float)(in[a * stride] + in[b * stride]);
        }
        out[i * stride] = hvd__clip8(floor(acc * norm + 0.5f));
    }
}
static int hvd__gaussian_blur(hv_image *im, double sigma) {
    double s2 = sigma * sigma / 3.0, L = sqrt(12.0 * s2 + 1.0), l = floor((L - 1.0) / 2.0);
    double a = (2 * l + 1) * (l * (l + 1) - 3 * s2) / (6 * (s2 - (l + 1) * (l + 1)));
    float radius = (float)(l + a);
    int pass, x, y, ch, W = im->width, H = im->height, C = im->channels;
    uint8_t *tmp = (uint8_t *)malloc((size_t)W * H * C);
    if (!tmp) return -1;
    for (pass = 0; pass < 3; pass++) { /* rows, three times, then columns, three times */
        for (y = 0; y < H; y++)
            for (ch = 0; ch < C; ch++)
                hvd__box_blur_line(im->pixels + (size_t)y * W * C + ch, tmp + (size_t)y * W * C + ch, W, C, radius);
        memcpy(im->pixels, tmp, (size_t)W * H * C);
    }
    for (pass = 0; pass < 3; pass++) {
        for (x = 0; x < W; x++)
            for (ch = 0; ch < C; ch++)
                hvd__box_blur_line(im->pixels + (size_t)x * C + ch, tmp + (size_t)x * C + ch, H, W * C, radius);
        memcpy(im->pixels, tmp, (size_t)W * H * C);
    }
    free(tmp);
    return 0;
}

int hvd_transform_apply(const hvd_transform *tf, const hv_image *in, uint64_t seed, float *out) {
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    hv_image cur, tmp;
    hvd__rng r;
    const float *mean = tf->mean, *std = tf->std;
    int S = tf->size, C = tf->channels ? tf->channels : 3, x, y, c;
    if (S <= 0 || (C != 1 && C != 3) || !in || !in->pixels || (in->channels != 1 && in->channels != 3))
        return hvd__fail("transform: bad settings (size %d, channels %d) or image", S, C);
    memset(&tmp, 0, sizeof tmp);
    r.s = seed;
    /* a private copy that the steps below replace */
    if (hvd__crop(in, 0, 0, in->width, in->height, &cur)) return hvd__fail("out of memory");
    if (tf->random_resized_crop) {
        int box[4];
        hvd_rrc_params(cur.width, cur.height, tf, hvd__next(&r), box);
        if (hvd__crop(&cur, box[0], box[1], box[2], box[3], &tmp)) goto oom;
        hvd__swap(&cur, &tmp);
        hv_image_free(&tmp);
        if (cur.width != S || cur.height != S) {
            if (hv_image_resize(&cur, S, S, tf->interpolation ? tf->interpolation : HV_RESIZE_BILINEAR, &tmp)) goto fail_img;
            hvd__swap(&cur, &tmp);
            hv_image_free(&tmp);
        }
    } else if (tf->resize > 0) {
        /* Resize(int): the shorter side to `resize`, the longer int(resize * long / short) */
        int w = cur.width, h = cur.height, nw, nh;
        if (w <= h) {
            nw = tf->resize;
            nh = (int)((double)tf->resize * h / w);
        } else {
            nh = tf->resize;
            nw = (int)((double)tf->resize * w / h);
        }
        if (nw != w || nh != h) {
            if (hv_image_resize(&cur, nw, nh, tf->resize_interpolation ? tf->resize_interpolation : HV_RESIZE_BICUBIC, &tmp)) goto fail_img;
            hvd__swap(&cur, &tmp);
            hv_image_free(&tmp);
        }
    } else if (cur.width != S || cur.height != S) {
        if (hv_image_resize(&cur, S, S, tf->resize_interpolation ? tf->resize_interpolation : HV_RESIZE_BICUBIC, &tmp)) goto fail_img;
        hvd__swap(&cur, &tmp);
        hv_image_free(&tmp);
    }
    if (cur.width != S || cur.height != S) { /* CenterCrop: int(round((in - out) / 2)) */
        int ox = (int)hvd__round_even((cur.width - S) / 2.0), oy = (int)hvd__round_even((cur.height - S) / 2.0);
        if (hvd__crop(&cur, ox, oy, S, S, &tmp)) goto oom;
        hvd__swap(&cur, &tmp);
        hv_image_free(&tmp);
    }
    /* the torchvision order of the temporal-classification pipeline: jitter, gray, blur, flip */
    if (tf->jitter_p > 0 && hvd__unif(&r) < tf->jitter_p) hvd__color_jitter(&cur, tf, &r);
    if (tf->gray_p > 0 && hvd__unif(&r) < tf->gray_p && cur.channels == 3) {
        size_t i, n = (size_t)S * S;
        for (i = 0; i < n; i++) {
            uint8_t l = hvd__luma(cur.pixels + 3 * i);
            cur.pixels[3 * i] = cur.pixels[3 * i + 1] = cur.pixels[3 * i + 2] = l;
        }
    }
    if (tf->blur_p > 0 && hvd__unif(&r) < tf->blur_p) {
        double sigma = hvd__unif_range(&r, tf->blur_min > 0 ? tf->blur_min : 0.1, tf->blur_max > 0 ? tf->blur_max : 2.0);
        if (hvd__gaussian_blur(&cur, sigma)) goto oom;
    }
    {
        int flip = tf->hflip_p > 0 && hvd__unif(&r) < tf->hflip_p;
        if (mean[0] == 0 && mean[1] == 0 && mean[2] == 0 && std[0] == 0 && std[1] == 0 && std[2] == 0) {
            mean = imagenet_mean;
            std = imagenet_std;
        }
        for (c = 0; c < C; c++) {
            float m = mean[c], sd = std[c] != 0 ? std[c] : 1.0f;
            for (y = 0; y < S; y++)
                for (x = 0; x < S; x++) {
                    const uint8_t *p = cur.pixels + ((size_t)y * S + (flip ? S - 1 - x : x)) * cur.channels;
                    uint8_t v = cur.channels == 1 ? p[0] : C == 1 ? hvd__luma(p) : p[c];
                    out[((size_t)c * S + y) * S + x] = ((float)v / 255.0f - m) / sd;
                }
        }
    }
    hv_image_free(&cur);
    return 0;
oom:
    hv_image_free(&cur);
    hv_image_free(&tmp);
    return hvd__fail("out of memory in a transform");
fail_img:
    hv_image_free(&cur);
    hv_image_free(&tmp);
    return hvd__fail("resize: %s", hv_last_error());
}

/* ---- batch loader --------------------------------------------------------------------------- */

typedef struct hvd__slot {
    hv_tensor *images, *labels; /* persistent (B, C, S, S), (B) */
    int64_t batch;              /* global batch number held, -1 free */
    int n;                      /* samples in it */
    int state;                  /* 0 free, 1 filling, 2 ready, 3 in use by the consumer */
    char err[1600];             /* non-empty: this batch failed */
} hvd__slot;

struct hvd_loader {
    hvd_loader_desc d;
    hv_ctx *ctx;
    int64_t N, per_epoch, total; /* total batches (-1: forever) */
    int nslots;
    hvd__slot *slots;
    int64_t next_fill;    /* next batch number a worker claims */
    int64_t next_take;    /* next batch number the consumer takes */
    int64_t last_epoch;
    int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int nthreads;
    int64_t *perm;        /* permutation of the current epoch (shared) */
    int64_t perm_epoch;
    int64_t **perms;      /* per-epoch permutation cache (two epochs alive at most) */
};

static const int64_t *hvd__epoch_perm(hvd_loader *ld, int64_t epoch, int64_t *buf) {
    int64_t i;
    if (!ld->d.shuffle) {
        for (i = 0; i < ld->N; i++) buf[i] = i;
    } else {
        hvd__permutation(hvd__mix(ld->d.seed) ^ (uint64_t)(epoch + 1) * 0x9e3779b97f4a7c15ull, ld->N, buf);
    }
    return buf;
}

/* fill batch b into slot s (no lock held); perm is the permutation of b's epoch */
static void hvd__fill(hvd_loader *ld, hvd__slot *s, int64_t b, const int64_t *perm) {
    int64_t epoch = b / ld->per_epoch, first = (b % ld->per_epoch) * ld->d.batch_size, k;
    int C = ld->d.transform.channels ? ld->d.transform.channels : 3, S = ld->d.transform.size;
    size_t per = (size_t)C * S * S;
    float *img = hv_data(s->images);
    int32_t *lab = hv_data_i32(s->labels);
    s->n = (int)(first + ld->d.batch_size <= ld->N ? ld->d.batch_size : ld->N - first);
    s->err[0] = 0;
    for (k = 0; k < s->n; k++) {
        int64_t i = perm[first + k];
        hv_image im;
        if (hvd_dataset_get(ld->d.dataset, i, &im) ||
            hvd_transform_apply(&ld->d.transform, &im, hvd_sample_seed(ld->d.seed, epoch, i), img + per * (size_t)k)) {
            char name[512];
            snprintf(s->err, sizeof s->err, "sample %lld (%s): %s", (long long)i, hvd_dataset_name(ld->d.dataset, i, name, sizeof name),
                     hvd__err);
            hv_image_free(&im);
            return;
        }
        hv_image_free(&im);
        lab[k] = hvd_dataset_label(ld->d.dataset, i);
    }
}

static void *hvd__worker(void *arg) {
    hvd_loader *ld = (hvd_loader *)arg;
    int64_t *perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)ld->N), perm_epoch = -1;
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        int64_t b;
        hvd__slot *s;
        while (!ld->stop && (ld->total >= 0 && ld->next_fill >= ld->total ? 1 : ld->slots[ld->next_fill % ld->nslots].state != 0))
            pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->stop) break;
        b = ld->next_fill++;
        s = &ld->slots[b % ld->nslots];
        s->state = 1;
        s->batch = b;
        pthread_mutex_unlock(&ld->mu);
        if (!perm) {
            snprintf(s->err, sizeof s->err, "out of memory in the loader");
        } else {
            if (b / ld->per_epoch != perm_epoch) {
                perm_epoch = b / ld->per_epoch;
                hvd__epoch_perm(ld, perm_epoch, perm);
            }
            hvd__fill(ld, s, b, perm);
        }
        pthread_mutex_lock(&ld->mu);
        s->state = 2;
        pthread_cond_broadcast(&ld->cv);
    }
    pthread_mutex_unlock(&ld->mu);
    free(perm);
    return NULL;
}

hvd_loader *hvd_loader_new(hv_ctx *ctx, const hvd_loader_desc *desc) {
    hvd_loader *ld;
    int i, C, S;
    if (!ctx || !desc || !desc->dataset || desc->batch_size < 1 || desc->transform.size < 1 || desc->workers < 0) {
        hvd__fail("hvd_loader_new: needs a context, a data set, batch_size >= 1, a transform size and workers >= 0");
        return NULL;
    }
    if (hvd_dataset_size(desc->dataset) < 1) {
        hvd__fail("hvd_loader_new: the data set is empty");
        return NULL;
    }
    if (desc->drop_last && hvd_dataset_size(desc->dataset) < desc->batch_size) {
        hvd__fail("hvd_loader_new: %lld samples are fewer than one batch of %d (lower --batch-size)",
                  (long long)hvd_dataset_size(desc->dataset), desc->batch_size);
        return NULL;
    }
    if (!(ld = (hvd_loader *)calloc(1, sizeof *ld))) {
        hvd__fail("out of memory");
        return NULL;
    }
    ld->d = *desc;
    ld->ctx = ctx;
    ld->N = hvd_dataset_size(desc->dataset);
    ld->per_epoch = desc->drop_last ? ld->N / desc->batch_size : (ld->N + desc->batch_size - 1) / desc->batch_size;
    ld->total = desc->epochs > 0 ? ld->per_epoch * desc->epochs : -1;
    ld->next_fill = ld->next_take = desc->start_batch > 0 ? desc->start_batch : 0;
    ld->last_epoch = ld->next_take / ld->per_epoch;
    ld->nslots = desc->workers == 0 ? 1 : (desc->prefetch > desc->workers ? desc->prefetch : 2 + desc->workers);
    C = desc->transform.channels ? desc->transform.channels : 3;
    S = desc->transform.size;
    ld->slots = (hvd__slot *)calloc((size_t)ld->nslots, sizeof(hvd__slot));
    if (!ld->slots) goto oom;
    for (i = 0; i < ld->nslots; i++) {
        ld->slots[i].images = hv_tensor_new(ctx, HV_F32, HV_SHAPE(desc->batch_size, C, S, S));
        ld->slots[i].labels = hv_tensor_new(ctx, HV_I32, HV_SHAPE(desc->batch_size));
        ld->slots[i].batch = -1;
        if (!ld->slots[i].images || !ld->slots[i].labels) goto oom;
    }
    ld->perm = (int64_t *)malloc(sizeof(int64_t) * (size_t)ld->N);
    ld->perm_epoch = -1;
    if (!ld->perm) goto oom;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
    if (desc->workers > 0) {
        ld->threads = (pthread_t *)calloc((size_t)desc->workers, sizeof(pthread_t));
        if (!ld->threads) goto oom_locks;
        for (i = 0; i < desc->workers; i++) {
            if (pthread_create(&ld->threads[i], NULL, hvd__worker, ld) != 0) {
                hvd_loader_free(ld);
                hvd__fail("hvd_loader_new: cannot start a loader thread");
                return NULL;
            }
            ld->nthreads++;
        }
    }
    return ld;
oom_locks:
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
oom:
    if (ld->slots)
        for (i = 0; i < ld->nslots; i++) {
            hv_tensor_free(ld->slots[i].images);
            hv_tensor_free(ld->slots[i].labels);
        }
    free(ld->slots);
    free(ld->perm);
    free(ld);
    hvd__fail("hvd_loader_new: out of memory");
    return NULL;
}

int hvd_loader_next(hvd_loader *ld, hv_tensor **images, hv_tensor **labels) {
    hvd__slot *s;
    int64_t b;
    int n;
    if (!ld) return hvd__fail("hvd_loader_next: NULL loader");
    if (ld->total >= 0 && ld->next_take >= ld->total) return 0;
    b = ld->next_take;
    if (ld->nthreads == 0) {
        s = &ld->slots[0];
        if (b / ld->per_epoch != ld->perm_epoch) {
            ld->perm_epoch = b / ld->per_epoch;
            hvd__epoch_perm(ld, ld->perm_epoch, ld->perm);
        }
        hvd__fill(ld, s, b, ld->perm);
        s->batch = b;
    } else {
        pthread_mutex_lock(&ld->mu);
        /* the batch handed out last time is done with: its slot goes back to the workers */
        if (b > 0) {
            hvd__slot *prev = &ld->slots[(b - 1) % ld->nslots];
            if (prev->state == 3 && prev->batch == b - 1) {
                prev->state = 0;
                pthread_cond_broadcast(&ld->cv);
            }
        }
        s = &ld->slots[b % ld->nslots];
        while (!(s->state == 2 && s->batch == b)) pthread_cond_wait(&ld->cv, &ld->mu);
        s->state = 3;
        pthread_mutex_unlock(&ld->mu);
    }
    if (s->err[0]) {
        hvd__fail("%s", s->err);
        return -1;
    }
    ld->next_take++;
    ld->last_epoch = b / ld->per_epoch;
    n = s->n;
    if (n == ld->d.batch_size) {
        *images = s->images;
        *labels = s->labels;
    } else {
        *images = hv_slice(s->images, 0, 0, n, 1);
        *labels = hv_slice(s->labels, 0, 0, n, 1);
        if (!*images || !*labels) return hvd__fail("hvd_loader_next: %s", hv_last_error());
    }
    return n;
}

int64_t hvd_loader_epoch(const hvd_loader *ld) { return ld ? ld->last_epoch : 0; }
int64_t hvd_loader_batches_per_epoch(const hvd_loader *ld) { return ld ? ld->per_epoch : 0; }

void hvd_loader_free(hvd_loader *ld) {
    int i;
    if (!ld) return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    for (i = 0; i < ld->nthreads; i++) pthread_join(ld->threads[i], NULL);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
    for (i = 0; i < ld->nslots; i++) {
        hv_tensor_free(ld->slots[i].images);
        hv_tensor_free(ld->slots[i].labels);
    }
    free(ld->slots);
    free(ld->threads);
    free(ld->perm);
    free(ld);
}

#endif /* HV_DATA_IMPLEMENTATION_DONE */
#endif /* HV_DATA_IMPLEMENTATION */
