#version 450
// partial[g] = sum over a grid-stride share of (a - b)^2 (mode 0, MSE) or |a - b| (mode 1, L1);
// sum_scalar then takes the mean (hv__backend.diff_loss). PI: 0 n, 1 mode.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 256
layout(local_size_x = HV_WG) in;
#define NARGS 3
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer P { float partial[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };
void main() {
    uint g = hv_group(), l = gl_LocalInvocationID.x, stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * HV_WG;
    float s = 0.0;
    for (uint i = g * HV_WG + l; i < PU(0); i += stride) {
        float d = a[OFF(1) + i] - b[OFF(2) + i];
        s += PI(1) == 0 ? d * d : abs(d);
    }
    s = hv_wg_sum(s);
    if (l == 0u) partial[OFF(0) + g] = s;
}
