/* humanvit.h - tensors, reverse-mode autodiff and the layers of the "human-like visual experience"
   vision models (ViT / MAE / ResNeXt / GAN), in one C99 header.            MIT or public domain.

   DO THIS in *one* C or C++ file, before you include this file:

       #define HUMANVIT_IMPLEMENTATION
       #include "humanvit.h"

   and compile with   cc -O2 -march=native [-fopenmp] file.c -lm
   Every other file includes "humanvit.h" as a normal header.

   TABLE OF CONTENTS (search for the "====" banners)
       1. Usage, options, step by step
       2. Public API: types and context, tensors, autodiff, ops, errors
       3. Implementation: allocator and arena
       4. Implementation: tensor core
       5. Implementation: autodiff tape
       6. Implementation: op definitions (forward and backward, backend-agnostic)
       7. Implementation: CPU backend (scalar reference kernels, then the SIMD GEMM)
       8. Implementation: checkpoint formats (safetensors, PyTorch .pth)

   OPTIONS (define before including the implementation)
       HUMANVIT_STATIC          all public functions become static (HVDEF = static)
       HV_MALLOC/HV_REALLOC/HV_FREE   all or none: replace malloc/realloc/free
       HV_ASSERT(x)             internal invariants only (default: assert); user mistakes never assert
       _OPENMP                  (set by -fopenmp) kernels run multi-threaded; results are
                                bit-identical for any thread count (see DETERMINISM)
       SIMD                     chosen by the compiler's own macros: -march=native (or -mavx512f,
                                -mavx2 -mfma; aarch64 has NEON) gives the packed AVX-512 / AVX2 /
                                NEON SGEMM; without them the scalar reference kernels run.
                                hv_cpu_isa(ctx) says which one is in use.
       HUMANVIT_CPU_DISPATCH    portable x86-64 binaries: build the implementation without
                                -march=native and link kernels_cpu/hv_cpu_avx512.c (compiled with
                                -mavx512f -mavx512bw -mavx512vl -mfma) and kernels_cpu/hv_cpu_avx2.c
                                (-mavx2 -mfma); hv_init picks the best the CPU runs (cpuid, gcc or
                                clang). Those files define HUMANVIT_KERNELS_AVX512 / _AVX2 and
                                HUMANVIT_STATIC and include this header: the kernel code is here.

   WHAT IT DOES NOT DO
       No implicit device moves, no dynamic shapes inside a step beyond what you pass, no
       background threads of its own. Tensors are f32 (i32 for indices); bf16/f16 storage has
       room in hv_dtype but is not implemented yet.

   MEMORY
       Two lifetimes. Tensors you create with the constructors (hv_tensor_new, hv_zeros, hv_randn,
       hv_tensor_from, ...) are *persistent*: parameters, optimizer state, input buffers. They live
       until hv_tensor_free or hv_shutdown. Everything an op returns lives in the per-step *arena*
       and is released, all at once, by hv_step_end(ctx). After the first few steps the arena has
       grown to the step's high-water mark and a training loop does no malloc at all
       (hv_alloc_count() lets a test prove it).

   AUTODIFF
       Define-by-run. Mark parameters with hv_set_trainable(t, 1). Any op whose input requires a
       gradient records itself on the context's tape; hv_backward(loss) walks the tape backwards
       and *accumulates* into t->grad (read it with hv_grad(t)); hv_zero_grad clears a gradient.
       hv_set_grad_enabled(ctx, 0) records nothing (inference). hv_detach(t) cuts the graph.
       A tape is consumed by hv_backward: forward, backward, forward, backward accumulates the
       gradients of two micro-batches, as PyTorch does.

   ERRORS
       Bad shapes, axes or arguments never abort: the op returns NULL (or a status < 0) and
       hv_last_error() names the op, the tensors and their shapes. An op given a NULL input returns
       NULL and keeps the first error, so a chain of calls can be checked once at its end.

   DETERMINISM
       The RNG is a seeded counter-free xoshiro256** stream per context. Kernels parallelise over
       output elements only, never split a reduction, so 1 thread and N threads give the same bits.

   STEP BY STEP
       hv_ctx *ctx = hv_init(&(hv_init_desc){ .seed = 1 });
       hv_tensor *w = hv_randn(ctx, HV_SHAPE(10, 784), 0.0f, 0.01f);  hv_set_trainable(w, 1);
       hv_tensor *x = hv_tensor_new(ctx, HV_F32, HV_SHAPE(64, 784));   // input buffer
       hv_tensor *y = hv_tensor_new(ctx, HV_I32, HV_SHAPE(64));        // labels
       for (step ...) {
           hv_tensor_copy_from(x, batch_images, sizeof batch_images);
           hv_tensor_copy_from(y, batch_labels, sizeof batch_labels);
           hv_tensor *loss = hv_cross_entropy(hv_linear(x, w, NULL), y);
           if (!loss) { fprintf(stderr, "%s\n", hv_last_error()); break; }
           hv_zero_grad(w);
           hv_backward(loss);
           ... update w from hv_grad(w) (optimizers arrive with the training toolkit) ...
           hv_step_end(ctx);             // frees every activation of this step
       }
       hv_shutdown(ctx);

   HV_SHAPE(...) uses a C99 compound literal; from C++ write hv_shape_of(n, dims) instead.
*/
#ifndef HUMANVIT_H
#define HUMANVIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef HUMANVIT_STATIC
#define HVDEF static
#else
#define HVDEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 2. PUBLIC API ========================================================================== */

/* ---- types and context ---------------------------------------------------------------------- */

#define HV_MAX_DIMS 5

typedef struct hv_ctx hv_ctx;
typedef struct hv_tensor hv_tensor;

typedef enum hv_dtype {
    HV_F32 = 0,
    HV_I32 = 1, /* indices and labels */
    HV_BF16 = 2, /* reserved: storage formats to come */
    HV_F16 = 3
} hv_dtype;

typedef enum hv_backend_kind {
    HV_BACKEND_CPU = 0,
    HV_BACKEND_VULKAN = 1, /* reserved: not compiled in yet */
    HV_BACKEND_CUDA = 2    /* reserved: not compiled in yet */
} hv_backend_kind;

typedef struct hv_init_desc {
    hv_backend_kind backend; /* default CPU */
    uint64_t seed;           /* default 0 (a valid seed) */
    int threads;             /* 0: all the machine's cores (OpenMP builds), else exactly this */
    size_t arena_bytes;      /* first arena chunk; 0: 16 MiB. It grows as needed. */
} hv_init_desc;

HVDEF hv_ctx *hv_init(const hv_init_desc *desc); /* NULL desc: all defaults */
HVDEF void hv_shutdown(hv_ctx *ctx);              /* frees every tensor the context made */
HVDEF void hv_set_threads(hv_ctx *ctx, int threads);
HVDEF int hv_get_threads(const hv_ctx *ctx);
HVDEF const char *hv_cpu_isa(hv_ctx *ctx);       /* the GEMM kernel in use: "avx512", "avx2", "neon", "scalar" */
HVDEF void hv_step_end(hv_ctx *ctx);              /* release the step's arena and tape */
HVDEF size_t hv_arena_used(const hv_ctx *ctx);    /* bytes of the arena in use now */
HVDEF uint64_t hv_alloc_count(void);              /* calls to HV_MALLOC/HV_REALLOC so far */

/* ---- deterministic RNG ---------------------------------------------------------------------- */
HVDEF void hv_rng_seed(hv_ctx *ctx, uint64_t seed);
HVDEF uint64_t hv_rng_u64(hv_ctx *ctx);
HVDEF float hv_rng_uniform(hv_ctx *ctx);            /* [0, 1) */
HVDEF float hv_rng_normal(hv_ctx *ctx);             /* N(0, 1) */
HVDEF void hv_rng_permutation(hv_ctx *ctx, int64_t n, int64_t *out); /* Fisher-Yates */
HVDEF void hv_rng_get_state(const hv_ctx *ctx, uint64_t state[4]);
HVDEF void hv_rng_set_state(hv_ctx *ctx, const uint64_t state[4]);

/* ---- tensors -------------------------------------------------------------------------------- */

typedef struct hv_shape {
    int ndim;
    int64_t d[HV_MAX_DIMS];
} hv_shape;

HVDEF hv_shape hv_shape_of(int ndim, const int64_t *dims);
#define HV_SHAPE(...) hv_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

/* persistent constructors (live until hv_tensor_free / hv_shutdown) */
HVDEF hv_tensor *hv_tensor_new(hv_ctx *ctx, hv_dtype dtype, hv_shape shape); /* zeros */
HVDEF hv_tensor *hv_zeros(hv_ctx *ctx, hv_shape shape);
HVDEF hv_tensor *hv_ones(hv_ctx *ctx, hv_shape shape);
HVDEF hv_tensor *hv_full(hv_ctx *ctx, hv_shape shape, float value);
HVDEF hv_tensor *hv_randn(hv_ctx *ctx, hv_shape shape, float mean, float std);
HVDEF hv_tensor *hv_uniform(hv_ctx *ctx, hv_shape shape, float lo, float hi);
HVDEF hv_tensor *hv_tensor_from(hv_ctx *ctx, hv_shape shape, const float *values); /* copies */
HVDEF void hv_tensor_free(hv_tensor *t);
/* arena constructor: zeros that live until hv_step_end */
HVDEF hv_tensor *hv_tensor_temp(hv_ctx *ctx, hv_dtype dtype, hv_shape shape);

/* host copies; bytes must equal numel * element size. copy_to handles any strides. 0 or -1 */
HVDEF int hv_tensor_copy_from(hv_tensor *t, const void *host, size_t bytes);
HVDEF int hv_tensor_copy_to(const hv_tensor *t, void *host, size_t bytes);
HVDEF int hv_tensor_fill(hv_tensor *t, float value);
HVDEF void hv_tensor_print(const hv_tensor *t, const char *label); /* shape and up to 8 values per row */

HVDEF hv_ctx *hv_tensor_ctx(const hv_tensor *t);
HVDEF hv_dtype hv_tensor_dtype(const hv_tensor *t);
HVDEF int hv_ndim(const hv_tensor *t);
HVDEF int64_t hv_dim(const hv_tensor *t, int axis); /* negative axes count from the end */
HVDEF hv_shape hv_tensor_shape(const hv_tensor *t);
HVDEF int64_t hv_numel(const hv_tensor *t);
HVDEF int hv_is_contiguous(const hv_tensor *t);
HVDEF float *hv_data(hv_tensor *t);       /* CPU f32 data of element 0 (NULL for other dtypes) */
HVDEF int32_t *hv_data_i32(hv_tensor *t); /* CPU i32 data of element 0 */
HVDEF float hv_item(const hv_tensor *t);  /* value of a one-element tensor (NAN on error) */
HVDEF void hv_tensor_set_name(hv_tensor *t, const char *name);
HVDEF const char *hv_tensor_name(const hv_tensor *t);

/* views and layout (differentiable). A view shares storage with its source. */
HVDEF hv_tensor *hv_reshape(hv_tensor *x, hv_shape shape); /* one dim may be -1 */
HVDEF hv_tensor *hv_permute(hv_tensor *x, const int *perm);
HVDEF hv_tensor *hv_transpose(hv_tensor *x, int axis0, int axis1);
HVDEF hv_tensor *hv_contiguous(hv_tensor *x);  /* x itself when already contiguous */
HVDEF hv_tensor *hv_copy(hv_tensor *x);        /* always a fresh contiguous copy */
HVDEF hv_tensor *hv_slice(hv_tensor *x, int axis, int64_t start, int64_t end, int64_t step);
HVDEF hv_tensor *hv_concat(hv_tensor *const *xs, int n, int axis);
HVDEF int hv_split(hv_tensor *x, int axis, int n, const int64_t *sizes, hv_tensor **out);

/* ---- autodiff ------------------------------------------------------------------------------- */
HVDEF void hv_set_trainable(hv_tensor *t, int trainable); /* parameter: collects a gradient */
HVDEF int hv_requires_grad(const hv_tensor *t);
HVDEF hv_tensor *hv_grad(hv_tensor *t);   /* NULL until a backward reached t */
HVDEF void hv_zero_grad(hv_tensor *t);
HVDEF int hv_backward(hv_tensor *loss);   /* loss: one element. 0 or -1 */
HVDEF int hv_set_grad_enabled(hv_ctx *ctx, int enabled); /* returns the previous mode */
HVDEF hv_tensor *hv_detach(hv_tensor *x); /* same data, no history */

/* ---- ops: every op here has a forward and a backward ---------------------------------------- */

/* matrix products. a (..., M, K), b (..., K, N) after the optional transposes of the last two
   axes; leading (batch) axes broadcast. */
HVDEF hv_tensor *hv_matmul(hv_tensor *a, hv_tensor *b, int trans_a, int trans_b);
/* y = x w^T + b, PyTorch layout: x (..., in), w (out, in), b (out) or NULL */
HVDEF hv_tensor *hv_linear(hv_tensor *x, hv_tensor *w, hv_tensor *b);

/* elementwise with NumPy/PyTorch broadcasting */
HVDEF hv_tensor *hv_add(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_sub(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_mul(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_div(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_scale(hv_tensor *x, float s);
HVDEF hv_tensor *hv_add_scalar(hv_tensor *x, float s);
HVDEF hv_tensor *hv_exp(hv_tensor *x);
HVDEF hv_tensor *hv_log(hv_tensor *x);
HVDEF hv_tensor *hv_sqrt(hv_tensor *x);
HVDEF hv_tensor *hv_tanh(hv_tensor *x);
HVDEF hv_tensor *hv_sigmoid(hv_tensor *x);
HVDEF hv_tensor *hv_relu(hv_tensor *x);
HVDEF hv_tensor *hv_leaky_relu(hv_tensor *x, float negative_slope);
HVDEF hv_tensor *hv_gelu(hv_tensor *x); /* exact: x * Phi(x) with erf */

/* reductions over the listed axes (naxes 0: all axes) */
HVDEF hv_tensor *hv_sum(hv_tensor *x, int naxes, const int *axes, int keepdim);
HVDEF hv_tensor *hv_mean(hv_tensor *x, int naxes, const int *axes, int keepdim);
HVDEF hv_tensor *hv_max(hv_tensor *x, int naxes, const int *axes, int keepdim); /* grad to first max */

/* normalisation and activations over an axis */
HVDEF hv_tensor *hv_softmax(hv_tensor *x, int axis);
HVDEF hv_tensor *hv_log_softmax(hv_tensor *x, int axis);
/* over the last axis; weight and bias (D) or NULL */
HVDEF hv_tensor *hv_layer_norm(hv_tensor *x, hv_tensor *weight, hv_tensor *bias, float eps);
/* x (N, C), (N, C, L) or (N, C, H, W). weight/bias (C) or NULL (affine=False). running_mean and
   running_var (C) or NULL (no running stats). training: batch statistics, running stats updated
   with momentum (PyTorch: r = (1-m) r + m stat, unbiased variance). eval: running stats. */
HVDEF hv_tensor *hv_batch_norm(hv_tensor *x, hv_tensor *weight, hv_tensor *bias,
                               hv_tensor *running_mean, hv_tensor *running_var,
                               int training, float momentum, float eps);

/* convolution and pooling, NCHW; zero fields of the descriptors mean stride 1, pad 0, dilation 1,
   groups 1 */
typedef struct hv_conv2d_desc {
    int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups;
} hv_conv2d_desc;
/* x (N, Cin, H, W), w (Cout, Cin/groups, KH, KW), b (Cout) or NULL */
HVDEF hv_tensor *hv_conv2d(hv_tensor *x, hv_tensor *w, hv_tensor *b, const hv_conv2d_desc *desc);
typedef struct hv_pool2d_desc {
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w; /* stride 0: = kernel */
    int count_exclude_pad; /* avg pool: 0 as PyTorch's default count_include_pad=True */
} hv_pool2d_desc;
HVDEF hv_tensor *hv_max_pool2d(hv_tensor *x, const hv_pool2d_desc *desc);
HVDEF hv_tensor *hv_avg_pool2d(hv_tensor *x, const hv_pool2d_desc *desc);
HVDEF hv_tensor *hv_global_avg_pool(hv_tensor *x); /* (N, C, H, W) -> (N, C) */
HVDEF hv_tensor *hv_resize_bilinear(hv_tensor *x, int64_t out_h, int64_t out_w, int align_corners);

/* fused multi-head scaled dot-product attention: q (B, H, Nq, d), k and v (B, H, Nk, d);
   softmax(q k^T * scale) v. scale <= 0 means 1/sqrt(d). */
HVDEF hv_tensor *hv_attention(hv_tensor *q, hv_tensor *k, hv_tensor *v, float scale);

/* tokens by index along an axis. idx is i32 with the shape of x's leading axes up to and including
   `axis`, where that last extent is the number K of picks: x (B, N, D), axis 1, idx (B, K) ->
   (B, K, D) (MAE keep/unshuffle). scatter is the inverse: rows land at idx in a zero tensor whose
   axis has extent n; repeated indices add. */
HVDEF hv_tensor *hv_gather(hv_tensor *x, int axis, hv_tensor *idx);
HVDEF hv_tensor *hv_scatter(hv_tensor *x, int axis, hv_tensor *idx, int64_t n);

/* losses (means, scalar results) */
HVDEF hv_tensor *hv_cross_entropy(hv_tensor *logits, hv_tensor *labels); /* (N, C), i32 (N) */
HVDEF float hv_topk_accuracy(hv_tensor *logits, hv_tensor *labels, int k); /* fraction, no grad */
HVDEF hv_tensor *hv_mse_loss(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_l1_loss(hv_tensor *a, hv_tensor *b);
/* sum(x * mask) / sum(mask); mask broadcasts to x and gets no gradient */
HVDEF hv_tensor *hv_masked_mean(hv_tensor *x, hv_tensor *mask);

/* HV-SECTION api-checkpoints BEGIN */
/* HV-SECTION api-checkpoints END */

/* ---- errors --------------------------------------------------------------------------------- */
HVDEF const char *hv_last_error(void); /* "" when none */
HVDEF void hv_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif /* HUMANVIT_H */

/* ============================================================================================== */
/* ==== IMPLEMENTATION ========================================================================== */
/* ============================================================================================== */
#ifdef HUMANVIT_IMPLEMENTATION
#ifndef HUMANVIT_IMPLEMENTATION_DONE
#define HUMANVIT_IMPLEMENTATION_DONE

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(HV_MALLOC) && defined(HV_FREE) && defined(HV_REALLOC)
#elif !defined(HV_MALLOC) && !defined(HV_FREE) && !defined(HV_REALLOC)
#define HV_MALLOC(sz) malloc(sz)
#define HV_REALLOC(p, sz) realloc(p, sz)
#define HV_FREE(p) free(p)
#else
#error "Must define all or none of HV_MALLOC, HV_FREE, and HV_REALLOC."
#endif
#ifndef HV_ASSERT
#include <assert.h>
#define HV_ASSERT(x) assert(x)
#endif

#if defined(_MSC_VER)
#define HV__TLS __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define HV__TLS __thread
#else
#define HV__TLS
#endif

/* OpenMP parallel loop over output elements; the clause list keeps serial builds warning-free */
#ifdef _OPENMP
#define HV__PRAGMA(x) _Pragma(#x)
#define HV__PARALLEL_FOR(ctx, n) HV__PRAGMA(omp parallel for schedule(static) num_threads(hv__nthreads((ctx), (n))))
#else
#define HV__PARALLEL_FOR(ctx, n) (void)(ctx);
#endif

/* ==== 3. ERRORS, ALLOCATOR AND ARENA =========================================================== */

static HV__TLS char hv__err[1024];

HVDEF const char *hv_last_error(void) { return hv__err; }
HVDEF void hv_clear_error(void) { hv__err[0] = 0; }

/* sets the error (keeping an earlier one when `keep_first`) and returns NULL for the caller */
static void *hv__fail(const char *op, const char *fmt, ...) {
    va_list ap;
    size_t n;
    snprintf(hv__err, sizeof hv__err, "%s: ", op);
    n = strlen(hv__err);
    va_start(ap, fmt);
    vsnprintf(hv__err + n, sizeof hv__err - n, fmt, ap);
    va_end(ap);
    return NULL;
}

static uint64_t hv__alloc_calls;
HVDEF uint64_t hv_alloc_count(void) { return hv__alloc_calls; }

static void *hv__malloc(size_t n) {
    hv__alloc_calls++;
    return HV_MALLOC(n ? n : 1);
}
static void hv__free(void *p) {
    if (p) HV_FREE(p);
}

/* The arena: a list of chunks handed out by bumping a pointer. hv_step_end resets it; when a
   step needed more than one chunk, the reset replaces them by one chunk of the total size, so
   from the next step on everything fits in one chunk and no malloc happens. */
typedef struct hv__chunk {
    struct hv__chunk *next;
    size_t size, used;
} hv__chunk;
#define HV__ALIGN 64
#define HV__CHUNK_HDR ((sizeof(hv__chunk) + HV__ALIGN - 1) / HV__ALIGN * HV__ALIGN)

typedef struct hv__arena {
    hv__chunk *head; /* current chunk first */
    size_t first_size;
} hv__arena;

static hv__chunk *hv__chunk_new(size_t size) {
    hv__chunk *c = (hv__chunk *)hv__malloc(HV__CHUNK_HDR + size + HV__ALIGN);
    if (!c) return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}
static char *hv__chunk_base(hv__chunk *c) {
    uintptr_t p = (uintptr_t)c + HV__CHUNK_HDR;
    return (char *)((p + HV__ALIGN - 1) / HV__ALIGN * HV__ALIGN);
}
static void *hv__arena_alloc(hv__arena *a, size_t n) {
    hv__chunk *c = a->head;
    n = (n + HV__ALIGN - 1) / HV__ALIGN * HV__ALIGN;
    if (!c || c->used + n > c->size) {
        size_t want = a->first_size;
        if (c && c->size * 2 > want) want = c->size * 2;
        if (want < n) want = n;
        c = hv__chunk_new(want);
        if (!c) return NULL;
        c->next = a->head;
        a->head = c;
    }
    c->used += n;
    return hv__chunk_base(c) + c->used - n;
}
static size_t hv__arena_used(const hv__arena *a) {
    size_t s = 0;
    const hv__chunk *c;
    for (c = a->head; c; c = c->next) s += c->used;
    return s;
}
static void hv__arena_reset(hv__arena *a) {
    hv__chunk *c = a->head, *next;
    size_t total = 0;
    if (!c) return;
    if (!c->next) {
        c->used = 0;
        return;
    }
    for (; c; c = next) {
        next = c->next;
        total += c->size;
        hv__free(c);
    }
    a->head = hv__chunk_new(total);
}
static void hv__arena_free(hv__arena *a) {
    hv__chunk *c, *next;
    for (c = a->head; c; c = next) {
        next = c->next;
        hv__free(c);
    }
    a->head = NULL;
}

/* ==== 4. TENSOR CORE =========================================================================== */

typedef struct hv__backend hv__backend;
typedef void (*hv__bwd_fn)(hv_tensor *out);

#define HV__MAX_IN 4

struct hv_tensor {
    hv_ctx *ctx;
    hv_dtype dtype;
    int ndim;
    int64_t shape[HV_MAX_DIMS];
    int64_t stride[HV_MAX_DIMS]; /* in elements; 0 on broadcast axes */
    void *data;                  /* element 0 of this view (CPU backend) */
    void *alloc;                 /* owned allocation of a persistent tensor, else NULL */
    hv_tensor *grad;
    unsigned persistent : 1, trainable : 1, requires_grad : 1;
    /* autodiff: how this tensor was made (valid while it is on the tape) */
    hv__bwd_fn backward;
    const char *op;
    hv_tensor *in[HV__MAX_IN];
    hv_tensor *saved[2];    /* extra tensors a backward needs (statistics, masks) */
    double fp[6];           /* scalar parameters of the op */
    int64_t ip[8];          /* integer parameters of the op */
    hv_tensor *tape_prev;   /* the tape is a list through the tensors, newest first */
    hv_tensor *plist_prev, *plist_next; /* list of persistent tensors, freed at shutdown */
    char name[48];
};

/* ---- the backend table: every kernel the ops call. CPU fills it in section 7. ---------------- */

/* one batched GEMM: C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i] for i < batch. Matrices are
   row-major with a row stride (ld) and a batch stride (0 broadcasts one matrix). */
typedef struct hv__gemm_args {
    int trans_a, trans_b;
    int64_t m, n, k, batch;
    float alpha, beta;
    const float *a;
    int64_t lda, batch_stride_a;
    const float *b;
    int64_t ldb, batch_stride_b;
    float *c;
    int64_t ldc, batch_stride_c;
} hv__gemm_args;

enum { HV__ADD, HV__SUB, HV__MUL, HV__DIV };
enum { HV__EXP, HV__LOG, HV__SQRT, HV__TANH, HV__SIGMOID, HV__RELU, HV__LEAKY_RELU, HV__GELU, HV__SCALE, HV__ADD_SCALAR };
enum { HV__RED_SUM, HV__RED_MAX };

struct hv__backend {
    const char *name;
    /* layout: dst = src (or dst += src) for two same-shape tensors of any strides */
    void (*copy)(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate);
    void (*fill)(hv_ctx *ctx, hv_tensor *dst, float value);
    void (*gemm)(hv_ctx *ctx, const hv__gemm_args *g);
    /* out = a (op) b; a and b already expanded to out's shape (stride 0 on broadcast axes) */
    void (*binary)(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *a, const hv_tensor *b);
    void (*unary)(hv_ctx *ctx, int op, float alpha, hv_tensor *out, const hv_tensor *x);
    /* gx += gy * d op(x)/dx; y = op(x) is given for ops whose derivative reads it */
    void (*unary_bwd)(hv_ctx *ctx, int op, float alpha, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y,
                      const hv_tensor *gy);
    /* out (same ndim as x, extent 1 on reduced axes) = sum or max of x over those axes */
    void (*reduce)(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x);
    /* gx += gy routed to the first maximum of each reduced group (y = the max, keepdim shape) */
    void (*reduce_max_bwd)(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy);
    /* HV-SECTION backend-nn-fields BEGIN */
    /* HV-SECTION backend-nn-fields END */
    /* HV-SECTION backend-conv-fields BEGIN */
    /* HV-SECTION backend-conv-fields END */
};

/* ---- context -------------------------------------------------------------------------------- */

struct hv_ctx {
    const hv__backend *be;
    int threads;
    int grad_enabled;
    uint64_t rng[4];
    hv__arena arena;
    hv_tensor *tape;     /* newest recorded tensor */
    hv_tensor *persist;  /* newest persistent tensor */
    float *gemm_ws;      /* SIMD GEMM packing buffers: grown once, reused (cpu-simd section) */
    size_t gemm_ws_floats;
};

static const hv__backend *hv__cpu_backend(void);

#ifdef _OPENMP
static int hv__nthreads(const hv_ctx *ctx, int64_t work) {
    /* small loops stay serial: thread start-up would cost more than the work */
    if (work < 4096) return 1;
    return ctx->threads;
}
#endif

HVDEF hv_ctx *hv_init(const hv_init_desc *desc) {
    hv_init_desc d;
    hv_ctx *ctx;
    memset(&d, 0, sizeof d);
    if (desc) d = *desc;
    if (d.backend != HV_BACKEND_CPU)
        return (hv_ctx *)hv__fail("hv_init", "backend %d is not compiled in (only HV_BACKEND_CPU is available)", (int)d.backend);
    if (d.threads < 0) return (hv_ctx *)hv__fail("hv_init", "threads must be >= 0, got %d", d.threads);
    ctx = (hv_ctx *)hv__malloc(sizeof *ctx);
    if (!ctx) return (hv_ctx *)hv__fail("hv_init", "out of memory");
    memset(ctx, 0, sizeof *ctx);
    ctx->be = hv__cpu_backend();
    ctx->grad_enabled = 1;
    ctx->arena.first_size = d.arena_bytes ? d.arena_bytes : ((size_t)16 << 20);
    hv_set_threads(ctx, d.threads);
    hv_rng_seed(ctx, d.seed);
    return ctx;
}

HVDEF void hv_set_threads(hv_ctx *ctx, int threads) {
#ifdef _OPENMP
    ctx->threads = threads > 0 ? threads : omp_get_num_procs();
#else
    (void)threads;
    ctx->threads = 1;
#endif
}
HVDEF int hv_get_threads(const hv_ctx *ctx) { return ctx->threads; }

static void hv__tensor_release(hv_tensor *t);

HVDEF void hv_shutdown(hv_ctx *ctx) {
    if (!ctx) return;
    while (ctx->persist) hv_tensor_free(ctx->persist);
    hv__arena_free(&ctx->arena);
    hv__free(ctx->gemm_ws);
    hv__free(ctx);
}

HVDEF void hv_step_end(hv_ctx *ctx) {
    hv_tensor *t;
    /* persistent tensors must not keep pointers into the arena that is about to be reused */
    for (t = ctx->persist; t; t = t->plist_prev)
        if (t->grad && !t->grad->persistent) t->grad = NULL;
    ctx->tape = NULL;
    hv__arena_reset(&ctx->arena);
}
HVDEF size_t hv_arena_used(const hv_ctx *ctx) { return hv__arena_used(&ctx->arena); }

/* ---- RNG: xoshiro256** seeded by splitmix64 ------------------------------------------------- */

static uint64_t hv__splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
HVDEF void hv_rng_seed(hv_ctx *ctx, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) ctx->rng[i] = hv__splitmix(&seed);
}
static uint64_t hv__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
HVDEF uint64_t hv_rng_u64(hv_ctx *ctx) {
    uint64_t *s = ctx->rng;
    uint64_t r = hv__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = hv__rotl(s[3], 45);
    return r;
}
HVDEF float hv_rng_uniform(hv_ctx *ctx) { return (float)(hv_rng_u64(ctx) >> 40) * (1.0f / 16777216.0f); }
HVDEF float hv_rng_normal(hv_ctx *ctx) {
    /* Box-Muller on doubles; one draw per call keeps the stream simple to resume */
    double u1 = ((double)(hv_rng_u64(ctx) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(hv_rng_u64(ctx) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
HVDEF void hv_rng_permutation(hv_ctx *ctx, int64_t n, int64_t *out) {
    int64_t i;
    for (i = 0; i < n; i++) out[i] = i;
    for (i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(hv_rng_u64(ctx) % (uint64_t)(i + 1)), tmp = out[i];
        out[i] = out[j];
        out[j] = tmp;
    }
}
HVDEF void hv_rng_get_state(const hv_ctx *ctx, uint64_t state[4]) { memcpy(state, ctx->rng, sizeof ctx->rng); }
HVDEF void hv_rng_set_state(hv_ctx *ctx, const uint64_t state[4]) { memcpy(ctx->rng, state, sizeof ctx->rng); }

/* ---- shapes --------------------------------------------------------------------------------- */

HVDEF hv_shape hv_shape_of(int ndim, const int64_t *dims) {
    hv_shape s;
    int i;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (i = 0; i < ndim && i < HV_MAX_DIMS; i++) s.d[i] = dims[i];
    return s;
}
/* "(2, 3, 4)" into buf; small rotating buffers so one message can show several shapes */
static const char *hv__shape_str(const hv_tensor *t) {
    static HV__TLS char bufs[4][64];
    static HV__TLS int which;
    char *b = bufs[which++ & 3];
    int i, n = 0;
    if (!t) return "(null)";
    n += snprintf(b + n, 64 - n, "(");
    for (i = 0; i < t->ndim && n < 60; i++) n += snprintf(b + n, 64 - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    snprintf(b + n, 64 - n, ")");
    return b;
}
/* "x (2, 3)" naming a tensor by its name when it has one */
static const char *hv__desc(const char *role, const hv_tensor *t) {
    static HV__TLS char bufs[4][128];
    static HV__TLS int which;
    char *b = bufs[which++ & 3];
    if (t && t->name[0]) snprintf(b, 128, "%s '%s' %s", role, t->name, hv__shape_str(t));
    else snprintf(b, 128, "%s %s", role, hv__shape_str(t));
    return b;
}
static int64_t hv__numel_shape(int ndim, const int64_t *shape) {
    int64_t n = 1;
    int i;
    for (i = 0; i < ndim; i++) n *= shape[i];
    return n;
}
static size_t hv__dtype_size(hv_dtype dt) { return (dt == HV_BF16 || dt == HV_F16) ? 2 : 4; }
static void hv__set_contiguous_strides(hv_tensor *t) {
    int64_t s = 1;
    int i;
    for (i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}
/* checks a user shape; returns 0 or fails naming op */
static int hv__check_shape(const char *op, hv_shape s) {
    int i;
    if (s.ndim < 0 || s.ndim > HV_MAX_DIMS) {
        hv__fail(op, "ndim %d is outside 0..%d", s.ndim, HV_MAX_DIMS);
        return -1;
    }
    for (i = 0; i < s.ndim; i++)
        if (s.d[i] < 0) {
            hv__fail(op, "dimension %d is negative (%lld)", i, (long long)s.d[i]);
            return -1;
        }
    return 0;
}

/* ---- allocation of tensors ------------------------------------------------------------------ */

/* a tensor header; data NULL. persistent headers are malloc'ed and linked into ctx->persist */
static hv_tensor *hv__header(hv_ctx *ctx, hv_dtype dt, int ndim, const int64_t *shape, int persistent) {
    hv_tensor *t = persistent ? (hv_tensor *)hv__malloc(sizeof *t) : (hv_tensor *)hv__arena_alloc(&ctx->arena, sizeof *t);
    int i;
    if (!t) return (hv_tensor *)hv__fail("hv_tensor", "out of memory for a tensor header");
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->dtype = dt;
    t->ndim = ndim;
    for (i = 0; i < ndim; i++) t->shape[i] = shape[i];
    hv__set_contiguous_strides(t);
    t->persistent = persistent ? 1 : 0;
    if (persistent) {
        t->plist_prev = ctx->persist;
        if (ctx->persist) ctx->persist->plist_next = t;
        ctx->persist = t;
    }
    return t;
}
/* a contiguous tensor with zeroed storage, persistent or in the arena */
static hv_tensor *hv__alloc(hv_ctx *ctx, hv_dtype dt, int ndim, const int64_t *shape, int persistent) {
    hv_tensor *t = hv__header(ctx, dt, ndim, shape, persistent);
    size_t bytes;
    if (!t) return NULL;
    bytes = (size_t)hv__numel_shape(ndim, shape) * hv__dtype_size(dt);
    if (persistent) {
        t->alloc = hv__malloc(bytes);
        t->data = t->alloc;
    } else {
        t->data = hv__arena_alloc(&ctx->arena, bytes);
    }
    if (!t->data) {
        if (persistent) hv_tensor_free(t);
        return (hv_tensor *)hv__fail("hv_tensor", "out of memory for %zu bytes", bytes);
    }
    memset(t->data, 0, bytes);
    return t;
}
/* the usual case inside ops: an arena f32 tensor shaped like a shape array */
static hv_tensor *hv__new(hv_ctx *ctx, int ndim, const int64_t *shape) { return hv__alloc(ctx, HV_F32, ndim, shape, 0); }
static hv_tensor *hv__new_like(const hv_tensor *t) { return hv__new(t->ctx, t->ndim, t->shape); }

/* a view header sharing x's storage (arena; the storage must outlive it) */
static hv_tensor *hv__view(hv_tensor *x, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    hv_tensor *v = hv__header(x->ctx, x->dtype, ndim, shape, 0);
    int i;
    if (!v) return NULL;
    for (i = 0; i < ndim; i++) v->stride[i] = stride[i];
    v->data = (char *)x->data + offset * (int64_t)hv__dtype_size(x->dtype);
    return v;
}

static void hv__tensor_release(hv_tensor *t) {
    hv_ctx *ctx = t->ctx;
    if (t->plist_next) t->plist_next->plist_prev = t->plist_prev;
    else ctx->persist = t->plist_prev;
    if (t->plist_prev) t->plist_prev->plist_next = t->plist_next;
    hv__free(t->alloc);
    hv__free(t);
}
HVDEF void hv_tensor_free(hv_tensor *t) {
    if (!t || !t->persistent) return; /* arena tensors go with hv_step_end */
    if (t->grad && t->grad->persistent) hv__tensor_release(t->grad);
    hv__tensor_release(t);
}

HVDEF hv_tensor *hv_tensor_new(hv_ctx *ctx, hv_dtype dtype, hv_shape s) {
    if (hv__check_shape("hv_tensor_new", s)) return NULL;
    if (dtype != HV_F32 && dtype != HV_I32)
        return (hv_tensor *)hv__fail("hv_tensor_new", "dtype %d is not supported yet (f32 and i32 are)", (int)dtype);
    return hv__alloc(ctx, dtype, s.ndim, s.d, 1);
}
HVDEF hv_tensor *hv_tensor_temp(hv_ctx *ctx, hv_dtype dtype, hv_shape s) {
    if (hv__check_shape("hv_tensor_temp", s)) return NULL;
    if (dtype != HV_F32 && dtype != HV_I32)
        return (hv_tensor *)hv__fail("hv_tensor_temp", "dtype %d is not supported yet (f32 and i32 are)", (int)dtype);
    return hv__alloc(ctx, dtype, s.ndim, s.d, 0);
}
HVDEF hv_tensor *hv_zeros(hv_ctx *ctx, hv_shape s) { return hv_tensor_new(ctx, HV_F32, s); }
HVDEF hv_tensor *hv_full(hv_ctx *ctx, hv_shape s, float value) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    if (t) hv_tensor_fill(t, value);
    return t;
}
HVDEF hv_tensor *hv_ones(hv_ctx *ctx, hv_shape s) { return hv_full(ctx, s, 1.0f); }
/* random fills run serially on the context's stream: same seed, same tensor, any thread count */
HVDEF hv_tensor *hv_randn(hv_ctx *ctx, hv_shape s, float mean, float std) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    int64_t i, n;
    float *p;
    if (!t) return NULL;
    n = hv_numel(t);
    p = (float *)t->data;
    for (i = 0; i < n; i++) p[i] = mean + std * hv_rng_normal(ctx);
    return t;
}
HVDEF hv_tensor *hv_uniform(hv_ctx *ctx, hv_shape s, float lo, float hi) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    int64_t i, n;
    float *p;
    if (!t) return NULL;
    n = hv_numel(t);
    p = (float *)t->data;
    for (i = 0; i < n; i++) p[i] = lo + (hi - lo) * hv_rng_uniform(ctx);
    return t;
}
HVDEF hv_tensor *hv_tensor_from(hv_ctx *ctx, hv_shape s, const float *values) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    if (t) memcpy(t->data, values, sizeof(float) * (size_t)hv_numel(t));
    return t;
}

HVDEF int hv_tensor_copy_from(hv_tensor *t, const void *host, size_t bytes) {
    size_t want;
    if (!t) return hv__fail("hv_tensor_copy_from", "tensor is NULL"), -1;
    want = (size_t)hv_numel(t) * hv__dtype_size(t->dtype);
    if (bytes != want)
        return hv__fail("hv_tensor_copy_from", "%s holds %zu bytes but %zu were given", hv__desc("tensor", t), want, bytes), -1;
    if (!hv_is_contiguous(t))
        return hv__fail("hv_tensor_copy_from", "%s is a strided view; copy into a contiguous tensor", hv__desc("tensor", t)), -1;
    memcpy(t->data, host, bytes);
    return 0;
}
HVDEF int hv_tensor_copy_to(const hv_tensor *t, void *host, size_t bytes) {
    hv_tensor tmp;
    size_t want;
    if (!t) return hv__fail("hv_tensor_copy_to", "tensor is NULL"), -1;
    want = (size_t)hv_numel(t) * hv__dtype_size(t->dtype);
    if (bytes != want)
        return hv__fail("hv_tensor_copy_to", "%s holds %zu bytes but the buffer has %zu", hv__desc("tensor", t), want, bytes), -1;
    /* a contiguous header over the host buffer, filled by the backend's strided copy */
    tmp = *t;
    hv__set_contiguous_strides(&tmp);
    tmp.data = host;
    t->ctx->be->copy(t->ctx, &tmp, t, 0);
    return 0;
}
HVDEF int hv_tensor_fill(hv_tensor *t, float value) {
    if (!t) return hv__fail("hv_tensor_fill", "tensor is NULL"), -1;
    t->ctx->be->fill(t->ctx, t, value);
    return 0;
}
HVDEF void hv_tensor_print(const hv_tensor *t, const char *label) {
    int64_t n, i, row;
    float *tmp;
    if (!t) {
        printf("%s: (null)\n", label ? label : "tensor");
        return;
    }
    n = hv_numel(t);
    row = t->ndim ? t->shape[t->ndim - 1] : 1;
    printf("%s %s%s\n", label ? label : (t->name[0] ? t->name : "tensor"), hv__shape_str(t), t->dtype == HV_I32 ? " i32" : "");
    tmp = (float *)hv__malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!tmp) return;
    hv_tensor_copy_to(t, tmp, hv__dtype_size(t->dtype) * (size_t)n);
    for (i = 0; i < n && i < 64 * row; i += row) {
        int64_t j;
        printf("  [");
        for (j = 0; j < row && j < 8; j++) {
            if (t->dtype == HV_I32) printf(j ? ", %d" : "%d", ((int32_t *)tmp)[i + j]);
            else printf(j ? ", %.6g" : "%.6g", tmp[i + j]);
        }
        printf(row > 8 ? ", ...]\n" : "]\n");
    }
    if (n > 64 * row) printf("  ...\n");
    hv__free(tmp);
}

HVDEF hv_ctx *hv_tensor_ctx(const hv_tensor *t) { return t ? t->ctx : NULL; }
HVDEF hv_dtype hv_tensor_dtype(const hv_tensor *t) { return t->dtype; }
HVDEF int hv_ndim(const hv_tensor *t) { return t->ndim; }
HVDEF int64_t hv_dim(const hv_tensor *t, int axis) {
    if (axis < 0) axis += t->ndim;
    return (axis >= 0 && axis < t->ndim) ? t->shape[axis] : -1;
}
HVDEF hv_shape hv_tensor_shape(const hv_tensor *t) { return hv_shape_of(t->ndim, t->shape); }
HVDEF int64_t hv_numel(const hv_tensor *t) { return t ? hv__numel_shape(t->ndim, t->shape) : 0; }
HVDEF int hv_is_contiguous(const hv_tensor *t) {
    int64_t s = 1;
    int i;
    for (i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}
HVDEF float *hv_data(hv_tensor *t) { return (t && t->dtype == HV_F32) ? (float *)t->data : NULL; }
HVDEF int32_t *hv_data_i32(hv_tensor *t) { return (t && t->dtype == HV_I32) ? (int32_t *)t->data : NULL; }
HVDEF float hv_item(const hv_tensor *t) {
    float v;
    if (!t || hv_numel(t) != 1 || t->dtype != HV_F32) {
        hv__fail("hv_item", "%s is not a one-element f32 tensor", hv__desc("tensor", t));
        return NAN;
    }
    hv_tensor_copy_to(t, &v, sizeof v);
    return v;
}
HVDEF void hv_tensor_set_name(hv_tensor *t, const char *name) {
    if (t) snprintf(t->name, sizeof t->name, "%s", name ? name : "");
}
HVDEF const char *hv_tensor_name(const hv_tensor *t) { return t ? t->name : ""; }

/* ==== 5. AUTODIFF TAPE ========================================================================= */

HVDEF void hv_set_trainable(hv_tensor *t, int trainable) {
    if (!t) return;
    t->trainable = trainable ? 1 : 0;
    t->requires_grad = t->trainable;
}
HVDEF int hv_requires_grad(const hv_tensor *t) { return t && t->requires_grad; }
HVDEF hv_tensor *hv_grad(hv_tensor *t) { return t ? t->grad : NULL; }
HVDEF void hv_zero_grad(hv_tensor *t) {
    if (t && t->grad) hv_tensor_fill(t->grad, 0.0f);
}
HVDEF int hv_set_grad_enabled(hv_ctx *ctx, int enabled) {
    int prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled ? 1 : 0;
    return prev;
}

/* after an op computed `out` from its inputs: when a gradient can flow, remember how out was
   made and put it on the tape. Returns out. */
static hv_tensor *hv__record(hv_tensor *out, const char *op, hv__bwd_fn bwd, int nin, hv_tensor *const *in) {
    int i, any = 0;
    if (!out) return NULL;
    out->op = op;
    if (!out->ctx->grad_enabled) return out;
    for (i = 0; i < nin; i++) any |= (in[i] && in[i]->requires_grad);
    if (!any) return out;
    for (i = 0; i < nin; i++) out->in[i] = in[i];
    out->backward = bwd;
    out->requires_grad = 1;
    out->tape_prev = out->ctx->tape;
    out->ctx->tape = out;
    return out;
}
#define HV__RECORD1(out, op, bwd, a) (hv__record((out), (op), (bwd), 1, &(a)))

/* the gradient buffer of t (contiguous, t's shape), made and zeroed on first use; it has t's
   lifetime so that persistent parameters keep one buffer for the whole run */
static hv_tensor *hv__grad_buf(hv_tensor *t) {
    if (!t->grad) {
        t->grad = hv__alloc(t->ctx, HV_F32, t->ndim, t->shape, t->persistent);
        if (!t->grad) return NULL;
        if (t->persistent) {
            /* the grad is owned by t, not listed as a user tensor of its own */
            hv_ctx *ctx = t->ctx;
            hv_tensor *g = t->grad;
            ctx->persist = g->plist_prev;
            if (ctx->persist) ctx->persist->plist_next = NULL;
            g->plist_prev = g->plist_next = NULL;
        }
    }
    return t->grad;
}
/* t->grad += g (g any strides, t's shape) when t wants a gradient */
static void hv__grad_add(hv_tensor *t, const hv_tensor *g) {
    hv_tensor *buf;
    if (!t || !t->requires_grad) return;
    buf = hv__grad_buf(t);
    if (buf) t->ctx->be->copy(t->ctx, buf, g, 1);
}
static int hv__needs_grad(const hv_tensor *t) { return t && t->requires_grad; }

HVDEF int hv_backward(hv_tensor *loss) {
    hv_ctx *ctx;
    hv_tensor *t, *seed;
    if (!loss) return hv__fail("hv_backward", "loss is NULL (an earlier op failed: see the previous error)"), -1;
    ctx = loss->ctx;
    if (hv_numel(loss) != 1)
        return hv__fail("hv_backward", "%s must have one element (reduce it with hv_sum or hv_mean)", hv__desc("loss", loss)), -1;
    if (!loss->requires_grad)
        return hv__fail("hv_backward", "loss does not depend on any trainable tensor (or grad mode was off)"), -1;
    seed = hv__grad_buf(loss);
    if (!seed) return -1;
    ctx->be->fill(ctx, seed, 1.0f);
    /* the tape is in creation order, a topological order: walking it backwards visits every
       tensor after all the tensors that consumed it */
    for (t = ctx->tape; t; t = t->tape_prev)
        if (t->grad && t->backward) t->backward(t);
    ctx->tape = NULL; /* consumed: the next backward starts a new graph */
    return 0;
}

HVDEF hv_tensor *hv_detach(hv_tensor *x) {
    hv_tensor *v;
    if (!x) return NULL;
    v = hv__view(x, x->ndim, x->shape, x->stride, 0);
    return v;
}

/* ==== 6. OP DEFINITIONS (forward and backward; kernels come from the backend table) ============ */

/* every op starts by checking its inputs: NULL in, NULL out (the first error stays) */
#define HV__CHECK_IN(x)                                                                            \
    do {                                                                                           \
        if (!(x)) return NULL;                                                                     \
    } while (0)

static int hv__norm_axis(const hv_tensor *t, int axis, int *out, const char *op) {
    int a = axis < 0 ? axis + t->ndim : axis;
    if (a < 0 || a >= t->ndim) {
        hv__fail(op, "axis %d is out of range for %s", axis, hv__desc("x", t));
        return -1;
    }
    *out = a;
    return 0;
}
static int hv__check_f32(const hv_tensor *t, const char *op, const char *role) {
    if (t->dtype != HV_F32) {
        hv__fail(op, "%s must be f32", hv__desc(role, t));
        return -1;
    }
    return 0;
}
static int hv__same_ctx(const hv_tensor *a, const hv_tensor *b, const char *op) {
    if (a->ctx != b->ctx) {
        hv__fail(op, "%s and %s belong to different contexts", hv__desc("a", a), hv__desc("b", b));
        return -1;
    }
    return 0;
}

/* ---- layout: views, contiguous, slice, concat ----------------------------------------------- */

static void hv__contiguous_bwd(hv_tensor *out) { hv__grad_add(out->in[0], out->grad); }
HVDEF hv_tensor *hv_copy(hv_tensor *x) {
    hv_tensor *y;
    HV__CHECK_IN(x);
    y = hv__alloc(x->ctx, x->dtype, x->ndim, x->shape, 0);
    if (!y) return NULL;
    x->ctx->be->copy(x->ctx, y, x, 0);
    return HV__RECORD1(y, "copy", hv__contiguous_bwd, x);
}
HVDEF hv_tensor *hv_contiguous(hv_tensor *x) {
    HV__CHECK_IN(x);
    return hv_is_contiguous(x) ? x : hv_copy(x);
}

/* reshape of a contiguous tensor: the grad is the output grad seen with the input's shape */
static void hv__reshape_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *g = hv__view(out->grad, x->ndim, x->shape, x->shape, 0);
    if (!g) return;
    hv__set_contiguous_strides(g);
    hv__grad_add(x, g);
}
HVDEF hv_tensor *hv_reshape(hv_tensor *x, hv_shape s) {
    int i, infer = -1;
    int64_t known = 1, n;
    hv_tensor *v;
    HV__CHECK_IN(x);
    if (s.ndim < 0 || s.ndim > HV_MAX_DIMS) return (hv_tensor *)hv__fail("hv_reshape", "ndim %d is outside 0..%d", s.ndim, HV_MAX_DIMS);
    n = hv_numel(x);
    for (i = 0; i < s.ndim; i++) {
        if (s.d[i] == -1 && infer < 0) infer = i;
        else if (s.d[i] < 0) return (hv_tensor *)hv__fail("hv_reshape", "dimension %d is %lld", i, (long long)s.d[i]);
        else known *= s.d[i];
    }
    if (infer >= 0) s.d[infer] = known ? n / known : 0;
    if (hv__numel_shape(s.ndim, s.d) != n) {
        hv_tensor tmp;
        tmp.ndim = s.ndim;
        for (i = 0; i < s.ndim; i++) tmp.shape[i] = s.d[i];
        tmp.name[0] = 0;
        return (hv_tensor *)hv__fail("hv_reshape", "cannot reshape %s (%lld elements) to %s", hv__desc("x", x), (long long)n,
                                     hv__shape_str(&tmp));
    }
    x = hv_contiguous(x);
    if (!x) return NULL;
    v = hv__view(x, s.ndim, s.d, s.d, 0);
    if (!v) return NULL;
    hv__set_contiguous_strides(v);
    return HV__RECORD1(v, "reshape", hv__reshape_bwd, x);
}

static void hv__permute_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx, *gv;
    int64_t shape[HV_MAX_DIMS], stride[HV_MAX_DIMS];
    int i;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    for (i = 0; i < out->ndim; i++) {
        shape[i] = gx->shape[out->ip[i]];
        stride[i] = gx->stride[out->ip[i]];
    }
    gv = hv__view(gx, out->ndim, shape, stride, 0);
    if (gv) x->ctx->be->copy(x->ctx, gv, out->grad, 1);
}
HVDEF hv_tensor *hv_permute(hv_tensor *x, const int *perm) {
    int64_t shape[HV_MAX_DIMS], stride[HV_MAX_DIMS];
    int i, seen = 0;
    hv_tensor *v;
    HV__CHECK_IN(x);
    for (i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || (seen & (1 << perm[i])))
            return (hv_tensor *)hv__fail("hv_permute", "perm[%d] = %d is not a permutation of the %d axes of %s", i, perm[i], x->ndim,
                                         hv__desc("x", x));
        seen |= 1 << perm[i];
        shape[i] = x->shape[perm[i]];
        stride[i] = x->stride[perm[i]];
    }
    v = hv__view(x, x->ndim, shape, stride, 0);
    if (!v) return NULL;
    for (i = 0; i < x->ndim; i++) v->ip[i] = perm[i];
    return HV__RECORD1(v, "permute", hv__permute_bwd, x);
}
HVDEF hv_tensor *hv_transpose(hv_tensor *x, int axis0, int axis1) {
    int perm[HV_MAX_DIMS], i, a0, a1;
    HV__CHECK_IN(x);
    if (hv__norm_axis(x, axis0, &a0, "hv_transpose") || hv__norm_axis(x, axis1, &a1, "hv_transpose")) return NULL;
    for (i = 0; i < x->ndim; i++) perm[i] = i;
    perm[a0] = a1;
    perm[a1] = a0;
    return hv_permute(x, perm);
}

/* geometry of x[..., start:end:step, ...] along axis */
static hv_tensor *hv__slice_view(hv_tensor *x, int axis, int64_t start, int64_t count, int64_t step) {
    int64_t shape[HV_MAX_DIMS], stride[HV_MAX_DIMS];
    int i;
    for (i = 0; i < x->ndim; i++) {
        shape[i] = x->shape[i];
        stride[i] = x->stride[i];
    }
    shape[axis] = count;
    stride[axis] = x->stride[axis] * step;
    return hv__view(x, x->ndim, shape, stride, start * x->stride[axis]);
}
static void hv__slice_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx, *gv;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    gv = hv__slice_view(gx, (int)out->ip[0], out->ip[1], out->shape[out->ip[0]], out->ip[2]);
    if (gv) x->ctx->be->copy(x->ctx, gv, out->grad, 1);
}
HVDEF hv_tensor *hv_slice(hv_tensor *x, int axis, int64_t start, int64_t end, int64_t step) {
    int a;
    int64_t n, count;
    hv_tensor *v;
    HV__CHECK_IN(x);
    if (hv__norm_axis(x, axis, &a, "hv_slice")) return NULL;
    n = x->shape[a];
    if (step <= 0) return (hv_tensor *)hv__fail("hv_slice", "step must be positive, got %lld", (long long)step);
    if (start < 0) start += n;
    if (end < 0) end += n;
    if (end > n) end = n;
    if (start < 0 || start > n || end < start)
        return (hv_tensor *)hv__fail("hv_slice", "range [%lld, %lld) is invalid for axis %d of %s", (long long)start, (long long)end, a,
                                     hv__desc("x", x));
    count = (end - start + step - 1) / step;
    v = hv__slice_view(x, a, start, count, step);
    if (!v) return NULL;
    v->ip[0] = a;
    v->ip[1] = start;
    v->ip[2] = step;
    return HV__RECORD1(v, "slice", hv__slice_bwd, x);
}

static void hv__concat_bwd(hv_tensor *out) {
    int i, axis = (int)out->ip[0];
    int64_t off = 0;
    for (i = 0; i < (int)out->ip[1]; i++) {
        hv_tensor *x = out->in[i];
        if (hv__needs_grad(x)) hv__grad_add(x, hv__slice_view(out->grad, axis, off, x->shape[axis], 1));
        off += x->shape[axis];
    }
}
/* the tape stores at most HV__MAX_IN inputs, so longer concats are built from shorter ones */
static hv_tensor *hv__concat_few(hv_tensor *const *xs, int n, int a) {
    int64_t shape[HV_MAX_DIMS], off = 0;
    int i, j;
    hv_tensor *y;
    for (j = 0; j < xs[0]->ndim; j++) shape[j] = xs[0]->shape[j];
    shape[a] = 0;
    for (i = 0; i < n; i++) shape[a] += xs[i]->shape[a];
    y = hv__alloc(xs[0]->ctx, xs[0]->dtype, xs[0]->ndim, shape, 0);
    if (!y) return NULL;
    for (i = 0; i < n; i++) {
        hv_tensor *dst = hv__slice_view(y, a, off, xs[i]->shape[a], 1);
        if (!dst) return NULL;
        y->ctx->be->copy(y->ctx, dst, xs[i], 0);
        off += xs[i]->shape[a];
    }
    y->ip[0] = a;
    y->ip[1] = n;
    return hv__record(y, "concat", hv__concat_bwd, n, xs);
}
HVDEF hv_tensor *hv_concat(hv_tensor *const *xs, int n, int axis) {
    int i, j, a;
    hv_tensor *acc;
    if (n <= 0) return (hv_tensor *)hv__fail("hv_concat", "needs at least one tensor, got %d", n);
    for (i = 0; i < n; i++) HV__CHECK_IN(xs[i]);
    if (hv__norm_axis(xs[0], axis, &a, "hv_concat")) return NULL;
    for (i = 1; i < n; i++) {
        int bad = xs[i]->ndim != xs[0]->ndim || xs[i]->dtype != xs[0]->dtype || hv__same_ctx(xs[0], xs[i], "hv_concat");
        for (j = 0; !bad && j < xs[0]->ndim; j++) bad = (j != a && xs[i]->shape[j] != xs[0]->shape[j]);
        if (bad)
            return (hv_tensor *)hv__fail("hv_concat", "%s does not match %s except along axis %d", hv__desc("tensor", xs[i]),
                                         hv__desc("the first", xs[0]), a);
    }
    acc = hv__concat_few(xs, n < HV__MAX_IN ? n : HV__MAX_IN, a);
    for (i = HV__MAX_IN; acc && i < n; i += HV__MAX_IN - 1) {
        hv_tensor *part[HV__MAX_IN];
        int k = 1;
        part[0] = acc;
        for (; k < HV__MAX_IN && i + k - 1 < n; k++) part[k] = xs[i + k - 1];
        acc = hv__concat_few(part, k, a);
    }
    return acc;
}
HVDEF int hv_split(hv_tensor *x, int axis, int n, const int64_t *sizes, hv_tensor **out) {
    int a, i;
    int64_t total = 0, off = 0;
    if (!x) return -1;
    if (hv__norm_axis(x, axis, &a, "hv_split")) return -1;
    for (i = 0; i < n; i++) {
        if (sizes[i] < 0) return hv__fail("hv_split", "size %d is negative", i), -1;
        total += sizes[i];
    }
    if (total != x->shape[a])
        return hv__fail("hv_split", "sizes add up to %lld but axis %d of %s has %lld", (long long)total, a, hv__desc("x", x),
                        (long long)x->shape[a]), -1;
    for (i = 0; i < n; i++) {
        out[i] = hv_slice(x, a, off, off + sizes[i], 1);
        if (!out[i]) return -1;
        off += sizes[i];
    }
    return 0;
}

/* ---- broadcasting helpers ------------------------------------------------------------------- */

/* the broadcast shape of a and b, NumPy rules; -1 and an error naming op when incompatible */
static int hv__broadcast(const hv_tensor *a, const hv_tensor *b, int *ndim, int64_t *shape, const char *op) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim, i;
    for (i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            hv__fail(op, "shapes do not broadcast: %s and %s differ at axis %d (%lld vs %lld)", hv__desc("a", a), hv__desc("b", b), i,
                     (long long)da, (long long)db);
            return -1;
        }
        shape[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return 0;
}
/* a view of t with the given (broadcast) shape: new leading axes and size-1 axes get stride 0 */
static hv_tensor *hv__expand(hv_tensor *t, int ndim, const int64_t *shape) {
    int64_t stride[HV_MAX_DIMS];
    int i;
    for (i = 0; i < ndim; i++) {
        int it = i - (ndim - t->ndim);
        stride[i] = (it >= 0 && t->shape[it] == shape[i]) ? t->stride[it] : 0;
    }
    return hv__view(t, ndim, shape, stride, 0);
}
/* g (a broadcast shape) summed down to t's shape: what t's gradient receives */
static hv_tensor *hv__sum_to(hv_tensor *g, const hv_tensor *t) {
    int64_t kshape[HV_MAX_DIMS];
    int i, same = g->ndim == t->ndim;
    hv_tensor *r;
    for (i = 0; same && i < g->ndim; i++) same = g->shape[i] == t->shape[i];
    if (same) return g;
    for (i = 0; i < g->ndim; i++) {
        int it = i - (g->ndim - t->ndim);
        kshape[i] = it >= 0 ? t->shape[it] : 1;
    }
    r = hv__new(g->ctx, g->ndim, kshape);
    if (!r) return NULL;
    g->ctx->be->reduce(g->ctx, HV__RED_SUM, r, g);
    r->ndim = t->ndim; /* drop the leading 1s: same contiguous data */
    for (i = 0; i < t->ndim; i++) r->shape[i] = t->shape[i];
    hv__set_contiguous_strides(r);
    return r;
}

/* ---- elementwise binary ops ----------------------------------------------------------------- */

/* out = op(a, b) at the broadcast shape of a and b, into a fresh arena tensor */
static hv_tensor *hv__binary_raw(int op, hv_tensor *a, hv_tensor *b, const char *name) {
    int64_t shape[HV_MAX_DIMS];
    int ndim;
    hv_tensor *out, *ea, *eb;
    if (hv__broadcast(a, b, &ndim, shape, name)) return NULL;
    out = hv__new(a->ctx, ndim, shape);
    ea = out ? hv__expand(a, ndim, shape) : NULL;
    eb = ea ? hv__expand(b, ndim, shape) : NULL;
    if (!eb) return NULL;
    a->ctx->be->binary(a->ctx, op, out, ea, eb);
    return out;
}
static void hv__binary_bwd(hv_tensor *out) {
    hv_tensor *a = out->in[0], *b = out->in[1], *g = out->grad, *t;
    int op = (int)out->ip[0];
    hv_ctx *ctx = out->ctx;
    if (hv__needs_grad(a)) {
        /* d/da: add, sub 1; mul b; div 1/b */
        t = (op == HV__ADD || op == HV__SUB) ? g : hv__binary_raw(op == HV__MUL ? HV__MUL : HV__DIV, g, b, "backward");
        if (t) hv__grad_add(a, hv__sum_to(t, a));
    }
    if (hv__needs_grad(b)) {
        /* d/db: add 1; sub -1; mul a; div -out/b */
        if (op == HV__ADD) t = g;
        else if (op == HV__SUB) {
            t = hv__new_like(g);
            if (t) ctx->be->unary(ctx, HV__SCALE, -1.0f, t, g);
        } else if (op == HV__MUL) t = hv__binary_raw(HV__MUL, g, a, "backward");
        else {
            t = hv__binary_raw(HV__MUL, g, out, "backward");
            t = t ? hv__binary_raw(HV__DIV, t, b, "backward") : NULL;
            if (t) ctx->be->unary(ctx, HV__SCALE, -1.0f, t, t);
        }
        if (t) hv__grad_add(b, hv__sum_to(t, b));
    }
}
static hv_tensor *hv__binary(int op, hv_tensor *a, hv_tensor *b, const char *name) {
    hv_tensor *out, *in[2];
    HV__CHECK_IN(a);
    HV__CHECK_IN(b);
    if (hv__check_f32(a, name, "a") || hv__check_f32(b, name, "b") || hv__same_ctx(a, b, name)) return NULL;
    out = hv__binary_raw(op, a, b, name);
    if (!out) return NULL;
    out->ip[0] = op;
    in[0] = a;
    in[1] = b;
    return hv__record(out, name + 3, hv__binary_bwd, 2, in);
}
HVDEF hv_tensor *hv_add(hv_tensor *a, hv_tensor *b) { return hv__binary(HV__ADD, a, b, "hv_add"); }
HVDEF hv_tensor *hv_sub(hv_tensor *a, hv_tensor *b) { return hv__binary(HV__SUB, a, b, "hv_sub"); }
HVDEF hv_tensor *hv_mul(hv_tensor *a, hv_tensor *b) { return hv__binary(HV__MUL, a, b, "hv_mul"); }
HVDEF hv_tensor *hv_div(hv_tensor *a, hv_tensor *b) { return hv__binary(HV__DIV, a, b, "hv_div"); }

/* ---- elementwise unary ops ------------------------------------------------------------------ */

static void hv__unary_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->unary_bwd(out->ctx, (int)out->ip[0], (float)out->fp[0], gx, x, out, out->grad);
}
static hv_tensor *hv__unary(int op, float alpha, hv_tensor *x, const char *name) {
    hv_tensor *out;
    HV__CHECK_IN(x);
    if (hv__check_f32(x, name, "x")) return NULL;
    out = hv__new_like(x);
    if (!out) return NULL;
    x->ctx->be->unary(x->ctx, op, alpha, out, x);
    out->ip[0] = op;
    out->fp[0] = alpha;
    return HV__RECORD1(out, name + 3, hv__unary_bwd, x);
}
HVDEF hv_tensor *hv_scale(hv_tensor *x, float s) { return hv__unary(HV__SCALE, s, x, "hv_scale"); }
HVDEF hv_tensor *hv_add_scalar(hv_tensor *x, float s) { return hv__unary(HV__ADD_SCALAR, s, x, "hv_add_scalar"); }
HVDEF hv_tensor *hv_exp(hv_tensor *x) { return hv__unary(HV__EXP, 0, x, "hv_exp"); }
HVDEF hv_tensor *hv_log(hv_tensor *x) { return hv__unary(HV__LOG, 0, x, "hv_log"); }
HVDEF hv_tensor *hv_sqrt(hv_tensor *x) { return hv__unary(HV__SQRT, 0, x, "hv_sqrt"); }
HVDEF hv_tensor *hv_tanh(hv_tensor *x) { return hv__unary(HV__TANH, 0, x, "hv_tanh"); }
HVDEF hv_tensor *hv_sigmoid(hv_tensor *x) { return hv__unary(HV__SIGMOID, 0, x, "hv_sigmoid"); }
HVDEF hv_tensor *hv_relu(hv_tensor *x) { return hv__unary(HV__RELU, 0, x, "hv_relu"); }
HVDEF hv_tensor *hv_leaky_relu(hv_tensor *x, float slope) { return hv__unary(HV__LEAKY_RELU, slope, x, "hv_leaky_relu"); }
HVDEF hv_tensor *hv_gelu(hv_tensor *x) { return hv__unary(HV__GELU, 0, x, "hv_gelu"); }

/* ---- reductions ----------------------------------------------------------------------------- */

/* the keepdim shape of reducing x over the axes (naxes 0: all); -1 on a bad axis */
static int hv__reduce_shape(const hv_tensor *x, int naxes, const int *axes, int64_t *kshape, int *mask, const char *op) {
    int i, a;
    *mask = 0;
    for (i = 0; i < naxes; i++) {
        if (hv__norm_axis(x, axes[i], &a, op)) return -1;
        *mask |= 1 << a;
    }
    if (naxes == 0) *mask = (1 << x->ndim) - 1;
    for (i = 0; i < x->ndim; i++) kshape[i] = (*mask & (1 << i)) ? 1 : x->shape[i];
    return 0;
}
/* the keepdim result r seen without the reduced axes */
static hv_tensor *hv__drop_axes(hv_tensor *r, int mask) {
    int64_t shape[HV_MAX_DIMS];
    int i, n = 0;
    hv_tensor *v;
    for (i = 0; i < r->ndim; i++)
        if (!(mask & (1 << i))) shape[n++] = r->shape[i];
    v = hv__view(r, n, shape, shape, 0);
    if (v) hv__set_contiguous_strides(v);
    return v;
}
/* out is r or its dropped-axes view; ip[0] keeps the mask. The grad of out has out's shape; seen
   with x's ndim (keepdim) it broadcasts back to x. */
static hv_tensor *hv__grad_keepdim(hv_tensor *out, const hv_tensor *x) {
    int64_t kshape[HV_MAX_DIMS];
    int i, mask = (int)out->ip[0];
    hv_tensor *g;
    for (i = 0; i < x->ndim; i++) kshape[i] = (mask & (1 << i)) ? 1 : x->shape[i];
    g = hv__view(out->grad, x->ndim, kshape, kshape, 0);
    if (g) hv__set_contiguous_strides(g);
    return g;
}
static void hv__sum_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *g = hv__grad_keepdim(out, x);
    if (g) hv__grad_add(x, hv__expand(g, x->ndim, x->shape));
}
static void hv__max_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *g = hv__grad_keepdim(out, x), *gx;
    if (!g || !hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->reduce_max_bwd(out->ctx, gx, x, out->saved[0], g);
}
static hv_tensor *hv__reduce(int op, hv_tensor *x, int naxes, const int *axes, int keepdim, const char *name) {
    int64_t kshape[HV_MAX_DIMS];
    int mask;
    hv_tensor *r, *out;
    HV__CHECK_IN(x);
    if (hv__check_f32(x, name, "x") || hv__reduce_shape(x, naxes, axes, kshape, &mask, name)) return NULL;
    if (op == HV__RED_MAX && hv_numel(x) == 0) return (hv_tensor *)hv__fail(name, "max of an empty %s", hv__desc("x", x));
    r = hv__new(x->ctx, x->ndim, kshape);
    if (!r) return NULL;
    x->ctx->be->reduce(x->ctx, op, r, x);
    out = keepdim ? r : hv__drop_axes(r, mask);
    if (!out) return NULL;
    out->ip[0] = mask;
    out->saved[0] = r;
    return HV__RECORD1(out, name + 3, op == HV__RED_SUM ? hv__sum_bwd : hv__max_bwd, x);
}
HVDEF hv_tensor *hv_sum(hv_tensor *x, int naxes, const int *axes, int keepdim) {
    return hv__reduce(HV__RED_SUM, x, naxes, axes, keepdim, "hv_sum");
}
HVDEF hv_tensor *hv_max(hv_tensor *x, int naxes, const int *axes, int keepdim) {
    return hv__reduce(HV__RED_MAX, x, naxes, axes, keepdim, "hv_max");
}
HVDEF hv_tensor *hv_mean(hv_tensor *x, int naxes, const int *axes, int keepdim) {
    int64_t kshape[HV_MAX_DIMS], count;
    int mask;
    HV__CHECK_IN(x);
    if (hv__reduce_shape(x, naxes, axes, kshape, &mask, "hv_mean")) return NULL;
    count = hv_numel(x) / (hv__numel_shape(x->ndim, kshape) ? hv__numel_shape(x->ndim, kshape) : 1);
    if (count == 0) return (hv_tensor *)hv__fail("hv_mean", "mean over no elements of %s", hv__desc("x", x));
    return hv_scale(hv_sum(x, naxes, axes, keepdim), (float)(1.0 / (double)count));
}

/* ---- matrix products ------------------------------------------------------------------------ */

/* rows and columns of op(t) for the last two axes */
static void hv__mat_dims(const hv_tensor *t, int trans, int64_t *rows, int64_t *cols) {
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    *rows = trans ? c : r;
    *cols = trans ? r : c;
}
/* C (+)= op(A) op(B) for every matrix of a batch whose batch axes broadcast. A, B, C are
   contiguous in their last two axes; ea/eb/ec give batch strides over the batch shape bshape. */
static void hv__gemm_batched(hv_ctx *ctx, int ta, int tb, const hv_tensor *A, const hv_tensor *B, hv_tensor *C, int nb,
                             const int64_t *bshape, float beta) {
    int64_t sa[HV_MAX_DIMS], sb[HV_MAX_DIMS], sc[HV_MAX_DIMS], nbatch = hv__numel_shape(nb, bshape), i;
    hv__gemm_args g;
    int d, shared = 0;
    for (d = 0; d < nb; d++) {
        int ia = d - (nb - (A->ndim - 2)), ib = d - (nb - (B->ndim - 2)), ic = d - (nb - (C->ndim - 2));
        sa[d] = (ia >= 0 && A->shape[ia] == bshape[d]) ? A->stride[ia] : 0;
        sb[d] = (ib >= 0 && B->shape[ib] == bshape[d]) ? B->stride[ib] : 0;
        sc[d] = (ic >= 0 && C->shape[ic] == bshape[d]) ? C->stride[ic] : 0;
        shared |= (sc[d] == 0 && bshape[d] > 1);
    }
    memset(&g, 0, sizeof g);
    g.trans_a = ta;
    g.trans_b = tb;
    hv__mat_dims(A, ta, &g.m, &g.k);
    g.n = tb ? B->shape[B->ndim - 2] : B->shape[B->ndim - 1];
    g.alpha = 1.0f;
    g.beta = beta;
    g.lda = A->stride[A->ndim - 2];
    g.ldb = B->stride[B->ndim - 2];
    g.ldc = C->stride[C->ndim - 2];
    g.batch = 1;
    /* one matrix at a time, in order: a C shared by several products (a broadcast operand's
       gradient) accumulates them serially, so the result does not depend on threads */
    for (i = 0; i < nbatch; i++) {
        int64_t rem = i, oa = 0, ob = 0, oc = 0;
        for (d = nb - 1; d >= 0; d--) {
            int64_t idx = rem % bshape[d];
            rem /= bshape[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
            oc += idx * sc[d];
        }
        g.a = (const float *)A->data + oa;
        g.b = (const float *)B->data + ob;
        g.c = (float *)C->data + oc;
        g.beta = (beta != 0 || (shared && i > 0)) ? 1.0f : 0.0f;
        ctx->be->gemm(ctx, &g);
    }
}
/* a tensor (..., R, C) folded to (prod(...) * R, C) when contiguous; for the single big GEMM */
static hv_tensor *hv__fold_rows(hv_tensor *t) {
    int64_t s[2];
    hv_tensor *v;
    s[1] = t->shape[t->ndim - 1];
    s[0] = hv_numel(t) / (s[1] ? s[1] : 1);
    v = hv__view(t, 2, s, s, 0);
    if (v) hv__set_contiguous_strides(v);
    return v;
}
static void hv__matmul_bwd(hv_tensor *out) {
    hv_tensor *a = out->in[0], *b = out->in[1], *g = out->grad;
    int ta = (int)out->ip[0], tb = (int)out->ip[1], nb = out->ndim - 2;
    hv_ctx *ctx = out->ctx;
    int fold = b->ndim == 2 && !ta; /* linear layers: all rows of a batch in one GEMM */
    if (hv__needs_grad(a)) {
        hv_tensor *ga = hv__grad_buf(a);
        if (!ga) return;
        if (fold) hv__gemm_batched(ctx, 0, !tb, hv__fold_rows(g), b, hv__fold_rows(ga), 0, NULL, 1.0f);
        else if (!ta) hv__gemm_batched(ctx, 0, !tb, g, b, ga, nb, out->shape, 1.0f);
        else hv__gemm_batched(ctx, tb, 1, b, g, ga, nb, out->shape, 1.0f);
    }
    if (hv__needs_grad(b)) {
        hv_tensor *gb = hv__grad_buf(b);
        if (!gb) return;
        if (fold) {
            if (!tb) hv__gemm_batched(ctx, 1, 0, hv__fold_rows(a), hv__fold_rows(g), gb, 0, NULL, 1.0f);
            else hv__gemm_batched(ctx, 1, 0, hv__fold_rows(g), hv__fold_rows(a), gb, 0, NULL, 1.0f);
        } else if (!tb) hv__gemm_batched(ctx, !ta, 0, a, g, gb, nb, out->shape, 1.0f);
        else hv__gemm_batched(ctx, 1, ta, g, a, gb, nb, out->shape, 1.0f);
    }
}
HVDEF hv_tensor *hv_matmul(hv_tensor *a, hv_tensor *b, int trans_a, int trans_b) {
    int64_t m, ka, kb, n, shape[HV_MAX_DIMS];
    int nb;
    hv_tensor *out, *in[2], ba, bb;
    HV__CHECK_IN(a);
    HV__CHECK_IN(b);
    if (hv__check_f32(a, "hv_matmul", "a") || hv__check_f32(b, "hv_matmul", "b") || hv__same_ctx(a, b, "hv_matmul")) return NULL;
    if (a->ndim < 2 || b->ndim < 2)
        return (hv_tensor *)hv__fail("hv_matmul", "needs at least 2 axes: %s, %s", hv__desc("a", a), hv__desc("b", b));
    hv__mat_dims(a, trans_a, &m, &ka);
    hv__mat_dims(b, trans_b, &kb, &n);
    if (ka != kb)
        return (hv_tensor *)hv__fail("hv_matmul", "inner dimensions differ: %s%s has %lld columns, %s%s has %lld rows", hv__desc("a", a),
                                     trans_a ? "^T" : "", (long long)ka, hv__desc("b", b), trans_b ? "^T" : "", (long long)kb);
    /* batch axes: broadcast a's and b's leading axes */
    ba = *a;
    bb = *b;
    ba.ndim -= 2;
    bb.ndim -= 2;
    if (hv__broadcast(&ba, &bb, &nb, shape, "hv_matmul")) return NULL;
    a = hv_contiguous(a);
    b = hv_contiguous(b);
    if (!a || !b) return NULL;
    shape[nb] = m;
    shape[nb + 1] = n;
    out = hv__new(a->ctx, nb + 2, shape);
    if (!out) return NULL;
    if (b->ndim == 2 && !trans_a) hv__gemm_batched(a->ctx, 0, trans_b, hv__fold_rows(a), b, hv__fold_rows(out), 0, NULL, 0.0f);
    else hv__gemm_batched(a->ctx, trans_a, trans_b, a, b, out, nb, shape, 0.0f);
    out->ip[0] = trans_a;
    out->ip[1] = trans_b;
    in[0] = a;
    in[1] = b;
    return hv__record(out, "matmul", hv__matmul_bwd, 2, in);
}
HVDEF hv_tensor *hv_linear(hv_tensor *x, hv_tensor *w, hv_tensor *b) {
    hv_tensor *y;
    HV__CHECK_IN(x);
    HV__CHECK_IN(w);
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return (hv_tensor *)hv__fail("hv_linear", "%s does not fit %s (want x (..., in) and weight (out, in))", hv__desc("x", x),
                                     hv__desc("weight", w));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return (hv_tensor *)hv__fail("hv_linear", "%s does not fit %s (want bias (out))", hv__desc("bias", b), hv__desc("weight", w));
    if (x->ndim == 1) {
        int64_t row[2];
        row[0] = 1;
        row[1] = x->shape[0];
        return hv_reshape(hv_linear(hv_reshape(x, hv_shape_of(2, row)), w, b), hv_shape_of(1, &w->shape[0]));
    }
    y = hv_matmul(x, w, 0, 1);
    return b ? hv_add(y, b) : y;
}

/* ---- ops of the neural-network layers: normalisation, attention, indexing, losses ----------- */
/* HV-SECTION nn-ops BEGIN */
/* HV-SECTION nn-ops END */

/* ---- ops of the convolutional networks: conv, pooling, batch norm, resize ------------------- */
/* HV-SECTION conv-ops BEGIN */
/* HV-SECTION conv-ops END */

/* ==== 7. CPU BACKEND: scalar reference kernels =================================================
   Written for clarity: every fast kernel of a later section is checked against these. Each loop
   that runs in parallel gives one output element to one thread, and each element's sum runs in a
   fixed order, so results do not depend on the thread count. */

/* offset, in elements, of the i-th element (row-major order) of t */
static int64_t hv__offset(const hv_tensor *t, int64_t i) {
    int64_t off = 0;
    int d;
    for (d = t->ndim - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (i % n) * t->stride[d];
        i /= n;
    }
    return off;
}

static void hv__cpu_copy(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate) {
    int64_t i, n = hv_numel(dst);
    int fast = hv_is_contiguous(dst) && hv_is_contiguous(src);
    if (!accumulate) {
        uint32_t *d = (uint32_t *)dst->data;
        const uint32_t *s = (const uint32_t *)src->data;
        if (fast) {
            memcpy(d, s, sizeof(uint32_t) * (size_t)n);
            return;
        }
        HV__PARALLEL_FOR(ctx, n)
        for (i = 0; i < n; i++) d[hv__offset(dst, i)] = s[hv__offset(src, i)];
    } else {
        float *d = (float *)dst->data;
        const float *s = (const float *)src->data;
        HV__PARALLEL_FOR(ctx, n)
        for (i = 0; i < n; i++) {
            if (fast) d[i] += s[i];
            else d[hv__offset(dst, i)] += s[hv__offset(src, i)];
        }
    }
}

static void hv__cpu_fill(hv_ctx *ctx, hv_tensor *dst, float value) {
    int64_t i, n = hv_numel(dst);
    float *d = (float *)dst->data;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) d[hv__offset(dst, i)] = value;
}

static void hv__cpu_gemm(hv_ctx *ctx, const hv__gemm_args *g) {
    int64_t bi;
    for (bi = 0; bi < g->batch; bi++) {
        const float *A = g->a + bi * g->batch_stride_a, *B = g->b + bi * g->batch_stride_b;
        float *C = g->c + bi * g->batch_stride_c;
        int64_t i;
        HV__PARALLEL_FOR(ctx, g->m * g->n * g->k)
        for (i = 0; i < g->m; i++) {
            float *c = C + i * g->ldc;
            int64_t j, p;
            if (g->beta == 0) memset(c, 0, sizeof(float) * (size_t)g->n);
            else if (g->beta != 1)
                for (j = 0; j < g->n; j++) c[j] *= g->beta;
            if (g->trans_b) { /* B stored (n, k): one dot product per element */
                for (j = 0; j < g->n; j++) {
                    float acc = 0;
                    for (p = 0; p < g->k; p++) acc += (g->trans_a ? A[p * g->lda + i] : A[i * g->lda + p]) * B[j * g->ldb + p];
                    c[j] += g->alpha * acc;
                }
            } else { /* B stored (k, n): rows of B scaled into the row of C */
                for (p = 0; p < g->k; p++) {
                    float a = g->alpha * (g->trans_a ? A[p * g->lda + i] : A[i * g->lda + p]);
                    const float *b = B + p * g->ldb;
                    for (j = 0; j < g->n; j++) c[j] += a * b[j];
                }
            }
        }
    }
}

static void hv__cpu_binary(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *a, const hv_tensor *b) {
    int64_t i, n = hv_numel(out);
    float *o = (float *)out->data;
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) {
        float x = pa[hv__offset(a, i)], y = pb[hv__offset(b, i)];
        o[i] = op == HV__ADD ? x + y : op == HV__SUB ? x - y : op == HV__MUL ? x * y : x / y;
    }
}

static float hv__gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static float hv__unary_f(int op, float alpha, float x) {
    switch (op) {
    case HV__EXP: return expf(x);
    case HV__LOG: return logf(x);
    case HV__SQRT: return sqrtf(x);
    case HV__TANH: return tanhf(x);
    case HV__SIGMOID: return 1.0f / (1.0f + expf(-x));
    case HV__RELU: return x > 0 ? x : 0.0f;
    case HV__LEAKY_RELU: return x > 0 ? x : alpha * x;
    case HV__GELU: return hv__gelu_f(x);
    case HV__SCALE: return alpha * x;
    default: return x + alpha; /* HV__ADD_SCALAR */
    }
}
/* d op(x) / dx, from x and y = op(x) */
static float hv__unary_df(int op, float alpha, float x, float y) {
    switch (op) {
    case HV__EXP: return y;
    case HV__LOG: return 1.0f / x;
    case HV__SQRT: return 0.5f / y;
    case HV__TANH: return 1.0f - y * y;
    case HV__SIGMOID: return y * (1.0f - y);
    case HV__RELU: return x > 0 ? 1.0f : 0.0f;
    case HV__LEAKY_RELU: return x > 0 ? 1.0f : alpha;
    case HV__GELU: /* Phi(x) + x phi(x) */
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);
    case HV__SCALE: return alpha;
    default: return 1.0f;
    }
}
static void hv__cpu_unary(hv_ctx *ctx, int op, float alpha, hv_tensor *out, const hv_tensor *x) {
    int64_t i, n = hv_numel(out);
    float *o = (float *)out->data;
    const float *px = (const float *)x->data;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) o[hv__offset(out, i)] = hv__unary_f(op, alpha, px[hv__offset(x, i)]);
}
static void hv__cpu_unary_bwd(hv_ctx *ctx, int op, float alpha, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y,
                              const hv_tensor *gy) {
    int64_t i, n = hv_numel(gx);
    float *g = (float *)gx->data;
    const float *px = (const float *)x->data, *py = (const float *)y->data, *pg = (const float *)gy->data;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++)
        g[hv__offset(gx, i)] += pg[hv__offset(gy, i)] * hv__unary_df(op, alpha, px[hv__offset(x, i)], py[hv__offset(y, i)]);
}

/* the reduced sub-space of x for a keepdim result r: shape and strides of the reduced axes */
typedef struct hv__red_plan {
    int nred;
    int64_t shape[HV_MAX_DIMS], stride[HV_MAX_DIMS], count;
} hv__red_plan;
static hv__red_plan hv__red_plan_of(const hv_tensor *r, const hv_tensor *x) {
    hv__red_plan p;
    int d;
    p.nred = 0;
    p.count = 1;
    for (d = 0; d < x->ndim; d++)
        if (r->shape[d] == 1 && x->shape[d] != 1) {
            p.shape[p.nred] = x->shape[d];
            p.stride[p.nred++] = x->stride[d];
            p.count *= x->shape[d];
        }
    return p;
}
/* offset in x of the first element that the result element o reduces */
static int64_t hv__red_base(const hv_tensor *r, const hv_tensor *x, int64_t o) {
    int64_t off = 0;
    int d;
    for (d = r->ndim - 1; d >= 0; d--) {
        if (r->shape[d] == x->shape[d]) off += (o % r->shape[d]) * x->stride[d];
        o /= r->shape[d];
    }
    return off;
}
static int64_t hv__red_step(const hv__red_plan *p, int64_t j) {
    int64_t off = 0;
    int d;
    for (d = p->nred - 1; d >= 0; d--) {
        off += (j % p->shape[d]) * p->stride[d];
        j /= p->shape[d];
    }
    return off;
}
static void hv__cpu_reduce(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x) {
    hv__red_plan p = hv__red_plan_of(out, x);
    int64_t o, n = hv_numel(out);
    float *po = (float *)out->data;
    const float *px = (const float *)x->data;
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (o = 0; o < n; o++) {
        int64_t base = hv__red_base(out, x, o), j;
        if (op == HV__RED_SUM) {
            double acc = 0;
            for (j = 0; j < p.count; j++) acc += px[base + hv__red_step(&p, j)];
            po[o] = (float)acc;
        } else {
            float m = px[base];
            for (j = 1; j < p.count; j++) {
                float v = px[base + hv__red_step(&p, j)];
                if (v > m || v != v) m = v; /* NaN wins, as in PyTorch */
            }
            po[o] = m;
        }
    }
}
static void hv__cpu_reduce_max_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy) {
    hv__red_plan px_plan = hv__red_plan_of(y, x), pg_plan = hv__red_plan_of(y, gx);
    int64_t o, n = hv_numel(y);
    const float *px = (const float *)x->data, *py = (const float *)y->data, *pgy = (const float *)gy->data;
    float *pgx = (float *)gx->data;
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (o = 0; o < n; o++) {
        int64_t bx = hv__red_base(y, x, o), bg = hv__red_base(y, gx, o), j;
        for (j = 0; j < px_plan.count; j++)
            if (px[bx + hv__red_step(&px_plan, j)] == py[o] || py[o] != py[o]) {
                pgx[bg + hv__red_step(&pg_plan, j)] += pgy[o];
                break;
            }
    }
}

/* HV-SECTION cpu-simd BEGIN */
/* ---- SIMD SGEMM: packed, cache-blocked, register-tiled -----------------------------------------
   The scalar hv__cpu_gemm above stays the reference (and the path of builds without SIMD). The
   fast path is the GotoBLAS/BLIS loop nest, written once and compiled per ISA:

     for jc in N by NC:                          one phase: NC columns by (up to) all of K
       for pg in K by a phase:
         pack op(B)(pg.., jc..) as KC blocks of NR-wide column panels (k-major)    L3/L2
         for each item (ic: a block of <= MC rows of C, and a slice of the NC columns):
           for pc in the phase by KC:            (the K blocks run in order: fixed sum order)
             pack alpha * op(A)(ic.., pc..) into MR-high row panels (k-major)     L2
             for jr by NR:                       the B micro-panel (KC x NR) stays in L1 ...
               for ir by MR:                     ... while the A micro-panels stream past it
                 micro-kernel: an MR x NR tile of C in registers, KC rank-1 updates

   Packing absorbs the four transpose cases, alpha and the leading dimensions, so the micro-kernel
   sees one layout. Edge tiles (m or n not a multiple of MR/NR) run the same micro-kernel on a
   zero-padded panel into a small tile buffer that is copied in and out: every element of C gets
   the same operations wherever it sits.

   Threads (OpenMP): one parallel region per call. The threads pack a phase's B together, then
   take items dynamically (a thread that the OS preempts does not hold the others up); one
   barrier per phase. A batch of independent C matrices (attention) is split by whole matrix
   instead. Each element of C is summed by one thread in one fixed order (KC blocks in order, k in
   order inside the micro-kernel) whoever takes its item, so 1 and N threads give the same bits.

   Workspace: packing buffers come from the context (ctx->gemm_ws), grown once to the largest need
   and reused, so a steady training loop allocates nothing here.

   ISA choice. Single-header build: by the compiler's macros (__AVX512F__; __AVX2__ and __FMA__;
   __ARM_NEON on aarch64), else the scalar reference. Portable x86-64 binaries: compile the
   implementation with HUMANVIT_CPU_DISPATCH and link kernels_cpu/hv_cpu_avx512.c and
   kernels_cpu/hv_cpu_avx2.c (each defines HUMANVIT_KERNELS_AVX512 / HUMANVIT_KERNELS_AVX2 and
   HUMANVIT_STATIC, includes this header, and is compiled with that ISA's flags): the best one the
   CPU supports is picked once, at hv_init (cpuid via __builtin_cpu_supports, gcc and clang).
   hv_cpu_isa() names the choice. Speed and its measurement: bench/bench.c, bench/RESULTS.md. */

/* one ISA's entry point: C (+)= as in hv__gemm_args with `nthreads` threads at most. Needs `ws` of
   at least the returned number of floats; when ws_floats is smaller it does nothing and returns
   the need, so the caller can grow the buffer and call again. */
typedef size_t (*hv__sgemm_fn)(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);

#if defined(HUMANVIT_KERNELS_AVX512)
#if !defined(__AVX512F__) || !defined(__FMA__)
#error "kernels_cpu/hv_cpu_avx512.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mfma"
#endif
#define HV__SIMD_AVX512 1
#define HV__SGEMM_ENTRY hv__sgemm_avx512
#elif defined(HUMANVIT_KERNELS_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels_cpu/hv_cpu_avx2.c must be compiled with -mavx2 -mfma"
#endif
#define HV__SIMD_AVX2 1
#define HV__SGEMM_ENTRY hv__sgemm_avx2
#elif defined(HUMANVIT_CPU_DISPATCH) && (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HV__SGEMM_DISPATCH 1 /* no kernel in this translation unit: kernels_cpu/ brings them */
#elif defined(__AVX512F__) && defined(__FMA__)
#define HV__SIMD_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define HV__SIMD_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define HV__SIMD_NEON 1
#endif

#if defined(HV__SIMD_AVX512) || defined(HV__SIMD_AVX2)
#include <immintrin.h>
#elif defined(HV__SIMD_NEON)
#include <arm_neon.h>
#endif

/* Blocking. MR x NR is the register tile; KC x NR floats of B (one micro-panel) should sit in L1
   next to the streaming A, MC x KC of A in L2, the phase's B in L2/L3. Sizes, not correctness
   parameters: AVX-512 ones chosen by measurement on a Zen 5 core (bench/RESULTS.md: 8 x 32 beat
   6, 12 and 14 rows, and tied with 8 x 48), the others from the usual L1/L2 arithmetic. The AVX-512
   ones can be overridden with -D for tuning runs. */
#if defined(HV__SIMD_AVX512)
#ifndef HV__MR
#define HV__MR 8
#endif
#define HV__NR 32
#ifndef HV__MC
#define HV__MC 96
#endif
#ifndef HV__KC
#define HV__KC 384
#endif
#ifndef HV__NC
#define HV__NC 2048
#endif
#elif defined(HV__SIMD_AVX2)
#define HV__MR 6
#define HV__NR 16
#define HV__MC 144
#define HV__KC 256
#define HV__NC 2048
#elif defined(HV__SIMD_NEON)
#define HV__MR 8
#define HV__NR 8
#define HV__MC 128
#define HV__KC 256
#define HV__NC 2048
#endif

#ifdef HV__MR
#ifdef HV__SGEMM_ENTRY /* a kernels_cpu/ translation unit: the entry point is what it exports */
#define HV__SGEMM_LINKAGE
#ifdef __cplusplus
extern "C" size_t HV__SGEMM_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#else
size_t HV__SGEMM_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#endif
#else
#define HV__SGEMM_ENTRY hv__sgemm_native
#define HV__SGEMM_LINKAGE static
#endif

/* ---- micro-kernels: C[MR x NR] (ldc) = acc + (load_c ? beta * C : 0), acc = sum_p a[p] b[p]^T.
   a: MR floats per k (k-major panel), b: NR floats per k. beta is 1 after the first K block. ---- */
#if defined(HV__SIMD_AVX512)
#if HV__MR == 6
#define HV__K_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#elif HV__MR == 8
#define HV__K_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#elif HV__MR == 12
#define HV__K_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#elif HV__MR == 14
#define HV__K_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
#endif
#define HV__K_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
#define HV__K_FMA(i)                                                                           \
    {                                                                                          \
        __m512 av = _mm512_set1_ps(a[i]);                                                      \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                                            \
        c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);                                            \
    }
#define HV__K_STORE(i)                                                                         \
    {                                                                                          \
        float *cr = c + (i) * ldc;                                                             \
        if (load_c) {                                                                          \
            c##i##0 = _mm512_fmadd_ps(_mm512_loadu_ps(cr), vbeta, c##i##0);                    \
            c##i##1 = _mm512_fmadd_ps(_mm512_loadu_ps(cr + 16), vbeta, c##i##1);               \
        }                                                                                      \
        _mm512_storeu_ps(cr, c##i##0);                                                         \
        _mm512_storeu_ps(cr + 16, c##i##1);                                                    \
    }
/* C's rows are fetched while the k loop runs: C is stored once per KC block and, for large
   problems, has left the caches since */
#define HV__K_PF(i)                                                                            \
    _mm_prefetch((const char *)(c + (i) * ldc), _MM_HINT_T0);                                  \
    _mm_prefetch((const char *)(c + (i) * ldc + 31), _MM_HINT_T0);
static void hv__sgemm_ukr(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int load_c, float beta) {
    __m512 vbeta = _mm512_set1_ps(beta);
    int64_t p;
    HV__K_ROWS(HV__K_PF)
    HV__K_ROWS(HV__K_DECL)
    for (p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        HV__K_ROWS(HV__K_FMA)
        a += HV__MR;
        b += HV__NR;
    }
    HV__K_ROWS(HV__K_STORE)
}
#elif defined(HV__SIMD_AVX2)
#define HV__K_DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
#define HV__K_FMA(i)                                                                           \
    {                                                                                          \
        __m256 av = _mm256_broadcast_ss(a + (i));                                              \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);                                            \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);                                            \
    }
#define HV__K_STORE(i)                                                                         \
    {                                                                                          \
        float *cr = c + (i) * ldc;                                                             \
        if (load_c) {                                                                          \
            c##i##0 = _mm256_fmadd_ps(_mm256_loadu_ps(cr), vbeta, c##i##0);                    \
            c##i##1 = _mm256_fmadd_ps(_mm256_loadu_ps(cr + 8), vbeta, c##i##1);                \
        }                                                                                      \
        _mm256_storeu_ps(cr, c##i##0);                                                         \
        _mm256_storeu_ps(cr + 8, c##i##1);                                                     \
    }
static void hv__sgemm_ukr(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int load_c, float beta) {
    __m256 vbeta = _mm256_set1_ps(beta);
    int64_t p;
    HV__K_DECL(0) HV__K_DECL(1) HV__K_DECL(2) HV__K_DECL(3) HV__K_DECL(4) HV__K_DECL(5)
    for (p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        HV__K_FMA(0) HV__K_FMA(1) HV__K_FMA(2) HV__K_FMA(3) HV__K_FMA(4) HV__K_FMA(5)
        a += HV__MR;
        b += HV__NR;
    }
    HV__K_STORE(0) HV__K_STORE(1) HV__K_STORE(2) HV__K_STORE(3) HV__K_STORE(4) HV__K_STORE(5)
}
#elif defined(HV__SIMD_NEON)
/* 8 x 8: 16 accumulators; each k loads 2 vectors of A and 2 of B and uses A's lanes */
#define HV__K_DECL(i) float32x4_t c##i##0 = vdupq_n_f32(0.0f), c##i##1 = vdupq_n_f32(0.0f);
#define HV__K_FMA(i, av, lane)                                                                 \
    c##i##0 = vfmaq_laneq_f32(c##i##0, b0, av, lane);                                          \
    c##i##1 = vfmaq_laneq_f32(c##i##1, b1, av, lane);
#define HV__K_STORE(i)                                                                         \
    {                                                                                          \
        float *cr = c + (i) * ldc;                                                             \
        if (load_c) {                                                                          \
            c##i##0 = vfmaq_f32(c##i##0, vld1q_f32(cr), vbeta);                                \
            c##i##1 = vfmaq_f32(c##i##1, vld1q_f32(cr + 4), vbeta);                            \
        }                                                                                      \
        vst1q_f32(cr, c##i##0);                                                                \
        vst1q_f32(cr + 4, c##i##1);                                                            \
    }
static void hv__sgemm_ukr(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int load_c, float beta) {
    float32x4_t vbeta = vdupq_n_f32(beta);
    int64_t p;
    HV__K_DECL(0) HV__K_DECL(1) HV__K_DECL(2) HV__K_DECL(3) HV__K_DECL(4) HV__K_DECL(5) HV__K_DECL(6) HV__K_DECL(7)
    for (p = 0; p < kc; p++) {
        float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4), b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
        HV__K_FMA(0, a0, 0) HV__K_FMA(1, a0, 1) HV__K_FMA(2, a0, 2) HV__K_FMA(3, a0, 3)
        HV__K_FMA(4, a1, 0) HV__K_FMA(5, a1, 1) HV__K_FMA(6, a1, 2) HV__K_FMA(7, a1, 3)
        a += HV__MR;
        b += HV__NR;
    }
    HV__K_STORE(0) HV__K_STORE(1) HV__K_STORE(2) HV__K_STORE(3) HV__K_STORE(4) HV__K_STORE(5) HV__K_STORE(6) HV__K_STORE(7)
}
#endif

/* ---- packing ---------------------------------------------------------------------------------
   Two of the four cases are plain copies (A^T, B: MR or NR contiguous values per k). The other
   two (A, B^T: the forward pass of every linear layer) are transposes, done 8 x 8 at a time in
   registers on x86; a scalar strided loop there costs 15-20% of a skinny GEMM. */

/* d[c * ldd + r] = alpha * s[r * lds + c] for r < rows, c < cols (the general, scalar case) */
static void hv__pack_tr_scalar(const float *s, int64_t lds, int64_t rows, int64_t cols, float *d, int64_t ldd, float alpha) {
    int64_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) d[c * ldd + r] = alpha * s[r * lds + c];
}

#if defined(HV__SIMD_AVX512) || defined(HV__SIMD_AVX2)
/* d[c * ldd + r] = alpha * s[r * lds + c] for r < rows (1..8), c < cols (a multiple of 8): 8 x 8
   blocks transposed in registers (named variables: an array would be spilled to the stack). Rows
   past `rows` read as 0; only `rows` values per column are stored. */
#define HV__TR_LOAD(i)                                                                         \
    __m256 r##i = _mm256_setzero_ps();                                                         \
    if ((i) < rows) {                                                                          \
        _mm_prefetch((const char *)(s + ((i) + 8) * lds + c), _MM_HINT_T0);                   \
        r##i = _mm256_mul_ps(_mm256_loadu_ps(s + (i) * lds + c), va);                          \
    }
static void hv__pack_tr8(const float *s, int64_t lds, int rows, int64_t cols, float *d, int64_t ldd, float alpha) {
    __m256 va = _mm256_set1_ps(alpha);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int64_t c;
    for (c = 0; c < cols; c += 8) {
        float *o = d + c * ldd;
        __m256 t0, t1, t2, t3, t4, t5, t6, t7, u0, u1, u2, u3, u4, u5, u6, u7;
        HV__TR_LOAD(0) HV__TR_LOAD(1) HV__TR_LOAD(2) HV__TR_LOAD(3) HV__TR_LOAD(4) HV__TR_LOAD(5) HV__TR_LOAD(6) HV__TR_LOAD(7)
        t0 = _mm256_unpacklo_ps(r0, r1);
        t1 = _mm256_unpackhi_ps(r0, r1);
        t2 = _mm256_unpacklo_ps(r2, r3);
        t3 = _mm256_unpackhi_ps(r2, r3);
        t4 = _mm256_unpacklo_ps(r4, r5);
        t5 = _mm256_unpackhi_ps(r4, r5);
        t6 = _mm256_unpacklo_ps(r6, r7);
        t7 = _mm256_unpackhi_ps(r6, r7);
        u0 = _mm256_shuffle_ps(t0, t2, 0x44);
        u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        u2 = _mm256_shuffle_ps(t1, t3, 0x44);
        u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        u4 = _mm256_shuffle_ps(t4, t6, 0x44);
        u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        u6 = _mm256_shuffle_ps(t5, t7, 0x44);
        u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        r0 = _mm256_permute2f128_ps(u0, u4, 0x20);
        r1 = _mm256_permute2f128_ps(u1, u5, 0x20);
        r2 = _mm256_permute2f128_ps(u2, u6, 0x20);
        r3 = _mm256_permute2f128_ps(u3, u7, 0x20);
        r4 = _mm256_permute2f128_ps(u0, u4, 0x31);
        r5 = _mm256_permute2f128_ps(u1, u5, 0x31);
        r6 = _mm256_permute2f128_ps(u2, u6, 0x31);
        r7 = _mm256_permute2f128_ps(u3, u7, 0x31);
        if (rows == 8) {
            _mm256_storeu_ps(o, r0);
            _mm256_storeu_ps(o + ldd, r1);
            _mm256_storeu_ps(o + 2 * ldd, r2);
            _mm256_storeu_ps(o + 3 * ldd, r3);
            _mm256_storeu_ps(o + 4 * ldd, r4);
            _mm256_storeu_ps(o + 5 * ldd, r5);
            _mm256_storeu_ps(o + 6 * ldd, r6);
            _mm256_storeu_ps(o + 7 * ldd, r7);
        } else {
            _mm256_maskstore_ps(o, mask, r0);
            _mm256_maskstore_ps(o + ldd, mask, r1);
            _mm256_maskstore_ps(o + 2 * ldd, mask, r2);
            _mm256_maskstore_ps(o + 3 * ldd, mask, r3);
            _mm256_maskstore_ps(o + 4 * ldd, mask, r4);
            _mm256_maskstore_ps(o + 5 * ldd, mask, r5);
            _mm256_maskstore_ps(o + 6 * ldd, mask, r6);
            _mm256_maskstore_ps(o + 7 * ldd, mask, r7);
        }
    }
}
#define HV__HAVE_TR8 1
#endif

/* d[c * ldd + r] = alpha * s[r * lds + c] for r < rows (<= 8 on the fast path), c < cols */
static void hv__pack_tr(const float *s, int64_t lds, int64_t rows, int64_t cols, float *d, int64_t ldd, float alpha) {
    int64_t c = 0;
#ifdef HV__HAVE_TR8
    if (rows <= 8) {
        c = cols / 8 * 8;
        hv__pack_tr8(s, lds, (int)rows, c, d, ldd, alpha);
    }
#endif
    hv__pack_tr_scalar(s + c, lds, rows, cols - c, d + c * ldd, ldd, alpha);
}

/* Panels are kc * MR (kc * NR) floats plus a 64-byte gap: without it, panels a multiple of 4 KiB
   apart map to one L1 set, and dealing a stored row across many panels thrashes it. */
#define HV__PANEL_PAD 16
static int64_t hv__pa_stride(int64_t kc) { return kc * HV__MR + HV__PANEL_PAD; }
static int64_t hv__pb_stride(int64_t kc) { return kc * HV__NR + HV__PANEL_PAD; }

/* alpha * op(A)(i0 : i0+mc, p0 : p0+kc) -> MR-row panels, panel[p * MR + i]; rows past mc are 0 */
static void hv__sgemm_pack_a(const hv__gemm_args *g, const float *A, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float *dst) {
    int64_t ip, i, p, lda = g->lda, ps = hv__pa_stride(kc), full = mc / HV__MR * HV__MR;
    float alpha = g->alpha;
    if (g->trans_a) { /* A stored (k, m): each stored row is read once and dealt, MR values a panel */
        for (p = 0; p < kc; p++) {
            const float *s = A + (p0 + p) * lda + i0;
            float *d = dst + p * HV__MR;
            for (ip = 0; ip < full; ip += HV__MR, d += ps) {
#if (defined(HV__SIMD_AVX512) || defined(HV__SIMD_AVX2)) && HV__MR % 8 == 0
                for (i = 0; i < HV__MR; i += 8) _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(s + ip + i), _mm256_set1_ps(alpha)));
#else
                for (i = 0; i < HV__MR; i++) d[i] = alpha * s[ip + i];
#endif
            }
            if (full < mc) {
                for (i = 0; i < mc - full; i++) d[i] = alpha * s[full + i];
                for (; i < HV__MR; i++) d[i] = 0.0f;
            }
        }
        return;
    }
    for (ip = 0; ip < mc; ip += HV__MR, dst += ps) { /* A stored (m, k): transposes */
        int64_t mr = mc - ip < HV__MR ? mc - ip : HV__MR;
        for (i = 0; i < mr; i += 8)
            hv__pack_tr(A + (i0 + ip + i) * lda + p0, lda, mr - i < 8 ? mr - i : 8, kc, dst + i, HV__MR, alpha);
        for (i = mr; i < HV__MR; i++)
            for (p = 0; p < kc; p++) dst[p * HV__MR + i] = 0.0f;
    }
}

/* op(B)(p0 : p0+kc, j0 : j0+nc) -> NR-column panels, panel[p * NR + j]; columns past nc are 0 */
static void hv__sgemm_pack_b(const hv__gemm_args *g, const float *B, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
    int64_t jp, j, p, ldb = g->ldb, ps = hv__pb_stride(kc), full = nc / HV__NR * HV__NR;
    if (!g->trans_b) { /* B stored (k, n): each stored row is read once and dealt, NR values a panel */
        for (p = 0; p < kc; p++) {
            const float *s = B + (p0 + p) * ldb + j0;
            float *d = dst + p * HV__NR;
            for (jp = 0; jp < full; jp += HV__NR, d += ps) memcpy(d, s + jp, sizeof(float) * HV__NR);
            if (full < nc) {
                for (j = 0; j < nc - full; j++) d[j] = s[full + j];
                for (; j < HV__NR; j++) d[j] = 0.0f;
            }
        }
        return;
    }
    for (jp = 0; jp < nc; jp += HV__NR, dst += ps) { /* B stored (n, k): transposes */
        int64_t nr = nc - jp < HV__NR ? nc - jp : HV__NR;
        for (j = 0; j < nr; j += 8)
            hv__pack_tr(B + (j0 + jp + j) * ldb + p0, ldb, nr - j < 8 ? nr - j : 8, kc, dst + j, HV__NR, 1.0f);
        for (j = nr; j < HV__NR; j++)
            for (p = 0; p < kc; p++) dst[p * HV__NR + j] = 0.0f;
    }
}

/* ---- the blocked driver ---------------------------------------------------------------------- */

#ifdef _OPENMP
#define HV__OMP(x) _Pragma(#x)
#else
#define HV__OMP(x)
#endif

/* workspace, in floats: packed-B blocks (one shared, or one per thread when threads take whole
   matrices) and per thread a slot: a packed-A block and an edge tile; all 64-byte aligned */
#define HV__SGEMM_SLOT_FLOATS ((size_t)HV__MC * HV__KC + (size_t)(HV__MC / HV__MR) * HV__PANEL_PAD + (size_t)HV__MR * HV__NR + 32)
static float *hv__sgemm_align(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }
static int hv__sgemm_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* one matrix of a batch: the operands with the batch offsets applied */
typedef struct hv__sgemm_mat {
    const hv__gemm_args *g;
    const float *a, *b;
    float *c;
} hv__sgemm_mat;

/* The packed B of one phase: the KC blocks of rows pg : pg+kp of op(B), columns jc : jc+nc. Block q
   (rows pg + q*KC ...) starts at q * npanel * pb_stride(KC). */
typedef struct hv__sgemm_phase {
    int64_t jc, nc, npanel, pg, kp;
    float *pb;
} hv__sgemm_phase;
static float *hv__sgemm_phase_block(const hv__sgemm_phase *ph, int64_t q) { return ph->pb + q * ph->npanel * hv__pb_stride(HV__KC); }

/* rows ic : ic+mc of C, columns jc+j0 : jc+j1: the phase's KC blocks in order, each one packing
   this row block of A into the slot and running the micro-kernels over it. The C block stays in
   L2 from one KC block to the next. */
static void hv__sgemm_item(const hv__sgemm_mat *x, const hv__sgemm_phase *ph, int64_t ic, int64_t mc, int64_t j0, int64_t j1, float *slot) {
    const hv__gemm_args *g = x->g;
    float *pa = hv__sgemm_align(slot), *tile = hv__sgemm_align(pa + (size_t)(HV__MC / HV__MR) * hv__pa_stride(HV__KC));
    int64_t jr, ir, ldc = g->ldc, q, pc;
    for (q = 0, pc = ph->pg; pc < ph->pg + ph->kp; q++, pc += HV__KC) {
        int64_t kc = ph->pg + ph->kp - pc < HV__KC ? ph->pg + ph->kp - pc : HV__KC;
        int load_c = pc > 0 || g->beta != 0.0f;
        float beta = pc > 0 ? 1.0f : g->beta;
        const float *pb = hv__sgemm_phase_block(ph, q);
        hv__sgemm_pack_a(g, x->a, ic, mc, pc, kc, pa);
        for (jr = j0; jr < j1; jr += HV__NR) { /* the B micro-panel stays in L1 over the ir loop */
            int64_t nr = j1 - jr < HV__NR ? j1 - jr : HV__NR;
            const float *bp = pb + jr / HV__NR * hv__pb_stride(kc);
            for (ir = 0; ir < mc; ir += HV__MR) {
                int64_t mr = mc - ir < HV__MR ? mc - ir : HV__MR, i;
                float *c = x->c + (ic + ir) * ldc + ph->jc + jr;
                if (mr == HV__MR && nr == HV__NR) {
                    hv__sgemm_ukr(kc, pa + ir / HV__MR * hv__pa_stride(kc), bp, c, ldc, load_c, beta);
                    continue;
                }
                /* edge tile: the same kernel on a copy, so every element sees the same arithmetic */
                if (load_c) {
                    memset(tile, 0, sizeof(float) * HV__MR * HV__NR);
                    for (i = 0; i < mr; i++) memcpy(tile + i * HV__NR, c + i * ldc, sizeof(float) * (size_t)nr);
                }
                hv__sgemm_ukr(kc, pa + ir / HV__MR * hv__pa_stride(kc), bp, tile, HV__NR, load_c, beta);
                for (i = 0; i < mr; i++) memcpy(c + i * ldc, tile + i * HV__NR, sizeof(float) * (size_t)nr);
            }
        }
    }
}

/* packs slice t of `parts` of the phase's B: whole panels of every KC block */
static void hv__sgemm_pack_phase(const hv__sgemm_mat *x, const hv__sgemm_phase *ph, int64_t t, int64_t parts) {
    int64_t q = t / parts, s = t % parts, pc = ph->pg + q * HV__KC;
    int64_t kc = ph->pg + ph->kp - pc < HV__KC ? ph->pg + ph->kp - pc : HV__KC;
    int64_t p0 = ph->npanel * s / parts * HV__NR, p1 = ph->npanel * (s + 1) / parts * HV__NR;
    if (p1 > ph->nc) p1 = ph->nc;
    if (p0 < p1) hv__sgemm_pack_b(x->g, x->b, pc, kc, ph->jc + p0, p1 - p0, hv__sgemm_phase_block(ph, q) + p0 / HV__NR * hv__pb_stride(kc));
}

/* C = beta * C: the products with nothing to add (k == 0, or alpha == 0: A and B unread, as BLAS) */
static void hv__sgemm_scale(const hv__sgemm_mat *x) {
    const hv__gemm_args *g = x->g;
    int64_t i, j;
    for (i = 0; i < g->m; i++) {
        float *c = x->c + i * g->ldc;
        if (g->beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)g->n);
        else
            for (j = 0; j < g->n; j++) c[j] *= g->beta;
    }
}

/* rows of op(B) one phase packs: all of K when the packed block fits HV__SGEMM_B_BUDGET floats */
#define HV__SGEMM_B_BUDGET ((int64_t)2 << 20)
static int64_t hv__sgemm_phase_rows(int64_t k, int64_t n) {
    int64_t npanel = ((n < HV__NC ? n : HV__NC) + HV__NR - 1) / HV__NR, blocks = HV__SGEMM_B_BUDGET / (npanel * hv__pb_stride(HV__KC));
    if (blocks < 1) blocks = 1;
    return k < blocks * HV__KC ? k : blocks * HV__KC;
}

/* One whole matrix. coop: called by every thread of a parallel region (nth threads). Per phase
   (NC columns by up to all of K) they pack the shared B together, then take (row block, column
   slice) items dynamically, each packing its A into slots + its thread number; one barrier per
   phase. Else one thread alone, with its own B and slot. Either way every element of C is summed
   in the same order (KC blocks in order, k in order inside), whoever computes it. */
static void hv__sgemm_matrix(const hv__sgemm_mat *x, int coop, int nth, float *pb, float *slots) {
    const hv__gemm_args *g = x->g;
    int64_t nic, m = g->m, n = g->n, k = g->k, mt = (m + HV__MR - 1) / HV__MR, kmax = hv__sgemm_phase_rows(k, n);
    int64_t want = coop ? 4 * (int64_t)nth : 1; /* items per phase: enough to balance threads */
    hv__sgemm_phase ph;
    ph.pb = hv__sgemm_align(pb);
    if (k == 0 || g->alpha == 0.0f) {
        if (coop) {
            HV__OMP(omp single)
            { hv__sgemm_scale(x); }
        } else {
            hv__sgemm_scale(x);
        }
        return;
    }
    /* row blocks: an even split of the MR-high tile rows, at most MC rows each; in parallel at
       least 4 per thread (down to 4 tile rows each) and a multiple of the thread count */
    nic = (mt + HV__MC / HV__MR - 1) / (HV__MC / HV__MR);
    if (nic < want) nic = want < mt / 4 ? want : (mt / 4 > nic ? mt / 4 : nic);
    if (coop) nic = (nic + nth - 1) / nth * nth;
    if (nic > mt) nic = mt;
    for (ph.jc = 0; ph.jc < n; ph.jc += HV__NC) {
        int64_t nsplit = nic >= want ? 1 : (want + nic - 1) / nic, nitem, it, nq;
        ph.nc = n - ph.jc < HV__NC ? n - ph.jc : HV__NC;
        ph.npanel = (ph.nc + HV__NR - 1) / HV__NR;
        if (nsplit > ph.npanel) nsplit = ph.npanel;
        nitem = nic * nsplit;
        for (ph.pg = 0; ph.pg < k; ph.pg += kmax) {
            ph.kp = k - ph.pg < kmax ? k - ph.pg : kmax;
            nq = (ph.kp + HV__KC - 1) / HV__KC;
            if (!coop) {
                for (it = 0; it < nq; it++) hv__sgemm_pack_phase(x, &ph, it, 1);
                for (it = 0; it < nic; it++) {
                    int64_t i0 = mt * it / nic * HV__MR, i1 = mt * (it + 1) / nic * HV__MR;
                    hv__sgemm_item(x, &ph, i0, (i1 < m ? i1 : m) - i0, 0, ph.nc, slots);
                }
                continue;
            }
            HV__OMP(omp for schedule(dynamic, 1))
            for (it = 0; it < nq * nth; it++) hv__sgemm_pack_phase(x, &ph, it, nth); /* ends in a barrier */
            HV__OMP(omp for schedule(dynamic, 1))
            for (it = 0; it < nitem; it++) {
                int64_t r = it / nsplit, s = it % nsplit;
                int64_t i0 = mt * r / nic * HV__MR, i1 = mt * (r + 1) / nic * HV__MR;
                int64_t j0 = ph.npanel * s / nsplit * HV__NR, j1 = ph.npanel * (s + 1) / nsplit * HV__NR;
                if (j1 > ph.nc) j1 = ph.nc;
                if (i1 > m) i1 = m;
                if (j0 < j1 && i0 < i1) hv__sgemm_item(x, &ph, i0, i1 - i0, j0, j1, slots + HV__SGEMM_SLOT_FLOATS * (size_t)hv__sgemm_tid());
            }
        }
    }
}

static hv__sgemm_mat hv__sgemm_mat_at(const hv__gemm_args *g, int64_t bi) {
    hv__sgemm_mat x;
    x.g = g;
    x.a = g->a + bi * g->batch_stride_a;
    x.b = g->b + bi * g->batch_stride_b;
    x.c = g->c + bi * g->batch_stride_c;
    return x;
}

HV__SGEMM_LINKAGE size_t HV__SGEMM_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats) {
    int64_t nb = g->n < HV__NC ? g->n : HV__NC, kb = g->k > 0 ? hv__sgemm_phase_rows(g->k, g->n) : 1, work, bi, span;
    size_t bfl, need;
    int by_matrix;
    if (nb < 1) nb = 1;
    /* the packed B of the largest phase: full KC blocks, then the last one (no later phase is larger) */
    bfl = (size_t)((nb + HV__NR - 1) / HV__NR) * (size_t)((kb - 1) / HV__KC * hv__pb_stride(HV__KC) + hv__pb_stride(kb - (kb - 1) / HV__KC * HV__KC)) + 16;
    if (nthreads < 1) nthreads = 1;
    /* threads only where each gets a worthwhile share: a parallel region costs microseconds */
    work = g->m * g->n * (g->k > 0 ? g->k : 1) * (g->batch > 0 ? g->batch : 1);
    if ((int64_t)nthreads > 1 + work / ((int64_t)1 << 21)) nthreads = (int)(1 + work / ((int64_t)1 << 21));
    /* independent C matrices (batched attention products): whole matrices per thread */
    span = (g->m - 1) * g->ldc + g->n;
    by_matrix = nthreads > 1 && g->batch >= nthreads && (g->batch_stride_c >= span || g->batch_stride_c <= -span);
    need = by_matrix ? (size_t)nthreads * (bfl + HV__SGEMM_SLOT_FLOATS) : bfl + (size_t)nthreads * HV__SGEMM_SLOT_FLOATS;
    if (!ws || ws_floats < need) return need;
    if (g->m <= 0 || g->n <= 0 || g->batch <= 0) return need;
    if (nthreads == 1) {
        for (bi = 0; bi < g->batch; bi++) { /* in order: the matrices may share C and accumulate */
            hv__sgemm_mat x = hv__sgemm_mat_at(g, bi);
            hv__sgemm_matrix(&x, 0, 1, ws, ws + bfl);
        }
    } else if (by_matrix) {
        HV__OMP(omp parallel for schedule(dynamic, 1) num_threads(nthreads))
        for (bi = 0; bi < g->batch; bi++) {
            hv__sgemm_mat x = hv__sgemm_mat_at(g, bi);
            float *mine = ws + (bfl + HV__SGEMM_SLOT_FLOATS) * (size_t)hv__sgemm_tid();
            hv__sgemm_matrix(&x, 0, 1, mine, mine + bfl);
        }
    } else {
        HV__OMP(omp parallel num_threads(nthreads))
        {
#ifdef _OPENMP
            int nth = omp_get_num_threads(); /* 1 when nested in a caller's parallel region */
#else
            int nth = 1;
#endif
            int64_t b2;
            for (b2 = 0; b2 < g->batch; b2++) {
                hv__sgemm_mat x = hv__sgemm_mat_at(g, b2);
                hv__sgemm_matrix(&x, 1, nth, ws, ws + bfl);
            }
        }
    }
    return need;
}
#endif /* HV__MR */

/* ---- choosing the kernel, once ---------------------------------------------------------------- */
#ifdef HV__SGEMM_DISPATCH
#ifdef __cplusplus
extern "C" {
#endif
size_t hv__sgemm_avx512(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
size_t hv__sgemm_avx2(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#ifdef __cplusplus
}
#endif
#endif

static hv__sgemm_fn hv__sgemm_cur;              /* NULL: the scalar reference */
static const char *hv__sgemm_cur_isa = "scalar";

static void hv__sgemm_choose(void) {
#if defined(HV__SGEMM_DISPATCH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma")) {
        hv__sgemm_cur = hv__sgemm_avx512;
        hv__sgemm_cur_isa = "avx512";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        hv__sgemm_cur = hv__sgemm_avx2;
        hv__sgemm_cur_isa = "avx2";
    }
#elif defined(HV__SIMD_AVX512)
    hv__sgemm_cur = HV__SGEMM_ENTRY;
    hv__sgemm_cur_isa = "avx512";
#elif defined(HV__SIMD_AVX2)
    hv__sgemm_cur = HV__SGEMM_ENTRY;
    hv__sgemm_cur_isa = "avx2";
#elif defined(HV__SIMD_NEON)
    hv__sgemm_cur = HV__SGEMM_ENTRY;
    hv__sgemm_cur_isa = "neon";
#endif
}

/* runs g with `fn` (or the reference when NULL), growing the context's workspace when needed */
static void hv__sgemm_run(hv_ctx *ctx, hv__sgemm_fn fn, const hv__gemm_args *g) {
    size_t need;
    if (fn) {
        need = fn(g, ctx->threads, ctx->gemm_ws, ctx->gemm_ws_floats);
        if (need <= ctx->gemm_ws_floats) return;
        hv__free(ctx->gemm_ws);
        ctx->gemm_ws_floats = 0;
        ctx->gemm_ws = (float *)hv__malloc(need * sizeof(float));
        if (ctx->gemm_ws) {
            ctx->gemm_ws_floats = need;
            fn(g, ctx->threads, ctx->gemm_ws, ctx->gemm_ws_floats);
            return;
        }
    }
    hv__cpu_gemm(ctx, g); /* no SIMD kernel, or no memory for one: the reference is always right */
}
static void hv__cpu_gemm_simd(hv_ctx *ctx, const hv__gemm_args *g) { hv__sgemm_run(ctx, hv__sgemm_cur, g); }

/* the backend's gemm: the chosen kernel (called when the CPU table is filled, at hv_init) */
static void (*hv__cpu_gemm_pick(void))(hv_ctx *, const hv__gemm_args *) {
    hv__sgemm_choose();
    return hv__sgemm_cur ? hv__cpu_gemm_simd : hv__cpu_gemm;
}

HVDEF const char *hv_cpu_isa(hv_ctx *ctx) {
    (void)ctx;
    return hv__sgemm_cur_isa;
}
/* HV-SECTION cpu-simd END */

/* HV-SECTION cpu-nn-kernels BEGIN */
/* HV-SECTION cpu-nn-kernels END */

/* HV-SECTION cpu-conv-kernels BEGIN */
/* HV-SECTION cpu-conv-kernels END */

static const hv__backend *hv__cpu_backend(void) {
    static hv__backend be;
    if (!be.name) {
        be.copy = hv__cpu_copy;
        be.fill = hv__cpu_fill;
        be.gemm = hv__cpu_gemm;
        be.binary = hv__cpu_binary;
        be.unary = hv__cpu_unary;
        be.unary_bwd = hv__cpu_unary_bwd;
        be.reduce = hv__cpu_reduce;
        be.reduce_max_bwd = hv__cpu_reduce_max_bwd;
        /* HV-SECTION cpu-table BEGIN */
        /* simd */ be.gemm = hv__cpu_gemm_pick();
        /* HV-SECTION cpu-table END */
        be.name = "cpu";
    }
    return &be;
}

/* ==== 8. CHECKPOINT FORMATS: safetensors, PyTorch zip + pickle ================================ */
/* HV-SECTION checkpoints BEGIN */
/* HV-SECTION checkpoints END */

#endif /* HUMANVIT_IMPLEMENTATION_DONE */
#endif /* HUMANVIT_IMPLEMENTATION */
