#version 450
// y = window mean (hv__backend.avg_pool2d). PI: 0 outputs, pool.glsl.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 2
#include "common.glsl"
#include "pool.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int o = int(e), OW = PL_OW, OH = PL_OH, hs, he, ws, we;
    float div = hv_avg_window((o / OW) % OH, o % OW, hs, he, ws, we), acc = 0.0;
    int xp = (o / (OW * OH)) * PL_H * PL_W;
    for (int ih = hs; ih < he; ih++)
        for (int iw = ws; iw < we; iw++) acc += x[OFF(1) + uint(xp + ih * PL_W + iw)];
    y[OFF(0) + e] = acc / div;
}
