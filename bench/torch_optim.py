"""torch_optim.py - PyTorch's AdamW update on the shapes bench/optim_update.c writes (one line per
tensor), single-tensor (foreach=False), foreach and fused where this build has them on the CPU.
usage: python3 bench/torch_optim.py SHAPES THREADS REPS. Same protocol as the C side: medians,
thread CPU time with 1 thread, wall time otherwise."""
import sys, time
import torch

shapes_file, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
clock = time.thread_time if threads == 1 else time.perf_counter
shapes = [tuple(int(x) for x in line.split()) for line in open(shapes_file) if line.strip()]
total = sum(torch.Size(s).numel() for s in shapes)
torch.manual_seed(0)
for label, kw in [("torch AdamW (foreach=False)", dict(foreach=False)), ("torch AdamW (foreach=True)", dict(foreach=True)),
                  ("torch AdamW (fused=True)", dict(fused=True))]:
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape)
    try:
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, **kw)
        opt.step()  # warm-up, creates the state
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"  {label:34s} unavailable: {e}")
        continue
    ts = []
    for _ in range(reps):
        t0 = clock()
        opt.step()
        ts.append((clock() - t0) * 1e3)
    ts.sort()
    med = ts[len(ts) // 2]
    print(f"  {label:34s} {med:8.2f} ms  {28.0 * total / (med * 1e6):6.2f} GB/s")
