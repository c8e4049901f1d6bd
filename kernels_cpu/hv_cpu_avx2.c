/* hv_cpu_avx2.c - the AVX2 + FMA build of humanvit's CPU kernels, for portable x86-64 binaries.
   Compile with  -mavx2 -mfma  (and -fopenmp if the program uses it), link next to an
   implementation compiled with -DHUMANVIT_CPU_DISPATCH; hv_init then uses these kernels on CPUs
   that have AVX2 and FMA but no AVX-512 (see the cpu-simd section of humanvit.h). The kernel code
   is humanvit.h's own: this file only compiles it once more, with this ISA, exporting
   hv__sgemm_avx2 and hv__fast_fill_avx2 (the fast kernels of the other ops).
   HUMANVIT_STATIC keeps the rest of the library private to this file. */
#define HUMANVIT_KERNELS_AVX2
#define HUMANVIT_STATIC
#define HUMANVIT_IMPLEMENTATION
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function" /* the library's static copy is mostly unused */
#endif
#include "../humanvit.h"
