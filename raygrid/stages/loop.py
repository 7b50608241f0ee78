"""What every raygrid train loop shares: the start of a worker, seeding, device and AMP,
checkpoints, reporting, and the training skeleton (`train`) written once.

A train loop is a Ray Train `train_loop_per_worker(loop_config)`. `loop_config` is
`{"trial": <resolved trial config as JSON>, "env": <RunEnv fields>, "meta": {...}}`: what crosses
the process boundary is JSON, and `start` validates it into the trainable's config model there,
once, so a loop never runs on an unchecked dict.

Checkpoint contract: a checkpoint directory holds `state.pt` (everything needed to continue at the
same step, RNG states included) and `meta.json` (`{"step": N, "metrics": {...}}`). Every report
carries the monotonic `step`, which is the scheduler's time attribute.

A step returns its losses as device tensors; the skeleton sums them on the device and reads them
as floats once per report, and keeps a non-finite flag on the device that it reads every
`runtime.finite_check_every` steps, so nothing in between waits for the GPU. A run whose loss
went non-finite, or whose monitor says it collapsed, ends with a last report naming the step
(`outcome/diverged_at`, `outcome/collapsed_at`) and returns normally: never retried, and never a
checkpoint of non-finite weights. docs/training.md.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from raygrid.run.telemetry import TrialTelemetry
from raygrid.stages.config import DIVERGED_AT, OUTCOME_PREFIX, Budget, Runtime

STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class RunEnv:
    """Where things are on the machine running the loop (not part of the experiment's config)."""

    data_root: str
    weights_dir: str | None = None
    s3_endpoint_url: str | None = None
    sweep_name: str = ""
    # the sweep's sample crops, as in the sweep run's samples/crops.json (raygrid.run.samples):
    # the optimize evaluation renders each of them at every evaluation
    samples: tuple[dict[str, Any], ...] = ()


# ---------------------------------------------------------------------------------------------
# Context: rank, device, seeding, AMP and the other runtime settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedRuntime:
    """The runtime settings as one run on one device applies them ("auto" decided)."""

    precision: str  # "bf16" (autocast) | "fp32"
    tf32: bool
    fused_adam: bool
    lr_on_device: bool
    finite_check_every: int

    def metrics(self) -> dict[str, float]:
        """Reported with every report: what the run did, where it changes numerics or data flow."""
        return {"runtime/bf16": float(self.precision == "bf16"), "runtime/tf32": float(self.tf32),
                "runtime/fused_adam": float(self.fused_adam), "runtime/lr_on_device": float(self.lr_on_device)}

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_precision(device: torch.device, amp: str) -> str:
    """bf16 on CUDA when amp is 'auto' or 'bf16', bf16 elsewhere only when asked; else fp32."""
    return "bf16" if amp == "bf16" or (amp == "auto" and device.type == "cuda") else "fp32"


def resolve_runtime(runtime: Runtime, device: torch.device) -> ResolvedRuntime:
    cuda = device.type == "cuda"

    def on(setting: bool | str) -> bool:
        return cuda if setting == "auto" else bool(setting)

    return ResolvedRuntime(precision=resolve_precision(device, runtime.amp), tf32=cuda and on(runtime.tf32),
                           fused_adam=on(runtime.fused_adam), lr_on_device=on(runtime.lr_on_device),
                           finite_check_every=runtime.finite_check_every)


def apply_backend_flags(runtime: ResolvedRuntime, device: torch.device) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions, on or off as resolved (process-wide)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
        torch.backends.cudnn.allow_tf32 = runtime.tf32


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device
    trial_id: str
    telemetry: TrialTelemetry
    cpus: float | None = None  # CPUs this Train worker was given (the stage's cpus_per_worker)
    runtime: ResolvedRuntime | None = None  # the trial's runtime settings as applied on `device`

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
    runtime = resolve_runtime(cfg.runtime, device)
    apply_backend_flags(runtime, device)
    # Distinct but reproducible streams per rank: the same trial seed gives the same run.
    seed_everything(int(cfg.seed) * 1000 + rank)
    trial_id = meta.get("trial_id", "")
    return Context(rank, world, device, trial_id, TrialTelemetry(meta.get("stage", ""), trial_id),
                   cpus=meta.get("cpus_per_worker"), runtime=runtime)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str):
    """bf16 autocast where `resolve_precision` says bf16; full precision otherwise."""
    if resolve_precision(device, amp) == "bf16":
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
            meta = {"step": step, "metrics": metrics}
            if ctx.runtime is not None:
                meta["runtime"] = ctx.runtime.as_dict()
            (Path(d) / META_FILE).write_text(json.dumps(meta))
            for rel, content in (files or {}).items():
                path = Path(d, rel)
                if not path.resolve().is_relative_to(Path(d).resolve()):
                    raise ValueError(f"checkpoint file {rel!r} is outside the checkpoint directory")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


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
    """Training images per second over a report window: from the window's start to the host read
    of its losses, which waits for the device, so queued GPU work counts and the evaluation and
    checkpoint after the read do not."""

    def __init__(self) -> None:
        self._t0, self._images, self._steps = time.perf_counter(), 0, 0
        self.step_time = 0.0

    def start(self) -> None:
        self._t0, self._images, self._steps = time.perf_counter(), 0, 0

    def add(self, images: int) -> None:
        self._images += images
        self._steps += 1

    def read(self) -> float:
        seconds = time.perf_counter() - self._t0
        self.step_time = seconds / max(self._steps, 1)
        return self._images / max(seconds, 1e-9)


class LossWindow:
    """Sums of the values a step returns since the last report, kept where they are: device
    tensors are added on the device (float64), so a step never waits for the GPU; `read` moves
    them to the host in one transfer and returns the means (each over the steps that had it)."""

    def __init__(self) -> None:
        self._sums: dict[str, Any] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            v = v.detach().double() if torch.is_tensor(v) else float(v)
            self._sums[k] = v if k not in self._sums else self._sums[k] + v
            self._counts[k] = self._counts.get(k, 0) + 1

    def read(self) -> dict[str, float]:
        out = {k: v / self._counts[k] for k, v in self._sums.items() if not torch.is_tensor(v)}
        keys = [k for k, v in self._sums.items() if torch.is_tensor(v)]
        if keys:
            device = self._sums[keys[0]].device
            values = torch.stack([self._sums[k].to(device).reshape(()) for k in keys]).tolist()
            out.update({k: v / self._counts[k] for k, v in zip(keys, values)})
        self._sums.clear()
        self._counts.clear()
        return out


FINITE_KEYS = ("loss/", "grad_norm/")  # what a diverged run is recognised by: losses, gradient norms


class FiniteGuard:
    """The first step at which a loss or gradient norm (keys FINITE_KEYS) was NaN/inf, tracked
    on the device without a host read; `first_bad` reads it (agreed over ranks: the minimum)."""

    NONE = 2**62

    def __init__(self) -> None:
        self._first: torch.Tensor | None = None
        self._host: int | None = None

    def add(self, step: int, values: dict[str, Any]) -> None:
        tensors = []
        for k, v in values.items():
            if not k.startswith(FINITE_KEYS):
                continue
            if torch.is_tensor(v):
                tensors.append(v.detach().float().reshape(()))
            elif self._host is None and not math.isfinite(v):
                self._host = step
        if tensors:
            at = torch.where(torch.isfinite(torch.stack(tensors)).all(), self.NONE, step)
            self._first = at if self._first is None else torch.minimum(self._first, at)

    def first_bad(self, ctx: Context) -> int | None:
        first = self.NONE if self._host is None else self._host
        if self._first is not None or ctx.world_size > 1:
            t = torch.tensor(first, dtype=torch.int64, device=ctx.device)
            if self._first is not None:
                t = torch.minimum(t, self._first.to(ctx.device))
            if ctx.world_size > 1:
                import torch.distributed as dist

                dist.all_reduce(t, op=dist.ReduceOp.MIN)
            first = int(t)
        return None if first == self.NONE else first


# ---------------------------------------------------------------------------------------------
# The training skeleton
# ---------------------------------------------------------------------------------------------


def train(ctx: Context, budget: Budget, start_step: int, batches: Iterator[Any],
          step: Callable[[Any], tuple[dict[str, Any], int]],
          evaluate: Callable[[int], tuple[dict[str, float], dict[str, bytes]]],
          state: Callable[[], dict[str, Any]], *,
          measure_step: Callable[[Any], tuple[dict[str, Any], int]] | None = None,
          monitor: Callable[[int, dict[str, float]], dict[str, float]] | None = None,
          metric_keys: Iterable[str] = ()) -> None:
    """Run steps start_step+1 .. budget.steps and report every `eval_every` steps and at the end.

    `step(batch)` trains on one batch and returns (this step's values, images in this rank's
    batch); values are 0-dim tensors (read at report time only) or floats. `measure_step`, if
    given, replaces `step` on report steps (the same update, plus measurements). `evaluate(step)`
    runs on rank 0 only and returns its metrics and the files that go into the checkpoint (see
    `report`); `state()` is the checkpoint state, taken on rank 0 at each report. `monitor(step,
    metrics)` (every rank, the same metrics) adds its flags to a report; an `outcome/...` key among
    them ends the run after that report. A report holds the means of the step values since the
    last report (averaged over ranks), the training throughput (evaluation excluded), the
    evaluation, the resolved runtime (`runtime/...`) and, in the first report of each (re)start,
    `progress/start_step`: where it picked up.

    Divergence: losses and gradient norms are checked on the device every step and read every
    `runtime.finite_check_every` steps and at each report. A run whose values went non-finite
    first at step k reports once more at step k, without a checkpoint and without evaluating,
    with `outcome/diverged_at = k` and the step values' means (non-finite); every metric it
    reported before (and `metric_keys`, what its trainable reports) is NaN there so that the
    scheduler still finds its metric, and the loop returns.
    """
    check_every = ctx.runtime.finite_check_every if ctx.runtime is not None else 1
    window, guard, meter = LossWindow(), FiniteGuard(), Throughput()
    expected = set(metric_keys)
    first = [True]

    def finish_report(at: int, metrics: dict[str, float], checkpoint: dict[str, Any] | None,
                      files: dict[str, bytes] | None = None) -> None:
        if ctx.runtime is not None:
            metrics.update(ctx.runtime.metrics())
        if first[0]:
            metrics["progress/start_step"] = start_step  # where this (re)start picked up
            first[0] = False
        expected.update(k for k in metrics if not k.startswith(("progress/", OUTCOME_PREFIX)))
        report(ctx, at, metrics, checkpoint, files)

    for i in range(start_step + 1, budget.steps + 1):
        at_report = i % budget.eval_every == 0 or i == budget.steps
        losses, images = (measure_step if at_report and measure_step else step)(next(batches))
        window.add(losses)
        guard.add(i, losses)
        maybe_inject_failure(i)
        meter.add(images * ctx.world_size)
        if not at_report and i % check_every:
            continue
        bad = guard.first_bad(ctx)
        if bad is not None:
            metrics = all_reduce_mean(ctx, window.read())
            # the scheduler needs its metric in every result; step values keep their own (real) means
            metrics.update({k: math.nan for k in expected if k not in metrics and not k.startswith(FINITE_KEYS)})
            metrics[DIVERGED_AT] = bad
            finish_report(bad, metrics, None)
            return
        if not at_report:
            continue
        metrics = all_reduce_mean(ctx, window.read())
        metrics["throughput/images_per_s"] = meter.read()
        evaluation, files = evaluate(i) if ctx.is_main else ({}, {})
        metrics.update(broadcast(ctx, evaluation))
        if monitor is not None:
            metrics.update(monitor(i, metrics))
        if ctx.is_main:
            gpu_mem = torch.cuda.max_memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
            ctx.telemetry.record(i, meter.step_time, metrics["throughput/images_per_s"], gpu_mem)
        finish_report(i, metrics, state() if ctx.is_main else None, files)
        if any(k.startswith(OUTCOME_PREFIX) for k in metrics):
            return
        meter.start()
