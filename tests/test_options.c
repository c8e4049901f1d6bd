/* test_options.c - the header's compile-time options: HUMANVIT_STATIC (every public function
   static, so two copies could live in one program) and HV_MALLOC/HV_REALLOC/HV_FREE overrides
   (every allocation the library makes goes through them). This file includes the implementation
   itself, so build.sh links it without build/humanvit.o. */
#include <stdlib.h>

static long my_live, my_calls;
static void *my_malloc(size_t n) {
    size_t *p = (size_t *)malloc(n + sizeof(size_t) * 2);
    if (!p) return NULL;
    my_live++;
    my_calls++;
    return p + 2;
}
static void *my_realloc(void *q, size_t n) {
    size_t *p = q ? (size_t *)q - 2 : NULL;
    if (!q) my_live++;
    my_calls++;
    p = (size_t *)realloc(p, n + sizeof(size_t) * 2);
    return p ? p + 2 : NULL;
}
static void my_free(void *q) {
    if (!q) return;
    my_live--;
    free((size_t *)q - 2);
}
#define HV_MALLOC(n) my_malloc(n)
#define HV_REALLOC(p, n) my_realloc(p, n)
#define HV_FREE(p) my_free(p)
#define HUMANVIT_STATIC
#define HUMANVIT_IMPLEMENTATION
#include "testlib.h"

static void test_allocator_override(hv_ctx *unused) {
    long live_before = my_live, calls_before = my_calls;
    hv_ctx *ctx = hv_init(NULL);
    hv_tensor *w, *loss;
    (void)unused;
    CHECK(my_calls > calls_before, "hv_init did not go through HV_MALLOC");
    w = hv_randn(ctx, HV_SHAPE(16, 8), 0, 1);
    hv_set_trainable(w, 1);
    loss = hv_sum(hv_gelu(hv_matmul(w, w, 0, 1)), 0, NULL, 0);
    CHECK(loss && hv_backward(loss) == 0, "%s", hv_last_error());
    hv_step_end(ctx);
    hv_shutdown(ctx);
    CHECK(my_live == live_before, "%ld allocations made through HV_MALLOC are still live after hv_shutdown", my_live - live_before);
}

int main(void) {
    hv_ctx *ctx = hv_init(NULL);
    TL_RUN(ctx, test_allocator_override);
    hv_shutdown(ctx);
    TL_DONE();
}
