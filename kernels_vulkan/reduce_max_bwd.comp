#version 450
// gx += gy routed to the first maximum of each reduced group (hv__backend.reduce_max_bwd); x and gx
// any strides, y and gy contiguous in the keepdim shape. One invocation per output.
// PI: 0 outputs, 1 values per output, 2 ndim, 3..8 y shape, 9..14 x strides of kept axes,
// 15..20 gx strides of kept axes, 21 reduced axes, 22..27 extents, 28..33 x strides, 34..39 gx strides,
// 40 done in use: the reduced axes come in parts (x over a binding), done (y's shape, zeroed) marks
// the groups whose maximum an earlier part had, so that only the first one gets gy.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#define NARGS 5
#include "common.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer GY { float gy[]; };
layout(std430, binding = 5) buffer Done { float done[]; };
void main() {
    uint o = hv_gid();
    if (o >= PU(0)) return;
    uint bx = OFF(1), bg = OFF(0), r = o;
    for (int d = PI(2) - 1; d >= 0; d--) {
        uint s = PU(3 + d), c = r % s;
        bx += c * PU(9 + d);
        bg += c * PU(15 + d);
        r /= s;
    }
    bool parts = PI(40) != 0;
    if (parts && done[OFF(4) + o] != 0.0) return;
    float m = y[OFF(2) + o];
    for (uint j = 0u; j < PU(1); j++) {
        uint sx = 0u, sg = 0u, q = j;
        for (int d = PI(21) - 1; d >= 0; d--) {
            uint s = PU(22 + d), c = q % s;
            sx += c * PU(28 + d);
            sg += c * PU(34 + d);
            q /= s;
        }
        if (x[bx + sx] == m || isnan(m)) {
            gx[bg + sg] += gy[OFF(3) + o];
            if (parts) done[OFF(4) + o] = 1.0;
            break;
        }
    }
}
