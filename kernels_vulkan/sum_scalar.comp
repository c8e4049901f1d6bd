#version 450
// out[0] = scale * sum of the n values of x: one workgroup, strided partial sums then a tree.
// The second stage of the losses. PI: 0 n, PF 1 scale.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 256
layout(local_size_x = HV_WG) in;
#define NARGS 2
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
void main() {
    uint l = gl_LocalInvocationID.x;
    float s = 0.0;
    for (uint i = l; i < PU(0); i += HV_WG) s += x[OFF(1) + i];
    s = hv_wg_sum(s);
    if (l == 0u) outv[OFF(0)] = PF(1) * s;
}
