#!/usr/bin/env python3
"""torch_compare.py - PyTorch's side of bench/bench.c: the same GEMM cases with torch.matmul, on
the same machine, thread counts and statistic (median of N runs after one warm-up).

    build/bench/bench --list > cases.jsonl
    python3 bench/torch_compare.py cases.jsonl torch.jsonl [--threads 1,2] [--runs N] [--quick]
    build/bench/bench --torch torch.jsonl ...

The cases come from bench.c (--list), so the two sides cannot drift apart. A transposed operand is
a transposed view (.mT), which torch hands to BLAS as a transpose flag, as humanvit packs it; the
output is preallocated (out=), so no allocation is timed. Arguments bench.c takes that this
script does not (--json FILE) are ignored, so ./build.sh bench can pass the same ones to both.
One JSON line per case and thread count: {"bench", "threads", "torch_ms", "torch_gflops", ...};
with one thread also "torch_cpu_ms", the median CPU time of this thread (BLAS runs in it), which
other processes on a shared machine disturb less than the wall clock. Cases with "bf16": 1 run
torch.matmul on bfloat16 tensors (output bfloat16 too: oneDNN's bf16 GEMM), for bench.c's bf16 rows.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch


def time_case(c, runs):
    m, n, k, batch = c["m"], c["n"], c["k"], c["batch"]
    lead = (batch,) if batch > 1 else ()
    dtype = torch.bfloat16 if c.get("bf16") else torch.float32
    a = (torch.rand(lead + ((k, m) if c["ta"] else (m, k))) - 0.5).to(dtype)
    b = (torch.rand(lead + ((n, k) if c["tb"] else (k, n))) - 0.5).to(dtype)
    a = a.mT if c["ta"] else a
    b = b.mT if c["tb"] else b
    out = torch.empty(lead + (m, n), dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return statistics.median(times) * 1e3, statistics.median(cpu) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", help="JSON lines from `bench --list`")
    ap.add_argument("out", help="JSON lines to write")
    ap.add_argument("--threads", default=None, help="comma-separated (default: 1 and all cores)")
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args, _ignored = ap.parse_known_args()

    with open(args.cases) as f:
        cases = [json.loads(line) for line in f if line.strip()]
    ncpu = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else ([1, ncpu] if ncpu > 1 else [1])
    runs = args.runs if args.runs > 0 else (3 if args.quick else 11)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, BLAS: {'MKL' if torch.backends.mkl.is_available() else 'other'}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)
    with torch.no_grad(), open(args.out, "w") as out:
        for t in threads:
            torch.set_num_threads(t)
            for c in cases:
                if args.quick and not c.get("quick"):
                    continue
                flops = 2.0 * c["m"] * c["n"] * c["k"] * c["batch"]
                r = min(runs, 5) if flops > 1e11 else runs  # as bench.c
                ms, cpu_ms = time_case(c, r)
                row = {"bench": c["bench"], "threads": t, "torch_ms": round(ms, 4),
                       "torch_gflops": round(flops / (ms * 1e-3) * 1e-9, 2), "torch": torch.__version__}
                if t == 1:  # one thread: BLAS runs in this thread, so its CPU time is the GEMM's
                    row["torch_cpu_ms"] = round(cpu_ms, 4)
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"  torch {c['bench']:<20} threads {t}: {ms:9.3f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
