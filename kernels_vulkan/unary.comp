#version 450
// out = op(x), strided. PI(HV_EW_EXTRA): op, PF(HV_EW_EXTRA + 1): alpha.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 2
#include "common.glsl"
#include "strided.glsl"
#include "unary.glsl"
layout(std430, binding = 1) writeonly buffer Out { float o[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    o[hv_ew_off(i, 0)] = hv_unary_f(PI(HV_EW_EXTRA), PF(HV_EW_EXTRA + 1), x[hv_ew_off(i, 1)]);
}
