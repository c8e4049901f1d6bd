#version 450
// y = (x - mean) * rstd * w + b over the last axis D of x (rows, D), mean and rstd (rows) saved
// (hv__backend.layer_norm); biased variance, two passes. One workgroup per row.
// PI: 0 rows, 1 D, PF 2 eps, PI 3 has w, 4 has b.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 6
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) writeonly buffer M { float mean[]; };
layout(std430, binding = 3) writeonly buffer R { float rstd[]; };
layout(std430, binding = 4) readonly buffer X { float x[]; };
layout(std430, binding = 5) readonly buffer W { float w[]; };
layout(std430, binding = 6) readonly buffer B { float b[]; };
void main() {
    uint r = hv_group(), l = gl_LocalInvocationID.x, D = PU(1);
    if (r >= PU(0)) return;
    uint xo = OFF(3) + r * D;
    float s = 0.0;
    for (uint j = l; j < D; j += HV_WG) s += x[xo + j];
    float mu = hv_wg_sum(s) / float(D);
    s = 0.0;
    for (uint j = l; j < D; j += HV_WG) {
        float d = x[xo + j] - mu;
        s += d * d;
    }
    float rs = 1.0 / sqrt(hv_wg_sum(s) / float(D) + PF(2));
    for (uint j = l; j < D; j += HV_WG) {
        float v = (x[xo + j] - mu) * rs;
        if (PI(3) != 0) v *= w[OFF(4) + j];
        if (PI(4) != 0) v += b[OFF(5) + j];
        y[OFF(0) + r * D + j] = v;
    }
    if (l == 0u) {
        mean[OFF(1) + r] = mu;
        rstd[OFF(2) + r] = rs;
    }
}
