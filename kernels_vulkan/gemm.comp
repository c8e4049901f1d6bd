#version 450
// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] (hv__backend.gemm); row-major with leading
// dimensions, batch b = gl_WorkGroupID.z. 64 x 64 output tiles through shared memory, 16 x 16
// threads with 4 x 4 outputs each; each output's sum runs over k in order, as the CPU's.
// PI: 0 m, 1 n, 2 k, 3 lda, 4 ldb, 5 ldc, 6..8 batch strides of A, B, C, 9 trans_a, 10 trans_b;
// PF: 11 alpha, 12 beta (beta 0: C is not read).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 16, local_size_y = 16) in;
#define NARGS 3
#include "common.glsl"
layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) buffer C { float c[]; };
#define BM 64
#define BN 64
#define BK 16
shared float As[BK][BM];
shared float Bs[BK][BN + 1];
void main() {
    uint M = PU(0), N = PU(1), K = PU(2), lda = PU(3), ldb = PU(4), ldc = PU(5);
    bool ta = PI(9) != 0, tb = PI(10) != 0;
    uint bz = gl_WorkGroupID.z;
    uint a0 = OFF(0) + bz * PU(6), b0 = OFF(1) + bz * PU(7), c0 = OFF(2) + bz * PU(8);
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * 16u + tx;
    uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0;
    for (uint p0 = 0u; p0 < K; p0 += BK) {
        // 1024 elements of each tile, 4 per thread
        for (uint e = tid; e < BK * BM; e += 256u) {
            uint pp, ii;
            if (ta) { ii = e % BM; pp = e / BM; } else { pp = e % BK; ii = e / BK; }
            uint gi = row0 + ii, gp = p0 + pp;
            float v = 0.0;
            if (gi < M && gp < K) v = ta ? a[a0 + gp * lda + gi] : a[a0 + gi * lda + gp];
            As[pp][ii] = v;
        }
        for (uint e = tid; e < BK * BN; e += 256u) {
            uint pp, jj;
            if (tb) { pp = e % BK; jj = e / BK; } else { jj = e % BN; pp = e / BN; }
            uint gj = col0 + jj, gp = p0 + pp;
            float v = 0.0;
            if (gj < N && gp < K) v = tb ? b[b0 + gj * ldb + gp] : b[b0 + gp * ldb + gj];
            Bs[pp][jj] = v;
        }
        barrier();
        uint kk = min(uint(BK), K - p0);
        for (uint p = 0u; p < kk; p++) {
            float av[4], bv[4];
            for (int i = 0; i < 4; i++) av[i] = As[p][ty + 16u * uint(i)];
            for (int j = 0; j < 4; j++) bv[j] = Bs[p][tx + 16u * uint(j)];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
        }
        barrier();
    }
    float alpha = PF(11), beta = PF(12);
    for (int i = 0; i < 4; i++) {
        uint gi = row0 + ty + 16u * uint(i);
        if (gi >= M) continue;
        for (int j = 0; j < 4; j++) {
            uint gj = col0 + tx + 16u * uint(j);
            if (gj >= N) continue;
            uint o = c0 + gi * ldc + gj;
            c[o] = beta == 0.0 ? alpha * acc[i][j] : beta * c[o] + alpha * acc[i][j];
        }
    }
}
