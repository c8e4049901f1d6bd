/* test_vulkan.c - the Vulkan backend against the CPU reference, op by op, then whole training
   steps. Built with the backend (the define below); `./build.sh test` runs it on whatever device
   the Vulkan loader finds (lavapipe in CI), and prints a SKIP line and no failures when there is
   no loader or no device.

   Every op case makes its inputs on the CPU context, copies them to the Vulkan context
   (hv_tensor_to), runs the op on both, and compares the forward result and, through
   L = sum(out * r) with a random r, the gradient of every input, by the normalised error
   max |vulkan - cpu| / max |cpu|. The bound is 1e-6 for f32 unless a case says why not. */
#define HUMANVIT_VULKAN
#define HUMANVIT_IMPLEMENTATION
#include "testlib.h"

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
    TL_RUN(g_cpu, test_copy_fill);
    TL_RUN(g_cpu, test_binary);
    TL_RUN(g_cpu, test_unary);
    TL_RUN(g_cpu, test_matmul);
    hv_shutdown(g_vk);
    hv_shutdown(g_cpu);
    TL_DONE();
}
