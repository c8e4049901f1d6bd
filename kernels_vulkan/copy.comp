#version 450
// dst (+)= src, both strided (hv__backend.copy). The plain copy moves bits (i32 tensors too);
// accumulate adds as f32. PI(HV_EW_EXTRA): accumulate.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 2
#include "common.glsl"
#include "strided.glsl"
layout(std430, binding = 1) buffer Dst { uint dst[]; };
layout(std430, binding = 2) readonly buffer Src { uint src[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    uint d = hv_ew_off(i, 0), s = hv_ew_off(i, 1);
    if (PI(HV_EW_EXTRA) != 0) dst[d] = floatBitsToUint(uintBitsToFloat(dst[d]) + uintBitsToFloat(src[s]));
    else dst[d] = src[s];
}
