#!/usr/bin/env python3
"""Reference fixtures for the Perceptual MAE pieces (LS-GAN variant), made with PyTorch.

The discriminator below is written from the description of upstream's single-scale
Discriminator (tractableai/perceptual-mae src/models/modules/discriminators.py): the same module
names, so its state-dict keys are upstream's. The losses follow src/losses/image_reconstruction.py
(LSGAN, gram_matrix, GANPerceptualLoss with the conv1..conv4 features of a copy of the
discriminator) and the Lightning loop of masked_vision_model.py (the discriminator's parameters
are frozen in the generator step). Everything is computed in float64 and stored as float32, with
a small discriminator (ndf 4; upstream's is 64) so that the files stay small.

Writes into tests/fixtures/pmae/:
  pmae.ckpt            torch.save of a Lightning-like checkpoint: {'epoch', 'global_step',
                       'pytorch-lightning_version', 'state_dict'} with 'discriminator.*',
                       'loss_fnc.disc_model_copy.*' (the frozen copy) and a few 'generator.*' keys
  pmae_io.safetensors  outputs and gradients (names below, in make())

The input images are not stored: both sides compute them from an integer hash (images(b, seed)
below, tests/test_pmae.c pmae_images), exactly representable in float32.

usage: python3 tests/make_pmae_fixtures.py
"""
import collections
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "pmae")
NDF = 4
ROWS = (100, 108)  # the rows of the input gradients that are stored


class Discriminator(nn.Module):
    def __init__(self, ndf=64, nc=3):
        super().__init__()

        def block(cin, cout, k, s, p, bn):
            layers = [nn.Conv2d(cin, cout, k, s, p, bias=False)]
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            return nn.Sequential(*layers)

        self.conv1 = block(nc, ndf, 7, 2, 1, False)  # 110
        self.conv2 = block(ndf, 2 * ndf, 5, 2, 1, True)  # 54
        self.conv3 = block(2 * ndf, 4 * ndf, 5, 2, 0, True)  # 25
        self.conv4 = block(4 * ndf, 8 * ndf, 3, 2, 0, True)  # 12
        self.conv5 = block(8 * ndf, 8 * ndf, 3, 2, 1, True)  # 6
        self.conv6 = nn.Conv2d(8 * ndf, 1, 3, 1, 0, bias=False)  # 4
        self.final_layer = nn.Linear(16, 1)

    def features(self, x):
        out = []
        for m in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = m(x)
            out.append(x)
        return out

    def forward(self, x):
        x = self.conv6(self.conv5(self.features(x)[-1]))
        return torch.sigmoid(self.final_layer(x.flatten(1))).view(-1)


def images(batch, seed):
    """(batch, 3, 224, 224) values k/128 - 1, k the top byte of a multiplicative hash of the index"""
    i = np.arange(batch * 3 * 224 * 224, dtype=np.uint64)
    v = (i * np.uint64(2654435761) + np.uint64(seed) * np.uint64(40503)) & np.uint64(0xFFFFFFFF)
    k = (v >> np.uint64(24)).astype(np.float64)
    return torch.from_numpy(k / 128.0 - 1.0).reshape(batch, 3, 224, 224)


def make_disc(seed):
    torch.manual_seed(seed)
    d = Discriminator(NDF).double()
    with torch.no_grad():  # non-trivial BatchNorm affine and statistics
        for m in d.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)
    return d


def gram(f):
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def lsgan_d(p_real, p_fake):
    return 0.5 * ((p_real.mean() - 1) ** 2 + p_fake.mean() ** 2)


def lsgan_g(p_fake):
    return 0.5 * (p_fake.mean() - 1) ** 2


def f32(t):
    return t.detach().float().contiguous()


def make():
    os.makedirs(OUT, exist_ok=True)
    io = {}
    disc, copy = make_disc(1), make_disc(2)
    init = {k: v.clone() for k, v in disc.state_dict().items()}
    x = images(2, 1)
    fake = images(2, 2) * 0.75 + 0.125

    sd = collections.OrderedDict()
    sd["generator.encoder.cls_token"] = torch.zeros(1, 1, 8)
    for k, v in disc.state_dict().items():
        sd["discriminator." + k] = v.float() if v.is_floating_point() else v
    for k, v in copy.state_dict().items():
        sd["loss_fnc.disc_model_copy." + k] = v.float() if v.is_floating_point() else v
    torch.save({"epoch": 2, "global_step": 7, "pytorch-lightning_version": "1.9.5", "state_dict": sd},
               os.path.join(OUT, "pmae.ckpt"))

    # 1. the discriminator alone: train-mode forward, backward of sum(out * r), statistics, eval
    torch.manual_seed(3)
    r = torch.rand(2, dtype=torch.float64) * 2 - 1
    xg = x.clone().requires_grad_(True)
    disc.train()
    feats = [f.mean(dim=(2, 3)) for f in disc.features(x)]
    disc.load_state_dict(init)  # features() moved the statistics: start again
    out = disc(xg)
    (out * r).sum().backward()
    io["disc.out_train"] = f32(out)
    io["disc.r"] = f32(r)
    io["disc.grad_images_rows"] = f32(xg.grad[:, :, ROWS[0]:ROWS[1], :])
    for k, p in disc.named_parameters():
        io["disc.grad." + k] = f32(p.grad)
    for k, v in disc.state_dict().items():
        if "running" in k:
            io["disc.after." + k] = f32(v)
        elif "num_batches" in k:
            io["disc.after." + k] = v.to(torch.int32)
    for i, f in enumerate(feats):
        io["disc.feat_mean.%d" % (i + 1)] = f32(f)
    disc.eval()
    with torch.no_grad():
        io["disc.out_eval"] = f32(disc(x))

    # 2. the generator step (disc frozen as Lightning's toggle_optimizer does; copy frozen)
    disc.load_state_dict(init)
    disc.train()
    copy.train()
    for p in list(disc.parameters()) + list(copy.parameters()):
        p.requires_grad_(False)
    fg = fake.clone().requires_grad_(True)
    l1 = (fg - x).abs().mean()
    adv = lsgan_g(disc(fg))
    ff, fi = copy.features(fg), copy.features(x)
    perc = sum((a - b).abs().mean() for a, b in zip(ff, fi))
    style = sum((gram(a) - gram(b)).abs().mean() for a, b in zip(ff, fi))
    total = l1 + 0.7 * adv + (1.0 * l1 + 0.05 * perc + 40.0 * style)
    total.backward()
    for k, v in (("l1", l1), ("gan", adv), ("perc", perc), ("style", style), ("total", total)):
        io["gen." + k] = f32(v)
    io["gen.grad_fake_rows"] = f32(fg.grad[:, :, ROWS[0]:ROWS[1], :])

    # 3. the discriminator step: D(real) then D(fake), fake detached
    disc.load_state_dict(init)
    for p in disc.parameters():
        p.requires_grad_(True)
        p.grad = None
    dloss = lsgan_d(disc(x), disc(fake))
    dloss.backward()
    io["dstep.loss"] = f32(dloss)
    for k, p in disc.named_parameters():
        io["dstep.grad." + k] = f32(p.grad)

    # 4. small tensors: the Gram matrix, the style and perceptual L1s, LSGAN
    torch.manual_seed(4)
    a = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    rg = torch.rand(2, 3, 3, dtype=torch.float64) * 2 - 1
    g = gram(a)
    (g * rg).sum().backward()
    io.update({"gram.x": f32(a), "gram.out": f32(g), "gram.r": f32(rg), "gram.grad_x": f32(a.grad)})
    a.grad = None
    s = (gram(a) - gram(b)).abs().mean() * 40.0 + (a - b).abs().mean() * 0.05
    s.backward()
    io.update({"style.y": f32(b), "style.loss": f32(s), "style.grad_x": f32(a.grad)})
    pr = torch.rand(5, dtype=torch.float64, requires_grad=True)
    pf = torch.rand(5, dtype=torch.float64, requires_grad=True)
    d = lsgan_d(pr, pf)
    d.backward()
    io.update({"lsgan.real": f32(pr), "lsgan.fake": f32(pf), "lsgan.d": f32(d), "lsgan.d_grad_real": f32(pr.grad),
               "lsgan.d_grad_fake": f32(pf.grad)})
    pf.grad = None
    gl = lsgan_g(pf)
    gl.backward()
    io.update({"lsgan.g": f32(gl), "lsgan.g_grad_fake": f32(pf.grad)})

    save_file(io, os.path.join(OUT, "pmae_io.safetensors"))


if __name__ == "__main__":
    make()
