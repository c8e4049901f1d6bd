#version 450
// per row of logits (N, C): lse (N, 2) = the max and the log of the sum of exp(x - max), and
// row_loss = (max - x[label]) + log sum (hv__backend.cross_entropy; the mean is sum_scalar's).
// A label outside [0, C) gives a NaN row loss and is reported (index.glsl).
// One workgroup per row. PI: 0 N, 1 C, 2 error code.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 5
#define HV_ERR 5
#include "common.glsl"
#include "reduce.glsl"
#include "index.glsl"
layout(std430, binding = 1) writeonly buffer L { float lse[]; };
layout(std430, binding = 2) writeonly buffer RL { float row_loss[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) readonly buffer Y { int labels[]; };
void main() {
    uint r = hv_group(), l = gl_LocalInvocationID.x, C = PU(1);
    if (r >= PU(0)) return;
    uint xo = OFF(2) + r * C;
    float m = -1.0 / 0.0, s = 0.0;
    for (uint c = l; c < C; c += HV_WG) m = max(m, x[xo + c]);
    m = hv_wg_max(m);
    for (uint c = l; c < C; c += HV_WG) s += exp(x[xo + c] - m);
    s = hv_wg_sum(s);
    if (l == 0u) {
        float ls = log(s);
        int y = labels[OFF(3) + r];
        lse[OFF(0) + 2u * r] = m;
        lse[OFF(0) + 2u * r + 1u] = ls;
        row_loss[OFF(1) + r] = hv_index_ok(y, int(C), PI(2)) ? (m - x[xo + uint(y)]) + ls : uintBitsToFloat(0x7fc00000u);
    }
}
