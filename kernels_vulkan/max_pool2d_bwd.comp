#version 450
// gx += gy routed through argmax (hv__backend.max_pool2d_bwd); one invocation per (n, c) plane,
// adding in the CPU's order. PI: 0 planes, 1 H * W, 2 OH * OW.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#define NARGS 3
#include "common.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer GY { float gy[]; };
layout(std430, binding = 3) readonly buffer A { int amax[]; };
void main() {
    uint p = hv_gid();
    if (p >= PU(0)) return;
    uint HW = PU(1), OHW = PU(2);
    for (uint j = 0u; j < OHW; j++) gx[OFF(0) + p * HW + uint(amax[OFF(2) + p * OHW + j])] += gy[OFF(1) + p * OHW + j];
}
