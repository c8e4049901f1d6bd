#version 450
// gx += the gradient through y = (log-)softmax(x) from y and gy (hv__backend.softmax_bwd).
// PI: 0 rows, 1 n, 2 inner, 3 is_log.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 3
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer GY { float gy[]; };
void main() {
    uint r = hv_group(), l = gl_LocalInvocationID.x, n = PU(1), inner = PU(2);
    if (r >= PU(0)) return;
    uint base = (r / inner) * n * inner + r % inner;
    bool lg = PI(3) != 0;
    float s = 0.0;
    for (uint j = l; j < n; j += HV_WG) {
        uint e = base + j * inner;
        s += lg ? gy[OFF(2) + e] : gy[OFF(2) + e] * y[OFF(1) + e];
    }
    s = hv_wg_sum(s);
    for (uint j = l; j < n; j += HV_WG) {
        uint e = base + j * inner;
        float g = gy[OFF(2) + e], yy = y[OFF(1) + e];
        gx[OFF(0) + e] += lg ? g - exp(yy) * s : yy * (g - s);
    }
}
