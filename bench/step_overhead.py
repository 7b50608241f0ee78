"""How much does Ray cost a raygrid trial?

    python bench/step_overhead.py [--steps 40] [--warmup 5]

1. Step overhead: the SR GAN step (tiny SwinIR, VGG-16-R fidelity, vanilla conv discriminator,
   batch 4 of 64-px crops) timed in a bare PyTorch loop in this process, then the same models,
   losses and batch inside a Ray Train `train_loop_per_worker` (TorchTrainer, 1 CPU worker).
   Prints the median step times and their ratio (Ray / bare).
2. Start/stop overhead of one nested trial: a Tune trial whose driver launches a TorchTrainer
   that runs zero steps, wall time from `Tuner.fit()` to its return; and a bare `TorchTrainer.fit()`.

Ratios against the in-process baseline, not absolute times, are the result: they survive a
different machine better.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

# This checkout's raygrid, in this process and in the Ray workers it starts (they inherit PYTHONPATH).
ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)

BENCH_TRIAL = {
    "fidelity": {"backbone": "vgg16_r", "weights": "random"},
    "generator": {"preset": "tiny"},
    "adversarial": {"discriminator": "vanilla_conv", "weights": "random"},
    "loss": {"adversarial_weight": 0.05, "pixel_weight": 0.1},
    "data": {"train": "demo_sr_train", "val": ["demo_sr_val"], "hr_crop": 64, "batch_size": 4},
    "runtime": {"threads": 1},
}


def timed_steps(steps: int, warmup: int) -> list[float]:
    """Median-ready per-step times of the optimize loop's step (train_steps over SRGanModels.step)
    on one fixed batch (CPU, 1 thread); each step's values are read as the loop's report does."""
    from raygrid.stages.loop import LossWindow
    from raygrid.stages.optimize.config import SRGanConfig
    from raygrid.stages.optimize.loop import train_steps
    from raygrid.stages.optimize.models import SRGanModels

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = SRGanConfig.model_validate(BENCH_TRIAL)
    models = SRGanModels(cfg, torch.device("cpu"))
    hr = torch.rand(cfg.data.batch_size, 3, cfg.data.hr_crop, cfg.data.hr_crop)
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    step, _ = train_steps(models, torch.device("cpu"))
    window = LossWindow()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        window.add(step({"lr": lr, "hr": hr})[0])
        window.read()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _ray_loop(config):
    import json
    import tempfile

    import ray.train

    times = timed_steps(config["steps"], config["warmup"])
    # Train V2 keeps only metrics that come with a checkpoint
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "times.json"), "w") as f:
            json.dump(times, f)
        ray.train.report({"median_step_s": statistics.median(times)}, checkpoint=ray.train.Checkpoint.from_directory(d))


def _empty_loop(config):
    import ray.train

    ray.train.report({"step": 0})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    bare = statistics.median(timed_steps(args.steps, args.warmup))

    import tempfile

    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")
    storage = tempfile.mkdtemp(prefix="raygrid-bench-")
    scaling = ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1})
    result = TorchTrainer(_ray_loop, train_loop_config={"steps": args.steps, "warmup": args.warmup},
                          scaling_config=scaling,
                          run_config=ray.train.RunConfig(name="steps", storage_path=storage)).fit()
    in_ray = result.metrics["median_step_s"]

    t0 = time.perf_counter()
    TorchTrainer(_empty_loop, scaling_config=scaling,
                 run_config=ray.train.RunConfig(name="empty", storage_path=storage)).fit()
    trainer_overhead = time.perf_counter() - t0

    def driver(config):
        tid = tune.get_context().get_trial_id()
        TorchTrainer(_empty_loop, scaling_config=scaling,
                     run_config=ray.train.RunConfig(name=f"t-{tid}", storage_path=storage,
                                                    callbacks=[TuneReportCallback()])).fit()

    t0 = time.perf_counter()
    tune.Tuner(tune.with_resources(driver, {"cpu": 0.01}), param_space={"x": tune.grid_search([0])},
               run_config=tune.RunConfig(name="nested", storage_path=storage, verbose=0)).fit()
    nested_overhead = time.perf_counter() - t0
    ray.shutdown()

    print(f"SR GAN step, median of {args.steps} after {args.warmup} warm-up (tiny SwinIR, VGG-16-R fidelity, "
          f"vanilla conv D, batch 4 x 64 px, 1 CPU thread)")
    print(f"  bare PyTorch loop (this process): {bare * 1e3:8.1f} ms")
    print(f"  inside Ray Train loop:            {in_ray * 1e3:8.1f} ms")
    print(f"  ratio Ray / bare:                 {in_ray / bare:8.3f}")
    print("per-trial start/stop overhead (zero-step loop)")
    print(f"  TorchTrainer.fit():               {trainer_overhead:8.1f} s  = {trainer_overhead / bare:,.0f} bare steps")
    print(f"  Tune trial -> driver -> trainer:  {nested_overhead:8.1f} s  = {nested_overhead / bare:,.0f} bare steps")


if __name__ == "__main__":
    main()
