#version 450
// partial[g] = sum over a grid-stride share of (x + a y)^2 (mode 0; no y: x^2) or of the count of
// NaN and Inf in x (mode 1); sum_scalar then adds the partials (hv__backend.sumsq: gradient norms,
// LARS trust ratios, NaN checks). PI: 0 n, 1 mode, 2 has y, PF 3 a. Without y, binding 3 is x again.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 256
layout(local_size_x = HV_WG) in;
#define NARGS 3
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer Part { float partial[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Y { float y[]; };
void main() {
    uint g = hv_group(), l = gl_LocalInvocationID.x, stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * HV_WG;
    float s = 0.0;
    for (uint i = g * HV_WG + l; i < PU(0); i += stride) {
        float u = x[OFF(1) + i];
        if (PI(1) != 0) {
            s += (isnan(u) || isinf(u)) ? 1.0 : 0.0;
        } else {
            if (PI(2) != 0) u += PF(3) * y[OFF(2) + i];
            s += u * u;
        }
    }
    s = hv_wg_sum(s);
    if (l == 0u) partial[OFF(0) + g] = s;
}
