#version 450
// One AdamW step (hv__backend.adamw), PyTorch's formulation with decoupled weight decay:
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t.
// PI: 0 n, PF: 1 lr, 2 beta1, 3 beta2, 4 eps, 5 weight decay, 6 bc1, 7 bc2.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 4
#include "common.glsl"
layout(std430, binding = 1) buffer P { float p[]; };
layout(std430, binding = 2) buffer M { float m[]; };
layout(std430, binding = 3) buffer V { float v[]; };
layout(std430, binding = 4) readonly buffer G { float g[]; };
void main() {
    uint i = hv_gid();
    if (i >= PU(0)) return;
    float lr = PF(1), b1 = PF(2), b2 = PF(3), eps = PF(4), wd = PF(5), bc1 = PF(6), bc2 = PF(7);
    float gi = g[OFF(3) + i];
    float mi = b1 * m[OFF(1) + i] + (1.0 - b1) * gi;
    float vi = b2 * v[OFF(2) + i] + (1.0 - b2) * gi * gi;
    float pi = p[OFF(0) + i] * (1.0 - lr * wd);
    p[OFF(0) + i] = pi - (lr / bc1) * mi / (sqrt(vi) / sqrt(bc2) + eps);
    m[OFF(1) + i] = mi;
    v[OFF(2) + i] = vi;
}
