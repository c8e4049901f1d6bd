#version 450
// glogits += gloss / N * (softmax - onehot), softmax from the saved max and log-sum
// (hv__backend.cross_entropy_bwd). One invocation per logit. A label outside [0, C) has no
// one-hot and is reported (index.glsl). PI: 0 rows here, 1 C, 2 N of the whole batch (the
// mean's divisor; the rows may be a part of it), 3 error code.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 6
#define HV_ERR 6
#include "common.glsl"
#include "index.glsl"
layout(std430, binding = 1) buffer G { float gl[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Y { int labels[]; };
layout(std430, binding = 4) readonly buffer L { float lse[]; };
layout(std430, binding = 5) readonly buffer GL { float gloss[]; };
void main() {
    uint e = hv_gid(), N = PU(0), C = PU(1);
    if (e >= N * C) return;
    uint r = e / C, c = e % C;
    int y = labels[OFF(2) + r];
    if (c == 0u) hv_index_ok(y, int(C), PI(3)); /* once per row */
    float g = gloss[OFF(4)] / float(PU(2));
    float p = exp((x[OFF(1) + e] - lse[OFF(3) + 2u * r]) - lse[OFF(3) + 2u * r + 1u]);
    gl[OFF(0) + e] += g * (p - (int(c) == y ? 1.0 : 0.0));
}
