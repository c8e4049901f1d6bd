#version 450
// y (N, Cout, OH, OW) = x (N, Cin, H, W) conv w (Cout, Cin/groups, KH, KW) + b (hv__backend.conv2d),
// direct, one invocation per output, the sum in the CPU's order. PI: 0 outputs, conv.glsl, 17 has b.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;
#define NARGS 4
#include "common.glsl"
#include "conv.glsl"
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Wt { float w[]; };
layout(std430, binding = 4) readonly buffer B { float b[]; };
void main() {
    uint e = hv_gid();
    if (e >= PU(0)) return;
    int o = int(e), OW = CV_OW, OH = CV_OH, cout = CV_COUT, H = CV_H, W = CV_W, KH = CV_KH, KW = CV_KW;
    int ow = o % OW, oh = (o / OW) % OH, co = (o / (OW * OH)) % cout, ni = o / (OW * OH * cout);
    int cin_g = CV_CIN / CV_G, cout_g = cout / CV_G;
    float acc = PI(17) != 0 ? b[OFF(3) + uint(co)] : 0.0;
    for (int ci = 0; ci < cin_g; ci++) {
        int xp = (ni * CV_CIN + (co / cout_g) * cin_g + ci) * H * W, wp = (co * cin_g + ci) * KH * KW;
        for (int kh = 0; kh < KH; kh++) {
            int ih = oh * CV_SH - CV_PH + kh * CV_DH;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; kw++) {
                int iw = ow * CV_SW - CV_PW + kw * CV_DW;
                if (iw >= 0 && iw < W) acc += x[OFF(1) + uint(xp + ih * W + iw)] * w[OFF(2) + uint(wp + kh * KW + kw)];
            }
        }
    }
    y[OFF(0) + e] = acc;
}
