#version 450
// run = (1 - momentum) run + momentum stat, the variance scaled by unbias first
// (hv__backend.batch_norm_running); the running tensors may be strided.
// PI: 0 C, 1 stride of run_mean, 2 stride of run_var, PF 3 momentum, 4 unbias.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
#define NARGS 4
#include "common.glsl"
layout(std430, binding = 1) buffer RM { float rm[]; };
layout(std430, binding = 2) buffer RV { float rv[]; };
layout(std430, binding = 3) readonly buffer M { float mean[]; };
layout(std430, binding = 4) readonly buffer V { float var[]; };
void main() {
    uint c = hv_gid();
    if (c >= PU(0)) return;
    float mo = PF(3);
    uint a = OFF(0) + c * PU(1), b = OFF(1) + c * PU(2);
    rm[a] = (1.0 - mo) * rm[a] + mo * mean[OFF(2) + c];
    rv[b] = (1.0 - mo) * rv[b] + mo * (var[OFF(3) + c] * PF(4));
}
