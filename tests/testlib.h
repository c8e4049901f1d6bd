/* testlib.h - the test harness: pass/fail bookkeeping and the op checker.

   Each tests/test_*.c is its own program: it includes this file, writes functions of the form
   `static void test_something(hv_ctx *ctx)`, and lists them in main with TL_RUN. Each test counts
   once: passed when none of its CHECKs failed. main ends with TL_DONE, which prints the closing
   `N passed, M failed` line that build.sh adds up.

   tl_check_op is the workhorse for ops: you give the hv op, a double-precision reference of its
   forward written from the definition, and inputs. It checks
     1. forward: hv result against the reference (max error relative to the output's scale);
     2. backward: hv_backward of L = sum(r * out), with r random, against central finite
        differences of the double reference, for every input flagged in grad_mask.
   The reference sees each input as a dense row-major double array (i32 tensors converted). */
#ifndef HV_TESTLIB_H
#define HV_TESTLIB_H

#include "humanvit.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tl_passed, tl_failed, tl_cur_failed;
static const char *tl_cur_name = "";

static inline void tl_fail_msg(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    tl_cur_failed++;
    if (tl_cur_failed > 8) return; /* one broken test should not flood the log */
    fprintf(stdout, "  %s:%d: [%s] ", file, line, tl_cur_name);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) tl_fail_msg(__FILE__, __LINE__, __VA_ARGS__);                                 \
    } while (0)
#define CHECK_NOTNULL(p)                                                                           \
    do {                                                                                           \
        if (!(p)) tl_fail_msg(__FILE__, __LINE__, "%s is NULL: %s", #p, hv_last_error());          \
    } while (0)
/* the call must fail (NULL) and the error message must contain each given fragment */
#define CHECK_ERROR(expr, ...)                                                                     \
    do {                                                                                           \
        const char *tl_frags_[] = {__VA_ARGS__, NULL};                                             \
        hv_clear_error();                                                                          \
        if ((expr) != NULL) {                                                                      \
            tl_fail_msg(__FILE__, __LINE__, "expected an error from %s", #expr);                   \
        } else {                                                                                   \
            int tl_i_;                                                                             \
            for (tl_i_ = 0; tl_frags_[tl_i_]; tl_i_++)                                             \
                if (!strstr(hv_last_error(), tl_frags_[tl_i_]))                                    \
                    tl_fail_msg(__FILE__, __LINE__, "error \"%s\" lacks \"%s\"", hv_last_error(),   \
                                tl_frags_[tl_i_]);                                                 \
        }                                                                                          \
    } while (0)

#define TL_RUN(ctx, fn)                                                                            \
    do {                                                                                           \
        tl_cur_name = #fn;                                                                         \
        tl_cur_failed = 0;                                                                         \
        hv_clear_error();                                                                          \
        fn(ctx);                                                                                   \
        hv_step_end(ctx);                                                                          \
        if (tl_cur_failed) {                                                                       \
            tl_failed++;                                                                           \
            printf("FAIL %s\n", #fn);                                                              \
        } else {                                                                                   \
            tl_passed++;                                                                           \
            printf("PASS %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define TL_DONE()                                                                                  \
    do {                                                                                           \
        printf("%d passed, %d failed\n", tl_passed, tl_failed);                                    \
        fflush(stdout);                                                                            \
        return tl_failed ? 1 : 0;                                                                  \
    } while (0)

/* ---- random inputs -------------------------------------------------------------------------- */

/* persistent f32 tensor with values in [lo, hi), drawn from the context's RNG */
static inline hv_tensor *tl_rand(hv_ctx *ctx, hv_shape s, float lo, float hi) {
    return hv_uniform(ctx, s, lo, hi);
}
/* persistent i32 tensor with values in [0, n) */
static inline hv_tensor *tl_rand_index(hv_ctx *ctx, hv_shape s, int n) {
    hv_tensor *t = hv_tensor_new(ctx, HV_I32, s);
    int64_t i, m = hv_numel(t);
    int32_t *p = hv_data_i32(t);
    for (i = 0; i < m; i++) p[i] = (int32_t)(hv_rng_u64(ctx) % (uint64_t)n);
    return t;
}

/* dense row-major copy of any tensor as doubles (caller frees) */
static inline double *tl_to_double(hv_tensor *t) {
    int64_t i, n = hv_numel(t);
    double *d = (double *)malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (hv_tensor_dtype(t) == HV_I32) {
        int32_t *tmp = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        hv_tensor_copy_to(t, tmp, sizeof(int32_t) * (size_t)n);
        for (i = 0; i < n; i++) d[i] = tmp[i];
        free(tmp);
    } else {
        float *tmp = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
        hv_tensor_copy_to(t, tmp, sizeof(float) * (size_t)n);
        for (i = 0; i < n; i++) d[i] = tmp[i];
        free(tmp);
    }
    return d;
}

/* max |a - b| / max(max |b|, floor): error relative to the reference's scale */
static inline double tl_rel_err(const float *a, const double *b, int64_t n, double floor_) {
    double maxref = floor_, maxdiff = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates as an error */
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    return maxdiff / maxref;
}

/* tl_rel_err of a tensor against the f32 entry `name` of a reference state dict (a model fixture's
   _io.safetensors); 1e30, with a note, when either is missing or the sizes differ */
static inline double tl_err_vs(hv_tensor *got, hv_state_dict *ref, const char *name, double floor_) {
    hv_tensor *r = hv_state_dict_get(ref, name);
    double *d, e;
    float *g;
    int64_t n;
    if (!got || !r || hv_numel(got) != hv_numel(r)) {
        printf("  %s: missing or wrong size (%s)\n", name, hv_last_error());
        return 1e30;
    }
    n = hv_numel(r);
    d = tl_to_double(r);
    g = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    hv_tensor_copy_to(got, g, sizeof(float) * (size_t)n);
    e = tl_rel_err(g, d, n, floor_);
    free(d);
    free(g);
    return e;
}

/* ---- the op checker ------------------------------------------------------------------------- */

#define TL_MAX_IN 6
typedef hv_tensor *(*tl_op_fn)(hv_tensor **in, void *user);
typedef void (*tl_ref_fn)(const double *const *in, double *out, void *user);

typedef struct tl_case {
    const char *label;
    int nin;
    hv_tensor *in[TL_MAX_IN];
    unsigned grad_mask; /* bit i: check the gradient of input i (must be f32) */
    tl_op_fn op;
    tl_ref_fn ref;
    void *user;
    double fwd_tol;  /* default 1e-5 */
    double grad_tol; /* default 1e-4 */
    double fd_step;  /* default 1e-6 */
} tl_case;

static inline double tl_ref_loss(tl_case *c, double **din, double *out, const double *r, int64_t nout) {
    double s = 0;
    int64_t i;
    c->ref((const double *const *)din, out, c->user);
    for (i = 0; i < nout; i++) s += r[i] * out[i];
    return s;
}

static inline void tl_check_op_at(tl_case *c, const char *file, int line) {
    hv_ctx *ctx = hv_tensor_ctx(c->in[0]);
    double *din[TL_MAX_IN] = {0}, *ref_out, *r;
    float *got;
    hv_tensor *out, *rt, *loss;
    int64_t nout, i;
    int k;
    double fwd_tol = c->fwd_tol > 0 ? c->fwd_tol : 1e-5;
    double grad_tol = c->grad_tol > 0 ? c->grad_tol : 1e-4;
    double h = c->fd_step > 0 ? c->fd_step : 1e-6;

    for (k = 0; k < c->nin; k++) {
        if (c->grad_mask & (1u << k)) {
            hv_set_trainable(c->in[k], 1);
            hv_zero_grad(c->in[k]);
        }
        din[k] = tl_to_double(c->in[k]);
    }
    out = c->op(c->in, c->user);
    if (!out) {
        tl_fail_msg(file, line, "%s: op failed: %s", c->label, hv_last_error());
        goto cleanup_inputs;
    }
    nout = hv_numel(out);
    ref_out = (double *)malloc(sizeof(double) * (size_t)(nout + 1));
    r = (double *)malloc(sizeof(double) * (size_t)(nout + 1));
    got = (float *)malloc(sizeof(float) * (size_t)(nout + 1));
    c->ref((const double *const *)din, ref_out, c->user);
    hv_tensor_copy_to(out, got, sizeof(float) * (size_t)nout);
    {
        double e = tl_rel_err(got, ref_out, nout, 1e-6);
        if (!(e <= fwd_tol)) tl_fail_msg(file, line, "%s: forward error %.3g > %.3g", c->label, e, fwd_tol);
    }
    if (c->grad_mask) {
        float *rf = (float *)malloc(sizeof(float) * (size_t)(nout + 1));
        for (i = 0; i < nout; i++) {
            rf[i] = hv_rng_uniform(ctx) * 2.0f - 1.0f;
            r[i] = rf[i];
        }
        rt = hv_tensor_temp(ctx, HV_F32, hv_tensor_shape(out));
        hv_tensor_copy_from(rt, rf, sizeof(float) * (size_t)nout);
        free(rf);
        loss = hv_sum(hv_mul(out, rt), 0, NULL, 0);
        if (!loss || hv_backward(loss) != 0) {
            tl_fail_msg(file, line, "%s: backward failed: %s", c->label, hv_last_error());
        } else {
            for (k = 0; k < c->nin; k++) {
                hv_tensor *g;
                int64_t n = hv_numel(c->in[k]);
                double *fd;
                float *gf;
                if (!(c->grad_mask & (1u << k))) continue;
                g = hv_grad(c->in[k]);
                if (!g) {
                    tl_fail_msg(file, line, "%s: input %d got no gradient", c->label, k);
                    continue;
                }
                fd = (double *)malloc(sizeof(double) * (size_t)(n + 1));
                gf = (float *)malloc(sizeof(float) * (size_t)(n + 1));
                for (i = 0; i < n; i++) {
                    double x0 = din[k][i], step = h * (fabs(x0) > 1 ? fabs(x0) : 1);
                    double lp, lm;
                    din[k][i] = x0 + step;
                    lp = tl_ref_loss(c, din, ref_out, r, nout);
                    din[k][i] = x0 - step;
                    lm = tl_ref_loss(c, din, ref_out, r, nout);
                    din[k][i] = x0;
                    fd[i] = (lp - lm) / (2 * step);
                }
                hv_tensor_copy_to(g, gf, sizeof(float) * (size_t)n);
                {
                    double e = tl_rel_err(gf, fd, n, 1e-6);
                    if (!(e <= grad_tol))
                        tl_fail_msg(file, line, "%s: gradient of input %d: error %.3g > %.3g", c->label, k, e,
                                    grad_tol);
                }
                free(fd);
                free(gf);
            }
        }
    }
    free(ref_out);
    free(r);
    free(got);
cleanup_inputs:
    for (k = 0; k < c->nin; k++) {
        free(din[k]);
        if (c->grad_mask & (1u << k)) {
            hv_zero_grad(c->in[k]);
            hv_set_trainable(c->in[k], 0);
        }
    }
    hv_step_end(ctx);
}
#define tl_check_op(c) tl_check_op_at((c), __FILE__, __LINE__)

/* index helpers for references: offset of (i0..i3) in a dense row-major array of shape s */
static inline int64_t tl_at4(const int64_t *s, int64_t a, int64_t b, int64_t c, int64_t d) {
    return ((a * s[1] + b) * s[2] + c) * s[3] + d;
}

#endif
