#!/usr/bin/env python3
"""Reference fixtures for the ViT and MAE models, made with PyTorch.

The models below follow the upstream code (official MAE models_mae.py / models_vit.py on timm
0.3.2 Blocks, as humanlike-vits uses them): same module names, so the state-dict keys are the
upstream ones, same initialisation, same masking by noise + argsort, same loss.

Writes into tests/fixtures/models/:
  mae_tiny.pth            torch.save({'model': state_dict, 'epoch', 'args': Namespace}) of a tiny MAE
  mae_tiny_io.safetensors images, noise, loss, pred, mask, the norm_pix loss, and grad.<key> of the
                          loss for every trainable parameter
  vit_tiny_ft.pth         a tiny finetuned ViT: {'model': ...} with the BatchNorm1d+Linear head
  vit_tiny_ft_io.safetensors  images, eval logits, CLS features, train-mode logits and grads
  vit_tiny_gp.pth, vit_tiny_gp_io.safetensors  a global-pool ViT (mean of patches, fc_norm): features, grads
  tables.safetensors      sin-cos tables and a bicubic pos-embed interpolation

usage: python3 tests/make_model_fixtures.py            (the committed fixtures)
       python3 tests/make_model_fixtures.py --vits14 DIR   (real-size ViT-S/14 parity files)
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "models")


# ---- 2-D sin-cos position tables (MAE util/pos_embed.py, rewritten) ----------------------------
def sincos_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, grid, cls_token=True):
    gh = np.arange(grid, dtype=np.float32)
    gw = np.arange(grid, dtype=np.float32)
    g = np.meshgrid(gw, gh)  # w first: g[0] is the column index
    g = np.stack(g, axis=0).reshape(2, 1, grid, grid)
    emb = np.concatenate([sincos_1d(dim // 2, g[0]), sincos_1d(dim // 2, g[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return emb


def interpolate_pos_embed(pos, new_grid):
    # upstream interpolate_pos_embed: keep the CLS row, bicubic on the grid, align_corners=False
    D = pos.shape[-1]
    extra = pos[:, :1]
    tok = pos[:, 1:]
    g = int(round(tok.shape[1] ** 0.5))
    tok = tok.reshape(-1, g, g, D).permute(0, 3, 1, 2)
    tok = F.interpolate(tok, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    tok = tok.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([extra, tok], dim=1)


# ---- timm 0.3.2 style modules ------------------------------------------------------------------
class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img, patch, chans, dim):
        super().__init__()
        self.patch = patch
        self.num_patches = (img // patch) ** 2
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class MAE(nn.Module):
    """models_mae.MaskedAutoencoderViT"""

    def __init__(self, img, patch, chans, dim, depth, heads, ddim, ddepth, dheads, norm_pix_loss=False):
        super().__init__()
        self.patch_embed = PatchEmbed(img, patch, chans, dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, ddim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, ddim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, patch * patch * chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.chans = chans
        g = int(L ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(dim, g)).float().unsqueeze(0))
        self.decoder_pos_embed.data.copy_(torch.from_numpy(sincos_2d(ddim, g)).float().unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        torch.nn.init.normal_(self.cls_token, std=0.02)
        torch.nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def patchify(self, imgs):
        p = self.patch_embed.patch
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], self.chans, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * self.chans)

    def random_masking(self, x, mask_ratio, noise):
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio, noise):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


class ViT(nn.Module):
    """models_vit.VisionTransformer with global_pool=False and the finetuning head of humanlike-vits"""

    def __init__(self, img, patch, chans, dim, depth, heads, num_classes, global_pool=False):
        super().__init__()
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img, patch, chans, dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        if global_pool:  # models_vit.py: fc_norm after the mean of the patch tokens, no final norm
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes)) if num_classes else nn.Identity()

    def forward_features(self, x):
        B = x.shape[0]
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        if self.global_pool:
            return self.fc_norm(x[:, 1:, :].mean(dim=1))
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x))


def f32(t):
    return t.detach().float().contiguous().clone()


def tiny_mae(norm_pix=False):
    torch.manual_seed(0)
    return MAE(img=28, patch=7, chans=3, dim=32, depth=2, heads=4, ddim=16, ddepth=1, dheads=2, norm_pix_loss=norm_pix)


def make_mae():
    model = tiny_mae()
    imgs = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(2))
    loss, pred, mask = model(imgs, 0.75, noise)
    loss.backward()
    io = {"images": f32(imgs), "noise": f32(noise), "loss": f32(loss.reshape(1)), "pred": f32(pred), "mask": f32(mask)}
    for k, p in model.named_parameters():
        if p.requires_grad:
            io["grad." + k] = f32(p.grad)
    model.norm_pix_loss = True
    io["loss_norm_pix"] = f32(model(imgs, 0.75, noise)[0].reshape(1))
    ns = argparse.Namespace(model="mae_tiny", mask_ratio=0.75, lr=3e-4, norm_pix_loss=False)
    torch.save({"model": model.state_dict(), "epoch": 1, "args": ns}, os.path.join(OUT, "mae_tiny.pth"))
    save_file(io, os.path.join(OUT, "mae_tiny_io.safetensors"))


def make_vit():
    torch.manual_seed(3)
    model = ViT(img=28, patch=7, chans=3, dim=32, depth=2, heads=4, num_classes=5)
    with torch.no_grad():  # a finetuned-looking model: non-trivial positions and head statistics
        model.pos_embed.normal_(0, 0.1)
        model.cls_token.normal_(0, 0.1)
        model.head[0].running_mean.normal_(0, 0.1)
        model.head[0].running_var.uniform_(0.5, 1.5)
        model.head[0].num_batches_tracked.fill_(7)
    imgs = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    io = {"images": f32(imgs)}
    model.eval()
    with torch.no_grad():
        io["logits_eval"] = f32(model(imgs))
        io["features"] = f32(model.forward_features(imgs))
    torch.save({"model": model.state_dict()}, os.path.join(OUT, "vit_tiny_ft.pth"))
    model.train()
    logits = model(imgs)
    io["logits_train"] = f32(logits)
    r = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    io["r"] = f32(r)
    (logits * r).sum().backward()
    for k, p in model.named_parameters():
        io["grad." + k] = f32(p.grad)
    io["running_mean_after"] = f32(model.head[0].running_mean)
    io["running_var_after"] = f32(model.head[0].running_var)
    save_file(io, os.path.join(OUT, "vit_tiny_ft_io.safetensors"))


def make_vit_global_pool():
    torch.manual_seed(9)
    model = ViT(img=28, patch=7, chans=3, dim=32, depth=1, heads=4, num_classes=0, global_pool=True)
    with torch.no_grad():
        model.pos_embed.normal_(0, 0.1)
        model.fc_norm.weight.normal_(1, 0.1)
    imgs = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(10))
    feats = model(imgs)
    r = torch.randn(feats.shape, generator=torch.Generator().manual_seed(11))
    (feats * r).sum().backward()
    io = {"images": f32(imgs), "features": f32(feats), "r": f32(r)}
    for k, p in model.named_parameters():
        io["grad." + k] = f32(p.grad)
    torch.save({"model": model.state_dict()}, os.path.join(OUT, "vit_tiny_gp.pth"))
    save_file(io, os.path.join(OUT, "vit_tiny_gp_io.safetensors"))


def make_tables():
    t = {"sincos_g7_d64": torch.from_numpy(sincos_2d(64, 7)).float(), "sincos_g16_d384": torch.from_numpy(sincos_2d(384, 16)).float()}
    pos = torch.randn(1, 1 + 25, 8, generator=torch.Generator().manual_seed(6))
    t["interp_in"] = pos
    t["interp_g8"] = f32(interpolate_pos_embed(pos, 8))
    t["interp_g3"] = f32(interpolate_pos_embed(pos, 3))
    save_file(t, os.path.join(OUT, "tables.safetensors"))


def make_vits14(outdir):
    """real-size ViT-S/14 MAE encoder parity: random weights, batch 2 at 224"""
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(7)
    model = ViT(img=224, patch=14, chans=3, dim=384, depth=12, heads=6, num_classes=0).eval()
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(sincos_2d(384, 16)).float().unsqueeze(0))
        model.cls_token.normal_(0, 0.02)
    imgs = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        feats = model(imgs)
    torch.save({"model": model.state_dict()}, os.path.join(outdir, "vits14.pth"))
    save_file({"images": f32(imgs), "features": f32(feats)}, os.path.join(outdir, "vits14_io.safetensors"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--vits14", metavar="DIR", help="write the real-size ViT-S/14 parity files to DIR and exit")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.vits14:
        make_vits14(a.vits14)
        sys.exit(0)
    os.makedirs(OUT, exist_ok=True)
    make_mae()
    make_vit()
    make_vit_global_pool()
    make_tables()
    print("wrote", sorted(os.listdir(OUT)))
