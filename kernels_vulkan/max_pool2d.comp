#version 450
// y = window max, argmax = its index h * W + w in the plane (first maximum; NaN wins)
// (hv__backend.max_pool2d). PI: 0 outputs, pool.glsl, 12 has argmax.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 3
#include "common.glsl"
#include "pool.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) writeonly buffer A { int amax[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int o = int(e), H = PL_H, W = PL_W, OW = PL_OW, OH = PL_OH;
    int ow = o % OW, oh = (o / OW) % OH, plane = o / (OW * OH);
    int h0 = oh * PL_SH - PL_PH, w0 = ow * PL_SW - PL_PW, hs = max(h0, 0), ws = max(w0, 0);
    int he = min(h0 + PL_KH, H), we = min(w0 + PL_KW, W), best = hs * W + ws;
    float m = -1.0 / 0.0;
    for (int ih = hs; ih < he; ih++)
        for (int iw = ws; iw < we; iw++) {
            float v = x[OFF(2) + uint(plane * H * W + ih * W + iw)];
            if (v > m || isnan(v)) {
                m = v;
                best = ih * W + iw;
            }
        }
    y[OFF(0) + e] = m;
    if (PI(12) != 0) amax[OFF(1) + e] = best;
}
