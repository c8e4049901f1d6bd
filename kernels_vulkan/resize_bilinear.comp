#version 450
// y (N, C, OH, OW) bilinear from x (N, C, H, W), torch interpolate semantics
// (hv__backend.resize_bilinear). PI: 0 outputs, 1 H, 2 W, 3 OH, 4 OW, 5 align_corners,
// PF 6 scale h, 7 scale w.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 2
#include "common.glsl"
#include "resize.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int o = int(e), H = PI(1), W = PI(2), OH = PI(3), OW = PI(4), h0, h1, w0, w1;
    float lh, lw;
    hv_lsrc((o / OW) % OH, H, OH, PI(5), PF(6), h0, h1, lh);
    hv_lsrc(o % OW, W, OW, PI(5), PF(7), w0, w1, lw);
    uint xp = OFF(1) + uint((o / (OW * OH)) * H * W);
    y[OFF(0) + e] = (1.0 - lh) * ((1.0 - lw) * x[xp + uint(h0 * W + w0)] + lw * x[xp + uint(h0 * W + w1)]) +
                    lh * ((1.0 - lw) * x[xp + uint(h1 * W + w0)] + lw * x[xp + uint(h1 * W + w1)]);
}
