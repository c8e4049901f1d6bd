#!/usr/bin/env python3
"""Model-step benchmarks, humanvit against PyTorch on the same machine, in the same run.

Each step kind runs in its own process (both libraries), so each peak resident memory is that
step's own. PyTorch runs the same models (tests/make_model_fixtures.py: the upstream module code)
in eager mode with the same thread count and batch, and, with --compile, under torch.compile too.

usage: python3 bench/models.py [--threads T] [--iters N] [--json FILE] [--steps a,b] [--compile]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = ["vits14_infer", "vitb14_infer", "vits14_train", "mae_vits14"]


def torch_step(step, threads, iters, batch, compile_):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from make_model_fixtures import MAE, ViT

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224)
    if step in ("vits14_infer", "vitb14_infer"):
        dim, heads = (384, 6) if step.startswith("vits") else (768, 12)
        model = ViT(224, 14, 3, dim, 12, heads, 0).eval()
        fn = lambda: model(images)  # noqa: E731
        if compile_:
            model = torch.compile(model)
        ctx = torch.no_grad()
    elif step == "vits14_train":
        model = ViT(224, 14, 3, 384, 12, 6, 1000).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        labels = torch.randint(0, 1000, (batch,))
        fwd = torch.compile(model) if compile_ else model

        def fn():
            loss = torch.nn.functional.cross_entropy(fwd(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        ctx = torch.enable_grad()
    else:
        model = MAE(224, 14, 3, 384, 12, 6, 512, 8, 16)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95))
        fwd = torch.compile(model) if compile_ else model

        def fn():
            noise = torch.rand(batch, 256)
            loss = fwd(images, 0.8, noise)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()

        ctx = torch.enable_grad()
    if compile_ and step.endswith("infer"):
        fn = lambda: model(images)  # noqa: E731
    times = []
    with ctx:
        for i in range(iters + 2):
            t0 = time.perf_counter()
            fn()
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    return {"ms": ms, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb():
    """This process's own peak resident memory (VmHWM), as bench/peak_rss.h reads it for the C
    side: ru_maxrss would include the parent's size, which Linux carries across execve."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", help="append one JSON object per line to FILE")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--torch-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_child:
        step, comp = a.torch_child.split(":")
        print(json.dumps(torch_step(step, a.threads, a.iters, a.batch, comp == "1")))
        return
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch not installed: humanvit only (pip install torch to compare)")
    rows = []
    for step in a.steps.split(","):
        out = subprocess.run([os.path.join(ROOT, "build", "bench", "models"), "--step", step, "--threads", str(a.threads), "--iters",
                              str(a.iters), "--batch", str(a.batch)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{step}: bench_models failed: {out.stderr.strip()}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        for comp in ([0, 1] if a.compile else [0]) if have_torch else []:
            t = subprocess.run([sys.executable, __file__, "--torch-child", f"{step}:{comp}", "--threads", str(a.threads), "--iters",
                                str(a.iters), "--batch", str(a.batch)], capture_output=True, text=True)
            if t.returncode != 0:
                print(f"{step}: torch{' compile' if comp else ''} failed: {t.stderr.strip().splitlines()[-1:]}")
                continue
            tr = json.loads(t.stdout.strip().splitlines()[-1])
            key = "torch_compile" if comp else "torch"
            row[key + "_ms"] = round(tr["ms"], 3)
            row[key + "_peak_rss_mb"] = round(tr["peak_rss_mb"], 1)
            if not comp:
                row["speedup"] = round(tr["ms"] / row["ms"], 3)
                row["memory_ratio"] = round(row["peak_rss_mb"] / tr["peak_rss_mb"], 3)
        rows.append(row)
        print(f"{step:14s} {row['shape']:18s} threads {row['threads']}  {row['ms']:9.1f} ms  {row['images_per_s']:7.2f} img/s  "
              f"peak {row['peak_rss_mb']:7.1f} MiB" + (f"  | torch {row['torch_ms']:9.1f} ms  peak {row['torch_peak_rss_mb']:7.1f} MiB"
                                                      f"  speedup {row['speedup']:.2f}x  memory {row['memory_ratio']:.2f}x"
                                                      if "torch_ms" in row else ""), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
