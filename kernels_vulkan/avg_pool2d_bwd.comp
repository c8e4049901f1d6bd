#version 450
// gx += each output's gradient spread over its window (hv__backend.avg_pool2d_bwd); one
// invocation per plane, in the CPU's order. PI: 0 planes, pool.glsl.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#define NARGS 2
#include "common.glsl"
#include "pool.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer GY { float gy[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int p = int(e), OH = PL_OH, OW = PL_OW, hs, he, ws, we;
    for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
            float v = gy[OFF(1) + uint((p * OH + oh) * OW + ow)] / hv_avg_window(oh, ow, hs, he, ws, we);
            for (int ih = hs; ih < he; ih++)
                for (int iw = ws; iw < we; iw++) gx[OFF(0) + uint(p * PL_H * PL_W + ih * PL_W + iw)] += v;
        }
}
