// index.glsl - index range checks on the device. A kernel that reads indices (gather, scatter,
// cross-entropy labels) skips an index outside [0, bound) and records the first one in the
// context's error word, bound at binding HV_ERR (the last): [0] the op's code (a parameter from
// the host), [1] the value, [2] the bound. humanvit.h reads it at the next sync (hv__vk_flush):
// no download of the indices, no wait.
layout(std430, binding = HV_ERR) buffer HvErr { uint hv_err[]; };
bool hv_index_ok(int v, int bound, int code) {
    if (v >= 0 && v < bound) return true;
    uint e = OFF(HV_ERR - 1);
    if (atomicCompSwap(hv_err[e], 0u, uint(code)) == 0u) {
        hv_err[e + 1u] = uint(v);
        hv_err[e + 2u] = uint(bound);
    }
    return false;
}
