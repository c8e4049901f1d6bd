#version 450
// gx, gw, gb += the gradients of batch_norm (hv__backend.batch_norm_bwd); one workgroup per
// channel: sums of gy and gy * xhat by a tree, then gx = w inv (gy - mean(gy) - xhat mean(gy xhat))
// with batch statistics, else w inv gy. PI: 0 N, 1 C, 2 S, PF 3 eps, PI 4 batch_stats, 5 has gx,
// 6 has gw, 7 has gb, 8 has w, 9 phase, 10 the batch's N * S in phase 2. Phase 0: the whole batch.
// A batch over a binding comes in parts of whole images: phase 1 adds each part's sums of gy and
// gy * xhat into sums (2, C) bound as gx (and into gw, gb); phase 2 makes gx from those, bound as gw.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 8
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) buffer GW { float gw[]; };
layout(std430, binding = 3) buffer GB { float gb[]; };
layout(std430, binding = 4) readonly buffer X { float x[]; };
layout(std430, binding = 5) readonly buffer GY { float gy[]; };
layout(std430, binding = 6) readonly buffer M { float mean[]; };
layout(std430, binding = 7) readonly buffer V { float var[]; };
layout(std430, binding = 8) readonly buffer Wt { float w[]; };
void main() {
    uint c = hv_group(), l = gl_LocalInvocationID.x, C = PU(1), S = PU(2), M = PU(0) * S;
    if (c >= C) return;
    float inv = 1.0 / sqrt(var[OFF(6) + c] + PF(3)), wc = PI(8) != 0 ? w[OFF(7) + c] : 1.0, m = mean[OFF(5) + c];
    int phase = PI(9);
    float sg = 0.0, sgx = 0.0;
    if (phase == 2) {
        sg = gw[OFF(1) + c];
        sgx = gw[OFF(1) + C + c];
        M = PU(10);
    } else {
        for (uint e = l; e < M; e += HV_WG) {
            uint k = ((e / S) * C + c) * S + e % S;
            float g = gy[OFF(4) + k];
            sg += g;
            sgx += g * ((x[OFF(3) + k] - m) * inv);
        }
        sg = hv_wg_sum(sg);
        sgx = hv_wg_sum(sgx);
        if (l == 0u) {
            if (PI(7) != 0) gb[OFF(2) + c] += sg;
            if (PI(6) != 0) gw[OFF(1) + c] += sgx;
            if (phase == 1) {
                gx[OFF(0) + c] += sg;
                gx[OFF(0) + C + c] += sgx;
            }
        }
        if (phase == 1 || PI(5) == 0) return;
    }
    float mg = PI(4) != 0 ? sg / float(M) : 0.0, mgx = PI(4) != 0 ? sgx / float(M) : 0.0;
    M = PU(0) * S; /* this part's elements */
    for (uint e = l; e < M; e += HV_WG) {
        uint k = ((e / S) * C + c) * S + e % S;
        float xh = (x[OFF(3) + k] - m) * inv;
        gx[OFF(0) + k] += wc * inv * (gy[OFF(4) + k] - mg - xh * mgx);
    }
}
