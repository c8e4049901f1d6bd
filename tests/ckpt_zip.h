/* ckpt_zip.h - builds stored (uncompressed) zip archives in memory, laid out as torch.save lays
   out a .pth: "<folder>/data.pkl" and "<folder>/data/<key>" records. test_ckpt.c and the fuzz
   target fuzz_pickle.c use it to wrap hand-written pickles and storages into a checkpoint. */
#ifndef HV_CKPT_ZIP_H
#define HV_CKPT_ZIP_H

#include <stdlib.h>
#include <string.h>

typedef struct cz_buf {
    unsigned char *p;
    size_t n, cap;
} cz_buf;

static inline void cz_put(cz_buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = (unsigned char *)realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static inline void cz_u16(cz_buf *b, unsigned v) {
    unsigned char x[2];
    x[0] = (unsigned char)v;
    x[1] = (unsigned char)(v >> 8);
    cz_put(b, x, 2);
}
static inline void cz_u32(cz_buf *b, unsigned long v) {
    cz_u16(b, (unsigned)(v & 0xffff));
    cz_u16(b, (unsigned)((v >> 16) & 0xffff));
}

/* n records named names[i] (full paths inside the archive) holding data[i] (sizes[i] bytes).
   Returns a malloc'ed archive of *len bytes. */
static inline unsigned char *cz_make(int n, const char *const *names, const unsigned char *const *data, const size_t *sizes,
                                     size_t *len) {
    cz_buf z, cd;
    unsigned long *ofs = (unsigned long *)malloc(sizeof(unsigned long) * (size_t)(n ? n : 1));
    unsigned long cd_ofs;
    int i;
    memset(&z, 0, sizeof z);
    memset(&cd, 0, sizeof cd);
    for (i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        ofs[i] = (unsigned long)z.n;
        cz_u32(&z, 0x04034b50ul);
        cz_u16(&z, 20), cz_u16(&z, 0), cz_u16(&z, 0), cz_u16(&z, 0), cz_u16(&z, 0);
        cz_u32(&z, 0), cz_u32(&z, (unsigned long)sizes[i]), cz_u32(&z, (unsigned long)sizes[i]);
        cz_u16(&z, (unsigned)nl), cz_u16(&z, 0);
        cz_put(&z, names[i], nl);
        cz_put(&z, data[i], sizes[i]);
    }
    for (i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        cz_u32(&cd, 0x02014b50ul);
        cz_u16(&cd, 20), cz_u16(&cd, 20), cz_u16(&cd, 0), cz_u16(&cd, 0), cz_u16(&cd, 0), cz_u16(&cd, 0);
        cz_u32(&cd, 0), cz_u32(&cd, (unsigned long)sizes[i]), cz_u32(&cd, (unsigned long)sizes[i]);
        cz_u16(&cd, (unsigned)nl), cz_u16(&cd, 0), cz_u16(&cd, 0), cz_u16(&cd, 0), cz_u16(&cd, 0);
        cz_u32(&cd, 0), cz_u32(&cd, ofs[i]);
        cz_put(&cd, names[i], nl);
    }
    cd_ofs = (unsigned long)z.n;
    cz_put(&z, cd.p, cd.n);
    cz_u32(&z, 0x06054b50ul);
    cz_u16(&z, 0), cz_u16(&z, 0), cz_u16(&z, (unsigned)n), cz_u16(&z, (unsigned)n);
    cz_u32(&z, (unsigned long)cd.n), cz_u32(&z, cd_ofs), cz_u16(&z, 0);
    free(cd.p);
    free(ofs);
    *len = z.n;
    return z.p;
}

#endif
