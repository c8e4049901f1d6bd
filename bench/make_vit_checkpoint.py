#!/usr/bin/env python3
"""Writes a random-weight finetuned ViT checkpoint with the upstream layout, for bench/ckpt_memory.

usage: python3 bench/make_vit_checkpoint.py ARCH OUT.pth     (ARCH: vits14 vitb14 vitl14 vith14)"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch  # noqa: E402
from make_model_fixtures import ViT  # noqa: E402

SIZES = {"vits14": (384, 12, 6), "vitb14": (768, 12, 12), "vitl14": (1024, 24, 16), "vith14": (1280, 32, 16)}
arch, out = sys.argv[1], sys.argv[2]
dim, depth, heads = SIZES[arch]
torch.manual_seed(0)
model = ViT(img=224, patch=14, chans=3, dim=dim, depth=depth, heads=heads, num_classes=1000)
torch.save({"model": model.state_dict(), "epoch": 0}, out)
print(out, sum(t.numel() for t in model.state_dict().values()), "values")
