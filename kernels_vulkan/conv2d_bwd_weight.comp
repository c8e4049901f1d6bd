#version 450
// gw += dL/dw and gb += dL/db (hv__backend.conv2d_bwd_weight): one workgroup per weight element
// (then per bias element), its sum over the batch and the output positions split over the group
// and finished by a tree. PI: 0 weight elements (0 without gw), conv.glsl, 17 has gb.
#extension GL_GOOGLE_include_directive : require
#define HV_WG 64
layout(local_size_x = HV_WG) in;
#define NARGS 4
#include "common.glsl"
#include "conv.glsl"
#include "reduce.glsl"
layout(std430, binding = 1) buffer GW { float gw[]; };
layout(std430, binding = 2) buffer GB { float gb[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) readonly buffer GY { float gy[]; };
void main() {
    int g = int(hv_group()), l = int(gl_LocalInvocationID.x), nw = PI(0), cout = CV_COUT;
    int OH = CV_OH, OW = CV_OW, H = CV_H, W = CV_W, N = CV_N, per = N * OH * OW;
    if (g >= nw + (PI(17) != 0 ? cout : 0)) return;
    float acc = 0.0;
    if (g < nw) {
        int KH = CV_KH, KW = CV_KW, cin_g = CV_CIN / CV_G, cout_g = cout / CV_G;
        int kw = g % KW, kh = (g / KW) % KH, ci = (g / (KW * KH)) % cin_g, c = g / (KW * KH * cin_g);
        int xc = (c / cout_g) * cin_g + ci;
        for (int e = l; e < per; e += HV_WG) {
            int ow = e % OW, oh = (e / OW) % OH, ni = e / (OW * OH);
            int ih = oh * CV_SH - CV_PH + kh * CV_DH, iw = ow * CV_SW - CV_PW + kw * CV_DW;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                acc += x[OFF(2) + uint((ni * CV_CIN + xc) * H * W + ih * W + iw)] * gy[OFF(3) + uint((ni * cout + c) * OH * OW + oh * OW + ow)];
        }
    } else {
        int co = g - nw;
        for (int e = l; e < per; e += HV_WG) {
            int j = e % (OH * OW), ni = e / (OH * OW);
            acc += gy[OFF(3) + uint((ni * cout + co) * OH * OW + j)];
        }
    }
    acc = hv_wg_sum(acc);
    if (l == 0) {
        if (g < nw) gw[OFF(0) + uint(g)] += acc;
        else gb[OFF(1) + uint(g - nw)] += acc;
    }
}
