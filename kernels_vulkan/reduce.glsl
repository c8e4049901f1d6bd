// reduce.glsl - workgroup reductions through shared memory. Include after
// `layout(local_size_x = HV_WG) in;` with HV_WG a power of two. Every invocation of the group
// must call these (they contain barriers).
shared float hv_red[HV_WG];
float hv_wg_sum(float v) {
    uint l = gl_LocalInvocationID.x;
    hv_red[l] = v;
    barrier();
    for (uint s = uint(HV_WG) / 2u; s > 0u; s >>= 1) {
        if (l < s) hv_red[l] += hv_red[l + s];
        barrier();
    }
    float r = hv_red[0];
    barrier();
    return r;
}
// NaN wins, as in the CPU's max
float hv_max2(float a, float b) { return (b > a || isnan(b)) ? b : a; }
float hv_wg_max(float v) {
    uint l = gl_LocalInvocationID.x;
    hv_red[l] = v;
    barrier();
    for (uint s = uint(HV_WG) / 2u; s > 0u; s >>= 1) {
        if (l < s) hv_red[l] = hv_max2(hv_red[l], hv_red[l + s]);
        barrier();
    }
    float r = hv_red[0];
    barrier();
    return r;
}
