#version 450
// One SGD or LARS step (hv__backend.sgd), the float expressions of humanvit.h's hv__cpu_sgd:
//   u = (g + wd p) scale;  with a buffer: b = first ? u : momentum b + damp u, u = nesterov ? u + momentum b : b;
//   p += neg_lr u.
// PI: 0 n, PF: 1 neg_lr, 2 wd, 3 momentum, 4 damp, 5 scale, PI: 6 has buffer, 7 first, 8 nesterov.
// Without a buffer binding 2 is bound to p again and not touched.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 3
#include "common.glsl"
layout(std430, binding = 1) buffer P { float p[]; };
layout(std430, binding = 2) buffer B { float b[]; };
layout(std430, binding = 3) readonly buffer G { float g[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    float w = p[OFF(0) + i];
    precise float u = (g[OFF(2) + i] + PF(2) * w) * PF(5);
    if (PI(6) != 0) {
        precise float bi = PI(7) != 0 ? u : b[OFF(1) + i] * PF(3) + PF(4) * u;
        b[OFF(1) + i] = bi;
        u = PI(8) != 0 ? u + PF(3) * bi : bi;
    }
    p[OFF(0) + i] = w + PF(1) * u;
}
