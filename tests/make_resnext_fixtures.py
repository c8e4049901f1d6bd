#!/usr/bin/env python3
"""Reference fixtures for the ResNeXt model (hv_resnext), made with PyTorch (no torchvision).

The network below is written from torchvision's ResNet/Bottleneck description (resnet.py, v1.5:
the stride in the grouped 3x3; a 1x1 conv + BN downsample when the stride or the width changes),
with the same module names, so the state-dict keys are torchvision's. A tiny configuration keeps
the files small: stages [1, 2, 1, 1], 4 groups, width_per_group 16, base planes 4 (stage widths
4/8/16/32, outputs 16/32/64/128), 5 classes, a batch of 2 images of 48 x 48 (final map 2 x 2).

The forward and the gradients are computed in float64 from the float32 weights, so the stored
references carry no float32 rounding of their own.

Writes into tests/fixtures/models/:
  resnext_tiny.pth            torch.save(model.state_dict()): the torchvision layout
  resnext_tiny_tc.tar         what train_tc.py saves: {'acc1_list': [numpy floats], 'model_state_dict':
                              'module.'-prefixed (DataParallel) state dict with the running statistics of
                              one training forward, 'optimizer_state_dict': Adam's param_groups}
  resnext_tiny_io.safetensors images, labels, logits_eval, features_eval (pooled, eval mode),
                              logits_train, loss_train (cross-entropy, train mode), grad.<key> of that loss
                              for every parameter, and after.<bn key> the running statistics after that
                              one training forward; logits_eval_tc: eval logits with the .tar's weights

usage: python3 tests/make_resnext_fixtures.py
"""
import collections
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "models")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, groups, width_per_group, downsample):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNeXt(nn.Module):
    def __init__(self, depths, groups, width_per_group, base_planes=64, num_classes=1000):
        super().__init__()
        self.inplanes = base_planes
        self.groups, self.width_per_group = groups, width_per_group
        self.conv1 = nn.Conv2d(3, base_planes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_planes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(base_planes, depths[0], 1)
        self.layer2 = self._stage(base_planes * 2, depths[1], 2)
        self.layer3 = self._stage(base_planes * 4, depths[2], 2)
        self.layer4 = self._stage(base_planes * 8, depths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base_planes * 8 * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stage(self, planes, blocks, stride):
        out = planes * Bottleneck.expansion
        down = None
        if stride != 1 or self.inplanes != out:
            down = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, self.groups, self.width_per_group, down)]
        self.inplanes = out
        for _ in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes, 1, self.groups, self.width_per_group, None))
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x):
        return self.fc(self.features(x))


def f32(t):
    return t.detach().float().contiguous().clone()


def f32_state(model):
    return collections.OrderedDict((k, v.detach().clone().float() if v.is_floating_point() else v.clone()) for k, v in model.state_dict().items())


def main():
    torch.manual_seed(0)
    model = ResNeXt([1, 2, 1, 1], groups=4, width_per_group=16, base_planes=4, num_classes=5)
    with torch.no_grad():  # a trained-looking model: BN statistics and affine away from their init
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)
    sd32 = f32_state(model)
    torch.save(sd32, os.path.join(OUT, "resnext_tiny.pth"))

    imgs = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 1], dtype=torch.int32)
    model = model.double()
    x = imgs.double()
    io = {"images": f32(imgs), "labels": labels}
    model.eval()
    with torch.no_grad():
        io["logits_eval"] = f32(model(x))
        io["features_eval"] = f32(model.features(x))
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, labels.long())
    loss.backward()
    io["logits_train"] = f32(logits)
    io["loss_train"] = f32(loss.reshape(1))
    for k, p in model.named_parameters():
        io["grad." + k] = f32(p.grad)
    for k, v in model.state_dict().items():
        if "running_" in k:
            io["after." + k] = f32(v)

    # the train_tc.py checkpoint: the weights after that training forward (new running stats)
    tc = collections.OrderedDict(("module." + k, v) for k, v in f32_state(model).items())
    model.eval()
    with torch.no_grad():
        model.load_state_dict(collections.OrderedDict((k[len("module."):], v) for k, v in tc.items()))
        io["logits_eval_tc"] = f32(model(x))
    opt = {"state": {}, "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                                          "params": list(range(len(list(model.parameters()))))}]}
    torch.save({"acc1_list": [np.float64(12.5)], "model_state_dict": tc, "optimizer_state_dict": opt},
               os.path.join(OUT, "resnext_tiny_tc.tar"))
    save_file(io, os.path.join(OUT, "resnext_tiny_io.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print("resnext_tiny: %d parameters; wrote resnext_tiny.pth, resnext_tiny_tc.tar, resnext_tiny_io.safetensors" % n)


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    main()
