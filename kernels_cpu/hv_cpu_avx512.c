/* hv_cpu_avx512.c - the AVX-512 build of humanvit's CPU kernels, for portable x86-64 binaries.
   Compile with  -mavx512f -mavx512bw -mavx512vl -mfma  (and -fopenmp if the program uses it),
   link next to an implementation compiled with -DHUMANVIT_CPU_DISPATCH; hv_init then uses these
   kernels on CPUs that have AVX-512 (see the cpu-simd section of humanvit.h). The kernel code is
   humanvit.h's own: this file only compiles it once more, with this ISA, exporting
   hv__sgemm_avx512, hv__fast_fill_avx512 (the fast kernels of the other ops) and, with gcc >= 10
   or clang >= 9, the opt-in bf16 kernel hv__sgemm_bf16_avx512 (its AVX512_BF16 instructions come from a target attribute, not from these flags, so the file
   still runs on AVX-512 CPUs without them; cpuid decides). HUMANVIT_STATIC keeps the rest of the
   library private to this file. */
#define HUMANVIT_KERNELS_AVX512
#define HUMANVIT_STATIC
#define HUMANVIT_IMPLEMENTATION
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function" /* the library's static copy is mostly unused */
#endif
#include "../humanvit.h"
