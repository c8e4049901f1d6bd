#!/usr/bin/env python3
"""make_fixtures.py - writes the PyTorch reference fixtures of humanvit's C tests.

    python3 tests/make_fixtures.py          # rewrites tests/fixtures/*.hvfx, deterministically

Needs torch and numpy; the C suite that reads the files (tests/test_fixtures.c, via tests/fixture.h)
needs neither. The fixtures are committed: run this only when a case is added or changed.

FILE FORMAT  (.hvfx, version 1; one file per case; the same text heads tests/fixture.h)
    magic     4 bytes   "HVFX"
    version   u32       1
    count     u32       number of arrays that follow
    count times, one array:
        name_len  u32       1..63
        name      name_len bytes, printable ASCII, no NUL; unique within the file
        dtype     u32       0 = f32 (IEEE 754 binary32), 1 = i32 (two's complement): hv_dtype's values
        ndim      u32       0..8 (0: a scalar, one element)
        dims      ndim x u32, the row-major shape
        data      numel x 4 bytes, row-major
    checksum  u32       FNV-1a 32-bit hash of every byte before it (catches flipped data bytes)
Every integer and every element is little-endian. Nothing may follow the checksum.

WHAT A CASE HOLDS
    inputs by role ("x", "w", "idx", or timm names such as "attn.qkv.weight"); "out"; "r", random
    weights of the loss L = sum(out * r); "grad.<input>" = dL/d input for every differentiable input;
    op-specific extra outputs (batch norm's updated running stats); "cfg.<name>" the op's arguments;
    "torch32_err" = [forward error, worst gradient error] of PyTorch's own float32 computation
    against the stored reference, in the metric the C test uses (max |a - ref| / max |ref|).

PRECISION: inputs are drawn as float32 (so the C side sees exactly the same values), then the
reference forward and backward run in float64 and the results are rounded once to float32. The
stored values are therefore the exact answers to within half an ulp (~6e-8 relative), and the error
the C test measures is the library's own. A float32 PyTorch run would instead bake in PyTorch's
rounding (order-dependent, different across versions, BLAS builds and thread counts: ~1e-7..1e-6
relative) and make the files depend on the machine that made them. The float32 run is still done,
only to record in torch32_err how close PyTorch itself gets: the C tolerances (1e-5 forward,
1e-4 gradients) sit one to two orders of magnitude above those numbers.

DETERMINISM: every case draws from its own torch.Generator seeded by crc32 of its name, so adding
or editing a case leaves the other files byte-identical; float64 CPU math on these tiny sizes is
deterministic, and the single float32 rounding absorbs any last-bit differences of the float64
reference across machines (barring a value within 1e-16 of a rounding boundary).
"""
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures")
VERSION = 1
MAX_NAME = 63
MAX_DIMS = 8  # of the format; humanvit tensors may have fewer


# ---- the file format ------------------------------------------------------------------------------


def fnv1a32(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def encode(arrays):
    """arrays: list of (name, numpy array of float32 or int32). Returns the file's bytes."""
    out = bytearray(b"HVFX" + struct.pack("<II", VERSION, len(arrays)))
    seen = set()
    for name, a in arrays:
        nb = name.encode("ascii")
        assert 1 <= len(nb) <= MAX_NAME and name not in seen, name
        seen.add(name)
        if a.dtype == np.float32:
            dt = 0
        elif a.dtype == np.int32:
            dt = 1
        else:
            raise TypeError(f"{name}: dtype {a.dtype}")
        assert a.ndim <= MAX_DIMS, name
        out += struct.pack("<I", len(nb)) + nb + struct.pack("<II", dt, a.ndim)
        out += struct.pack(f"<{a.ndim}I", *a.shape)
        out += np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    out += struct.pack("<I", fnv1a32(bytes(out)))
    return bytes(out)


# ---- building a case ------------------------------------------------------------------------------


def rel_err(a, ref):
    """the C test's metric: max |a - ref| / max |ref| (floor 1e-6 on the denominator)"""
    a = a.detach().double()
    ref = ref.detach().double()
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1e-6)
    return (a - ref).abs().max().item() / scale if ref.numel() else 0.0


class Case:
    def __init__(self, name):
        self.name = name
        self.g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        self.inputs = []  # (name, float32 or int tensor, differentiable)
        self.cfg = []

    # random float32 values, drawn from this case's own stream
    def randn(self, *shape, std=1.0, mean=0.0):
        return (torch.randn(tuple(shape), generator=self.g) * std + mean).float()

    def uniform(self, lo, hi, *shape):
        return (torch.rand(tuple(shape), generator=self.g) * (hi - lo) + lo).float()

    def away_from_zero(self, t, margin=0.05):
        """pushes values out of (-margin, margin): kinks (relu, l1, ...) make PyTorch's choice of
        subgradient there a convention, not a derivative"""
        return torch.where(t.abs() < margin, t.sign() * margin + torch.where(t >= 0, margin, -margin), t).float()

    def input(self, name, t, grad=True):
        self.inputs.append((name, t, grad and t.dtype == torch.float32))
        return t

    def param(self, name, value):
        """an op argument stored as cfg.<name>: ints as i32, floats as f32 (lists allowed)"""
        vals = value if isinstance(value, (list, tuple)) else [value]
        is_int = all(isinstance(v, (bool, int)) for v in vals)
        arr = np.array(vals, dtype=np.int32 if is_int else np.float32)
        if not isinstance(value, (list, tuple)):
            arr = arr.reshape(())
        self.cfg.append(("cfg." + name, arr))
        return value

    def _run(self, fn, dtype):
        d, leaves = {}, {}
        for name, t, grad in self.inputs:
            if t.dtype == torch.float32:
                v = t.to(dtype).clone().requires_grad_(grad)
                if grad:
                    leaves[name] = v
            else:
                v = t.clone()
            d[name] = v
        res = fn(d)
        out, extras = (res if isinstance(res, tuple) else (res, {}))
        return out, extras, leaves

    def emit(self, fn):
        """fn(d) -> out or (out, {extra_name: tensor}); d maps input names to tensors (float inputs
        as float64 leaves for the reference run, float32 for the PyTorch-float32 run)"""
        out64, extras64, leaves64 = self._run(fn, torch.float64)
        r = self.randn(*out64.shape)
        grads64 = {}
        if leaves64:
            (out64 * r.double()).sum().backward()
            grads64 = {k: v.grad for k, v in leaves64.items()}
        # the same in float32, for the record
        out32, extras32, leaves32 = self._run(fn, torch.float32)
        err_fwd = rel_err(out32, out64)
        for k in extras64:
            err_fwd = max(err_fwd, rel_err(extras32[k], extras64[k]))
        err_grad = 0.0
        if leaves32:
            (out32 * r).sum().backward()
            err_grad = max(rel_err(leaves32[k].grad, grads64[k]) for k in leaves32)

        arrays = list(self.cfg)
        for name, t, _ in self.inputs:
            arrays.append((name, f32_or_i32(t)))
        arrays.append(("out", f32_or_i32(out64)))
        arrays.append(("r", f32_or_i32(r)))
        for k, g in grads64.items():
            arrays.append(("grad." + k, f32_or_i32(g)))
        for k, v in extras64.items():
            arrays.append((k, f32_or_i32(v)))
        arrays.append(("torch32_err", np.array([err_fwd, err_grad], dtype=np.float32)))
        data = encode(arrays)
        with open(os.path.join(OUT_DIR, self.name + ".hvfx"), "wb") as f:
            f.write(data)
        return len(data), err_fwd, err_grad


def f32_or_i32(t):
    t = t.detach()
    if t.dtype.is_floating_point:
        return t.to(torch.float32).contiguous().numpy()
    return t.to(torch.int32).contiguous().numpy()


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


# ---- matmul and linear ----------------------------------------------------------------------------


def mm(a, b, ta, tb):
    return torch.matmul(a.transpose(-1, -2) if ta else a, b.transpose(-1, -2) if tb else b)


@case
def matmuls():
    # (name, a shape as stored, b shape as stored, trans_a, trans_b)
    specs = [
        ("matmul_ta_bcast", (3, 4, 5), (1, 4, 6), 1, 0),  # a^T (3,5,4) @ b (1->3,4,6)
        ("matmul_tb_bcast4d", (2, 1, 5, 4), (3, 6, 4), 0, 1),  # (2,1->3,5,4) @ (3,6,4)^T -> (2,3,5,6)
        ("matmul_tatb", (4, 5), (6, 4), 1, 1),  # plain 2-D, both transposed -> (5,6)
        ("matmul_2d_by_batched", (5, 4), (2, 3, 4, 6), 0, 0),  # a broadcasts over two batch axes
    ]
    for name, sa, sb, ta, tb in specs:
        c = Case(name)
        c.param("trans", [ta, tb])
        c.input("a", c.randn(*sa))
        c.input("b", c.randn(*sb))
        yield c, (lambda d, ta=ta, tb=tb: mm(d["a"], d["b"], ta, tb))


@case
def linears():
    c = Case("linear_bias")
    c.input("x", c.randn(2, 7, 16))
    c.input("w", c.randn(12, 16, std=0.25))
    c.input("b", c.randn(12))
    yield c, lambda d: F.linear(d["x"], d["w"], d["b"])
    c = Case("linear_nobias")
    c.input("x", c.randn(5, 16))
    c.input("w", c.randn(3, 16, std=0.25))
    yield c, lambda d: F.linear(d["x"], d["w"])


# ---- elementwise ----------------------------------------------------------------------------------


@case
def binaries():
    ops = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
    for op, fn in ops.items():
        c = Case(f"{op}_bcast")
        if op in ("add", "sub"):
            c.input("a", c.randn(2, 1, 4, 5))
            c.input("b", c.randn(3, 1, 5))  # -> (2, 3, 4, 5)
        else:
            c.input("a", c.randn(4, 1))
            b = c.randn(3, 1, 6)
            if op == "div":
                b = c.uniform(0.5, 1.5, 3, 1, 6) * torch.where(b < 0, -1.0, 1.0)
            c.input("b", b)  # -> (3, 4, 6)
        yield c, (lambda d, fn=fn: fn(d["a"], d["b"]))


@case
def unaries():
    ops = {
        "exp": torch.exp,
        "log": torch.log,
        "sqrt": torch.sqrt,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "relu": F.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
        "gelu": lambda x: F.gelu(x),  # exact, erf
    }
    for op, fn in ops.items():
        c = Case("unary_" + op)
        if op in ("log", "sqrt"):
            x = c.uniform(0.1, 4.0, 4, 6, 5)
        else:
            x = c.randn(4, 6, 5, std=2.0)
        if op in ("relu", "leaky_relu"):
            x = c.away_from_zero(x)
        if op == "leaky_relu":
            c.param("negative_slope", 0.2)
        c.input("x", x)
        yield c, (lambda d, fn=fn: fn(d["x"]))


# ---- reductions -----------------------------------------------------------------------------------


@case
def reductions():
    # (name, kind, axes (empty: all), keepdim)
    specs = [
        ("sum_axes02_keep", "sum", [0, 2], 1),
        ("sum_all", "sum", [], 0),
        ("mean_axis1", "mean", [1], 0),
        ("mean_axes12_keep", "mean", [1, -1], 1),
        ("max_axis_last", "max", [-1], 0),
        ("max_axes01_keep", "max", [0, 1], 1),
    ]
    for name, kind, axes, keep in specs:
        c = Case(name)
        c.param("axes", axes if axes else [-99])  # [-99]: all axes (naxes 0 in hv)
        c.param("keepdim", keep)
        c.input("x", c.randn(3, 4, 5))
        dims = tuple(axes) if axes else tuple(range(3))
        if kind == "sum":
            fn = lambda d, dims=dims, keep=keep: d["x"].sum(dim=dims, keepdim=bool(keep))
        elif kind == "mean":
            fn = lambda d, dims=dims, keep=keep: d["x"].mean(dim=dims, keepdim=bool(keep))
        else:  # amax: no ties among random values, so the gradient goes to the one maximum
            fn = lambda d, dims=dims, keep=keep: d["x"].amax(dim=dims, keepdim=bool(keep))
        yield c, fn


# ---- normalisation --------------------------------------------------------------------------------


@case
def softmaxes():
    for kind in ("softmax", "log_softmax"):
        for axis in (-1, 1):
            c = Case(f"{kind}_axis{'last' if axis == -1 else axis}")
            c.param("axis", axis)
            c.input("x", c.randn(3, 5, 7, std=3.0))
            f = F.softmax if kind == "softmax" else F.log_softmax
            yield c, (lambda d, f=f, axis=axis: f(d["x"], dim=axis))
        # logits in the hundreds: exp overflows float32 unless the maximum is subtracted first
        c = Case(f"{kind}_large")
        c.param("axis", -1)
        c.input("x", c.randn(4, 9, std=3.0, mean=150.0))
        f = F.softmax if kind == "softmax" else F.log_softmax
        yield c, (lambda d, f=f: f(d["x"], dim=-1))


@case
def layer_norms():
    c = Case("layer_norm")
    c.param("eps", 1e-6)
    c.input("x", c.randn(2, 7, 32, std=2.0, mean=0.5))
    c.input("weight", c.randn(32, std=0.3, mean=1.0))
    c.input("bias", c.randn(32, std=0.3))
    yield c, lambda d: F.layer_norm(d["x"], (32,), d["weight"], d["bias"], eps=1e-6)
    # a large common offset: variance as E[x^2] - mean^2 in float32 cancels catastrophically
    c = Case("layer_norm_offset")
    c.param("eps", 1e-6)
    c.input("x", c.randn(3, 5, 16, std=0.5, mean=300.0))
    c.input("weight", c.randn(16, std=0.3, mean=1.0))
    c.input("bias", c.randn(16, std=0.3))
    yield c, lambda d: F.layer_norm(d["x"], (16,), d["weight"], d["bias"], eps=1e-6)
    c = Case("layer_norm_noaffine")
    c.param("eps", 1e-5)
    c.input("x", c.randn(4, 10, std=0.7, mean=-1.0))
    yield c, lambda d: F.layer_norm(d["x"], (10,), eps=1e-5)


@case
def batch_norms():
    # (name, x shape, training, affine, eps)
    specs = [
        ("batch_norm1d_train", (8, 5), 1, 1, 1e-5),
        ("batch_norm1d_ncl_train", (4, 3, 6), 1, 1, 1e-5),
        ("batch_norm2d_train", (3, 4, 5, 5), 1, 1, 1e-5),
        ("batch_norm2d_eval", (3, 4, 5, 5), 0, 1, 1e-5),
        ("batch_norm2d_train_offset", (4, 3, 4, 4), 1, 1, 1e-5),  # mean 300, std 0.5 (see layer_norm_offset)
        ("batch_norm1d_eval_head", (6, 16), 0, 0, 1e-6),  # the HLV head: eval, no affine, eps 1e-6
    ]
    for name, shape, training, affine, eps in specs:
        c = Case(name)
        C = shape[1]
        c.param("training", training)
        c.param("momentum", 0.1)
        c.param("eps", eps)
        c.input("x", c.randn(*shape, std=0.5, mean=300.0) if name.endswith("offset") else c.randn(*shape, std=1.5, mean=0.3))
        if affine:
            c.input("weight", c.randn(C, std=0.3, mean=1.0))
            c.input("bias", c.randn(C, std=0.3))
        c.input("running_mean", c.randn(C, std=0.5), grad=False)
        c.input("running_var", c.uniform(0.5, 1.5, C), grad=False)

        def fn(d, training=training, affine=affine, eps=eps):
            rm, rv = d["running_mean"].clone(), d["running_var"].clone()
            y = F.batch_norm(d["x"], rm, rv, d.get("weight") if affine else None, d.get("bias") if affine else None,
                             training=bool(training), momentum=0.1, eps=eps)
            return y, {"running_mean.after": rm, "running_var.after": rv}

        yield c, fn


# ---- convolution and pooling ----------------------------------------------------------------------


@case
def convs():
    # (name, x shape, w shape, bias, stride, pad, dilation, groups), each pair (h, w)
    specs = [
        ("conv2d_s2p1d2g2", (2, 4, 9, 9), (6, 2, 3, 3), 1, (2, 2), (1, 1), (2, 2), 2),
        ("conv2d_asym", (1, 3, 7, 10), (4, 3, 3, 2), 0, (2, 1), (1, 2), (1, 2), 1),
        ("conv2d_patch14", (2, 3, 28, 28), (8, 3, 14, 14), 1, (14, 14), (0, 0), (1, 1), 1),  # ViT patch embed
        ("conv2d_groups32", (1, 64, 5, 5), (64, 2, 3, 3), 0, (1, 1), (1, 1), (1, 1), 32),  # ResNeXt's cardinality
        ("conv2d_depthwise", (2, 4, 6, 5), (8, 1, 3, 3), 1, (1, 2), (2, 1), (1, 1), 4),  # groups = Cin, 2 per group
    ]
    for name, xs, ws, bias, stride, pad, dil, groups in specs:
        c = Case(name)
        c.param("stride", list(stride))
        c.param("pad", list(pad))
        c.param("dilation", list(dil))
        c.param("groups", groups)
        c.input("x", c.randn(*xs))
        fan_in = ws[1] * ws[2] * ws[3]
        c.input("w", c.randn(*ws, std=1.0 / math.sqrt(fan_in)))
        if bias:
            c.input("b", c.randn(ws[0]))
        fn = lambda d, s=stride, p=pad, dl=dil, g=groups: F.conv2d(d["x"], d["w"], d.get("b"), s, p, dl, g)
        yield c, fn


@case
def pools():
    # (name, kind, kernel, stride, pad, count_include_pad)
    specs = [
        ("max_pool2d_k3s2p1", "max", (3, 3), (2, 2), (1, 1), 1),
        ("max_pool2d_asym", "max", (3, 2), (2, 1), (1, 0), 1),
        ("avg_pool2d_k3s2p1_incl", "avg", (3, 3), (2, 2), (1, 1), 1),
        ("avg_pool2d_k3s2p1_excl", "avg", (3, 3), (2, 2), (1, 1), 0),
        ("avg_pool2d_asym", "avg", (2, 3), (1, 2), (0, 1), 1),
    ]
    for name, kind, k, s, p, incl in specs:
        c = Case(name)
        c.param("kernel", list(k))
        c.param("stride", list(s))
        c.param("pad", list(p))
        c.param("count_exclude_pad", 1 - incl)
        c.input("x", c.randn(2, 3, 9, 8))
        if kind == "max":
            fn = lambda d, k=k, s=s, p=p: F.max_pool2d(d["x"], k, s, p)
        else:
            fn = lambda d, k=k, s=s, p=p, incl=incl: F.avg_pool2d(d["x"], k, s, p, count_include_pad=bool(incl))
        yield c, fn
    c = Case("global_avg_pool")
    c.input("x", c.randn(2, 5, 6, 7))
    yield c, lambda d: F.adaptive_avg_pool2d(d["x"], 1).flatten(1)


@case
def resizes():
    # "to1": an output extent of 1 (align_corners: scale (in-1)/(out-1) would divide by zero)
    for tag, xs, size in (("up", (2, 3, 5, 6), (9, 11)), ("down", (1, 2, 8, 8), (5, 3)), ("to1", (1, 2, 4, 5), (1, 3))):
        for ac in (0, 1):
            c = Case(f"resize_bilinear_{tag}_ac{ac}")
            c.param("size", list(size))
            c.param("align_corners", ac)
            c.input("x", c.randn(*xs))
            yield c, (lambda d, size=size, ac=ac: F.interpolate(d["x"], size=size, mode="bilinear", align_corners=bool(ac)))


# ---- attention, indexing, losses ------------------------------------------------------------------


@case
def attentions():
    c = Case("attention")
    c.param("scale", 0.0)  # hv: <= 0 means 1/sqrt(d)
    for n in ("q", "k", "v"):
        c.input(n, c.randn(2, 4, 7, 8))
    yield c, lambda d: F.scaled_dot_product_attention(d["q"], d["k"], d["v"])
    c = Case("attention_cross_scale")
    c.param("scale", 0.3)
    c.input("q", c.randn(2, 2, 3, 8))
    c.input("k", c.randn(2, 2, 6, 8))
    c.input("v", c.randn(2, 2, 6, 8))
    yield c, lambda d: F.scaled_dot_product_attention(d["q"], d["k"], d["v"], scale=0.3)
    # scores in the hundreds: the softmax inside must subtract its maximum
    c = Case("attention_large_logits")
    c.param("scale", 0.0)
    c.input("q", c.randn(1, 2, 5, 4, std=12.0))
    c.input("k", c.randn(1, 2, 5, 4, std=12.0))
    c.input("v", c.randn(1, 2, 5, 4))
    yield c, lambda d: F.scaled_dot_product_attention(d["q"], d["k"], d["v"])


@case
def gathers():
    c = Case("gather_mae")
    B, N, D, K = 2, 9, 6, 4
    c.input("x", c.randn(B, N, D))
    ids_keep = torch.stack([torch.randperm(N, generator=c.g)[:K] for _ in range(B)])
    c.input("idx", ids_keep.to(torch.int32))
    # models_mae.random_masking: torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    yield c, lambda d: torch.gather(d["x"], 1, d["idx"].long().unsqueeze(-1).repeat(1, 1, D))
    for name, idx in (("scatter", None), ("scatter_repeat", [[0, 3, 3, 8], [5, 5, 5, 1]])):
        c = Case(name)
        n = 9
        c.param("n", n)
        c.input("x", c.randn(B, K, D))
        if idx is None:
            idx = torch.stack([torch.randperm(n, generator=c.g)[:K] for _ in range(B)])
        c.input("idx", torch.as_tensor(idx).to(torch.int32))
        fn = lambda d, n=n: torch.zeros(B, n, D, dtype=d["x"].dtype).scatter_add(
            1, d["idx"].long().unsqueeze(-1).repeat(1, 1, D), d["x"])
        yield c, fn


@case
def losses():
    c = Case("cross_entropy")
    c.input("logits", c.randn(6, 10, std=2.0))
    c.input("labels", torch.randint(0, 10, (6,), generator=c.g).to(torch.int32))
    yield c, lambda d: F.cross_entropy(d["logits"], d["labels"].long())
    c = Case("cross_entropy_large")  # logits near 1000: log-sum-exp must subtract the maximum
    c.input("logits", c.randn(4, 7, std=30.0, mean=1000.0))
    c.input("labels", torch.randint(0, 7, (4,), generator=c.g).to(torch.int32))
    yield c, lambda d: F.cross_entropy(d["logits"], d["labels"].long())
    c = Case("mse_loss")
    c.input("a", c.randn(3, 4, 5))
    c.input("b", c.randn(3, 4, 5))
    yield c, lambda d: F.mse_loss(d["a"], d["b"])
    c = Case("l1_loss")
    a, b = c.randn(3, 4, 5), c.randn(3, 4, 5)
    c.input("a", b + c.away_from_zero(a - b))  # keep |a - b| off the kink at 0
    c.input("b", b)
    yield c, lambda d: F.l1_loss(d["a"], d["b"])
    # MAE's loss: per-patch losses averaged over the masked patches, mask of the same shape
    c = Case("masked_mean")
    c.input("x", c.randn(2, 9).abs())
    c.input("mask", (torch.rand(2, 9, generator=c.g) < 0.6).float(), grad=False)
    yield c, lambda d: (d["x"] * d["mask"]).sum() / d["mask"].sum()
    # a mask that broadcasts, (2, 9, 1) over x (2, 9, 5): the mean of the x values the mask selects,
    # so the denominator counts each mask value once per x value it covers (sum of the broadcast
    # mask). The header's "sum(x * mask) / sum(mask)" could also be read as the mask's own sum;
    # the nn branch chose this reading, which is what "masked mean" means.
    c = Case("masked_mean_bcast")
    c.input("x", c.randn(2, 9, 5))
    c.input("mask", (torch.rand(2, 9, 1, generator=c.g) < 0.6).float(), grad=False)
    yield c, lambda d: (d["x"] * d["mask"]).sum() / d["mask"].expand_as(d["x"]).sum()


@case
def topks():
    for k in (1, 3):
        c = Case(f"topk_accuracy_k{k}")
        c.param("k", k)
        logits = c.randn(16, 10)
        labels = torch.randint(0, 10, (16,), generator=c.g)
        c.input("logits", logits, grad=False)
        c.input("labels", labels.to(torch.int32))

        def fn(d, k=k):
            top = d["logits"].topk(k, dim=1).indices
            return (top == d["labels"].long().unsqueeze(1)).any(dim=1).to(d["logits"].dtype).mean()

        yield c, fn


# ---- one ViT block, as timm 0.3.2 writes it -------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@case
def vit_block():
    B, N, D, H = 2, 7, 32, 4
    c = Case("vit_block")
    c.param("heads", H)
    c.param("eps", 1e-6)
    c.input("x", c.randn(B, N, D))
    block = Block(D, H)
    names = []
    for name, p in block.named_parameters():
        if name.startswith("norm"):  # LayerNorm near (1, 0) but not exactly: every term matters
            v = c.randn(*p.shape, std=0.2, mean=1.0 if name.endswith("weight") else 0.0)
        else:  # weights at the scale of nn.Linear's default init, biases small
            v = c.randn(*p.shape, std=(1.0 / math.sqrt(p.shape[-1])) if p.ndim == 2 else 0.1)
        c.input(name, v)
        names.append(name)
    assert set(names) == set(block.state_dict().keys())

    def fn(d):
        m = block.to(d["x"].dtype)
        return torch.func.functional_call(m, {k: d[k] for k in names}, (d["x"],))

    yield c, fn


# ---- main -----------------------------------------------------------------------------------------


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for f in os.listdir(OUT_DIR):  # a renamed case must not leave its old file behind
        if f.endswith(".hvfx"):
            os.remove(os.path.join(OUT_DIR, f))
    total, n, names = 0, 0, []
    print(f"{'case':28s} {'bytes':>7s}  torch-f32 err: fwd      grad")
    for gen in CASES:
        for c, fn in gen():
            size, ef, eg = c.emit(fn)
            assert c.name not in names, c.name
            names.append(c.name)
            total += size
            n += 1
            print(f"{c.name:28s} {size:7d}  {ef:22.2e} {eg:9.2e}")
    # the list of cases, so that the C test can tell when a case has no C counterpart
    with open(os.path.join(OUT_DIR, "MANIFEST"), "w") as f:
        f.write("".join(name + "\n" for name in names))
    print(f"{n} fixtures, {total} bytes in {os.path.relpath(OUT_DIR)}")
    if total > 1 << 20:
        sys.exit("fixtures exceed 1 MiB: make the cases smaller")


if __name__ == "__main__":
    main()
