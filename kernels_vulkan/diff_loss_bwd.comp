#version 450
// ga += v, gb -= v with v = 2 g (a - b) (MSE) or g sign(a - b) (L1), g = gloss / n
// (hv__backend.diff_loss_bwd). PI: 0 n here, 1 mode, 2 has ga, 3 has gb, 4 n of the whole loss
// (the mean's divisor; the elements here may be a part of it).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 5
#include "common.glsl"
layout(std430, binding = 1) buffer GA { float ga[]; };
layout(std430, binding = 2) buffer GB { float gb[]; };
layout(std430, binding = 3) readonly buffer A { float a[]; };
layout(std430, binding = 4) readonly buffer B { float b[]; };
layout(std430, binding = 5) readonly buffer GL { float gloss[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    float g = gloss[OFF(4)] / float(PU(4)), d = a[OFF(2) + i] - b[OFF(3) + i];
    float v = PI(1) == 0 ? 2.0 * g * d : (d > 0.0 ? g : d < 0.0 ? -g : 0.0);
    if (PI(2) != 0) ga[OFF(0) + i] += v;
    if (PI(3) != 0) gb[OFF(1) + i] -= v;
}
