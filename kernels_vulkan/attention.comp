#version 450
// o (B, H, Nq, d) = softmax(q k^T * scale) v and lse (B, H, Nq) = the log-sum-exp of each row of
// scores (hv__backend.attention); q, k, v, o any strides. One workgroup per query row: the row of
// q in shared memory, 64 keys at a time scored (each dot product in order, as the CPU), then an
// online softmax (running max m and sum l; the output rescaled when m grows). d <= 256.
// PI: 0 B, 1 H, 2 Nq, 3 Nk, 4 d, PF 5 scale, then strides (b, h, i, t) of q 6..9, k 10..13,
// v 14..17, o 18..21.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 5
#include "common.glsl"
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(std430, binding = 2) writeonly buffer L { float lse[]; };
layout(std430, binding = 3) readonly buffer Q { float q[]; };
layout(std430, binding = 4) readonly buffer K { float k[]; };
layout(std430, binding = 5) readonly buffer V { float v[]; };
shared float qs[256];
shared float sc[HV_WG];
uint row(int t, uint b, uint h, uint i) { return b * PU(t) + h * PU(t + 1) + i * PU(t + 2); }
void main() {
    uint H = PU(1), Nq = PU(2), Nk = PU(3), d = PU(4), r = hv_group(), lid = gl_LocalInvocationID.x;
    if (r >= PU(0) * H * Nq) return;
    uint b = r / (H * Nq), h = (r / Nq) % H, i = r % Nq;
    float scale = PF(5);
    uint qo = OFF(2) + row(6, b, h, i), ko = OFF(3) + row(10, b, h, 0u), vo = OFF(4) + row(14, b, h, 0u);
    uint qst = PU(9), kst = PU(13), vst = PU(17), kj = PU(12), vj = PU(16);
    for (uint t = lid; t < d; t += HV_WG) qs[t] = q[qo + t * qst];
    barrier();
    float m = -1.0 / 0.0, l = 0.0, acc[4] = float[4](0.0, 0.0, 0.0, 0.0);
    for (uint j0 = 0u; j0 < Nk; j0 += HV_WG) {
        uint j = j0 + lid, nb = min(uint(HV_WG), Nk - j0);
        float s = -1.0 / 0.0;
        if (j < Nk) {
            float dot = 0.0;
            for (uint t = 0u; t < d; t++) dot += qs[t] * k[ko + j * kj + t * kst];
            s = scale * dot;
        }
        sc[lid] = s;
        barrier();
        float mb = m;
        for (uint jj = 0u; jj < nb; jj++) mb = max(mb, sc[jj]);
        float c = exp(m - mb);
        l *= c;
        for (int u = 0; u < 4; u++) acc[u] *= c;
        for (uint jj = 0u; jj < nb; jj++) {
            float p = exp(sc[jj] - mb);
            l += p;
            for (int u = 0; u < 4; u++) {
                uint t = lid + uint(u) * HV_WG;
                if (t < d) acc[u] += p * v[vo + (j0 + jj) * vj + t * vst];
            }
        }
        m = mb;
        barrier();
    }
    uint oo = OFF(0) + row(18, b, h, i);
    for (int u = 0; u < 4; u++) {
        uint t = lid + uint(u) * HV_WG;
        if (t < d) o[oo + t * PU(21)] = acc[u] / l;
    }
    if (lid == 0u) lse[OFF(1) + r] = m + log(l);
}
