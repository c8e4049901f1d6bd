#version 450
// dst (outer, k, inner) (+)= src (outer, n, inner) at rows idx (outer, k) (hv__backend.gather);
// one invocation per element of dst. An index outside [0, n) reads 0 and is reported (index.glsl).
// PI: 0 elements of dst, 1 n, 2 k, 3 inner, 4 accumulate, 5 error code.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 4
#define HV_ERR 4
#include "common.glsl"
#include "index.glsl"
layout(std430, binding = 1) buffer Dst { float dst[]; };
layout(std430, binding = 2) readonly buffer Src { float src[]; };
layout(std430, binding = 3) readonly buffer Idx { int idx[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    uint inner = PU(3), r = e / inner, t = e % inner;
    int j = idx[OFF(2) + r];
    float v = hv_index_ok(j, PI(1), PI(5)) ? src[OFF(1) + ((r / PU(2)) * PU(1) + uint(j)) * inner + t] : 0.0;
    if (PI(4) != 0) dst[OFF(0) + e] += v;
    else dst[OFF(0) + e] = v;
}
