"""How fast is the paper grid's optimize step on this device, and how much of the hardware does it use?

    python bench/gpu_step.py                  # CUDA: the paper's step; CPU: a tiny version
    python bench/gpu_step.py --quick          # CI-sized (CPU, seconds)
    python bench/gpu_step.py --peak-tflops 989 --steps 30

The step is the optimize loop's own (`raygrid.stages.optimize.loop.train_steps` over
`SRGanModels.step`: generator update with the fidelity and adversarial losses, EMA, discriminator
update; on CUDA the LR made from the HR batch on the device, fused Adam, TF32, no host sync), on
one fixed batch:
- CUDA: the paper grid's cell SwinIR-M x4, batch 16, 256² HR crops, DISTS-style fidelity on
  VGG-16, patch discriminator on ResNet-50 (trunk trained), bf16 autocast;
- CPU: the same losses and networks with tiny SwinIR, small crops and fp32, so CI keeps the
  script working (its figures say nothing about a GPU).
Backbones start from random weights (nothing downloads); the FLOPs are the same as pretrained.

Printed after `--warmup` untimed steps: the runtime settings as resolved for the device, median
and mean step time, images/s, the step's FLOPs from `raygrid.costs` (the dry run's table), the
achieved TFLOP/s, MFU against `--peak-tflops` (default on CUDA: 989, the H100/H200 SXM dense bf16
peak), the extra time of a report step (the health measurements), peak memory (CUDA: max
allocated; CPU: the process's peak RSS) and, on CUDA, the host syncs one step makes
(torch.cuda.set_sync_debug_mode) and how the LR made on the GPU compares with the loader's (CPU).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The optimize step's models and config, imported in this one place.
from raygrid import costs
from raygrid.data.tensors import bicubic_downscale
from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.loop import train_steps
from raygrid.stages.optimize.models import SRGanModels

H100_BF16_DENSE_TFLOPS = 989.0  # SXM, dense (no sparsity); the H200 has the same tensor cores

# The paper grid's optimize cell this benchmark runs (search_spaces/paper.yaml: batch 16, crop
# 256, SwinIR-M; one of its fidelity x discriminator cells).
PAPER_CELL = {
    "generator": {"preset": "m"},
    "fidelity": {"backbone": "vgg16", "weights": "random"},
    "adversarial": {"discriminator": "patch_resnet50", "weights": "random", "trunk_trainable": True},
    "loss": {"fidelity_weight": 1.0, "adversarial_weight": 0.01},
    "data": {"hr_crop": 256, "batch_size": 16},
    "runtime": {"amp": "bf16"},
}


def paper_trial(**data) -> SRGanConfig:
    """The paper cell above (data fields overridable, e.g. batch_size/hr_crop from the space)."""
    trial = {**PAPER_CELL, "data": {**PAPER_CELL["data"], **data}}
    return SRGanConfig.model_validate(trial)


def tiny_trial(hr_crop: int, batch_size: int) -> SRGanConfig:
    trial = {**PAPER_CELL, "generator": {"preset": "tiny"}, "runtime": {"amp": "off"},
             "data": {"hr_crop": hr_crop, "batch_size": batch_size}}
    return SRGanConfig.model_validate(trial)


def step_gflops(cfg: SRGanConfig) -> float:
    """GFLOPs of one training step (all images of the batch), as the dry run's cost model counts."""
    return costs.trial_gflops(cfg, steps=1)  # 1 step < eval_every: no evaluation


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(cfg: SRGanConfig, device: torch.device, runtime: loop.ResolvedRuntime) -> dict[str, torch.Tensor]:
    """One fixed batch as the loader hands it over: HR only when the LR is made on the device."""
    torch.manual_seed(0)
    b, c = cfg.data.batch_size, cfg.data.hr_crop
    hr = torch.rand(b, 3, c, c, device=device)
    return {"hr": hr} if runtime.lr_on_device else {"hr": hr, "lr": bicubic_downscale(hr, cfg.generator.scale)}


def time_steps(models: SRGanModels, batch: dict[str, torch.Tensor], steps: int, warmup: int,
               measure: bool = False) -> list[float]:
    step, measure_step = train_steps(models, models.device)
    run = measure_step if measure else step
    times = []
    for i in range(warmup + steps):
        _sync(models.device)
        t0 = time.perf_counter()
        run(batch)
        _sync(models.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def host_syncs(models: SRGanModels, batch: dict[str, torch.Tensor]) -> str:
    """How many host-device synchronisations one training step makes (CUDA's sync debug mode)."""
    if models.device.type != "cuda":
        return "n/a (CPU)"
    step, _ = train_steps(models, models.device)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return f"{len(syncs)}" + (f" (first: {str(syncs[0].message)[:120]})" if syncs else "")


def device_lr_agreement(cfg: SRGanConfig, device: torch.device) -> str:
    """The LR the GPU makes from HR crops vs the loader's (CPU), on 8-bit crops as a loader reads."""
    if device.type != "cuda":
        return "n/a (CPU: the loader's own function; bit-identical, tests/test_train_units.py)"
    g = torch.Generator().manual_seed(1)
    hr = torch.randint(0, 256, (cfg.data.batch_size, 3, cfg.data.hr_crop, cfg.data.hr_crop), generator=g).float() / 255
    on_cpu = bicubic_downscale(hr, cfg.generator.scale)
    on_gpu = bicubic_downscale(hr.to(device), cfg.generator.scale).cpu()
    levels = (on_gpu - on_cpu).abs().mul(255).round()
    return (f"{int((levels > 0).sum())} of {levels.numel()} values differ "
            f"(at most {int(levels.max())} 8-bit level)")


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: CPU, smallest crops, few steps")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"peak for MFU (default on CUDA: {H100_BF16_DENSE_TFLOPS:g}; none on CPU)")
    p.add_argument("--no-tf32", action="store_true", help="runtime.tf32 off (default: auto, on on CUDA)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (default 1: shared CI cores oversubscribed by OpenMP crawl)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.quick:
        device = torch.device("cpu")
    if device.type == "cuda":
        cfg = paper_trial()
        if args.no_tf32:
            cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"tf32": False})})
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or H100_BF16_DENSE_TFLOPS
        steps, warmup = args.steps or 20, args.warmup if args.warmup is not None else 5
    else:
        torch.set_num_threads(args.threads)
        cfg = tiny_trial(hr_crop=32, batch_size=2) if args.quick else tiny_trial(hr_crop=64, batch_size=4)
        name = f"CPU ({platform.processor() or platform.machine()}), torch threads: {torch.get_num_threads()}"
        peak = args.peak_tflops
        steps, warmup = args.steps or (2 if args.quick else 5), args.warmup if args.warmup is not None else 1

    runtime = loop.resolve_runtime(cfg.runtime, device)
    loop.apply_backend_flags(runtime, device)  # as the loop's setup does
    torch.manual_seed(0)
    models = SRGanModels(cfg, device)
    batch = _batch(cfg, device, runtime)
    times = time_steps(models, batch, steps, warmup)
    measured = time_steps(models, batch, max(1, steps // 4), min(warmup, 1), measure=True)
    median, mean = statistics.median(times), statistics.fmean(times)
    gflops = step_gflops(cfg)
    achieved = gflops / median / 1e3
    amp = "bf16 autocast" if runtime.precision == "bf16" else "fp32"
    tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 and device.type == "cuda" else "off"
    rows = [
        ("device", name),
        ("torch", torch.__version__),
        ("cell", (f"SwinIR-{cfg.generator.preset} x{cfg.generator.scale}, fidelity {cfg.fidelity.backbone}, "
                  f"discriminator {cfg.adversarial.discriminator}")),
        ("batch x HR crop", f"{cfg.data.batch_size} x {cfg.data.hr_crop}²  (LR {cfg.data.hr_crop // 4}²)"),
        ("precision", f"{amp}; TF32 matmul/conv {tf32}"),
        ("runtime", (f"fused Adam {'on' if runtime.fused_adam else 'off'}, LR made "
                     f"{'on the device' if runtime.lr_on_device else 'by the loader'}, "
                     f"non-finite check every {runtime.finite_check_every} steps")),
        ("timed steps", f"{len(times)} after {warmup} warm-up"),
        ("step time", (f"median {median * 1e3:.1f} ms, mean {mean * 1e3:.1f} ms, "
                       f"min {min(times) * 1e3:.1f} ms")),
        ("images/s", f"{cfg.data.batch_size / median:.1f}"),
        ("FLOPs/step", f"{gflops:,.1f} GFLOP (raygrid.costs)"),
        ("achieved", f"{achieved:.3f} TFLOP/s"),
        ("MFU", f"{achieved / peak:.1%} of {peak:g} TFLOP/s" if peak else "n/a (no --peak-tflops for this device)"),
        ("report step", (f"median {statistics.median(measured) * 1e3:.1f} ms "
                         f"({statistics.median(measured) / median:.2f}x: + health measurements)")),
        ("peak memory", _peak_memory(device)),
        ("host syncs", host_syncs(models, batch)),
        ("LR on device", device_lr_agreement(cfg, device)),
    ]
    width = max(len(k) for k, _ in rows)
    print("bench/gpu_step.py: the optimize step" + (" (tiny CPU version)" if device.type == "cpu" else ""))
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
