#version 450
// out (x's ndim, extent 1 on reduced axes) = sum or max of strided x over those axes
// (hv__backend.reduce). PI: 0 outputs, 1 values per output, 2 op (0 sum, 1 max), 3 one group per
// output (else one invocation), 4 ndim, 5..10 out shape, 11..16 x's stride on each kept axis
// (0 on reduced ones), 17 reduced axes, 18..23 their extents, 24..29 their strides in x.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 2
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
uint base_of(uint o) {
    uint off = OFF(1);
    for (int d = PI(4) - 1; d >= 0; d--) {
        uint s = PU(5 + d);
        off += (o % s) * PU(11 + d);
        o /= s;
    }
    return off;
}
uint step_of(uint j) {
    uint off = 0u;
    for (int d = PI(17) - 1; d >= 0; d--) {
        uint s = PU(18 + d);
        off += (j % s) * PU(24 + d);
        j /= s;
    }
    return off;
}
void main() {
    uint nout = PU(0), count = PU(1);
    bool is_max = PI(2) != 0;
    if (PI(3) != 0) { // a group per output: strided partial results, then a tree
        uint o = hv_group(), l = gl_LocalInvocationID.x;
        if (o >= nout) return; // whole group leaves together
        uint base = base_of(o);
        float acc = is_max ? -1.0 / 0.0 : 0.0;
        for (uint j = l; j < count; j += HV_WG) {
            float v = x[base + step_of(j)];
            acc = is_max ? hv_max2(acc, v) : acc + v;
        }
        acc = is_max ? hv_wg_max(acc) : hv_wg_sum(acc);
        if (l == 0u) outv[OFF(0) + o] = acc;
    } else {
        uint o = hv_gid();
        if (o >= nout) return;
        uint base = base_of(o);
        float acc = is_max ? -1.0 / 0.0 : 0.0;
        for (uint j = 0u; j < count; j++) {
            float v = x[base + step_of(j)];
            acc = is_max ? hv_max2(acc, v) : acc + v;
        }
        outv[OFF(0) + o] = acc;
    }
}
