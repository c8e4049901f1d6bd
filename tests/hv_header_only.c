/* Compile check, never linked: humanvit.h included as a plain header (no HUMANVIT_IMPLEMENTATION),
   as every file of a program but one includes it. `./build.sh test` compiles this file as C99
   (-pedantic) and as C++11, with -Wall -Wextra -Werror, on gcc and clang. The second include
   checks the include guard. */
#include "../humanvit.h"
#include "../humanvit.h"

int hv_header_only_check(hv_ctx *ctx);

int hv_header_only_check(hv_ctx *ctx) {
    int64_t dims[2] = {4, 3};
    hv_tensor *w = hv_randn(ctx, hv_shape_of(2, dims), 0.0f, 0.02f); /* (4, 3) */
    hv_tensor *loss;
    hv_set_trainable(w, 1);
#ifndef __cplusplus
    {   /* HV_SHAPE is C only (compound literals) */
        hv_tensor *x = hv_zeros(ctx, HV_SHAPE(2, 3)); /* (2, 3) */
        loss = hv_mean(hv_linear(x, w, NULL), 0, NULL, 0);
    }
#else
    loss = hv_mean(hv_mul(w, w), 0, NULL, 0);
#endif
    if (!loss || hv_backward(loss) != 0) return -1;
    return hv_grad(w) != NULL && hv_numel(hv_grad(w)) == 12 ? 0 : -1;
}
