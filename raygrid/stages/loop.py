"""What every raygrid train loop shares: the start of a worker, seeding, device and AMP,
checkpoints, reporting, and the training skeleton (`train`) written once.

A train loop is a Ray Train `train_loop_per_worker(loop_config)`. `loop_config` is
`{"trial": <resolved trial config as JSON>, "env": <RunEnv fields>, "meta": {...}}`: what crosses
the process boundary is JSON, and `start` validates it into the trainable's config model there,
once, so a loop never runs on an unchecked dict.

Checkpoint contract: a checkpoint directory holds `state.pt` (everything needed to continue at the
same step, RNG states included) and `meta.json` (`{"step": N, "metrics": {...}}`). Every report
carries the monotonic `step`, which is the scheduler's time attribute.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from raygrid.errors import PermanentError
from raygrid.run.telemetry import TrialTelemetry
from raygrid.stages.config import Budget

STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class RunEnv:
    """Where things are on the machine running the loop (not part of the experiment's config)."""

    data_root: str
    weights_dir: str | None = None
    s3_endpoint_url: str | None = None
    sweep_name: str = ""


class TrainingDiverged(PermanentError, RuntimeError):
    """A loss became NaN/inf. Fails the trial with the step and the losses."""


# ---------------------------------------------------------------------------------------------
# Context: rank, device, seeding, AMP
# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device
    trial_id: str
    telemetry: TrialTelemetry
    cpus: float | None = None  # CPUs this Train worker was given (the stage's cpus_per_worker)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def loader_workers(self, setting: int | str) -> int:
        """DataLoader workers for a runtime.num_workers setting ("auto": this worker's CPUs - 1)."""
        from raygrid.data.stream import resolve_num_workers

        return resolve_num_workers(setting, self.cpus)


Config = TypeVar("Config", bound=BaseModel)


def start(loop_config: dict[str, Any], model: type[Config]) -> tuple[Config, RunEnv, Context]:
    """The process boundary of a train loop: the trial config validated into `model`, the run
    environment, and this worker's context (rank, device, seeded RNGs)."""
    cfg = model.model_validate(loop_config["trial"])
    return cfg, RunEnv(**loop_config["env"]), setup(cfg, loop_config.get("meta", {}))


def setup(cfg: BaseModel, meta: dict[str, Any]) -> Context:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    device = ray.train.torch.get_device()
    # Distinct but reproducible streams per rank: the same trial seed gives the same run.
    seed_everything(int(cfg.seed) * 1000 + rank)
    trial_id = meta.get("trial_id", "")
    return Context(rank, world, device, trial_id, TrialTelemetry(meta.get("stage", ""), trial_id),
                   cpus=meta.get("cpus_per_worker"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA when amp is 'auto' or 'bf16'; full precision otherwise (CPU)."""
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Checkpoints and reports
# ---------------------------------------------------------------------------------------------


def restore() -> tuple[dict[str, Any] | None, int]:
    """The state of the last reported checkpoint (None on a fresh start) and its step."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None, 0
    with ckpt.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    return state, int(state["step"])


def report(ctx: Context, step: int, metrics: dict[str, float], state: dict[str, Any] | None,
           files: dict[str, bytes] | None = None) -> None:
    """Report metrics (every rank must call it: it is a barrier) with a checkpoint from rank 0.

    `files` ({relative path: content}, rank 0) travel inside the checkpoint directory: per-item
    score tables, sample crops, the evaluator record. The Tune driver's MLflow callback reads them
    from the reported checkpoint and logs them (one MLflow writer), so a loop never talks to MLflow.
    """
    import ray.train

    metrics = {"step": step, **{k: float(v) for k, v in metrics.items()}}
    with tempfile.TemporaryDirectory(prefix="raygrid-ckpt-") as d:
        checkpoint = None
        if ctx.is_main and state is not None:
            torch.save({**state, "step": step}, Path(d) / STATE_FILE)
            (Path(d) / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics}))
            for rel, content in (files or {}).items():
                path = Path(d, rel)
                if not path.resolve().is_relative_to(Path(d).resolve()):
                    raise ValueError(f"checkpoint file {rel!r} is outside the checkpoint directory")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def check_finite(step: int, losses: dict[str, float]) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in losses.items())
        raise TrainingDiverged(f"non-finite loss at step {step}: {shown}")


def all_reduce_mean(ctx: Context, values: dict[str, float]) -> dict[str, float]:
    """Average scalars over ranks (Tune only sees rank 0's report)."""
    if ctx.world_size == 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def broadcast(ctx: Context, obj: Any) -> Any:
    """Send rank 0's object (e.g. evaluation metrics) to every rank."""
    if ctx.world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def maybe_inject_failure(step: int) -> None:
    """Fault injection for resume tests: RAYGRID_FAIL_ONCE="<step>:<marker file>" makes the first
    run that reaches <step> crash once (the marker file records that it did)."""
    spec = os.environ.get("RAYGRID_FAIL_ONCE")
    if not spec:
        return
    at, _, marker = spec.partition(":")
    if step >= int(at) and marker and not os.path.exists(marker):
        Path(marker).write_text(str(step))
        raise RuntimeError(f"raygrid: injected failure at step {step} (RAYGRID_FAIL_ONCE)")


def infinite(loader: torch.utils.data.DataLoader, start_epoch: int = 0) -> Iterator[Any]:
    """Batches forever, moving the distributed sampler's epoch so every epoch reshuffles."""
    epoch = start_epoch
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


class Throughput:
    """Training images per second, over the steps since the last read (evaluation and checkpoint
    time excluded: each step is timed on its own)."""

    def __init__(self) -> None:
        self._seconds, self._images, self._steps = 0.0, 0, 0
        self.step_time = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, images: int) -> None:
        self._seconds += time.perf_counter() - self._t0
        self._images += images
        self._steps += 1

    def read(self) -> float:
        rate = self._images / max(self._seconds, 1e-9)
        self.step_time = self._seconds / max(self._steps, 1)
        self._seconds, self._images, self._steps = 0.0, 0, 0
        return rate


# ---------------------------------------------------------------------------------------------
# The training skeleton
# ---------------------------------------------------------------------------------------------


def train(ctx: Context, budget: Budget, start_step: int, batches: Iterator[Any],
          step: Callable[[Any], tuple[dict[str, float], int]],
          evaluate: Callable[[int], tuple[dict[str, float], dict[str, bytes]]],
          state: Callable[[], dict[str, Any]]) -> None:
    """Run steps start_step+1 .. budget.steps and report every `eval_every` steps and at the end.

    `step(batch)` trains on one batch and returns (this step's losses, images in this rank's
    batch); `evaluate(step)` runs on rank 0 only and returns its metrics and the files that go
    into the checkpoint (see `report`); `state()` is the checkpoint
    state, taken on rank 0 at each report. Every step checks its losses for NaN/inf and honours the
    fault injection of resume tests. A report holds the running means of the losses since the last
    report (averaged over ranks), the training throughput (evaluation excluded), the evaluation,
    and, in the first report of each (re)start, `progress/start_step`: where it picked up.
    """
    meter = Throughput()
    first_report = True
    running: dict[str, list[float]] = {}
    for i in range(start_step + 1, budget.steps + 1):
        meter.start()
        losses, images = step(next(batches))
        check_finite(i, losses)
        maybe_inject_failure(i)
        meter.stop(images * ctx.world_size)
        for k, v in losses.items():
            running.setdefault(k, []).append(v)
        if i % budget.eval_every and i != budget.steps:
            continue
        metrics = all_reduce_mean(ctx, {k: sum(v) / len(v) for k, v in running.items()})
        running.clear()
        metrics["throughput/images_per_s"] = meter.read()
        evaluation, files = evaluate(i) if ctx.is_main else ({}, {})
        metrics.update(broadcast(ctx, evaluation))
        if ctx.is_main:
            gpu_mem = torch.cuda.max_memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
            ctx.telemetry.record(i, meter.step_time, metrics["throughput/images_per_s"], gpu_mem)
        if first_report:
            metrics["progress/start_step"] = start_step  # where this (re)start picked up
            first_report = False
        report(ctx, i, metrics, state() if ctx.is_main else None, files)
