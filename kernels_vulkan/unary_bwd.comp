#version 450
// gx += gy * d op(x) / dx, from x and y = op(x); all strided. PI(HV_EW_EXTRA): op, PF(+1): alpha.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 4
#include "common.glsl"
#include "strided.glsl"
#include "unary.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer GY { float gy[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    uint o = hv_ew_off(i, 0);
    gx[o] += gy[hv_ew_off(i, 3)] * hv_unary_df(PI(HV_EW_EXTRA), PF(HV_EW_EXTRA + 1), x[hv_ew_off(i, 1)], y[hv_ew_off(i, 2)]);
}
