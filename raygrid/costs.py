"""GPU-hour estimates for the dry run, from a per-network FLOP table.

Where the numbers come from:
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

from raygrid import catalog

EFFECTIVE_TFLOPS = 100.0

# name -> (GFLOPs per forward of one image, at `pixels` input pixels)
FORWARD_GFLOPS: dict[str, tuple[float, int]] = {
    "swinir_m": (107.113, 64 * 64),  # LR pixels; output 256×256
    "swinir_tiny": (2.139, 32 * 32),
    "vgg16": (30.720, 224 * 224),  # torchvision features with L2 pooling (the DISTS stages)
    "vgg16_r": (30.720, 224 * 224),
    "resnet50": (8.174, 224 * 224),
    "convnext_tiny": (8.910, 224 * 224),
    "swin_tiny": (8.980, 224 * 224),
    "dinov2_vits14": (11.030, 224 * 224),
    "clip_vit_b16": (22.541, 224 * 224),
    "conv": (12.299, 224 * 224),  # the plain conv discriminator trunk (raygrid.nets.discriminators)
}
UNKNOWN_BACKBONE = "resnet50"  # used for timm:<name> backbones the table does not list


def forward_gflops(net: str, pixels: int) -> float:
    gflops, ref = FORWARD_GFLOPS.get(net, FORWARD_GFLOPS[UNKNOWN_BACKBONE])
    return gflops * pixels / ref


def trial_gflops(config: dict, steps: int) -> float:
    """Estimated total GFLOPs of one trial that runs `steps` steps."""
    trainable = config["trainable"]
    if trainable == "sr_gan":
        return _sr_gan_gflops(config, steps)
    if trainable == "iqa_finetune":
        return _iqa_gflops(config, steps)
    if trainable == "assess":
        return _assess_gflops(config)
    raise ValueError(f"no cost model for trainable {trainable!r}")


def _sr_gan_gflops(c: dict, steps: int) -> float:
    crop = c["data"]["hr_crop"]
    hr_px, lr_px = crop * crop, (crop // 4) ** 2
    gen = "swinir_" + c["generator"]["preset"]
    per_image = 3 * forward_gflops(gen, lr_px)  # G forward + backward
    # fidelity: forward+input-grad on SR, forward on HR
    per_image += 3 * forward_gflops(c["fidelity"]["backbone"], hr_px)
    disc = c["adversarial"]["discriminator"]
    if disc != catalog.NO_DISCRIMINATOR:
        _, trunk = catalog.split_discriminator(disc)
        # D step: real+fake forward+backward (2×3); G step: fake forward + input grad (2)
        per_image += 8 * forward_gflops(trunk, hr_px)
    total = per_image * c["data"]["batch_size"] * steps
    # evaluation: every eval_every steps, G + every panel measure on each val image
    evals = steps // c["budget"]["eval_every"]
    for name in c["data"]["val"]:
        info = catalog.SR_SETS.get(name)
        if info is None:
            continue
        n = info.images if c["data"]["val_max_images"] is None else min(info.images, c["data"]["val_max_images"])
        px = int(info.megapixels * 1e6)
        per_val = forward_gflops(gen, px // 16) + sum(
            2 * forward_gflops(b, px) for b in c["eval"]["fidelity_backbones"]
        )
        total += evals * n * per_val
    return total


def _iqa_gflops(c: dict, steps: int) -> float:
    px = c["data"]["image_size"] ** 2
    images = 2 if c["model"]["kind"] == "fr" else 1
    fwd = forward_gflops(c["model"]["backbone"], px) * images
    total = 3 * fwd * c["data"]["batch_size"] * steps
    evals = steps // c["budget"]["eval_every"] + 1
    for name in [c["data"]["train"], *c["data"]["test"]]:
        info = catalog.BENCHMARKS.get(name)
        n = info.size // 5 if info else 1000  # val/test splits are about a fifth of a set
        if c["data"]["max_images"] is not None:
            n = min(n, c["data"]["max_images"])
        total += evals * n * fwd
    return total


def _assess_gflops(c: dict) -> float:
    px = (c["image_size"] or 512) ** 2
    fwd = 2 * forward_gflops(c["fidelity"]["backbone"], px)
    info = catalog.BENCHMARKS.get(c["benchmark"])
    n = info.size if info else 1000
    if c["max_pairs"] is not None:
        n = min(n, c["max_pairs"])
    total = n * fwd
    if c["fit_on"] is not None:
        total += 3 * fwd * c["batch_size"] * c["budget"]["steps"]
    return total


def gpu_hours(gflops: float, effective_tflops: float = EFFECTIVE_TFLOPS) -> float:
    return gflops / (effective_tflops * 1e3) / 3600.0


def asha_step_fraction(max_t: int, grace: int, rf: float) -> float:
    """Expected share of the full budget an ASHA-scheduled grid uses if it stops as designed:
    every trial runs to the grace period, 1/rf of them to grace·rf, and so on up to max_t."""
    used, survivors, start, rung = 0.0, 1.0, 0, grace
    while True:
        end = min(rung, max_t)
        used += survivors * (end - start)
        if end >= max_t:
            break
        survivors /= rf
        start, rung = end, rung * rf
    return used / max_t
