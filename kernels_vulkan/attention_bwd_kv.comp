#version 450
// Attention backward, key side (hv__backend.attention_bwd): per key row j, with P and dS
// recomputed from lse and delta, gv_j += sum_i P_ij go_i and gk_j += scale * sum_i dS_ij q_i.
// One workgroup per key row. PI: 0 B, 1 H, 2 Nq, 3 Nk, 4 d, PF 5 scale, PI 6 has gk, 7 has gv,
// strides (b, h, i, t) of q 8..11, k 12..15, v 16..19, go 20..23, gk 24..27, gv 28..31.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 8
#include "common.glsl"
layout(std430, binding = 1) buffer GK { float gk[]; };
layout(std430, binding = 2) buffer GV { float gv[]; };
layout(std430, binding = 3) readonly buffer Q { float q[]; };
layout(std430, binding = 4) readonly buffer K { float k[]; };
layout(std430, binding = 5) readonly buffer V { float v[]; };
layout(std430, binding = 6) readonly buffer GO { float go[]; };
layout(std430, binding = 7) readonly buffer L { float lse[]; };
layout(std430, binding = 8) readonly buffer DL { float delta[]; };
shared float ks[256];
shared float vs[256];
shared float psh[HV_WG];
shared float dsh[HV_WG];
uint row(int t, uint b, uint h, uint i) { return b * PU(t) + h * PU(t + 1) + i * PU(t + 2); }
void main() {
    uint H = PU(1), Nq = PU(2), Nk = PU(3), d = PU(4), r = hv_group(), lid = gl_LocalInvocationID.x;
    if (r >= PU(0) * H * Nk) return;
    uint b = r / (H * Nk), h = (r / Nk) % H, j = r % Nk, ri = (b * H + h) * Nq;
    float scale = PF(5);
    uint qo = OFF(2) + row(8, b, h, 0u), goo = OFF(5) + row(20, b, h, 0u);
    uint qi = PU(10), qst = PU(11), gi = PU(22), gst = PU(23);
    uint ko = OFF(3) + row(12, b, h, j), vo = OFF(4) + row(16, b, h, j);
    for (uint t = lid; t < d; t += HV_WG) {
        ks[t] = k[ko + t * PU(15)];
        vs[t] = v[vo + t * PU(19)];
    }
    barrier();
    float ak[4] = float[4](0.0, 0.0, 0.0, 0.0), av[4] = float[4](0.0, 0.0, 0.0, 0.0);
    for (uint i0 = 0u; i0 < Nq; i0 += HV_WG) {
        uint i = i0 + lid, nb = min(uint(HV_WG), Nq - i0);
        float p = 0.0, ds = 0.0;
        if (i < Nq) {
            float s = 0.0, dp = 0.0;
            for (uint t = 0u; t < d; t++) {
                s += q[qo + i * qi + t * qst] * ks[t];
                dp += go[goo + i * gi + t * gst] * vs[t];
            }
            p = exp(scale * s - lse[OFF(6) + ri + i]);
            ds = p * (dp - delta[OFF(7) + ri + i]);
        }
        psh[lid] = p;
        dsh[lid] = ds;
        barrier();
        for (uint ii = 0u; ii < nb; ii++)
            for (int u = 0; u < 4; u++) {
                uint t = lid + uint(u) * HV_WG;
                if (t < d) {
                    av[u] += psh[ii] * go[goo + (i0 + ii) * gi + t * gst];
                    ak[u] += dsh[ii] * q[qo + (i0 + ii) * qi + t * qst];
                }
            }
        barrier();
    }
    uint gko = OFF(0) + row(24, b, h, j), gvo = OFF(1) + row(28, b, h, j);
    for (int u = 0; u < 4; u++) {
        uint t = lid + uint(u) * HV_WG;
        if (t >= d) continue;
        if (PI(6) != 0) gk[gko + t * PU(27)] += scale * ak[u];
        if (PI(7) != 0) gv[gvo + t * PU(31)] += av[u];
    }
}
