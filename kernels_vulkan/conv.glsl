// conv.glsl - the geometry parameters shared by the conv2d kernels (after the kernel's own
// first parameter PI(0)): 1 N, 2 Cin, 3 H, 4 W, 5 Cout, 6 OH, 7 OW, 8 KH, 9 KW, 10 stride h,
// 11 stride w, 12 pad h, 13 pad w, 14 dilation h, 15 dilation w, 16 groups.
#define CV_N PI(1)
#define CV_CIN PI(2)
#define CV_H PI(3)
#define CV_W PI(4)
#define CV_COUT PI(5)
#define CV_OH PI(6)
#define CV_OW PI(7)
#define CV_KH PI(8)
#define CV_KW PI(9)
#define CV_SH PI(10)
#define CV_SW PI(11)
#define CV_PH PI(12)
#define CV_PW PI(13)
#define CV_DH PI(14)
#define CV_DW PI(15)
#define CV_G PI(16)
