// resize.glsl - torch's linear source index (humanvit.h, hv__linear_src), with the scale
// computed on the host in float exactly as the CPU does; `precise` keeps the compiler from
// fusing, so the indices and weights are the CPU's bits.
void hv_lsrc(int dst, int in_, int out_, int ac, float scale, out int i0, out int i1, out float l1) {
    precise float src;
    if (in_ == out_) {
        i0 = dst;
        i1 = dst;
        l1 = 0.0;
        return;
    }
    if (ac != 0) {
        src = scale * float(dst);
    } else {
        src = scale * (float(dst) + 0.5) - 0.5;
        if (src < 0.0) src = 0.0;
    }
    i0 = min(int(src), in_ - 1);
    precise float frac = src - float(i0);
    l1 = min(frac, 1.0);
    i1 = i0 + (i0 < in_ - 1 ? 1 : 0);
}
