"""torch_kernels.py - the PyTorch side of bench/bench_kernels.c: the same kernels at the same
shapes on the same CPU with the same thread count. Prints one line per kernel, "name median_ms",
which bench_kernels reads (run it alone to see the numbers).

    python3 bench/torch_kernels.py [--threads N] [--reps N] [--cpu] [filter]

Each row times what PyTorch runs for the op (forward, or backward via autograd.grad with the
forward outside the timed region), median over --reps runs after one warm-up.
"""
import argparse
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps, clock=time.perf_counter):
    fn()
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append((clock() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def grad_fn(out, inputs, gout):
    """a function running only the backward of out w.r.t. inputs"""
    return lambda: torch.autograd.grad(out, inputs, gout, retain_graph=True)


def attention(B, N, H, d):
    qkv = torch.randn(B, N, 3, H, d).permute(2, 0, 3, 1, 4)  # q, k, v (B, H, N, d) strided, as the model
    q, k, v = (t.detach().requires_grad_() for t in qkv)
    fwd = lambda: F.scaled_dot_product_attention(q, k, v)
    o = fwd()
    return fwd, grad_fn(o, (q, k, v), torch.randn_like(o))


def conv(N, cin, H, W, cout, k, s, p, g):
    x = torch.randn(N, cin, H, W, requires_grad=True)
    w = (torch.randn(cout, cin // g, k, k) * 0.05).requires_grad_()
    b = (torch.randn(cout) * 0.1).requires_grad_()
    fwd = lambda: F.conv2d(x, w, b, stride=s, padding=p, groups=g)
    y = fwd()
    gy = torch.randn_like(y)
    # the data and the weight gradients are separate rows, as in bench_kernels
    return fwd, grad_fn(y, (x,), gy), grad_fn(y, (w, b), gy)


def row_kernels(r):
    R, D, Fh = 2056, 384, 1536

    def ln():
        x = torch.randn(R, D, requires_grad=True)
        w = torch.randn(D, requires_grad=True)
        b = torch.randn(D, requires_grad=True)
        f = lambda: F.layer_norm(x, (D,), w, b, 1e-6)
        y = f()
        return f, grad_fn(y, (x, w, b), torch.randn_like(y))

    def gelu():
        x = torch.randn(R, Fh, requires_grad=True)
        f = lambda: F.gelu(x)
        y = f()
        return f, grad_fn(y, (x,), torch.randn_like(y))

    def bias():
        x = torch.randn(R, Fh)
        b = torch.randn(Fh)
        g = torch.randn(R, Fh)
        return (lambda: x + b), (lambda: g.sum(0))

    def softmax():
        x = torch.randn(12336, 257, requires_grad=True)
        f = lambda: torch.softmax(x, -1)
        y = f()
        return f, grad_fn(y, (x,), torch.randn_like(y))

    def xent():
        x = torch.randn(256, 1000, requires_grad=True)
        lab = torch.arange(256) * 7 % 1000
        f = lambda: F.cross_entropy(x, lab)
        y = f()
        return f, grad_fn(y, (x,), torch.ones_like(y))

    def mse():
        a = torch.randn(1568, 768, requires_grad=True)
        b = torch.randn(1568, 768)
        f = lambda: F.mse_loss(a, b)
        y = f()
        return f, grad_fn(y, (a,), torch.ones_like(y))

    for name, make in (("layernorm", ln), ("gelu", gelu), ("softmax", softmax), ("xent", xent), ("mse", mse)):
        r[name + "_fwd"] = (lambda m: lambda: m()[0])(make)
        r[name + "_bwd"] = (lambda m: lambda: m()[1])(make)
    r["bias_add"] = lambda: bias()[0]
    r["bias_grad"] = lambda: bias()[1]


def nchw_kernels(r):
    """pooling, bilinear resize and training-mode batch norm at ResNeXt shapes"""

    def maxpool():
        x = torch.randn(8, 64, 112, 112, requires_grad=True)
        f = lambda: F.max_pool2d(x, 3, 2, 1)
        y = f()
        return f, grad_fn(y, (x,), torch.randn_like(y))

    def avgpool():
        x = torch.randn(8, 256, 56, 56, requires_grad=True)
        f = lambda: F.avg_pool2d(x, 3, 1, 1)
        y = f()
        return f, grad_fn(y, (x,), torch.randn_like(y))

    def resize():
        x = torch.randn(8, 64, 56, 56, requires_grad=True)
        f = lambda: F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
        y = f()
        return f, grad_fn(y, (x,), torch.randn_like(y))

    def bn():
        x = torch.randn(8, 64, 112, 112, requires_grad=True)
        w = torch.randn(64, requires_grad=True)
        b = torch.randn(64, requires_grad=True)
        rm, rv = torch.zeros(64), torch.ones(64)
        f = lambda: F.batch_norm(x, rm, rv, w, b, training=True, eps=1e-5)
        y = f()
        return f, grad_fn(y, (x, w, b), torch.randn_like(y))

    for name, make in (("maxpool", maxpool), ("avgpool", avgpool), ("resize", resize), ("batchnorm", bn)):
        r[name + "_fwd"] = (lambda m: lambda: m()[0])(make)
        r[name + "_bwd"] = (lambda m: lambda: m()[1])(make)


def rows():
    """(name, factory returning {'fwd': fn} / {'bwd': fn}) in bench_kernels' names"""
    r = {}

    def att(tag, *shape):
        def make():
            f, b = attention(*shape)
            return f, b
        r["attn_fwd_" + tag] = lambda: make()[0]
        r["attn_bwd_" + tag] = lambda: make()[1]

    att("vits", 8, 257, 6, 64)
    att("vith476", 1, 1157, 16, 80)
    row_kernels(r)
    nchw_kernels(r)

    def cv(tag, *shape):
        for i, kind in enumerate(("fwd", "bwdx", "bwdw")):
            r["conv_%s_%s" % (kind, tag)] = (lambda i: lambda: conv(*shape)[i])(i)

    cv("patch16", 8, 3, 224, 224, 384, 16, 16, 0, 1)
    cv("1x1", 8, 256, 56, 56, 128, 1, 1, 0, 1)
    cv("3x3g32", 8, 128, 56, 56, 128, 3, 1, 1, 32)
    cv("3x3g32c8", 8, 256, 28, 28, 256, 3, 1, 1, 32)
    cv("3x3g32s2", 8, 256, 56, 56, 256, 3, 2, 1, 32)
    cv("7x7s2", 8, 3, 224, 224, 64, 7, 2, 3, 1)
    cv("3x3dws2", 8, 256, 56, 56, 256, 3, 2, 1, 256)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--cpu", action="store_true", help="the calling thread's CPU time instead of the wall clock (use with --threads 1)")
    ap.add_argument("filter", nargs="?", default="")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name, make in rows().items():
        if a.filter and a.filter not in name:
            continue
        fn = make()
        clock = time.thread_time if a.cpu else time.perf_counter
        print(f"{name} {median_ms(fn, a.reps, clock):.4f}", flush=True)


if __name__ == "__main__":
    main()
