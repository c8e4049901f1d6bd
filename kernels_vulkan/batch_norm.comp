#version 450
// y = (x - mean) / sqrt(var + eps) * w + b per channel of x (N, C, S) (hv__backend.batch_norm).
// PI: 0 elements, 1 C, 2 S, PF 3 eps, PI 4 has w, 5 has b.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 6
#include "common.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer M { float mean[]; };
layout(std430, binding = 4) readonly buffer V { float var[]; };
layout(std430, binding = 5) readonly buffer Wt { float w[]; };
layout(std430, binding = 6) readonly buffer B { float b[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    uint c = (i / PU(2)) % PU(1);
    float inv = 1.0 / sqrt(var[OFF(3) + c] + PF(3)), v = (x[OFF(1) + i] - mean[OFF(2) + c]) * inv;
    y[OFF(0) + i] = (PI(4) != 0 ? v * w[OFF(4) + c] : v) + (PI(5) != 0 ? b[OFF(5) + c] : 0.0);
}
