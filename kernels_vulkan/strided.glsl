// strided.glsl - elementwise kernels over NARGS tensors of one shape with any strides (0 on
// broadcast axes). Parameters after the offsets: n (elements), nd (axes, <= 6, size-1 axes
// dropped and contiguous runs merged by the host), shape[6], then 6 strides per tensor; the
// kernel's own parameters start at PI(HV_EW_EXTRA).
#define HV_EW_EXTRA (8 + 6 * NARGS)

// the element offset in tensor t (0-based binding index) of the i-th element in row-major order
uint hv_ew_off(uint i, int t) {
    int nd = PI(1);
    uint off = OFF(t);
    for (int d = nd - 1; d >= 0; d--) {
        uint s = PU(2 + d);
        off += (i % s) * PU(8 + 6 * t + d);
        i /= s;
    }
    return off;
}
