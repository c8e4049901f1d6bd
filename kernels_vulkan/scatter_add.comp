#version 450
// dst (outer, n, inner) += src (outer, k, inner) at rows idx (outer, k) (hv__backend.scatter_add).
// One invocation per column (o, t), adding its k rows in the order of idx, as the CPU: repeated
// indices add deterministically. An index outside [0, n) is skipped and reported (index.glsl).
// PI: 0 columns (outer * inner), 1 n, 2 k, 3 inner, 4 error code.
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
    uint c = hv_gid();
    if (c >= PU(0)) return;
    uint n = PU(1), k = PU(2), inner = PU(3), o = c / inner, t = c % inner;
    for (uint j = 0u; j < k; j++) {
        int r = idx[OFF(2) + o * k + j];
        if (hv_index_ok(r, int(n), PI(4))) dst[OFF(0) + (o * n + uint(r)) * inner + t] += src[OFF(1) + (o * k + j) * inner + t];
    }
}
