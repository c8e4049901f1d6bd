// common.glsl - included by every kernel after its `layout(local_size_x = ...) in;` and
// `#define NARGS n` (the number of tensor bindings).
//
// Binding 0 holds the dispatch's parameters as ints (humanvit.h, hv__vk_dispatch): first the
// element offset of each tensor binding's element 0 inside its bound window (NARGS of them,
// OFF(k) for binding k + 1), then the kernel's own parameters, PI(i) / PF(i).
// Tensors are bound at bindings 1..NARGS; every index is in elements (4 bytes).
layout(std430, set = 0, binding = 0) readonly buffer HvParams { int hv_p[]; };
#define OFF(k) uint(hv_p[k])
#define PI(i) hv_p[NARGS + (i)]
#define PU(i) uint(hv_p[NARGS + (i)])
#define PF(i) intBitsToFloat(hv_p[NARGS + (i)])

// The host lays 1-D work over a 2-D grid of workgroups (at most 65535 per axis).
uint hv_group() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
uint hv_gid() { return hv_group() * gl_WorkGroupSize.x + gl_LocalInvocationID.x; }
