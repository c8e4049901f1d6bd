#version 450
// gw += sum over rows of gy * xhat, gb += sum of gy (hv__backend.layer_norm_bwd, the affine
// gradients); one workgroup per feature. PI: 0 rows, 1 D, 2 has gw, 3 has gb.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 6
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GW { float gw[]; };
layout(std430, binding = 2) buffer GB { float gb[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) readonly buffer M { float mean[]; };
layout(std430, binding = 5) readonly buffer R { float rstd[]; };
layout(std430, binding = 6) readonly buffer GY { float gy[]; };
void main() {
    uint j = hv_group(), l = gl_LocalInvocationID.x, rows = PU(0), D = PU(1);
    if (j >= D) return;
    float sw = 0.0, sb = 0.0;
    for (uint q = l; q < rows; q += HV_WG) {
        float g = gy[OFF(5) + q * D + j];
        sw += g * ((x[OFF(2) + q * D + j] - mean[OFF(3) + q]) * rstd[OFF(4) + q]);
        sb += g;
    }
    sw = hv_wg_sum(sw);
    sb = hv_wg_sum(sb);
    if (l == 0u) {
        if (PI(2) != 0) gw[OFF(0) + j] += sw;
        if (PI(3) != 0) gb[OFF(1) + j] += sb;
    }
}
