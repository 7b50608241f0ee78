"""Recount the forward GFLOPs tables behind the dry run's GPU-hour estimate.

    python bench/flops.py            # every generator preset, backbone and the conv trunk
    python bench/flops.py --only generators

Counts with torch.utils.flop_counter.FlopCounterMode on randomly initialised networks at the
reference resolution of each entry, and prints them next to the tables (generators:
raygrid.spec.generators; backbones: raygrid.costs). ratio = measured / table; 1.00 means the
table is current. For generators a second count at half the LR side checks that FLOPs scale
with the pixel count ("x4 px" = count(ref) / count(ref/2), 4.00 when linear), which is what the
cost model assumes for other crop and validation sizes.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops(model: torch.nn.Module, size: int) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def generators() -> None:
    from raygrid.nets.generators import create_generator
    from raygrid.spec.generators import GENERATORS

    print(f"{'generator':<16}{'LR px':>8}{'GFLOPs':>10}{'table':>10}{'ratio':>8}{'x4 px':>8}{'s':>7}")
    for arch, spec in GENERATORS.items():
        for name, p in spec.presets.items():
            start = time.perf_counter()
            model = create_generator(arch, name)
            measured = forward_gflops(model, p.flops_lr_size)
            half = forward_gflops(model, p.flops_lr_size // 2)
            secs = time.perf_counter() - start
            print(f"{arch + '_' + name:<16}{p.flops_lr_size:>8}{measured:>10.3f}{p.gflops:>10.3f}"
                  f"{measured / p.gflops:>8.2f}{measured / half:>8.2f}{secs:>7.1f}")


def backbones() -> None:
    from raygrid.costs import FORWARD_GFLOPS
    from raygrid.nets.backbones import create_backbone
    from raygrid.nets.discriminators import ConvTrunk
    from raygrid.spec.backbones import BACKBONES

    nets = {"conv": (ConvTrunk, 224)}
    for name in BACKBONES:  # every record: a new backbone's `gflops` is checked here too
        nets[name] = (lambda n=name: create_backbone(n, "random"), 224)
    print(f"{'network':<16}{'input':>8}{'GFLOPs':>10}{'table':>10}{'ratio':>8}")
    for name, (build, size) in nets.items():
        measured = forward_gflops(build(), size)
        table = FORWARD_GFLOPS[name][0]
        print(f"{name:<16}{size:>8}{measured:>10.3f}{table:>10.3f}{measured / table:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["generators", "backbones"], help="recount one table")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.only in (None, "generators"):
        generators()
    if args.only in (None, "backbones"):
        backbones()


if __name__ == "__main__":
    main()
