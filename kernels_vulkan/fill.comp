#version 450
// dst (strided) = a 32-bit pattern (a float's bits; hv__backend.fill), or, with PI(HV_EW_EXTRA + 1)
// set, dst += the pattern as i32 (hv__backend.add_i32: counters such as BatchNorm's
// num_batches_tracked stay on the device). PI(HV_EW_EXTRA): the bits.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 1
#include "common.glsl"
#include "strided.glsl"
layout(std430, binding = 1) buffer Dst { uint dst[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    uint o = hv_ew_off(i, 0);
    dst[o] = PI(HV_EW_EXTRA + 1) != 0 ? uint(int(dst[o]) + PI(HV_EW_EXTRA)) : PU(HV_EW_EXTRA);
}
