"""GPU-hour estimates for the dry run, from a per-network FLOP table.

Each trainable's cost model (FLOPs of one trial from its config) is in its record
(`raygrid/stages/<stage>/spec.py`); this module holds the per-network forward costs they use and
turns FLOPs into GPU-hours. Where the numbers come from:
- Forward GFLOPs per image (1 multiply-add = 2 FLOPs) were counted with
  `torch.utils.flop_counter.FlopCounterMode` on randomly initialised models at the resolution named
  in each key; `python bench/flops.py` recounts them and prints the table (timm 1.0.31,
  torchvision 0.29.1, open_clip 3.3.0, spandrel 0.4.2). Convolutions and attention scale with the
  pixel count, so other sizes scale linearly.
- Training multipliers: forward+backward with weight gradients ≈ 3× forward; a frozen network that
  only passes gradients to its input ≈ 2× forward.
- `EFFECTIVE_TFLOPS` turns FLOPs into seconds. It is an assumption, not a measurement: an A100/H100
  class GPU in bf16 reaches roughly 25–35 % of its dense peak on these mid-sized convolution and
  windowed-attention workloads; 100 TFLOP/s is used. Data loading, evaluation-time panel
  overhead beyond the FLOPs below, and checkpoint I/O are not included. Calibrate it with a
  measured step time on your GPU (`--effective-tflops`).
"""

from __future__ import annotations

from raygrid.spec.backbones import BACKBONES
from raygrid.spec.discriminators import CONV_TRUNK, CONV_TRUNK_GFLOPS
from raygrid.spec.generators import flop_table

EFFECTIVE_TFLOPS = 100.0
REFERENCE_PIXELS = 224 * 224  # the backbones' and the conv trunk's counts are at 224×224

# name -> (GFLOPs per forward of one image, at `pixels` input pixels): every generator preset's
# count from its record (raygrid.spec.generators, at LR pixels; keys "<arch>_<preset>") and every
# backbone's from its record (raygrid.spec.backbones).
FORWARD_GFLOPS: dict[str, tuple[float, int]] = {
    **flop_table(),
    **{b.name: (b.gflops, REFERENCE_PIXELS) for b in BACKBONES.values()},
    CONV_TRUNK: (CONV_TRUNK_GFLOPS, REFERENCE_PIXELS),  # the plain conv discriminator trunk
}
UNKNOWN_BACKBONE = "resnet50"  # used for timm:<name> backbones the table does not list


def forward_gflops(net: str, pixels: int) -> float:
    gflops, ref = FORWARD_GFLOPS.get(net, FORWARD_GFLOPS[UNKNOWN_BACKBONE])
    return gflops * pixels / ref


def trial_gflops(config, steps: int) -> float:
    """Estimated total GFLOPs of one trial (a typed trial config) that runs `steps` steps: its
    trainable's cost model (raygrid.stages.<stage>.spec)."""
    from raygrid.spec.trainables import of

    return of(config).gflops(config, steps)


def gpu_hours(gflops: float, effective_tflops: float = EFFECTIVE_TFLOPS) -> float:
    return gflops / (effective_tflops * 1e3) / 3600.0


def asha_step_fraction(max_t: int, grace: int, rf: float, group_size: float | None = None) -> float:
    """Expected share of the full budget an ASHA-scheduled grid uses if it stops as designed:
    every trial runs to the grace period, 1/rf of them to grace·rf, and so on up to max_t.

    `group_size`: ASHA runs within groups of this many trials (raygrid.run.schedulers.GroupedASHA).
    The first trial to reach a rung always continues, so at least one trial of every group runs
    each segment: the surviving share at rung k is max(rf^-k, 1/group_size). A group of one is
    never pruned."""
    floor = 0.0 if group_size is None else 1.0 / max(group_size, 1.0)
    used, survivors, start, rung = 0.0, 1.0, 0, grace
    while True:
        end = min(rung, max_t)
        used += max(survivors, floor) * (end - start)
        if end >= max_t:
            break
        survivors /= rf
        start, rung = end, rung * rf
    return used / max_t
