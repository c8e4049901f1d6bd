#version 450
// Attention backward, query side (hv__backend.attention_bwd): per query row i,
// delta_i = go_i . o_i (written for the key-side kernel) and, with P = exp(S - lse) recomputed,
// dS = P * (go v^T - delta), gq_i += scale * sum_j dS_ij k_j. One workgroup per query row.
// PI: 0 B, 1 H, 2 Nq, 3 Nk, 4 d, PF 5 scale, PI 6 has gq, strides (b, h, i, t) of q 7..10,
// k 11..14, v 15..18, o 19..22, go 23..26, gq 27..30.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 8
#include "common.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GQ { float gq[]; };
layout(std430, binding = 2) writeonly buffer DL { float delta[]; };
layout(std430, binding = 3) readonly buffer Q { float q[]; };
layout(std430, binding = 4) readonly buffer K { float k[]; };
layout(std430, binding = 5) readonly buffer V { float v[]; };
layout(std430, binding = 6) readonly buffer O { float o[]; };
layout(std430, binding = 7) readonly buffer L { float lse[]; };
layout(std430, binding = 8) readonly buffer GO { float go[]; };
shared float qs[256];
shared float gs[256];
shared float dsh[HV_WG];
uint row(int t, uint b, uint h, uint i) { return b * PU(t) + h * PU(t + 1) + i * PU(t + 2); }
void main() {
    uint H = PU(1), Nq = PU(2), Nk = PU(3), d = PU(4), r = hv_group(), lid = gl_LocalInvocationID.x;
    if (r >= PU(0) * H * Nq) return;
    uint b = r / (H * Nq), h = (r / Nq) % H, i = r % Nq;
    float scale = PF(5);
    uint qo = OFF(2) + row(7, b, h, i), ko = OFF(3) + row(11, b, h, 0u), vo = OFF(4) + row(15, b, h, 0u);
    uint oo = OFF(5) + row(19, b, h, i), goo = OFF(7) + row(23, b, h, i);
    uint kj = PU(13), kst = PU(14), vj = PU(17), vst = PU(18);
    float part = 0.0;
    for (uint t = lid; t < d; t += HV_WG) {
        qs[t] = q[qo + t * PU(10)];
        gs[t] = go[goo + t * PU(26)];
        part += gs[t] * o[oo + t * PU(22)];
    }
    float dl = hv_wg_sum(part); // the barrier inside also publishes qs and gs
    if (lid == 0u) delta[OFF(1) + r] = dl;
    if (PI(6) == 0) return;
    float lr = lse[OFF(6) + r], acc[4] = float[4](0.0, 0.0, 0.0, 0.0);
    for (uint j0 = 0u; j0 < Nk; j0 += HV_WG) {
        uint j = j0 + lid, nb = min(uint(HV_WG), Nk - j0);
        float ds = 0.0;
        if (j < Nk) {
            float s = 0.0, dp = 0.0;
            for (uint t = 0u; t < d; t++) {
                s += qs[t] * k[ko + j * kj + t * kst];
                dp += gs[t] * v[vo + j * vj + t * vst];
            }
            ds = exp(scale * s - lr) * (dp - dl);
        }
        dsh[lid] = ds;
        barrier();
        for (uint jj = 0u; jj < nb; jj++)
            for (int u = 0; u < 4; u++) {
                uint t = lid + uint(u) * HV_WG;
                if (t < d) acc[u] += dsh[jj] * k[ko + (j0 + jj) * kj + t * kst];
            }
        barrier();
    }
    uint gqo = OFF(0) + row(27, b, h, i);
    for (int u = 0; u < 4; u++) {
        uint t = lid + uint(u) * HV_WG;
        if (t < d) gq[gqo + t * PU(30)] += scale * acc[u];
    }
}
