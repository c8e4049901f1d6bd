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
       7b. Implementation: Vulkan backend glue ("VULKAN GLUE", under HUMANVIT_VULKAN)
       8. Implementation: checkpoint formats (safetensors, PyTorch .pth)
       9. Implementation: layers and models (transformer block, ViT, MAE)

   OPTIONS (define before including the implementation)
       HUMANVIT_STATIC          all public functions become static (HVDEF = static)
       HV_MALLOC/HV_REALLOC/HV_FREE   all or none: replace malloc/realloc/free
       HV_ASSERT(x)             internal invariants only (default: assert); user mistakes never assert
       _OPENMP                  (set by -fopenmp) kernels run multi-threaded; results are
                                bit-identical for any thread count (see DETERMINISM)
       HUMANVIT_VULKAN          compile in the Vulkan backend (see VULKAN); needs the Vulkan
                                headers and kernels_vulkan/hv_shaders.h next to this file

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

   VULKAN
       With HUMANVIT_VULKAN defined (in the implementation file), hv_init(&(hv_init_desc){
       .backend = HV_BACKEND_VULKAN }) makes a context whose tensors live in GPU memory and whose
       ops run as compute shaders (the .comp files of kernels_vulkan/, compiled into hv_shaders.h there,
       committed: no shader compiler needed to use it). Nothing to link: the Vulkan loader is opened
       at run time; without one, or without a device, hv_init returns NULL and says why (CPU
       contexts are unaffected). The device: hv_init_desc.device or $HUMANVIT_VULKAN_DEVICE, an
       index or part of a name; default the first discrete GPU, then integrated, virtual, CPU
       (Mesa's lavapipe). A context has one backend. Tensors move only explicitly:
       hv_tensor_to(t, other_ctx) copies across; an op given tensors of two backends fails with an
       error. Data goes in and out with hv_tensor_copy_from/copy_to (and hv_item); hv_data()
       returns NULL for device tensors. Ops are recorded, not run: the work is submitted once when
       the host needs a value (copy_to, hv_item, an index check), at hv_step_end or hv_sync, so
       read results at the end of a step. Results match the CPU within ~1e-6 of their scale (the
       device sums in float, in another order). Work on tensors over the device's
       maxStorageBufferRange (lavapipe: 128 MiB) is split (elementwise, GEMM, reductions; attention
       over batch and heads; norms, softmax, losses and indexing over rows; conv and pools over
       images); what cannot be split (one softmax row, batch-norm statistics, the MSE/L1 sum)
       fails with an error. Not yet: f16/bf16, asynchronous double buffering.
       Environment, for tests and odd drivers: HUMANVIT_VULKAN_LOADER (the loader library),
       HUMANVIT_VULKAN_MAX_RANGE / _MAX_ALLOC / _STAGING (shrink the device limits, bytes).

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
    HV_BACKEND_VULKAN = 1, /* compiled in with HUMANVIT_VULKAN (see VULKAN below) */
    HV_BACKEND_CUDA = 2    /* reserved: not compiled in yet */
} hv_backend_kind;

typedef struct hv_init_desc {
    hv_backend_kind backend; /* default CPU */
    uint64_t seed;           /* default 0 (a valid seed) */
    int threads;             /* 0: all the machine's cores (OpenMP builds), else exactly this */
    size_t arena_bytes;      /* first arena chunk; 0: 16 MiB. It grows as needed. */
    const char *device;      /* Vulkan: device index ("1") or name substring ("llvmpipe"); NULL:
                                $HUMANVIT_VULKAN_DEVICE, else the first discrete GPU, then
                                integrated, virtual, CPU (lavapipe) */
} hv_init_desc;

HVDEF hv_ctx *hv_init(const hv_init_desc *desc); /* NULL desc: all defaults */
HVDEF void hv_shutdown(hv_ctx *ctx);              /* frees every tensor the context made */
HVDEF void hv_set_threads(hv_ctx *ctx, int threads);
HVDEF int hv_get_threads(const hv_ctx *ctx);
HVDEF void hv_step_end(hv_ctx *ctx);              /* release the step's arena and tape */
HVDEF size_t hv_arena_used(const hv_ctx *ctx);    /* bytes of the arena in use now */
HVDEF hv_backend_kind hv_ctx_backend(const hv_ctx *ctx);
HVDEF const char *hv_ctx_device_name(const hv_ctx *ctx); /* "cpu", or the Vulkan device's name */
HVDEF void hv_sync(hv_ctx *ctx); /* submit queued device work and wait for it; no-op on CPU */
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
HVDEF float *hv_data(hv_tensor *t);       /* CPU f32 data of element 0 (NULL for other dtypes and
                                             for tensors in device memory: use copy_to/copy_from) */
HVDEF int32_t *hv_data_i32(hv_tensor *t); /* CPU i32 data of element 0 (NULL likewise) */
HVDEF float hv_item(const hv_tensor *t);  /* value of a one-element tensor (NAN on error) */
HVDEF void hv_tensor_set_name(hv_tensor *t, const char *name);
HVDEF const char *hv_tensor_name(const hv_tensor *t);
/* moving between backends is explicit: a new persistent tensor in ctx (any backend) with t's
   dtype, shape and values; no gradient history. Tensors of different contexts never meet in an op. */
HVDEF hv_tensor *hv_tensor_to(hv_tensor *t, hv_ctx *ctx);
/* dst = src in place (any strides, same context, dtype and shape); not recorded on the tape:
   for parameter updates and optimizer state. 0 or -1 */
HVDEF int hv_tensor_assign(hv_tensor *dst, const hv_tensor *src);

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
/* gives back the bytes of p when it is the newest allocation (LIFO scratch); else they stay
   until the reset */
static void hv__arena_pop(hv__arena *a, void *p) {
    hv__chunk *c = a->head;
    if (c && (char *)p >= hv__chunk_base(c) && (char *)p < hv__chunk_base(c) + c->used) {
        size_t off = (size_t)((char *)p - hv__chunk_base(c));
        if (off < c->used) c->used = off; /* p and everything after it (there is nothing after it in LIFO use) */
    }
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
    void *data;                  /* element 0 of this view: a host pointer, or for device
                                    storage (buf set) the backend's device address */
    void *alloc;                 /* owned allocation of a persistent tensor, else NULL */
    void *buf;                   /* device storage holding data (backend-specific); NULL: data is
                                    host memory, as on the CPU backend. Views share it. */
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

/* one AdamW update of a parameter (PyTorch semantics, decoupled weight decay); bias
   corrections bc1 = 1 - beta1^step and bc2 = 1 - beta2^step are computed by the caller */
typedef struct hv__adamw_args {
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
} hv__adamw_args;

struct hv__backend {
    const char *name;
    /* storage. NULL on the CPU, whose memory is HV_MALLOC's and the arena's; a device backend
       returns device addresses (see hv_tensor.data) and sets *buf. Memory comes back zeroed.
       persistent 0: the step's pool, released all at once by step_end. NULL when out of memory
       (the error is set). */
    void *(*mem_alloc)(hv_ctx *ctx, size_t bytes, int persistent, void **buf);
    void (*mem_free)(hv_ctx *ctx, void *data, size_t bytes);
    /* contiguous device tensor <-> dense host bytes (numel * element size). 0 or -1 */
    int (*write)(hv_ctx *ctx, hv_tensor *dst, const void *host);
    int (*read)(hv_ctx *ctx, void *host, const hv_tensor *src);
    void (*sync)(hv_ctx *ctx);     /* submit queued work and wait */
    void (*step_end)(hv_ctx *ctx); /* after the tape and arena reset: release the step's pool */
    void (*shutdown)(hv_ctx *ctx);
    const char *(*device_name)(const hv_ctx *ctx);
    /* optimizer updates: p, m, v and g contiguous, same shape; m and v updated in place */
    void (*adamw)(hv_ctx *ctx, hv_tensor *p, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a);
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
    hv_backend_kind kind;
    void *dev; /* the backend's device state (Vulkan: instance, device, pools); NULL on the CPU */
    int kernel_failed; /* a device kernel could not run (error set): the op fails in hv__record */
    int threads;
    int grad_enabled;
    uint64_t rng[4];
    hv__arena arena;
    hv_tensor *tape;     /* newest recorded tensor */
    hv_tensor *persist;  /* newest persistent tensor */
};

static const hv__backend *hv__cpu_backend(void);
#ifdef HUMANVIT_VULKAN
static int hv__vk_init(hv_ctx *ctx, const hv_init_desc *desc); /* section 7b; 0 or -1 */
#endif

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
#ifdef HUMANVIT_VULKAN
    if (d.backend != HV_BACKEND_CPU && d.backend != HV_BACKEND_VULKAN)
        return (hv_ctx *)hv__fail("hv_init", "backend %d is not compiled in (HV_BACKEND_CPU and HV_BACKEND_VULKAN are)", (int)d.backend);
#else
    if (d.backend != HV_BACKEND_CPU)
        return (hv_ctx *)hv__fail("hv_init", "backend %d is not compiled in (only HV_BACKEND_CPU is available; define HUMANVIT_VULKAN "
                                  "for HV_BACKEND_VULKAN)", (int)d.backend);
#endif
    if (d.threads < 0) return (hv_ctx *)hv__fail("hv_init", "threads must be >= 0, got %d", d.threads);
    ctx = (hv_ctx *)hv__malloc(sizeof *ctx);
    if (!ctx) return (hv_ctx *)hv__fail("hv_init", "out of memory");
    memset(ctx, 0, sizeof *ctx);
    ctx->be = hv__cpu_backend();
    ctx->kind = HV_BACKEND_CPU;
    ctx->grad_enabled = 1;
    ctx->arena.first_size = d.arena_bytes ? d.arena_bytes : ((size_t)16 << 20);
    hv_set_threads(ctx, d.threads);
    hv_rng_seed(ctx, d.seed);
#ifdef HUMANVIT_VULKAN
    /* the device backend: kernels on the GPU, host work (RNG, index checks) stays on this CPU */
    if (d.backend == HV_BACKEND_VULKAN && hv__vk_init(ctx, &d)) {
        hv__free(ctx);
        return NULL; /* hv__vk_init said why */
    }
#endif
    return ctx;
}
HVDEF hv_backend_kind hv_ctx_backend(const hv_ctx *ctx) { return ctx->kind; }
HVDEF const char *hv_ctx_device_name(const hv_ctx *ctx) { return ctx->be->device_name ? ctx->be->device_name(ctx) : "cpu"; }
HVDEF void hv_sync(hv_ctx *ctx) {
    if (ctx && ctx->be->sync) ctx->be->sync(ctx);
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
    if (ctx->be->shutdown) ctx->be->shutdown(ctx); /* device memory, pipelines, the device */
    hv__arena_free(&ctx->arena);
    hv__free(ctx);
}

HVDEF void hv_step_end(hv_ctx *ctx) {
    hv_tensor *t;
    /* persistent tensors must not keep pointers into the arena that is about to be reused */
    for (t = ctx->persist; t; t = t->plist_prev)
        if (t->grad && !t->grad->persistent) t->grad = NULL;
    ctx->tape = NULL;
    ctx->kernel_failed = 0;
    hv__arena_reset(&ctx->arena);
    if (ctx->be->step_end) ctx->be->step_end(ctx); /* device: finish the step's work, reset its pool */
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
    if (ctx->be->mem_alloc) { /* device storage (zeroed by the backend); the header stays on the host */
        t->data = ctx->be->mem_alloc(ctx, bytes, persistent, &t->buf);
        if (persistent) t->alloc = t->data;
        if (!t->data) {
            if (persistent) hv_tensor_free(t);
            return NULL; /* the backend named the failure */
        }
        return t;
    }
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
    v->buf = x->buf;
    return v;
}

/* Host access to the elements of a contiguous tensor, for the few places where the library
   itself computes on the host (initialisers, index checks, MAE masking): on the CPU backend the
   data itself; for device storage a host copy in the arena, downloaded when `read`, uploaded
   by hv__host_end when `write`. NULL when out of memory (error set). */
static void *hv__host_begin(hv_tensor *t, int read) {
    size_t bytes;
    void *p;
    if (!t->buf) return t->data;
    bytes = (size_t)hv_numel(t) * hv__dtype_size(t->dtype);
    p = hv__arena_alloc(&t->ctx->arena, bytes ? bytes : 1);
    if (!p) return hv__fail("hv_tensor", "out of memory for a %zu-byte host copy of %s", bytes, hv__desc("tensor", t));
    if (read && t->ctx->be->read(t->ctx, p, t)) return NULL;
    return p;
}
static int hv__host_end(hv_tensor *t, void *p, int write) {
    int r = 0;
    if (!t->buf || !p) return p ? 0 : -1;
    if (write) r = t->ctx->be->write(t->ctx, t, p);
    hv__arena_pop(&t->ctx->arena, p);
    return r;
}

static void hv__tensor_release(hv_tensor *t) {
    hv_ctx *ctx = t->ctx;
    if (t->plist_next) t->plist_next->plist_prev = t->plist_prev;
    else ctx->persist = t->plist_prev;
    if (t->plist_prev) t->plist_prev->plist_next = t->plist_next;
    if (t->buf) {
        if (t->alloc) ctx->be->mem_free(ctx, t->alloc, (size_t)hv_numel(t) * hv__dtype_size(t->dtype));
    } else {
        hv__free(t->alloc);
    }
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
    if (!(p = (float *)hv__host_begin(t, 0))) return hv_tensor_free(t), (hv_tensor *)NULL;
    for (i = 0; i < n; i++) p[i] = mean + std * hv_rng_normal(ctx);
    if (hv__host_end(t, p, 1)) return hv_tensor_free(t), (hv_tensor *)NULL;
    return t;
}
HVDEF hv_tensor *hv_uniform(hv_ctx *ctx, hv_shape s, float lo, float hi) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    int64_t i, n;
    float *p;
    if (!t) return NULL;
    n = hv_numel(t);
    if (!(p = (float *)hv__host_begin(t, 0))) return hv_tensor_free(t), (hv_tensor *)NULL;
    for (i = 0; i < n; i++) p[i] = lo + (hi - lo) * hv_rng_uniform(ctx);
    if (hv__host_end(t, p, 1)) return hv_tensor_free(t), (hv_tensor *)NULL;
    return t;
}
HVDEF hv_tensor *hv_tensor_from(hv_ctx *ctx, hv_shape s, const float *values) {
    hv_tensor *t = hv_tensor_new(ctx, HV_F32, s);
    if (t && hv_tensor_copy_from(t, values, sizeof(float) * (size_t)hv_numel(t))) return hv_tensor_free(t), (hv_tensor *)NULL;
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
    if (t->buf) return t->ctx->be->write(t->ctx, t, host); /* device: through a staging buffer */
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
    if (t->buf) { /* device: a strided view is made contiguous on the device first, then downloaded */
        hv_tensor *c = (hv_tensor *)t;
        if (!hv_is_contiguous(t)) {
            if (!(c = hv__alloc(t->ctx, t->dtype, t->ndim, t->shape, 0))) return -1;
            t->ctx->be->copy(t->ctx, c, t, 0);
            if (t->ctx->kernel_failed) return t->ctx->kernel_failed = 0, -1;
        }
        return t->ctx->be->read(t->ctx, host, c);
    }
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
    if (t->ctx->kernel_failed) return t->ctx->kernel_failed = 0, -1;
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
static void *hv__host_data(hv_tensor *t, hv_dtype dt, const char *op) {
    if (!t || t->dtype != dt) return NULL;
    if (t->buf) return hv__fail(op, "%s lives in %s device memory: use hv_tensor_copy_to/copy_from", hv__desc("tensor", t), t->ctx->be->name);
    return t->data;
}
HVDEF float *hv_data(hv_tensor *t) { return (float *)hv__host_data(t, HV_F32, "hv_data"); }
HVDEF int32_t *hv_data_i32(hv_tensor *t) { return (int32_t *)hv__host_data(t, HV_I32, "hv_data_i32"); }
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

HVDEF hv_tensor *hv_tensor_to(hv_tensor *t, hv_ctx *ctx) {
    hv_tensor *out;
    void *p;
    if (!t || !ctx) return (hv_tensor *)hv__fail("hv_tensor_to", "%s is NULL", t ? "ctx" : "tensor");
    if (!(out = hv__alloc(ctx, t->dtype, t->ndim, t->shape, 1))) return NULL;
    /* through host memory: a download from t's device (if any), an upload to ctx's (if any) */
    if (!(p = hv__host_begin(out, 0)) || hv_tensor_copy_to(t, p, (size_t)hv_numel(t) * hv__dtype_size(t->dtype)) ||
        hv__host_end(out, p, 1)) {
        hv_tensor_free(out);
        return NULL;
    }
    memcpy(out->name, t->name, sizeof out->name);
    return out;
}
HVDEF int hv_tensor_assign(hv_tensor *dst, const hv_tensor *src) {
    int i, same;
    if (!dst || !src) return hv__fail("hv_tensor_assign", "%s is NULL", dst ? "src" : "dst"), -1;
    same = dst->ndim == src->ndim && dst->dtype == src->dtype;
    for (i = 0; same && i < dst->ndim; i++) same = dst->shape[i] == src->shape[i];
    if (!same) return hv__fail("hv_tensor_assign", "%s and %s differ in shape or dtype", hv__desc("dst", dst), hv__desc("src", src)), -1;
    if (dst->ctx != src->ctx)
        return hv__fail("hv_tensor_assign", "%s (%s) and %s (%s) belong to different contexts: move one with hv_tensor_to",
                        hv__desc("dst", dst), dst->ctx->be->name, hv__desc("src", src), src->ctx->be->name), -1;
    dst->ctx->be->copy(dst->ctx, dst, src, 0);
    if (dst->ctx->kernel_failed) return dst->ctx->kernel_failed = 0, -1;
    return 0;
}

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
    if (out->ctx->kernel_failed) { /* a device backend could not run a kernel of this op */
        out->ctx->kernel_failed = 0;
        return NULL;
    }
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
    if (ctx->kernel_failed) { /* a device kernel could not run: the error names it */
        ctx->kernel_failed = 0;
        return -1;
    }
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
        if (a->ctx->be != b->ctx->be) /* mixing backends is never implicit */
            hv__fail(op, "%s lives on %s and %s on %s: move one with hv_tensor_to", hv__desc("a", a), a->ctx->be->name,
                     hv__desc("b", b), b->ctx->be->name);
        else
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
static int hv__check_index_range(const char *op, const char *role, hv_tensor *idx, int64_t n, const char *target) {
    /* on a device backend the indices are downloaded (a sync): small, and checked before use */
    const int32_t *p = (const int32_t *)hv__host_begin(idx, 1);
    int64_t i, m = hv_numel(idx);
    if (!p) return -1;
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
            hv__host_end(idx, (void *)p, 0);
            return -1;
        }
    return hv__host_end(idx, (void *)p, 0);
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

/* ==== VULKAN GLUE ==== */
/* HV-SECTION vulkan BEGIN */
/* ==== 7b. VULKAN BACKEND (HUMANVIT_VULKAN) =====================================================
   The kernels are GLSL compute shaders in kernels_vulkan/ (.comp), compiled to SPIR-V by
   `./build.sh shaders` into kernels_vulkan/hv_shaders.h (committed). This section drives them.

   Loader. libvulkan is opened at run time (dlopen / LoadLibrary), so a program never needs
   -lvulkan and a machine without a loader or a device gets a NULL hv_init with a clear error.
   $HUMANVIT_VULKAN_LOADER names another loader library.

   Device. hv_init_desc.device, else $HUMANVIT_VULKAN_DEVICE: an index into the device list or
   a case-insensitive part of the name. Default: the first discrete GPU, then integrated, virtual,
   CPU (lavapipe). The queue is the first family with compute.

   Memory. A tensor's data is a *device address*: 0xF << 60 | block id << 36 | byte offset, never
   dereferenced on the host (the address is non-canonical: a stray host access faults at once).
   Pointer arithmetic on it (views, GEMM batch offsets) works as on host pointers, and the kernels
   turn it back into (VkBuffer, offset). Blocks are device-local VkBuffers: persistent tensors are
   sub-allocated first-fit from 64 MiB blocks; arena tensors come from a per-step pool of blocks,
   bump-allocated and reset by hv_step_end (after a step that needed several blocks they become
   one, so a steady training loop allocates nothing). Uploads and downloads go through a
   host-visible staging buffer.

   Commands. Every kernel call records a dispatch into one command buffer: parameters go to a
   host-visible ring (binding 0 of every kernel), tensors are bound as storage-buffer windows of
   at most maxStorageBufferRange (work on a larger tensor is split: elementwise kernels and GEMM
   split their index space; others refuse with an error). A barrier is recorded only when a
   dispatch touches a range that an earlier dispatch of the same barrier interval wrote (or writes
   one it read). The batch is submitted, once, when the host needs data (hv_tensor_copy_to,
   hv_item, index checks, hv_sync), at hv_step_end, or when the parameter ring fills up.
   Pipelines are made on first use, through a VkPipelineCache. */
#ifdef HUMANVIT_VULKAN

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>
#include "kernels_vulkan/hv_shaders.h"
#if defined(_WIN32)
#include <windows.h>
#define HV__VK_LIBNAME "vulkan-1.dll"
#elif defined(__APPLE__)
#include <dlfcn.h>
#define HV__VK_LIBNAME "libvulkan.1.dylib"
#else
#include <dlfcn.h>
#define HV__VK_LIBNAME "libvulkan.so.1"
#endif

#define HV__VK_INSTANCE_FNS(X)                                                                     \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)            \
    X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkGetPhysicalDeviceMemoryProperties)             \
    X(vkCreateDevice) X(vkGetDeviceProcAddr)
#define HV__VK_DEVICE_FNS(X)                                                                       \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer)                    \
    X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory)     \
    X(vkMapMemory) X(vkUnmapMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule)               \
    X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout)       \
    X(vkDestroyPipelineLayout) X(vkCreatePipelineCache) X(vkDestroyPipelineCache)                  \
    X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreateDescriptorPool)                     \
    X(vkDestroyDescriptorPool) X(vkResetDescriptorPool) X(vkAllocateDescriptorSets)                \
    X(vkUpdateDescriptorSets) X(vkCreateCommandPool) X(vkDestroyCommandPool)                       \
    X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)                      \
    X(vkResetCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdDispatch)       \
    X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkCreateFence)                 \
    X(vkDestroyFence) X(vkResetFences) X(vkWaitForFences) X(vkQueueSubmit) X(vkDeviceWaitIdle)

#define HV__VK_MAX_ARGS 8         /* tensor bindings of one kernel */
#define HV__VK_MAX_PARAMS 56      /* ints of one dispatch's parameter block, offsets included */
#define HV__VK_SETS_PER_POOL 256
#define HV__VK_BLOCK (64ull << 20) /* persistent blocks */
#define HV__VK_ADDR_TAG 0xF000000000000000ull
#define HV__VK_OFF_BITS 36
#define HV__VK_MAX_HAZARDS 64

typedef struct hv__vk_block {
    VkBuffer buf;
    VkDeviceMemory mem;
    uint64_t size, used; /* used: the pool's bump pointer */
    uint32_t id;
    int persistent;
    uint64_t *free_off, *free_len; /* persistent: free ranges sorted by offset */
    int nfree, cap_free;
} hv__vk_block;

/* a host-visible buffer, mapped for the context's life */
typedef struct hv__vk_hostbuf {
    VkBuffer buf;
    VkDeviceMemory mem;
    char *map;
    uint64_t size, used;
} hv__vk_hostbuf;

/* a tensor argument of a dispatch: its block, the byte offset of element 0 and the bytes it
   spans from there */
typedef struct hv__vk_arg {
    hv__vk_block *blk;
    uint64_t off, bytes;
    int write;
} hv__vk_arg;

typedef struct hv__vk_range {
    uint32_t id;
    int write;
    uint64_t lo, hi;
} hv__vk_range;

typedef struct hv__vk_download {
    uint64_t stage_off, bytes;
    char *host;
} hv__vk_pending;

typedef struct hv__vk {
#define HV__VK_DECL(f) PFN_##f f;
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    PFN_vkCreateInstance vkCreateInstance;
    HV__VK_INSTANCE_FNS(HV__VK_DECL)
    HV__VK_DEVICE_FNS(HV__VK_DECL)
#undef HV__VK_DECL
    VkInstance inst;
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t qfam, mt_device, mt_host;
    VkPhysicalDeviceProperties props;
    uint64_t max_range, align, max_alloc;
    /* memory */
    hv__vk_block **blocks; /* by id; NULL slots are free */
    uint32_t nblocks;
    hv__vk_block **pool; /* the step's blocks, newest last */
    int npool;
    uint64_t pool_first;
    hv__vk_hostbuf stage, params;
    uint32_t param_slot;
    /* commands */
    VkCommandPool cpool;
    VkCommandBuffer cmd;
    VkFence fence;
    int recording;
    VkDescriptorPool *dpools;
    int ndpools, cur_dpool, dpool_used;
    VkDescriptorSetLayout set_layout[HV__VK_MAX_ARGS + 2];
    VkPipelineLayout pipe_layout[HV__VK_MAX_ARGS + 2];
    VkPipeline pipes[HV__VKS_COUNT];
    VkPipelineCache pcache;
    hv__vk_range hazards[HV__VK_MAX_HAZARDS];
    int nhazards;
    hv__vk_pending *downloads;
    int ndownloads, cap_downloads;
    /* counters, for tests and curiosity */
    uint64_t n_submits, n_dispatches, n_barriers, n_block_allocs;
    int lost; /* the device failed: every later call is refused */
} hv__vk;

static void *hv__vk_lib;

#define HV__VK(ctx) ((hv__vk *)(ctx)->dev)

static const char *hv__vk_result_str(VkResult r) {
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver/ICD found)";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult error";
    }
}
static int hv__vk_fail(const char *what, VkResult r) {
    hv__fail("hv_vulkan", "%s failed: %s (%d)", what, hv__vk_result_str(r), (int)r);
    return -1;
}

/* ---- loader --------------------------------------------------------------------------------- */

static PFN_vkVoidFunction hv__vk_sym(void *lib, const char *name) {
    PFN_vkVoidFunction f = NULL;
#if defined(_WIN32)
    FARPROC p = GetProcAddress((HMODULE)lib, name);
    memcpy(&f, &p, sizeof f);
#else
    void *p = dlsym(lib, name);
    memcpy(&f, &p, sizeof f); /* object to function pointer without a pedantic cast */
#endif
    return f;
}
static void *hv__vk_dlopen(const char *path) {
#if defined(_WIN32)
    return (void *)LoadLibraryA(path);
#else
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
#endif
}
/* the loader stays loaded for the process's life (drivers may keep threads and atexit hooks) */
static int hv__vk_load(hv__vk *vk) {
    const char *path = getenv("HUMANVIT_VULKAN_LOADER");
    void *lib;
    PFN_vkVoidFunction f;
    if (path && *path) {
        lib = hv__vk_dlopen(path); /* another loader: opened each time, never cached */
    } else {
        path = HV__VK_LIBNAME;
        if (!hv__vk_lib) hv__vk_lib = hv__vk_dlopen(path);
        lib = hv__vk_lib;
    }
    if (!lib) {
        hv__fail("hv_init", "no Vulkan loader: cannot open %s (install one, e.g. apt-get install libvulkan1 mesa-vulkan-drivers; "
                 "or set HUMANVIT_VULKAN_LOADER)", path);
        return -1;
    }
    f = hv__vk_sym(lib, "vkGetInstanceProcAddr");
    if (!f) return hv__fail("hv_init", "%s has no vkGetInstanceProcAddr: not a Vulkan loader", path), -1;
    memcpy(&vk->vkGetInstanceProcAddr, &f, sizeof f);
    vk->vkCreateInstance = (PFN_vkCreateInstance)vk->vkGetInstanceProcAddr(NULL, "vkCreateInstance");
    if (!vk->vkCreateInstance) return hv__fail("hv_init", "the Vulkan loader %s has no vkCreateInstance", path), -1;
    return 0;
}

/* ---- instance and device -------------------------------------------------------------------- */

static int hv__vk_type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
    }
}
static const char *hv__vk_type_name(VkPhysicalDeviceType t) {
    static const char *names[] = {"discrete GPU", "integrated GPU", "virtual GPU", "CPU", "other"};
    return names[hv__vk_type_rank(t)];
}
static int hv__vk_icontains(const char *hay, const char *needle) {
    size_t i, j, n = strlen(needle);
    for (i = 0; hay[i]; i++) {
        for (j = 0; j < n && hay[i + j]; j++) {
            char a = hay[i + j], b = needle[j];
            if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
            if (a != b) break;
        }
        if (j == n) return 1;
    }
    return n == 0;
}
/* the compute queue family of a device, or -1 */
static int hv__vk_compute_family(hv__vk *vk, VkPhysicalDevice pd) {
    VkQueueFamilyProperties fam[16];
    uint32_t n = 16, i;
    vk->vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, fam);
    for (i = 0; i < n; i++)
        if (fam[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return (int)i;
    return -1;
}
static int hv__vk_pick_device(hv__vk *vk, const char *want) {
    VkPhysicalDevice devs[32];
    VkPhysicalDeviceProperties props[32];
    uint32_t n = 32, i;
    int best = -1, is_index = want && *want;
    char list[1024];
    size_t len = 0;
    VkResult r = vk->vkEnumeratePhysicalDevices(vk->inst, &n, devs);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return hv__vk_fail("vkEnumeratePhysicalDevices", r);
    if (n == 0) return hv__fail("hv_init", "Vulkan found no device (no driver installed? for a CPU device: apt-get install mesa-vulkan-drivers)"), -1;
    list[0] = 0;
    for (i = 0; i < n; i++) {
        vk->vkGetPhysicalDeviceProperties(devs[i], &props[i]);
        if (len < sizeof list)
            len += (size_t)snprintf(list + len, sizeof list - len, "\n  %u: %s (%s)", i, props[i].deviceName,
                                    hv__vk_type_name(props[i].deviceType));
    }
    for (i = 0; is_index && want[i]; i++)
        if (want[i] < '0' || want[i] > '9') is_index = 0;
    if (is_index) {
        unsigned long k = strtoul(want, NULL, 10);
        if (k >= n) return hv__fail("hv_init", "Vulkan device %s does not exist; devices:%s", want, list), -1;
        best = (int)k;
    } else {
        for (i = 0; i < n; i++) {
            if (want && *want && !hv__vk_icontains(props[i].deviceName, want)) continue;
            if (hv__vk_compute_family(vk, devs[i]) < 0) continue;
            if (best < 0 || hv__vk_type_rank(props[i].deviceType) < hv__vk_type_rank(props[best].deviceType)) best = (int)i;
        }
        if (best < 0)
            return hv__fail("hv_init", "no Vulkan device %s%s%s; devices:%s", want && *want ? "matches '" : "has a compute queue",
                            want && *want ? want : "", want && *want ? "'" : "", list), -1;
    }
    if (hv__vk_compute_family(vk, devs[best]) < 0)
        return hv__fail("hv_init", "Vulkan device %d (%s) has no compute queue", best, props[best].deviceName), -1;
    vk->phys = devs[best];
    vk->props = props[best];
    vk->qfam = (uint32_t)hv__vk_compute_family(vk, devs[best]);
    return 0;
}
static int hv__vk_memtype(hv__vk *vk, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags nice) {
    VkPhysicalDeviceMemoryProperties mp;
    uint32_t i;
    int found = -1;
    vk->vkGetPhysicalDeviceMemoryProperties(vk->phys, &mp);
    for (i = 0; i < mp.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp.memoryTypes[i].propertyFlags;
        if (!(bits & (1u << i)) || (f & want) != want) continue;
        if ((f & nice) == nice) return (int)i;
        if (found < 0) found = (int)i;
    }
    return found;
}
/* a buffer with its own memory; host-visible ones are mapped */
static int hv__vk_buffer(hv__vk *vk, uint64_t size, int host, VkBuffer *buf, VkDeviceMemory *mem, void **map) {
    VkBufferCreateInfo bi;
    VkMemoryRequirements req;
    VkMemoryAllocateInfo ai;
    VkResult r;
    int mt;
    memset(&bi, 0, sizeof bi);
    bi.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
    bi.size = size;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    if ((r = vk->vkCreateBuffer(vk->dev, &bi, NULL, buf)) != VK_SUCCESS) return hv__vk_fail("vkCreateBuffer", r);
    vk->vkGetBufferMemoryRequirements(vk->dev, *buf, &req);
    mt = host ? hv__vk_memtype(vk, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                               VK_MEMORY_PROPERTY_HOST_CACHED_BIT)
              : hv__vk_memtype(vk, req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    memset(&ai, 0, sizeof ai);
    ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = (uint32_t)mt;
    if (mt < 0 || (r = vk->vkAllocateMemory(vk->dev, &ai, NULL, mem)) != VK_SUCCESS) {
        vk->vkDestroyBuffer(vk->dev, *buf, NULL);
        *buf = VK_NULL_HANDLE;
        if (mt < 0) return hv__fail("hv_vulkan", "no suitable memory type for a %s buffer", host ? "host-visible" : "device"), -1;
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return hv__fail("hv_vulkan", "out of device memory allocating %llu bytes on %s (%s)", (unsigned long long)size,
                            vk->props.deviceName, hv__vk_result_str(r)), -1;
        return hv__vk_fail("vkAllocateMemory", r);
    }
    vk->vkBindBufferMemory(vk->dev, *buf, *mem, 0);
    if (host && (r = vk->vkMapMemory(vk->dev, *mem, 0, VK_WHOLE_SIZE, 0, map)) != VK_SUCCESS) {
        vk->vkDestroyBuffer(vk->dev, *buf, NULL);
        vk->vkFreeMemory(vk->dev, *mem, NULL);
        *buf = VK_NULL_HANDLE;
        return hv__vk_fail("vkMapMemory", r);
    }
    return 0;
}
static int hv__vk_hostbuf_init(hv__vk *vk, hv__vk_hostbuf *hb, uint64_t size) {
    void *map = NULL;
    memset(hb, 0, sizeof *hb);
    if (hv__vk_buffer(vk, size, 1, &hb->buf, &hb->mem, &map)) return -1;
    hb->map = (char *)map;
    hb->size = size;
    return 0;
}
static void hv__vk_hostbuf_free(hv__vk *vk, hv__vk_hostbuf *hb) {
    if (!hb->buf) return;
    vk->vkUnmapMemory(vk->dev, hb->mem);
    vk->vkDestroyBuffer(vk->dev, hb->buf, NULL);
    vk->vkFreeMemory(vk->dev, hb->mem, NULL);
    hb->buf = VK_NULL_HANDLE;
}

/* ---- device memory: blocks, addresses, the persistent allocator and the step pool ----------- */

static void *hv__vk_addr(const hv__vk_block *b, uint64_t off) {
    return (void *)(uintptr_t)(HV__VK_ADDR_TAG | ((uint64_t)b->id << HV__VK_OFF_BITS) | off);
}
/* the block and byte offset of a device address */
static hv__vk_block *hv__vk_resolve(hv__vk *vk, const void *p, uint64_t *off) {
    uint64_t a = (uint64_t)(uintptr_t)p;
    uint32_t id = (uint32_t)((a & ~HV__VK_ADDR_TAG) >> HV__VK_OFF_BITS);
    *off = a & ((1ull << HV__VK_OFF_BITS) - 1);
    return id < vk->nblocks ? vk->blocks[id] : NULL;
}
static void hv__vk_block_destroy(hv__vk *vk, hv__vk_block *b) {
    if (!b) return;
    vk->blocks[b->id] = NULL;
    vk->vkDestroyBuffer(vk->dev, b->buf, NULL);
    vk->vkFreeMemory(vk->dev, b->mem, NULL);
    hv__free(b->free_off);
    hv__free(b->free_len);
    hv__free(b);
}
static hv__vk_block *hv__vk_block_new(hv__vk *vk, uint64_t size, int persistent) {
    hv__vk_block *b;
    uint32_t id;
    if (size > vk->max_alloc)
        return (hv__vk_block *)hv__fail("hv_vulkan", "%llu bytes exceed the largest allocation of %s (%llu bytes)", (unsigned long long)size,
                                        vk->props.deviceName, (unsigned long long)vk->max_alloc);
    for (id = 0; id < vk->nblocks && vk->blocks[id]; id++) {
    }
    if (id == vk->nblocks) {
        uint32_t cap = vk->nblocks ? vk->nblocks * 2 : 16;
        hv__vk_block **nb = (hv__vk_block **)HV_REALLOC(vk->blocks, sizeof *nb * cap);
        hv__alloc_calls++;
        if (!nb) return (hv__vk_block *)hv__fail("hv_vulkan", "out of host memory");
        memset(nb + vk->nblocks, 0, sizeof *nb * (cap - vk->nblocks));
        vk->blocks = nb;
        vk->nblocks = cap;
    }
    if (id >= (1u << 24)) return (hv__vk_block *)hv__fail("hv_vulkan", "too many device blocks");
    b = (hv__vk_block *)hv__malloc(sizeof *b);
    if (!b) return (hv__vk_block *)hv__fail("hv_vulkan", "out of host memory");
    memset(b, 0, sizeof *b);
    if (hv__vk_buffer(vk, size, 0, &b->buf, &b->mem, NULL)) {
        hv__free(b);
        return NULL;
    }
    b->size = size;
    b->id = id;
    b->persistent = persistent;
    vk->blocks[id] = b;
    vk->n_block_allocs++;
    return b;
}
/* persistent blocks: sorted free ranges, first fit, merged on free */
static int hv__vk_free_insert(hv__vk_block *b, int at, uint64_t off, uint64_t len) {
    if (b->nfree == b->cap_free) {
        int cap = b->cap_free ? b->cap_free * 2 : 16;
        uint64_t *o = (uint64_t *)hv__malloc(sizeof *o * (size_t)cap), *l = (uint64_t *)hv__malloc(sizeof *l * (size_t)cap);
        if (!o || !l) {
            hv__free(o);
            hv__free(l);
            return -1;
        }
        if (b->nfree) {
            memcpy(o, b->free_off, sizeof *o * (size_t)b->nfree);
            memcpy(l, b->free_len, sizeof *l * (size_t)b->nfree);
        }
        hv__free(b->free_off);
        hv__free(b->free_len);
        b->free_off = o;
        b->free_len = l;
        b->cap_free = cap;
    }
    memmove(b->free_off + at + 1, b->free_off + at, sizeof(uint64_t) * (size_t)(b->nfree - at));
    memmove(b->free_len + at + 1, b->free_len + at, sizeof(uint64_t) * (size_t)(b->nfree - at));
    b->free_off[at] = off;
    b->free_len[at] = len;
    b->nfree++;
    return 0;
}
static void hv__vk_free_remove(hv__vk_block *b, int at) {
    memmove(b->free_off + at, b->free_off + at + 1, sizeof(uint64_t) * (size_t)(b->nfree - at - 1));
    memmove(b->free_len + at, b->free_len + at + 1, sizeof(uint64_t) * (size_t)(b->nfree - at - 1));
    b->nfree--;
}
#define HV__VK_GRAIN 256 /* sub-allocation granularity (also a safe storage-buffer offset alignment) */
static uint64_t hv__vk_round(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

static int hv__vk_fill_zero(hv__vk *vk, hv__vk_block *b, uint64_t off, uint64_t bytes);

static void *hv__vk_mem_alloc(hv_ctx *ctx, size_t bytes, int persistent, void **buf) {
    hv__vk *vk = HV__VK(ctx);
    uint64_t n = hv__vk_round(bytes ? bytes : 4, HV__VK_GRAIN), off = 0;
    hv__vk_block *b = NULL;
    uint32_t i;
    int j;
    if (vk->lost) return hv__fail("hv_vulkan", "the device was lost earlier; create a new context");
    if (persistent) {
        for (i = 0; i < vk->nblocks && !b; i++) {
            hv__vk_block *c = vk->blocks[i];
            if (!c || !c->persistent) continue;
            for (j = 0; j < c->nfree; j++)
                if (c->free_len[j] >= n) {
                    b = c;
                    off = c->free_off[j];
                    c->free_off[j] += n;
                    c->free_len[j] -= n;
                    if (!c->free_len[j]) hv__vk_free_remove(c, j);
                    break;
                }
        }
        if (!b) {
            uint64_t size = n > HV__VK_BLOCK ? n : HV__VK_BLOCK;
            if (size > vk->max_alloc && n <= vk->max_alloc) size = n;
            if (!(b = hv__vk_block_new(vk, size, 1))) return NULL;
            if (size > n && hv__vk_free_insert(b, 0, n, size - n)) return hv__fail("hv_vulkan", "out of host memory");
            off = 0;
        }
    } else {
        b = vk->npool ? vk->pool[vk->npool - 1] : NULL;
        if (!b || b->used + n > b->size) {
            uint64_t want = vk->pool_first;
            hv__vk_block **np;
            if (b && b->size * 2 > want) want = b->size * 2;
            if (want < n) want = n;
            if (want > vk->max_alloc) want = n > vk->max_alloc ? n : vk->max_alloc;
            if (!(b = hv__vk_block_new(vk, want, 0))) return NULL;
            np = (hv__vk_block **)HV_REALLOC(vk->pool, sizeof *np * (size_t)(vk->npool + 1));
            hv__alloc_calls++;
            if (!np) {
                hv__vk_block_destroy(vk, b);
                return hv__fail("hv_vulkan", "out of host memory");
            }
            vk->pool = np;
            vk->pool[vk->npool++] = b;
        }
        off = b->used;
        b->used += n;
    }
    if (hv__vk_fill_zero(vk, b, off, hv__vk_round(bytes ? bytes : 4, 4))) return NULL;
    *buf = b;
    return hv__vk_addr(b, off);
}
static void hv__vk_mem_free(hv_ctx *ctx, void *data, size_t bytes) {
    hv__vk *vk = HV__VK(ctx);
    uint64_t off, len = hv__vk_round(bytes ? bytes : 4, HV__VK_GRAIN);
    hv__vk_block *b = hv__vk_resolve(vk, data, &off);
    int at;
    if (!b || !b->persistent) return;
    /* the range goes back into the sorted free list, merged with its neighbours. Work still
       queued that reads it stays ordered before any reuse: the same command stream, with barriers. */
    for (at = 0; at < b->nfree && b->free_off[at] < off; at++) {
    }
    if (at > 0 && b->free_off[at - 1] + b->free_len[at - 1] == off) {
        b->free_len[at - 1] += len;
        if (at < b->nfree && off + len == b->free_off[at]) {
            b->free_len[at - 1] += b->free_len[at];
            hv__vk_free_remove(b, at);
        }
    } else if (at < b->nfree && off + len == b->free_off[at]) {
        b->free_off[at] = off;
        b->free_len[at] += len;
    } else {
        hv__vk_free_insert(b, at, off, len); /* on failure the range is lost until shutdown */
    }
}

/* ---- command batching ----------------------------------------------------------------------- */

static void hv__vk_full_barrier(hv__vk *vk) {
    VkMemoryBarrier mb;
    memset(&mb, 0, sizeof mb);
    mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    vk->vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    vk->nhazards = 0;
    vk->n_barriers++;
}
static int hv__vk_begin(hv__vk *vk) {
    VkCommandBufferBeginInfo bi;
    VkResult r;
    if (vk->recording) return 0;
    if (vk->lost) return hv__fail("hv_vulkan", "the device was lost earlier; create a new context"), -1;
    memset(&bi, 0, sizeof bi);
    bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    if ((r = vk->vkBeginCommandBuffer(vk->cmd, &bi)) != VK_SUCCESS) return hv__vk_fail("vkBeginCommandBuffer", r);
    vk->recording = 1;
    hv__vk_full_barrier(vk); /* the previous batch's writes become visible to this one */
    return 0;
}
/* records that the next command accesses these ranges; a barrier first when one of them meets
   an earlier access of this barrier interval and either of the two writes */
static void hv__vk_hazard(hv__vk *vk, const hv__vk_arg *args, int n) {
    int i, j, conflict = 0;
    for (i = 0; i < n && !conflict; i++)
        for (j = 0; j < vk->nhazards; j++) {
            const hv__vk_range *h = &vk->hazards[j];
            if (h->id == args[i].blk->id && (h->write || args[i].write) && args[i].off < h->hi && h->lo < args[i].off + args[i].bytes) {
                conflict = 1;
                break;
            }
        }
    if (conflict || vk->nhazards + n > HV__VK_MAX_HAZARDS) hv__vk_full_barrier(vk);
    for (i = 0; i < n; i++) {
        hv__vk_range *h = &vk->hazards[vk->nhazards++];
        h->id = args[i].blk->id;
        h->write = args[i].write;
        h->lo = args[i].off;
        h->hi = args[i].off + args[i].bytes;
    }
}
/* submit the batch and wait for it; then the rings are empty and downloads have landed */
static int hv__vk_flush(hv__vk *vk) {
    VkSubmitInfo si;
    VkResult r;
    int i;
    if (!vk->recording) return vk->lost ? -1 : 0;
    if (vk->ndownloads) { /* device writes of the copies become visible to the host */
        VkMemoryBarrier mb;
        memset(&mb, 0, sizeof mb);
        mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
        mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
        vk->vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    }
    vk->recording = 0;
    if ((r = vk->vkEndCommandBuffer(vk->cmd)) != VK_SUCCESS) goto lost;
    memset(&si, 0, sizeof si);
    si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
    si.commandBufferCount = 1;
    si.pCommandBuffers = &vk->cmd;
    if ((r = vk->vkQueueSubmit(vk->queue, 1, &si, vk->fence)) != VK_SUCCESS) goto lost;
    if ((r = vk->vkWaitForFences(vk->dev, 1, &vk->fence, VK_TRUE, UINT64_MAX)) != VK_SUCCESS) goto lost;
    vk->vkResetFences(vk->dev, 1, &vk->fence);
    vk->vkResetCommandBuffer(vk->cmd, 0);
    vk->n_submits++;
    for (i = 0; i < vk->ndownloads; i++)
        memcpy(vk->downloads[i].host, vk->stage.map + vk->downloads[i].stage_off, (size_t)vk->downloads[i].bytes);
    vk->ndownloads = 0;
    for (i = 0; i <= vk->cur_dpool && i < vk->ndpools; i++) vk->vkResetDescriptorPool(vk->dev, vk->dpools[i], 0);
    vk->cur_dpool = 0;
    vk->dpool_used = 0;
    vk->stage.used = 0;
    vk->params.used = 0;
    vk->nhazards = 0;
    return 0;
lost:
    vk->lost = 1;
    vk->ndownloads = 0;
    return hv__vk_fail("submitting work", r);
}

/* ---- pipelines ------------------------------------------------------------------------------ */

static VkPipeline hv__vk_pipeline(hv__vk *vk, int shader, int nargs) {
    VkShaderModuleCreateInfo mi;
    VkComputePipelineCreateInfo ci;
    VkShaderModule mod;
    VkResult r;
    if (vk->pipes[shader]) return vk->pipes[shader];
    if (!vk->set_layout[nargs]) {
        VkDescriptorSetLayoutBinding b[HV__VK_MAX_ARGS + 1];
        VkDescriptorSetLayoutCreateInfo li;
        VkPipelineLayoutCreateInfo pi;
        int i;
        memset(b, 0, sizeof b);
        for (i = 0; i <= nargs; i++) {
            b[i].binding = (uint32_t)i;
            b[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
            b[i].descriptorCount = 1;
            b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
        }
        memset(&li, 0, sizeof li);
        li.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
        li.bindingCount = (uint32_t)nargs + 1;
        li.pBindings = b;
        if ((r = vk->vkCreateDescriptorSetLayout(vk->dev, &li, NULL, &vk->set_layout[nargs])) != VK_SUCCESS)
            return hv__vk_fail("vkCreateDescriptorSetLayout", r), (VkPipeline)VK_NULL_HANDLE;
        memset(&pi, 0, sizeof pi);
        pi.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
        pi.setLayoutCount = 1;
        pi.pSetLayouts = &vk->set_layout[nargs];
        if ((r = vk->vkCreatePipelineLayout(vk->dev, &pi, NULL, &vk->pipe_layout[nargs])) != VK_SUCCESS)
            return hv__vk_fail("vkCreatePipelineLayout", r), (VkPipeline)VK_NULL_HANDLE;
    }
    memset(&mi, 0, sizeof mi);
    mi.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
    mi.codeSize = hv__vk_shaders[shader].words * 4;
    mi.pCode = hv__vk_shaders[shader].code;
    if ((r = vk->vkCreateShaderModule(vk->dev, &mi, NULL, &mod)) != VK_SUCCESS)
        return hv__vk_fail("vkCreateShaderModule", r), (VkPipeline)VK_NULL_HANDLE;
    memset(&ci, 0, sizeof ci);
    ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = mod;
    ci.stage.pName = "main";
    ci.layout = vk->pipe_layout[nargs];
    r = vk->vkCreateComputePipelines(vk->dev, vk->pcache, 1, &ci, NULL, &vk->pipes[shader]);
    vk->vkDestroyShaderModule(vk->dev, mod, NULL);
    if (r != VK_SUCCESS) {
        vk->pipes[shader] = VK_NULL_HANDLE;
        hv__fail("hv_vulkan", "cannot create the pipeline of kernel '%s': %s", hv__vk_shaders[shader].name, hv__vk_result_str(r));
        return VK_NULL_HANDLE;
    }
    return vk->pipes[shader];
}
static VkDescriptorSet hv__vk_descriptor_set(hv__vk *vk, int nargs) {
    VkDescriptorSetAllocateInfo ai;
    VkDescriptorSet set = VK_NULL_HANDLE;
    VkResult r;
    if (vk->dpool_used == HV__VK_SETS_PER_POOL) {
        vk->cur_dpool++;
        vk->dpool_used = 0;
    }
    if (vk->cur_dpool == vk->ndpools) { /* grows to the high-water mark of a batch, then stays */
        VkDescriptorPoolSize ps;
        VkDescriptorPoolCreateInfo pi;
        VkDescriptorPool *np = (VkDescriptorPool *)HV_REALLOC(vk->dpools, sizeof *np * (size_t)(vk->ndpools + 1));
        hv__alloc_calls++;
        if (!np) return hv__fail("hv_vulkan", "out of host memory"), (VkDescriptorSet)VK_NULL_HANDLE;
        vk->dpools = np;
        ps.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        ps.descriptorCount = HV__VK_SETS_PER_POOL * (HV__VK_MAX_ARGS + 1);
        memset(&pi, 0, sizeof pi);
        pi.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
        pi.maxSets = HV__VK_SETS_PER_POOL;
        pi.poolSizeCount = 1;
        pi.pPoolSizes = &ps;
        if ((r = vk->vkCreateDescriptorPool(vk->dev, &pi, NULL, &vk->dpools[vk->ndpools])) != VK_SUCCESS)
            return hv__vk_fail("vkCreateDescriptorPool", r), (VkDescriptorSet)VK_NULL_HANDLE;
        vk->ndpools++;
    }
    memset(&ai, 0, sizeof ai);
    ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    ai.descriptorPool = vk->dpools[vk->cur_dpool];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &vk->set_layout[nargs];
    if ((r = vk->vkAllocateDescriptorSets(vk->dev, &ai, &set)) != VK_SUCCESS)
        return hv__vk_fail("vkAllocateDescriptorSets", r), (VkDescriptorSet)VK_NULL_HANDLE;
    vk->dpool_used++;
    return set;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* the storage-buffer window of an argument: [win, win + range) holds its span, win aligned */
static int hv__vk_window(hv__vk *vk, const hv__vk_arg *a, uint64_t *win, uint64_t *range) {
    uint64_t end = a->off + (a->bytes ? a->bytes : 4);
    *win = a->off / vk->align * vk->align;
    *range = hv__vk_round(end - *win, 4);
    if (*win + *range > a->blk->size) *range = a->blk->size - *win;
    return *range <= vk->max_range ? 0 : -1;
}
static int hv__vk_fits(hv__vk *vk, const hv__vk_arg *a) {
    uint64_t w, r;
    return hv__vk_window(vk, a, &w, &r) == 0;
}
/* 1-D work of n items in groups of `local`, laid over a 2-D grid (65535 groups per axis) */
static void hv__vk_grid(uint64_t n, uint32_t local, uint32_t *gx, uint32_t *gy) {
    uint64_t groups = (n + local - 1) / local;
    if (groups == 0) groups = 1;
    *gx = (uint32_t)(groups < 65535 ? groups : 65535);
    *gy = (uint32_t)((groups + *gx - 1) / *gx);
}
/* records one kernel: binding 0 the parameters (each argument's element offset in its window,
   then `params`), bindings 1.. the arguments. -1 (error set) when it cannot. */
static int hv__vk_dispatch(hv__vk *vk, int shader, const hv__vk_arg *args, int nargs, const int32_t *params, int nparams, uint32_t gx,
                           uint32_t gy, uint32_t gz) {
    VkDescriptorBufferInfo bi[HV__VK_MAX_ARGS + 1];
    VkWriteDescriptorSet wr;
    VkDescriptorSet set;
    VkPipeline pipe;
    int32_t *p;
    int i;
    HV_ASSERT(nargs <= HV__VK_MAX_ARGS && nargs + nparams <= HV__VK_MAX_PARAMS);
    if (gx == 0 || gy == 0 || gz == 0) return 0;
    if (vk->params.used + vk->param_slot > vk->params.size && hv__vk_flush(vk)) return -1;
    if (hv__vk_begin(vk)) return -1;
    if (!(pipe = hv__vk_pipeline(vk, shader, nargs))) return -1;
    p = (int32_t *)(vk->params.map + vk->params.used);
    bi[0].buffer = vk->params.buf;
    bi[0].offset = vk->params.used;
    bi[0].range = vk->param_slot;
    for (i = 0; i < nargs; i++) {
        uint64_t win, range;
        if (hv__vk_window(vk, &args[i], &win, &range))
            return hv__fail("hv_vulkan", "kernel '%s': argument %d spans %llu bytes, more than maxStorageBufferRange (%llu) of %s",
                            hv__vk_shaders[shader].name, i, (unsigned long long)args[i].bytes, (unsigned long long)vk->max_range,
                            vk->props.deviceName), -1;
        bi[i + 1].buffer = args[i].blk->buf;
        bi[i + 1].offset = win;
        bi[i + 1].range = range;
        p[i] = (int32_t)((args[i].off - win) / 4);
    }
    for (i = 0; i < nparams; i++) p[nargs + i] = params[i];
    if (!(set = hv__vk_descriptor_set(vk, nargs))) return -1;
    vk->params.used += vk->param_slot;
    memset(&wr, 0, sizeof wr);
    wr.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    wr.dstSet = set;
    wr.descriptorCount = (uint32_t)nargs + 1;
    wr.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    wr.pBufferInfo = bi;
    vk->vkUpdateDescriptorSets(vk->dev, 1, &wr, 0, NULL);
    hv__vk_hazard(vk, args, nargs);
    vk->vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vk->vkCmdBindDescriptorSets(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->pipe_layout[nargs], 0, 1, &set, 0, NULL);
    vk->vkCmdDispatch(vk->cmd, gx, gy, gz);
    vk->n_dispatches++;
    return 0;
}

/* ---- transfers ------------------------------------------------------------------------------ */

static int hv__vk_fill_zero(hv__vk *vk, hv__vk_block *b, uint64_t off, uint64_t bytes) {
    hv__vk_arg a;
    if (hv__vk_begin(vk)) return -1;
    a.blk = b;
    a.off = off;
    a.bytes = bytes;
    a.write = 1;
    hv__vk_hazard(vk, &a, 1);
    vk->vkCmdFillBuffer(vk->cmd, b->buf, off, bytes, 0);
    return 0;
}
/* room for n bytes in the staging buffer (flushing the batch when full); its offset or -1 */
static int64_t hv__vk_stage(hv__vk *vk, uint64_t n) {
    uint64_t at = hv__vk_round(vk->stage.used, 16);
    if (at + n > vk->stage.size) {
        if (hv__vk_flush(vk)) return -1;
        at = 0;
    }
    if (hv__vk_begin(vk)) return -1;
    vk->stage.used = at + n;
    return (int64_t)at;
}
static int hv__vk_upload(hv__vk *vk, hv__vk_block *b, uint64_t off, const void *host, uint64_t bytes) {
    while (bytes) {
        uint64_t n = bytes < vk->stage.size ? bytes : vk->stage.size;
        int64_t at = hv__vk_stage(vk, n);
        VkBufferCopy bc;
        hv__vk_arg a;
        if (at < 0) return -1;
        memcpy(vk->stage.map + at, host, (size_t)n);
        a.blk = b;
        a.off = off;
        a.bytes = n;
        a.write = 1;
        hv__vk_hazard(vk, &a, 1);
        bc.srcOffset = (uint64_t)at;
        bc.dstOffset = off;
        bc.size = n;
        vk->vkCmdCopyBuffer(vk->cmd, vk->stage.buf, b->buf, 1, &bc);
        host = (const char *)host + n;
        off += n;
        bytes -= n;
    }
    return 0;
}
static int hv__vk_download(hv__vk *vk, void *host, hv__vk_block *b, uint64_t off, uint64_t bytes) {
    while (bytes) {
        uint64_t n = bytes < vk->stage.size ? bytes : vk->stage.size;
        int64_t at = hv__vk_stage(vk, n);
        VkBufferCopy bc;
        hv__vk_arg a;
        if (at < 0) return -1;
        if (vk->ndownloads == vk->cap_downloads) {
            int cap = vk->cap_downloads ? vk->cap_downloads * 2 : 8;
            hv__vk_pending *nd = (hv__vk_pending *)HV_REALLOC(vk->downloads, sizeof *nd * (size_t)cap);
            hv__alloc_calls++;
            if (!nd) return hv__fail("hv_vulkan", "out of host memory"), -1;
            vk->downloads = nd;
            vk->cap_downloads = cap;
        }
        a.blk = b;
        a.off = off;
        a.bytes = n;
        a.write = 0;
        hv__vk_hazard(vk, &a, 1);
        bc.srcOffset = off;
        bc.dstOffset = (uint64_t)at;
        bc.size = n;
        vk->vkCmdCopyBuffer(vk->cmd, b->buf, vk->stage.buf, 1, &bc);
        vk->downloads[vk->ndownloads].stage_off = (uint64_t)at;
        vk->downloads[vk->ndownloads].bytes = n;
        vk->downloads[vk->ndownloads].host = (char *)host;
        vk->ndownloads++;
        if (hv__vk_flush(vk)) return -1;
        host = (char *)host + n;
        off += n;
        bytes -= n;
    }
    return 0;
}

/* ---- tensors as kernel arguments ------------------------------------------------------------ */

/* elements from element 0 to the last element of a view, inclusive (0 when empty) */
static uint64_t hv__vk_span(const hv_tensor *t) {
    uint64_t s = 1;
    int i;
    for (i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return 0;
        s += (uint64_t)(t->shape[i] - 1) * (uint64_t)t->stride[i];
    }
    return s;
}
static hv__vk_arg hv__vk_targ(hv__vk *vk, const hv_tensor *t, int write) {
    hv__vk_arg a;
    a.blk = hv__vk_resolve(vk, t->data, &a.off);
    a.bytes = 4 * hv__vk_span(t);
    a.write = write;
    return a;
}
/* the arguments of a kernel that binds whole tensors (NULL ones are replaced by the first, which
   the kernel then ignores); -1 and an error naming the kernel when one is over the range limit */
static int hv__vk_targs(hv__vk *vk, const char *op, hv__vk_arg *a, const hv_tensor *const *ts, const int *write, int n) {
    int i;
    for (i = 0; i < n; i++) {
        const hv_tensor *t = ts[i] ? ts[i] : ts[0];
        a[i] = hv__vk_targ(vk, t, ts[i] ? write[i] : 0);
        if (!a[i].blk) return hv__fail(op, "argument %d is not in this context's device memory", i), -1;
        if (!hv__vk_fits(vk, &a[i]))
            return hv__fail(op, "%s spans %llu bytes, more than maxStorageBufferRange (%llu) of %s, and this kernel cannot split it",
                            hv__desc("tensor", t), (unsigned long long)a[i].bytes, (unsigned long long)vk->max_range, vk->props.deviceName), -1;
    }
    return 0;
}
static int32_t hv__vk_f2i(float f) {
    int32_t i;
    memcpy(&i, &f, 4);
    return i;
}

static int hv__vk_write(hv_ctx *ctx, hv_tensor *dst, const void *host) {
    hv__vk *vk = HV__VK(ctx);
    uint64_t off;
    hv__vk_block *b = hv__vk_resolve(vk, dst->data, &off);
    return hv__vk_upload(vk, b, off, host, (uint64_t)hv_numel(dst) * hv__dtype_size(dst->dtype));
}
static int hv__vk_read(hv_ctx *ctx, void *host, const hv_tensor *src) {
    hv__vk *vk = HV__VK(ctx);
    uint64_t off;
    hv__vk_block *b = hv__vk_resolve(vk, src->data, &off);
    return hv__vk_download(vk, host, b, off, (uint64_t)hv_numel(src) * hv__dtype_size(src->dtype));
}

/* ---- elementwise kernels over strided tensors ----------------------------------------------- */

/* up to 4 tensors of one shape: size-1 axes dropped, runs that are contiguous in every tensor
   merged, so most calls become 1-D */
typedef struct hv__vk_ew {
    int nt, nd;
    int64_t shape[HV_MAX_DIMS], stride[4][HV_MAX_DIMS];
    hv__vk_arg arg[4];
} hv__vk_ew;
static int hv__vk_ew_init(hv__vk *vk, hv__vk_ew *e, const hv_tensor *const *ts, int nt, int nwrite) {
    const hv_tensor *s = ts[0];
    int d, t;
    e->nt = nt;
    e->nd = 0;
    for (d = 0; d < s->ndim; d++) {
        if (s->shape[d] == 1) continue;
        if (e->nd > 0) {
            int merge = 1;
            for (t = 0; t < nt; t++) merge &= ts[t]->stride[d] * s->shape[d] == e->stride[t][e->nd - 1];
            if (merge) {
                e->shape[e->nd - 1] *= s->shape[d];
                for (t = 0; t < nt; t++) e->stride[t][e->nd - 1] = ts[t]->stride[d];
                continue;
            }
        }
        e->shape[e->nd] = s->shape[d];
        for (t = 0; t < nt; t++) e->stride[t][e->nd] = ts[t]->stride[d];
        e->nd++;
    }
    for (t = 0; t < nt; t++) {
        e->arg[t].blk = hv__vk_resolve(vk, ts[t]->data, &e->arg[t].off);
        e->arg[t].write = t < nwrite;
        if (!e->arg[t].blk) return hv__fail("hv_vulkan", "a tensor is not in this context's device memory"), -1;
    }
    return 0;
}
/* dispatches the kernel over e, halving the outermost axis while a tensor's window is too big */
static int hv__vk_ew_run(hv__vk *vk, int shader, hv__vk_ew *e, const int32_t *extra, int nextra) {
    int32_t p[HV__VK_MAX_PARAMS];
    int64_t n = 1;
    int t, d, fits = 1, np;
    uint32_t gx, gy;
    for (d = 0; d < e->nd; d++) n *= e->shape[d];
    if (n == 0) return 0;
    for (t = 0; t < e->nt; t++) {
        uint64_t span = 1;
        for (d = 0; d < e->nd; d++) span += (uint64_t)(e->shape[d] - 1) * (uint64_t)e->stride[t][d];
        e->arg[t].bytes = 4 * span;
        fits &= hv__vk_fits(vk, &e->arg[t]);
    }
    if (!fits) {
        hv__vk_ew half = *e;
        int64_t h;
        if (e->nd == 0) return hv__fail("hv_vulkan", "one element does not fit the storage-buffer range"), -1;
        if (e->shape[0] == 1) { /* drop the axis */
            memmove(half.shape, half.shape + 1, sizeof(int64_t) * (size_t)(half.nd - 1));
            for (t = 0; t < e->nt; t++) memmove(half.stride[t], half.stride[t] + 1, sizeof(int64_t) * (size_t)(half.nd - 1));
            half.nd--;
            return hv__vk_ew_run(vk, shader, &half, extra, nextra);
        }
        h = e->shape[0] / 2;
        half.shape[0] = h;
        if (hv__vk_ew_run(vk, shader, &half, extra, nextra)) return -1;
        half.shape[0] = e->shape[0] - h;
        for (t = 0; t < e->nt; t++) half.arg[t].off += (uint64_t)(h * e->stride[t][0]) * 4;
        return hv__vk_ew_run(vk, shader, &half, extra, nextra);
    }
    p[0] = (int32_t)n;
    p[1] = e->nd;
    for (d = 0; d < HV_MAX_DIMS; d++) p[2 + d] = d < e->nd ? (int32_t)e->shape[d] : 1;
    for (t = 0; t < e->nt; t++)
        for (d = 0; d < HV_MAX_DIMS; d++) p[8 + 6 * t + d] = d < e->nd ? (int32_t)e->stride[t][d] : 0;
    np = 8 + 6 * e->nt;
    for (d = 0; d < nextra; d++) p[np++] = extra[d];
    hv__vk_grid((uint64_t)n, 256, &gx, &gy);
    return hv__vk_dispatch(vk, shader, e->arg, e->nt, p, np, gx, gy, 1);
}
static void hv__vk_ew_call(hv_ctx *ctx, int shader, const hv_tensor *const *ts, int nt, int nwrite, const int32_t *extra, int nextra) {
    hv__vk *vk = HV__VK(ctx);
    hv__vk_ew e;
    if (hv__vk_ew_init(vk, &e, ts, nt, nwrite) || hv__vk_ew_run(vk, shader, &e, extra, nextra)) ctx->kernel_failed = 1;
}

static void hv__vk_copy(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate) {
    const hv_tensor *ts[2];
    int32_t acc = accumulate;
    ts[0] = dst;
    ts[1] = src;
    hv__vk_ew_call(ctx, HV__VKS_COPY, ts, 2, 1, &acc, 1);
}
static void hv__vk_fill(hv_ctx *ctx, hv_tensor *dst, float value) {
    const hv_tensor *ts[1];
    int32_t bits = hv__vk_f2i(value);
    ts[0] = dst;
    hv__vk_ew_call(ctx, HV__VKS_FILL, ts, 1, 1, &bits, 1);
}
static void hv__vk_binary(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *a, const hv_tensor *b) {
    const hv_tensor *ts[3];
    int32_t o = op;
    ts[0] = out;
    ts[1] = a;
    ts[2] = b;
    hv__vk_ew_call(ctx, HV__VKS_BINARY, ts, 3, 1, &o, 1);
}
static void hv__vk_unary(hv_ctx *ctx, int op, float alpha, hv_tensor *out, const hv_tensor *x) {
    const hv_tensor *ts[2];
    int32_t p[2];
    ts[0] = out;
    ts[1] = x;
    p[0] = op;
    p[1] = hv__vk_f2i(alpha);
    hv__vk_ew_call(ctx, HV__VKS_UNARY, ts, 2, 1, p, 2);
}
static void hv__vk_unary_bwd(hv_ctx *ctx, int op, float alpha, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y,
                             const hv_tensor *gy) {
    const hv_tensor *ts[4];
    int32_t p[2];
    ts[0] = gx;
    ts[1] = x;
    ts[2] = y;
    ts[3] = gy;
    p[0] = op;
    p[1] = hv__vk_f2i(alpha);
    hv__vk_ew_call(ctx, HV__VKS_UNARY_BWD, ts, 4, 1, p, 2);
}

/* ---- GEMM ----------------------------------------------------------------------------------- */

/* one GEMM whose operands may be too large to bind: split k (accumulating), m or n in halves
   along the dimension that is outermost in the storage of the operand that does not fit */
static int hv__vk_gemm_run(hv__vk *vk, hv__gemm_args g) {
    hv__vk_arg a[3];
    int32_t p[13];
    uint64_t sa, sb, sc;
    if (g.m == 0 || g.n == 0) return 0;
    sa = g.k == 0 ? 1 : (uint64_t)(g.trans_a ? (g.k - 1) * g.lda + g.m : (g.m - 1) * g.lda + g.k);
    sb = g.k == 0 ? 1 : (uint64_t)(g.trans_b ? (g.n - 1) * g.ldb + g.k : (g.k - 1) * g.ldb + g.n);
    sc = (uint64_t)((g.m - 1) * g.ldc + g.n);
    a[0].blk = hv__vk_resolve(vk, g.a, &a[0].off);
    a[1].blk = hv__vk_resolve(vk, g.b, &a[1].off);
    a[2].blk = hv__vk_resolve(vk, g.c, &a[2].off);
    if (!a[0].blk || !a[1].blk || !a[2].blk) return hv__fail("hv_vulkan", "gemm: an operand is not in device memory"), -1;
    a[0].bytes = 4 * (sa + (uint64_t)((g.batch - 1) * g.batch_stride_a));
    a[1].bytes = 4 * (sb + (uint64_t)((g.batch - 1) * g.batch_stride_b));
    a[2].bytes = 4 * (sc + (uint64_t)((g.batch - 1) * g.batch_stride_c));
    a[0].write = a[1].write = 0;
    a[2].write = 1;
    if (!hv__vk_fits(vk, &a[0]) || !hv__vk_fits(vk, &a[1]) || !hv__vk_fits(vk, &a[2]) || g.batch > 65535) {
        hv__gemm_args h = g, t = g;
        int dim; /* 0 m, 1 n, 2 k */
        if (g.batch > 1) { /* one matrix at a time first */
            int64_t i;
            h.batch = 1;
            for (i = 0; i < g.batch; i++) {
                h.a = g.a + i * g.batch_stride_a;
                h.b = g.b + i * g.batch_stride_b;
                h.c = g.c + i * g.batch_stride_c;
                if (hv__vk_gemm_run(vk, h)) return -1;
            }
            return 0;
        }
        if (!hv__vk_fits(vk, &a[2])) dim = g.m > 1 ? 0 : 1;
        else if (!hv__vk_fits(vk, &a[0])) dim = g.trans_a ? (g.k > 1 ? 2 : 0) : (g.m > 1 ? 0 : 2);
        else dim = g.trans_b ? (g.n > 1 ? 1 : 2) : (g.k > 1 ? 2 : 1);
        if ((dim == 0 && g.m < 2) || (dim == 1 && g.n < 2) || (dim == 2 && g.k < 2))
            return hv__fail("hv_vulkan", "gemm: one row does not fit the storage-buffer range"), -1;
        if (dim == 0) {
            h.m = g.m / 2;
            t.m = g.m - h.m;
            t.a = g.a + (g.trans_a ? h.m : h.m * g.lda);
            t.c = g.c + h.m * g.ldc;
        } else if (dim == 1) {
            h.n = g.n / 2;
            t.n = g.n - h.n;
            t.b = g.b + (g.trans_b ? h.n * g.ldb : h.n);
            t.c = g.c + h.n;
        } else {
            h.k = g.k / 2;
            t.k = g.k - h.k;
            t.a = g.a + (g.trans_a ? h.k * g.lda : h.k);
            t.b = g.b + (g.trans_b ? h.k : h.k * g.ldb);
            t.beta = 1.0f; /* the second half adds to the first */
        }
        return hv__vk_gemm_run(vk, h) || hv__vk_gemm_run(vk, t) ? -1 : 0;
    }
    p[0] = (int32_t)g.m;
    p[1] = (int32_t)g.n;
    p[2] = (int32_t)g.k;
    p[3] = (int32_t)g.lda;
    p[4] = (int32_t)g.ldb;
    p[5] = (int32_t)g.ldc;
    p[6] = (int32_t)g.batch_stride_a;
    p[7] = (int32_t)g.batch_stride_b;
    p[8] = (int32_t)g.batch_stride_c;
    p[9] = g.trans_a;
    p[10] = g.trans_b;
    p[11] = hv__vk_f2i(g.alpha);
    p[12] = hv__vk_f2i(g.beta);
    return hv__vk_dispatch(vk, HV__VKS_GEMM, a, 3, p, 13, (uint32_t)((g.n + 63) / 64), (uint32_t)((g.m + 63) / 64), (uint32_t)g.batch);
}
static void hv__vk_gemm(hv_ctx *ctx, const hv__gemm_args *g) {
    if (hv__vk_gemm_run(HV__VK(ctx), *g)) ctx->kernel_failed = 1;
}

/* ---- reductions ----------------------------------------------------------------------------- */

/* a kernel over whole tensors: the arguments from the tensors (NULL: a placeholder the kernel
   does not touch), then one dispatch; errors stay in hv_last_error */
static int hv__vk_run(hv_ctx *ctx, const char *op, int shader, const hv_tensor *const *ts, const int *write, int n, const int32_t *p,
                      int np, uint64_t items, uint32_t local, int per_group) {
    hv__vk *vk = HV__VK(ctx);
    hv__vk_arg a[HV__VK_MAX_ARGS];
    uint32_t gx, gy;
    if (hv__vk_targs(vk, op, a, ts, write, n)) return ctx->kernel_failed = 1, -1;
    if (items == 0) return 0;
    hv__vk_grid(per_group ? items * local : items, local, &gx, &gy);
    if (hv__vk_dispatch(vk, shader, a, n, p, np, gx, gy, 1)) return ctx->kernel_failed = 1, -1;
    return 0;
}
static int32_t hv__vk_i32(int64_t v) { return (int32_t)v; }

static void hv__vk_reduce_one(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x) {
    const hv_tensor *ts[2];
    int32_t p[30];
    int w[2] = {1, 0}, d;
    int64_t nout = hv_numel(out), count = 1;
    memset(p, 0, sizeof p);
    p[4] = x->ndim;
    for (d = 0; d < x->ndim; d++) {
        p[5 + d] = hv__vk_i32(out->shape[d]);
        p[11 + d] = out->shape[d] == x->shape[d] ? hv__vk_i32(x->stride[d]) : 0;
        if (out->shape[d] == 1 && x->shape[d] != 1) {
            p[18 + p[17]] = hv__vk_i32(x->shape[d]);
            p[24 + p[17]] = hv__vk_i32(x->stride[d]);
            p[17]++;
            count *= x->shape[d];
        }
    }
    p[0] = hv__vk_i32(nout);
    p[1] = hv__vk_i32(count);
    p[2] = op == HV__RED_MAX;
    p[3] = count >= 64; /* long reductions: a workgroup each, summed by a tree */
    ts[0] = out;
    ts[1] = x;
    hv__vk_run(ctx, "hv_vulkan reduce", HV__VKS_REDUCE, ts, w, 2, p, 30, (uint64_t)nout, 64, p[3]);
}
/* a view of t: extent n along axis d from index i0 */
static hv_tensor hv__vk_cut(const hv_tensor *t, int d, int64_t i0, int64_t n) {
    hv_tensor v = *t;
    v.data = (char *)t->data + i0 * t->stride[d] * (int64_t)hv__dtype_size(t->dtype);
    v.shape[d] = n;
    return v;
}
#define HV__VK_BIN_MAX 4 /* binary.comp's internal op: NaN-propagating max */
/* reductions whose input is over the storage-buffer range: halve the axis that spans most; a
   kept axis splits the outputs, a reduced one gives two partial results combined elementwise */
static void hv__vk_reduce(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x) {
    hv__vk *vk = HV__VK(ctx);
    hv__vk_arg a = hv__vk_targ(vk, x, 0);
    int d, best = -1;
    int64_t h;
    if (!a.blk || hv__vk_fits(vk, &a) || hv_numel(x) <= 1) {
        hv__vk_reduce_one(ctx, op, out, x);
        return;
    }
    for (d = 0; d < x->ndim; d++)
        if (x->shape[d] > 1 && (best < 0 || (x->shape[d] - 1) * x->stride[d] > (x->shape[best] - 1) * x->stride[best])) best = d;
    h = x->shape[best] / 2;
    if (out->shape[best] == x->shape[best]) {
        hv_tensor o1 = hv__vk_cut(out, best, 0, h), o2 = hv__vk_cut(out, best, h, x->shape[best] - h);
        hv_tensor x1 = hv__vk_cut(x, best, 0, h), x2 = hv__vk_cut(x, best, h, x->shape[best] - h);
        hv__vk_reduce(ctx, op, &o1, &x1);
        hv__vk_reduce(ctx, op, &o2, &x2);
    } else {
        hv_tensor x1 = hv__vk_cut(x, best, 0, h), x2 = hv__vk_cut(x, best, h, x->shape[best] - h);
        hv_tensor *r1 = hv__new_like(out), *r2 = r1 ? hv__new_like(out) : NULL;
        if (!r2) {
            ctx->kernel_failed = 1;
            return;
        }
        hv__vk_reduce(ctx, op, r1, &x1);
        hv__vk_reduce(ctx, op, r2, &x2);
        hv__vk_binary(ctx, op == HV__RED_MAX ? HV__VK_BIN_MAX : HV__ADD, out, r1, r2);
    }
}
static void hv__vk_reduce_max_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy) {
    const hv_tensor *ts[4];
    int32_t p[40];
    int w[4] = {1, 0, 0, 0}, d;
    int64_t count = 1;
    memset(p, 0, sizeof p);
    p[2] = x->ndim;
    for (d = 0; d < x->ndim; d++) {
        int kept = y->shape[d] == x->shape[d];
        p[3 + d] = hv__vk_i32(y->shape[d]);
        p[9 + d] = kept ? hv__vk_i32(x->stride[d]) : 0;
        p[15 + d] = kept ? hv__vk_i32(gx->stride[d]) : 0;
        if (y->shape[d] == 1 && x->shape[d] != 1) {
            p[22 + p[21]] = hv__vk_i32(x->shape[d]);
            p[28 + p[21]] = hv__vk_i32(x->stride[d]);
            p[34 + p[21]] = hv__vk_i32(gx->stride[d]);
            p[21]++;
            count *= x->shape[d];
        }
    }
    p[0] = hv__vk_i32(hv_numel(y));
    p[1] = hv__vk_i32(count);
    ts[0] = gx;
    ts[1] = x;
    ts[2] = y;
    ts[3] = gy;
    hv__vk_run(ctx, "hv_vulkan reduce_max_bwd", HV__VKS_REDUCE_MAX_BWD, ts, w, 4, p, 40, (uint64_t)hv_numel(y), 64, 0);
}

/* ---- softmax and layer norm ----------------------------------------------------------------- */

static void hv__vk_softmax_one(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x, int64_t outer, int64_t n, int64_t inner) {
    const hv_tensor *ts[2];
    int w[2] = {1, 0};
    int32_t p[4];
    p[0] = hv__vk_i32(outer * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(inner);
    p[3] = is_log;
    ts[0] = y;
    ts[1] = x;
    hv__vk_run(ctx, "hv_softmax", HV__VKS_SOFTMAX, ts, w, 2, p, 4, (uint64_t)(outer * inner), 64, 1);
}
static void hv__vk_softmax_bwd_one(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy, int64_t outer, int64_t n,
                               int64_t inner) {
    const hv_tensor *ts[3];
    int w[3] = {1, 0, 0};
    int32_t p[4];
    p[0] = hv__vk_i32(outer * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(inner);
    p[3] = is_log;
    ts[0] = gx;
    ts[1] = y;
    ts[2] = gy;
    hv__vk_run(ctx, "hv_softmax backward", HV__VKS_SOFTMAX_BWD, ts, w, 3, p, 4, (uint64_t)(outer * inner), 64, 1);
}
static void hv__vk_layer_norm_one(hv_ctx *ctx, hv_tensor *y, hv_tensor *mean, hv_tensor *rstd, const hv_tensor *x, const hv_tensor *w,
                              const hv_tensor *b, float eps) {
    const hv_tensor *ts[6];
    int wr[6] = {1, 1, 1, 0, 0, 0};
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D;
    int32_t p[5];
    p[0] = hv__vk_i32(rows);
    p[1] = hv__vk_i32(D);
    p[2] = hv__vk_f2i(eps);
    p[3] = w != NULL;
    p[4] = b != NULL;
    ts[0] = y;
    ts[1] = mean;
    ts[2] = rstd;
    ts[3] = x;
    ts[4] = w;
    ts[5] = b;
    hv__vk_run(ctx, "hv_layer_norm", HV__VKS_LAYER_NORM, ts, wr, 6, p, 5, (uint64_t)rows, 64, 1);
}
static void hv__vk_layer_norm_bwd_one(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *w,
                                  const hv_tensor *mean, const hv_tensor *rstd, const hv_tensor *gy) {
    const hv_tensor *ts[6];
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D;
    int32_t p[4];
    if (gx) {
        int wr[6] = {1, 0, 0, 0, 0, 0};
        p[0] = hv__vk_i32(rows);
        p[1] = hv__vk_i32(D);
        p[2] = w != NULL;
        ts[0] = gx;
        ts[1] = x;
        ts[2] = w;
        ts[3] = mean;
        ts[4] = rstd;
        ts[5] = gy;
        hv__vk_run(ctx, "hv_layer_norm backward", HV__VKS_LAYER_NORM_BWD, ts, wr, 6, p, 3, (uint64_t)rows, 64, 1);
    }
    if (gw || gb) {
        int wr[6] = {1, 1, 0, 0, 0, 0};
        p[0] = hv__vk_i32(rows);
        p[1] = hv__vk_i32(D);
        p[2] = gw != NULL;
        p[3] = gb != NULL;
        ts[0] = gw ? gw : gb;
        ts[1] = gb ? gb : gw;
        ts[2] = x;
        ts[3] = mean;
        ts[4] = rstd;
        ts[5] = gy;
        hv__vk_run(ctx, "hv_layer_norm backward", HV__VKS_LAYER_NORM_BWD_W, ts, wr, 6, p, 4, (uint64_t)D, 64, 1);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

static int hv__vk_attn_strides(int32_t *p, const hv_tensor *t) {
    int i;
    for (i = 0; i < 4; i++) p[i] = t ? hv__vk_i32(t->stride[i]) : 0;
    return 4;
}
static void hv__vk_attention_one(hv_ctx *ctx, hv_tensor *o, hv_tensor *lse, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v,
                             float scale) {
    const hv_tensor *ts[5];
    int w[5] = {1, 1, 0, 0, 0}, n = 0;
    int32_t p[22];
    if (q->shape[3] > 256) {
        hv__fail("hv_attention", "the Vulkan kernel handles head dimensions up to 256, not %lld", (long long)q->shape[3]);
        ctx->kernel_failed = 1;
        return;
    }
    p[n++] = hv__vk_i32(q->shape[0]);
    p[n++] = hv__vk_i32(q->shape[1]);
    p[n++] = hv__vk_i32(q->shape[2]);
    p[n++] = hv__vk_i32(k->shape[2]);
    p[n++] = hv__vk_i32(q->shape[3]);
    p[n++] = hv__vk_f2i(scale);
    n += hv__vk_attn_strides(p + n, q);
    n += hv__vk_attn_strides(p + n, k);
    n += hv__vk_attn_strides(p + n, v);
    n += hv__vk_attn_strides(p + n, o);
    ts[0] = o;
    ts[1] = lse;
    ts[2] = q;
    ts[3] = k;
    ts[4] = v;
    hv__vk_run(ctx, "hv_attention", HV__VKS_ATTENTION, ts, w, 5, p, n, (uint64_t)(q->shape[0] * q->shape[1] * q->shape[2]), 64, 1);
}
static void hv__vk_attention_bwd_one(hv_ctx *ctx, hv_tensor *gq, hv_tensor *gk, hv_tensor *gv, hv_tensor *delta, const hv_tensor *q,
                                 const hv_tensor *k, const hv_tensor *v, const hv_tensor *o, const hv_tensor *lse, const hv_tensor *go,
                                 float scale) {
    const hv_tensor *ts[8];
    int32_t p[32];
    int n = 0;
    int64_t B = q->shape[0], H = q->shape[1];
    if (q->shape[3] > 256) {
        hv__fail("hv_attention", "the Vulkan kernel handles head dimensions up to 256, not %lld", (long long)q->shape[3]);
        ctx->kernel_failed = 1;
        return;
    }
    { /* query side: delta for every row, and gq */
        int w[8] = {1, 1, 0, 0, 0, 0, 0, 0};
        p[n++] = hv__vk_i32(B);
        p[n++] = hv__vk_i32(H);
        p[n++] = hv__vk_i32(q->shape[2]);
        p[n++] = hv__vk_i32(k->shape[2]);
        p[n++] = hv__vk_i32(q->shape[3]);
        p[n++] = hv__vk_f2i(scale);
        p[n++] = gq != NULL;
        n += hv__vk_attn_strides(p + n, q);
        n += hv__vk_attn_strides(p + n, k);
        n += hv__vk_attn_strides(p + n, v);
        n += hv__vk_attn_strides(p + n, o);
        n += hv__vk_attn_strides(p + n, go);
        n += hv__vk_attn_strides(p + n, gq ? gq : delta);
        ts[0] = gq ? gq : delta;
        ts[1] = delta;
        ts[2] = q;
        ts[3] = k;
        ts[4] = v;
        ts[5] = o;
        ts[6] = lse;
        ts[7] = go;
        if (!gq) w[0] = 0;
        if (hv__vk_run(ctx, "hv_attention backward", HV__VKS_ATTENTION_BWD_Q, ts, w, 8, p, n, (uint64_t)(B * H * q->shape[2]), 64, 1))
            return;
    }
    if (gk || gv) {
        int w[8] = {1, 1, 0, 0, 0, 0, 0, 0};
        n = 0;
        p[n++] = hv__vk_i32(B);
        p[n++] = hv__vk_i32(H);
        p[n++] = hv__vk_i32(q->shape[2]);
        p[n++] = hv__vk_i32(k->shape[2]);
        p[n++] = hv__vk_i32(q->shape[3]);
        p[n++] = hv__vk_f2i(scale);
        p[n++] = gk != NULL;
        p[n++] = gv != NULL;
        n += hv__vk_attn_strides(p + n, q);
        n += hv__vk_attn_strides(p + n, k);
        n += hv__vk_attn_strides(p + n, v);
        n += hv__vk_attn_strides(p + n, go);
        n += hv__vk_attn_strides(p + n, gk ? gk : gv);
        n += hv__vk_attn_strides(p + n, gv ? gv : gk);
        ts[0] = gk ? gk : gv;
        ts[1] = gv ? gv : gk;
        ts[2] = q;
        ts[3] = k;
        ts[4] = v;
        ts[5] = go;
        ts[6] = lse;
        ts[7] = delta;
        hv__vk_run(ctx, "hv_attention backward", HV__VKS_ATTENTION_BWD_KV, ts, w, 8, p, n, (uint64_t)(B * H * k->shape[2]), 64, 1);
    }
}

/* ---- gather, scatter, losses ---------------------------------------------------------------- */

static void hv__vk_gather_one(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer,
                          int64_t n, int64_t k, int64_t inner) {
    const hv_tensor *ts[3];
    int w[3] = {1, 0, 0};
    int32_t p[5];
    p[0] = hv__vk_i32(outer * k * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(k);
    p[3] = hv__vk_i32(inner);
    p[4] = accumulate;
    ts[0] = dst;
    ts[1] = src;
    ts[2] = idx;
    hv__vk_run(ctx, "hv_gather", HV__VKS_GATHER, ts, w, 3, p, 5, (uint64_t)(outer * k * inner), 256, 0);
}
static void hv__vk_scatter_add_one(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                               int64_t k, int64_t inner) {
    const hv_tensor *ts[3];
    int w[3] = {1, 0, 0};
    int32_t p[4];
    p[0] = hv__vk_i32(outer * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(k);
    p[3] = hv__vk_i32(inner);
    ts[0] = dst;
    ts[1] = src;
    ts[2] = idx;
    hv__vk_run(ctx, "hv_scatter", HV__VKS_SCATTER_ADD, ts, w, 3, p, 4, (uint64_t)(outer * inner), 256, 0);
}
/* out[0] = scale * sum of the contiguous x */
static int hv__vk_sum_scalar(hv_ctx *ctx, hv_tensor *out, const hv_tensor *x, float scale) {
    const hv_tensor *ts[2];
    int w[2] = {1, 0};
    int32_t p[2];
    p[0] = hv__vk_i32(hv_numel(x));
    p[1] = hv__vk_f2i(scale);
    ts[0] = out;
    ts[1] = x;
    return hv__vk_run(ctx, "hv_vulkan sum", HV__VKS_SUM_SCALAR, ts, w, 2, p, 2, 1, 256, 1);
}
static void hv__vk_cross_entropy_rows(hv_ctx *ctx, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits, const hv_tensor *labels) {
    const hv_tensor *ts[4];
    int w[4] = {1, 1, 0, 0};
    int32_t p[2];
    int64_t N = logits->shape[0];
    p[0] = hv__vk_i32(N);
    p[1] = hv__vk_i32(logits->shape[1]);
    ts[0] = lse;
    ts[1] = row_loss;
    ts[2] = logits;
    ts[3] = labels;
    hv__vk_run(ctx, "hv_cross_entropy", HV__VKS_CROSS_ENTROPY, ts, w, 4, p, 2, (uint64_t)N, 64, 1);
}
static void hv__vk_cross_entropy_bwd_one(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                                     const hv_tensor *lse, const hv_tensor *gloss, int64_t total) {
    const hv_tensor *ts[5];
    int w[5] = {1, 0, 0, 0, 0};
    int32_t p[3];
    p[0] = hv__vk_i32(logits->shape[0]);
    p[1] = hv__vk_i32(logits->shape[1]);
    p[2] = hv__vk_i32(total);
    ts[0] = glogits;
    ts[1] = logits;
    ts[2] = labels;
    ts[3] = lse;
    ts[4] = gloss;
    hv__vk_run(ctx, "hv_cross_entropy backward", HV__VKS_CROSS_ENTROPY_BWD, ts, w, 5, p, 3, (uint64_t)hv_numel(logits), 256, 0);
}
/* top-k accuracy returns a count to the host anyway: the logits come down and the CPU kernel
   counts (not a training hot path) */
static int64_t hv__vk_topk_correct(hv_ctx *ctx, const hv_tensor *logits, const hv_tensor *labels, int k) {
    hv_tensor hl = *logits, hy = *labels;
    int64_t r;
    hl.buf = hy.buf = NULL;
    hl.data = hv__host_begin((hv_tensor *)logits, 1);
    hy.data = hl.data ? hv__host_begin((hv_tensor *)labels, 1) : NULL;
    if (!hy.data) return 0;
    r = hv__cpu_topk_correct(ctx, &hl, &hy, k);
    hv__host_end((hv_tensor *)labels, hy.data, 0);
    hv__host_end((hv_tensor *)logits, hl.data, 0);
    return r;
}
static void hv__vk_diff_loss(hv_ctx *ctx, int mode, hv_tensor *loss, const hv_tensor *a, const hv_tensor *b) {
    const hv_tensor *ts[3];
    int w[3] = {1, 0, 0};
    int64_t n = hv_numel(a), groups = (n + 255) / 256;
    int32_t p[2];
    hv_tensor *partial;
    if (groups > 1024) groups = 1024; /* grid-stride beyond: at most 1024 partial sums */
    if (!(partial = hv__new(ctx, 1, &groups))) return;
    p[0] = hv__vk_i32(n);
    p[1] = mode;
    ts[0] = partial;
    ts[1] = a;
    ts[2] = b;
    if (hv__vk_run(ctx, "hv_mse_loss/hv_l1_loss", HV__VKS_DIFF_LOSS, ts, w, 3, p, 2, (uint64_t)groups, 256, 1) == 0)
        hv__vk_sum_scalar(ctx, loss, partial, (float)(1.0 / (double)n));
}
static void hv__vk_diff_loss_bwd(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                                 const hv_tensor *gloss) {
    const hv_tensor *ts[5];
    int w[5] = {1, 1, 0, 0, 0};
    int32_t p[4];
    p[0] = hv__vk_i32(hv_numel(a));
    p[1] = mode;
    p[2] = ga != NULL;
    p[3] = gb != NULL;
    ts[0] = ga ? ga : gb;
    ts[1] = gb ? gb : ga;
    ts[2] = a;
    ts[3] = b;
    ts[4] = gloss;
    hv__vk_run(ctx, "hv_mse_loss/hv_l1_loss backward", HV__VKS_DIFF_LOSS_BWD, ts, w, 5, p, 4, (uint64_t)hv_numel(a), 256, 0);
}
static void hv__vk_adamw(hv_ctx *ctx, hv_tensor *pt, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a) {
    const hv_tensor *ts[4];
    int32_t p[8];
    {
        int w[4] = {1, 1, 1, 0};
        p[0] = hv__vk_i32(hv_numel(pt));
        p[1] = hv__vk_f2i(a->lr);
        p[2] = hv__vk_f2i(a->beta1);
        p[3] = hv__vk_f2i(a->beta2);
        p[4] = hv__vk_f2i(a->eps);
        p[5] = hv__vk_f2i(a->weight_decay);
        p[6] = hv__vk_f2i(a->bc1);
        p[7] = hv__vk_f2i(a->bc2);
        ts[0] = pt;
        ts[1] = m;
        ts[2] = v;
        ts[3] = g;
        hv__vk_run(ctx, "hv_adamw", HV__VKS_ADAMW, ts, w, 4, p, 8, (uint64_t)hv_numel(pt), 256, 0);
    }
}


/* ---- splitting work over the storage-buffer range ------------------------------------------- */

/* Kernels whose work is independent along a leading axis (the batch and heads of attention, the
   rows of a norm, the images of a conv) run in parts when a tensor is over the storage-buffer
   range: the tensors flagged in `cut` are halved along axis 0 (or, with axes 2, along axis 1 once
   axis 0 is down to one: attention's heads), which they all share, the others passed whole, until
   everything fits. Accumulating kernels (+= into gw, gb) add up the parts. */
#define HV__VK_SPLIT_MAX 10
typedef void (*hv__vk_part_fn)(hv_ctx *ctx, hv_tensor *const *t, const void *user);
static void hv__vk_split(hv_ctx *ctx, hv__vk_part_fn fn, hv_tensor *const *t, int n, unsigned cut, int axes, const void *user) {
    hv__vk *vk = HV__VK(ctx);
    hv_tensor parts[2][HV__VK_SPLIT_MAX], *tp[2][HV__VK_SPLIT_MAX];
    int i, k, axis, lead = -1, fits = 1;
    int64_t ext, h;
    for (i = 0; i < n; i++)
        if (t[i]) {
            hv__vk_arg a = hv__vk_targ(vk, t[i], 0);
            if (a.blk && !hv__vk_fits(vk, &a)) fits = 0;
            if (lead < 0 && ((cut >> i) & 1)) lead = i;
        }
    if (fits || lead < 0) { /* fits, or cannot be cut: the kernel runs or names the problem */
        fn(ctx, t, user);
        return;
    }
    for (axis = 0; axis < axes && axis < t[lead]->ndim && t[lead]->shape[axis] < 2; axis++) {
    }
    if (axis >= axes || axis >= t[lead]->ndim) {
        fn(ctx, t, user);
        return;
    }
    ext = t[lead]->shape[axis];
    h = ext / 2;
    for (i = 0; i < n; i++) {
        if (t[i] && ((cut >> i) & 1)) {
            parts[0][i] = hv__vk_cut(t[i], axis, 0, h);
            parts[1][i] = hv__vk_cut(t[i], axis, h, ext - h);
            tp[0][i] = &parts[0][i];
            tp[1][i] = &parts[1][i];
        } else {
            tp[0][i] = tp[1][i] = t[i];
        }
    }
    for (k = 0; k < 2; k++) hv__vk_split(ctx, fn, tp[k], n, cut, axes, user);
}
/* a contiguous tensor's header seen with another shape (same data) */
static hv_tensor hv__vk_as(const hv_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    hv_tensor v = *t;
    v.ndim = ndim;
    v.shape[0] = d0;
    v.shape[1] = d1;
    v.shape[2] = d2;
    hv__set_contiguous_strides(&v);
    return v;
}
#define HV__VK_PTR(v) ((v).data ? &(v) : (hv_tensor *)NULL)
static hv_tensor hv__vk_none(void) {
    hv_tensor v;
    memset(&v, 0, sizeof v);
    return v;
}

static void hv__vk_softmax_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_softmax_one(ctx, *(const int *)u, t[0], t[1], t[1]->shape[0], t[1]->shape[1], t[1]->shape[2]);
}
static void hv__vk_softmax(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x, int64_t outer, int64_t n, int64_t inner) {
    hv_tensor v[2], *t[2];
    v[0] = hv__vk_as(y, 3, outer, n, inner);
    v[1] = hv__vk_as(x, 3, outer, n, inner);
    t[0] = &v[0];
    t[1] = &v[1];
    hv__vk_split(ctx, hv__vk_softmax_part, t, 2, 3, 1, &is_log);
}
static void hv__vk_softmax_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_softmax_bwd_one(ctx, *(const int *)u, t[0], t[1], t[2], t[1]->shape[0], t[1]->shape[1], t[1]->shape[2]);
}
static void hv__vk_softmax_bwd(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy, int64_t outer, int64_t n,
                               int64_t inner) {
    hv_tensor v[3], *t[3];
    v[0] = hv__vk_as(gx, 3, outer, n, inner);
    v[1] = hv__vk_as(y, 3, outer, n, inner);
    v[2] = hv__vk_as(gy, 3, outer, n, inner);
    t[0] = &v[0];
    t[1] = &v[1];
    t[2] = &v[2];
    hv__vk_split(ctx, hv__vk_softmax_bwd_part, t, 3, 7, 1, &is_log);
}
static void hv__vk_layer_norm_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_layer_norm_one(ctx, t[0], t[1], t[2], t[3], t[4], t[5], *(const float *)u);
}
static void hv__vk_layer_norm(hv_ctx *ctx, hv_tensor *y, hv_tensor *mean, hv_tensor *rstd, const hv_tensor *x, const hv_tensor *w,
                              const hv_tensor *b, float eps) {
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D;
    hv_tensor v[4], *t[6];
    v[0] = hv__vk_as(y, 2, rows, D, 0);
    v[1] = hv__vk_as(mean, 1, rows, 0, 0);
    v[2] = hv__vk_as(rstd, 1, rows, 0, 0);
    v[3] = hv__vk_as(x, 2, rows, D, 0);
    t[0] = &v[0];
    t[1] = &v[1];
    t[2] = &v[2];
    t[3] = &v[3];
    t[4] = (hv_tensor *)w;
    t[5] = (hv_tensor *)b;
    hv__vk_split(ctx, hv__vk_layer_norm_part, t, 6, 15, 1, &eps);
}
static void hv__vk_layer_norm_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    (void)u;
    hv__vk_layer_norm_bwd_one(ctx, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
}
static void hv__vk_layer_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *w,
                                  const hv_tensor *mean, const hv_tensor *rstd, const hv_tensor *gy) {
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D;
    hv_tensor v[5], *t[8];
    v[0] = gx ? hv__vk_as(gx, 2, rows, D, 0) : hv__vk_none();
    v[1] = hv__vk_as(x, 2, rows, D, 0);
    v[2] = hv__vk_as(mean, 1, rows, 0, 0);
    v[3] = hv__vk_as(rstd, 1, rows, 0, 0);
    v[4] = hv__vk_as(gy, 2, rows, D, 0);
    t[0] = HV__VK_PTR(v[0]);
    t[1] = gw;
    t[2] = gb;
    t[3] = &v[1];
    t[4] = (hv_tensor *)w;
    t[5] = &v[2];
    t[6] = &v[3];
    t[7] = &v[4];
    hv__vk_split(ctx, hv__vk_layer_norm_bwd_part, t, 8, 1u | 8u | 32u | 64u | 128u, 1, NULL);
}
static void hv__vk_attention_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_attention_one(ctx, t[0], t[1], t[2], t[3], t[4], *(const float *)u);
}
static void hv__vk_attention(hv_ctx *ctx, hv_tensor *o, hv_tensor *lse, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v,
                             float scale) {
    hv_tensor *t[5];
    t[0] = o;
    t[1] = lse;
    t[2] = (hv_tensor *)q;
    t[3] = (hv_tensor *)k;
    t[4] = (hv_tensor *)v;
    hv__vk_split(ctx, hv__vk_attention_part, t, 5, 31, 2, &scale);
}
static void hv__vk_attention_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_attention_bwd_one(ctx, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], *(const float *)u);
}
static void hv__vk_attention_bwd(hv_ctx *ctx, hv_tensor *gq, hv_tensor *gk, hv_tensor *gv, hv_tensor *delta, const hv_tensor *q,
                                 const hv_tensor *k, const hv_tensor *v, const hv_tensor *o, const hv_tensor *lse, const hv_tensor *go,
                                 float scale) {
    hv_tensor *t[10];
    t[0] = gq;
    t[1] = gk;
    t[2] = gv;
    t[3] = delta;
    t[4] = (hv_tensor *)q;
    t[5] = (hv_tensor *)k;
    t[6] = (hv_tensor *)v;
    t[7] = (hv_tensor *)o;
    t[8] = (hv_tensor *)lse;
    t[9] = (hv_tensor *)go;
    hv__vk_split(ctx, hv__vk_attention_bwd_part, t, 10, 1023, 2, &scale);
}
typedef struct hv__vk_index_user {
    int accumulate;
    int64_t n; /* gather: rows of src; scatter: rows of dst */
} hv__vk_index_user;
static void hv__vk_gather_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    const hv__vk_index_user *iu = (const hv__vk_index_user *)u;
    hv__vk_gather_one(ctx, iu->accumulate, t[0], t[1], t[2], t[0]->shape[0], iu->n, t[0]->shape[1], t[0]->shape[2]);
}
static void hv__vk_gather(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer,
                          int64_t n, int64_t k, int64_t inner) {
    hv_tensor v[3], *t[3];
    hv__vk_index_user iu;
    iu.accumulate = accumulate;
    iu.n = n;
    v[0] = hv__vk_as(dst, 3, outer, k, inner);
    v[1] = hv__vk_as(src, 3, outer, n, inner);
    v[2] = hv__vk_as(idx, 2, outer, k, 0);
    t[0] = &v[0];
    t[1] = &v[1];
    t[2] = &v[2];
    hv__vk_split(ctx, hv__vk_gather_part, t, 3, 7, 1, &iu);
}
static void hv__vk_scatter_add_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_scatter_add_one(ctx, t[0], t[1], t[2], t[0]->shape[0], ((const hv__vk_index_user *)u)->n, t[1]->shape[1], t[1]->shape[2]);
}
static void hv__vk_scatter_add(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                               int64_t k, int64_t inner) {
    hv_tensor v[3], *t[3];
    hv__vk_index_user iu;
    iu.accumulate = 1;
    iu.n = n;
    v[0] = hv__vk_as(dst, 3, outer, n, inner);
    v[1] = hv__vk_as(src, 3, outer, k, inner);
    v[2] = hv__vk_as(idx, 2, outer, k, 0);
    t[0] = &v[0];
    t[1] = &v[1];
    t[2] = &v[2];
    hv__vk_split(ctx, hv__vk_scatter_add_part, t, 3, 7, 1, &iu);
}
static void hv__vk_cross_entropy_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    (void)u;
    hv__vk_cross_entropy_rows(ctx, t[0], t[1], t[2], t[3]);
}
static void hv__vk_cross_entropy(hv_ctx *ctx, hv_tensor *loss, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits,
                                 const hv_tensor *labels) {
    hv_tensor *t[4];
    t[0] = lse;
    t[1] = row_loss;
    t[2] = (hv_tensor *)logits;
    t[3] = (hv_tensor *)labels;
    hv__vk_split(ctx, hv__vk_cross_entropy_part, t, 4, 15, 1, NULL);
    if (!ctx->kernel_failed) hv__vk_sum_scalar(ctx, loss, row_loss, (float)(1.0 / (double)logits->shape[0]));
}
static void hv__vk_cross_entropy_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_cross_entropy_bwd_one(ctx, t[0], t[1], t[2], t[3], t[4], *(const int64_t *)u);
}
static void hv__vk_cross_entropy_bwd(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                                     const hv_tensor *lse, const hv_tensor *gloss) {
    hv_tensor *t[5];
    t[0] = glogits;
    t[1] = (hv_tensor *)logits;
    t[2] = (hv_tensor *)labels;
    t[3] = (hv_tensor *)lse;
    t[4] = (hv_tensor *)gloss;
    hv__vk_split(ctx, hv__vk_cross_entropy_bwd_part, t, 5, 15, 1, &logits->shape[0]);
}

/* ---- convolution, pooling, resize, batch norm ----------------------------------------------- */

static int hv__vk_conv_geom(int32_t *p, const hv_tensor *x, const hv_tensor *y, const hv_tensor *w, const int64_t *g) {
    /* p[1..16] as conv.glsl lists them */
    p[1] = hv__vk_i32(x->shape[0]);
    p[2] = hv__vk_i32(x->shape[1]);
    p[3] = hv__vk_i32(x->shape[2]);
    p[4] = hv__vk_i32(x->shape[3]);
    p[5] = hv__vk_i32(y->shape[1]);
    p[6] = hv__vk_i32(y->shape[2]);
    p[7] = hv__vk_i32(y->shape[3]);
    p[8] = hv__vk_i32(w->shape[2]);
    p[9] = hv__vk_i32(w->shape[3]);
    p[10] = hv__vk_i32(g[HV__CG_SH]);
    p[11] = hv__vk_i32(g[HV__CG_SW]);
    p[12] = hv__vk_i32(g[HV__CG_PH]);
    p[13] = hv__vk_i32(g[HV__CG_PW]);
    p[14] = hv__vk_i32(g[HV__CG_DH]);
    p[15] = hv__vk_i32(g[HV__CG_DW]);
    p[16] = hv__vk_i32(g[HV__CG_GROUPS]);
    return 17;
}
static void hv__vk_conv2d_one(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    const hv_tensor *ts[4];
    int wr[4] = {1, 0, 0, 0};
    int32_t p[18];
    p[0] = hv__vk_i32(hv_numel(y));
    hv__vk_conv_geom(p, x, y, w, g);
    p[17] = b != NULL;
    ts[0] = y;
    ts[1] = x;
    ts[2] = w;
    ts[3] = b;
    hv__vk_run(ctx, "hv_conv2d", HV__VKS_CONV2D, ts, wr, 4, p, 18, (uint64_t)hv_numel(y), 256, 0);
}
static void hv__vk_conv2d_bwd_data_one(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    const hv_tensor *ts[3];
    int wr[3] = {1, 0, 0};
    int32_t p[17];
    p[0] = hv__vk_i32(hv_numel(gx));
    hv__vk_conv_geom(p, gx, gy, w, g);
    ts[0] = gx;
    ts[1] = gy;
    ts[2] = w;
    hv__vk_run(ctx, "hv_conv2d backward", HV__VKS_CONV2D_BWD_DATA, ts, wr, 3, p, 17, (uint64_t)hv_numel(gx), 256, 0);
}
static void hv__vk_conv2d_bwd_weight_one(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                     const int64_t *g) {
    const hv_tensor *ts[4];
    int wr[4] = {1, 1, 0, 0};
    int32_t p[18];
    hv_tensor wshape; /* only its kernel extents are read */
    int64_t nw = gw ? hv_numel(gw) : 0;
    memset(&wshape, 0, sizeof wshape);
    wshape.ndim = 4;
    if (gw) memcpy(wshape.shape, gw->shape, sizeof wshape.shape);
    else { /* the kernel extents from the output size: any consistent value works without gw */
        wshape.shape[2] = wshape.shape[3] = 1;
    }
    p[0] = hv__vk_i32(nw);
    hv__vk_conv_geom(p, x, gy, &wshape, g);
    p[17] = gb != NULL;
    ts[0] = gw ? gw : gb;
    ts[1] = gb ? gb : gw;
    ts[2] = x;
    ts[3] = gy;
    hv__vk_run(ctx, "hv_conv2d backward", HV__VKS_CONV2D_BWD_WEIGHT, ts, wr, 4, p, 18, (uint64_t)(nw + (gb ? gy->shape[1] : 0)), 64, 1);
}
static void hv__vk_pool_geom(int32_t *p, const hv_tensor *x, const hv_tensor *y, const int64_t *g) {
    int i;
    p[1] = hv__vk_i32(x->shape[2]);
    p[2] = hv__vk_i32(x->shape[3]);
    p[3] = hv__vk_i32(y->shape[2]);
    p[4] = hv__vk_i32(y->shape[3]);
    for (i = 0; i < 7; i++) p[5 + i] = g ? hv__vk_i32(g[i]) : 0; /* KH KW SH SW PH PW EXCL: the order of HV__PG_* */
}
static void hv__vk_max_pool2d_one(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g) {
    const hv_tensor *ts[3];
    int wr[3] = {1, 1, 0};
    int32_t p[13];
    p[0] = hv__vk_i32(hv_numel(y));
    hv__vk_pool_geom(p, x, y, g);
    p[12] = argmax != NULL;
    ts[0] = y;
    ts[1] = argmax;
    ts[2] = x;
    if (!argmax) wr[1] = 0;
    hv__vk_run(ctx, "hv_max_pool2d", HV__VKS_MAX_POOL2D, ts, wr, 3, p, 13, (uint64_t)hv_numel(y), 256, 0);
}
static void hv__vk_max_pool2d_bwd_one(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *argmax) {
    const hv_tensor *ts[3];
    int wr[3] = {1, 0, 0};
    int32_t p[3];
    int64_t planes = gy->shape[0] * gy->shape[1];
    p[0] = hv__vk_i32(planes);
    p[1] = hv__vk_i32(gx->shape[2] * gx->shape[3]);
    p[2] = hv__vk_i32(gy->shape[2] * gy->shape[3]);
    ts[0] = gx;
    ts[1] = gy;
    ts[2] = argmax;
    hv__vk_run(ctx, "hv_max_pool2d backward", HV__VKS_MAX_POOL2D_BWD, ts, wr, 3, p, 3, (uint64_t)planes, 64, 0);
}
static void hv__vk_avg_pool2d_one(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g) {
    const hv_tensor *ts[2];
    int wr[2] = {1, 0};
    int32_t p[12];
    p[0] = hv__vk_i32(hv_numel(y));
    hv__vk_pool_geom(p, x, y, g);
    ts[0] = y;
    ts[1] = x;
    hv__vk_run(ctx, "hv_avg_pool2d", HV__VKS_AVG_POOL2D, ts, wr, 2, p, 12, (uint64_t)hv_numel(y), 256, 0);
}
static void hv__vk_avg_pool2d_bwd_one(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const int64_t *g) {
    const hv_tensor *ts[2];
    int wr[2] = {1, 0};
    int32_t p[12];
    int64_t planes = gy->shape[0] * gy->shape[1];
    p[0] = hv__vk_i32(planes);
    hv__vk_pool_geom(p, gx, gy, g);
    ts[0] = gx;
    ts[1] = gy;
    hv__vk_run(ctx, "hv_avg_pool2d backward", HV__VKS_AVG_POOL2D_BWD, ts, wr, 2, p, 12, (uint64_t)planes, 64, 0);
}
/* the source-index scale of one axis, in float exactly as hv__linear_src computes it */
static float hv__vk_resize_scale(int64_t in, int64_t out, int align_corners) {
    if (align_corners) return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    return (float)in / (float)out;
}
static void hv__vk_resize_params(int32_t *p, const hv_tensor *x, const hv_tensor *y, int ac) {
    p[1] = hv__vk_i32(x->shape[2]);
    p[2] = hv__vk_i32(x->shape[3]);
    p[3] = hv__vk_i32(y->shape[2]);
    p[4] = hv__vk_i32(y->shape[3]);
    p[5] = ac;
    p[6] = hv__vk_f2i(hv__vk_resize_scale(x->shape[2], y->shape[2], ac));
    p[7] = hv__vk_f2i(hv__vk_resize_scale(x->shape[3], y->shape[3], ac));
}
static void hv__vk_resize_bilinear_one(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, int align_corners) {
    const hv_tensor *ts[2];
    int wr[2] = {1, 0};
    int32_t p[8];
    p[0] = hv__vk_i32(hv_numel(y));
    hv__vk_resize_params(p, x, y, align_corners);
    ts[0] = y;
    ts[1] = x;
    hv__vk_run(ctx, "hv_resize_bilinear", HV__VKS_RESIZE_BILINEAR, ts, wr, 2, p, 8, (uint64_t)hv_numel(y), 256, 0);
}
static void hv__vk_resize_bilinear_bwd_one(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, int align_corners) {
    const hv_tensor *ts[2];
    int wr[2] = {1, 0};
    int32_t p[8];
    int64_t planes = gy->shape[0] * gy->shape[1];
    p[0] = hv__vk_i32(planes);
    hv__vk_resize_params(p, gx, gy, align_corners);
    ts[0] = gx;
    ts[1] = gy;
    hv__vk_run(ctx, "hv_resize_bilinear backward", HV__VKS_RESIZE_BILINEAR_BWD, ts, wr, 2, p, 8, (uint64_t)planes, 64, 0);
}
/* the conv family splits over the images of the batch */
static void hv__vk_conv2d_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) { hv__vk_conv2d_one(ctx, t[0], t[1], t[2], t[3], (const int64_t *)u); }
static void hv__vk_conv2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    hv_tensor *t[4];
    t[0] = y;
    t[1] = (hv_tensor *)x;
    t[2] = (hv_tensor *)w;
    t[3] = (hv_tensor *)b;
    hv__vk_split(ctx, hv__vk_conv2d_part, t, 4, 3, 1, g);
}
static void hv__vk_conv2d_bwd_data_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_conv2d_bwd_data_one(ctx, t[0], t[1], t[2], (const int64_t *)u);
}
static void hv__vk_conv2d_bwd_data(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    hv_tensor *t[3];
    t[0] = gx;
    t[1] = (hv_tensor *)gy;
    t[2] = (hv_tensor *)w;
    hv__vk_split(ctx, hv__vk_conv2d_bwd_data_part, t, 3, 3, 1, g);
}
static void hv__vk_conv2d_bwd_weight_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_conv2d_bwd_weight_one(ctx, t[0], t[1], t[2], t[3], (const int64_t *)u);
}
static void hv__vk_conv2d_bwd_weight(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy, const int64_t *g) {
    hv_tensor *t[4];
    t[0] = gw;
    t[1] = gb;
    t[2] = (hv_tensor *)x;
    t[3] = (hv_tensor *)gy;
    hv__vk_split(ctx, hv__vk_conv2d_bwd_weight_part, t, 4, 12, 1, g);
}
static void hv__vk_max_pool2d_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) { hv__vk_max_pool2d_one(ctx, t[0], t[1], t[2], (const int64_t *)u); }
static void hv__vk_max_pool2d(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g) {
    hv_tensor *t[3];
    t[0] = y;
    t[1] = argmax;
    t[2] = (hv_tensor *)x;
    hv__vk_split(ctx, hv__vk_max_pool2d_part, t, 3, 7, 1, g);
}
static void hv__vk_max_pool2d_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    (void)u;
    hv__vk_max_pool2d_bwd_one(ctx, t[0], t[1], t[2]);
}
static void hv__vk_max_pool2d_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *argmax) {
    hv_tensor *t[3];
    t[0] = gx;
    t[1] = (hv_tensor *)gy;
    t[2] = (hv_tensor *)argmax;
    hv__vk_split(ctx, hv__vk_max_pool2d_bwd_part, t, 3, 7, 1, NULL);
}
static void hv__vk_avg_pool2d_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) { hv__vk_avg_pool2d_one(ctx, t[0], t[1], (const int64_t *)u); }
static void hv__vk_avg_pool2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g) {
    hv_tensor *t[2];
    t[0] = y;
    t[1] = (hv_tensor *)x;
    hv__vk_split(ctx, hv__vk_avg_pool2d_part, t, 2, 3, 1, g);
}
static void hv__vk_avg_pool2d_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_avg_pool2d_bwd_one(ctx, t[0], t[1], (const int64_t *)u);
}
static void hv__vk_avg_pool2d_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const int64_t *g) {
    hv_tensor *t[2];
    t[0] = gx;
    t[1] = (hv_tensor *)gy;
    hv__vk_split(ctx, hv__vk_avg_pool2d_bwd_part, t, 2, 3, 1, g);
}
static void hv__vk_resize_bilinear_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_resize_bilinear_one(ctx, t[0], t[1], *(const int *)u);
}
static void hv__vk_resize_bilinear(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, int align_corners) {
    hv_tensor *t[2];
    t[0] = y;
    t[1] = (hv_tensor *)x;
    hv__vk_split(ctx, hv__vk_resize_bilinear_part, t, 2, 3, 1, &align_corners);
}
static void hv__vk_resize_bilinear_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_resize_bilinear_bwd_one(ctx, t[0], t[1], *(const int *)u);
}
static void hv__vk_resize_bilinear_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, int align_corners) {
    hv_tensor *t[2];
    t[0] = gx;
    t[1] = (hv_tensor *)gy;
    hv__vk_split(ctx, hv__vk_resize_bilinear_bwd_part, t, 2, 3, 1, &align_corners);
}
static void hv__vk_batch_norm_stats(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x) {
    const hv_tensor *ts[3];
    int wr[3] = {1, 1, 0};
    int32_t p[3];
    int64_t N, C, S;
    hv__bn_dims(x, &N, &C, &S);
    p[0] = hv__vk_i32(N);
    p[1] = hv__vk_i32(C);
    p[2] = hv__vk_i32(S);
    ts[0] = mean;
    ts[1] = var;
    ts[2] = x;
    hv__vk_run(ctx, "hv_batch_norm", HV__VKS_BATCH_NORM_STATS, ts, wr, 3, p, 3, (uint64_t)C, 64, 1);
}
static void hv__vk_batch_norm_running(hv_ctx *ctx, hv_tensor *run_mean, hv_tensor *run_var, const hv_tensor *mean, const hv_tensor *var,
                                      float momentum, float unbias) {
    const hv_tensor *ts[4];
    int wr[4] = {1, 1, 0, 0};
    int32_t p[5];
    p[0] = hv__vk_i32(mean->shape[0]);
    p[1] = hv__vk_i32(run_mean->stride[0]);
    p[2] = hv__vk_i32(run_var->stride[0]);
    p[3] = hv__vk_f2i(momentum);
    p[4] = hv__vk_f2i(unbias);
    ts[0] = run_mean;
    ts[1] = run_var;
    ts[2] = mean;
    ts[3] = var;
    hv__vk_run(ctx, "hv_batch_norm", HV__VKS_BATCH_NORM_RUNNING, ts, wr, 4, p, 5, (uint64_t)mean->shape[0], 64, 0);
}
static void hv__vk_batch_norm(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var,
                              const hv_tensor *w, const hv_tensor *b, float eps) {
    const hv_tensor *ts[6];
    int wr[6] = {1, 0, 0, 0, 0, 0};
    int32_t p[6];
    int64_t N, C, S;
    hv__bn_dims(x, &N, &C, &S);
    p[0] = hv__vk_i32(hv_numel(x));
    p[1] = hv__vk_i32(C);
    p[2] = hv__vk_i32(S);
    p[3] = hv__vk_f2i(eps);
    p[4] = w != NULL;
    p[5] = b != NULL;
    ts[0] = y;
    ts[1] = x;
    ts[2] = mean;
    ts[3] = var;
    ts[4] = w;
    ts[5] = b;
    hv__vk_run(ctx, "hv_batch_norm", HV__VKS_BATCH_NORM, ts, wr, 6, p, 6, (uint64_t)hv_numel(x), 256, 0);
}
static void hv__vk_batch_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                  const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats) {
    const hv_tensor *ts[8];
    int wr[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    int32_t p[9];
    int64_t N, C, S;
    const hv_tensor *any = gx ? gx : gw ? gw : gb;
    hv__bn_dims(x, &N, &C, &S);
    p[0] = hv__vk_i32(N);
    p[1] = hv__vk_i32(C);
    p[2] = hv__vk_i32(S);
    p[3] = hv__vk_f2i(eps);
    p[4] = batch_stats;
    p[5] = gx != NULL;
    p[6] = gw != NULL;
    p[7] = gb != NULL;
    p[8] = w != NULL;
    ts[0] = gx ? gx : any;
    ts[1] = gw ? gw : any;
    ts[2] = gb ? gb : any;
    ts[3] = x;
    ts[4] = gy;
    ts[5] = mean;
    ts[6] = var;
    ts[7] = w ? w : mean;
    wr[0] = gx != NULL;
    wr[1] = gw != NULL;
    wr[2] = gb != NULL;
    hv__vk_run(ctx, "hv_batch_norm backward", HV__VKS_BATCH_NORM_BWD, ts, wr, 8, p, 9, (uint64_t)C, 64, 1);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void hv__vk_sync(hv_ctx *ctx) { hv__vk_flush(HV__VK(ctx)); }
static void hv__vk_step_end(hv_ctx *ctx) {
    hv__vk *vk = HV__VK(ctx);
    int i;
    hv__vk_flush(vk); /* the pool's memory is free once the step's work is done */
    if (vk->npool > 1) { /* one block of the step's total from now on, as the host arena does */
        uint64_t total = 0;
        for (i = 0; i < vk->npool; i++) total += vk->pool[i]->size;
        if (total <= vk->max_alloc) {
            hv__vk_block *b;
            for (i = 0; i < vk->npool; i++) hv__vk_block_destroy(vk, vk->pool[i]);
            vk->npool = 0;
            if ((b = hv__vk_block_new(vk, total, 0)) != NULL) vk->pool[vk->npool++] = b;
        }
    }
    for (i = 0; i < vk->npool; i++) vk->pool[i]->used = 0;
}
static const char *hv__vk_device_name(const hv_ctx *ctx) { return HV__VK(ctx)->props.deviceName; }
static void hv__vk_destroy(hv__vk *vk) {
    uint32_t i;
    int k;
    if (vk->dev && !vk->vkDeviceWaitIdle) { /* device functions never loaded */
        PFN_vkDestroyDevice destroy = (PFN_vkDestroyDevice)vk->vkGetDeviceProcAddr(vk->dev, "vkDestroyDevice");
        if (destroy) destroy(vk->dev, NULL);
        vk->dev = VK_NULL_HANDLE;
    }
    if (vk->dev) {
        vk->vkDeviceWaitIdle(vk->dev);
        for (i = 0; i < vk->nblocks; i++) hv__vk_block_destroy(vk, vk->blocks[i]);
        hv__vk_hostbuf_free(vk, &vk->stage);
        hv__vk_hostbuf_free(vk, &vk->params);
        for (k = 0; k < HV__VKS_COUNT; k++)
            if (vk->pipes[k]) vk->vkDestroyPipeline(vk->dev, vk->pipes[k], NULL);
        for (k = 0; k < HV__VK_MAX_ARGS + 2; k++) {
            if (vk->pipe_layout[k]) vk->vkDestroyPipelineLayout(vk->dev, vk->pipe_layout[k], NULL);
            if (vk->set_layout[k]) vk->vkDestroyDescriptorSetLayout(vk->dev, vk->set_layout[k], NULL);
        }
        for (k = 0; k < vk->ndpools; k++) vk->vkDestroyDescriptorPool(vk->dev, vk->dpools[k], NULL);
        if (vk->pcache) vk->vkDestroyPipelineCache(vk->dev, vk->pcache, NULL);
        if (vk->fence) vk->vkDestroyFence(vk->dev, vk->fence, NULL);
        if (vk->cpool) vk->vkDestroyCommandPool(vk->dev, vk->cpool, NULL);
        vk->vkDestroyDevice(vk->dev, NULL);
    }
    if (vk->inst && vk->vkDestroyInstance) vk->vkDestroyInstance(vk->inst, NULL);
    hv__free(vk->blocks);
    hv__free(vk->pool);
    hv__free(vk->dpools);
    hv__free(vk->downloads);
    hv__free(vk);
}
static void hv__vk_shutdown(hv_ctx *ctx) {
    hv__vk *vk = HV__VK(ctx);
    if (!vk) return;
    hv__vk_flush(vk);
    hv__vk_destroy(vk);
    ctx->dev = NULL;
}

static const hv__backend *hv__vk_backend(void);

/* a size in bytes from the environment (tests shrink the device's limits with these) */
static uint64_t hv__vk_env_bytes(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    unsigned long long n;
    char *end;
    if (!v || !*v) return dflt;
    n = strtoull(v, &end, 10);
    return (*end || n == 0 || n > dflt) ? dflt : (uint64_t)n;
}

static int hv__vk_init(hv_ctx *ctx, const hv_init_desc *desc) {
    hv__vk *vk;
    VkApplicationInfo app;
    VkInstanceCreateInfo ici;
    VkDeviceQueueCreateInfo qci;
    VkDeviceCreateInfo dci;
    VkCommandPoolCreateInfo cpi;
    VkCommandBufferAllocateInfo cbi;
    VkFenceCreateInfo fci;
    VkPipelineCacheCreateInfo pci;
    VkResult r;
    float prio = 1.0f;
    uint32_t api = VK_API_VERSION_1_0;
    const char *want = desc->device && *desc->device ? desc->device : getenv("HUMANVIT_VULKAN_DEVICE");
    PFN_vkEnumerateInstanceVersion enum_version;
    if (sizeof(void *) < 8) return hv__fail("hv_init", "the Vulkan backend needs a 64-bit build (device addresses are 64-bit)"), -1;
    vk = (hv__vk *)hv__malloc(sizeof *vk);
    if (!vk) return hv__fail("hv_init", "out of memory"), -1;
    memset(vk, 0, sizeof *vk);
    if (hv__vk_load(vk)) goto fail;
    enum_version = (PFN_vkEnumerateInstanceVersion)vk->vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    if (enum_version && enum_version(&api) != VK_SUCCESS) api = VK_API_VERSION_1_0;
    if (api > VK_API_VERSION_1_1) api = VK_API_VERSION_1_1;
    memset(&app, 0, sizeof app);
    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "humanvit";
    app.pEngineName = "humanvit";
    app.apiVersion = api;
    memset(&ici, 0, sizeof ici);
    ici.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    ici.pApplicationInfo = &app;
    if ((r = vk->vkCreateInstance(&ici, NULL, &vk->inst)) != VK_SUCCESS) {
        hv__fail("hv_init", "cannot create a Vulkan instance: %s (no Vulkan driver installed? for a CPU device: apt-get install "
                 "mesa-vulkan-drivers)", hv__vk_result_str(r));
        goto fail;
    }
#define HV__VK_LOAD_I(f)                                                                           \
    if (!(vk->f = (PFN_##f)vk->vkGetInstanceProcAddr(vk->inst, #f))) {                             \
        hv__fail("hv_init", "the Vulkan loader lacks " #f);                                        \
        goto fail;                                                                                 \
    }
    HV__VK_INSTANCE_FNS(HV__VK_LOAD_I)
#undef HV__VK_LOAD_I
    if (hv__vk_pick_device(vk, want)) goto fail;
    memset(&qci, 0, sizeof qci);
    qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
    qci.queueFamilyIndex = vk->qfam;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    memset(&dci, 0, sizeof dci);
    dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    if ((r = vk->vkCreateDevice(vk->phys, &dci, NULL, &vk->dev)) != VK_SUCCESS) {
        hv__fail("hv_init", "cannot create the Vulkan device %s: %s", vk->props.deviceName, hv__vk_result_str(r));
        vk->dev = VK_NULL_HANDLE;
        goto fail;
    }
#define HV__VK_LOAD_D(f)                                                                           \
    if (!(vk->f = (PFN_##f)vk->vkGetDeviceProcAddr(vk->dev, #f))) {                                \
        hv__fail("hv_init", "the Vulkan device %s lacks " #f, vk->props.deviceName);               \
        goto fail;                                                                                 \
    }
    HV__VK_DEVICE_FNS(HV__VK_LOAD_D)
#undef HV__VK_LOAD_D
    vk->vkGetDeviceQueue(vk->dev, vk->qfam, 0, &vk->queue);
    vk->max_range = hv__vk_env_bytes("HUMANVIT_VULKAN_MAX_RANGE", vk->props.limits.maxStorageBufferRange);
    vk->align = vk->props.limits.minStorageBufferOffsetAlignment < 4 ? 4 : vk->props.limits.minStorageBufferOffsetAlignment;
    vk->max_alloc = (uint64_t)1 << 30; /* Vulkan 1.0 promises nothing; 1 GiB is safe everywhere */
    if (api >= VK_API_VERSION_1_1 && vk->props.apiVersion >= VK_API_VERSION_1_1) {
        PFN_vkGetPhysicalDeviceProperties2 props2 =
            (PFN_vkGetPhysicalDeviceProperties2)vk->vkGetInstanceProcAddr(vk->inst, "vkGetPhysicalDeviceProperties2");
        if (props2) {
            VkPhysicalDeviceMaintenance3Properties m3;
            VkPhysicalDeviceProperties2 p2;
            memset(&m3, 0, sizeof m3);
            memset(&p2, 0, sizeof p2);
            m3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES;
            p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
            p2.pNext = &m3;
            props2(vk->phys, &p2);
            if (m3.maxMemoryAllocationSize) vk->max_alloc = m3.maxMemoryAllocationSize;
        }
    }
    vk->max_alloc = hv__vk_env_bytes("HUMANVIT_VULKAN_MAX_ALLOC", vk->max_alloc);
    vk->pool_first = desc->arena_bytes ? desc->arena_bytes : ((uint64_t)16 << 20);
    if (vk->pool_first > vk->max_alloc) vk->pool_first = vk->max_alloc;
    vk->param_slot = (uint32_t)hv__vk_round(HV__VK_MAX_PARAMS * 4, vk->align > 256 ? vk->align : 256);
    memset(&cpi, 0, sizeof cpi);
    cpi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
    cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    cpi.queueFamilyIndex = vk->qfam;
    if ((r = vk->vkCreateCommandPool(vk->dev, &cpi, NULL, &vk->cpool)) != VK_SUCCESS) {
        hv__vk_fail("vkCreateCommandPool", r);
        goto fail;
    }
    memset(&cbi, 0, sizeof cbi);
    cbi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    cbi.commandPool = vk->cpool;
    cbi.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cbi.commandBufferCount = 1;
    if ((r = vk->vkAllocateCommandBuffers(vk->dev, &cbi, &vk->cmd)) != VK_SUCCESS) {
        hv__vk_fail("vkAllocateCommandBuffers", r);
        goto fail;
    }
    memset(&fci, 0, sizeof fci);
    fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
    if ((r = vk->vkCreateFence(vk->dev, &fci, NULL, &vk->fence)) != VK_SUCCESS) {
        hv__vk_fail("vkCreateFence", r);
        goto fail;
    }
    memset(&pci, 0, sizeof pci);
    pci.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
    if ((r = vk->vkCreatePipelineCache(vk->dev, &pci, NULL, &vk->pcache)) != VK_SUCCESS) vk->pcache = VK_NULL_HANDLE;
    if (hv__vk_hostbuf_init(vk, &vk->stage, hv__vk_env_bytes("HUMANVIT_VULKAN_STAGING", (uint64_t)16 << 20)) ||
        hv__vk_hostbuf_init(vk, &vk->params, (uint64_t)vk->param_slot * 4096))
        goto fail;
    ctx->dev = vk;
    ctx->be = hv__vk_backend();
    ctx->kind = HV_BACKEND_VULKAN;
    return 0;
fail:
    hv__vk_destroy(vk);
    return -1;
}

static const hv__backend *hv__vk_backend(void) {
    static hv__backend be;
    if (!be.name) {
        be.mem_alloc = hv__vk_mem_alloc;
        be.mem_free = hv__vk_mem_free;
        be.write = hv__vk_write;
        be.read = hv__vk_read;
        be.sync = hv__vk_sync;
        be.step_end = hv__vk_step_end;
        be.shutdown = hv__vk_shutdown;
        be.device_name = hv__vk_device_name;
        be.copy = hv__vk_copy;
        be.fill = hv__vk_fill;
        be.gemm = hv__vk_gemm;
        be.binary = hv__vk_binary;
        be.unary = hv__vk_unary;
        be.unary_bwd = hv__vk_unary_bwd;
        be.reduce = hv__vk_reduce;
        be.reduce_max_bwd = hv__vk_reduce_max_bwd;
        be.softmax = hv__vk_softmax;
        be.softmax_bwd = hv__vk_softmax_bwd;
        be.layer_norm = hv__vk_layer_norm;
        be.layer_norm_bwd = hv__vk_layer_norm_bwd;
        be.attention = hv__vk_attention;
        be.attention_bwd = hv__vk_attention_bwd;
        be.gather = hv__vk_gather;
        be.scatter_add = hv__vk_scatter_add;
        be.cross_entropy = hv__vk_cross_entropy;
        be.cross_entropy_bwd = hv__vk_cross_entropy_bwd;
        be.topk_correct = hv__vk_topk_correct;
        be.diff_loss = hv__vk_diff_loss;
        be.diff_loss_bwd = hv__vk_diff_loss_bwd;
        be.conv2d = hv__vk_conv2d;
        be.conv2d_bwd_data = hv__vk_conv2d_bwd_data;
        be.conv2d_bwd_weight = hv__vk_conv2d_bwd_weight;
        be.max_pool2d = hv__vk_max_pool2d;
        be.max_pool2d_bwd = hv__vk_max_pool2d_bwd;
        be.avg_pool2d = hv__vk_avg_pool2d;
        be.avg_pool2d_bwd = hv__vk_avg_pool2d_bwd;
        be.resize_bilinear = hv__vk_resize_bilinear;
        be.resize_bilinear_bwd = hv__vk_resize_bilinear_bwd;
        be.batch_norm_stats = hv__vk_batch_norm_stats;
        be.batch_norm_running = hv__vk_batch_norm_running;
        be.batch_norm = hv__vk_batch_norm;
        be.batch_norm_bwd = hv__vk_batch_norm_bwd;
        be.adamw = hv__vk_adamw;
        be.name = "vulkan";
    }
    return &be;
}

#endif /* HUMANVIT_VULKAN */
/* HV-SECTION vulkan END */

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
/* initialisers draw on the host from the context's stream (same values on every backend) */
static int hv__xavier_uniform(hv_tensor *w, int64_t fan_out, int64_t fan_in) {
    float a = sqrtf(6.0f / (float)(fan_in + fan_out)), *p = (float *)hv__host_begin(w, 0);
    int64_t i, n = hv_numel(w);
    if (!p) return -1;
    for (i = 0; i < n; i++) p[i] = a * (2.0f * hv_rng_uniform(w->ctx) - 1.0f);
    return hv__host_end(w, p, 1);
}
static int hv__normal_fill(hv_tensor *t, float std) {
    float *p = (float *)hv__host_begin(t, 0);
    int64_t i, n = hv_numel(t);
    if (!p) return -1;
    for (i = 0; i < n; i++) p[i] = std * hv_rng_normal(t->ctx);
    return hv__host_end(t, p, 1);
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
    return hv__xavier_uniform(l->w, out, in);
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
    if (!(p = (float *)hv__host_begin(out, 0))) return -1;
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
    return hv__host_end(out, p, 1);
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
    src = (const float *)hv__host_begin(pos, 1);
    dst = src ? (float *)hv__host_begin(out, 0) : NULL;
    if (!dst) {
        hv_tensor_free(out);
        return NULL;
    }
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
    if (hv__host_end(out, dst, 1)) {
        hv_tensor_free(out);
        out = NULL;
    }
    hv__host_end(pos, (void *)src, 0);
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
    if (hv__normal_fill(v->cls_token, 0.02f) || hv_sincos_pos_embed(v->pos_embed, (int)g, (int)D) ||
        hv__xavier_uniform(v->patch_w, D, (int64_t)d->in_chans * d->patch_size * d->patch_size))
        return -1;
    {   /* the conv bias keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): MAE re-inits only Linear and LayerNorm */
        float bound = 1.0f / sqrtf((float)d->in_chans * d->patch_size * d->patch_size), *pb = (float *)hv__host_begin(v->patch_b, 0);
        if (!pb) return -1;
        for (i = 0; i < D; i++) pb[i] = bound * (2.0f * hv_rng_uniform(ctx) - 1.0f);
        if (hv__host_end(v->patch_b, pb, 1)) return -1;
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
        if (hv__normal_fill(v->head.w, 0.01f)) goto fail;
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
        if (bn && training) { /* on a device backend: a 4-byte download and upload */
            int32_t *count = (int32_t *)hv__host_begin(vit->head_count, 1);
            if (!count) return NULL;
            count[0] += 1;
            if (hv__host_end(vit->head_count, count, 1)) return NULL;
        }
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
    if (hv__normal_fill(m->mask_token, 0.02f) || hv_sincos_pos_embed(m->dec_pos, (int)g, (int)Dd)) goto fail;
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
    int i, last = -1, drawn = 0;
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
        noise = hv_tensor_temp(ctx, HV_F32, hv_shape_of(2, s2));
        drawn = 1;
    }
    ids_restore = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    shuffle = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    mask = hv_tensor_temp(ctx, HV_F32, hv_shape_of(2, s2));
    s2[1] = K;
    ids_keep = hv_tensor_temp(ctx, HV_I32, hv_shape_of(2, s2));
    if (!noise || !ids_restore || !shuffle || !mask || !ids_keep) return NULL;
    {   /* the masking runs on the host (an argsort); on a device backend the given noise comes
           down and the indices and the mask go up */
        float *nz = (float *)hv__host_begin(noise, !drawn);
        void *pk, *pr, *pm, *ps;
        int64_t j;
        if (!nz) return NULL;
        for (j = 0; drawn && j < B * L; j++) nz[j] = hv_rng_uniform(ctx);
        pk = hv__host_begin(ids_keep, 0);
        pr = pk ? hv__host_begin(ids_restore, 0) : NULL;
        pm = pr ? hv__host_begin(mask, 0) : NULL;
        ps = pm ? hv__host_begin(shuffle, 0) : NULL;
        if (!ps) return NULL;
        hv__mae_masking(nz, B, L, K, (int32_t *)pk, (int32_t *)pr, (float *)pm, (int32_t *)ps);
        if (hv__host_end(shuffle, ps, 1) || hv__host_end(mask, pm, 1) || hv__host_end(ids_restore, pr, 1) || hv__host_end(ids_keep, pk, 1))
            return NULL;
        hv__host_end(noise, nz, 0);
    }

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
/* HV-SECTION checkpoints END */

/* ==== 10. IMAGES: decoding, resizing, .npy ==================================================== */
/* HV-SECTION images BEGIN */
/* HV-SECTION images END */

#endif /* HUMANVIT_IMPLEMENTATION_DONE */
#endif /* HUMANVIT_IMPLEMENTATION */
