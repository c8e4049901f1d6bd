#version 450
// per channel of x (N, C, S): the batch mean and biased variance, two passes
// (hv__backend.batch_norm_stats); one workgroup per channel. PI: 0 N, 1 C, 2 S.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 3
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer M { float mean[]; };
layout(std430, binding = 2) writeonly buffer V { float var[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
void main() {
    uint c = hv_group(), l = gl_LocalInvocationID.x, C = PU(1), S = PU(2), M = PU(0) * S;
    if (c >= C) return;
    float s = 0.0;
    for (uint e = l; e < M; e += HV_WG) s += x[OFF(2) + ((e / S) * C + c) * S + e % S];
    float m = hv_wg_sum(s) / float(M);
    s = 0.0;
    for (uint e = l; e < M; e += HV_WG) {
        float d = x[OFF(2) + ((e / S) * C + c) * S + e % S] - m;
        s += d * d;
    }
    s = hv_wg_sum(s);
    if (l == 0u) {
        mean[OFF(0) + c] = m;
        var[OFF(1) + c] = s / float(M);
    }
}
