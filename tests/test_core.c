/* test_core.c - tensors, layout views, elementwise ops, reductions, matmul and the tape */
#include "testlib.h"

/* ---- references ----------------------------------------------------------------------------- */

typedef struct mm_case {
    int ta, tb;
    int64_t batch_a, batch_b, m, k, n; /* batch 0: no batch axis */
} mm_case;
static void ref_matmul(const double *const *in, double *out, void *user) {
    mm_case *c = (mm_case *)user;
    int64_t nb = c->batch_a > c->batch_b ? c->batch_a : c->batch_b, bi, i, j, p;
    if (nb == 0) nb = 1;
    for (bi = 0; bi < nb; bi++) {
        const double *A = in[0] + (c->batch_a > 1 ? bi : 0) * c->m * c->k;
        const double *B = in[1] + (c->batch_b > 1 ? bi : 0) * c->k * c->n;
        for (i = 0; i < c->m; i++)
            for (j = 0; j < c->n; j++) {
                double s = 0;
                for (p = 0; p < c->k; p++)
                    s += (c->ta ? A[p * c->m + i] : A[i * c->k + p]) * (c->tb ? B[j * c->k + p] : B[p * c->n + j]);
                out[(bi * c->m + i) * c->n + j] = s;
            }
    }
}
static hv_tensor *op_matmul(hv_tensor **in, void *user) {
    mm_case *c = (mm_case *)user;
    return hv_matmul(in[0], in[1], c->ta, c->tb);
}
static hv_shape mm_shape(int64_t batch, int64_t r, int64_t c, int trans) {
    return batch ? hv_shape_of(3, (int64_t[]){batch, trans ? c : r, trans ? r : c}) : hv_shape_of(2, (int64_t[]){trans ? c : r, trans ? r : c});
}
/* two batch axes, broadcast either way: (A0, A1, m, k) x (B0, B1, k, n). The product's batch
   loop hands runs of matrices that one stride walks to the GEMM in one call, and accumulates
   the gradient of a broadcast operand matrix by matrix: both are checked here */
typedef struct mm2_case {
    int ta, tb;
    int64_t ba[2], bb[2], m, k, n;
} mm2_case;
static void ref_matmul2(const double *const *in, double *out, void *user) {
    mm2_case *c = (mm2_case *)user;
    int64_t b0, b1, i, j, p, n0 = c->ba[0] > c->bb[0] ? c->ba[0] : c->bb[0], n1 = c->ba[1] > c->bb[1] ? c->ba[1] : c->bb[1];
    for (b0 = 0; b0 < n0; b0++)
        for (b1 = 0; b1 < n1; b1++) {
            const double *A = in[0] + ((c->ba[0] > 1 ? b0 : 0) * c->ba[1] + (c->ba[1] > 1 ? b1 : 0)) * c->m * c->k;
            const double *B = in[1] + ((c->bb[0] > 1 ? b0 : 0) * c->bb[1] + (c->bb[1] > 1 ? b1 : 0)) * c->k * c->n;
            for (i = 0; i < c->m; i++)
                for (j = 0; j < c->n; j++) {
                    double s = 0;
                    for (p = 0; p < c->k; p++)
                        s += (c->ta ? A[p * c->m + i] : A[i * c->k + p]) * (c->tb ? B[j * c->k + p] : B[p * c->n + j]);
                    out[((b0 * n1 + b1) * c->m + i) * c->n + j] = s;
                }
        }
}
static hv_tensor *op_matmul2(hv_tensor **in, void *user) {
    mm2_case *c = (mm2_case *)user;
    return hv_matmul(in[0], in[1], c->ta, c->tb);
}
static void test_matmul_batch_axes(hv_ctx *ctx) {
    static const int64_t batches[][4] = {{2, 3, 2, 3}, {2, 3, 1, 3}, {2, 1, 1, 3}, {1, 3, 2, 3}, {2, 3, 2, 1}};
    int t, b;
    for (b = 0; b < 5; b++)
        for (t = 0; t < 4; t += 3) {
            mm2_case c;
            tl_case tc;
            char label[80];
            c.ta = t & 1;
            c.tb = t >> 1;
            c.ba[0] = batches[b][0];
            c.ba[1] = batches[b][1];
            c.bb[0] = batches[b][2];
            c.bb[1] = batches[b][3];
            c.m = 4 + b;
            c.k = 6;
            c.n = 3 + t;
            memset(&tc, 0, sizeof tc);
            snprintf(label, sizeof label, "matmul ta=%d tb=%d batch (%lld, %lld) x (%lld, %lld)", c.ta, c.tb, (long long)c.ba[0], (long long)c.ba[1],
                     (long long)c.bb[0], (long long)c.bb[1]);
            tc.label = label;
            tc.nin = 2;
            tc.in[0] = tl_rand(ctx, HV_SHAPE(c.ba[0], c.ba[1], c.ta ? c.k : c.m, c.ta ? c.m : c.k), -1, 1);
            tc.in[1] = tl_rand(ctx, HV_SHAPE(c.bb[0], c.bb[1], c.tb ? c.n : c.k, c.tb ? c.k : c.n), -1, 1);
            tc.grad_mask = 3;
            tc.op = op_matmul2;
            tc.ref = ref_matmul2;
            tc.user = &c;
            tl_check_op(&tc);
            hv_tensor_free(tc.in[0]);
            hv_tensor_free(tc.in[1]);
        }
}

static void test_matmul(hv_ctx *ctx) {
    static const int64_t batches[][2] = {{0, 0}, {3, 3}, {2, 0}, {1, 4}, {3, 1}};
    int t, b;
    for (b = 0; b < 5; b++)
        for (t = 0; t < 4; t++) {
            mm_case c;
            tl_case tc;
            char label[64];
            c.ta = t & 1;
            c.tb = t >> 1;
            c.batch_a = batches[b][0];
            c.batch_b = batches[b][1];
            c.m = 5 + b;
            c.k = 7;
            c.n = 3 + t;
            memset(&tc, 0, sizeof tc);
            snprintf(label, sizeof label, "matmul ta=%d tb=%d batch %lld/%lld", c.ta, c.tb, (long long)c.batch_a, (long long)c.batch_b);
            tc.label = label;
            tc.nin = 2;
            tc.in[0] = tl_rand(ctx, mm_shape(c.batch_a, c.m, c.k, c.ta), -1, 1);
            tc.in[1] = tl_rand(ctx, mm_shape(c.batch_b, c.k, c.n, c.tb), -1, 1);
            tc.grad_mask = 3;
            tc.op = op_matmul;
            tc.ref = ref_matmul;
            tc.user = &c;
            tl_check_op(&tc);
            hv_tensor_free(tc.in[0]);
            hv_tensor_free(tc.in[1]);
        }
}

/* binary ops with broadcasting: a (2,1,4) op b (3,1) -> (2,3,4) */
static const int64_t bc_a[3] = {2, 1, 4}, bc_b[2] = {3, 1};
static void ref_binary(const double *const *in, double *out, void *user) {
    int op = *(int *)user, i, j, k;
    for (i = 0; i < 2; i++)
        for (j = 0; j < 3; j++)
            for (k = 0; k < 4; k++) {
                double x = in[0][i * 4 + k], y = in[1][j];
                out[(i * 3 + j) * 4 + k] = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : x / y;
            }
}
static hv_tensor *op_binary(hv_tensor **in, void *user) {
    int op = *(int *)user;
    return op == 0 ? hv_add(in[0], in[1]) : op == 1 ? hv_sub(in[0], in[1]) : op == 2 ? hv_mul(in[0], in[1]) : hv_div(in[0], in[1]);
}
static void test_binary_broadcast(hv_ctx *ctx) {
    int op;
    for (op = 0; op < 4; op++) {
        tl_case tc;
        memset(&tc, 0, sizeof tc);
        tc.label = op == 0 ? "add" : op == 1 ? "sub" : op == 2 ? "mul" : "div";
        tc.nin = 2;
        tc.in[0] = tl_rand(ctx, hv_shape_of(3, bc_a), -1, 1);
        tc.in[1] = tl_rand(ctx, hv_shape_of(2, bc_b), 0.5f, 1.5f);
        tc.grad_mask = 3;
        tc.op = op_binary;
        tc.ref = ref_binary;
        tc.user = &op;
        tl_check_op(&tc);
    }
}

/* unary ops on (3, 5, 2) */
typedef struct un_case {
    int which;
} un_case;
static double ref_unary_f(int w, double x) {
    switch (w) {
    case 0: return exp(x);
    case 1: return log(x);
    case 2: return sqrt(x);
    case 3: return tanh(x);
    case 4: return 1 / (1 + exp(-x));
    case 5: return x > 0 ? x : 0;
    case 6: return x > 0 ? x : 0.1 * x;
    case 7: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case 8: return -2.5 * x;
    default: return x + 0.75;
    }
}
static void ref_unary(const double *const *in, double *out, void *user) {
    int i;
    for (i = 0; i < 30; i++) out[i] = ref_unary_f(((un_case *)user)->which, in[0][i]);
}
static hv_tensor *op_unary(hv_tensor **in, void *user) {
    switch (((un_case *)user)->which) {
    case 0: return hv_exp(in[0]);
    case 1: return hv_log(in[0]);
    case 2: return hv_sqrt(in[0]);
    case 3: return hv_tanh(in[0]);
    case 4: return hv_sigmoid(in[0]);
    case 5: return hv_relu(in[0]);
    case 6: return hv_leaky_relu(in[0], 0.1f);
    case 7: return hv_gelu(in[0]);
    case 8: return hv_scale(in[0], -2.5f);
    default: return hv_add_scalar(in[0], 0.75f);
    }
}
static void test_unary(hv_ctx *ctx) {
    static const char *names[] = {"exp", "log", "sqrt", "tanh", "sigmoid", "relu", "leaky_relu", "gelu", "scale", "add_scalar"};
    un_case u;
    for (u.which = 0; u.which < 10; u.which++) {
        tl_case tc;
        int positive = u.which == 1 || u.which == 2;
        memset(&tc, 0, sizeof tc);
        tc.label = names[u.which];
        tc.nin = 1;
        tc.in[0] = tl_rand(ctx, HV_SHAPE(3, 5, 2), positive ? 0.2f : -3.0f, 3.0f);
        if (u.which == 5 || u.which == 6) { /* keep away from the kink where differences are meaningless */
            float *p = hv_data(tc.in[0]);
            int i;
            for (i = 0; i < 30; i++)
                if (fabsf(p[i]) < 0.05f) p[i] += 0.1f;
        }
        tc.grad_mask = 1;
        tc.op = op_unary;
        tc.ref = ref_unary;
        tc.user = &u;
        tl_check_op(&tc);
    }
}

/* reductions over (3, 4, 5): axes given by mask bits, keepdim or not */
typedef struct red_case {
    int op, mask, keepdim;
} red_case;
static void ref_reduce(const double *const *in, double *out, void *user) {
    red_case *c = (red_case *)user;
    int64_t s[3] = {3, 4, 5}, i, j, k, n = 0;
    double acc[60];
    int cnt[60];
    memset(cnt, 0, sizeof cnt);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 4; j++)
            for (k = 0; k < 5; k++) {
                int64_t oi = (c->mask & 1) ? 0 : i, oj = (c->mask & 2) ? 0 : j, ok = (c->mask & 4) ? 0 : k;
                int64_t o = (oi * ((c->mask & 2) ? 1 : 4) + oj) * ((c->mask & 4) ? 1 : 5) + ok;
                double v = in[0][(i * 4 + j) * 5 + k];
                if (!cnt[o]) acc[o] = v;
                else if (c->op == 2) acc[o] = v > acc[o] ? v : acc[o];
                else acc[o] += v;
                cnt[o]++;
                if (o + 1 > n) n = o + 1;
            }
    (void)s;
    for (i = 0; i < n; i++) out[i] = c->op == 1 ? acc[i] / cnt[i] : acc[i];
}
static hv_tensor *op_reduce(hv_tensor **in, void *user) {
    red_case *c = (red_case *)user;
    int axes[3], na = 0, a;
    for (a = 0; a < 3; a++)
        if (c->mask & (1 << a)) axes[na++] = a - (a == 2 ? 3 : 0); /* exercise a negative axis */
    return c->op == 0 ? hv_sum(in[0], na, axes, c->keepdim) : c->op == 1 ? hv_mean(in[0], na, axes, c->keepdim) : hv_max(in[0], na, axes, c->keepdim);
}
static void test_reductions(hv_ctx *ctx) {
    red_case c;
    for (c.op = 0; c.op < 3; c.op++)
        for (c.mask = 1; c.mask < 8; c.mask++) {
            tl_case tc;
            char label[64];
            c.keepdim = c.mask & 1;
            snprintf(label, sizeof label, "%s mask %d keepdim %d", c.op == 0 ? "sum" : c.op == 1 ? "mean" : "max", c.mask, c.keepdim);
            memset(&tc, 0, sizeof tc);
            tc.label = label;
            tc.nin = 1;
            tc.in[0] = tl_rand(ctx, HV_SHAPE(3, 4, 5), -2, 2);
            tc.grad_mask = 1;
            tc.op = op_reduce;
            tc.ref = ref_reduce;
            tc.user = &c;
            tl_check_op(&tc);
        }
}

/* layout: permute, then slice with a step, then concat with another tensor, then reshape */
static void ref_layout(const double *const *in, double *out, void *user) {
    /* x (2,3,4) -> permute (2,0,1) -> (4,2,3); slice axis 0 [1:4:2] -> (2,2,3); concat with
       y (1,2,3) on axis 0 -> (3,2,3); reshape (9, 2) */
    int i, j, k, n = 0;
    (void)user;
    for (i = 1; i < 4; i += 2)
        for (j = 0; j < 2; j++)
            for (k = 0; k < 3; k++) out[n++] = in[0][(j * 3 + k) * 4 + i];
    for (j = 0; j < 6; j++) out[n++] = in[1][j];
}
static hv_tensor *op_layout(hv_tensor **in, void *user) {
    int perm[3] = {2, 0, 1};
    hv_tensor *parts[2];
    (void)user;
    parts[0] = hv_slice(hv_permute(in[0], perm), 0, 1, 4, 2);
    parts[1] = in[1];
    return hv_reshape(hv_concat(parts, 2, 0), HV_SHAPE(9, -1));
}
static void test_layout(hv_ctx *ctx) {
    tl_case tc;
    memset(&tc, 0, sizeof tc);
    tc.label = "permute+slice+concat+reshape";
    tc.nin = 2;
    tc.in[0] = tl_rand(ctx, HV_SHAPE(2, 3, 4), -1, 1);
    tc.in[1] = tl_rand(ctx, HV_SHAPE(1, 2, 3), -1, 1);
    tc.grad_mask = 3;
    tc.op = op_layout;
    tc.ref = ref_layout;
    tl_check_op(&tc);
}

/* ---- tape semantics ------------------------------------------------------------------------- */

static void test_grad_accumulates_and_no_grad(hv_ctx *ctx) {
    hv_tensor *w = hv_full(ctx, HV_SHAPE(3), 2.0f), *loss;
    float g[3];
    hv_set_trainable(w, 1);
    loss = hv_sum(hv_mul(w, w), 0, NULL, 0); /* d/dw = 2w = 4 */
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    loss = hv_sum(hv_scale(w, 3.0f), 0, NULL, 0); /* + 3 */
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    hv_tensor_copy_to(hv_grad(w), g, sizeof g);
    CHECK(g[0] == 7.0f && g[2] == 7.0f, "accumulated grad %g, want 7", g[0]);
    hv_zero_grad(w);
    hv_tensor_copy_to(hv_grad(w), g, sizeof g);
    CHECK(g[1] == 0.0f, "zero_grad left %g", g[1]);
    /* no-grad: nothing recorded, backward refuses */
    hv_set_grad_enabled(ctx, 0);
    loss = hv_sum(hv_mul(w, w), 0, NULL, 0);
    CHECK(loss && !hv_requires_grad(loss), "no-grad result requires grad");
    hv_set_grad_enabled(ctx, 1);
    CHECK(hv_backward(loss) != 0 && strstr(hv_last_error(), "trainable"), "backward of a no-grad result: %s", hv_last_error());
    /* detach cuts the graph */
    loss = hv_sum(hv_mul(hv_detach(w), w), 0, NULL, 0); /* d/dw = w = 2 (only the live branch) */
    CHECK(hv_backward(loss) == 0, "backward: %s", hv_last_error());
    hv_tensor_copy_to(hv_grad(w), g, sizeof g);
    CHECK(g[0] == 2.0f, "grad through detach %g, want 2", g[0]);
    /* frozen parameters get nothing */
    hv_set_trainable(w, 0);
    CHECK(!hv_requires_grad(hv_mul(w, w)), "frozen tensor still records");
    hv_tensor_free(w);
}

static void test_steady_state_no_malloc(hv_ctx *ctx) {
    hv_tensor *x = tl_rand(ctx, HV_SHAPE(16, 8), -1, 1), *w = tl_rand(ctx, HV_SHAPE(4, 8), -1, 1), *b = hv_zeros(ctx, HV_SHAPE(4));
    uint64_t before = 0;
    int step;
    hv_set_trainable(w, 1);
    hv_set_trainable(b, 1);
    for (step = 0; step < 6; step++) {
        hv_tensor *loss;
        if (step == 3) before = hv_alloc_count();
        loss = hv_mean(hv_tanh(hv_linear(x, w, b)), 0, NULL, 0);
        CHECK(hv_backward(loss) == 0, "%s", hv_last_error());
        hv_step_end(ctx);
    }
    CHECK(hv_alloc_count() == before, "%llu allocations in 3 steady-state steps", (unsigned long long)(hv_alloc_count() - before));
    hv_tensor_free(x);
    hv_tensor_free(w);
    hv_tensor_free(b);
}

static void test_tensor_basics(hv_ctx *ctx) {
    float v[6] = {1, 2, 3, 4, 5, 6}, out[6];
    hv_tensor *t = hv_tensor_from(ctx, HV_SHAPE(2, 3), v), *tt;
    CHECK(hv_numel(t) == 6 && hv_dim(t, -1) == 3 && hv_ndim(t) == 2, "shape queries");
    tt = hv_transpose(t, 0, 1);
    CHECK(!hv_is_contiguous(tt), "transpose is a view");
    hv_tensor_copy_to(tt, out, sizeof out);
    CHECK(out[0] == 1 && out[1] == 4 && out[2] == 2 && out[5] == 6, "strided copy_to %g %g %g", out[0], out[1], out[2]);
    CHECK(hv_tensor_copy_from(t, v, 5) == -1 && strstr(hv_last_error(), "24 bytes"), "short copy: %s", hv_last_error());
    CHECK(hv_item(hv_sum(t, 0, NULL, 0)) == 21.0f, "sum");
    {
        hv_tensor *parts[2];
        int64_t sizes[2] = {1, 2};
        CHECK(hv_split(t, 1, 2, sizes, parts) == 0, "split: %s", hv_last_error());
        hv_tensor_copy_to(hv_contiguous(parts[1]), out, 4 * sizeof(float));
        CHECK(out[0] == 2 && out[1] == 3 && out[2] == 5 && out[3] == 6, "split values");
    }
    hv_tensor_free(t);
}

static void test_rng_determinism(hv_ctx *ctx) {
    hv_ctx *a = hv_init(&(hv_init_desc){.seed = 42}), *b = hv_init(&(hv_init_desc){.seed = 42});
    hv_tensor *x = hv_randn(a, HV_SHAPE(100), 0, 1), *y = hv_randn(b, HV_SHAPE(100), 0, 1);
    int64_t p[10], q[10];
    double mean = 0, var = 0;
    int i;
    (void)ctx;
    CHECK(memcmp(hv_data(x), hv_data(y), 400) == 0, "same seed, different randn");
    hv_rng_permutation(a, 10, p);
    hv_rng_permutation(b, 10, q);
    CHECK(memcmp(p, q, sizeof p) == 0, "same seed, different permutation");
    {
        hv_tensor *big = hv_randn(a, HV_SHAPE(20000), 1.0f, 2.0f);
        for (i = 0; i < 20000; i++) mean += hv_data(big)[i];
        mean /= 20000;
        for (i = 0; i < 20000; i++) var += (hv_data(big)[i] - mean) * (hv_data(big)[i] - mean);
        var /= 20000;
    }
    CHECK(fabs(mean - 1.0) < 0.05 && fabs(var - 4.0) < 0.2, "randn moments %g %g", mean, var);
    hv_shutdown(a);
    hv_shutdown(b);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(hv_ctx *ctx) {
    hv_tensor *a = hv_zeros(ctx, HV_SHAPE(2, 3)), *b = hv_zeros(ctx, HV_SHAPE(4, 5)), *w = hv_zeros(ctx, HV_SHAPE(5, 4));
    int perm[2] = {0, 0};
    CHECK_ERROR(hv_matmul(a, b, 0, 0), "hv_matmul", "(2, 3)", "(4, 5)");
    CHECK_ERROR(hv_add(a, b), "hv_add", "broadcast", "(2, 3)", "(4, 5)");
    CHECK_ERROR(hv_linear(a, w, NULL), "hv_linear", "(5, 4)");
    CHECK_ERROR(hv_sum(a, 1, (int[]){2}, 0), "hv_sum", "axis 2");
    CHECK_ERROR(hv_transpose(a, 0, -3), "hv_transpose", "axis -3");
    CHECK_ERROR(hv_permute(a, perm), "hv_permute", "permutation");
    CHECK_ERROR(hv_reshape(a, HV_SHAPE(4, 2)), "hv_reshape", "(4, 2)");
    CHECK_ERROR(hv_slice(a, 1, 2, 1, 1), "hv_slice", "[2, 1)");
    CHECK_ERROR(hv_slice(a, 0, 0, 1, 0), "hv_slice", "step");
    CHECK_ERROR(hv_tensor_new(ctx, HV_F32, HV_SHAPE(2, -1)), "hv_tensor_new", "negative");
    /* NULL propagates and the first error survives */
    hv_clear_error();
    CHECK(hv_exp(hv_matmul(a, b, 0, 0)) == NULL && strstr(hv_last_error(), "hv_matmul"), "first error kept: %s", hv_last_error());
    hv_clear_error();
    CHECK(hv_backward(hv_sum(hv_matmul(a, b, 0, 0), 0, NULL, 0)) == -1 && strstr(hv_last_error(), "hv_matmul: "),
          "hv_backward keeps the failed op's error: %s", hv_last_error());
    hv_clear_error();
    CHECK(isnan(hv_item(hv_matmul(a, b, 0, 0))) && strstr(hv_last_error(), "hv_matmul: "), "hv_item keeps the failed op's error: %s",
          hv_last_error());
    hv_clear_error(); /* with no earlier error, the NULL itself is reported */
    CHECK(hv_backward(NULL) == -1 && strstr(hv_last_error(), "hv_backward: loss is NULL"), "hv_backward(NULL): %s", hv_last_error());
    hv_clear_error();
    CHECK(isnan(hv_item(NULL)) && strstr(hv_last_error(), "hv_item: tensor is NULL"), "hv_item(NULL): %s", hv_last_error());
    hv_tensor_set_name(b, "weights");
    CHECK_ERROR(hv_matmul(a, b, 0, 0), "'weights'");
    hv_tensor_free(a);
    hv_tensor_free(b);
    hv_tensor_free(w);
}

/* ---- determinism across thread counts ------------------------------------------------------- */

static void run_small_net(int threads, float *loss_out, float *grad_out) {
    hv_ctx *c = hv_init(&(hv_init_desc){.seed = 7, .threads = threads});
    hv_tensor *x = hv_randn(c, HV_SHAPE(64, 96), 0, 1), *w1 = hv_randn(c, HV_SHAPE(128, 96), 0, 0.1f), *w2 = hv_randn(c, HV_SHAPE(10, 128), 0, 0.1f);
    hv_tensor *loss;
    hv_set_trainable(w1, 1);
    hv_set_trainable(w2, 1);
    loss = hv_mean(hv_mul(hv_linear(hv_gelu(hv_linear(x, w1, NULL)), w2, NULL), hv_linear(hv_gelu(hv_linear(x, w1, NULL)), w2, NULL)), 0, NULL, 0);
    hv_backward(loss);
    *loss_out = hv_item(loss);
    memcpy(grad_out, hv_data(hv_grad(w1)), sizeof(float) * 128 * 96);
    hv_shutdown(c);
}
static void test_thread_determinism(hv_ctx *ctx) {
    static float g1[128 * 96], g2[128 * 96];
    float l1, l2;
    (void)ctx;
    run_small_net(1, &l1, g1);
    run_small_net(2, &l2, g2);
    CHECK(memcmp(&l1, &l2, sizeof l1) == 0, "loss differs: %.9g vs %.9g", l1, l2);
    CHECK(memcmp(g1, g2, sizeof g1) == 0, "gradients differ between 1 and 2 threads");
}

int main(void) {
    hv_ctx *ctx = hv_init(&(hv_init_desc){.seed = 1234});
    TL_RUN(ctx, test_tensor_basics);
    TL_RUN(ctx, test_matmul);
    TL_RUN(ctx, test_matmul_batch_axes);
    TL_RUN(ctx, test_binary_broadcast);
    TL_RUN(ctx, test_unary);
    TL_RUN(ctx, test_reductions);
    TL_RUN(ctx, test_layout);
    TL_RUN(ctx, test_grad_accumulates_and_no_grad);
    TL_RUN(ctx, test_steady_state_no_malloc);
    TL_RUN(ctx, test_rng_determinism);
    TL_RUN(ctx, test_errors);
    TL_RUN(ctx, test_thread_determinism);
    hv_shutdown(ctx);
    TL_DONE();
}
