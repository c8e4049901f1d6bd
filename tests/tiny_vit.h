/* tiny_vit.h - the tiny ViT the model tests share: 28 px images, patch 7 (16 patches), width 32,
   4 heads. test_vit.c checks it against the PyTorch fixtures of make_model_fixtures.py (which
   builds the same model), test_vulkan.c runs it on both backends. */
#ifndef HV_TEST_TINY_VIT_H
#define HV_TEST_TINY_VIT_H

#include "humanvit.h"
#include <string.h>

static hv_vit_desc tiny_vit_desc(int depth, int num_classes, int global_pool) {
    hv_vit_desc d;
    memset(&d, 0, sizeof d);
    d.img_size = 28;
    d.patch_size = 7;
    d.embed_dim = 32;
    d.depth = depth;
    d.num_heads = 4;
    d.num_classes = num_classes;
    d.global_pool = global_pool;
    return d;
}

#endif
