#version 450
// per channel of x (N, C, S): the batch mean and biased variance, two passes
// (hv__backend.batch_norm_stats); one workgroup per channel. PI: 0 N, 1 C, 2 S, 3 phase: 0 the
// whole batch; for a batch over a binding, in parts of whole images: 1 mean += the sum of x,
// 2 (mean final) var += the sum of (x - mean)^2; the host divides by the count.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 3
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer M { float mean[]; };
layout(std430, binding = 2) buffer V { float var[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
void main() {
    uint c = hv_group(), l = gl_LocalInvocationID.x, C = PU(1), S = PU(2), M = PU(0) * S;
    if (c >= C) return;
    int phase = PI(3);
    float s = 0.0, m;
    if (phase == 2) {
        m = mean[OFF(0) + c];
    } else {
        for (uint e = l; e < M; e += HV_WG) s += x[OFF(2) + ((e / S) * C + c) * S + e % S];
        s = hv_wg_sum(s);
        if (phase == 1) {
            if (l == 0u) mean[OFF(0) + c] += s;
            return;
        }
        m = s / float(M);
    }
    s = 0.0;
    for (uint e = l; e < M; e += HV_WG) {
        float d = x[OFF(2) + ((e / S) * C + c) * S + e % S] - m;
        s += d * d;
    }
    s = hv_wg_sum(s);
    if (phase == 2) {
        if (l == 0u) var[OFF(1) + c] += s;
        return;
    }
    if (l == 0u) {
        mean[OFF(0) + c] = m;
        var[OFF(1) + c] = s / float(M);
    }
}
