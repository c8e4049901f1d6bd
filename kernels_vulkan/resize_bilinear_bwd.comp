#version 450
// gx += the bilinear weights times gy (hv__backend.resize_bilinear_bwd); one invocation per
// plane, in the CPU's order. PI: 0 planes, 1 H, 2 W, 3 OH, 4 OW, 5 align_corners, PF 6, 7 scales.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#define NARGS 2
#include "common.glsl"
#include "resize.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer GY { float gy[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int p = int(e), H = PI(1), W = PI(2), OH = PI(3), OW = PI(4), h0, h1, w0, w1;
    float lh, lw;
    uint gp = OFF(0) + uint(p * H * W);
    for (int oh = 0; oh < OH; oh++) {
        hv_lsrc(oh, H, OH, PI(5), PF(6), h0, h1, lh);
        for (int ow = 0; ow < OW; ow++) {
            float v = gy[OFF(1) + uint((p * OH + oh) * OW + ow)];
            hv_lsrc(ow, W, OW, PI(5), PF(7), w0, w1, lw);
            gx[gp + uint(h0 * W + w0)] += (1.0 - lh) * (1.0 - lw) * v;
            gx[gp + uint(h0 * W + w1)] += (1.0 - lh) * lw * v;
            gx[gp + uint(h1 * W + w0)] += lh * (1.0 - lw) * v;
            gx[gp + uint(h1 * W + w1)] += lh * lw * v;
        }
    }
}
