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
       7. Implementation: CPU backend (scalar reference kernels)
       8. Implementation: checkpoint formats (safetensors, PyTorch .pth)

   OPTIONS (define before including the implementation)
       HUMANVIT_STATIC          all public functions become static (HVDEF = static)
       HV_MALLOC/HV_REALLOC/HV_FREE   all or none: replace malloc/realloc/free
       HV_ASSERT(x)             internal invariants only (default: assert); user mistakes never assert
       _OPENMP                  (set by -fopenmp) kernels run multi-threaded; results are
                                bit-identical for any thread count (see DETERMINISM)

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
/* ---- checkpoints: state dicts, safetensors, PyTorch .pth ------------------------------------ */

/* A state dict is an ordered list of (name, tensor) entries with unique names, as PyTorch's.
   OWNERSHIP: hv_state_dict_add *borrows* the tensor (your model's parameters stay yours); the
   loaders below create persistent tensors that the dict *owns* and hv_state_dict_free frees.
   hv_state_dict_take hands one owned tensor over to you. Free every state dict before
   hv_shutdown of its context (hv_shutdown frees all tensors, owned ones included). */
typedef struct hv_state_dict hv_state_dict;

HVDEF hv_state_dict *hv_state_dict_new(hv_ctx *ctx);
HVDEF void hv_state_dict_free(hv_state_dict *sd); /* frees the tensors it owns; NULL is fine */
HVDEF int hv_state_dict_add(hv_state_dict *sd, const char *name, hv_tensor *t); /* borrowed; 0, or
                                                   -1 for a NULL argument or a name already there */
HVDEF int hv_state_dict_count(const hv_state_dict *sd);
HVDEF const char *hv_state_dict_name(const hv_state_dict *sd, int i);  /* NULL when out of range */
HVDEF hv_tensor *hv_state_dict_at(const hv_state_dict *sd, int i);     /* NULL when out of range */
HVDEF hv_tensor *hv_state_dict_get(const hv_state_dict *sd, const char *name); /* NULL: no entry */
HVDEF hv_tensor *hv_state_dict_take(hv_state_dict *sd, const char *name); /* you own it now */
/* copies the entry `name` into dst (same shape and dtype, any strides); 0 or -1 */
HVDEF int hv_state_dict_copy_to(const hv_state_dict *sd, const char *name, hv_tensor *dst);

/* Loading. Every loader returns a new state dict or NULL with hv_last_error() naming the file
   and what is wrong with it; truncated, corrupt or hostile files are errors, never crashes.
   Tensors come out f32 (from F32/F16/BF16/F64) or i32 (from I64/I32/I16/I8/U8/BOOL/U16/U32/U64,
   an error when a value does not fit in int32), contiguous, whatever their layout in the file.
   Memory: one tensor is read at a time straight into its final buffer; the weights are never
   held twice. */

/* safetensors (8-byte little-endian header length, JSON header, data). Entries in header order. */
HVDEF hv_state_dict *hv_safetensors_load(hv_ctx *ctx, const char *path);
HVDEF hv_state_dict *hv_safetensors_load_memory(hv_ctx *ctx, const void *data, size_t size);
/* writes F32 (f32 tensors) and I32 (i32 tensors) in insertion order, __metadata__ {"format":
   "pt"}; through "<path>.hvtmp" renamed over path, so an existing file is never half-written */
HVDEF int hv_safetensors_save(const hv_state_dict *sd, const char *path); /* 0 or -1 */

/* PyTorch torch.save files (the zip format of PyTorch >= 1.6: .pth, .pt, .tar, .ckpt). entry
   names the top-level key that holds the weights: "model" for the humanlike-vits files,
   "model_state_dict" for the temporal-classification ones; NULL picks the first of "model",
   "model_state_dict", "state_dict" that holds a dict, else the top level itself (a file written
   by torch.save(model.state_dict())). Only the tensors of that dict are loaded (optimizer state,
   args and the rest are parsed and skipped); a leading "module." (DataParallel) is stripped
   from every name. Pickles run on a restricted interpreter that builds tensors, dicts and lists
   and never calls Python code: every other class is an opaque placeholder. */
HVDEF hv_state_dict *hv_torch_load(hv_ctx *ctx, const char *path, const char *entry);
HVDEF hv_state_dict *hv_torch_load_memory(hv_ctx *ctx, const void *data, size_t size, const char *entry);
/* either format, told apart by the file's first bytes (entry applies to .pth files) */
HVDEF hv_state_dict *hv_ckpt_load(hv_ctx *ctx, const char *path, const char *entry);
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
        /* HV-SECTION cpu-table END */
        be.name = "cpu";
    }
    return &be;
}

/* ==== 8. CHECKPOINT FORMATS: safetensors, PyTorch zip + pickle ================================ */
/* HV-SECTION checkpoints BEGIN */
/* Checkpoint files are untrusted input: every length, offset and count read from a file is
   checked against the bytes that are really there before it is used, arithmetic on them is
   overflow-checked, nothing recurses on file structure without a depth limit, and every problem
   is an error naming the file, never an abort. The parsers work on an hv__src (a FILE or a
   memory buffer) so that the fuzz targets in tests/fuzz/ drive exactly the code users run.

   Layout of this section: byte helpers and element types; sources; state dicts; the zip reader;
   the pickle interpreter; tensor materialisation; torch.save files; safetensors. */
#include <errno.h>
#include <limits.h>

#define HV__PK_MAX_OBJECTS ((size_t)1 << 22)       /* pickle objects per file (~0.5 GiB) */
#define HV__PK_MAX_DIMS 8                          /* dims kept per pickled tensor */
#define HV__PK_MAX_BYTES ((uint64_t)1 << 30)       /* data.pkl size */
#define HV__PK_MAX_CALL_DEPTH 8                    /* nested _rebuild_from_type_v2 */
#define HV__ZIP_MAX_CD ((uint64_t)1 << 30)         /* central directory size */
#define HV__ST_MAX_HEADER ((uint64_t)100000000)    /* safetensors' own limit on the header */
#define HV__JSON_MAX_DEPTH 64
#define HV__EXPAND_SLACK ((uint64_t)64 << 20)      /* stride-0 views may grow this much */
#define HV__CHUNK_ELEMS 65536                      /* conversion chunk, elements */

/* ---- bytes, checked arithmetic, element types -------------------------------------------------- */

static uint16_t hv__rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t hv__rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t hv__rd64(const unsigned char *p) { return (uint64_t)hv__rd32(p) | ((uint64_t)hv__rd32(p + 4) << 32); }
static void hv__wr64(unsigned char *p, uint64_t v) {
    int k;
    for (k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k));
}
static int hv__host_le(void) {
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}
/* *r = a * b or a + b; 0, or -1 on overflow */
static int hv__mul64(uint64_t a, uint64_t b, uint64_t *r) {
    if (a && b > UINT64_MAX / a) return -1;
    *r = a * b;
    return 0;
}
static int hv__add64(uint64_t a, uint64_t b, uint64_t *r) {
    if (b > UINT64_MAX - a) return -1;
    *r = a + b;
    return 0;
}
/* grows an array of es-byte elements to hold want; returns the (maybe moved) array, or NULL
   when the size overflows or memory runs out (the old array is then still valid) */
static void *hv__grow(void *arr, size_t *cap, size_t want, size_t es) {
    size_t nc = *cap ? *cap : 8;
    void *p;
    if (want <= *cap) return arr;
    while (nc < want) {
        if (nc > SIZE_MAX / 2 / es) return NULL;
        nc *= 2;
    }
    hv__alloc_calls++;
    p = HV_REALLOC(arr, nc * es);
    if (!p) return NULL;
    *cap = nc;
    return p;
}

/* element types found in files; loaded as f32 (floats) or i32 (integers) */
enum { HV__E_F32, HV__E_F16, HV__E_BF16, HV__E_F64, HV__E_I64, HV__E_I32, HV__E_I16, HV__E_I8, HV__E_U8,
       HV__E_BOOL, HV__E_U16, HV__E_U32, HV__E_U64, HV__E_COUNT };
typedef struct hv__etype {
    const char *st;      /* safetensors dtype */
    const char *storage; /* torch legacy storage class (torch.FloatStorage ...), or NULL */
    const char *torch;   /* torch dtype attribute (torch.float32 ...) */
    int size, is_int;
} hv__etype;
static const hv__etype hv__etypes[HV__E_COUNT] = {
    {"F32", "FloatStorage", "float32", 4, 0},   {"F16", "HalfStorage", "float16", 2, 0},
    {"BF16", "BFloat16Storage", "bfloat16", 2, 0}, {"F64", "DoubleStorage", "float64", 8, 0},
    {"I64", "LongStorage", "int64", 8, 1},      {"I32", "IntStorage", "int32", 4, 1},
    {"I16", "ShortStorage", "int16", 2, 1},     {"I8", "CharStorage", "int8", 1, 1},
    {"U8", "ByteStorage", "uint8", 1, 1},       {"BOOL", "BoolStorage", "bool", 1, 1},
    {"U16", NULL, "uint16", 2, 1},              {"U32", NULL, "uint32", 4, 1},
    {"U64", NULL, "uint64", 8, 1}};
/* which: 0 safetensors name, 1 storage class, 2 torch dtype. -1 when unknown */
static int hv__etype_find(int which, const char *s, size_t n) {
    int k;
    for (k = 0; k < HV__E_COUNT; k++) {
        const char *name = which == 0 ? hv__etypes[k].st : which == 1 ? hv__etypes[k].storage : hv__etypes[k].torch;
        if (name && strlen(name) == n && memcmp(name, s, n) == 0) return k;
    }
    return -1;
}

static float hv__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31u, man = h & 1023u, bits;
    float f;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: value man * 2^-24, renormalised */
            exp = 127 - 15 + 1;
            while (!(man & 1024u)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 1023u) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, NaN with its payload */
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* n packed little-endian elements of type et -> f32 (float types) or i32 (integer types) in
   dst. 0, or -1 with why filled when an integer does not fit in int32. first: index of src[0]
   within the tensor, for the message. */
static int hv__convert(int et, const unsigned char *src, size_t n, void *dst, size_t first, char *why, size_t whylen) {
    float *f = (float *)dst;
    int32_t *o = (int32_t *)dst;
    size_t i;
    switch (et) {
    case HV__E_F32:
        if (hv__host_le()) {
            memcpy(dst, src, 4 * n);
        } else {
            for (i = 0; i < n; i++) {
                uint32_t u = hv__rd32(src + 4 * i);
                memcpy(f + i, &u, 4);
            }
        }
        return 0;
    case HV__E_F16:
        for (i = 0; i < n; i++) f[i] = hv__f16_to_f32(hv__rd16(src + 2 * i));
        return 0;
    case HV__E_BF16:
        for (i = 0; i < n; i++) {
            uint32_t u = (uint32_t)hv__rd16(src + 2 * i) << 16;
            memcpy(f + i, &u, 4);
        }
        return 0;
    case HV__E_F64:
        for (i = 0; i < n; i++) {
            uint64_t u = hv__rd64(src + 8 * i);
            double d;
            memcpy(&d, &u, 8);
            f[i] = (float)d;
        }
        return 0;
    case HV__E_I32:
        for (i = 0; i < n; i++) o[i] = (int32_t)hv__rd32(src + 4 * i);
        return 0;
    case HV__E_I16:
        for (i = 0; i < n; i++) o[i] = (int16_t)hv__rd16(src + 2 * i);
        return 0;
    case HV__E_I8:
        for (i = 0; i < n; i++) o[i] = (int8_t)src[i];
        return 0;
    case HV__E_U8:
    case HV__E_BOOL:
        for (i = 0; i < n; i++) o[i] = src[i];
        return 0;
    case HV__E_U16:
        for (i = 0; i < n; i++) o[i] = hv__rd16(src + 2 * i);
        return 0;
    case HV__E_I64:
    case HV__E_U32:
    case HV__E_U64:
        for (i = 0; i < n; i++) {
            uint64_t u = et == HV__E_U32 ? hv__rd32(src + 4 * i) : hv__rd64(src + 8 * i);
            int fits = et == HV__E_I64 ? (u <= 0x7fffffffu || u >= (uint64_t)0xffffffff80000000u) : u <= 0x7fffffffu;
            if (!fits) {
                if (et == HV__E_I64) snprintf(why, whylen, "element %zu = %lld does not fit in int32", first + i, (long long)(int64_t)u);
                else snprintf(why, whylen, "element %zu = %llu does not fit in int32", first + i, (unsigned long long)u);
                return -1;
            }
            o[i] = (int32_t)(uint32_t)u;
        }
        return 0;
    default:
        snprintf(why, whylen, "unknown element type");
        return -1;
    }
}

/* ---- sources: a file or a memory buffer ---------------------------------------------------- */

typedef struct hv__src {
    FILE *f;
    const unsigned char *mem;
    uint64_t size;
    const char *name; /* the path, or "<memory>" */
    const char *op;   /* the public call, for messages */
} hv__src;

/* "op: 'file': message"; returns NULL */
static void *hv__src_fail(const hv__src *s, const char *fmt, ...) {
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hv__fail(s->op, "'%s': %s", s->name, msg);
}

static int hv__seek(FILE *f, uint64_t off) {
#if defined(_WIN32)
    return off > (uint64_t)INT64_MAX ? -1 : _fseeki64(f, (__int64)off, SEEK_SET);
#else
    return off > (uint64_t)LONG_MAX ? -1 : fseek(f, (long)off, SEEK_SET); /* long is 64-bit on LP64 */
#endif
}

/* reads n bytes at off; what names the structure for the message */
static int hv__src_read(const hv__src *s, uint64_t off, void *buf, size_t n, const char *what) {
    if (off > s->size || (uint64_t)n > s->size - off) {
        hv__src_fail(s, "truncated: %s needs %llu bytes at offset %llu, but the file has %llu bytes", what,
                     (unsigned long long)n, (unsigned long long)off, (unsigned long long)s->size);
        return -1;
    }
    if (n == 0) return 0;
    if (s->mem) {
        memcpy(buf, s->mem + off, n);
        return 0;
    }
    if (hv__seek(s->f, off) != 0 || fread(buf, 1, n, s->f) != n) {
        hv__src_fail(s, "read error for %s (%llu bytes at offset %llu)", what, (unsigned long long)n, (unsigned long long)off);
        return -1;
    }
    return 0;
}

static int hv__src_open(hv__src *s, const char *op, const char *path) {
    memset(s, 0, sizeof *s);
    s->op = op;
    s->name = path ? path : "(null)";
    if (!path) return hv__fail(op, "path is NULL"), -1;
    s->f = fopen(path, "rb");
    if (!s->f) return hv__src_fail(s, "cannot open: %s", strerror(errno)), -1;
    {
#if defined(_WIN32)
        __int64 end = _fseeki64(s->f, 0, SEEK_END) == 0 ? _ftelli64(s->f) : -1;
#else
        long end = fseek(s->f, 0, SEEK_END) == 0 ? ftell(s->f) : -1;
#endif
        if (end < 0) {
            fclose(s->f);
            s->f = NULL;
            return hv__src_fail(s, "cannot tell the file's size (not a regular file?)"), -1;
        }
        s->size = (uint64_t)end;
    }
    return 0;
}
static void hv__src_memory(hv__src *s, const char *op, const void *data, size_t size) {
    memset(s, 0, sizeof *s);
    s->op = op;
    s->name = "<memory>";
    s->mem = (const unsigned char *)data;
    s->size = data ? size : 0;
}
static void hv__src_close(hv__src *s) {
    if (s->f) fclose(s->f);
    s->f = NULL;
}

/* ---- state dicts ----------------------------------------------------------------------------- */

typedef struct hv__sd_entry {
    char *name;
    size_t nlen;
    hv_tensor *t;
    int owned;
} hv__sd_entry;

struct hv_state_dict {
    hv_ctx *ctx;
    hv__sd_entry *e;
    size_t n, cap;
    int *slot;    /* open-addressing hash of names: entry index + 1, 0 = empty */
    size_t nslot; /* a power of two, > 2 n */
};

static uint64_t hv__hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}
static size_t hv__sd_slot(const hv_state_dict *sd, const char *name, size_t n) {
    size_t mask = sd->nslot - 1, h = (size_t)hv__hash(name, n) & mask;
    while (sd->slot[h]) {
        const hv__sd_entry *e = &sd->e[sd->slot[h] - 1];
        if (e->nlen == n && memcmp(e->name, name, n) == 0) break;
        h = (h + 1) & mask;
    }
    return h;
}
static int hv__sd_find(const hv_state_dict *sd, const char *name, size_t n) {
    size_t h;
    if (!sd->nslot) return -1;
    h = hv__sd_slot(sd, name, n);
    return sd->slot[h] - 1;
}

/* adds (name, t); an existing name is an error, or (replace) gets the new tensor in its place,
   as a Python dict assignment does. owned: the dict frees t. */
static int hv__sd_put(hv_state_dict *sd, const char *op, const char *name, size_t n, hv_tensor *t, int owned, int replace) {
    int i = hv__sd_find(sd, name, n);
    hv__sd_entry *e;
    if (i >= 0) {
        e = &sd->e[i];
        if (!replace) return hv__fail(op, "the state dict already has an entry '%s'", e->name), -1;
        if (e->owned && e->t != t) hv_tensor_free(e->t);
        e->t = t;
        e->owned = owned;
        return 0;
    }
    if (sd->n >= (size_t)INT_MAX - 1) return hv__fail(op, "too many entries"), -1;
    if ((sd->n + 1) * 2 >= sd->nslot) { /* rehash into twice the slots */
        size_t ns = sd->nslot ? sd->nslot * 2 : 64, k;
        int *slot = (int *)hv__malloc(ns * sizeof(int));
        int *old = sd->slot;
        if (!slot) return hv__fail(op, "out of memory"), -1;
        memset(slot, 0, ns * sizeof(int));
        sd->slot = slot;
        sd->nslot = ns;
        for (k = 0; k < sd->n; k++) sd->slot[hv__sd_slot(sd, sd->e[k].name, sd->e[k].nlen)] = (int)k + 1;
        hv__free(old);
    }
    if (sd->n == sd->cap) {
        void *p = hv__grow(sd->e, &sd->cap, sd->n + 1, sizeof *sd->e);
        if (!p) return hv__fail(op, "out of memory"), -1;
        sd->e = (hv__sd_entry *)p;
    }
    e = &sd->e[sd->n];
    e->name = (char *)hv__malloc(n + 1);
    if (!e->name) return hv__fail(op, "out of memory"), -1;
    memcpy(e->name, name, n);
    e->name[n] = 0;
    e->nlen = n;
    e->t = t;
    e->owned = owned;
    if (owned) hv_tensor_set_name(t, e->name);
    sd->slot[hv__sd_slot(sd, name, n)] = (int)sd->n + 1;
    sd->n++;
    return 0;
}

HVDEF hv_state_dict *hv_state_dict_new(hv_ctx *ctx) {
    hv_state_dict *sd;
    if (!ctx) return (hv_state_dict *)hv__fail("hv_state_dict_new", "ctx is NULL");
    sd = (hv_state_dict *)hv__malloc(sizeof *sd);
    if (!sd) return (hv_state_dict *)hv__fail("hv_state_dict_new", "out of memory");
    memset(sd, 0, sizeof *sd);
    sd->ctx = ctx;
    return sd;
}
HVDEF void hv_state_dict_free(hv_state_dict *sd) {
    size_t i;
    if (!sd) return;
    for (i = 0; i < sd->n; i++) {
        if (sd->e[i].owned) hv_tensor_free(sd->e[i].t);
        hv__free(sd->e[i].name);
    }
    hv__free(sd->e);
    hv__free(sd->slot);
    hv__free(sd);
}
HVDEF int hv_state_dict_add(hv_state_dict *sd, const char *name, hv_tensor *t) {
    if (!sd || !name || !t) return hv__fail("hv_state_dict_add", "%s is NULL", !sd ? "sd" : !name ? "name" : "tensor"), -1;
    return hv__sd_put(sd, "hv_state_dict_add", name, strlen(name), t, 0, 0);
}
HVDEF int hv_state_dict_count(const hv_state_dict *sd) { return sd ? (int)sd->n : 0; }
HVDEF const char *hv_state_dict_name(const hv_state_dict *sd, int i) {
    return (sd && i >= 0 && (size_t)i < sd->n) ? sd->e[i].name : NULL;
}
HVDEF hv_tensor *hv_state_dict_at(const hv_state_dict *sd, int i) {
    return (sd && i >= 0 && (size_t)i < sd->n) ? sd->e[i].t : NULL;
}
static int hv__sd_lookup(const hv_state_dict *sd, const char *name, const char *op) {
    int i;
    if (!sd || !name) return hv__fail(op, "%s is NULL", !sd ? "sd" : "name"), -1;
    i = hv__sd_find(sd, name, strlen(name));
    if (i < 0) hv__fail(op, "no entry '%s' in the state dict (%d entries)", name, (int)sd->n);
    return i;
}
HVDEF hv_tensor *hv_state_dict_get(const hv_state_dict *sd, const char *name) {
    int i = hv__sd_lookup(sd, name, "hv_state_dict_get");
    return i < 0 ? NULL : sd->e[i].t;
}
HVDEF hv_tensor *hv_state_dict_take(hv_state_dict *sd, const char *name) {
    int i = hv__sd_lookup(sd, name, "hv_state_dict_take");
    if (i < 0) return NULL;
    sd->e[i].owned = 0;
    return sd->e[i].t;
}
HVDEF int hv_state_dict_copy_to(const hv_state_dict *sd, const char *name, hv_tensor *dst) {
    int i = hv__sd_lookup(sd, name, "hv_state_dict_copy_to"), k;
    hv_tensor *src;
    if (i < 0) return -1;
    src = sd->e[i].t;
    if (!dst) return hv__fail("hv_state_dict_copy_to", "destination for '%s' is NULL", name), -1;
    if (src->dtype != dst->dtype || src->ndim != dst->ndim)
        return hv__fail("hv_state_dict_copy_to", "'%s' is %s %s but the destination is %s %s", name,
                        src->dtype == HV_I32 ? "i32" : "f32", hv__shape_str(src), dst->dtype == HV_I32 ? "i32" : "f32",
                        hv__shape_str(dst)), -1;
    for (k = 0; k < src->ndim; k++)
        if (src->shape[k] != dst->shape[k])
            return hv__fail("hv_state_dict_copy_to", "'%s' has shape %s but the destination has %s", name,
                            hv__shape_str(src), hv__shape_str(dst)), -1;
    dst->ctx->be->copy(dst->ctx, dst, src, 0);
    return 0;
}

/* ---- the zip reader (torch.save's container) -------------------------------------------------
   Reads the central directory (classic or zip64) once; entry data is located through its local
   header on demand. Only STORED entries can be read: torch.save never compresses. */

typedef struct hv__zent {
    const char *name; /* into hv__zip.cd, not NUL-terminated */
    size_t nlen;
    uint64_t csize, usize, lho; /* compressed and real size, local header offset */
    int method, flags;
} hv__zent;

typedef struct hv__zip {
    const hv__src *src;
    unsigned char *cd; /* the central directory */
    hv__zent *e;       /* sorted by name */
    size_t n;
} hv__zip;

static int hv__zent_cmp(const void *a, const void *b) {
    const hv__zent *x = (const hv__zent *)a, *y = (const hv__zent *)b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = n ? memcmp(x->name, y->name, n) : 0;
    if (c) return c;
    return x->nlen < y->nlen ? -1 : x->nlen > y->nlen ? 1 : 0;
}

static void hv__zip_close(hv__zip *z) {
    hv__free(z->cd);
    hv__free(z->e);
    z->cd = NULL;
    z->e = NULL;
    z->n = 0;
}

/* fills the zip64 values of one central-directory entry from its extra field (id 1): each of
   usize, csize, lho is there only when its 32-bit field holds 0xFFFFFFFF, in that order */
static int hv__zip_extra(const hv__zip *z, hv__zent *e, const unsigned char *x, size_t xlen) {
    size_t at = 0;
    while (xlen - at >= 4) {
        unsigned id = hv__rd16(x + at), sz = hv__rd16(x + at + 2);
        const unsigned char *q = x + at + 4;
        size_t left = sz;
        if (sz > xlen - at - 4) {
            hv__src_fail(z->src, "zip entry '%.*s': extra field runs past its header", (int)e->nlen, e->name);
            return -1;
        }
        if (id == 1) {
            uint64_t *fields[3];
            int k;
            fields[0] = &e->usize;
            fields[1] = &e->csize;
            fields[2] = &e->lho;
            for (k = 0; k < 3; k++) {
                if (*fields[k] != 0xffffffffu) continue;
                if (left < 8) {
                    hv__src_fail(z->src, "zip entry '%.*s': zip64 extra field is too short", (int)e->nlen, e->name);
                    return -1;
                }
                *fields[k] = hv__rd64(q);
                q += 8;
                left -= 8;
            }
        }
        at += 4 + (size_t)sz;
    }
    return 0;
}

static int hv__zip_open(hv__zip *z, const hv__src *src) {
    unsigned char *tail;
    unsigned char loc[20], rec[56];
    uint64_t size = src->size, tlen, toff, n_total, cd_size, cd_off, end, p;
    size_t i, found = (size_t)-1, k;
    int zip64 = 0;
    memset(z, 0, sizeof *z);
    z->src = src;
    if (size < 22) return hv__src_fail(src, "not a zip archive: %llu bytes is too short", (unsigned long long)size), -1;
    /* the end-of-central-directory record: 22 bytes + up to 65535 of comment, at the end */
    tlen = size < 22 + 65535 ? size : 22 + 65535;
    toff = size - tlen;
    tail = (unsigned char *)hv__malloc((size_t)tlen);
    if (!tail) return hv__src_fail(src, "out of memory"), -1;
    if (hv__src_read(src, toff, tail, (size_t)tlen, "the zip end record") != 0) {
        hv__free(tail);
        return -1;
    }
    for (i = (size_t)tlen - 22 + 1; i-- > 0;)
        if (hv__rd32(tail + i) == 0x06054b50u && i + 22 + hv__rd16(tail + i + 20) <= tlen) {
            found = i;
            break;
        }
    if (found == (size_t)-1) {
        hv__free(tail);
        return hv__src_fail(src, "not a zip archive (no end-of-central-directory record)"), -1;
    }
    n_total = hv__rd16(tail + found + 10);
    cd_size = hv__rd32(tail + found + 12);
    cd_off = hv__rd32(tail + found + 16);
    if (hv__rd16(tail + found + 4) != 0 && hv__rd16(tail + found + 4) != 0xffff) {
        hv__free(tail);
        return hv__src_fail(src, "multi-disk zip archives are not supported"), -1;
    }
    hv__free(tail);
    /* zip64: a locator right before the record points at the zip64 end record */
    if (toff + found >= 20) {
        if (hv__src_read(src, toff + found - 20, loc, 20, "the zip64 locator") != 0) return -1;
        if (hv__rd32(loc) == 0x07064b50u) {
            uint64_t z64 = hv__rd64(loc + 8);
            if (hv__src_read(src, z64, rec, 56, "the zip64 end record") != 0) return -1;
            if (hv__rd32(rec) != 0x06064b50u) return hv__src_fail(src, "corrupt zip64 end record (bad signature)"), -1;
            n_total = hv__rd64(rec + 32);
            cd_size = hv__rd64(rec + 40);
            cd_off = hv__rd64(rec + 48);
            zip64 = 1;
        }
    }
    if (hv__add64(cd_off, cd_size, &end) != 0 || end > size)
        return hv__src_fail(src, "corrupt zip: the central directory (%llu bytes at %llu) runs past the end (%llu bytes)%s",
                            (unsigned long long)cd_size, (unsigned long long)cd_off, (unsigned long long)size,
                            zip64 ? "" : " or a zip64 record is missing"), -1;
    if (cd_size > HV__ZIP_MAX_CD) return hv__src_fail(src, "zip central directory of %llu bytes is too large", (unsigned long long)cd_size), -1;
    if (n_total > cd_size / 46)
        return hv__src_fail(src, "corrupt zip: %llu entries cannot fit in a %llu-byte central directory", (unsigned long long)n_total,
                            (unsigned long long)cd_size), -1;
    z->cd = (unsigned char *)hv__malloc((size_t)cd_size);
    z->e = (hv__zent *)hv__malloc(sizeof(hv__zent) * (size_t)(n_total ? n_total : 1));
    if (!z->cd || !z->e) {
        hv__zip_close(z);
        return hv__src_fail(src, "out of memory for the zip directory"), -1;
    }
    if (hv__src_read(src, cd_off, z->cd, (size_t)cd_size, "the zip central directory") != 0) {
        hv__zip_close(z);
        return -1;
    }
    for (p = 0, k = 0; k < (size_t)n_total; k++) {
        const unsigned char *h = z->cd + p;
        hv__zent *e = &z->e[k];
        size_t nl, xl, cl;
        if (cd_size - p < 46 || hv__rd32(h) != 0x02014b50u) {
            hv__zip_close(z);
            return hv__src_fail(src, "corrupt zip: central directory entry %zu is damaged", k), -1;
        }
        nl = hv__rd16(h + 28);
        xl = hv__rd16(h + 30);
        cl = hv__rd16(h + 32);
        if (cd_size - p - 46 < (uint64_t)nl + xl + cl) {
            hv__zip_close(z);
            return hv__src_fail(src, "corrupt zip: central directory entry %zu runs past the directory", k), -1;
        }
        e->flags = hv__rd16(h + 8);
        e->method = hv__rd16(h + 10);
        e->csize = hv__rd32(h + 20);
        e->usize = hv__rd32(h + 24);
        e->lho = hv__rd32(h + 42);
        e->name = (const char *)h + 46;
        e->nlen = nl;
        if (hv__zip_extra(z, e, h + 46 + nl, xl) != 0) {
            hv__zip_close(z);
            return -1;
        }
        p += 46 + (uint64_t)nl + xl + cl;
    }
    z->n = (size_t)n_total;
    qsort(z->e, z->n, sizeof *z->e, hv__zent_cmp);
    return 0;
}

static const hv__zent *hv__zip_find(const hv__zip *z, const char *name, size_t nlen) {
    hv__zent key;
    memset(&key, 0, sizeof key);
    key.name = name;
    key.nlen = nlen;
    if (!z->n) return NULL;
    return (const hv__zent *)bsearch(&key, z->e, z->n, sizeof *z->e, hv__zent_cmp);
}

/* where an entry's bytes start; checks that it is stored and lies inside the file */
static int hv__zip_data(const hv__zip *z, const hv__zent *e, uint64_t *off) {
    unsigned char h[30];
    uint64_t start;
    if (e->flags & 1) return hv__src_fail(z->src, "zip entry '%.*s' is encrypted", (int)e->nlen, e->name), -1;
    if (e->method != 0)
        return hv__src_fail(z->src,
                            "zip entry '%.*s' is compressed (method %d); torch.save writes uncompressed entries, so "
                            "this archive was re-zipped: load and torch.save it again, or re-zip without compression (zip -0)",
                            (int)e->nlen, e->name, e->method), -1;
    if (e->csize != e->usize)
        return hv__src_fail(z->src, "corrupt zip entry '%.*s': stored, but sizes differ (%llu vs %llu)", (int)e->nlen, e->name,
                            (unsigned long long)e->csize, (unsigned long long)e->usize), -1;
    if (hv__src_read(z->src, e->lho, h, 30, "a zip local header") != 0) return -1;
    if (hv__rd32(h) != 0x04034b50u)
        return hv__src_fail(z->src, "corrupt zip: bad local header of entry '%.*s'", (int)e->nlen, e->name), -1;
    start = e->lho + 30 + hv__rd16(h + 26) + hv__rd16(h + 28); /* lho + 30 <= size: it was just read */
    if (start > z->src->size || e->usize > z->src->size - start)
        return hv__src_fail(z->src, "truncated: zip entry '%.*s' (%llu bytes at offset %llu) runs past the end of the file (%llu bytes)",
                            (int)e->nlen, e->name, (unsigned long long)e->usize, (unsigned long long)start,
                            (unsigned long long)z->src->size), -1;
    *off = start;
    return 0;
}

/* ---- the pickle interpreter ------------------------------------------------------------------
   Runs the opcodes of pickle protocols 2-5 that torch.save emits (and the rest of the binary
   ones), building plain values. It never imports or calls anything: a GLOBAL is just a name.
   Calls (REDUCE, NEWOBJ, OBJ, INST) of these names are understood:
     collections.OrderedDict, builtins.dict      -> a dict
     torch._utils._rebuild_tensor{,_v2,_v3}      -> a tensor descriptor (storage, offset, size, stride)
     torch._utils._rebuild_parameter{,_with_state}, torch._tensor._rebuild_from_type_v2 -> the tensor
   and every other call yields an opaque object (argparse.Namespace, numpy scalars, torch.Size,
   torch.device ...) that BUILD, SETITEM and APPEND accept and ignore. Persistent ids
   ('storage', torch.XStorage, key, location, numel) become storage references; no data is read
   here. The machine keeps no recursion: nesting depth costs heap, bounded by the object limit. */

enum { HV__PV_NONE, HV__PV_BOOL, HV__PV_INT, HV__PV_FLOAT, HV__PV_STR, HV__PV_BYTES, HV__PV_TUPLE, HV__PV_LIST,
       HV__PV_DICT, HV__PV_SET, HV__PV_GLOBAL, HV__PV_OBJ, HV__PV_STORAGE, HV__PV_TENSOR };

typedef struct hv__pv hv__pv;
typedef struct hv__ptensor {
    hv__pv *storage;
    int ndim; /* > HV__PK_MAX_DIMS: too many, the dims are not kept */
    int64_t offset, size[HV__PK_MAX_DIMS], stride[HV__PK_MAX_DIMS];
} hv__ptensor;
struct hv__pv {
    int kind;
    int big;           /* INT: wider than 64 bits (value not kept) */
    int et;            /* STORAGE, TENSOR: element type, -1 unknown */
    int64_t i;         /* INT, BOOL; STORAGE: declared element count */
    double f;          /* FLOAT */
    const char *s, *s2; /* STR/BYTES: bytes; GLOBAL: module, name; STORAGE: key, class name */
    size_t slen, s2len;
    hv__pv **items;    /* TUPLE/LIST/SET: elements; DICT: key0, value0, key1, value1 ... */
    size_t n, cap;
    hv__pv *cls;       /* OBJ: what made it; TENSOR: the dtype (v3) */
    hv__ptensor *tensor;
    hv__pv *all_next;  /* every object, for freeing */
};

typedef struct hv__pickle {
    const unsigned char *buf;
    size_t len, pos, opstart;
    hv__pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    hv__pv **memo;
    size_t memocap, memo_hi, memo_count;
    hv__pv *all;
    size_t nobj;
    const hv__src *src; /* names the file in messages */
} hv__pickle;

static void *hv__pk_fail(hv__pickle *P, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hv__src_fail(P->src, "data.pkl, byte %zu: %s", P->opstart, msg);
}

static void hv__pickle_free(hv__pickle *P) {
    hv__pv *v = P->all;
    while (v) {
        hv__pv *next = v->all_next;
        hv__free(v->items);
        hv__free(v->tensor);
        hv__free(v);
        v = next;
    }
    hv__free(P->stack);
    hv__free(P->marks);
    hv__free(P->memo);
    memset(P, 0, sizeof *P);
}

static hv__pv *hv__pv_new(hv__pickle *P, int kind) {
    hv__pv *v;
    if (P->nobj >= HV__PK_MAX_OBJECTS) return (hv__pv *)hv__pk_fail(P, "more than %lu objects", (unsigned long)HV__PK_MAX_OBJECTS);
    v = (hv__pv *)hv__malloc(sizeof *v);
    if (!v) return (hv__pv *)hv__pk_fail(P, "out of memory");
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->et = -1;
    v->all_next = P->all;
    P->all = v;
    P->nobj++;
    return v;
}
static int hv__pv_append(hv__pickle *P, hv__pv *c, hv__pv *x) {
    if (c->n == c->cap) {
        void *p = hv__grow(c->items, &c->cap, c->n + 1, sizeof *c->items);
        if (!p) return hv__pk_fail(P, "out of memory"), -1;
        c->items = (hv__pv **)p;
    }
    c->items[c->n++] = x;
    return 0;
}
static int hv__pk_push(hv__pickle *P, hv__pv *v) {
    if (!v) return -1;
    if (P->sp == P->scap) {
        void *p = hv__grow(P->stack, &P->scap, P->sp + 1, sizeof *P->stack);
        if (!p) return hv__pk_fail(P, "out of memory"), -1;
        P->stack = (hv__pv **)p;
    }
    P->stack[P->sp++] = v;
    return 0;
}
static size_t hv__pk_floor(const hv__pickle *P) { return P->nmarks ? P->marks[P->nmarks - 1] : 0; }
static hv__pv *hv__pk_pop(hv__pickle *P) {
    if (P->sp <= hv__pk_floor(P)) return (hv__pv *)hv__pk_fail(P, "stack underflow (opcode 0x%02x)", P->buf[P->opstart]);
    return P->stack[--P->sp];
}
static hv__pv *hv__pk_top(hv__pickle *P) {
    if (P->sp <= hv__pk_floor(P)) return (hv__pv *)hv__pk_fail(P, "stack underflow (opcode 0x%02x)", P->buf[P->opstart]);
    return P->stack[P->sp - 1];
}
/* pops to the last MARK: the items are stack[*start .. sp) */
static int hv__pk_pop_mark(hv__pickle *P, size_t *start) {
    if (!P->nmarks) return hv__pk_fail(P, "no MARK for opcode 0x%02x", P->buf[P->opstart]), -1;
    *start = P->marks[--P->nmarks];
    return 0;
}
/* a container of the given kind holding stack[start .. sp), which it replaces */
static hv__pv *hv__pk_collect(hv__pickle *P, int kind, size_t start) {
    hv__pv *c = hv__pv_new(P, kind);
    size_t k;
    if (!c) return NULL;
    if (P->sp > start) {
        c->items = (hv__pv **)hv__malloc(sizeof(hv__pv *) * (P->sp - start));
        if (!c->items) return (hv__pv *)hv__pk_fail(P, "out of memory");
        c->cap = P->sp - start;
        for (k = start; k < P->sp; k++) c->items[c->n++] = P->stack[k];
    }
    P->sp = start;
    return c;
}
static int hv__pk_need(hv__pickle *P, uint64_t n) {
    if ((uint64_t)(P->len - P->pos) < n)
        return hv__pk_fail(P, "truncated: opcode 0x%02x needs %llu more bytes, %zu are left", P->buf[P->opstart],
                           (unsigned long long)n, P->len - P->pos), -1;
    return 0;
}
static hv__pv *hv__pk_string(hv__pickle *P, int kind, uint64_t n) {
    hv__pv *v;
    if (hv__pk_need(P, n) != 0) return NULL;
    v = hv__pv_new(P, kind);
    if (!v) return NULL;
    v->s = (const char *)P->buf + P->pos;
    v->slen = (size_t)n;
    P->pos += (size_t)n;
    return v;
}
/* LONG1/LONG4 payload: n bytes of little-endian two's complement */
static hv__pv *hv__pk_long(hv__pickle *P, uint64_t n) {
    const unsigned char *b;
    hv__pv *v;
    uint64_t u = 0;
    size_t k, m;
    if (hv__pk_need(P, n) != 0) return NULL;
    v = hv__pv_new(P, HV__PV_INT);
    if (!v) return NULL;
    b = P->buf + P->pos;
    m = n < 8 ? (size_t)n : 8;
    for (k = 0; k < m; k++) u |= (uint64_t)b[k] << (8 * k);
    if (m && m < 8 && (b[m - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * m); /* sign-extend */
    for (k = 8; k < n; k++) /* longer: fits only if the rest is sign extension */
        if (b[k] != ((u >> 63) ? 0xff : 0x00)) v->big = 1;
    v->i = (int64_t)u;
    P->pos += (size_t)n;
    return v;
}
/* GLOBAL and INST read "module\nname\n" */
static int hv__pk_line(hv__pickle *P, const char **s, size_t *n) {
    const unsigned char *b = P->buf + P->pos;
    const unsigned char *nl = (const unsigned char *)memchr(b, '\n', P->len - P->pos);
    if (!nl) return hv__pk_fail(P, "truncated: a GLOBAL name has no end of line"), -1;
    *s = (const char *)b;
    *n = (size_t)(nl - b);
    P->pos += *n + 1;
    return 0;
}
static hv__pv *hv__pk_global(hv__pickle *P, const char *m, size_t mn, const char *nm, size_t nn) {
    hv__pv *g = hv__pv_new(P, HV__PV_GLOBAL);
    if (!g) return NULL;
    g->s = m;
    g->slen = mn;
    g->s2 = nm;
    g->s2len = nn;
    return g;
}

static int hv__pv_str_is(const hv__pv *v, const char *s) {
    return v && v->kind == HV__PV_STR && v->slen == strlen(s) && memcmp(v->s, s, v->slen) == 0;
}
static int hv__pv_global_is(const hv__pv *g, const char *module, const char *name) {
    return g && g->kind == HV__PV_GLOBAL && g->slen == strlen(module) && memcmp(g->s, module, g->slen) == 0 &&
           g->s2len == strlen(name) && memcmp(g->s2, name, g->s2len) == 0;
}
static int hv__pv_torch_module(const hv__pv *g) { /* "torch", "torch.cuda" ... */
    return g && g->kind == HV__PV_GLOBAL && g->slen >= 5 && memcmp(g->s, "torch", 5) == 0 && (g->slen == 5 || g->s[5] == '.');
}

/* persistent_load: ('storage', torch.XStorage, key, location, numel) */
static hv__pv *hv__pk_persistent(hv__pickle *P, hv__pv *pid) {
    hv__pv *st, *type, *key, *numel;
    if (pid->kind != HV__PV_TUPLE || pid->n < 1 || !hv__pv_str_is(pid->items[0], "storage"))
        return hv__pv_new(P, HV__PV_OBJ); /* something else: opaque */
    if (pid->n < 5) return (hv__pv *)hv__pk_fail(P, "storage reference has %zu fields, not 5", pid->n);
    type = pid->items[1];
    key = pid->items[2];
    numel = pid->items[4];
    if (type->kind != HV__PV_GLOBAL || key->kind != HV__PV_STR || numel->kind != HV__PV_INT || numel->big || numel->i < 0)
        return (hv__pv *)hv__pk_fail(P, "malformed storage reference (type, key or size)");
    st = hv__pv_new(P, HV__PV_STORAGE);
    if (!st) return NULL;
    st->s = key->s;
    st->slen = key->slen;
    st->s2 = type->s2;
    st->s2len = type->s2len;
    st->i = numel->i;
    if (hv__pv_torch_module(type)) {
        if (type->s2len == 14 && memcmp(type->s2, "UntypedStorage", 14) == 0) st->et = HV__E_U8;
        else st->et = hv__etype_find(1, type->s2, type->s2len);
    }
    return st;
}

/* _rebuild_tensor(storage, offset, size, stride), _v2 (..., requires_grad, hooks[, metadata]),
   _v3 (..., requires_grad, hooks, dtype[, metadata]) */
static hv__pv *hv__pk_tensor(hv__pickle *P, const hv__pv *args, int v3) {
    const hv__pv *st, *off, *size, *stride;
    hv__pv *t;
    size_t k;
    if (args->n < (v3 ? 7u : 4u)) return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor with %zu arguments", args->n);
    st = args->items[0];
    off = args->items[1];
    size = args->items[2];
    stride = args->items[3];
    if (st->kind != HV__PV_STORAGE) return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor: the first argument is not a storage");
    if (off->kind != HV__PV_INT || off->big || off->i < 0)
        return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor: bad storage offset");
    if ((size->kind != HV__PV_TUPLE && size->kind != HV__PV_OBJ) || stride->kind != HV__PV_TUPLE ||
        (size->kind == HV__PV_TUPLE && size->n != stride->n))
        return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor: size and stride are not tuples of one length");
    if (size->kind == HV__PV_OBJ) return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor: size is not a tuple");
    t = hv__pv_new(P, HV__PV_TENSOR);
    if (!t) return NULL;
    t->tensor = (hv__ptensor *)hv__malloc(sizeof *t->tensor);
    if (!t->tensor) return (hv__pv *)hv__pk_fail(P, "out of memory");
    memset(t->tensor, 0, sizeof *t->tensor);
    t->tensor->storage = (hv__pv *)st;
    t->tensor->offset = off->i;
    t->tensor->ndim = size->n > HV__PK_MAX_DIMS ? HV__PK_MAX_DIMS + 1 : (int)size->n;
    for (k = 0; k < size->n && k < HV__PK_MAX_DIMS; k++) {
        const hv__pv *a = size->items[k], *b = stride->items[k];
        if (a->kind != HV__PV_INT || b->kind != HV__PV_INT || a->big || b->big || a->i < 0 || b->i < 0)
            return (hv__pv *)hv__pk_fail(P, "_rebuild_tensor: size or stride %zu is not a non-negative integer", k);
        t->tensor->size[k] = a->i;
        t->tensor->stride[k] = b->i;
    }
    t->et = st->et;
    if (v3) {
        const hv__pv *dt = args->items[6];
        t->cls = (hv__pv *)dt;
        t->et = hv__pv_torch_module(dt) ? hv__etype_find(2, dt->s2, dt->s2len) : -1;
    }
    return t;
}

/* calls fn(*args) for the callables we understand; anything else makes an opaque object */
static hv__pv *hv__pk_call(hv__pickle *P, hv__pv *fn, hv__pv *args, int depth) {
    hv__pv *o;
    if (args->kind != HV__PV_TUPLE) return (hv__pv *)hv__pk_fail(P, "call arguments are not a tuple");
    if (fn->kind == HV__PV_GLOBAL) {
        if (hv__pv_global_is(fn, "collections", "OrderedDict") || hv__pv_global_is(fn, "builtins", "dict") ||
            hv__pv_global_is(fn, "__builtin__", "dict")) {
            hv__pv *d = hv__pv_new(P, HV__PV_DICT), *src;
            size_t k;
            if (!d) return NULL;
            src = args->n ? args->items[0] : NULL;
            if (src && src->kind == HV__PV_DICT) {
                for (k = 0; k < src->n; k++)
                    if (hv__pv_append(P, d, src->items[k]) != 0) return NULL;
            } else if (src && (src->kind == HV__PV_LIST || src->kind == HV__PV_TUPLE)) {
                for (k = 0; k < src->n; k++) {
                    const hv__pv *pair = src->items[k];
                    if ((pair->kind == HV__PV_TUPLE || pair->kind == HV__PV_LIST) && pair->n == 2)
                        if (hv__pv_append(P, d, pair->items[0]) != 0 || hv__pv_append(P, d, pair->items[1]) != 0) return NULL;
                }
            }
            return d;
        }
        if (hv__pv_global_is(fn, "torch._utils", "_rebuild_tensor_v2") || hv__pv_global_is(fn, "torch._utils", "_rebuild_tensor"))
            return hv__pk_tensor(P, args, 0);
        if (hv__pv_global_is(fn, "torch._utils", "_rebuild_tensor_v3")) return hv__pk_tensor(P, args, 1);
        if ((hv__pv_global_is(fn, "torch._utils", "_rebuild_parameter") ||
             hv__pv_global_is(fn, "torch._utils", "_rebuild_parameter_with_state")) &&
            args->n >= 1 && args->items[0]->kind == HV__PV_TENSOR)
            return args->items[0];
        if (hv__pv_global_is(fn, "torch._tensor", "_rebuild_from_type_v2") && args->n >= 3 &&
            args->items[2]->kind == HV__PV_TUPLE) {
            if (depth >= HV__PK_MAX_CALL_DEPTH) return (hv__pv *)hv__pk_fail(P, "_rebuild_from_type_v2 nested too deeply");
            return hv__pk_call(P, args->items[0], args->items[2], depth + 1);
        }
    }
    o = hv__pv_new(P, HV__PV_OBJ);
    if (o) o->cls = fn;
    return o;
}

static int hv__pk_memo_put(hv__pickle *P, uint64_t idx) {
    hv__pv *v = hv__pk_top(P);
    if (!v) return -1;
    /* picklers number memo entries 0, 1, 2 ...; allow gaps, but not absurd ones */
    if (idx > (uint64_t)P->memo_hi + 65536) return hv__pk_fail(P, "memo index %llu is out of sequence", (unsigned long long)idx), -1;
    if (idx >= P->memocap) {
        size_t old = P->memocap;
        void *p = hv__grow(P->memo, &P->memocap, (size_t)idx + 1, sizeof *P->memo);
        if (!p) return hv__pk_fail(P, "out of memory"), -1;
        P->memo = (hv__pv **)p;
        memset(P->memo + old, 0, (P->memocap - old) * sizeof *P->memo);
    }
    if (!P->memo[idx]) P->memo_count++;
    P->memo[idx] = v;
    if (idx + 1 > P->memo_hi) P->memo_hi = (size_t)idx + 1;
    return 0;
}
static int hv__pk_memo_get(hv__pickle *P, uint64_t idx) {
    if (idx >= P->memocap || !P->memo[idx]) return hv__pk_fail(P, "memo index %llu was never set", (unsigned long long)idx), -1;
    return hv__pk_push(P, P->memo[idx]);
}

/* items stack[start .. sp) into the container below the mark (APPENDS, SETITEMS, ADDITEMS) */
static int hv__pk_fill(hv__pickle *P, int kind, size_t start) {
    hv__pv *c;
    size_t k;
    if (start <= hv__pk_floor(P) || start == 0) return hv__pk_fail(P, "stack underflow (no container below the MARK)"), -1;
    c = P->stack[start - 1];
    if (kind == HV__PV_DICT && ((P->sp - start) & 1)) return hv__pk_fail(P, "SETITEMS with an odd number of items"), -1;
    if (c->kind == kind) {
        for (k = start; k < P->sp; k++)
            if (hv__pv_append(P, c, P->stack[k]) != 0) return -1;
    } else if (c->kind != HV__PV_OBJ) { /* opaque objects take anything; the rest is a corrupt pickle */
        return hv__pk_fail(P, "opcode 0x%02x on a value that is not a %s", P->buf[P->opstart],
                           kind == HV__PV_DICT ? "dict" : kind == HV__PV_LIST ? "list" : "set"), -1;
    }
    P->sp = start;
    return 0;
}

/* runs a pickle; returns its result (owned by P, freed by hv__pickle_free) or NULL with the
   error set. P must be zeroed with P->src set. */
static hv__pv *hv__pickle_run(hv__pickle *P, const unsigned char *buf, size_t len) {
    P->buf = buf;
    P->len = len;
    P->pos = 0;
    while (P->pos < P->len) {
        unsigned char op = buf[P->pos];
        hv__pv *a, *b, *c;
        size_t start;
        uint64_t n;
        int rc = 0;
        P->opstart = P->pos++;
        switch (op) {
        case 0x80: /* PROTO */
            if (hv__pk_need(P, 1) != 0) return NULL;
            if (buf[P->pos] > 5) return (hv__pv *)hv__pk_fail(P, "pickle protocol %d is not supported", buf[P->pos]);
            P->pos++;
            break;
        case 0x95: /* FRAME: a length we do not need */
            if (hv__pk_need(P, 8) != 0) return NULL;
            P->pos += 8;
            break;
        case '.': /* STOP */
            return hv__pk_pop(P);
        case '(': /* MARK */
            if (P->nmarks == P->mcap) {
                void *p = hv__grow(P->marks, &P->mcap, P->nmarks + 1, sizeof *P->marks);
                if (!p) return (hv__pv *)hv__pk_fail(P, "out of memory");
                P->marks = (size_t *)p;
            }
            P->marks[P->nmarks++] = P->sp;
            break;
        case '0': /* POP */
            if (P->sp > hv__pk_floor(P)) P->sp--;
            else if (P->nmarks) P->nmarks--;
            else return (hv__pv *)hv__pk_fail(P, "stack underflow (POP)");
            break;
        case '1': /* POP_MARK */
            if (hv__pk_pop_mark(P, &start) != 0) return NULL;
            P->sp = start;
            break;
        case '2': /* DUP */
            a = hv__pk_top(P);
            rc = a ? hv__pk_push(P, a) : -1;
            break;
        case 'N':
            rc = hv__pk_push(P, hv__pv_new(P, HV__PV_NONE));
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            a = hv__pv_new(P, HV__PV_BOOL);
            if (a) a->i = op == 0x88;
            rc = hv__pk_push(P, a);
            break;
        case 'J': /* BININT */
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */
            n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (hv__pk_need(P, n) != 0) return NULL;
            a = hv__pv_new(P, HV__PV_INT);
            if (a) a->i = op == 'J' ? (int64_t)(int32_t)hv__rd32(buf + P->pos) : op == 'K' ? buf[P->pos] : hv__rd16(buf + P->pos);
            P->pos += (size_t)n;
            rc = hv__pk_push(P, a);
            break;
        case 0x8a: /* LONG1 */
        case 0x8b: /* LONG4 */
            if (hv__pk_need(P, op == 0x8a ? 1 : 4) != 0) return NULL;
            if (op == 0x8a) {
                n = buf[P->pos];
                P->pos += 1;
            } else {
                int32_t s = (int32_t)hv__rd32(buf + P->pos);
                if (s < 0) return (hv__pv *)hv__pk_fail(P, "LONG4 with a negative length");
                n = (uint64_t)s;
                P->pos += 4;
            }
            rc = hv__pk_push(P, hv__pk_long(P, n));
            break;
        case 'G': { /* BINFLOAT: big-endian double */
            uint64_t u = 0;
            int k;
            if (hv__pk_need(P, 8) != 0) return NULL;
            for (k = 0; k < 8; k++) u = (u << 8) | buf[P->pos + k];
            P->pos += 8;
            a = hv__pv_new(P, HV__PV_FLOAT);
            if (a) memcpy(&a->f, &u, 8);
            rc = hv__pk_push(P, a);
            break;
        }
        case 'X':  /* BINUNICODE */
        case 'B':  /* BINBYTES */
        case 'T':  /* BINSTRING */
        case 0x8c: /* SHORT_BINUNICODE */
        case 'C':  /* SHORT_BINBYTES */
        case 'U':  /* SHORT_BINSTRING */
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
        case 0x96: /* BYTEARRAY8 */ {
            int w = (op == 0x8c || op == 'C' || op == 'U') ? 1 : (op == 0x8d || op == 0x8e || op == 0x96) ? 8 : 4;
            if (hv__pk_need(P, (uint64_t)w) != 0) return NULL;
            n = w == 1 ? buf[P->pos] : w == 4 ? hv__rd32(buf + P->pos) : hv__rd64(buf + P->pos);
            if (op == 'T' && (n & 0x80000000u)) return (hv__pv *)hv__pk_fail(P, "BINSTRING with a negative length");
            P->pos += (size_t)w;
            rc = hv__pk_push(P, hv__pk_string(P, (op == 'B' || op == 'C' || op == 0x8e || op == 0x96) ? HV__PV_BYTES : HV__PV_STR, n));
            break;
        }
        case '}': rc = hv__pk_push(P, hv__pv_new(P, HV__PV_DICT)); break;
        case ']': rc = hv__pk_push(P, hv__pv_new(P, HV__PV_LIST)); break;
        case ')': rc = hv__pk_push(P, hv__pv_new(P, HV__PV_TUPLE)); break;
        case 0x8f: rc = hv__pk_push(P, hv__pv_new(P, HV__PV_SET)); break; /* EMPTY_SET */
        case 'd': /* DICT */
        case 'l': /* LIST */
        case 't': /* TUPLE */
        case 0x91: /* FROZENSET */
            if (hv__pk_pop_mark(P, &start) != 0) return NULL;
            if (op == 'd' && ((P->sp - start) & 1)) return (hv__pv *)hv__pk_fail(P, "DICT with an odd number of items");
            rc = hv__pk_push(P, hv__pk_collect(P, op == 'd' ? HV__PV_DICT : op == 'l' ? HV__PV_LIST : op == 't' ? HV__PV_TUPLE : HV__PV_SET, start));
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            n = (uint64_t)(op - 0x84);
            if (P->sp - hv__pk_floor(P) < n) return (hv__pv *)hv__pk_fail(P, "stack underflow (TUPLE%d)", (int)n);
            rc = hv__pk_push(P, hv__pk_collect(P, HV__PV_TUPLE, P->sp - (size_t)n));
            break;
        case 'a': /* APPEND */
            if (!(b = hv__pk_pop(P)) || !(c = hv__pk_top(P))) return NULL;
            if (c->kind == HV__PV_LIST) rc = hv__pv_append(P, c, b);
            else if (c->kind != HV__PV_OBJ) return (hv__pv *)hv__pk_fail(P, "APPEND to a value that is not a list");
            break;
        case 's': /* SETITEM */
            if (!(b = hv__pk_pop(P)) || !(a = hv__pk_pop(P)) || !(c = hv__pk_top(P))) return NULL;
            if (c->kind == HV__PV_DICT) rc = (hv__pv_append(P, c, a) != 0 || hv__pv_append(P, c, b) != 0) ? -1 : 0;
            else if (c->kind != HV__PV_OBJ) return (hv__pv *)hv__pk_fail(P, "SETITEM on a value that is not a dict");
            break;
        case 'e': /* APPENDS */
        case 'u': /* SETITEMS */
        case 0x90: /* ADDITEMS */
            if (hv__pk_pop_mark(P, &start) != 0) return NULL;
            rc = hv__pk_fill(P, op == 'e' ? HV__PV_LIST : op == 'u' ? HV__PV_DICT : HV__PV_SET, start);
            break;
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
            if (hv__pk_need(P, op == 'q' ? 1 : 4) != 0) return NULL;
            n = op == 'q' ? buf[P->pos] : hv__rd32(buf + P->pos);
            P->pos += op == 'q' ? 1 : 4;
            rc = hv__pk_memo_put(P, n);
            break;
        case 0x94: /* MEMOIZE */
            rc = hv__pk_memo_put(P, P->memo_count);
            break;
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
            if (hv__pk_need(P, op == 'h' ? 1 : 4) != 0) return NULL;
            n = op == 'h' ? buf[P->pos] : hv__rd32(buf + P->pos);
            P->pos += op == 'h' ? 1 : 4;
            rc = hv__pk_memo_get(P, n);
            break;
        case 'c': /* GLOBAL */
        case 'i': { /* INST: GLOBAL then a call with the items since the MARK */
            const char *m, *nm;
            size_t mn, nn;
            if (hv__pk_line(P, &m, &mn) != 0 || hv__pk_line(P, &nm, &nn) != 0) return NULL;
            a = hv__pk_global(P, m, mn, nm, nn);
            if (!a) return NULL;
            if (op == 'c') {
                rc = hv__pk_push(P, a);
            } else {
                if (hv__pk_pop_mark(P, &start) != 0 || !(b = hv__pk_collect(P, HV__PV_TUPLE, start))) return NULL;
                rc = hv__pk_push(P, hv__pk_call(P, a, b, 0));
            }
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = hv__pk_pop(P)) || !(a = hv__pk_pop(P))) return NULL;
            if (a->kind != HV__PV_STR || b->kind != HV__PV_STR) return (hv__pv *)hv__pk_fail(P, "STACK_GLOBAL needs two strings");
            rc = hv__pk_push(P, hv__pk_global(P, a->s, a->slen, b->s, b->slen));
            break;
        case 'R': /* REDUCE */
        case 0x81: /* NEWOBJ */
            if (!(b = hv__pk_pop(P)) || !(a = hv__pk_pop(P))) return NULL;
            rc = hv__pk_push(P, hv__pk_call(P, a, b, 0));
            break;
        case 0x92: /* NEWOBJ_EX: cls, args, kwargs */
            if (!hv__pk_pop(P) || !(b = hv__pk_pop(P)) || !(a = hv__pk_pop(P))) return NULL;
            rc = hv__pk_push(P, hv__pk_call(P, a, b, 0));
            break;
        case 'o': /* OBJ: MARK cls args... */
            if (hv__pk_pop_mark(P, &start) != 0) return NULL;
            if (P->sp == start) return (hv__pv *)hv__pk_fail(P, "OBJ without a class");
            a = P->stack[start];
            if (!(b = hv__pk_collect(P, HV__PV_TUPLE, start + 1))) return NULL;
            P->sp = start;
            rc = hv__pk_push(P, hv__pk_call(P, a, b, 0));
            break;
        case 'b': /* BUILD: state is set on the object; we keep nothing of it */
            if (!hv__pk_pop(P) || !hv__pk_top(P)) return NULL;
            break;
        case 'Q': /* BINPERSID */
            if (!(a = hv__pk_pop(P))) return NULL;
            rc = hv__pk_push(P, hv__pk_persistent(P, a));
            break;
        default:
            if (op >= 0x20 && op < 0x7f)
                return (hv__pv *)hv__pk_fail(P, "unsupported pickle opcode '%c' (0x%02x): not a torch.save pickle", op, op);
            return (hv__pv *)hv__pk_fail(P, "unsupported pickle opcode 0x%02x: not a torch.save pickle", op);
        }
        if (rc != 0) return NULL;
    }
    P->opstart = P->pos;
    return (hv__pv *)hv__pk_fail(P, "truncated: the pickle ends without a STOP opcode");
}

/* ---- tensor materialisation -------------------------------------------------------------------
   One tensor from a storage of storage_bytes bytes at file offset base: element (i0, i1, ...) is
   at storage element offset + sum(ik * stride[k]), of type et. The result is a new persistent
   contiguous f32 or i32 tensor. Contiguous data streams through a small conversion buffer (or
   straight into the tensor for f32); strided views read the span they cover once. */
static hv_tensor *hv__ckpt_tensor(hv_ctx *ctx, const hv__src *src, const char *name, int et, int ndim, const int64_t *shape,
                                  const int64_t *stride, int64_t offset, uint64_t base, uint64_t storage_bytes) {
    const hv__etype *ty;
    uint64_t numel = 1, maxidx, es, need, out_bytes, limit;
    int64_t dims[HV_MAX_DIMS];
    int k, contiguous = 1;
    hv_tensor *t;
    unsigned char *tmp = NULL, *gath = NULL;
    char why[160];
    if (et < 0 || et >= HV__E_COUNT) return (hv_tensor *)hv__src_fail(src, "tensor '%s' has an unsupported element type", name);
    ty = &hv__etypes[et];
    es = (uint64_t)ty->size;
    if (ndim > HV_MAX_DIMS)
        return (hv_tensor *)hv__src_fail(src, "tensor '%s' has %d dimensions; humanvit tensors have at most %d", name, ndim, HV_MAX_DIMS);
    maxidx = (uint64_t)offset;
    for (k = ndim - 1; k >= 0; k--) {
        uint64_t reach;
        if (shape[k] < 0 || stride[k] < 0) return (hv_tensor *)hv__src_fail(src, "tensor '%s' has a negative size or stride", name);
        if (hv__mul64(numel, (uint64_t)shape[k], &numel) != 0 || numel > ((uint64_t)1 << 60))
            return (hv_tensor *)hv__src_fail(src, "tensor '%s': the product of its sizes overflows", name);
        if (shape[k] > 0 && (hv__mul64((uint64_t)shape[k] - 1, (uint64_t)stride[k], &reach) != 0 || hv__add64(maxidx, reach, &maxidx) != 0))
            return (hv_tensor *)hv__src_fail(src, "tensor '%s': its strides overflow", name);
        dims[k] = shape[k];
    }
    for (k = ndim - 1, need = 1; k >= 0; k--) { /* row-major strides (size-1 axes do not matter) */
        if (shape[k] != 1 && (uint64_t)stride[k] != need) contiguous = 0;
        need *= (uint64_t)shape[k];
    }
    if (numel > 0) { /* the last element read must lie inside the storage */
        if (hv__add64(maxidx, 1, &need) != 0 || hv__mul64(need, es, &need) != 0 || need > storage_bytes)
            return (hv_tensor *)hv__src_fail(src, "tensor '%s' reaches past the end of its storage (element %llu of a %llu-byte %s storage)",
                                             name, (unsigned long long)maxidx, (unsigned long long)storage_bytes, ty->st);
    }
    /* expanded (stride-0) views may describe more elements than the file holds; allow them
       HV__EXPAND_SLACK beyond 4 bytes per stored byte, so a hostile file cannot ask for terabytes */
    out_bytes = numel * 4;
    if (hv__mul64(storage_bytes, 4, &limit) != 0 || hv__add64(limit, HV__EXPAND_SLACK, &limit) != 0) limit = UINT64_MAX;
    if (out_bytes > limit || out_bytes > (uint64_t)(SIZE_MAX / 2))
        return (hv_tensor *)hv__src_fail(src, "tensor '%s' would need %llu bytes, far more than its %llu-byte storage", name,
                                         (unsigned long long)out_bytes, (unsigned long long)storage_bytes);
    t = hv_tensor_new(ctx, ty->is_int ? HV_I32 : HV_F32, hv_shape_of(ndim, dims));
    if (!t) return (hv_tensor *)hv__src_fail(src, "tensor '%s': %s", name, hv_last_error());
    if (numel == 0) return t;
    if (contiguous) {
        uint64_t at = base + (uint64_t)offset * es, done = 0; /* in range: checked above */
        if (et == HV__E_F32 && hv__host_le()) {
            if (hv__src_read(src, at, t->data, (size_t)(numel * 4), "tensor data") != 0) goto fail;
        } else {
            size_t chunk = (size_t)(numel < HV__CHUNK_ELEMS ? numel : HV__CHUNK_ELEMS);
            tmp = (unsigned char *)hv__malloc(chunk * (size_t)es);
            if (!tmp) goto oom;
            while (done < numel) {
                size_t m = (size_t)(numel - done < chunk ? numel - done : chunk);
                if (hv__src_read(src, at + done * es, tmp, m * (size_t)es, "tensor data") != 0) goto fail;
                if (hv__convert(et, tmp, m, (char *)t->data + done * 4, (size_t)done, why, sizeof why) != 0) goto bad;
                done += m;
            }
        }
    } else {
        /* read the covered span once, gather the elements in row-major order, convert */
        uint64_t span = (maxidx - (uint64_t)offset + 1) * es, i;
        int64_t idx[HV_MAX_DIMS];
        uint64_t rel = 0;
        if (span > (uint64_t)(SIZE_MAX / 2)) goto oom;
        tmp = (unsigned char *)hv__malloc((size_t)span);
        gath = (unsigned char *)hv__malloc((size_t)(numel * es));
        if (!tmp || !gath) goto oom;
        if (hv__src_read(src, base + (uint64_t)offset * es, tmp, (size_t)span, "tensor data") != 0) goto fail;
        memset(idx, 0, sizeof idx);
        for (i = 0; i < numel; i++) {
            memcpy(gath + i * es, tmp + rel * es, (size_t)es);
            for (k = ndim - 1; k >= 0; k--) { /* odometer */
                if (++idx[k] < shape[k]) {
                    rel += (uint64_t)stride[k];
                    break;
                }
                rel -= (uint64_t)stride[k] * (uint64_t)(shape[k] - 1);
                idx[k] = 0;
            }
        }
        if (hv__convert(et, gath, (size_t)numel, t->data, 0, why, sizeof why) != 0) goto bad;
    }
    hv__free(tmp);
    hv__free(gath);
    return t;
bad:
    hv__src_fail(src, "tensor '%s' (%s): %s", name, ty->st, why);
    goto fail;
oom:
    hv__src_fail(src, "out of memory reading tensor '%s'", name);
fail:
    hv__free(tmp);
    hv__free(gath);
    hv_tensor_free(t);
    return NULL;
}

/* ---- torch.save files ---------------------------------------------------------------------- */

/* the value of the last pair whose key is the string key */
static const hv__pv *hv__pk_dict_get(const hv__pv *d, const char *key) {
    const hv__pv *v = NULL;
    size_t k;
    for (k = 0; k + 1 < d->n; k += 2)
        if (hv__pv_str_is(d->items[k], key)) v = d->items[k + 1];
    return v;
}
/* "'model', 'optimizer', ..." for messages */
static const char *hv__pk_keys(const hv__pv *d) {
    static HV__TLS char buf[256];
    size_t k, at = 0;
    buf[0] = 0;
    for (k = 0; k + 1 < d->n && at + 40 < sizeof buf; k += 2) {
        const hv__pv *key = d->items[k];
        if (key->kind == HV__PV_STR)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s'%.*s'", at ? ", " : "", (int)(key->slen < 32 ? key->slen : 32), key->s);
    }
    if (k + 1 < d->n) snprintf(buf + at, sizeof buf - at, ", ...");
    return buf;
}
static const char *hv__pv_kind_name(const hv__pv *v) {
    static const char *names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                  "dict", "set", "global", "object", "storage", "tensor"};
    return names[v->kind];
}

/* the dict that holds the weights (see hv_torch_load); NULL with the error set */
static const hv__pv *hv__pk_select(const hv__src *src, const hv__pv *root, const char *entry, const char **chosen) {
    static const char *autos[3] = {"model", "model_state_dict", "state_dict"};
    const hv__pv *v;
    int k;
    *chosen = "the top level";
    if (entry) {
        if (root->kind != HV__PV_DICT)
            return (const hv__pv *)hv__src_fail(src, "the checkpoint is a %s, not a dict, so it has no entry '%s'", hv__pv_kind_name(root), entry);
        v = hv__pk_dict_get(root, entry);
        if (!v) return (const hv__pv *)hv__src_fail(src, "no entry '%s' (top-level keys: %s)", entry, hv__pk_keys(root));
        if (v->kind != HV__PV_DICT) return (const hv__pv *)hv__src_fail(src, "entry '%s' is a %s, not a dict of tensors", entry, hv__pv_kind_name(v));
        *chosen = entry;
        return v;
    }
    if (root->kind != HV__PV_DICT)
        return (const hv__pv *)hv__src_fail(src, "the checkpoint is a %s, not a dict of tensors", hv__pv_kind_name(root));
    for (k = 0; k < 3; k++) {
        v = hv__pk_dict_get(root, autos[k]);
        if (v && v->kind == HV__PV_DICT) {
            *chosen = autos[k];
            return v;
        }
    }
    return root;
}

static hv_state_dict *hv__torch_load_src(hv_ctx *ctx, const hv__src *src, const char *entry) {
    hv__zip z;
    hv__pickle P;
    unsigned char head[2] = {0, 0}, *pkl = NULL;
    const hv__zent *e = NULL;
    const hv__pv *root, *dict;
    hv_state_dict *sd = NULL;
    char *ename = NULL;
    const char *chosen;
    size_t k, plen = 0, ntensors = 0;
    uint64_t off;
    memset(&P, 0, sizeof P);
    memset(&z, 0, sizeof z);
    P.src = src;
    if (!ctx) return (hv_state_dict *)hv__src_fail(src, "ctx is NULL");
    if (src->size >= 2 && hv__src_read(src, 0, head, 2, "the magic number") != 0) return NULL;
    if (head[0] == 0x80 && head[1] <= 5)
        return (hv_state_dict *)hv__src_fail(src, "legacy (non-zip) torch.save format, written by PyTorch < 1.6 or with "
                                                  "_use_new_zipfile_serialization=False; load it in PyTorch and torch.save it again");
    if (hv__zip_open(&z, src) != 0) return NULL;
    /* the archive's records live under one folder ("archive/", "<name>/"): find <folder>/data.pkl */
    for (k = 0; k < z.n; k++) {
        const hv__zent *c = &z.e[k];
        if (c->nlen >= 8 && memcmp(c->name + c->nlen - 8, "data.pkl", 8) == 0) {
            const char *slash = (const char *)memchr(c->name, '/', c->nlen - 8);
            if (c->nlen == 8 || (slash && (size_t)(slash - c->name) == c->nlen - 9)) {
                e = c;
                break;
            }
        }
    }
    if (!e) {
        hv__src_fail(src, "no data.pkl record: a zip archive, but not one written by torch.save");
        goto done;
    }
    plen = e->nlen - 8; /* the folder prefix, with its slash */
    if (hv__zip_data(&z, e, &off) != 0) goto done;
    if (e->usize > HV__PK_MAX_BYTES) {
        hv__src_fail(src, "data.pkl of %llu bytes is too large", (unsigned long long)e->usize);
        goto done;
    }
    pkl = (unsigned char *)hv__malloc((size_t)e->usize);
    if (!pkl) {
        hv__src_fail(src, "out of memory for data.pkl");
        goto done;
    }
    if (hv__src_read(src, off, pkl, (size_t)e->usize, "data.pkl") != 0) goto done;
    { /* byteorder (PyTorch >= 1.10): storages are little-endian unless it says "big" */
        char bo[16];
        const hv__zent *b;
        ename = (char *)hv__malloc(plen + 5 + 24 + 1);
        if (!ename) {
            hv__src_fail(src, "out of memory");
            goto done;
        }
        memcpy(ename, e->name, plen);
        memcpy(ename + plen, "byteorder", 9);
        b = hv__zip_find(&z, ename, plen + 9);
        if (b && b->usize >= 3 && b->usize < sizeof bo) {
            if (hv__zip_data(&z, b, &off) != 0 || hv__src_read(src, off, bo, (size_t)b->usize, "byteorder") != 0) goto done;
            if (memcmp(bo, "big", 3) == 0) {
                hv__src_fail(src, "the storages are big-endian (byteorder = big); only little-endian checkpoints are supported");
                goto done;
            }
        }
        hv__free(ename);
        ename = NULL;
    }
    root = hv__pickle_run(&P, pkl, (size_t)e->usize);
    if (!root) goto done;
    dict = hv__pk_select(src, root, entry, &chosen);
    if (!dict) goto done;
    sd = hv_state_dict_new(ctx);
    if (!sd) goto done;
    for (k = 0; k + 1 < dict->n; k += 2) {
        const hv__pv *key = dict->items[k], *val = dict->items[k + 1], *st;
        const hv__ptensor *pt;
        const char *name;
        size_t nlen;
        char namebuf[256];
        hv_tensor *t;
        uint64_t sbytes;
        if (key->kind != HV__PV_STR || val->kind != HV__PV_TENSOR) continue; /* not a tensor entry */
        name = key->s;
        nlen = key->slen;
        if (nlen >= 7 && memcmp(name, "module.", 7) == 0) { /* DataParallel / DDP */
            name += 7;
            nlen -= 7;
        }
        if (memchr(name, 0, nlen)) {
            hv__src_fail(src, "a tensor name contains a NUL byte");
            goto fail;
        }
        snprintf(namebuf, sizeof namebuf, "%.*s", (int)(nlen < 200 ? nlen : 200), name);
        pt = val->tensor;
        st = pt->storage;
        if (st->et < 0 || val->et < 0) {
            hv__src_fail(src, "tensor '%s': storage type torch.%.*s%s is not supported", namebuf, (int)(st->s2len < 64 ? st->s2len : 64), st->s2,
                         val->et < 0 && st->et >= 0 ? " with this dtype" : "");
            goto fail;
        }
        if (pt->ndim > HV_MAX_DIMS) {
            hv__src_fail(src, "tensor '%s' has more than %d dimensions", namebuf, HV_MAX_DIMS);
            goto fail;
        }
        ename = (char *)hv__malloc(plen + 5 + st->slen + 1);
        if (!ename) {
            hv__src_fail(src, "out of memory");
            goto fail;
        }
        memcpy(ename, e->name, plen);
        memcpy(ename + plen, "data/", 5);
        memcpy(ename + plen + 5, st->s, st->slen);
        {
            const hv__zent *se = hv__zip_find(&z, ename, plen + 5 + st->slen);
            if (!se) {
                hv__src_fail(src, "tensor '%s': its storage record '%.*s' is missing", namebuf, (int)(plen + 5 + (st->slen < 64 ? st->slen : 64)), ename);
                goto fail;
            }
            if (hv__zip_data(&z, se, &off) != 0) goto fail;
            if (hv__mul64((uint64_t)st->i, (uint64_t)hv__etypes[st->et].size, &sbytes) != 0 || sbytes > se->usize) {
                hv__src_fail(src, "tensor '%s': storage '%.*s' declares %lld elements but holds %llu bytes", namebuf,
                             (int)(st->slen < 64 ? st->slen : 64), st->s, (long long)st->i, (unsigned long long)se->usize);
                goto fail;
            }
        }
        hv__free(ename);
        ename = NULL;
        t = hv__ckpt_tensor(ctx, src, namebuf, val->et, pt->ndim, pt->size, pt->stride, pt->offset, off, sbytes);
        if (!t) goto fail;
        if (hv__sd_put(sd, src->op, name, nlen, t, 1, 1) != 0) {
            hv_tensor_free(t);
            goto fail;
        }
        ntensors++;
    }
    if (!ntensors) {
        hv__src_fail(src, "no tensors in %s%s%s (its keys: %s)", entry || dict != root ? "entry '" : "", chosen,
                     entry || dict != root ? "'" : "", hv__pk_keys(dict));
        goto fail;
    }
    goto done;
fail:
    hv_state_dict_free(sd);
    sd = NULL;
done:
    hv__free(ename);
    hv__free(pkl);
    hv__pickle_free(&P);
    hv__zip_close(&z);
    return sd;
}

/* ---- safetensors ------------------------------------------------------------------------------
   8-byte little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
   "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data; offsets are relative to
   the byte after the header. */

typedef struct hv__st_ent {
    char *name;
    size_t nlen;
    int et, ndim;
    int64_t shape[HV_MAX_DIMS];
    uint64_t begin, end;
} hv__st_ent;
typedef struct hv__st_hdr {
    hv__st_ent *e;
    size_t n, cap;
} hv__st_hdr;
static void hv__st_hdr_free(hv__st_hdr *h) {
    size_t k;
    for (k = 0; k < h->n; k++) hv__free(h->e[k].name);
    hv__free(h->e);
    memset(h, 0, sizeof *h);
}

typedef struct hv__json {
    const unsigned char *p, *start, *end;
    const hv__src *src;
} hv__json;

static int hv__js_fail(hv__json *J, const char *what) {
    hv__src_fail(J->src, "bad safetensors header at byte %zu: %s", (size_t)(J->p - J->start), what);
    return -1;
}
static void hv__js_ws(hv__json *J) {
    while (J->p < J->end && (*J->p == ' ' || *J->p == '\t' || *J->p == '\n' || *J->p == '\r')) J->p++;
}
static int hv__js_char(hv__json *J, char c) { /* consumes c after whitespace; 0 when it was there */
    hv__js_ws(J);
    if (J->p < J->end && *J->p == (unsigned char)c) {
        J->p++;
        return 0;
    }
    return -1;
}
static int hv__js_hex4(hv__json *J, unsigned *v) {
    int k;
    *v = 0;
    if (J->end - J->p < 4) return hv__js_fail(J, "truncated \\u escape");
    for (k = 0; k < 4; k++) {
        unsigned char c = *J->p++;
        unsigned d = (c >= '0' && c <= '9') ? (unsigned)(c - '0') : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10)
                   : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10) : 16u;
        if (d > 15) return hv__js_fail(J, "bad \\u escape");
        *v = *v * 16 + d;
    }
    return 0;
}
/* a JSON string, decoded into a new NUL-terminated buffer (*out, caller frees; NULL when
   out is NULL: skip only) */
static int hv__js_string(hv__json *J, char **out, size_t *outlen) {
    const unsigned char *q;
    char *s = NULL;
    size_t n = 0;
    if (out) *out = NULL;
    if (hv__js_char(J, '"') != 0) return hv__js_fail(J, "expected a string");
    for (q = J->p; q < J->end && *q != '"'; q++)
        if (*q == '\\') q++;
    if (q >= J->end) return hv__js_fail(J, "unterminated string");
    if (out) { /* decoded length <= raw length */
        s = (char *)hv__malloc((size_t)(q - J->p) + 1);
        if (!s) return hv__js_fail(J, "out of memory");
    }
    while (*J->p != '"') {
        unsigned char c = *J->p++;
        unsigned cp;
        if (c < 0x20) {
            hv__free(s);
            return hv__js_fail(J, "control character in a string");
        }
        if (c != '\\') {
            if (s) s[n++] = (char)c;
            continue;
        }
        c = *J->p++; /* inside the string: the scan above saw the closing quote after it */
        switch (c) {
        case '"': case '\\': case '/': cp = c; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (hv__js_hex4(J, &cp) != 0) {
                hv__free(s);
                return -1;
            }
            if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair */
                unsigned lo;
                if (J->end - J->p < 6 || J->p[0] != '\\' || J->p[1] != 'u') {
                    hv__free(s);
                    return hv__js_fail(J, "unpaired surrogate");
                }
                J->p += 2;
                if (hv__js_hex4(J, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
                    hv__free(s);
                    return lo < 0xdc00 || lo > 0xdfff ? hv__js_fail(J, "unpaired surrogate") : -1;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                hv__free(s);
                return hv__js_fail(J, "unpaired surrogate");
            }
            break;
        default:
            hv__free(s);
            return hv__js_fail(J, "bad escape");
        }
        if (J->p > q) { /* an escape may not run past the closing quote the scan found */
            hv__free(s);
            return hv__js_fail(J, "bad escape at the end of a string");
        }
        if (s) { /* UTF-8; at most 4 bytes from at least 2 raw ones (6 for 4) */
            if (cp < 0x80) s[n++] = (char)cp;
            else if (cp < 0x800) {
                s[n++] = (char)(0xc0 | (cp >> 6));
                s[n++] = (char)(0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                s[n++] = (char)(0xe0 | (cp >> 12));
                s[n++] = (char)(0x80 | ((cp >> 6) & 63));
                s[n++] = (char)(0x80 | (cp & 63));
            } else {
                s[n++] = (char)(0xf0 | (cp >> 18));
                s[n++] = (char)(0x80 | ((cp >> 12) & 63));
                s[n++] = (char)(0x80 | ((cp >> 6) & 63));
                s[n++] = (char)(0x80 | (cp & 63));
            }
        }
    }
    J->p++; /* the closing quote */
    if (s) {
        s[n] = 0;
        *out = s;
        if (outlen) *outlen = n;
    }
    return 0;
}
static int hv__js_uint(hv__json *J, uint64_t *v) {
    int digits = 0;
    hv__js_ws(J);
    *v = 0;
    while (J->p < J->end && *J->p >= '0' && *J->p <= '9') {
        unsigned d = (unsigned)(*J->p++ - '0');
        if (*v > (UINT64_MAX - d) / 10) return hv__js_fail(J, "number too large");
        *v = *v * 10 + d;
        digits++;
    }
    if (!digits) return hv__js_fail(J, "expected a non-negative integer");
    if (J->p < J->end && (*J->p == '.' || *J->p == 'e' || *J->p == 'E')) return hv__js_fail(J, "expected an integer");
    return 0;
}
/* skips any JSON value, nested at most HV__JSON_MAX_DEPTH deep */
static int hv__js_skip(hv__json *J, int depth) {
    hv__js_ws(J);
    if (J->p >= J->end) return hv__js_fail(J, "truncated");
    if (depth > HV__JSON_MAX_DEPTH) return hv__js_fail(J, "nested too deeply");
    switch (*J->p) {
    case '"': return hv__js_string(J, NULL, NULL);
    case '{':
    case '[': {
        char close = *J->p == '{' ? '}' : ']';
        int obj = close == '}';
        J->p++;
        if (hv__js_char(J, close) == 0) return 0;
        for (;;) {
            if (obj && (hv__js_string(J, NULL, NULL) != 0 || (hv__js_char(J, ':') != 0 && hv__js_fail(J, "expected ':'")))) return -1;
            if (hv__js_skip(J, depth + 1) != 0) return -1;
            if (hv__js_char(J, ',') == 0) continue;
            if (hv__js_char(J, close) == 0) return 0;
            return hv__js_fail(J, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    default: { /* number, true, false, null */
        const unsigned char *s = J->p;
        while (J->p < J->end && ((*J->p >= '0' && *J->p <= '9') || *J->p == '-' || *J->p == '+' || *J->p == '.' ||
                                 *J->p == 'e' || *J->p == 'E' || (*J->p >= 'a' && *J->p <= 'z')))
            J->p++;
        if (J->p == s) return hv__js_fail(J, "unexpected character");
        return 0;
    }
    }
}

/* parses the JSON header; data_len: bytes after the header, which every tensor must lie in */
static int hv__safetensors_parse_header(const unsigned char *json, size_t len, uint64_t data_len, hv__st_hdr *h, const hv__src *src) {
    hv__json J;
    memset(h, 0, sizeof *h);
    J.p = J.start = json;
    J.end = json + len;
    J.src = src;
    if (hv__js_char(&J, '{') != 0) return hv__js_fail(&J, "expected '{'");
    if (hv__js_char(&J, '}') == 0) goto end;
    for (;;) {
        char *name = NULL;
        size_t nlen = 0;
        hv__st_ent *e;
        int seen = 0; /* bits: 1 dtype, 2 shape, 4 data_offsets */
        uint64_t bytes;
        if (hv__js_string(&J, &name, &nlen) != 0) goto fail;
        if (hv__js_char(&J, ':') != 0) {
            hv__free(name);
            hv__js_fail(&J, "expected ':'");
            goto fail;
        }
        if (strcmp(name, "__metadata__") == 0 && nlen == 12) {
            hv__free(name);
            if (hv__js_skip(&J, 1) != 0) goto fail;
            goto next;
        }
        if (h->n == h->cap) {
            void *p = hv__grow(h->e, &h->cap, h->n + 1, sizeof *h->e);
            if (!p) {
                hv__free(name);
                hv__js_fail(&J, "out of memory");
                goto fail;
            }
            h->e = (hv__st_ent *)p;
        }
        e = &h->e[h->n++];
        memset(e, 0, sizeof *e);
        e->name = name;
        e->nlen = nlen;
        e->et = -1;
        if (hv__js_char(&J, '{') != 0) {
            hv__js_fail(&J, "expected '{' after a tensor name");
            goto fail;
        }
        if (hv__js_char(&J, '}') != 0)
            for (;;) {
                char *key = NULL;
                if (hv__js_string(&J, &key, NULL) != 0) goto fail;
                if (hv__js_char(&J, ':') != 0) {
                    hv__free(key);
                    hv__js_fail(&J, "expected ':'");
                    goto fail;
                }
                if (strcmp(key, "dtype") == 0) {
                    char *dt = NULL;
                    size_t dlen = 0;
                    hv__free(key);
                    if (hv__js_string(&J, &dt, &dlen) != 0) goto fail;
                    e->et = hv__etype_find(0, dt, dlen);
                    if (e->et < 0) {
                        hv__src_fail(src, "tensor '%s': dtype '%.32s' is not supported (F32, F16, BF16, F64 and integer types are)", name, dt);
                        hv__free(dt);
                        goto fail;
                    }
                    hv__free(dt);
                    seen |= 1;
                } else if (strcmp(key, "shape") == 0 || strcmp(key, "data_offsets") == 0) {
                    int is_shape = key[0] == 's', cnt = 0;
                    uint64_t v[HV_MAX_DIMS];
                    hv__free(key);
                    if (hv__js_char(&J, '[') != 0) {
                        hv__js_fail(&J, "expected '['");
                        goto fail;
                    }
                    if (hv__js_char(&J, ']') != 0)
                        for (;;) {
                            if (cnt == (is_shape ? HV_MAX_DIMS : 2)) {
                                if (is_shape) hv__src_fail(src, "tensor '%s' has more than %d dimensions", name, HV_MAX_DIMS);
                                else hv__js_fail(&J, "data_offsets must hold two numbers");
                                goto fail;
                            }
                            if (hv__js_uint(&J, &v[cnt]) != 0) goto fail;
                            cnt++;
                            if (hv__js_char(&J, ',') == 0) continue;
                            if (hv__js_char(&J, ']') == 0) break;
                            hv__js_fail(&J, "expected ',' or ']'");
                            goto fail;
                        }
                    if (is_shape) {
                        int k;
                        for (k = 0; k < cnt; k++) {
                            if (v[k] > (uint64_t)INT64_MAX) {
                                hv__js_fail(&J, "dimension too large");
                                goto fail;
                            }
                            e->shape[k] = (int64_t)v[k];
                        }
                        e->ndim = cnt;
                        seen |= 2;
                    } else {
                        if (cnt != 2) {
                            hv__js_fail(&J, "data_offsets must hold two numbers");
                            goto fail;
                        }
                        e->begin = v[0];
                        e->end = v[1];
                        seen |= 4;
                    }
                } else {
                    hv__free(key);
                    if (hv__js_skip(&J, 2) != 0) goto fail;
                }
                if (hv__js_char(&J, ',') == 0) continue;
                if (hv__js_char(&J, '}') == 0) break;
                hv__js_fail(&J, "expected ',' or '}'");
                goto fail;
            }
        if (seen != 7) {
            hv__src_fail(src, "tensor '%s' lacks %s", name, !(seen & 1) ? "a dtype" : !(seen & 2) ? "a shape" : "data_offsets");
            goto fail;
        }
        { /* the byte range must be inside the data and exactly as long as the shape says */
            int k;
            bytes = (uint64_t)hv__etypes[e->et].size;
            for (k = 0; k < e->ndim; k++)
                if (hv__mul64(bytes, (uint64_t)e->shape[k], &bytes) != 0) {
                    hv__src_fail(src, "tensor '%s': the product of its shape overflows", name);
                    goto fail;
                }
            if (e->begin > e->end || e->end > data_len) {
                hv__src_fail(src, "tensor '%s': data_offsets [%llu, %llu] lie outside the %llu data bytes", name,
                             (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_len);
                goto fail;
            }
            if (e->end - e->begin != bytes) {
                hv__src_fail(src, "tensor '%s': data_offsets span %llu bytes but its %s shape needs %llu", name,
                             (unsigned long long)(e->end - e->begin), hv__etypes[e->et].st, (unsigned long long)bytes);
                goto fail;
            }
        }
    next:
        if (hv__js_char(&J, ',') == 0) continue;
        if (hv__js_char(&J, '}') == 0) break;
        hv__js_fail(&J, "expected ',' or '}'");
        goto fail;
    }
end:
    hv__js_ws(&J);
    if (J.p != J.end) {
        hv__js_fail(&J, "trailing bytes after the JSON object");
        goto fail;
    }
    return 0;
fail:
    hv__st_hdr_free(h);
    return -1;
}

static hv_state_dict *hv__safetensors_load_src(hv_ctx *ctx, const hv__src *src) {
    unsigned char lenbuf[8], *json = NULL;
    uint64_t hlen, data_len;
    hv__st_hdr h;
    hv_state_dict *sd = NULL;
    size_t k;
    int64_t stride[HV_MAX_DIMS];
    memset(&h, 0, sizeof h);
    if (!ctx) return (hv_state_dict *)hv__src_fail(src, "ctx is NULL");
    if (src->size < 8)
        return (hv_state_dict *)hv__src_fail(src, "not a safetensors file: %llu bytes is shorter than the 8-byte header length", (unsigned long long)src->size);
    if (hv__src_read(src, 0, lenbuf, 8, "the header length") != 0) return NULL;
    hlen = hv__rd64(lenbuf);
    if (hlen > src->size - 8)
        return (hv_state_dict *)hv__src_fail(src, "not a safetensors file, or truncated: header length %llu exceeds the file (%llu bytes)",
                                             (unsigned long long)hlen, (unsigned long long)src->size);
    if (hlen > HV__ST_MAX_HEADER)
        return (hv_state_dict *)hv__src_fail(src, "header length %llu is over the safetensors limit of %llu", (unsigned long long)hlen,
                                             (unsigned long long)HV__ST_MAX_HEADER);
    data_len = src->size - 8 - hlen;
    json = (unsigned char *)hv__malloc((size_t)hlen + 1);
    if (!json) return (hv_state_dict *)hv__src_fail(src, "out of memory for the header");
    if (hv__src_read(src, 8, json, (size_t)hlen, "the JSON header") != 0) goto done;
    if (hv__safetensors_parse_header(json, (size_t)hlen, data_len, &h, src) != 0) goto done;
    sd = hv_state_dict_new(ctx);
    if (!sd) goto done;
    for (k = 0; k < h.n; k++) {
        const hv__st_ent *e = &h.e[k];
        hv_tensor *t;
        int d;
        int64_t s = 1;
        for (d = e->ndim - 1; d >= 0; d--) {
            stride[d] = s;
            s *= e->shape[d]; /* cannot overflow: bytes = product was checked */
        }
        if (memchr(e->name, 0, e->nlen)) {
            hv__src_fail(src, "a tensor name contains a NUL byte");
            goto fail;
        }
        t = hv__ckpt_tensor(ctx, src, e->name, e->et, e->ndim, e->shape, stride, 0, 8 + hlen + e->begin, e->end - e->begin);
        if (!t) goto fail;
        if (hv__sd_put(sd, src->op, e->name, e->nlen, t, 1, 0) != 0) {
            hv_tensor_free(t);
            hv__src_fail(src, "tensor '%s' appears twice in the header", e->name);
            goto fail;
        }
    }
    goto done;
fail:
    hv_state_dict_free(sd);
    sd = NULL;
done:
    hv__free(json);
    hv__st_hdr_free(&h);
    return sd;
}

/* ---- writing safetensors ------------------------------------------------------------------- */

typedef struct hv__sbuf {
    char *p;
    size_t n, cap;
    int oom;
} hv__sbuf;
static void hv__sbuf_put(hv__sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        void *p = hv__grow(b->p, &b->cap, b->n + n + 1, 1);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = (char *)p;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void hv__sbuf_str(hv__sbuf *b, const char *s) { hv__sbuf_put(b, s, strlen(s)); }
static void hv__sbuf_json(hv__sbuf *b, const char *s) { /* a JSON string literal */
    hv__sbuf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            hv__sbuf_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            hv__sbuf_put(b, esc, 6);
        } else {
            hv__sbuf_put(b, (const char *)&c, 1);
        }
    }
    hv__sbuf_put(b, "\"", 1);
}

HVDEF int hv_safetensors_save(const hv_state_dict *sd, const char *path) {
    static const char *op = "hv_safetensors_save";
    hv__sbuf hdr;
    char num[64], *tmpname = NULL;
    unsigned char lenbuf[8], *buf = NULL;
    uint64_t at = 0;
    size_t k, bufcap = 0;
    FILE *f = NULL;
    int ok = 0, d;
    memset(&hdr, 0, sizeof hdr);
    if (!sd || !path) return hv__fail(op, "%s is NULL", !sd ? "sd" : "path"), -1;
    hv__sbuf_str(&hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (k = 0; k < sd->n; k++) {
        const hv_tensor *t = sd->e[k].t;
        uint64_t bytes = (uint64_t)hv_numel(t) * 4;
        if (t->dtype != HV_F32 && t->dtype != HV_I32) {
            hv__fail(op, "'%s': tensor '%s' is neither f32 nor i32", path, sd->e[k].name);
            goto done;
        }
        hv__sbuf_put(&hdr, ",", 1);
        hv__sbuf_json(&hdr, sd->e[k].name);
        hv__sbuf_str(&hdr, t->dtype == HV_F32 ? ":{\"dtype\":\"F32\",\"shape\":[" : ":{\"dtype\":\"I32\",\"shape\":[");
        for (d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            hv__sbuf_str(&hdr, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)(at + bytes));
        hv__sbuf_str(&hdr, num);
        at += bytes;
    }
    hv__sbuf_put(&hdr, "}", 1);
    while (!hdr.oom && (8 + hdr.n) % 8) hv__sbuf_put(&hdr, " ", 1); /* the data starts 8-byte aligned */
    if (hdr.oom) {
        hv__fail(op, "'%s': out of memory for the header", path);
        goto done;
    }
    tmpname = (char *)hv__malloc(strlen(path) + 7);
    if (!tmpname) {
        hv__fail(op, "'%s': out of memory", path);
        goto done;
    }
    snprintf(tmpname, strlen(path) + 7, "%s.hvtmp", path);
    f = fopen(tmpname, "wb");
    if (!f) {
        hv__fail(op, "cannot create '%s': %s", tmpname, strerror(errno));
        goto done;
    }
    hv__wr64(lenbuf, (uint64_t)hdr.n);
    if (fwrite(lenbuf, 1, 8, f) != 8 || fwrite(hdr.p, 1, hdr.n, f) != hdr.n) goto write_error;
    for (k = 0; k < sd->n; k++) {
        const hv_tensor *t = sd->e[k].t;
        size_t n = (size_t)hv_numel(t), i;
        if (hv_is_contiguous(t) && hv__host_le()) {
            if (n && fwrite(t->data, 4, n, f) != n) goto write_error;
            continue;
        }
        if (n * 4 > bufcap) { /* strided (or big-endian host): through a dense copy */
            hv__free(buf);
            bufcap = n * 4;
            buf = (unsigned char *)hv__malloc(bufcap);
            if (!buf) {
                hv__fail(op, "'%s': out of memory", path);
                goto fail;
            }
        }
        hv_tensor_copy_to(t, buf, n * 4);
        if (!hv__host_le())
            for (i = 0; i < n; i++) {
                unsigned char *q = buf + 4 * i, x = q[0], y = q[1];
                q[0] = q[3];
                q[1] = q[2];
                q[2] = y;
                q[3] = x;
            }
        if (n && fwrite(buf, 4, n, f) != n) goto write_error;
    }
    if (fflush(f) != 0) goto write_error;
    if (fclose(f) != 0) {
        f = NULL;
        goto write_error;
    }
    f = NULL;
    if (rename(tmpname, path) != 0) {
#if defined(_WIN32)
        remove(path); /* Windows' rename does not replace: the only non-atomic moment */
        if (rename(tmpname, path) == 0) {
            ok = 1;
            goto done;
        }
#endif
        hv__fail(op, "cannot rename '%s' to '%s': %s", tmpname, path, strerror(errno));
        goto fail;
    }
    ok = 1;
    goto done;
write_error:
    hv__fail(op, "writing '%s' failed: %s", tmpname, strerror(errno));
fail:
    if (f) fclose(f);
    f = NULL;
    remove(tmpname);
done:
    hv__free(hdr.p);
    hv__free(buf);
    hv__free(tmpname);
    return ok ? 0 : -1;
}

/* ---- public loaders ---------------------------------------------------------------------------- */

HVDEF hv_state_dict *hv_safetensors_load(hv_ctx *ctx, const char *path) {
    hv__src s;
    hv_state_dict *sd;
    if (hv__src_open(&s, "hv_safetensors_load", path) != 0) return NULL;
    sd = hv__safetensors_load_src(ctx, &s);
    hv__src_close(&s);
    return sd;
}
HVDEF hv_state_dict *hv_safetensors_load_memory(hv_ctx *ctx, const void *data, size_t size) {
    hv__src s;
    hv__src_memory(&s, "hv_safetensors_load_memory", data, size);
    return hv__safetensors_load_src(ctx, &s);
}
HVDEF hv_state_dict *hv_torch_load(hv_ctx *ctx, const char *path, const char *entry) {
    hv__src s;
    hv_state_dict *sd;
    if (hv__src_open(&s, "hv_torch_load", path) != 0) return NULL;
    sd = hv__torch_load_src(ctx, &s, entry);
    hv__src_close(&s);
    return sd;
}
HVDEF hv_state_dict *hv_torch_load_memory(hv_ctx *ctx, const void *data, size_t size, const char *entry) {
    hv__src s;
    hv__src_memory(&s, "hv_torch_load_memory", data, size);
    return hv__torch_load_src(ctx, &s, entry);
}
HVDEF hv_state_dict *hv_ckpt_load(hv_ctx *ctx, const char *path, const char *entry) {
    hv__src s;
    hv_state_dict *sd;
    unsigned char head[2] = {0, 0};
    if (hv__src_open(&s, "hv_ckpt_load", path) != 0) return NULL;
    if (s.size >= 2 && hv__src_read(&s, 0, head, 2, "the magic number") != 0) {
        hv__src_close(&s);
        return NULL;
    }
    /* zip ("PK") or a legacy pickle (0x80): torch.save; anything else: safetensors */
    if ((head[0] == 'P' && head[1] == 'K') || head[0] == 0x80) sd = hv__torch_load_src(ctx, &s, entry);
    else sd = hv__safetensors_load_src(ctx, &s);
    hv__src_close(&s);
    return sd;
}
/* HV-SECTION checkpoints END */

#endif /* HUMANVIT_IMPLEMENTATION_DONE */
#endif /* HUMANVIT_IMPLEMENTATION */
