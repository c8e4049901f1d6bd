#version 450
// y = softmax or log-softmax of x seen as (outer, n, inner), along n (hv__backend.softmax); one
// workgroup per row. PI: 0 rows (outer * inner), 1 n, 2 inner, 3 is_log.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 2
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
void main() {
    uint r = hv_group(), l = gl_LocalInvocationID.x, n = PU(1), inner = PU(2);
    if (r >= PU(0)) return;
    uint base = (r / inner) * n * inner + r % inner;
    float m = -1.0 / 0.0, s = 0.0;
    for (uint j = l; j < n; j += HV_WG) m = max(m, x[OFF(1) + base + j * inner]);
    m = hv_wg_max(m);
    for (uint j = l; j < n; j += HV_WG) s += exp(x[OFF(1) + base + j * inner] - m);
    s = hv_wg_sum(s);
    float ls = log(s);
    for (uint j = l; j < n; j += HV_WG) {
        float v = x[OFF(1) + base + j * inner] - m;
        y[OFF(0) + base + j * inner] = PI(3) != 0 ? v - ls : exp(v) / s;
    }
}
