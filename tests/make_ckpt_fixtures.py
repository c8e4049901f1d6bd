#!/usr/bin/env python3
"""make_ckpt_fixtures.py - writes the small, REAL checkpoint files that tests/test_ckpt.c loads.

    python3 tests/make_ckpt_fixtures.py            # (re)writes tests/fixtures/ckpt/
    python3 tests/make_ckpt_fixtures.py --check F  # checks that F, a .safetensors file written by
                                                   # humanvit (test_ckpt writes one), loads in the
                                                   # `safetensors` package and equals expected.txt

Needs torch, numpy and safetensors (pip install safetensors). The files are written by
torch.save and safetensors.torch.save_file themselves, so they have exactly the layout the
published checkpoints have (zip of data.pkl + data/<key> storages, pickle protocol 2):

  vit_tiny.pth      {'model': OrderedDict(...), 'optimizer': AdamW state, 'epoch': 3,
                     'scaler': {...}, 'args': argparse.Namespace(...)}  as EMAE:util/misc.py
                    save_model writes it. 'model' holds f32 tensors including views with a storage
                    offset, a transposed (non-contiguous) view and a stepped slice, tensors
                    sharing one storage, an f16, a bf16, an f64, an int32 and an int64
                    (num_batches_tracked) tensor, a 0-d and an empty tensor.
  vit_tiny_zip64.pth the same archive rewritten with zip64 records and extra fields (as torch
                    writes them for files over 4 GiB); torch.load reads it back.
  tc_tiny.tar       {'acc1_list': [numpy.float64 ...], 'model_state_dict': {'module.'-prefixed
                    keys of a DataParallel model}, 'optimizer_state_dict': Adam state}, the
                    "are we there yet" checkpoint layout (HSSL:train_tc.py).
  plain_sd.pth      a bare state dict at the top level (torch.save(model.state_dict())) with an
                    nn.Parameter (pickled by _rebuild_parameter), a uint16 tensor (_rebuild_tensor_v3
                    on an untyped storage) and a tensor subclass (_rebuild_from_type_v2).
  mixed.safetensors f32/f16/bf16/f64 and i64/i16/i8/u8/bool/u32 tensors with __metadata__, by
                    safetensors.torch.save_file.
  legacy.pth        the pre-1.6 non-zip format (must be refused with a clear message).
  deflated.pth      vit_tiny.pth re-zipped with deflate compression (must be refused).
  expected.txt      for every loadable fixture, the tensors humanvit must produce: name, dtype,
                    shape and the exact bits of every value (f32 as 8 hex digits, i32 decimal),
                    in state-dict order after the 'module.' prefix is stripped.
"""
import argparse
import collections
import json
import os
import struct
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "ckpt")


def vit_model_dict():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = collections.OrderedDict()
    sd["cls_token"] = r(1, 1, 8)
    sd["pos_embed"] = r(1, 5, 8)
    sd["patch_embed.proj.weight"] = r(8, 3, 2, 2)
    sd["patch_embed.proj.bias"] = r(8)
    qkv = r(24, 8)
    sd["blocks.0.attn.qkv.weight"] = qkv
    big = r(40)
    sd["blocks.0.attn.qkv.bias"] = big[8:32]  # a view with a storage offset
    sd["blocks.0.attn.q_bias"] = big[8:16]  # shares the storage above
    sd["blocks.0.mlp.fc1.weight"] = r(8, 16).t()  # (16, 8), strides (1, 16): non-contiguous
    sd["blocks.0.mlp.fc2.weight"] = r(6, 20)[1:5, 2:18:3]  # offset + stepped slice, (4, 6)
    sd["blocks.0.norm1.weight"] = qkv[3]  # a row of another tensor's storage
    # special values survive exactly: inf, -0, a subnormal and NaN in f16/bf16
    h = r(4, 5).half()
    h[0, 0] = float("inf")
    h[0, 1] = -0.0
    h[0, 2] = 6e-8  # f16 subnormal
    h[0, 3] = float("-inf")
    h[0, 4] = float("nan")
    sd["half.weight"] = h
    b = r(3, 4).bfloat16()
    b[0, 0] = float("-inf")
    b[0, 1] = 1e-40  # bf16 subnormal
    sd["bf16.weight"] = b
    sd["double.weight"] = r(2, 3).double()
    sd["int.index"] = torch.tensor([[-2147483648, 0, 7], [2147483647, -1, 42]], dtype=torch.int32)
    sd["head.0.running_mean"] = r(8)
    sd["head.0.running_var"] = r(8).abs()
    sd["head.0.num_batches_tracked"] = torch.tensor(12345, dtype=torch.int64)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["mask_token"] = r(1, 1, 8)[:, :, ::2]  # stepped innermost axis: stride 2
    return sd


def optimizer_state(params):
    opt = torch.optim.AdamW(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    return opt.state_dict()


def save_vit():
    sd = vit_model_dict()
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    ckpt = {
        "model": sd,
        "optimizer": optimizer_state(params),
        "epoch": 3,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "args": argparse.Namespace(lr=0.1, batch_size_per_gpu=256, model="vit_small_patch14",
                                   mask_ratio=0.8, resume="", num_workers=16),
    }
    torch.save(ckpt, os.path.join(OUT, "vit_tiny.pth"))
    return sd


def save_tc():
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    inner = collections.OrderedDict()
    inner["conv1.weight"] = r(4, 3, 3, 3)
    inner["bn1.weight"] = r(4)
    inner["bn1.bias"] = r(4)
    inner["bn1.running_mean"] = r(4)
    inner["bn1.running_var"] = r(4).abs()
    inner["bn1.num_batches_tracked"] = torch.tensor(600, dtype=torch.int64)
    inner["layer1.0.conv2.weight"] = r(8, 1, 3, 3)  # grouped conv shape
    inner["fc.weight"] = r(5, 4)
    inner["fc.bias"] = r(5)
    sd = collections.OrderedDict(("module." + k, v) for k, v in inner.items())
    params = [torch.nn.Parameter(torch.randn(5, 4))]
    opt = torch.optim.Adam(params, lr=5e-4)
    params[0].grad = torch.ones(5, 4)
    opt.step()
    ckpt = {
        "acc1_list": [np.float64(0.125), np.float64(0.25), np.float64(0.375)],
        "model_state_dict": sd,
        "optimizer_state_dict": opt.state_dict(),
    }
    torch.save(ckpt, os.path.join(OUT, "tc_tiny.tar"))
    return inner


class Subclassed(torch.Tensor):
    """a tensor subclass: torch.save pickles it through torch._tensor._rebuild_from_type_v2"""


def save_plain():
    g = torch.Generator().manual_seed(3)
    sd = collections.OrderedDict()
    sd["weight"] = torch.nn.Parameter(torch.randn(3, 4, generator=g))  # _rebuild_parameter
    sd["bias"] = torch.randn(3, generator=g)
    sd["counts"] = torch.tensor([1, -5, 1 << 30], dtype=torch.int64)
    sd["u16"] = torch.tensor([[0, 65535], [7, 300]], dtype=torch.uint16)  # _rebuild_tensor_v3, untyped storage
    sd["sub"] = torch.randn(2, 2, generator=g).as_subclass(Subclassed)
    torch.save(sd, os.path.join(OUT, "plain_sd.pth"))
    return collections.OrderedDict((k, torch.Tensor(v.detach()) if k == "sub" else v.detach()) for k, v in sd.items())


def save_safetensors():
    import safetensors.torch
    g = torch.Generator().manual_seed(4)
    d = {
        "encoder.weight": torch.randn(6, 5, generator=g),
        "encoder.bias": torch.randn(6, generator=g),
        "half": torch.randn(2, 3, 4, generator=g).half(),
        "brain": torch.randn(7, generator=g).bfloat16(),
        "steps": torch.tensor([3, -4, 1000000], dtype=torch.int64),
        "scalar": torch.tensor(-1.5),
        "f64": torch.randn(3, generator=g).double(),
        "i16": torch.tensor([-32768, 5, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
        "u32": torch.tensor([0, 4000000, 2147483647], dtype=torch.uint32),
    }
    path = os.path.join(OUT, "mixed.safetensors")
    safetensors.torch.save_file(d, path, metadata={"format": "pt", "note": "humanvit fixture"})
    # the order humanvit keeps is the header's order
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n], object_pairs_hook=collections.OrderedDict)
    return collections.OrderedDict((k, d[k]) for k in hdr if k != "__metadata__")


def rezip_zip64(src, dst):
    """Rewrites a stored zip so that every central-directory size and offset lives in a zip64
    extra field (the 32-bit fields hold 0xFFFFFFFF) and the archive ends with a zip64
    end-of-central-directory record and locator: the layout of a torch.save file over 4 GiB."""
    zin = zipfile.ZipFile(src)
    out = bytearray()
    central = bytearray()
    for info in zin.infolist():
        data = zin.read(info.filename)
        name = info.filename.encode()
        ofs = len(out)
        # local header: sizes in a zip64 extra too (0xFFFFFFFF in the 32-bit fields)
        lextra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, zipfile.crc32(data) & 0xFFFFFFFF,
                           0xFFFFFFFF, 0xFFFFFFFF, len(name), len(lextra))
        out += name + lextra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), ofs)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0,
                               zipfile.crc32(data) & 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(name), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += name + cextra
    cd_ofs = len(out)
    out += central
    z64_ofs = len(out)
    n = len(zin.infolist())
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_ofs)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64_ofs, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    open(dst, "wb").write(bytes(out))
    # both Python's zipfile and torch.load must accept it
    assert zipfile.ZipFile(dst).read(zin.infolist()[0].filename) == zin.read(zin.infolist()[0].filename)
    reloaded = torch.load(dst, weights_only=False)
    assert torch.equal(reloaded["model"]["cls_token"], torch.load(src, weights_only=False)["model"]["cls_token"])


def rezip_deflated(src, dst):
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def tensor_line(name, t):
    t = t.detach().contiguous()
    if t.dtype.is_floating_point:
        v = t.float().numpy().reshape(-1).view(np.uint32)
        vals = " ".join("%08x" % x for x in v)
        kind = "f32"
    else:
        v = t.long().numpy().reshape(-1)
        assert all(-2**31 <= x < 2**31 for x in v)
        vals = " ".join(str(int(x)) for x in v)
        kind = "i32"
    shape = list(t.shape)
    return "T %s %s %d %s %d %s" % (name, kind, len(shape), " ".join(str(s) for s in shape),
                                   t.numel(), vals)


def write_expected(groups):
    lines = ["# expected tensors of tests/fixtures/ckpt, written by tests/make_ckpt_fixtures.py",
             "# F <file> <tensor count>, then per tensor:",
             "# T <name> <f32|i32> <ndim> <dims...> <numel> <values: f32 as hex bits, i32 decimal>"]
    for fname, sd in groups:
        lines.append("F %s %d" % (fname, len(sd)))
        for k, v in sd.items():
            lines.append(tensor_line(k, v))
    open(os.path.join(OUT, "expected.txt"), "w").write("\n".join(lines) + "\n")


def check_written(path):
    """The file humanvit wrote must load in the safetensors package and equal the fixture."""
    import safetensors.torch
    got = safetensors.torch.load_file(path)
    ref = torch.load(os.path.join(OUT, "vit_tiny.pth"), weights_only=False)["model"]
    assert list(got.keys()) == sorted(ref.keys()) or set(got.keys()) == set(ref.keys()), "names differ"
    for k, v in ref.items():
        g = got[k]
        want = v.float() if v.dtype.is_floating_point else v.int()
        assert g.dtype == want.dtype, (k, g.dtype, want.dtype)
        assert g.shape == want.shape, (k, g.shape, want.shape)
        assert torch.equal(g.view(-1).view(torch.int32) if g.numel() else g,
                           want.contiguous().view(-1).view(torch.int32) if want.numel() else want), k
    print("check: %s loads in safetensors %s: %d tensors, names, dtypes, shapes and bits equal"
          % (path, safetensors.__version__, len(got)))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        import safetensors  # noqa: F401
        check_written(sys.argv[2])
        return
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    vit = save_vit()
    tc = save_tc()
    plain = save_plain()
    mixed = save_safetensors()
    rezip_zip64(os.path.join(OUT, "vit_tiny.pth"), os.path.join(OUT, "vit_tiny_zip64.pth"))
    rezip_deflated(os.path.join(OUT, "vit_tiny.pth"), os.path.join(OUT, "deflated.pth"))
    torch.save({"model": collections.OrderedDict(w=torch.ones(2))}, os.path.join(OUT, "legacy.pth"),
               _use_new_zipfile_serialization=False)
    write_expected([("vit_tiny.pth", vit), ("vit_tiny_zip64.pth", vit), ("tc_tiny.tar", tc),
                    ("plain_sd.pth", plain), ("mixed.safetensors", mixed)])
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %s (%d files, %d bytes)" % (OUT, len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
