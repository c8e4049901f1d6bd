#version 450
// gx (N, Cin, H, W) += dL/dx from gy (N, Cout, OH, OW) and w (hv__backend.conv2d_bwd_data): each
// gx element gathers the outputs whose windows read it. PI: 0 elements of gx, conv.glsl.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 3
#include "common.glsl"
#include "conv.glsl"
layout(std430, binding = 1) buffer GX { float gx[]; };
layout(std430, binding = 2) readonly buffer GY { float gy[]; };
layout(std430, binding = 3) readonly buffer Wt { float w[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int i = int(e), H = CV_H, W = CV_W, cin = CV_CIN, OH = CV_OH, OW = CV_OW, KH = CV_KH, KW = CV_KW;
    int iw = i % W, ih = (i / W) % H, ci = (i / (W * H)) % cin, ni = i / (W * H * cin);
    int cin_g = cin / CV_G, cout_g = CV_COUT / CV_G, co0 = (ci / cin_g) * cout_g;
    float acc = 0.0;
    for (int co = co0; co < co0 + cout_g; co++) {
        int gp = (ni * CV_COUT + co) * OH * OW, wp = (co * cin_g + ci % cin_g) * KH * KW;
        for (int kh = 0; kh < KH; kh++) {
            int th = ih + CV_PH - kh * CV_DH, oh = th / CV_SH;
            if (th < 0 || th % CV_SH != 0 || oh >= OH) continue;
            for (int kw = 0; kw < KW; kw++) {
                int tw = iw + CV_PW - kw * CV_DW, ow = tw / CV_SW;
                if (tw >= 0 && tw % CV_SW == 0 && ow < OW) acc += gy[OFF(1) + uint(gp + oh * OW + ow)] * w[OFF(2) + uint(wp + kh * KW + kw)];
            }
        }
    }
    gx[OFF(0) + e] += acc;
}
