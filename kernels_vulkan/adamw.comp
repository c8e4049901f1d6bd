#version 450
// One Adam or AdamW step (hv__backend.adamw), the float expressions of humanvit.h's hv__adam_ref
// (PyTorch's single-tensor kernel: lerp, mul + addcmul, addcdiv), coefficients from the host:
//   g += l2 p;  p *= decay;  m += b1c (g - m);  v = b2 v + b2c g g;  p += neg_step m / (sqrt(v) / bc2_sqrt + eps)
// PI: 0 n, PF: 1 decay, 2 l2, 3 b1c, 4 beta2, 5 b2c, 6 bc2_sqrt, 7 eps, 8 neg_step.
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
    float w = p[OFF(0) + i], mo = m[OFF(1) + i];
    precise float gi = g[OFF(3) + i] + PF(2) * w;
    precise float wi = w * PF(1);
    precise float mi = mo + PF(3) * (gi - mo);
    precise float vi = v[OFF(2) + i] * PF(4) + PF(5) * gi * gi;
    precise float denom = sqrt(vi) / PF(6) + PF(7);
    m[OFF(1) + i] = mi;
    v[OFF(2) + i] = vi;
    p[OFF(0) + i] = wi + PF(8) * mi / denom;
}
