#version 450
// gx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * w, per row
// (hv__backend.layer_norm_bwd, the input gradient). PI: 0 rows, 1 D, 2 has w.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 6
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer W { float w[]; };
layout(std430, binding = 4) readonly buffer M { float mean[]; };
layout(std430, binding = 5) readonly buffer R { float rstd[]; };
layout(std430, binding = 6) readonly buffer GY { float gy[]; };
void main() {
    uint r = hv_group(), l = gl_LocalInvocationID.x, D = PU(1);
    if (r >= PU(0)) return;
    bool hw = PI(2) != 0;
    float mu = mean[OFF(3) + r], rs = rstd[OFF(4) + r], sg = 0.0, sgx = 0.0;
    for (uint j = l; j < D; j += HV_WG) {
        float g = gy[OFF(5) + r * D + j] * (hw ? w[OFF(2) + j] : 1.0);
        sg += g;
        sgx += g * ((x[OFF(1) + r * D + j] - mu) * rs);
    }
    sg = hv_wg_sum(sg) / float(D);
    sgx = hv_wg_sum(sgx) / float(D);
    for (uint j = l; j < D; j += HV_WG) {
        float g = gy[OFF(5) + r * D + j] * (hw ? w[OFF(2) + j] : 1.0), xh = (x[OFF(1) + r * D + j] - mu) * rs;
        gx[OFF(0) + r * D + j] += rs * (g - sg - xh * sgx);
    }
}
