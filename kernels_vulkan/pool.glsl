// pool.glsl - pool and resize geometry after the kernel's first parameter PI(0):
// 1 H, 2 W, 3 OH, 4 OW, 5 KH, 6 KW, 7 stride h, 8 stride w, 9 pad h, 10 pad w, 11 count_exclude_pad
#define PL_H PI(1)
#define PL_W PI(2)
#define PL_OH PI(3)
#define PL_OW PI(4)
#define PL_KH PI(5)
#define PL_KW PI(6)
#define PL_SH PI(7)
#define PL_SW PI(8)
#define PL_PH PI(9)
#define PL_PW PI(10)
#define PL_EXCL PI(11)
// the average window of output (oh, ow) clipped to the input, and its divisor (as the CPU's
// hv__avg_window: count_include_pad counts the window clipped to the padded input)
float hv_avg_window(int oh, int ow, out int hs, out int he, out int ws, out int we) {
    int h0 = oh * PL_SH - PL_PH, w0 = ow * PL_SW - PL_PW;
    int h1 = min(h0 + PL_KH, PL_H + PL_PH), w1 = min(w0 + PL_KW, PL_W + PL_PW);
    hs = max(h0, 0);
    ws = max(w0, 0);
    he = min(h1, PL_H);
    we = min(w1, PL_W);
    return float(PL_EXCL != 0 ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0));
}
