/* test_vulkan.c - the Vulkan backend against the CPU reference, op by op, then whole training
   steps. Built with the backend (the define below); `./build.sh test` runs it on whatever device
   the Vulkan loader finds (lavapipe in CI), and prints a SKIP line and no failures when there is
   no loader or no device.

   Every op case makes its inputs on the CPU context, copies them to the Vulkan context
   (hv_tensor_to), runs the op on both, and compares the forward result and, through
   L = sum(out * r) with a random r, the gradient of every input, by the normalised error
   max |vulkan - cpu| / max |cpu|. The bound is 1e-6 for f32 unless a case says why not. */
#define _POSIX_C_SOURCE 200112L /* setenv, opendir */
#define HUMANVIT_VULKAN
#define HUMANVIT_IMPLEMENTATION
#include "testlib.h"
#include "tiny_vit.h"
#include <dirent.h>

static hv_ctx *g_cpu, *g_vk;

#define VK_TOL 1e-6

/* max |a - b| / max(max |b|, 1e-6) over two tensors of one shape, any contexts */
static double vk_err(hv_tensor *got, hv_tensor *ref) {
    int64_t n = hv_numel(ref), i;
    float *a, *b;
    double e;
    double *bd;
    if (!got || hv_numel(got) != n) return INFINITY;
    a = (float *)malloc(sizeof(float) * (size_t)(n + 1));
    b = (float *)malloc(sizeof(float) * (size_t)(n + 1));
    bd = (double *)malloc(sizeof(double) * (size_t)(n + 1));
    hv_tensor_copy_to(got, a, sizeof(float) * (size_t)n);
    hv_tensor_copy_to(ref, b, sizeof(float) * (size_t)n);
    if (hv_tensor_dtype(ref) == HV_I32)
        for (i = 0; i < n; i++) bd[i] = ((int32_t *)b)[i], a[i] = (float)((int32_t *)a)[i];
    else
        for (i = 0; i < n; i++) bd[i] = b[i];
    e = tl_rel_err(a, bd, n, 1e-6);
    free(a);
    free(b);
    free(bd);
    return e;
}

/* ---- the op comparer ------------------------------------------------------------------------ */

typedef hv_tensor *(*vk_op_fn)(hv_tensor **in, void *user);
typedef struct vk_case {
    const char *label;
    int nin;
    hv_tensor *in[6]; /* on the CPU context; freed by vk_check */
    unsigned grad_mask;
    vk_op_fn op;
    void *user;
    double fwd_tol, grad_tol; /* 0: VK_TOL */
} vk_case;

static void vk_check_at(vk_case *c, const char *file, int line) {
    hv_tensor *vin[6], *oc, *ov;
    int k;
    double ft = c->fwd_tol > 0 ? c->fwd_tol : VK_TOL, gt = c->grad_tol > 0 ? c->grad_tol : VK_TOL, e;
    for (k = 0; k < c->nin; k++) {
        vin[k] = hv_tensor_to(c->in[k], g_vk);
        if (!vin[k]) {
            tl_fail_msg(file, line, "%s: hv_tensor_to: %s", c->label, hv_last_error());
            return;
        }
        if (c->grad_mask & (1u << k)) {
            hv_set_trainable(c->in[k], 1);
            hv_set_trainable(vin[k], 1);
        }
    }
    oc = c->op(c->in, c->user);
    ov = c->op(vin, c->user);
    if (!oc || !ov) {
        tl_fail_msg(file, line, "%s: op failed on %s: %s", c->label, oc ? "vulkan" : "cpu", hv_last_error());
        goto done;
    }
    e = vk_err(ov, oc);
    if (getenv("HV_TEST_VERBOSE")) printf("    %-60s forward %.2g\n", c->label, e);
    if (!(e <= ft)) tl_fail_msg(file, line, "%s: forward error %.3g > %.3g", c->label, e, ft);
    if (c->grad_mask) {
        int64_t n = hv_numel(oc), i;
        float *r = (float *)malloc(sizeof(float) * (size_t)(n + 1));
        hv_tensor *rc = hv_tensor_temp(g_cpu, HV_F32, hv_tensor_shape(oc)), *rv = hv_tensor_temp(g_vk, HV_F32, hv_tensor_shape(oc));
        for (i = 0; i < n; i++) r[i] = hv_rng_uniform(g_cpu) * 2.0f - 1.0f;
        hv_tensor_copy_from(rc, r, sizeof(float) * (size_t)n);
        hv_tensor_copy_from(rv, r, sizeof(float) * (size_t)n);
        free(r);
        if (hv_backward(hv_sum(hv_mul(oc, rc), 0, NULL, 0)) || hv_backward(hv_sum(hv_mul(ov, rv), 0, NULL, 0))) {
            tl_fail_msg(file, line, "%s: backward failed: %s", c->label, hv_last_error());
            goto done;
        }
        for (k = 0; k < c->nin; k++) {
            if (!(c->grad_mask & (1u << k))) continue;
            e = vk_err(hv_grad(vin[k]), hv_grad(c->in[k]));
            if (getenv("HV_TEST_VERBOSE")) printf("    %-60s grad %d %.2g\n", c->label, k, e);
            if (!(e <= gt)) tl_fail_msg(file, line, "%s: gradient of input %d: error %.3g > %.3g", c->label, k, e, gt);
        }
    }
done:
    for (k = 0; k < c->nin; k++) {
        hv_tensor_free(c->in[k]);
        hv_tensor_free(vin[k]);
    }
    hv_step_end(g_cpu);
    hv_step_end(g_vk);
}
#define vk_check(c) vk_check_at((c), __FILE__, __LINE__)

static vk_case vk_new(const char *label, int nin, unsigned grad_mask, vk_op_fn op, void *user) {
    vk_case c;
    memset(&c, 0, sizeof c);
    c.label = label;
    c.nin = nin;
    c.grad_mask = grad_mask;
    c.op = op;
    c.user = user;
    return c;
}
static hv_tensor *rnd(hv_shape s, float lo, float hi) { return tl_rand(g_cpu, s, lo, hi); }

/* ---- matmul / linear ------------------------------------------------------------------------ */

typedef struct mm_user {
    int ta, tb;
} mm_user;
static hv_tensor *op_matmul(hv_tensor **in, void *u) { return hv_matmul(in[0], in[1], ((mm_user *)u)->ta, ((mm_user *)u)->tb); }
static hv_tensor *op_linear(hv_tensor **in, void *u) {
    (void)u;
    return hv_linear(in[0], in[1], in[2]);
}
/* GEMM sums k products in order, like the CPU, but the compiler may fuse a multiply and an add
   (fma): a few ulp of the partial sums, so 2e-6 of the output's scale */
#define GEMM_TOL 2e-6
static void test_matmul(hv_ctx *unused) {
    static const int64_t dims[][3] = {{1, 1, 1}, {5, 7, 3}, {67, 33, 71}, {130, 17, 65}};
    int t, d;
    (void)unused;
    for (d = 0; d < 4; d++)
        for (t = 0; t < 4; t++) {
            mm_user u;
            vk_case c;
            char label[96];
            int64_t m = dims[d][0], k = dims[d][1], n = dims[d][2];
            u.ta = t & 1;
            u.tb = t >> 1;
            snprintf(label, sizeof label, "matmul %lldx%lldx%lld ta=%d tb=%d", (long long)m, (long long)k, (long long)n, u.ta, u.tb);
            c = vk_new(label, 2, 3, op_matmul, &u);
            c.in[0] = rnd(u.ta ? HV_SHAPE(k, m) : HV_SHAPE(m, k), -1, 1);
            c.in[1] = rnd(u.tb ? HV_SHAPE(n, k) : HV_SHAPE(k, n), -1, 1);
            c.fwd_tol = c.grad_tol = GEMM_TOL;
            vk_check(&c);
        }
    { /* batched with broadcasting, 4-d */
        mm_user u = {0, 1};
        vk_case c = vk_new("matmul (2,3,9,11) x (3,13,11)^T", 2, 3, op_matmul, &u);
        c.in[0] = rnd(HV_SHAPE(2, 3, 9, 11), -1, 1);
        c.in[1] = rnd(HV_SHAPE(3, 13, 11), -1, 1);
        c.fwd_tol = c.grad_tol = GEMM_TOL;
        vk_check(&c);
    }
    { /* linear layer on a (B, N, D) input: the folded big GEMM and its weight gradient */
        vk_case c = vk_new("linear (3,17,24) -> 40", 3, 7, op_linear, NULL);
        c.in[0] = rnd(HV_SHAPE(3, 17, 24), -1, 1);
        c.in[1] = rnd(HV_SHAPE(40, 24), -1, 1);
        c.in[2] = rnd(HV_SHAPE(40), -1, 1);
        c.fwd_tol = c.grad_tol = GEMM_TOL;
        vk_check(&c);
    }
}

/* ---- elementwise ---------------------------------------------------------------------------- */

static hv_tensor *op_binary(hv_tensor **in, void *u) {
    switch (*(int *)u) {
    case 0: return hv_add(in[0], in[1]);
    case 1: return hv_sub(in[0], in[1]);
    case 2: return hv_mul(in[0], in[1]);
    default: return hv_div(in[0], in[1]);
    }
}
static hv_tensor *op_binary_strided(hv_tensor **in, void *u) {
    /* a permuted, sliced view against a broadcast row */
    int perm[3] = {2, 0, 1};
    return op_binary((hv_tensor *[]){hv_slice(hv_permute(in[0], perm), 1, 1, 6, 2), in[1]}, u);
}
static void test_binary(hv_ctx *unused) {
    int op;
    (void)unused;
    for (op = 0; op < 4; op++) {
        vk_case c = vk_new("binary (5,1,7) op (3,1)", 2, 3, op_binary, &op);
        c.in[0] = rnd(HV_SHAPE(5, 1, 7), -1, 1);
        c.in[1] = rnd(HV_SHAPE(3, 1), 0.5f, 1.5f);
        vk_check(&c);
        c = vk_new("binary strided view (11,9,7)->perm->slice op (1,9)", 2, 3, op_binary_strided, &op);
        c.in[0] = rnd(HV_SHAPE(11, 9, 7), -1, 1);
        c.in[1] = rnd(HV_SHAPE(1, 9), 0.5f, 1.5f);
        vk_check(&c);
    }
}

static hv_tensor *op_unary(hv_tensor **in, void *u) {
    hv_tensor *x = hv_transpose(in[0], 0, 1); /* strided input */
    switch (*(int *)u) {
    case 0: return hv_exp(x);
    case 1: return hv_log(x);
    case 2: return hv_sqrt(x);
    case 3: return hv_tanh(x);
    case 4: return hv_sigmoid(x);
    case 5: return hv_relu(x);
    case 6: return hv_leaky_relu(x, 0.07f);
    case 7: return hv_gelu(x);
    case 8: return hv_scale(x, -1.75f);
    default: return hv_add_scalar(x, 0.375f);
    }
}
static void test_unary(hv_ctx *unused) {
    static const char *names[] = {"exp", "log", "sqrt", "tanh", "sigmoid", "relu", "leaky_relu", "gelu", "scale", "add_scalar"};
    int op;
    (void)unused;
    for (op = 0; op < 10; op++) {
        vk_case c = vk_new(names[op], 1, 1, op_unary, &op);
        int positive = op == 1 || op == 2;
        c.in[0] = rnd(HV_SHAPE(13, 21, 3), positive ? 0.05f : -4.0f, 4.0f);
        /* exp/log/tanh/sigmoid/erf: the device's transcendental functions are within a few ulp,
           not correctly rounded as glibc's */
        c.fwd_tol = c.grad_tol = 2e-6;
        vk_check(&c);
    }
    { /* GELU near 0 and far out, where erf's two branches meet (|x| = 0.93 / sqrt 2 ...) */
        vk_case c = vk_new("gelu wide range", 1, 1, op_unary, &op);
        op = 7;
        c.in[0] = rnd(HV_SHAPE(9, 300), -9.0f, 9.0f);
        c.fwd_tol = c.grad_tol = 2e-6;
        vk_check(&c);
    }
}

static hv_tensor *op_copy(hv_tensor **in, void *u) {
    int perm[4] = {3, 1, 0, 2};
    (void)u;
    return hv_contiguous(hv_slice(hv_permute(in[0], perm), 2, 1, 5, 3));
}
static void test_copy_fill(hv_ctx *unused) {
    vk_case c = vk_new("copy of a permuted strided slice", 1, 1, op_copy, NULL);
    (void)unused;
    c.in[0] = rnd(HV_SHAPE(7, 5, 3, 11), -1, 1);
    vk_check(&c);
    { /* fill of a strided view, i32 round trip, hv_tensor_assign */
        hv_tensor *t = hv_zeros(g_vk, HV_SHAPE(4, 6)), *v;
        hv_tensor *ti = hv_tensor_new(g_vk, HV_I32, HV_SHAPE(5));
        int32_t iv[5] = {1, -2, 3, 1 << 30, 0}, ib[5];
        float got[24];
        int i, ok = 1;
        v = hv_slice(t, 1, 1, 6, 2); /* columns 1, 3, 5 */
        hv_tensor_fill(v, 2.5f);
        hv_tensor_copy_to(t, got, sizeof got);
        for (i = 0; i < 24; i++) ok &= got[i] == ((i % 6) % 2 == 1 ? 2.5f : 0.0f);
        CHECK(ok, "fill of a strided view wrote the wrong elements");
        hv_tensor_copy_from(ti, iv, sizeof iv);
        hv_tensor_copy_to(ti, ib, sizeof ib);
        CHECK(!memcmp(iv, ib, sizeof iv), "i32 round trip changed the bits");
        CHECK(hv_data(t) == NULL && strstr(hv_last_error(), "device memory"), "hv_data of a device tensor: %s", hv_last_error());
        CHECK(hv_ctx_backend(g_vk) == HV_BACKEND_VULKAN && hv_ctx_backend(g_cpu) == HV_BACKEND_CPU, "hv_ctx_backend");
        { /* copy_to of a strided view: made contiguous on the device, then downloaded */
            hv_tensor *c = rnd(HV_SHAPE(5, 7), -1, 1), *d = hv_tensor_to(c, g_vk);
            float a1[35], a2[35];
            hv_tensor_copy_to(hv_transpose(c, 0, 1), a1, sizeof a1);
            CHECK(hv_tensor_copy_to(hv_transpose(d, 0, 1), a2, sizeof a2) == 0 && !memcmp(a1, a2, sizeof a1), "copy_to of a transposed view");
            hv_tensor_free(c);
            hv_tensor_free(d);
        }
        {
            hv_tensor *s = hv_full(g_vk, HV_SHAPE(4, 6), -1.0f);
            CHECK(hv_tensor_assign(t, s) == 0, "assign: %s", hv_last_error());
            CHECK(hv_item(hv_sum(t, 0, NULL, 0)) == -24.0f, "assign then sum");
            hv_tensor_free(s);
        }
        hv_tensor_free(t);
        hv_tensor_free(ti);
    }
}


/* ---- reductions ----------------------------------------------------------------------------- */

typedef struct red_user {
    int op, naxes, axes[3], keepdim, transposed;
} red_user;
static hv_tensor *op_reduce(hv_tensor **in, void *u) {
    red_user *r = (red_user *)u;
    hv_tensor *x = r->transposed ? hv_transpose(in[0], 0, 2) : in[0];
    if (r->op == 0) return hv_sum(x, r->naxes, r->axes, r->keepdim);
    if (r->op == 1) return hv_mean(x, r->naxes, r->axes, r->keepdim);
    return hv_max(x, r->naxes, r->axes, r->keepdim);
}
static void test_reductions(hv_ctx *unused) {
    static const red_user cases[] = {
        {0, 0, {0}, 0, 0},     {0, 1, {1}, 1, 0},   {0, 2, {0, 2}, 0, 1}, {1, 1, {-1}, 0, 0}, {1, 2, {1, 2}, 1, 1},
        {2, 1, {1}, 0, 0},     {2, 2, {0, 2}, 1, 1}, {2, 0, {0}, 0, 0},   {0, 1, {2}, 0, 1},
    };
    int i;
    (void)unused;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        red_user u = cases[i];
        char label[96];
        vk_case c;
        snprintf(label, sizeof label, "%s over %d axes (first %d)%s%s", u.op == 0 ? "sum" : u.op == 1 ? "mean" : "max", u.naxes, u.axes[0],
                 u.keepdim ? " keepdim" : "", u.transposed ? " of a transposed view" : "");
        c = vk_new(label, 1, 1, op_reduce, &u);
        /* (17, 9, 70): reduced groups from 9 to 10710 values, both kernel modes */
        c.in[0] = rnd(HV_SHAPE(17, 9, 70), -1, 1);
        /* sums: float tree vs the CPU's double accumulator, 1e-7 relative per level */
        c.fwd_tol = c.grad_tol = 2e-6;
        vk_check(&c);
    }
}

/* ---- softmax, layer norm -------------------------------------------------------------------- */

typedef struct sm_user {
    int axis, is_log, transposed;
} sm_user;
static hv_tensor *op_softmax(hv_tensor **in, void *u) {
    sm_user *s = (sm_user *)u;
    hv_tensor *x = s->transposed ? hv_transpose(in[0], 1, 2) : in[0];
    return s->is_log ? hv_log_softmax(x, s->axis) : hv_softmax(x, s->axis);
}
static void test_softmax(hv_ctx *unused) {
    int axis, lg, tr;
    (void)unused;
    for (lg = 0; lg < 2; lg++)
        for (tr = 0; tr < 2; tr++)
            for (axis = 0; axis < 3; axis++) {
                sm_user u;
                char label[64];
                vk_case c;
                u.axis = axis;
                u.is_log = lg;
                u.transposed = tr;
                snprintf(label, sizeof label, "%s axis %d%s", lg ? "log_softmax" : "softmax", axis, tr ? " transposed" : "");
                c = vk_new(label, 1, 1, op_softmax, &u);
                c.in[0] = rnd(HV_SHAPE(5, 131, 3), -6, 6); /* 131 > one workgroup */
                c.fwd_tol = c.grad_tol = 2e-6; /* exp and log: a few ulp */
                vk_check(&c);
            }
}
typedef struct ln_user {
    int affine;
    float eps;
} ln_user;
static hv_tensor *op_layer_norm(hv_tensor **in, void *u) {
    ln_user *l = (ln_user *)u;
    int k = 1;
    hv_tensor *w = (l->affine & 1) ? in[k++] : NULL, *b = (l->affine & 2) ? in[k] : NULL;
    return hv_layer_norm(in[0], w, b, l->eps);
}
static void test_layer_norm(hv_ctx *unused) {
    static const int64_t D[] = {7, 64, 193};
    int affine, di;
    (void)unused;
    for (di = 0; di < 3; di++)
        for (affine = 0; affine < 4; affine++) {
            ln_user u;
            char label[64];
            vk_case c;
            int k = 1;
            u.affine = affine;
            u.eps = di == 0 ? 0.5f : 1e-6f;
            snprintf(label, sizeof label, "layer_norm D %lld affine %d", (long long)D[di], affine);
            c = vk_new(label, 1, 0, op_layer_norm, &u);
            c.in[0] = rnd(HV_SHAPE(3, 37, D[di]), -2, 3);
            if (affine & 1) c.in[k++] = rnd(HV_SHAPE(D[di]), 0.5f, 1.5f);
            if (affine & 2) c.in[k++] = rnd(HV_SHAPE(D[di]), -1, 1);
            c.nin = k;
            c.grad_mask = (1u << k) - 1;
            c.fwd_tol = c.grad_tol = 2e-6; /* statistics in float (CPU: double) */
            vk_check(&c);
        }
}

/* ---- attention ------------------------------------------------------------------------------ */

typedef struct at_user {
    int permuted;
    float scale;
} at_user;
static hv_tensor *op_attention(hv_tensor **in, void *u) {
    at_user *a = (at_user *)u;
    int perm[4] = {0, 2, 1, 3};
    if (a->permuted) return hv_attention(hv_permute(in[0], perm), hv_permute(in[1], perm), hv_permute(in[2], perm), a->scale);
    return hv_attention(in[0], in[1], in[2], a->scale);
}
/* the ViT block's layout: q, k, v strided views of one qkv tensor */
static hv_tensor *op_attention_qkv(hv_tensor **in, void *u) {
    int perm[5] = {2, 0, 3, 1, 4};
    hv_tensor *qkv = hv_permute(in[0], perm); /* (B, N, 3, H, d) -> (3, B, H, N, d) */
    (void)u;
    return hv_attention(hv_select(qkv, 0, 0), hv_select(qkv, 0, 1), hv_select(qkv, 0, 2), 0.0f);
}
static void test_attention(hv_ctx *unused) {
    static const int64_t shapes[][5] = {{2, 3, 5, 5, 8}, {1, 2, 67, 130, 16}, {2, 1, 9, 3, 71}, {1, 1, 1, 1, 1}};
    int s, perm;
    (void)unused;
    for (s = 0; s < 4; s++)
        for (perm = 0; perm < 2; perm++) {
            at_user u;
            char label[96];
            vk_case c;
            int64_t B = shapes[s][0], H = shapes[s][1], Nq = shapes[s][2], Nk = shapes[s][3], d = shapes[s][4];
            u.permuted = perm;
            u.scale = s == 1 ? 0.3f : 0.0f;
            snprintf(label, sizeof label, "attention B %lld H %lld Nq %lld Nk %lld d %lld%s", (long long)B, (long long)H, (long long)Nq,
                     (long long)Nk, (long long)d, perm ? " (permuted views)" : "");
            c = vk_new(label, 3, 7, op_attention, &u);
            c.in[0] = perm ? rnd(HV_SHAPE(B, Nq, H, d), -1, 1) : rnd(HV_SHAPE(B, H, Nq, d), -1, 1);
            c.in[1] = perm ? rnd(HV_SHAPE(B, Nk, H, d), -1, 1) : rnd(HV_SHAPE(B, H, Nk, d), -1, 1);
            c.in[2] = perm ? rnd(HV_SHAPE(B, Nk, H, d), -1, 1) : rnd(HV_SHAPE(B, H, Nk, d), -1, 1);
            /* the softmax sums in float in another order (blocks of 64 keys) than the CPU's
               online update: 2e-6; the gradients' sums over keys and queries too */
            c.fwd_tol = 2e-6;
            c.grad_tol = 4e-6;
            vk_check(&c);
        }
    {
        vk_case c = vk_new("attention on strided q, k, v of one qkv tensor", 1, 1, op_attention_qkv, NULL);
        c.in[0] = rnd(HV_SHAPE(2, 17, 3, 4, 8), -1, 1);
        c.fwd_tol = 2e-6;
        c.grad_tol = 4e-6;
        vk_check(&c);
    }
}

/* ---- indexing ------------------------------------------------------------------------------- */

static hv_tensor *op_gather(hv_tensor **in, void *u) { return hv_gather(in[0], *(int *)u, in[1]); }
static hv_tensor *op_scatter(hv_tensor **in, void *u) { return hv_scatter(in[0], 1, in[1], *(int *)u); }
static void test_gather_scatter(hv_ctx *unused) {
    int axis = 1, n = 11;
    vk_case c = vk_new("gather (3, 13, 5) axis 1, 7 picks with repeats", 2, 1, op_gather, &axis);
    (void)unused;
    c.in[0] = rnd(HV_SHAPE(3, 13, 5), -1, 1);
    c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(3, 7), 13);
    vk_check(&c);
    axis = 0;
    c = vk_new("gather (9, 4) axis 0", 2, 1, op_gather, &axis);
    c.in[0] = rnd(HV_SHAPE(9, 4), -1, 1);
    c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(5), 9);
    vk_check(&c);
    c = vk_new("scatter (2, 6, 3) into 11 rows, repeats add", 2, 1, op_scatter, &n);
    c.in[0] = rnd(HV_SHAPE(2, 6, 3), -1, 1);
    c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(2, 6), 4);
    vk_check(&c);
}

/* ---- out-of-range indices: checked by the kernels, reported at the next sync ---------------- */

/* a device i32 tensor from host values */
static hv_tensor *vk_index(const int32_t *v, hv_shape shape) {
    hv_tensor *t = hv_tensor_new(g_vk, HV_I32, shape);
    if (t) hv_tensor_copy_from(t, v, sizeof(int32_t) * (size_t)hv_numel(t));
    return t;
}
static void test_index_errors(hv_ctx *unused) {
    hv__vk *vk = HV__VK(g_vk);
    hv_tensor *x = hv_randn(g_vk, HV_SHAPE(2, 5, 3), 0, 1), *logits = hv_randn(g_vk, HV_SHAPE(3, 4), 0, 1), *out;
    hv_tensor *bad_idx, *good_idx, *bad_labels, *good_labels, *xc, *ic;
    int32_t bad[4] = {0, 1, 4, 7}, good[4] = {0, 1, 4, 2}, labels[6] = {1, -3, 2, 1, 0, 3};
    uint64_t submits;
    float v;
    (void)unused;
    bad_idx = vk_index(bad, HV_SHAPE(2, 2));
    good_idx = vk_index(good, HV_SHAPE(2, 2));
    bad_labels = vk_index(labels, HV_SHAPE(3));
    good_labels = vk_index(labels + 3, HV_SHAPE(3));
    hv_set_trainable(x, 1);
    hv_set_trainable(logits, 1);
    hv_sync(g_vk);
    /* recording a gather with a bad index neither fails nor waits: the kernel checks */
    submits = vk->n_submits;
    out = hv_gather(x, 1, bad_idx);
    CHECK(out != NULL && vk->n_submits == submits, "gather with device indices: %p, %llu waits", (void *)out,
          (unsigned long long)(vk->n_submits - submits));
    /* the first sync that returns a status reports it: hv_item gives NaN and names op and value */
    hv_clear_error();
    v = hv_item(hv_sum(out, 0, NULL, 0));
    CHECK(isnan(v) && strstr(hv_last_error(), "hv_gather") && strstr(hv_last_error(), "idx holds 7") &&
              strstr(hv_last_error(), "[0, 5)"),
          "bad gather index at hv_item: %g, \"%s\"", v, hv_last_error());
    hv_step_end(g_vk); /* reported once: the context goes on */
    out = hv_gather(x, 1, good_idx);
    CHECK(out && hv_item(hv_sum(out, 0, NULL, 0)) == hv_item(hv_sum(out, 0, NULL, 0)), "gather after an index error: %s", hv_last_error());
    hv_step_end(g_vk);

    /* found by hv_step_end (void): every op of the next step fails with it, the one after works */
    CHECK(hv_backward(hv_cross_entropy(logits, bad_labels)) == 0, "backward with bad labels recorded: %s", hv_last_error());
    hv_step_end(g_vk);
    CHECK_ERROR(hv_add_scalar(logits, 1.0f), "hv_cross_entropy", "labels holds -3", "[0, 4)");
    CHECK_ERROR(hv_gather(x, 1, good_idx), "hv_cross_entropy", "labels holds -3");
    hv_clear_error();
    CHECK(hv_tensor_fill(logits, 0.0f) == -1 && strstr(hv_last_error(), "labels holds -3"), "hv_tensor_fill: \"%s\"", hv_last_error());
    hv_step_end(g_vk);
    v = hv_item(hv_cross_entropy(logits, good_labels));
    CHECK(isfinite(v), "cross_entropy after the failed step: %g, %s", v, hv_last_error());
    hv_step_end(g_vk);

    /* scatter, found by hv_sync mid-step: pending until hv_step_end */
    out = hv_scatter(hv_slice(x, 1, 0, 2, 1), 1, bad_idx, 6);
    CHECK_NOTNULL(out);
    hv_sync(g_vk);
    CHECK_ERROR(hv_mul(x, x), "hv_scatter", "idx holds 7", "[0, 6)");
    hv_step_end(g_vk);
    CHECK(hv_item(hv_sum(hv_mul(x, x), 0, NULL, 0)) > 0, "context unusable after an index error: %s", hv_last_error());
    hv_step_end(g_vk);

    /* top-k accuracy downloads the labels anyway: checked on the host there */
    hv_clear_error();
    v = hv_topk_accuracy(logits, bad_labels, 1);
    CHECK(isnan(v) && strstr(hv_last_error(), "labels[1] = -3"), "topk with bad labels: %g, \"%s\"", v, hv_last_error());

    /* the CPU still checks at the op, and is untouched */
    xc = hv_tensor_to(x, g_cpu);
    ic = hv_tensor_to(bad_idx, g_cpu);
    CHECK_ERROR(hv_gather(xc, 1, ic), "idx[1, 1] = 7", "out of range");
    CHECK(hv_item(hv_sum(hv_ones(g_cpu, HV_SHAPE(3)), 0, NULL, 0)) == 3.0f, "CPU context broken after a Vulkan index error");
    hv_tensor_free(xc);
    hv_tensor_free(ic);
    hv_tensor_free(x);
    hv_tensor_free(logits);
    hv_tensor_free(bad_idx);
    hv_tensor_free(good_idx);
    hv_tensor_free(bad_labels);
    hv_tensor_free(good_labels);
}

/* ---- losses --------------------------------------------------------------------------------- */

static hv_tensor *op_cross_entropy(hv_tensor **in, void *u) {
    (void)u;
    return hv_cross_entropy(in[0], in[1]);
}
static hv_tensor *op_diff_loss(hv_tensor **in, void *u) { return *(int *)u ? hv_l1_loss(in[0], in[1]) : hv_mse_loss(in[0], in[1]); }
static hv_tensor *op_masked_mean(hv_tensor **in, void *u) {
    (void)u;
    return hv_masked_mean(in[0], in[1]);
}
static void test_losses(hv_ctx *unused) {
    int mode;
    vk_case c = vk_new("cross_entropy (37, 150)", 2, 1, op_cross_entropy, NULL);
    (void)unused;
    c.in[0] = rnd(HV_SHAPE(37, 150), -30, 30);
    c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(37), 150);
    c.fwd_tol = c.grad_tol = 2e-6;
    vk_check(&c);
    for (mode = 0; mode < 2; mode++) {
        c = vk_new(mode ? "l1_loss (3, 1001, 7)" : "mse_loss (3, 1001, 7)", 2, 3, op_diff_loss, &mode);
        c.in[0] = rnd(HV_SHAPE(3, 1001, 7), -1, 1);
        c.in[1] = rnd(HV_SHAPE(3, 1001, 7), -1, 1);
        c.fwd_tol = c.grad_tol = 2e-6; /* a 21021-term sum: float tree vs double */
        vk_check(&c);
    }
    c = vk_new("masked_mean (4, 9, 5) by a (4, 9, 1) mask", 2, 1, op_masked_mean, NULL);
    c.in[0] = rnd(HV_SHAPE(4, 9, 5), -1, 1);
    {
        float m[36];
        int i;
        for (i = 0; i < 36; i++) m[i] = (float)(i % 3 == 0);
        c.in[1] = hv_tensor_from(g_cpu, HV_SHAPE(4, 9, 1), m);
    }
    vk_check(&c);
    { /* top-k comes back to the host */
        hv_tensor *lc = rnd(HV_SHAPE(20, 9), -1, 1), *yc = tl_rand_index(g_cpu, HV_SHAPE(20), 9);
        hv_tensor *lv = hv_tensor_to(lc, g_vk), *yv = hv_tensor_to(yc, g_vk);
        CHECK(hv_topk_accuracy(lc, yc, 3) == hv_topk_accuracy(lv, yv, 3), "top-3 accuracy differs");
        hv_tensor_free(lc);
        hv_tensor_free(yc);
        hv_tensor_free(lv);
        hv_tensor_free(yv);
    }
}

/* ---- layout ops through the copy kernel ----------------------------------------------------- */

static hv_tensor *op_layout(hv_tensor **in, void *u) {
    hv_tensor *parts[3], *sp[2];
    int64_t sizes[2] = {2, 5};
    int axis0 = 0;
    (void)u;
    parts[0] = hv_slice(in[0], 1, 0, 3, 1);                                 /* (7, 3) */
    parts[1] = hv_transpose(in[1], 0, 1);                                   /* (7, 5) */
    parts[2] = hv_select(hv_reshape(in[0], HV_SHAPE(7, 3, 4)), 2, 1);       /* (7, 3) */
    if (hv_split(hv_concat(parts, 3, 1), 0, 2, sizes, sp)) return NULL;     /* (2, 11), (5, 11) */
    return hv_add(hv_mul(sp[1], sp[1]), hv_sum(sp[0], 1, &axis0, 1));       /* (5, 11) */
}
static void test_layout(hv_ctx *unused) {
    vk_case c = vk_new("slice/transpose/select/concat/split and their backwards", 2, 3, op_layout, NULL);
    (void)unused;
    c.in[0] = rnd(HV_SHAPE(7, 12), -1, 1);
    c.in[1] = rnd(HV_SHAPE(5, 7), -1, 1);
    vk_check(&c);
}

/* ---- conv, pool, resize, batch norm --------------------------------------------------------- */

static hv_tensor *op_conv(hv_tensor **in, void *u) { return hv_conv2d(in[0], in[1], in[2], (const hv_conv2d_desc *)u); }
static hv_tensor *op_conv_nobias(hv_tensor **in, void *u) { return hv_conv2d(in[0], in[1], NULL, (const hv_conv2d_desc *)u); }
static void test_conv(hv_ctx *unused) {
    static const hv_conv2d_desc descs[] = {{0, 0, 0, 0, 0, 0, 0}, {2, 1, 1, 2, 2, 1, 2}, {1, 1, 1, 1, 1, 1, 6}, {3, 3, 0, 0, 1, 1, 1}};
    static const int64_t cio[][4] = {{3, 5, 3, 3}, {4, 6, 3, 2}, {6, 6, 3, 3}, {3, 7, 3, 3}}; /* Cin, Cout, KH, KW */
    int i;
    (void)unused;
    for (i = 0; i < 4; i++) {
        hv_conv2d_desc d = descs[i];
        int64_t g = d.groups ? d.groups : 1;
        vk_case c = vk_new("conv2d", 3, 7, op_conv, &d);
        char label[80];
        snprintf(label, sizeof label, "conv2d case %d (stride %d, pad %d, dil %d, groups %lld)", i, d.stride_h, d.pad_h, d.dilation_h,
                 (long long)g);
        c.label = label;
        c.in[0] = rnd(HV_SHAPE(2, cio[i][0], 11, 9), -1, 1);
        c.in[1] = rnd(HV_SHAPE(cio[i][1], cio[i][0] / g, cio[i][2], cio[i][3]), -1, 1);
        c.in[2] = rnd(HV_SHAPE(cio[i][1]), -1, 1);
        c.fwd_tol = c.grad_tol = 2e-6; /* weight gradients: sums over the batch, float tree vs double */
        vk_check(&c);
    }
    {
        hv_conv2d_desc d = {14, 14, 0, 0, 0, 0, 0};
        vk_case c = vk_new("conv2d patch embedding 14x14 stride 14, no bias", 2, 3, op_conv_nobias, &d);
        c.in[0] = rnd(HV_SHAPE(2, 3, 28, 28), -1, 1);
        c.in[1] = rnd(HV_SHAPE(8, 3, 14, 14), -1, 1);
        c.fwd_tol = c.grad_tol = 2e-6;
        vk_check(&c);
    }
}
typedef struct pool_user {
    int kind; /* 0 max, 1 avg, 2 resize, 3 global avg */
    hv_pool2d_desc d;
    int64_t oh, ow;
    int ac;
} pool_user;
static hv_tensor *op_pool(hv_tensor **in, void *u) {
    pool_user *p = (pool_user *)u;
    switch (p->kind) {
    case 0: return hv_max_pool2d(in[0], &p->d);
    case 1: return hv_avg_pool2d(in[0], &p->d);
    case 2: return hv_resize_bilinear(in[0], p->oh, p->ow, p->ac);
    default: return hv_global_avg_pool(in[0]);
    }
}
static void test_pool_resize(hv_ctx *unused) {
    pool_user cases[9];
    int i, n = 0;
    (void)unused;
    memset(cases, 0, sizeof cases);
    cases[n].kind = 0, cases[n].d.kernel_h = 3, cases[n].d.kernel_w = 3, cases[n].d.stride_h = 2, cases[n].d.stride_w = 2,
    cases[n].d.pad_h = 1, cases[n++].d.pad_w = 1;
    cases[n].kind = 0, cases[n].d.kernel_h = 2, cases[n++].d.kernel_w = 3;
    cases[n].kind = 1, cases[n].d.kernel_h = 3, cases[n].d.kernel_w = 3, cases[n].d.stride_h = 2, cases[n].d.stride_w = 2,
    cases[n].d.pad_h = 1, cases[n++].d.pad_w = 1;
    cases[n] = cases[n - 1], cases[n++].d.count_exclude_pad = 1;
    cases[n].kind = 2, cases[n].oh = 17, cases[n++].ow = 5;
    cases[n].kind = 2, cases[n].oh = 17, cases[n].ow = 5, cases[n++].ac = 1;
    cases[n].kind = 2, cases[n].oh = 4, cases[n++].ow = 13;
    cases[n].kind = 2, cases[n].oh = 1, cases[n].ow = 1, cases[n++].ac = 1;
    cases[n++].kind = 3;
    for (i = 0; i < n; i++) {
        char label[64];
        vk_case c = vk_new(label, 1, 1, op_pool, &cases[i]);
        snprintf(label, sizeof label, "%s case %d", cases[i].kind == 0 ? "max_pool2d" : cases[i].kind == 1 ? "avg_pool2d" :
                 cases[i].kind == 2 ? "resize_bilinear" : "global_avg_pool", i);
        c.in[0] = rnd(HV_SHAPE(2, 3, 9, 11), -1, 1);
        vk_check(&c);
    }
}
typedef struct bn_user {
    int training, running, affine;
} bn_user;
static hv_ctx *bn_ctx_of(hv_tensor *t) { return hv_tensor_ctx(t); }
static hv_tensor *op_batch_norm(hv_tensor **in, void *u) {
    bn_user *b = (bn_user *)u;
    hv_tensor *rm = NULL, *rv = NULL;
    if (b->running) { /* arena running statistics, the same on both backends */
        float ones[5] = {1, 1.5f, 0.5f, 2, 1}, zeros[5] = {0.1f, -0.2f, 0.3f, 0, 0.05f};
        hv_ctx *ctx = bn_ctx_of(in[0]);
        rm = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(5));
        rv = hv_tensor_temp(ctx, HV_F32, HV_SHAPE(5));
        hv_tensor_copy_from(rm, zeros, sizeof zeros);
        hv_tensor_copy_from(rv, ones, sizeof ones);
    }
    {
        hv_tensor *y = hv_batch_norm(in[0], b->affine ? in[1] : NULL, b->affine ? in[2] : NULL, rm, rv, b->training, 0.1f, 1e-5f);
        /* the updated running statistics take part in the result, so they are compared too */
        return b->running && b->training ? hv_add(y, hv_reshape(hv_add(rm, rv), HV_SHAPE(1, 5, 1, 1))) : y;
    }
}
/* every mode of batch norm on x (n, 5, 7, 9) */
static void check_batch_norms(int64_t n) {
    int t, r, a;
    for (t = 0; t < 2; t++)
        for (r = 0; r < 2; r++)
            for (a = 0; a < 2; a++) {
                bn_user u;
                char label[80];
                vk_case c;
                u.training = t;
                u.running = r;
                u.affine = a;
                snprintf(label, sizeof label, "batch_norm (%lld, 5, 7, 9) training %d running %d affine %d", (long long)n, t, r, a);
                c = vk_new(label, a ? 3 : 1, a ? 7 : 1, op_batch_norm, &u);
                c.in[0] = rnd(HV_SHAPE(n, 5, 7, 9), -1, 3);
                if (a) {
                    c.in[1] = rnd(HV_SHAPE(5), 0.5f, 1.5f);
                    c.in[2] = rnd(HV_SHAPE(5), -1, 1);
                }
                c.fwd_tol = c.grad_tol = 2e-6;
                vk_check(&c);
            }
}
static void test_batch_norm(hv_ctx *unused) {
    (void)unused;
    check_batch_norms(3);
}

/* ---- optimizers: hv_optim_step, clipping and NaN checks through the backend table ---------- */

/* Each optimizer runs 4 steps on the same parameters and gradients on both backends: a matrix, a
   bias (no decay, no LARS trust ratio) and a long vector, gradients from L = sum(p * c) with random
   c (1 in 7 scaled by 1e-3, where Adam's eps matters), clipped to norm 2 on two of the steps.
   Bounds: parameters and optimizer state within 1e-5 of the CPU's scale (Adam divides by
   sqrt(v) + eps on every step: lavapipe's sqrt and division are not IEEE-exact, and the error
   compounds; measured <= ~1e-7), the norms within 1e-5 relative (the device sums in float). */
#define OPT_TOL 1e-5
static void opt_grads(hv_ctx *ctx, hv_tensor *const *p, hv_tensor *const *c, int n) {
    hv_tensor *loss = NULL;
    int i;
    for (i = 0; i < n; i++) {
        hv_tensor *t = hv_sum(hv_mul(p[i], c[i]), 0, NULL, 0);
        loss = loss ? hv_add(loss, t) : t;
    }
    CHECK(hv_backward(loss) == 0, "backward on %s: %s", hv_ctx_device_name(ctx), hv_last_error());
}
static void test_optimizers(hv_ctx *unused) {
    static const char *names[3] = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "head.weight"};
    static const char *labels[5] = {"AdamW", "Adam", "SGD (momentum, Nesterov)", "SGD (plain)", "LARS"};
    int kind;
    (void)unused;
    for (kind = 0; kind < 5; kind++) {
        hv_tensor *pc[3], *pv[3], *cc[3], *cv[3];
        hv_param_list lc, lv;
        hv_optim_desc d;
        hv_optim *oc, *ov;
        int i, step, s;
        double e = 0;
        pc[0] = rnd(HV_SHAPE(13, 9), -1, 1);
        pc[1] = rnd(HV_SHAPE(9), -1, 1);
        pc[2] = rnd(HV_SHAPE(5, 1003), -1, 1);
        for (i = 0; i < 3; i++) {
            pv[i] = hv_tensor_to(pc[i], g_vk);
            hv_set_trainable(pc[i], 1);
            hv_set_trainable(pv[i], 1);
        }
        lc.count = lv.count = 3;
        lc.names = lv.names = names;
        lc.tensors = pc;
        lv.tensors = pv;
        memset(&d, 0, sizeof d);
        d.type = kind == 0 ? HV_OPTIM_ADAMW : kind == 1 ? HV_OPTIM_ADAM : kind == 4 ? HV_OPTIM_LARS : HV_OPTIM_SGD;
        d.lr = kind == 4 ? 0.5f : 1e-2f;
        d.weight_decay = 0.05f;
        d.decay_rule = HV_DECAY_SKIP_1D;
        if (kind == 2) {
            d.momentum = 0.9f;
            d.nesterov = 1;
        }
        oc = hv_optim_new(g_cpu, &lc, &d);
        ov = hv_optim_new(g_vk, &lv, &d);
        CHECK(oc && ov, "%s: %s", labels[kind], hv_last_error());
        if (!oc || !ov) return;
        for (step = 0; step < 4; step++) {
            for (i = 0; i < 3; i++) {
                int64_t j, n = hv_numel(pc[i]);
                cc[i] = rnd(hv_tensor_shape(pc[i]), -1, 1);
                for (j = 0; j < n; j += 7) hv_data(cc[i])[j] *= 1e-3f;
                cv[i] = hv_tensor_to(cc[i], g_vk);
            }
            hv_optim_zero_grad(oc);
            hv_optim_zero_grad(ov);
            opt_grads(g_cpu, pc, cc, 3);
            opt_grads(g_vk, pv, cv, 3);
            CHECK(hv_check_finite(NULL, &lc, NULL) == 0 && hv_check_finite(NULL, &lv, NULL) == 0, "%s: %s", labels[kind], hv_last_error());
            if (step % 2) {
                double nc = hv_clip_grad_norm(&lc, 2.0f), nv = hv_clip_grad_norm(&lv, 2.0f);
                CHECK(nc > 2 && fabs(nv - nc) <= OPT_TOL * nc, "%s step %d: gradient norm %.9g on Vulkan, %.9g on the CPU", labels[kind], step, nv, nc);
            }
            CHECK(hv_optim_step(oc) == 0 && hv_optim_step(ov) == 0, "%s: %s", labels[kind], hv_last_error());
            for (i = 0; i < 3; i++) {
                hv_tensor_free(cc[i]);
                hv_tensor_free(cv[i]);
            }
            hv_step_end(g_cpu);
            hv_step_end(g_vk);
        }
        for (i = 0; i < 3; i++) {
            double ei = vk_err(pv[i], pc[i]);
            if (!(ei <= e)) e = ei;
            for (s = 0; hv_optim_state(oc, i, s); s++)
                if (!((ei = vk_err(hv_optim_state(ov, i, s), hv_optim_state(oc, i, s))) <= e)) e = ei;
        }
        CHECK(e <= OPT_TOL, "%s after 4 steps: parameters or state differ by %.3g", labels[kind], e);
        if (getenv("HV_TEST_VERBOSE")) printf("    %s: error %.3g\n", labels[kind], e);
        if (kind == 0) { /* a NaN in one gradient: found on the device, located on the host */
            float nan = NAN;
            int bad = -1;
            {
                int64_t n = hv_numel(pv[2]);
                float *g = (float *)malloc(sizeof(float) * (size_t)n);
                hv_tensor_copy_to(hv_grad(pv[2]), g, sizeof(float) * (size_t)n);
                g[1234] = nan;
                hv_tensor_copy_from(hv_grad(pv[2]), g, sizeof(float) * (size_t)n);
                free(g);
            }
            CHECK(hv_check_finite(NULL, &lv, &bad) == -1 && bad == 2 && strstr(hv_last_error(), "1 non-finite") &&
                      strstr(hv_last_error(), "index 1234"),
                  "NaN check on Vulkan: bad %d, '%s'", bad, hv_last_error());
            hv_step_end(g_vk);
        }
        hv_optim_free(oc);
        hv_optim_free(ov);
        for (i = 0; i < 3; i++) {
            hv_tensor_free(pc[i]);
            hv_tensor_free(pv[i]);
        }
    }
}

/* ---- the generated SPIR-V header matches the shader sources --------------------------------- */

static uint32_t fnv1a32_file(const char *path, int *ok) {
    FILE *f = fopen(path, "rb");
    uint32_t h = 2166136261u;
    int c;
    *ok = f != NULL;
    if (!f) return 0;
    while ((c = fgetc(f)) != EOF) h = (h ^ (uint32_t)c) * 16777619u;
    fclose(f);
    return h;
}
static void test_shader_header_current(hv_ctx *unused) {
    size_t i, n = sizeof hv__vk_shader_sources / sizeof hv__vk_shader_sources[0];
    int listed = 0, comps = 0;
    DIR *d;
    struct dirent *e;
    (void)unused;
    for (i = 0; i < n; i++) {
        char path[256];
        int ok;
        uint32_t h;
        snprintf(path, sizeof path, "kernels_vulkan/%s", hv__vk_shader_sources[i].file);
        h = fnv1a32_file(path, &ok);
        CHECK(ok, "%s is listed in kernels_vulkan/hv_shaders.h but cannot be read (run from the repository root)", path);
        CHECK(!ok || h == hv__vk_shader_sources[i].fnv1a,
              "%s changed since kernels_vulkan/hv_shaders.h was generated: run ./build.sh shaders", path);
    }
    d = opendir("kernels_vulkan");
    CHECK(d != NULL, "cannot list kernels_vulkan/");
    while (d && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        int comp = len > 5 && !strcmp(e->d_name + len - 5, ".comp"), glsl = len > 5 && !strcmp(e->d_name + len - 5, ".glsl");
        if (!comp && !glsl) continue;
        listed++;
        comps += comp;
        for (i = 0; i < n; i++)
            if (!strcmp(hv__vk_shader_sources[i].file, e->d_name)) break;
        CHECK(i < n, "kernels_vulkan/%s is not in hv_shaders.h: run ./build.sh shaders", e->d_name);
    }
    if (d) closedir(d);
    CHECK(comps == HV__VKS_COUNT, "%d .comp files but %d kernels in hv_shaders.h", comps, HV__VKS_COUNT);
}

/* ---- work over the storage-buffer range is split (or refused cleanly) ----------------------- */

static void test_range_split(hv_ctx *unused) {
    hv_ctx *small;
    (void)unused;
    /* a context that believes it may bind 4 KiB at once and stage 1 KiB at once */
    setenv("HUMANVIT_VULKAN_MAX_RANGE", "4096", 1);
    setenv("HUMANVIT_VULKAN_STAGING", "1024", 1);
    small = hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .seed = 7});
    unsetenv("HUMANVIT_VULKAN_MAX_RANGE");
    unsetenv("HUMANVIT_VULKAN_STAGING");
    CHECK_NOTNULL(small);
    if (!small) return;
    {
        hv_ctx *keep = g_vk;
        int t, op = 2;
        g_vk = small; /* vk_check runs its Vulkan half here */
        for (t = 0; t < 4; t++) {
            mm_user u;
            vk_case c;
            char label[64];
            u.ta = t & 1;
            u.tb = t >> 1;
            snprintf(label, sizeof label, "split matmul 61x70x53 ta=%d tb=%d", u.ta, u.tb);
            c = vk_new(label, 2, 3, op_matmul, &u);
            c.in[0] = rnd(u.ta ? HV_SHAPE(70, 61) : HV_SHAPE(61, 70), -1, 1);
            c.in[1] = rnd(u.tb ? HV_SHAPE(53, 70) : HV_SHAPE(70, 53), -1, 1);
            c.fwd_tol = c.grad_tol = GEMM_TOL;
            vk_check(&c);
        }
        {
            vk_case c = vk_new("split binary (40, 1, 97) * (3, 1)", 2, 3, op_binary, &op);
            c.in[0] = rnd(HV_SHAPE(40, 1, 97), -1, 1);
            c.in[1] = rnd(HV_SHAPE(3, 1), -1, 1);
            vk_check(&c);
            c = vk_new("split copy of a permuted slice", 1, 1, op_copy, NULL);
            c.in[0] = rnd(HV_SHAPE(20, 13, 9, 11), -1, 1);
            vk_check(&c);
            op = 7;
            c = vk_new("split gelu of a transposed view", 1, 1, op_unary, &op);
            c.in[0] = rnd(HV_SHAPE(33, 47, 3), -3, 3);
            c.fwd_tol = c.grad_tol = 2e-6;
            vk_check(&c);
        }
        { /* row, batch and head splitting of the other kernels */
            at_user au = {1, 0.0f};
            ln_user lu = {3, 1e-5f};
            sm_user su = {2, 1, 0};
            hv_conv2d_desc cd = {2, 1, 1, 1, 1, 1, 1};
            pool_user pu;
            int gaxis = 1, sn = 11;
            vk_case c;
            c = vk_new("split attention (3, 12, 4, 16) permuted", 3, 7, op_attention, &au);
            c.in[0] = rnd(HV_SHAPE(3, 12, 4, 16), -1, 1);
            c.in[1] = rnd(HV_SHAPE(3, 14, 4, 16), -1, 1);
            c.in[2] = rnd(HV_SHAPE(3, 14, 4, 16), -1, 1);
            c.fwd_tol = 2e-6;
            c.grad_tol = 4e-6;
            vk_check(&c);
            c = vk_new("split layer_norm (60, 33)", 3, 7, op_layer_norm, &lu);
            c.in[0] = rnd(HV_SHAPE(2, 30, 33), -1, 1);
            c.in[1] = rnd(HV_SHAPE(33), 0.5f, 1.5f);
            c.in[2] = rnd(HV_SHAPE(33), -1, 1);
            c.fwd_tol = c.grad_tol = 2e-6;
            vk_check(&c);
            c = vk_new("split log_softmax (7, 40, 37) last axis", 1, 1, op_softmax, &su);
            c.in[0] = rnd(HV_SHAPE(7, 40, 37), -3, 3);
            c.fwd_tol = c.grad_tol = 2e-6;
            vk_check(&c);
            c = vk_new("split cross_entropy (50, 30)", 2, 1, op_cross_entropy, NULL);
            c.in[0] = rnd(HV_SHAPE(50, 30), -3, 3);
            c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(50), 30);
            c.fwd_tol = c.grad_tol = 2e-6;
            vk_check(&c);
            c = vk_new("split gather (6, 40, 8), 9 picks", 2, 1, op_gather, &gaxis);
            c.in[0] = rnd(HV_SHAPE(6, 40, 8), -1, 1);
            c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(6, 9), 40);
            vk_check(&c);
            c = vk_new("split scatter (6, 9, 8) into 11 rows", 2, 1, op_scatter, &sn);
            c.in[0] = rnd(HV_SHAPE(6, 9, 8), -1, 1);
            c.in[1] = tl_rand_index(g_cpu, HV_SHAPE(6, 9), 11);
            vk_check(&c);
            c = vk_new("split conv2d (5, 3, 11, 9)", 3, 7, op_conv, &cd);
            c.in[0] = rnd(HV_SHAPE(5, 3, 11, 9), -1, 1);
            c.in[1] = rnd(HV_SHAPE(4, 3, 3, 3), -1, 1);
            c.in[2] = rnd(HV_SHAPE(4), -1, 1);
            c.fwd_tol = c.grad_tol = 2e-6;
            vk_check(&c);
            memset(&pu, 0, sizeof pu);
            pu.kind = 0;
            pu.d.kernel_h = pu.d.kernel_w = 3;
            pu.d.stride_h = pu.d.stride_w = 2;
            pu.d.pad_h = pu.d.pad_w = 1;
            c = vk_new("split max_pool2d (6, 3, 9, 11)", 1, 1, op_pool, &pu);
            c.in[0] = rnd(HV_SHAPE(6, 3, 9, 11), -1, 1);
            vk_check(&c);
            pu.kind = 2;
            pu.oh = 13;
            pu.ow = 7;
            c = vk_new("split resize_bilinear (6, 3, 9, 11) -> (13, 7)", 1, 1, op_pool, &pu);
            c.in[0] = rnd(HV_SHAPE(6, 3, 9, 11), -1, 1);
            vk_check(&c);
        }
        { /* the kernels that work in parts of one binding: reductions and max's backward (a reduced
             axis in parts), softmax over rows longer than a binding (axis 0 of (5, 131, 3)),
             the MSE/L1 sums, cross-entropy, the optimizers and their norms, batch norm */
            int lg;
            vk_case c;
            test_reductions(NULL);
            test_softmax(NULL);
            test_losses(NULL);
            test_optimizers(NULL);
            for (lg = 0; lg < 2; lg++) {
                sm_user u = {1, 0, 0};
                u.is_log = lg;
                c = vk_new(lg ? "split log_softmax of rows of 2100" : "split softmax of rows of 2100", 1, 1, op_softmax, &u);
                c.in[0] = rnd(HV_SHAPE(1, 2, 2100), -6, 6);
                c.fwd_tol = c.grad_tol = 2e-6;
                vk_check(&c);
            }
            check_batch_norms(12); /* 3 images of 315 values per part of ~1000 */
        }
        g_vk = keep;
        { /* a kernel that cannot split (one row of a layer norm over the range): a clean error, no
             crash, and the context goes on */
            hv_tensor *x = hv_zeros(small, HV_SHAPE(2, 1100));
            CHECK_ERROR(hv_layer_norm(x, NULL, NULL, 1e-5f), "maxStorageBufferRange", "cannot split");
            CHECK(hv_item(hv_sum(hv_add_scalar(hv_slice(x, 0, 0, 1, 1), 1.0f), 0, NULL, 0)) == 1100.0f, "context unusable after a refused kernel");
            hv_tensor_free(x);
        }
    }
    hv_shutdown(small);
}

/* ---- faults: no loader, no device, bad device, too much memory, mixed backends -------------- */

static void test_faults(hv_ctx *unused) {
    hv_ctx *c;
    (void)unused;
    setenv("HUMANVIT_VULKAN_LOADER", "/nonexistent/libvulkan.so.1", 1);
    CHECK_ERROR(hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN}), "no Vulkan loader", "/nonexistent/libvulkan.so.1");
    unsetenv("HUMANVIT_VULKAN_LOADER");
    /* no driver: the loader finds no ICD */
    setenv("VK_ICD_FILENAMES", "/nonexistent/icd.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent/icd.json", 1);
    hv_clear_error();
    c = hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN});
    CHECK(c == NULL && strstr(hv_last_error(), "Vulkan"), "no driver: want NULL and an error, got %p: %s", (void *)c, hv_last_error());
    hv_shutdown(c);
    unsetenv("VK_ICD_FILENAMES");
    unsetenv("VK_DRIVER_FILES");
    CHECK_ERROR(hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .device = "no-such-gpu"}), "no Vulkan device matches 'no-such-gpu'",
                "devices:");
    CHECK_ERROR(hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .device = "99"}), "device 99 does not exist");
    setenv("HUMANVIT_VULKAN_DEVICE", "no-such-gpu", 1);
    CHECK_ERROR(hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN}), "no-such-gpu");
    unsetenv("HUMANVIT_VULKAN_DEVICE");
    { /* by index and by a part of the name, in any case */
        char part[8];
        size_t i;
        hv_ctx *a = hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .device = "0"}), *b;
        CHECK_NOTNULL(a);
        for (i = 0; i < 4 && hv_ctx_device_name(g_vk)[i]; i++) {
            char ch = hv_ctx_device_name(g_vk)[i];
            part[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
        }
        part[i] = 0;
        b = hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .device = part});
        CHECK(b && !strcmp(hv_ctx_device_name(b), hv_ctx_device_name(g_vk)), "device by name '%s': %s", part, hv_last_error());
        hv_shutdown(a);
        hv_shutdown(b);
    }
    /* the CPU context is untouched by all this */
    CHECK(hv_item(hv_sum(hv_ones(g_cpu, HV_SHAPE(3)), 0, NULL, 0)) == 3.0f, "CPU context broken after Vulkan failures");
    /* more memory than one allocation may hold: an error, not a crash */
    CHECK_ERROR(hv_zeros(g_vk, HV_SHAPE(1 << 20, 1 << 15)), "exceed the largest allocation");
    CHECK_ERROR(hv_tensor_temp(g_vk, HV_F32, HV_SHAPE(1 << 20, 1 << 15)), "exceed the largest allocation");
    { /* mixing backends in one op */
        hv_tensor *a = hv_ones(g_cpu, HV_SHAPE(2, 3)), *b = hv_ones(g_vk, HV_SHAPE(2, 3)), *back;
        float v[6];
        CHECK_ERROR(hv_add(a, b), "lives on cpu", "on vulkan", "hv_tensor_to");
        CHECK_ERROR(hv_matmul(b, a, 0, 1), "lives on vulkan", "on cpu");
        CHECK(hv_tensor_assign(a, b) == -1 && strstr(hv_last_error(), "different contexts"), "assign across backends");
        back = hv_tensor_to(b, g_cpu); /* explicit moves work both ways */
        CHECK(back && hv_data(back) && hv_data(back)[5] == 1.0f, "hv_tensor_to back to the CPU");
        CHECK(hv_tensor_copy_to(hv_tensor_to(back, g_vk), v, sizeof v) == 0 && v[0] == 1.0f, "round trip");
        hv_tensor_free(a);
        hv_tensor_free(b);
        hv_tensor_free(back);
    }
}

/* ---- batching: a forward and backward pass is one submission -------------------------------- */

static hv_tensor *mlp_loss(hv_tensor *x, hv_tensor *const *p, hv_tensor *target) {
    hv_tensor *h = hv_gelu(hv_linear(x, p[0], p[1]));
    return hv_mse_loss(hv_linear(h, p[2], p[3]), target);
}
static void test_batching(hv_ctx *unused) {
    hv__vk *vk = HV__VK(g_vk);
    hv_tensor *p[4], *x, *t, *loss;
    uint64_t submits, dispatches;
    int i;
    (void)unused;
    p[0] = hv_randn(g_vk, HV_SHAPE(32, 16), 0, 0.3f);
    p[1] = hv_zeros(g_vk, HV_SHAPE(32));
    p[2] = hv_randn(g_vk, HV_SHAPE(4, 32), 0, 0.3f);
    p[3] = hv_zeros(g_vk, HV_SHAPE(4));
    for (i = 0; i < 4; i++) hv_set_trainable(p[i], 1);
    x = hv_randn(g_vk, HV_SHAPE(64, 16), 0, 1);
    t = hv_randn(g_vk, HV_SHAPE(64, 4), 0, 1);
    hv_sync(g_vk);
    submits = vk->n_submits;
    dispatches = vk->n_dispatches;
    loss = mlp_loss(x, p, t);
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    CHECK(vk->n_submits == submits, "forward + backward submitted %llu times before the host needed data",
          (unsigned long long)(vk->n_submits - submits));
    CHECK(vk->n_dispatches - dispatches >= 10, "only %llu dispatches recorded", (unsigned long long)(vk->n_dispatches - dispatches));
    CHECK(hv_item(loss) > 0, "loss");
    CHECK(vk->n_submits == submits + 1, "reading the loss: %llu submissions, want 1", (unsigned long long)(vk->n_submits - submits));
    hv_step_end(g_vk);
    for (i = 0; i < 4; i++) hv_tensor_free(p[i]);
    hv_tensor_free(x);
    hv_tensor_free(t);
}

/* ---- a steady training loop allocates nothing: no malloc, no device memory ------------------ */

static void test_steady_state(hv_ctx *unused) {
    hv__vk *vk = HV__VK(g_vk);
    hv_tensor *p[4], *x, *t;
    uint64_t mallocs = 0, blocks = 0;
    int i, step;
    (void)unused;
    p[0] = hv_randn(g_vk, HV_SHAPE(32, 16), 0, 0.3f);
    p[1] = hv_zeros(g_vk, HV_SHAPE(32));
    p[2] = hv_randn(g_vk, HV_SHAPE(4, 32), 0, 0.3f);
    p[3] = hv_zeros(g_vk, HV_SHAPE(4));
    for (i = 0; i < 4; i++) hv_set_trainable(p[i], 1);
    x = hv_randn(g_vk, HV_SHAPE(300, 16), 0, 1);
    t = hv_randn(g_vk, HV_SHAPE(300, 4), 0, 1);
    for (step = 0; step < 6; step++) {
        hv_tensor *loss = mlp_loss(x, p, t);
        int prev;
        hv_backward(loss);
        prev = hv_set_grad_enabled(g_vk, 0);
        for (i = 0; i < 4; i++) {
            hv_tensor_assign(p[i], hv_sub(p[i], hv_scale(hv_grad(p[i]), 0.01f)));
            hv_zero_grad(p[i]);
        }
        hv_set_grad_enabled(g_vk, prev);
        (void)hv_item(loss);
        hv_step_end(g_vk);
        if (step == 2) {
            mallocs = hv_alloc_count();
            blocks = vk->n_block_allocs;
        }
    }
    CHECK(hv_alloc_count() == mallocs, "%llu host allocations in steady state", (unsigned long long)(hv_alloc_count() - mallocs));
    CHECK(vk->n_block_allocs == blocks, "%llu device allocations in steady state", (unsigned long long)(vk->n_block_allocs - blocks));
    for (i = 0; i < 4; i++) hv_tensor_free(p[i]);
    hv_tensor_free(x);
    hv_tensor_free(t);
}


/* ---- whole training steps: ViT (classification head with BatchNorm) and MAE ----------------- */

/* the largest gradient error over a model's parameters, relative to the largest gradient of the
   model: some gradients are zero in exact arithmetic (the final norm's bias under a batch-statistics
   BatchNorm head sums to zero over the batch), and rounding noise over their own scale says nothing */
static double params_grad_err(const hv_param_list *pc, const hv_param_list *pv, const char **worst) {
    double scale = 1e-30, e = 0;
    int i;
    for (i = 0; i < pc->count; i++) {
        hv_tensor *gc = hv_grad(pc->tensors[i]);
        int64_t n, j;
        float *v;
        if (!gc) continue;
        n = hv_numel(gc);
        v = (float *)malloc(sizeof(float) * (size_t)(n + 1));
        hv_tensor_copy_to(gc, v, sizeof(float) * (size_t)n);
        for (j = 0; j < n; j++)
            if (fabs(v[j]) > scale) scale = fabs(v[j]);
        free(v);
    }
    for (i = 0; i < pc->count; i++) {
        hv_tensor *gc = hv_grad(pc->tensors[i]), *gv = hv_grad(pv->tensors[i]);
        int64_t n, j;
        float *a, *b;
        double ei = 0;
        if (!gc && !gv) continue;
        if (!gc || !gv) {
            *worst = pc->names[i];
            return INFINITY;
        }
        n = hv_numel(gc);
        a = (float *)malloc(sizeof(float) * (size_t)(n + 1));
        b = (float *)malloc(sizeof(float) * (size_t)(n + 1));
        hv_tensor_copy_to(gc, a, sizeof(float) * (size_t)n);
        hv_tensor_copy_to(gv, b, sizeof(float) * (size_t)n);
        for (j = 0; j < n; j++)
            if (!(fabs(a[j] - b[j]) <= ei)) ei = fabs(a[j] - b[j]);
        free(a);
        free(b);
        if (!(ei / scale <= e)) {
            e = ei / scale;
            *worst = pc->names[i];
        }
    }
    return e;
}
static double params_err(const hv_param_list *pc, const hv_param_list *pv) {
    double e = 0, ei;
    int i;
    for (i = 0; i < pc->count; i++)
        if (hv_tensor_dtype(pc->tensors[i]) == HV_F32 && !((ei = vk_err(pv->tensors[i], pc->tensors[i])) <= e)) e = ei;
    return e;
}
/* p -= lr * grad, grads cleared: the same plain SGD on both backends */
static void sgd_step(hv_ctx *ctx, const hv_param_list *pl, float lr) {
    int i, prev = hv_set_grad_enabled(ctx, 0);
    for (i = 0; i < pl->count; i++) {
        hv_tensor *p = pl->tensors[i];
        if (!hv_grad(p)) continue;
        hv_tensor_assign(p, hv_sub(p, hv_scale(hv_grad(p), lr)));
        hv_zero_grad(p);
    }
    hv_set_grad_enabled(ctx, prev);
}
/* Bounds: after several layers and steps, float rounding in another order compounds. Losses
   within 1e-5 relative, gradients within 1e-4 of the model's gradient scale (lavapipe measures
   ~1e-7 and <= 3e-6). */
#define STEP_LOSS_TOL 1e-5
#define STEP_GRAD_TOL 1e-4

/* one training step's results on both backends: the losses and every gradient compared, then the
   same SGD update and the end of the step on both. 0, or -1 when a pass failed. */
static int compare_step(const char *model, int step, hv_tensor *lc, hv_tensor *lv, const hv_param_list *pc, const hv_param_list *pv) {
    const char *worst = "";
    double eg;
    float fc, fv;
    if (!lc || !lv || hv_backward(lc) || hv_backward(lv)) {
        CHECK(0, "%s step %d: %s", model, step, hv_last_error());
        return -1;
    }
    fc = hv_item(lc);
    fv = hv_item(lv);
    CHECK(fabs(fc - fv) <= STEP_LOSS_TOL * fabs(fc), "%s step %d: loss %.8g on Vulkan, %.8g on CPU", model, step, fv, fc);
    eg = params_grad_err(pc, pv, &worst);
    CHECK(eg <= STEP_GRAD_TOL, "%s step %d: gradient of %s: error %.3g", model, step, worst, eg);
    if (getenv("HV_TEST_VERBOSE")) printf("    %s step %d loss %.8g / %.8g, grad error %.2g (%s)\n", model, step, fc, fv, eg, worst);
    sgd_step(g_cpu, pc, 0.05f);
    sgd_step(g_vk, pv, 0.05f);
    hv_step_end(g_cpu);
    hv_step_end(g_vk);
    return 0;
}

/* the small models of the step tests: 28x28 images of 16 patches, two blocks of width 32; the
   ViT with the BatchNorm head, the MAE with a one-block decoder and per-patch normalised targets */
static hv_mae_desc tiny_mae_desc(void) {
    hv_mae_desc d;
    memset(&d, 0, sizeof d);
    d.encoder = tiny_vit_desc(2, 0, 0);
    d.decoder_embed_dim = 24;
    d.decoder_depth = 1;
    d.decoder_num_heads = 4;
    d.mask_ratio = 0.75f;
    d.norm_pix_loss = 1;
    return d;
}

static void test_vit_training_steps(hv_ctx *unused) {
    hv_vit_desc d = tiny_vit_desc(2, 10, 0);
    hv_vit *mc, *mv;
    hv_tensor *xc, *yc, *xv, *yv;
    int step;
    (void)unused;
    hv_rng_seed(g_cpu, 11);
    hv_rng_seed(g_vk, 11);
    mc = hv_vit_new(g_cpu, &d);
    mv = hv_vit_new(g_vk, &d);
    CHECK_NOTNULL(mc);
    CHECK_NOTNULL(mv);
    if (!mc || !mv) return;
    CHECK(params_err(hv_vit_params(mc), hv_vit_params(mv)) == 0, "the same seed made different ViT parameters");
    xc = rnd(HV_SHAPE(6, 3, 28, 28), -1, 1);
    yc = tl_rand_index(g_cpu, HV_SHAPE(6), 10);
    xv = hv_tensor_to(xc, g_vk);
    yv = hv_tensor_to(yc, g_vk);
    for (step = 0; step < 3; step++) {
        hv_tensor *lc = hv_cross_entropy(hv_vit_forward(mc, xc, 1), yc), *lv = hv_cross_entropy(hv_vit_forward(mv, xv, 1), yv);
        if (compare_step("ViT", step, lc, lv, hv_vit_params(mc), hv_vit_params(mv))) break;
    }
    { /* BatchNorm's running statistics and batch counter moved the same way */
        const hv_param_list *pc = hv_vit_params(mc), *pv = hv_vit_params(mv);
        int i;
        for (i = 0; i < pc->count; i++) {
            if (!strstr(pc->names[i], "head.0.")) continue;
            if (hv_tensor_dtype(pc->tensors[i]) == HV_I32) {
                int32_t a, b;
                hv_tensor_copy_to(pc->tensors[i], &a, 4);
                hv_tensor_copy_to(pv->tensors[i], &b, 4);
                CHECK(a == 3 && b == 3, "%s: %d on the CPU, %d on Vulkan", pc->names[i], a, b);
            } else {
                double e = vk_err(pv->tensors[i], pc->tensors[i]);
                CHECK(e <= STEP_GRAD_TOL, "%s after 3 steps: error %.3g", pc->names[i], e);
            }
        }
    }
    hv_vit_free(mc);
    hv_vit_free(mv);
    hv_tensor_free(xc);
    hv_tensor_free(yc);
    hv_tensor_free(xv);
    hv_tensor_free(yv);
}

/* bytes of the Vulkan step pool in use */
static uint64_t vk_pool_used(void) {
    hv__vk *vk = HV__VK(g_vk);
    uint64_t used = 0;
    uint32_t i;
    for (i = 0; i < vk->npool; i++) used += vk->pool[i]->used;
    return used;
}
/* the backward releases dead gradients and the model's internal activations on a device too
   (hv__store in humanvit.h): the step pool grows by under half the forward's (measured 0.3x here;
   1.55x without the reuse) */
static void test_step_memory(hv_ctx *unused) {
    hv_vit_desc d = tiny_vit_desc(2, 10, 0);
    hv_vit *m = hv_vit_new(g_vk, &d);
    hv_tensor *x = hv_randn(g_vk, HV_SHAPE(16, 3, 28, 28), 0, 1), *y = hv_tensor_to(tl_rand_index(g_cpu, HV_SHAPE(16), 10), g_vk);
    uint64_t fwd, bwd;
    (void)unused;
    CHECK_NOTNULL(m);
    CHECK_NOTNULL(y);
    if (!m || !y) return;
    hv_step_end(g_vk);
    {
        hv_tensor *loss = hv_cross_entropy(hv_vit_forward(m, x, 1), y);
        fwd = vk_pool_used();
        CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
        bwd = vk_pool_used();
    }
    printf("  step pool: %.0f KiB after the forward, %.0f KiB after the backward\n", fwd / 1024.0, bwd / 1024.0);
    CHECK(bwd - fwd < fwd / 2, "the backward grew the step pool from %llu to %llu bytes", (unsigned long long)fwd, (unsigned long long)bwd);
    hv_step_end(g_vk);
    hv_vit_free(m);
    hv_tensor_free(x);
    hv_tensor_free(y);
}

static void test_mae_training_steps(hv_ctx *unused) {
    hv_mae_desc d = tiny_mae_desc();
    hv_mae *mc, *mv;
    hv_tensor *xc, *xv;
    int step;
    (void)unused;
    hv_rng_seed(g_cpu, 12);
    hv_rng_seed(g_vk, 12);
    mc = hv_mae_new(g_cpu, &d);
    mv = hv_mae_new(g_vk, &d);
    CHECK_NOTNULL(mc);
    CHECK_NOTNULL(mv);
    if (!mc || !mv) return;
    CHECK(params_err(hv_mae_params(mc), hv_mae_params(mv)) == 0, "the same seed made different MAE parameters");
    xc = rnd(HV_SHAPE(2, 3, 28, 28), -1, 1);
    xv = hv_tensor_to(xc, g_vk);
    hv_rng_seed(g_cpu, 13); /* the masks are drawn from each context's stream: the same */
    hv_rng_seed(g_vk, 13);
    for (step = 0; step < 4; step++) {
        hv_tensor *mask_c, *mask_v, *lc, *lv, *nc = NULL, *nv = NULL;
        if (step == 3) { /* noise given by the caller: on Vulkan it comes down for the argsort */
            nc = rnd(HV_SHAPE(2, 16), 0, 1);
            nv = hv_tensor_to(nc, g_vk);
        }
        lc = hv_mae_forward(mc, xc, nc, NULL, &mask_c);
        lv = hv_mae_forward(mv, xv, nv, NULL, &mask_v);
        CHECK(lc && lv && vk_err(mask_v, mask_c) == 0, "MAE step %d: the masks differ", step);
        hv_tensor_free(nc);
        hv_tensor_free(nv);
        if (compare_step("MAE", step, lc, lv, hv_mae_params(mc), hv_mae_params(mv))) break;
    }
    hv_mae_free(mc);
    hv_mae_free(mv);
    hv_tensor_free(xc);
    hv_tensor_free(xv);
}

/* ---- queue waits per training step: what the manual (VULKAN) documents --------------------- */

/* the most queue waits (submit + wait: n_submits) of steps 1..3 of a training loop as the trainers
   run it: batch upload, forward, backward, AdamW, the loss read once, hv_step_end */
static uint64_t waits_per_step(hv_tensor *(*loss_fn)(void *model, int step), void *model, const hv_param_list *params, hv_tensor *batch,
                               const float *host, size_t bytes) {
    hv__vk *vk = HV__VK(g_vk);
    hv_optim_desc od;
    hv_optim *opt;
    uint64_t most = 0;
    int step;
    memset(&od, 0, sizeof od);
    od.lr = 1e-3f;
    opt = hv_optim_new(g_vk, params, &od);
    CHECK_NOTNULL(opt);
    for (step = 0; opt && step < 4; step++) {
        uint64_t before = vk->n_submits;
        hv_tensor *loss;
        hv_tensor_copy_from(batch, host, bytes);
        loss = loss_fn(model, step);
        hv_optim_zero_grad(opt);
        CHECK(loss && hv_backward(loss) == 0 && hv_optim_step(opt) == 0, "step %d: %s", step, hv_last_error());
        CHECK(isfinite(hv_item(loss)), "step %d: loss %s", step, hv_last_error());
        hv_step_end(g_vk);
        if (step > 0 && vk->n_submits - before > most) most = vk->n_submits - before;
    }
    hv_optim_free(opt);
    return most;
}
static hv_tensor *g_wait_x, *g_wait_y, *g_wait_noise;
static hv_tensor *vit_step_loss(void *m, int step) {
    (void)step;
    return hv_cross_entropy(hv_vit_forward((hv_vit *)m, g_wait_x, 1), g_wait_y);
}
static hv_tensor *mae_step_loss(void *m, int step) {
    (void)step;
    return hv_mae_forward((hv_mae *)m, g_wait_x, g_wait_noise, NULL, NULL);
}
static void test_step_waits(hv_ctx *unused) {
    hv_vit_desc vd = tiny_vit_desc(2, 10, 0);
    hv_mae_desc md = tiny_mae_desc();
    hv_vit *vit;
    hv_mae *mae;
    float *host;
    int32_t labels[4] = {1, 7, 0, 3};
    size_t bytes = sizeof(float) * 4 * 3 * 28 * 28, i;
    uint64_t w;
    (void)unused;
    host = (float *)malloc(bytes);
    for (i = 0; i < bytes / sizeof(float); i++) host[i] = (float)((i * 7919) % 255) / 255.0f;
    g_wait_x = hv_tensor_new(g_vk, HV_F32, HV_SHAPE(4, 3, 28, 28));
    g_wait_y = vk_index(labels, HV_SHAPE(4));
    vit = hv_vit_new(g_vk, &vd); /* the BatchNorm head: its counter stays on the device */
    CHECK_NOTNULL(vit);
    if (vit) {
        w = waits_per_step(vit_step_loss, vit, hv_vit_params(vit), g_wait_x, host, bytes);
        CHECK(w == 1, "ViT training step: %llu queue waits, the manual says 1", (unsigned long long)w);
        hv_vit_free(vit);
    }
    mae = hv_mae_new(g_vk, &md);
    CHECK_NOTNULL(mae);
    if (mae) { /* the library's noise and masking indices go up without a wait */
        w = waits_per_step(mae_step_loss, mae, hv_mae_params(mae), g_wait_x, host, bytes);
        CHECK(w == 1, "MAE training step: %llu queue waits, the manual says 1", (unsigned long long)w);
        /* noise passed by the caller comes down for the host's argsort: one wait more */
        g_wait_noise = hv_tensor_new(g_vk, HV_F32, HV_SHAPE(4, 16));
        if (g_wait_noise) hv_tensor_copy_from(g_wait_noise, host + 100, sizeof(float) * 64);
        w = waits_per_step(mae_step_loss, mae, hv_mae_params(mae), g_wait_x, host, bytes);
        CHECK(w == 2, "MAE training step with the caller's noise: %llu queue waits, the manual says 2", (unsigned long long)w);
        hv_tensor_free(g_wait_noise);
        g_wait_noise = NULL;
        hv_mae_free(mae);
    }
    hv_tensor_free(g_wait_x);
    hv_tensor_free(g_wait_y);
    free(host);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_cpu = hv_init(&(hv_init_desc){.seed = 7});
    g_vk = hv_init(&(hv_init_desc){.backend = HV_BACKEND_VULKAN, .seed = 7});
    if (!g_vk) {
        printf("SKIP test_vulkan: %s\n", hv_last_error());
        hv_shutdown(g_cpu);
        printf("0 passed, 0 failed\n");
        return 0;
    }
    printf("test_vulkan on %s\n", hv_ctx_device_name(g_vk));
    TL_RUN(g_cpu, test_shader_header_current);
    TL_RUN(g_cpu, test_copy_fill);
    TL_RUN(g_cpu, test_binary);
    TL_RUN(g_cpu, test_unary);
    TL_RUN(g_cpu, test_matmul);
    TL_RUN(g_cpu, test_reductions);
    TL_RUN(g_cpu, test_softmax);
    TL_RUN(g_cpu, test_layer_norm);
    TL_RUN(g_cpu, test_attention);
    TL_RUN(g_cpu, test_gather_scatter);
    TL_RUN(g_cpu, test_index_errors);
    TL_RUN(g_cpu, test_losses);
    TL_RUN(g_cpu, test_layout);
    TL_RUN(g_cpu, test_conv);
    TL_RUN(g_cpu, test_pool_resize);
    TL_RUN(g_cpu, test_batch_norm);
    TL_RUN(g_cpu, test_optimizers);
    TL_RUN(g_cpu, test_range_split);
    TL_RUN(g_cpu, test_faults);
    TL_RUN(g_cpu, test_batching);
    TL_RUN(g_cpu, test_steady_state);
    TL_RUN(g_cpu, test_vit_training_steps);
    TL_RUN(g_cpu, test_step_memory);
    TL_RUN(g_cpu, test_mae_training_steps);
    TL_RUN(g_cpu, test_step_waits);
    hv_shutdown(g_vk);
    hv_shutdown(g_cpu);
    TL_DONE();
}
