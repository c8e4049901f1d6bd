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
/* ---- images and .npy arrays (section 10) ------------------------------------------------------
   Decoders for PNG, baseline JPEG and PPM/PGM, written here from the specifications and safe on
   untrusted input: every read is bounds-checked, a truncated or corrupt file is an error (never a
   crash), and images larger than HV_IMAGE_MAX_SIDE per side or HV_IMAGE_MAX_PIXELS in all are
   refused before anything is allocated. The format is told by the magic bytes, not the name.

   What a decoded hv_image holds: 8-bit samples, rows top to bottom, channels interleaved.
   channels = 1 for gray sources (PNG gray and gray+alpha, PGM, gray JPEG) and 3 for colour ones
   (PNG RGB, RGBA and palette, PPM, YCbCr/RGB JPEG). Alpha is dropped, as PIL's .convert('RGB')
   and .convert('L') drop it (no compositing). Gray stays gray: hv_image_to_tensor replicates it.
     PNG: bit depths 1/2/4/8/16 of every colour type, palette (indices past the PLTE are black),
       Adam7 interlacing, all filters. Samples of fewer than 8 bits are scaled to 0..255
       (v * 255 / (2^depth - 1)); 16-bit samples keep their high byte (as Pillow does for 16-bit
       RGB/RGBA/gray+alpha, and libpng's strip_16; Pillow opens 16-bit gray as mode I;16, whose
       .convert('L'/'RGB') clips to 255 instead, almost all white: we do not copy that). tRNS and gamma/colour chunks are ignored. Chunk CRCs and the zlib Adler-32
       are checked: a mismatch is an error. Unknown ancillary chunks are skipped, unknown critical
       chunks are an error.
     JPEG: baseline and extended sequential Huffman (SOF0/SOF1), 8-bit, 1 or 3 components, any
       sampling factors that divide the largest (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1), interleaved
       or not, restart markers. Decoded as libjpeg-turbo does by default (what Pillow uses):
       the accurate integer IDCT (jidctint), "fancy" triangle-filter chroma upsampling, and its
       fixed-point YCbCr->RGB. On the test images the result equals Pillow's decode bit for bit
       (tests/test_images.c holds that, with a tolerance of 1 level in case a libjpeg build
       differs). Progressive, lossless, arithmetic-coded, 12-bit and CMYK JPEGs are refused with
       an error that says so.
     PPM/PGM/PBM: P1-P6 (ASCII and binary), comments; maxval 255 is kept, any other maxval
       (1..65535) is scaled to 8 bits as round(v * 255 / maxval), as Pillow does. */
#ifndef HV_IMAGE_MAX_SIDE
#define HV_IMAGE_MAX_SIDE 16384 /* pixels per side; override before including the header */
#endif
#ifndef HV_IMAGE_MAX_PIXELS
#define HV_IMAGE_MAX_PIXELS (1 << 26) /* width * height (64 Mpixel) */
#endif

typedef struct hv_image {
    int width, height, channels; /* channels: 1 (gray) or 3 (RGB) from the decoders; 1..4 allowed */
    uint8_t *pixels;             /* height rows of width * channels bytes, no padding */
} hv_image;

/* 0 or -1 (hv_last_error names the file and the problem). On error *out is zeroed. */
HVDEF int hv_image_load(const char *path, hv_image *out);
HVDEF int hv_image_load_memory(const void *buf, size_t len, hv_image *out);
HVDEF int hv_image_alloc(hv_image *out, int width, int height, int channels); /* zeroed pixels */
HVDEF void hv_image_free(hv_image *img); /* frees the pixels, zeroes the struct; NULL is fine */
/* binary PGM (P5) for 1 channel, PPM (P6) for 3; written to a temporary file then renamed */
HVDEF int hv_image_save_ppm(const char *path, const hv_image *img);

/* Resampling filters, numbered as PIL.Image.Resampling. */
enum { HV_RESIZE_LANCZOS = 1, HV_RESIZE_BILINEAR = 2, HV_RESIZE_BICUBIC = 3, HV_RESIZE_BOX = 4, HV_RESIZE_HAMMING = 5 };
/* PIL's Image.resize: separable convolution, the filter's support widened by the downscale
   factor (antialiasing), coefficients in 22-bit fixed point, each pass rounded to 8 bits; bicubic
   is Keys' cubic with a = -0.5. The pass order is Pillow 13's: horizontal first, except when the
   height shrinks by more than twice as many pixels as the width (older Pillow always went
   horizontal first; the two orders can differ by 1 level, and for the eval transform only on
   images more than twice as tall as wide). The same bytes as Pillow 13 on the test images.
   Channels are filtered independently (no alpha premultiplication). */
HVDEF int hv_image_resize(const hv_image *in, int width, int height, int filter, hv_image *out);
/* torchvision CenterCrop: offsets int(round((in - out) / 2.0)) (round half to even); an image
   smaller than the crop is padded with zeros first, as torchvision does */
HVDEF int hv_image_center_crop(const hv_image *in, int width, int height, hv_image *out);
/* ToTensor + Normalize: out (3, H, W) f32 = (p / 255 - mean[c]) / std[c], in float arithmetic
   as torch does. Gray (1 or 2 channels) is replicated to RGB as PIL's .convert('RGB'); a 4th
   channel is dropped. mean NULL means 0, std NULL means 1. */
HVDEF int hv_image_to_tensor(const hv_image *img, const float mean[3], const float std[3], float *out);
/* The upstream evaluation transform (humanlike-vits test_model.py): Resize(size + 32, BICUBIC)
   of the shorter side (long side int(size' * long / short)), CenterCrop(size), ToTensor,
   Normalize(ImageNet mean .485 .456 .406, std .229 .224 .225). out: (3, size, size) f32. */
HVDEF int hv_image_eval_transform(const hv_image *in, int size, float *out);

/* .npy arrays. save: f32 as '<f4', i32 as '<i4', C order, format 1.0 with numpy's own header
   padding (the same bytes as np.save); any strided view is written densely. The file is written
   under a temporary name and renamed, so an existing file is never left half-written. */
HVDEF int hv_npy_save(const char *path, const hv_tensor *t);
/* load: '<f4' and '<f8' become f32, '<i4' and '<i8' become i32 (an i8 value outside int32 is an
   error); C order only, up to HV_MAX_DIMS axes. A new persistent tensor, or NULL. */
HVDEF hv_tensor *hv_npy_load(hv_ctx *ctx, const char *path);
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
    {
        int64_t s4[4];
        s4[0] = B;
        s4[1] = b->heads;
        s4[2] = N;
        s4[3] = D / b->heads;
        q = hv_reshape(hv_slice(qkv, 0, 0, 1, 1), hv_shape_of(4, s4));
        k = hv_reshape(hv_slice(qkv, 0, 1, 2, 1), hv_shape_of(4, s4));
        v = hv_reshape(hv_slice(qkv, 0, 2, 3, 1), hv_shape_of(4, s4));
    }
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
        if (!(v->head_count = hv__param1(&v->params, ctx, "", "head.0.num_batches_tracked", 1, 0))) goto fail;
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
        if (bn && training) hv_data(vit->head_count)[0] += 1.0f;
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
/* HV-SECTION checkpoints END */

/* ==== 10. IMAGES: decoding, resizing, .npy ==================================================== */
/* HV-SECTION images BEGIN */
#include <errno.h>

/* Everything below reads untrusted bytes. The rules: every index is checked against the buffer
   before use, sizes are computed in 64 bits after the dimensions passed the limits, nothing is
   allocated from a header's word before the file proves it holds enough data, and each error
   names the file (the path, or "<memory>") and what was wrong with it. */

typedef struct hv__imgsrc {
    const char *op;   /* the public call, for the error prefix */
    const char *name; /* the path or "<memory>" */
} hv__imgsrc;

static int hv__img_err(const hv__imgsrc *s, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hv__fail(s->op, "%s: %s", s->name, msg);
    return -1;
}

static uint32_t hv__be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static unsigned hv__be16(const uint8_t *p) { return ((unsigned)p[0] << 8) | (unsigned)p[1]; }
static int hv__host_is_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}
static void hv__bswap_inplace(uint8_t *p, size_t count, int width) {
    size_t i;
    int j;
    for (i = 0; i < count; i++, p += width)
        for (j = 0; j < width / 2; j++) {
            uint8_t t = p[j];
            p[j] = p[width - 1 - j];
            p[width - 1 - j] = t;
        }
}

#define HV__MAX_FILE_BYTES ((size_t)1 << 31) /* images and .npy headers read whole: 2 GiB at most */

/* the whole file into a new buffer; errors name the path and the system's reason */
static int hv__read_file(const char *op, const char *path, uint8_t **data, size_t *len) {
    FILE *f;
    long size;
    uint8_t *buf;
    size_t got;
    *data = NULL;
    *len = 0;
    if (!path) return hv__fail(op, "path is NULL"), -1;
    f = fopen(path, "rb");
    if (!f) return hv__fail(op, "cannot open '%s': %s", path, strerror(errno)), -1;
    if (fgetc(f) == EOF && ferror(f)) { /* a directory opens, but does not read */
        int e = errno;
        fclose(f);
        return hv__fail(op, "cannot read '%s': %s", path, strerror(e)), -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return hv__fail(op, "cannot read '%s': it is not a regular file", path), -1;
    }
    if ((unsigned long)size > HV__MAX_FILE_BYTES) {
        fclose(f);
        return hv__fail(op, "'%s' is %ld bytes, more than the %zu this reader accepts", path, size, HV__MAX_FILE_BYTES), -1;
    }
    buf = (uint8_t *)hv__malloc((size_t)size);
    if (!buf) {
        fclose(f);
        return hv__fail(op, "out of memory reading '%s' (%ld bytes)", path, size), -1;
    }
    got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        hv__free(buf);
        return hv__fail(op, "cannot read '%s': read %zu of %ld bytes", path, got, size), -1;
    }
    *data = buf;
    *len = got;
    return 0;
}

/* Writes parts[0..n) to path + ".hvtmp", then renames it over path: readers never see a
   half-written file, and an old file survives a failed write. */
static int hv__write_atomic(const char *op, const char *path, const void *const *parts, const size_t *sizes, int n) {
    size_t plen;
    char *tmp;
    FILE *f;
    int i, ok = 1;
    if (!path) return hv__fail(op, "path is NULL"), -1;
    plen = strlen(path);
    tmp = (char *)hv__malloc(plen + 8);
    if (!tmp) return hv__fail(op, "out of memory"), -1;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".hvtmp", 7);
    f = fopen(tmp, "wb");
    if (!f) {
        hv__fail(op, "cannot create '%s': %s", tmp, strerror(errno));
        hv__free(tmp);
        return -1;
    }
    for (i = 0; i < n && ok; i++)
        if (sizes[i] && fwrite(parts[i], 1, sizes[i], f) != sizes[i]) ok = 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        hv__fail(op, "cannot write '%s': %s", tmp, strerror(errno));
        remove(tmp);
        hv__free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
#ifdef _WIN32
        remove(path); /* Windows' rename does not replace an existing file */
        if (rename(tmp, path) == 0) {
            hv__free(tmp);
            return 0;
        }
#endif
        hv__fail(op, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        remove(tmp);
        hv__free(tmp);
        return -1;
    }
    hv__free(tmp);
    return 0;
}

/* ---- hv_image basics ------------------------------------------------------------------------ */

static int hv__img_check_size(const hv__imgsrc *s, int64_t w, int64_t h) {
    if (w < 1 || h < 1) return hv__img_err(s, "image size %lldx%lld is empty", (long long)w, (long long)h);
    if (w > HV_IMAGE_MAX_SIDE || h > HV_IMAGE_MAX_SIDE || w * h > (int64_t)HV_IMAGE_MAX_PIXELS)
        return hv__img_err(s, "image size %lldx%lld is over the limit (%d per side, %lld pixels; define HV_IMAGE_MAX_SIDE / "
                              "HV_IMAGE_MAX_PIXELS before including humanvit.h to change it)",
                           (long long)w, (long long)h, (int)HV_IMAGE_MAX_SIDE, (long long)HV_IMAGE_MAX_PIXELS);
    return 0;
}

static int hv__img_make(const hv__imgsrc *s, hv_image *img, int w, int h, int c) {
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    img->pixels = (uint8_t *)hv__malloc(n);
    if (!img->pixels) return hv__img_err(s, "out of memory for a %dx%dx%d image", w, h, c);
    img->width = w;
    img->height = h;
    img->channels = c;
    return 0;
}

HVDEF void hv_image_free(hv_image *img) {
    if (!img) return;
    hv__free(img->pixels);
    memset(img, 0, sizeof *img);
}

HVDEF int hv_image_alloc(hv_image *out, int width, int height, int channels) {
    hv__imgsrc s;
    s.op = "hv_image_alloc";
    s.name = "image";
    if (!out) return hv__fail(s.op, "out is NULL"), -1;
    memset(out, 0, sizeof *out);
    if (channels < 1 || channels > 4) return hv__fail(s.op, "channels must be 1..4, got %d", channels), -1;
    if (hv__img_check_size(&s, width, height) != 0) return -1;
    if (hv__img_make(&s, out, width, height, channels) != 0) return -1;
    memset(out->pixels, 0, (size_t)width * (size_t)height * (size_t)channels);
    return 0;
}

/* a user's image: non-NULL, sane sizes, pixels present */
static int hv__img_check_arg(const char *op, const char *role, const hv_image *img) {
    if (!img) return hv__fail(op, "%s is NULL", role), -1;
    if (!img->pixels || img->width < 1 || img->height < 1 || img->channels < 1 || img->channels > 4)
        return hv__fail(op, "%s is not a valid image (%dx%d, %d channels, pixels %s)", role, img->width, img->height, img->channels,
                        img->pixels ? "set" : "NULL"),
               -1;
    return 0;
}

/* ---- PPM / PGM / PBM (netpbm P1..P6) --------------------------------------------------------- */

typedef struct hv__pnm {
    const uint8_t *p;
    size_t len, pos;
} hv__pnm;

static int hv__pnm_space(int ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'; }

/* skips whitespace and '#' comments (which run to the end of the line) */
static void hv__pnm_skip(hv__pnm *r) {
    while (r->pos < r->len) {
        int ch = r->p[r->pos];
        if (ch == '#') {
            while (r->pos < r->len && r->p[r->pos] != '\n' && r->p[r->pos] != '\r') r->pos++;
        } else if (hv__pnm_space(ch)) {
            r->pos++;
        } else {
            break;
        }
    }
}

/* a decimal number; -1: none there (end of data or another character), -2: too large */
static long hv__pnm_uint(hv__pnm *r) {
    long v = 0;
    size_t start;
    hv__pnm_skip(r);
    start = r->pos;
    while (r->pos < r->len && r->p[r->pos] >= '0' && r->p[r->pos] <= '9') {
        v = v * 10 + (r->p[r->pos++] - '0');
        if (v > 1000000000L) return -2;
    }
    return r->pos == start ? -1 : v;
}

/* maxval 255 is kept; any other is scaled to 0..255 with rounding, as Pillow does */
static uint8_t hv__pnm_scale(unsigned v, unsigned maxval) {
    if (maxval == 255) return (uint8_t)v;
    return (uint8_t)((v * 510u + maxval) / (2u * maxval));
}

static int hv__pnm_decode(const hv__imgsrc *s, const uint8_t *p, size_t len, hv_image *out) {
    hv__pnm r;
    int kind = p[1] - '0', ch, binary;
    long w, h, maxval = 1;
    size_t npix, nsamp, i, need;
    r.p = p;
    r.len = len;
    r.pos = 2;
    w = hv__pnm_uint(&r);
    h = w >= 0 ? hv__pnm_uint(&r) : -1;
    if (kind != 1 && kind != 4 && h >= 0) maxval = hv__pnm_uint(&r);
    if (w == -2 || h == -2) return hv__img_err(s, "P%d header: width or height is absurdly large", kind);
    if (w < 0 || h < 0 || maxval < 0) {
        if (r.pos >= len) return hv__img_err(s, "P%d header is truncated", kind);
        return hv__img_err(s, "P%d header: expected a number at byte %zu", kind, r.pos);
    }
    if (maxval < 1 || maxval > 65535) return hv__img_err(s, "P%d maxval %ld is outside 1..65535", kind, maxval);
    if (hv__img_check_size(s, w, h) != 0) return -1;
    ch = (kind == 3 || kind == 6) ? 3 : 1;
    binary = kind >= 4;
    npix = (size_t)w * (size_t)h;
    nsamp = npix * (size_t)ch;
    if (binary) {
        /* exactly one whitespace byte ends the header */
        if (r.pos >= len) return hv__img_err(s, "P%d file ends after its header (no pixel data)", kind);
        if (!hv__pnm_space(r.p[r.pos])) return hv__img_err(s, "P%d header: no whitespace after the last number", kind);
        r.pos++;
        need = kind == 4 ? (size_t)((w + 7) / 8) * (size_t)h : nsamp * (maxval > 255 ? 2u : 1u);
    } else {
        need = kind == 1 ? npix : nsamp * 2 - 1; /* ASCII: at least a digit and a separator each */
    }
    if (len - r.pos < need)
        return hv__img_err(s, "truncated: %ldx%ld P%d pixel data needs %s%zu bytes, the file has %zu", w, h, kind, binary ? "" : "at least ",
                           need, len - r.pos);
    if (hv__img_make(s, out, (int)w, (int)h, ch) != 0) return -1;
    if (kind == 4) {
        size_t rowbytes = (size_t)((w + 7) / 8), y, x;
        for (y = 0; y < (size_t)h; y++)
            for (x = 0; x < (size_t)w; x++)
                out->pixels[y * (size_t)w + x] = (r.p[r.pos + y * rowbytes + x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;
    } else if (binary) {
        const uint8_t *d = r.p + r.pos;
        for (i = 0; i < nsamp; i++) {
            unsigned v = maxval > 255 ? hv__be16(d + 2 * i) : d[i];
            if (v > (unsigned)maxval) v = (unsigned)maxval;
            out->pixels[i] = hv__pnm_scale(v, (unsigned)maxval);
        }
    } else if (kind == 1) {
        for (i = 0; i < npix; i++) {
            hv__pnm_skip(&r);
            if (r.pos >= len) goto truncated;
            if (r.p[r.pos] != '0' && r.p[r.pos] != '1') goto bad;
            out->pixels[i] = r.p[r.pos++] == '1' ? 0 : 255;
        }
    } else {
        for (i = 0; i < nsamp; i++) {
            long v = hv__pnm_uint(&r);
            if (v == -1 && r.pos >= len) goto truncated;
            if (v < 0) goto bad;
            if (v > maxval) {
                hv_image_free(out);
                return hv__img_err(s, "P%d sample %zu is %ld, above maxval %ld", kind, i, v, maxval);
            }
            out->pixels[i] = hv__pnm_scale((unsigned)v, (unsigned)maxval);
        }
    }
    return 0;
truncated:
    hv_image_free(out);
    return hv__img_err(s, "truncated: P%d pixel data ends early", kind);
bad:
    hv_image_free(out);
    return hv__img_err(s, "P%d pixel data: unexpected character at byte %zu", kind, r.pos);
}

HVDEF int hv_image_save_ppm(const char *path, const hv_image *img) {
    char hdr[64];
    const void *parts[2];
    size_t sizes[2];
    if (hv__img_check_arg("hv_image_save_ppm", "image", img) != 0) return -1;
    if (img->channels != 1 && img->channels != 3)
        return hv__fail("hv_image_save_ppm", "%s: PGM/PPM hold 1 or 3 channels, the image has %d", path ? path : "(null)", img->channels), -1;
    sizes[0] = (size_t)snprintf(hdr, sizeof hdr, "P%c\n%d %d\n255\n", img->channels == 1 ? '5' : '6', img->width, img->height);
    parts[0] = hdr;
    parts[1] = img->pixels;
    sizes[1] = (size_t)img->width * (size_t)img->height * (size_t)img->channels;
    return hv__write_atomic("hv_image_save_ppm", path, parts, sizes, 2);
}

/* ---- zlib inflate (RFC 1950/1951): stored, fixed and dynamic Huffman blocks ------------------- */

/* A canonical Huffman code: codes of up to 9 bits resolve in one lookup of `fast` (entry =
   length << 9 | symbol, 0 = longer code); longer ones walk count/symbol as zlib's puff does. */
typedef struct hv__zhuff {
    uint16_t fast[512];
    uint16_t count[16];
    uint16_t symbol[288];
} hv__zhuff;

typedef struct hv__inflater {
    const uint8_t *in;
    size_t in_len, in_pos;
    uint64_t bits; /* LSB first */
    int nbits;
    int padbits;   /* zero bits fed after the input ran out; consuming any of them = truncated */
    uint8_t *out;
    size_t out_len, out_pos;
} hv__inflater;

static void hv__z_refill(hv__inflater *z) {
    while (z->nbits <= 56) {
        uint64_t b = 0;
        if (z->in_pos < z->in_len)
            b = z->in[z->in_pos++];
        else
            z->padbits += 8;
        z->bits |= b << z->nbits;
        z->nbits += 8;
    }
}
static unsigned hv__z_bits(hv__inflater *z, int n) {
    unsigned v;
    if (n == 0) return 0;
    if (z->nbits < n) hv__z_refill(z);
    v = (unsigned)(z->bits & ((1u << n) - 1));
    z->bits >>= n;
    z->nbits -= n;
    return v;
}
static int hv__z_overrun(const hv__inflater *z) { return z->nbits < z->padbits; }

static int hv__zhuff_build(hv__zhuff *h, const uint8_t *lens, int n) {
    int offs[16], len, sym, left = 1, code = 0, k = 0, i, j;
    memset(h->count, 0, sizeof h->count);
    memset(h->fast, 0, sizeof h->fast);
    for (sym = 0; sym < n; sym++) h->count[lens[sym]]++;
    h->count[0] = 0;
    for (len = 1; len < 16; len++) {
        left = left * 2 - h->count[len];
        if (left < 0) return -1; /* over-subscribed; incomplete codes are fine (unused codes fail) */
    }
    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = offs[len] + h->count[len];
    for (sym = 0; sym < n; sym++)
        if (lens[sym]) h->symbol[offs[lens[sym]]++] = (uint16_t)sym;
    for (len = 1; len <= 15; len++) {
        for (i = 0; i < h->count[len]; i++, k++, code++) {
            if (len <= 9) {
                int rev = 0, c = code;
                for (j = 0; j < len; j++, c >>= 1) rev = (rev << 1) | (c & 1);
                for (j = rev; j < 512; j += 1 << len) h->fast[j] = (uint16_t)((len << 9) | h->symbol[k]);
            }
        }
        code <<= 1;
    }
    return 0;
}

/* the next symbol, or -1 for a code that is not in the table */
static int hv__zhuff_decode(hv__inflater *z, const hv__zhuff *h) {
    int e, len, code = 0, first = 0, index = 0, count;
    if (z->nbits < 16) hv__z_refill(z);
    e = h->fast[z->bits & 511];
    if (e) {
        z->bits >>= e >> 9;
        z->nbits -= e >> 9;
        return e & 511;
    }
    for (len = 1; len <= 15; len++) {
        code |= (int)(z->bits & 1);
        z->bits >>= 1;
        z->nbits--;
        count = h->count[len];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

static const uint16_t hv__z_lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t hv__z_lextra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t hv__z_dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t hv__z_dextra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* Inflates a zlib stream into exactly out_len bytes (the size the PNG header implies). Too
   little or too much data, a bad code, a distance before the start, a wrong Adler-32: errors. */
static int hv__inflate(const hv__imgsrc *s, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len) {
    hv__inflater z;
    hv__zhuff *lit, *dist;
    int final = 0, rc = -1;
    uint32_t a1 = 1, a2 = 0, want;
    size_t i;
    if (in_len < 2) return hv__img_err(s, "truncated zlib stream");
    if ((in[0] & 15) != 8 || (in[0] >> 4) > 7 || ((unsigned)in[0] * 256 + in[1]) % 31 != 0)
        return hv__img_err(s, "bad zlib header (%02x %02x)", in[0], in[1]);
    if (in[1] & 32) return hv__img_err(s, "zlib stream asks for a preset dictionary (not allowed in PNG)");
    lit = (hv__zhuff *)hv__malloc(2 * sizeof(hv__zhuff));
    if (!lit) return hv__img_err(s, "out of memory");
    dist = lit + 1;
    memset(&z, 0, sizeof z);
    z.in = in + 2;
    z.in_len = in_len - 2;
    z.out = out;
    z.out_len = out_len;
    while (!final) {
        unsigned type;
        final = (int)hv__z_bits(&z, 1);
        type = hv__z_bits(&z, 2);
        if (hv__z_overrun(&z)) goto truncated;
        if (type == 0) { /* stored */
            unsigned n, nn;
            hv__z_bits(&z, z.nbits & 7);
            n = hv__z_bits(&z, 16);
            nn = hv__z_bits(&z, 16);
            if (hv__z_overrun(&z)) goto truncated;
            if ((n ^ 0xFFFFu) != nn) {
                hv__img_err(s, "corrupt deflate data: stored block length check fails");
                goto done;
            }
            if (n > z.out_len - z.out_pos) goto too_much;
            while (n && z.nbits >= 8) { /* whole bytes still in the bit buffer, then the input */
                z.out[z.out_pos++] = (uint8_t)hv__z_bits(&z, 8);
                n--;
            }
            if (hv__z_overrun(&z)) goto truncated;
            if (n > z.in_len - z.in_pos) goto truncated;
            memcpy(z.out + z.out_pos, z.in + z.in_pos, n);
            z.out_pos += n;
            z.in_pos += n;
            continue;
        } else if (type == 1) { /* fixed codes */
            uint8_t lens[320];
            for (i = 0; i < 144; i++) lens[i] = 8;
            for (; i < 256; i++) lens[i] = 9;
            for (; i < 280; i++) lens[i] = 7;
            for (; i < 288; i++) lens[i] = 8;
            for (; i < 318; i++) lens[i] = 5;
            hv__zhuff_build(lit, lens, 288);
            hv__zhuff_build(dist, lens + 288, 30);
        } else if (type == 2) { /* dynamic codes */
            static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
            uint8_t lens[320];
            unsigned hlit = hv__z_bits(&z, 5) + 257, hdist = hv__z_bits(&z, 5) + 1, hclen = hv__z_bits(&z, 4) + 4, n = 0;
            if (hlit > 286 || hdist > 30) {
                hv__img_err(s, "corrupt deflate data: %u literal/length or %u distance codes", hlit, hdist);
                goto done;
            }
            memset(lens, 0, sizeof lens);
            for (i = 0; i < hclen; i++) lens[order[i]] = (uint8_t)hv__z_bits(&z, 3);
            if (hv__z_overrun(&z)) goto truncated;
            if (hv__zhuff_build(lit, lens, 19) != 0) goto bad_code;
            while (n < hlit + hdist) {
                int sym = hv__zhuff_decode(&z, lit);
                unsigned rep, val;
                if (sym < 0) goto bad_code;
                if (sym < 16) {
                    lens[n++] = (uint8_t)sym;
                    continue;
                }
                if (sym == 16) {
                    if (n == 0) goto bad_code;
                    val = lens[n - 1];
                    rep = 3 + hv__z_bits(&z, 2);
                } else if (sym == 17) {
                    val = 0;
                    rep = 3 + hv__z_bits(&z, 3);
                } else {
                    val = 0;
                    rep = 11 + hv__z_bits(&z, 7);
                }
                if (n + rep > hlit + hdist) goto bad_code;
                while (rep--) lens[n++] = (uint8_t)val;
            }
            if (hv__z_overrun(&z)) goto truncated;
            if (lens[256] == 0) goto bad_code; /* no end-of-block code */
            if (hv__zhuff_build(lit, lens, (int)hlit) != 0 || hv__zhuff_build(dist, lens + hlit, (int)hdist) != 0) goto bad_code;
        } else {
            hv__img_err(s, "corrupt deflate data: block type 3");
            goto done;
        }
        for (;;) { /* the block's symbols */
            int sym = hv__zhuff_decode(&z, lit);
            if (sym < 0) goto bad_code;
            if (hv__z_overrun(&z)) goto truncated;
            if (sym < 256) {
                if (z.out_pos >= z.out_len) goto too_much;
                z.out[z.out_pos++] = (uint8_t)sym;
            } else if (sym == 256) {
                break;
            } else {
                unsigned len, d;
                int ds;
                sym -= 257;
                if (sym >= 29) goto bad_code;
                len = hv__z_lbase[sym] + hv__z_bits(&z, hv__z_lextra[sym]);
                ds = hv__zhuff_decode(&z, dist);
                if (ds < 0 || ds >= 30) goto bad_code;
                d = hv__z_dbase[ds] + hv__z_bits(&z, hv__z_dextra[ds]);
                if (hv__z_overrun(&z)) goto truncated;
                if (d > z.out_pos) {
                    hv__img_err(s, "corrupt deflate data: distance %u reaches before the start", d);
                    goto done;
                }
                if (len > z.out_len - z.out_pos) goto too_much;
                {
                    uint8_t *o = z.out + z.out_pos;
                    const uint8_t *from = o - d;
                    unsigned k;
                    for (k = 0; k < len; k++) o[k] = from[k];
                }
                z.out_pos += len;
            }
        }
    }
    if (z.out_pos != z.out_len) {
        hv__img_err(s, "image data ends early: %zu of %zu bytes", z.out_pos, z.out_len);
        goto done;
    }
    hv__z_bits(&z, z.nbits & 7);
    want = hv__z_bits(&z, 8) << 24;
    want |= hv__z_bits(&z, 8) << 16;
    want |= hv__z_bits(&z, 8) << 8;
    want |= hv__z_bits(&z, 8);
    if (hv__z_overrun(&z)) goto truncated;
    for (i = 0; i < out_len;) { /* Adler-32 in runs of 5552 (no overflow before the modulo) */
        size_t end = i + 5552 < out_len ? i + 5552 : out_len;
        for (; i < end; i++) {
            a1 += out[i];
            a2 += a1;
        }
        a1 %= 65521;
        a2 %= 65521;
    }
    if (((a2 << 16) | a1) != want) {
        hv__img_err(s, "zlib Adler-32 mismatch (corrupt image data)");
        goto done;
    }
    rc = 0;
    goto done;
truncated:
    hv__img_err(s, "truncated: the compressed image data ends early");
    goto done;
too_much:
    hv__img_err(s, "corrupt image data: decompresses to more than the %zu bytes the header implies", out_len);
    goto done;
bad_code:
    hv__img_err(s, "corrupt deflate data: invalid Huffman code");
done:
    hv__free(lit);
    return rc;
}

/* ---- PNG -------------------------------------------------------------------------------------- */

static const uint8_t hv__adam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};

/* pixels of a pass: the whole image, or Adam7 pass p (0 when the pass is empty) */
static void hv__png_pass_size(int interlace, int p, int w, int h, int *pw, int *ph) {
    if (!interlace) {
        *pw = w;
        *ph = h;
        return;
    }
    *pw = w > hv__adam7[p][0] ? (w - hv__adam7[p][0] + hv__adam7[p][2] - 1) / hv__adam7[p][2] : 0;
    *ph = h > hv__adam7[p][1] ? (h - hv__adam7[p][1] + hv__adam7[p][3] - 1) / hv__adam7[p][3] : 0;
}

static int hv__paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
}

/* undoes one scanline's filter in place; prev is the unfiltered previous line (zeros for the first) */
static int hv__png_unfilter(uint8_t *row, const uint8_t *prev, size_t n, size_t bpp, int type) {
    size_t i;
    switch (type) {
    case 0:
        break;
    case 1:
        for (i = bpp; i < n; i++) row[i] = (uint8_t)(row[i] + row[i - bpp]);
        break;
    case 2:
        for (i = 0; i < n; i++) row[i] = (uint8_t)(row[i] + prev[i]);
        break;
    case 3:
        for (i = 0; i < bpp && i < n; i++) row[i] = (uint8_t)(row[i] + (prev[i] >> 1));
        for (; i < n; i++) row[i] = (uint8_t)(row[i] + ((row[i - bpp] + prev[i]) >> 1));
        break;
    case 4:
        for (i = 0; i < bpp && i < n; i++) row[i] = (uint8_t)(row[i] + prev[i]);
        for (; i < n; i++) row[i] = (uint8_t)(row[i] + hv__paeth(row[i - bpp], prev[i], prev[i - bpp]));
        break;
    default:
        return -1;
    }
    return 0;
}

/* sample i of an unfiltered scanline, reduced to 8 bits the PNG way: high byte of 16-bit samples,
   low depths kept as they are (the caller scales gray) */
static unsigned hv__png_sample(const uint8_t *row, size_t i, int depth) {
    size_t bit;
    if (depth == 8) return row[i];
    if (depth == 16) return row[2 * i];
    bit = i * (size_t)depth;
    return (unsigned)(row[bit >> 3] >> (8 - depth - (int)(bit & 7))) & ((1u << depth) - 1);
}

static int hv__png_decode(const hv__imgsrc *s, const uint8_t *p, size_t len, hv_image *out) {
    uint32_t crc_table[256];
    uint8_t palette[256 * 3];
    int npal = 0, have_ihdr = 0, have_iend = 0, w = 0, h = 0, depth = 0, ctype = 0, interlace = 0, nsamp = 0, pass, ch;
    size_t pos = 8, idat_total = 0, raw_size = 0, idat_at;
    uint8_t *idat = NULL, *raw = NULL, *zero = NULL;
    int rc = -1;
    uint32_t i;

    for (i = 0; i < 256; i++) {
        uint32_t c = i;
        int k;
        for (k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    /* pass 1: walk the chunks, check CRCs, read IHDR and PLTE, add up the IDAT bytes */
    while (!have_iend) {
        uint32_t clen, crc = 0xFFFFFFFFu, k;
        const uint8_t *type, *data;
        if (len - pos < 12) return hv__img_err(s, "truncated: the file ends before the IEND chunk");
        clen = hv__be32(p + pos);
        type = p + pos + 4;
        data = p + pos + 8;
        if (clen > 0x7FFFFFFFu || clen > len - pos - 12)
            return hv__img_err(s, "truncated: chunk '%.4s' of %u bytes runs past the end of the file", (const char *)type, clen);
        for (k = 0; k < clen + 4; k++) crc = crc_table[(crc ^ type[k]) & 255] ^ (crc >> 8);
        if ((crc ^ 0xFFFFFFFFu) != hv__be32(data + clen)) return hv__img_err(s, "CRC mismatch in chunk '%.4s' (corrupt file)", (const char *)type);
        if (!have_ihdr && memcmp(type, "IHDR", 4) != 0) return hv__img_err(s, "the first chunk is '%.4s', not IHDR", (const char *)type);
        if (memcmp(type, "IHDR", 4) == 0) {
            int ok;
            if (have_ihdr) return hv__img_err(s, "two IHDR chunks");
            if (clen != 13) return hv__img_err(s, "IHDR chunk has %u bytes, not 13", clen);
            have_ihdr = 1;
            if (hv__be32(data) > 0x7FFFFFFFu || hv__be32(data + 4) > 0x7FFFFFFFu)
                return hv__img_err(s, "image size %ux%u is over the limit", hv__be32(data), hv__be32(data + 4));
            w = (int)hv__be32(data);
            h = (int)hv__be32(data + 4);
            depth = data[8];
            ctype = data[9];
            interlace = data[12];
            switch (ctype) {
            case 0: ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; nsamp = 1; break;
            case 2: ok = depth == 8 || depth == 16; nsamp = 3; break;
            case 3: ok = depth == 1 || depth == 2 || depth == 4 || depth == 8; nsamp = 1; break;
            case 4: ok = depth == 8 || depth == 16; nsamp = 2; break;
            case 6: ok = depth == 8 || depth == 16; nsamp = 4; break;
            default: return hv__img_err(s, "unknown PNG colour type %d", ctype);
            }
            if (!ok) return hv__img_err(s, "bit depth %d is not allowed for PNG colour type %d", depth, ctype);
            if (data[10] != 0 || data[11] != 0) return hv__img_err(s, "unknown PNG compression or filter method (%d, %d)", data[10], data[11]);
            if (interlace > 1) return hv__img_err(s, "unknown PNG interlace method %d", interlace);
            if (hv__img_check_size(s, w, h) != 0) return -1;
        } else if (memcmp(type, "PLTE", 4) == 0) {
            if (clen % 3 != 0 || clen == 0 || clen > 768) return hv__img_err(s, "PLTE chunk of %u bytes", clen);
            if (ctype == 3) {
                if (idat_total) return hv__img_err(s, "PLTE chunk after the image data");
                npal = (int)(clen / 3);
                memcpy(palette, data, clen);
            }
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (ctype == 3 && npal == 0) return hv__img_err(s, "palette image without a PLTE chunk before its data");
            idat_total += clen;
        } else if (memcmp(type, "IEND", 4) == 0) {
            have_iend = 1;
        } else if (!(type[0] & 0x20)) {
            return hv__img_err(s, "unknown critical chunk '%.4s'", (const char *)type);
        }
        pos += 12 + (size_t)clen;
    }
    if (idat_total == 0) return hv__img_err(s, "no image data (IDAT chunk)");

    /* the size of the filtered scanlines, and a plausibility check before allocating it:
       deflate expands at most 1032:1, so a tiny file cannot claim a giant image */
    for (pass = 0; pass < (interlace ? 7 : 1); pass++) {
        int pw, ph;
        hv__png_pass_size(interlace, pass, w, h, &pw, &ph);
        if (pw && ph) raw_size += (size_t)ph * (1 + ((size_t)pw * (size_t)(nsamp * depth) + 7) / 8);
    }
    if (raw_size / 1032 > idat_total + 64)
        return hv__img_err(s, "truncated or corrupt: %zu bytes of compressed data cannot hold a %dx%d image", idat_total, w, h);

    idat = (uint8_t *)hv__malloc(idat_total);
    raw = (uint8_t *)hv__malloc(raw_size);
    zero = (uint8_t *)hv__malloc(((size_t)w * (size_t)(nsamp * depth) + 7) / 8 + 1);
    if (!idat || !raw || !zero) {
        hv__img_err(s, "out of memory for a %dx%d image", w, h);
        goto done;
    }
    memset(zero, 0, ((size_t)w * (size_t)(nsamp * depth) + 7) / 8 + 1);
    /* pass 2: gather the IDAT payloads (the chunks were validated above) */
    for (pos = 8, idat_at = 0;;) {
        uint32_t clen = hv__be32(p + pos);
        if (memcmp(p + pos + 4, "IDAT", 4) == 0) {
            memcpy(idat + idat_at, p + pos + 8, clen);
            idat_at += clen;
        }
        if (memcmp(p + pos + 4, "IEND", 4) == 0) break;
        pos += 12 + (size_t)clen;
    }
    if (hv__inflate(s, idat, idat_total, raw, raw_size) != 0) goto done;

    ch = (ctype == 0 || ctype == 4) ? 1 : 3;
    if (hv__img_make(s, out, w, h, ch) != 0) goto done;
    {
        size_t bpp = (size_t)(nsamp * depth + 7) / 8, at = 0;
        unsigned scale = ctype == 0 && depth < 8 ? 255u / ((1u << depth) - 1) : 1u;
        for (pass = 0; pass < (interlace ? 7 : 1); pass++) {
            int pw, ph, y, x, x0 = 0, y0 = 0, dx = 1, dy = 1;
            size_t rowbytes;
            const uint8_t *prev = zero;
            hv__png_pass_size(interlace, pass, w, h, &pw, &ph);
            if (!pw || !ph) continue;
            if (interlace) {
                x0 = hv__adam7[pass][0];
                y0 = hv__adam7[pass][1];
                dx = hv__adam7[pass][2];
                dy = hv__adam7[pass][3];
            }
            rowbytes = ((size_t)pw * (size_t)(nsamp * depth) + 7) / 8;
            for (y = 0; y < ph; y++) {
                uint8_t *row = raw + at + 1;
                uint8_t *o = out->pixels + ((size_t)(y0 + y * dy) * (size_t)w + (size_t)x0) * (size_t)ch;
                size_t ostep = (size_t)dx * (size_t)ch;
                if (hv__png_unfilter(row, prev, rowbytes, bpp, raw[at]) != 0) {
                    hv_image_free(out);
                    hv__img_err(s, "corrupt image data: scanline filter type %d", raw[at]);
                    goto done;
                }
                if (depth == 8 && dx == 1 && (ctype == 0 || ctype == 2)) { /* the common case: a plain copy */
                    memcpy(o, row, (size_t)pw * (size_t)ch);
                    x = pw;
                } else if (depth == 8 && dx == 1 && (ctype == 4 || ctype == 6)) { /* drop alpha */
                    const uint8_t *q = row;
                    for (x = 0; x < pw; x++, o += ch, q += nsamp) {
                        o[0] = q[0];
                        if (ch == 3) {
                            o[1] = q[1];
                            o[2] = q[2];
                        }
                    }
                } else {
                    x = 0;
                }
                for (; x < pw; x++, o += ostep) {
                    size_t xi = (size_t)x;
                    switch (ctype) {
                    case 0: o[0] = (uint8_t)(hv__png_sample(row, xi, depth) * scale); break;
                    case 4: o[0] = (uint8_t)hv__png_sample(row, 2 * xi, depth); break;
                    case 3: {
                        unsigned k = hv__png_sample(row, xi, depth);
                        if ((int)k < npal) {
                            o[0] = palette[3 * k];
                            o[1] = palette[3 * k + 1];
                            o[2] = palette[3 * k + 2];
                        } else {
                            o[0] = o[1] = o[2] = 0; /* index past the palette: black */
                        }
                        break;
                    }
                    default: { /* RGB, RGBA */
                        size_t b = xi * (size_t)nsamp;
                        o[0] = (uint8_t)hv__png_sample(row, b, depth);
                        o[1] = (uint8_t)hv__png_sample(row, b + 1, depth);
                        o[2] = (uint8_t)hv__png_sample(row, b + 2, depth);
                        break;
                    }
                    }
                }
                prev = row;
                at += 1 + rowbytes;
            }
        }
    }
    rc = 0;
done:
    hv__free(idat);
    hv__free(raw);
    hv__free(zero);
    return rc;
}

/* ---- baseline JPEG (ITU T.81 sequential Huffman, 8-bit) ---------------------------------------
   Decodes the way libjpeg-turbo does by default, which is what Pillow (and so the upstream
   evaluation) uses: jidctint's accurate integer IDCT, libjpeg's range limiting, "fancy"
   (triangle) upsampling of h2v1 / h2v2 / h1v2 chroma with its rounding biases and edge rules,
   and the fixed-point YCbCr->RGB tables of jdcolor.c. Coefficients are kept as 16-bit as
   libjpeg's JCOEF; arithmetic on corrupt data is done in wider or unsigned types (no UB). */

typedef struct hv__jhuff {
    uint8_t fast_len[512]; /* codes of up to 9 bits: one lookup (0: longer code) */
    uint8_t fast_sym[512];
    int32_t maxcode[18]; /* per length, -1 when none */
    int32_t valoff[18];
    uint8_t vals[256];
    int nvals, present;
} hv__jhuff;

typedef struct hv__jcomp {
    int id, h, v, tq, td, ta;
    int dw, dh;     /* samples of this component: ceil(W * h / hmax) x ceil(H * v / vmax) */
    int bw, bh;     /* blocks in the padded plane: MCUs across * h, MCUs down * v */
    size_t stride;  /* bw * 8 */
    uint8_t *plane; /* bh * 8 rows */
    uint32_t dc;    /* DC predictor (unsigned: corrupt streams may overflow it) */
    int coded;
} hv__jcomp;

typedef struct hv__jpeg {
    const hv__imgsrc *s;
    const uint8_t *p;
    size_t len, pos;
    uint32_t bits; /* MSB first */
    int nbits;
    int marker;   /* the entropy data reached a marker: zeros follow, as libjpeg does */
    int eofpad;   /* zero bits fed past the end of the file; consuming them = truncated */
    uint16_t qt[4][64]; /* natural order */
    int qt_present[4];
    hv__jhuff dc[4], ac[4];
    hv__jcomp comp[3];
    int ncomp, width, height, hmax, vmax, mcux, mcuy, restart;
    int jfif, adobe, adobe_transform, frame;
} hv__jpeg;

/* zigzag index -> natural index; 16 extra entries absorb a corrupt run past 63, as libjpeg's */
static const uint8_t hv__jzz[80] = {0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33,
                                    40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36,
                                    29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
                                    47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

static int hv__jhuff_build(hv__jhuff *t, const uint8_t *counts, const uint8_t *vals, int nvals) {
    int l, i, k = 0;
    int32_t code = 0;
    memset(t->fast_len, 0, sizeof t->fast_len);
    for (l = 1; l <= 16; l++) {
        int n = counts[l - 1];
        if (code + n >= ((int32_t)1 << l)) return -1; /* over-subscribed, or uses the reserved all-ones code */
        t->valoff[l] = k - code;
        for (i = 0; i < n; i++, k++, code++) {
            if (l <= 9) {
                int j, first = (int)(code << (9 - l));
                for (j = 0; j < (1 << (9 - l)); j++) {
                    t->fast_len[first + j] = (uint8_t)l;
                    t->fast_sym[first + j] = vals[k];
                }
            }
        }
        t->maxcode[l] = n ? code - 1 : -1;
        code <<= 1;
    }
    memcpy(t->vals, vals, (size_t)nvals);
    t->nvals = nvals;
    t->present = 1;
    return 0;
}

static void hv__j_fill(hv__jpeg *d) {
    while (d->nbits <= 24) {
        uint32_t b = 0;
        if (!d->marker) {
            if (d->pos >= d->len) {
                d->eofpad += 8;
            } else if (d->p[d->pos] != 0xFF) {
                b = d->p[d->pos++];
            } else if (d->pos + 1 >= d->len) {
                d->pos = d->len; /* a lone 0xFF at the very end */
                d->eofpad += 8;
            } else if (d->p[d->pos + 1] == 0x00) { /* stuffed 0xFF */
                b = 0xFF;
                d->pos += 2;
            } else {
                d->marker = 1; /* leave pos on the marker */
            }
        }
        d->bits |= b << (24 - d->nbits);
        d->nbits += 8;
    }
}
static unsigned hv__j_bits(hv__jpeg *d, int n) {
    unsigned v;
    if (n == 0) return 0;
    if (d->nbits < n) hv__j_fill(d);
    v = (unsigned)(d->bits >> (32 - n));
    d->bits <<= n;
    d->nbits -= n;
    return v;
}
/* F.12 EXTEND: n bits as a signed magnitude category */
static int hv__j_extend(hv__jpeg *d, int n) {
    int v;
    if (n == 0) return 0;
    v = (int)hv__j_bits(d, n);
    return v < (1 << (n - 1)) ? v - (1 << n) + 1 : v;
}
static int hv__j_huff(hv__jpeg *d, const hv__jhuff *t) {
    int l, idx;
    if (d->nbits < 16) hv__j_fill(d);
    idx = (int)(d->bits >> 23);
    l = t->fast_len[idx];
    if (l) {
        d->bits <<= l;
        d->nbits -= l;
        return t->fast_sym[idx];
    }
    for (l = 10; l <= 16; l++) {
        int32_t code = (int32_t)(d->bits >> (32 - l));
        if (code <= t->maxcode[l]) {
            int32_t k = t->valoff[l] + code;
            if (k < 0 || k >= t->nvals) return -1;
            d->bits <<= l;
            d->nbits -= l;
            return t->vals[k];
        }
    }
    return -1;
}

static uint8_t hv__j_limit(int64_t x) { /* libjpeg's post-IDCT range limit: x & 1023, then clamp x + 128 */
    int v = (int)((uint64_t)x & 1023);
    if (v >= 512) v -= 1024;
    v += 128;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* jidctint.c's jpeg_idct_islow: the accurate integer IDCT (Loeffler-Ligtenberg-Moschytz with
   13-bit constants, 2 extra bits between the passes). in: dequantized coefficients. */
static void hv__j_idct(const int32_t *in, uint8_t *out, size_t stride) {
#define HV__FIX_0_298631336 2446
#define HV__FIX_0_390180644 3196
#define HV__FIX_0_541196100 4433
#define HV__FIX_0_765366865 6270
#define HV__FIX_0_899976223 7373
#define HV__FIX_1_175875602 9633
#define HV__FIX_1_501321110 12299
#define HV__FIX_1_847759065 15137
#define HV__FIX_1_961570560 16069
#define HV__FIX_2_053119869 16819
#define HV__FIX_2_562915447 20995
#define HV__FIX_3_072711026 25172
#define HV__DESCALE(x, n) (((x) + ((int64_t)1 << ((n)-1))) >> (n))
    int64_t ws[64];
    int i;
    for (i = 0; i < 8; i++) { /* columns */
        const int32_t *c = in + i;
        int64_t z1, z2, z3, z4, z5, t0, t1, t2, t3, t10, t11, t12, t13;
        if (!c[8] && !c[16] && !c[24] && !c[32] && !c[40] && !c[48] && !c[56]) {
            int64_t dcval = (int64_t)c[0] * 4;
            int k;
            for (k = 0; k < 8; k++) ws[i + 8 * k] = dcval;
            continue;
        }
        z2 = c[16];
        z3 = c[48];
        z1 = (z2 + z3) * HV__FIX_0_541196100;
        t2 = z1 + z3 * -HV__FIX_1_847759065;
        t3 = z1 + z2 * HV__FIX_0_765366865;
        z2 = c[0];
        z3 = c[32];
        t0 = (z2 + z3) * 8192;
        t1 = (z2 - z3) * 8192;
        t10 = t0 + t3;
        t13 = t0 - t3;
        t11 = t1 + t2;
        t12 = t1 - t2;
        t0 = c[56];
        t1 = c[40];
        t2 = c[24];
        t3 = c[8];
        z1 = t0 + t3;
        z2 = t1 + t2;
        z3 = t0 + t2;
        z4 = t1 + t3;
        z5 = (z3 + z4) * HV__FIX_1_175875602;
        t0 = t0 * HV__FIX_0_298631336;
        t1 = t1 * HV__FIX_2_053119869;
        t2 = t2 * HV__FIX_3_072711026;
        t3 = t3 * HV__FIX_1_501321110;
        z1 = z1 * -HV__FIX_0_899976223;
        z2 = z2 * -HV__FIX_2_562915447;
        z3 = z3 * -HV__FIX_1_961570560;
        z4 = z4 * -HV__FIX_0_390180644;
        z3 += z5;
        z4 += z5;
        t0 += z1 + z3;
        t1 += z2 + z4;
        t2 += z2 + z3;
        t3 += z1 + z4;
        /* libjpeg keeps the workspace in int: the same values for every valid stream */
        ws[i + 0] = (int32_t)HV__DESCALE(t10 + t3, 11);
        ws[i + 56] = (int32_t)HV__DESCALE(t10 - t3, 11);
        ws[i + 8] = (int32_t)HV__DESCALE(t11 + t2, 11);
        ws[i + 48] = (int32_t)HV__DESCALE(t11 - t2, 11);
        ws[i + 16] = (int32_t)HV__DESCALE(t12 + t1, 11);
        ws[i + 40] = (int32_t)HV__DESCALE(t12 - t1, 11);
        ws[i + 24] = (int32_t)HV__DESCALE(t13 + t0, 11);
        ws[i + 32] = (int32_t)HV__DESCALE(t13 - t0, 11);
    }
    for (i = 0; i < 8; i++, out += stride) { /* rows */
        const int64_t *r = ws + 8 * i;
        int64_t z1, z2, z3, z4, z5, t0, t1, t2, t3, t10, t11, t12, t13;
        if (!r[1] && !r[2] && !r[3] && !r[4] && !r[5] && !r[6] && !r[7]) {
            uint8_t v = hv__j_limit(HV__DESCALE(r[0], 5));
            memset(out, v, 8);
            continue;
        }
        z2 = r[2];
        z3 = r[6];
        z1 = (z2 + z3) * HV__FIX_0_541196100;
        t2 = z1 + z3 * -HV__FIX_1_847759065;
        t3 = z1 + z2 * HV__FIX_0_765366865;
        t0 = (r[0] + r[4]) * 8192;
        t1 = (r[0] - r[4]) * 8192;
        t10 = t0 + t3;
        t13 = t0 - t3;
        t11 = t1 + t2;
        t12 = t1 - t2;
        t0 = r[7];
        t1 = r[5];
        t2 = r[3];
        t3 = r[1];
        z1 = t0 + t3;
        z2 = t1 + t2;
        z3 = t0 + t2;
        z4 = t1 + t3;
        z5 = (z3 + z4) * HV__FIX_1_175875602;
        t0 = t0 * HV__FIX_0_298631336;
        t1 = t1 * HV__FIX_2_053119869;
        t2 = t2 * HV__FIX_3_072711026;
        t3 = t3 * HV__FIX_1_501321110;
        z1 = z1 * -HV__FIX_0_899976223;
        z2 = z2 * -HV__FIX_2_562915447;
        z3 = z3 * -HV__FIX_1_961570560;
        z4 = z4 * -HV__FIX_0_390180644;
        z3 += z5;
        z4 += z5;
        t0 += z1 + z3;
        t1 += z2 + z4;
        t2 += z2 + z3;
        t3 += z1 + z4;
        out[0] = hv__j_limit(HV__DESCALE(t10 + t3, 18));
        out[7] = hv__j_limit(HV__DESCALE(t10 - t3, 18));
        out[1] = hv__j_limit(HV__DESCALE(t11 + t2, 18));
        out[6] = hv__j_limit(HV__DESCALE(t11 - t2, 18));
        out[2] = hv__j_limit(HV__DESCALE(t12 + t1, 18));
        out[5] = hv__j_limit(HV__DESCALE(t12 - t1, 18));
        out[3] = hv__j_limit(HV__DESCALE(t13 + t0, 18));
        out[4] = hv__j_limit(HV__DESCALE(t13 - t0, 18));
    }
#undef HV__DESCALE
}

/* one 8x8 block of component c into its plane at block (bx, by) */
static int hv__j_block(hv__jpeg *d, hv__jcomp *c, int bx, int by) {
    int16_t coef[64];
    int32_t deq[64];
    const uint16_t *q = d->qt[c->tq];
    int s, k, i;
    memset(coef, 0, sizeof coef);
    s = hv__j_huff(d, &d->dc[c->td]);
    if (s < 0 || s > 15) return hv__img_err(d->s, "corrupt JPEG data: bad Huffman code");
    c->dc += (uint32_t)hv__j_extend(d, s);
    {
        int32_t t = (int32_t)(c->dc & 0xFFFF); /* JCOEF is 16 bits */
        coef[0] = (int16_t)(t >= 32768 ? t - 65536 : t);
    }
    for (k = 1; k < 64; k++) {
        int rs = hv__j_huff(d, &d->ac[c->ta]), r;
        if (rs < 0) return hv__img_err(d->s, "corrupt JPEG data: bad Huffman code");
        r = rs >> 4;
        s = rs & 15;
        if (s) {
            k += r;
            coef[hv__jzz[k]] = (int16_t)hv__j_extend(d, s);
        } else {
            if (r != 15) break; /* end of block */
            k += 15;
        }
    }
    for (i = 0; i < 64; i++) deq[i] = (int32_t)coef[i] * (int32_t)q[i];
    hv__j_idct(deq, c->plane + (size_t)by * 8 * c->stride + (size_t)bx * 8, c->stride);
    return 0;
}

/* after `restart` MCUs: drop the bit buffer, step over the RSTn marker, reset the predictors */
static void hv__j_restart(hv__jpeg *d) {
    int i;
    d->bits = 0;
    d->nbits = 0;
    d->eofpad = 0;
    if (!d->marker) { /* the marker may still be ahead (after 1-padding bits already consumed) */
        if (d->pos + 1 < d->len && d->p[d->pos] == 0xFF && d->p[d->pos + 1] != 0) d->marker = 1;
    }
    if (d->marker) {
        size_t at = d->pos;
        while (at < d->len && d->p[at] == 0xFF) at++;
        if (at < d->len && d->p[at] >= 0xD0 && d->p[at] <= 0xD7) { /* RSTn: step over it */
            d->pos = at + 1;
            d->marker = 0;
        } /* another marker: leave it; the rest of the scan decodes from zeros, as libjpeg does */
    }
    for (i = 0; i < d->ncomp; i++) d->comp[i].dc = 0;
}

static int hv__j_scan(hv__jpeg *d, hv__jcomp **sc, int ns) {
    int mx, my, i, hh, vv, nx, ny;
    long togo = d->restart;
    d->bits = 0;
    d->nbits = 0;
    d->marker = 0;
    d->eofpad = 0;
    for (i = 0; i < d->ncomp; i++) d->comp[i].dc = 0;
    if (ns == 1) { /* non-interleaved: one block per MCU, only the component's own blocks */
        nx = (sc[0]->dw + 7) / 8;
        ny = (sc[0]->dh + 7) / 8;
    } else {
        nx = d->mcux;
        ny = d->mcuy;
    }
    for (my = 0; my < ny; my++)
        for (mx = 0; mx < nx; mx++) {
            if (d->restart && togo-- == 0) {
                hv__j_restart(d);
                togo = d->restart - 1;
            }
            if (ns == 1) {
                if (hv__j_block(d, sc[0], mx, my) != 0) return -1;
            } else {
                for (i = 0; i < ns; i++)
                    for (vv = 0; vv < sc[i]->v; vv++)
                        for (hh = 0; hh < sc[i]->h; hh++)
                            if (hv__j_block(d, sc[i], mx * sc[i]->h + hh, my * sc[i]->v + vv) != 0) return -1;
            }
            if (d->nbits < d->eofpad) return hv__img_err(d->s, "truncated: the file ends inside the image data");
        }
    for (i = 0; i < ns; i++) sc[i]->coded = 1;
    d->bits = 0;
    d->nbits = 0;
    return 0;
}

static int hv__j_sof(hv__jpeg *d, const uint8_t *seg, size_t n) {
    int i, j;
    size_t min_bits = 0, planes = 0;
    if (d->frame) return hv__img_err(d->s, "two frame headers (SOF)");
    if (n < 6) return hv__img_err(d->s, "SOF segment too short");
    if (seg[0] != 8) return hv__img_err(d->s, "%d-bit JPEG is not supported (8-bit only)", seg[0]);
    d->height = (int)hv__be16(seg + 1);
    d->width = (int)hv__be16(seg + 3);
    d->ncomp = seg[5];
    if (d->height == 0) return hv__img_err(d->s, "JPEG with its height in a DNL marker is not supported");
    if (d->ncomp == 4) return hv__img_err(d->s, "CMYK/YCCK JPEG is not supported (1 or 3 components)");
    if (d->ncomp != 1 && d->ncomp != 3) return hv__img_err(d->s, "JPEG with %d components is not supported (1 or 3)", d->ncomp);
    if (n != 6 + 3 * (size_t)d->ncomp) return hv__img_err(d->s, "SOF segment has %zu bytes for %d components", n, d->ncomp);
    if (hv__img_check_size(d->s, d->width, d->height) != 0) return -1;
    d->hmax = d->vmax = 1;
    for (i = 0; i < d->ncomp; i++) {
        hv__jcomp *c = &d->comp[i];
        c->id = seg[6 + 3 * i];
        c->h = seg[7 + 3 * i] >> 4;
        c->v = seg[7 + 3 * i] & 15;
        c->tq = seg[8 + 3 * i];
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4) return hv__img_err(d->s, "bad sampling factors %dx%d", c->h, c->v);
        if (c->tq > 3) return hv__img_err(d->s, "bad quantization table number %d", c->tq);
        for (j = 0; j < i; j++)
            if (d->comp[j].id == c->id) return hv__img_err(d->s, "two components with id %d", c->id);
        if (c->h > d->hmax) d->hmax = c->h;
        if (c->v > d->vmax) d->vmax = c->v;
    }
    d->mcux = (d->width + 8 * d->hmax - 1) / (8 * d->hmax);
    d->mcuy = (d->height + 8 * d->vmax - 1) / (8 * d->vmax);
    for (i = 0; i < d->ncomp; i++) {
        hv__jcomp *c = &d->comp[i];
        c->dw = (d->width * c->h + d->hmax - 1) / d->hmax;
        c->dh = (d->height * c->v + d->vmax - 1) / d->vmax;
        c->bw = d->mcux * c->h;
        c->bh = d->mcuy * c->v;
        c->stride = (size_t)c->bw * 8;
        min_bits += 2 * (size_t)((c->dw + 7) / 8) * (size_t)((c->dh + 7) / 8);
        planes += c->stride * (size_t)c->bh * 8;
    }
    /* every block takes at least 2 bits (a DC and an end-of-block code): a short file cannot
       claim a giant image and make us allocate for it */
    if (min_bits / 8 > d->len - d->pos + 64)
        return hv__img_err(d->s, "truncated or corrupt: %zu bytes cannot hold a %dx%d JPEG", d->len - d->pos, d->width, d->height);
    for (i = 0; i < d->ncomp; i++) {
        hv__jcomp *c = &d->comp[i];
        size_t bytes = c->stride * (size_t)c->bh * 8;
        c->plane = (uint8_t *)hv__malloc(bytes);
        if (!c->plane) return hv__img_err(d->s, "out of memory for a %dx%d JPEG (%zu bytes)", d->width, d->height, planes);
        memset(c->plane, 0, bytes);
    }
    d->frame = 1;
    return 0;
}

static int hv__j_sos(hv__jpeg *d, const uint8_t *seg, size_t n) {
    hv__jcomp *sc[4];
    int ns, i, j, blocks = 0;
    if (!d->frame) return hv__img_err(d->s, "scan (SOS) before the frame header (SOF)");
    if (n < 1) return hv__img_err(d->s, "SOS segment too short");
    ns = seg[0];
    if (ns < 1 || ns > d->ncomp || n != 4 + 2 * (size_t)ns) return hv__img_err(d->s, "bad SOS segment (%d components, %zu bytes)", ns, n);
    for (i = 0; i < ns; i++) {
        int id = seg[1 + 2 * i], tables = seg[2 + 2 * i];
        sc[i] = NULL;
        for (j = 0; j < d->ncomp; j++)
            if (d->comp[j].id == id) sc[i] = &d->comp[j];
        if (!sc[i]) return hv__img_err(d->s, "scan names component %d, which the frame does not have", id);
        for (j = 0; j < i; j++)
            if (sc[j] == sc[i]) return hv__img_err(d->s, "scan names component %d twice", id);
        sc[i]->td = tables >> 4;
        sc[i]->ta = tables & 15;
        if (sc[i]->td > 3 || sc[i]->ta > 3) return hv__img_err(d->s, "bad Huffman table number in the scan header");
        if (!d->dc[sc[i]->td].present || !d->ac[sc[i]->ta].present)
            return hv__img_err(d->s, "scan uses a Huffman table that was not defined");
        if (sc[i]->coded) return hv__img_err(d->s, "component %d appears in two scans (not a sequential JPEG)", id);
        if (!d->qt_present[sc[i]->tq]) return hv__img_err(d->s, "component %d uses quantization table %d, which was not defined", id, sc[i]->tq);
        blocks += sc[i]->h * sc[i]->v;
    }
    if (ns > 1 && blocks > 10) return hv__img_err(d->s, "an MCU of %d blocks (the limit is 10)", blocks);
    return hv__j_scan(d, sc, ns);
}

/* chroma upsampling exactly as libjpeg-turbo's jdsample.c picks and does it */
static int hv__j_upsample(hv__jpeg *d, const hv__jcomp *c, uint8_t *out /* W x H */) {
    int W = d->width, H = d->height, x, y;
    const uint8_t *pl = c->plane;
    size_t st = c->stride;
    if (c->h * 2 == d->hmax && c->v == d->vmax && c->dw > 2) { /* h2v1 fancy */
        for (y = 0; y < H; y++) {
            const uint8_t *in = pl + (size_t)y * st;
            uint8_t *o = out + (size_t)y * (size_t)W;
            for (x = 0; x < W; x++) {
                int i = x >> 1;
                if (!(x & 1))
                    o[x] = (uint8_t)(i == 0 ? in[0] : (in[i] * 3 + in[i - 1] + 1) >> 2);
                else
                    o[x] = (uint8_t)(i == c->dw - 1 ? in[i] : (in[i] * 3 + in[i + 1] + 2) >> 2);
            }
        }
    } else if (c->h == d->hmax && c->v * 2 == d->vmax) { /* h1v2 fancy */
        for (y = 0; y < H; y++) {
            int r = y >> 1, r1 = (y & 1) ? r + 1 : r - 1, bias = (y & 1) ? 2 : 1;
            const uint8_t *in0, *in1;
            uint8_t *o = out + (size_t)y * (size_t)W;
            if (r1 < 0) r1 = 0;
            if (r1 > c->dh - 1) r1 = c->dh - 1;
            in0 = pl + (size_t)r * st;
            in1 = pl + (size_t)r1 * st;
            for (x = 0; x < W; x++) o[x] = (uint8_t)((in0[x] * 3 + in1[x] + bias) >> 2);
        }
    } else if (c->h * 2 == d->hmax && c->v * 2 == d->vmax && c->dw > 2) { /* h2v2 fancy */
        for (y = 0; y < H; y++) {
            int r = y >> 1, r1 = (y & 1) ? r + 1 : r - 1;
            const uint8_t *in0, *in1;
            uint8_t *o = out + (size_t)y * (size_t)W;
            if (r1 < 0) r1 = 0; /* libjpeg replicates the first and last rows */
            if (r1 > c->dh - 1) r1 = c->dh - 1;
            in0 = pl + (size_t)r * st;
            in1 = pl + (size_t)r1 * st;
            for (x = 0; x < W; x++) {
                int i = x >> 1, cs = in0[i] * 3 + in1[i];
                if (!(x & 1))
                    o[x] = (uint8_t)(i == 0 ? (cs * 4 + 8) >> 4 : (cs * 3 + in0[i - 1] * 3 + in1[i - 1] + 8) >> 4);
                else
                    o[x] = (uint8_t)(i == c->dw - 1 ? (cs * 4 + 7) >> 4 : (cs * 3 + in0[i + 1] * 3 + in1[i + 1] + 7) >> 4);
            }
        }
    } else if (d->hmax % c->h == 0 && d->vmax % c->v == 0) { /* box (int_upsample, and 2x when too narrow) */
        int fx = d->hmax / c->h, fy = d->vmax / c->v;
        for (y = 0; y < H; y++) {
            const uint8_t *in = pl + (size_t)(y / fy) * st;
            uint8_t *o = out + (size_t)y * (size_t)W;
            for (x = 0; x < W; x++) o[x] = in[x / fx];
        }
    } else {
        return hv__img_err(d->s, "sampling factors %dx%d of a %dx%d frame are not supported", c->h, c->v, d->hmax, d->vmax);
    }
    return 0;
}

static int hv__j_output(hv__jpeg *d, hv_image *out) {
    int W = d->width, H = d->height, x, y, i, rgb;
    uint8_t *up[3] = {NULL, NULL, NULL};
    const uint8_t *src[3];
    size_t st[3];
    int rc = -1;
    if (d->ncomp == 1) {
        if (hv__img_make(d->s, out, W, H, 1) != 0) return -1;
        for (y = 0; y < H; y++) memcpy(out->pixels + (size_t)y * (size_t)W, d->comp[0].plane + (size_t)y * d->comp[0].stride, (size_t)W);
        return 0;
    }
    for (i = 0; i < 3; i++) {
        const hv__jcomp *c = &d->comp[i];
        if (c->h == d->hmax && c->v == d->vmax) {
            src[i] = c->plane;
            st[i] = c->stride;
            continue;
        }
        up[i] = (uint8_t *)hv__malloc((size_t)W * (size_t)H);
        if (!up[i]) {
            hv__img_err(d->s, "out of memory");
            goto done;
        }
        if (hv__j_upsample(d, c, up[i]) != 0) goto done;
        src[i] = up[i];
        st[i] = (size_t)W;
    }
    /* jdcolor.c: JFIF means YCbCr; Adobe says with its transform flag; else ids 'R','G','B' mean RGB */
    if (d->jfif)
        rgb = 0;
    else if (d->adobe)
        rgb = d->adobe_transform == 0;
    else
        rgb = d->comp[0].id == 'R' && d->comp[1].id == 'G' && d->comp[2].id == 'B';
    if (hv__img_make(d->s, out, W, H, 3) != 0) goto done;
    {
        int cr_r[256], cb_b[256];
        int32_t cr_g[256], cb_g[256];
        for (i = 0; i < 256; i++) { /* FIX(x) = x * 65536 + 0.5; ONE_HALF = 32768 */
            int32_t xi = i - 128;
            cr_r[i] = (int)((91881 * xi + 32768) >> 16);
            cb_b[i] = (int)((116130 * xi + 32768) >> 16);
            cr_g[i] = -46802 * xi;
            cb_g[i] = -22554 * xi + 32768;
        }
        for (y = 0; y < H; y++) {
            const uint8_t *p0 = src[0] + (size_t)y * st[0], *p1 = src[1] + (size_t)y * st[1], *p2 = src[2] + (size_t)y * st[2];
            uint8_t *o = out->pixels + (size_t)y * (size_t)W * 3;
            if (rgb) {
                for (x = 0; x < W; x++, o += 3) {
                    o[0] = p0[x];
                    o[1] = p1[x];
                    o[2] = p2[x];
                }
                continue;
            }
            for (x = 0; x < W; x++, o += 3) {
                int Y = p0[x], cb = p1[x], cr = p2[x], r, g, b;
                r = Y + cr_r[cr];
                g = Y + (int)((cb_g[cb] + cr_g[cr]) >> 16);
                b = Y + cb_b[cb];
                o[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
                o[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
                o[2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
            }
        }
    }
    rc = 0;
done:
    for (i = 0; i < 3; i++) hv__free(up[i]);
    return rc;
}

static int hv__jpeg_decode(const hv__imgsrc *s, const uint8_t *p, size_t len, hv_image *out) {
    hv__jpeg *d;
    int rc = -1, i, done = 0;
    d = (hv__jpeg *)hv__malloc(sizeof *d);
    if (!d) return hv__img_err(s, "out of memory");
    memset(d, 0, sizeof *d);
    d->s = s;
    d->p = p;
    d->len = len;
    d->pos = 2; /* after SOI */
    while (!done) {
        unsigned m;
        size_t L;
        const uint8_t *seg;
        if (d->pos < d->len && d->p[d->pos] != 0xFF) { /* garbage between segments: libjpeg skips it */
            d->pos++;
            continue;
        }
        while (d->pos < d->len && d->p[d->pos] == 0xFF) d->pos++;
        if (d->pos >= d->len) {
            if (d->frame && d->comp[0].coded) break; /* no EOI, but the image is there */
            hv__img_err(s, "truncated: the file ends before the image data");
            goto fail;
        }
        m = d->p[d->pos++];
        if (m == 0xD9) break; /* EOI */
        if (m == 0xD8 || m == 0x01 || m == 0x00 || (m >= 0xD0 && m <= 0xD7)) continue; /* no length */
        if (d->len - d->pos < 2) {
            hv__img_err(s, "truncated: marker %02X has no length", m);
            goto fail;
        }
        L = hv__be16(d->p + d->pos);
        if (L < 2 || L > d->len - d->pos) {
            hv__img_err(s, "truncated: segment %02X of %zu bytes runs past the end of the file", m, L);
            goto fail;
        }
        seg = d->p + d->pos + 2;
        L -= 2;
        d->pos += 2 + L;
        switch (m) {
        case 0xC0:
        case 0xC1:
            if (hv__j_sof(d, seg, L) != 0) goto fail;
            break;
        case 0xC2:
        case 0xC6:
        case 0xCA:
        case 0xCE:
            hv__img_err(s, "progressive JPEG not supported (baseline/sequential only)");
            goto fail;
        case 0xC3:
        case 0xC7:
        case 0xCB:
        case 0xCF:
            hv__img_err(s, "lossless JPEG not supported (baseline/sequential only)");
            goto fail;
        case 0xC5:
        case 0xC9:
        case 0xCD:
            hv__img_err(s, "%s JPEG not supported (baseline/sequential only)", m == 0xC5 ? "hierarchical" : "arithmetic-coded");
            goto fail;
        case 0xCC:
            hv__img_err(s, "arithmetic-coded JPEG not supported (baseline/sequential only)");
            goto fail;
        case 0xC4: { /* DHT */
            size_t at = 0;
            while (at < L) {
                int tc, th, total = 0, k;
                if (L - at < 17) goto bad_dht;
                tc = seg[at] >> 4;
                th = seg[at] & 15;
                if (tc > 1 || th > 3) goto bad_dht;
                for (k = 0; k < 16; k++) total += seg[at + 1 + k];
                if (total > 256 || L - at - 17 < (size_t)total) goto bad_dht;
                if (hv__jhuff_build(tc ? &d->ac[th] : &d->dc[th], seg + at + 1, seg + at + 17, total) != 0) goto bad_dht;
                at += 17 + (size_t)total;
            }
            break;
        bad_dht:
            hv__img_err(s, "corrupt Huffman table (DHT)");
            goto fail;
        }
        case 0xDB: { /* DQT */
            size_t at = 0;
            while (at < L) {
                int pq = seg[at] >> 4, tq = seg[at] & 15, k;
                if (pq > 1 || tq > 3 || L - at - 1 < (size_t)(64 << pq)) {
                    hv__img_err(s, "corrupt quantization table (DQT)");
                    goto fail;
                }
                for (k = 0; k < 64; k++) d->qt[tq][hv__jzz[k]] = (uint16_t)(pq ? hv__be16(seg + at + 1 + 2 * k) : seg[at + 1 + k]);
                d->qt_present[tq] = 1;
                at += 1 + (size_t)(64 << pq);
            }
            break;
        }
        case 0xDD: /* DRI */
            if (L < 2) {
                hv__img_err(s, "corrupt restart interval (DRI)");
                goto fail;
            }
            d->restart = (int)hv__be16(seg);
            break;
        case 0xDA: /* SOS: the entropy-coded data follows the header */
            if (hv__j_sos(d, seg, L) != 0) goto fail;
            break; /* d->pos is now at (or before) the next marker */
        case 0xE0:
            if (L >= 14 && memcmp(seg, "JFIF\0", 5) == 0) d->jfif = 1; /* libjpeg's test */
            break;
        case 0xEE:
            if (L >= 12 && memcmp(seg, "Adobe", 5) == 0) {
                d->adobe = 1;
                d->adobe_transform = seg[11];
            }
            break;
        default: /* APPn, COM, DNL, ...: skipped */
            break;
        }
    }
    if (!d->frame) {
        hv__img_err(s, "no frame header (SOF): not a complete JPEG");
        goto fail;
    }
    for (i = 0; i < d->ncomp; i++)
        if (!d->comp[i].coded) {
            hv__img_err(s, "truncated: component %d has no image data", d->comp[i].id);
            goto fail;
        }
    rc = hv__j_output(d, out);
fail:
    for (i = 0; i < 3; i++) hv__free(d->comp[i].plane);
    hv__free(d);
    return rc;
}

/* ---- loading: the format from the magic bytes ------------------------------------------------- */

static int hv__img_decode(const hv__imgsrc *s, const uint8_t *p, size_t len, hv_image *out) {
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len >= 8 && memcmp(p, png_magic, 8) == 0) return hv__png_decode(s, p, len, out);
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return hv__jpeg_decode(s, p, len, out);
    if (len >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6') return hv__pnm_decode(s, p, len, out);
    if (len == 0) return hv__img_err(s, "empty file");
    if (len >= 4 && p[0] == 0x89 && p[1] == 'P' && p[2] == 'N' && p[3] == 'G') return hv__img_err(s, "damaged PNG signature");
    return hv__img_err(s, "unknown image format (first bytes %02x %02x %02x %02x; PNG, JPEG and PPM/PGM are supported)", p[0],
                       len > 1 ? p[1] : 0, len > 2 ? p[2] : 0, len > 3 ? p[3] : 0);
}

HVDEF int hv_image_load_memory(const void *buf, size_t len, hv_image *out) {
    hv__imgsrc s;
    s.op = "hv_image_load_memory";
    s.name = "<memory>";
    if (!out) return hv__fail(s.op, "out is NULL"), -1;
    memset(out, 0, sizeof *out);
    if (!buf && len) return hv__fail(s.op, "buf is NULL"), -1;
    if (hv__img_decode(&s, (const uint8_t *)buf, buf ? len : 0, out) != 0) {
        hv_image_free(out);
        return -1;
    }
    return 0;
}

HVDEF int hv_image_load(const char *path, hv_image *out) {
    hv__imgsrc s;
    uint8_t *data;
    size_t len;
    int rc;
    s.op = "hv_image_load";
    s.name = path;
    if (!out) return hv__fail(s.op, "out is NULL"), -1;
    memset(out, 0, sizeof *out);
    if (hv__read_file(s.op, path, &data, &len) != 0) return -1;
    rc = hv__img_decode(&s, data, len, out);
    hv__free(data);
    if (rc != 0) hv_image_free(out);
    return rc;
}

/* ---- resizing as PIL's Image.resize (libImaging/Resample.c) ----------------------------------- */

#define HV__PI 3.14159265358979323846

static double hv__filter_eval(int filter, double x) {
    switch (filter) {
    case HV_RESIZE_BOX:
        return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
    case HV_RESIZE_BILINEAR:
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    case HV_RESIZE_HAMMING:
        if (x < 0.0) x = -x;
        if (x == 0.0) return 1.0;
        if (x >= 1.0) return 0.0;
        x = x * HV__PI;
        return sin(x) / x * ((double)0.54f + (double)0.46f * cos(x)); /* PIL writes the constants as floats */
    case HV_RESIZE_BICUBIC: /* Keys' cubic, a = -0.5 */
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * -0.5;
        return 0.0;
    default: /* LANCZOS: sinc(x) sinc(x / 3) on [-3, 3) */
        if (-3.0 <= x && x < 3.0) {
            double a = x == 0.0 ? 1.0 : sin(x * HV__PI) / (x * HV__PI), b = x / 3;
            return a * (b == 0.0 ? 1.0 : sin(b * HV__PI) / (b * HV__PI));
        }
        return 0.0;
    }
}
static double hv__filter_support(int filter) {
    switch (filter) {
    case HV_RESIZE_BOX: return 0.5;
    case HV_RESIZE_BILINEAR:
    case HV_RESIZE_HAMMING: return 1.0;
    case HV_RESIZE_BICUBIC: return 2.0;
    default: return 3.0;
    }
}

/* The taps of one axis: for output i, input [bounds[2i], bounds[2i] + bounds[2i+1]) weighted by
   kk[i * ksize + ...] in 22-bit fixed point. Same arithmetic as PIL's precompute_coeffs and
   normalize_coeffs_8bpc, so the same rounding. */
static int hv__resample_taps(int in_size, int out_size, int filter, int *ksize_out, int **bounds_out, int32_t **kk_out) {
    double support, scale, filterscale, center, ww, ss, *w;
    int ksize, xx, x, xmin, xmax, *bounds;
    int32_t *kk;
    filterscale = scale = (double)in_size / out_size;
    if (filterscale < 1.0) filterscale = 1.0;
    support = hv__filter_support(filter) * filterscale;
    ksize = (int)ceil(support) * 2 + 1;
    w = (double *)hv__malloc(sizeof(double) * (size_t)ksize);
    bounds = (int *)hv__malloc(sizeof(int) * 2 * (size_t)out_size);
    kk = (int32_t *)hv__malloc(sizeof(int32_t) * (size_t)ksize * (size_t)out_size);
    if (!w || !bounds || !kk) {
        hv__free(w);
        hv__free(bounds);
        hv__free(kk);
        return -1;
    }
    for (xx = 0; xx < out_size; xx++) {
        center = (xx + 0.5) * scale;
        ww = 0.0;
        ss = 1.0 / filterscale;
        xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax < 0) xmax = 0;
        if (xmax > ksize) xmax = ksize;
        for (x = 0; x < xmax; x++) {
            w[x] = hv__filter_eval(filter, (x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (x = 0; x < ksize; x++) {
            double k = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            kk[(size_t)xx * (size_t)ksize + (size_t)x] = k < 0 ? (int32_t)(-0.5 + k * (1 << 22)) : (int32_t)(0.5 + k * (1 << 22));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    hv__free(w);
    *ksize_out = ksize;
    *bounds_out = bounds;
    *kk_out = kk;
    return 0;
}

static uint8_t hv__clip8(int32_t v) { /* v >> 22, clamped (PIL's clip8) */
    if (v < 0) return 0;
    v >>= 22;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* one horizontal pass: rows [row0, row0 + rows) of in (in_w wide) -> out (out_w wide) */
static void hv__resample_h(const uint8_t *in, int in_w, int C, int row0, int rows, uint8_t *out, int out_w, const int *b, const int32_t *kk,
                           int ks) {
    int y, x, c, k;
    for (y = 0; y < rows; y++) {
        const uint8_t *row = in + (size_t)(y + row0) * (size_t)in_w * (size_t)C;
        uint8_t *o = out + (size_t)y * (size_t)out_w * (size_t)C;
        for (x = 0; x < out_w; x++) {
            const int32_t *kw = kk + (size_t)x * (size_t)ks;
            const uint8_t *r = row + (size_t)b[2 * x] * (size_t)C;
            for (c = 0; c < C; c++) {
                int32_t acc = 1 << 21;
                for (k = 0; k < b[2 * x + 1]; k++) acc += r[(size_t)k * (size_t)C + (size_t)c] * kw[k];
                o[(size_t)x * (size_t)C + (size_t)c] = hv__clip8(acc);
            }
        }
    }
}
/* one vertical pass: out row y mixes in rows b[2y] - shift ... (both w wide) */
static void hv__resample_v(const uint8_t *in, int w, int C, int shift, uint8_t *out, int out_h, const int *b, const int32_t *kk, int ks) {
    size_t rowlen = (size_t)w * (size_t)C, i;
    int y, k;
    for (y = 0; y < out_h; y++) {
        const int32_t *kw = kk + (size_t)y * (size_t)ks;
        const uint8_t *col = in + (size_t)(b[2 * y] - shift) * rowlen;
        uint8_t *o = out + (size_t)y * rowlen;
        for (i = 0; i < rowlen; i++) {
            int32_t acc = 1 << 21;
            for (k = 0; k < b[2 * y + 1]; k++) acc += col[(size_t)k * rowlen + i] * kw[k];
            o[i] = hv__clip8(acc);
        }
    }
}

HVDEF int hv_image_resize(const hv_image *in, int width, int height, int filter, hv_image *out) {
    const char *op = "hv_image_resize";
    int kx = 0, ky = 0, *bx = NULL, *by = NULL, need_h, need_v, h_first, y0, y1, rc = -1, C;
    int32_t *wx = NULL, *wy = NULL;
    hv_image tmp;
    hv__imgsrc s;
    s.op = op;
    s.name = "output";
    memset(&tmp, 0, sizeof tmp);
    if (!out) return hv__fail(op, "out is NULL"), -1;
    if (out == in) return hv__fail(op, "out must not be the input image"), -1;
    memset(out, 0, sizeof *out);
    if (hv__img_check_arg(op, "in", in) != 0) return -1;
    if (filter < HV_RESIZE_LANCZOS || filter > HV_RESIZE_HAMMING)
        return hv__fail(op, "unknown filter %d (HV_RESIZE_BICUBIC, _BILINEAR, _LANCZOS, _BOX or _HAMMING)", filter), -1;
    if (hv__img_check_size(&s, width, height) != 0) return -1;
    C = in->channels;
    need_h = width != in->width;
    need_v = height != in->height;
    if (!need_h && !need_v) { /* PIL returns a copy */
        if (hv__img_make(&s, out, width, height, C) != 0) return -1;
        memcpy(out->pixels, in->pixels, (size_t)width * (size_t)height * (size_t)C);
        return 0;
    }
    /* Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
       pixels as the width (older Pillow always went horizontal first; the orders can differ by
       one level through the 8-bit intermediate) */
    h_first = !(in->height - height > 0 && in->height - height > (in->width - width) * 2);
    if (hv__resample_taps(in->width, width, filter, &kx, &bx, &wx) != 0 || hv__resample_taps(in->height, height, filter, &ky, &by, &wy) != 0) {
        hv__fail(op, "out of memory");
        goto done;
    }
    if (h_first) {
        y0 = 0;
        y1 = in->height;
        if (need_h) { /* only the rows the vertical pass will read */
            y0 = by[0];
            y1 = by[2 * (height - 1)] + by[2 * (height - 1) + 1];
            if (hv__img_make(&s, need_v ? &tmp : out, width, y1 - y0, C) != 0) goto done;
            hv__resample_h(in->pixels, in->width, C, y0, y1 - y0, need_v ? tmp.pixels : out->pixels, width, bx, wx, kx);
        }
        if (need_v) {
            const hv_image *src = need_h ? &tmp : in;
            if (hv__img_make(&s, out, width, height, C) != 0) goto done;
            hv__resample_v(src->pixels, width, C, y0, out->pixels, height, by, wy, ky);
        }
    } else { /* need_v holds here */
        if (hv__img_make(&s, need_h ? &tmp : out, in->width, height, C) != 0) goto done;
        hv__resample_v(in->pixels, in->width, C, 0, need_h ? tmp.pixels : out->pixels, height, by, wy, ky);
        if (need_h) {
            if (hv__img_make(&s, out, width, height, C) != 0) goto done;
            hv__resample_h(tmp.pixels, in->width, C, 0, height, out->pixels, width, bx, wx, kx);
        }
    }
    rc = 0;
done:
    if (rc != 0) hv_image_free(out);
    hv_image_free(&tmp);
    hv__free(bx);
    hv__free(by);
    hv__free(wx);
    hv__free(wy);
    return rc;
}

/* Python's round() of d / 2 for d >= 0: half to even */
static int hv__half_round_even(int d) {
    int k = d / 2;
    if (d % 2 == 0) return k;
    return (k % 2 == 0) ? k : k + 1;
}

HVDEF int hv_image_center_crop(const hv_image *in, int width, int height, hv_image *out) {
    const char *op = "hv_image_center_crop";
    int left, top, y, x, C;
    hv__imgsrc s;
    s.op = op;
    s.name = "output";
    if (!out) return hv__fail(op, "out is NULL"), -1;
    if (out == in) return hv__fail(op, "out must not be the input image"), -1;
    memset(out, 0, sizeof *out);
    if (hv__img_check_arg(op, "in", in) != 0) return -1;
    if (hv__img_check_size(&s, width, height) != 0) return -1;
    C = in->channels;
    /* torchvision pads (left = (crop - w) // 2) when the crop is larger, which is a negative offset */
    left = width > in->width ? -((width - in->width) / 2) : hv__half_round_even(in->width - width);
    top = height > in->height ? -((height - in->height) / 2) : hv__half_round_even(in->height - height);
    if (hv__img_make(&s, out, width, height, C) != 0) return -1;
    for (y = 0; y < height; y++) {
        int sy = y + top;
        uint8_t *o = out->pixels + (size_t)y * (size_t)width * (size_t)C;
        if (sy < 0 || sy >= in->height) {
            memset(o, 0, (size_t)width * (size_t)C);
            continue;
        }
        for (x = 0; x < width; x++) {
            int sx = x + left;
            if (sx < 0 || sx >= in->width)
                memset(o + (size_t)x * (size_t)C, 0, (size_t)C);
            else
                memcpy(o + (size_t)x * (size_t)C, in->pixels + ((size_t)sy * (size_t)in->width + (size_t)sx) * (size_t)C, (size_t)C);
        }
    }
    return 0;
}

HVDEF int hv_image_to_tensor(const hv_image *img, const float mean[3], const float std[3], float *out) {
    const char *op = "hv_image_to_tensor";
    size_t n, i;
    int c;
    if (hv__img_check_arg(op, "image", img) != 0) return -1;
    if (!out) return hv__fail(op, "out is NULL"), -1;
    if (std)
        for (c = 0; c < 3; c++)
            if (!(std[c] != 0.0f)) return hv__fail(op, "std[%d] is %g", c, (double)std[c]), -1;
    n = (size_t)img->width * (size_t)img->height;
    for (c = 0; c < 3; c++) {
        float m = mean ? mean[c] : 0.0f, sd = std ? std[c] : 1.0f;
        int sc = img->channels >= 3 ? c : 0; /* gray -> RGB by replication, alpha dropped */
        const uint8_t *p = img->pixels + sc;
        float *o = out + (size_t)c * n;
        size_t step = (size_t)img->channels;
        for (i = 0; i < n; i++) {
            float v = (float)p[i * step] / 255.0f; /* ToTensor: float division by 255 */
            o[i] = (v - m) / sd;                    /* Normalize: sub_(mean).div_(std) */
        }
    }
    return 0;
}

HVDEF int hv_image_eval_transform(const hv_image *in, int size, float *out) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    const char *op = "hv_image_eval_transform";
    hv_image resized, crop;
    const hv_image *r = in;
    int w, h, nw, nh, shortside, longside, target, rc;
    if (hv__img_check_arg(op, "image", in) != 0) return -1;
    if (!out) return hv__fail(op, "out is NULL"), -1;
    if (size < 1 || size > HV_IMAGE_MAX_SIDE - 32) return hv__fail(op, "size %d is outside 1..%d", size, HV_IMAGE_MAX_SIDE - 32), -1;
    memset(&resized, 0, sizeof resized);
    w = in->width;
    h = in->height;
    target = size + 32;
    /* torchvision _compute_resized_output_size: the long side is int(target * long / short) */
    shortside = w <= h ? w : h;
    longside = w <= h ? h : w;
    {
        double l = (double)((int64_t)target * longside) / (double)shortside;
        if (l > (double)HV_IMAGE_MAX_SIDE) return hv__fail(op, "a %dx%d image resized to %d on its short side is too long", w, h, target), -1;
        if (w <= h) {
            nw = target;
            nh = (int)l;
        } else {
            nw = (int)l;
            nh = target;
        }
    }
    if (nw != w || nh != h) {
        if (hv_image_resize(in, nw, nh, HV_RESIZE_BICUBIC, &resized) != 0) return -1;
        r = &resized;
    }
    rc = hv_image_center_crop(r, size, size, &crop);
    hv_image_free(&resized);
    if (rc != 0) return -1;
    rc = hv_image_to_tensor(&crop, mean, std, out);
    hv_image_free(&crop);
    return rc;
}

/* ---- .npy (NumPy format 1.0 / 2.0 / 3.0) ------------------------------------------------------ */

typedef struct hv__npyhdr {
    int kind; /* 0 '<f4', 1 '<f8', 2 '<i4', 3 '<i8' */
    int ndim;
    int64_t dims[HV_MAX_DIMS];
} hv__npyhdr;

static void hv__npy_ws(const char *h, size_t n, size_t *i) {
    while (*i < n && (h[*i] == ' ' || h[*i] == '\t' || h[*i] == '\n' || h[*i] == '\r')) (*i)++;
}
/* a quoted Python string into buf (at most cap - 1 characters) */
static int hv__npy_str(const char *h, size_t n, size_t *i, char *buf, size_t cap) {
    char q;
    size_t k = 0;
    hv__npy_ws(h, n, i);
    if (*i >= n || (h[*i] != '\'' && h[*i] != '"')) return -1;
    q = h[(*i)++];
    while (*i < n && h[*i] != q) {
        if (k + 1 >= cap) return -1;
        buf[k++] = h[(*i)++];
    }
    if (*i >= n) return -1;
    (*i)++;
    buf[k] = 0;
    return 0;
}

/* parses numpy's header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } */
static int hv__npy_parse_header(const hv__imgsrc *s, const char *h, size_t n, hv__npyhdr *out) {
    size_t i = 0;
    int seen = 0;
    char key[32], val[32];
    memset(out, 0, sizeof *out);
    hv__npy_ws(h, n, &i);
    if (i >= n || h[i++] != '{') return hv__img_err(s, "corrupt .npy header (no dict)");
    for (;;) {
        hv__npy_ws(h, n, &i);
        if (i < n && h[i] == '}') break;
        if (hv__npy_str(h, n, &i, key, sizeof key) != 0) return hv__img_err(s, "corrupt .npy header (bad key)");
        hv__npy_ws(h, n, &i);
        if (i >= n || h[i++] != ':') return hv__img_err(s, "corrupt .npy header (no ':' after '%s')", key);
        hv__npy_ws(h, n, &i);
        if (strcmp(key, "descr") == 0) {
            if (hv__npy_str(h, n, &i, val, sizeof val) != 0) return hv__img_err(s, "corrupt .npy header (descr is not a simple string)");
            if (strcmp(val, "<f4") == 0)
                out->kind = 0;
            else if (strcmp(val, "<f8") == 0)
                out->kind = 1;
            else if (strcmp(val, "<i4") == 0)
                out->kind = 2;
            else if (strcmp(val, "<i8") == 0)
                out->kind = 3;
            else
                return hv__img_err(s, "dtype '%s' is not supported ('<f4', '<f8', '<i4' and '<i8' are)", val);
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (n - i >= 5 && memcmp(h + i, "False", 5) == 0) {
                i += 5;
            } else if (n - i >= 4 && memcmp(h + i, "True", 4) == 0) {
                return hv__img_err(s, "fortran_order True is not supported (save a C-ordered array: np.ascontiguousarray)");
            } else {
                return hv__img_err(s, "corrupt .npy header (fortran_order)");
            }
            seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if (i >= n || h[i++] != '(') return hv__img_err(s, "corrupt .npy header (shape is not a tuple)");
            for (;;) {
                int64_t v = 0;
                size_t start;
                hv__npy_ws(h, n, &i);
                if (i < n && h[i] == ')') {
                    i++;
                    break;
                }
                start = i;
                while (i < n && h[i] >= '0' && h[i] <= '9') {
                    v = v * 10 + (h[i++] - '0');
                    if (v > ((int64_t)1 << 48)) return hv__img_err(s, "shape entry is absurdly large");
                }
                if (i == start) return hv__img_err(s, "corrupt .npy header (shape entry)");
                if (i < n && h[i] == 'L') i++; /* Python 2 longs */
                if (out->ndim >= HV_MAX_DIMS) return hv__img_err(s, "array has more than %d axes", HV_MAX_DIMS);
                out->dims[out->ndim++] = v;
                hv__npy_ws(h, n, &i);
                if (i < n && h[i] == ',') i++;
                else if (!(i < n && h[i] == ')')) return hv__img_err(s, "corrupt .npy header (shape)");
            }
            seen |= 4;
        } else {
            return hv__img_err(s, "corrupt .npy header (unknown key '%s')", key);
        }
        hv__npy_ws(h, n, &i);
        if (i < n && h[i] == ',') {
            i++;
            continue;
        }
        hv__npy_ws(h, n, &i);
        if (i < n && h[i] == '}') break;
        return hv__img_err(s, "corrupt .npy header (expected ',' or '}')");
    }
    if (seen != 7) return hv__img_err(s, "corrupt .npy header (descr, fortran_order or shape missing)");
    return 0;
}

HVDEF hv_tensor *hv_npy_load(hv_ctx *ctx, const char *path) {
    hv__imgsrc s;
    FILE *f;
    uint8_t pre[12];
    char *hdr = NULL;
    size_t hlen, pre_len, numel = 1, esize, i, got;
    hv__npyhdr H;
    hv_tensor *t = NULL;
    int k;
    s.op = "hv_npy_load";
    s.name = path;
    if (!ctx) return (hv_tensor *)hv__fail(s.op, "ctx is NULL");
    if (!path) return (hv_tensor *)hv__fail(s.op, "path is NULL");
    f = fopen(path, "rb");
    if (!f) return (hv_tensor *)hv__fail(s.op, "cannot open '%s': %s", path, strerror(errno));
    memset(pre, 0, sizeof pre);
    got = fread(pre, 1, 10, f);
    if (got != 10 && ferror(f)) {
        hv__fail(s.op, "cannot read '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (got < 6 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        hv__img_err(&s, "not a .npy file (no \\x93NUMPY magic)");
        goto fail;
    }
    if (got != 10) goto truncated;
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
        pre_len = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) goto truncated;
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) | ((size_t)pre[10] << 16) | ((size_t)pre[11] << 24);
        pre_len = 12;
    } else {
        hv__img_err(&s, ".npy format version %d.%d is not supported", pre[6], pre[7]);
        goto fail;
    }
    (void)pre_len;
    if (hlen > (1u << 20)) {
        hv__img_err(&s, "corrupt .npy header (%zu bytes long)", hlen);
        goto fail;
    }
    hdr = (char *)hv__malloc(hlen + 1);
    if (!hdr) {
        hv__img_err(&s, "out of memory");
        goto fail;
    }
    if (fread(hdr, 1, hlen, f) != hlen) goto truncated;
    if (hv__npy_parse_header(&s, hdr, hlen, &H) != 0) goto fail;
    for (k = 0; k < H.ndim; k++) {
        if (H.dims[k] && numel > ((size_t)1 << 40) / (size_t)H.dims[k]) {
            hv__img_err(&s, "array is absurdly large");
            goto fail;
        }
        numel *= (size_t)H.dims[k];
    }
    esize = (H.kind == 1 || H.kind == 3) ? 8 : 4;
    {
        /* check the file holds the data before allocating a tensor for it */
        long here = ftell(f), end;
        if (here < 0 || fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, here, SEEK_SET) != 0) {
            hv__img_err(&s, "cannot seek in the file");
            goto fail;
        }
        if ((size_t)(end - here) / esize < numel) {
            hv__img_err(&s, "truncated: %zu elements need %zu bytes of data, the file has %ld", numel, numel * esize, end - here);
            goto fail;
        }
    }
    t = hv_tensor_new(ctx, H.kind >= 2 ? HV_I32 : HV_F32, hv_shape_of(H.ndim, H.dims));
    if (!t) goto fail;
    if (esize == 4) {
        uint8_t *dst = H.kind == 0 ? (uint8_t *)hv_data(t) : (uint8_t *)hv_data_i32(t);
        if (numel && fread(dst, 4, numel, f) != numel) goto truncated;
        if (!hv__host_is_le()) hv__bswap_inplace(dst, numel, 4);
    } else {
        uint8_t buf[8 * 512];
        for (i = 0; i < numel;) {
            size_t m = numel - i < 512 ? numel - i : 512, j;
            if (fread(buf, 8, m, f) != m) goto truncated;
            for (j = 0; j < m; j++, i++) {
                uint64_t u = 0;
                int b;
                for (b = 7; b >= 0; b--) u = (u << 8) | buf[8 * j + (size_t)b];
                if (H.kind == 1) {
                    double dv;
                    memcpy(&dv, &u, 8);
                    hv_data(t)[i] = (float)dv;
                } else {
                    int64_t v;
                    memcpy(&v, &u, 8);
                    if (v < INT32_MIN || v > INT32_MAX) {
                        hv__img_err(&s, "int64 element %zu is %lld, outside int32", i, (long long)v);
                        goto fail;
                    }
                    hv_data_i32(t)[i] = (int32_t)v;
                }
            }
        }
    }
    fclose(f);
    hv__free(hdr);
    return t;
truncated:
    hv__img_err(&s, "truncated .npy file");
fail:
    fclose(f);
    hv__free(hdr);
    if (t) hv_tensor_free(t);
    return NULL;
}

HVDEF int hv_npy_save(const char *path, const hv_tensor *t) {
    const char *op = "hv_npy_save";
    char dict[256], hdr[320];
    size_t n, hlen, pad, bytes;
    int64_t numel;
    int k, digits;
    void *data;
    const void *parts[2];
    size_t sizes[2];
    int rc;
    if (!t) return hv__fail(op, "%s: tensor is NULL", path ? path : "(null)"), -1;
    if (t->dtype != HV_F32 && t->dtype != HV_I32) return hv__fail(op, "%s: only f32 and i32 tensors can be saved", path ? path : "(null)"), -1;
    n = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", t->dtype == HV_F32 ? "<f4" : "<i4");
    for (k = 0; k < t->ndim; k++) n += (size_t)snprintf(dict + n, sizeof dict - n, k ? ", %lld" : "%lld", (long long)t->shape[k]);
    n += (size_t)snprintf(dict + n, sizeof dict - n, "%s), }", t->ndim == 1 ? "," : "");
    /* numpy leaves room to grow the first axis in place: 21 - len(repr(shape[0])) spaces */
    if (t->ndim > 0) {
        char d0[32];
        digits = snprintf(d0, sizeof d0, "%lld", (long long)t->shape[0]);
        for (k = digits; k < 21; k++) dict[n++] = ' ';
    }
    hlen = n + 1;
    pad = 64 - (10 + hlen) % 64; /* numpy pads 1..64 bytes, never 0 */
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    hdr[8] = (char)((n + pad + 1) & 255);
    hdr[9] = (char)((n + pad + 1) >> 8);
    memcpy(hdr + 10, dict, n);
    memset(hdr + 10 + n, ' ', pad);
    hdr[10 + n + pad] = '\n';
    numel = hv_numel(t);
    bytes = (size_t)numel * 4;
    data = hv__malloc(bytes);
    if (!data) return hv__fail(op, "%s: out of memory", path ? path : "(null)"), -1;
    if (hv_tensor_copy_to(t, data, bytes) != 0) {
        hv__free(data);
        return -1;
    }
    if (!hv__host_is_le()) hv__bswap_inplace((uint8_t *)data, (size_t)numel, 4);
    parts[0] = hdr;
    sizes[0] = 10 + n + pad + 1;
    parts[1] = data;
    sizes[1] = bytes;
    rc = hv__write_atomic(op, path, parts, sizes, 2);
    hv__free(data);
    return rc;
}
/* HV-SECTION images END */

#endif /* HUMANVIT_IMPLEMENTATION_DONE */
#endif /* HUMANVIT_IMPLEMENTATION */
