/* test_ckpt.c - state dicts, safetensors and torch.save checkpoints.

   The fixtures in tests/fixtures/ckpt/ are real files written by PyTorch and the safetensors
   package (tests/make_ckpt_fixtures.py); expected.txt holds the exact bits every tensor must
   load as. Hand-written pickles (wrapped into zips by ckpt_zip.h) reach the corners PyTorch
   never writes. Every fixture is also loaded truncated at every length and with every byte
   corrupted: each load must succeed or fail with a message, never crash (the asan build checks
   that nothing is read out of bounds or leaked). */
#include "testlib.h"
#include "ckpt_zip.h"
#include <stdint.h>

#define FIX "tests/fixtures/ckpt/"

static char g_tmp[512]; /* folder of the test binary: written files go there */

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s%s", g_tmp, name); }

/* ---- files and expected values -------------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    long n;
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = (unsigned char *)malloc((size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}
static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return -1;
    ok = fwrite(p, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

typedef struct exp_t {
    char name[160];
    int is_int, ndim;
    int64_t shape[5], numel;
    uint32_t *v; /* f32 bits or i32 values */
} exp_t;
typedef struct exp_f {
    char file[64];
    int n;
    exp_t *t;
} exp_f;
static exp_f g_exp[8];
static int g_nexp;

static int load_expected(void) {
    FILE *f = fopen(FIX "expected.txt", "r");
    int c;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        } else if (c == 'F' && g_nexp < 8) {
            exp_f *e = &g_exp[g_nexp++];
            if (fscanf(f, "%63s %d", e->file, &e->n) != 2) return -1;
            e->t = (exp_t *)calloc((size_t)e->n, sizeof(exp_t));
            e->n = 0;
        } else if (c == 'T' && g_nexp > 0) {
            exp_f *e = &g_exp[g_nexp - 1];
            exp_t *t = &e->t[e->n++];
            char kind[8];
            int64_t k;
            if (fscanf(f, "%159s %7s %d", t->name, kind, &t->ndim) != 3) return -1;
            t->is_int = strcmp(kind, "i32") == 0;
            for (k = 0; k < t->ndim; k++)
                if (fscanf(f, "%lld", (long long *)&t->shape[k]) != 1) return -1;
            if (fscanf(f, "%lld", (long long *)&t->numel) != 1) return -1;
            t->v = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(t->numel + 1));
            for (k = 0; k < t->numel; k++) {
                if (t->is_int) {
                    int x;
                    if (fscanf(f, "%d", &x) != 1) return -1;
                    t->v[k] = (uint32_t)x;
                } else {
                    unsigned x;
                    if (fscanf(f, "%x", &x) != 1) return -1;
                    t->v[k] = x;
                }
            }
        }
    }
    fclose(f);
    return 0;
}
static void free_expected(void) {
    int i, k;
    for (i = 0; i < g_nexp; i++) {
        for (k = 0; k < g_exp[i].n; k++) free(g_exp[i].t[k].v);
        free(g_exp[i].t);
    }
}
static const exp_f *expected_for(const char *file) {
    int i;
    for (i = 0; i < g_nexp; i++)
        if (strcmp(g_exp[i].file, file) == 0) return &g_exp[i];
    return NULL;
}

/* sd must hold exactly the tensors expected.txt lists for file, in that order, bit for bit */
static void check_sd_at(hv_state_dict *sd, const char *file, const char *src, int line) {
    const exp_f *ef = expected_for(file);
    int i, k;
    if (!sd) {
        tl_fail_msg(src, line, "%s did not load: %s", file, hv_last_error());
        return;
    }
    if (!ef) {
        tl_fail_msg(src, line, "no expected values for %s (regenerate with tests/make_ckpt_fixtures.py)", file);
        return;
    }
    if (hv_state_dict_count(sd) != ef->n) tl_fail_msg(src, line, "%s: %d tensors, expected %d", file, hv_state_dict_count(sd), ef->n);
    for (i = 0; i < ef->n && i < hv_state_dict_count(sd); i++) {
        const exp_t *e = &ef->t[i];
        hv_tensor *t = hv_state_dict_at(sd, i);
        uint32_t *got;
        int bad = 0;
        if (strcmp(hv_state_dict_name(sd, i), e->name) != 0) {
            tl_fail_msg(src, line, "%s: entry %d is '%s', expected '%s'", file, i, hv_state_dict_name(sd, i), e->name);
            continue;
        }
        if (hv_state_dict_get(sd, e->name) != t) tl_fail_msg(src, line, "%s: get('%s') is not entry %d", file, e->name, i);
        if ((hv_tensor_dtype(t) == HV_I32) != e->is_int) tl_fail_msg(src, line, "%s: '%s' has the wrong dtype", file, e->name);
        if (hv_ndim(t) != e->ndim) {
            tl_fail_msg(src, line, "%s: '%s' has %d dims, expected %d", file, e->name, hv_ndim(t), e->ndim);
            continue;
        }
        for (k = 0; k < e->ndim; k++)
            if (hv_dim(t, k) != e->shape[k]) bad = 1;
        if (bad || hv_numel(t) != e->numel) {
            tl_fail_msg(src, line, "%s: '%s' has the wrong shape", file, e->name);
            continue;
        }
        if (!hv_is_contiguous(t)) tl_fail_msg(src, line, "%s: '%s' is not contiguous", file, e->name);
        if (strcmp(hv_tensor_name(t), e->name) != 0 && strlen(e->name) < 47) tl_fail_msg(src, line, "%s: tensor name '%s'", file, hv_tensor_name(t));
        got = (uint32_t *)malloc(4 * (size_t)(e->numel + 1));
        hv_tensor_copy_to(t, got, 4 * (size_t)e->numel);
        for (k = 0; k < e->numel; k++)
            if (got[k] != e->v[k]) {
                tl_fail_msg(src, line, "%s: '%s'[%d] = 0x%08x, expected 0x%08x", file, e->name, k, got[k], e->v[k]);
                break;
            }
        free(got);
    }
}
#define CHECK_SD(sd, file) check_sd_at((sd), (file), __FILE__, __LINE__)

/* ---- loading the real fixtures ---------------------------------------------------------------- */

static void test_vit_pth(hv_ctx *ctx) {
    hv_state_dict *a = hv_torch_load(ctx, FIX "vit_tiny.pth", "model");
    hv_state_dict *b = hv_torch_load(ctx, FIX "vit_tiny.pth", NULL); /* auto: 'model' */
    hv_state_dict *c = hv_ckpt_load(ctx, FIX "vit_tiny.pth", NULL);
    CHECK_SD(a, "vit_tiny.pth");
    CHECK_SD(b, "vit_tiny.pth");
    CHECK_SD(c, "vit_tiny.pth");
    if (a) { /* spot checks written by hand, independent of expected.txt */
        hv_tensor *n = hv_state_dict_get(a, "head.0.num_batches_tracked");
        hv_tensor *h = hv_state_dict_get(a, "half.weight");
        CHECK(n && hv_tensor_dtype(n) == HV_I32 && hv_ndim(n) == 0 && hv_data_i32(n)[0] == 12345, "num_batches_tracked");
        CHECK(h && isinf(hv_data(h)[0]) && hv_data(h)[0] > 0 && signbit(hv_data(h)[1]) && hv_data(h)[1] == 0.0f &&
                  hv_data(h)[2] == 5.9604644775390625e-8f && isnan(hv_data(h)[4]), "f16 specials");
        CHECK(hv_numel(hv_state_dict_get(a, "empty")) == 0 && hv_dim(hv_state_dict_get(a, "empty"), 1) == 4, "empty tensor");
        /* the transposed view: fc1 (16, 8) = W.t() for a stored (8, 16) W */
        CHECK(hv_dim(hv_state_dict_get(a, "blocks.0.mlp.fc1.weight"), 0) == 16, "transposed view");
    }
    hv_state_dict_free(a);
    hv_state_dict_free(b);
    hv_state_dict_free(c);
}

static void test_zip64_pth(hv_ctx *ctx) {
    hv_state_dict *a = hv_torch_load(ctx, FIX "vit_tiny_zip64.pth", NULL);
    CHECK_SD(a, "vit_tiny_zip64.pth");
    hv_state_dict_free(a);
}

static void test_tc_tar(hv_ctx *ctx) {
    hv_state_dict *a = hv_torch_load(ctx, FIX "tc_tiny.tar", NULL); /* auto: 'model_state_dict' */
    hv_state_dict *b = hv_torch_load(ctx, FIX "tc_tiny.tar", "model_state_dict");
    CHECK_SD(a, "tc_tiny.tar"); /* 'module.' stripped */
    CHECK_SD(b, "tc_tiny.tar");
    hv_state_dict_free(a);
    hv_state_dict_free(b);
    CHECK_ERROR(hv_torch_load(ctx, FIX "tc_tiny.tar", "optimizer_state_dict"), "tc_tiny.tar", "no tensors", "optimizer_state_dict");
    CHECK_ERROR(hv_torch_load(ctx, FIX "tc_tiny.tar", "acc1_list"), "tc_tiny.tar", "acc1_list", "list");
    CHECK_ERROR(hv_torch_load(ctx, FIX "tc_tiny.tar", "nope"), "no entry 'nope'", "'acc1_list'", "'model_state_dict'");
}

static void test_plain_sd(hv_ctx *ctx) {
    hv_state_dict *a = hv_torch_load(ctx, FIX "plain_sd.pth", NULL);
    CHECK_SD(a, "plain_sd.pth");
    hv_state_dict_free(a);
    CHECK_ERROR(hv_torch_load(ctx, FIX "plain_sd.pth", "weight"), "'weight' is a tensor, not a dict");
}

static void test_safetensors_fixture(hv_ctx *ctx) {
    hv_state_dict *a = hv_safetensors_load(ctx, FIX "mixed.safetensors");
    hv_state_dict *b = hv_ckpt_load(ctx, FIX "mixed.safetensors", NULL);
    size_t n;
    unsigned char *raw = read_file(FIX "mixed.safetensors", &n);
    hv_state_dict *c = hv_safetensors_load_memory(ctx, raw, n);
    CHECK_SD(a, "mixed.safetensors");
    CHECK_SD(b, "mixed.safetensors");
    CHECK_SD(c, "mixed.safetensors");
    hv_state_dict_free(a);
    hv_state_dict_free(b);
    hv_state_dict_free(c);
    free(raw);
}

/* .pth -> hv_safetensors_save -> hv_safetensors_load gives the same tensors */
static void test_roundtrip(hv_ctx *ctx) {
    char path[600], tmp[620];
    hv_state_dict *a = hv_torch_load(ctx, FIX "vit_tiny.pth", NULL), *b, *c;
    FILE *f;
    tmp_path(path, sizeof path, "ckpt_roundtrip.safetensors");
    snprintf(tmp, sizeof tmp, "%s.hvtmp", path);
    remove(path);
    CHECK(a && hv_safetensors_save(a, path) == 0, "save: %s", hv_last_error());
    b = hv_safetensors_load(ctx, path);
    CHECK_SD(b, "vit_tiny.pth");
    CHECK(a && hv_safetensors_save(a, path) == 0, "save over an existing file: %s", hv_last_error());
    f = fopen(tmp, "rb");
    CHECK(f == NULL, "the temporary file %s was left behind", tmp);
    if (f) fclose(f);
    c = hv_safetensors_load(ctx, path);
    CHECK_SD(c, "vit_tiny.pth");
    hv_state_dict_free(b);
    hv_state_dict_free(c);
    /* an existing file survives a failed save (a directory that does not exist) */
    tmp_path(tmp, sizeof tmp, "no/such/dir/x.safetensors");
    CHECK(hv_safetensors_save(a, tmp) == -1 && strstr(hv_last_error(), "no/such/dir/x.safetensors.hvtmp"), "bad dir: %s", hv_last_error());
    hv_state_dict_free(a);
    printf("  (wrote %s; python3 tests/make_ckpt_fixtures.py --check %s checks it in the safetensors package)\n", path, path);
}

/* strided and i32 tensors save densely; names needing JSON escapes survive */
static void test_save_views(hv_ctx *ctx) {
    char path[600];
    const float v[6] = {1, 2, 3, 4, 5, 6};
    hv_tensor *x = hv_tensor_from(ctx, HV_SHAPE(2, 3), v);
    hv_tensor *xt = hv_transpose(x, 0, 1); /* (3, 2) arena view */
    hv_tensor *ids = hv_tensor_new(ctx, HV_I32, HV_SHAPE(3));
    hv_state_dict *sd = hv_state_dict_new(ctx), *back;
    const char *odd = "we\"ird\\name\n\x01\xc3\xa9";
    hv_data_i32(ids)[0] = -7;
    hv_data_i32(ids)[1] = 2147483647;
    hv_data_i32(ids)[2] = 0;
    tmp_path(path, sizeof path, "ckpt_views.safetensors");
    CHECK(hv_state_dict_add(sd, "xt", xt) == 0 && hv_state_dict_add(sd, "ids", ids) == 0 && hv_state_dict_add(sd, odd, x) == 0, "add");
    CHECK(hv_safetensors_save(sd, path) == 0, "save: %s", hv_last_error());
    back = hv_safetensors_load(ctx, path);
    CHECK_NOTNULL(back);
    if (back) {
        hv_tensor *t = hv_state_dict_get(back, "xt"), *i = hv_state_dict_get(back, "ids"), *o = hv_state_dict_get(back, odd);
        CHECK(hv_state_dict_count(back) == 3 && strcmp(hv_state_dict_name(back, 0), "xt") == 0, "order");
        CHECK(t && hv_dim(t, 0) == 3 && hv_dim(t, 1) == 2 && hv_data(t)[0] == 1 && hv_data(t)[1] == 4 && hv_data(t)[5] == 6, "transposed data");
        CHECK(i && hv_tensor_dtype(i) == HV_I32 && hv_data_i32(i)[0] == -7 && hv_data_i32(i)[1] == 2147483647, "i32 data");
        CHECK(o && hv_data(o)[5] == 6, "escaped name");
    }
    hv_state_dict_free(back);
    hv_state_dict_free(sd); /* borrowed: x and ids survive */
    CHECK(hv_data(x)[5] == 6 && hv_data_i32(ids)[0] == -7, "borrowed tensors were freed");
    hv_tensor_free(x);
    hv_tensor_free(ids);
}

/* hv_params_load_file_map: a (2) "b" of the file is widened to the model's (4) by the map,
   which sees only the tensors that have a parameter; a NULL from it fails the load */
static int g_map_calls;
static hv_tensor *widen_b(void *user, const char *name, hv_tensor *t, const hv_tensor *dst) {
    float v[4] = {0, 0, 0, 0};
    g_map_calls++;
    if (user == (void *)1) return NULL;                                        /* fails by itself */
    if (user == (void *)2) return hv_tensor_new(hv_tensor_ctx(t), HV_F32, HV_SHAPE(-1)); /* an op of it fails */
    if (strcmp(name, "b") || hv_numel(t) != 2) return t;
    memcpy(v, hv_data(t), sizeof(float) * 2);
    return hv_tensor_from(hv_tensor_ctx(t), hv_tensor_shape(dst), v);
}
static void test_params_load_map(hv_ctx *ctx) {
    char path[600];
    const float av[6] = {1, 2, 3, 4, 5, 6}, bv[2] = {7, 8}, ev[1] = {9};
    hv_tensor *fa = hv_tensor_from(ctx, HV_SHAPE(2, 3), av), *fb = hv_tensor_from(ctx, HV_SHAPE(2), bv), *fe = hv_tensor_from(ctx, HV_SHAPE(1), ev);
    hv_tensor *pt[2];
    const char *names[2] = {"a", "b"};
    hv_param_list pl;
    hv_load_result res;
    hv_state_dict *sd = hv_state_dict_new(ctx);
    pt[0] = hv_zeros(ctx, HV_SHAPE(2, 3));
    pt[1] = hv_zeros(ctx, HV_SHAPE(4));
    pl.count = 2;
    pl.names = names;
    pl.tensors = pt;
    tmp_path(path, sizeof path, "ckpt_map.safetensors");
    CHECK(hv_state_dict_add(sd, "a", fa) == 0 && hv_state_dict_add(sd, "b", fb) == 0 && hv_state_dict_add(sd, "extra", fe) == 0, "add");
    CHECK(hv_safetensors_save(sd, path) == 0, "save: %s", hv_last_error());
    CHECK(hv_params_load_file(&pl, path, NULL, NULL) == -1 && strstr(hv_last_error(), "'b': checkpoint (2), model (4)"), "no map: %s",
          hv_last_error());
    g_map_calls = 0;
    CHECK(hv_params_load_file_map(&pl, path, NULL, &res, widen_b, NULL) == 0, "map: %s", hv_last_error());
    CHECK(g_map_calls == 2 && res.loaded == 2 && res.unexpected_count == 1, "calls %d, loaded %d, unexpected %d", g_map_calls, res.loaded,
          res.unexpected_count);
    CHECK(hv_data(pt[0])[5] == 6 && hv_data(pt[1])[0] == 7 && hv_data(pt[1])[1] == 8 && hv_data(pt[1])[3] == 0, "loaded values");
    hv_load_result_free(&res);
    CHECK(hv_params_load_file_map(&pl, path, NULL, NULL, widen_b, (void *)1) == -1 && strstr(hv_last_error(), "'a': the map returned no tensor"),
          "a failing map: %s", hv_last_error());
    CHECK(hv_params_load_file_map(&pl, path, NULL, NULL, widen_b, (void *)2) == -1 && strstr(hv_last_error(), "hv_tensor_new: "),
          "the error of the op that failed in the map: %s", hv_last_error());
    hv_state_dict_free(sd);
    hv_tensor_free(fa);
    hv_tensor_free(fb);
    hv_tensor_free(fe);
    hv_tensor_free(pt[0]);
    hv_tensor_free(pt[1]);
}

static void test_state_dict_api(hv_ctx *ctx) {
    hv_state_dict *sd = hv_state_dict_new(ctx), *loaded;
    hv_tensor *a = hv_zeros(ctx, HV_SHAPE(2, 2)), *b = hv_ones(ctx, HV_SHAPE(3)), *dst, *taken;
    char name[32];
    int i, ok = 1;
    CHECK(hv_state_dict_add(sd, "a", a) == 0 && hv_state_dict_add(sd, "b", b) == 0, "add");
    CHECK(hv_state_dict_add(sd, "a", b) == -1 && strstr(hv_last_error(), "already has an entry 'a'"), "duplicate: %s", hv_last_error());
    CHECK(hv_state_dict_add(sd, NULL, b) == -1 && hv_state_dict_add(sd, "c", NULL) == -1, "NULL arguments");
    CHECK(hv_state_dict_count(sd) == 2 && strcmp(hv_state_dict_name(sd, 1), "b") == 0 && hv_state_dict_at(sd, 0) == a, "count/name/at");
    CHECK(hv_state_dict_name(sd, 2) == NULL && hv_state_dict_at(sd, -1) == NULL && hv_state_dict_count(NULL) == 0, "out of range");
    CHECK(hv_state_dict_get(sd, "b") == b, "get");
    CHECK_ERROR(hv_state_dict_get(sd, "zz"), "no entry 'zz'");
    for (i = 0; i < 2000; i++) { /* many entries: the name index grows */
        snprintf(name, sizeof name, "blocks.%d.weight", i);
        if (hv_state_dict_add(sd, name, a) != 0) ok = 0;
    }
    for (i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "blocks.%d.weight", i);
        if (hv_state_dict_get(sd, name) != a || strcmp(hv_state_dict_name(sd, i + 2), name) != 0) ok = 0;
    }
    CHECK(ok && hv_state_dict_count(sd) == 2002, "2000 entries");
    hv_state_dict_free(sd);
    CHECK(hv_data(a) && hv_data(b)[2] == 1.0f, "borrowed tensors survive hv_state_dict_free");
    /* copy_to checks shapes; take hands a loaded tensor over */
    loaded = hv_torch_load(ctx, FIX "plain_sd.pth", NULL);
    CHECK_NOTNULL(loaded);
    if (loaded) {
        dst = hv_zeros(ctx, HV_SHAPE(3));
        CHECK(hv_state_dict_copy_to(loaded, "bias", dst) == 0 && hv_data(dst)[1] == hv_data(hv_state_dict_get(loaded, "bias"))[1], "copy_to");
        CHECK(hv_state_dict_copy_to(loaded, "weight", dst) == -1 && strstr(hv_last_error(), "(3, 4)") && strstr(hv_last_error(), "(3)"),
              "copy_to shape: %s", hv_last_error());
        CHECK(hv_state_dict_copy_to(loaded, "counts", dst) == -1 && strstr(hv_last_error(), "i32"), "copy_to dtype: %s", hv_last_error());
        {
            hv_tensor *tr = hv_transpose(hv_zeros(ctx, HV_SHAPE(4, 3)), 0, 1); /* a strided destination (3, 4) */
            float w[12], back[12];
            hv_tensor_copy_to(hv_state_dict_get(loaded, "weight"), w, sizeof w);
            CHECK(hv_state_dict_copy_to(loaded, "weight", tr) == 0, "copy_to strided: %s", hv_last_error());
            hv_tensor_copy_to(tr, back, sizeof back);
            CHECK(memcmp(w, back, sizeof w) == 0, "copy_to strided values");
        }
        taken = hv_state_dict_take(loaded, "weight");
        CHECK(taken && hv_dim(taken, 1) == 4, "take");
        hv_state_dict_free(loaded);
        CHECK(hv_dim(taken, 0) == 3 && !isnan(hv_data(taken)[11]), "taken tensor survives");
        hv_tensor_free(taken);
        hv_tensor_free(dst);
    }
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_state_dict_free(NULL);
}

/* ---- bad files ---------------------------------------------------------------------------------- */

static hv_state_dict *st_mem(hv_ctx *ctx, const char *header, const void *data, size_t dlen, uint64_t claimed) {
    size_t hl = strlen(header), n = 8 + hl + dlen, k;
    unsigned char *b = (unsigned char *)malloc(n);
    hv_state_dict *sd;
    uint64_t len = claimed ? claimed : hl;
    for (k = 0; k < 8; k++) b[k] = (unsigned char)(len >> (8 * k));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    sd = hv_safetensors_load_memory(ctx, b, n);
    free(b);
    return sd;
}

static void test_bad_safetensors(hv_ctx *ctx) {
    static const float z[8] = {0};
    char deep[400];
    int i;
    CHECK_ERROR(st_mem(ctx, "{}", NULL, 0, (uint64_t)1 << 60), "<memory>", "header length", "exceeds");
    CHECK_ERROR(hv_safetensors_load_memory(ctx, "abc", 3), "shorter than the 8-byte");
    CHECK_ERROR(hv_safetensors_load_memory(ctx, NULL, 0), "shorter");
    CHECK_ERROR(st_mem(ctx, "nonsense", NULL, 0, 0), "expected '{'");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", z, 1, 0), "'a'", "F8_E4M3", "not supported");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", z, 4, 0), "'a'", "overflows");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", z, 4, 0), "'a'", "outside");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", z, 8, 0), "'a'", "span 4 bytes", "needs 8");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", z, 8, 0), "outside");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", z, 4, 0), "'a' lacks data_offsets");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", z, 4, 0), "more than 6 dimensions");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", z, 4, 0), "non-negative integer");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", z, 4, 0), "trailing");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4, 0), "'a' appears twice");
    CHECK_ERROR(st_mem(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", z, 4, 0), "expected ',' or '}'");
    CHECK_ERROR(st_mem(ctx, "{\"a\\ud800\":{}}", z, 4, 0), "surrogate");
    CHECK_ERROR(st_mem(ctx, "{\"a\\q\":{}}", z, 4, 0), "bad escape");
    CHECK_ERROR(st_mem(ctx, "{\"a\\", z, 4, 0), "unterminated");
    CHECK_ERROR(st_mem(ctx, "{\"x\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", "\0\0\0\0\x01\0\0\0", 8, 0), "'x'", "does not fit in int32");
    CHECK_ERROR(st_mem(ctx, "{\"x\":{\"dtype\":\"U32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "\0\0\0\0\xff\xff\xff\xff", 8, 0), "element 1 = 4294967295");
    /* metadata nested far too deep is refused, not recursed into */
    strcpy(deep, "{\"__metadata__\":");
    for (i = 0; i < 300; i++) strcat(deep, "[");
    CHECK_ERROR(st_mem(ctx, deep, NULL, 0, 0), "nested too deeply");
    { /* and what is valid loads: escapes, metadata, unknown fields, an empty file */
        hv_state_dict *sd = st_mem(ctx, "{\"__metadata__\":{\"k\":[1,{\"x\":null}]},\"\\u00e9\\ud83d\\ude00\\n\":{\"shape\":[2],\"extra\":true,\"dtype\":\"BF16\",\"data_offsets\":[0,4]}}  ",
                                   "\x80\x3f\x00\xc0", 4, 0);
        CHECK(sd && hv_state_dict_count(sd) == 1 && strcmp(hv_state_dict_name(sd, 0), "\xc3\xa9\xf0\x9f\x98\x80\n") == 0 &&
                  hv_data(hv_state_dict_at(sd, 0))[0] == 1.0f && hv_data(hv_state_dict_at(sd, 0))[1] == -2.0f,
              "valid header: %s", hv_last_error());
        hv_state_dict_free(sd);
        sd = st_mem(ctx, "{}", NULL, 0, 0);
        CHECK(sd && hv_state_dict_count(sd) == 0, "empty safetensors: %s", hv_last_error());
        hv_state_dict_free(sd);
    }
}

static void test_bad_files(hv_ctx *ctx) {
    CHECK_ERROR(hv_torch_load(ctx, FIX "does_not_exist.pth", NULL), "hv_torch_load", FIX "does_not_exist.pth", "cannot open");
    CHECK_ERROR(hv_safetensors_load(ctx, FIX "nope.safetensors"), "hv_safetensors_load", FIX "nope.safetensors", "cannot open");
    CHECK_ERROR(hv_ckpt_load(ctx, FIX "nope.bin", NULL), FIX "nope.bin");
    CHECK_ERROR(hv_torch_load(ctx, NULL, NULL), "path is NULL");
    CHECK_ERROR(hv_torch_load(ctx, FIX "legacy.pth", NULL), "legacy.pth", "legacy", "torch.save it again");
    CHECK_ERROR(hv_ckpt_load(ctx, FIX "legacy.pth", NULL), "legacy");
    CHECK_ERROR(hv_torch_load(ctx, FIX "deflated.pth", NULL), "deflated.pth", "compressed");
    CHECK_ERROR(hv_torch_load(ctx, FIX "mixed.safetensors", NULL), "mixed.safetensors", "not a zip archive");
    CHECK_ERROR(hv_safetensors_load(ctx, FIX "vit_tiny.pth"), "vit_tiny.pth", "header length");
    CHECK_ERROR(hv_torch_load(ctx, FIX, NULL), FIX); /* a directory */
    CHECK_ERROR(hv_torch_load_memory(ctx, "", 0, NULL), "<memory>", "too short");
    { /* a zip without data.pkl */
        const char *names[1] = {"archive/other"};
        const unsigned char *data[1] = {(const unsigned char *)"x"};
        size_t sizes[1] = {1}, n;
        unsigned char *z = cz_make(1, names, data, sizes, &n);
        CHECK_ERROR(hv_torch_load_memory(ctx, z, n, NULL), "no data.pkl");
        free(z);
    }
}

/* ---- hand-written pickles ------------------------------------------------------------------------ */

static void pk_op(cz_buf *b, int op) {
    unsigned char c = (unsigned char)op;
    cz_put(b, &c, 1);
}
static void pk_str(cz_buf *b, const char *s) {
    pk_op(b, 'X');
    cz_u32(b, (unsigned long)strlen(s));
    cz_put(b, s, strlen(s));
}
static void pk_int(cz_buf *b, long long v) {
    if (v >= -2147483647LL - 1 && v <= 2147483647LL) {
        pk_op(b, 'J');
        cz_u32(b, (unsigned long)(uint32_t)(int32_t)v);
    } else {
        int k;
        pk_op(b, 0x8a);
        pk_op(b, 8);
        for (k = 0; k < 8; k++) pk_op(b, (int)(((unsigned long long)v >> (8 * k)) & 0xff));
    }
}
static void pk_global(cz_buf *b, const char *mod, const char *name) {
    pk_op(b, 'c');
    cz_put(b, mod, strlen(mod));
    pk_op(b, '\n');
    cz_put(b, name, strlen(name));
    pk_op(b, '\n');
}
/* torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) */
static void pk_tensor(cz_buf *b, const char *stype, const char *key, long long numel, long long offset, int ndim, const long long *size,
                      const long long *stride) {
    int k;
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(b, '(');
    pk_op(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", stype);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, numel);
    pk_op(b, 't');
    pk_op(b, 'Q');
    pk_int(b, offset);
    pk_op(b, '(');
    for (k = 0; k < ndim; k++) pk_int(b, size[k]);
    pk_op(b, 't');
    pk_op(b, '(');
    for (k = 0; k < ndim; k++) pk_int(b, stride[k]);
    pk_op(b, 't');
    pk_op(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_op(b, 't');
    pk_op(b, 'R');
}
/* "archive/data.pkl" = pickle, "archive/data/0" = 16 floats 0..15 and "archive/data/1" = 4 int64s */
static hv_state_dict *load_pickle(hv_ctx *ctx, const cz_buf *pkl, const char *entry) {
    static float f[16];
    static int64_t l[4] = {1, -2, 3, (int64_t)1 << 40};
    const char *names[3] = {"archive/data.pkl", "archive/data/0", "archive/data/1"};
    const unsigned char *data[3];
    size_t sizes[3], n;
    unsigned char *z;
    hv_state_dict *sd;
    int k;
    for (k = 0; k < 16; k++) f[k] = (float)k;
    data[0] = pkl->p;
    data[1] = (const unsigned char *)f;
    data[2] = (const unsigned char *)l;
    sizes[0] = pkl->n;
    sizes[1] = sizeof f;
    sizes[2] = sizeof l;
    z = cz_make(3, names, data, sizes, &n);
    sd = hv_torch_load_memory(ctx, z, n, entry);
    free(z);
    return sd;
}
/* {'model': {name: tensor}} around one tensor */
static hv_state_dict *load_one(hv_ctx *ctx, const char *stype, const char *key, long long numel, long long offset, int ndim,
                               const long long *size, const long long *stride) {
    cz_buf b;
    hv_state_dict *sd;
    memset(&b, 0, sizeof b);
    pk_op(&b, 0x80), pk_op(&b, 2), pk_op(&b, '}'), pk_str(&b, "model"), pk_op(&b, '}'), pk_str(&b, "module.w");
    pk_tensor(&b, stype, key, numel, offset, ndim, size, stride);
    pk_op(&b, 's'), pk_op(&b, 's'), pk_op(&b, '.');
    sd = load_pickle(ctx, &b, NULL);
    free(b.p);
    return sd;
}
static hv_state_dict *load_raw(hv_ctx *ctx, const char *bytes, size_t n) {
    cz_buf b;
    hv_state_dict *sd;
    memset(&b, 0, sizeof b);
    cz_put(&b, bytes, n);
    sd = load_pickle(ctx, &b, NULL);
    free(b.p);
    return sd;
}
#define LOAD_RAW(s) load_raw(ctx, (s), sizeof(s) - 1)

static void test_pickles(hv_ctx *ctx) {
    static const long long s23[2] = {2, 3}, st31[2] = {1, 2}, s5[1] = {5}, st1[1] = {1};
    static const long long big[3] = {1LL << 40, 1LL << 40, 1LL << 40}, zero3[3] = {0, 0, 0}, s7[7] = {1, 1, 1, 1, 1, 1, 1};
    static const long long huge[1] = {1LL << 30}, st0[1] = {0}, neg[1] = {-1}, s4[1] = {4};
    hv_state_dict *sd;
    /* a strided view (2, 3) with strides (1, 2) from offset 3: element (i, j) = 3 + i + 2 j */
    sd = load_one(ctx, "FloatStorage", "0", 16, 3, 2, s23, st31);
    CHECK(sd && hv_state_dict_count(sd) == 1 && strcmp(hv_state_dict_name(sd, 0), "w") == 0, "hand-made pickle: %s", hv_last_error());
    if (sd) {
        const float *v = hv_data(hv_state_dict_at(sd, 0));
        CHECK(v[0] == 3 && v[1] == 5 && v[2] == 7 && v[3] == 4 && v[5] == 8, "strided values %g %g %g %g", v[0], v[1], v[2], v[3]);
    }
    hv_state_dict_free(sd);
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 16, 12, 1, s5, st1), "'w'", "past the end of its storage");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 17, 0, 1, s5, st1), "declares 17 elements");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "9", 16, 0, 1, s5, st1), "'w'", "archive/data/9", "missing");
    CHECK_ERROR(load_one(ctx, "ComplexFloatStorage", "0", 2, 0, 1, s5, st1), "ComplexFloatStorage", "not supported");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 16, 0, 3, big, zero3), "'w'", "overflows");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 16, 0, 1, huge, st0), "'w'", "would need");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 16, 0, 1, neg, st1), "non-negative");
    CHECK_ERROR(load_one(ctx, "FloatStorage", "0", 16, 0, 7, s7, s7), "'w'", "more than 6 dimensions");
    CHECK_ERROR(load_one(ctx, "LongStorage", "1", 4, 0, 1, s4, st1), "'w'", "element 3 = 1099511627776", "int32");
    sd = load_one(ctx, "LongStorage", "1", 4, 0, 1, s5 /* 5 > 4: fails */, st1);
    CHECK(!sd, "i64 overrun");
    {   /* an expanded (stride-0) view within the limit loads */
        static const long long s3[1] = {3};
        sd = load_one(ctx, "FloatStorage", "0", 16, 2, 1, s3, st0);
        CHECK(sd && hv_data(hv_state_dict_at(sd, 0))[2] == 2.0f, "stride-0 view: %s", hv_last_error());
        hv_state_dict_free(sd);
    }
    CHECK_ERROR(LOAD_RAW("\x80\x02\xff"), "<memory>", "data.pkl", "unsupported pickle opcode 0xff");
    CHECK_ERROR(LOAD_RAW("\x80\x02I1\n."), "opcode 'I'");
    CHECK_ERROR(LOAD_RAW("\x80\x02."), "stack underflow");
    CHECK_ERROR(LOAD_RAW("\x80\x02(."), "stack underflow");
    CHECK_ERROR(LOAD_RAW("\x80\x02h\x05."), "memo index 5 was never set");
    CHECK_ERROR(LOAD_RAW("\x80\x02}r\x00\x00\x00\x40."), "out of sequence");
    CHECK_ERROR(LOAD_RAW("\x80\x02X\xff\xff\xff\x7f"), "truncated");
    CHECK_ERROR(LOAD_RAW("\x80\x02}"), "without a STOP");
    CHECK_ERROR(LOAD_RAW("\x80\x02]}s."), "stack underflow");
    CHECK_ERROR(LOAD_RAW("\x80\x02)K\x01K\x02s."), "not a dict");
    CHECK_ERROR(LOAD_RAW("\x80\x02]a."), "stack underflow");
    CHECK_ERROR(LOAD_RAW("\x80\x02K\x01]a."), "APPEND to a value that is not a list");
    CHECK_ERROR(LOAD_RAW("\x80\x02u."), "no MARK");
    CHECK_ERROR(LOAD_RAW("\x80\x09."), "protocol 9");
    CHECK_ERROR(LOAD_RAW("\x80\x02K\x01."), "is a int, not a dict");
    CHECK_ERROR(LOAD_RAW("\x80\x02}."), "no tensors in the top level");
    CHECK_ERROR(LOAD_RAW("\x80\x02(X\x07\x00\x00\x00storagecfoo\nBar\nX\x01\x00\x00\x00" "0tQ."), "storage reference has 3 fields");
    {   /* deep nesting costs no recursion: 300000 nested lists, 300000 open MARKs */
        cz_buf b;
        int i;
        memset(&b, 0, sizeof b);
        pk_op(&b, 0x80), pk_op(&b, 2);
        for (i = 0; i < 300000; i++) pk_op(&b, ']');
        for (i = 0; i < 299999; i++) pk_op(&b, 'a');
        pk_op(&b, '.');
        CHECK_ERROR(load_pickle(ctx, &b, NULL), "is a list, not a dict");
        b.n = 2;
        for (i = 0; i < 300000; i++) pk_op(&b, '(');
        pk_op(&b, '.');
        CHECK_ERROR(load_pickle(ctx, &b, NULL), "stack underflow");
        free(b.p);
    }
    {   /* a full torch.save-like pickle: opaque objects everywhere, memo reuse, duplicate keys */
        cz_buf b;
        memset(&b, 0, sizeof b);
        pk_op(&b, 0x80), pk_op(&b, 2), pk_op(&b, '}'), pk_op(&b, 'q'), pk_op(&b, 0), pk_op(&b, '(');
        pk_str(&b, "args");
        pk_global(&b, "argparse", "Namespace"), pk_op(&b, ')'), pk_op(&b, 0x81), pk_op(&b, '}'), pk_str(&b, "lr");
        pk_op(&b, 'G'), cz_put(&b, "\x3f\xb9\x99\x99\x99\x99\x99\x9a", 8), pk_op(&b, 's'), pk_op(&b, 'b');
        pk_str(&b, "acc1_list");
        pk_op(&b, ']'), pk_op(&b, '(');
        pk_global(&b, "numpy.core.multiarray", "scalar"), pk_global(&b, "numpy", "dtype"), pk_str(&b, "f8"), pk_op(&b, 0x89), pk_op(&b, 0x88),
            pk_op(&b, 0x87), pk_op(&b, 'R'), pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 3), pk_str(&b, "<"), pk_op(&b, 'N'), pk_op(&b, 't'),
            pk_op(&b, 'b'), pk_op(&b, 'C'), pk_op(&b, 8), cz_put(&b, "\0\0\0\0\0\0\xe0\x3f", 8), pk_op(&b, 0x86), pk_op(&b, 'R');
        pk_op(&b, 'e');
        pk_str(&b, "misc");
        pk_op(&b, 0x8f), pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 1), pk_op(&b, 0x90);     /* a set */
        pk_op(&b, 0x8a), pk_op(&b, 12), cz_put(&b, "\1\2\3\4\5\6\7\x08\x09\x0a\x0b\x0c", 12); /* a 96-bit int */
        pk_op(&b, 0x8c), pk_op(&b, 1), pk_op(&b, 'x'), pk_op(&b, 0x8c), pk_op(&b, 1), pk_op(&b, 'y'), pk_op(&b, 0x93); /* STACK_GLOBAL */
        pk_op(&b, 0x95), cz_put(&b, "\0\0\0\0\0\0\0\0", 8);                                  /* FRAME */
        pk_op(&b, 0x94), pk_op(&b, '2'), pk_op(&b, '0');                                      /* MEMOIZE, DUP, POP */
        pk_op(&b, 0x87);
        pk_str(&b, "model");
        pk_global(&b, "collections", "OrderedDict"), pk_op(&b, ')'), pk_op(&b, 'R'), pk_op(&b, '(');
        pk_str(&b, "module.a"), pk_tensor(&b, "FloatStorage", "0", 16, 0, 1, s4, st1);
        pk_op(&b, 'q'), pk_op(&b, 7);
        pk_str(&b, "b"), pk_global(&b, "torch._utils", "_rebuild_parameter"), pk_op(&b, 'h'), pk_op(&b, 7), pk_op(&b, 0x88),
            pk_global(&b, "collections", "OrderedDict"), pk_op(&b, ')'), pk_op(&b, 'R'), pk_op(&b, 0x87), pk_op(&b, 'R');
        pk_str(&b, "count"), pk_int(&b, 7);                                                   /* not a tensor: skipped */
        pk_str(&b, "a"), pk_tensor(&b, "FloatStorage", "0", 16, 4, 1, s4, st1);              /* replaces module.a */
        pk_op(&b, 'u'), pk_op(&b, '}'), pk_op(&b, 'b');                                       /* state on the OrderedDict */
        pk_op(&b, 'u'), pk_op(&b, '.');
        sd = load_pickle(ctx, &b, NULL);
        CHECK(sd && hv_state_dict_count(sd) == 2, "opaque objects: %s", hv_last_error());
        if (sd) {
            CHECK(strcmp(hv_state_dict_name(sd, 0), "a") == 0 && strcmp(hv_state_dict_name(sd, 1), "b") == 0, "order after replace");
            CHECK(hv_data(hv_state_dict_at(sd, 0))[0] == 4.0f && hv_data(hv_state_dict_at(sd, 1))[0] == 0.0f, "last assignment wins");
        }
        hv_state_dict_free(sd);
        CHECK_ERROR(load_pickle(ctx, &b, "args"), "'args' is a object");
        free(b.p);
    }
    {   /* the rarer opcodes: DICT, LIST, FROZENSET, INST, OBJ, NEWOBJ_EX, POP_MARK, LONG4, BINBYTES8,
           BINUNICODE8, SHORT_BINSTRING, BINSTRING, BININT2, LONG_BINPUT/GET; OrderedDict(pairs) */
        cz_buf b;
        memset(&b, 0, sizeof b);
        pk_op(&b, 0x80), pk_op(&b, 2), pk_op(&b, '(');
        pk_str(&b, "model");
        pk_global(&b, "collections", "OrderedDict"), pk_op(&b, '('), pk_op(&b, '('), pk_op(&b, '(');
        pk_str(&b, "w"), pk_tensor(&b, "FloatStorage", "0", 16, 1, 1, s4, st1);
        pk_op(&b, 't'), pk_op(&b, 'l'), pk_op(&b, 't'), pk_op(&b, 'R');
        pk_str(&b, "junk"), pk_op(&b, '(');
        pk_op(&b, '('), cz_put(&b, "iargparse\nNamespace\n", 20);
        pk_op(&b, '('), pk_global(&b, "foo", "Bar"), pk_op(&b, 'K'), pk_op(&b, 1), pk_op(&b, 'o');
        pk_global(&b, "foo", "Baz"), pk_op(&b, ')'), pk_op(&b, '}'), pk_op(&b, 0x92);
        pk_op(&b, 0x8e), cz_put(&b, "\3\0\0\0\0\0\0\0abc", 11);
        pk_op(&b, 'U'), cz_put(&b, "\1x", 2), pk_op(&b, 'T'), cz_put(&b, "\1\0\0\0y", 5);
        pk_op(&b, 0x8b), cz_put(&b, "\2\0\0\0\1\2", 6), pk_op(&b, 0x8d), cz_put(&b, "\1\0\0\0\0\0\0\0z", 9);
        pk_op(&b, 'M'), cz_put(&b, "\xff\xff", 2);
        pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 1), pk_op(&b, 'K'), pk_op(&b, 2), pk_op(&b, 'd');
        pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 1), pk_op(&b, 'l');
        pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 1), pk_op(&b, 0x91);
        pk_op(&b, '('), pk_op(&b, 'K'), pk_op(&b, 5), pk_op(&b, 'K'), pk_op(&b, 6), pk_op(&b, '1');
        pk_op(&b, 'r'), cz_put(&b, "\0\0\0\0", 4), pk_op(&b, 'j'), cz_put(&b, "\0\0\0\0", 4);
        pk_op(&b, 't');
        pk_op(&b, 'd'), pk_op(&b, '.');
        sd = load_pickle(ctx, &b, NULL);
        CHECK(sd && hv_state_dict_count(sd) == 1 && hv_data(hv_state_dict_at(sd, 0))[3] == 4.0f, "rare opcodes: %s", hv_last_error());
        hv_state_dict_free(sd);
        free(b.p);
    }
    {   /* big-endian storages are refused */
        const char *names[3] = {"a/data.pkl", "a/byteorder", "a/data/0"};
        const unsigned char *data[3];
        size_t sizes[3], n;
        unsigned char *z;
        cz_buf b;
        float f[4] = {0, 0, 0, 0};
        memset(&b, 0, sizeof b);
        pk_op(&b, 0x80), pk_op(&b, 2), pk_op(&b, '}'), pk_str(&b, "w");
        pk_tensor(&b, "FloatStorage", "0", 4, 0, 1, s4, st1);
        pk_op(&b, 's'), pk_op(&b, '.');
        data[0] = b.p, sizes[0] = b.n;
        data[1] = (const unsigned char *)"big", sizes[1] = 3;
        data[2] = (const unsigned char *)f, sizes[2] = sizeof f;
        z = cz_make(3, names, data, sizes, &n);
        CHECK_ERROR(hv_torch_load_memory(ctx, z, n, NULL), "big-endian");
        data[1] = (const unsigned char *)"little", sizes[1] = 6;
        free(z);
        z = cz_make(3, names, data, sizes, &n);
        sd = hv_torch_load_memory(ctx, z, n, NULL);
        CHECK(sd && hv_state_dict_count(sd) == 1, "little-endian, top-level dict, folder 'a/': %s", hv_last_error());
        hv_state_dict_free(sd);
        free(z);
        free(b.p);
    }
}

/* ---- truncation and corruption sweeps ------------------------------------------------------------ */

static const char *const g_sweep[] = {"vit_tiny.pth", "vit_tiny_zip64.pth", "tc_tiny.tar", "plain_sd.pth", "mixed.safetensors"};

static hv_state_dict *load_any(hv_ctx *ctx, const char *file, const unsigned char *p, size_t n) {
    if (strstr(file, ".safetensors")) return hv_safetensors_load_memory(ctx, p, n);
    return hv_torch_load_memory(ctx, p, n, NULL);
}

/* every prefix must fail with a message or load (never crash); the full file must load */
static void test_truncations(hv_ctx *ctx) {
    size_t f, len, n, silent = 0, loaded = 0, total = 0;
    for (f = 0; f < sizeof g_sweep / sizeof *g_sweep; f++) {
        char path[256];
        unsigned char *p;
        snprintf(path, sizeof path, FIX "%s", g_sweep[f]);
        p = read_file(path, &n);
        CHECK(p != NULL, "cannot read %s", path);
        if (!p) continue;
        for (len = 0; len <= n; len++) {
            unsigned char *cut = (unsigned char *)malloc(len ? len : 1); /* exact size: asan sees overreads */
            hv_state_dict *sd;
            memcpy(cut, p, len);
            hv_clear_error();
            sd = load_any(ctx, g_sweep[f], cut, len);
            if (sd) loaded++;
            else if (!hv_last_error()[0]) silent++;
            if (len == n) CHECK(sd != NULL, "%s: the whole file does not load: %s", g_sweep[f], hv_last_error());
            hv_state_dict_free(sd);
            free(cut);
            total++;
        }
        { /* through a file: the message names the path */
            char tpath[600];
            hv_state_dict *sd;
            tmp_path(tpath, sizeof tpath, "ckpt_truncated.bin");
            write_file(tpath, p, n / 2);
            sd = strstr(g_sweep[f], ".safetensors") ? hv_safetensors_load(ctx, tpath) : hv_torch_load(ctx, tpath, NULL);
            CHECK(!sd && strstr(hv_last_error(), tpath), "%s cut in half: %s", g_sweep[f], hv_last_error());
            hv_state_dict_free(sd);
            remove(tpath);
        }
        free(p);
    }
    CHECK(silent == 0, "%zu failures without a message", silent);
    printf("  %zu truncated loads, %zu of them (whole files) loaded\n", total, loaded);
}

/* every byte flipped, and every byte replaced by a pseudo-random value */
static void test_corruptions(hv_ctx *ctx) {
    size_t f, i, n, silent = 0, loaded = 0, total = 0;
    uint32_t rng = 12345;
    for (f = 0; f < sizeof g_sweep / sizeof *g_sweep; f++) {
        char path[256];
        unsigned char *p, *q;
        int pass;
        snprintf(path, sizeof path, FIX "%s", g_sweep[f]);
        p = read_file(path, &n);
        if (!p) continue;
        q = (unsigned char *)malloc(n);
        for (pass = 0; pass < 2; pass++)
            for (i = 0; i < n; i++) {
                hv_state_dict *sd;
                memcpy(q, p, n);
                rng = rng * 1103515245u + 12345u;
                q[i] = pass == 0 ? (unsigned char)(q[i] ^ 0xff) : (unsigned char)(rng >> 16);
                hv_clear_error();
                sd = load_any(ctx, g_sweep[f], q, n);
                if (sd) loaded++;
                else if (!hv_last_error()[0]) silent++;
                hv_state_dict_free(sd);
                total++;
            }
        free(q);
        free(p);
    }
    CHECK(silent == 0, "%zu failures without a message", silent);
    printf("  %zu corrupted loads, %zu loaded (data bytes), %zu refused with a message\n", total, loaded, total - loaded);
}

int main(int argc, char **argv) {
    hv_ctx *ctx = hv_init(NULL);
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (slash && (size_t)(slash - argv[0]) + 2 < sizeof g_tmp) snprintf(g_tmp, sizeof g_tmp, "%.*s/", (int)(slash - argv[0]), argv[0]);
    if (load_expected() != 0) printf("  cannot read " FIX "expected.txt: run from the repository root\n");
    TL_RUN(ctx, test_vit_pth);
    TL_RUN(ctx, test_zip64_pth);
    TL_RUN(ctx, test_tc_tar);
    TL_RUN(ctx, test_plain_sd);
    TL_RUN(ctx, test_safetensors_fixture);
    TL_RUN(ctx, test_roundtrip);
    TL_RUN(ctx, test_save_views);
    TL_RUN(ctx, test_params_load_map);
    TL_RUN(ctx, test_state_dict_api);
    TL_RUN(ctx, test_bad_safetensors);
    TL_RUN(ctx, test_bad_files);
    TL_RUN(ctx, test_pickles);
    TL_RUN(ctx, test_truncations);
    TL_RUN(ctx, test_corruptions);
    free_expected();
    hv_shutdown(ctx);
    TL_DONE();
}
