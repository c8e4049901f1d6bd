#!/usr/bin/env python3
"""make_train_fixtures.py - PyTorch references for humanvit's training toolkit (tests/test_train.c).

    python3 tests/make_train_fixtures.py     # rewrites tests/fixtures/train/*.hvfx, deterministically

Writes .hvfx files (the format of tests/make_fixtures.py and tests/fixture.h; the writer is
imported from make_fixtures.py) into tests/fixtures/train/, plus a MANIFEST there that the C test
checks against the cases it runs. Needs torch and numpy; the C suite needs neither.

CASES
    optimizers (5 steps each over a tiny ViT-like parameter set with timm names, depth 2):
        torch.optim.AdamW, Adam, SGD (momentum, dampening, Nesterov) and the official MAE LARS
        (util/lars.py, rewritten here from its definition), with the FMAE param_groups_lrd groups
        (no decay on 1-D parameters and tokens, layer-wise lr decay), timm add_weight_decay's groups,
        a learning rate that changes every step, and two gradients set to None (head.weight at
        step 0: its state starts a step late; norm.bias at step 2: skipped, no step counted).
        Arrays: cfg.*; "p.<name>" the initial parameters, in list order; "g<k>.<name>" the
        gradient of step k (absent = None); "w<k>.<name>" the parameter after step k; "s0.<name>"
        and "s1.<name>" the final optimizer state (exp_avg, exp_avg_sq; momentum_buffer; mu);
        "lr_scale" and "wd" per parameter (in list order); "torch32_err".
    schedules: FMAE util/lr_sched.py's warm-up + half-cycle cosine, a constant lr with warm-up, and
        torch MultiStepLR (milestones 25, 45, gamma 0.2) stepped per epoch. "t", "lr".
    clipping: torch.nn.utils.clip_grad_norm_ (2-norm) with and without clipping: "g.<name>",
        "clipped.<name>", "total_norm".

PRECISION: as make_fixtures.py: inputs are float32 values, the reference runs in float64 from them
and is rounded once to float32. Hyper-parameters are rounded to float32 first (the C side takes
floats), so both sides use the same numbers. torch32_err records how far PyTorch's own float32 run
lands from the reference in the C test's metric (max |a - ref| / max |ref| per tensor, the worst
over the trajectory and the states).
"""
import math
import os
import sys
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import encode  # noqa: E402  (the one .hvfx writer)

OUT_DIR = os.path.join(HERE, "fixtures", "train")
STEPS = 5
DEPTH = 2

# a tiny ViT-like parameter list in registration order (timm / MAE names)
PARAMS = [
    ("cls_token", (1, 1, 8)),
    ("pos_embed", (1, 5, 8)),
    ("patch_embed.proj.weight", (8, 3, 2, 2)),
    ("patch_embed.proj.bias", (8,)),
    ("blocks.0.norm1.weight", (8,)),
    ("blocks.0.attn.qkv.weight", (24, 8)),
    ("blocks.0.attn.qkv.bias", (24,)),
    ("blocks.1.mlp.fc1.weight", (16, 8)),
    ("blocks.1.mlp.fc1.bias", (16,)),
    ("norm.weight", (8,)),
    ("norm.bias", (8,)),
    ("mask_token", (1, 1, 8)),
    ("head.weight", (4, 8)),
    ("head.bias", (4,)),
]
GRAD_NONE = {("head.weight", 0), ("norm.bias", 2)}

# the C enums
ADAMW, ADAM, SGD, LARS_T = 0, 1, 2, 3
DECAY_ALL, DECAY_SKIP_1D_AND_TOKENS, DECAY_SKIP_1D = 0, 1, 2


def f32(x):
    return float(np.float32(x))


def rel_err(a, ref):
    a = a.detach().double()
    ref = ref.detach().double()
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1e-6)
    return (a - ref).abs().max().item() / scale if ref.numel() else 0.0


def np32(t):
    return t.detach().to(torch.float32).contiguous().numpy()


def write(name, arrays):
    data = encode(arrays)
    with open(os.path.join(OUT_DIR, name + ".hvfx"), "wb") as f:
        f.write(data)
    return len(data)


# ---- upstream rules, rewritten from their definitions --------------------------------------------


def get_layer_id_for_vit(name, num_layers):
    """FMAE util/lr_decay.py"""
    if name in ["cls_token", "pos_embed"]:
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(named, weight_decay, no_weight_decay_list, layer_decay, depth):
    """FMAE util/lr_decay.py param_groups_lrd: one group per (layer, decay or not)"""
    num_layers = depth + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups, per_param = {}, {}
    for n, p in named:
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay
        layer_id = get_layer_id_for_vit(n, num_layers)
        key = "layer_%d_%s" % (layer_id, g_decay)
        if key not in groups:
            groups[key] = {"lr_scale": layer_scales[layer_id], "weight_decay": this_decay, "params": []}
        groups[key]["params"].append(p)
        per_param[n] = (layer_scales[layer_id], this_decay)
    return list(groups.values()), per_param


def add_weight_decay(named, weight_decay, skip_list=()):
    """timm 0.3.2 optim_factory.add_weight_decay"""
    decay, no_decay, per_param = [], [], {}
    for n, p in named:
        if len(p.shape) == 1 or n.endswith(".bias") or n in skip_list:
            no_decay.append(p)
            per_param[n] = (1.0, 0.0)
        else:
            decay.append(p)
            per_param[n] = (1.0, weight_decay)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}], per_param


class LARS(torch.optim.Optimizer):
    """FMAE util/lars.py: SGD with momentum and a trust ratio for parameters with ndim > 1"""

    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, trust_coefficient=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # not a normalisation gain or a bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0, torch.where(update_norm > 0, (g["trust_coefficient"] * param_norm / update_norm), one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


# ---- optimizer cases ------------------------------------------------------------------------------


def optim_case(name, cfg, make):
    """cfg: the C descriptor's fields (floats rounded to f32). make(named) -> (optimizer, per_param)
    where per_param maps name -> (lr_scale, weight decay)."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    p0 = {n: (torch.randn(s, generator=g) * 0.5).float() for n, s in PARAMS}
    grads = [{n: (torch.randn(s, generator=g) * 0.1).float() for n, s in PARAMS if (n, k) not in GRAD_NONE} for k in range(STEPS)]
    lrs = [f32(v) for v in cfg["lr"]]

    def run(dtype):
        params = [(n, p0[n].to(dtype).clone().requires_grad_(True)) for n, _ in PARAMS]
        opt, per_param = make(params)
        traj = []
        for k in range(STEPS):
            for group in opt.param_groups:  # as FMAE lr_sched: lr * lr_scale per group
                group["lr"] = lrs[k] * group.get("lr_scale", 1.0)
            for n, p in params:
                p.grad = grads[k][n].to(dtype).clone() if n in grads[k] else None
            opt.step()
            traj.append({n: p.detach().clone() for n, p in params})
        states = {}
        for n, p in params:
            st = opt.state.get(p, {})
            for slot, key in enumerate(cfg["state_keys"]):
                if key in st and st[key] is not None:
                    states["s%d.%s" % (slot, n)] = st[key].detach().clone()
        return traj, states, per_param

    traj64, states64, per_param = run(torch.float64)
    traj32, states32, _ = run(torch.float32)
    err = 0.0
    for k in range(STEPS):
        for n, _ in PARAMS:
            err = max(err, rel_err(traj32[k][n], traj64[k][n]))
    for key in states64:
        err = max(err, rel_err(states32[key], states64[key]))

    arrays = []
    for key in ("type", "beta1", "beta2", "eps", "weight_decay", "momentum", "dampening", "nesterov", "trust_coefficient",
                "decay_rule", "layer_decay", "num_layers"):
        v = cfg.get(key, 0)
        arrays.append(("cfg." + key, np.array(v, dtype=np.int32 if isinstance(v, (bool, int)) else np.float32).reshape(())))
    arrays.append(("cfg.lr", np.array(lrs, dtype=np.float32)))
    for n, _ in PARAMS:
        arrays.append(("p." + n, p0[n].numpy()))
    for k in range(STEPS):
        for n, _ in PARAMS:
            if n in grads[k]:
                arrays.append(("g%d.%s" % (k, n), grads[k][n].numpy()))
    for k in range(STEPS):
        for n, _ in PARAMS:
            arrays.append(("w%d.%s" % (k, n), np32(traj64[k][n])))
    for key, v in states64.items():
        arrays.append((key, np32(v)))
    arrays.append(("lr_scale", np.array([per_param[n][0] for n, _ in PARAMS], dtype=np.float32)))
    arrays.append(("wd", np.array([per_param[n][1] for n, _ in PARAMS], dtype=np.float32)))
    arrays.append(("torch32_err", np.array([err], dtype=np.float32)))
    return write(name, arrays), err


def single_group(named, wd):
    return [{"params": [p for _, p in named], "weight_decay": wd}], {n: (1.0, wd) for n, _ in named}


ADAM_KEYS = ("exp_avg", "exp_avg_sq")
SGD_KEYS = ("momentum_buffer",)


def optim_cases():
    lr_steps = [1e-2, 8e-3, 6e-3, 4e-3, 2e-3]  # a schedule's values, one per step

    c = dict(type=ADAMW, lr=[1e-2] * STEPS, beta1=f32(0.9), beta2=f32(0.95), eps=f32(1e-8), weight_decay=f32(0.05),
             state_keys=ADAM_KEYS)
    yield "adamw", c, lambda named, c=c: (lambda gr: (torch.optim.AdamW(gr[0], lr=1.0, betas=(c["beta1"], c["beta2"]), eps=c["eps"]), gr[1]))(
        single_group(named, c["weight_decay"]))

    # FMAE finetuning groups: no decay on 1-D and tokens, layer decay 0.75 (num_layers 0: inferred)
    c = dict(type=ADAMW, lr=lr_steps, beta1=f32(0.9), beta2=f32(0.95), eps=f32(1e-8), weight_decay=f32(0.05),
             decay_rule=DECAY_SKIP_1D_AND_TOKENS, layer_decay=f32(0.75), num_layers=0, state_keys=ADAM_KEYS)
    yield "adamw_lrd", c, lambda named, c=c: (lambda gr: (torch.optim.AdamW(gr[0], lr=1.0, betas=(c["beta1"], c["beta2"]), eps=c["eps"]), gr[1]))(
        param_groups_lrd(named, c["weight_decay"], {"pos_embed", "cls_token", "mask_token", "dist_token"}, c["layer_decay"], DEPTH))

    # FMAE pretraining groups: timm add_weight_decay with an empty skip list
    c = dict(type=ADAMW, lr=[1e-2] * STEPS, beta1=f32(0.9), beta2=f32(0.999), eps=f32(1e-8), weight_decay=f32(0.05),
             decay_rule=DECAY_SKIP_1D, state_keys=ADAM_KEYS)
    yield "adamw_skip1d", c, lambda named, c=c: (lambda gr: (torch.optim.AdamW(gr[0], lr=1.0, betas=(c["beta1"], c["beta2"]), eps=c["eps"]), gr[1]))(
        add_weight_decay(named, c["weight_decay"]))

    c = dict(type=ADAM, lr=lr_steps, beta1=f32(0.9), beta2=f32(0.999), eps=f32(1e-8), weight_decay=f32(0.01), state_keys=ADAM_KEYS)
    yield "adam_wd", c, lambda named, c=c: (lambda gr: (torch.optim.Adam(gr[0], lr=1.0, betas=(c["beta1"], c["beta2"]), eps=c["eps"]), gr[1]))(
        single_group(named, c["weight_decay"]))

    c = dict(type=SGD, lr=[0.1] * STEPS, momentum=f32(0.9), nesterov=1, weight_decay=f32(1e-3), state_keys=SGD_KEYS)
    yield "sgd_nesterov", c, lambda named, c=c: (lambda gr: (torch.optim.SGD(gr[0], lr=1.0, momentum=c["momentum"], nesterov=True), gr[1]))(
        single_group(named, c["weight_decay"]))

    c = dict(type=SGD, lr=lr_steps, momentum=f32(0.9), dampening=f32(0.1), weight_decay=f32(1e-3), state_keys=SGD_KEYS)
    yield "sgd_momentum_dampening", c, lambda named, c=c: (
        lambda gr: (torch.optim.SGD(gr[0], lr=1.0, momentum=c["momentum"], dampening=c["dampening"]), gr[1]))(
        single_group(named, c["weight_decay"]))

    c = dict(type=SGD, lr=[0.1] * STEPS, state_keys=())
    yield "sgd_plain", c, lambda named, c=c: (lambda gr: (torch.optim.SGD(gr[0], lr=1.0), gr[1]))(single_group(named, 0.0))

    c = dict(type=LARS_T, lr=[1.0] * STEPS, momentum=f32(0.9), weight_decay=f32(0.05), trust_coefficient=f32(1e-3), state_keys=("mu",))
    yield "lars", c, lambda named, c=c: (
        lambda gr: (LARS(gr[0], lr=1.0, momentum=c["momentum"], trust_coefficient=c["trust_coefficient"]), gr[1]))(
        single_group(named, c["weight_decay"]))


# ---- schedules ------------------------------------------------------------------------------------


def lr_sched(epoch, lr, min_lr, warmup, epochs):
    """FMAE util/lr_sched.py adjust_learning_rate"""
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def schedule_cases():
    lr, min_lr = f32(1.5e-4), f32(1e-6)
    ts = [0, 0.125, 1, 10.5, 39.875, 40, 40.125, 100, 420, 799.875]
    yield "sched_cosine", [("cfg.type", np.array(1, np.int32)), ("cfg.lr", np.array(lr, np.float32)),
                           ("cfg.min_lr", np.array(min_lr, np.float32)), ("cfg.warmup", np.array(40, np.float32)),
                           ("cfg.total", np.array(800, np.float32)), ("t", np.array(ts, np.float32)),
                           ("lr", np.array([lr_sched(t, lr, min_lr, 40, 800) for t in ts], np.float32))]
    lr = f32(3e-4)
    ts = [0, 0.5, 2.25, 4.999, 5, 6, 1000]
    ts = [f32(t) for t in ts]
    yield "sched_constant_warmup", [("cfg.type", np.array(0, np.int32)), ("cfg.lr", np.array(lr, np.float32)),
                                    ("cfg.warmup", np.array(5, np.float32)), ("t", np.array(ts, np.float32)),
                                    ("lr", np.array([lr * t / 5 if t < 5 else lr for t in ts], np.float32))]
    # torch MultiStepLR stepped once per epoch: the lr used during epoch e
    lr, gamma = f32(1e-3), f32(0.2)
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sch = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[25, 45], gamma=gamma)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    yield "sched_step", [("cfg.type", np.array(2, np.int32)), ("cfg.lr", np.array(lr, np.float32)),
                         ("cfg.gamma", np.array(gamma, np.float32)), ("cfg.milestones", np.array([25, 45], np.float32)),
                         ("t", np.arange(50, dtype=np.float32)), ("lr", np.array(lrs, np.float32))]


# ---- clipping -------------------------------------------------------------------------------------


def clip_cases():
    for name, max_norm, std in (("clip_grad_norm", 1.0, 0.5), ("clip_grad_norm_noclip", 100.0, 0.5)):
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        grads = {n: (torch.randn(s, generator=g) * std).float() for n, s in PARAMS}
        ps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for _, s in PARAMS]
        for (n, _), p in zip(PARAMS, ps):
            p.grad = grads[n].double().clone()
        total = torch.nn.utils.clip_grad_norm_(ps, f32(max_norm))
        arrays = [("cfg.max_norm", np.array(f32(max_norm), np.float32)), ("total_norm", np.array(total.item(), np.float32))]
        for n, _ in PARAMS:
            arrays.append(("g." + n, grads[n].numpy()))
        for (n, _), p in zip(PARAMS, ps):
            arrays.append(("clipped." + n, np32(p.grad)))
        yield name, arrays


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for f in os.listdir(OUT_DIR):
        if f.endswith(".hvfx"):
            os.remove(os.path.join(OUT_DIR, f))
    names, total = [], 0
    print(f"{'case':26s} {'bytes':>7s}  torch-f32 err")
    for name, cfg, make in optim_cases():
        size, err = optim_case(name, cfg, make)
        names.append(name)
        total += size
        print(f"{name:26s} {size:7d}  {err:.2e}")
    for gen in (schedule_cases, clip_cases):
        for name, arrays in gen():
            size = write(name, arrays)
            names.append(name)
            total += size
            print(f"{name:26s} {size:7d}")
    with open(os.path.join(OUT_DIR, "MANIFEST"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"{len(names)} fixtures, {total} bytes in {os.path.relpath(OUT_DIR)}")


if __name__ == "__main__":
    main()
