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
       9. Implementation: layers and models (transformer block, ViT, MAE)

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

#define HV_MAX_DIMS 6

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
HVDEF hv_tensor *hv_select(hv_tensor *x, int axis, int64_t index); /* x[..., index, ...], that axis dropped */
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
/* fraction of rows whose label has fewer than k strictly larger logits (a tie counts as a hit);
   no grad; NAN and hv_last_error() on bad input */
HVDEF float hv_topk_accuracy(hv_tensor *logits, hv_tensor *labels, int k);
HVDEF hv_tensor *hv_mse_loss(hv_tensor *a, hv_tensor *b);
HVDEF hv_tensor *hv_l1_loss(hv_tensor *a, hv_tensor *b);
/* sum(x * mask) / sum(mask), the mask counted at x's shape: mask broadcasts to x (a (B, N, 1)
   mask on (B, N, D) counts D per entry, so masked_mean(ones, m) == 1) and gets no gradient; a
   mask that sums to 0 is an error */
HVDEF hv_tensor *hv_masked_mean(hv_tensor *x, hv_tensor *mask);

/* ---- models: ViT and MAE (timm / official-MAE layout and parameter names) ------------------- */

/* a model's parameters in registration order, named as in the PyTorch state dict */
typedef struct hv_param_list {
    int count;
    const char *const *names;
    hv_tensor *const *tensors;
} hv_param_list;

typedef enum hv_vit_preset {
    HV_VIT_CUSTOM = 0, /* every size field of the descriptor given */
    HV_VIT_S14,        /* D 384, depth 12, heads 6, 224 px */
    HV_VIT_B14,        /* D 768, depth 12, heads 12 */
    HV_VIT_L14,        /* D 1024, depth 24, heads 16 */
    HV_VIT_H14,        /* D 1280, depth 32, heads 16 */
    HV_VIT_H14_448,    /* ViT-H/14 at 448 px (32 x 32 patches) */
    HV_VIT_H14_476     /* ViT-H/14 at 476 px (34 x 34 patches) */
} hv_vit_preset;

/* zero fields take the preset's value (or the ViT default in brackets) */
typedef struct hv_vit_desc {
    hv_vit_preset preset;
    int img_size, patch_size, in_chans /* [3] */, embed_dim, depth, num_heads;
    float mlp_ratio;   /* [4] */
    float ln_eps;      /* [1e-6] */
    int num_classes;   /* 0: no head, the output is the CLS feature after the final norm */
    int global_pool;   /* mean of the patch tokens then fc_norm, instead of the CLS token */
    int fixed_pos_embed; /* sin-cos table frozen (MAE pretraining); default learnable (finetuning) */
} hv_vit_desc;

typedef struct hv_vit hv_vit;
HVDEF hv_vit *hv_vit_new(hv_ctx *ctx, const hv_vit_desc *desc);
HVDEF void hv_vit_free(hv_vit *vit);
HVDEF hv_vit_desc hv_vit_config(const hv_vit *vit); /* the resolved sizes */
HVDEF const hv_param_list *hv_vit_params(hv_vit *vit);
/* images (B, C, H, W) at img_size -> logits (B, classes), or features (B, D) without a head.
   training: the head's BatchNorm uses batch statistics (else its running statistics). */
HVDEF hv_tensor *hv_vit_forward(hv_vit *vit, hv_tensor *images, int training);
/* the final-norm token sequence (B, 1 + L, D) */
HVDEF hv_tensor *hv_vit_forward_tokens(hv_vit *vit, hv_tensor *images);
HVDEF hv_vit_preset hv_vit_preset_from_name(const char *name); /* "vits14", "vith14@476", ...; 0 if unknown */

/* published humanlike-vits model ids: "<arch>_<fraction>_<seed>", e.g. "vith14@476_1.0_1" */
typedef struct hv_model_id {
    hv_vit_preset preset;
    char arch[16];     /* "vits14" ... "vith14@476" */
    char fraction[16]; /* "1.0", "0.1", "0.01", "0.001", "0.0001" */
    int seed;          /* 1, 2 or 3 (only 1 for fraction 1.0) */
} hv_model_id;
HVDEF int hv_model_id_parse(const char *id, hv_model_id *out); /* 0 or -1 naming what is wrong */
/* the .pth of a published model: <dir>/<sub>/<id>.pth, then <dir>/<id>.pth, where dir is
   models_dir or else $HUMANVIT_MODELS, then the Hugging Face cache
   (<hub>/models--eminorhan--humanlike-vits/snapshots/<revision>/<sub>/<id>.pth with hub from
   $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); sub is <arch> or finetuned_<arch>.
   When absent: -1 and an error naming the file to download and from where. */
HVDEF int hv_model_resolve(const char *id, int finetuned, const char *models_dir, char *path, size_t path_size);

/* the fixed 2-D sin-cos position table of MAE, (1 + grid*grid, dim) with a zero CLS row first,
   written into out (f32, that shape). The first dim/2 columns encode the column (x) index. */
HVDEF int hv_sincos_pos_embed(hv_tensor *out, int grid, int dim);
/* bicubic interpolation of a (1, 1 + g*g, D) table to (1, 1 + n*n, D) keeping the CLS row, as
   the upstream interpolate_pos_embed (align_corners False). A new persistent tensor. */
HVDEF hv_tensor *hv_pos_embed_interpolate(hv_tensor *pos, int new_grid);

typedef struct hv_mae_desc {
    hv_vit_desc encoder;       /* preset or sizes; num_classes and global_pool unused */
    int decoder_embed_dim;     /* [512] */
    int decoder_depth;         /* [8] */
    int decoder_num_heads;     /* [16] */
    float mask_ratio;          /* [0.75]; the humanlike-vits recipe uses 0.8 */
    int norm_pix_loss;         /* normalise each target patch by its mean and unbiased std */
} hv_mae_desc;

typedef struct hv_mae hv_mae;
HVDEF hv_mae *hv_mae_new(hv_ctx *ctx, const hv_mae_desc *desc);
HVDEF void hv_mae_free(hv_mae *mae);
HVDEF const hv_param_list *hv_mae_params(hv_mae *mae); /* encoder keys then decoder keys */
/* MAE loss of a batch (B, C, H, W): per-patch MSE averaged over the masked patches. noise (B, L)
   f32 may be NULL (drawn from the context's RNG); it decides the mask exactly as upstream
   (argsort, keep the int(L (1 - ratio)) smallest). pred (B, L, p*p*C) and mask (B, L) are set
   when the pointers are not NULL (arena tensors). */
HVDEF hv_tensor *hv_mae_forward(hv_mae *mae, hv_tensor *images, hv_tensor *noise, hv_tensor **pred, hv_tensor **mask);
/* images (B, C, H, W) -> (B, L, p*p*C) with patch vectors in (row, column, channel) order, and back */
HVDEF hv_tensor *hv_patchify(hv_tensor *images, int patch);
HVDEF hv_tensor *hv_unpatchify(hv_tensor *patches, int patch, int channels);

/* HV-SECTION api-images BEGIN */
/* HV-SECTION api-images END */

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

static HV__TLS char hv__err[2048];

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
    char name[64];
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
    /* nn kernels. Unless a comment says otherwise every tensor is contiguous; gradient outputs
       (gx, gw, ...) accumulate (+=) and may be NULL where the op needs no gradient. */
    /* y = softmax (is_log 0) or log-softmax (is_log 1) of x seen as (outer, n, inner), along n */
    void (*softmax)(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x, int64_t outer, int64_t n, int64_t inner);
    /* gx += the gradient through y = (log-)softmax(x), from y and gy */
    void (*softmax_bwd)(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy, int64_t outer, int64_t n,
                        int64_t inner);
    /* over the last axis D of x (rows, D): y = (x - mean) * rstd * w + b, w and b (D) or NULL;
       mean and rstd (rows) are saved for the backward */
    void (*layer_norm)(hv_ctx *ctx, hv_tensor *y, hv_tensor *mean, hv_tensor *rstd, const hv_tensor *x, const hv_tensor *w,
                       const hv_tensor *b, float eps);
    void (*layer_norm_bwd)(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *w,
                           const hv_tensor *mean, const hv_tensor *rstd, const hv_tensor *gy);
    /* o (B, H, Nq, d) = softmax(q k^T * scale) v and lse (B, H, Nq), the log-sum-exp of each row of
       scores. q, k, v (B, H, N, d) may have any strides. */
    void (*attention)(hv_ctx *ctx, hv_tensor *o, hv_tensor *lse, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v,
                      float scale);
    /* gradients from go, recomputing the probabilities from lse; delta (B, H, Nq) is scratch.
       q, k, v as in the forward */
    void (*attention_bwd)(hv_ctx *ctx, hv_tensor *gq, hv_tensor *gk, hv_tensor *gv, hv_tensor *delta, const hv_tensor *q,
                          const hv_tensor *k, const hv_tensor *v, const hv_tensor *o, const hv_tensor *lse, const hv_tensor *go,
                          float scale);
    /* dst (outer, k, inner) (+)= src (outer, n, inner) at rows idx (outer, k), i32 in [0, n) */
    void (*gather)(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer,
                   int64_t n, int64_t k, int64_t inner);
    /* dst (outer, n, inner) += src (outer, k, inner) at rows idx (outer, k); repeated rows add */
    void (*scatter_add)(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                        int64_t k, int64_t inner);
    /* loss (scalar) = mean over rows of lse - logits[label]; lse (N) saved, row_loss (N) scratch.
       logits (N, C), labels i32 (N) in [0, C) */
    /* lse (N, 2): per row the max and the log of the sum of exp(x - max) */
    void (*cross_entropy)(hv_ctx *ctx, hv_tensor *loss, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits,
                          const hv_tensor *labels);
    /* glogits += gloss / N * (softmax - onehot) */
    void (*cross_entropy_bwd)(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                              const hv_tensor *lse, const hv_tensor *gloss);
    /* rows whose label is among the top k: fewer than k classes have a strictly larger logit */
    int64_t (*topk_correct)(hv_ctx *ctx, const hv_tensor *logits, const hv_tensor *labels, int k);
    /* loss (scalar) = mean of (a - b)^2 (HV__LOSS_MSE) or |a - b| (HV__LOSS_L1); a, b same shape */
    void (*diff_loss)(hv_ctx *ctx, int mode, hv_tensor *loss, const hv_tensor *a, const hv_tensor *b);
    void (*diff_loss_bwd)(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                          const hv_tensor *gloss);
    /* HV-SECTION backend-nn-fields END */
    /* HV-SECTION backend-conv-fields BEGIN */
    /* All conv-family kernels take contiguous NCHW tensors and *accumulate* (+=) into gradients.
       conv geometry g[7] = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups};
       pool geometry g[7] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_exclude_pad}
       (both already validated, no zeros). */
    /* y (N, Cout, OH, OW) = x (N, Cin, H, W) conv w (Cout, Cin/groups, KH, KW) + b (Cout) or NULL */
    void (*conv2d)(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g);
    /* gx (N, Cin, H, W) += dL/dx from gy (N, Cout, OH, OW) */
    void (*conv2d_bwd_data)(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g);
    /* gw += dL/dw and gb += dL/db; either may be NULL */
    void (*conv2d_bwd_weight)(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy, const int64_t *g);
    /* y = window max; argmax (i32, y's shape, or NULL) = the max's index h * W + w in its plane */
    void (*max_pool2d)(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g);
    void (*max_pool2d_bwd)(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *argmax);
    void (*avg_pool2d)(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g);
    void (*avg_pool2d_bwd)(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const int64_t *g);
    /* y (N, C, OH, OW) bilinear from x (N, C, H, W), torch interpolate semantics */
    void (*resize_bilinear)(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, int align_corners);
    void (*resize_bilinear_bwd)(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, int align_corners);
    /* batch norm on x (N, C, ...): per channel batch mean and biased variance (C) */
    void (*batch_norm_stats)(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x);
    /* run = (1 - momentum) run + momentum stat, with var scaled by unbias (M / (M - 1)) first */
    void (*batch_norm_running)(hv_ctx *ctx, hv_tensor *run_mean, hv_tensor *run_var, const hv_tensor *mean,
                               const hv_tensor *var, float momentum, float unbias);
    /* y = (x - mean) / sqrt(var + eps) * w + b; w, b (C) or NULL */
    void (*batch_norm)(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var,
                       const hv_tensor *w, const hv_tensor *b, float eps);
    /* gx, gw, gb (each may be NULL) += the gradients of batch_norm; batch_stats: mean and var were
       the batch's own (the gradient flows through them), else constants (eval) */
    void (*batch_norm_bwd)(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                           const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats);
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
    size_t i;
    if (!t) return;
    for (i = 0; name && name[i] && i + 1 < sizeof t->name; i++) t->name[i] = name[i];
    t->name[i] = 0; /* long names are cut, not refused: they only label messages */
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

/* the view of x at one index of an axis, that axis removed */
static hv_tensor *hv__select_view(hv_tensor *x, int axis, int64_t index) {
    int64_t shape[HV_MAX_DIMS], stride[HV_MAX_DIMS];
    int i, n = 0;
    for (i = 0; i < x->ndim; i++)
        if (i != axis) {
            shape[n] = x->shape[i];
            stride[n++] = x->stride[i];
        }
    return hv__view(x, n, shape, stride, index * x->stride[axis]);
}
static void hv__select_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx, *gv;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    gv = hv__select_view(gx, (int)out->ip[0], out->ip[1]);
    if (gv) x->ctx->be->copy(x->ctx, gv, out->grad, 1);
}
HVDEF hv_tensor *hv_select(hv_tensor *x, int axis, int64_t index) {
    int a;
    hv_tensor *v;
    HV__CHECK_IN(x);
    if (hv__norm_axis(x, axis, &a, "hv_select")) return NULL;
    if (index < 0) index += x->shape[a];
    if (index < 0 || index >= x->shape[a])
        return (hv_tensor *)hv__fail("hv_select", "index %lld is out of range for axis %d of %s", (long long)index, a, hv__desc("x", x));
    v = hv__select_view(x, a, index);
    if (!v) return NULL;
    v->ip[0] = a;
    v->ip[1] = index;
    return HV__RECORD1(v, "select", hv__select_bwd, x);
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

enum { HV__LOSS_MSE, HV__LOSS_L1 }; /* modes of the diff_loss kernels */

/* a 0-dim arena tensor: the result of a loss */
static hv_tensor *hv__new_scalar(hv_ctx *ctx) {
    int64_t unused = 1;
    return hv__new(ctx, 0, &unused);
}
/* x seen as (outer, n, inner) around axis a */
static void hv__split_axis(const hv_tensor *x, int a, int64_t *outer, int64_t *n, int64_t *inner) {
    int i;
    *outer = 1;
    *inner = 1;
    for (i = 0; i < a; i++) *outer *= x->shape[i];
    for (i = a + 1; i < x->ndim; i++) *inner *= x->shape[i];
    *n = x->shape[a];
}
/* every value of the contiguous i32 tensor idx lies in [0, n); the error names the position, the
   value and the tensor the values index (target) */
static int hv__check_index_range(const char *op, const char *role, const hv_tensor *idx, int64_t n, const char *target) {
    const int32_t *p = (const int32_t *)idx->data;
    int64_t i, m = hv_numel(idx);
    for (i = 0; i < m; i++)
        if (p[i] < 0 || p[i] >= n) {
            char pos[HV_MAX_DIMS * 24];
            int64_t rem = i, coord[HV_MAX_DIMS];
            int d, len = 0;
            for (d = idx->ndim - 1; d >= 0; d--) {
                coord[d] = rem % idx->shape[d];
                rem /= idx->shape[d];
            }
            pos[0] = 0;
            for (d = 0; d < idx->ndim; d++) len += snprintf(pos + len, sizeof pos - (size_t)len, d ? ", %lld" : "%lld", (long long)coord[d]);
            hv__fail(op, "%s[%s] = %d is out of range [0, %lld) for %s", role, pos, (int)p[i], (long long)n, target);
            return -1;
        }
    return 0;
}
static int hv__check_i32(const hv_tensor *t, const char *op, const char *role) {
    if (t->dtype != HV_I32) {
        hv__fail(op, "%s must be i32", hv__desc(role, t));
        return -1;
    }
    return 0;
}

/* ---- softmax, log-softmax ------------------------------------------------------------------- */

static void hv__softmax_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->softmax_bwd(out->ctx, (int)out->ip[0], gx, out, out->grad, out->ip[1], out->ip[2], out->ip[3]);
}
static hv_tensor *hv__softmax(hv_tensor *x, int axis, int is_log, const char *name) {
    int a;
    int64_t outer, n, inner;
    hv_tensor *y;
    HV__CHECK_IN(x);
    if (hv__check_f32(x, name, "x") || hv__norm_axis(x, axis, &a, name)) return NULL;
    x = hv_contiguous(x); /* the kernel walks x as (outer, n, inner) */
    if (!x || !(y = hv__new_like(x))) return NULL;
    hv__split_axis(x, a, &outer, &n, &inner);
    x->ctx->be->softmax(x->ctx, is_log, y, x, outer, n, inner);
    y->ip[0] = is_log;
    y->ip[1] = outer;
    y->ip[2] = n;
    y->ip[3] = inner;
    return HV__RECORD1(y, name + 3, hv__softmax_bwd, x);
}
HVDEF hv_tensor *hv_softmax(hv_tensor *x, int axis) { return hv__softmax(x, axis, 0, "hv_softmax"); }
HVDEF hv_tensor *hv_log_softmax(hv_tensor *x, int axis) { return hv__softmax(x, axis, 1, "hv_log_softmax"); }

/* ---- layer norm: fused, saves mean and rstd (rows) for the backward ------------------------- */

static void hv__layer_norm_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *w = out->in[1], *b = out->in[2], *gx = NULL, *gw = NULL, *gb = NULL;
    if (hv__needs_grad(x) && !(gx = hv__grad_buf(x))) return;
    if (hv__needs_grad(w) && !(gw = hv__grad_buf(w))) return;
    if (hv__needs_grad(b) && !(gb = hv__grad_buf(b))) return;
    out->ctx->be->layer_norm_bwd(out->ctx, gx, gw, gb, x, w, out->saved[0], out->saved[1], out->grad);
}
/* weight or bias of a norm over D features: NULL, or f32 (D) */
static int hv__check_affine(const hv_tensor *p, const hv_tensor *x, int64_t D, const char *op, const char *role) {
    if (!p) return 0;
    if (hv__check_f32(p, op, role) || hv__same_ctx(x, p, op)) return -1;
    if (p->ndim != 1 || p->shape[0] != D) {
        hv__fail(op, "%s must be (%lld) to match the last axis of %s", hv__desc(role, p), (long long)D, hv__desc("x", x));
        return -1;
    }
    return 0;
}
HVDEF hv_tensor *hv_layer_norm(hv_tensor *x, hv_tensor *weight, hv_tensor *bias, float eps) {
    int64_t D, rows;
    hv_tensor *y, *mean, *rstd, *in[3];
    HV__CHECK_IN(x);
    if (hv__check_f32(x, "hv_layer_norm", "x")) return NULL;
    if (x->ndim < 1 || x->shape[x->ndim - 1] == 0)
        return (hv_tensor *)hv__fail("hv_layer_norm", "%s needs a non-empty last axis to normalise over", hv__desc("x", x));
    D = x->shape[x->ndim - 1];
    if (hv__check_affine(weight, x, D, "hv_layer_norm", "weight") || hv__check_affine(bias, x, D, "hv_layer_norm", "bias")) return NULL;
    if (!(eps >= 0.0f && eps < INFINITY))
        return (hv_tensor *)hv__fail("hv_layer_norm", "eps must be a finite number >= 0, got %g", (double)eps);
    x = hv_contiguous(x);
    if (!x || (weight && !(weight = hv_contiguous(weight))) || (bias && !(bias = hv_contiguous(bias)))) return NULL;
    rows = hv_numel(x) / D;
    y = hv__new_like(x);
    mean = y ? hv__new(x->ctx, 1, &rows) : NULL;
    rstd = mean ? hv__new(x->ctx, 1, &rows) : NULL;
    if (!rstd) return NULL;
    x->ctx->be->layer_norm(x->ctx, y, mean, rstd, x, weight, bias, eps);
    y->saved[0] = mean;
    y->saved[1] = rstd;
    in[0] = x;
    in[1] = weight;
    in[2] = bias;
    return hv__record(y, "layer_norm", hv__layer_norm_bwd, 3, in);
}

/* ---- fused attention: forward saves lse (B, H, Nq), backward recomputes the probabilities ----- */

static void hv__attention_bwd(hv_tensor *out) {
    hv_tensor *q = out->in[0], *k = out->in[1], *v = out->in[2], *gq = NULL, *gk = NULL, *gv = NULL, *delta;
    if (hv__needs_grad(q) && !(gq = hv__grad_buf(q))) return;
    if (hv__needs_grad(k) && !(gk = hv__grad_buf(k))) return;
    if (hv__needs_grad(v) && !(gv = hv__grad_buf(v))) return;
    delta = hv__new(out->ctx, 3, out->shape); /* (B, H, Nq) */
    if (!delta) return;
    out->ctx->be->attention_bwd(out->ctx, gq, gk, gv, delta, q, k, v, out, out->saved[0], out->grad, (float)out->fp[0]);
}
HVDEF hv_tensor *hv_attention(hv_tensor *q, hv_tensor *k, hv_tensor *v, float scale) {
    hv_tensor *o, *lse, *in[3];
    int i;
    HV__CHECK_IN(q);
    HV__CHECK_IN(k);
    HV__CHECK_IN(v);
    if (hv__check_f32(q, "hv_attention", "q") || hv__check_f32(k, "hv_attention", "k") || hv__check_f32(v, "hv_attention", "v") ||
        hv__same_ctx(q, k, "hv_attention") || hv__same_ctx(q, v, "hv_attention"))
        return NULL;
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return (hv_tensor *)hv__fail("hv_attention", "wants 4-d q (B, H, Nq, d), k and v (B, H, Nk, d); got %s, %s, %s", hv__desc("q", q),
                                     hv__desc("k", k), hv__desc("v", v));
    for (i = 0; i < 4; i++)
        if (k->shape[i] != v->shape[i] || (i != 2 && q->shape[i] != k->shape[i]))
            return (hv_tensor *)hv__fail("hv_attention", "shapes do not fit: want q (B, H, Nq, d), k and v (B, H, Nk, d); got %s, %s, %s",
                                         hv__desc("q", q), hv__desc("k", k), hv__desc("v", v));
    if (k->shape[2] == 0 || q->shape[3] == 0)
        return (hv_tensor *)hv__fail("hv_attention", "needs at least one key and d > 0; got %s, %s", hv__desc("q", q), hv__desc("k", k));
    if (!(scale > 0)) scale = (float)(1.0 / sqrt((double)q->shape[3]));
    o = hv__new(q->ctx, 4, q->shape);     /* (B, H, Nq, d) */
    lse = o ? hv__new(q->ctx, 3, q->shape) : NULL; /* (B, H, Nq) */
    if (!lse) return NULL;
    q->ctx->be->attention(q->ctx, o, lse, q, k, v, scale);
    o->saved[0] = lse;
    o->fp[0] = scale;
    in[0] = q;
    in[1] = k;
    in[2] = v;
    return hv__record(o, "attention", hv__attention_bwd, 3, in);
}

/* ---- gather and scatter along an axis ------------------------------------------------------- */

/* common checks: x f32, idx i32 of shape x[:axis] + (K,), where K is idx's last extent and, for
   scatter, must equal x's extent along axis. Returns idx made contiguous, or NULL. */
static hv_tensor *hv__index_args(hv_tensor *x, int axis, hv_tensor *idx, int scatter, int *a, const char *op) {
    int i;
    if (hv__check_f32(x, op, "x") || hv__check_i32(idx, op, "idx") || hv__same_ctx(x, idx, op) || hv__norm_axis(x, axis, a, op))
        return NULL;
    for (i = 0; i < *a && idx->ndim == *a + 1; i++)
        if (idx->shape[i] != x->shape[i]) break;
    if (idx->ndim != *a + 1 || i < *a || (scatter && idx->shape[*a] != x->shape[*a]))
        return (hv_tensor *)hv__fail(op, "%s must have the shape of the axes 0..%d of %s%s", hv__desc("idx", idx), *a, hv__desc("x", x),
                                     scatter ? "" : " except the last (the number of picks)");
    return hv_contiguous(idx);
}
static void hv__gather_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->scatter_add(out->ctx, gx, out->grad, out->saved[0], out->ip[0], out->ip[1], out->ip[2], out->ip[3]);
}
HVDEF hv_tensor *hv_gather(hv_tensor *x, int axis, hv_tensor *idx) {
    int a;
    int64_t outer, n, inner, shape[HV_MAX_DIMS];
    hv_tensor *out;
    HV__CHECK_IN(x);
    HV__CHECK_IN(idx);
    if (!(idx = hv__index_args(x, axis, idx, 0, &a, "hv_gather"))) return NULL;
    if (hv__check_index_range("hv_gather", "idx", idx, x->shape[a], hv__desc("x", x))) return NULL;
    x = hv_contiguous(x);
    if (!x) return NULL;
    hv__split_axis(x, a, &outer, &n, &inner);
    memcpy(shape, x->shape, sizeof shape);
    shape[a] = idx->shape[a];
    out = hv__new(x->ctx, x->ndim, shape); /* x's shape with K along axis */
    if (!out) return NULL;
    x->ctx->be->gather(x->ctx, 0, out, x, idx, outer, n, shape[a], inner);
    out->saved[0] = idx;
    out->ip[0] = outer;
    out->ip[1] = n;
    out->ip[2] = shape[a];
    out->ip[3] = inner;
    return HV__RECORD1(out, "gather", hv__gather_bwd, x);
}
static void hv__scatter_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->gather(out->ctx, 1, gx, out->grad, out->saved[0], out->ip[0], out->ip[1], out->ip[2], out->ip[3]);
}
HVDEF hv_tensor *hv_scatter(hv_tensor *x, int axis, hv_tensor *idx, int64_t n) {
    int a;
    int64_t outer, k, inner, shape[HV_MAX_DIMS];
    hv_tensor *out;
    HV__CHECK_IN(x);
    HV__CHECK_IN(idx);
    if (!(idx = hv__index_args(x, axis, idx, 1, &a, "hv_scatter"))) return NULL;
    if (n < 0) return (hv_tensor *)hv__fail("hv_scatter", "n must be >= 0, got %lld (scattering %s)", (long long)n, hv__desc("x", x));
    memcpy(shape, x->shape, sizeof shape);
    shape[a] = n;
    {
        hv_tensor target; /* only to name the result's shape in an error */
        char desc[128];
        target = *x;
        target.shape[a] = n;
        snprintf(desc, sizeof desc, "the result %s", hv__shape_str(&target));
        if (hv__check_index_range("hv_scatter", "idx", idx, n, desc)) return NULL;
    }
    x = hv_contiguous(x);
    if (!x) return NULL;
    hv__split_axis(x, a, &outer, &k, &inner);
    out = hv__new(x->ctx, x->ndim, shape); /* zeros: x's shape with n along axis */
    if (!out) return NULL;
    x->ctx->be->scatter_add(x->ctx, out, x, idx, outer, n, k, inner);
    out->saved[0] = idx;
    out->ip[0] = outer;
    out->ip[1] = n;
    out->ip[2] = k;
    out->ip[3] = inner;
    return HV__RECORD1(out, "scatter", hv__scatter_bwd, x);
}

/* ---- classification: cross-entropy and top-k accuracy --------------------------------------- */

/* logits f32 (N, C) with N, C > 0 and labels i32 (N) in [0, C); labels returned contiguous */
static hv_tensor *hv__class_args(hv_tensor *logits, hv_tensor *labels, const char *op) {
    if (hv__check_f32(logits, op, "logits") || hv__check_i32(labels, op, "labels") || hv__same_ctx(logits, labels, op)) return NULL;
    if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0])
        return (hv_tensor *)hv__fail(op, "wants logits (N, C) and labels (N); got %s, %s", hv__desc("logits", logits),
                                     hv__desc("labels", labels));
    if (logits->shape[0] == 0 || logits->shape[1] == 0)
        return (hv_tensor *)hv__fail(op, "%s has no rows or no classes", hv__desc("logits", logits));
    labels = hv_contiguous(labels);
    if (labels && hv__check_index_range(op, "labels", labels, logits->shape[1], hv__desc("logits", logits))) return NULL;
    return labels;
}
static void hv__cross_entropy_bwd(hv_tensor *out) {
    hv_tensor *logits = out->in[0], *gl;
    if (!hv__needs_grad(logits) || !(gl = hv__grad_buf(logits))) return;
    out->ctx->be->cross_entropy_bwd(out->ctx, gl, logits, out->saved[1], out->saved[0], out->grad);
}
HVDEF hv_tensor *hv_cross_entropy(hv_tensor *logits, hv_tensor *labels) {
    hv_tensor *loss, *lse, *row_loss;
    HV__CHECK_IN(logits);
    HV__CHECK_IN(labels);
    if (!(labels = hv__class_args(logits, labels, "hv_cross_entropy"))) return NULL;
    logits = hv_contiguous(logits);
    if (!logits) return NULL;
    loss = hv__new_scalar(logits->ctx);
    /* (N, 2): each row's max and log-sum-exp below it, kept apart so that the backward's
       exp((x - max) - log s) stays exact for large logits */
    {
        int64_t s2[2];
        s2[0] = logits->shape[0];
        s2[1] = 2;
        lse = loss ? hv__new(logits->ctx, 2, s2) : NULL;
    }
    row_loss = lse ? hv__new(logits->ctx, 1, logits->shape) : NULL; /* (N) */
    if (!row_loss) return NULL;
    logits->ctx->be->cross_entropy(logits->ctx, loss, lse, row_loss, logits, labels);
    loss->saved[0] = lse;
    loss->saved[1] = labels;
    return HV__RECORD1(loss, "cross_entropy", hv__cross_entropy_bwd, logits);
}
HVDEF float hv_topk_accuracy(hv_tensor *logits, hv_tensor *labels, int k) {
    int64_t correct;
    if (!logits || !labels) return NAN; /* keep the error of the op that failed */
    if (!(labels = hv__class_args(logits, labels, "hv_topk_accuracy"))) return NAN;
    if (k < 1 || k > logits->shape[1]) {
        hv__fail("hv_topk_accuracy", "k = %d must be in [1, %lld] for %s", k, (long long)logits->shape[1], hv__desc("logits", logits));
        return NAN;
    }
    if (!(logits = hv_contiguous(logits))) return NAN;
    correct = logits->ctx->be->topk_correct(logits->ctx, logits, labels, k);
    return (float)((double)correct / (double)logits->shape[0]);
}

/* ---- regression losses ---------------------------------------------------------------------- */

static void hv__diff_loss_bwd(hv_tensor *out) {
    hv_tensor *a = out->in[0], *b = out->in[1], *ga = NULL, *gb = NULL;
    if (hv__needs_grad(a) && !(ga = hv__grad_buf(a))) return;
    if (hv__needs_grad(b) && !(gb = hv__grad_buf(b))) return;
    out->ctx->be->diff_loss_bwd(out->ctx, (int)out->ip[0], ga, gb, a, b, out->grad);
}
/* fused mean of an elementwise function of a - b: no (a - b) tensor is kept for the backward */
static hv_tensor *hv__diff_loss(int mode, hv_tensor *a, hv_tensor *b, const char *name) {
    hv_tensor *loss, *in[2];
    int i, same;
    HV__CHECK_IN(a);
    HV__CHECK_IN(b);
    if (hv__check_f32(a, name, "a") || hv__check_f32(b, name, "b") || hv__same_ctx(a, b, name)) return NULL;
    same = a->ndim == b->ndim;
    for (i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
    if (!same) return (hv_tensor *)hv__fail(name, "%s and %s must have the same shape", hv__desc("a", a), hv__desc("b", b));
    if (hv_numel(a) == 0) return (hv_tensor *)hv__fail(name, "mean over no elements of %s", hv__desc("a", a));
    a = hv_contiguous(a);
    b = a ? hv_contiguous(b) : NULL;
    loss = b ? hv__new_scalar(a->ctx) : NULL;
    if (!loss) return NULL;
    a->ctx->be->diff_loss(a->ctx, mode, loss, a, b);
    loss->ip[0] = mode;
    in[0] = a;
    in[1] = b;
    return hv__record(loss, name + 3, hv__diff_loss_bwd, 2, in);
}
HVDEF hv_tensor *hv_mse_loss(hv_tensor *a, hv_tensor *b) { return hv__diff_loss(HV__LOSS_MSE, a, b, "hv_mse_loss"); }
HVDEF hv_tensor *hv_l1_loss(hv_tensor *a, hv_tensor *b) { return hv__diff_loss(HV__LOSS_L1, a, b, "hv_l1_loss"); }

/* composite: sum(x * mask) scaled by 1 / (sum of the mask expanded to x's shape). The mask is
   detached, and its sum is read once here to refuse an all-zero mask. */
HVDEF hv_tensor *hv_masked_mean(hv_tensor *x, hv_tensor *mask) {
    int64_t shape[HV_MAX_DIMS];
    int ndim, i, prev;
    double den;
    hv_tensor *msum;
    HV__CHECK_IN(x);
    HV__CHECK_IN(mask);
    if (hv__check_f32(x, "hv_masked_mean", "x") || hv__check_f32(mask, "hv_masked_mean", "mask") ||
        hv__same_ctx(x, mask, "hv_masked_mean") || hv__broadcast(x, mask, &ndim, shape, "hv_masked_mean"))
        return NULL;
    for (i = 0; i < ndim && ndim == x->ndim; i++)
        if (shape[i] != x->shape[i]) break;
    if (ndim != x->ndim || i < ndim)
        return (hv_tensor *)hv__fail("hv_masked_mean", "%s must broadcast to %s, not widen it", hv__desc("mask", mask), hv__desc("x", x));
    prev = hv_set_grad_enabled(x->ctx, 0);
    msum = hv_sum(mask, 0, NULL, 0);
    hv_set_grad_enabled(x->ctx, prev);
    if (!msum) return NULL;
    den = (double)hv_item(msum);
    if (hv_numel(mask)) den *= (double)hv_numel(x) / (double)hv_numel(mask); /* each mask value covers this many x values */
    if (!(den != 0))
        return (hv_tensor *)hv__fail("hv_masked_mean", "%s sums to %g: nothing to average over %s", hv__desc("mask", mask), den,
                                     hv__desc("x", x));
    return hv_scale(hv_sum(hv_mul(x, hv_detach(mask)), 0, NULL, 0), (float)(1.0 / den));
}
/* HV-SECTION nn-ops END */

/* ---- ops of the convolutional networks: conv, pooling, batch norm, resize ------------------- */
/* HV-SECTION conv-ops BEGIN */

/* positions in the geometry arrays that the ops keep in out->ip and pass to the kernels */
enum { HV__CG_SH, HV__CG_SW, HV__CG_PH, HV__CG_PW, HV__CG_DH, HV__CG_DW, HV__CG_GROUPS };
enum { HV__PG_KH, HV__PG_KW, HV__PG_SH, HV__PG_SW, HV__PG_PH, HV__PG_PW, HV__PG_EXCL };

static int hv__check_nchw(const hv_tensor *t, const char *op, const char *role) {
    if (hv__check_f32(t, op, role)) return -1;
    if (t->ndim != 4) {
        hv__fail(op, "%s must be 4-D (N, C, H, W)", hv__desc(role, t));
        return -1;
    }
    return 0;
}
/* a (C) per-channel tensor: f32, 1-D, C long, same context as x */
static int hv__check_channels(const hv_tensor *t, const hv_tensor *x, int64_t c, const char *op, const char *role) {
    if (!t) return 0;
    if (hv__check_f32(t, op, role) || hv__same_ctx(x, t, op)) return -1;
    if (t->ndim != 1 || t->shape[0] != c) {
        hv__fail(op, "%s does not fit %s: want (%lld)", hv__desc(role, t), hv__desc("x", x), (long long)c);
        return -1;
    }
    return 0;
}
/* extent of a sliding window's output: floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1, 0 when
   the (dilated) window is larger than the padded input */
static int64_t hv__window_out(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

/* ---- conv2d --------------------------------------------------------------------------------- */

static void hv__conv2d_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *w = out->in[1], *b = out->in[2], *gx, *gw = NULL, *gb = NULL;
    hv_ctx *ctx = out->ctx;
    if (hv__needs_grad(x) && (gx = hv__grad_buf(x)) != NULL) ctx->be->conv2d_bwd_data(ctx, gx, out->grad, w, out->ip);
    if (hv__needs_grad(w)) gw = hv__grad_buf(w);
    if (hv__needs_grad(b)) gb = hv__grad_buf(b);
    if (gw || gb) ctx->be->conv2d_bwd_weight(ctx, gw, gb, x, out->grad, out->ip);
}
HVDEF hv_tensor *hv_conv2d(hv_tensor *x, hv_tensor *w, hv_tensor *b, const hv_conv2d_desc *desc) {
    static const char *op = "hv_conv2d";
    hv_conv2d_desc d;
    int64_t g[7], shape[4], cin, cout, groups, kh_eff, kw_eff;
    hv_tensor *y, *in[3];
    int i, has_b = b != NULL;
    HV__CHECK_IN(x);
    HV__CHECK_IN(w);
    memset(&d, 0, sizeof d);
    if (desc) d = *desc;
    if (hv__check_nchw(x, op, "x") || hv__check_f32(w, op, "weight") || hv__same_ctx(x, w, op)) return NULL;
    if (w->ndim != 4)
        return (hv_tensor *)hv__fail(op, "%s must be 4-D (Cout, Cin/groups, KH, KW) for %s", hv__desc("weight", w), hv__desc("x", x));
    if (d.stride_h < 0 || d.stride_w < 0 || d.dilation_h < 0 || d.dilation_w < 0 || d.groups < 0)
        return (hv_tensor *)hv__fail(op, "stride (%d, %d), dilation (%d, %d) and groups %d must be positive (0 means 1) for %s", d.stride_h,
                                     d.stride_w, d.dilation_h, d.dilation_w, d.groups, hv__desc("x", x));
    if (d.pad_h < 0 || d.pad_w < 0)
        return (hv_tensor *)hv__fail(op, "padding (%d, %d) must be >= 0 for %s", d.pad_h, d.pad_w, hv__desc("x", x));
    g[HV__CG_SH] = d.stride_h ? d.stride_h : 1;
    g[HV__CG_SW] = d.stride_w ? d.stride_w : 1;
    g[HV__CG_PH] = d.pad_h;
    g[HV__CG_PW] = d.pad_w;
    g[HV__CG_DH] = d.dilation_h ? d.dilation_h : 1;
    g[HV__CG_DW] = d.dilation_w ? d.dilation_w : 1;
    g[HV__CG_GROUPS] = groups = d.groups ? d.groups : 1;
    cin = x->shape[1];
    cout = w->shape[0];
    if (cin % groups || cout % groups)
        return (hv_tensor *)hv__fail(op, "%s has %lld input channels and %s %lld output channels: both must be divisible by groups %lld",
                                     hv__desc("x", x), (long long)cin, hv__desc("weight", w), (long long)cout, (long long)groups);
    if (w->shape[1] != cin / groups)
        return (hv_tensor *)hv__fail(op, "%s does not fit %s with groups %lld: want weight (Cout, %lld, KH, KW)", hv__desc("weight", w),
                                     hv__desc("x", x), (long long)groups, (long long)(cin / groups));
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return (hv_tensor *)hv__fail(op, "%s has an empty kernel", hv__desc("weight", w));
    if (b && (hv__check_f32(b, op, "bias") || hv__same_ctx(x, b, op))) return NULL;
    if (b && (b->ndim != 1 || b->shape[0] != cout))
        return (hv_tensor *)hv__fail(op, "%s does not fit %s: want bias (%lld)", hv__desc("bias", b), hv__desc("weight", w), (long long)cout);
    kh_eff = g[HV__CG_DH] * (w->shape[2] - 1) + 1;
    kw_eff = g[HV__CG_DW] * (w->shape[3] - 1) + 1;
    if (kh_eff > x->shape[2] + 2 * g[HV__CG_PH] || kw_eff > x->shape[3] + 2 * g[HV__CG_PW])
        return (hv_tensor *)hv__fail(op, "the kernel of %s (%lld x %lld with dilation) is larger than %s padded by (%lld, %lld): no output",
                                     hv__desc("weight", w), (long long)kh_eff, (long long)kw_eff, hv__desc("x", x), (long long)g[HV__CG_PH],
                                     (long long)g[HV__CG_PW]);
    shape[0] = x->shape[0];
    shape[1] = cout;
    shape[2] = hv__window_out(x->shape[2], w->shape[2], g[HV__CG_SH], g[HV__CG_PH], g[HV__CG_DH]);
    shape[3] = hv__window_out(x->shape[3], w->shape[3], g[HV__CG_SW], g[HV__CG_PW], g[HV__CG_DW]);
    /* the kernels read dense NCHW; a strided input becomes a recorded copy, so grads still flow */
    x = hv_contiguous(x);
    w = hv_contiguous(w);
    b = b ? hv_contiguous(b) : NULL;
    if (!x || !w || (has_b && !b)) return NULL;
    y = hv__new(x->ctx, 4, shape);
    if (!y) return NULL;
    for (i = 0; i < 7; i++) y->ip[i] = g[i];
    x->ctx->be->conv2d(x->ctx, y, x, w, b, y->ip);
    in[0] = x;
    in[1] = w;
    in[2] = b;
    return hv__record(y, "conv2d", hv__conv2d_bwd, 3, in);
}

/* ---- pooling -------------------------------------------------------------------------------- */

/* checks x and desc; fills the pool geometry g (stride 0 -> kernel) and the output shape */
static int hv__pool_geometry(const hv_tensor *x, const hv_pool2d_desc *desc, const char *op, int64_t *g, int64_t *shape) {
    if (hv__check_nchw(x, op, "x")) return -1;
    if (!desc) {
        hv__fail(op, "needs a descriptor with the kernel size for %s", hv__desc("x", x));
        return -1;
    }
    if (desc->kernel_h < 1 || desc->kernel_w < 1 || desc->stride_h < 0 || desc->stride_w < 0 || desc->pad_h < 0 || desc->pad_w < 0) {
        hv__fail(op, "kernel (%d, %d) must be positive, stride (%d, %d) and padding (%d, %d) >= 0, for %s", desc->kernel_h,
                 desc->kernel_w, desc->stride_h, desc->stride_w, desc->pad_h, desc->pad_w, hv__desc("x", x));
        return -1;
    }
    /* PyTorch's rule; it also keeps every window over at least one real element */
    if (desc->pad_h > desc->kernel_h / 2 || desc->pad_w > desc->kernel_w / 2) {
        hv__fail(op, "padding (%d, %d) must be at most half the kernel (%d, %d), for %s", desc->pad_h, desc->pad_w, desc->kernel_h,
                 desc->kernel_w, hv__desc("x", x));
        return -1;
    }
    g[HV__PG_KH] = desc->kernel_h;
    g[HV__PG_KW] = desc->kernel_w;
    g[HV__PG_SH] = desc->stride_h ? desc->stride_h : desc->kernel_h;
    g[HV__PG_SW] = desc->stride_w ? desc->stride_w : desc->kernel_w;
    g[HV__PG_PH] = desc->pad_h;
    g[HV__PG_PW] = desc->pad_w;
    g[HV__PG_EXCL] = desc->count_exclude_pad ? 1 : 0;
    shape[0] = x->shape[0];
    shape[1] = x->shape[1];
    shape[2] = hv__window_out(x->shape[2], g[HV__PG_KH], g[HV__PG_SH], g[HV__PG_PH], 1);
    shape[3] = hv__window_out(x->shape[3], g[HV__PG_KW], g[HV__PG_SW], g[HV__PG_PW], 1);
    if (shape[2] < 1 || shape[3] < 1) {
        hv__fail(op, "kernel (%d, %d) is larger than %s padded by (%d, %d): no output", desc->kernel_h, desc->kernel_w,
                 hv__desc("x", x), desc->pad_h, desc->pad_w);
        return -1;
    }
    return 0;
}

static void hv__max_pool2d_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x)) || !out->saved[0]) return;
    out->ctx->be->max_pool2d_bwd(out->ctx, gx, out->grad, out->saved[0]);
}
/* the checked pool's output tensor, geometry in its ip[]; *x becomes the contiguous input */
static hv_tensor *hv__pool_out(hv_tensor **x, const hv_pool2d_desc *desc, const char *op) {
    int64_t g[7], shape[4];
    hv_tensor *y;
    int i;
    HV__CHECK_IN(*x);
    if (hv__pool_geometry(*x, desc, op, g, shape) || !(*x = hv_contiguous(*x))) return NULL;
    y = hv__new((*x)->ctx, 4, shape);
    if (y)
        for (i = 0; i < 7; i++) y->ip[i] = g[i];
    return y;
}
HVDEF hv_tensor *hv_max_pool2d(hv_tensor *x, const hv_pool2d_desc *desc) {
    hv_tensor *y = hv__pool_out(&x, desc, "hv_max_pool2d"), *argmax = NULL;
    if (!y) return NULL;
    /* where each max came from, kept only when a backward will route gradients through it */
    if (x->ctx->grad_enabled && x->requires_grad && !(argmax = hv__alloc(x->ctx, HV_I32, 4, y->shape, 0))) return NULL;
    x->ctx->be->max_pool2d(x->ctx, y, argmax, x, y->ip);
    y->saved[0] = argmax;
    return HV__RECORD1(y, "max_pool2d", hv__max_pool2d_bwd, x);
}

static void hv__avg_pool2d_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->avg_pool2d_bwd(out->ctx, gx, out->grad, out->ip);
}
HVDEF hv_tensor *hv_avg_pool2d(hv_tensor *x, const hv_pool2d_desc *desc) {
    hv_tensor *y = hv__pool_out(&x, desc, "hv_avg_pool2d");
    if (!y) return NULL;
    x->ctx->be->avg_pool2d(x->ctx, y, x, y->ip);
    return HV__RECORD1(y, "avg_pool2d", hv__avg_pool2d_bwd, x);
}

/* the mean over H and W: hv_mean already has the forward, backward and a double accumulator */
HVDEF hv_tensor *hv_global_avg_pool(hv_tensor *x) {
    static const int axes[2] = {2, 3};
    HV__CHECK_IN(x);
    if (hv__check_nchw(x, "hv_global_avg_pool", "x")) return NULL;
    if (x->shape[2] < 1 || x->shape[3] < 1)
        return (hv_tensor *)hv__fail("hv_global_avg_pool", "%s has no pixels to average", hv__desc("x", x));
    return hv_mean(x, 2, axes, 0);
}

/* ---- resize --------------------------------------------------------------------------------- */

static void hv__resize_bilinear_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *gx;
    if (!hv__needs_grad(x) || !(gx = hv__grad_buf(x))) return;
    out->ctx->be->resize_bilinear_bwd(out->ctx, gx, out->grad, (int)out->ip[0]);
}
HVDEF hv_tensor *hv_resize_bilinear(hv_tensor *x, int64_t out_h, int64_t out_w, int align_corners) {
    static const char *op = "hv_resize_bilinear";
    int64_t shape[4];
    hv_tensor *y;
    HV__CHECK_IN(x);
    if (hv__check_nchw(x, op, "x")) return NULL;
    if (out_h < 1 || out_w < 1)
        return (hv_tensor *)hv__fail(op, "output size (%lld, %lld) must be positive, for %s", (long long)out_h, (long long)out_w,
                                     hv__desc("x", x));
    if (x->shape[2] < 1 || x->shape[3] < 1) return (hv_tensor *)hv__fail(op, "%s has no pixels to resize", hv__desc("x", x));
    x = hv_contiguous(x);
    if (!x) return NULL;
    shape[0] = x->shape[0];
    shape[1] = x->shape[1];
    shape[2] = out_h;
    shape[3] = out_w;
    y = hv__new(x->ctx, 4, shape);
    if (!y) return NULL;
    y->ip[0] = align_corners ? 1 : 0;
    x->ctx->be->resize_bilinear(x->ctx, y, x, (int)y->ip[0]);
    return HV__RECORD1(y, "resize_bilinear", hv__resize_bilinear_bwd, x);
}

/* ---- batch norm ----------------------------------------------------------------------------- */

/* in: x, weight, bias (the differentiable inputs). saved[0], saved[1]: the mean and variance (C)
   that normalised x, copied so that a later running-stat update cannot change them; ip[0]: they
   were the batch's own, so the gradient flows through them; fp[0]: eps */
static void hv__batch_norm_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *w = out->in[1], *b = out->in[2], *gx = NULL, *gw = NULL, *gb = NULL;
    hv_ctx *ctx = out->ctx;
    if (hv__needs_grad(x)) gx = hv__grad_buf(x);
    if (hv__needs_grad(w)) gw = hv__grad_buf(w);
    if (hv__needs_grad(b)) gb = hv__grad_buf(b);
    if (gx || gw || gb)
        ctx->be->batch_norm_bwd(ctx, gx, gw, gb, x, out->grad, out->saved[0], out->saved[1], w, (float)out->fp[0], (int)out->ip[0]);
}
HVDEF hv_tensor *hv_batch_norm(hv_tensor *x, hv_tensor *weight, hv_tensor *bias, hv_tensor *running_mean, hv_tensor *running_var,
                               int training, float momentum, float eps) {
    static const char *op = "hv_batch_norm";
    hv_tensor *y, *mean, *var, *in[3];
    int64_t c, count;
    int batch_stats, has_w = weight != NULL, has_b = bias != NULL;
    hv_ctx *ctx;
    HV__CHECK_IN(x);
    if (hv__check_f32(x, op, "x")) return NULL;
    if (x->ndim < 2 || x->ndim > 4) return (hv_tensor *)hv__fail(op, "%s must be (N, C), (N, C, L) or (N, C, H, W)", hv__desc("x", x));
    c = x->shape[1];
    if (hv__check_channels(weight, x, c, op, "weight") || hv__check_channels(bias, x, c, op, "bias") ||
        hv__check_channels(running_mean, x, c, op, "running_mean") || hv__check_channels(running_var, x, c, op, "running_var"))
        return NULL;
    if (!running_mean != !running_var)
        return (hv_tensor *)hv__fail(op, "%s and %s: give both running statistics or neither", hv__desc("running_mean", running_mean),
                                     hv__desc("running_var", running_var));
    count = c ? hv_numel(x) / c : 0; /* values per channel */
    if (count < 1) return (hv_tensor *)hv__fail(op, "%s has no values per channel", hv__desc("x", x));
    if (training && count < 2)
        return (hv_tensor *)hv__fail(op, "%s has one value per channel: training needs more than one (as PyTorch)", hv__desc("x", x));
    /* without running statistics even eval normalises with the batch's own (track_running_stats=False) */
    batch_stats = training || !running_mean;
    x = hv_contiguous(x);
    weight = weight ? hv_contiguous(weight) : NULL;
    bias = bias ? hv_contiguous(bias) : NULL;
    if (!x || (has_w && !weight) || (has_b && !bias)) return NULL;
    ctx = x->ctx;
    mean = hv__new(ctx, 1, &c);
    var = mean ? hv__new(ctx, 1, &c) : NULL;
    y = var ? hv__new_like(x) : NULL;
    if (!y) return NULL;
    if (batch_stats) {
        ctx->be->batch_norm_stats(ctx, mean, var, x);
        /* in place, off the tape: running statistics are state, not part of the graph */
        if (training && running_mean)
            ctx->be->batch_norm_running(ctx, running_mean, running_var, mean, var, momentum, (float)((double)count / (double)(count - 1)));
    } else {
        ctx->be->copy(ctx, mean, running_mean, 0);
        ctx->be->copy(ctx, var, running_var, 0);
    }
    ctx->be->batch_norm(ctx, y, x, mean, var, weight, bias, eps);
    y->saved[0] = mean;
    y->saved[1] = var;
    y->ip[0] = batch_stats;
    y->fp[0] = eps;
    in[0] = x;
    in[1] = weight;
    in[2] = bias;
    return hv__record(y, "batch_norm", hv__batch_norm_bwd, 3, in);
}
/* HV-SECTION conv-ops END */

/* ==== 7. CPU BACKEND: scalar reference kernels =================================================
   Written for clarity: every fast kernel of a later section is checked against these. Each loop
   that runs in parallel gives one output element to one thread, and each element's sum runs in a
   fixed order, so results do not depend on the thread count. */

/* Elementwise kernels walk their tensors row by row: the offset of each row (all axes but the
   last) is computed once, then the row runs with the last axis's stride. Contiguous rows (stride
   1) compile to vector loops; broadcast rows have stride 0. */
static int64_t hv__row_len(const hv_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static int64_t hv__row_stride(const hv_tensor *t) { return t->ndim ? t->stride[t->ndim - 1] : 1; }
/* offset of row r of t, the rows being the tensor seen as (numel / last, last) */
static int64_t hv__row_offset(const hv_tensor *t, int64_t r) {
    int64_t off = 0;
    int d;
    for (d = t->ndim - 2; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (r % n) * t->stride[d];
        r /= n;
    }
    return off;
}
static int64_t hv__rows(const hv_tensor *t) {
    int64_t len = hv__row_len(t);
    return len ? hv_numel(t) / len : 0;
}

static void hv__cpu_copy(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate) {
    int64_t r, rows = hv__rows(dst), len = hv__row_len(dst), sd = hv__row_stride(dst), ss = hv__row_stride(src);
    if (!accumulate && hv_is_contiguous(dst) && hv_is_contiguous(src)) {
        memcpy(dst->data, src->data, hv__dtype_size(dst->dtype) * (size_t)hv_numel(dst));
        return;
    }
    HV__PARALLEL_FOR(ctx, rows * len)
    for (r = 0; r < rows; r++) {
        int64_t j;
        if (!accumulate) { /* bit copy: works for every 4-byte dtype */
            uint32_t *d = (uint32_t *)dst->data + hv__row_offset(dst, r);
            const uint32_t *s = (const uint32_t *)src->data + hv__row_offset(src, r);
            for (j = 0; j < len; j++) d[j * sd] = s[j * ss];
        } else {
            float *d = (float *)dst->data + hv__row_offset(dst, r);
            const float *s = (const float *)src->data + hv__row_offset(src, r);
            if (sd == 1 && ss == 1)
                for (j = 0; j < len; j++) d[j] += s[j];
            else
                for (j = 0; j < len; j++) d[j * sd] += s[j * ss];
        }
    }
}

static void hv__cpu_fill(hv_ctx *ctx, hv_tensor *dst, float value) {
    int64_t r, rows = hv__rows(dst), len = hv__row_len(dst), sd = hv__row_stride(dst);
    HV__PARALLEL_FOR(ctx, rows * len)
    for (r = 0; r < rows; r++) {
        float *d = (float *)dst->data + hv__row_offset(dst, r);
        int64_t j;
        for (j = 0; j < len; j++) d[j * sd] = value;
    }
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
    int64_t r, rows = hv__rows(out), len = hv__row_len(out), sa = hv__row_stride(a), sb = hv__row_stride(b);
    HV__PARALLEL_FOR(ctx, rows * len)
    for (r = 0; r < rows; r++) {
        float *o = (float *)out->data + r * len;
        const float *pa = (const float *)a->data + hv__row_offset(a, r), *pb = (const float *)b->data + hv__row_offset(b, r);
        int64_t j;
        switch (op) {
        case HV__ADD:
            for (j = 0; j < len; j++) o[j] = pa[j * sa] + pb[j * sb];
            break;
        case HV__SUB:
            for (j = 0; j < len; j++) o[j] = pa[j * sa] - pb[j * sb];
            break;
        case HV__MUL:
            for (j = 0; j < len; j++) o[j] = pa[j * sa] * pb[j * sb];
            break;
        default:
            for (j = 0; j < len; j++) o[j] = pa[j * sa] / pb[j * sb];
        }
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
    int64_t r, rows = hv__rows(out), len = hv__row_len(out), so = hv__row_stride(out), sx = hv__row_stride(x);
    HV__PARALLEL_FOR(ctx, rows * len)
    for (r = 0; r < rows; r++) {
        float *o = (float *)out->data + hv__row_offset(out, r);
        const float *px = (const float *)x->data + hv__row_offset(x, r);
        int64_t j;
        for (j = 0; j < len; j++) o[j * so] = hv__unary_f(op, alpha, px[j * sx]);
    }
}
static void hv__cpu_unary_bwd(hv_ctx *ctx, int op, float alpha, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y,
                              const hv_tensor *gy) {
    int64_t r, rows = hv__rows(gx), len = hv__row_len(gx);
    int64_t s0 = hv__row_stride(gx), s1 = hv__row_stride(x), s2 = hv__row_stride(y), s3 = hv__row_stride(gy);
    HV__PARALLEL_FOR(ctx, rows * len)
    for (r = 0; r < rows; r++) {
        float *g = (float *)gx->data + hv__row_offset(gx, r);
        const float *px = (const float *)x->data + hv__row_offset(x, r), *py = (const float *)y->data + hv__row_offset(y, r);
        const float *pg = (const float *)gy->data + hv__row_offset(gy, r);
        int64_t j;
        for (j = 0; j < len; j++) g[j * s0] += pg[j * s3] * hv__unary_df(op, alpha, px[j * s1], py[j * s2]);
    }
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
/* Precision: dot products accumulate in float, as the GEMM does; the statistics of a
   normalisation (sums of exponentials, mean, variance) and the sums of a loss in double. */

static void hv__cpu_softmax(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x, int64_t outer, int64_t n, int64_t inner) {
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t r, rows = outer * inner;
    HV__PARALLEL_FOR(ctx, rows * n)
    for (r = 0; r < rows; r++) { /* one row: n values, inner apart */
        int64_t base = (r / inner) * n * inner + r % inner, j;
        const float *xr = px + base;
        float *yr = py + base, m = -INFINITY;
        double s = 0;
        for (j = 0; j < n; j++)
            if (xr[j * inner] > m) m = xr[j * inner];
        for (j = 0; j < n; j++) s += expf(xr[j * inner] - m);
        if (is_log) { /* (x - m) - log s, not x - (m + log s): exact for large x */
            float ls = (float)log(s);
            for (j = 0; j < n; j++) yr[j * inner] = (xr[j * inner] - m) - ls;
        } else {
            for (j = 0; j < n; j++) yr[j * inner] = (float)(expf(xr[j * inner] - m) / s);
        }
    }
}
static void hv__cpu_softmax_bwd(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy, int64_t outer,
                                int64_t n, int64_t inner) {
    const float *py = (const float *)y->data, *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data;
    int64_t r, rows = outer * inner;
    HV__PARALLEL_FOR(ctx, rows * n)
    for (r = 0; r < rows; r++) {
        int64_t base = (r / inner) * n * inner + r % inner, j;
        const float *yr = py + base, *gr = pg + base;
        float *gxr = pgx + base;
        double s = 0;
        if (is_log) { /* gx = gy - softmax * sum(gy) */
            for (j = 0; j < n; j++) s += gr[j * inner];
            for (j = 0; j < n; j++) gxr[j * inner] += gr[j * inner] - expf(yr[j * inner]) * (float)s;
        } else { /* gx = y * (gy - sum(gy * y)) */
            for (j = 0; j < n; j++) s += (double)gr[j * inner] * yr[j * inner];
            for (j = 0; j < n; j++) gxr[j * inner] += yr[j * inner] * (gr[j * inner] - (float)s);
        }
    }
}

static void hv__cpu_layer_norm(hv_ctx *ctx, hv_tensor *y, hv_tensor *mean, hv_tensor *rstd, const hv_tensor *x, const hv_tensor *w,
                               const hv_tensor *b, float eps) {
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D, r;
    const float *px = (const float *)x->data, *pw = w ? (const float *)w->data : NULL, *pb = b ? (const float *)b->data : NULL;
    float *py = (float *)y->data, *pm = (float *)mean->data, *ps = (float *)rstd->data;
    HV__PARALLEL_FOR(ctx, rows * D)
    for (r = 0; r < rows; r++) {
        const float *xr = px + r * D;
        float *yr = py + r * D;
        double mu = 0, var = 0, rs;
        int64_t j;
        for (j = 0; j < D; j++) mu += xr[j];
        mu /= (double)D;
        for (j = 0; j < D; j++) var += (xr[j] - mu) * (xr[j] - mu);
        rs = 1.0 / sqrt(var / (double)D + eps); /* biased variance, as PyTorch */
        for (j = 0; j < D; j++) {
            float v = (float)((xr[j] - mu) * rs);
            if (pw) v *= pw[j];
            if (pb) v += pb[j];
            yr[j] = v;
        }
        pm[r] = (float)mu;
        ps[r] = (float)rs;
    }
}
static void hv__cpu_layer_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *w,
                                   const hv_tensor *mean, const hv_tensor *rstd, const hv_tensor *gy) {
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D, r, j;
    const float *px = (const float *)x->data, *pw = w ? (const float *)w->data : NULL, *pm = (const float *)mean->data;
    const float *ps = (const float *)rstd->data, *pg = (const float *)gy->data;
    if (gx) {
        float *pgx = (float *)gx->data;
        /* gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * w: one row per thread */
        HV__PARALLEL_FOR(ctx, rows * D)
        for (r = 0; r < rows; r++) {
            const float *xr = px + r * D, *gr = pg + r * D;
            float *gxr = pgx + r * D, mu = pm[r], rs = ps[r];
            double sg = 0, sgx = 0;
            int64_t c;
            for (c = 0; c < D; c++) {
                float g = pw ? gr[c] * pw[c] : gr[c];
                sg += g;
                sgx += (double)g * ((xr[c] - mu) * rs);
            }
            sg /= (double)D;
            sgx /= (double)D;
            for (c = 0; c < D; c++) {
                float g = pw ? gr[c] * pw[c] : gr[c], xh = (xr[c] - mu) * rs;
                gxr[c] += rs * (g - (float)sg - xh * (float)sgx);
            }
        }
    }
    if (gw || gb) {
        float *pgw = gw ? (float *)gw->data : NULL, *pgb = gb ? (float *)gb->data : NULL;
        /* sums over rows: one feature per thread, rows in order */
        HV__PARALLEL_FOR(ctx, rows * D)
        for (j = 0; j < D; j++) {
            double sw = 0, sb = 0;
            int64_t q;
            for (q = 0; q < rows; q++) {
                float g = pg[q * D + j];
                sw += (double)g * ((px[q * D + j] - pm[q]) * ps[q]);
                sb += g;
            }
            if (pgw) pgw[j] += (float)sw;
            if (pgb) pgb[j] += (float)sb;
        }
    }
}

/* row i of head (b, h) of a (B, H, N, d) tensor of any strides */
static float *hv__attn_row(const hv_tensor *t, int64_t b, int64_t h, int64_t i) {
    return (float *)t->data + b * t->stride[0] + h * t->stride[1] + i * t->stride[2];
}
static float hv__dot_strided(const float *a, int64_t sa, const float *b, int64_t sb, int64_t n) {
    float acc = 0;
    int64_t t;
    for (t = 0; t < n; t++) acc += a[t * sa] * b[t * sb];
    return acc;
}
/* one query row at a time with an online softmax (running max m and sum l, the output row
   rescaled when m grows), so neither the scores nor a row buffer are stored */
static void hv__cpu_attention(hv_ctx *ctx, hv_tensor *o, hv_tensor *lse, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v,
                              float scale) {
    int64_t H = q->shape[1], Nq = q->shape[2], Nk = k->shape[2], d = q->shape[3];
    int64_t r, rows = q->shape[0] * H * Nq;
    int64_t qs = q->stride[3], ks = k->stride[3], vs = v->stride[3], os = o->stride[3];
    float *pl = (float *)lse->data;
    HV__PARALLEL_FOR(ctx, rows * Nk * d)
    for (r = 0; r < rows; r++) {
        int64_t b = r / (H * Nq), h = (r / Nq) % H, i = r % Nq, j, t;
        const float *qi = hv__attn_row(q, b, h, i);
        float *oi = hv__attn_row(o, b, h, i), m = -INFINITY;
        double l = 0;
        for (t = 0; t < d; t++) oi[t * os] = 0;
        for (j = 0; j < Nk; j++) {
            const float *vj = hv__attn_row(v, b, h, j);
            float s = scale * hv__dot_strided(qi, qs, hv__attn_row(k, b, h, j), ks, d), p;
            if (s > m) {
                float c = expf(m - s); /* 0 for the first key */
                l *= c;
                for (t = 0; t < d; t++) oi[t * os] *= c;
                m = s;
            }
            p = expf(s - m);
            l += p;
            for (t = 0; t < d; t++) oi[t * os] += p * vj[t * vs];
        }
        for (t = 0; t < d; t++) oi[t * os] = (float)(oi[t * os] / l);
        pl[r] = m + (float)log(l);
    }
}
/* With P = exp(S - lse) and delta_i = sum_j P_ij dP_ij = go_i . o_i (no P needed):
   dS = P * (go v^T - delta), gq = scale dS k, gk = scale dS^T q, gv = P^T go.
   gq runs over query rows, gk and gv over key rows (each sums its queries in order), so no two
   threads write one element; the scores are recomputed in both loops. */
static void hv__cpu_attention_bwd(hv_ctx *ctx, hv_tensor *gq, hv_tensor *gk, hv_tensor *gv, hv_tensor *delta, const hv_tensor *q,
                                  const hv_tensor *k, const hv_tensor *v, const hv_tensor *o, const hv_tensor *lse,
                                  const hv_tensor *go, float scale) {
    int64_t B = q->shape[0], H = q->shape[1], Nq = q->shape[2], Nk = k->shape[2], d = q->shape[3];
    int64_t r, rows = B * H * Nq, cols = B * H * Nk;
    int64_t qs = q->stride[3], ks = k->stride[3], vs = v->stride[3], os = o->stride[3], gs = go->stride[3];
    const float *pl = (const float *)lse->data;
    float *pd = (float *)delta->data;
    HV__PARALLEL_FOR(ctx, rows * d)
    for (r = 0; r < rows; r++) {
        int64_t b = r / (H * Nq), h = (r / Nq) % H, i = r % Nq;
        pd[r] = hv__dot_strided(hv__attn_row(go, b, h, i), gs, hv__attn_row(o, b, h, i), os, d);
    }
    if (gq) {
        int64_t gqs = gq->stride[3];
        HV__PARALLEL_FOR(ctx, rows * Nk * d)
        for (r = 0; r < rows; r++) {
            int64_t b = r / (H * Nq), h = (r / Nq) % H, i = r % Nq, j, t;
            const float *qi = hv__attn_row(q, b, h, i), *gi = hv__attn_row(go, b, h, i);
            float *gqi = hv__attn_row(gq, b, h, i);
            for (j = 0; j < Nk; j++) {
                const float *kj = hv__attn_row(k, b, h, j);
                float p = expf(scale * hv__dot_strided(qi, qs, kj, ks, d) - pl[r]);
                float ds = p * (hv__dot_strided(gi, gs, hv__attn_row(v, b, h, j), vs, d) - pd[r]);
                for (t = 0; t < d; t++) gqi[t * gqs] += scale * ds * kj[t * ks];
            }
        }
    }
    if (gk || gv) {
        int64_t gks = gk ? gk->stride[3] : 0, gvs = gv ? gv->stride[3] : 0;
        HV__PARALLEL_FOR(ctx, cols * Nq * d)
        for (r = 0; r < cols; r++) {
            int64_t b = r / (H * Nk), h = (r / Nk) % H, j = r % Nk, i, t, ri = (b * H + h) * Nq;
            const float *kj = hv__attn_row(k, b, h, j), *vj = hv__attn_row(v, b, h, j);
            float *gkj = gk ? hv__attn_row(gk, b, h, j) : NULL, *gvj = gv ? hv__attn_row(gv, b, h, j) : NULL;
            for (i = 0; i < Nq; i++) {
                const float *qi = hv__attn_row(q, b, h, i), *gi = hv__attn_row(go, b, h, i);
                float p = expf(scale * hv__dot_strided(qi, qs, kj, ks, d) - pl[ri + i]);
                if (gvj)
                    for (t = 0; t < d; t++) gvj[t * gvs] += p * gi[t * gs];
                if (gkj) {
                    float ds = p * (hv__dot_strided(gi, gs, vj, vs, d) - pd[ri + i]);
                    for (t = 0; t < d; t++) gkj[t * gks] += scale * ds * qi[t * qs];
                }
            }
        }
    }
}

static void hv__cpu_gather(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer,
                           int64_t n, int64_t k, int64_t inner) {
    const float *ps = (const float *)src->data;
    const int32_t *pi = (const int32_t *)idx->data;
    float *pd = (float *)dst->data;
    int64_t r, rows = outer * k;
    HV__PARALLEL_FOR(ctx, rows * inner)
    for (r = 0; r < rows; r++) { /* one picked row of dst */
        const float *s = ps + ((r / k) * n + pi[r]) * inner;
        float *dr = pd + r * inner;
        int64_t t;
        if (accumulate)
            for (t = 0; t < inner; t++) dr[t] += s[t];
        else
            memcpy(dr, s, sizeof(float) * (size_t)inner);
    }
}
static void hv__cpu_scatter_add(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                                int64_t k, int64_t inner) {
    const float *ps = (const float *)src->data;
    const int32_t *pi = (const int32_t *)idx->data;
    float *pd = (float *)dst->data;
    int64_t c, cols = outer * inner;
    /* one column (o, t) per thread: repeated indices add in the order of idx, whatever the threads */
    HV__PARALLEL_FOR(ctx, outer * k * inner)
    for (c = 0; c < cols; c++) {
        int64_t o = c / inner, t = c % inner, j;
        for (j = 0; j < k; j++) pd[(o * n + pi[o * k + j]) * inner + t] += ps[(o * k + j) * inner + t];
    }
}

static void hv__cpu_cross_entropy(hv_ctx *ctx, hv_tensor *loss, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits,
                                  const hv_tensor *labels) {
    int64_t N = logits->shape[0], C = logits->shape[1], r;
    const float *px = (const float *)logits->data;
    const int32_t *py = (const int32_t *)labels->data;
    float *pl = (float *)lse->data, *prl = (float *)row_loss->data;
    double total = 0;
    HV__PARALLEL_FOR(ctx, N * C)
    for (r = 0; r < N; r++) {
        const float *xr = px + r * C;
        float m = -INFINITY;
        double s = 0;
        int64_t c;
        for (c = 0; c < C; c++)
            if (xr[c] > m) m = xr[c];
        for (c = 0; c < C; c++) s += expf(xr[c] - m);
        pl[2 * r] = m;
        pl[2 * r + 1] = (float)log(s);
        prl[r] = (float)((m - xr[py[r]]) + log(s)); /* -log softmax at the label, exact for large logits */
    }
    for (r = 0; r < N; r++) total += prl[r]; /* rows in order: same sum for any thread count */
    *(float *)loss->data = (float)(total / (double)N);
}
static void hv__cpu_cross_entropy_bwd(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                                      const hv_tensor *lse, const hv_tensor *gloss) {
    int64_t N = logits->shape[0], C = logits->shape[1], r;
    const float *px = (const float *)logits->data, *pl = (const float *)lse->data;
    const int32_t *py = (const int32_t *)labels->data;
    float *pg = (float *)glogits->data, g = *(const float *)gloss->data / (float)N;
    HV__PARALLEL_FOR(ctx, N * C)
    for (r = 0; r < N; r++) {
        int64_t c;
        for (c = 0; c < C; c++) pg[r * C + c] += g * (expf((px[r * C + c] - pl[2 * r]) - pl[2 * r + 1]) - (c == py[r] ? 1.0f : 0.0f));
    }
}
static int64_t hv__cpu_topk_correct(hv_ctx *ctx, const hv_tensor *logits, const hv_tensor *labels, int k) {
    int64_t N = logits->shape[0], C = logits->shape[1], r, c, correct = 0;
    const float *px = (const float *)logits->data;
    const int32_t *py = (const int32_t *)labels->data;
    (void)ctx;
    for (r = 0; r < N; r++) {
        float v = px[r * C + py[r]];
        int64_t above = 0;
        if (v != v) continue; /* a NaN logit is never a correct answer */
        for (c = 0; c < C; c++) above += px[r * C + c] > v;
        correct += above < k;
    }
    return correct;
}

static void hv__cpu_diff_loss(hv_ctx *ctx, int mode, hv_tensor *loss, const hv_tensor *a, const hv_tensor *b) {
    int64_t i, n = hv_numel(a);
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    double s = 0;
    (void)ctx;
    for (i = 0; i < n; i++) { /* one sum, in order: serial */
        double d = (double)pa[i] - pb[i];
        s += mode == HV__LOSS_MSE ? d * d : fabs(d);
    }
    *(float *)loss->data = (float)(s / (double)n);
}
static void hv__cpu_diff_loss_bwd(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                                  const hv_tensor *gloss) {
    int64_t i, n = hv_numel(a);
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    float *pga = ga ? (float *)ga->data : NULL, *pgb = gb ? (float *)gb->data : NULL;
    float g = *(const float *)gloss->data / (float)n;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) {
        float d = pa[i] - pb[i], v = mode == HV__LOSS_MSE ? 2.0f * g * d : (d > 0 ? g : d < 0 ? -g : 0.0f);
        if (pga) pga[i] += v;
        if (pgb) pgb[i] -= v;
    }
}
/* HV-SECTION cpu-nn-kernels END */

/* HV-SECTION cpu-conv-kernels BEGIN */

/* Direct loops, correct for every stride, padding, dilation and group count. Forward kernels own
   one output element per iteration. The backward of data gathers (each gx element sums the
   outputs that read it); weight grads own one weight element and sum the batch inside. Pool and
   resize backwards own one (n, c) plane of gx and scatter into it in a fixed order. */

static void hv__cpu_conv2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    const int64_t cin = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t cout = y->shape[1], OH = y->shape[2], OW = y->shape[3], KH = w->shape[2], KW = w->shape[3];
    const int64_t sh = g[HV__CG_SH], sw = g[HV__CG_SW], ph = g[HV__CG_PH], pw = g[HV__CG_PW], dh = g[HV__CG_DH], dw = g[HV__CG_DW];
    const int64_t cin_g = cin / g[HV__CG_GROUPS], cout_g = cout / g[HV__CG_GROUPS];
    const float *px = (const float *)x->data, *pk = (const float *)w->data, *pb = b ? (const float *)b->data : NULL;
    float *py = (float *)y->data;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * cin_g * KH * KW)
    for (o = 0; o < n; o++) {
        int64_t ow = o % OW, oh = (o / OW) % OH, co = (o / (OW * OH)) % cout, ni = o / (OW * OH * cout);
        int64_t ci, kh, kw;
        float acc = pb ? pb[co] : 0.0f;
        for (ci = 0; ci < cin_g; ci++) {
            const float *xp = px + (ni * cin + (co / cout_g) * cin_g + ci) * H * W; /* (H, W) */
            const float *wp = pk + (co * cin_g + ci) * KH * KW;                     /* (KH, KW) */
            for (kh = 0; kh < KH; kh++) {
                int64_t ih = oh * sh - ph + kh * dh;
                if (ih < 0 || ih >= H) continue;
                for (kw = 0; kw < KW; kw++) {
                    int64_t iw = ow * sw - pw + kw * dw;
                    if (iw >= 0 && iw < W) acc += xp[ih * W + iw] * wp[kh * KW + kw];
                }
            }
        }
        py[o] = acc;
    }
}

static void hv__cpu_conv2d_bwd_data(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    const int64_t cin = gx->shape[1], H = gx->shape[2], W = gx->shape[3];
    const int64_t cout = gy->shape[1], OH = gy->shape[2], OW = gy->shape[3], KH = w->shape[2], KW = w->shape[3];
    const int64_t sh = g[HV__CG_SH], sw = g[HV__CG_SW], ph = g[HV__CG_PH], pw = g[HV__CG_PW], dh = g[HV__CG_DH], dw = g[HV__CG_DW];
    const int64_t cin_g = cin / g[HV__CG_GROUPS], cout_g = cout / g[HV__CG_GROUPS];
    const float *pg = (const float *)gy->data, *pk = (const float *)w->data;
    float *pgx = (float *)gx->data;
    int64_t i, n = hv_numel(gx);
    HV__PARALLEL_FOR(ctx, n * cout_g * KH * KW)
    for (i = 0; i < n; i++) {
        int64_t iw = i % W, ih = (i / W) % H, ci = (i / (W * H)) % cin, ni = i / (W * H * cin);
        int64_t co0 = (ci / cin_g) * cout_g, co, kh, kw;
        float acc = 0;
        for (co = co0; co < co0 + cout_g; co++) {
            const float *gp = pg + (ni * cout + co) * OH * OW;            /* (OH, OW) */
            const float *wp = pk + (co * cin_g + ci % cin_g) * KH * KW; /* (KH, KW) */
            for (kh = 0; kh < KH; kh++) {
                /* the output row whose window puts tap kh on input row ih, if any */
                int64_t th = ih + ph - kh * dh, oh = th / sh;
                if (th < 0 || th % sh || oh >= OH) continue;
                for (kw = 0; kw < KW; kw++) {
                    int64_t tw = iw + pw - kw * dw, ow = tw / sw;
                    if (tw >= 0 && tw % sw == 0 && ow < OW) acc += gp[oh * OW + ow] * wp[kh * KW + kw];
                }
            }
        }
        pgx[i] += acc;
    }
}

static void hv__cpu_conv2d_bwd_weight(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                      const int64_t *g) {
    const int64_t N = x->shape[0], cin = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t cout = gy->shape[1], OH = gy->shape[2], OW = gy->shape[3];
    const int64_t sh = g[HV__CG_SH], sw = g[HV__CG_SW], ph = g[HV__CG_PH], pw = g[HV__CG_PW], dh = g[HV__CG_DH], dw = g[HV__CG_DW];
    const int64_t cin_g = cin / g[HV__CG_GROUPS], cout_g = cout / g[HV__CG_GROUPS];
    const float *px = (const float *)x->data, *pg = (const float *)gy->data;
    int64_t i, co;
    if (gw) {
        const int64_t KH = gw->shape[2], KW = gw->shape[3], n = hv_numel(gw);
        float *pgw = (float *)gw->data;
        HV__PARALLEL_FOR(ctx, n * N * OH * OW)
        for (i = 0; i < n; i++) {
            int64_t kw = i % KW, kh = (i / KW) % KH, ci = (i / (KW * KH)) % cin_g, c = i / (KW * KH * cin_g);
            int64_t xc = (c / cout_g) * cin_g + ci, ni, oh, ow;
            double acc = 0; /* a sum over the whole batch: double keeps it exact enough */
            for (ni = 0; ni < N; ni++) {
                const float *xp = px + (ni * cin + xc) * H * W, *gp = pg + (ni * cout + c) * OH * OW;
                for (oh = 0; oh < OH; oh++) {
                    int64_t ih = oh * sh - ph + kh * dh;
                    if (ih < 0 || ih >= H) continue;
                    for (ow = 0; ow < OW; ow++) {
                        int64_t iw = ow * sw - pw + kw * dw;
                        if (iw >= 0 && iw < W) acc += (double)xp[ih * W + iw] * gp[oh * OW + ow];
                    }
                }
            }
            pgw[i] += (float)acc;
        }
    }
    if (gb) {
        float *pgb = (float *)gb->data;
        HV__PARALLEL_FOR(ctx, N * cout * OH * OW)
        for (co = 0; co < cout; co++) {
            int64_t ni, j;
            double acc = 0;
            for (ni = 0; ni < N; ni++)
                for (j = 0; j < OH * OW; j++) acc += pg[(ni * cout + co) * OH * OW + j];
            pgb[co] += (float)acc;
        }
    }
}

static void hv__cpu_max_pool2d(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const int64_t KH = g[HV__PG_KH], KW = g[HV__PG_KW], sh = g[HV__PG_SH], sw = g[HV__PG_SW], ph = g[HV__PG_PH], pw = g[HV__PG_PW];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int32_t *pa = argmax ? (int32_t *)argmax->data : NULL;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * KH * KW)
    for (o = 0; o < n; o++) {
        int64_t ow = o % OW, oh = (o / OW) % OH, plane = o / (OW * OH);
        int64_t h0 = oh * sh - ph, w0 = ow * sw - pw, hs = h0 < 0 ? 0 : h0, ws = w0 < 0 ? 0 : w0;
        int64_t he = h0 + KH < H ? h0 + KH : H, we = w0 + KW < W ? w0 + KW : W, ih, iw, best = hs * W + ws;
        const float *xp = px + plane * H * W; /* (H, W) */
        float m = -INFINITY;                  /* padding is -inf: it never wins */
        for (ih = hs; ih < he; ih++)
            for (iw = ws; iw < we; iw++) {
                float v = xp[ih * W + iw];
                if (v > m || v != v) { /* first maximum wins; NaN propagates, as in PyTorch */
                    m = v;
                    best = ih * W + iw;
                }
            }
        py[o] = m;
        if (pa) pa[o] = (int32_t)best;
    }
}

static void hv__cpu_max_pool2d_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *argmax) {
    const int64_t HW = gx->shape[2] * gx->shape[3], OHW = gy->shape[2] * gy->shape[3], planes = gy->shape[0] * gy->shape[1];
    const float *pg = (const float *)gy->data;
    const int32_t *pa = (const int32_t *)argmax->data;
    float *pgx = (float *)gx->data;
    int64_t p;
    HV__PARALLEL_FOR(ctx, planes * OHW)
    for (p = 0; p < planes; p++) {
        int64_t j;
        for (j = 0; j < OHW; j++) pgx[p * HW + pa[p * OHW + j]] += pg[p * OHW + j];
    }
}

/* the window of output (oh, ow) clipped to the input, and its divisor */
static float hv__avg_window(const int64_t *g, int64_t H, int64_t W, int64_t oh, int64_t ow, int64_t *hs, int64_t *he, int64_t *ws,
                            int64_t *we) {
    int64_t h0 = oh * g[HV__PG_SH] - g[HV__PG_PH], w0 = ow * g[HV__PG_SW] - g[HV__PG_PW];
    /* count_include_pad counts the window clipped to the padded input, as PyTorch */
    int64_t h1 = h0 + g[HV__PG_KH] < H + g[HV__PG_PH] ? h0 + g[HV__PG_KH] : H + g[HV__PG_PH];
    int64_t w1 = w0 + g[HV__PG_KW] < W + g[HV__PG_PW] ? w0 + g[HV__PG_KW] : W + g[HV__PG_PW];
    int64_t padded = (h1 - h0) * (w1 - w0);
    *hs = h0 < 0 ? 0 : h0;
    *ws = w0 < 0 ? 0 : w0;
    *he = h1 < H ? h1 : H;
    *we = w1 < W ? w1 : W;
    return (float)(g[HV__PG_EXCL] ? (*he - *hs) * (*we - *ws) : padded);
}

static void hv__cpu_avg_pool2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * g[HV__PG_KH] * g[HV__PG_KW])
    for (o = 0; o < n; o++) {
        int64_t ow = o % OW, oh = (o / OW) % OH, hs, he, ws, we, ih, iw;
        const float *xp = px + (o / (OW * OH)) * H * W; /* (H, W) */
        float div = hv__avg_window(g, H, W, oh, ow, &hs, &he, &ws, &we), acc = 0;
        for (ih = hs; ih < he; ih++)
            for (iw = ws; iw < we; iw++) acc += xp[ih * W + iw];
        py[o] = acc / div;
    }
}

static void hv__cpu_avg_pool2d_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const int64_t *g) {
    const int64_t H = gx->shape[2], W = gx->shape[3], OH = gy->shape[2], OW = gy->shape[3], planes = gy->shape[0] * gy->shape[1];
    const float *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data;
    int64_t p;
    HV__PARALLEL_FOR(ctx, planes * OH * OW * g[HV__PG_KH] * g[HV__PG_KW])
    for (p = 0; p < planes; p++) {
        int64_t oh, ow, hs, he, ws, we, ih, iw;
        float *gxp = pgx + p * H * W;
        for (oh = 0; oh < OH; oh++)
            for (ow = 0; ow < OW; ow++) {
                float v = pg[(p * OH + oh) * OW + ow] / hv__avg_window(g, H, W, oh, ow, &hs, &he, &ws, &we);
                for (ih = hs; ih < he; ih++)
                    for (iw = ws; iw < we; iw++) gxp[ih * W + iw] += v;
            }
    }
}

/* torch's linear source index for output index dst: the two input indices and the weight of the
   second (PyTorch computes these in float; so do we, for the same bits) */
static void hv__linear_src(int64_t dst, int64_t in, int64_t out, int align_corners, int64_t *i0, int64_t *i1, float *l1) {
    float scale, src;
    if (in == out) {
        *i0 = *i1 = dst;
        *l1 = 0;
        return;
    }
    if (align_corners) {
        scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = scale * (float)dst;
    } else {
        scale = (float)in / (float)out;
        src = scale * ((float)dst + 0.5f) - 0.5f;
        if (src < 0) src = 0;
    }
    *i0 = (int64_t)src; /* src >= 0: truncation is floor */
    if (*i0 > in - 1) *i0 = in - 1;
    *l1 = src - (float)*i0;
    if (*l1 > 1) *l1 = 1;
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
}

static void hv__cpu_resize_bilinear(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, int align_corners) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * 4)
    for (o = 0; o < n; o++) {
        int64_t ow = o % OW, oh = (o / OW) % OH, h0, h1, w0, w1;
        const float *xp = px + (o / (OW * OH)) * H * W; /* (H, W) */
        float lh, lw;
        hv__linear_src(oh, H, OH, align_corners, &h0, &h1, &lh);
        hv__linear_src(ow, W, OW, align_corners, &w0, &w1, &lw);
        py[o] = (1 - lh) * ((1 - lw) * xp[h0 * W + w0] + lw * xp[h0 * W + w1]) + lh * ((1 - lw) * xp[h1 * W + w0] + lw * xp[h1 * W + w1]);
    }
}

static void hv__cpu_resize_bilinear_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, int align_corners) {
    const int64_t H = gx->shape[2], W = gx->shape[3], OH = gy->shape[2], OW = gy->shape[3], planes = gy->shape[0] * gy->shape[1];
    const float *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data;
    int64_t p;
    HV__PARALLEL_FOR(ctx, planes * OH * OW * 4)
    for (p = 0; p < planes; p++) {
        int64_t oh, ow, h0, h1, w0, w1;
        float *gxp = pgx + p * H * W, lh, lw;
        for (oh = 0; oh < OH; oh++) {
            hv__linear_src(oh, H, OH, align_corners, &h0, &h1, &lh);
            for (ow = 0; ow < OW; ow++) {
                float v = pg[(p * OH + oh) * OW + ow];
                hv__linear_src(ow, W, OW, align_corners, &w0, &w1, &lw);
                gxp[h0 * W + w0] += (1 - lh) * (1 - lw) * v;
                gxp[h0 * W + w1] += (1 - lh) * lw * v;
                gxp[h1 * W + w0] += lh * (1 - lw) * v;
                gxp[h1 * W + w1] += lh * lw * v;
            }
        }
    }
}

/* x (N, C, ...) seen as (N, C, S) */
static void hv__bn_dims(const hv_tensor *x, int64_t *N, int64_t *C, int64_t *S) {
    *N = x->shape[0];
    *C = x->shape[1];
    *S = *N * *C > 0 ? hv_numel(x) / (*N * *C) : 0;
}

static void hv__cpu_batch_norm_stats(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x) {
    int64_t N, C, S, c;
    const float *px = (const float *)x->data;
    float *pm = (float *)mean->data, *pv = (float *)var->data;
    hv__bn_dims(x, &N, &C, &S);
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (c = 0; c < C; c++) {
        int64_t ni, j;
        double s = 0, m, v = 0;
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) s += px[(ni * C + c) * S + j];
        m = s / (double)(N * S);
        /* two passes: the variance of data far from zero keeps its digits */
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) {
                double d = px[(ni * C + c) * S + j] - m;
                v += d * d;
            }
        pm[c] = (float)m;
        pv[c] = (float)(v / (double)(N * S));
    }
}

static void hv__cpu_batch_norm_running(hv_ctx *ctx, hv_tensor *run_mean, hv_tensor *run_var, const hv_tensor *mean, const hv_tensor *var,
                                       float momentum, float unbias) {
    /* the running tensors belong to the user: any 1-D stride */
    float *rm = (float *)run_mean->data, *rv = (float *)run_var->data;
    const float *pm = (const float *)mean->data, *pv = (const float *)var->data;
    int64_t c, C = mean->shape[0], sm = run_mean->stride[0], sv = run_var->stride[0];
    (void)ctx;
    for (c = 0; c < C; c++) {
        rm[c * sm] = (1 - momentum) * rm[c * sm] + momentum * pm[c];
        rv[c * sv] = (1 - momentum) * rv[c * sv] + momentum * (pv[c] * unbias);
    }
}

static void hv__cpu_batch_norm(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var,
                               const hv_tensor *w, const hv_tensor *b, float eps) {
    int64_t N, C, S, i, n = hv_numel(x);
    const float *px = (const float *)x->data, *pm = (const float *)mean->data, *pv = (const float *)var->data;
    const float *pw = w ? (const float *)w->data : NULL, *pb = b ? (const float *)b->data : NULL;
    float *py = (float *)y->data;
    hv__bn_dims(x, &N, &C, &S);
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) {
        int64_t c = (i / S) % C;
        float inv = 1.0f / sqrtf(pv[c] + eps), v = (px[i] - pm[c]) * inv;
        py[i] = (pw ? v * pw[c] : v) + (pb ? pb[c] : 0.0f);
    }
}

static void hv__cpu_batch_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                   const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats) {
    int64_t N, C, S, c;
    const float *px = (const float *)x->data, *pg = (const float *)gy->data, *pm = (const float *)mean->data;
    const float *pv = (const float *)var->data, *pw = w ? (const float *)w->data : NULL;
    float *pgx = gx ? (float *)gx->data : NULL, *pgw = gw ? (float *)gw->data : NULL, *pgb = gb ? (float *)gb->data : NULL;
    hv__bn_dims(x, &N, &C, &S);
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (c = 0; c < C; c++) {
        const float inv = 1.0f / sqrtf(pv[c] + eps), wc = pw ? pw[c] : 1.0f;
        const double M = (double)(N * S);
        int64_t ni, j;
        double sg = 0, sgx = 0, mg, mgx; /* sum(gy), sum(gy * xhat) over the channel */
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) {
                int64_t k = (ni * C + c) * S + j;
                sg += pg[k];
                sgx += (double)pg[k] * ((px[k] - pm[c]) * inv);
            }
        if (pgb) pgb[c] += (float)sg;
        if (pgw) pgw[c] += (float)sgx;
        if (!pgx) continue;
        /* batch statistics: dx = w inv (gy - mean(gy) - xhat mean(gy xhat)); else dx = w inv gy */
        mg = batch_stats ? sg / M : 0;
        mgx = batch_stats ? sgx / M : 0;
        for (ni = 0; ni < N; ni++)
            for (j = 0; j < S; j++) {
                int64_t k = (ni * C + c) * S + j;
                double xh = (px[k] - pm[c]) * inv;
                pgx[k] += (float)(wc * inv * (pg[k] - mg - xh * mgx));
            }
    }
}
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
        /* nn */ be.softmax = hv__cpu_softmax;
        /* nn */ be.softmax_bwd = hv__cpu_softmax_bwd;
        /* nn */ be.layer_norm = hv__cpu_layer_norm;
        /* nn */ be.layer_norm_bwd = hv__cpu_layer_norm_bwd;
        /* nn */ be.attention = hv__cpu_attention;
        /* nn */ be.attention_bwd = hv__cpu_attention_bwd;
        /* nn */ be.gather = hv__cpu_gather;
        /* nn */ be.scatter_add = hv__cpu_scatter_add;
        /* nn */ be.cross_entropy = hv__cpu_cross_entropy;
        /* nn */ be.cross_entropy_bwd = hv__cpu_cross_entropy_bwd;
        /* nn */ be.topk_correct = hv__cpu_topk_correct;
        /* nn */ be.diff_loss = hv__cpu_diff_loss;
        /* nn */ be.diff_loss_bwd = hv__cpu_diff_loss_bwd;
        /* conv */ be.conv2d = hv__cpu_conv2d;
        /* conv */ be.conv2d_bwd_data = hv__cpu_conv2d_bwd_data;
        /* conv */ be.conv2d_bwd_weight = hv__cpu_conv2d_bwd_weight;
        /* conv */ be.max_pool2d = hv__cpu_max_pool2d;
        /* conv */ be.max_pool2d_bwd = hv__cpu_max_pool2d_bwd;
        /* conv */ be.avg_pool2d = hv__cpu_avg_pool2d;
        /* conv */ be.avg_pool2d_bwd = hv__cpu_avg_pool2d_bwd;
        /* conv */ be.resize_bilinear = hv__cpu_resize_bilinear;
        /* conv */ be.resize_bilinear_bwd = hv__cpu_resize_bilinear_bwd;
        /* conv */ be.batch_norm_stats = hv__cpu_batch_norm_stats;
        /* conv */ be.batch_norm_running = hv__cpu_batch_norm_running;
        /* conv */ be.batch_norm = hv__cpu_batch_norm;
        /* conv */ be.batch_norm_bwd = hv__cpu_batch_norm_bwd;
        /* HV-SECTION cpu-table END */
        be.name = "cpu";
    }
    return &be;
}

/* ==== 9. LAYERS AND MODELS: transformer block, ViT, MAE ======================================== */

/* ---- named parameter lists ------------------------------------------------------------------ */

typedef struct hv__plist {
    int count, cap;
    char **names;
    hv_tensor **tensors;
    hv_param_list pub;
} hv__plist;

static void hv__plist_free(hv__plist *pl) {
    int i;
    for (i = 0; i < pl->count; i++) hv__free(pl->names[i]);
    hv__free(pl->names);
    hv__free(pl->tensors);
    memset(pl, 0, sizeof *pl);
}
static int hv__plist_add(hv__plist *pl, const char *name, hv_tensor *t) {
    size_t len = strlen(name);
    if (pl->count == pl->cap) {
        int cap = pl->cap ? pl->cap * 2 : 64;
        char **n = (char **)hv__malloc(sizeof(char *) * (size_t)cap);
        hv_tensor **ts = (hv_tensor **)hv__malloc(sizeof(hv_tensor *) * (size_t)cap);
        if (!n || !ts) {
            hv__free(n);
            hv__free(ts);
            return -1;
        }
        if (pl->count) {
            memcpy(n, pl->names, sizeof(char *) * (size_t)pl->count);
            memcpy(ts, pl->tensors, sizeof(hv_tensor *) * (size_t)pl->count);
        }
        hv__free(pl->names);
        hv__free(pl->tensors);
        pl->names = n;
        pl->tensors = ts;
        pl->cap = cap;
    }
    pl->names[pl->count] = (char *)hv__malloc(len + 1);
    if (!pl->names[pl->count]) return -1;
    memcpy(pl->names[pl->count], name, len + 1);
    pl->tensors[pl->count++] = t;
    pl->pub.count = pl->count;
    pl->pub.names = (const char *const *)pl->names;
    pl->pub.tensors = pl->tensors;
    return 0;
}
/* a persistent zero tensor registered as prefix+name; NULL (error set) when out of memory */
static hv_tensor *hv__param(hv__plist *pl, hv_ctx *ctx, const char *prefix, const char *name, int ndim, const int64_t *shape,
                            int trainable) {
    char full[128];
    hv_tensor *t = hv__alloc(ctx, HV_F32, ndim, shape, 1);
    if (!t) return NULL;
    snprintf(full, sizeof full, "%s%s", prefix, name);
    hv_tensor_set_name(t, full);
    hv_set_trainable(t, trainable);
    if (hv__plist_add(pl, full, t)) {
        hv_tensor_free(t);
        return (hv_tensor *)hv__fail("hv_model", "out of memory registering %s", full);
    }
    return t;
}
static hv_tensor *hv__param1(hv__plist *pl, hv_ctx *ctx, const char *prefix, const char *name, int64_t n, int trainable) {
    return hv__param(pl, ctx, prefix, name, 1, &n, trainable);
}
static hv_tensor *hv__param2(hv__plist *pl, hv_ctx *ctx, const char *prefix, const char *name, int64_t r, int64_t c) {
    int64_t s[2];
    s[0] = r;
    s[1] = c;
    return hv__param(pl, ctx, prefix, name, 2, s, 1);
}

/* xavier_uniform over a weight seen as (fan_out, fan_in), as the MAE initialisation */
static void hv__xavier_uniform(hv_tensor *w, int64_t fan_out, int64_t fan_in) {
    float a = sqrtf(6.0f / (float)(fan_in + fan_out)), *p = (float *)w->data;
    int64_t i, n = hv_numel(w);
    for (i = 0; i < n; i++) p[i] = a * (2.0f * hv_rng_uniform(w->ctx) - 1.0f);
}
static void hv__normal_fill(hv_tensor *t, float std) {
    float *p = (float *)t->data;
    int64_t i, n = hv_numel(t);
    for (i = 0; i < n; i++) p[i] = std * hv_rng_normal(t->ctx);
}

/* ---- linear layer and LayerNorm as parameter pairs ------------------------------------------ */

typedef struct hv__linear {
    hv_tensor *w, *b; /* (out, in), (out) */
} hv__linear;
static int hv__linear_init(hv__linear *l, hv__plist *pl, hv_ctx *ctx, const char *prefix, int64_t in, int64_t out) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", prefix);
    l->w = hv__param2(pl, ctx, "", name, out, in);
    snprintf(name, sizeof name, "%s.bias", prefix);
    l->b = l->w ? hv__param1(pl, ctx, "", name, out, 1) : NULL;
    if (!l->b) return -1;
    hv__xavier_uniform(l->w, out, in);
    return 0;
}
typedef struct hv__norm {
    hv_tensor *w, *b;
    float eps;
} hv__norm;
static int hv__norm_init(hv__norm *n, hv__plist *pl, hv_ctx *ctx, const char *prefix, int64_t dim, float eps) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", prefix);
    n->w = hv__param1(pl, ctx, "", name, dim, 1);
    snprintf(name, sizeof name, "%s.bias", prefix);
    n->b = n->w ? hv__param1(pl, ctx, "", name, dim, 1) : NULL;
    n->eps = eps;
    if (!n->b) return -1;
    hv_tensor_fill(n->w, 1.0f);
    return 0;
}
static hv_tensor *hv__norm_fwd(const hv__norm *n, hv_tensor *x) { return hv_layer_norm(x, n->w, n->b, n->eps); }
static hv_tensor *hv__linear_fwd(const hv__linear *l, hv_tensor *x) { return hv_linear(x, l->w, l->b); }

/* ---- the pre-norm transformer block (timm Block: qkv bias, exact GELU, no layer scale) ------- */

typedef struct hv__block {
    hv__norm norm1, norm2;
    hv__linear qkv, proj, fc1, fc2;
    int heads;
} hv__block;

static int hv__block_init(hv__block *b, hv__plist *pl, hv_ctx *ctx, const char *prefix, int64_t dim, int heads, int64_t hidden,
                          float eps) {
    char p[96];
    b->heads = heads;
#define HV__SUB(name) (snprintf(p, sizeof p, "%s.%s", prefix, name), p)
    if (hv__norm_init(&b->norm1, pl, ctx, HV__SUB("norm1"), dim, eps)) return -1;
    if (hv__linear_init(&b->qkv, pl, ctx, HV__SUB("attn.qkv"), dim, 3 * dim)) return -1;
    if (hv__linear_init(&b->proj, pl, ctx, HV__SUB("attn.proj"), dim, dim)) return -1;
    if (hv__norm_init(&b->norm2, pl, ctx, HV__SUB("norm2"), dim, eps)) return -1;
    if (hv__linear_init(&b->fc1, pl, ctx, HV__SUB("mlp.fc1"), dim, hidden)) return -1;
    if (hv__linear_init(&b->fc2, pl, ctx, HV__SUB("mlp.fc2"), hidden, dim)) return -1;
#undef HV__SUB
    return 0;
}

/* x (B, N, D) -> x + attn(norm1 x), then + mlp(norm2 x) */
static hv_tensor *hv__block_fwd(const hv__block *b, hv_tensor *x) {
    int64_t B, N, D, s5[5], s3[3];
    int perm_qkv[5] = {2, 0, 3, 1, 4}, perm_out[4] = {0, 2, 1, 3};
    hv_tensor *qkv, *q, *k, *v, *a;
    if (!x) return NULL;
    B = x->shape[0];
    N = x->shape[1];
    D = x->shape[2];
    s5[0] = B;
    s5[1] = N;
    s5[2] = 3;
    s5[3] = b->heads;
    s5[4] = D / b->heads;
    /* qkv rows are [q; k; v], each head-major: (B, N, 3D) -> (3, B, H, N, hd) */
    qkv = hv_permute(hv_reshape(hv__linear_fwd(&b->qkv, hv__norm_fwd(&b->norm1, x)), hv_shape_of(5, s5)), perm_qkv);
    if (!qkv) return NULL;
    /* strided (B, H, N, hd) views: attention reads any strides, so nothing is copied */
    q = hv_select(qkv, 0, 0);
    k = hv_select(qkv, 0, 1);
    v = hv_select(qkv, 0, 2);
    a = hv_attention(q, k, v, 0.0f); /* (B, H, N, hd), scale hd^-0.5 */
    s3[0] = B;
    s3[1] = N;
    s3[2] = D;
    a = hv_reshape(hv_permute(a, perm_out), hv_shape_of(3, s3));
    x = hv_add(x, hv__linear_fwd(&b->proj, a));
    return hv_add(x, hv__linear_fwd(&b->fc2, hv_gelu(hv__linear_fwd(&b->fc1, hv__norm_fwd(&b->norm2, x)))));
}

/* ---- patches -------------------------------------------------------------------------------- */

/* (B, C, gh*p, gw*p) -> (B, gh*gw, per-patch vector) with the vector in (channel, row, column)
   order when channel_first (the patch-embedding conv's weight layout), else (row, column, channel)
   (MAE's target layout, 'nchpwq->nhwpqc') */
static hv_tensor *hv__patches(hv_tensor *images, int patch, int channel_first, const char *op) {
    int64_t B, C, gh, gw, s6[6], s3[3];
    int perm_cf[6] = {0, 2, 4, 1, 3, 5}, perm_cl[6] = {0, 2, 4, 3, 5, 1};
    HV__CHECK_IN(images);
    if (images->ndim != 4 || patch <= 0 || images->shape[2] % patch || images->shape[3] % patch)
        return (hv_tensor *)hv__fail(op, "%s is not (B, C, H, W) with H and W multiples of the patch size %d", hv__desc("images", images),
                                     patch);
    B = images->shape[0];
    C = images->shape[1];
    gh = images->shape[2] / patch;
    gw = images->shape[3] / patch;
    s6[0] = B;
    s6[1] = C;
    s6[2] = gh;
    s6[3] = patch;
    s6[4] = gw;
    s6[5] = patch;
    s3[0] = B;
    s3[1] = gh * gw;
    s3[2] = C * patch * patch;
    return hv_reshape(hv_permute(hv_reshape(images, hv_shape_of(6, s6)), channel_first ? perm_cf : perm_cl), hv_shape_of(3, s3));
}
HVDEF hv_tensor *hv_patchify(hv_tensor *images, int patch) { return hv__patches(images, patch, 0, "hv_patchify"); }
HVDEF hv_tensor *hv_unpatchify(hv_tensor *x, int patch, int channels) {
    int64_t B, L, g, s6[6], s4[4];
    int perm[6] = {0, 5, 1, 3, 2, 4};
    HV__CHECK_IN(x);
    if (x->ndim != 3 || patch <= 0 || channels <= 0 || x->shape[2] != (int64_t)patch * patch * channels)
        return (hv_tensor *)hv__fail("hv_unpatchify", "%s is not (B, L, %d*%d*%d)", hv__desc("x", x), patch, patch, channels);
    B = x->shape[0];
    L = x->shape[1];
    for (g = 0; g * g < L; g++) {
    }
    if (g * g != L) return (hv_tensor *)hv__fail("hv_unpatchify", "%lld patches are not a square grid", (long long)L);
    /* (B, h, w, p, q, c) -> (B, c, h, p, w, q) */
    s6[0] = B;
    s6[1] = g;
    s6[2] = g;
    s6[3] = patch;
    s6[4] = patch;
    s6[5] = channels;
    s4[0] = B;
    s4[1] = channels;
    s4[2] = g * patch;
    s4[3] = g * patch;
    return hv_reshape(hv_permute(hv_reshape(x, hv_shape_of(6, s6)), perm), hv_shape_of(4, s4));
}

/* ---- position tables ------------------------------------------------------------------------ */

HVDEF int hv_sincos_pos_embed(hv_tensor *out, int grid, int dim) {
    int64_t L = (int64_t)grid * grid, m;
    int quarter = dim / 4, k;
    float *p;
    if (!out || out->dtype != HV_F32 || dim % 4 || grid <= 0 || hv_numel(out) != (L + 1) * dim || !hv_is_contiguous(out))
        return hv__fail("hv_sincos_pos_embed", "%s must be contiguous f32 with (1 + %d*%d) * %d elements and dim a multiple of 4",
                        hv__desc("out", out), grid, grid, dim), -1;
    p = (float *)out->data;
    memset(p, 0, sizeof(float) * (size_t)dim); /* the CLS row */
    for (m = 0; m < L; m++) {
        /* upstream: meshgrid(w, h) puts the column index first; each half is [sin(pos w), cos(pos w)] */
        double pos[2];
        int half;
        pos[0] = (double)(m % grid);
        pos[1] = (double)(m / grid);
        for (half = 0; half < 2; half++)
            for (k = 0; k < quarter; k++) {
                double omega = 1.0 / pow(10000.0, (double)k / quarter), a = pos[half] * omega;
                p[(m + 1) * dim + half * (dim / 2) + k] = (float)sin(a);
                p[(m + 1) * dim + half * (dim / 2) + quarter + k] = (float)cos(a);
            }
    }
    return 0;
}

/* PyTorch's cubic convolution weights (A = -0.75) for a fractional offset t in [0, 1) */
static void hv__cubic_weights(double t, double w[4]) {
    const double A = -0.75;
    double x;
    x = t + 1;
    w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    x = t;
    w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 1 - t;
    w[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
    w[3] = 1 - w[0] - w[1] - w[2];
}
HVDEF hv_tensor *hv_pos_embed_interpolate(hv_tensor *pos, int new_grid) {
    int64_t D, L, g, oy, ox, c, s3[3];
    hv_tensor *out;
    const float *src;
    float *dst;
    HV__CHECK_IN(pos);
    if (pos->ndim != 3 || pos->shape[0] != 1 || pos->dtype != HV_F32 || new_grid <= 0)
        return (hv_tensor *)hv__fail("hv_pos_embed_interpolate", "%s is not a (1, 1 + g*g, D) table (or new grid %d <= 0)",
                                     hv__desc("pos", pos), new_grid);
    D = pos->shape[2];
    L = pos->shape[1] - 1;
    for (g = 0; g * g < L; g++) {
    }
    if (g * g != L) return (hv_tensor *)hv__fail("hv_pos_embed_interpolate", "%lld positions are not a square grid", (long long)L);
    pos = hv_contiguous(pos);
    if (!pos) return NULL;
    s3[0] = 1;
    s3[1] = 1 + (int64_t)new_grid * new_grid;
    s3[2] = D;
    out = hv__alloc(pos->ctx, HV_F32, 3, s3, 1);
    if (!out) return NULL;
    src = (const float *)pos->data;
    dst = (float *)out->data;
    memcpy(dst, src, sizeof(float) * (size_t)D); /* CLS row kept */
    for (oy = 0; oy < new_grid; oy++)
        for (ox = 0; ox < new_grid; ox++) {
            /* align_corners=False source coordinates; taps clamped at the border, as upsample_bicubic2d */
            double sy = (oy + 0.5) * (double)g / new_grid - 0.5, sx = (ox + 0.5) * (double)g / new_grid - 0.5;
            double fy = floor(sy), fx = floor(sx), wy[4], wx[4];
            int i, j;
            hv__cubic_weights(sy - fy, wy);
            hv__cubic_weights(sx - fx, wx);
            for (c = 0; c < D; c++) {
                double acc = 0;
                for (i = 0; i < 4; i++) {
                    int64_t y = (int64_t)fy - 1 + i;
                    y = y < 0 ? 0 : y >= g ? g - 1 : y;
                    for (j = 0; j < 4; j++) {
                        int64_t x = (int64_t)fx - 1 + j;
                        x = x < 0 ? 0 : x >= g ? g - 1 : x;
                        acc += wy[i] * wx[j] * src[(1 + y * g + x) * D + c];
                    }
                }
                dst[(1 + oy * new_grid + ox) * D + c] = (float)acc;
            }
        }
    return out;
}


/* ---- published model ids and where their files live ----------------------------------------- */

HVDEF int hv_model_id_parse(const char *id, hv_model_id *out) {
    static const char *fractions[] = {"1.0", "0.1", "0.01", "0.001", "0.0001"};
    const char *u2, *u1;
    size_t alen, flen, i;
    char *end;
    long seed;
    memset(out, 0, sizeof *out);
    if (!id || !(u2 = strrchr(id, '_')) || u2 == id)
        return hv__fail("hv_model_id_parse", "'%s' is not a model id of the form <arch>_<fraction>_<seed>, e.g. vits14_1.0_1",
                        id ? id : "(null)"), -1;
    for (u1 = u2 - 1; u1 > id && *u1 != '_'; u1--) {
    }
    if (u1 == id) return hv__fail("hv_model_id_parse", "'%s' is not of the form <arch>_<fraction>_<seed>", id), -1;
    alen = (size_t)(u1 - id);
    flen = (size_t)(u2 - u1 - 1);
    if (alen >= sizeof out->arch || flen >= sizeof out->fraction)
        return hv__fail("hv_model_id_parse", "'%s': architecture or fraction too long", id), -1;
    memcpy(out->arch, id, alen);
    memcpy(out->fraction, u1 + 1, flen);
    out->preset = hv_vit_preset_from_name(out->arch);
    if (!out->preset)
        return hv__fail("hv_model_id_parse", "'%s': unknown architecture '%s' (vits14, vitb14, vitl14, vith14, vith14@448, vith14@476)", id,
                        out->arch), -1;
    for (i = 0; i < sizeof fractions / sizeof fractions[0]; i++)
        if (!strcmp(out->fraction, fractions[i])) break;
    if (i == sizeof fractions / sizeof fractions[0])
        return hv__fail("hv_model_id_parse", "'%s': data fraction '%s' is not one of 1.0, 0.1, 0.01, 0.001, 0.0001", id, out->fraction), -1;
    seed = strtol(u2 + 1, &end, 10);
    if (*end || end == u2 + 1 || seed < 1 || seed > 3 || (i == 0 && seed != 1))
        return hv__fail("hv_model_id_parse", "'%s': seed '%s' must be 1, 2 or 3 (only 1 for fraction 1.0)", id, u2 + 1), -1;
    out->seed = (int)seed;
    return 0;
}

/* snprintf into a fixed buffer; -1 when the text was cut (callers treat that as "no such path") */
static int hv__strf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return (r < 0 || (size_t)r >= n) ? -1 : r;
}

static int hv__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
/* the Hugging Face hub cache folder, from the same variables huggingface_hub reads */
static int hv__hf_hub_dir(char *out, size_t n) {
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v) return hv__strf(out, n, "%s", v) < 0 ? -1 : 0;
    if ((v = getenv("HF_HOME")) && *v) return hv__strf(out, n, "%s/hub", v) < 0 ? -1 : 0;
    if ((v = getenv("XDG_CACHE_HOME")) && *v) return hv__strf(out, n, "%s/huggingface/hub", v) < 0 ? -1 : 0;
    if ((v = getenv("HOME")) && *v) return hv__strf(out, n, "%s/.cache/huggingface/hub", v) < 0 ? -1 : 0;
    return -1;
}

HVDEF int hv_model_resolve(const char *id, int finetuned, const char *models_dir, char *path, size_t path_size) {
    hv_model_id mid;
    char sub[32], tried[3][512], hub[400];
    int ntried = 0, i;
    if (hv_model_id_parse(id, &mid)) return -1;
    hv__strf(sub, sizeof sub, "%s%s", finetuned ? "finetuned_" : "", mid.arch);
    if (!models_dir || !*models_dir) models_dir = getenv("HUMANVIT_MODELS");
    if (models_dir && *models_dir) {
        hv__strf(tried[ntried++], sizeof tried[0], "%s/%s/%s.pth", models_dir, sub, id);
        hv__strf(tried[ntried++], sizeof tried[0], "%s/%s.pth", models_dir, id);
    }
    if (hv__hf_hub_dir(hub, sizeof hub) == 0) {
        /* refs/main names the snapshot folder that the last download populated */
        char ref_path[512], rev[96] = {0};
        FILE *f;
        hv__strf(ref_path, sizeof ref_path, "%s/models--eminorhan--humanlike-vits/refs/main", hub);
        f = fopen(ref_path, "rb");
        if (f) {
            size_t n = fread(rev, 1, sizeof rev - 1, f);
            fclose(f);
            while (n && (rev[n - 1] == '\n' || rev[n - 1] == '\r' || rev[n - 1] == ' ')) rev[--n] = 0;
            rev[n] = 0;
        }
        hv__strf(tried[ntried++], sizeof tried[0], "%s/models--eminorhan--humanlike-vits/snapshots/%s/%s/%s.pth", hub,
                 rev[0] ? rev : "<revision>", sub, id);
    }
    for (i = 0; i < ntried; i++)
        if (!strstr(tried[i], "<revision>") && hv__file_exists(tried[i])) {
            if (strlen(tried[i]) + 1 > path_size) return hv__fail("hv_model_resolve", "path buffer too small for %s", tried[i]), -1;
            memcpy(path, tried[i], strlen(tried[i]) + 1);
            return 0;
        }
    {
        char where[1600];
        size_t n = 0;
        where[0] = 0;
        for (i = 0; i < ntried; i++) {
            int w = hv__strf(where + n, sizeof where - n, "\n  %s", tried[i]);
            if (w < 0) break;
            n += (size_t)w;
        }
        return hv__fail("hv_model_resolve",
                        "model %s (%s) not found; looked for:%s\ndownload %s/%s.pth from the Hugging Face repository eminorhan/humanlike-vits, "
                        "https://huggingface.co/eminorhan/humanlike-vits/resolve/main/%s/%s.pth, into <models-dir>/%s/ (or use "
                        "huggingface-cli download eminorhan/humanlike-vits %s/%s.pth)",
                        id, finetuned ? "finetuned" : "pretrained", where[0] ? where : " (no models directory and no HOME)", sub, id, sub, id,
                        sub, sub, id), -1;
    }
}

/* ---- ViT ------------------------------------------------------------------------------------ */

struct hv_vit {
    hv_ctx *ctx;
    hv_vit_desc d;
    hv__plist params;
    hv_tensor *cls_token, *pos_embed, *patch_w, *patch_b; /* (1,1,D) (1,1+L,D) (D,C,p,p) (D) */
    hv__block *blocks;
    hv__norm norm;                       /* "norm", or "fc_norm" with global pooling */
    hv_tensor *head_mean, *head_var, *head_count; /* head.0: BatchNorm1d(affine=False) buffers */
    hv__linear head;                     /* head.1 */
};

static const struct {
    const char *name;
    hv_vit_preset preset;
    int img, dim, depth, heads;
} hv__vit_presets[] = {
    {"vits14", HV_VIT_S14, 224, 384, 12, 6},       {"vitb14", HV_VIT_B14, 224, 768, 12, 12},
    {"vitl14", HV_VIT_L14, 224, 1024, 24, 16},     {"vith14", HV_VIT_H14, 224, 1280, 32, 16},
    {"vith14@448", HV_VIT_H14_448, 448, 1280, 32, 16}, {"vith14@476", HV_VIT_H14_476, 476, 1280, 32, 16},
};
HVDEF hv_vit_preset hv_vit_preset_from_name(const char *name) {
    size_t i;
    for (i = 0; name && i < sizeof hv__vit_presets / sizeof hv__vit_presets[0]; i++)
        if (!strcmp(name, hv__vit_presets[i].name)) return hv__vit_presets[i].preset;
    return HV_VIT_CUSTOM;
}
/* fills zero fields from the preset and the defaults; -1 with an error when inconsistent */
static int hv__vit_resolve(hv_vit_desc *d, const char *op) {
    size_t i;
    for (i = 0; i < sizeof hv__vit_presets / sizeof hv__vit_presets[0]; i++)
        if (d->preset == hv__vit_presets[i].preset) {
            if (!d->img_size) d->img_size = hv__vit_presets[i].img;
            if (!d->embed_dim) d->embed_dim = hv__vit_presets[i].dim;
            if (!d->depth) d->depth = hv__vit_presets[i].depth;
            if (!d->num_heads) d->num_heads = hv__vit_presets[i].heads;
            if (!d->patch_size) d->patch_size = 14;
        }
    if (!d->in_chans) d->in_chans = 3;
    if (d->mlp_ratio <= 0) d->mlp_ratio = 4.0f;
    if (d->ln_eps <= 0) d->ln_eps = 1e-6f;
    if (d->img_size <= 0 || d->patch_size <= 0 || d->embed_dim <= 0 || d->depth < 0 || d->num_heads <= 0 || d->num_classes < 0 ||
        d->img_size % d->patch_size || d->embed_dim % d->num_heads || d->embed_dim % 4) {
        hv__fail(op, "bad sizes: img %d, patch %d, dim %d, depth %d, heads %d, classes %d (need img a multiple of patch, dim a multiple "
                 "of heads and of 4)",
                 d->img_size, d->patch_size, d->embed_dim, d->depth, d->num_heads, d->num_classes);
        return -1;
    }
    return 0;
}

/* the encoder trunk shared by ViT and MAE: patch embedding, tokens, blocks, final norm */
static int hv__vit_build(hv_vit *v, hv_ctx *ctx) {
    const hv_vit_desc *d = &v->d;
    int64_t D = d->embed_dim, g = d->img_size / d->patch_size, s[4];
    int i;
    char prefix[32];
    v->ctx = ctx;
    s[0] = 1;
    s[1] = 1;
    s[2] = D;
    if (!(v->cls_token = hv__param(&v->params, ctx, "", "cls_token", 3, s, 1))) return -1;
    s[1] = 1 + g * g;
    if (!(v->pos_embed = hv__param(&v->params, ctx, "", "pos_embed", 3, s, !d->fixed_pos_embed))) return -1;
    s[0] = D;
    s[1] = d->in_chans;
    s[2] = d->patch_size;
    s[3] = d->patch_size;
    if (!(v->patch_w = hv__param(&v->params, ctx, "", "patch_embed.proj.weight", 4, s, 1))) return -1;
    if (!(v->patch_b = hv__param1(&v->params, ctx, "", "patch_embed.proj.bias", D, 1))) return -1;
    hv__normal_fill(v->cls_token, 0.02f);
    hv_sincos_pos_embed(v->pos_embed, (int)g, (int)D);
    hv__xavier_uniform(v->patch_w, D, (int64_t)d->in_chans * d->patch_size * d->patch_size);
    {   /* the conv bias keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): MAE re-inits only Linear and LayerNorm */
        float bound = 1.0f / sqrtf((float)d->in_chans * d->patch_size * d->patch_size), *pb = (float *)v->patch_b->data;
        for (i = 0; i < D; i++) pb[i] = bound * (2.0f * hv_rng_uniform(ctx) - 1.0f);
    }
    v->blocks = (hv__block *)hv__malloc(sizeof(hv__block) * (size_t)(d->depth ? d->depth : 1));
    if (!v->blocks) return hv__fail("hv_vit_new", "out of memory"), -1;
    for (i = 0; i < d->depth; i++) {
        snprintf(prefix, sizeof prefix, "blocks.%d", i);
        if (hv__block_init(&v->blocks[i], &v->params, ctx, prefix, D, d->num_heads, (int64_t)(D * d->mlp_ratio), d->ln_eps)) return -1;
    }
    return hv__norm_init(&v->norm, &v->params, ctx, d->global_pool ? "fc_norm" : "norm", D, d->ln_eps);
}
static void hv__vit_release(hv_vit *v) {
    int i;
    for (i = 0; i < v->params.count; i++) hv_tensor_free(v->params.tensors[i]);
    hv__plist_free(&v->params);
    hv__free(v->blocks);
}

HVDEF hv_vit *hv_vit_new(hv_ctx *ctx, const hv_vit_desc *desc) {
    hv_vit *v;
    if (!ctx) return (hv_vit *)hv__fail("hv_vit_new", "ctx is NULL");
    v = (hv_vit *)hv__malloc(sizeof *v);
    if (!v) return (hv_vit *)hv__fail("hv_vit_new", "out of memory");
    memset(v, 0, sizeof *v);
    if (desc) v->d = *desc;
    if (hv__vit_resolve(&v->d, "hv_vit_new") || hv__vit_build(v, ctx)) goto fail;
    if (v->d.num_classes) {
        int64_t D = v->d.embed_dim;
        /* BatchNorm1d(D, affine=False, eps 1e-6) then Linear(D, classes) with N(0, 0.01) weights */
        if (!(v->head_mean = hv__param1(&v->params, ctx, "", "head.0.running_mean", D, 0))) goto fail;
        if (!(v->head_var = hv__param1(&v->params, ctx, "", "head.0.running_var", D, 0))) goto fail;
        /* a 0-dim int64 in PyTorch; an i32 scalar here */
        if (!(v->head_count = hv__param(&v->params, ctx, "", "head.0.num_batches_tracked", 0, NULL, 0))) goto fail;
        v->head_count->dtype = HV_I32; /* same 4 bytes, zeroed */
        hv_tensor_fill(v->head_var, 1.0f);
        if (hv__linear_init(&v->head, &v->params, ctx, "head.1", D, v->d.num_classes)) goto fail;
        hv__normal_fill(v->head.w, 0.01f);
    }
    return v;
fail:
    hv__vit_release(v);
    hv__free(v);
    return NULL;
}
HVDEF void hv_vit_free(hv_vit *vit) {
    if (!vit) return;
    hv__vit_release(vit);
    hv__free(vit);
}
HVDEF hv_vit_desc hv_vit_config(const hv_vit *vit) { return vit->d; }
HVDEF const hv_param_list *hv_vit_params(hv_vit *vit) { return vit ? &vit->params.pub : NULL; }

/* images -> patch tokens plus their positions (B, L, D), as the patch conv (weights (D, C, p, p))
   computed as one matrix product over unfolded patches */
static hv_tensor *hv__vit_embed(hv_vit *v, hv_tensor *images, const char *op) {
    const hv_vit_desc *d = &v->d;
    int64_t L = (int64_t)(d->img_size / d->patch_size) * (d->img_size / d->patch_size), w2[2];
    HV__CHECK_IN(images);
    if (images->ndim != 4 || images->shape[1] != d->in_chans || images->shape[2] != d->img_size || images->shape[3] != d->img_size)
        return (hv_tensor *)hv__fail(op, "%s does not match the model's (B, %d, %d, %d) input", hv__desc("images", images), d->in_chans,
                                     d->img_size, d->img_size);
    w2[0] = d->embed_dim;
    w2[1] = (int64_t)d->in_chans * d->patch_size * d->patch_size;
    return hv_add(hv_linear(hv__patches(images, d->patch_size, 1, op), hv_reshape(v->patch_w, hv_shape_of(2, w2)), v->patch_b),
                  hv_slice(v->pos_embed, 1, 1, 1 + L, 1));
}
/* (B, n, D) tokens -> CLS (with its position) prepended, through the blocks and the final norm */
static hv_tensor *hv__vit_trunk(hv_vit *v, hv_tensor *x, int apply_norm) {
    int64_t s[3];
    hv_tensor *parts[2], *cls;
    int i;
    HV__CHECK_IN(x);
    s[0] = x->shape[0];
    s[1] = 1;
    s[2] = v->d.embed_dim;
    /* the (1, 1, D) token broadcast over the batch by adding it to zeros */
    cls = hv_add(hv_add(v->cls_token, hv_slice(v->pos_embed, 1, 0, 1, 1)), hv_tensor_temp(v->ctx, HV_F32, hv_shape_of(3, s)));
    parts[0] = cls;
    parts[1] = x;
    x = hv_concat(parts, 2, 1);
    for (i = 0; i < v->d.depth; i++) x = hv__block_fwd(&v->blocks[i], x);
    return apply_norm ? hv__norm_fwd(&v->norm, x) : x;
}
HVDEF hv_tensor *hv_vit_forward_tokens(hv_vit *vit, hv_tensor *images) {
    if (!vit) return (hv_tensor *)hv__fail("hv_vit_forward_tokens", "vit is NULL");
    if (vit->d.global_pool) return (hv_tensor *)hv__fail("hv_vit_forward_tokens", "a global-pool ViT has no final token norm");
    return hv__vit_trunk(vit, hv__vit_embed(vit, images, "hv_vit_forward_tokens"), 1);
}
HVDEF hv_tensor *hv_vit_forward(hv_vit *vit, hv_tensor *images, int training) {
    hv_tensor *x, *feat;
    int axis1 = 1;
    if (!vit) return (hv_tensor *)hv__fail("hv_vit_forward", "vit is NULL");
    x = hv__vit_trunk(vit, hv__vit_embed(vit, images, "hv_vit_forward"), !vit->d.global_pool);
    HV__CHECK_IN(x);
    if (vit->d.global_pool) feat = hv__norm_fwd(&vit->norm, hv_mean(hv_slice(x, 1, 1, x->shape[1], 1), 1, &axis1, 0));
    else {
        int64_t s2[2];
        s2[0] = x->shape[0];
        s2[1] = x->shape[2];
        feat = hv_reshape(hv_slice(x, 1, 0, 1, 1), hv_shape_of(2, s2)); /* the CLS token */
    }
    if (!vit->d.num_classes) return feat;
    {
        hv_tensor *bn = hv_batch_norm(feat, NULL, NULL, vit->head_mean, vit->head_var, training, 0.1f, 1e-6f);
        if (bn && training) hv_data_i32(vit->head_count)[0] += 1;
        return hv__linear_fwd(&vit->head, bn);
    }
}

/* ---- MAE ------------------------------------------------------------------------------------ */

struct hv_mae {
    hv_ctx *ctx;
    hv_mae_desc d;
    hv_vit enc;                   /* the encoder: its parameters are the first keys */
    hv__plist params;             /* encoder keys then decoder keys (borrowed tensors) */
    hv__plist dec_params;         /* the decoder's own tensors */
    hv_tensor *mask_token, *dec_pos; /* (1, 1, Dd), (1, 1 + L, Dd) */
    hv__linear dec_embed, dec_pred;
    hv__block *dec_blocks;
    hv__norm dec_norm;
};

static void hv__mae_release(hv_mae *m) {
    int i;
    hv__vit_release(&m->enc);
    for (i = 0; i < m->dec_params.count; i++) hv_tensor_free(m->dec_params.tensors[i]);
    hv__plist_free(&m->dec_params);
    hv__plist_free(&m->params);
    hv__free(m->dec_blocks);
}

HVDEF hv_mae *hv_mae_new(hv_ctx *ctx, const hv_mae_desc *desc) {
    hv_mae *m;
    hv_mae_desc *d;
    int64_t Dd, L, g, s[3];
    int i;
    char prefix[40];
    if (!ctx) return (hv_mae *)hv__fail("hv_mae_new", "ctx is NULL");
    m = (hv_mae *)hv__malloc(sizeof *m);
    if (!m) return (hv_mae *)hv__fail("hv_mae_new", "out of memory");
    memset(m, 0, sizeof *m);
    if (desc) m->d = *desc;
    d = &m->d;
    m->ctx = ctx;
    d->encoder.num_classes = 0;
    d->encoder.global_pool = 0;
    d->encoder.fixed_pos_embed = 1;
    if (!d->decoder_embed_dim) d->decoder_embed_dim = 512;
    if (!d->decoder_depth) d->decoder_depth = 8;
    if (!d->decoder_num_heads) d->decoder_num_heads = 16;
    if (d->mask_ratio == 0) d->mask_ratio = 0.75f;
    m->enc.d = d->encoder;
    if (hv__vit_resolve(&m->enc.d, "hv_mae_new")) goto fail;
    d->encoder = m->enc.d;
    g = d->encoder.img_size / d->encoder.patch_size;
    L = g * g;
    if (d->mask_ratio < 0 || d->mask_ratio >= 1 || (int64_t)(L * (1.0 - d->mask_ratio)) < 1 || d->decoder_embed_dim % 4 ||
        d->decoder_embed_dim % d->decoder_num_heads || d->decoder_depth < 0) {
        hv__fail("hv_mae_new", "bad settings: mask ratio %g (must keep at least one of %lld patches), decoder dim %d, heads %d, depth %d",
                 (double)d->mask_ratio, (long long)L, d->decoder_embed_dim, d->decoder_num_heads, d->decoder_depth);
        goto fail;
    }
    if (hv__vit_build(&m->enc, ctx)) goto fail;
    Dd = d->decoder_embed_dim;
    s[0] = 1;
    s[1] = 1;
    s[2] = Dd;
    if (!(m->mask_token = hv__param(&m->dec_params, ctx, "", "mask_token", 3, s, 1))) goto fail;
    if (hv__linear_init(&m->dec_embed, &m->dec_params, ctx, "decoder_embed", d->encoder.embed_dim, Dd)) goto fail;
    s[1] = 1 + L;
    if (!(m->dec_pos = hv__param(&m->dec_params, ctx, "", "decoder_pos_embed", 3, s, 0))) goto fail;
    hv__normal_fill(m->mask_token, 0.02f);
    hv_sincos_pos_embed(m->dec_pos, (int)g, (int)Dd);
    m->dec_blocks = (hv__block *)hv__malloc(sizeof(hv__block) * (size_t)(d->decoder_depth ? d->decoder_depth : 1));
    if (!m->dec_blocks) goto fail;
    for (i = 0; i < d->decoder_depth; i++) {
        snprintf(prefix, sizeof prefix, "decoder_blocks.%d", i);
        if (hv__block_init(&m->dec_blocks[i], &m->dec_params, ctx, prefix, Dd, d->decoder_num_heads, (int64_t)(Dd * d->encoder.mlp_ratio),
                           d->encoder.ln_eps))
            goto fail;
    }
    if (hv__norm_init(&m->dec_norm, &m->dec_params, ctx, "decoder_norm", Dd, d->encoder.ln_eps)) goto fail;
    if (hv__linear_init(&m->dec_pred, &m->dec_params, ctx, "decoder_pred", Dd,
                        (int64_t)d->encoder.patch_size * d->encoder.patch_size * d->encoder.in_chans))
        goto fail;
    for (i = 0; i < m->enc.params.count; i++)
        if (hv__plist_add(&m->params, m->enc.params.names[i], m->enc.params.tensors[i])) goto fail;
    for (i = 0; i < m->dec_params.count; i++)
        if (hv__plist_add(&m->params, m->dec_params.names[i], m->dec_params.tensors[i])) goto fail;
    return m;
fail:
    hv__mae_release(m);
    hv__free(m);
    return NULL;
}
HVDEF void hv_mae_free(hv_mae *mae) {
    if (!mae) return;
    hv__mae_release(mae);
    hv__free(mae);
}
HVDEF const hv_param_list *hv_mae_params(hv_mae *mae) { return mae ? &mae->params.pub : NULL; }

/* per row of noise: ids_shuffle = argsort(noise) (ties by index), ids_restore its inverse, and
   mask[l] = 1 where patch l is hidden (not among the first `keep` of the shuffle) */
static void hv__mae_masking(const float *noise, int64_t B, int64_t L, int64_t keep, int32_t *ids_keep, int32_t *ids_restore,
                            float *mask, int32_t *shuffle) {
    int64_t b, i, j;
    for (b = 0; b < B; b++) {
        const float *nz = noise + b * L;
        int32_t *sh = shuffle + b * L;
        for (i = 0; i < L; i++) { /* insertion sort: L is at most a few thousand */
            int32_t cur = (int32_t)i;
            for (j = i; j > 0 && (nz[sh[j - 1]] > nz[cur] || (nz[sh[j - 1]] == nz[cur] && sh[j - 1] > cur)); j--) sh[j] = sh[j - 1];
            sh[j] = cur;
        }
        for (i = 0; i < L; i++) {
            ids_restore[b * L + sh[i]] = (int32_t)i;
            if (i < keep) ids_keep[b * keep + i] = sh[i];
        }
        for (i = 0; i < L; i++) mask[b * L + i] = ids_restore[b * L + i] >= keep ? 1.0f : 0.0f;
    }
}

HVDEF hv_tensor *hv_mae_forward(hv_mae *mae, hv_tensor *images, hv_tensor *noise, hv_tensor **pred_out, hv_tensor **mask_out) {
    hv_ctx *ctx;
    const hv_vit_desc *e;
    int64_t B, L, K, Dd, s2[2], s3[3];
    hv_tensor *x, *ids_keep, *ids_restore, *mask, *shuffle, *dec, *parts[2], *pred, *target, *loss;
    int i, last = -1;
    if (!mae) return (hv_tensor *)hv__fail("hv_mae_forward", "mae is NULL");
    ctx = mae->ctx;
    e = &mae->enc.d;
    x = hv__vit_embed(&mae->enc, images, "hv_mae_forward"); /* (B, L, D) */
    HV__CHECK_IN(x);
    B = x->shape[0];
    L = x->shape[1];
    K = (int64_t)(L * (1.0 - mae->d.mask_ratio));
    Dd = mae->d.decoder_embed_dim;
    s2[0] = B;
    s2[1] = L;
    if (noise) {
        if (noise->dtype != HV_F32 || noise->ndim != 2 || noise->shape[0] != B || noise->shape[1] != L)
            return (hv_tensor *)hv__fail("hv_mae_forward", "%s must be f32 (%lld, %lld)", hv__desc("noise", noise), (long long)B, (long long)L);
        noise = hv_contiguous(noise);
    } else {
        int64_t j;
        noise = hv_tensor_temp(ctx, HV_F32, hv_shape_of(2, s2));
        for (j = 0; noise && j < B * L; j++) ((float *)noise->data)[j] = hv_rng_uniform(ctx);
    }
    ids_restore = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    shuffle = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    mask = hv_tensor_temp(ctx, HV_F32, hv_shape_of(2, s2));
    s2[1] = K;
    ids_keep = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    if (!noise || !ids_restore || !shuffle || !mask || !ids_keep) return NULL;
    hv__mae_masking((const float *)noise->data, B, L, K, (int32_t *)ids_keep->data, (int32_t *)ids_restore->data, (float *)mask->data,
                    (int32_t *)shuffle->data);

    /* encoder on the kept patches */
    x = hv__vit_trunk(&mae->enc, hv_gather(x, 1, ids_keep), 1); /* (B, 1 + K, D) */
    /* decoder: embed, append mask tokens, unshuffle, add positions */
    dec = hv__linear_fwd(&mae->dec_embed, x);                   /* (B, 1 + K, Dd) */
    s3[0] = B;
    s3[1] = L - K;
    s3[2] = Dd;
    parts[0] = hv_slice(dec, 1, 1, 1 + K, 1);
    parts[1] = hv_add(mae->mask_token, hv_tensor_temp(ctx, HV_F32, hv_shape_of(3, s3)));
    x = hv_gather(hv_concat(parts, 2, 1), 1, ids_restore);       /* (B, L, Dd) */
    parts[0] = hv_slice(dec, 1, 0, 1, 1);
    parts[1] = x;
    x = hv_add(hv_concat(parts, 2, 1), mae->dec_pos);            /* (B, 1 + L, Dd) */
    for (i = 0; i < mae->d.decoder_depth; i++) x = hv__block_fwd(&mae->dec_blocks[i], x);
    x = hv__linear_fwd(&mae->dec_pred, hv__norm_fwd(&mae->dec_norm, x));
    HV__CHECK_IN(x);
    pred = hv_slice(x, 1, 1, 1 + L, 1);                          /* (B, L, p*p*C) */

    /* target: the image's patches, optionally normalised per patch */
    target = hv_patchify(images, e->patch_size);
    if (target && mae->d.norm_pix_loss) {
        int64_t n = target->shape[2];
        hv_tensor *mean = hv_mean(target, 1, &last, 1), *centred = hv_sub(target, mean);
        hv_tensor *var = hv_scale(hv_sum(hv_mul(centred, centred), 1, &last, 1), (float)(1.0 / (double)(n - 1)));
        target = hv_div(centred, hv_sqrt(hv_add_scalar(var, 1e-6f)));
    }
    loss = hv_mean(hv_mul(hv_sub(pred, target), hv_sub(pred, target)), 1, &last, 0); /* (B, L) per patch */
    loss = hv_masked_mean(loss, mask);
    if (pred_out) *pred_out = pred;
    if (mask_out) *mask_out = mask;
    return loss;
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

/* ==== 10. IMAGES: decoding, resizing, .npy ==================================================== */
/* HV-SECTION images BEGIN */
/* HV-SECTION images END */

#endif /* HUMANVIT_IMPLEMENTATION_DONE */
#endif /* HUMANVIT_IMPLEMENTATION */
