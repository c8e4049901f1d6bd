#version 450
// out = a (op) b with a and b expanded to out's shape (stride 0 on broadcast axes).
// PI(HV_EW_EXTRA): op (ADD SUB MUL DIV, and 4: max with NaN winning, for split reductions).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 3
#include "common.glsl"
#include "strided.glsl"
layout(std430, binding = 1) writeonly buffer Out { float o[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) readonly buffer B { float b[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    float x = a[hv_ew_off(i, 1)], y = b[hv_ew_off(i, 2)], r;
    int op = PI(HV_EW_EXTRA);
    if (op == 0) r = x + y;
    else if (op == 1) r = x - y;
    else if (op == 2) r = x * y;
    else if (op == 3) r = x / y;
    else r = (y > x || isnan(y)) ? y : x;
    o[hv_ew_off(i, 0)] = r;
}
