"""Benchmark the feature backbones: parameters, stage channels, forward time on this machine.

    python bench/backbones.py [--runs 7] [--sizes 96 256] [--threads N] [--backbones vgg16 resnet50 ...]

Random weights, batch 1, torch.inference_mode, median of --runs timed forwards after one warm-up;
the runs of all backbones are interleaved (see time_interleaved).
The ratio columns divide by vgg16's time measured in the same process (the in-process baseline),
so they compare across machines better than the absolute times do.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raygrid.spec.backbones import BACKBONES
from raygrid.nets.backbones import create_backbone

BASELINE = "vgg16"


def time_interleaved(nets: dict[str, torch.nn.Module], size: int, runs: int) -> dict[str, float]:
    """Median forward time per net; runs are interleaved (round-robin over nets) so that load
    from other processes on a shared machine hits every backbone alike instead of one of them."""
    x = torch.rand(1, 3, size, size)
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for net in nets.values():
            net(x)  # warm-up: allocator, oneDNN primitive caches
        for _ in range(runs):
            for name, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 256])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [BASELINE] + [n for n in args.backbones if n != BASELINE]

    nets, info = {}, {}
    for name in names:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        nets[name] = create_backbone(name).eval()
        info[name] = (sum(p.numel() for p in nets[name].parameters()), nets[name].channels,
                      time.perf_counter() - t0)
    per_size = [time_interleaved(nets, s, args.runs) for s in args.sizes]
    rows = [(name, *info[name], [t[name] for t in per_size]) for name in names]

    base = rows[0][4]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.runs} runs, "
          f"interleaved, random weights; ratio = time / {BASELINE} time (same process)\n")
    heads = [f"{s}px ms" for s in args.sizes] + [f"{s}px ratio" for s in args.sizes]
    print("| backbone | label | params (M) | stage channels | build s | " + " | ".join(heads) + " |")
    print("|---|---|---|---|---|" + "---|" * len(heads))
    for name, params, chans, build, times in rows:
        label = BACKBONES[name].label if name in BACKBONES else name
        ms = [f"{t * 1e3:.1f}" for t in times]
        ratio = [f"{t / b:.2f}" for t, b in zip(times, base)]
        print(f"| {name} | {label} | {params / 1e6:.1f} | {','.join(map(str, chans))} | {build:.2f} | "
              + " | ".join(ms + ratio) + " |")


if __name__ == "__main__":
    main()
