#version 450
// dst (strided) = a 32-bit pattern (a float's bits; hv__backend.fill). PI(HV_EW_EXTRA): the bits.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 1
#include "common.glsl"
#include "strided.glsl"
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    dst[hv_ew_off(i, 0)] = PU(HV_EW_EXTRA);
}
