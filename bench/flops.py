"""Recount the forward GFLOPs table behind the dry run's GPU-hour estimate (raygrid/costs.py).

    python bench/flops.py

Counts with torch.utils.flop_counter.FlopCounterMode on randomly initialised networks at the
reference resolution of each entry, and prints them next to the values in raygrid.costs (ratio
column: measured / table; 1.00 means the table is current).
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from raygrid.costs import FORWARD_GFLOPS


def forward_gflops(model: torch.nn.Module, size: int) -> float:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def main() -> None:
    warnings.filterwarnings("ignore")
    from raygrid.nets.backbones import create_backbone
    from raygrid.nets.discriminators import ConvTrunk
    from raygrid.nets.generator import create_swinir

    nets = {
        "swinir_m": (lambda: create_swinir("m"), 64),
        "swinir_tiny": (lambda: create_swinir("tiny"), 32),
        "conv": (ConvTrunk, 224),
    }
    for name in ("vgg16", "vgg16_r", "resnet50", "convnext_tiny", "swin_tiny", "dinov2_vits14", "clip_vit_b16"):
        nets[name] = (lambda n=name: create_backbone(n, "random"), 224)
    print(f"{'network':<16}{'input':>8}{'GFLOPs':>10}{'table':>10}{'ratio':>8}")
    for name, (build, size) in nets.items():
        measured = forward_gflops(build(), size)
        table = FORWARD_GFLOPS[name][0]
        print(f"{name:<16}{size:>8}{measured:>10.3f}{table:>10.3f}{measured / table:>8.2f}")


if __name__ == "__main__":
    main()
