/* humanvit.h - tensors, reverse-mode autodiff and the layers of the "human-like visual experience"
   vision models (ViT / MAE / ResNeXt / GAN), in one C99 header.            MIT or public domain.

   DO THIS in *one* C or C++ file, before you include this file:

       #define HUMANVIT_IMPLEMENTATION
       #include "humanvit.h"

   and compile with   cc -O2 -march=native [-fopenmp] file.c -lm
   Every other file includes "humanvit.h" as a normal header.

   TABLE OF CONTENTS (search for the "==== N." banners)
       1. Usage, options, step by step (this comment)
       2. Public API: context and RNG, tensors, autodiff, ops, models (ViT, MAE, model ids,
          Perceptual MAE discriminator and losses, ResNeXt),
          training (optimizers, schedules, clipping, train state), images and .npy,
          checkpoints (state dicts, safetensors, .pth, loading into models), errors
       3. Implementation: errors, allocator and arena
       4. Implementation: tensor core
       5. Implementation: autodiff tape
       6. Implementation: op definitions (forward and backward, backend-agnostic)
       7. Implementation: CPU backend (scalar reference kernels, then SIMD: the GEMM and the fast
          kernels of the other ops, "CPU BACKEND: fast kernels")
       7b. Implementation: Vulkan backend glue ("VULKAN GLUE", under HUMANVIT_VULKAN)
       8. Implementation: layers and models (transformer block, ViT, MAE, model ids, Perceptual MAE,
          ResNeXt)
       9. Implementation: checkpoint formats (safetensors, PyTorch .pth) and loading into models
      10. Implementation: optimizers, schedules, training state
      11. Implementation: images (PNG, JPEG, PPM decoding, PIL-compatible resize, .npy)

   OPTIONS (define before including the implementation)
       HUMANVIT_STATIC          all public functions become static (HVDEF = static)
       HV_MALLOC/HV_REALLOC/HV_FREE   all or none: replace malloc/realloc/free
       HV_ASSERT(x)             internal invariants only (default: assert); user mistakes never assert
       _OPENMP                  (set by -fopenmp) kernels run multi-threaded; results are
                                bit-identical for any thread count (see DETERMINISM)
       SIMD                     chosen by the compiler's own macros: -march=native (or -mavx512f,
                                -mavx2 -mfma; aarch64 has NEON) gives the packed AVX-512 / AVX2 /
                                NEON SGEMM and the fast kernels of the other ops (attention,
                                norms, elementwise...); without them the scalar reference
                                kernels run. hv_cpu_isa(ctx) says which GEMM is in use.
       HUMANVIT_CPU_DISPATCH    portable x86-64 binaries: build the implementation without
                                -march=native and link kernels_cpu/hv_cpu_avx512.c (compiled with
                                -mavx512f -mavx512bw -mavx512vl -mfma) and kernels_cpu/hv_cpu_avx2.c
                                (-mavx2 -mfma); hv_init picks the best the CPU runs (cpuid, gcc or
                                clang), for the GEMM and the fast kernels of the other ops alike.
                                Those files define HUMANVIT_KERNELS_AVX512 / _AVX2 and
                                HUMANVIT_STATIC and include this header: the kernel code is here.
                                (With HV_MALLOC/HV_FREE overridden, give them the same override.)
       HUMANVIT_GEMM_PRECISION  (environment, or hv_init_desc.gemm_precision = HV_GEMM_BF16, or
                                hv_set_gemm_precision) "bf16": the CPU GEMM (matmul, linear, conv,
                                forward and backward) rounds its operands to bf16 and sums the
                                products in f32, 1.65-1.94x the f32 speed, on AVX512_BF16 CPUs
                                (gcc >= 10 or clang >= 9; cpuid decides, the dispatch build too).
                                Error per element <= 2^-7 * sum_k |a_ik b_kj| (one product), about
                                2^-10 of it over hundreds; ViT-S features within ~0.5%. Default f32;
                                elsewhere it stays f32, which hv_get_gemm_precision(ctx) reports.
                                The variable, when set ("bf16" or "f32"), overrides the descriptor.
       HUMANVIT_VULKAN          compile in the Vulkan backend (see VULKAN); needs the Vulkan
                                headers and kernels_vulkan/hv_shaders.h next to this file
       HUMANVIT_REFERENCE_KERNELS  the CPU backend runs its scalar reference kernels for the ops
                                other than the GEMM instead of the fast ones ("CPU BACKEND: fast
                                kernels"): slow, for debugging and benchmarks

   WHAT IT DOES NOT DO
       No implicit device moves, no background threads of its own, no Python. Tensors are f32
       (i32 for indices); bf16/f16 storage has room in hv_dtype but is not implemented yet (bf16
       arithmetic exists only inside the opt-in bf16 GEMM, see HUMANVIT_GEMM_PRECISION).
       Checkpoints are read (safetensors, torch.save zip files) and written (safetensors), never
       executed: the pickle reader builds tensors and dicts only.

   MEMORY
       Two lifetimes. Tensors you create with the constructors (hv_tensor_new, hv_zeros, hv_randn,
       hv_tensor_from, ...) are *persistent*: parameters, optimizer state, input buffers. They live
       until hv_tensor_free or hv_shutdown. Everything an op returns lives in the per-step *arena*
       and is released, all at once, by hv_step_end(ctx). After the first few steps the arena has
       grown to the step's high-water mark and a training loop does no malloc at all
       (hv_alloc_count() lets a test prove it).
       Inside a step the backward gives memory back early (host arena and device step pool
       alike): once a tensor's backward has run its gradient is dead
       and released, so hv_grad of an intermediate tensor is NULL after hv_backward (parameters
       and other persistent tensors keep theirs); and the values a model forward (hv_vit_forward,
       hv_mae_forward, ...) made internally are released too, while what it returned to you
       (logits, features, MAE pred and mask) stays valid until hv_step_end. Later allocations
       of the step reuse the released blocks, so a training step peaks at about its activations
       plus a few gradients. The ViT MLP keeps only fc1's output and recomputes the GELU in its
       backward; op outputs that the kernel overwrites whole are not zero-filled.

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
       NULL and keeps the first error, so a chain of calls can be checked once at its end (also
       through hv_backward and hv_item: given the NULL of a failed op, they keep its error).

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
       returns NULL for device tensors. Ops are recorded, not run: the work is submitted, and the
       host waits for it, when the host needs a value (copy_to, hv_item), at hv_step_end or
       hv_sync, so read results at the end of a step. Waits per training step (upload the batch,
       forward, backward, hv_optim_step, hv_item(loss), hv_step_end): one, ViT and MAE alike. More:
       each copy_to/hv_item after more work was recorded; clipping, hv_check_finite, LARS (one for
       all parameters); MAE noise given by the caller (it comes down for the argsort; the library's
       own noise and masks only go up); over 16 MiB of uploads or 4096 dispatches in one batch.
       Index errors: indices in device memory (hv_gather, hv_scatter, cross-entropy labels) are
       checked by the kernels, not downloaded; a bad one is skipped (a zero, a NaN loss) and
       reported at the next sync, naming the op and the value ("hv_gather: idx holds 7, out of
       range [0, 5) ..."): copy_to returns -1, hv_item NaN; found by hv_step_end or hv_sync (void),
       it makes every op fail with that message until the next hv_step_end (ops NULL, hv_backward
       and hv_optim_step -1), so the next step's first check sees it; the step after works. A wait
       forced mid-op (a full staging buffer or parameter ring) fails that op with it.
       Results match the CPU within ~1e-6 of their scale (the device sums in float, in another
       order). Work on tensors over the device's maxStorageBufferRange (lavapipe: 128 MiB) is split
       (elementwise, GEMM, reductions, MSE/L1 sums, optimizers; attention over batch and heads;
       norms, softmax, losses and indexing over rows; conv, pools, batch norm over images; softmax
       rows longer than a binding through split reductions); what cannot be split (one row of a
       layer norm or cross-entropy, one image of a conv or batch norm, one attention head) fails
       with an error. Not yet: f16/bf16, asynchronous double buffering.
       Environment, for tests and odd drivers: HUMANVIT_VULKAN_LOADER (the loader library),
       HUMANVIT_VULKAN_MAX_RANGE / _MAX_ALLOC / _STAGING (shrink the device limits, bytes).

   STEP BY STEP (an MAE pretraining loop; examples/ has complete programs)
       hv_ctx *ctx = hv_init(&(hv_init_desc){ .seed = 1 });            // CPU, all cores
       hv_mae *mae = hv_mae_new(ctx, &(hv_mae_desc){ .encoder = { .preset = HV_VIT_S14 },
                                                      .mask_ratio = 0.8f });
       hv_optim *opt = hv_optim_new(ctx, hv_mae_params(mae), &(hv_optim_desc){
                                        .lr = 3e-4f, .beta2 = 0.95f });  // AdamW
       hv_tensor *images = hv_tensor_new(ctx, HV_F32, HV_SHAPE(32, 3, 224, 224)); // input buffer
       for (int it = 0; it < iters; it++) {
           hv_tensor_copy_from(images, batch, sizeof(float) * 32 * 3 * 224 * 224);
           hv_tensor *loss = hv_mae_forward(mae, images, NULL, NULL, NULL); // records the tape
           if (!loss) { fprintf(stderr, "%s\n", hv_last_error()); break; }
           hv_optim_zero_grad(opt);
           hv_backward(loss);                       // gradients of every trainable parameter
           hv_optim_step(opt);
           hv_step_end(ctx);                        // frees this step's activations
           if (it % 1000 == 0) hv_train_state_save("run.hvts", ctx, hv_mae_params(mae), opt, &info);
       }
       // finetuning: hv_vit_new(ctx, &(hv_vit_desc){ .preset = HV_VIT_S14, .num_classes = 1000 }),
       // hv_params_load_file(hv_vit_params(vit), "mae.safetensors", NULL, &res) (a .pth works too),
       // then hv_cross_entropy(hv_vit_forward(vit, images, 1), labels) in the same loop.
       hv_optim_free(opt); hv_mae_free(mae); hv_shutdown(ctx);

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

/* the CPU GEMM's arithmetic (OPTIONS, "HUMANVIT_GEMM_PRECISION") */
typedef enum hv_gemm_precision {
    HV_GEMM_F32 = 0, /* default: f32 operands and sums */
    HV_GEMM_BF16 = 1 /* operands rounded to bf16, products summed in f32 (AVX512_BF16 CPUs) */
} hv_gemm_precision;

typedef struct hv_init_desc {
    hv_backend_kind backend; /* default CPU */
    uint64_t seed;           /* default 0 (a valid seed) */
    int threads;             /* 0: all the machine's cores (OpenMP builds), else exactly this */
    size_t arena_bytes;      /* first arena chunk; 0: 16 MiB. It grows as needed. */
    const char *device;      /* Vulkan: device index ("1") or name substring ("llvmpipe"); NULL:
                                $HUMANVIT_VULKAN_DEVICE, else the first discrete GPU, then
                                integrated, virtual, CPU (lavapipe) */
    hv_gemm_precision gemm_precision; /* CPU GEMM; default f32; $HUMANVIT_GEMM_PRECISION overrides */
} hv_init_desc;

HVDEF hv_ctx *hv_init(const hv_init_desc *desc); /* NULL desc: all defaults */
HVDEF void hv_shutdown(hv_ctx *ctx);              /* frees every tensor the context made */
HVDEF void hv_set_threads(hv_ctx *ctx, int threads);
HVDEF int hv_get_threads(const hv_ctx *ctx);
HVDEF const char *hv_cpu_isa(hv_ctx *ctx);       /* the GEMM (and fast kernels') ISA: "avx512", "avx2", "neon", "scalar" */
/* bf16 GEMM on or off for this context's later ops; returns the precision now in effect:
   HV_GEMM_F32 where bf16 was asked for but this CPU or build has no bf16 kernel, or the context
   is not a CPU one (-1 and an error for a value that is neither) */
HVDEF int hv_set_gemm_precision(hv_ctx *ctx, hv_gemm_precision precision);
HVDEF hv_gemm_precision hv_get_gemm_precision(const hv_ctx *ctx);
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
   mask that sums to 0 is an error (on a device backend, which does not wait for the sum: NaN) */
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

/* HV-SECTION api-pmae BEGIN */
/* ---- Perceptual MAE (PMAE, LS-GAN variant): discriminator and losses ----------------------------
   The generator is the MAE above (hv_mae, ViT-B/16 in upstream's config); these are the pieces the
   GAN adds (tractableai/perceptual-mae: Discriminator, LSGAN, GANPerceptualLoss). A training
   step pair, as upstream's Lightning loop runs it (each step its own forward and random mask):

       hv_disc_set_trainable(disc, 0);                 // G step: D frozen (Lightning toggles it)
       hv_mae_forward(mae, images, NULL, &pred, NULL);
       hv_tensor *fake = hv_unpatchify(pred, 16, 3);   // (B, 3, 224, 224)
       hv_tensor *g = hv_pmae_generator_loss(disc, copy, fake, images, NULL, NULL);
       hv_optim_zero_grad(opt_g); hv_backward(g); hv_optim_step(opt_g); hv_step_end(ctx);
       hv_disc_set_trainable(disc, 1);                 // D step; the generator records nothing:
       hv_set_grad_enabled(ctx, 0); hv_mae_forward(mae, images, NULL, &pred, NULL); hv_set_grad_enabled(ctx, 1);
       hv_tensor *d = hv_pmae_disc_loss(disc, hv_unpatchify(pred, 16, 3), images);
       hv_optim_zero_grad(opt_d); hv_backward(d); hv_optim_step(opt_d); hv_step_end(ctx);
   copy is a second hv_disc, frozen (hv_disc_set_trainable(copy, 0)) and refreshed with
   hv_disc_copy(copy, disc) before every step of the epochs divisible by 5, as upstream. */

/* the single-scale discriminator: convs without bias, LeakyReLU 0.2, BatchNorm2d (eps 1e-5,
   momentum 0.1) after conv2..conv5: 7x7 s2 p1 -> ndf (110), 5x5 s2 p1 -> 2 ndf (54),
   5x5 s2 p0 -> 4 ndf (25), 3x3 s2 p0 -> 8 ndf (12), 3x3 s2 p1 -> 8 ndf (6), 3x3 s1 p0 -> 1 (4x4),
   flattened to 16 -> Linear(16, 1) -> sigmoid. Inputs must be 224x224 (the Linear takes 4x4).
   Parameters are named as upstream's state dict: conv1.0.weight, conv2.0.weight,
   conv2.1.{weight,bias,running_mean,running_var,num_batches_tracked}, ..., conv6.weight,
   final_layer.{weight,bias}; PyTorch's default initialisation. */
typedef struct hv_disc_desc {
    int ndf;            /* [64] channels of conv1; conv2..conv5 have 2, 4, 8, 8 times that */
    int in_chans;       /* [3] */
    const char *prefix; /* [""] put before every name: "discriminator." matches the keys of an
                           upstream Lightning .ckpt (hv_params_load_file(.., "state_dict", ..)) */
} hv_disc_desc;
typedef struct hv_disc hv_disc;
HVDEF hv_disc *hv_disc_new(hv_ctx *ctx, const hv_disc_desc *desc);
HVDEF void hv_disc_free(hv_disc *disc);
HVDEF hv_disc_desc hv_disc_config(const hv_disc *disc); /* resolved; prefix points into disc */
HVDEF const hv_param_list *hv_disc_params(hv_disc *disc);
/* images (B, C, 224, 224) -> probabilities (B). training: BatchNorm uses batch statistics and
   updates the running ones (else it uses the running ones) */
HVDEF hv_tensor *hv_disc_forward(hv_disc *disc, hv_tensor *images, int training);
/* the outputs of conv1..conv4 (after their activations), the perceptual loss's features:
   (B, ndf, 110, 110), (B, 2 ndf, 54, 54), (B, 4 ndf, 25, 25), (B, 8 ndf, 12, 12). 0 or -1 */
HVDEF int hv_disc_features(hv_disc *disc, hv_tensor *images, int training, hv_tensor *feats[4]);
/* every tensor of src (weights and BatchNorm statistics) into dst of the same sizes. 0 or -1 */
HVDEF int hv_disc_copy(hv_disc *dst, const hv_disc *src);
/* turns gradients of the learnable tensors on or off (the statistics are never trainable); an
   optimizer made while they were trainable skips them while they are not */
HVDEF void hv_disc_set_trainable(hv_disc *disc, int trainable);

/* least-squares GAN on probabilities (B), means before squaring (upstream's LSGAN):
   d_loss = 0.5 ((mean p_real - 1)^2 + (mean p_fake)^2), g_loss = 0.5 (mean p_fake - 1)^2 */
HVDEF hv_tensor *hv_lsgan_d_loss(hv_tensor *p_real, hv_tensor *p_fake);
HVDEF hv_tensor *hv_lsgan_g_loss(hv_tensor *p_fake);
/* style features: (B, C, H, W) -> (B, C, C) = F F^T / (C H W) with F the (B, C, H*W) view */
HVDEF hv_tensor *hv_gram_matrix(hv_tensor *feat);

/* weights of gan_perceptual; zero fields take the defaults in brackets, a negative one turns
   its term off */
typedef struct hv_pmae_loss_desc {
    float l1;    /* [1.0]  the perceptual-loss L1, added to the GAN loss's own L1 (upstream counts it twice) */
    float perc;  /* [0.05] sum over conv1..conv4 of L1(features) */
    float style; /* [40]   sum over conv1..conv4 of L1(Gram matrices) */
    float gan;   /* [0.7]  the LSGAN generator term */
} hv_pmae_loss_desc;
/* the unweighted terms of a generator loss (arena tensors, one element each) */
typedef struct hv_pmae_loss_parts {
    hv_tensor *l1, *gan, *perc, *style;
} hv_pmae_loss_parts;
/* generator loss of a reconstruction fake (B, C, 224, 224) of images:
   L1 + gan G_adv(disc(fake)) + l1 L1 + perc perc + style style, with disc and the feature
   extractor copy both in training mode (batch statistics, as upstream). Freeze disc first
   (hv_disc_set_trainable(disc, 0)) or its gradients collect too. desc and parts may be NULL. */
HVDEF hv_tensor *hv_pmae_generator_loss(hv_disc *disc, hv_disc *copy, hv_tensor *fake, hv_tensor *images,
                                        const hv_pmae_loss_desc *desc, hv_pmae_loss_parts *parts);
/* discriminator loss: hv_lsgan_d_loss(disc(images), disc(fake)) in training mode, real first;
   fake is detached (no gradient reaches the generator) */
HVDEF hv_tensor *hv_pmae_disc_loss(hv_disc *disc, hv_tensor *fake, hv_tensor *images);
/* HV-SECTION api-pmae END */

/* ---- models: ResNeXt (torchvision layout and parameter names) ----------------------------------
   The temporal-classification network of "Are we there yet?" (Orhan 2021): torchvision's
   resnext50_32x4d / resnext101_32x8d, random init, fc = Linear(2048, n_out). Bottleneck blocks
   (1x1, grouped 3x3 carrying the stride, 1x1 to 4x the stage's planes; a 1x1 conv + BN downsample
   on the first block of each stage), BatchNorm eps 1e-5, momentum 0.1. Parameter names are
   torchvision's (conv1.weight, bn1.*, layer{1-4}.{j}.conv{1,2,3}.weight, .bn{1,2,3}.*,
   layer{k}.0.downsample.{0.weight,1.*}, fc.*), BatchNorm running statistics and
   num_batches_tracked included (not trainable), so hv_params_load_file reads a torchvision
   state dict or a train_tc.py checkpoint (.tar: 'model_state_dict', 'module.' prefixes) as is.
   Initialisation as torchvision: convs kaiming_normal (fan_out, relu), BN weight 1 bias 0,
   fc PyTorch's Linear default U(+-1/sqrt(in)) for weight and bias.
   Images: (B, in_chans, H, W) of any size >= 1 px (the net's stride is 32, the final map is
   ceil(H/32) x ceil(W/32)); in training every BatchNorm needs more than one value per channel,
   so B * ceil(H/32) * ceil(W/32) must be >= 2 (PyTorch refuses the same). */
typedef enum hv_resnext_preset {
    HV_RESNEXT_CUSTOM = 0,  /* depths given; groups [1], width_per_group [64]: a plain ResNet */
    HV_RESNEXT50_32X4D,     /* stages 3, 4, 6, 3; 32 groups of width 4: 25,028,904 params with 1000 classes */
    HV_RESNEXT101_32X8D     /* stages 3, 4, 23, 3; 32 groups of width 8: 88,791,336 params with 1000 classes */
} hv_resnext_preset;

/* zero fields take the preset's value (or the default in brackets) */
typedef struct hv_resnext_desc {
    hv_resnext_preset preset;
    int num_classes;     /* fc = Linear(features, num_classes); 0: no fc, the output is the pooled features */
    int depths[4];       /* bottleneck blocks per stage (all four given, or all zero for the preset's) */
    int groups;          /* of the 3x3 convs (torchvision's groups) */
    int width_per_group; /* torchvision's width_per_group (base_width): a stage with p planes is
                            int(p * width_per_group / 64) * groups wide inside its blocks */
    int base_planes;     /* [64] the stem's channels and stage 1's planes; stage k has
                            base_planes * 2^(k-1) planes and 4x that many output channels, so the
                            features are 32 * base_planes wide (2048) */
    int in_chans;        /* [3] */
    float bn_eps;        /* [1e-5] */
    float bn_momentum;   /* [0.1] */
} hv_resnext_desc;

typedef struct hv_resnext hv_resnext;
HVDEF hv_resnext *hv_resnext_new(hv_ctx *ctx, const hv_resnext_desc *desc);
HVDEF void hv_resnext_free(hv_resnext *r);
HVDEF hv_resnext_desc hv_resnext_config(const hv_resnext *r); /* the resolved sizes */
HVDEF int hv_resnext_num_features(const hv_resnext *r);       /* 32 * base_planes: 2048 for the presets */
HVDEF const hv_param_list *hv_resnext_params(hv_resnext *r);   /* torchvision state-dict order */
/* images (B, C, H, W) -> logits (B, num_classes), or the pooled features (B, 32 * base_planes)
   without fc. training: BatchNorm uses batch statistics and updates its running statistics and
   num_batches_tracked (model.train()); else the running statistics (model.eval()). */
HVDEF hv_tensor *hv_resnext_forward(hv_resnext *r, hv_tensor *images, int training);
/* "resnext50_32x4d", "resnext101_32x8d" (torchvision's names); HV_RESNEXT_CUSTOM if unknown */
HVDEF hv_resnext_preset hv_resnext_preset_from_name(const char *name);

/* HV-SECTION api-train BEGIN */
/* ---- training: optimizers, parameter groups, LR schedules, clipping, train state ------------ */
/* A training step with the toolkit (the order of FMAE engine_pretrain.py):

       hv_optim *opt = hv_optim_new(ctx, hv_mae_params(mae), &(hv_optim_desc){
           .type = HV_OPTIM_ADAMW, .lr = 1.5e-4f, .beta2 = 0.95f, .weight_decay = 0.05f,
           .decay_rule = HV_DECAY_SKIP_1D });
       hv_schedule_desc sched = { .type = HV_SCHED_COSINE, .lr = 1.5e-4f, .warmup = 40, .total = 800 };
       for (it = start; it < iters; it++) {
           hv_optim_set_lr(opt, hv_lr_at(&sched, (double)it / iters_per_epoch)); // per iteration
           hv_tensor *loss = hv_mae_forward(mae, images, NULL, NULL, NULL);
           hv_optim_zero_grad(opt);
           hv_backward(loss);
           if (hv_check_finite(loss, hv_mae_params(mae), NULL)) break;   // keep the last good state
           hv_clip_grad_norm(hv_mae_params(mae), 1.0f);                    // optional
           hv_optim_step(opt);
           hv_step_end(ctx);
           if (it % 10000 == 0) hv_train_state_save("run/state.hvts", ctx, hv_mae_params(mae), opt, &info);
       }

   OPTIMIZERS follow PyTorch's update formulas (single-tensor code paths, float32 state):
       AdamW  w *= 1 - lr wd; m += (1-b1)(g - m); v = b2 v + (1-b2) g^2;
              w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)      (torch.optim.AdamW)
       Adam   the same without the decoupled decay, g += wd w first           (torch.optim.Adam)
       SGD    g += wd w; buf = g at the first step, else momentum buf + (1-dampening) g;
              g = nesterov ? g + momentum buf : buf (momentum > 0); w -= lr g (torch.optim.SGD)
       LARS   for ndim > 1: g += wd w, g *= trust ||w|| / ||g|| (1 when either norm is 0);
              mu = momentum mu + g; w -= lr mu                      (official MAE util/lars.py)
   with lr = the optimizer's lr times the parameter's lr_scale and wd the parameter's weight
   decay. The step count t is per parameter, as in PyTorch. A parameter is updated only when it
   was trainable when the optimizer was made, is still trainable, and has a gradient (hv_grad not
   NULL); tensors that are not trainable (BatchNorm running statistics, fixed sin-cos tables) are
   never touched. The state (moments, momentum buffers) is allocated once by hv_optim_new; a step
   allocates nothing. Elementwise updates run in parallel; norms are summed in double in a fixed
   order, so results are bit-identical for any thread count. The optimizer keeps pointers to the
   parameters and their names: free it before the model, and before hv_shutdown. */

typedef enum hv_optim_type {
    HV_OPTIM_ADAMW = 0, /* decoupled weight decay, bias-corrected moments (torch.optim.AdamW) */
    HV_OPTIM_ADAM = 1,  /* weight decay as L2 added to the gradient (torch.optim.Adam) */
    HV_OPTIM_SGD = 2,   /* momentum, dampening, Nesterov, L2 weight decay (torch.optim.SGD) */
    HV_OPTIM_LARS = 3   /* SGD momentum with a layer-wise trust ratio (official MAE util/lars.py) */
} hv_optim_type;

/* which parameters get weight decay (the others get 0), upstream's parameter groups */
typedef enum hv_decay_rule {
    HV_DECAY_ALL = 0, /* every parameter: PyTorch's single group; the humanlike-vits finetuning */
    /* none on ndim <= 1, names ending in ".bias", "pos_embed", "cls_token", "mask_token" or
       "dist_token": FMAE util/lr_decay.py param_groups_lrd (finetuning), timm with no_weight_decay() */
    HV_DECAY_SKIP_1D_AND_TOKENS = 1,
    /* none on ndim <= 1 and ".bias" only: timm add_weight_decay with an empty skip list, as FMAE
       main_pretrain.py calls it (cls_token and mask_token are decayed there) */
    HV_DECAY_SKIP_1D = 2
} hv_decay_rule;

/* zero fields take the default in brackets */
typedef struct hv_optim_desc {
    hv_optim_type type;      /* [AdamW] */
    float lr;                /* [1e-3]; hv_optim_set_lr changes it (schedules) */
    float beta1, beta2;      /* Adam(W) [0.9, 0.999] */
    float eps;               /* Adam(W) [1e-8] */
    float weight_decay;      /* [0]. AdamW: decoupled; Adam, SGD: L2; LARS: only on ndim > 1 */
    float momentum;          /* SGD [0 = none], LARS [0.9] */
    float dampening;         /* SGD [0] */
    int nesterov;            /* SGD: Nesterov momentum (needs momentum > 0, dampening 0) */
    float trust_coefficient; /* LARS [0.001] */
    hv_decay_rule decay_rule; /* [HV_DECAY_ALL] */
    /* layer-wise lr decay for ViT names (FMAE param_groups_lrd): lr_scale =
       layer_decay^(num_layers + 1 - hv_vit_layer_id(name, num_layers)). 0 or 1: off */
    float layer_decay;
    int num_layers;          /* the ViT depth (len(model.blocks)); 0: 1 + the largest i of "blocks.i." */
} hv_optim_desc;

typedef struct hv_optim hv_optim;
HVDEF hv_optim *hv_optim_new(hv_ctx *ctx, const hv_param_list *params, const hv_optim_desc *desc);
HVDEF void hv_optim_free(hv_optim *opt);
HVDEF int hv_optim_step(hv_optim *opt);         /* 0, or -1 (NULL opt) */
HVDEF void hv_optim_zero_grad(hv_optim *opt);   /* zeros the gradients of the optimized parameters */
HVDEF void hv_optim_set_lr(hv_optim *opt, float lr);
HVDEF float hv_optim_get_lr(const hv_optim *opt);
HVDEF hv_optim_desc hv_optim_config(const hv_optim *opt); /* the resolved settings */
/* the parameter at index i of the list: its lr_scale and weight decay. 0, or -1 when the optimizer
   does not update it (not trainable at creation, or i out of range) */
HVDEF int hv_optim_param_group(const hv_optim *opt, int i, float *lr_scale, float *weight_decay);
HVDEF int hv_optim_set_param_group(hv_optim *opt, int i, float lr_scale, float weight_decay);
/* the state of parameter i: AdamW/Adam slot 0 exp_avg, slot 1 exp_avg_sq; SGD (momentum > 0) and
   LARS slot 0 the momentum buffer. NULL when there is none. */
HVDEF hv_tensor *hv_optim_state(hv_optim *opt, int i, int slot);
HVDEF int64_t hv_optim_param_steps(const hv_optim *opt, int i); /* updates done to parameter i */
/* FMAE get_layer_id_for_vit: 0 for cls_token, pos_embed and patch_embed.*, i + 1 for blocks.i.*,
   num_layers + 1 for everything else (norm, fc_norm, head) */
HVDEF int hv_vit_layer_id(const char *name, int num_layers);

/* LR SCHEDULES: a pure function of t, in any unit (epochs with a fraction for per-iteration
   updates, as FMAE calls adjust_learning_rate(data_iter_step / len(loader) + epoch), or iterations).
   Every type warms up linearly, lr * t / warmup, for t < warmup (warmup 0: none). Then
     HV_SCHED_CONSTANT  lr                                (humanlike-vits: no schedule at all)
     HV_SCHED_COSINE    min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi (t - warmup) / (total - warmup)))
                        (FMAE util/lr_sched.py), min_lr from t >= total on
     HV_SCHED_STEP      lr * gamma^(number of milestones <= t) (torch MultiStepLR stepped per epoch:
                        "are we there yet" finetuning: milestones 25, 45, gamma 0.2) */
typedef enum hv_schedule_type { HV_SCHED_CONSTANT = 0, HV_SCHED_COSINE = 1, HV_SCHED_STEP = 2 } hv_schedule_type;
#define HV_MAX_MILESTONES 16
typedef struct hv_schedule_desc {
    hv_schedule_type type;
    float lr;       /* the base (peak) learning rate */
    float min_lr;   /* cosine: the floor [0] */
    double warmup;  /* warm-up length [0] */
    double total;   /* cosine: where it reaches min_lr */
    float gamma;    /* step: the factor [0.1] */
    int num_milestones;
    double milestones[HV_MAX_MILESTONES];
} hv_schedule_desc;
HVDEF float hv_lr_at(const hv_schedule_desc *s, double t); /* NAN (and an error) on a bad desc */

/* torch.nn.utils.clip_grad_norm_(norm_type=2): the 2-norm of all the gradients together (of the
   trainable parameters that have one), summed in double in a fixed order; when it exceeds
   max_norm every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm (before
   clipping). max_norm <= 0: only measures. A NaN or Inf norm is returned as is and nothing is
   scaled. -1 (and an error) on bad arguments. */
HVDEF double hv_clip_grad_norm(const hv_param_list *params, float max_norm);
/* 0 when the loss (one element, or NULL: not checked) and every gradient of params (NULL: none
   checked) are finite; else -1, hv_last_error() names the loss or the parameter, the count of bad
   values and the first one, and *bad (may be NULL) is -1 for the loss or the parameter's index.
   A trainer stops there and keeps its last good state file. */
HVDEF int hv_check_finite(const hv_tensor *loss, const hv_param_list *params, int *bad);

/* TRAIN STATE: everything a run needs to continue bit for bit: every tensor of params (trainable
   or not: BatchNorm statistics too), the optimizer's state and per-parameter step counts, the
   context's RNG (MAE masking draws from it), and the caller's step, data position and metadata.
   The optimizer's hyper-parameters are not restored: they come from the hv_optim_desc you create
   it with, so a resumed run may change them (humanlike-vits lowered S/14's lr for its last 21k
   iterations).
   save writes <path>.tmp in the same folder, flushes it to the disk (fsync on POSIX), renames it
   over path and fsyncs the folder, so a crash or a failed write leaves the previous file whole;
   on any error the temp file is removed. On Windows the target is removed before the rename
   (not atomic there). Two writers of one path at once are not supported (they share the temp
   name). opt may be NULL (no optimizer state), info may be NULL (zeros).
   load reads the file twice: a first pass checks all of it (format, version, checksum, every
   name, dtype and shape against params, matched by name in any order, the optimizer's type and
   which parameters it updates) and changes nothing unless all of it is valid; the second copies.
   No second copy of the state is held in memory. A file with optimizer state loads with opt NULL
   (the tensors, RNG and info only); a file without it into an optimizer is an error.
   Both return 0, or -1 with hv_last_error() naming the file and what is wrong.

   FILE FORMAT (.hvts, version 1). Every integer and element little-endian.
       magic      8 bytes   "HVTRAIN\0"
       version    u32       1
       flags      u32       bit 0: optimizer state present
       step       i64       hv_train_info.step
       rng        4 x u64   the context's xoshiro256** state
       user       8 x i64   hv_train_info.user
       meta_len   u32       < HV_TRAIN_META_MAX, then meta_len bytes of text (no NUL)
       optim      u32       hv_optim_type, 0xFFFFFFFF without optimizer state
       count      u32       tensor records that follow, one per entry of params
       count times:
           name_len u32 1..255, name bytes (unique)
           dtype    u32 hv_dtype (0 f32, 1 i32)
           ndim     u32 0..HV_MAX_DIMS, dims ndim x i64
           steps    i64 the parameter's optimizer step count, -1 when not optimized
           nslots   u32 optimizer state tensors of this parameter (0..2)
           data     numel x 4 bytes, then nslots x numel x 4 bytes of state (f32)
       checksum   u64       hv64 of every byte before it: four FNV-1a-64 lanes over the 32-byte
                            blocks (lane j takes the little-endian u64 at offset 8j), the tail
                            bytes FNV-1a into lane 0, then h = lane0; h = (h ^ lane j) * P for
                            j = 1..3; h = (h ^ total length) * P. Lanes start at the FNV offset
                            basis xor j, P = 0x100000001b3. */
#define HV_TRAIN_USER_INTS 8
#define HV_TRAIN_META_MAX 4096
typedef struct hv_train_info {
    int64_t step;                     /* iterations done: resume from here */
    int64_t user[HV_TRAIN_USER_INTS]; /* data position: epoch, sample in epoch, shard, seed ... */
    char meta[HV_TRAIN_META_MAX];     /* NUL-terminated text: the run's arguments, a note */
} hv_train_info;
HVDEF int hv_train_state_save(const char *path, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt,
                              const hv_train_info *info);
HVDEF int hv_train_state_load(const char *path, hv_ctx *ctx, const hv_param_list *params, hv_optim *opt,
                              hv_train_info *info);
/* HV-SECTION api-train END */

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

/* ---- loading checkpoints into models -------------------------------------------------------- */

/* what a load matched, as PyTorch's load_state_dict(strict=False) reports it */
typedef struct hv_load_result {
    int loaded;                     /* parameters filled from the checkpoint */
    int missing_count;              /* parameters the checkpoint lacks (left as they were) */
    int unexpected_count;           /* checkpoint entries no parameter asked for */
    char **missing, **unexpected;   /* their names; free with hv_load_result_free */
} hv_load_result;
HVDEF void hv_load_result_free(hv_load_result *res);
/* copies every entry of sd whose name a parameter has; a shape mismatch is an error naming the
   key and both shapes (nothing is copied then). res may be NULL. 0 or -1 */
HVDEF int hv_params_load(const hv_param_list *params, const hv_state_dict *sd, hv_load_result *res);
/* the same from a .pth or .safetensors file (entry as hv_torch_load; NULL picks it) */
HVDEF int hv_params_load_file(const hv_param_list *params, const char *path, const char *entry, hv_load_result *res);
/* the same, with map(user, name, t, dst) called for every checkpoint tensor t that has a
   parameter dst of its name, before the shape check: it returns the tensor to load in t's place,
   t itself or a new one of dst's shape (freed by the loader after the copy), e.g. a position
   table interpolated to the model's grid; NULL fails the load (with the error of the hv_ call that
   failed in map, if one did). Still one pass over the file, one checkpoint tensor in memory at a
   time. */
typedef hv_tensor *(*hv_load_map_fn)(void *user, const char *name, hv_tensor *t, const hv_tensor *dst);
HVDEF int hv_params_load_file_map(const hv_param_list *params, const char *path, const char *entry, hv_load_result *res,
                                  hv_load_map_fn map, void *user);
/* a state dict that borrows the parameters (for hv_safetensors_save); free it with hv_state_dict_free */
HVDEF hv_state_dict *hv_params_state_dict(hv_ctx *ctx, const hv_param_list *params);

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
static HV__TLS unsigned hv__err_count; /* errors set so far: tells whether a callback set one */

HVDEF const char *hv_last_error(void) { return hv__err; }
HVDEF void hv_clear_error(void) { hv__err[0] = 0; }

/* sets the error (replacing any earlier one) and returns NULL for the caller */
static void *hv__fail(const char *op, const char *fmt, ...) {
    va_list ap;
    size_t n;
    hv__err_count++;
    snprintf(hv__err, sizeof hv__err, "%s: ", op);
    n = strlen(hv__err);
    va_start(ap, fmt);
    vsnprintf(hv__err + n, sizeof hv__err - n, fmt, ap);
    va_end(ap);
    return NULL;
}
/* a NULL input is most often the result of an op that failed: its error, which names the cause,
   is kept; only when none is pending does `op` report the NULL itself */
static void *hv__fail_null_input(const char *op, const char *what) {
    if (!hv__err[0]) hv__fail(op, "%s is NULL", what);
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
   step needed more than one chunk, the reset replaces them by one chunk of the largest total the
   step held at once, so from the next step on everything fits in one chunk and no malloc
   happens. */
typedef struct hv__chunk {
    struct hv__chunk *next;
    size_t size, used;
} hv__chunk;
#define HV__ALIGN 64
#define HV__CHUNK_HDR ((sizeof(hv__chunk) + HV__ALIGN - 1) / HV__ALIGN * HV__ALIGN)

typedef struct hv__arena {
    hv__chunk *head; /* current chunk first */
    size_t first_size;
    size_t held, peak; /* bytes of the chunks held now, and the most held at once this step */
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
        a->held += want;
        if (a->held > a->peak) a->peak = a->held;
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
    size_t total = a->peak > a->held ? a->peak : a->held;
    if (!c) return;
    if (!c->next && c->size >= total) {
        c->used = 0;
        return;
    }
    for (; c; c = next) {
        next = c->next;
        hv__free(c);
    }
    a->head = hv__chunk_new(total);
    a->held = a->peak = a->head ? total : 0;
}
/* Scratch inside a kernel: take buffers after a mark, give them back with the rewind before
   returning (the arena is not touched in between by anyone else: kernels allocate before their
   parallel loops). A chunk added for the scratch alone is freed, and hv__arena_reset still
   counts its size (the peak), so the next step's single chunk has room for the scratch too. */
typedef struct hv__arena_mark {
    hv__chunk *head;
    size_t used;
} hv__arena_mark;
static hv__arena_mark hv__arena_save(const hv__arena *a) {
    hv__arena_mark m;
    m.head = a->head;
    m.used = a->head ? a->head->used : 0;
    return m;
}
static void hv__arena_rewind(hv__arena *a, hv__arena_mark m) {
    /* chunks added after the mark hold nothing live: free them (the reset remembers the peak),
       so that their pages do not stay resident next to the chunk the mark is in */
    while (a->head != m.head) {
        hv__chunk *c = a->head;
        a->head = c->next;
        a->held -= c->size;
        hv__free(c);
    }
    if (m.head) m.head->used = m.used;
}
static void hv__arena_free(hv__arena *a) {
    hv__chunk *c, *next;
    for (c = a->head; c; c = next) {
        next = c->next;
        hv__free(c);
    }
    a->head = NULL;
    a->held = a->peak = 0;
}

/* ==== 4. TENSOR CORE =========================================================================== */

typedef struct hv__backend hv__backend;
typedef void (*hv__bwd_fn)(hv_tensor *out);

#define HV__MAX_IN 5

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
    struct hv__store *store;     /* the arena block holding data when it can be released before
                                    hv_step_end (step tensors and their views), else NULL */
    hv_tensor *grad;
    unsigned persistent : 1, trainable : 1, requires_grad : 1;
    unsigned internal : 1;       /* made inside a model's forward and not handed to the caller:
                                    its values may be released once its backward has run */
    unsigned holds_store : 1;    /* counted in store->refs: its allocator, or a view an op returned */
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

/* one Adam or AdamW update of a parameter, PyTorch's float expressions (hv__adam_ref). The caller
   computes the coefficients once, in double: decay = 1 - lr wd (AdamW; Adam 1), l2 = wd (Adam's
   coupled decay; AdamW 0), b1c = 1 - beta1, b2c = 1 - beta2, bc2_sqrt = sqrt(1 - beta2^step),
   neg_step = -lr / (1 - beta1^step) */
typedef struct hv__adamw_args {
    float decay, l2, b1c, beta2, b2c, bc2_sqrt, eps, neg_step;
} hv__adamw_args;
/* one SGD or LARS update: u = (g + wd p) scale; with a momentum buffer b = first ? u : momentum b +
   damp u (torch: the buffer starts as a copy), then u = nesterov ? u + momentum b : b; p += neg_lr u.
   SGD has scale 1, LARS the trust ratio and damp 1 (its buffer starts at zero: b = u exactly). */
typedef struct hv__sgd_args {
    float neg_lr, wd, momentum, damp, scale;
    int first, nesterov;
} hv__sgd_args;
enum { HV__SUMSQ, HV__NONFINITE };

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
    /* optimizer updates: p, m, v, buf and g contiguous f32 of one shape; p and the state updated
       in place (buf NULL: SGD without momentum) */
    void (*adamw)(hv_ctx *ctx, hv_tensor *p, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a);
    void (*sgd)(hv_ctx *ctx, hv_tensor *p, hv_tensor *buf, const hv_tensor *g, const hv__sgd_args *a);
    /* for n contiguous f32 tensors, to the host: out[i] = the sum of (x[i] + a[i] y[i])^2
       (HV__SUMSQ; y NULL or y[i] NULL: of x[i]^2), or how many of x[i] are NaN or Inf
       (HV__NONFINITE). Gradient norms, LARS trust ratios, NaN checks: a device backend submits and
       waits once for all n. 0, or -1 (error set) */
    int (*sumsq)(hv_ctx *ctx, int mode, int n, const hv_tensor *const *x, const hv_tensor *const *y, const float *a, double *out);
    /* layout: dst = src (or dst += src) for two same-shape tensors of any strides */
    void (*copy)(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate);
    void (*fill)(hv_ctx *ctx, hv_tensor *dst, float value);
    /* t (contiguous i32) += delta: counters (BatchNorm's num_batches_tracked) that stay where they
       live, so a device backend need not download and upload them */
    void (*add_i32)(hv_ctx *ctx, hv_tensor *t, int32_t delta);
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
    /* dst (outer, k, inner) (+)= src (outer, n, inner) at rows idx (outer, k), i32 in [0, n).
       Indices (here, scatter_add's, the labels of cross_entropy) in host memory are checked by the
       op before the call; in device memory the kernel checks them, skips a bad one and reports it
       at the next sync (hv__check_index_range) */
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
    /* rows whose label is among the top k: fewer than k classes have a strictly larger logit;
       -1 (error set) when a device tensor's label is out of range */
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
    struct hv__store *free_stores; /* arena blocks released during this step, for reuse */
    int internal_depth;  /* > 0 inside a model forward: new tensors are marked internal */
    int arena_rewinding; /* inside a window that ends in hv__arena_rewind: releases would put
                            blocks it discards on the free list, so they are dropped */
    float *gemm_ws;      /* SIMD GEMM packing buffers: grown once, reused (cpu-simd section) */
    size_t gemm_ws_floats;
    int gemm_bf16;       /* the bf16 GEMM runs (hv_set_gemm_precision; cpu-bf16 section) */
};

static const hv__backend *hv__cpu_backend(void);
static int hv__gemm_precision_want(hv_gemm_precision *p); /* cpu-bf16 section; 0 or -1 */
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
    if (hv__gemm_precision_want(&d.gemm_precision)) return NULL;
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
    /* the device backend: kernels on the GPU, host work (RNG, MAE masking) stays on this CPU */
    if (d.backend == HV_BACKEND_VULKAN && hv__vk_init(ctx, &d)) {
        hv__free(ctx);
        return NULL; /* hv__vk_init said why */
    }
#endif
    hv_set_gemm_precision(ctx, d.gemm_precision);
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
    hv__free(ctx->gemm_ws);
    hv__free(ctx);
}

HVDEF void hv_step_end(hv_ctx *ctx) {
    hv_tensor *t;
    /* persistent tensors must not keep pointers into the arena that is about to be reused */
    for (t = ctx->persist; t; t = t->plist_prev)
        if (t->grad && !t->grad->persistent) t->grad = NULL;
    ctx->tape = NULL;
    ctx->kernel_failed = 0;
    ctx->free_stores = NULL; /* they live in the arena */
    ctx->internal_depth = 0;
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
    t->internal = !persistent && ctx->internal_depth > 0;
    if (persistent) {
        t->plist_prev = ctx->persist;
        if (ctx->persist) ctx->persist->plist_next = t;
        ctx->persist = t;
    }
    return t;
}
/* ---- releasable step storage ----------------------------------------------------------------
   A training step's backward gives memory back before hv_step_end: once a tensor's backward has
   run, its gradient is dead, and so are its values when it is internal to a model's forward
   (nobody outside holds it; its consumers' backwards ran earlier in the walk). Released blocks go
   on a free list that hv__alloc searches first, so the gradients of the backward reuse the
   activations' memory and a step peaks at about its activations, not activations plus gradients.
   The blocks are host arena memory, or a device backend's step pool (its command stream orders a
   reuse after the earlier reads: hv__vk_hazard). A block is counted: the tensor that allocated it
   and every view an op returned hold one reference. */
typedef struct hv__store {
    void *base, *buf; /* the data; buf: its device buffer, as in hv_tensor */
    size_t bytes;
    int refs;
    struct hv__store *next_free;
} hv__store;

/* `bytes` of step storage: a released block when one fits without wasting more than a quarter
   (*reused set: it holds old values), else fresh arena memory, or on a device backend a block of
   its step pool (zeroed there; *buf its buffer). NULL with the error set. */
static void *hv__store_take(hv_ctx *ctx, size_t bytes, hv__store **out, void **buf, int *reused) {
    hv__store **pp, **best = NULL, *s;
    for (pp = &ctx->free_stores; *pp; pp = &(*pp)->next_free)
        if ((*pp)->bytes >= bytes && (*pp)->bytes - bytes <= bytes / 4 && (!best || (*pp)->bytes < (*best)->bytes)) best = pp;
    *reused = best != NULL;
    if (best) {
        s = *best;
        *best = s->next_free;
    } else {
        if (!(s = (hv__store *)hv__arena_alloc(&ctx->arena, sizeof *s))) return hv__fail("hv_tensor", "out of memory for a tensor header");
        s->buf = NULL;
        if (ctx->be->mem_alloc) {
            if (!(s->base = ctx->be->mem_alloc(ctx, bytes, 0, &s->buf))) return NULL; /* the backend named the failure */
        } else if (!(s->base = hv__arena_alloc(&ctx->arena, bytes))) {
            return hv__fail("hv_tensor", "out of memory for %zu bytes", bytes);
        }
        s->bytes = bytes;
    }
    s->refs = 1;
    s->next_free = NULL;
    *out = s;
    *buf = s->buf;
    return s->base;
}
static void hv__store_release(hv_ctx *ctx, hv__store *s) {
    if (s && --s->refs == 0 && !ctx->arena_rewinding) {
        s->next_free = ctx->free_stores;
        ctx->free_stores = s;
    }
}
/* gives back the storage of a temporary that an op or a backward made and no longer reads */
static void hv__release_temp(hv_tensor *t) {
    if (t && t->holds_store) {
        hv__store_release(t->ctx, t->store);
        t->holds_store = 0;
        t->store = NULL;
        t->data = NULL;
    }
}
/* called by hv_backward right after t's backward (see above); persistent tensors keep theirs */
static void hv__release_after_backward(hv_tensor *t) {
    if (t->persistent) return;
    if (t->grad && !t->grad->persistent) {
        hv__release_temp(t->grad);
        t->grad = NULL;
    }
    if (t->internal) hv__release_temp(t); /* data NULL: a stray later read faults, not reads reused memory */
}

/* a contiguous tensor, persistent or in the arena; its storage zeroed unless `uninit` (an op
   output that its kernel overwrites whole: zeroing it would cost a pass over memory for nothing;
   device backends zero always) */
static hv_tensor *hv__alloc_ex(hv_ctx *ctx, hv_dtype dt, int ndim, const int64_t *shape, int persistent, int uninit) {
    hv_tensor *t = hv__header(ctx, dt, ndim, shape, persistent);
    size_t bytes;
    int reused;
    if (!t) return NULL;
    bytes = (size_t)hv__numel_shape(ndim, shape) * hv__dtype_size(dt);
    if (!persistent) {
        if (!(t->data = hv__store_take(ctx, bytes, &t->store, &t->buf, &reused))) return NULL;
        t->holds_store = 1;
        if (!uninit && (reused || !t->buf)) {
            if (t->buf) ctx->be->fill(ctx, t, 0.0f); /* device storage: the header stays on the host */
            else memset(t->data, 0, bytes);
        }
        return t;
    }
    if (ctx->be->mem_alloc) { /* device storage (zeroed by the backend) */
        t->data = t->alloc = ctx->be->mem_alloc(ctx, bytes, 1, &t->buf);
    } else if ((t->data = t->alloc = hv__malloc(bytes)) != NULL) {
        if (!uninit) memset(t->data, 0, bytes);
    } else {
        hv__fail("hv_tensor", "out of memory for %zu bytes", bytes);
    }
    if (!t->data) {
        hv_tensor_free(t);
        return NULL; /* the error names the failure */
    }
    return t;
}
static hv_tensor *hv__alloc(hv_ctx *ctx, hv_dtype dt, int ndim, const int64_t *shape, int persistent) {
    return hv__alloc_ex(ctx, dt, ndim, shape, persistent, 0);
}
/* the usual case inside ops: an arena f32 tensor shaped like a shape array */
static hv_tensor *hv__new(hv_ctx *ctx, int ndim, const int64_t *shape) { return hv__alloc(ctx, HV_F32, ndim, shape, 0); }
static hv_tensor *hv__new_like(const hv_tensor *t) { return hv__new(t->ctx, t->ndim, t->shape); }
/* an arena f32 op output that the op's kernel writes in full (not zeroed) */
static hv_tensor *hv__new_out(hv_ctx *ctx, int ndim, const int64_t *shape) { return hv__alloc_ex(ctx, HV_F32, ndim, shape, 0, 1); }

/* a view header sharing x's storage (arena; the storage must outlive it) */
static hv_tensor *hv__view(hv_tensor *x, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    hv_tensor *v = hv__header(x->ctx, x->dtype, ndim, shape, 0);
    int i;
    if (!v) return NULL;
    for (i = 0; i < ndim; i++) v->stride[i] = stride[i];
    v->data = (char *)x->data + offset * (int64_t)hv__dtype_size(x->dtype);
    v->buf = x->buf;
    v->store = x->store; /* a temporary view inside an op: no reference (see hv__view_kept) */
    return v;
}

/* a view that an op returns (reshape, permute, slice, select, detach) may outlive its base's
   backward, so it holds a reference to the storage */
static hv_tensor *hv__view_kept(hv_tensor *v) {
    if (v && v->store) {
        v->store->refs++;
        v->holds_store = 1;
    }
    return v;
}

/* Host access to the elements of a contiguous tensor, for the few places where the library
   itself computes on the host (initialisers, MAE masking, top-k accuracy): on the CPU backend the
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
    /* a parameter's persistent gradient is not on the list (hv__grad_buf takes it off): unlinking
       it would cut the list at its head and leak every other persistent tensor */
    if (t->plist_next || t->plist_prev || ctx->persist == t) {
        if (t->plist_next) t->plist_next->plist_prev = t->plist_prev;
        else ctx->persist = t->plist_prev;
        if (t->plist_prev) t->plist_prev->plist_next = t->plist_next;
    }
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
    if (!t) return hv__fail_null_input("hv_item", "tensor"), NAN;
    if (hv_numel(t) != 1 || t->dtype != HV_F32) {
        hv__fail("hv_item", "%s is not a one-element f32 tensor", hv__desc("tensor", t));
        return NAN;
    }
    if (hv_tensor_copy_to(t, &v, sizeof v)) return NAN; /* e.g. a device kernel's error, found by this sync */
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
    if (!loss) return hv__fail_null_input("hv_backward", "loss"), -1;
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
    for (t = ctx->tape; t; t = t->tape_prev) {
        if (t->grad && t->backward) t->backward(t);
        hv__release_after_backward(t);
    }
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
    v = hv__view_kept(hv__view(x, x->ndim, x->shape, x->stride, 0));
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
    y = hv__alloc_ex(x->ctx, x->dtype, x->ndim, x->shape, 0, 1);
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
    v = hv__view_kept(hv__view(x, s.ndim, s.d, s.d, 0));
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
    v = hv__view_kept(hv__view(x, x->ndim, shape, stride, 0));
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
    v = hv__view_kept(hv__slice_view(x, a, start, count, step));
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
    v = hv__view_kept(hv__select_view(x, a, index));
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
    out = hv__new_out(a->ctx, ndim, shape);
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
    out = hv__new_out(x->ctx, x->ndim, x->shape);
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
    int d, shared = 0, inner;
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
    /* Independent C matrices: the innermost batch axes that one stride per operand walks become
       one batched call (attention: B x H matrices), which the backend splits across its threads
       by whole matrix in one parallel region, instead of one call (and region) per small matrix.
       A C shared by several products (a broadcast operand's gradient) takes them one at a time,
       in order, accumulating, so the result does not depend on threads. */
    inner = nb;
    if (!shared && nb > 0) {
        for (inner = nb - 1; inner > 0; inner--)
            if (sa[inner - 1] != sa[inner] * bshape[inner] || sb[inner - 1] != sb[inner] * bshape[inner] ||
                sc[inner - 1] != sc[inner] * bshape[inner])
                break;
        g.batch = hv__numel_shape(nb - inner, bshape + inner);
        g.batch_stride_a = sa[nb - 1];
        g.batch_stride_b = sb[nb - 1];
        g.batch_stride_c = sc[nb - 1];
    }
    for (i = 0; i < nbatch / (g.batch > 0 ? g.batch : 1); i++) {
        int64_t rem = i, oa = 0, ob = 0, oc = 0;
        for (d = inner - 1; d >= 0; d--) {
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
    out = hv__new_out(a->ctx, nb + 2, shape);
    if (!out) return NULL;
    if (b->ndim == 2 && !trans_a) hv__gemm_batched(a->ctx, 0, trans_b, hv__fold_rows(a), b, hv__fold_rows(out), 0, NULL, 0.0f);
    else hv__gemm_batched(a->ctx, trans_a, trans_b, a, b, out, nb, shape, 0.0f);
    out->ip[0] = trans_a;
    out->ip[1] = trans_b;
    in[0] = a;
    in[1] = b;
    return hv__record(out, "matmul", hv__matmul_bwd, 2, in);
}
/* ---- fused linear layers ------------------------------------------------------------------- */

/* x (..., in) contiguous, w (out, in), b (out) or NULL: y = x W^T + b, the bias written first and
   the GEMM accumulating onto it. No tape. */
static hv_tensor *hv__linear_raw(hv_tensor *x, hv_tensor *w, hv_tensor *b) {
    int64_t shape[HV_MAX_DIMS];
    hv_tensor *out, *bias;
    int i;
    for (i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = w->shape[0];
    out = hv__new_out(x->ctx, x->ndim, shape);
    if (!out) return NULL;
    if (b) {
        if (!(bias = hv__expand(b, out->ndim, out->shape))) return NULL;
        x->ctx->be->copy(x->ctx, out, bias, 0);
    }
    hv__gemm_batched(x->ctx, 0, 1, hv__fold_rows(x), w, hv__fold_rows(out), 0, NULL, b ? 1.0f : 0.0f);
    return out;
}
/* the gradients of y = x W^T + b given gy: gx += gy W (when gx is given), and W's and b's
   gradient buffers when they want one */
static void hv__linear_grads(hv_tensor *x, hv_tensor *w, hv_tensor *b, hv_tensor *gy, hv_tensor *gx) {
    hv_ctx *ctx = gy->ctx;
    if (gx) hv__gemm_batched(ctx, 0, 0, hv__fold_rows(gy), w, hv__fold_rows(gx), 0, NULL, 1.0f);
    if (hv__needs_grad(w)) {
        hv_tensor *gw = hv__grad_buf(w);
        if (gw) hv__gemm_batched(ctx, 1, 0, hv__fold_rows(gy), hv__fold_rows(x), gw, 0, NULL, 1.0f);
    }
    if (hv__needs_grad(b)) hv__grad_add(b, hv__sum_to(gy, b));
}
static int hv__linear_check(hv_tensor *x, hv_tensor *w, hv_tensor *b) {
    return hv__check_f32(x, "hv_linear", "x") || hv__check_f32(w, "hv_linear", "weight") || hv__same_ctx(x, w, "hv_linear") ||
           (b && (hv__check_f32(b, "hv_linear", "bias") || hv__same_ctx(x, b, "hv_linear")));
}

/* y = x W^T + b as one op, so a layer keeps one (rows, out) activation instead of the product
   and the sum (half the memory of a ViT block's linear layers in training) */
static void hv__linear_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0];
    hv__linear_grads(x, out->in[1], out->in[2], out->grad, hv__needs_grad(x) ? hv__grad_buf(x) : NULL);
}
static hv_tensor *hv__linear_bias(hv_tensor *x, hv_tensor *w, hv_tensor *b) {
    hv_tensor *out, *in[3];
    if (hv__linear_check(x, w, b)) return NULL;
    x = hv_contiguous(x);
    w = hv_contiguous(w);
    if (!x || !w || !(out = hv__linear_raw(x, w, b))) return NULL;
    in[0] = x;
    in[1] = w;
    in[2] = b;
    return hv__record(out, "linear", hv__linear_bwd, 3, in);
}

/* A transformer block's MLP, fc2(gelu(fc1(x))), as one op that keeps only fc1's output h: the
   backward recomputes gelu(h) for fc2's weight gradient instead of storing it. That saves 4 x D
   floats per token and block in training, for one extra GELU per block in the backward. */
static void hv__mlp_bwd(hv_tensor *out) {
    hv_tensor *x = out->in[0], *h = out->saved[0], *y, *gy, *gh;
    hv_ctx *ctx = out->ctx;
    y = hv__new_out(ctx, h->ndim, h->shape);
    gy = y ? hv__new_like(h) : NULL;
    if (!gy) return;
    ctx->be->unary(ctx, HV__GELU, 0.0f, y, h);
    hv__linear_grads(y, out->in[3], out->in[4], out->grad, gy); /* fc2 */
    hv__release_temp(y);
    gh = hv__new_like(h);
    if (!gh) return;
    ctx->be->unary_bwd(ctx, HV__GELU, 0.0f, gh, h, h, gy); /* GELU's derivative reads x only */
    hv__release_temp(gy);
    hv__linear_grads(x, out->in[1], out->in[2], gh, hv__needs_grad(x) ? hv__grad_buf(x) : NULL); /* fc1 */
    hv__release_temp(gh);
    if (out->internal) hv__release_temp(h);
}
static hv_tensor *hv__mlp(hv_tensor *x, hv_tensor *w1, hv_tensor *b1, hv_tensor *w2, hv_tensor *b2) {
    hv_tensor *h, *y, *out, *in[5];
    HV__CHECK_IN(x);
    if (hv__linear_check(x, w1, b1) || hv__linear_check(x, w2, b2)) return NULL;
    if (x->ndim < 1 || w1->ndim != 2 || w2->ndim != 2 || x->shape[x->ndim - 1] != w1->shape[1] || w2->shape[1] != w1->shape[0])
        return (hv_tensor *)hv__fail("hv_mlp", "%s does not fit fc1 %s and fc2 %s", hv__desc("x", x), hv__desc("weight", w1),
                                     hv__desc("weight", w2));
    x = hv_contiguous(x);
    if (!x || !(h = hv__linear_raw(x, w1, b1)) || !(y = hv__new_out(h->ctx, h->ndim, h->shape))) return NULL;
    x->ctx->be->unary(x->ctx, HV__GELU, 0.0f, y, h);
    out = hv__linear_raw(y, w2, b2);
    hv__release_temp(y);
    if (!out) return NULL;
    out->saved[0] = h;
    in[0] = x;
    in[1] = w1;
    in[2] = b1;
    in[3] = w2;
    in[4] = b2;
    return hv__record(out, "mlp", hv__mlp_bwd, 5, in);
}
HVDEF hv_tensor *hv_linear(hv_tensor *x, hv_tensor *w, hv_tensor *b) {
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
    if (!b) return hv_matmul(x, w, 0, 1);
    return hv__linear_bias(x, w, b);
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
/* every value of the contiguous i32 tensor idx, in host memory, lies in [0, n); the error names
   the position, the value and the tensor the values index (target) */
static int hv__check_index_values(const char *op, const char *role, const hv_tensor *idx, int64_t n, const char *target) {
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
static int hv__check_index_range(const char *op, const char *role, hv_tensor *idx, int64_t n, const char *target) {
    /* a device backend's kernels check their indices themselves and report a bad one at the next
       sync (VULKAN in the manual): no download and wait here */
    if (idx->buf) return 0;
    return hv__check_index_values(op, role, idx, n, target);
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
    if (!x || !(y = hv__new_out(x->ctx, x->ndim, x->shape))) return NULL;
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
    y = hv__new_out(x->ctx, x->ndim, x->shape);
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
    o = hv__new_out(q->ctx, 4, q->shape); /* (B, H, Nq, d) */
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
    if (correct < 0) return NAN; /* a device backend's labels were out of range (error set) */
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
    if (msum->buf) { /* a device: no wait for the count. The division runs there too; an all-zero
                        mask gives a NaN loss (hv_check_finite reports it) instead of this error */
        double per = hv_numel(mask) ? (double)hv_numel(x) / (double)hv_numel(mask) : 1.0;
        return hv_div(hv_sum(hv_mul(x, hv_detach(mask)), 0, NULL, 0), hv_scale(msum, (float)per));
    }
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

static void hv__cpu_add_i32(hv_ctx *ctx, hv_tensor *t, int32_t delta) {
    int64_t i, n = hv_numel(t);
    (void)ctx;
    for (i = 0; i < n; i++) ((int32_t *)t->data)[i] += delta;
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
/* HV-SECTION cpu-bf16 BEGIN */
#if defined(__AVX512BF16__) || (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define HV__BF16_CC 1 /* this compiler can build the bf16 kernel (with the AVX-512 one) */
#endif
#if defined(HV__SIMD_AVX512) && defined(HV__BF16_CC)
#define HV__BF16 1
#ifdef __AVX512BF16__
#define HV__BF16_TARGET
#else
#define HV__BF16_TARGET __attribute__((target("avx512bf16")))
#endif
#endif
/* HV-SECTION cpu-bf16 END */

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

/* HV-SECTION cpu-bf16 BEGIN */
/* ---- bf16 GEMM (optional, AVX512_BF16): operands rounded to bf16, products summed in f32 -------
   Opt-in per context (hv_init_desc.gemm_precision, $HUMANVIT_GEMM_PRECISION=bf16 or
   hv_set_gemm_precision). The loop nest, blocking and threading are the f32 kernel's: only the
   packed panels and the micro-kernel differ, so the fixed sum order, the edge tiles and the
   thread-count independence carry over. A packed panel holds the same k range as an f32 one in
   half its floats: per pair of k (k even, k + 1) one 32-bit word per row (A) or column (B) holding
   the two bf16 values, k in the low half: the layout in which vdpbf16ps multiplies word by word and
   adds both products into an f32 lane. An odd last k pairs with 0. Packing is the f32 packing
   (transposes, alpha, zero padding) followed by an in-place rounding pass (vcvtne2ps2bf16, round
   to nearest even), so the transposes exist once.
   The bf16 instructions are compiled with a target attribute, not the translation unit's flags, so
   kernels_cpu/hv_cpu_avx512.c still runs on AVX-512 CPUs without them; cpuid decides at hv_init.
   Accuracy: rounding an operand to bf16 (8 significant bits) costs a relative 2^-8 at most, a
   product 2^-7, so |C - C_exact| <= (1.01 * 2^-7 + (k + 4) * 2^-23) * |alpha| * sum_k |a_ik b_kj|.
   A single product can reach that; over hundreds of products the errors mostly cancel (measured
   2^-10 of the sum; tests/test_bf16.c checks both, README.md states the numbers). */
#ifdef HV__BF16

/* in place: np panels (ps floats apart) of kc rows of w floats (w <= 16 or a multiple of 16) ->
   (kc + 1) / 2 rows of w words, word j of row q = bf16(row 2q, column j) | bf16(row 2q + 1, j) << 16.
   Row q's words land before row 2q is read by a later step, and each step loads before it stores. */
static HV__BF16_TARGET void hv__bf16_panels(float *d, int64_t np, int64_t kc, int64_t w, int64_t ps) {
    static const uint16_t inter[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    __m512i idx = _mm512_loadu_si512((const void *)inter);
    int64_t i, q, j;
    for (i = 0; i < np; i++, d += ps)
        for (q = 0; 2 * q < kc; q++) {
            const float *r0 = d + 2 * q * w, *r1 = r0 + w;
            for (j = 0; j < w; j += 16) {
                __mmask16 m = (__mmask16)(w - j >= 16 ? 0xFFFF : (1u << (w - j)) - 1);
                __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + j), x1 = 2 * q + 1 < kc ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
                __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0)); /* x0 low, x1 high: interleave */
                _mm512_mask_storeu_epi32(d + q * w + j, m, v);
            }
        }
}

/* the f32 micro-kernel's contract on bf16 panels: one pair of k per step, 2 x MR dot products */
#define HV__KB_DOT(i)                                                                          \
    {                                                                                          \
        __m512bh av = (__m512bh)_mm512_set1_ps(a[i]); /* row i's pair, broadcast as a word */  \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, av, b0);                                           \
        c##i##1 = _mm512_dpbf16_ps(c##i##1, av, b1);                                           \
    }
static HV__BF16_TARGET void hv__bf16_ukr(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int load_c, float beta) {
    __m512 vbeta = _mm512_set1_ps(beta);
    int64_t p;
    HV__K_ROWS(HV__K_PF)
    HV__K_ROWS(HV__K_DECL)
    for (p = 0; p < kc; p += 2) {
        __m512bh b0 = (__m512bh)_mm512_loadu_ps(b), b1 = (__m512bh)_mm512_loadu_ps(b + 16);
        HV__K_ROWS(HV__KB_DOT)
        a += HV__MR;
        b += HV__NR;
    }
    HV__K_ROWS(HV__K_STORE)
}
#endif
/* HV-SECTION cpu-bf16 END */

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
    int bf16; /* the bf16 panels and micro-kernel (cpu-bf16 section) */
} hv__sgemm_mat;

/* one MR x NR tile: the micro-kernel of the matrix's precision */
static void hv__sgemm_tile(const hv__sgemm_mat *x, int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int load_c, float beta) {
#ifdef HV__BF16
    if (x->bf16) {
        hv__bf16_ukr(kc, a, b, c, ldc, load_c, beta);
        return;
    }
#endif
    (void)x;
    hv__sgemm_ukr(kc, a, b, c, ldc, load_c, beta);
}

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
#ifdef HV__BF16
        if (x->bf16) hv__bf16_panels(pa, (mc + HV__MR - 1) / HV__MR, kc, HV__MR, hv__pa_stride(kc));
#endif
        for (jr = j0; jr < j1; jr += HV__NR) { /* the B micro-panel stays in L1 over the ir loop */
            int64_t nr = j1 - jr < HV__NR ? j1 - jr : HV__NR;
            const float *bp = pb + jr / HV__NR * hv__pb_stride(kc);
            for (ir = 0; ir < mc; ir += HV__MR) {
                int64_t mr = mc - ir < HV__MR ? mc - ir : HV__MR, i;
                float *c = x->c + (ic + ir) * ldc + ph->jc + jr;
                if (mr == HV__MR && nr == HV__NR) {
                    hv__sgemm_tile(x, kc, pa + ir / HV__MR * hv__pa_stride(kc), bp, c, ldc, load_c, beta);
                    continue;
                }
                /* edge tile: the same kernel on a copy, so every element sees the same arithmetic */
                if (load_c) {
                    memset(tile, 0, sizeof(float) * HV__MR * HV__NR);
                    for (i = 0; i < mr; i++) memcpy(tile + i * HV__NR, c + i * ldc, sizeof(float) * (size_t)nr);
                }
                hv__sgemm_tile(x, kc, pa + ir / HV__MR * hv__pa_stride(kc), bp, tile, HV__NR, load_c, beta);
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
    if (p0 >= p1) return;
    hv__sgemm_pack_b(x->g, x->b, pc, kc, ph->jc + p0, p1 - p0, hv__sgemm_phase_block(ph, q) + p0 / HV__NR * hv__pb_stride(kc));
#ifdef HV__BF16
    if (x->bf16) hv__bf16_panels(hv__sgemm_phase_block(ph, q) + p0 / HV__NR * hv__pb_stride(kc), (p1 - p0 + HV__NR - 1) / HV__NR, kc, HV__NR, hv__pb_stride(kc));
#endif
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

static hv__sgemm_mat hv__sgemm_mat_at(const hv__gemm_args *g, int64_t bi, int bf16) {
    hv__sgemm_mat x;
    x.g = g;
    x.bf16 = bf16;
    x.a = g->a + bi * g->batch_stride_a;
    x.b = g->b + bi * g->batch_stride_b;
    x.c = g->c + bi * g->batch_stride_c;
    return x;
}

/* the entry points' body; bf16: the bf16 panels and micro-kernel */
static size_t hv__sgemm_drive(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats, int bf16) {
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
            hv__sgemm_mat x = hv__sgemm_mat_at(g, bi, bf16);
            hv__sgemm_matrix(&x, 0, 1, ws, ws + bfl);
        }
    } else if (by_matrix) {
        HV__OMP(omp parallel for schedule(dynamic, 1) num_threads(nthreads))
        for (bi = 0; bi < g->batch; bi++) {
            hv__sgemm_mat x = hv__sgemm_mat_at(g, bi, bf16);
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
                hv__sgemm_mat x = hv__sgemm_mat_at(g, b2, bf16);
                hv__sgemm_matrix(&x, 1, nth, ws, ws + bfl);
            }
        }
    }
    return need;
}
HV__SGEMM_LINKAGE size_t HV__SGEMM_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats) {
    return hv__sgemm_drive(g, nthreads, ws, ws_floats, 0);
}
/* HV-SECTION cpu-bf16 BEGIN */
#ifdef HV__BF16 /* the bf16 entry point: the f32 one's contract and workspace */
#ifdef HUMANVIT_KERNELS_AVX512
#define HV__BF16_ENTRY hv__sgemm_bf16_avx512
#ifdef __cplusplus
extern "C" size_t HV__BF16_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#else
size_t HV__BF16_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#endif
#else
#define HV__BF16_ENTRY hv__sgemm_bf16_native
#endif
HV__SGEMM_LINKAGE size_t HV__BF16_ENTRY(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats) {
    return hv__sgemm_drive(g, nthreads, ws, ws_floats, 1);
}
#endif
/* HV-SECTION cpu-bf16 END */
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

/* HV-SECTION cpu-bf16 BEGIN */
#if defined(HV__SGEMM_DISPATCH) && defined(HV__BF16_CC)
#define HV__BF16_LINKED 1 /* kernels_cpu/hv_cpu_avx512.c brings hv__sgemm_bf16_avx512 */
#ifdef __cplusplus
extern "C"
#endif
size_t hv__sgemm_bf16_avx512(const hv__gemm_args *g, int nthreads, float *ws, size_t ws_floats);
#endif
#if defined(HV__BF16_LINKED) || defined(HV__BF16)
#ifndef __AVX512BF16__
#include <cpuid.h>
#endif
/* AVX512_BF16 by cpuid (leaf 7, subleaf 1, EAX bit 5); the AVX-512 choice checked the rest */
static int hv__cpu_has_bf16(void) {
#ifdef __AVX512BF16__
    return 1;
#else
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1u);
#endif
}
#endif

static hv__sgemm_fn hv__sgemm_bf16_cur; /* NULL: no bf16 kernel for this CPU or build */
static void hv__bf16_choose(void) {
#if defined(HV__BF16_LINKED)
    if (hv__sgemm_cur == hv__sgemm_avx512 && hv__cpu_has_bf16()) hv__sgemm_bf16_cur = hv__sgemm_bf16_avx512;
#elif defined(HV__BF16)
    if (hv__cpu_has_bf16()) hv__sgemm_bf16_cur = HV__BF16_ENTRY;
#endif
}

/* hv_init's precision: the descriptor's, unless $HUMANVIT_GEMM_PRECISION says bf16 or f32 */
static int hv__gemm_precision_want(hv_gemm_precision *p) {
    const char *e = getenv("HUMANVIT_GEMM_PRECISION");
    if (*p != HV_GEMM_F32 && *p != HV_GEMM_BF16)
        return hv__fail("hv_init", "gemm_precision must be HV_GEMM_F32 or HV_GEMM_BF16, got %d", (int)*p), -1;
    if (!e || !*e) return 0;
    if (!strcmp(e, "bf16")) *p = HV_GEMM_BF16;
    else if (!strcmp(e, "f32")) *p = HV_GEMM_F32;
    else return hv__fail("hv_init", "HUMANVIT_GEMM_PRECISION is '%s'; expected bf16 or f32", e), -1;
    return 0;
}

HVDEF int hv_set_gemm_precision(hv_ctx *ctx, hv_gemm_precision precision) {
    if (!ctx) return hv__fail("hv_set_gemm_precision", "ctx is NULL"), -1;
    if (precision != HV_GEMM_F32 && precision != HV_GEMM_BF16)
        return hv__fail("hv_set_gemm_precision", "precision must be HV_GEMM_F32 or HV_GEMM_BF16, got %d", (int)precision), -1;
    ctx->gemm_bf16 = precision == HV_GEMM_BF16 && ctx->kind == HV_BACKEND_CPU && hv__sgemm_bf16_cur != NULL;
    return ctx->gemm_bf16 ? HV_GEMM_BF16 : HV_GEMM_F32;
}
HVDEF hv_gemm_precision hv_get_gemm_precision(const hv_ctx *ctx) { return ctx && ctx->gemm_bf16 ? HV_GEMM_BF16 : HV_GEMM_F32; }
/* HV-SECTION cpu-bf16 END */

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
static void hv__cpu_gemm_simd(hv_ctx *ctx, const hv__gemm_args *g) { hv__sgemm_run(ctx, ctx->gemm_bf16 ? hv__sgemm_bf16_cur : hv__sgemm_cur, g); }

/* the backend's gemm: the chosen kernel (called when the CPU table is filled, at hv_init) */
static void (*hv__cpu_gemm_pick(void))(hv_ctx *, const hv__gemm_args *) {
    hv__sgemm_choose();
    hv__bf16_choose();
    return hv__sgemm_cur ? hv__cpu_gemm_simd : hv__cpu_gemm;
}

HVDEF const char *hv_cpu_isa(hv_ctx *ctx) {
    (void)ctx;
    return hv__sgemm_cur_isa;
}
/* HV-SECTION cpu-simd END */

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

/* the max of output (oh, ow)'s window in the plane xp (H, W), and its index h * W + w there (the
   fast kernel's edge columns use it too) */
static float hv__max_window(const float *xp, int64_t H, int64_t W, const int64_t *g, int64_t oh, int64_t ow, int64_t *best) {
    int64_t h0 = oh * g[HV__PG_SH] - g[HV__PG_PH], w0 = ow * g[HV__PG_SW] - g[HV__PG_PW], hs = h0 < 0 ? 0 : h0, ws = w0 < 0 ? 0 : w0;
    int64_t he = h0 + g[HV__PG_KH] < H ? h0 + g[HV__PG_KH] : H, we = w0 + g[HV__PG_KW] < W ? w0 + g[HV__PG_KW] : W, ih, iw;
    float m = -INFINITY; /* padding is -inf: it never wins */
    *best = hs * W + ws;
    for (ih = hs; ih < he; ih++)
        for (iw = ws; iw < we; iw++) {
            float v = xp[ih * W + iw];
            if (v > m || v != v) { /* first maximum wins; NaN propagates, as in PyTorch */
                m = v;
                *best = ih * W + iw;
            }
        }
    return m;
}

static void hv__cpu_max_pool2d(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int32_t *pa = argmax ? (int32_t *)argmax->data : NULL;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * g[HV__PG_KH] * g[HV__PG_KW])
    for (o = 0; o < n; o++) {
        int64_t best;
        py[o] = hv__max_window(px + (o / (OW * OH)) * H * W, H, W, g, (o / OW) % OH, o % OW, &best);
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

/* the average of output (oh, ow)'s window in the plane xp (H, W) */
static float hv__avg_at(const float *xp, int64_t H, int64_t W, const int64_t *g, int64_t oh, int64_t ow) {
    int64_t hs, he, ws, we, ih, iw;
    float div = hv__avg_window(g, H, W, oh, ow, &hs, &he, &ws, &we), acc = 0;
    for (ih = hs; ih < he; ih++)
        for (iw = ws; iw < we; iw++) acc += xp[ih * W + iw];
    return acc / div;
}

static void hv__cpu_avg_pool2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t o, n = hv_numel(y);
    HV__PARALLEL_FOR(ctx, n * g[HV__PG_KH] * g[HV__PG_KW])
    for (o = 0; o < n; o++) py[o] = hv__avg_at(px + (o / (OW * OH)) * H * W, H, W, g, (o / OW) % OH, o % OW);
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

/* HV-SECTION cpu-fast BEGIN */
/* ==== 7. CPU BACKEND: fast kernels (SIMD, tiled, fused) ========================================
   The kernels the CPU backend table actually uses for the hot ops; the scalar kernels above stay
   as the reference they are tested against (tests/test_fast.c, fast vs reference on random and
   odd shapes, with the tolerance of each kernel written next to its test).

   SIMD by the compiler's own macros: AVX-512 (__AVX512F__), AVX2 + FMA, NEON (aarch64), and a
   scalar path (vectors of one float) that every build has. The kernels are written once against
   the small hv__v* vector layer below, so each ISA adds ~100 lines, not a copy of each kernel.

   Determinism is kept the same way as in the reference: a parallel loop hands out whole output
   rows (or whole heads, whole columns), and every sum runs in an order fixed by the shape alone
   (never by the thread count), so 1 and N threads give the same bits. The results differ from the
   reference kernels by rounding only (other summation orders, float instead of double partial
   sums, a polynomial exp).

   Scratch (attention tiles, im2col columns) comes from the context's arena, taken before the
   parallel loop (one slice per thread) and handed back when the kernel returns
   (hv__arena_mark/hv__arena_rewind), so a steady training loop still does no malloc. */

#if defined(__AVX512F__)
#define HV__FAST_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define HV__FAST_AVX2 1
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define HV__FAST_NEON 1
#include <arm_neon.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HV__INLINE static inline __attribute__((always_inline))
#else
#define HV__INLINE static inline
#endif
/* gcc -O2 does not unroll the small constant loops of the micro-kernels by itself (clang does) */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)
#define HV__UNROLL _Pragma("GCC unroll 8")
#else
#define HV__UNROLL
#endif

/* threads a HV__PARALLEL_FOR over `work` runs with, and the calling thread's number in it */
static int hv__fast_threads(hv_ctx *ctx, int64_t work) {
#ifdef _OPENMP
    return hv__nthreads(ctx, work);
#else
    (void)ctx;
    (void)work;
    return 1;
#endif
}
static int hv__fast_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
/* n floats of arena scratch, 64-byte aligned, valid until the kernel's hv__arena_rewind */
static float *hv__scratch(hv_ctx *ctx, int64_t n) { return (float *)hv__arena_alloc(&ctx->arena, sizeof(float) * (size_t)(n > 0 ? n : 1)); }

/* ---- the vector layer: hv__vf holds HV__VN floats ------------------------------------------- */
#if defined(HV__FAST_AVX512)
#define HV__VN 16
typedef __m512 hv__vf;
HV__INLINE hv__vf hv__vzero(void) { return _mm512_setzero_ps(); }
HV__INLINE hv__vf hv__vset(float x) { return _mm512_set1_ps(x); }
HV__INLINE hv__vf hv__vld(const float *p) { return _mm512_loadu_ps(p); }
HV__INLINE void hv__vst(float *p, hv__vf v) { _mm512_storeu_ps(p, v); }
/* the first n (0 <= n <= VN) lanes; the others read as 0 and are not written */
HV__INLINE hv__vf hv__vldn(const float *p, int64_t n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
HV__INLINE void hv__vstn(float *p, hv__vf v, int64_t n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v); }
/* the first n lanes from p, the others `fill` */
HV__INLINE hv__vf hv__vldnf(const float *p, int64_t n, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1u), p); }
HV__INLINE hv__vf hv__visnan(hv__vf v) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_ps(1.0f)); } /* 1 or 0 */
HV__INLINE hv__vf hv__vsqrt(hv__vf v) { return _mm512_maskz_sqrt_ps((__mmask16)0xffff, v); }
HV__INLINE hv__vf hv__vadd(hv__vf a, hv__vf b) { return _mm512_add_ps(a, b); }
HV__INLINE hv__vf hv__vsub(hv__vf a, hv__vf b) { return _mm512_sub_ps(a, b); }
HV__INLINE hv__vf hv__vmul(hv__vf a, hv__vf b) { return _mm512_mul_ps(a, b); }
HV__INLINE hv__vf hv__vdiv(hv__vf a, hv__vf b) { return _mm512_div_ps(a, b); }
HV__INLINE hv__vf hv__vfma(hv__vf a, hv__vf b, hv__vf c) { return _mm512_fmadd_ps(a, b, c); } /* a b + c */
/* max/min that return b when either is NaN (the instruction's rule), so NaN in b propagates */
/* (the maskz forms: g++ 12 warns that the plain ones' _mm512_undefined_ps may be uninitialized) */
HV__INLINE hv__vf hv__vmax(hv__vf a, hv__vf b) { return _mm512_maskz_max_ps((__mmask16)0xffff, a, b); }
HV__INLINE hv__vf hv__vmin(hv__vf a, hv__vf b) { return _mm512_maskz_min_ps((__mmask16)0xffff, a, b); }
HV__INLINE hv__vf hv__vabs(hv__vf a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
/* the sign of s on the magnitude of m (m >= 0) */
HV__INLINE hv__vf hv__vsignof(hv__vf m, hv__vf s) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32((int)0x80000000u))));
}
/* a > b ? x : y (false for NaN) */
HV__INLINE hv__vf hv__vsel_gt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x); }
HV__INLINE hv__vf hv__vsel_lt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
/* horizontal sum and max in a fixed order (halves, then quarters...); by hand: g++ 12 sees
   _mm512_reduce_*'s undefined vectors as maybe-uninitialized */
HV__INLINE __m256 hv__vlo256(hv__vf v) { return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xff, _mm512_castps_pd(v), 0)); }
HV__INLINE __m256 hv__vhi256(hv__vf v) { return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xff, _mm512_castps_pd(v), 1)); }
HV__INLINE float hv__vhsum(hv__vf v) {
    __m256 h = _mm256_add_ps(hv__vlo256(v), hv__vhi256(v));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
HV__INLINE float hv__vhmax(hv__vf v) {
    __m256 h = _mm256_max_ps(hv__vlo256(v), hv__vhi256(v));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
HV__INLINE hv__vf hv__vround(hv__vf x) { return _mm512_maskz_roundscale_ps((__mmask16)0xffff, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* y 2^n for integral n in [-151, 129]: scalef rounds to denormals and overflows to inf itself */
HV__INLINE hv__vf hv__vscale2(hv__vf y, hv__vf n) { return _mm512_maskz_scalef_ps((__mmask16)0xffff, y, n); }
#elif defined(HV__FAST_AVX2)
#define HV__VN 8
typedef __m256 hv__vf;
HV__INLINE hv__vf hv__vzero(void) { return _mm256_setzero_ps(); }
HV__INLINE hv__vf hv__vset(float x) { return _mm256_set1_ps(x); }
HV__INLINE hv__vf hv__vld(const float *p) { return _mm256_loadu_ps(p); }
HV__INLINE void hv__vst(float *p, hv__vf v) { _mm256_storeu_ps(p, v); }
HV__INLINE __m256i hv__vmaskn(int64_t n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
HV__INLINE hv__vf hv__vldn(const float *p, int64_t n) { return _mm256_maskload_ps(p, hv__vmaskn(n)); }
HV__INLINE void hv__vstn(float *p, hv__vf v, int64_t n) { _mm256_maskstore_ps(p, hv__vmaskn(n), v); }
HV__INLINE hv__vf hv__vldnf(const float *p, int64_t n, float fill) {
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, hv__vmaskn(n)), _mm256_castsi256_ps(hv__vmaskn(n)));
}
HV__INLINE hv__vf hv__visnan(hv__vf v) { return _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_set1_ps(1.0f)); }
HV__INLINE hv__vf hv__vsqrt(hv__vf v) { return _mm256_sqrt_ps(v); }
HV__INLINE hv__vf hv__vadd(hv__vf a, hv__vf b) { return _mm256_add_ps(a, b); }
HV__INLINE hv__vf hv__vsub(hv__vf a, hv__vf b) { return _mm256_sub_ps(a, b); }
HV__INLINE hv__vf hv__vmul(hv__vf a, hv__vf b) { return _mm256_mul_ps(a, b); }
HV__INLINE hv__vf hv__vdiv(hv__vf a, hv__vf b) { return _mm256_div_ps(a, b); }
HV__INLINE hv__vf hv__vfma(hv__vf a, hv__vf b, hv__vf c) { return _mm256_fmadd_ps(a, b, c); }
HV__INLINE hv__vf hv__vmax(hv__vf a, hv__vf b) { return _mm256_max_ps(a, b); }
HV__INLINE hv__vf hv__vmin(hv__vf a, hv__vf b) { return _mm256_min_ps(a, b); }
HV__INLINE hv__vf hv__vabs(hv__vf a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
HV__INLINE hv__vf hv__vsignof(hv__vf m, hv__vf s) {
    return _mm256_or_ps(m, _mm256_and_ps(s, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))));
}
HV__INLINE hv__vf hv__vsel_gt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
HV__INLINE hv__vf hv__vsel_lt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
HV__INLINE float hv__vhsum(hv__vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
HV__INLINE float hv__vhmax(hv__vf v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
HV__INLINE hv__vf hv__vround(hv__vf x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* y 2^n in two factors 2^(n/2) 2^(n - n/2), each a normal float for n in [-151, 129], so that
   results below FLT_MIN round to denormals or 0 and large ones overflow to inf */
HV__INLINE hv__vf hv__vscale2(hv__vf y, hv__vf n) {
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
}
#elif defined(HV__FAST_NEON)
#define HV__VN 4
typedef float32x4_t hv__vf;
HV__INLINE hv__vf hv__vzero(void) { return vdupq_n_f32(0.0f); }
HV__INLINE hv__vf hv__vset(float x) { return vdupq_n_f32(x); }
HV__INLINE hv__vf hv__vld(const float *p) { return vld1q_f32(p); }
HV__INLINE void hv__vst(float *p, hv__vf v) { vst1q_f32(p, v); }
HV__INLINE hv__vf hv__vldn(const float *p, int64_t n) {
    float t[4] = {0, 0, 0, 0};
    int64_t i;
    for (i = 0; i < n; i++) t[i] = p[i];
    return vld1q_f32(t);
}
HV__INLINE void hv__vstn(float *p, hv__vf v, int64_t n) {
    float t[4];
    int64_t i;
    vst1q_f32(t, v);
    for (i = 0; i < n; i++) p[i] = t[i];
}
HV__INLINE hv__vf hv__vldnf(const float *p, int64_t n, float fill) {
    float t[4];
    int64_t i;
    for (i = 0; i < 4; i++) t[i] = i < n ? p[i] : fill;
    return vld1q_f32(t);
}
HV__INLINE hv__vf hv__visnan(hv__vf v) { return vbslq_f32(vceqq_f32(v, v), vdupq_n_f32(0.0f), vdupq_n_f32(1.0f)); }
HV__INLINE hv__vf hv__vsqrt(hv__vf v) { return vsqrtq_f32(v); }
HV__INLINE hv__vf hv__vadd(hv__vf a, hv__vf b) { return vaddq_f32(a, b); }
HV__INLINE hv__vf hv__vsub(hv__vf a, hv__vf b) { return vsubq_f32(a, b); }
HV__INLINE hv__vf hv__vmul(hv__vf a, hv__vf b) { return vmulq_f32(a, b); }
HV__INLINE hv__vf hv__vdiv(hv__vf a, hv__vf b) { return vdivq_f32(a, b); }
HV__INLINE hv__vf hv__vfma(hv__vf a, hv__vf b, hv__vf c) { return vfmaq_f32(c, a, b); }
/* NaN in b propagates, as on x86 */
HV__INLINE hv__vf hv__vmax(hv__vf a, hv__vf b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
HV__INLINE hv__vf hv__vmin(hv__vf a, hv__vf b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
HV__INLINE hv__vf hv__vabs(hv__vf a) { return vabsq_f32(a); }
HV__INLINE hv__vf hv__vsignof(hv__vf m, hv__vf s) {
    return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(m), vandq_u32(vreinterpretq_u32_f32(s), vdupq_n_u32(0x80000000u))));
}
HV__INLINE hv__vf hv__vsel_gt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return vbslq_f32(vcgtq_f32(a, b), x, y); }
HV__INLINE hv__vf hv__vsel_lt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return vbslq_f32(vcltq_f32(a, b), x, y); }
HV__INLINE float hv__vhsum(hv__vf v) { return vaddvq_f32(v); }
HV__INLINE float hv__vhmax(hv__vf v) { return vmaxvq_f32(v); }
HV__INLINE hv__vf hv__vround(hv__vf x) { return vrndnq_f32(x); }
HV__INLINE hv__vf hv__vscale2(hv__vf y, hv__vf n) {
    int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    float32x4_t p1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    float32x4_t p2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(y, p1), p2);
}
#else /* scalar: a vector of one float */
#define HV__VN 1
typedef float hv__vf;
HV__INLINE hv__vf hv__vzero(void) { return 0.0f; }
HV__INLINE hv__vf hv__vset(float x) { return x; }
HV__INLINE hv__vf hv__vld(const float *p) { return *p; }
HV__INLINE void hv__vst(float *p, hv__vf v) { *p = v; }
HV__INLINE hv__vf hv__vldn(const float *p, int64_t n) { return n > 0 ? *p : 0.0f; }
HV__INLINE void hv__vstn(float *p, hv__vf v, int64_t n) {
    if (n > 0) *p = v;
}
HV__INLINE hv__vf hv__vldnf(const float *p, int64_t n, float fill) { return n > 0 ? *p : fill; }
HV__INLINE hv__vf hv__visnan(hv__vf v) { return v != v ? 1.0f : 0.0f; }
HV__INLINE hv__vf hv__vsqrt(hv__vf v) { return sqrtf(v); }
HV__INLINE hv__vf hv__vadd(hv__vf a, hv__vf b) { return a + b; }
HV__INLINE hv__vf hv__vsub(hv__vf a, hv__vf b) { return a - b; }
HV__INLINE hv__vf hv__vmul(hv__vf a, hv__vf b) { return a * b; }
HV__INLINE hv__vf hv__vdiv(hv__vf a, hv__vf b) { return a / b; }
HV__INLINE hv__vf hv__vfma(hv__vf a, hv__vf b, hv__vf c) { return a * b + c; }
HV__INLINE hv__vf hv__vmax(hv__vf a, hv__vf b) { return a > b ? a : b; }
HV__INLINE hv__vf hv__vmin(hv__vf a, hv__vf b) { return a < b ? a : b; }
HV__INLINE hv__vf hv__vabs(hv__vf a) { return fabsf(a); }
HV__INLINE hv__vf hv__vsignof(hv__vf m, hv__vf s) { return copysignf(m, s); }
HV__INLINE hv__vf hv__vsel_gt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return a > b ? x : y; }
HV__INLINE hv__vf hv__vsel_lt(hv__vf a, hv__vf b, hv__vf x, hv__vf y) { return a < b ? x : y; }
HV__INLINE float hv__vhsum(hv__vf v) { return v; }
HV__INLINE float hv__vhmax(hv__vf v) { return v; }
#endif

/* exp and erf. SIMD: exp by Cody-Waite reduction x = n ln2 + r and Cephes' degree-7 polynomial
   for e^r (max error 2 ulp against the correctly rounded value over [-104, 89]; exp(-inf) = 0,
   NaN stays NaN). erf(x): N. Juffa's minimax pair (|x| <= 0.9277: x + x p(x^2); above:
   1 - exp(|x| q(|x|)), sign restored), max error 2 ulp measured over every float (tests/test_fast.c
   samples it). The scalar path calls libm. */
#if HV__VN > 1
HV__INLINE hv__vf hv__vexp(hv__vf x) {
    hv__vf n, r, y;
    x = hv__vmax(hv__vset(-104.0f), x); /* below this, exp rounds to 0; NaN is kept (second operand) */
    x = hv__vmin(hv__vset(89.0f), x);   /* above this, inf */
    n = hv__vround(hv__vmul(x, hv__vset(1.44269504088896341f)));
    r = hv__vfma(n, hv__vset(-0.693359375f), x); /* ln2 in two parts: n * 0.693359375 is exact */
    r = hv__vfma(n, hv__vset(2.12194440e-4f), r);
    y = hv__vfma(hv__vset(1.9875691500e-4f), r, hv__vset(1.3981999507e-3f));
    y = hv__vfma(y, r, hv__vset(8.3334519073e-3f));
    y = hv__vfma(y, r, hv__vset(4.1665795894e-2f));
    y = hv__vfma(y, r, hv__vset(1.6666665459e-1f));
    y = hv__vfma(y, r, hv__vset(5.0000001201e-1f));
    y = hv__vfma(y, hv__vmul(r, r), hv__vadd(r, hv__vset(1.0f)));
    return hv__vscale2(y, n);
}
HV__INLINE hv__vf hv__verf(hv__vf x) {
    hv__vf t = hv__vabs(x), s = hv__vmul(x, x), r, u, lo;
    /* |x| > 0.927734375: erf = 1 - exp(r(t)) */
    r = hv__vfma(hv__vset(-1.72853470e-5f), t, hv__vset(3.83197126e-4f));
    u = hv__vfma(hv__vset(-3.88396438e-3f), t, hv__vset(2.42546219e-2f));
    r = hv__vfma(r, s, u);
    r = hv__vfma(r, t, hv__vset(-1.06777877e-1f));
    r = hv__vfma(r, t, hv__vset(-6.34846687e-1f));
    r = hv__vfma(r, t, hv__vset(-1.28717512e-1f));
    r = hv__vfma(r, t, hv__vsub(hv__vzero(), t));
    r = hv__vsignof(hv__vsub(hv__vset(1.0f), hv__vexp(r)), x);
    /* |x| <= 0.927734375: x + x p(x^2) */
    lo = hv__vfma(hv__vset(-5.96761703e-4f), s, hv__vset(4.99119423e-3f));
    lo = hv__vfma(lo, s, hv__vset(-2.67681349e-2f));
    lo = hv__vfma(lo, s, hv__vset(1.12819925e-1f));
    lo = hv__vfma(lo, s, hv__vset(-3.76125336e-1f));
    lo = hv__vfma(lo, s, hv__vset(1.28379166e-1f));
    lo = hv__vfma(lo, x, x);
    return hv__vsel_gt(t, hv__vset(0.927734375f), r, lo);
}
#else
HV__INLINE hv__vf hv__vexp(hv__vf x) { return expf(x); }
HV__INLINE hv__vf hv__verf(hv__vf x) { return erff(x); }
#endif
/* GELU (exact, erf form) and its derivative, lane by lane as hv__gelu_f / hv__unary_df */
HV__INLINE hv__vf hv__vgelu(hv__vf x) {
    hv__vf e = hv__verf(hv__vmul(x, hv__vset(0.70710678118654752f)));
    return hv__vmul(hv__vmul(hv__vset(0.5f), x), hv__vadd(hv__vset(1.0f), e));
}
HV__INLINE hv__vf hv__vgelu_d(hv__vf x) {
    hv__vf e = hv__verf(hv__vmul(x, hv__vset(0.70710678118654752f)));
    hv__vf phi = hv__vexp(hv__vmul(hv__vset(-0.5f), hv__vmul(x, x)));
    return hv__vfma(hv__vmul(x, hv__vset(0.39894228040143268f)), phi, hv__vmul(hv__vset(0.5f), hv__vadd(hv__vset(1.0f), e)));
}

/* a span of n floats as whole vectors, then one partial vector: the body sees the lane count W (a
   constant VN in the main loop, so hv__vldw / hv__vstw compile to plain loads and stores there) */
#define HV__SPAN(j, n, W, ...)                                                                     \
    for (j = 0; j + HV__VN <= (n); j += HV__VN) {                                                  \
        const int64_t W = HV__VN;                                                                  \
        __VA_ARGS__                                                                                \
    }                                                                                              \
    if (j < (n)) {                                                                                 \
        const int64_t W = (n) - j;                                                                 \
        __VA_ARGS__                                                                                \
    }
HV__INLINE hv__vf hv__vldw(const float *p, int64_t w) { return w >= HV__VN ? hv__vld(p) : hv__vldn(p, w); }
HV__INLINE void hv__vstw(float *p, hv__vf v, int64_t w) {
    if (w >= HV__VN) hv__vst(p, v);
    else hv__vstn(p, v, w);
}

/* ---- micro-kernel of the fused attention ----------------------------------------------------
   C (R rows x NV vectors, row stride ldc) = (acc ? C : 0) + sum over k < K of A[k] B[k], with
   A k-major (A[k * lda + r], one broadcast per row) and B row-major (B[k * ldb + c]). Every
   element sums over k in order. R and NV are constants at each call, so the accumulators live in
   registers. */
#define HV__MK_MAXR 8
#define HV__MK_MAXV 4
HV__INLINE void hv__mk(const int R, const int NV, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
                       int64_t ldc, int acc) {
    hv__vf c[HV__MK_MAXR][HV__MK_MAXV];
    int64_t k;
    int r, j;
    HV__UNROLL
    for (r = 0; r < R; r++) {
        HV__UNROLL
        for (j = 0; j < NV; j++) c[r][j] = acc ? hv__vld(C + r * ldc + j * HV__VN) : hv__vzero();
    }
    for (k = 0; k < K; k++) {
        hv__vf b[HV__MK_MAXV];
        const float *a = A + k * lda;
        HV__UNROLL
        for (j = 0; j < NV; j++) b[j] = hv__vld(B + k * ldb + j * HV__VN);
        HV__UNROLL
        for (r = 0; r < R; r++) {
            hv__vf ar = hv__vset(a[r]);
            HV__UNROLL
            for (j = 0; j < NV; j++) c[r][j] = hv__vfma(ar, b[j], c[r][j]);
        }
    }
    HV__UNROLL
    for (r = 0; r < R; r++) {
        HV__UNROLL
        for (j = 0; j < NV; j++) hv__vst(C + r * ldc + j * HV__VN, c[r][j]);
    }
}

static int64_t hv__round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Tiles: blocks of BQ queries and BQ keys (QV vectors each). R1 x QV is the micro-tile of the
   score blocks, R2 x (up to CV vectors) that of the products with d columns (O, dQ, dK, dV); BQ
   is a multiple of both row counts, so every tile is whole (blocks are zero-padded at the
   edges). */
#if defined(HV__FAST_AVX512) /* 32 registers: 8 x 3 and 6 x 4 accumulators */
#define HV__ATT_QV 3
#define HV__ATT_R1 8
#define HV__ATT_R2 6
#define HV__ATT_CV 4
#elif defined(HV__FAST_AVX2) /* 16 registers: 4 x 3 and 3 x 3 */
#define HV__ATT_QV 3
#define HV__ATT_R1 4
#define HV__ATT_R2 3
#define HV__ATT_CV 3
#else /* NEON (32 registers) 4 x 4 and 4 x 4; scalar 4 x 4 floats */
#define HV__ATT_QV 4
#define HV__ATT_R1 4
#define HV__ATT_R2 4
#define HV__ATT_CV 4
#endif
#define HV__ATT_BQ (HV__ATT_QV * HV__VN)

/* the score-shaped product: C (rows x BQ, ldc) = A^T B over K, rows a multiple of R1 */
static void hv__att_mm_scores(int64_t rows, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    int64_t r;
    for (r = 0; r < rows; r += HV__ATT_R1) hv__mk(HV__ATT_R1, HV__ATT_QV, K, A + r, lda, B, ldb, C + r * ldc, ldc, 0);
}
/* the d-shaped product: C (rows x dp) (+)= A^T B over K, rows a multiple of R2, dp of VN */
static void hv__att_mm_cols(int64_t rows, int64_t dp, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
                            int acc) {
    int64_t r, c0;
    for (c0 = 0; c0 < dp; c0 += HV__ATT_CV * HV__VN) {
        int64_t nv = (dp - c0) / HV__VN;
        if (nv > HV__ATT_CV) nv = HV__ATT_CV;
        for (r = 0; r < rows; r += HV__ATT_R2) {
            const float *a = A + r, *b = B + c0;
            float *c = C + r * dp + c0;
            switch (nv) {
            case 1: hv__mk(HV__ATT_R2, 1, K, a, lda, b, ldb, c, dp, acc); break;
#if HV__ATT_CV >= 2
            case 2: hv__mk(HV__ATT_R2, 2, K, a, lda, b, ldb, c, dp, acc); break;
#endif
#if HV__ATT_CV >= 3
            case 3: hv__mk(HV__ATT_R2, 3, K, a, lda, b, ldb, c, dp, acc); break;
#endif
            default: hv__mk(HV__ATT_R2, HV__ATT_CV, K, a, lda, b, ldb, c, dp, acc); break;
            }
        }
    }
}

/* dst[c * ldd + i] = s * src[i * lds + c] for i < n (VN of them, the ones >= n read as 0) and
   c < m: a VN-wide strip of a transpose */
static void hv__transpose_strip(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t n, int64_t m, float s) {
    int64_t c, i;
#if defined(HV__FAST_AVX512)
    if (lds <= INT32_MAX / HV__VN) {
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)lds));
        const __mmask16 k = (__mmask16)((1u << n) - 1u);
        for (c = 0; c < m; c++) hv__vst(dst + c * ldd, hv__vmul(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, idx, src + c, 4), hv__vset(s)));
        return;
    }
#elif defined(HV__FAST_AVX2)
    if (lds <= INT32_MAX / HV__VN) {
        const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)lds));
        const __m256 k = _mm256_castsi256_ps(hv__vmaskn(n));
        for (c = 0; c < m; c++)
            hv__vst(dst + c * ldd, hv__vmul(_mm256_mask_i32gather_ps(_mm256_setzero_ps(), src + c, idx, k, 4), hv__vset(s)));
        return;
    }
#endif
    for (c = 0; c < m; c++) {
        for (i = 0; i < n; i++) dst[c * ldd + i] = s * src[i * lds + c];
        for (; i < HV__VN; i++) dst[c * ldd + i] = 0;
    }
}
/* dst (d x n, row stride ld, n a multiple of VN) = s * (rows r0.. r0 + n of head (b, h) of t)^T,
   zero past t's rows: the transposed packs */
static void hv__att_pack_cols(float *dst, int64_t ld, int64_t n, const hv_tensor *t, int64_t b, int64_t h, int64_t r0, float s) {
    int64_t N = t->shape[2], d = t->shape[3], i, c;
    for (i = 0; i < n; i += HV__VN) {
        int64_t nr = N - (r0 + i) < HV__VN ? N - (r0 + i) : HV__VN;
        if (nr <= 0) {
            for (c = 0; c < d; c++) hv__vst(dst + c * ld + i, hv__vzero());
        } else if (t->stride[3] == 1) {
            hv__transpose_strip(dst + i, ld, hv__attn_row(t, b, h, r0 + i), t->stride[2], nr, d, s);
        } else {
            int64_t r;
            for (c = 0; c < d; c++)
                for (r = 0; r < HV__VN; r++) dst[c * ld + i + r] = r < nr ? s * hv__attn_row(t, b, h, r0 + i + r)[c * t->stride[3]] : 0.0f;
        }
    }
}
/* dst (n x ld) = s * rows r0.. of head (b, h) of t, zero rows past t's extent and zero columns
   d..ld: the row-major packs */
static void hv__att_pack_rows(float *dst, int64_t ld, int64_t n, const hv_tensor *t, int64_t b, int64_t h, int64_t r0, float s) {
    int64_t N = t->shape[2], d = t->shape[3], st = t->stride[3], i, c;
    for (i = 0; i < n; i++) {
        float *o = dst + i * ld;
        if (r0 + i < N) {
            const float *src = hv__attn_row(t, b, h, r0 + i);
            if (st == 1) {
                for (c = 0; c + HV__VN <= d; c += HV__VN) hv__vst(o + c, hv__vmul(hv__vld(src + c), hv__vset(s)));
                if (c < d) hv__vst(o + c, hv__vmul(hv__vldn(src + c, d - c), hv__vset(s))); /* and zeros up to ld */
            } else {
                for (c = 0; c < d; c++) o[c] = s * src[c * st];
                for (; c < ld; c++) o[c] = 0;
            }
        } else {
            for (c = 0; c < ld; c += HV__VN) hv__vst(o + c, hv__vzero());
        }
    }
}

/* ---- fused attention ------------------------------------------------------------------------
   Flash-attention on the CPU: blocks of BQ queries against blocks of BQ keys, so the N x N score
   matrix never exists (vith14 at 476 has 1157 tokens: 5 MB of scores per head). q is scaled once
   when packed (scale * q), so S = (scale q) k^T.

   Forward: the score blocks are kept transposed, S^T (keys x queries), so that the per-query
   softmax statistics (running max m and sum l) are vector operations down the key rows, and S^T
   is directly the k-major operand of O += P V. Each query block walks the key blocks in order,
   rescaling its O block and l whenever the running max grows.

   Backward (P recomputed from the saved lse; delta_i = go_i . o_i): for a pair (query block i, key
   block j), with the blocks in query-major layout
       S = (scale Q_i) K_j^T, P = exp(S - lse_i), dP = dO_i V_j^T, dS = P (dP - delta_i)
       dV_j += P^T dO_i,  dK_j += dS^T (scale Q_i),  dQ_i += dS (scale K_j)
   (one transpose per pair, of dS, for the last product).

   Work split: the k/v packs (transposes) cost about as much as a query block's products, so a
   work item is a whole head whenever there are enough heads for the threads: every pack is made
   once. With fewer heads, items are (head, query block) for the forward and dQ, and (head, key
   block) for dK/dV, which repack. No two threads write one element, each element sums over the
   blocks in the same order with the same arithmetic either way, so the choice (which depends on
   the thread count) changes no bit. */

typedef struct hv__att_args {
    int64_t B, H, Nq, Nk, d, dp; /* dp: d rounded up to whole vectors */
    int64_t nqb, nkb;            /* blocks */
    float scale;
    const hv_tensor *q, *k, *v, *o, *go;
    hv_tensor *out, *gq, *gk, *gv;
    float *lse;         /* (B, H, Nq), written by the forward */
    const float *lse_c; /* the same, read by the backward */
    const float *delta; /* (B, H, Nq) */
} hv__att_args;
static void hv__att_setup(hv__att_args *a, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v, float scale) {
    memset(a, 0, sizeof *a);
    a->B = q->shape[0];
    a->H = q->shape[1];
    a->Nq = q->shape[2];
    a->Nk = k->shape[2];
    a->d = q->shape[3];
    a->dp = hv__round_up(a->d, HV__VN);
    a->nqb = (a->Nq + HV__ATT_BQ - 1) / HV__ATT_BQ;
    a->nkb = (a->Nk + HV__ATT_BQ - 1) / HV__ATT_BQ;
    a->scale = scale;
    a->q = q;
    a->k = k;
    a->v = v;
}
/* whole heads per work item when every thread gets its share of heads */
static int hv__att_per_head(const hv__att_args *a, int nt) { return (a->B * a->H) % nt == 0 || a->B * a->H >= 4 * nt; }

static int64_t hv__att_fwd_scratch(const hv__att_args *a) {
    const int64_t nkp = a->nkb * HV__ATT_BQ;
    return hv__round_up(a->d * nkp + nkp * a->dp + a->d * HV__ATT_BQ + HV__ATT_BQ * HV__ATT_BQ + HV__ATT_BQ * a->dp + 3 * HV__ATT_BQ, 16);
}
/* query blocks [qb0, qb1) of head (b, h) */
static void hv__att_fwd_blocks(const hv__att_args *a, float *ws, int64_t b, int64_t h, int64_t qb0, int64_t qb1) {
    const int64_t d = a->d, dp = a->dp, nkp = a->nkb * HV__ATT_BQ, BQ = HV__ATT_BQ;
    float *kt = ws;              /* (d, nkp) k^T */
    float *vb = kt + d * nkp;    /* (nkp, dp) v */
    float *qt = vb + nkp * dp;   /* (d, BQ) scale q^T */
    float *st = qt + d * BQ;     /* (BQ keys, BQ queries) scores, then probabilities */
    float *ob = st + BQ * BQ;    /* (BQ, dp) output accumulator */
    float *m = ob + BQ * dp, *l = m + BQ, *cr = l + BQ; /* (BQ) each: running max, sum, rescale */
    int64_t qb, kb, i, j, c, qv;
    hv__att_pack_cols(kt, nkp, nkp, a->k, b, h, 0, 1.0f);
    hv__att_pack_rows(vb, dp, a->Nk, a->v, b, h, 0, 1.0f);
    for (qb = qb0; qb < qb1; qb++) {
        const int64_t i0 = qb * BQ, nq = a->Nq - i0 < BQ ? a->Nq - i0 : BQ;
        hv__att_pack_cols(qt, BQ, BQ, a->q, b, h, i0, a->scale);
        for (i = 0; i < BQ; i++) {
            m[i] = -INFINITY;
            l[i] = 0;
        }
        memset(ob, 0, sizeof(float) * (size_t)(BQ * dp));
        for (kb = 0; kb < a->nkb; kb++) {
            const int64_t j0 = kb * BQ, nk = a->Nk - j0 < BQ ? a->Nk - j0 : BQ;
            hv__att_mm_scores(BQ, d, kt + j0, nkp, qt, BQ, st, BQ);
            for (qv = 0; qv < BQ; qv += HV__VN) { /* the softmax statistics, VN queries at a time */
                hv__vf mx = hv__vld(st + qv), mo = hv__vld(m + qv), mn, sum = hv__vzero();
                for (j = 1; j < nk; j++) mx = hv__vmax(mx, hv__vld(st + j * BQ + qv));
                mn = hv__vmax(mo, mx);
                for (j = 0; j < nk; j++) {
                    hv__vf p = hv__vexp(hv__vsub(hv__vld(st + j * BQ + qv), mn));
                    hv__vst(st + j * BQ + qv, p);
                    sum = hv__vadd(sum, p);
                }
                mo = hv__vexp(hv__vsub(mo, mn)); /* the rescale of what came before: 0 at the first block */
                hv__vst(cr + qv, mo);
                hv__vst(l + qv, hv__vfma(hv__vld(l + qv), mo, sum));
                hv__vst(m + qv, mn);
            }
            if (kb > 0)
                for (i = 0; i < BQ; i++)
                    if (cr[i] != 1.0f)
                        for (c = 0; c < dp; c += HV__VN) hv__vst(ob + i * dp + c, hv__vmul(hv__vld(ob + i * dp + c), hv__vset(cr[i])));
            hv__att_mm_cols(BQ, dp, nk, st, BQ, vb + j0 * dp, dp, ob, 1);
        }
        for (i = 0; i < nq; i++) {
            float *oi = hv__attn_row(a->out, b, h, i0 + i), inv = 1.0f / l[i];
            int64_t os = a->out->stride[3];
            for (c = 0; c < d; c++) oi[c * os] = ob[i * dp + c] * inv;
            a->lse[(b * a->H + h) * a->Nq + i0 + i] = m[i] + logf(l[i]);
        }
    }
}

static void hv__fast_attention(hv_ctx *ctx, hv_tensor *o, hv_tensor *lse, const hv_tensor *q, const hv_tensor *k, const hv_tensor *v,
                               float scale) {
    hv__att_args a;
    int64_t work, per, u;
    int nt;
    hv__arena_mark mark;
    float *scratch;
    hv__att_setup(&a, q, k, v, scale);
    a.out = o;
    a.lse = (float *)lse->data;
    work = a.B * a.H * a.Nq * a.Nk * a.d;
    nt = hv__fast_threads(ctx, work);
    per = hv__att_fwd_scratch(&a);
    mark = hv__arena_save(&ctx->arena);
    scratch = hv__scratch(ctx, per * nt);
    if (!scratch) { /* out of memory for the tiles: the reference needs none */
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_attention(ctx, o, lse, q, k, v, scale);
        return;
    }
    if (hv__att_per_head(&a, nt)) {
        HV__PARALLEL_FOR(ctx, work)
        for (u = 0; u < a.B * a.H; u++) hv__att_fwd_blocks(&a, scratch + per * hv__fast_tid(), u / a.H, u % a.H, 0, a.nqb);
    } else {
        HV__PARALLEL_FOR(ctx, work)
        for (u = 0; u < a.B * a.H * a.nqb; u++)
            hv__att_fwd_blocks(&a, scratch + per * hv__fast_tid(), u / (a.H * a.nqb), (u / a.nqb) % a.H, u % a.nqb, u % a.nqb + 1);
    }
    hv__arena_rewind(&ctx->arena, mark);
}

/* rows r0.. r0 + n of head (b, h) of g += src (n x ld) */
static void hv__att_add_rows(hv_tensor *g, int64_t b, int64_t h, int64_t r0, int64_t n, const float *src, int64_t ld) {
    int64_t i, c, d = g->shape[3], s = g->stride[3];
    for (i = 0; i < n; i++) {
        float *r = hv__attn_row(g, b, h, r0 + i);
        const float *x = src + i * ld;
        if (s == 1) {
            for (c = 0; c + HV__VN <= d; c += HV__VN) hv__vst(r + c, hv__vadd(hv__vld(r + c), hv__vld(x + c)));
            if (c < d) hv__vstn(r + c, hv__vadd(hv__vldn(r + c, d - c), hv__vld(x + c)), d - c);
        } else {
            for (c = 0; c < d; c++) r[c * s] += x[c];
        }
    }
}
/* floats of backward scratch per thread for nqp (padded) queries */
static int64_t hv__att_bwd_scratch(const hv__att_args *a, int64_t nqp) {
    return hv__round_up(5 * nqp * a->dp + 2 * nqp + 2 * a->d * HV__ATT_BQ + 3 * HV__ATT_BQ * a->dp + 3 * HV__ATT_BQ * HV__ATT_BQ, 16);
}
/* query blocks [qb0, qb1) of head (b, h) against key blocks [kb0, kb1): adds dK and dV (do_kv)
   or dQ (do_q) of those blocks into gk, gv, gq */
static void hv__att_bwd_blocks(const hv__att_args *a, float *ws, int64_t b, int64_t h, int64_t qb0, int64_t qb1, int64_t kb0,
                               int64_t kb1, int do_kv, int do_q) {
    const int64_t d = a->d, dp = a->dp, BQ = HV__ATT_BQ, nqp = (qb1 - qb0) * BQ, i0 = qb0 * BQ;
    const int64_t row0 = (b * a->H + h) * a->Nq; /* this head's first row in lse and delta */
    float *qs = ws;               /* (nqp, dp) scale q */
    float *qst = qs + nqp * dp;   /* (d, nqp) scale q^T */
    float *dob = qst + d * nqp;   /* (nqp, dp) go */
    float *dot_ = dob + nqp * dp; /* (d, nqp) go^T */
    float *dq = dot_ + d * nqp;   /* (nqp, dp) dQ accumulator */
    float *lp = dq + nqp * dp;    /* (nqp) lse */
    float *dl = lp + nqp;         /* (nqp) delta */
    float *kt = dl + nqp;         /* (d, BQ) k^T */
    float *vt = kt + d * BQ;      /* (d, BQ) v^T */
    float *ks = vt + d * BQ;      /* (BQ, dp) scale k */
    float *dk = ks + BQ * dp, *dv = dk + BQ * dp; /* (BQ, dp) accumulators */
    float *sp = dv + BQ * dp, *sd = sp + BQ * BQ, *sdt = sd + BQ * BQ; /* (BQ, BQ) P, dS, dS^T */
    int64_t i, c, kb, qb;
    if (do_kv) hv__att_pack_rows(qs, dp, nqp, a->q, b, h, i0, a->scale);
    hv__att_pack_cols(qst, nqp, nqp, a->q, b, h, i0, a->scale);
    if (do_kv) hv__att_pack_rows(dob, dp, nqp, a->go, b, h, i0, 1.0f);
    hv__att_pack_cols(dot_, nqp, nqp, a->go, b, h, i0, 1.0f);
    for (i = 0; i < nqp; i++) { /* padded queries: P = exp(0 - 0) = 1 but dP = delta = 0, so dS = 0 */
        lp[i] = i0 + i < a->Nq ? a->lse_c[row0 + i0 + i] : 0.0f;
        dl[i] = i0 + i < a->Nq ? a->delta[row0 + i0 + i] : 0.0f;
    }
    if (do_q) memset(dq, 0, sizeof(float) * (size_t)(nqp * dp));
    for (kb = kb0; kb < kb1; kb++) {
        const int64_t j0 = kb * BQ, nk = a->Nk - j0 < BQ ? a->Nk - j0 : BQ;
        hv__att_pack_cols(kt, BQ, BQ, a->k, b, h, j0, 1.0f);
        hv__att_pack_cols(vt, BQ, BQ, a->v, b, h, j0, 1.0f);
        if (do_q) hv__att_pack_rows(ks, dp, BQ, a->k, b, h, j0, a->scale);
        if (do_kv) {
            memset(dk, 0, sizeof(float) * (size_t)(BQ * dp));
            memset(dv, 0, sizeof(float) * (size_t)(BQ * dp));
        }
        for (qb = qb0; qb < qb1; qb++) {
            const int64_t ii = (qb - qb0) * BQ, nq = a->Nq - qb * BQ < BQ ? a->Nq - qb * BQ : BQ;
            hv__att_mm_scores(BQ, d, qst + ii, nqp, kt, BQ, sp, BQ);   /* S */
            hv__att_mm_scores(BQ, d, dot_ + ii, nqp, vt, BQ, sd, BQ); /* dP */
            for (i = 0; i < BQ; i++) {
                const hv__vf li = hv__vset(lp[ii + i]), di = hv__vset(dl[ii + i]);
                float *pr = sp + i * BQ, *dr = sd + i * BQ;
                for (c = 0; c < BQ; c += HV__VN) {
                    hv__vf p = hv__vexp(hv__vsub(hv__vld(pr + c), li)), ds = hv__vmul(p, hv__vsub(hv__vld(dr + c), di));
                    if (c + HV__VN <= nk) {
                        hv__vst(pr + c, p);
                        hv__vst(dr + c, ds);
                    } else { /* padded keys take no probability */
                        hv__vst(pr + c, hv__vzero());
                        hv__vst(dr + c, hv__vzero());
                        if (nk > c) {
                            hv__vstn(pr + c, p, nk - c);
                            hv__vstn(dr + c, ds, nk - c);
                        }
                    }
                }
            }
            if (do_kv) {
                hv__att_mm_cols(BQ, dp, nq, sp, BQ, dob + ii * dp, dp, dv, 1);
                hv__att_mm_cols(BQ, dp, nq, sd, BQ, qs + ii * dp, dp, dk, 1);
            }
            if (do_q) {
                for (c = 0; c < BQ; c += HV__VN) hv__transpose_strip(sdt + c, BQ, sd + c * BQ, BQ, HV__VN, BQ, 1.0f);
                hv__att_mm_cols(BQ, dp, nk, sdt, BQ, ks, dp, dq + ii * dp, 1);
            }
        }
        if (do_kv) {
            if (a->gk) hv__att_add_rows(a->gk, b, h, j0, nk, dk, dp);
            if (a->gv) hv__att_add_rows(a->gv, b, h, j0, nk, dv, dp);
        }
    }
    if (do_q) hv__att_add_rows(a->gq, b, h, i0, (a->Nq - i0 < nqp ? a->Nq - i0 : nqp), dq, dp);
}

static void hv__fast_attention_bwd(hv_ctx *ctx, hv_tensor *gq, hv_tensor *gk, hv_tensor *gv, hv_tensor *delta, const hv_tensor *q,
                                   const hv_tensor *k, const hv_tensor *v, const hv_tensor *o, const hv_tensor *lse, const hv_tensor *go,
                                   float scale) {
    hv__att_args a;
    int64_t heads, rows, work, per, r, u;
    int nt, do_kv = gk || gv;
    hv__arena_mark mark;
    float *scratch, *pd = (float *)delta->data;
    if (!gq && !do_kv) return;
    hv__att_setup(&a, q, k, v, scale);
    a.o = o;
    a.go = go;
    a.gq = gq;
    a.gk = gk;
    a.gv = gv;
    a.lse_c = (const float *)lse->data;
    a.delta = pd;
    heads = a.B * a.H;
    rows = heads * a.Nq;
    HV__PARALLEL_FOR(ctx, rows * a.d)
    for (r = 0; r < rows; r++) { /* delta = rowwise go . o */
        int64_t b = r / (a.H * a.Nq), h = (r / a.Nq) % a.H, i = r % a.Nq, t, so = o->stride[3], sg = go->stride[3];
        const float *oi = hv__attn_row(o, b, h, i), *gi = hv__attn_row(go, b, h, i);
        float acc = 0;
        for (t = 0; t < a.d; t++) acc += oi[t * so] * gi[t * sg];
        pd[r] = acc;
    }
    work = rows * a.Nk * a.d * 4;
    nt = hv__fast_threads(ctx, work);
    per = hv__att_bwd_scratch(&a, a.nqb * HV__ATT_BQ);
    mark = hv__arena_save(&ctx->arena);
    scratch = hv__scratch(ctx, per * nt);
    if (!scratch) {
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_attention_bwd(ctx, gq, gk, gv, delta, q, k, v, o, lse, go, scale);
        return;
    }
    if (hv__att_per_head(&a, nt)) {
        HV__PARALLEL_FOR(ctx, work)
        for (u = 0; u < heads; u++) hv__att_bwd_blocks(&a, scratch + per * hv__fast_tid(), u / a.H, u % a.H, 0, a.nqb, 0, a.nkb, do_kv, gq != NULL);
    } else {
        if (do_kv) {
            HV__PARALLEL_FOR(ctx, work)
            for (u = 0; u < heads * a.nkb; u++)
                hv__att_bwd_blocks(&a, scratch + per * hv__fast_tid(), u / (a.H * a.nkb), (u / a.nkb) % a.H, 0, a.nqb, u % a.nkb,
                                   u % a.nkb + 1, 1, 0);
        }
        if (gq) {
            HV__PARALLEL_FOR(ctx, work)
            for (u = 0; u < heads * a.nqb; u++)
                hv__att_bwd_blocks(&a, scratch + per * hv__fast_tid(), u / (a.H * a.nqb), (u / a.nqb) % a.H, u % a.nqb, u % a.nqb + 1, 0,
                                   a.nkb, 0, 1);
        }
    }
    hv__arena_rewind(&ctx->arena, mark);
}

/* ---- convolution as GEMM --------------------------------------------------------------------
   y_g = W_g col_g per image and group, where col (Cin/G * KH * KW, OH * OW) holds the input
   patches (im2col) and W_g (Cout/G, Cin/G * KH * KW) is the weight as stored. The products go to
   the backend GEMM (ctx->be->gemm), batched over the images of a chunk; the backward is
       dcol_g = W_g^T gy_g, then col2im (each input plane sums its taps in a fixed order),
       gW_g += gy_g col_g^T, image after image (a fixed order for the sum over the batch).
   A 1x1 convolution with stride 1 and no padding needs no im2col: x itself is col. Images go in
   chunks whose columns fit HV__CONV_COL_FLOATS (arena scratch, handed back on return); the chunk
   size depends on the shape only, so the bits do not depend on the thread count. The scalar
   kernels of the conv section stay as the reference; HV-SECTION cpu-fast-conv below has the direct
   kernels and the rule that picks between them and this path. */
#ifndef HV__CONV_COL_FLOATS
#define HV__CONV_COL_FLOATS ((int64_t)8 << 20) /* 32 MB */
#endif

typedef struct hv__conv_geo {
    int64_t N, cin, H, W, cout, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G, cin_g, cout_g;
    int64_t K, P; /* rows of col (cin_g KH KW) and its columns (OH OW) */
    int direct;   /* 1x1, stride 1, no padding: col is x */
} hv__conv_geo;
static hv__conv_geo hv__conv_geometry(const hv_tensor *x, const hv_tensor *y, const hv_tensor *w, const int64_t *g) {
    hv__conv_geo c;
    c.N = x->shape[0];
    c.cin = x->shape[1];
    c.H = x->shape[2];
    c.W = x->shape[3];
    c.cout = y->shape[1];
    c.OH = y->shape[2];
    c.OW = y->shape[3];
    c.KH = w->shape[2];
    c.KW = w->shape[3];
    c.sh = g[HV__CG_SH];
    c.sw = g[HV__CG_SW];
    c.ph = g[HV__CG_PH];
    c.pw = g[HV__CG_PW];
    c.dh = g[HV__CG_DH];
    c.dw = g[HV__CG_DW];
    c.G = g[HV__CG_GROUPS];
    c.cin_g = c.cin / c.G;
    c.cout_g = c.cout / c.G;
    c.K = c.cin_g * c.KH * c.KW;
    c.P = c.OH * c.OW;
    c.direct = c.KH == 1 && c.KW == 1 && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0;
    return c;
}
/* images per chunk: as many as keep the columns under the budget, at least one */
static int64_t hv__conv_chunk(const hv__conv_geo *c) {
    int64_t per = c->cin * c->KH * c->KW * c->P, n = per > 0 ? HV__CONV_COL_FLOATS / per : c->N;
    return n < 1 ? 1 : n > c->N ? c->N : n;
}
/* the range [lo, hi) of outputs o (of n) whose input index o * s - p + k * dl lies in [0, in) */
static void hv__conv_valid(int64_t n, int64_t s, int64_t p, int64_t k, int64_t dl, int64_t in, int64_t *lo, int64_t *hi) {
    int64_t off = k * dl - p; /* input index = o s + off */
    *lo = off >= 0 ? 0 : (-off + s - 1) / s;
    *hi = in - off > 0 ? (in - off + s - 1) / s : 0;
    if (*hi > n) *hi = n;
    if (*lo > *hi) *lo = *hi;
}
/* col (nimg, cin, KH, KW, OH, OW) = the patches of images n0.. of x */
static void hv__im2col(hv_ctx *ctx, const hv__conv_geo *c, const float *x, int64_t n0, int64_t nimg, float *col) {
    int64_t r, rows = nimg * c->cin * c->KH * c->KW;
    HV__PARALLEL_FOR(ctx, rows * c->P)
    for (r = 0; r < rows; r++) {
        int64_t kw = r % c->KW, kh = (r / c->KW) % c->KH, ci = (r / (c->KW * c->KH)) % c->cin, n = n0 + r / (c->KW * c->KH * c->cin);
        const float *xp = x + (n * c->cin + ci) * c->H * c->W; /* (H, W) */
        float *o = col + r * c->P;                             /* (OH, OW) */
        int64_t oh, ow, h_lo, h_hi, w_lo, w_hi;
        hv__conv_valid(c->OH, c->sh, c->ph, kh, c->dh, c->H, &h_lo, &h_hi);
        hv__conv_valid(c->OW, c->sw, c->pw, kw, c->dw, c->W, &w_lo, &w_hi);
        memset(o, 0, sizeof(float) * (size_t)(h_lo * c->OW));
        for (oh = h_lo; oh < h_hi; oh++) {
            int64_t base = (oh * c->sh - c->ph + kh * c->dh) * c->W + kw * c->dw - c->pw; /* input index at ow = 0 */
            float *orow = o + oh * c->OW;
            for (ow = 0; ow < w_lo; ow++) orow[ow] = 0;
            if (c->sw == 1) {
                if (w_hi > w_lo) memcpy(orow + w_lo, xp + base + w_lo, sizeof(float) * (size_t)(w_hi - w_lo));
            } else {
                for (ow = w_lo; ow < w_hi; ow++) orow[ow] = xp[base + ow * c->sw];
            }
            for (ow = w_hi; ow < c->OW; ow++) orow[ow] = 0;
        }
        memset(o + h_hi * c->OW, 0, sizeof(float) * (size_t)((c->OH - h_hi) * c->OW));
    }
}
/* gx (images n0.., cin, H, W) += col2im(dcol): each plane sums its taps in (kh, kw, oh) order */
static void hv__col2im(hv_ctx *ctx, const hv__conv_geo *c, const float *dcol, int64_t n0, int64_t nimg, float *gx) {
    int64_t pl, planes = nimg * c->cin;
    HV__PARALLEL_FOR(ctx, planes * c->KH * c->KW * c->P)
    for (pl = 0; pl < planes; pl++) {
        float *gp = gx + (n0 * c->cin + pl) * c->H * c->W; /* (H, W) */
        int64_t kh, kw, oh, ow;
        for (kh = 0; kh < c->KH; kh++)
            for (kw = 0; kw < c->KW; kw++) {
                const float *d = dcol + ((pl * c->KH + kh) * c->KW + kw) * c->P; /* (OH, OW) */
                int64_t h_lo, h_hi, w_lo, w_hi;
                hv__conv_valid(c->OH, c->sh, c->ph, kh, c->dh, c->H, &h_lo, &h_hi);
                hv__conv_valid(c->OW, c->sw, c->pw, kw, c->dw, c->W, &w_lo, &w_hi);
                for (oh = h_lo; oh < h_hi; oh++) {
                    int64_t base = (oh * c->sh - c->ph + kh * c->dh) * c->W + kw * c->dw - c->pw; /* gx index at ow = 0 */
                    const float *dr = d + oh * c->OW;
                    if (c->sw == 1 && w_hi > w_lo) {
                        float *gr = gp + base + w_lo;
                        const float *src = dr + w_lo;
                        int64_t n = w_hi - w_lo, j;
                        for (j = 0; j + HV__VN <= n; j += HV__VN) hv__vst(gr + j, hv__vadd(hv__vld(gr + j), hv__vld(src + j)));
                        for (; j < n; j++) gr[j] += src[j];
                    } else {
                        for (ow = w_lo; ow < w_hi; ow++) gp[base + ow * c->sw] += dr[ow];
                    }
                }
            }
    }
}
/* C_i (m x n) (+)= op(A_i) op(B_i) for i < batch, through the backend's GEMM */
static void hv__conv_gemm(hv_ctx *ctx, int ta, int tb, int64_t m, int64_t n, int64_t k, int64_t batch, const float *A, int64_t lda,
                          int64_t sa, const float *B, int64_t ldb, int64_t sb, float *C, int64_t ldc, int64_t sc, float beta) {
    hv__gemm_args g;
    memset(&g, 0, sizeof g);
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.batch = batch;
    g.alpha = 1.0f;
    g.beta = beta;
    g.a = A;
    g.lda = lda;
    g.batch_stride_a = sa;
    g.b = B;
    g.ldb = ldb;
    g.batch_stride_b = sb;
    g.c = C;
    g.ldc = ldc;
    g.batch_stride_c = sc;
    ctx->be->gemm(ctx, &g);
}
/* row sums of a (rows x n) matrix, each in order: float partial sums over a row, double across */
static double hv__row_sum(const float *p, int64_t n) {
    hv__vf acc = hv__vzero();
    int64_t j;
    for (j = 0; j + HV__VN <= n; j += HV__VN) acc = hv__vadd(acc, hv__vld(p + j));
    if (j < n) acc = hv__vadd(acc, hv__vldn(p + j, n - j));
    return (double)hv__vhsum(acc);
}

static void hv__conv2d_gemm(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(x, y, w, g);
    const float *px = (const float *)x->data, *pw = (const float *)w->data;
    float *py = (float *)y->data, *col = NULL;
    int64_t n0, chunk = hv__conv_chunk(&c), gi, r;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    if (!c.direct && !(col = hv__scratch(ctx, chunk * c.cin * c.KH * c.KW * c.P))) {
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_conv2d(ctx, y, x, w, b, g);
        return;
    }
    for (n0 = 0; n0 < c.N; n0 += chunk) {
        int64_t nimg = c.N - n0 < chunk ? c.N - n0 : chunk;
        const float *src = px + n0 * c.cin * c.H * c.W; /* col of image n0, group 0 */
        int64_t ldb = c.P, sb = c.cin * c.H * c.W;
        if (!c.direct) {
            hv__im2col(ctx, &c, px, n0, nimg, col);
            src = col;
            sb = c.cin * c.KH * c.KW * c.P;
        }
        for (gi = 0; gi < c.G; gi++) /* y[n, group] (cout_g, P) = W_g (cout_g, K) col[n, group] (K, P) */
            hv__conv_gemm(ctx, 0, 0, c.cout_g, c.P, c.K, nimg, pw + gi * c.cout_g * c.K, c.K, 0, src + gi * c.K * ldb, ldb, sb,
                          py + (n0 * c.cout + gi * c.cout_g) * c.P, c.P, c.cout * c.P, 0.0f);
    }
    if (b) {
        const float *pb = (const float *)b->data;
        HV__PARALLEL_FOR(ctx, c.N * c.cout * c.P)
        for (r = 0; r < c.N * c.cout; r++) {
            float *yr = py + r * c.P;
            const hv__vf bv = hv__vset(pb[r % c.cout]);
            int64_t j;
            for (j = 0; j + HV__VN <= c.P; j += HV__VN) hv__vst(yr + j, hv__vadd(hv__vld(yr + j), bv));
            for (; j < c.P; j++) yr[j] += pb[r % c.cout];
        }
    }
    hv__arena_rewind(&ctx->arena, mark);
}

static void hv__conv2d_gemm_bwd_data(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(gx, gy, w, g);
    const float *pg = (const float *)gy->data, *pw = (const float *)w->data;
    float *pgx = (float *)gx->data, *dcol = NULL;
    int64_t n0, chunk = hv__conv_chunk(&c), gi;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    if (!c.direct && !(dcol = hv__scratch(ctx, chunk * c.cin * c.KH * c.KW * c.P))) {
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_conv2d_bwd_data(ctx, gx, gy, w, g);
        return;
    }
    for (n0 = 0; n0 < c.N; n0 += chunk) {
        int64_t nimg = c.N - n0 < chunk ? c.N - n0 : chunk;
        /* dcol[n, group] (K, P) = W_g^T gy[n, group]; 1x1: straight into gx (beta 1) */
        float *dst = c.direct ? pgx + n0 * c.cin * c.P : dcol;
        int64_t sd = c.cin * c.KH * c.KW * c.P;
        for (gi = 0; gi < c.G; gi++)
            hv__conv_gemm(ctx, 1, 0, c.K, c.P, c.cout_g, nimg, pw + gi * c.cout_g * c.K, c.K, 0, pg + (n0 * c.cout + gi * c.cout_g) * c.P, c.P,
                          c.cout * c.P, dst + gi * c.K * c.P, c.P, sd, c.direct ? 1.0f : 0.0f);
        if (!c.direct) hv__col2im(ctx, &c, dcol, n0, nimg, pgx);
    }
    hv__arena_rewind(&ctx->arena, mark);
}

static void hv__conv2d_gemm_bwd_weight(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                       const int64_t *g) {
    const float *px = (const float *)x->data, *pg = (const float *)gy->data;
    int64_t co;
    if (gw) {
        hv__conv_geo c = hv__conv_geometry(x, gy, gw, g);
        int64_t n0, n, chunk = hv__conv_chunk(&c);
        hv__arena_mark mark = hv__arena_save(&ctx->arena);
        float *col = NULL;
        if (!c.direct && !(col = hv__scratch(ctx, chunk * c.cin * c.KH * c.KW * c.P))) {
            hv__arena_rewind(&ctx->arena, mark);
            hv__cpu_conv2d_bwd_weight(ctx, gw, gb, x, gy, g);
            return;
        }
        for (n0 = 0; n0 < c.N; n0 += chunk) {
            int64_t nimg = c.N - n0 < chunk ? c.N - n0 : chunk;
            if (!c.direct) hv__im2col(ctx, &c, px, n0, nimg, col);
            /* gW_g (cout_g, K) += gy[n, group] (cout_g, P) col[n, group]^T: the groups in one batch, image
               after image (the sum over the batch runs in order) */
            for (n = n0; n < n0 + nimg; n++) {
                const float *src = c.direct ? px + n * c.cin * c.P : col + (n - n0) * c.cin * c.KH * c.KW * c.P;
                hv__conv_gemm(ctx, 0, 1, c.cout_g, c.K, c.P, c.G, pg + n * c.cout * c.P, c.P, c.cout_g * c.P, src, c.P, c.K * c.P,
                              (float *)gw->data, c.K, c.cout_g * c.K, 1.0f);
            }
        }
        hv__arena_rewind(&ctx->arena, mark);
    }
    if (gb) { /* per channel, images in order */
        const int64_t N = gy->shape[0], cout = gy->shape[1], P = gy->shape[2] * gy->shape[3];
        float *pgb = (float *)gb->data;
        HV__PARALLEL_FOR(ctx, N * cout * P)
        for (co = 0; co < cout; co++) {
            double acc = 0;
            int64_t ni;
            for (ni = 0; ni < N; ni++) acc += hv__row_sum(pg + (ni * cout + co) * P, P);
            pgb[co] += (float)acc;
        }
    }
}

/* HV-SECTION cpu-fast-conv BEGIN */
/* ---- direct convolution ---------------------------------------------------------------------
   Where im2col + GEMM runs GEMMs of a few rows or a short K (ResNeXt's grouped 3x3 with 4-8
   channels per group; the 7x7 stride-2 stem with 3 input channels, whose im2col is a strided
   gather that the GEMM then packs again), these kernels work on the planes directly:

   1. the input planes of one (image, group) are copied into a zero-padded scratch split by column
      phase: row j of phase p holds padded columns j * sw + p, so the input under the outputs
      ow0 .. ow0 + VN - 1 of tap (kh, kw) is one contiguous vector at a fixed offset off[tap];
   2. forward: a register tile of 4 output channels x HV__DC_NV vectors of outputs ("slots": any
      (row, column) positions of the plane) starts at the bias and adds the taps (ci, kh, kw) in
      order, one FMA per tap, channel and slot;
   3. backward data is the same kernel run on gy with the weights flipped and transposed (the
      output channels are the taps' input). With stride 1 it is one conv (gy padded by
      (K - 1) d - p) that adds into gx. With stride s, gx splits into s_h s_w phases (the positions
      r + i s): each is a stride-1 conv of gy with the taps k = r + p (mod s) of the flipped kernel
      (hv__dc_taps), written to a scratch plane and added into its positions of gx;
   4. backward weight: a tile of HV__DC_WC output channels x HV__DC_WB taps sums gy * x over a band of
      output rows in vector lanes; each band's lanes are summed (fixed order) into a double per
      weight, bands and images in order.
   A thread owns whole outputs (an (image, group) block of planes; all the weights of a group or
   of a range of channel blocks) and every sum runs in an order set by the shape alone, so the bits
   do not depend on the thread count. Scratch comes from the arena (a slice per thread).
   hv__dconv_pick says which shapes come here (measured: bench/KERNELS.md). */
#define HV__DC_CB 4 /* output channels per tile */
/* v stays in a register: without this gcc 12 re-reads a loaded vector as a memory operand of
   each of its FMAs (4 loads instead of 1, mostly across cache lines), which made the forward tile
   load-bound: 2x slower on the stem (bench_kernels) */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define HV__VREG(v) __asm__("" : "+v"(v))
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define HV__VREG(v) __asm__("" : "+w"(v))
#else
#define HV__VREG(v) (void)0
#endif
/* the tiles stay functions of their own: inlined into their callers' loops, gcc runs out of
   general registers and spills the row pointers inside the innermost loop */
#if defined(__GNUC__) || defined(__clang__)
#define HV__DC_NOINLINE __attribute__((noinline))
#else
#define HV__DC_NOINLINE
#endif
#if defined(HV__DC_NV) && defined(HV__DC_WB) && defined(HV__DC_WC) /* a tuning run's -D */
#elif defined(HV__FAST_AVX512) || defined(HV__FAST_NEON)
#define HV__DC_NV 6 /* 32 vector registers: 24 accumulators and the loaded inputs */
#define HV__DC_WC 4 /* backward weight: 4 channels x 6 taps, 24 accumulators, 4 gy and 1 x vector */
#define HV__DC_WB 6
#else
#define HV__DC_NV 2 /* 16 registers (AVX2), or the scalar build */
#define HV__DC_WC 2
#define HV__DC_WB 2
#endif

#ifndef HV__DC_BAND
#define HV__DC_BAND 1024 /* outputs per band of the weight gradient: its gy rows stay in L1 (measured: 512..4096) */
#endif

/* a direct conv of one group: cin planes (H, W) -> cout planes (OH, OW) */
typedef struct hv__dc {
    int64_t cin, H, W, cout, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw;
    int64_t K;      /* taps per output channel: cin KH KW */
    int64_t nvec;   /* vectors per output row */
    int64_t Hs, Wq; /* scratch: rows per (plane, phase), floats per row */
    int64_t nb;     /* output channel blocks of HV__DC_CB */
} hv__dc;

/* Which kernel a conv runs on, by shape (bench/KERNELS.md has the measurements). The GEMM keeps
   - 1x1 stride 1 without padding (x is its own im2col) and non-overlapping patches (stride =
     kernel, no padding or dilation: the ViT patch embedding, whose im2col only permutes): there
     the GEMM runs near its peak and beats PyTorch;
   - wide convs, more than 64 channels per group in and out: at 128 and 256 channels (3x3, 28 x 28
     and 14 x 14) the GEMM's backward was faster, while up to 64 the direct kernels won all three.
   The direct kernels take the rest: grouped 3x3 (ResNeXt), the 3-channel stem, depthwise, narrow
   dense convs, where the GEMM would see M or K of a few dozen. */
static int hv__dconv_pick(const hv__conv_geo *c, int bwd_data) {
    int patch = c->sh == c->KH && c->sw == c->KW && c->ph == 0 && c->pw == 0 && c->dh == 1 && c->dw == 1;
    (void)bwd_data;
    return !(c->direct || patch || (c->cin_g > 64 && c->cout_g > 64));
}

static void hv__dc_finish(hv__dc *d) {
    d->K = d->cin * d->KH * d->KW;
    d->nvec = (d->OW + HV__VN - 1) / HV__VN;
    d->Hs = (d->OH - 1) * d->sh + (d->KH - 1) * d->dh + 1;
    d->Wq = (d->nvec * HV__VN + (d->KW - 1) * d->dw / d->sw + HV__VN - 1) / HV__VN * HV__VN; /* the last vector of the last tap fits; rows aligned */
    d->nb = (d->cout + HV__DC_CB - 1) / HV__DC_CB;
}
/* One axis of a phase of backward data: the gx positions r, r + s, ... (n of them) take the taps
   k = k0, k0 + step, ... (nk; 0: none) whose k dl = r + p (mod s), at gy position i + a(k) with
   a(k) = (r + p - k dl) / s. Read from the last tap, that is a stride-1 conv over gy with dilation
   dl = step dl / s and padding p = (nk - 1) dl - a(k0). Stride 1: k0 = 0, the whole flipped
   kernel, padding (K - 1) dl - p. */
typedef struct hv__dc_taps {
    int64_t n, nk, k0, step, dl, p;
} hv__dc_taps;
static hv__dc_taps hv__dc_taps_of(int64_t r, int64_t in, int64_t K, int64_t s, int64_t p, int64_t dl) {
    hv__dc_taps f;
    int64_t a = s, b = dl, k;
    while (b) { /* gcd(s, dl) */
        int64_t t = a % b;
        a = b, b = t;
    }
    for (k = 0; k < K && ((r + p - k * dl) % s + s) % s != 0; k++) {}
    f.n = r < in ? (in - r + s - 1) / s : 0;
    f.step = s / a;
    f.k0 = k;
    f.nk = k < K ? (K - 1 - k) / f.step + 1 : 0;
    f.dl = dl / a;
    f.p = (f.nk - 1) * f.dl - (r + p - k * dl) / s; /* exact: s divides r + p - k0 dl */
    return f;
}
/* the conv of one group: forward (fh, fw NULL), or one phase of backward data whose taps along
   the rows and the columns are fh and fw: gy's planes are the input, the phase's positions of gx
   the output */
static hv__dc hv__dc_geometry(const hv__conv_geo *c, const hv__dc_taps *fh, const hv__dc_taps *fw) {
    hv__dc d;
    if (!fh) {
        d.cin = c->cin_g, d.H = c->H, d.W = c->W, d.cout = c->cout_g, d.OH = c->OH, d.OW = c->OW, d.KH = c->KH, d.KW = c->KW;
        d.sh = c->sh, d.sw = c->sw, d.ph = c->ph, d.pw = c->pw, d.dh = c->dh, d.dw = c->dw;
    } else {
        d.cin = c->cout_g, d.H = c->OH, d.W = c->OW, d.cout = c->cin_g, d.OH = fh->n, d.OW = fw->n, d.KH = fh->nk, d.KW = fw->nk;
        d.sh = d.sw = 1, d.ph = fh->p, d.pw = fw->p, d.dh = fh->dl, d.dw = fw->dl;
    }
    hv__dc_finish(&d);
    return d;
}
static int64_t hv__dc_scratch_floats(const hv__dc *d) { return d->cin * d->sw * d->Hs * d->Wq; }
/* off[t] for tap t = (ci, kh, kw): where its input sits in the scratch, relative to the output's */
static void hv__dc_offsets(const hv__dc *d, int64_t *off) {
    int64_t ci, kh, kw, t = 0;
    for (ci = 0; ci < d->cin; ci++)
        for (kh = 0; kh < d->KH; kh++)
            for (kw = 0; kw < d->KW; kw++) off[t++] = ((ci * d->sw + kw * d->dw % d->sw) * d->Hs + kh * d->dh) * d->Wq + kw * d->dw / d->sw;
}
/* scratch (cin, sw, Hs, Wq) = the planes x (cin, H, W), padded and split by column phase. Only
   the cells that hold input are written: the padding cells are zeroed once per call
   (hv__dc_zero), and every block of that call writes the same cells, so they stay zero (on
   28 x 28 planes the copy takes ~20% of the time, most of it reading the input). */
static void hv__dc_pad(const hv__dc *d, const float *x, float *s) {
    int64_t ci, p, r, j, lo, hi, r0 = d->ph > 0 ? d->ph : 0, r1 = d->H + d->ph < d->Hs ? d->H + d->ph : d->Hs;
    for (ci = 0; ci < d->cin; ci++)
        for (p = 0; p < d->sw; p++) {
            /* the scratch columns j whose input column j sw + p - pw lies in [0, W) */
            hv__conv_valid(d->Wq, d->sw, d->pw - p, 0, 1, d->W, &lo, &hi);
            for (r = r0; r < r1; r++) {
                float *o = s + ((ci * d->sw + p) * d->Hs + r) * d->Wq;
                const float *xr = x + (ci * d->H + r - d->ph) * d->W + p - d->pw; /* the input at column j: xr[j sw] */
                if (d->sw == 1) {
                    for (j = lo; j + HV__VN <= hi; j += HV__VN) hv__vst(o + j, hv__vld(xr + j));
                    if (j < hi) hv__vstn(o + j, hv__vldn(xr + j, hi - j), hi - j);
                } else {
                    for (j = lo; j < hi; j++) o[j] = xr[j * d->sw];
                }
            }
        }
}
/* nt scratch slices of per floats, zeroed: the padding cells hv__dc_pad leaves alone */
static float *hv__dc_zero(hv_ctx *ctx, int64_t per, int nt) {
    float *s = hv__scratch(ctx, per * nt);
    if (s) memset(s, 0, sizeof(float) * (size_t)(per * nt));
    return s;
}

/* the forward register tile: for c < nc and each slot s, y[s] + c P (nl[s] lanes; 0: a filler slot)
   = (or +=, add) bias[c] + sum over taps t in order of w[t][c] x[s][off[t]]; w (K, HV__DC_CB) */
HV__DC_NOINLINE static void hv__dc_tile(const float *const *xs, float *const *ys, const int64_t *nl, int64_t P, int64_t nc, const int64_t *off,
                        int64_t K, const float *w, const float *bias, int add) {
    hv__vf acc[HV__DC_CB][HV__DC_NV];
    int64_t t;
    int c, s;
    HV__UNROLL for (c = 0; c < HV__DC_CB; c++) {
        const hv__vf b0 = bias ? hv__vset(bias[c]) : hv__vzero();
        HV__UNROLL for (s = 0; s < HV__DC_NV; s++) acc[c][s] = b0;
    }
    for (t = 0; t < K; t++) {
        const float *wt = w + t * HV__DC_CB;
        const int64_t o = off[t];
        HV__UNROLL for (s = 0; s < HV__DC_NV; s++) {
            hv__vf xv = hv__vld(xs[s] + o);
            HV__VREG(xv);
            HV__UNROLL for (c = 0; c < HV__DC_CB; c++) acc[c][s] = hv__vfma(xv, hv__vset(wt[c]), acc[c][s]);
        }
    }
    HV__UNROLL for (c = 0; c < HV__DC_CB; c++) {
        if (c >= nc) break;
        HV__UNROLL for (s = 0; s < HV__DC_NV; s++) {
            float *yp = ys[s] + c * P;
            hv__vstn(yp, add ? hv__vadd(hv__vldn(yp, nl[s]), acc[c][s]) : acc[c][s], nl[s]);
        }
    }
}
/* slots tile0 * NV .. tile1 * NV of one (image, group): the padded input in scratch -> y (cout,
   OH, OW); w the group's packed weights (nb, K, HV__DC_CB), bias (nb HV__DC_CB) or NULL */
static void hv__dc_tiles(const hv__dc *d, const float *scratch, float *y, const float *w, const float *bias, const int64_t *off, int64_t tile0,
                         int64_t tile1, int add) {
    const float *xs[HV__DC_NV];
    float *ys[HV__DC_NV];
    int64_t nl[HV__DC_NV], tile, b, P = d->OH * d->OW;
    int s;
    for (tile = tile0; tile < tile1; tile++) {
        for (s = 0; s < HV__DC_NV; s++) {
            int64_t k = tile * HV__DC_NV + s, oh = k / d->nvec, ow = k % d->nvec * HV__VN;
            if (k >= d->OH * d->nvec) { /* past the plane's end: a filler that stores nothing */
                xs[s] = xs[0];
                ys[s] = ys[0];
                nl[s] = 0;
                continue;
            }
            xs[s] = scratch + oh * d->sh * d->Wq + ow;
            ys[s] = y + oh * d->OW + ow;
            nl[s] = d->OW - ow < HV__VN ? d->OW - ow : HV__VN;
        }
        /* the channel blocks inner: the inputs of these slots stay in L1 */
        for (b = 0; b < d->nb; b++) {
            hv__dc_tile(xs, ys, nl, P, d->cout - b * HV__DC_CB, off, d->K, w + b * d->K * HV__DC_CB, bias ? bias + b * HV__DC_CB : NULL, add);
            for (s = 0; s < HV__DC_NV; s++) ys[s] += HV__DC_CB * P;
        }
    }
}
static int64_t hv__dc_ntiles(const hv__dc *d) { return (d->OH * d->nvec + HV__DC_NV - 1) / HV__DC_NV; }
/* dst (N, G dc.cout, OH, OW) (+)= the direct conv of src (N, G dc.cin, H, W) with packed weights
   wp (G, nb, K, CB) and bias (G nb CB or NULL); 0 when the arena had no room */
static int hv__dc_run(hv_ctx *ctx, const hv__dc *d, int64_t N, int64_t G, const float *src, float *dst, const float *wp, const float *bias,
                      int add) {
    const int64_t ntiles = hv__dc_ntiles(d), per = hv__dc_scratch_floats(d);
    const int64_t work = N * G * d->cout * d->OH * d->OW * d->K;
    const int nt = hv__fast_threads(ctx, work);
    /* blocks of slots per (image, group): enough units for the threads (each rebuilds its scratch) */
    int64_t split = N * G >= 2 * nt ? 1 : (2 * nt + N * G - 1) / (N * G), u;
    int64_t *off = (int64_t *)hv__arena_alloc(&ctx->arena, sizeof(int64_t) * (size_t)d->K);
    float *scratch = hv__dc_zero(ctx, per, nt);
    if (!off || !scratch) return 0;
    if (split > ntiles) split = ntiles;
    hv__dc_offsets(d, off);
    HV__PARALLEL_FOR(ctx, work)
    for (u = 0; u < N * G * split; u++) {
        int64_t ng = u / split, part = u % split, gi = ng % G;
        float *sc = scratch + per * hv__fast_tid();
        hv__dc_pad(d, src + ng * d->cin * d->H * d->W, sc);
        hv__dc_tiles(d, sc, dst + ng * d->cout * d->OH * d->OW, wp + gi * d->nb * d->K * HV__DC_CB, bias ? bias + gi * d->nb * HV__DC_CB : NULL, off,
                     ntiles * part / split, ntiles * (part + 1) / split, add);
    }
    return 1;
}
/* the weights w (cout, cin_g, KH, KW) as tiles (G, nb, K, CB), zero past the group's channels;
   for backward data (fh, fw: the phase's taps) the output channels are the forward's inputs and
   the taps (co, th, tw) read the flipped kernel at k0 + (nk - 1 - t) step */
static void hv__dc_pack(const hv__conv_geo *c, const hv__dc *d, const float *w, const hv__dc_taps *fh, const hv__dc_taps *fw, float *wp) {
    int64_t gi, b, t, j;
    for (gi = 0; gi < c->G; gi++)
        for (b = 0; b < d->nb; b++)
            for (t = 0; t < d->K; t++)
                for (j = 0; j < HV__DC_CB; j++) {
                    int64_t o = b * HV__DC_CB + j, src, kh, kw; /* o: the output channel in the group */
                    if (!fh) {
                        src = (gi * c->cout_g + o) * d->K + t;
                    } else {
                        kh = fh->k0 + (d->KH - 1 - t / d->KW % d->KH) * fh->step;
                        kw = fw->k0 + (d->KW - 1 - t % d->KW) * fw->step;
                        src = (((gi * c->cout_g + t / (d->KH * d->KW)) * c->cin_g + o) * c->KH + kh) * c->KW + kw;
                    }
                    *wp++ = o < d->cout ? w[src] : 0.0f;
                }
}

/* Strided backward data, phase by phase. gy is padded once per (image, group) for all phases (by
   the largest padding: each phase's offsets shift by the difference); the phases of one row phase
   rh go to buf (a slot (cin_g, n_h, n_w) each), then add into their rows of gx, each gx row in one
   pass: every gx element gets one add, from the one phase it belongs to. (Adding each phase on its
   own, with scalar strided adds, took 2/3 of the time on the ResNeXt shape.) */
typedef struct hv__dc_phase {
    hv__dc d;          /* gy -> this phase's positions of gx, stride 1 */
    int64_t rh, rw;    /* gx rows rh + i sh, columns rw + j sw */
    float *wp;         /* its packed weights (G, nb, K, CB) */
    int64_t *off;      /* its taps in the shared padded gy */
} hv__dc_phase;
/* g[2 j] += a[j], g[2 j + 1] += b[j], for the W floats of g: stride 2's two column phases (a holds
   (W + 1) / 2 floats, b W / 2); the last vectors are partial (28 pairs on a 56-wide plane) */
static void hv__dc_add2(float *g, const float *a, const float *b, int64_t W) {
    int64_t j;
    for (j = 0; 2 * j < W; j += HV__VN) {
        const int64_t rem = W - 2 * j, na = (rem + 1) / 2 < HV__VN ? (rem + 1) / 2 : HV__VN, nb = rem / 2 < HV__VN ? rem / 2 : HV__VN;
        const int64_t nlo = rem < HV__VN ? rem : HV__VN, nhi = rem - HV__VN < HV__VN ? rem - HV__VN : HV__VN;
        const hv__vf va = hv__vldn(a + j, na), vb = hv__vldn(b + j, nb);
#if defined(HV__FAST_AVX512)
        const hv__vf lo = _mm512_permutex2var_ps(va, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), vb);
        const hv__vf hi = _mm512_permutex2var_ps(va, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), vb);
#elif defined(HV__FAST_AVX2)
        const hv__vf l = _mm256_unpacklo_ps(va, vb), h = _mm256_unpackhi_ps(va, vb); /* a0 b0 a1 b1 a4 b4 a5 b5, a2 b2 .. */
        const hv__vf lo = _mm256_permute2f128_ps(l, h, 0x20), hi = _mm256_permute2f128_ps(l, h, 0x31);
#elif defined(HV__FAST_NEON)
        const hv__vf lo = vzip1q_f32(va, vb), hi = vzip2q_f32(va, vb);
#else
        const hv__vf lo = va, hi = vb; /* one float per vector */
#endif
        float *g0 = g + 2 * j, *g1 = g0 + HV__VN;
        if (nlo == HV__VN) hv__vst(g0, hv__vadd(hv__vld(g0), lo));
        else hv__vstn(g0, hv__vadd(hv__vldn(g0, nlo), lo), nlo);
        if (nhi == HV__VN) hv__vst(g1, hv__vadd(hv__vld(g1), hi));
        else if (nhi > 0) hv__vstn(g1, hv__vadd(hv__vldn(g1, nhi), hi), nhi);
    }
}
/* the phases q0..q1 of one (image, group): gy (cout_g, OH, OW) -> gx (cin_g, H, W) +=; buf: a slot
   of nbuf floats per phase. All the phases first, then gx row by row in memory order, prefetching
   HV__DC_PF floats ahead: the adds wait on gx, which comes from memory (on the ResNeXt shape,
   adding each phase on its own with scalar strided adds took 2/3 of the time; row-phase by
   row-phase with vectors, 1/2; in memory order with the prefetch, 4.9 -> 3.4 ms). */
#ifndef HV__DC_PF
#define HV__DC_PF 2048 /* measured 512 .. 2048 */
#endif
#if defined(__GNUC__) || defined(__clang__)
#define HV__DC_PREFETCH(p) __builtin_prefetch((p), 1, 3)
#else
#define HV__DC_PREFETCH(p) (void)(p)
#endif
static void hv__dc_bwdx_block(const hv__conv_geo *c, const hv__dc *dp, const hv__dc_phase *ph, int64_t q0, int64_t q1, int64_t gi,
                              const float *gy, float *gx, float *scratch, float *buf, int64_t nbuf) {
    const int64_t nx = c->cin_g * c->H * c->W;
    int64_t q, k, ci, h, j;
    hv__dc_pad(dp, gy, scratch);
    for (q = q0; q < q1; q++) {
        const hv__dc *d = &ph[q].d;
        hv__dc_tiles(d, scratch, buf + (q - q0) * nbuf, ph[q].wp + gi * d->nb * d->K * HV__DC_CB, NULL, ph[q].off, 0, hv__dc_ntiles(d), 0);
    }
    for (ci = 0; ci < c->cin_g; ci++)
        for (h = 0; h < c->H; h++) {
            const int64_t rh = h % c->sh, i = h / c->sh;
            float *gr = gx + (ci * c->H + h) * c->W;
            for (j = (ci * c->H + h) * c->W + HV__DC_PF; j < (ci * c->H + h + 1) * c->W + HV__DC_PF && j < nx; j += 16) HV__DC_PREFETCH(gx + j);
            for (q = q0; q < q1 && ph[q].rh != rh; q++) {}
            for (k = q; k < q1 && ph[k].rh == rh; k++) {} /* the phases q..k hold this row */
            if (q == k) continue;
            if (c->sw == 2 && k - q == 2) { /* both column phases: one pass, vectors */
                hv__dc_add2(gr, buf + (q - q0) * nbuf + (ci * ph[q].d.OH + i) * ph[q].d.OW, buf + (q + 1 - q0) * nbuf + (ci * ph[q].d.OH + i) * ph[q + 1].d.OW, c->W);
                continue;
            }
            for (; q < k; q++) {
                const float *br = buf + (q - q0) * nbuf + (ci * ph[q].d.OH + i) * ph[q].d.OW;
                for (j = 0; j < ph[q].d.OW; j++) gr[ph[q].rw + j * c->sw] += br[j];
            }
        }
}
static int hv__dconv_bwd_strided(hv_ctx *ctx, const hv__conv_geo *c, const float *gy, float *gx, const float *w) {
    const int64_t work = c->N * c->cin * c->H * c->W * c->cout_g * c->KH * c->KW / (c->sh * c->sw);
    const int nt = hv__fast_threads(ctx, work);
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    hv__dc_phase *ph = (hv__dc_phase *)hv__arena_alloc(&ctx->arena, sizeof(hv__dc_phase) * (size_t)(c->sh * c->sw));
    hv__dc dp;
    int64_t nq = 0, q, rh, rw, per, nbuf = 0, split, u;
    float *scratch, *buf;
    if (!ph) return 0;
    memset(&dp, 0, sizeof dp);
    dp.cin = c->cout_g, dp.H = c->OH, dp.W = c->OW, dp.sh = dp.sw = 1, dp.ph = dp.pw = INT64_MIN;
    for (rh = 0; rh < c->sh; rh++)
        for (rw = 0; rw < c->sw; rw++) {
            hv__dc_taps fh = hv__dc_taps_of(rh, c->H, c->KH, c->sh, c->ph, c->dh), fw = hv__dc_taps_of(rw, c->W, c->KW, c->sw, c->pw, c->dw);
            hv__dc *d = &ph[nq].d;
            if (!fh.n || !fw.n || !fh.nk || !fw.nk) continue; /* no positions, or no tap reaches them: gx keeps its value */
            *d = hv__dc_geometry(c, &fh, &fw);
            ph[nq].rh = rh, ph[nq].rw = rw;
            if (!(ph[nq].wp = hv__scratch(ctx, c->G * d->nb * d->K * HV__DC_CB)) ||
                !(ph[nq].off = (int64_t *)hv__arena_alloc(&ctx->arena, sizeof(int64_t) * (size_t)d->K))) {
                hv__arena_rewind(&ctx->arena, mark);
                return 0;
            }
            hv__dc_pack(c, d, w, &fh, &fw, ph[nq].wp);
            if (d->ph > dp.ph) dp.ph = d->ph;
            if (d->pw > dp.pw) dp.pw = d->pw;
            if (d->cout * d->OH * d->OW > nbuf) nbuf = d->cout * d->OH * d->OW;
            nq++;
        }
    for (q = 0; q < nq; q++) { /* the shared scratch holds every phase's reach */
        const hv__dc *d = &ph[q].d;
        int64_t hs = d->Hs + dp.ph - d->ph, wq = d->Wq + dp.pw - d->pw;
        if (hs > dp.Hs) dp.Hs = hs;
        if (wq > dp.Wq) dp.Wq = wq;
    }
    for (q = 0; q < nq; q++) {
        hv__dc *d = &ph[q].d;
        int64_t t, shift = (dp.ph - d->ph) * dp.Wq + dp.pw - d->pw;
        d->Hs = dp.Hs, d->Wq = dp.Wq;
        hv__dc_offsets(d, ph[q].off);
        for (t = 0; t < d->K; t++) ph[q].off[t] += shift;
    }
    per = hv__dc_scratch_floats(&dp);
    scratch = hv__dc_zero(ctx, per, nt);
    buf = hv__scratch(ctx, nq * nbuf * nt);
    if (!scratch || !buf) {
        hv__arena_rewind(&ctx->arena, mark);
        return 0;
    }
    /* units: (image, group), or ranges of its phases when there are fewer than 2 per thread */
    split = c->N * c->G >= 2 * nt ? 1 : (2 * nt + c->N * c->G - 1) / (c->N * c->G);
    if (split > nq) split = nq;
    HV__PARALLEL_FOR(ctx, work)
    for (u = 0; u < c->N * c->G * split; u++) {
        int64_t ng = u / split, part = u % split, tid = hv__fast_tid();
        hv__dc_bwdx_block(c, &dp, ph, nq * part / split, nq * (part + 1) / split, ng % c->G, gy + ng * c->cout_g * c->OH * c->OW,
                          gx + ng * c->cin_g * c->H * c->W, scratch + per * tid, buf + nq * nbuf * tid, nbuf);
    }
    hv__arena_rewind(&ctx->arena, mark);
    return 1;
}

/* forward (bwd 0) or backward data (bwd 1): 0 when the arena had no room */
static int hv__dconv(hv_ctx *ctx, const hv__conv_geo *c, const float *src, float *dst, const float *w, const float *bias, int bwd) {
    hv__dc_taps fh, fw;
    hv__dc d;
    if (bwd && (c->sh > 1 || c->sw > 1)) return hv__dconv_bwd_strided(ctx, c, src, dst, w);
    fh = hv__dc_taps_of(0, c->H, c->KH, 1, c->ph, c->dh);
    fw = hv__dc_taps_of(0, c->W, c->KW, 1, c->pw, c->dw);
    d = hv__dc_geometry(c, bwd ? &fh : NULL, bwd ? &fw : NULL);
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    float *wp = hv__scratch(ctx, c->G * d.nb * d.K * HV__DC_CB), *bp = NULL;
    int64_t i, ok;
    if (wp && bias && (bp = hv__scratch(ctx, c->G * d.nb * HV__DC_CB)) != NULL)
        for (i = 0; i < c->G * d.nb * HV__DC_CB; i++) /* bias in blocks, zero past each group's channels */
            bp[i] = i % (d.nb * HV__DC_CB) < d.cout ? bias[i / (d.nb * HV__DC_CB) * d.cout + i % (d.nb * HV__DC_CB)] : 0.0f;
    ok = wp && (!bias || bp);
    if (ok) {
        hv__dc_pack(c, &d, w, bwd ? &fh : NULL, bwd ? &fw : NULL, wp);
        ok = hv__dc_run(ctx, &d, c->N, c->G, src, dst, wp, bp, bwd);
    }
    hv__arena_rewind(&ctx->arena, mark);
    return (int)ok;
}

/* one step of the weight tile: n lanes at output offset go (gy) and xo (x) */
HV__INLINE void hv__dc_wstep(hv__vf acc[HV__DC_WC][HV__DC_WB], const float *const *gr, const float *const *xr, int64_t go, int64_t xo, int64_t n) {
    hv__vf gv[HV__DC_WC];
    int c, j;
    HV__UNROLL for (c = 0; c < HV__DC_WC; c++) {
        gv[c] = n == HV__VN ? hv__vld(gr[c] + go) : hv__vldn(gr[c] + go, n);
        HV__VREG(gv[c]);
    }
    HV__UNROLL for (j = 0; j < HV__DC_WB; j++) {
        hv__vf xv = n == HV__VN ? hv__vld(xr[j] + xo) : hv__vldn(xr[j] + xo, n);
        HV__VREG(xv);
        HV__UNROLL for (c = 0; c < HV__DC_WC; c++) acc[c][j] = hv__vfma(gv[c], xv, acc[c][j]);
    }
}
/* the weight tile: out[c][j] = sum over output rows r0..r1 of gy row gr[c] * the scratch row xr[j]
   (lanes, then the lanes in hv__vhsum's order) */
HV__DC_NOINLINE static void hv__dc_wtile(const hv__dc *d, const float *const *gr, const float *const *xr, int64_t r0, int64_t r1, double *out) {
    hv__vf acc[HV__DC_WC][HV__DC_WB];
    const int64_t full = d->OW / HV__VN * HV__VN, tail = d->OW - full;
    int64_t oh, v;
    int c, j;
    HV__UNROLL for (c = 0; c < HV__DC_WC; c++) HV__UNROLL for (j = 0; j < HV__DC_WB; j++) acc[c][j] = hv__vzero();
    for (oh = r0; oh < r1; oh++) {
        const int64_t go = oh * d->OW, xo = oh * d->sh * d->Wq;
        for (v = 0; v < full; v += HV__VN) hv__dc_wstep(acc, gr, xr, go + v, xo + v, HV__VN);
        if (tail) hv__dc_wstep(acc, gr, xr, go + full, xo + full, tail);
    }
    HV__UNROLL for (c = 0; c < HV__DC_WC; c++) HV__UNROLL for (j = 0; j < HV__DC_WB; j++) out[c * HV__DC_WB + j] = hv__vhsum(acc[c][j]);
}
/* gw of group gi, channel blocks b0..b1 (+)= sum over the images of x and gy; acc: (b1 - b0) CB K doubles */
static void hv__dc_bwdw_block(const hv__conv_geo *c, const hv__dc *d, const float *x, const float *gy, float *gw, const int64_t *off,
                              int64_t gi, int64_t b0, int64_t b1, float *scratch, double *acc) {
    /* rows per band: ~2048 outputs, so a band of 4 gy planes and 4 tap rows stays in L1/L2 */
    const int64_t P = d->OH * d->OW, R = d->OW >= HV__DC_BAND ? 1 : HV__DC_BAND / d->OW;
    int64_t n, r0, b, t0, k;
    memset(acc, 0, sizeof(double) * (size_t)((b1 - b0) * HV__DC_WC * d->K));
    for (n = 0; n < c->N; n++) {
        const float *gyn = gy + (n * c->cout + gi * c->cout_g) * P; /* (cout_g, OH, OW) */
        hv__dc_pad(d, x + (n * c->cin + gi * c->cin_g) * c->H * c->W, scratch);
        for (r0 = 0; r0 < d->OH; r0 += R)
            for (b = b0; b < b1; b++) {
                const float *gr[HV__DC_WC];
                int j, m;
                for (j = 0; j < HV__DC_WC; j++) /* channels past the group's end repeat its first: computed, not kept */
                    gr[j] = gyn + (b * HV__DC_WC + j < d->cout ? b * HV__DC_WC + j : b * HV__DC_WC) * P;
                for (t0 = 0; t0 < d->K; t0 += HV__DC_WB) {
                    const float *xr[HV__DC_WB];
                    double sums[HV__DC_WC * HV__DC_WB];
                    for (j = 0; j < HV__DC_WB; j++) xr[j] = scratch + off[t0 + j < d->K ? t0 + j : t0];
                    hv__dc_wtile(d, gr, xr, r0, r0 + R < d->OH ? r0 + R : d->OH, sums);
                    for (j = 0; j < HV__DC_WC && b * HV__DC_WC + j < d->cout; j++)
                        for (m = 0; m < HV__DC_WB && t0 + m < d->K; m++) acc[((b - b0) * HV__DC_WC + j) * d->K + t0 + m] += sums[j * HV__DC_WB + m];
                }
            }
    }
    for (b = b0; b < b1; b++)
        for (k = 0; k < HV__DC_WC * d->K; k++) {
            int64_t o = b * HV__DC_WC + k / d->K;
            if (o < d->cout) gw[((gi * c->cout_g + o) * d->K) + k % d->K] += (float)acc[(b - b0) * HV__DC_WC * d->K + k];
        }
}
/* gw += dL/dw, direct; 0 when the arena had no room */
static int hv__dconv_bwd_weight(hv_ctx *ctx, const hv__conv_geo *c, const float *x, const float *gy, float *gw) {
    hv__dc d = hv__dc_geometry(c, NULL, NULL);
    const int64_t nb = (d.cout + HV__DC_WC - 1) / HV__DC_WC, work = c->N * c->cout * c->P * d.K, per = hv__dc_scratch_floats(&d);
    const int nt = hv__fast_threads(ctx, work);
    /* units: a group, or ranges of its channel blocks when there are fewer groups than threads */
    const int64_t split = c->G >= nt ? 1 : (nt + c->G - 1) / c->G < nb ? (nt + c->G - 1) / c->G : nb;
    const int64_t nacc = (nb + split - 1) / split * HV__DC_WC * d.K; /* the widest range's */
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    int64_t *off = (int64_t *)hv__arena_alloc(&ctx->arena, sizeof(int64_t) * (size_t)d.K);
    float *scratch = hv__dc_zero(ctx, per, nt);
    double *acc = (double *)hv__arena_alloc(&ctx->arena, sizeof(double) * (size_t)(nacc * nt));
    int64_t u;
    if (!off || !scratch || !acc) {
        hv__arena_rewind(&ctx->arena, mark);
        return 0;
    }
    hv__dc_offsets(&d, off);
    HV__PARALLEL_FOR(ctx, work)
    for (u = 0; u < c->G * split; u++) {
        int64_t part = u % split, tid = hv__fast_tid();
        hv__dc_bwdw_block(c, &d, x, gy, gw, off, u / split, nb * part / split, nb * (part + 1) / split, scratch + per * tid, acc + nacc * tid);
    }
    hv__arena_rewind(&ctx->arena, mark);
    return 1;
}

static void hv__fast_conv2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *w, const hv_tensor *b, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(x, y, w, g);
    if (!hv__dconv_pick(&c, 0) ||
        !hv__dconv(ctx, &c, (const float *)x->data, (float *)y->data, (const float *)w->data, b ? (const float *)b->data : NULL, 0))
        hv__conv2d_gemm(ctx, y, x, w, b, g);
}
static void hv__fast_conv2d_bwd_data(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const hv_tensor *w, const int64_t *g) {
    hv__conv_geo c = hv__conv_geometry(gx, gy, w, g);
    if (!hv__dconv_pick(&c, 1) || !hv__dconv(ctx, &c, (const float *)gy->data, (float *)gx->data, (const float *)w->data, NULL, 1))
        hv__conv2d_gemm_bwd_data(ctx, gx, gy, w, g);
}
static void hv__fast_conv2d_bwd_weight(hv_ctx *ctx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                       const int64_t *g) {
    if (gw) {
        hv__conv_geo c = hv__conv_geometry(x, gy, gw, g);
        if (hv__dconv_pick(&c, 0) && hv__dconv_bwd_weight(ctx, &c, (const float *)x->data, (const float *)gy->data, (float *)gw->data))
            gw = NULL; /* done: the GEMM path below does the bias only */
    }
    hv__conv2d_gemm_bwd_weight(ctx, gw, gb, x, gy, g);
}
/* HV-SECTION cpu-fast-conv END */

/* ---- sums ------------------------------------------------------------------------------------
   A long float sum in a fixed order: VN lanes of float partial sums over runs of HV__RUN
   elements, each run's total added to a double. Close to the reference's double sums (relative
   error ~1e-7 for data of one sign) at the speed of float vectors. */
#define HV__RUN (16 * HV__VN) /* 16 terms per lane: 256 floats with AVX-512, 16 in the scalar build */
static double hv__sum_f(const float *p, int64_t n) {
    double total = 0;
    int64_t r, j;
    for (r = 0; r < n; r += HV__RUN) {
        int64_t e = r + HV__RUN < n ? r + HV__RUN : n;
        hv__vf acc = hv__vzero();
        for (j = r; j + HV__VN <= e; j += HV__VN) acc = hv__vadd(acc, hv__vld(p + j));
        if (j < e) acc = hv__vadd(acc, hv__vldn(p + j, e - j));
        total += (double)hv__vhsum(acc);
    }
    return total;
}
/* sum of p - c: with c a value of the data (the first), float partial sums stay small for data far
   from 0, as the rows of a layer norm can be */
static double hv__sum_dev(const float *p, int64_t n, float c) {
    double total = 0;
    int64_t r, j;
    const hv__vf cv = hv__vset(c);
    for (r = 0; r < n; r += HV__RUN) {
        int64_t e = r + HV__RUN < n ? r + HV__RUN : n;
        hv__vf acc = hv__vzero();
        for (j = r; j + HV__VN <= e; j += HV__VN) acc = hv__vadd(acc, hv__vsub(hv__vld(p + j), cv));
        if (j < e) acc = hv__vadd(acc, hv__vsub(hv__vldnf(p + j, e - j, c), cv));
        total += (double)hv__vhsum(acc);
    }
    return total;
}
/* sum of (p - mu)^2 */
static double hv__sum_sqdev(const float *p, int64_t n, float mu) {
    double total = 0;
    int64_t r, j;
    const hv__vf m = hv__vset(mu);
    for (r = 0; r < n; r += HV__RUN) {
        int64_t e = r + HV__RUN < n ? r + HV__RUN : n;
        hv__vf acc = hv__vzero(), d;
        for (j = r; j + HV__VN <= e; j += HV__VN) {
            d = hv__vsub(hv__vld(p + j), m);
            acc = hv__vfma(d, d, acc);
        }
        if (j < e) {
            d = hv__vsub(hv__vldnf(p + j, e - j, mu), m);
            acc = hv__vfma(d, d, acc);
        }
        total += (double)hv__vhsum(acc);
    }
    return total;
}
/* sum of a * b */
static double hv__sum_prod(const float *a, const float *b, int64_t n) {
    double total = 0;
    int64_t r, j;
    for (r = 0; r < n; r += HV__RUN) {
        int64_t e = r + HV__RUN < n ? r + HV__RUN : n;
        hv__vf acc = hv__vzero();
        for (j = r; j + HV__VN <= e; j += HV__VN) acc = hv__vfma(hv__vld(a + j), hv__vld(b + j), acc);
        if (j < e) acc = hv__vfma(hv__vldn(a + j, e - j), hv__vldn(b + j, e - j), acc);
        total += (double)hv__vhsum(acc);
    }
    return total;
}
/* the max of n >= 1 floats; NaN when one is NaN */
static float hv__max_f(const float *p, int64_t n) {
    hv__vf m = hv__vset(-INFINITY), nan = hv__vzero(), v;
    int64_t j;
    for (j = 0; j < n; j += HV__VN) {
        v = n - j >= HV__VN ? hv__vld(p + j) : hv__vldnf(p + j, n - j, -INFINITY);
        m = hv__vmax(m, v);
        nan = hv__vmax(nan, hv__visnan(v));
    }
    return hv__vhmax(nan) > 0 ? NAN : hv__vhmax(m);
}
/* Sums over rows (bias and norm-weight gradients) in blocks of HV__RBLK rows: each block adds
   its rows in order into float partial sums (a block per work item, any thread), then each
   column adds the blocks' partials in order in double. The rows are read once, in memory order,
   and no sum depends on the thread count. */
#define HV__RBLK 64
/* part[c] = sum over rows [r0, r1) of p[r][c] for c < D; part_xh[c] (when x) of p (x - mean) rstd */
static void hv__block_col_sums(const float *p, const float *x, const float *mean, const float *rstd, int64_t r0, int64_t r1, int64_t D,
                               float *part, float *part_xh) {
    int64_t r, j;
    memset(part, 0, sizeof(float) * (size_t)D);
    if (x) memset(part_xh, 0, sizeof(float) * (size_t)D);
    for (r = r0; r < r1; r++) {
        const float *pr = p + r * D;
        if (x) {
            const float *xr = x + r * D;
            const hv__vf mv = hv__vset(mean[r]), rv = hv__vset(rstd[r]);
            HV__SPAN(j, D, W, {
                hv__vf g = hv__vldw(pr + j, W);
                hv__vstw(part + j, hv__vadd(hv__vldw(part + j, W), g), W);
                hv__vstw(part_xh + j, hv__vfma(g, hv__vmul(hv__vsub(hv__vldw(xr + j, W), mv), rv), hv__vldw(part_xh + j, W)), W);
            })
        } else {
            HV__SPAN(j, D, W, { hv__vstw(part + j, hv__vadd(hv__vldw(part + j, W), hv__vldw(pr + j, W)), W); })
        }
    }
}
/* out[c] (+)= the nblk partials (nblk x D) of column c, added in order in double */
static void hv__add_partials(float *out, int accumulate, const float *part, int64_t nblk, int64_t D) {
    int64_t c, k;
    for (c = 0; c < D; c++) {
        double s = 0;
        for (k = 0; k < nblk; k++) s += (double)part[k * D + c];
        out[c] = accumulate ? out[c] + (float)s : (float)s;
    }
}

/* ---- softmax, log-softmax --------------------------------------------------------------------
   Rows along the last axis (inner 1) run with horizontal vectors; rows along another axis (inner
   > 1) with VN neighbouring rows per vector, walking down the axis. */
static void hv__fast_softmax(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x, int64_t outer, int64_t n, int64_t inner) {
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t r;
    if (inner == 1) {
        HV__PARALLEL_FOR(ctx, outer * n)
        for (r = 0; r < outer; r++) {
            const float *xr = px + r * n;
            float *yr = py + r * n, m = hv__max_f(xr, n), inv;
            const hv__vf mv = hv__vset(m);
            double s = 0;
            int64_t j, r0;
            for (r0 = 0; r0 < n; r0 += HV__RUN) { /* y = exp(x - m) and its sum, in runs as hv__sum_f */
                int64_t e = r0 + HV__RUN < n ? r0 + HV__RUN : n;
                hv__vf acc = hv__vzero(), p;
                for (j = r0; j + HV__VN <= e; j += HV__VN) {
                    p = hv__vexp(hv__vsub(hv__vld(xr + j), mv));
                    if (!is_log) hv__vst(yr + j, p);
                    acc = hv__vadd(acc, p);
                }
                if (j < e) {
                    p = hv__vexp(hv__vsub(hv__vldnf(xr + j, e - j, -INFINITY), mv));
                    if (!is_log) hv__vstn(yr + j, p, e - j);
                    acc = hv__vadd(acc, p);
                }
                s += (double)hv__vhsum(acc);
            }
            if (is_log) { /* (x - m) - log s, as the reference */
                const hv__vf ls = hv__vset((float)log(s));
                for (j = 0; j + HV__VN <= n; j += HV__VN) hv__vst(yr + j, hv__vsub(hv__vsub(hv__vld(xr + j), mv), ls));
                if (j < n) hv__vstn(yr + j, hv__vsub(hv__vsub(hv__vldn(xr + j, n - j), mv), ls), n - j);
            } else {
                inv = (float)(1.0 / s);
                for (j = 0; j + HV__VN <= n; j += HV__VN) hv__vst(yr + j, hv__vmul(hv__vld(yr + j), hv__vset(inv)));
                if (j < n) hv__vstn(yr + j, hv__vmul(hv__vldn(yr + j, n - j), hv__vset(inv)), n - j);
            }
        }
    } else {
        const int64_t nblk = (inner + HV__VN - 1) / HV__VN;
        HV__PARALLEL_FOR(ctx, outer * n * inner)
        for (r = 0; r < outer * nblk; r++) { /* VN rows: columns c0.. of the (n, inner) slab of outer index o */
            const int64_t o = r / nblk, c0 = (r % nblk) * HV__VN, w = inner - c0 < HV__VN ? inner - c0 : HV__VN;
            const float *xs = px + o * n * inner + c0;
            float *ys = py + o * n * inner + c0;
            hv__vf m = hv__vset(-INFINITY), s = hv__vzero(), nan = hv__vzero(), v;
            int64_t j;
            for (j = 0; j < n; j++) {
                v = hv__vldn(xs + j * inner, w);
                m = hv__vmax(m, v);
                nan = hv__vmax(nan, hv__visnan(v));
            }
            m = hv__vsel_gt(nan, hv__vzero(), hv__vset(NAN), m);
            for (j = 0; j < n; j++) s = hv__vadd(s, hv__vexp(hv__vsub(hv__vldn(xs + j * inner, w), m)));
            if (is_log) {
                float sv[HV__VN], lv[HV__VN];
                int64_t t;
                hv__vst(sv, s);
                for (t = 0; t < HV__VN; t++) lv[t] = logf(sv[t]);
                for (j = 0; j < n; j++) hv__vstn(ys + j * inner, hv__vsub(hv__vsub(hv__vldn(xs + j * inner, w), m), hv__vld(lv)), w);
            } else {
                hv__vf inv = hv__vdiv(hv__vset(1.0f), s);
                for (j = 0; j < n; j++) hv__vstn(ys + j * inner, hv__vmul(hv__vexp(hv__vsub(hv__vldn(xs + j * inner, w), m)), inv), w);
            }
        }
    }
}
static void hv__fast_softmax_bwd(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy, int64_t outer,
                                 int64_t n, int64_t inner) {
    const float *py = (const float *)y->data, *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data;
    int64_t r;
    if (inner == 1) {
        HV__PARALLEL_FOR(ctx, outer * n)
        for (r = 0; r < outer; r++) {
            const float *yr = py + r * n, *gr = pg + r * n;
            float *gxr = pgx + r * n;
            const hv__vf s = hv__vset((float)(is_log ? hv__sum_f(gr, n) : hv__sum_prod(gr, yr, n)));
            int64_t j;
            /* log: gx += gy - softmax sum(gy); else gx += y (gy - sum(gy y)) */
            if (is_log) {
                HV__SPAN(j, n, W, {
                    hv__vf d = hv__vsub(hv__vldw(gr + j, W), hv__vmul(hv__vexp(hv__vldw(yr + j, W)), s));
                    hv__vstw(gxr + j, hv__vadd(hv__vldw(gxr + j, W), d), W);
                })
            } else {
                HV__SPAN(j, n, W, {
                    hv__vf d = hv__vmul(hv__vldw(yr + j, W), hv__vsub(hv__vldw(gr + j, W), s));
                    hv__vstw(gxr + j, hv__vadd(hv__vldw(gxr + j, W), d), W);
                })
            }
        }
    } else {
        const int64_t nblk = (inner + HV__VN - 1) / HV__VN;
        HV__PARALLEL_FOR(ctx, outer * n * inner)
        for (r = 0; r < outer * nblk; r++) {
            const int64_t o = r / nblk, c0 = (r % nblk) * HV__VN, w = inner - c0 < HV__VN ? inner - c0 : HV__VN, base = o * n * inner + c0;
            hv__vf s = hv__vzero();
            int64_t j;
            for (j = 0; j < n; j++) {
                hv__vf gv = hv__vldn(pg + base + j * inner, w);
                s = is_log ? hv__vadd(s, gv) : hv__vfma(gv, hv__vldn(py + base + j * inner, w), s);
            }
            for (j = 0; j < n; j++) {
                const int64_t k = base + j * inner;
                hv__vf yv = hv__vldn(py + k, w), gv = hv__vldn(pg + k, w);
                hv__vf d = is_log ? hv__vsub(gv, hv__vmul(hv__vexp(yv), s)) : hv__vmul(yv, hv__vsub(gv, s));
                hv__vstn(pgx + k, hv__vadd(hv__vldn(pgx + k, w), d), w);
            }
        }
    }
}

/* ---- layer norm: statistics in float vectors over two passes (mean, then squared deviations),
   summed in runs into doubles; weight and bias gradients per block of columns, rows in order ---- */
static void hv__fast_layer_norm(hv_ctx *ctx, hv_tensor *y, hv_tensor *mean, hv_tensor *rstd, const hv_tensor *x, const hv_tensor *w,
                                const hv_tensor *b, float eps) {
    int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D, r;
    const float *px = (const float *)x->data, *pw = w ? (const float *)w->data : NULL, *pb = b ? (const float *)b->data : NULL;
    float *py = (float *)y->data, *pm = (float *)mean->data, *ps = (float *)rstd->data;
    HV__PARALLEL_FOR(ctx, rows * D)
    for (r = 0; r < rows; r++) {
        const float *xr = px + r * D;
        double mud = (double)xr[0] + hv__sum_dev(xr, D, xr[0]) / (double)D;
        float *yr = py + r * D, mu = (float)mud, mu_lo = (float)(mud - (double)mu);
        float rs = (float)(1.0 / sqrt(hv__sum_sqdev(xr, D, mu) / (double)D + eps));
        const hv__vf mv = hv__vset(mu), mlo = hv__vset(mu_lo), rv = hv__vset(rs);
        int64_t j;
        for (j = 0; j < D; j += HV__VN) { /* x - mean in two parts: keeps the digits of rows far from 0 */
            int64_t n = D - j < HV__VN ? D - j : HV__VN;
            hv__vf v = hv__vmul(hv__vsub(hv__vsub(hv__vldn(xr + j, n), mv), mlo), rv);
            if (pw) v = hv__vmul(v, hv__vldn(pw + j, n));
            if (pb) v = hv__vadd(v, hv__vldn(pb + j, n));
            hv__vstn(yr + j, v, n);
        }
        pm[r] = mu;
        ps[r] = rs;
    }
}
/* gx = rstd (g - mean(g) - xhat mean(g xhat)) with g = gy w, row by row; the weight and bias
   gradients from the same pass over the rows (blocks of HV__RBLK rows, see hv__block_col_sums) */
static void hv__ln_bwd_row(float *gxr, const float *xr, const float *gr, const float *pw, float mu, float rs, int64_t D) {
    const hv__vf mv = hv__vset(mu), rv = hv__vset(rs);
    hv__vf sg = hv__vzero(), sgx = hv__vzero(), msg, msgx;
    double dsg = 0, dsgx = 0;
    int64_t j, run = 0;
    HV__SPAN(j, D, W, {
        hv__vf g = hv__vldw(gr + j, W), xh = hv__vmul(hv__vsub(hv__vldw(xr + j, W), mv), rv);
        if (pw) g = hv__vmul(g, hv__vldw(pw + j, W));
        sg = hv__vadd(sg, g);
        sgx = hv__vfma(g, xh, sgx); /* lanes past D: g = 0 */
        if ((run += HV__VN) >= HV__RUN) {
            dsg += (double)hv__vhsum(sg);
            dsgx += (double)hv__vhsum(sgx);
            sg = sgx = hv__vzero();
            run = 0;
        }
    })
    dsg += (double)hv__vhsum(sg);
    dsgx += (double)hv__vhsum(sgx);
    msg = hv__vset((float)(dsg / (double)D));
    msgx = hv__vset((float)(dsgx / (double)D));
    HV__SPAN(j, D, W, {
        hv__vf g = hv__vldw(gr + j, W), xh = hv__vmul(hv__vsub(hv__vldw(xr + j, W), mv), rv);
        if (pw) g = hv__vmul(g, hv__vldw(pw + j, W));
        hv__vstw(gxr + j, hv__vadd(hv__vldw(gxr + j, W), hv__vmul(rv, hv__vsub(hv__vsub(g, msg), hv__vmul(xh, msgx)))), W);
    })
}
static void hv__fast_layer_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *w,
                                    const hv_tensor *mean, const hv_tensor *rstd, const hv_tensor *gy) {
    const int64_t D = x->shape[x->ndim - 1], rows = hv_numel(x) / D, nblk = (rows + HV__RBLK - 1) / HV__RBLK;
    const float *px = (const float *)x->data, *pw = w ? (const float *)w->data : NULL, *pm = (const float *)mean->data;
    const float *ps = (const float *)rstd->data, *pg = (const float *)gy->data;
    float *pgx = gx ? (float *)gx->data : NULL, *part = NULL;
    int64_t blk;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    if ((gw || gb) && !(part = hv__scratch(ctx, 2 * nblk * D))) { /* (nblk, D) sums of gy, then of gy xhat */
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_layer_norm_bwd(ctx, gx, gw, gb, x, w, mean, rstd, gy);
        return;
    }
    HV__PARALLEL_FOR(ctx, rows * D)
    for (blk = 0; blk < nblk; blk++) {
        const int64_t r0 = blk * HV__RBLK, r1 = r0 + HV__RBLK < rows ? r0 + HV__RBLK : rows;
        int64_t r;
        if (pgx)
            for (r = r0; r < r1; r++) hv__ln_bwd_row(pgx + r * D, px + r * D, pg + r * D, pw, pm[r], ps[r], D);
        if (part) hv__block_col_sums(pg, gw ? px : NULL, pm, ps, r0, r1, D, part + blk * D, part + (nblk + blk) * D);
    }
    if (gb) hv__add_partials((float *)gb->data, 1, part, nblk, D);
    if (gw) hv__add_partials((float *)gw->data, 1, part + nblk * D, nblk, D);
    hv__arena_rewind(&ctx->arena, mark);
}

/* ---- elementwise: contiguous spans as vectors, everything else by the reference row walk -----
   A contiguous output and inputs are one flat span cut in chunks of HV__CHUNK (parallel, any
   split: no element depends on another); rows whose last axis has stride 1 (or 0: broadcast) run
   as vector rows. */
#define HV__CHUNK 16384
static int hv__flat(const hv_tensor *t) { return hv_is_contiguous(t); }

/* o[j] = op(x[j]) for j < n (both stride 1); the ops the reference computes with libm's tanhf and
   logf keep them (lane by lane) */
static void hv__unary_span(int op, float alpha, float *o, const float *x, int64_t n) {
    int64_t j;
    const hv__vf a = hv__vset(alpha), zero = hv__vzero(), one = hv__vset(1.0f);
#define HV__U(expr) HV__SPAN(j, n, W, { hv__vf v = hv__vldw(x + j, W); hv__vstw(o + j, (expr), W); })
    switch (op) {
    case HV__EXP: HV__U(hv__vexp(v)); break;
    case HV__SQRT: HV__U(hv__vsqrt(v)); break;
    case HV__SIGMOID: HV__U(hv__vdiv(one, hv__vadd(one, hv__vexp(hv__vsub(zero, v))))); break;
    case HV__RELU: HV__U(hv__vsel_gt(v, zero, v, zero)); break; /* NaN -> 0, as x > 0 ? x : 0 */
    case HV__LEAKY_RELU: HV__U(hv__vsel_gt(v, zero, v, hv__vmul(a, v))); break;
    case HV__GELU: HV__U(hv__vgelu(v)); break;
    case HV__SCALE: HV__U(hv__vmul(a, v)); break;
    case HV__ADD_SCALAR: HV__U(hv__vadd(v, a)); break;
    default:
        for (j = 0; j < n; j++) o[j] = hv__unary_f(op, alpha, x[j]);
    }
#undef HV__U
}
/* g[j] += gy[j] * d op(x[j]) / dx, from x and y = op(x) */
static void hv__unary_bwd_span(int op, float alpha, float *g, const float *x, const float *y, const float *gy, int64_t n) {
    int64_t j;
    const hv__vf a = hv__vset(alpha), zero = hv__vzero(), one = hv__vset(1.0f);
#define HV__UB(expr)                                                                               \
    HV__SPAN(j, n, W, {                                                                            \
        hv__vf xv = hv__vldw(x + j, W), yv = hv__vldw(y + j, W);                                   \
        hv__vstw(g + j, hv__vfma(hv__vldw(gy + j, W), (expr), hv__vldw(g + j, W)), W);             \
        (void)xv;                                                                                  \
        (void)yv;                                                                                  \
    })
    switch (op) {
    case HV__EXP: HV__UB(yv); break;
    case HV__LOG: HV__UB(hv__vdiv(one, xv)); break;
    case HV__SQRT: HV__UB(hv__vdiv(hv__vset(0.5f), yv)); break;
    case HV__TANH: HV__UB(hv__vsub(one, hv__vmul(yv, yv))); break;
    case HV__SIGMOID: HV__UB(hv__vmul(yv, hv__vsub(one, yv))); break;
    case HV__RELU: HV__UB(hv__vsel_gt(xv, zero, one, zero)); break;
    case HV__LEAKY_RELU: HV__UB(hv__vsel_gt(xv, zero, one, a)); break;
    case HV__GELU: HV__UB(hv__vgelu_d(xv)); break;
    case HV__SCALE: HV__UB(a); break;
    default: HV__UB(one); break;
    }
#undef HV__UB
}
static void hv__fast_unary(hv_ctx *ctx, int op, float alpha, hv_tensor *out, const hv_tensor *x) {
    int64_t n = hv_numel(out), c;
    if (!hv__flat(out) || !hv__flat(x)) {
        if (hv__row_stride(out) == 1 && hv__row_stride(x) == 1) {
            int64_t r, rows = hv__rows(out), len = hv__row_len(out);
            HV__PARALLEL_FOR(ctx, n)
            for (r = 0; r < rows; r++)
                hv__unary_span(op, alpha, (float *)out->data + hv__row_offset(out, r), (const float *)x->data + hv__row_offset(x, r), len);
        } else {
            hv__cpu_unary(ctx, op, alpha, out, x);
        }
        return;
    }
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < n; c += HV__CHUNK)
        hv__unary_span(op, alpha, (float *)out->data + c, (const float *)x->data + c, n - c < HV__CHUNK ? n - c : HV__CHUNK);
}
static void hv__fast_unary_bwd(hv_ctx *ctx, int op, float alpha, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y,
                               const hv_tensor *gy) {
    int64_t n = hv_numel(gx), c;
    if (!hv__flat(gx) || !hv__flat(x) || !hv__flat(y) || !hv__flat(gy)) {
        hv__cpu_unary_bwd(ctx, op, alpha, gx, x, y, gy);
        return;
    }
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < n; c += HV__CHUNK)
        hv__unary_bwd_span(op, alpha, (float *)gx->data + c, (const float *)x->data + c, (const float *)y->data + c, (const float *)gy->data + c,
                           n - c < HV__CHUNK ? n - c : HV__CHUNK);
}

/* o[j] = a[j sa] (op) b[j sb] with sa, sb in {0, 1} */
static void hv__binary_span(int op, float *o, const float *a, int64_t sa, const float *b, int64_t sb, int64_t n) {
    int64_t j;
#define HV__B(vop)                                                                                 \
    HV__SPAN(j, n, W, {                                                                            \
        hv__vf av = sa ? hv__vldw(a + j, W) : hv__vset(a[0]), bv = sb ? hv__vldw(b + j, W) : hv__vset(b[0]); \
        hv__vstw(o + j, vop(av, bv), W);                                                           \
    })
    switch (op) {
    case HV__ADD: HV__B(hv__vadd); break;
    case HV__SUB: HV__B(hv__vsub); break;
    case HV__MUL: HV__B(hv__vmul); break;
    default: HV__B(hv__vdiv); break;
    }
#undef HV__B
}
static void hv__fast_binary(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *a, const hv_tensor *b) {
    int64_t n = hv_numel(out), sa = hv__row_stride(a), sb = hv__row_stride(b), c, r;
    if (hv__flat(out) && hv__flat(a) && hv__flat(b)) {
        HV__PARALLEL_FOR(ctx, n)
        for (c = 0; c < n; c += HV__CHUNK)
            hv__binary_span(op, (float *)out->data + c, (const float *)a->data + c, 1, (const float *)b->data + c, 1,
                            n - c < HV__CHUNK ? n - c : HV__CHUNK);
    } else if (hv__flat(out) && (sa == 0 || sa == 1) && (sb == 0 || sb == 1)) {
        int64_t rows = hv__rows(out), len = hv__row_len(out);
        HV__PARALLEL_FOR(ctx, n)
        for (r = 0; r < rows; r++)
            hv__binary_span(op, (float *)out->data + r * len, (const float *)a->data + hv__row_offset(a, r), sa,
                            (const float *)b->data + hv__row_offset(b, r), sb, len);
    } else {
        hv__cpu_binary(ctx, op, out, a, b);
    }
}

/* layout copies: flat, or rows whose last axis has stride 1 */
static void hv__fast_copy(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, int accumulate) {
    int64_t n = hv_numel(dst), r, c;
    if (!accumulate || dst->dtype != HV_F32) {
        if (!accumulate && !(hv__flat(dst) && hv__flat(src)) && hv__row_stride(dst) == 1 && hv__row_stride(src) == 1) {
            int64_t rows = hv__rows(dst), len = hv__row_len(dst);
            size_t es = hv__dtype_size(dst->dtype);
            HV__PARALLEL_FOR(ctx, n)
            for (r = 0; r < rows; r++)
                memcpy((char *)dst->data + hv__row_offset(dst, r) * (int64_t)es, (const char *)src->data + hv__row_offset(src, r) * (int64_t)es,
                       es * (size_t)len);
            return;
        }
        hv__cpu_copy(ctx, dst, src, accumulate);
        return;
    }
    if (hv__flat(dst) && hv__flat(src)) {
        HV__PARALLEL_FOR(ctx, n)
        for (c = 0; c < n; c += HV__CHUNK)
            hv__binary_span(HV__ADD, (float *)dst->data + c, (const float *)dst->data + c, 1, (const float *)src->data + c, 1,
                            n - c < HV__CHUNK ? n - c : HV__CHUNK);
    } else if (hv__row_stride(dst) == 1 && hv__row_stride(src) == 1) {
        int64_t rows = hv__rows(dst), len = hv__row_len(dst);
        HV__PARALLEL_FOR(ctx, n)
        for (r = 0; r < rows; r++) {
            float *d = (float *)dst->data + hv__row_offset(dst, r);
            hv__binary_span(HV__ADD, d, d, 1, (const float *)src->data + hv__row_offset(src, r), 1, len);
        }
    } else {
        hv__cpu_copy(ctx, dst, src, accumulate);
    }
}

/* ---- reductions: over trailing axes (row sums) or leading axes (column sums, e.g. the bias
   gradient of a linear layer) of a contiguous x; other patterns run the reference ---------------- */
static void hv__fast_reduce(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x) {
    int d, seen_red = 0, seen_keep = 0, lead = 1, trail = 1;
    int64_t rows, len, r;
    const float *px = (const float *)x->data;
    float *po = (float *)out->data;
    /* classify the axes (extent-1 axes of x do not matter) */
    for (d = 0; d < x->ndim; d++) {
        if (x->shape[d] == 1) continue;
        if (out->shape[d] == 1) {
            if (seen_keep) lead = 0; /* a reduced axis after a kept one */
            seen_red = 1;
        } else {
            if (seen_red) trail = 0; /* a kept axis after a reduced one */
            seen_keep = 1;
        }
    }
    if (!hv__flat(x) || !hv__flat(out) || !seen_red || !seen_keep || !(lead || trail) || hv_numel(x) == 0) {
        hv__cpu_reduce(ctx, op, out, x);
        return;
    }
    if (trail) { /* out (rows) from x (rows, len) */
        rows = hv_numel(out);
        len = hv_numel(x) / rows;
        HV__PARALLEL_FOR(ctx, rows * len)
        for (r = 0; r < rows; r++) po[r] = op == HV__RED_SUM ? (float)hv__sum_f(px + r * len, len) : hv__max_f(px + r * len, len);
    } else { /* out (len) from x (rows, len): blocks of rows, then the blocks in order per column */
        len = hv_numel(out);
        rows = hv_numel(x) / len;
        if (op == HV__RED_SUM) {
            const int64_t nblk = (rows + HV__RBLK - 1) / HV__RBLK;
            hv__arena_mark mark = hv__arena_save(&ctx->arena);
            float *part = hv__scratch(ctx, nblk * len);
            if (!part) {
                hv__arena_rewind(&ctx->arena, mark);
                hv__cpu_reduce(ctx, op, out, x);
                return;
            }
            HV__PARALLEL_FOR(ctx, rows * len)
            for (r = 0; r < nblk; r++)
                hv__block_col_sums(px, NULL, NULL, NULL, r * HV__RBLK, (r + 1) * HV__RBLK < rows ? (r + 1) * HV__RBLK : rows, len,
                                   part + r * len, NULL);
            hv__add_partials(po, 0, part, nblk, len);
            hv__arena_rewind(&ctx->arena, mark);
        } else {
            HV__PARALLEL_FOR(ctx, rows * len)
            for (r = 0; r < len; r++) { /* max down the column: first value, then NaN wins as in the reference */
                float m = px[r];
                int64_t q;
                for (q = 1; q < rows; q++) {
                    float v = px[q * len + r];
                    if (v > m || v != v) m = v;
                }
                po[r] = m;
            }
        }
    }
}

/* ---- gather and scatter: rows of `inner` floats as vectors ------------------------------------ */
static void hv__fast_gather(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                            int64_t k, int64_t inner) {
    const float *ps = (const float *)src->data;
    const int32_t *pi = (const int32_t *)idx->data;
    float *pd = (float *)dst->data;
    int64_t r, rows = outer * k;
    HV__PARALLEL_FOR(ctx, rows * inner)
    for (r = 0; r < rows; r++) {
        const float *s = ps + ((r / k) * n + pi[r]) * inner;
        float *dr = pd + r * inner;
        if (accumulate) hv__binary_span(HV__ADD, dr, dr, 1, s, 1, inner);
        else memcpy(dr, s, sizeof(float) * (size_t)inner);
    }
}
/* one outer slice per thread, its picks added in the order of idx: the reference's order */
static void hv__fast_scatter_add(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n, int64_t k,
                                 int64_t inner) {
    const float *ps = (const float *)src->data;
    const int32_t *pi = (const int32_t *)idx->data;
    float *pd = (float *)dst->data;
    int64_t o;
    if (outer < hv__fast_threads(ctx, outer * k * inner) || inner < HV__VN) {
        hv__cpu_scatter_add(ctx, dst, src, idx, outer, n, k, inner);
        return;
    }
    HV__PARALLEL_FOR(ctx, outer * k * inner)
    for (o = 0; o < outer; o++) {
        int64_t j;
        for (j = 0; j < k; j++) {
            float *d = pd + (o * n + pi[o * k + j]) * inner;
            hv__binary_span(HV__ADD, d, d, 1, ps + (o * k + j) * inner, 1, inner);
        }
    }
}

/* ---- losses ----------------------------------------------------------------------------------- */
static void hv__fast_cross_entropy(hv_ctx *ctx, hv_tensor *loss, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits,
                                   const hv_tensor *labels) {
    int64_t N = logits->shape[0], C = logits->shape[1], r;
    const float *px = (const float *)logits->data;
    const int32_t *py = (const int32_t *)labels->data;
    float *pl = (float *)lse->data, *prl = (float *)row_loss->data;
    double total = 0;
    HV__PARALLEL_FOR(ctx, N * C)
    for (r = 0; r < N; r++) {
        const float *xr = px + r * C;
        float m = hv__max_f(xr, C);
        const hv__vf mv = hv__vset(m);
        double s = 0;
        int64_t j, r0;
        for (r0 = 0; r0 < C; r0 += HV__RUN) {
            int64_t e = r0 + HV__RUN < C ? r0 + HV__RUN : C;
            hv__vf acc = hv__vzero();
            for (j = r0; j + HV__VN <= e; j += HV__VN) acc = hv__vadd(acc, hv__vexp(hv__vsub(hv__vld(xr + j), mv)));
            if (j < e) acc = hv__vadd(acc, hv__vexp(hv__vsub(hv__vldnf(xr + j, e - j, -INFINITY), mv)));
            s += (double)hv__vhsum(acc);
        }
        pl[2 * r] = m;
        pl[2 * r + 1] = (float)log(s);
        prl[r] = (float)((m - xr[py[r]]) + log(s));
    }
    for (r = 0; r < N; r++) total += prl[r];
    *(float *)loss->data = (float)(total / (double)N);
}
static void hv__fast_cross_entropy_bwd(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                                       const hv_tensor *lse, const hv_tensor *gloss) {
    int64_t N = logits->shape[0], C = logits->shape[1], r;
    const float *px = (const float *)logits->data, *pl = (const float *)lse->data;
    const int32_t *py = (const int32_t *)labels->data;
    float *pg = (float *)glogits->data, g = *(const float *)gloss->data / (float)N;
    HV__PARALLEL_FOR(ctx, N * C)
    for (r = 0; r < N; r++) {
        const float *xr = px + r * C;
        float *gr = pg + r * C;
        const hv__vf m = hv__vset(pl[2 * r]), ls = hv__vset(pl[2 * r + 1]), gv = hv__vset(g);
        int64_t j, w;
        for (j = 0; j < C; j += HV__VN) { /* g softmax, then -g at the label */
            w = C - j < HV__VN ? C - j : HV__VN;
            hv__vstn(gr + j, hv__vfma(gv, hv__vexp(hv__vsub(hv__vsub(hv__vldn(xr + j, w), m), ls)), hv__vldn(gr + j, w)), w);
        }
        gr[py[r]] -= g;
    }
}

/* mean of (a - b)^2 or |a - b|: fixed chunks of HV__CHUNK summed in parallel (runs in double), the
   chunk sums added in order, so the result does not depend on the threads */
static void hv__fast_diff_loss(hv_ctx *ctx, int mode, hv_tensor *loss, const hv_tensor *a, const hv_tensor *b) {
    int64_t n = hv_numel(a), nch = (n + HV__CHUNK - 1) / HV__CHUNK, c;
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    double *part = (double *)hv__arena_alloc(&ctx->arena, sizeof(double) * (size_t)nch), s = 0;
    if (!part) {
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_diff_loss(ctx, mode, loss, a, b);
        return;
    }
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < nch; c++) {
        int64_t e = (c + 1) * HV__CHUNK < n ? (c + 1) * HV__CHUNK : n, r0, j, w;
        double t = 0;
        for (r0 = c * HV__CHUNK; r0 < e; r0 += HV__RUN) {
            int64_t re = r0 + HV__RUN < e ? r0 + HV__RUN : e;
            hv__vf acc = hv__vzero();
            for (j = r0; j < re; j += HV__VN) {
                hv__vf d;
                w = re - j < HV__VN ? re - j : HV__VN;
                d = hv__vsub(hv__vldn(pa + j, w), hv__vldn(pb + j, w));
                acc = mode == HV__LOSS_MSE ? hv__vfma(d, d, acc) : hv__vadd(acc, hv__vabs(d));
            }
            t += (double)hv__vhsum(acc);
        }
        part[c] = t;
    }
    for (c = 0; c < nch; c++) s += part[c];
    *(float *)loss->data = (float)(s / (double)n);
    hv__arena_rewind(&ctx->arena, mark);
}
static void hv__fast_diff_loss_bwd(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                                   const hv_tensor *gloss) {
    int64_t n = hv_numel(a), c;
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    float *pga = ga ? (float *)ga->data : NULL, *pgb = gb ? (float *)gb->data : NULL;
    const float g = *(const float *)gloss->data / (float)n;
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < n; c += HV__CHUNK) {
        const hv__vf gv = hv__vset(g), g2 = hv__vset(2.0f * g), zero = hv__vzero();
        int64_t e = c + HV__CHUNK < n ? c + HV__CHUNK : n, j, w;
        for (j = c; j < e; j += HV__VN) {
            hv__vf d, v;
            w = e - j < HV__VN ? e - j : HV__VN;
            d = hv__vsub(hv__vldn(pa + j, w), hv__vldn(pb + j, w));
            /* MSE 2 g d; L1 g sign(d), 0 at d = 0 (and NaN) */
            v = mode == HV__LOSS_MSE ? hv__vmul(g2, d) : hv__vsel_gt(d, zero, gv, hv__vsel_lt(d, zero, hv__vsub(zero, gv), zero));
            if (pga) hv__vstn(pga + j, hv__vadd(hv__vldn(pga + j, w), v), w);
            if (pgb) hv__vstn(pgb + j, hv__vsub(hv__vldn(pgb + j, w), v), w);
        }
    }
}

/* HV-SECTION cpu-fast END */

/* HV-SECTION cpu-fast-pool-bn BEGIN */
/* ---- fast kernels: pooling, bilinear resize, batch norm ---------------------------------------
   Forward pools: the interior columns of an output row (whole window inside the input columns)
   VN at a time, each lane walking its window's taps in the reference's order, so max, argmax and
   average are the reference's bits (the argmax is carried as the tap's offset, an exact float);
   the few edge columns run the reference's per-element code. Windows of stride 2 read their taps
   as a permute of two loads, other strides as a gather (hv__vlds).
   Resize forward: each input row is interpolated along W once per use (a row cache), then the
   output row is one vector blend of two such rows: the reference's operations, the same bits.
   Backward of the average pool and of the resize: per plane, each output row is first spread
   along a row buffer of input width (scalar, O(OW * KW)), which is then added into the input rows
   it touches as vectors. One thread owns a plane and walks it in a fixed order, so the bits do not
   depend on the thread count; they differ from the reference (which adds every term on its own)
   by rounding. Max-pool backward stays the reference's: a scatter through the argmax, one plane
   per thread, already as fast as the memory it touches.
   Batch norm: per channel, float-vector sums in runs into doubles (as hv__sum_f), two passes for
   the variance; y and gx as vectors along the spatial axis. Fewer than VN spatial elements per
   plane (BatchNorm1d) run the reference. */

/* VN floats p[0], p[s], ..., p[(VN - 1) s]; reads nothing past p[(VN - 1) s] */
HV__INLINE hv__vf hv__vlds(const float *p, int64_t s) {
    if (s == 1) return hv__vld(p);
#if defined(HV__FAST_AVX512)
    if (s == 2)
        return _mm512_permutex2var_ps(hv__vld(p), _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), hv__vldn(p + 16, 15));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)0xffff,
                                    _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)s)), p, 4);
#elif defined(HV__FAST_AVX2)
    if (s == 2) { /* a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs in order */
        __m256 t = _mm256_shuffle_ps(hv__vld(p), hv__vldn(p + 8, 7), _MM_SHUFFLE(2, 0, 2, 0));
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
    }
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)s)),
                                    _mm256_castsi256_ps(_mm256_set1_epi32(-1)), 4);
#else
    {
        float t[HV__VN];
        int i;
        for (i = 0; i < HV__VN; i++) t[i] = p[i * s];
        return hv__vld(t);
    }
#endif
}

/* the output columns [*a, *b) whose windows lie inside the input's W columns (an empty range at
   *a = *b when there are none: then every column is an edge column) */
static void hv__pool_inner_cols(const int64_t *g, int64_t W, int64_t OW, int64_t *a, int64_t *b) {
    const int64_t sw = g[HV__PG_SW], pw = g[HV__PG_PW], last = W + pw - g[HV__PG_KW];
    *a = (pw + sw - 1) / sw;
    *b = last >= 0 ? last / sw + 1 : 0;
    if (*b > OW) *b = OW;
    if (*a > *b) *a = *b;
}

/* the start of the next vector of interior columns at or after ve, or -1: whole vectors from a,
   then one ending at b (it may overlap the one before: those columns are computed twice, alike) */
static int64_t hv__pool_next_vec(int64_t ve, int64_t a, int64_t b) {
    if (b - a < HV__VN || ve >= b) return -1;
    return ve + HV__VN <= b ? ve : b - HV__VN;
}

static void hv__fast_max_pool2d(hv_ctx *ctx, hv_tensor *y, hv_tensor *argmax, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3], rows = y->shape[0] * y->shape[1] * OH;
    const int64_t KH = g[HV__PG_KH], KW = g[HV__PG_KW], sh = g[HV__PG_SH], sw = g[HV__PG_SW], ph = g[HV__PG_PH], pw = g[HV__PG_PW];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int32_t *pa = argmax ? (int32_t *)argmax->data : NULL;
    int64_t owa, owb, r;
    hv__pool_inner_cols(g, W, OW, &owa, &owb);
    if (KH * W >= ((int64_t)1 << 24)) owb = owa; /* the taps' offsets below must be exact floats */
    HV__PARALLEL_FOR(ctx, rows * OW * KH * KW)
    for (r = 0; r < rows; r++) {
        const int64_t oh = r % OH, h0 = oh * sh - ph, hs = h0 < 0 ? 0 : h0, he = h0 + KH < H ? h0 + KH : H;
        const float *xp = px + (r / OH) * H * W; /* (H, W) */
        const hv__vf one = hv__vset(1.0f), half = hv__vset(0.5f), zero = hv__vzero();
        float *yr = py + r * OW;
        int32_t *ar = pa ? pa + r * OW : NULL;
        int64_t ow, v0, ve = owa, best, ih, kw;
        while (he > hs && (v0 = hv__pool_next_vec(ve, owa, owb)) >= 0) {
            const float *x0 = xp + hs * W + v0 * sw - pw;
            hv__vf m = hv__vset(-INFINITY), k = zero; /* the max, and its tap's offset from x0 */
            for (ih = 0; ih < he - hs; ih++)
                for (kw = 0; kw < KW; kw++) {
                    hv__vf v = hv__vlds(x0 + ih * W + kw, sw), take = hv__vmax(hv__vsel_gt(v, m, one, zero), hv__visnan(v));
                    m = hv__vsel_gt(take, half, v, m); /* v > m or v NaN, as the reference */
                    k = hv__vsel_gt(take, half, hv__vset((float)(ih * W + kw)), k);
                }
            hv__vst(yr + v0, m);
            if (ar) {
                float kf[HV__VN];
                int i;
                hv__vst(kf, k);
                for (i = 0; i < HV__VN; i++) ar[v0 + i] = (int32_t)(hs * W + (v0 + i) * sw - pw + (int64_t)kf[i]);
            }
            ve = v0 + HV__VN;
        }
        for (ow = 0; ow < OW; ow++) {
            if (ow == owa) ow = ve; /* the vector columns are done */
            if (ow >= OW) break;
            yr[ow] = hv__max_window(xp, H, W, g, oh, ow, &best);
            if (ar) ar[ow] = (int32_t)best;
        }
    }
}

static void hv__fast_avg_pool2d(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const int64_t *g) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3], rows = y->shape[0] * y->shape[1] * OH;
    const int64_t KW = g[HV__PG_KW], sw = g[HV__PG_SW], pw = g[HV__PG_PW];
    const float *px = (const float *)x->data;
    float *py = (float *)y->data;
    int64_t owa, owb, r;
    hv__pool_inner_cols(g, W, OW, &owa, &owb);
    HV__PARALLEL_FOR(ctx, rows * OW * g[HV__PG_KH] * KW)
    for (r = 0; r < rows; r++) {
        const int64_t oh = r % OH;
        const float *xp = px + (r / OH) * H * W; /* (H, W) */
        float *yr = py + r * OW;
        int64_t ow, ve = owa, hs, he, ws, we, ih, kw;
        if (owb - owa >= HV__VN) { /* the interior columns share the divisor and the rows */
            const hv__vf div = hv__vset(hv__avg_window(g, H, W, oh, owa, &hs, &he, &ws, &we));
            int64_t v0;
            while ((v0 = hv__pool_next_vec(ve, owa, owb)) >= 0) {
                const float *x0 = xp + v0 * sw - pw;
                hv__vf acc = hv__vzero();
                for (ih = hs; ih < he; ih++)
                    for (kw = 0; kw < KW; kw++) acc = hv__vadd(acc, hv__vlds(x0 + ih * W + kw, sw));
                hv__vst(yr + v0, hv__vdiv(acc, div));
                ve = v0 + HV__VN;
            }
        }
        for (ow = 0; ow < OW; ow++) {
            if (ow == owa) ow = ve;
            if (ow >= OW) break;
            yr[ow] = hv__avg_at(xp, H, W, g, oh, ow);
        }
    }
}

/* row (n floats) += s * buf, as vectors */
static void hv__add_scaled_row(float *row, const float *buf, float s, int64_t n) {
    const hv__vf sv = hv__vset(s);
    int64_t j;
    HV__SPAN(j, n, L, { hv__vstw(row + j, hv__vadd(hv__vldw(row + j, L), hv__vmul(sv, hv__vldw(buf + j, L))), L); })
}

static void hv__fast_avg_pool2d_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, const int64_t *g) {
    const int64_t H = gx->shape[2], W = gx->shape[3], OH = gy->shape[2], OW = gy->shape[3], planes = gy->shape[0] * gy->shape[1];
    const int64_t work = planes * (OH * OW * g[HV__PG_KW] + H * W);
    const float *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data, *buf;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    int64_t p, owa, owb;
    if (OW == 0 || !(buf = hv__scratch(ctx, W * hv__fast_threads(ctx, work)))) { /* a row buffer per thread */
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_avg_pool2d_bwd(ctx, gx, gy, g);
        return;
    }
    hv__pool_inner_cols(g, W, OW, &owa, &owb);
    if (g[HV__PG_SW] != 1) owb = owa; /* the interior's spread as vectors needs stride 1 */
    HV__PARALLEL_FOR(ctx, work)
    for (p = 0; p < planes; p++) {
        float *rb = buf + W * hv__fast_tid(), *gxp = pgx + p * H * W;
        int64_t oh, ow, hs, he, ws, we, ih, iw, j, kw;
        for (oh = 0; oh < OH; oh++) {
            const float *gr = pg + (p * OH + oh) * OW;
            /* the row's outputs spread over the columns: the interior as vectors, tap by tap */
            const hv__vf div = hv__vset(hv__avg_window(g, H, W, oh, owa < OW ? owa : 0, &hs, &he, &ws, &we));
            memset(rb, 0, sizeof(float) * (size_t)W);
            HV__SPAN(j, owb - owa, L, {
                hv__vf v = hv__vdiv(hv__vldw(gr + owa + j, L), div);
                for (kw = 0; kw < g[HV__PG_KW]; kw++) {
                    float *q = rb + owa + j - g[HV__PG_PW] + kw;
                    hv__vstw(q, hv__vadd(hv__vldw(q, L), v), L);
                }
            })
            for (ow = 0; ow < OW; ow++) {
                if (ow == owa) ow = owb;
                if (ow >= OW) break;
                {
                    float v = gr[ow] / hv__avg_window(g, H, W, oh, ow, &hs, &he, &ws, &we);
                    for (iw = ws; iw < we; iw++) rb[iw] += v;
                }
            }
            for (ih = hs; ih < he; ih++) hv__add_scaled_row(gxp + ih * W, rb, 1.0f, W);
        }
    }
    hv__arena_rewind(&ctx->arena, mark);
}

/* the source rows or columns of every output index (hv__linear_src), from the arena */
typedef struct hv__lin_table {
    int64_t *i0, *i1;
    float *l;
} hv__lin_table;
static int hv__lin_table_make(hv_ctx *ctx, hv__lin_table *t, int64_t in, int64_t out, int align_corners) {
    int64_t d;
    t->i0 = (int64_t *)hv__arena_alloc(&ctx->arena, sizeof(int64_t) * (size_t)(2 * out + 1));
    t->l = hv__scratch(ctx, out);
    if (!t->i0 || !t->l) return -1;
    t->i1 = t->i0 + out;
    for (d = 0; d < out; d++) hv__linear_src(d, in, out, align_corners, &t->i0[d], &t->i1[d], &t->l[d]);
    return 0;
}

/* row (OW) = input row xr interpolated along W at the table's columns, as the reference */
static void hv__resize_row(float *row, const float *xr, const hv__lin_table *tw, int64_t OW) {
    int64_t j;
    for (j = 0; j < OW; j++) row[j] = (1 - tw->l[j]) * xr[tw->i0[j]] + tw->l[j] * xr[tw->i1[j]];
}

#define HV__RESIZE_ROWS 16 /* output rows per work item of the resize */
static void hv__fast_resize_bilinear(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, int align_corners) {
    const int64_t H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3], planes = y->shape[0] * y->shape[1];
    const int64_t nblk = (OH + HV__RESIZE_ROWS - 1) / HV__RESIZE_ROWS, work = planes * OH * OW * 4;
    const float *px = (const float *)x->data;
    float *py = (float *)y->data, *cache;
    hv__lin_table th, tw;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    int64_t u;
    if (hv__lin_table_make(ctx, &th, H, OH, align_corners) || hv__lin_table_make(ctx, &tw, W, OW, align_corners) ||
        !(cache = hv__scratch(ctx, 2 * OW * hv__fast_threads(ctx, work)))) { /* two interpolated rows per thread */
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_resize_bilinear(ctx, y, x, align_corners);
        return;
    }
    HV__PARALLEL_FOR(ctx, work)
    for (u = 0; u < planes * nblk; u++) {
        const int64_t p = u / nblk, oh0 = (u % nblk) * HV__RESIZE_ROWS, oh1 = oh0 + HV__RESIZE_ROWS < OH ? oh0 + HV__RESIZE_ROWS : OH;
        const float *xp = px + p * H * W; /* (H, W) */
        float *slot[2];
        int64_t held[2] = {-1, -1}, oh, j;
        slot[0] = cache + 2 * OW * hv__fast_tid();
        slot[1] = slot[0] + OW;
        for (oh = oh0; oh < oh1; oh++) {
            const int64_t h0 = th.i0[oh], h1 = th.i1[oh];
            const hv__vf a = hv__vset(1 - th.l[oh]), b = hv__vset(th.l[oh]);
            const float *r0, *r1;
            float *yr = py + (p * OH + oh) * OW;
            int s;
            if (held[0] != h0 && held[1] != h0) { /* interpolate row h0, keeping row h1 if held */
                s = held[0] == h1 ? 1 : 0;
                hv__resize_row(slot[s], xp + h0 * W, &tw, OW);
                held[s] = h0;
            }
            if (held[0] != h1 && held[1] != h1) {
                s = held[0] == h0 ? 1 : 0;
                hv__resize_row(slot[s], xp + h1 * W, &tw, OW);
                held[s] = h1;
            }
            r0 = slot[held[0] == h0 ? 0 : 1];
            r1 = slot[held[0] == h1 ? 0 : 1];
            HV__SPAN(j, OW, L, { hv__vstw(yr + j, hv__vadd(hv__vmul(a, hv__vldw(r0 + j, L)), hv__vmul(b, hv__vldw(r1 + j, L))), L); })
        }
    }
    hv__arena_rewind(&ctx->arena, mark);
}

static void hv__fast_resize_bilinear_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *gy, int align_corners) {
    const int64_t H = gx->shape[2], W = gx->shape[3], OH = gy->shape[2], OW = gy->shape[3], planes = gy->shape[0] * gy->shape[1];
    const int64_t work = planes * (OH * OW * 2 + OH * W * 2);
    const float *pg = (const float *)gy->data;
    float *pgx = (float *)gx->data, *buf;
    hv__lin_table th, tw;
    hv__arena_mark mark = hv__arena_save(&ctx->arena);
    int64_t p;
    if (hv__lin_table_make(ctx, &th, H, OH, align_corners) || hv__lin_table_make(ctx, &tw, W, OW, align_corners) ||
        !(buf = hv__scratch(ctx, W * hv__fast_threads(ctx, work)))) {
        hv__arena_rewind(&ctx->arena, mark);
        hv__cpu_resize_bilinear_bwd(ctx, gx, gy, align_corners);
        return;
    }
    HV__PARALLEL_FOR(ctx, work)
    for (p = 0; p < planes; p++) {
        float *rb = buf + W * hv__fast_tid(), *gxp = pgx + p * H * W;
        int64_t oh, ow;
        for (oh = 0; oh < OH; oh++) {
            const float *gr = pg + (p * OH + oh) * OW;
            memset(rb, 0, sizeof(float) * (size_t)W);
            for (ow = 0; ow < OW; ow++) { /* the output row spread along W */
                rb[tw.i0[ow]] += (1 - tw.l[ow]) * gr[ow];
                rb[tw.i1[ow]] += tw.l[ow] * gr[ow];
            }
            hv__add_scaled_row(gxp + th.i0[oh] * W, rb, 1 - th.l[oh], W);
            hv__add_scaled_row(gxp + th.i1[oh] * W, rb, th.l[oh], W);
        }
    }
    hv__arena_rewind(&ctx->arena, mark);
}

static void hv__fast_batch_norm_stats(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x) {
    int64_t N, C, S, c;
    const float *px = (const float *)x->data;
    float *pm = (float *)mean->data, *pv = (float *)var->data;
    hv__bn_dims(x, &N, &C, &S);
    if (S < HV__VN) {
        hv__cpu_batch_norm_stats(ctx, mean, var, x);
        return;
    }
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (c = 0; c < C; c++) {
        const double M = (double)(N * S);
        double s = 0, v = 0, m;
        float mf;
        int64_t ni;
        for (ni = 0; ni < N; ni++) s += hv__sum_f(px + (ni * C + c) * S, S);
        m = s / M;
        mf = (float)m;
        /* two passes, about the float mean; (m - mf)^2 corrects for its rounding */
        for (ni = 0; ni < N; ni++) v += hv__sum_sqdev(px + (ni * C + c) * S, S, mf);
        pm[c] = mf;
        pv[c] = (float)(v / M - (m - (double)mf) * (m - (double)mf));
    }
}

static void hv__fast_batch_norm(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w,
                                const hv_tensor *b, float eps) {
    int64_t N, C, S, pl;
    const float *px = (const float *)x->data, *pm = (const float *)mean->data, *pv = (const float *)var->data;
    const float *pw = w ? (const float *)w->data : NULL, *pb = b ? (const float *)b->data : NULL;
    float *py = (float *)y->data;
    hv__bn_dims(x, &N, &C, &S);
    if (S < HV__VN) {
        hv__cpu_batch_norm(ctx, y, x, mean, var, w, b, eps);
        return;
    }
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (pl = 0; pl < N * C; pl++) { /* (x - mean) * inv (* w) + b, the reference's operations */
        const int64_t c = pl % C;
        const hv__vf mv = hv__vset(pm[c]), iv = hv__vset(1.0f / sqrtf(pv[c] + eps)), wv = hv__vset(pw ? pw[c] : 1.0f);
        const hv__vf bv = hv__vset(pb ? pb[c] : 0.0f);
        const float *xr = px + pl * S;
        float *yr = py + pl * S;
        int64_t j;
        HV__SPAN(j, S, L, {
            hv__vf v = hv__vmul(hv__vsub(hv__vldw(xr + j, L), mv), iv);
            if (pw) v = hv__vmul(v, wv);
            hv__vstw(yr + j, hv__vadd(v, bv), L);
        })
    }
}

/* *sg += sum of g, *sgx += sum of g (x - mu) inv over n floats, in float runs added into doubles */
static void hv__bn_sums(const float *g, const float *x, int64_t n, float mu, float inv, double *sg, double *sgx) {
    const hv__vf mv = hv__vset(mu), iv = hv__vset(inv);
    int64_t r, j;
    for (r = 0; r < n; r += HV__RUN) {
        int64_t e = r + HV__RUN < n ? r + HV__RUN : n;
        hv__vf a = hv__vzero(), ax = hv__vzero();
        for (j = r; j < e; j += HV__VN) {
            const int64_t L = e - j < HV__VN ? e - j : HV__VN;
            hv__vf gv = hv__vldw(g + j, L); /* lanes past e: g = 0 */
            a = hv__vadd(a, gv);
            ax = hv__vfma(gv, hv__vmul(hv__vsub(hv__vldw(x + j, L), mv), iv), ax);
        }
        *sg += (double)hv__vhsum(a);
        *sgx += (double)hv__vhsum(ax);
    }
}

static void hv__fast_batch_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                    const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats) {
    int64_t N, C, S, c;
    const float *px = (const float *)x->data, *pg = (const float *)gy->data, *pm = (const float *)mean->data;
    const float *pv = (const float *)var->data, *pw = w ? (const float *)w->data : NULL;
    float *pgx = gx ? (float *)gx->data : NULL, *pgw = gw ? (float *)gw->data : NULL, *pgb = gb ? (float *)gb->data : NULL;
    hv__bn_dims(x, &N, &C, &S);
    if (S < HV__VN) {
        hv__cpu_batch_norm_bwd(ctx, gx, gw, gb, x, gy, mean, var, w, eps, batch_stats);
        return;
    }
    HV__PARALLEL_FOR(ctx, hv_numel(x))
    for (c = 0; c < C; c++) {
        const float inv = 1.0f / sqrtf(pv[c] + eps), wc = pw ? pw[c] : 1.0f;
        const double M = (double)(N * S);
        double sg = 0, sgx = 0;
        int64_t ni, j;
        for (ni = 0; ni < N; ni++) hv__bn_sums(pg + (ni * C + c) * S, px + (ni * C + c) * S, S, pm[c], inv, &sg, &sgx);
        if (pgb) pgb[c] += (float)sg;
        if (pgw) pgw[c] += (float)sgx;
        if (!pgx) continue;
        { /* batch statistics: dx = w inv (gy - mean(gy) - xhat mean(gy xhat)); else dx = w inv gy */
            const hv__vf mv = hv__vset(pm[c]), iv = hv__vset(inv), k = hv__vset(wc * inv);
            const hv__vf mg = hv__vset(batch_stats ? (float)(sg / M) : 0.0f), mgx = hv__vset(batch_stats ? (float)(sgx / M) : 0.0f);
            for (ni = 0; ni < N; ni++) {
                const float *xr = px + (ni * C + c) * S, *gr = pg + (ni * C + c) * S;
                float *gxr = pgx + (ni * C + c) * S;
                HV__SPAN(j, S, L, {
                    hv__vf xh = hv__vmul(hv__vsub(hv__vldw(xr + j, L), mv), iv);
                    hv__vf d = hv__vsub(hv__vsub(hv__vldw(gr + j, L), mg), hv__vmul(xh, mgx));
                    hv__vstw(gxr + j, hv__vfma(k, d, hv__vldw(gxr + j, L)), L);
                })
            }
        }
    }
}
/* HV-SECTION cpu-fast-pool-bn END */

/* HV-SECTION cpu-fast-fill BEGIN */
/* The fast kernels' entries of the CPU backend table. Portable x86-64 builds (HUMANVIT_CPU_DISPATCH,
   see the cpu-simd section): kernels_cpu/hv_cpu_avx512.c and hv_cpu_avx2.c compile this header
   once more with their ISA and export hv__fast_fill_avx512 / hv__fast_fill_avx2, which fill the
   table with *their* copies of the fast kernels; the implementation calls the one of the ISA the
   GEMM chose (cpuid), so LayerNorm, GELU, softmax, attention, pools... run with AVX-512 or AVX2
   too, not only the GEMM. Those copies work on the caller's context (same structs, same header):
   their scratch comes from its arena through their own copy of the allocator, so a program that
   overrides HV_MALLOC/HV_FREE must give the kernels_cpu files the same override (-D flags). */
/* the optimizer entries of the cpu-optim section below, also per ISA */
static void hv__cpu_adamw(hv_ctx *ctx, hv_tensor *p, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a);
static void hv__cpu_sgd(hv_ctx *ctx, hv_tensor *p, hv_tensor *bt, const hv_tensor *gt, const hv__sgd_args *a);
static int hv__cpu_sumsq(hv_ctx *ctx, int mode, int n, const hv_tensor *const *x, const hv_tensor *const *y, const float *a, double *out);
static void hv__fast_fill(hv__backend *be) {
    be->adamw = hv__cpu_adamw;
    be->sgd = hv__cpu_sgd;
    be->sumsq = hv__cpu_sumsq;
    be->attention = hv__fast_attention;
    be->attention_bwd = hv__fast_attention_bwd;
    be->conv2d = hv__fast_conv2d;
    be->conv2d_bwd_data = hv__fast_conv2d_bwd_data;
    be->conv2d_bwd_weight = hv__fast_conv2d_bwd_weight;
    be->copy = hv__fast_copy;
    be->binary = hv__fast_binary;
    be->unary = hv__fast_unary;
    be->unary_bwd = hv__fast_unary_bwd;
    be->reduce = hv__fast_reduce;
    be->softmax = hv__fast_softmax;
    be->softmax_bwd = hv__fast_softmax_bwd;
    be->layer_norm = hv__fast_layer_norm;
    be->layer_norm_bwd = hv__fast_layer_norm_bwd;
    be->gather = hv__fast_gather;
    be->scatter_add = hv__fast_scatter_add;
    be->cross_entropy = hv__fast_cross_entropy;
    be->cross_entropy_bwd = hv__fast_cross_entropy_bwd;
    be->diff_loss = hv__fast_diff_loss;
    be->diff_loss_bwd = hv__fast_diff_loss_bwd;
    be->max_pool2d = hv__fast_max_pool2d; /* cpu-fast-pool-bn */
    be->avg_pool2d = hv__fast_avg_pool2d;
    be->avg_pool2d_bwd = hv__fast_avg_pool2d_bwd;
    be->resize_bilinear = hv__fast_resize_bilinear;
    be->resize_bilinear_bwd = hv__fast_resize_bilinear_bwd;
    be->batch_norm_stats = hv__fast_batch_norm_stats;
    be->batch_norm = hv__fast_batch_norm;
    be->batch_norm_bwd = hv__fast_batch_norm_bwd;
}
#if defined(HUMANVIT_KERNELS_AVX512) || defined(HUMANVIT_KERNELS_AVX2) || defined(HV__SGEMM_DISPATCH)
#ifdef __cplusplus
extern "C" {
#endif
void hv__fast_fill_avx512(hv__backend *be);
void hv__fast_fill_avx2(hv__backend *be);
#if defined(HUMANVIT_KERNELS_AVX512)
void hv__fast_fill_avx512(hv__backend *be) { hv__fast_fill(be); }
#elif defined(HUMANVIT_KERNELS_AVX2)
void hv__fast_fill_avx2(hv__backend *be) { hv__fast_fill(be); }
#endif
#ifdef __cplusplus
}
#endif
#endif
/* after hv__sgemm_choose (hv__cpu_gemm_pick): the fast kernels of the same ISA */
static void hv__fast_fill_pick(hv__backend *be) {
#if defined(HV__SGEMM_DISPATCH)
    if (!strcmp(hv__sgemm_cur_isa, "avx512")) hv__fast_fill_avx512(be);
    else if (!strcmp(hv__sgemm_cur_isa, "avx2")) hv__fast_fill_avx2(be);
    else hv__fast_fill(be); /* no AVX2: this file's own (scalar) build of them */
#else
    hv__fast_fill(be);
#endif
}
/* HV-SECTION cpu-fast-fill END */

/* HUMANVIT_REFERENCE_KERNELS: the backend table keeps the scalar reference kernels (debugging,
   and the benchmarks' baseline) */
#ifdef HUMANVIT_REFERENCE_KERNELS
static const int hv__reference_kernels = 1;
#else
static const int hv__reference_kernels = 0;
#endif
/* HV-SECTION cpu-optim BEGIN */
/* ==== 7. CPU BACKEND: optimizer kernels =========================================================
   The backend entries behind hv_optim_step, hv_clip_grad_norm and hv_check_finite (adamw, sgd,
   sumsq), so the optimizers run unchanged on a device backend. The Adam(W) update is written once
   against the hv__v* vector layer of the fast kernels and does the reference's float operations in
   the same order with no FMA (IEEE sqrt and division are exact), so it matches hv__adam_ref bit for
   bit (tests/test_train.c checks). Elementwise: fixed blocks of elements in parallel, the same bits
   for any thread count. The deterministic chunked sums live here too. */

/* the reference: PyTorch's single-tensor Adam(W) expressions, lerp for the first moment, mul +
   addcmul for the second, addcdiv for the update */
static void hv__adam_ref(hv_ctx *ctx, float *w, const float *g, float *m, float *v, int64_t n, const hv__adamw_args *a) {
    float decay = a->decay, l2 = a->l2, b1c = a->b1c, b2 = a->beta2, b2c = a->b2c, bc2_sqrt = a->bc2_sqrt, eps = a->eps;
    float neg_step = a->neg_step;
    int64_t i;
    HV__PARALLEL_FOR(ctx, n)
    for (i = 0; i < n; i++) {
        float gi = g[i] + l2 * w[i]; /* Adam: grad.add(param, alpha=wd); AdamW: l2 = 0 */
        float wi = w[i] * decay;     /* AdamW: param.mul_(1 - lr wd); Adam: decay = 1 */
        float mi = m[i] + b1c * (gi - m[i]);
        float vi = v[i] * b2 + b2c * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi + neg_step * mi / denom;
    }
}

#define HV__OPT_BLOCK 8192 /* elements per parallel work item (a multiple of every HV__VN) */
/* hv__adam_ref on r <= HV__VN elements from i, vectorised */
HV__INLINE void hv__adam_vec(float *w, const float *g, float *m, float *v, int64_t i, int64_t r, const hv__vf *k) {
    int full = r == HV__VN;
    hv__vf wv = full ? hv__vld(w + i) : hv__vldn(w + i, r), gv = full ? hv__vld(g + i) : hv__vldn(g + i, r);
    hv__vf mv = full ? hv__vld(m + i) : hv__vldn(m + i, r), vv = full ? hv__vld(v + i) : hv__vldn(v + i, r);
    hv__vf gi = hv__vadd(gv, hv__vmul(k[1], wv)), wi = hv__vmul(wv, k[0]);
    hv__vf mi = hv__vadd(mv, hv__vmul(k[2], hv__vsub(gi, mv)));
    hv__vf vi = hv__vadd(hv__vmul(vv, k[3]), hv__vmul(hv__vmul(k[4], gi), gi));
    hv__vf denom = hv__vadd(hv__vdiv(hv__vsqrt(vi), k[5]), k[6]);
    wi = hv__vadd(wi, hv__vdiv(hv__vmul(k[7], mi), denom));
    if (full) {
        hv__vst(m + i, mi);
        hv__vst(v + i, vi);
        hv__vst(w + i, wi);
    } else {
        hv__vstn(m + i, mi, r);
        hv__vstn(v + i, vi, r);
        hv__vstn(w + i, wi, r);
    }
}
static void hv__adam_fast(hv_ctx *ctx, float *w, const float *g, float *m, float *v, int64_t n, const hv__adamw_args *a) {
    hv__vf k[8];
    int64_t nb = (n + HV__OPT_BLOCK - 1) / HV__OPT_BLOCK, b;
    k[0] = hv__vset(a->decay);
    k[1] = hv__vset(a->l2);
    k[2] = hv__vset(a->b1c);
    k[3] = hv__vset(a->beta2);
    k[4] = hv__vset(a->b2c);
    k[5] = hv__vset(a->bc2_sqrt);
    k[6] = hv__vset(a->eps);
    k[7] = hv__vset(a->neg_step);
    HV__PARALLEL_FOR(ctx, n)
    for (b = 0; b < nb; b++) {
        int64_t i = b * HV__OPT_BLOCK, e = i + HV__OPT_BLOCK < n ? i + HV__OPT_BLOCK : n;
        for (; i < e; i += HV__VN) hv__adam_vec(w, g, m, v, i, e - i < HV__VN ? e - i : HV__VN, k);
    }
}
static void hv__cpu_adamw(hv_ctx *ctx, hv_tensor *p, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a) {
    (hv__reference_kernels ? hv__adam_ref : hv__adam_fast)(ctx, (float *)p->data, (const float *)g->data, (float *)m->data,
                                                           (float *)v->data, hv_numel(p), a);
}

/* SGD and LARS: gcc vectorises this loop at -O2 when buf is NULL; not a hot spot either way */
static void hv__cpu_sgd(hv_ctx *ctx, hv_tensor *p, hv_tensor *bt, const hv_tensor *gt, const hv__sgd_args *a) {
    float *w = (float *)p->data, *buf = bt ? (float *)bt->data : NULL;
    const float *g = (const float *)gt->data;
    float wd = a->wd, mom = a->momentum, damp = a->damp, scale = a->scale, neg_lr = a->neg_lr;
    int first = a->first, nesterov = a->nesterov;
    int64_t n = hv_numel(p), k;
    HV__PARALLEL_FOR(ctx, n)
    for (k = 0; k < n; k++) {
        float gk = (g[k] + wd * w[k]) * scale;
        if (buf) {
            float b = first ? gk : buf[k] * mom + damp * gk;
            buf[k] = b;
            gk = nesterov ? gk + mom * b : b;
        }
        w[k] = w[k] + neg_lr * gk;
    }
}

/* A reduction is cut into at most HV__NCHUNK chunks whose bounds depend on n only; chunks run in
   parallel and their partial results are combined in chunk order, so any thread count gives the
   same bits. */
#define HV__NCHUNK 64
static int64_t hv__chunk_len(int64_t n) {
    int64_t c = (n + HV__NCHUNK - 1) / HV__NCHUNK;
    return c < 16384 ? 16384 : c;
}
/* sum of (x[i] + a y[i])^2 in double, the term formed in float (y NULL: sum of x[i]^2) */
static double hv__sumsq(hv_ctx *ctx, const float *x, const float *y, float a, int64_t n) {
    double part[HV__NCHUNK], s = 0;
    int64_t len = hv__chunk_len(n), nc = (n + len - 1) / len, c;
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < nc; c++) {
        int64_t i = c * len, e = (c + 1) * len < n ? (c + 1) * len : n;
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0; /* four chains: the adds overlap */
        float u0, u1, u2, u3;
        for (; i + 4 <= e; i += 4) {
            u0 = x[i];
            u1 = x[i + 1];
            u2 = x[i + 2];
            u3 = x[i + 3];
            if (y) {
                u0 += a * y[i];
                u1 += a * y[i + 1];
                u2 += a * y[i + 2];
                u3 += a * y[i + 3];
            }
            a0 += (double)u0 * u0;
            a1 += (double)u1 * u1;
            a2 += (double)u2 * u2;
            a3 += (double)u3 * u3;
        }
        for (; i < e; i++) {
            u0 = y ? x[i] + a * y[i] : x[i];
            a0 += (double)u0 * u0;
        }
        part[c] = (a0 + a1) + (a2 + a3);
    }
    for (c = 0; c < nc; c++) s += part[c];
    return s;
}
/* how many of x are NaN or Inf; *first the index of the first one (-1 when none) */
static int64_t hv__count_nonfinite(hv_ctx *ctx, const float *x, int64_t n, int64_t *first) {
    int64_t cnt[HV__NCHUNK], fst[HV__NCHUNK], len = hv__chunk_len(n), nc = (n + len - 1) / len, c, total = 0;
    HV__PARALLEL_FOR(ctx, n)
    for (c = 0; c < nc; c++) {
        int64_t i, e = (c + 1) * len < n ? (c + 1) * len : n, k = 0, f = -1;
        for (i = c * len; i < e; i++)
            if (!isfinite(x[i])) {
                if (f < 0) f = i;
                k++;
            }
        cnt[c] = k;
        fst[c] = f;
    }
    *first = -1;
    for (c = 0; c < nc; c++) {
        if (*first < 0 && fst[c] >= 0) *first = fst[c];
        total += cnt[c];
    }
    return total;
}

static int hv__cpu_sumsq(hv_ctx *ctx, int mode, int n, const hv_tensor *const *x, const hv_tensor *const *y, const float *a, double *out) {
    int i;
    for (i = 0; i < n; i++) {
        int64_t first;
        const float *yi = y && y[i] ? (const float *)y[i]->data : NULL;
        out[i] = mode == HV__SUMSQ ? hv__sumsq(ctx, (const float *)x[i]->data, yi, yi ? a[i] : 0.0f, hv_numel(x[i]))
                                   : (double)hv__count_nonfinite(ctx, (const float *)x[i]->data, hv_numel(x[i]), &first);
    }
    return 0;
}
/* HV-SECTION cpu-optim END */

static const hv__backend *hv__cpu_backend(void) {
    static hv__backend be;
    if (!be.name) {
        be.copy = hv__cpu_copy;
        be.fill = hv__cpu_fill;
        be.add_i32 = hv__cpu_add_i32;
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
        /* simd */ be.gemm = hv__cpu_gemm_pick();
        /* HV-SECTION cpu-table END */
        /* HV-SECTION cpu-optim-table BEGIN */
        be.adamw = hv__cpu_adamw; /* hv__fast_fill sets them again: the dispatch build's ISA copies */
        be.sgd = hv__cpu_sgd;
        be.sumsq = hv__cpu_sumsq;
        /* HV-SECTION cpu-optim-table END */
        /* HV-SECTION cpu-fast-table BEGIN */
        if (!hv__reference_kernels) hv__fast_fill_pick(&be); /* the fast kernels replace the references */
        /* HV-SECTION cpu-fast-table END */
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
   at most maxStorageBufferRange (work on a larger tensor is split: see "splitting work" below;
   what cannot split refuses with an error). A barrier is recorded only when a dispatch touches a
   range that an earlier dispatch of the same barrier interval wrote (or writes one it read). The
   batch is submitted, and waited for, when the host needs data (hv_tensor_copy_to, hv_item,
   sumsq's norms, hv_sync), at hv_step_end, or when the parameter ring or the staging buffer fills
   up; n_submits counts the waits (test_vulkan holds a training step to one).

   Index errors. Kernels that read indices (gather, scatter, cross-entropy) check them on the
   device (index.glsl) and record the first bad one in a 16-byte error word, bound without
   hazard tracking (atomics only); a batch that used it copies it down at its end, so the check
   costs no wait, and hv__vk_flush turns a hit into an error naming the op and the value.
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
#define HV__VK_ATOMIC 2 /* hv__vk_arg.write of the index-error word: written by atomics only */

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
    /* out-of-range indices found by the kernels (index.glsl): 16 bytes of device memory that come
       down with the batch that used them (armed), zeroed at the next batch's start after a hit
       (reset); pending: found by hv_step_end or hv_sync, so every dispatch fails until the next
       hv_step_end, with op: text */
    hv__vk_block *err_blk;
    uint64_t err_off;
    hv__vk_hostbuf err_host;
    int err_armed, err_reset, err_pending;
    const char *err_op;
    char err_text[256];
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
    if (vk->err_reset) { /* the last batch reported an index error: clear the word for this one */
        vk->vkCmdFillBuffer(vk->cmd, vk->err_blk->buf, vk->err_off, 16, 0);
        hv__vk_full_barrier(vk);
        vk->err_reset = 0;
    }
    return 0;
}
/* records that the next command accesses these ranges; a barrier first when one of them meets
   an earlier access of this barrier interval and either of the two writes */
static void hv__vk_hazard(hv__vk *vk, const hv__vk_arg *args, int n) {
    int i, j, conflict = 0;
    for (i = 0; i < n && !conflict; i++)
        for (j = 0; j < vk->nhazards && args[i].write != HV__VK_ATOMIC; j++) {
            const hv__vk_range *h = &vk->hazards[j];
            if (h->id == args[i].blk->id && (h->write || args[i].write) && args[i].off < h->hi && h->lo < args[i].off + args[i].bytes) {
                conflict = 1;
                break;
            }
        }
    if (conflict || vk->nhazards + n > HV__VK_MAX_HAZARDS) hv__vk_full_barrier(vk);
    for (i = 0; i < n; i++) {
        hv__vk_range *h;
        if (args[i].write == HV__VK_ATOMIC) { /* the error word: atomics, no ordering needed */
            vk->err_armed = 1;
            continue;
        }
        h = &vk->hazards[vk->nhazards++];
        h->id = args[i].blk->id;
        h->write = args[i].write;
        h->lo = args[i].off;
        h->hi = args[i].off + args[i].bytes;
    }
}
/* the ops whose kernels check indices, by the code they pass (index.glsl); the role names the
   index tensor */
enum { HV__VK_IDX_GATHER = 1, HV__VK_IDX_SCATTER_BWD, HV__VK_IDX_SCATTER, HV__VK_IDX_CE, HV__VK_IDX_CE_BWD, HV__VK_IDX_CODES };
static int hv__vk_index_error(hv__vk *vk, const uint32_t *word) {
    static const char *const op[] = {"hv_vulkan", "hv_gather", "hv_scatter (backward)", "hv_scatter (or the backward of hv_gather)",
                                     "hv_cross_entropy", "hv_cross_entropy (backward)"};
    uint32_t code = word[0] < HV__VK_IDX_CODES ? word[0] : 0;
    vk->err_op = op[code];
    snprintf(vk->err_text, sizeof vk->err_text,
             "%s holds %d, out of range [0, %d) (checked by the Vulkan kernel; reported at the first sync after it ran)",
             code >= HV__VK_IDX_CE ? "labels" : "idx", (int)word[1], (int)word[2]);
    vk->err_reset = 1;
    return hv__fail(vk->err_op, "%s", vk->err_text), -1;
}
/* submit the batch and wait for it; then the rings are empty and downloads have landed. -1 with
   the error set when the device was lost or a kernel found an index out of range (hv_step_end and
   hv_sync keep the latter pending: see hv__vk_step_end) */
static int hv__vk_flush(hv__vk *vk) {
    VkSubmitInfo si;
    VkResult r;
    int i;
    if (!vk->recording) return vk->lost ? -1 : 0;
    if (vk->err_armed) { /* the index-error word comes down with the batch */
        VkBufferCopy bc;
        hv__vk_full_barrier(vk);
        bc.srcOffset = vk->err_off;
        bc.dstOffset = 0;
        bc.size = 16;
        vk->vkCmdCopyBuffer(vk->cmd, vk->err_blk->buf, vk->err_host.buf, 1, &bc);
    }
    if (vk->ndownloads || vk->err_armed) { /* device writes of the copies become visible to the host */
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
    if (vk->err_armed) {
        vk->err_armed = 0;
        if (((const uint32_t *)vk->err_host.map)[0]) return hv__vk_index_error(vk, (const uint32_t *)vk->err_host.map);
    }
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
/* the f32 elements one binding holds wherever they start (the window starts aligned down) */
static int64_t hv__vk_room(const hv__vk *vk) { return (int64_t)((vk->max_range - vk->align) / 4); }
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
    if (vk->err_pending) return hv__fail(vk->err_op, "%s", vk->err_text), -1;
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
    int32_t p[2];
    p[0] = hv__vk_f2i(value);
    p[1] = 0;
    ts[0] = dst;
    hv__vk_ew_call(ctx, HV__VKS_FILL, ts, 1, 1, p, 2);
}
static void hv__vk_add_i32(hv_ctx *ctx, hv_tensor *t, int32_t delta) {
    const hv_tensor *ts[1];
    int32_t p[2];
    p[0] = delta;
    p[1] = 1; /* fill.comp's add mode */
    ts[0] = t;
    hv__vk_ew_call(ctx, HV__VKS_FILL, ts, 1, 1, p, 2);
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
#define HV__VK_BIN_MAX 4 /* binary.comp's internal op: NaN-propagating max */
/* the axis along which to halve a reduction of x (over the storage-buffer range) into y (keepdim,
   contiguous): the one that spans most in x, unless it is a kept axis other than y's outermost
   axis of extent > 1: then that one, so that y's halves stay contiguous (the kernels write y by
   output index) */
static int hv__vk_reduce_axis(const hv_tensor *x, const hv_tensor *y) {
    int d, best = -1, outer = -1;
    for (d = 0; d < x->ndim; d++) {
        if (x->shape[d] > 1 && (best < 0 || (x->shape[d] - 1) * x->stride[d] > (x->shape[best] - 1) * x->stride[best])) best = d;
        if (outer < 0 && y->shape[d] > 1) outer = d;
    }
    return best >= 0 && y->shape[best] == x->shape[best] ? outer : best;
}
/* reductions whose input is over the storage-buffer range: halve an axis (hv__vk_reduce_axis); a
   kept axis splits the outputs, a reduced one gives two partial results combined elementwise */
static void hv__vk_reduce(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x) {
    hv__vk *vk = HV__VK(ctx);
    hv__vk_arg a = hv__vk_targ(vk, x, 0);
    int best;
    int64_t h;
    if (!a.blk || hv__vk_fits(vk, &a) || hv_numel(x) <= 1) {
        hv__vk_reduce_one(ctx, op, out, x);
        return;
    }
    best = hv__vk_reduce_axis(x, out);
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
static void hv__vk_reduce_max_bwd_one(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy,
                                      hv_tensor *done) {
    const hv_tensor *ts[5];
    int32_t p[41];
    int w[5] = {1, 0, 0, 0, 1}, d;
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
    p[40] = done != NULL;
    ts[0] = gx;
    ts[1] = x;
    ts[2] = y;
    ts[3] = gy;
    ts[4] = done;
    if (!done) w[4] = 0;
    hv__vk_run(ctx, "hv_vulkan reduce_max_bwd", HV__VKS_REDUCE_MAX_BWD, ts, w, 5, p, 41, (uint64_t)hv_numel(y), 64, 0);
}
/* x over the storage-buffer range: halve an axis as hv__vk_reduce does. A kept axis splits every
   tensor; a reduced one splits x and gx only, the parts running in order with done (y's shape,
   zeros) marking the groups whose first maximum an earlier part held */
static void hv__vk_reduce_max_bwd_split(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy,
                                        hv_tensor *done) {
    hv__vk *vk = HV__VK(ctx);
    hv__vk_arg a = hv__vk_targ(vk, x, 0), g = hv__vk_targ(vk, gx, 0);
    int best;
    int64_t h, e;
    if (!a.blk || !g.blk || (hv__vk_fits(vk, &a) && hv__vk_fits(vk, &g)) || hv_numel(x) <= 1) {
        hv__vk_reduce_max_bwd_one(ctx, gx, x, y, gy, done);
        return;
    }
    best = hv__vk_reduce_axis(x, y);
    e = x->shape[best];
    h = e / 2;
    {
        hv_tensor g1 = hv__vk_cut(gx, best, 0, h), g2 = hv__vk_cut(gx, best, h, e - h);
        hv_tensor x1 = hv__vk_cut(x, best, 0, h), x2 = hv__vk_cut(x, best, h, e - h);
        if (y->shape[best] == e) {
            hv_tensor y1 = hv__vk_cut(y, best, 0, h), y2 = hv__vk_cut(y, best, h, e - h);
            hv_tensor d1 = done ? hv__vk_cut(done, best, 0, h) : y1, d2 = done ? hv__vk_cut(done, best, h, e - h) : y2;
            hv_tensor q1 = hv__vk_cut(gy, best, 0, h), q2 = hv__vk_cut(gy, best, h, e - h);
            hv__vk_reduce_max_bwd_split(ctx, &g1, &x1, &y1, &q1, done ? &d1 : NULL);
            hv__vk_reduce_max_bwd_split(ctx, &g2, &x2, &y2, &q2, done ? &d2 : NULL);
        } else {
            if (!done && !(done = hv__new_like(y))) {
                ctx->kernel_failed = 1;
                return;
            }
            hv__vk_reduce_max_bwd_split(ctx, &g1, &x1, y, gy, done);
            hv__vk_reduce_max_bwd_split(ctx, &g2, &x2, y, gy, done);
        }
    }
}
static void hv__vk_reduce_max_bwd(hv_ctx *ctx, hv_tensor *gx, const hv_tensor *x, const hv_tensor *y, const hv_tensor *gy) {
    hv__vk_reduce_max_bwd_split(ctx, gx, x, y, gy, NULL);
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

/* the index-error word as a kernel argument: the last binding of the kernels that read indices */
static hv_tensor hv__vk_err_arg(hv__vk *vk) {
    hv_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = HV_I32;
    t.ndim = 1;
    t.shape[0] = 4;
    t.stride[0] = 1;
    t.data = hv__vk_addr(vk->err_blk, vk->err_off);
    return t;
}
static void hv__vk_gather_one(hv_ctx *ctx, int accumulate, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer,
                          int64_t n, int64_t k, int64_t inner) {
    const hv_tensor *ts[4];
    int w[4] = {1, 0, 0, HV__VK_ATOMIC};
    int32_t p[6];
    hv_tensor err = hv__vk_err_arg(HV__VK(ctx));
    p[0] = hv__vk_i32(outer * k * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(k);
    p[3] = hv__vk_i32(inner);
    p[4] = accumulate;
    p[5] = accumulate ? HV__VK_IDX_SCATTER_BWD : HV__VK_IDX_GATHER; /* accumulating: hv_scatter's backward */
    ts[0] = dst;
    ts[1] = src;
    ts[2] = idx;
    ts[3] = &err;
    hv__vk_run(ctx, "hv_gather", HV__VKS_GATHER, ts, w, 4, p, 6, (uint64_t)(outer * k * inner), 256, 0);
}
static void hv__vk_scatter_add_one(hv_ctx *ctx, hv_tensor *dst, const hv_tensor *src, const hv_tensor *idx, int64_t outer, int64_t n,
                               int64_t k, int64_t inner) {
    const hv_tensor *ts[4];
    int w[4] = {1, 0, 0, HV__VK_ATOMIC};
    int32_t p[5];
    hv_tensor err = hv__vk_err_arg(HV__VK(ctx));
    p[0] = hv__vk_i32(outer * inner);
    p[1] = hv__vk_i32(n);
    p[2] = hv__vk_i32(k);
    p[3] = hv__vk_i32(inner);
    p[4] = HV__VK_IDX_SCATTER;
    ts[0] = dst;
    ts[1] = src;
    ts[2] = idx;
    ts[3] = &err;
    hv__vk_run(ctx, "hv_scatter", HV__VKS_SCATTER_ADD, ts, w, 4, p, 5, (uint64_t)(outer * inner), 256, 0);
}
static void hv__vk_reduce(hv_ctx *ctx, int op, hv_tensor *out, const hv_tensor *x);
/* out[0] = scale * sum of the contiguous x (one workgroup; over a binding: the split reduction) */
static int hv__vk_sum_scalar(hv_ctx *ctx, hv_tensor *out, const hv_tensor *x, float scale) {
    const hv_tensor *ts[2];
    int w[2] = {1, 0};
    int32_t p[2];
    if (hv_numel(x) > hv__vk_room(HV__VK(ctx))) {
        hv_tensor flat = hv__vk_as(x, 1, hv_numel(x), 0, 0), one = hv__vk_as(out, 1, 1, 0, 0);
        hv__vk_reduce(ctx, HV__RED_SUM, &one, &flat);
        hv__vk_unary(ctx, HV__SCALE, scale, &one, &one);
        return ctx->kernel_failed ? -1 : 0;
    }
    p[0] = hv__vk_i32(hv_numel(x));
    p[1] = hv__vk_f2i(scale);
    ts[0] = out;
    ts[1] = x;
    return hv__vk_run(ctx, "hv_vulkan sum", HV__VKS_SUM_SCALAR, ts, w, 2, p, 2, 1, 256, 1);
}
static void hv__vk_cross_entropy_rows(hv_ctx *ctx, hv_tensor *lse, hv_tensor *row_loss, const hv_tensor *logits, const hv_tensor *labels) {
    const hv_tensor *ts[5];
    int w[5] = {1, 1, 0, 0, HV__VK_ATOMIC};
    int32_t p[3];
    int64_t N = logits->shape[0];
    hv_tensor err = hv__vk_err_arg(HV__VK(ctx));
    p[0] = hv__vk_i32(N);
    p[1] = hv__vk_i32(logits->shape[1]);
    p[2] = HV__VK_IDX_CE;
    ts[0] = lse;
    ts[1] = row_loss;
    ts[2] = logits;
    ts[3] = labels;
    ts[4] = &err;
    hv__vk_run(ctx, "hv_cross_entropy", HV__VKS_CROSS_ENTROPY, ts, w, 5, p, 3, (uint64_t)N, 64, 1);
}
static void hv__vk_cross_entropy_bwd_one(hv_ctx *ctx, hv_tensor *glogits, const hv_tensor *logits, const hv_tensor *labels,
                                     const hv_tensor *lse, const hv_tensor *gloss, int64_t total) {
    const hv_tensor *ts[6];
    int w[6] = {1, 0, 0, 0, 0, HV__VK_ATOMIC};
    int32_t p[4];
    hv_tensor err = hv__vk_err_arg(HV__VK(ctx));
    p[0] = hv__vk_i32(logits->shape[0]);
    p[1] = hv__vk_i32(logits->shape[1]);
    p[2] = hv__vk_i32(total);
    p[3] = HV__VK_IDX_CE_BWD;
    ts[0] = glogits;
    ts[1] = logits;
    ts[2] = labels;
    ts[3] = lse;
    ts[4] = gloss;
    ts[5] = &err;
    hv__vk_run(ctx, "hv_cross_entropy backward", HV__VKS_CROSS_ENTROPY_BWD, ts, w, 6, p, 4, (uint64_t)hv_numel(logits), 256, 0);
}
/* top-k accuracy returns a count to the host anyway: the logits come down and the CPU kernel
   counts (not a training hot path) */
static int64_t hv__vk_topk_correct(hv_ctx *ctx, const hv_tensor *logits, const hv_tensor *labels, int k) {
    hv_tensor hl = *logits, hy = *labels;
    int64_t r;
    hl.buf = hy.buf = NULL;
    hl.data = hv__host_begin((hv_tensor *)logits, 1);
    hy.data = hl.data ? hv__host_begin((hv_tensor *)labels, 1) : NULL;
    if (!hy.data) return -1;
    /* the labels are on the host now: checked here, as the op does on the CPU */
    r = hv__check_index_values("hv_topk_accuracy", "labels", &hy, logits->shape[1], hv__desc("logits", logits)) ? -1
                                                                                                            : hv__cpu_topk_correct(ctx, &hl, &hy, k);
    hv__host_end((hv_tensor *)labels, hy.data, 0);
    hv__host_end((hv_tensor *)logits, hl.data, 0);
    return r;
}
/* a kernel that writes one partial sum per workgroup (diff_loss.comp, sumsq.comp: bindings partial,
   x, y) over the n elements of contiguous x and y (y NULL: x again), in parts of at most one
   binding each, grid-striding beyond 1024 workgroups; the parts' partial sums side by side in one
   vector, which sum_scalar then adds up. p[0] is set to each part's length. The partial vector, or
   NULL (kernel_failed set) */
static int64_t hv__vk_partial_groups(int64_t len) { return len < 1024 * 256 ? (len + 255) / 256 : 1024; }
static hv_tensor *hv__vk_partial_sums(hv_ctx *ctx, const char *op, int shader, const hv_tensor *x, const hv_tensor *y, int32_t *p, int np) {
    int64_t n = hv_numel(x), room = hv__vk_room(HV__VK(ctx)), at, slots = 0;
    hv_tensor xs = hv__vk_as(x, 1, n, 0, 0), ys = hv__vk_as(y ? y : x, 1, n, 0, 0), *partial;
    for (at = 0; at < n; at += room) slots += hv__vk_partial_groups(n - at < room ? n - at : room);
    if (!(partial = hv__new(ctx, 1, &slots))) return ctx->kernel_failed = 1, (hv_tensor *)NULL;
    for (at = 0, slots = 0; at < n || at == 0; at += room) {
        int64_t len = n - at < room ? n - at : room, g = hv__vk_partial_groups(len);
        hv_tensor pp, xp = hv__vk_cut(&xs, 0, at, len), yp = hv__vk_cut(&ys, 0, at, len);
        const hv_tensor *ts[3];
        int w[3] = {1, 0, 0};
        pp = hv__vk_cut(partial, 0, slots, g);
        slots += g;
        ts[0] = &pp;
        ts[1] = &xp;
        ts[2] = &yp;
        p[0] = hv__vk_i32(len);
        if (hv__vk_run(ctx, op, shader, ts, w, 3, p, np, (uint64_t)g, 256, 1)) return NULL;
        if (len == 0) break;
    }
    return partial;
}
static void hv__vk_diff_loss(hv_ctx *ctx, int mode, hv_tensor *loss, const hv_tensor *a, const hv_tensor *b) {
    int32_t p[2];
    hv_tensor *partial;
    p[1] = mode;
    if ((partial = hv__vk_partial_sums(ctx, "hv_mse_loss/hv_l1_loss", HV__VKS_DIFF_LOSS, a, b, p, 2)) != NULL)
        hv__vk_sum_scalar(ctx, loss, partial, (float)(1.0 / (double)hv_numel(a)));
}
static void hv__vk_diff_loss_bwd_one(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                                     const hv_tensor *gloss, int64_t total) {
    const hv_tensor *ts[5];
    int w[5] = {1, 1, 0, 0, 0};
    int32_t p[5];
    p[0] = hv__vk_i32(hv_numel(a));
    p[1] = mode;
    p[2] = ga != NULL;
    p[3] = gb != NULL;
    p[4] = hv__vk_i32(total);
    ts[0] = ga ? ga : gb;
    ts[1] = gb ? gb : ga;
    ts[2] = a;
    ts[3] = b;
    ts[4] = gloss;
    hv__vk_run(ctx, "hv_mse_loss/hv_l1_loss backward", HV__VKS_DIFF_LOSS_BWD, ts, w, 5, p, 5, (uint64_t)hv_numel(a), 256, 0);
}
static void hv__vk_adamw_one(hv_ctx *ctx, hv_tensor *pt, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a) {
    const hv_tensor *ts[4];
    int w[4] = {1, 1, 1, 0};
    int32_t p[9];
    p[0] = hv__vk_i32(hv_numel(pt));
    p[1] = hv__vk_f2i(a->decay);
    p[2] = hv__vk_f2i(a->l2);
    p[3] = hv__vk_f2i(a->b1c);
    p[4] = hv__vk_f2i(a->beta2);
    p[5] = hv__vk_f2i(a->b2c);
    p[6] = hv__vk_f2i(a->bc2_sqrt);
    p[7] = hv__vk_f2i(a->eps);
    p[8] = hv__vk_f2i(a->neg_step);
    ts[0] = pt;
    ts[1] = m;
    ts[2] = v;
    ts[3] = g;
    hv__vk_run(ctx, "hv_optim_step (Adam)", HV__VKS_ADAMW, ts, w, 4, p, 9, (uint64_t)hv_numel(pt), 256, 0);
}
static void hv__vk_sgd_one(hv_ctx *ctx, hv_tensor *pt, hv_tensor *buf, const hv_tensor *g, const hv__sgd_args *a) {
    const hv_tensor *ts[3];
    int w[3] = {1, 1, 0};
    int32_t p[9];
    p[0] = hv__vk_i32(hv_numel(pt));
    p[1] = hv__vk_f2i(a->neg_lr);
    p[2] = hv__vk_f2i(a->wd);
    p[3] = hv__vk_f2i(a->momentum);
    p[4] = hv__vk_f2i(a->damp);
    p[5] = hv__vk_f2i(a->scale);
    p[6] = buf != NULL;
    p[7] = a->first;
    p[8] = a->nesterov;
    ts[0] = pt;
    ts[1] = buf ? buf : pt;
    ts[2] = g;
    hv__vk_run(ctx, "hv_optim_step (SGD/LARS)", HV__VKS_SGD, ts, w, 3, p, 9, (uint64_t)hv_numel(pt), 256, 0);
}
/* every tensor's partial sums (sumsq.comp) and their total (sum_scalar) go to one slot of a device
   vector, which comes down once */
static int hv__vk_sumsq(hv_ctx *ctx, int mode, int n, const hv_tensor *const *x, const hv_tensor *const *y, const float *a,
                        double *out) {
    int64_t nn = n, i;
    hv_tensor *dev = hv__new(ctx, 1, &nn);
    float *host;
    int rc;
    if (!dev) return -1;
    for (i = 0; i < n && !ctx->kernel_failed; i++) {
        int32_t p[4];
        hv_tensor *partial, slot = *dev;
        if (hv_numel(x[i]) == 0) continue; /* the slot stays 0: device memory comes zeroed */
        p[1] = mode == HV__NONFINITE;
        p[2] = y && y[i];
        p[3] = hv__vk_f2i(y && y[i] ? a[i] : 0.0f);
        slot.data = (char *)dev->data + 4 * i;
        slot.shape[0] = 1;
        if ((partial = hv__vk_partial_sums(ctx, "hv_vulkan sumsq", HV__VKS_SUMSQ, x[i], y ? y[i] : NULL, p, 4)) != NULL)
            hv__vk_sum_scalar(ctx, &slot, partial, 1.0f);
    }
    if (ctx->kernel_failed) {
        ctx->kernel_failed = 0;
        return -1;
    }
    if (!(host = (float *)hv__arena_alloc(&ctx->arena, sizeof(float) * (size_t)(n ? n : 1)))) return hv__fail("hv_vulkan", "out of memory"), -1;
    rc = hv__vk_read(ctx, host, dev);
    for (i = 0; !rc && i < n; i++) out[i] = host[i];
    hv__arena_pop(&ctx->arena, host);
    return rc;
}

/* ---- splitting work over the storage-buffer range ------------------------------------------- */

/* Kernels whose work is independent along a leading axis (the batch and heads of attention, the
   rows of a norm, the images of a conv) run in parts when a tensor is over the storage-buffer
   range: the tensors flagged in `cut` are halved along axis 0 (or, with axes 2, along axis 1 once
   axis 0 is down to one: attention's heads), which they all share, the others passed whole, until
   everything fits. Accumulating kernels (+= into gw, gb) add up the parts. Elsewhere:
   elementwise kernels and GEMM halve their index space (hv__vk_ew_run, hv__vk_gemm_run),
   reductions and max's backward an axis (hv__vk_reduce), partial sums go per part
   (hv__vk_partial_sums), batch norm runs over parts of whole images in phases (its shaders), and
   softmax rows longer than a binding are made of split reductions (hv__vk_softmax_long). */
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
#define HV__VK_PTR(v) ((v).data ? &(v) : (hv_tensor *)NULL)
static hv_tensor hv__vk_none(void) {
    hv_tensor v;
    memset(&v, 0, sizeof v);
    return v;
}
/* elementwise kernels over contiguous tensors of one size (NULL allowed): all seen 1-D, those in
   `cut` halved together until they fit */
static void hv__vk_split_flat(hv_ctx *ctx, hv__vk_part_fn fn, const hv_tensor *const *ts, int n, unsigned cut, const void *user) {
    hv_tensor v[HV__VK_SPLIT_MAX], *t[HV__VK_SPLIT_MAX];
    int i;
    for (i = 0; i < n; i++) {
        t[i] = NULL;
        if (!ts[i]) continue;
        v[i] = (cut >> i) & 1 ? hv__vk_as(ts[i], 1, hv_numel(ts[i]), 0, 0) : *ts[i];
        t[i] = &v[i];
    }
    hv__vk_split(ctx, fn, t, n, cut, 1, user);
}
static void hv__vk_adamw_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    hv__vk_adamw_one(ctx, t[0], t[1], t[2], t[3], (const hv__adamw_args *)u);
}
static void hv__vk_adamw(hv_ctx *ctx, hv_tensor *pt, hv_tensor *m, hv_tensor *v, const hv_tensor *g, const hv__adamw_args *a) {
    const hv_tensor *ts[4];
    ts[0] = pt;
    ts[1] = m;
    ts[2] = v;
    ts[3] = g;
    hv__vk_split_flat(ctx, hv__vk_adamw_part, ts, 4, 15, a);
}
static void hv__vk_sgd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) { hv__vk_sgd_one(ctx, t[0], t[1], t[2], (const hv__sgd_args *)u); }
static void hv__vk_sgd(hv_ctx *ctx, hv_tensor *pt, hv_tensor *buf, const hv_tensor *g, const hv__sgd_args *a) {
    const hv_tensor *ts[3];
    ts[0] = pt;
    ts[1] = buf;
    ts[2] = g;
    hv__vk_split_flat(ctx, hv__vk_sgd_part, ts, 3, 7, a);
}
typedef struct hv__vk_diff_user {
    int mode;
    int64_t total; /* the mean's divisor: all elements, not the part's */
} hv__vk_diff_user;
static void hv__vk_diff_loss_bwd_part(hv_ctx *ctx, hv_tensor *const *t, const void *u) {
    const hv__vk_diff_user *d = (const hv__vk_diff_user *)u;
    hv__vk_diff_loss_bwd_one(ctx, d->mode, t[0], t[1], t[2], t[3], t[4], d->total);
}
static void hv__vk_diff_loss_bwd(hv_ctx *ctx, int mode, hv_tensor *ga, hv_tensor *gb, const hv_tensor *a, const hv_tensor *b,
                                 const hv_tensor *gloss) {
    const hv_tensor *ts[5];
    hv__vk_diff_user d;
    d.mode = mode;
    d.total = hv_numel(a);
    ts[0] = ga;
    ts[1] = gb;
    ts[2] = a;
    ts[3] = b;
    ts[4] = gloss;
    hv__vk_split_flat(ctx, hv__vk_diff_loss_bwd_part, ts, 5, 15, &d);
}

/* (outer, 1, inner) statistics of an (outer, n, inner) tensor seen again at its shape: stride 0
   along n, for the elementwise kernels */
static hv_tensor hv__vk_bcast(const hv_tensor *stat, const hv_tensor *like) {
    hv_tensor v = *stat;
    v.shape[1] = like->shape[1];
    v.stride[1] = 0;
    return v;
}
/* softmax over rows too long for one binding (n * inner elements over the range): out of the
   split reductions and elementwise kernels, with temporaries of x's size. y, x (outer, n, inner) */
static void hv__vk_softmax_long(hv_ctx *ctx, int is_log, hv_tensor *y, const hv_tensor *x) {
    int64_t s3[3];
    hv_tensor *m, *s, mb, sb;
    s3[0] = x->shape[0];
    s3[1] = 1;
    s3[2] = x->shape[2];
    if (!(m = hv__new(ctx, 3, s3)) || !(s = hv__new(ctx, 3, s3))) {
        ctx->kernel_failed = 1;
        return;
    }
    mb = hv__vk_bcast(m, x);
    sb = hv__vk_bcast(s, x);
    hv__vk_reduce(ctx, HV__RED_MAX, m, x);
    hv__vk_binary(ctx, HV__SUB, y, x, &mb); /* y = x - max */
    if (is_log) {
        hv_tensor *e = hv__new_like(y);
        if (!e) {
            ctx->kernel_failed = 1;
            return;
        }
        hv__vk_unary(ctx, HV__EXP, 0.0f, e, y);
        hv__vk_reduce(ctx, HV__RED_SUM, s, e);
        hv__vk_unary(ctx, HV__LOG, 0.0f, s, s);
        hv__vk_binary(ctx, HV__SUB, y, y, &sb); /* (x - max) - log sum */
    } else {
        hv__vk_unary(ctx, HV__EXP, 0.0f, y, y);
        hv__vk_reduce(ctx, HV__RED_SUM, s, y);
        hv__vk_binary(ctx, HV__DIV, y, y, &sb);
    }
}
/* its backward: gx += y (gy - sum gy y), or for log-softmax gx += gy - exp(y) sum gy */
static void hv__vk_softmax_bwd_long(hv_ctx *ctx, int is_log, hv_tensor *gx, const hv_tensor *y, const hv_tensor *gy) {
    int64_t s3[3];
    hv_tensor *s, *t, sb;
    s3[0] = y->shape[0];
    s3[1] = 1;
    s3[2] = y->shape[2];
    if (!(s = hv__new(ctx, 3, s3)) || !(t = hv__new_like(y))) {
        ctx->kernel_failed = 1;
        return;
    }
    sb = hv__vk_bcast(s, y);
    if (is_log) {
        hv__vk_reduce(ctx, HV__RED_SUM, s, gy);
        hv__vk_unary(ctx, HV__EXP, 0.0f, t, y);
        hv__vk_binary(ctx, HV__MUL, t, t, &sb);
        hv__vk_binary(ctx, HV__SUB, t, gy, t);
    } else {
        hv__vk_binary(ctx, HV__MUL, t, gy, y);
        hv__vk_reduce(ctx, HV__RED_SUM, s, t);
        hv__vk_binary(ctx, HV__SUB, t, gy, &sb);
        hv__vk_binary(ctx, HV__MUL, t, t, y);
    }
    hv__vk_copy(ctx, gx, t, 1);
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
    if (n * inner > hv__vk_room(HV__VK(ctx))) hv__vk_softmax_long(ctx, is_log, &v[0], &v[1]);
    else hv__vk_split(ctx, hv__vk_softmax_part, t, 2, 3, 1, &is_log);
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
    if (n * inner > hv__vk_room(HV__VK(ctx))) hv__vk_softmax_bwd_long(ctx, is_log, &v[0], &v[1], &v[2]);
    else hv__vk_split(ctx, hv__vk_softmax_bwd_part, t, 3, 7, 1, &is_log);
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
/* Batch norm over x (N, C, S) larger than one binding runs in parts of whole images, as many as a
   binding holds (one image over the range is refused by hv__vk_run). The images per part, and
   x's part i of them seen (n, C, S) */
static int64_t hv__vk_bn_images(hv_ctx *ctx, int64_t C, int64_t S) {
    int64_t img = C * S, room = hv__vk_room(HV__VK(ctx));
    return img > 0 && img <= room ? room / img : 1;
}
static hv_tensor hv__vk_bn_part(const hv_tensor *x, int64_t N, int64_t C, int64_t S, int64_t at, int64_t per) {
    hv_tensor v = hv__vk_as(x, 3, N, C, S);
    return hv__vk_cut(&v, 0, at, N - at < per ? N - at : per);
}
static int hv__vk_batch_norm_stats_one(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x, int phase) {
    const hv_tensor *ts[3];
    int wr[3] = {1, 1, 0};
    int32_t p[4];
    int64_t N, C, S;
    hv__bn_dims(x, &N, &C, &S);
    p[0] = hv__vk_i32(N);
    p[1] = hv__vk_i32(C);
    p[2] = hv__vk_i32(S);
    p[3] = phase;
    ts[0] = mean;
    ts[1] = var;
    ts[2] = x;
    return hv__vk_run(ctx, "hv_batch_norm", HV__VKS_BATCH_NORM_STATS, ts, wr, 3, p, 4, (uint64_t)C, 64, 1);
}
/* in parts: the sums of x per channel, then the mean, the sums of (x - mean)^2, then the variance
   (batch_norm_stats.comp's phases 1 and 2): the same two passes as one dispatch makes */
static void hv__vk_batch_norm_stats(hv_ctx *ctx, hv_tensor *mean, hv_tensor *var, const hv_tensor *x) {
    int64_t N, C, S, per, at;
    int phase;
    float inv;
    hv__bn_dims(x, &N, &C, &S);
    per = hv__vk_bn_images(ctx, C, S);
    if (per >= N) {
        hv__vk_batch_norm_stats_one(ctx, mean, var, x, 0);
        return;
    }
    inv = (float)(1.0 / (double)(N * S));
    hv__vk_fill(ctx, mean, 0.0f);
    hv__vk_fill(ctx, var, 0.0f);
    for (phase = 1; phase <= 2; phase++) {
        for (at = 0; at < N; at += per) {
            hv_tensor xp = hv__vk_bn_part(x, N, C, S, at, per);
            if (hv__vk_batch_norm_stats_one(ctx, mean, var, &xp, phase)) return;
        }
        hv__vk_unary(ctx, HV__SCALE, inv, phase == 1 ? mean : var, phase == 1 ? mean : var);
    }
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
static void hv__vk_batch_norm_one(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var,
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
static void hv__vk_batch_norm(hv_ctx *ctx, hv_tensor *y, const hv_tensor *x, const hv_tensor *mean, const hv_tensor *var,
                              const hv_tensor *w, const hv_tensor *b, float eps) {
    int64_t N, C, S, per, at;
    hv__bn_dims(x, &N, &C, &S);
    per = hv__vk_bn_images(ctx, C, S);
    for (at = 0; at < N && !ctx->kernel_failed; at += per) { /* elementwise: parts are independent */
        hv_tensor yp = hv__vk_bn_part(y, N, C, S, at, per), xp = hv__vk_bn_part(x, N, C, S, at, per);
        hv__vk_batch_norm_one(ctx, &yp, &xp, mean, var, w, b, eps);
    }
}
/* phase 0: one dispatch for x (N, C, S); 1 and 2: parts (batch_norm_bwd.comp), with sums (2, C),
   and total = the whole batch's N * S */
static int hv__vk_batch_norm_bwd_one(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                     const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats, int phase,
                                     hv_tensor *sums, int64_t total) {
    const hv_tensor *ts[8];
    int wr[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    int32_t p[11];
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
    p[9] = phase;
    p[10] = hv__vk_i32(total);
    if (phase == 1) { /* the sums take gx's binding; gx is made in phase 2 */
        ts[0] = sums;
        wr[0] = 1;
        p[5] = 0;
    } else if (phase == 2) { /* the sums in gw's binding, read; gw and gb are done */
        ts[1] = sums;
        wr[1] = 0;
        ts[2] = gx;
        wr[2] = 0;
        p[6] = p[7] = 0;
    }
    return hv__vk_run(ctx, "hv_batch_norm backward", HV__VKS_BATCH_NORM_BWD, ts, wr, 8, p, 11, (uint64_t)C, 64, 1);
}
/* in parts: without batch statistics (or without gx) every part is independent and adds its sums
   to gw, gb; with them gx needs the whole batch's sums first (phase 1), then each part (phase 2) */
static void hv__vk_batch_norm_bwd(hv_ctx *ctx, hv_tensor *gx, hv_tensor *gw, hv_tensor *gb, const hv_tensor *x, const hv_tensor *gy,
                                  const hv_tensor *mean, const hv_tensor *var, const hv_tensor *w, float eps, int batch_stats) {
    int64_t N, C, S, per, at, s2[2];
    hv_tensor *sums = NULL;
    int phase, first, last;
    hv__bn_dims(x, &N, &C, &S);
    per = hv__vk_bn_images(ctx, C, S);
    first = last = 0;
    if (per < N && gx && batch_stats) {
        s2[0] = 2;
        s2[1] = C;
        if (!(sums = hv__new(ctx, 2, s2))) {
            ctx->kernel_failed = 1;
            return;
        }
        first = 1;
        last = 2;
    }
    for (phase = first; phase <= last; phase++)
        for (at = 0; at < N; at += per) {
            hv_tensor xp = hv__vk_bn_part(x, N, C, S, at, per), gyp = hv__vk_bn_part(gy, N, C, S, at, per), gxp;
            if (gx) gxp = hv__vk_bn_part(gx, N, C, S, at, per);
            if (hv__vk_batch_norm_bwd_one(ctx, gx ? &gxp : NULL, phase == 2 ? NULL : gw, phase == 2 ? NULL : gb, &xp, &gyp, mean, var, w,
                                          eps, batch_stats, phase, sums, N * S))
                return;
        }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* hv_sync and hv_step_end return nothing: an index error found by their wait stays pending, and
   every dispatch fails with it (so the ops of the next step return NULL, hv_backward and
   hv_optim_step -1) until the following hv_step_end */
static void hv__vk_sync(hv_ctx *ctx) {
    hv__vk *vk = HV__VK(ctx);
    if (hv__vk_flush(vk) && !vk->lost) vk->err_pending = 1;
}
static void hv__vk_step_end(hv_ctx *ctx) {
    hv__vk *vk = HV__VK(ctx);
    int i;
    /* the pool's memory is free once the step's work is done */
    vk->err_pending = hv__vk_flush(vk) && !vk->lost;
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
        hv__vk_hostbuf_free(vk, &vk->err_host);
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
        hv__vk_hostbuf_init(vk, &vk->params, (uint64_t)vk->param_slot * 4096) || hv__vk_hostbuf_init(vk, &vk->err_host, 256))
        goto fail;
    ctx->dev = vk;
    { /* the index-error word (index.glsl), zeroed like all device memory */
        void *buf, *word = hv__vk_mem_alloc(ctx, 16, 1, &buf);
        if (!word) {
            ctx->dev = NULL;
            goto fail;
        }
        vk->err_blk = hv__vk_resolve(vk, word, &vk->err_off);
        hv__vk_full_barrier(vk); /* kernels touch the word untracked: the zeroing goes first */
    }
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
        be.add_i32 = hv__vk_add_i32;
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
        be.sgd = hv__vk_sgd;
        be.sumsq = hv__vk_sumsq;
        be.name = "vulkan";
    }
    return &be;
}

#endif /* HUMANVIT_VULKAN */
/* HV-SECTION vulkan END */

/* ==== 8. LAYERS AND MODELS: transformer block, ViT, MAE, ResNeXt =============================== */

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
/* U(-bound, bound): PyTorch's default for Linear and Conv weights and biases, bound 1/sqrt(fan_in) */
static int hv__uniform_fill(hv_tensor *t, float bound) {
    float *p = (float *)hv__host_begin(t, 0);
    int64_t i, n = hv_numel(t);
    if (!p) return -1;
    for (i = 0; i < n; i++) p[i] = bound * (2.0f * hv_rng_uniform(t->ctx) - 1.0f);
    return hv__host_end(t, p, 1);
}
/* num_batches_tracked += 1 after a training-mode BatchNorm, where the counter lives (no wait on a
   device); 0 or -1 */
static int hv__bn_count_step(hv_tensor *count) {
    hv_ctx *ctx = count->ctx;
    ctx->be->add_i32(ctx, count, 1);
    if (ctx->kernel_failed) return ctx->kernel_failed = 0, -1;
    return 0;
}

/* a BatchNorm2d's parameters and statistics (ResNeXt, the PMAE discriminator) */
typedef struct hv__bn2d {
    hv_tensor *w, *b, *mean, *var, *count; /* (C) x 4, num_batches_tracked (i32 scalar) */
} hv__bn2d;
/* BatchNorm2d's five entries, in PyTorch's order, as [model_prefix]prefix.weight ...
   prefix.num_batches_tracked; weight 1, bias 0, running statistics 0 and 1 */
static int hv__bn2d_init(hv__bn2d *n, hv__plist *pl, hv_ctx *ctx, const char *model_prefix, const char *prefix, int64_t c) {
    static const char *suffixes[4] = {"weight", "bias", "running_mean", "running_var"};
    hv_tensor **slots[4];
    char name[128];
    int i;
    slots[0] = &n->w;
    slots[1] = &n->b;
    slots[2] = &n->mean;
    slots[3] = &n->var;
    for (i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s.%s", prefix, suffixes[i]);
        if (!(*slots[i] = hv__param1(pl, ctx, model_prefix, name, c, i < 2))) return -1; /* the running statistics are not trained */
    }
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    /* a 0-dim int64 in PyTorch; an i32 scalar here (same 4 zeroed bytes) */
    if (!(n->count = hv__param(pl, ctx, model_prefix, name, 0, NULL, 0))) return -1;
    n->count->dtype = HV_I32;
    if (hv_tensor_fill(n->w, 1.0f) || hv_tensor_fill(n->var, 1.0f)) return -1;
    return 0;
}
/* a BatchNorm2d forward; in training also num_batches_tracked += 1 */
static hv_tensor *hv__bn2d_fwd(const hv__bn2d *n, hv_tensor *x, int training, float momentum, float eps) {
    hv_tensor *y = hv_batch_norm(x, n->w, n->b, n->mean, n->var, training, momentum, eps);
    if (y && training && hv__bn_count_step(n->count)) return NULL;
    return y;
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
    return hv_add(x, hv__mlp(hv__norm_fwd(&b->norm2, x), b->fc1.w, b->fc1.b, b->fc2.w, b->fc2.b));
}

/* A layer (a transformer block, a ResNeXt bottleneck: fwd(layer, x)) in no-grad mode (inference)
   on the CPU: the layer's temporaries are released as soon as it is done, so a forward pass holds
   one layer's activations, not all of them. The output is
   moved down to where the block's first allocation was (memmove: the regions may overlap) and
   the arena rewound to just after it. With a tape, everything must live until the backward. */
typedef hv_tensor *(*hv__layer_fn)(const void *layer, hv_tensor *x);
static hv_tensor *hv__fwd_compact(hv__layer_fn fwd, const void *layer, hv_tensor *x, const char *op) {
    hv_ctx *ctx;
    hv__arena_mark mark;
    hv_tensor *y, *z;
    void *ydata, *held = NULL;
    size_t bytes;
    int64_t shape[HV_MAX_DIMS];
    int ndim;
    if (!x) return NULL;
    ctx = x->ctx;
    if (ctx->grad_enabled || ctx->be != hv__cpu_backend()) return fwd(layer, x);
    mark = hv__arena_save(&ctx->arena);
    ctx->arena_rewinding++;
    y = fwd(layer, x);
    ctx->arena_rewinding--;
    if (!y || !hv_is_contiguous(y)) return y;
    ydata = y->data;
    bytes = (size_t)hv_numel(y) * sizeof(float);
    ndim = y->ndim;
    memcpy(shape, y->shape, sizeof shape);
    if (ctx->arena.head != mark.head) {
        /* the arena grew inside the block (first steps only) and the rewind frees the new chunk
           that y is in: y waits in a heap copy */
        if (!(held = hv__malloc(bytes))) return (hv_tensor *)hv__fail(op, "out of memory for %zu bytes", bytes);
        memcpy(held, ydata, bytes);
        ydata = held;
    }
    hv__arena_rewind(&ctx->arena, mark);
    z = hv__header(ctx, HV_F32, ndim, shape, 0);
    if (z && !(z->data = hv__arena_alloc(&ctx->arena, bytes))) z = (hv_tensor *)hv__fail(op, "out of memory for %zu bytes", bytes);
    if (z) memmove(z->data, ydata, bytes);
    hv__free(held);
    return z;
}
static hv_tensor *hv__block_fwd_layer(const void *b, hv_tensor *x) { return hv__block_fwd((const hv__block *)b, x); }
static hv_tensor *hv__block_fwd_compact(const hv__block *b, hv_tensor *x) {
    return hv__fwd_compact(hv__block_fwd_layer, b, x, "hv_vit_forward");
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
    /* the conv bias keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): MAE re-inits only Linear and LayerNorm */
    if (hv__uniform_fill(v->patch_b, 1.0f / sqrtf((float)d->in_chans * d->patch_size * d->patch_size))) return -1;
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
    for (i = 0; i < v->d.depth; i++) x = hv__block_fwd_compact(&v->blocks[i], x);
    return apply_norm ? hv__norm_fwd(&v->norm, x) : x;
}
/* A model forward marks the tensors it makes internal (hv__store: the backward may release
   them), except those it hands to the caller. */
static void hv__model_enter(hv_ctx *ctx) { ctx->internal_depth++; }
static hv_tensor *hv__model_leave(hv_ctx *ctx, hv_tensor *result) {
    ctx->internal_depth--;
    if (result) result->internal = 0;
    return result;
}
static hv_tensor *hv__vit_forward(hv_vit *vit, hv_tensor *images, int training);
HVDEF hv_tensor *hv_vit_forward_tokens(hv_vit *vit, hv_tensor *images) {
    if (!vit) return (hv_tensor *)hv__fail("hv_vit_forward_tokens", "vit is NULL");
    if (vit->d.global_pool) return (hv_tensor *)hv__fail("hv_vit_forward_tokens", "a global-pool ViT has no final token norm");
    hv__model_enter(vit->ctx);
    return hv__model_leave(vit->ctx, hv__vit_trunk(vit, hv__vit_embed(vit, images, "hv_vit_forward_tokens"), 1));
}
HVDEF hv_tensor *hv_vit_forward(hv_vit *vit, hv_tensor *images, int training) {
    if (!vit) return (hv_tensor *)hv__fail("hv_vit_forward", "vit is NULL");
    hv__model_enter(vit->ctx);
    return hv__model_leave(vit->ctx, hv__vit_forward(vit, images, training));
}
static hv_tensor *hv__vit_forward(hv_vit *vit, hv_tensor *images, int training) {
    hv_tensor *x, *feat;
    int axis1 = 1;
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
        if (bn && training && hv__bn_count_step(vit->head_count)) return NULL;
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

static hv_tensor *hv__mae_forward(hv_mae *mae, hv_tensor *images, hv_tensor *noise, hv_tensor **pred_out, hv_tensor **mask_out);
HVDEF hv_tensor *hv_mae_forward(hv_mae *mae, hv_tensor *images, hv_tensor *noise, hv_tensor **pred_out, hv_tensor **mask_out) {
    hv_tensor *pred = NULL, *mask = NULL, *loss;
    if (!mae) return (hv_tensor *)hv__fail("hv_mae_forward", "mae is NULL");
    hv__model_enter(mae->ctx);
    loss = hv__mae_forward(mae, images, noise, &pred, &mask);
    if (pred) pred->internal = 0;
    if (mask) mask->internal = 0;
    if (pred_out) *pred_out = pred;
    if (mask_out) *mask_out = mask;
    return hv__model_leave(mae->ctx, loss);
}
static hv_tensor *hv__mae_forward(hv_mae *mae, hv_tensor *images, hv_tensor *noise, hv_tensor **pred_out, hv_tensor **mask_out) {
    hv_ctx *ctx;
    const hv_vit_desc *e;
    int64_t B, L, K, Dd, s2[2], s3[3];
    hv_tensor *x, *ids_keep, *ids_restore, *mask, *shuffle, *dec, *parts[2], *pred, *target, *loss;
    int i, last = -1, drawn = 0;
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
    for (i = 0; i < mae->d.decoder_depth; i++) x = hv__block_fwd_compact(&mae->dec_blocks[i], x);
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

/* HV-SECTION pmae BEGIN */
/* ---- Perceptual MAE: the single-scale discriminator ----------------------------------------- */

#define HV__DISC_CONVS 6
/* conv i: kernel, stride, padding, output channels as a multiple of ndf (0: one channel) */
static const struct {
    int k, s, p, mult;
} hv__disc_layers[HV__DISC_CONVS] = {{7, 2, 1, 1}, {5, 2, 1, 2}, {5, 2, 0, 4}, {3, 2, 0, 8}, {3, 2, 1, 8}, {3, 1, 0, 0}};
#define HV__DISC_IMG 224 /* the only input size whose conv6 map is the 4x4 that final_layer takes */

struct hv_disc {
    hv_ctx *ctx;
    hv_disc_desc d;
    char prefix[64];
    hv__plist params;
    hv_tensor *conv_w[HV__DISC_CONVS];
    /* BatchNorm of conv2..conv5 (index 1..4; index 0 and 5 unused) */
    hv__bn2d bn[HV__DISC_CONVS]; /* conv2..conv5 */
    hv__linear final; /* final_layer: Linear(16, 1) */
};
static int hv__disc_has_bn(int i) { return i >= 1 && i <= 4; }

static void hv__disc_release(hv_disc *m) {
    int i;
    for (i = 0; i < m->params.count; i++) hv_tensor_free(m->params.tensors[i]);
    hv__plist_free(&m->params);
}
HVDEF hv_disc *hv_disc_new(hv_ctx *ctx, const hv_disc_desc *desc) {
    hv_disc *m;
    int i;
    int64_t cin, s[4];
    char name[64];
    if (!ctx) return (hv_disc *)hv__fail("hv_disc_new", "ctx is NULL");
    m = (hv_disc *)hv__malloc(sizeof *m);
    if (!m) return (hv_disc *)hv__fail("hv_disc_new", "out of memory");
    memset(m, 0, sizeof *m);
    if (desc) m->d = *desc;
    if (!m->d.ndf) m->d.ndf = 64;
    if (!m->d.in_chans) m->d.in_chans = 3;
    if (m->d.ndf < 0 || m->d.in_chans < 0 || (m->d.prefix && strlen(m->d.prefix) >= sizeof m->prefix)) {
        hv__fail("hv_disc_new", "bad settings: ndf %d, in_chans %d, prefix of %d characters (at most %d)", m->d.ndf, m->d.in_chans,
                 m->d.prefix ? (int)strlen(m->d.prefix) : 0, (int)sizeof m->prefix - 1);
        hv__free(m);
        return NULL;
    }
    if (m->d.prefix) strcpy(m->prefix, m->d.prefix);
    m->d.prefix = m->prefix;
    m->ctx = ctx;
    cin = m->d.in_chans;
    for (i = 0; i < HV__DISC_CONVS; i++) {
        int64_t cout = hv__disc_layers[i].mult ? (int64_t)hv__disc_layers[i].mult * m->d.ndf : 1;
        s[0] = cout;
        s[1] = cin;
        s[2] = s[3] = hv__disc_layers[i].k;
        /* conv1..conv5 are Sequential(conv, [bn], act): the conv is ".0", the BatchNorm ".1" */
        snprintf(name, sizeof name, i + 1 < HV__DISC_CONVS ? "conv%d.0.weight" : "conv%d.weight", i + 1);
        if (!(m->conv_w[i] = hv__param(&m->params, ctx, m->prefix, name, 4, s, 1))) goto fail;
        if (hv__uniform_fill(m->conv_w[i], 1.0f / sqrtf((float)(cin * s[2] * s[3])))) goto fail;
        if (hv__disc_has_bn(i)) {
            snprintf(name, sizeof name, "conv%d.1", i + 1);
            if (hv__bn2d_init(&m->bn[i], &m->params, ctx, m->prefix, name, cout)) goto fail;
        }
        cin = cout;
    }
    if (!(m->final.w = hv__param2(&m->params, ctx, m->prefix, "final_layer.weight", 1, 16))) goto fail;
    if (!(m->final.b = hv__param1(&m->params, ctx, m->prefix, "final_layer.bias", 1, 1))) goto fail;
    if (hv__uniform_fill(m->final.w, 0.25f) || hv__uniform_fill(m->final.b, 0.25f)) goto fail; /* 1/sqrt(16) */
    return m;
fail:
    hv__disc_release(m);
    hv__free(m);
    return NULL;
}
HVDEF void hv_disc_free(hv_disc *disc) {
    if (!disc) return;
    hv__disc_release(disc);
    hv__free(disc);
}
HVDEF hv_disc_desc hv_disc_config(const hv_disc *disc) { return disc->d; }
HVDEF const hv_param_list *hv_disc_params(hv_disc *disc) { return disc ? &disc->params.pub : NULL; }
HVDEF void hv_disc_set_trainable(hv_disc *disc, int trainable) {
    int i;
    if (!disc) return;
    for (i = 0; i < disc->params.count; i++)
        if (disc->params.tensors[i]->dtype == HV_F32 && strstr(disc->params.names[i], "running_") == NULL)
            hv_set_trainable(disc->params.tensors[i], trainable);
}
HVDEF int hv_disc_copy(hv_disc *dst, const hv_disc *src) {
    int i;
    if (!dst || !src) return hv__fail("hv_disc_copy", "dst or src is NULL"), -1;
    if (dst->d.ndf != src->d.ndf || dst->d.in_chans != src->d.in_chans)
        return hv__fail("hv_disc_copy", "src has ndf %d, in_chans %d; dst ndf %d, in_chans %d", src->d.ndf, src->d.in_chans, dst->d.ndf,
                        dst->d.in_chans),
               -1;
    for (i = 0; i < src->params.count; i++)
        if (hv_tensor_assign(dst->params.tensors[i], src->params.tensors[i])) return -1;
    return 0;
}

static int hv__disc_check_images(const hv_disc *m, const hv_tensor *images, const char *op) {
    if (images->ndim != 4 || images->shape[1] != m->d.in_chans || images->shape[2] != HV__DISC_IMG || images->shape[3] != HV__DISC_IMG) {
        hv__fail(op, "%s must be (B, %d, %d, %d): the discriminator's final_layer takes the 4x4 map of 224x224 inputs",
                 hv__desc("images", images), m->d.in_chans, HV__DISC_IMG, HV__DISC_IMG);
        return -1;
    }
    return 0;
}
/* conv i, then its BatchNorm (conv2..conv5) and LeakyReLU 0.2 (all but conv6) */
static hv_tensor *hv__disc_layer(hv_disc *m, int i, hv_tensor *x, int training) {
    hv_conv2d_desc cd;
    memset(&cd, 0, sizeof cd);
    cd.stride_h = cd.stride_w = hv__disc_layers[i].s;
    cd.pad_h = cd.pad_w = hv__disc_layers[i].p;
    x = hv_conv2d(x, m->conv_w[i], NULL, &cd);
    if (hv__disc_has_bn(i)) {
        x = hv__bn2d_fwd(&m->bn[i], x, training, 0.1f, 1e-5f);
    }
    return i + 1 < HV__DISC_CONVS ? hv_leaky_relu(x, 0.2f) : x;
}
static hv_tensor *hv__disc_forward(hv_disc *m, hv_tensor *images, int training, const char *op) {
    hv_tensor *x = images;
    int64_t s[2];
    int i;
    HV__CHECK_IN(images);
    if (hv__disc_check_images(m, images, op)) return NULL;
    for (i = 0; i < HV__DISC_CONVS; i++) x = hv__disc_layer(m, i, x, training);
    s[0] = images->shape[0];
    s[1] = 16;
    x = hv_sigmoid(hv__linear_fwd(&m->final, hv_reshape(x, hv_shape_of(2, s)))); /* (B, 1) */
    return hv_reshape(x, hv_shape_of(1, s));
}
/* conv1..conv4 outputs into feats (internal tensors unless the caller marks them) */
static int hv__disc_features(hv_disc *m, hv_tensor *images, int training, hv_tensor *feats[4], const char *op) {
    hv_tensor *x = images;
    int i;
    if (!images) return -1;
    if (hv__disc_check_images(m, images, op)) return -1;
    for (i = 0; i < 4; i++) {
        x = feats[i] = hv__disc_layer(m, i, x, training);
        if (!x) return -1;
    }
    return 0;
}
HVDEF hv_tensor *hv_disc_forward(hv_disc *disc, hv_tensor *images, int training) {
    if (!disc) return (hv_tensor *)hv__fail("hv_disc_forward", "disc is NULL");
    hv__model_enter(disc->ctx);
    return hv__model_leave(disc->ctx, hv__disc_forward(disc, images, training, "hv_disc_forward"));
}
HVDEF int hv_disc_features(hv_disc *disc, hv_tensor *images, int training, hv_tensor *feats[4]) {
    int i, rc;
    if (!disc || !feats) return hv__fail("hv_disc_features", "disc or feats is NULL"), -1;
    for (i = 0; i < 4; i++) feats[i] = NULL;
    hv__model_enter(disc->ctx);
    rc = hv__disc_features(disc, images, training, feats, "hv_disc_features");
    for (i = 0; i < 4; i++)
        if (feats[i]) feats[i]->internal = 0; /* handed to the caller: kept until hv_step_end */
    hv__model_leave(disc->ctx, NULL);
    return rc;
}

/* ---- Perceptual MAE: losses ------------------------------------------------------------------ */

/* (mean p - target)^2 as a one-element tensor */
static hv_tensor *hv__mean_sq_dev(hv_tensor *p, float target) {
    hv_tensor *d = hv_add_scalar(hv_mean(p, 0, NULL, 0), -target);
    return hv_mul(d, d);
}
HVDEF hv_tensor *hv_lsgan_d_loss(hv_tensor *p_real, hv_tensor *p_fake) {
    return hv_scale(hv_add(hv__mean_sq_dev(p_real, 1.0f), hv__mean_sq_dev(p_fake, 0.0f)), 0.5f);
}
HVDEF hv_tensor *hv_lsgan_g_loss(hv_tensor *p_fake) { return hv_scale(hv__mean_sq_dev(p_fake, 1.0f), 0.5f); }
HVDEF hv_tensor *hv_gram_matrix(hv_tensor *feat) {
    int64_t s[3];
    HV__CHECK_IN(feat);
    if (feat->ndim != 4) return (hv_tensor *)hv__fail("hv_gram_matrix", "%s must be (B, C, H, W)", hv__desc("feat", feat));
    s[0] = feat->shape[0];
    s[1] = feat->shape[1];
    s[2] = feat->shape[2] * feat->shape[3];
    feat = hv_reshape(hv_contiguous(feat), hv_shape_of(3, s)); /* (B, C, HW) */
    return hv_scale(hv_matmul(feat, feat, 0, 1), (float)(1.0 / ((double)s[1] * (double)s[2])));
}
static float hv__loss_weight(float w, float dflt) { return w == 0 ? dflt : w < 0 ? 0.0f : w; }
/* w * x, or nothing (NULL stays the sum's identity) when the weight is 0 */
static hv_tensor *hv__add_weighted(hv_tensor *sum, hv_tensor *x, float w) {
    if (w == 0) return sum;
    x = w == 1 ? x : hv_scale(x, w);
    return sum ? hv_add(sum, x) : x;
}
static hv_tensor *hv__pmae_generator_loss(hv_disc *disc, hv_disc *copy, hv_tensor *fake, hv_tensor *images, const hv_pmae_loss_desc *desc,
                                          hv_pmae_loss_parts *parts) {
    const char *op = "hv_pmae_generator_loss";
    hv_tensor *ff[4], *fi[4], *l1, *adv, *perc = NULL, *style = NULL, *total;
    float w_l1 = hv__loss_weight(desc ? desc->l1 : 0, 1.0f), w_perc = hv__loss_weight(desc ? desc->perc : 0, 0.05f);
    float w_style = hv__loss_weight(desc ? desc->style : 0, 40.0f), w_gan = hv__loss_weight(desc ? desc->gan : 0, 0.7f);
    int i;
    HV__CHECK_IN(fake);
    HV__CHECK_IN(images);
    for (i = 0; i < 4; i++)
        if (fake->ndim != 4 || images->ndim != 4 || fake->shape[i] != images->shape[i])
            return (hv_tensor *)hv__fail(op, "%s and %s must have one (B, C, 224, 224) shape", hv__desc("fake", fake),
                                         hv__desc("images", images));
    if (copy->d.ndf != disc->d.ndf || copy->d.in_chans != disc->d.in_chans)
        return (hv_tensor *)hv__fail(op, "copy (ndf %d) and disc (ndf %d) differ", copy->d.ndf, disc->d.ndf);
    l1 = hv_l1_loss(fake, images);
    adv = hv_lsgan_g_loss(hv__disc_forward(disc, fake, 1, op));
    if (hv__disc_features(copy, fake, 1, ff, op) || hv__disc_features(copy, images, 1, fi, op)) return NULL;
    for (i = 0; i < 4; i++) {
        hv_tensor *p = hv_l1_loss(ff[i], fi[i]), *s = hv_l1_loss(hv_gram_matrix(ff[i]), hv_gram_matrix(fi[i]));
        perc = perc ? hv_add(perc, p) : p;
        style = style ? hv_add(style, s) : s;
    }
    total = hv__add_weighted(hv__add_weighted(hv__add_weighted(hv__add_weighted(l1, adv, w_gan), l1, w_l1), perc, w_perc), style, w_style);
    if (!total) return NULL;
    if (parts) {
        parts->l1 = l1;
        parts->gan = adv;
        parts->perc = perc;
        parts->style = style;
    }
    return total;
}
HVDEF hv_tensor *hv_pmae_generator_loss(hv_disc *disc, hv_disc *copy, hv_tensor *fake, hv_tensor *images, const hv_pmae_loss_desc *desc,
                                        hv_pmae_loss_parts *parts) {
    hv_pmae_loss_parts local;
    hv_tensor *loss;
    if (!disc || !copy) return (hv_tensor *)hv__fail("hv_pmae_generator_loss", "disc or copy is NULL");
    if (!parts) parts = &local;
    memset(parts, 0, sizeof *parts);
    hv__model_enter(disc->ctx);
    loss = hv__pmae_generator_loss(disc, copy, fake, images, desc, parts);
    if (loss) { /* the terms are the caller's too (logging) */
        parts->l1->internal = parts->gan->internal = parts->perc->internal = parts->style->internal = 0;
    } else {
        memset(parts, 0, sizeof *parts);
    }
    return hv__model_leave(disc->ctx, loss);
}
HVDEF hv_tensor *hv_pmae_disc_loss(hv_disc *disc, hv_tensor *fake, hv_tensor *images) {
    hv_tensor *real_p, *loss;
    if (!disc) return (hv_tensor *)hv__fail("hv_pmae_disc_loss", "disc is NULL");
    hv__model_enter(disc->ctx);
    real_p = hv__disc_forward(disc, images, 1, "hv_pmae_disc_loss");
    loss = real_p ? hv_lsgan_d_loss(real_p, hv__disc_forward(disc, hv_detach(fake), 1, "hv_pmae_disc_loss")) : NULL;
    return hv__model_leave(disc->ctx, loss);
}
/* HV-SECTION pmae END */

/* ---- ResNeXt (torchvision resnet.py layout) ------------------------------------------------- */

typedef struct hv__bottleneck {
    hv_tensor *conv1, *conv2, *conv3; /* (width, in, 1, 1) (width, width/groups, 3, 3) (out, width, 1, 1) */
    hv__bn2d bn1, bn2, bn3;
    hv_tensor *down_conv; /* (out, in, 1, 1) on each stage's first block, else NULL */
    hv__bn2d down_bn;
    int stride;
} hv__bottleneck;
struct hv_resnext {
    hv_ctx *ctx;
    hv_resnext_desc d;
    hv__plist params;
    hv_tensor *conv1; /* (base, in_chans, 7, 7) */
    hv__bn2d bn1;
    hv__bottleneck *blocks;
    int nblocks;
    hv__linear fc; /* NULL without classes */
};

static const struct {
    const char *name;
    hv_resnext_preset preset;
    int depths[4], groups, width_per_group;
} hv__resnext_presets[] = {
    {"resnext50_32x4d", HV_RESNEXT50_32X4D, {3, 4, 6, 3}, 32, 4},
    {"resnext101_32x8d", HV_RESNEXT101_32X8D, {3, 4, 23, 3}, 32, 8},
};
HVDEF hv_resnext_preset hv_resnext_preset_from_name(const char *name) {
    size_t i;
    for (i = 0; name && i < sizeof hv__resnext_presets / sizeof hv__resnext_presets[0]; i++)
        if (!strcmp(name, hv__resnext_presets[i].name)) return hv__resnext_presets[i].preset;
    return HV_RESNEXT_CUSTOM;
}
/* the inner width of a stage's blocks (torchvision Bottleneck) */
static int64_t hv__resnext_width(const hv_resnext_desc *d, int64_t planes) {
    return (int64_t)((double)planes * (d->width_per_group / 64.0)) * d->groups;
}
static int hv__resnext_resolve(hv_resnext_desc *d) {
    static const char *op = "hv_resnext_new";
    size_t i;
    int k, any_depth = 0, found = d->preset == HV_RESNEXT_CUSTOM;
    for (k = 0; k < 4; k++) any_depth |= d->depths[k] != 0;
    for (i = 0; i < sizeof hv__resnext_presets / sizeof hv__resnext_presets[0]; i++)
        if (d->preset == hv__resnext_presets[i].preset) {
            if (!any_depth) memcpy(d->depths, hv__resnext_presets[i].depths, sizeof d->depths);
            if (!d->groups) d->groups = hv__resnext_presets[i].groups;
            if (!d->width_per_group) d->width_per_group = hv__resnext_presets[i].width_per_group;
            found = 1;
        }
    if (!found) return hv__fail(op, "unknown preset %d", (int)d->preset), -1;
    if (!d->groups) d->groups = 1;
    if (!d->width_per_group) d->width_per_group = 64;
    if (!d->base_planes) d->base_planes = 64;
    if (!d->in_chans) d->in_chans = 3;
    if (d->bn_eps <= 0) d->bn_eps = 1e-5f;
    if (d->bn_momentum <= 0) d->bn_momentum = 0.1f;
    for (k = 0; k < 4; k++)
        if (d->depths[k] < 1 || d->depths[k] > 1000)
            return hv__fail(op, "stage depths (%d, %d, %d, %d): every stage needs 1..1000 blocks (a custom model gives all four)",
                            d->depths[0], d->depths[1], d->depths[2], d->depths[3]), -1;
    if (d->groups < 1 || d->width_per_group < 1 || d->base_planes < 1 || d->base_planes > (1 << 16) || d->in_chans < 1 ||
        d->num_classes < 0 || d->bn_momentum > 1)
        return hv__fail(op, "bad sizes: groups %d, width_per_group %d, base_planes %d, in_chans %d, classes %d, bn momentum %g", d->groups,
                        d->width_per_group, d->base_planes, d->in_chans, d->num_classes, (double)d->bn_momentum), -1;
    if (hv__resnext_width(d, d->base_planes) < d->groups)
        return hv__fail(op, "stage 1 blocks would be int(%d * %d / 64) * %d = 0 channels wide: raise width_per_group or base_planes",
                        d->base_planes, d->width_per_group, d->groups), -1;
    return 0;
}

/* a bias-free conv weight (cout, cin, k, k) with kaiming_normal_(mode='fan_out', relu): std sqrt(2 / (cout k k)) */
static hv_tensor *hv__conv_param(hv__plist *pl, hv_ctx *ctx, const char *name, int64_t cout, int64_t cin, int64_t k) {
    int64_t s[4];
    hv_tensor *w;
    s[0] = cout;
    s[1] = cin;
    s[2] = k;
    s[3] = k;
    w = hv__param(pl, ctx, "", name, 4, s, 1);
    if (w && hv__normal_fill(w, sqrtf(2.0f / (float)(cout * k * k)))) return NULL;
    return w;
}

static int hv__bottleneck_init(hv__bottleneck *b, hv__plist *pl, hv_ctx *ctx, const hv_resnext_desc *d, const char *prefix,
                               int64_t in, int64_t planes, int stride) {
    char p[96];
    int64_t width = hv__resnext_width(d, planes), out = planes * 4;
#define HV__SUB(name) (snprintf(p, sizeof p, "%s.%s", prefix, name), p)
    b->stride = stride;
    if (!(b->conv1 = hv__conv_param(pl, ctx, HV__SUB("conv1.weight"), width, in, 1))) return -1;
    if (hv__bn2d_init(&b->bn1, pl, ctx, "", HV__SUB("bn1"), width)) return -1;
    if (!(b->conv2 = hv__conv_param(pl, ctx, HV__SUB("conv2.weight"), width, width / d->groups, 3))) return -1;
    if (hv__bn2d_init(&b->bn2, pl, ctx, "", HV__SUB("bn2"), width)) return -1;
    if (!(b->conv3 = hv__conv_param(pl, ctx, HV__SUB("conv3.weight"), out, width, 1))) return -1;
    if (hv__bn2d_init(&b->bn3, pl, ctx, "", HV__SUB("bn3"), out)) return -1;
    if (stride != 1 || in != out) {
        if (!(b->down_conv = hv__conv_param(pl, ctx, HV__SUB("downsample.0.weight"), out, in, 1))) return -1;
        if (hv__bn2d_init(&b->down_bn, pl, ctx, "", HV__SUB("downsample.1"), out)) return -1;
    }
#undef HV__SUB
    return 0;
}

static void hv__resnext_release(hv_resnext *r) {
    int i;
    for (i = 0; i < r->params.count; i++) hv_tensor_free(r->params.tensors[i]);
    hv__plist_free(&r->params);
    hv__free(r->blocks);
}
HVDEF hv_resnext *hv_resnext_new(hv_ctx *ctx, const hv_resnext_desc *desc) {
    hv_resnext *r;
    hv_resnext_desc *d;
    int64_t in, planes;
    int k, j, n = 0;
    char prefix[32];
    if (!ctx) return (hv_resnext *)hv__fail("hv_resnext_new", "ctx is NULL");
    r = (hv_resnext *)hv__malloc(sizeof *r);
    if (!r) return (hv_resnext *)hv__fail("hv_resnext_new", "out of memory");
    memset(r, 0, sizeof *r);
    if (desc) r->d = *desc;
    d = &r->d;
    r->ctx = ctx;
    if (hv__resnext_resolve(d)) goto fail;
    for (k = 0; k < 4; k++) r->nblocks += d->depths[k];
    if (!(r->blocks = (hv__bottleneck *)hv__malloc(sizeof(hv__bottleneck) * (size_t)r->nblocks))) {
        hv__fail("hv_resnext_new", "out of memory");
        goto fail;
    }
    memset(r->blocks, 0, sizeof(hv__bottleneck) * (size_t)r->nblocks);
    in = d->base_planes;
    if (!(r->conv1 = hv__conv_param(&r->params, ctx, "conv1.weight", in, d->in_chans, 7))) goto fail;
    if (hv__bn2d_init(&r->bn1, &r->params, ctx, "", "bn1", in)) goto fail;
    for (k = 0; k < 4; k++) {
        planes = (int64_t)d->base_planes << k;
        for (j = 0; j < d->depths[k]; j++, n++) {
            snprintf(prefix, sizeof prefix, "layer%d.%d", k + 1, j);
            /* torchvision (v1.5): the stride sits in the grouped 3x3 of each later stage's first block */
            if (hv__bottleneck_init(&r->blocks[n], &r->params, ctx, d, prefix, in, planes, k > 0 && j == 0 ? 2 : 1)) goto fail;
            in = planes * 4;
        }
    }
    if (d->num_classes) {
        float bound = 1.0f / sqrtf((float)in);
        if (!(r->fc.w = hv__param2(&r->params, ctx, "", "fc.weight", d->num_classes, in))) goto fail;
        if (!(r->fc.b = hv__param1(&r->params, ctx, "", "fc.bias", d->num_classes, 1))) goto fail;
        if (hv__uniform_fill(r->fc.w, bound) || hv__uniform_fill(r->fc.b, bound)) goto fail;
    }
    return r;
fail:
    hv__resnext_release(r);
    hv__free(r);
    return NULL;
}
HVDEF void hv_resnext_free(hv_resnext *r) {
    if (!r) return;
    hv__resnext_release(r);
    hv__free(r);
}
HVDEF hv_resnext_desc hv_resnext_config(const hv_resnext *r) {
    hv_resnext_desc none;
    if (r) return r->d;
    memset(&none, 0, sizeof none);
    return none;
}
HVDEF int hv_resnext_num_features(const hv_resnext *r) { return r ? 32 * r->d.base_planes : 0; }
HVDEF const hv_param_list *hv_resnext_params(hv_resnext *r) { return r ? &r->params.pub : NULL; }

/* what a layer of the forward needs besides its input (hv__fwd_compact passes one pointer) */
typedef struct hv__resnext_step {
    const hv_resnext *r;
    const hv__bottleneck *block; /* NULL: the stem */
    int training;
} hv__resnext_step;

static hv_tensor *hv__resnext_bn(const hv_resnext *r, const hv__bn2d *n, hv_tensor *x, int training) {
    return hv__bn2d_fwd(n, x, training, r->d.bn_momentum, r->d.bn_eps);
}
/* conv1 7x7/2 -> bn1 -> relu -> maxpool 3/2 */
static hv_tensor *hv__resnext_stem(const hv__resnext_step *s, hv_tensor *x) {
    hv_conv2d_desc c;
    hv_pool2d_desc p;
    memset(&c, 0, sizeof c);
    memset(&p, 0, sizeof p);
    c.stride_h = c.stride_w = 2;
    c.pad_h = c.pad_w = 3;
    p.kernel_h = p.kernel_w = 3;
    p.stride_h = p.stride_w = 2;
    p.pad_h = p.pad_w = 1;
    x = hv_relu(hv__resnext_bn(s->r, &s->r->bn1, hv_conv2d(x, s->r->conv1, NULL, &c), s->training));
    return hv_max_pool2d(x, &p);
}
/* relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1 x)))))) + identity), identity = x or downsample(x) */
static hv_tensor *hv__bottleneck_fwd(const hv__resnext_step *s, hv_tensor *x) {
    const hv__bottleneck *b = s->block;
    hv_conv2d_desc c3, cd;
    hv_tensor *y, *identity = x;
    memset(&c3, 0, sizeof c3);
    memset(&cd, 0, sizeof cd);
    c3.stride_h = c3.stride_w = b->stride;
    c3.pad_h = c3.pad_w = 1;
    c3.groups = s->r->d.groups;
    cd.stride_h = cd.stride_w = b->stride;
    y = hv_relu(hv__resnext_bn(s->r, &b->bn1, hv_conv2d(x, b->conv1, NULL, NULL), s->training));
    y = hv_relu(hv__resnext_bn(s->r, &b->bn2, hv_conv2d(y, b->conv2, NULL, &c3), s->training));
    y = hv__resnext_bn(s->r, &b->bn3, hv_conv2d(y, b->conv3, NULL, NULL), s->training);
    if (b->down_conv) identity = hv__resnext_bn(s->r, &b->down_bn, hv_conv2d(x, b->down_conv, NULL, &cd), s->training);
    return hv_relu(hv_add(y, identity));
}
static hv_tensor *hv__resnext_layer(const void *step, hv_tensor *x) {
    const hv__resnext_step *s = (const hv__resnext_step *)step;
    return s->block ? hv__bottleneck_fwd(s, x) : hv__resnext_stem(s, x);
}

static hv_tensor *hv__resnext_forward(hv_resnext *r, hv_tensor *images, int training) {
    static const char *op = "hv_resnext_forward";
    const hv_resnext_desc *d = &r->d;
    hv__resnext_step s;
    hv_tensor *x;
    int i;
    HV__CHECK_IN(images);
    if (images->dtype != HV_F32 || images->ndim != 4 || images->shape[1] != d->in_chans)
        return (hv_tensor *)hv__fail(op, "%s must be f32 (B, %d, H, W): the model takes %d-channel images", hv__desc("images", images),
                                     d->in_chans, d->in_chans);
    if (images->shape[0] < 1 || images->shape[2] < 1 || images->shape[3] < 1)
        return (hv_tensor *)hv__fail(op, "%s is empty", hv__desc("images", images));
    if (training && images->shape[0] * ((images->shape[2] + 31) / 32) * ((images->shape[3] + 31) / 32) < 2)
        return (hv_tensor *)hv__fail(op,
                                     "%s is too small for a training step: the last stage's map is ceil(H/32) x ceil(W/32) = %lld x %lld, "
                                     "so its BatchNorm would see one value per channel over the batch of %lld (PyTorch refuses it too); "
                                     "use larger images or a larger batch",
                                     hv__desc("images", images), (long long)((images->shape[2] + 31) / 32),
                                     (long long)((images->shape[3] + 31) / 32), (long long)images->shape[0]);
    s.r = r;
    s.block = NULL;
    s.training = training;
    x = hv__fwd_compact(hv__resnext_layer, &s, images, op); /* in no-grad mode each layer frees its temporaries */
    for (i = 0; i < r->nblocks; i++) {
        s.block = &r->blocks[i];
        x = hv__fwd_compact(hv__resnext_layer, &s, x, op);
    }
    x = hv_global_avg_pool(x); /* (B, 32 base_planes) */
    return d->num_classes ? hv__linear_fwd(&r->fc, x) : x;
}
HVDEF hv_tensor *hv_resnext_forward(hv_resnext *r, hv_tensor *images, int training) {
    if (!r) return (hv_tensor *)hv__fail("hv_resnext_forward", "r is NULL");
    hv__model_enter(r->ctx);
    return hv__model_leave(r->ctx, hv__resnext_forward(r, images, training));
}

/* ==== 9. CHECKPOINT FORMATS: safetensors, PyTorch zip + pickle ================================ */
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
    /* optional: each loaded tensor goes to sink first. It returns 1 to keep the tensor in the
       state dict, 0 when it took what it needed (the loader frees the tensor at once: loading
       into a model this way never holds the weights twice), -1 to stop with its error */
    int (*sink)(void *user, const char *name, hv_tensor *t);
    void *sink_user;
} hv__src;
/* hands t to the source's sink; 1 keep, 0 consumed (t freed), -1 failed (t freed) */
static int hv__src_sink(const hv__src *src, const char *name, size_t nlen, hv_tensor *t) {
    char buf[256];
    int rc;
    if (!src->sink) return 1;
    snprintf(buf, sizeof buf, "%.*s", (int)(nlen < 255 ? nlen : 255), name);
    rc = src->sink(src->sink_user, buf, t);
    if (rc <= 0) hv_tensor_free(t);
    return rc;
}

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
        switch (hv__src_sink(src, name, nlen, t)) {
        case -1: goto fail;
        case 0: ntensors++; continue;
        default: break;
        }
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
        switch (hv__src_sink(src, e->name, e->nlen, t)) {
        case -1: goto fail;
        case 0: continue;
        default: break;
        }
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
static hv_state_dict *hv__ckpt_load_sink(hv_ctx *ctx, const char *op, const char *path, const char *entry,
                                         int (*sink)(void *, const char *, hv_tensor *), void *user) {
    hv__src s;
    hv_state_dict *sd;
    unsigned char head[2] = {0, 0};
    if (hv__src_open(&s, op, path) != 0) return NULL;
    s.sink = sink;
    s.sink_user = user;
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
HVDEF hv_state_dict *hv_ckpt_load(hv_ctx *ctx, const char *path, const char *entry) {
    return hv__ckpt_load_sink(ctx, "hv_ckpt_load", path, entry, NULL, NULL);
}
/* HV-SECTION checkpoints END */

/* ---- loading checkpoints into models -------------------------------------------------------- */

static char *hv__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)hv__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
static int hv__names_push(char ***list, int *count, const char *name) {
    char **grown = (char **)hv__malloc(sizeof(char *) * (size_t)(*count + 1));
    if (!grown) return -1;
    if (*count) memcpy(grown, *list, sizeof(char *) * (size_t)*count);
    hv__free(*list);
    *list = grown;
    if (!(grown[*count] = hv__strdup(name))) return -1;
    (*count)++;
    return 0;
}
HVDEF void hv_load_result_free(hv_load_result *res) {
    int i;
    if (!res) return;
    for (i = 0; i < res->missing_count; i++) hv__free(res->missing[i]);
    for (i = 0; i < res->unexpected_count; i++) hv__free(res->unexpected[i]);
    hv__free(res->missing);
    hv__free(res->unexpected);
    memset(res, 0, sizeof *res);
}
static int hv__param_index(const hv_param_list *params, const char *name) {
    int i;
    for (i = 0; i < params->count; i++)
        if (!strcmp(params->names[i], name)) return i;
    return -1;
}
static int hv__same_shape(const hv_tensor *a, const hv_tensor *b) {
    int i;
    if (a->ndim != b->ndim) return 0;
    for (i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}
HVDEF int hv_params_load(const hv_param_list *params, const hv_state_dict *sd, hv_load_result *res) {
    hv_load_result local;
    int i, n;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!params || !sd) return hv__fail("hv_params_load", "params or state dict is NULL"), -1;
    n = hv_state_dict_count(sd);
    /* check every shape first, so that a mismatch leaves the model untouched */
    for (i = 0; i < n; i++) {
        int p = hv__param_index(params, hv_state_dict_name(sd, i));
        hv_tensor *src = hv_state_dict_at(sd, i);
        if (p >= 0 && (!hv__same_shape(src, params->tensors[p]) || src->dtype != params->tensors[p]->dtype)) {
            hv__fail("hv_params_load", "'%s': checkpoint %s%s, model %s%s", params->names[p], hv__shape_str(src),
                     src->dtype == HV_I32 ? " i32" : "", hv__shape_str(params->tensors[p]), params->tensors[p]->dtype == HV_I32 ? " i32" : "");
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        const char *name = hv_state_dict_name(sd, i);
        int p = hv__param_index(params, name);
        if (p < 0) {
            if (hv__names_push(&res->unexpected, &res->unexpected_count, name)) goto oom;
            continue;
        }
        params->tensors[p]->ctx->be->copy(params->tensors[p]->ctx, params->tensors[p], hv_state_dict_at(sd, i), 0);
        res->loaded++;
    }
    for (i = 0; i < params->count; i++)
        if (!hv_state_dict_get(sd, params->names[i]) && hv__names_push(&res->missing, &res->missing_count, params->names[i])) goto oom;
    if (res == &local) hv_load_result_free(&local);
    return 0;
oom:
    hv_load_result_free(res);
    return hv__fail("hv_params_load", "out of memory"), -1;
}
/* the streaming loader's sink: each checkpoint tensor is copied into its parameter and freed */
typedef struct hv__load_sink {
    const hv_param_list *params;
    hv_load_result *res;
    unsigned char *seen; /* per parameter */
    hv_load_map_fn map;
    void *map_user;
} hv__load_sink;
static int hv__load_sink_fn(void *user, const char *name, hv_tensor *t) {
    hv__load_sink *ls = (hv__load_sink *)user;
    int p = hv__param_index(ls->params, name), rc = -1;
    hv_tensor *dst, *src = t;
    if (p < 0) return hv__names_push(&ls->res->unexpected, &ls->res->unexpected_count, name) ? -1 : 0;
    dst = ls->params->tensors[p];
    if (ls->map) {
        unsigned errors = hv__err_count;
        if (!(src = ls->map(ls->map_user, name, t, dst))) {
            if (hv__err_count == errors) hv__fail("hv_params_load_file", "'%s': the map returned no tensor", name);
            return -1;
        }
    }
    if (!hv__same_shape(src, dst) || src->dtype != dst->dtype) {
        hv__fail("hv_params_load_file", "'%s': checkpoint %s%s, model %s%s", name, hv__shape_str(src), src->dtype == HV_I32 ? " i32" : "",
                 hv__shape_str(dst), dst->dtype == HV_I32 ? " i32" : "");
    } else {
        dst->ctx->be->copy(dst->ctx, dst, src, 0);
        if (!ls->seen[p]) ls->res->loaded++;
        ls->seen[p] = 1;
        rc = 0;
    }
    if (src != t) hv_tensor_free(src); /* the loader frees t */
    return rc;
}
HVDEF int hv_params_load_file(const hv_param_list *params, const char *path, const char *entry, hv_load_result *res) {
    return hv_params_load_file_map(params, path, entry, res, NULL, NULL);
}
HVDEF int hv_params_load_file_map(const hv_param_list *params, const char *path, const char *entry, hv_load_result *res,
                                  hv_load_map_fn map, void *user) {
    hv_load_result local;
    hv__load_sink ls;
    hv_state_dict *rest;
    int i, rc = 0;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!params || !params->count) return hv__fail("hv_params_load_file", "no parameters to load into"), -1;
    ls.params = params;
    ls.res = res;
    ls.map = map;
    ls.map_user = user;
    ls.seen = (unsigned char *)hv__malloc((size_t)params->count);
    if (!ls.seen) return hv__fail("hv_params_load_file", "out of memory"), -1;
    memset(ls.seen, 0, (size_t)params->count);
    /* every tensor goes through the sink and is freed at once, so the weights are never held
       twice; on an error (a shape mismatch too) the parameters loaded before it keep their values */
    rest = hv__ckpt_load_sink(params->tensors[0]->ctx, "hv_params_load_file", path, entry, hv__load_sink_fn, &ls);
    if (!rest) rc = -1;
    hv_state_dict_free(rest);
    for (i = 0; rc == 0 && i < params->count; i++)
        if (!ls.seen[i] && hv__names_push(&res->missing, &res->missing_count, params->names[i])) {
            hv__fail("hv_params_load_file", "out of memory");
            rc = -1;
        }
    hv__free(ls.seen);
    if (rc || res == &local) hv_load_result_free(res);
    return rc;
}
HVDEF hv_state_dict *hv_params_state_dict(hv_ctx *ctx, const hv_param_list *params) {
    hv_state_dict *sd = hv_state_dict_new(ctx);
    int i;
    for (i = 0; sd && params && i < params->count; i++)
        if (hv_state_dict_add(sd, params->names[i], params->tensors[i])) {
            hv_state_dict_free(sd);
            return NULL;
        }
    return sd;
}


/* ==== 10. OPTIMIZERS, SCHEDULES, TRAINING STATE ================================================ */
/* HV-SECTION train BEGIN */

#include <errno.h>
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#define HV__POSIX_IO 1
#elif defined(_WIN32)
#include <io.h>
#endif

/* ---- parameter groups ----------------------------------------------------------------------- */

static int hv__ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

HVDEF int hv_vit_layer_id(const char *name, int num_layers) {
    if (!name) return num_layers + 1;
    if (!strcmp(name, "cls_token") || !strcmp(name, "pos_embed") || !strncmp(name, "patch_embed", 11)) return 0;
    if (!strncmp(name, "blocks.", 7) && name[7] >= '0' && name[7] <= '9') return atoi(name + 7) + 1;
    return num_layers + 1;
}

/* weight decay of one parameter under a rule */
static float hv__group_wd(const char *name, const hv_tensor *t, hv_decay_rule rule, float wd) {
    if (rule == HV_DECAY_ALL) return wd;
    if (t->ndim <= 1 || hv__ends_with(name, ".bias")) return 0.0f;
    if (rule == HV_DECAY_SKIP_1D_AND_TOKENS &&
        (hv__ends_with(name, "pos_embed") || hv__ends_with(name, "cls_token") || hv__ends_with(name, "mask_token") ||
         hv__ends_with(name, "dist_token")))
        return 0.0f;
    return wd;
}

/* ---- optimizers ----------------------------------------------------------------------------- */

typedef struct hv__opt_param {
    hv_tensor *t;         /* borrowed from the parameter list */
    int active;           /* trainable when the optimizer was made: has state, gets updates */
    float lr_scale, wd;
    int64_t steps;        /* updates done (PyTorch's per-parameter state['step']) */
    hv_tensor *state[2];  /* see hv_optim_state */
} hv__opt_param;

struct hv_optim {
    hv_ctx *ctx;
    hv_optim_desc d; /* resolved */
    double lr;
    int count, nslots;
    hv__opt_param *p;
    /* LARS: the sumsq arguments and results of a step, 2 per parameter */
    const hv_tensor **lx, **ly;
    float *la;
    double *lss;
};

static const char *hv__optim_name(int type) {
    static const char *names[] = {"AdamW", "Adam", "SGD", "LARS"};
    return type >= 0 && type < 4 ? names[type] : "unknown";
}

HVDEF hv_optim *hv_optim_new(hv_ctx *ctx, const hv_param_list *params, const hv_optim_desc *desc) {
    static const char *slot_names[2][2] = {{".exp_avg", ".exp_avg_sq"}, {".momentum_buffer", ""}};
    hv_optim *o;
    hv_optim_desc d;
    int i, s;
    if (!ctx) return (hv_optim *)hv__fail("hv_optim_new", "ctx is NULL");
    if (!params || params->count < 0 || (params->count > 0 && (!params->tensors || !params->names)))
        return (hv_optim *)hv__fail("hv_optim_new", "params is NULL or has no tensors/names arrays");
    memset(&d, 0, sizeof d);
    if (desc) d = *desc;
    if ((int)d.type < 0 || (int)d.type > HV_OPTIM_LARS)
        return (hv_optim *)hv__fail("hv_optim_new", "unknown optimizer type %d", (int)d.type);
    if (d.lr == 0) d.lr = 1e-3f;
    if (d.beta1 == 0) d.beta1 = 0.9f;
    if (d.beta2 == 0) d.beta2 = 0.999f;
    if (d.eps == 0) d.eps = 1e-8f;
    if (d.type == HV_OPTIM_LARS && d.momentum == 0) d.momentum = 0.9f;
    if (d.trust_coefficient == 0) d.trust_coefficient = 1e-3f;
    if (!(d.lr > 0) || !(d.beta1 >= 0 && d.beta1 < 1) || !(d.beta2 >= 0 && d.beta2 < 1) || !(d.eps > 0) || !(d.weight_decay >= 0) ||
        !(d.momentum >= 0) || !(d.dampening >= 0 && d.dampening <= 1) || !(d.trust_coefficient > 0) || !(d.layer_decay >= 0) ||
        d.num_layers < 0)
        return (hv_optim *)hv__fail("hv_optim_new",
                                    "bad settings: lr %g, betas (%g, %g), eps %g, weight_decay %g, momentum %g, dampening %g, trust %g, "
                                    "layer_decay %g, num_layers %d (lr, eps, trust > 0; betas in [0, 1); the rest >= 0)",
                                    (double)d.lr, (double)d.beta1, (double)d.beta2, (double)d.eps, (double)d.weight_decay,
                                    (double)d.momentum, (double)d.dampening, (double)d.trust_coefficient, (double)d.layer_decay,
                                    d.num_layers);
    if (d.nesterov && (d.type != HV_OPTIM_SGD || d.momentum <= 0 || d.dampening != 0))
        return (hv_optim *)hv__fail("hv_optim_new", "Nesterov momentum needs SGD with momentum > 0 and dampening 0");
    if ((int)d.decay_rule < 0 || (int)d.decay_rule > HV_DECAY_SKIP_1D)
        return (hv_optim *)hv__fail("hv_optim_new", "unknown decay_rule %d", (int)d.decay_rule);
    if (d.layer_decay == 1.0f) d.layer_decay = 0; /* the same thing: off */
    if (d.layer_decay > 0 && d.num_layers == 0)
        for (i = 0; i < params->count; i++) {
            int id = params->names[i] ? hv_vit_layer_id(params->names[i], 1 << 20) : 0;
            if (id > 0 && id <= (1 << 20) && id > d.num_layers) d.num_layers = id; /* blocks.i -> i + 1 */
        }
    o = (hv_optim *)hv__malloc(sizeof *o);
    if (!o) return (hv_optim *)hv__fail("hv_optim_new", "out of memory");
    memset(o, 0, sizeof *o);
    o->ctx = ctx;
    o->d = d;
    o->lr = d.lr;
    o->count = params->count;
    o->nslots = d.type <= HV_OPTIM_ADAM ? 2 : (d.type == HV_OPTIM_LARS || d.momentum > 0) ? 1 : 0;
    o->p = (hv__opt_param *)hv__malloc(sizeof(hv__opt_param) * (size_t)(o->count ? o->count : 1));
    if (!o->p) {
        hv__free(o);
        return (hv_optim *)hv__fail("hv_optim_new", "out of memory");
    }
    memset(o->p, 0, sizeof(hv__opt_param) * (size_t)(o->count ? o->count : 1));
    if (d.type == HV_OPTIM_LARS) {
        size_t n2 = 2 * (size_t)(o->count ? o->count : 1);
        o->lx = (const hv_tensor **)hv__malloc(sizeof *o->lx * n2);
        o->ly = (const hv_tensor **)hv__malloc(sizeof *o->ly * n2);
        o->la = (float *)hv__malloc(sizeof *o->la * n2);
        o->lss = (double *)hv__malloc(sizeof *o->lss * n2);
        if (!o->lx || !o->ly || !o->la || !o->lss) {
            hv__fail("hv_optim_new", "out of memory");
            goto fail;
        }
    }
    for (i = 0; i < o->count; i++) {
        hv__opt_param *P = &o->p[i];
        hv_tensor *t = params->tensors[i];
        const char *name = params->names[i] ? params->names[i] : "";
        P->t = t;
        if (!t) {
            hv__fail("hv_optim_new", "parameter %d ('%s') is NULL", i, name);
            goto fail;
        }
        if (!t->trainable) continue; /* buffers: running statistics, frozen tables */
        if (t->ctx != ctx || t->dtype != HV_F32 || !t->persistent || !hv_is_contiguous(t)) {
            hv__fail("hv_optim_new", "trainable %s must be a persistent contiguous f32 tensor of this context", hv__desc(name, t));
            goto fail;
        }
        P->active = 1;
        P->lr_scale = d.layer_decay > 0 ? (float)pow((double)d.layer_decay, (double)(d.num_layers + 1 - hv_vit_layer_id(name, d.num_layers)))
                                        : 1.0f;
        P->wd = hv__group_wd(name, t, d.decay_rule, d.weight_decay);
        for (s = 0; s < o->nslots; s++) {
            char full[128];
            P->state[s] = hv__alloc(ctx, HV_F32, t->ndim, t->shape, 1);
            if (!P->state[s]) goto fail;
            snprintf(full, sizeof full, "%s%s", name, slot_names[d.type <= HV_OPTIM_ADAM ? 0 : 1][s]);
            hv_tensor_set_name(P->state[s], full);
        }
    }
    return o;
fail:
    hv_optim_free(o);
    return NULL;
}

HVDEF void hv_optim_free(hv_optim *opt) {
    int i, s;
    if (!opt) return;
    for (i = 0; i < opt->count; i++)
        for (s = 0; s < 2; s++) hv_tensor_free(opt->p[i].state[s]);
    hv__free(opt->p);
    hv__free((void *)opt->lx);
    hv__free((void *)opt->ly);
    hv__free(opt->la);
    hv__free(opt->lss);
    hv__free(opt);
}

HVDEF void hv_optim_set_lr(hv_optim *opt, float lr) {
    if (opt) opt->lr = lr;
}
HVDEF float hv_optim_get_lr(const hv_optim *opt) { return opt ? (float)opt->lr : NAN; }
HVDEF hv_optim_desc hv_optim_config(const hv_optim *opt) { return opt->d; }
HVDEF int hv_optim_param_group(const hv_optim *opt, int i, float *lr_scale, float *weight_decay) {
    if (!opt || i < 0 || i >= opt->count || !opt->p[i].active) return -1;
    if (lr_scale) *lr_scale = opt->p[i].lr_scale;
    if (weight_decay) *weight_decay = opt->p[i].wd;
    return 0;
}
HVDEF int hv_optim_set_param_group(hv_optim *opt, int i, float lr_scale, float weight_decay) {
    if (!opt || i < 0 || i >= opt->count || !opt->p[i].active)
        return hv__fail("hv_optim_set_param_group", "parameter %d is not updated by this optimizer", i), -1;
    if (!(lr_scale >= 0) || !(weight_decay >= 0))
        return hv__fail("hv_optim_set_param_group", "lr_scale %g and weight_decay %g must be >= 0", (double)lr_scale, (double)weight_decay), -1;
    opt->p[i].lr_scale = lr_scale;
    opt->p[i].wd = weight_decay;
    return 0;
}
HVDEF hv_tensor *hv_optim_state(hv_optim *opt, int i, int slot) {
    if (!opt || i < 0 || i >= opt->count || slot < 0 || slot >= opt->nslots) return NULL;
    return opt->p[i].state[slot];
}
HVDEF int64_t hv_optim_param_steps(const hv_optim *opt, int i) {
    return (opt && i >= 0 && i < opt->count) ? opt->p[i].steps : 0;
}
HVDEF void hv_optim_zero_grad(hv_optim *opt) {
    int i;
    if (!opt) return;
    for (i = 0; i < opt->count; i++)
        if (opt->p[i].active) hv_zero_grad(opt->p[i].t);
}

/* The updates run through the backend table (adamw, sgd, sumsq), so the same code drives a device
   backend; the coefficients are computed here once per parameter, in double. LARS takes the norms
   of all its matrices in one sumsq call first (one submit and wait on a device per step). */
HVDEF int hv_optim_step(hv_optim *opt) {
    int i, nl = 0;
    const hv_optim_desc *d;
    hv_ctx *ctx;
    if (!opt) return hv__fail("hv_optim_step", "optimizer is NULL"), -1;
    d = &opt->d;
    ctx = opt->ctx;
    if (d->type == HV_OPTIM_LARS) { /* trust ratios from ||w|| and ||g + wd w|| of every matrix */
        for (i = 0; i < opt->count; i++) {
            hv__opt_param *P = &opt->p[i];
            if (!P->active || !P->t->trainable || !P->t->grad || P->t->ndim <= 1) continue;
            opt->lx[2 * nl] = P->t;
            opt->ly[2 * nl] = NULL;
            opt->lx[2 * nl + 1] = P->t->grad;
            opt->ly[2 * nl + 1] = P->t;
            opt->la[2 * nl] = 0;
            opt->la[2 * nl + 1] = P->wd;
            nl++;
        }
        if (nl && ctx->be->sumsq(ctx, HV__SUMSQ, 2 * nl, opt->lx, opt->ly, opt->la, opt->lss)) return -1;
        nl = 0;
    }
    for (i = 0; i < opt->count; i++) {
        hv__opt_param *P = &opt->p[i];
        hv_tensor *t = P->t;
        double lr = opt->lr * (double)P->lr_scale;
        if (!P->active || !t->trainable || !t->grad) continue;
        P->steps++;
        if (d->type == HV_OPTIM_ADAMW || d->type == HV_OPTIM_ADAM) {
            double step = (double)P->steps;
            double bc1 = 1.0 - pow((double)d->beta1, step), bc2 = 1.0 - pow((double)d->beta2, step);
            int adamw = d->type == HV_OPTIM_ADAMW;
            hv__adamw_args a;
            a.decay = adamw ? (float)(1.0 - lr * P->wd) : 1.0f;
            a.l2 = adamw ? 0.0f : P->wd;
            a.b1c = (float)(1.0 - d->beta1);
            a.beta2 = d->beta2;
            a.b2c = (float)(1.0 - d->beta2);
            a.bc2_sqrt = (float)sqrt(bc2);
            a.eps = d->eps;
            a.neg_step = (float)-(lr / bc1);
            ctx->be->adamw(ctx, t, P->state[0], P->state[1], t->grad, &a);
        } else {
            hv__sgd_args a;
            a.neg_lr = (float)-lr;
            a.momentum = d->momentum;
            a.scale = 1.0f;
            a.first = P->steps == 1;
            a.nesterov = d->nesterov;
            if (d->type == HV_OPTIM_SGD) {
                a.wd = P->wd;
                a.damp = (float)(1.0 - d->dampening);
            } else { /* LARS: the buffer starts at zero, so no copy on the first step */
                a.wd = t->ndim > 1 ? P->wd : 0.0f;
                a.damp = 1.0f;
                a.first = 0;
                if (t->ndim > 1) {
                    double pn = sqrt(opt->lss[2 * nl]), un = sqrt(opt->lss[2 * nl + 1]);
                    if (pn > 0 && un > 0) a.scale = (float)((double)d->trust_coefficient * pn / un);
                    nl++;
                }
            }
            ctx->be->sgd(ctx, t, opt->nslots ? P->state[0] : NULL, t->grad, &a);
        }
    }
    if (ctx->kernel_failed) {
        ctx->kernel_failed = 0;
        return hv__fail("hv_optim_step", "a device kernel failed: %s", hv_last_error()), -1;
    }
    return 0;
}

/* ---- learning-rate schedules ---------------------------------------------------------------- */

HVDEF float hv_lr_at(const hv_schedule_desc *s, double t) {
    double lr, w;
    int i;
    if (!s) return hv__fail("hv_lr_at", "schedule is NULL"), NAN;
    lr = s->lr;
    w = s->warmup;
    if ((int)s->type < 0 || (int)s->type > HV_SCHED_STEP || !(w >= 0) || s->num_milestones < 0 || s->num_milestones > HV_MAX_MILESTONES)
        return hv__fail("hv_lr_at", "bad schedule: type %d, warmup %g, %d milestones (at most %d)", (int)s->type, w, s->num_milestones,
                        HV_MAX_MILESTONES), NAN;
    if (w > 0 && t < w) return (float)(lr * (t > 0 ? t : 0) / w);
    if (s->type == HV_SCHED_COSINE) {
        if (!(s->total > w)) return hv__fail("hv_lr_at", "cosine schedule: total %g must exceed warmup %g", s->total, w), NAN;
        if (t >= s->total) return s->min_lr;
        return (float)(s->min_lr + (lr - s->min_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * (t - w) / (s->total - w))));
    }
    if (s->type == HV_SCHED_STEP) {
        double gamma = s->gamma != 0 ? s->gamma : 0.1;
        for (i = 0; i < s->num_milestones; i++)
            if (s->milestones[i] <= t) lr *= gamma; /* as MultiStepLR: one factor per milestone passed */
    }
    return (float)lr;
}

/* ---- gradient clipping and non-finite checks ------------------------------------------------ */

static int hv__has_grad(const hv_tensor *t) { return t && t->trainable && t->grad && t->grad->dtype == HV_F32; }

/* the context whose arena holds hv__grad_sums' scratch: the first parameter's (NULL: no tensors) */
static hv_ctx *hv__params_ctx(const hv_param_list *params) {
    int i;
    for (i = 0; i < params->count; i++)
        if (params->tensors[i]) return params->tensors[i]->ctx;
    return NULL;
}
/* hands back hv__grad_sums' array */
static void hv__grad_sums_end(const hv_param_list *params, double *sums) {
    hv_ctx *c0 = hv__params_ctx(params);
    if (c0) hv__arena_pop(&c0->arena, sums);
}
/* the sumsq (mode) of the gradient of each parameter, 0 for those without one, in an array of
   params->count from the first parameter's context arena (give it back with hv__grad_sums_end: no
   malloc in a training loop). One backend call per run of tensors of one context (one submit and
   wait on a device). NULL on error (set). */
static double *hv__grad_sums(const char *op, const hv_param_list *params, int mode) {
    static double none;
    hv_ctx *c0 = hv__params_ctx(params);
    double *out;
    int i = 0, j, k, n;
    if (!c0) return &none;
    if (!(out = (double *)hv__arena_alloc(&c0->arena, sizeof *out * (size_t)params->count))) return (double *)hv__fail(op, "out of memory");
    while (i < params->count) {
        hv_ctx *ctx;
        const hv_tensor **x;
        double *r;
        for (; i < params->count && !hv__has_grad(params->tensors[i]); i++) out[i] = 0;
        if (i == params->count) break;
        ctx = params->tensors[i]->ctx;
        for (j = i, n = 0; j < params->count && (!hv__has_grad(params->tensors[j]) || params->tensors[j]->ctx == ctx); j++)
            n += hv__has_grad(params->tensors[j]);
        x = (const hv_tensor **)hv__arena_alloc(&ctx->arena, (sizeof *x + sizeof *r) * (size_t)n);
        if (!x) return hv__grad_sums_end(params, out), (double *)hv__fail(op, "out of memory");
        r = (double *)(x + n);
        for (k = 0, j = i; k < n; j++)
            if (hv__has_grad(params->tensors[j])) x[k++] = params->tensors[j]->grad;
        j = ctx->be->sumsq(ctx, mode, n, x, NULL, NULL, r);
        for (k = 0; !j && k < n; i++) out[i] = hv__has_grad(params->tensors[i]) ? r[k++] : 0;
        hv__arena_pop(&ctx->arena, (void *)x);
        if (j) return hv__grad_sums_end(params, out), (double *)NULL;
    }
    return out;
}

HVDEF double hv_clip_grad_norm(const hv_param_list *params, float max_norm) {
    double ss = 0, norm, *sums;
    int i;
    if (!params || params->count < 0 || (params->count > 0 && !params->tensors))
        return hv__fail("hv_clip_grad_norm", "params is NULL or has no tensors"), -1.0;
    if (!(sums = hv__grad_sums("hv_clip_grad_norm", params, HV__SUMSQ))) return -1.0;
    for (i = 0; i < params->count; i++) ss += sums[i];
    hv__grad_sums_end(params, sums);
    norm = sqrt(ss);
    if (max_norm > 0 && isfinite(norm)) {
        double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (i = 0; i < params->count; i++) {
                hv_tensor *t = params->tensors[i];
                if (hv__has_grad(t)) t->ctx->be->unary(t->ctx, HV__SCALE, (float)coef, t->grad, t->grad);
            }
    }
    return norm;
}

HVDEF int hv_check_finite(const hv_tensor *loss, const hv_param_list *params, int *bad) {
    int i;
    double *cnt;
    if (bad) *bad = 0;
    if (loss) {
        float v;
        if (hv_numel(loss) != 1 || loss->dtype != HV_F32)
            return hv__fail("hv_check_finite", "%s must be one f32 element", hv__desc("loss", loss)), -1;
        v = hv_item(loss);
        if (!isfinite(v)) {
            if (bad) *bad = -1;
            return hv__fail("hv_check_finite", "the loss is %s", isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"), -1;
        }
    }
    if (!params) return 0;
    if (params->count > 0 && !params->tensors) return hv__fail("hv_check_finite", "params has no tensors"), -1;
    if (!(cnt = hv__grad_sums("hv_check_finite", params, HV__NONFINITE))) return -1;
    for (i = 0; i < params->count && !(cnt[i] > 0); i++) {
    }
    hv__grad_sums_end(params, cnt);
    if (i < params->count) { /* the rare bad case: the gradient comes to the host for the message */
        hv_tensor *t = params->tensors[i];
        int64_t first = -1, n;
        float v = 0;
        const float *g = (const float *)hv__host_begin(t->grad, 1);
        if (!g) return -1;
        n = hv__count_nonfinite(t->ctx, g, hv_numel(t), &first);
        if (first >= 0) v = g[first];
        hv__host_end(t->grad, (void *)g, 0);
        if (bad) *bad = i;
        return hv__fail("hv_check_finite", "the gradient of %s has %lld non-finite values (the first at flat index %lld is %s)",
                        (params->names && params->names[i]) ? hv__desc(params->names[i], t) : hv__desc("parameter", t),
                        (long long)n, (long long)first, isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"),
               -1;
    }
    return 0;
}

/* ---- train state files ---------------------------------------------------------------------- */

#define HV__TS_VERSION 1u
#define HV__TS_MAX_NAME 255u
#define HV__TS_NO_OPTIM 0xFFFFFFFFu
#define HV__FNV_BASIS 0xcbf29ce484222325ULL
#define HV__FNV_PRIME 0x100000001b3ULL
static const char hv__ts_magic[8] = {'H', 'V', 'T', 'R', 'A', 'I', 'N', 0};

static int hv__little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}
static uint64_t hv__get_le64(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void hv__put_le64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void hv__swap4(unsigned char *p, size_t count) {
    size_t i;
    for (i = 0; i < count; i++, p += 4) {
        unsigned char a = p[0], b = p[1];
        p[0] = p[3];
        p[1] = p[2];
        p[2] = b;
        p[3] = a;
    }
}

/* hv64, the file checksum (see FILE FORMAT in the API): four FNV-1a-64 lanes over 32-byte blocks */
typedef struct hv__cksum {
    uint64_t lane[4], total;
    unsigned char tail[32];
    size_t ntail;
} hv__cksum;
static void hv__cksum_init(hv__cksum *h) {
    int j;
    for (j = 0; j < 4; j++) h->lane[j] = HV__FNV_BASIS ^ (uint64_t)j;
    h->total = 0;
    h->ntail = 0;
}
static void hv__cksum_block(hv__cksum *h, const unsigned char *b) {
    h->lane[0] = (h->lane[0] ^ hv__get_le64(b)) * HV__FNV_PRIME;
    h->lane[1] = (h->lane[1] ^ hv__get_le64(b + 8)) * HV__FNV_PRIME;
    h->lane[2] = (h->lane[2] ^ hv__get_le64(b + 16)) * HV__FNV_PRIME;
    h->lane[3] = (h->lane[3] ^ hv__get_le64(b + 24)) * HV__FNV_PRIME;
}
static void hv__cksum_update(hv__cksum *h, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    h->total += n;
    if (h->ntail) {
        size_t take = 32 - h->ntail < n ? 32 - h->ntail : n;
        memcpy(h->tail + h->ntail, p, take);
        h->ntail += take;
        p += take;
        n -= take;
        if (h->ntail < 32) return;
        hv__cksum_block(h, h->tail);
        h->ntail = 0;
    }
    for (; n >= 32; n -= 32, p += 32) hv__cksum_block(h, p);
    memcpy(h->tail, p, n);
    h->ntail = n;
}
static uint64_t hv__cksum_final(const hv__cksum *h) {
    uint64_t l0 = h->lane[0], r;
    size_t i;
    int j;
    for (i = 0; i < h->ntail; i++) l0 = (l0 ^ h->tail[i]) * HV__FNV_PRIME;
    r = l0;
    for (j = 1; j < 4; j++) r = (r ^ h->lane[j]) * HV__FNV_PRIME;
    return (r ^ h->total) * HV__FNV_PRIME;
}

/* writer: every byte goes through the checksum; err sticks */
typedef struct hv__tsw {
    FILE *f;
    hv__cksum h;
    int err;
} hv__tsw;
static void hv__tsw_bytes(hv__tsw *w, const void *p, size_t n) {
    if (w->err || !n) return;
    hv__cksum_update(&w->h, p, n);
    if (fwrite(p, 1, n, w->f) != n) w->err = errno ? errno : EIO;
}
static void hv__tsw_u32(hv__tsw *w, uint32_t v) {
    unsigned char b[4];
    int i;
    for (i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
    hv__tsw_bytes(w, b, 4);
}
static void hv__tsw_u64(hv__tsw *w, uint64_t v) {
    unsigned char b[8];
    hv__put_le64(b, v);
    hv__tsw_bytes(w, b, 8);
}
/* count 4-byte elements, little-endian in the file */
static void hv__tsw_words(hv__tsw *w, const void *p, int64_t count) {
    const unsigned char *src = (const unsigned char *)p;
    if (hv__little_endian()) {
        hv__tsw_bytes(w, src, (size_t)count * 4);
        return;
    }
    while (count > 0 && !w->err) {
        unsigned char buf[4096];
        size_t k = count > 1024 ? 1024 : (size_t)count;
        memcpy(buf, src, k * 4);
        hv__swap4(buf, k);
        hv__tsw_bytes(w, buf, k * 4);
        src += k * 4;
        count -= (int64_t)k;
    }
}

/* reader: every byte but the final checksum goes through the hash */
typedef struct hv__tsr {
    FILE *f;
    hv__cksum h;
} hv__tsr;
static int hv__tsr_bytes(hv__tsr *r, void *p, size_t n) {
    if (!n) return 0;
    if (fread(p, 1, n, r->f) != n) return -1;
    hv__cksum_update(&r->h, p, n);
    return 0;
}
static int hv__tsr_u32(hv__tsr *r, uint32_t *v) {
    unsigned char b[4];
    if (hv__tsr_bytes(r, b, 4)) return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}
static int hv__tsr_u64(hv__tsr *r, uint64_t *v) {
    unsigned char b[8];
    if (hv__tsr_bytes(r, b, 8)) return -1;
    *v = hv__get_le64(b);
    return 0;
}
/* count 4-byte elements into dst (host order), or skipped when dst is NULL */
static int hv__tsr_words(hv__tsr *r, void *dst, int64_t count) {
    unsigned char buf[16384];
    if (dst) {
        if (hv__tsr_bytes(r, dst, (size_t)count * 4)) return -1;
        if (!hv__little_endian()) hv__swap4((unsigned char *)dst, (size_t)count);
        return 0;
    }
    while (count > 0) {
        size_t k = count > (int64_t)(sizeof buf / 4) ? sizeof buf / 4 : (size_t)count;
        if (hv__tsr_bytes(r, buf, k * 4)) return -1;
        count -= (int64_t)k;
    }
    return 0;
}
/* after a problem: reads the rest of the file and tells whether its checksum holds (1), or the
   file is corrupt or truncated (0) */
static int hv__tsr_rest_intact(hv__tsr *r) {
    unsigned char buf[8 + 16384];
    size_t have = 0, n;
    while ((n = fread(buf + have, 1, sizeof buf - have, r->f)) > 0) {
        have += n;
        if (have > 8) {
            hv__cksum_update(&r->h, buf, have - 8);
            memmove(buf, buf + have - 8, 8);
            have = 8;
        }
    }
    return have == 8 && hv__get_le64(buf) == hv__cksum_final(&r->h);
}

/* checks the arguments shared by save and load; 0 or -1 (error set) */
static int hv__ts_check_args(const char *op, const char *path, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt) {
    int i, j;
    if (!path || !*path) return hv__fail(op, "path is NULL or empty"), -1;
    if (!ctx) return hv__fail(op, "%s: ctx is NULL", path), -1;
    if (!params || params->count < 0 || (params->count > 0 && (!params->tensors || !params->names)))
        return hv__fail(op, "%s: params is NULL or has no tensors/names arrays", path), -1;
    for (i = 0; i < params->count; i++) {
        const hv_tensor *t = params->tensors[i];
        const char *name = params->names[i];
        if (!name || !*name || strlen(name) > HV__TS_MAX_NAME)
            return hv__fail(op, "%s: parameter %d has no name or one longer than %u bytes", path, i, HV__TS_MAX_NAME), -1;
        if (!t || (t->dtype != HV_F32 && t->dtype != HV_I32) || !t->data || !hv_is_contiguous(t))
            return hv__fail(op, "%s: parameter '%s' must be a contiguous f32 or i32 tensor", path, name), -1;
        if (t->ctx != ctx) return hv__fail(op, "%s: parameter '%s' belongs to another context", path, name), -1;
        for (j = 0; j < i; j++)
            if (!strcmp(params->names[j], name)) return hv__fail(op, "%s: parameter name '%s' appears twice", path, name), -1;
    }
    if (opt) {
        if (opt->count != params->count) return hv__fail(op, "%s: the optimizer was made for a different parameter list", path), -1;
        for (i = 0; i < params->count; i++)
            if (opt->p[i].t != params->tensors[i])
                return hv__fail(op, "%s: the optimizer was made for a different parameter list (entry %d, '%s')", path, i, params->names[i]),
                       -1;
    }
    return 0;
}

static char *hv__tmp_path(const char *path) {
    size_t n = strlen(path);
    char *tmp = (char *)hv__malloc(n + 5);
    if (tmp) {
        memcpy(tmp, path, n);
        memcpy(tmp + n, ".tmp", 5);
    }
    return tmp;
}

/* flushes a closed file's data to the disk (best effort where the platform has no fsync) */
static int hv__fsync_path(const char *path, int is_dir) {
#ifdef HV__POSIX_IO
    int fd = open(path, is_dir ? O_RDONLY : O_WRONLY), rc;
    if (fd < 0) return is_dir ? 0 : -1; /* some systems cannot open a folder: nothing more to do */
    rc = fsync(fd);
    close(fd);
    return is_dir ? 0 : rc;
#else
    (void)path;
    (void)is_dir;
    return 0;
#endif
}

HVDEF int hv_train_state_save(const char *path, hv_ctx *ctx, const hv_param_list *params, const hv_optim *opt,
                              const hv_train_info *info) {
    static const char *op = "hv_train_state_save";
    hv__tsw w;
    char *tmp;
    size_t meta_len = 0;
    const char *why = NULL;
    int i, s, e = 0;
    if (hv__ts_check_args(op, path, ctx, params, opt)) return -1;
    if (info) {
        const char *nul = (const char *)memchr(info->meta, 0, HV_TRAIN_META_MAX);
        if (!nul) return hv__fail(op, "%s: info->meta is not NUL-terminated within %d bytes", path, HV_TRAIN_META_MAX), -1;
        meta_len = (size_t)(nul - info->meta);
    }
    tmp = hv__tmp_path(path);
    if (!tmp) return hv__fail(op, "%s: out of memory", path), -1;
    memset(&w, 0, sizeof w);
    hv__cksum_init(&w.h);
    errno = 0;
    w.f = fopen(tmp, "wb");
    if (!w.f) {
        e = errno;
        hv__fail(op, "%s: cannot create the temporary file %s: %s", path, tmp, e ? strerror(e) : "unknown error");
        hv__free(tmp);
        return -1;
    }
    hv__tsw_bytes(&w, hv__ts_magic, 8);
    hv__tsw_u32(&w, HV__TS_VERSION);
    hv__tsw_u32(&w, opt ? 1u : 0u);
    hv__tsw_u64(&w, (uint64_t)(info ? info->step : 0));
    for (i = 0; i < 4; i++) hv__tsw_u64(&w, ctx->rng[i]);
    for (i = 0; i < HV_TRAIN_USER_INTS; i++) hv__tsw_u64(&w, (uint64_t)(info ? info->user[i] : 0));
    hv__tsw_u32(&w, (uint32_t)meta_len);
    if (meta_len) hv__tsw_bytes(&w, info->meta, meta_len);
    hv__tsw_u32(&w, opt ? (uint32_t)opt->d.type : HV__TS_NO_OPTIM);
    hv__tsw_u32(&w, (uint32_t)params->count);
    for (i = 0; i < params->count && !w.err; i++) {
        const hv_tensor *t = params->tensors[i];
        const hv__opt_param *P = opt ? &opt->p[i] : NULL;
        int nslots = (P && P->active) ? opt->nslots : 0;
        int64_t n = hv_numel(t);
        size_t len = strlen(params->names[i]);
        hv__tsw_u32(&w, (uint32_t)len);
        hv__tsw_bytes(&w, params->names[i], len);
        hv__tsw_u32(&w, (uint32_t)t->dtype);
        hv__tsw_u32(&w, (uint32_t)t->ndim);
        for (s = 0; s < t->ndim; s++) hv__tsw_u64(&w, (uint64_t)t->shape[s]);
        hv__tsw_u64(&w, (uint64_t)((P && P->active) ? P->steps : -1));
        hv__tsw_u32(&w, (uint32_t)nslots);
        for (s = -1; s < nslots && !w.err; s++) { /* device tensors come to the host one at a time */
            hv_tensor *src = s < 0 ? (hv_tensor *)t : P->state[s];
            const void *h = hv__host_begin(src, 1);
            if (!h) {
                w.err = ENOMEM;
                break;
            }
            hv__tsw_words(&w, h, n);
            hv__host_end(src, (void *)h, 0);
        }
    }
    if (!w.err) {
        unsigned char b[8];
        hv__put_le64(b, hv__cksum_final(&w.h));
        if (fwrite(b, 1, 8, w.f) != 8) w.err = errno ? errno : EIO;
    }
    if (!w.err && fflush(w.f) != 0) w.err = errno ? errno : EIO;
#ifdef _WIN32
    if (!w.err && _commit(_fileno(w.f)) != 0) w.err = errno ? errno : EIO;
#endif
    if (w.err) why = "writing";
    if (fclose(w.f) != 0 && !why) {
        w.err = errno ? errno : EIO;
        why = "closing";
    }
    if (!why && hv__fsync_path(tmp, 0) != 0) {
        w.err = errno ? errno : EIO;
        why = "syncing";
    }
#ifdef _WIN32
    if (!why) remove(path); /* Windows' rename does not replace: not atomic there */
#endif
    if (!why && rename(tmp, path) != 0) {
        w.err = errno ? errno : EIO;
        why = "renaming it over the target";
    }
    if (why) {
        remove(tmp);
        hv__fail(op, "%s: failed %s the temporary file %s: %s (the previous %s, if any, is unchanged)", path, why, tmp,
                 strerror(w.err), path);
        hv__free(tmp);
        return -1;
    }
    hv__free(tmp);
    {   /* make the rename itself durable: fsync the folder */
        char dir[1024];
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : 0;
        if (!slash) memcpy(dir, ".", 2);
        else if (n == 0) memcpy(dir, "/", 2);
        else if (n < sizeof dir) {
            memcpy(dir, path, n);
            dir[n] = 0;
        } else dir[0] = 0;
        if (dir[0]) hv__fsync_path(dir, 1);
    }
    return 0;
}

/* One pass over a state file. apply 0: validate only (nothing changes); apply 1: copy the data
   into params and the optimizer. The header fields are returned for the caller to apply last.
   0, or -1 with the error set (message prefixed by the path), -2 when it is not a state file. */
typedef struct hv__ts_header {
    uint32_t flags, optim;
    int64_t step, user[HV_TRAIN_USER_INTS];
    uint64_t rng[4];
    char meta[HV_TRAIN_META_MAX];
} hv__ts_header;

static int hv__ts_pass(hv__tsr *r, const char *path, const hv_param_list *params, hv_optim *opt, hv__ts_header *hd, unsigned char *seen,
                       int apply) {
    static const char *op = "hv_train_state_load";
    unsigned char magic[8], sum[8];
    uint32_t version, len, count, u, i, nd, nslots;
    uint64_t v;
    char name[HV__TS_MAX_NAME + 1], where[HV__TS_MAX_NAME + 32];
    int j, idx;
    memcpy(where, "the header", 11);
    memset(seen, 0, (size_t)(params->count ? params->count : 1));
    if (hv__tsr_bytes(r, magic, 8) || memcmp(magic, hv__ts_magic, 8))
        return hv__fail(op, "%s: not a humanvit train state file (no \"HVTRAIN\" magic)", path), -2;
    if (hv__tsr_u32(r, &version)) goto truncated;
    if (version != HV__TS_VERSION)
        return hv__fail(op, "%s: format version %u; this library reads version %u", path, version, HV__TS_VERSION), -1;
    if (hv__tsr_u32(r, &hd->flags) || hv__tsr_u64(r, &v)) goto truncated;
    hd->step = (int64_t)v;
    if (hd->flags & ~1u) return hv__fail(op, "%s: unknown flags 0x%x in the header", path, hd->flags), -1;
    for (j = 0; j < 4; j++)
        if (hv__tsr_u64(r, &hd->rng[j])) goto truncated;
    for (j = 0; j < HV_TRAIN_USER_INTS; j++) {
        if (hv__tsr_u64(r, &v)) goto truncated;
        hd->user[j] = (int64_t)v;
    }
    if (hv__tsr_u32(r, &len)) goto truncated;
    if (len >= HV_TRAIN_META_MAX) return hv__fail(op, "%s: metadata length %u is not below %d", path, len, HV_TRAIN_META_MAX), -1;
    if (hv__tsr_bytes(r, hd->meta, len)) goto truncated;
    hd->meta[len] = 0;
    if (hv__tsr_u32(r, &hd->optim) || hv__tsr_u32(r, &count)) goto truncated;
    if (hd->flags & 1u) {
        if (hd->optim > (uint32_t)HV_OPTIM_LARS) return hv__fail(op, "%s: unknown optimizer type %u", path, hd->optim), -1;
        if (opt && hd->optim != (uint32_t)opt->d.type)
            return hv__fail(op, "%s: the file holds %s state but the optimizer is %s", path, hv__optim_name((int)hd->optim),
                            hv__optim_name((int)opt->d.type)), -1;
    } else {
        if (hd->optim != HV__TS_NO_OPTIM) return hv__fail(op, "%s: optimizer type %u without the optimizer flag", path, hd->optim), -1;
        if (opt) return hv__fail(op, "%s: the file has no optimizer state (saved without an optimizer)", path), -1;
    }
    if (count != (uint32_t)params->count)
        return hv__fail(op, "%s: the file has %u tensors, params has %d", path, count, params->count), -1;
    for (i = 0; i < count; i++) {
        hv_tensor *t;
        hv__opt_param *P = NULL;
        int64_t dims[HV_MAX_DIMS], n = 1, steps;
        uint32_t dtype;
        int expect_slots;
        snprintf(where, sizeof where, "tensor record %u", i);
        if (hv__tsr_u32(r, &len)) goto truncated;
        if (len < 1 || len > HV__TS_MAX_NAME)
            return hv__fail(op, "%s: tensor record %u: name length %u is outside 1..%u", path, i, len, HV__TS_MAX_NAME), -1;
        if (hv__tsr_bytes(r, name, len)) goto truncated;
        name[len] = 0;
        if (strlen(name) != len) return hv__fail(op, "%s: tensor record %u: the name holds a NUL byte", path, i), -1;
        snprintf(where, sizeof where, "tensor '%s'", name);
        for (idx = 0; idx < params->count && strcmp(params->names[idx], name); idx++) {
        }
        if (idx == params->count) return hv__fail(op, "%s: tensor '%s' is in the file but not in params", path, name), -1;
        if (seen[idx]) return hv__fail(op, "%s: tensor '%s' appears twice", path, name), -1;
        seen[idx] = 1;
        t = params->tensors[idx];
        if (hv__tsr_u32(r, &dtype) || hv__tsr_u32(r, &nd)) goto truncated;
        if (dtype != (uint32_t)t->dtype)
            return hv__fail(op, "%s: tensor '%s' has dtype %u in the file, %d in params", path, name, dtype, (int)t->dtype), -1;
        if (nd > HV_MAX_DIMS) return hv__fail(op, "%s: tensor '%s' has %u dims (at most %d)", path, name, nd, HV_MAX_DIMS), -1;
        for (u = 0; u < nd; u++) {
            if (hv__tsr_u64(r, &v)) goto truncated;
            dims[u] = (int64_t)v;
        }
        if ((int)nd != t->ndim || memcmp(dims, t->shape, sizeof(int64_t) * nd)) {
            char fs[96];
            int k = 0;
            k += snprintf(fs + k, sizeof fs - (size_t)k, "(");
            for (u = 0; u < nd && k < 80; u++) k += snprintf(fs + k, sizeof fs - (size_t)k, u ? ", %lld" : "%lld", (long long)dims[u]);
            snprintf(fs + k, sizeof fs - (size_t)k, ")");
            return hv__fail(op, "%s: tensor '%s' has shape %s in the file, %s in params", path, name, fs, hv__shape_str(t)), -1;
        }
        n = hv_numel(t);
        if (hv__tsr_u64(r, &v) || hv__tsr_u32(r, &nslots)) goto truncated;
        steps = (int64_t)v;
        if (steps < -1 || nslots > 2 || (steps < 0 && nslots) || (!(hd->flags & 1u) && (steps != -1 || nslots)))
            return hv__fail(op, "%s: tensor '%s': bad optimizer fields (steps %lld, %u state tensors)", path, name, (long long)steps, nslots),
                   -1;
        if (opt) {
            P = &opt->p[idx];
            expect_slots = P->active ? opt->nslots : 0;
            if ((steps >= 0) != (P->active != 0))
                return hv__fail(op, "%s: tensor '%s' is %s in the file but %s by the optimizer (trainable flags differ)", path, name,
                                steps >= 0 ? "optimized" : "not optimized", P->active ? "optimized" : "not optimized"), -1;
            if ((int)nslots != expect_slots)
                return hv__fail(op, "%s: tensor '%s' has %u optimizer state tensors in the file, the %s optimizer keeps %d", path, name,
                                nslots, hv__optim_name(opt->d.type), expect_slots), -1;
        }
        for (j = -1; j < (int)nslots; j++) { /* a device tensor gets a host copy, uploaded when read */
            hv_tensor *dst = !apply ? NULL : j < 0 ? t : P ? P->state[j] : NULL;
            void *h = dst ? hv__host_begin(dst, 0) : NULL;
            if (dst && !h) return -1;
            if (hv__tsr_words(r, h, n)) {
                if (dst) hv__host_end(dst, h, 0);
                goto truncated;
            }
            if (dst && hv__host_end(dst, h, 1)) return -1;
        }
        if (apply && P && P->active) P->steps = steps;
    }
    /* the checksum, then the end of the file */
    memcpy(where, "the checksum", 13);
    if (fread(sum, 1, 8, r->f) != 8) goto truncated;
    if (hv__get_le64(sum) != hv__cksum_final(&r->h))
        return hv__fail(op, "%s: checksum mismatch: the file is corrupt", path), -1;
    if (fgetc(r->f) != EOF) return hv__fail(op, "%s: stray bytes after the checksum", path), -1;
    return 0;
truncated:
    return hv__fail(op, "%s: the file is truncated (it ends inside %s)", path, where), -1;
}

/* an error message without its "op: path: " prefix */
static const char *hv__ts_reason(const char *msg, const char *op, const char *path) {
    size_t a = strlen(op), b = strlen(path);
    if (!strncmp(msg, op, a) && !strncmp(msg + a, ": ", 2) && !strncmp(msg + a + 2, path, b) && !strncmp(msg + a + 2 + b, ": ", 2))
        return msg + a + b + 4;
    return msg;
}

HVDEF int hv_train_state_load(const char *path, hv_ctx *ctx, const hv_param_list *params, hv_optim *opt, hv_train_info *info) {
    static const char *op = "hv_train_state_load";
    hv__tsr r;
    hv__ts_header *hd;
    unsigned char *seen;
    int rc = -1, i;
    if (hv__ts_check_args(op, path, ctx, params, opt)) return -1;
    hd = (hv__ts_header *)hv__malloc(sizeof *hd);
    seen = (unsigned char *)hv__malloc((size_t)(params->count ? params->count : 1));
    if (!hd || !seen) {
        hv__free(hd);
        hv__free(seen);
        return hv__fail(op, "%s: out of memory", path), -1;
    }
    memset(hd, 0, sizeof *hd);
    errno = 0;
    r.f = fopen(path, "rb");
    if (!r.f) {
        int e = errno;
        hv__fail(op, "%s: cannot open: %s", path, e ? strerror(e) : "unknown error");
        goto done;
    }
    /* pass 1 validates everything; nothing is modified unless it succeeds */
    hv__cksum_init(&r.h);
    if ((i = hv__ts_pass(&r, path, params, opt, hd, seen, 0)) != 0) {
        /* a structural complaint about a file whose checksum fails is corruption, not a mismatch */
        char first[sizeof hv__err];
        memcpy(first, hv__err, sizeof first);
        if (i == -1 && !hv__tsr_rest_intact(&r) && !strstr(first, "checksum"))
            hv__fail(op, "%s: the file is corrupt or truncated (checksum mismatch); reading it gave: %s", path,
                     hv__ts_reason(first, op, path));
        goto done;
    }
    for (i = 0; i < params->count; i++)
        if (!seen[i]) { /* unreachable with count == params->count and unique names; kept as a guard */
            hv__fail(op, "%s: parameter '%s' is missing from the file", path, params->names[i]);
            goto done;
        }
    /* pass 2 copies */
    if (fseek(r.f, 0, SEEK_SET) != 0) {
        hv__fail(op, "%s: cannot seek back to the start", path);
        goto done;
    }
    hv__cksum_init(&r.h);
    if (hv__ts_pass(&r, path, params, opt, hd, seen, 1)) {
        char first[sizeof hv__err];
        memcpy(first, hv__err, sizeof first);
        hv__fail(op, "%s: the file changed while it was loaded; the parameters are now partly overwritten (%s)", path,
                 hv__ts_reason(first, op, path));
        goto done;
    }
    hv_rng_set_state(ctx, hd->rng);
    if (info) {
        info->step = hd->step;
        memcpy(info->user, hd->user, sizeof info->user);
        memcpy(info->meta, hd->meta, sizeof info->meta);
    }
    rc = 0;
done:
    if (r.f) fclose(r.f);
    hv__free(hd);
    hv__free(seen);
    return rc;
}

/* HV-SECTION train END */

/* ==== 11. IMAGES: decoding, resizing, .npy ==================================================== */
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
            int32_t acc[4] = {1 << 21, 1 << 21, 1 << 21, 1 << 21}; /* channels <= 4 */
            if (C == 3) { /* RGB, the common case: the channels in one walk over the taps */
                for (k = 0; k < b[2 * x + 1]; k++) {
                    acc[0] += r[3 * k] * kw[k];
                    acc[1] += r[3 * k + 1] * kw[k];
                    acc[2] += r[3 * k + 2] * kw[k];
                }
            } else {
                for (k = 0; k < b[2 * x + 1]; k++)
                    for (c = 0; c < C; c++) acc[c] += r[(size_t)k * (size_t)C + (size_t)c] * kw[k];
            }
            for (c = 0; c < C; c++) o[(size_t)x * (size_t)C + (size_t)c] = hv__clip8(acc[c]);
        }
    }
}
/* one vertical pass: out row y mixes in rows b[2y] - shift ... (both w wide). The taps run
   row by row over chunks of HV__RESAMPLE_CHUNK bytes (contiguous loads the compiler vectorises)
   into integer sums: integer addition in any order gives PIL's exact values. */
#define HV__RESAMPLE_CHUNK 256
static void hv__resample_v(const uint8_t *in, int w, int C, int shift, uint8_t *out, int out_h, const int *b, const int32_t *kk, int ks) {
    size_t rowlen = (size_t)w * (size_t)C, i0, j;
    int y, k;
    int32_t acc[HV__RESAMPLE_CHUNK];
    for (y = 0; y < out_h; y++) {
        const int32_t *kw = kk + (size_t)y * (size_t)ks;
        const uint8_t *col = in + (size_t)(b[2 * y] - shift) * rowlen;
        uint8_t *o = out + (size_t)y * rowlen;
        for (i0 = 0; i0 < rowlen; i0 += HV__RESAMPLE_CHUNK) {
            const size_t n = rowlen - i0 < HV__RESAMPLE_CHUNK ? rowlen - i0 : HV__RESAMPLE_CHUNK;
            for (j = 0; j < n; j++) acc[j] = 1 << 21;
            for (k = 0; k < b[2 * y + 1]; k++) {
                const uint8_t *r = col + (size_t)k * rowlen + i0;
                const int32_t kv = kw[k];
                if (n == HV__RESAMPLE_CHUNK) /* a constant count: gcc -O2 vectorises this one */
                    for (j = 0; j < HV__RESAMPLE_CHUNK; j++) acc[j] += r[j] * kv;
                else
                    for (j = 0; j < n; j++) acc[j] += r[j] * kv;
            }
            for (j = 0; j < n; j++) o[i0 + j] = hv__clip8(acc[j]);
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
