"""The plan: what a sweep will run, stage by stage, before anything runs.

`make_plan(sweep)` turns a validated search space into per-stage trial lists, resources and a
GPU-hour estimate (each trial's FLOPs come from its trainable's record, raygrid.spec.trainables); `format_plan` prints it (the `--dry-run`), `plan_to_json` writes it
(`--plan-out`). No torch and no Ray here: the dry run stays a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from raygrid import costs
from raygrid.space import Sweep


@dataclass
class StagePlan:
    name: str
    trainable: str
    trials: int
    grid_size: int  # combinations before conditions
    points: int  # valid grid points after conditions (what Optuna samples from)
    seeds: list[int]
    axes: dict[str, list[Any]]  # axis -> values (linked axes by choice name)
    conditions: int
    search: dict[str, Any] | None
    scheduler: dict[str, Any]
    budget: dict[str, int]
    resources: dict[str, float]
    gpu_hours_full: float  # every trial runs its whole budget
    gpu_hours_asha: float | None  # if ASHA stops trials as designed


@dataclass
class Plan:
    sweep: str
    source: str
    stages: list[StagePlan]
    effective_tflops: float

    @property
    def total_trials(self) -> int:
        return sum(s.trials for s in self.stages)


def make_plan(sweep: Sweep, effective_tflops: float = costs.EFFECTIVE_TFLOPS) -> Plan:
    stages = []
    for name, stage in sweep.stages.items():
        spec = stage.spec
        steps = spec.budget.steps
        if spec.search is not None:
            # Optuna samples grid points uniformly at first: the mean trial cost is the estimate.
            mean = sum(costs.trial_gflops(t.config, steps) for t in stage.trials) / len(stage.trials)
            gflops = mean * spec.search.num_samples
        else:
            gflops = sum(costs.trial_gflops(t.config, steps) for t in stage.trials)
        full = costs.gpu_hours(gflops, effective_tflops)
        asha = None
        if spec.scheduler.kind == "asha":
            frac = costs.asha_step_fraction(steps, spec.scheduler.grace_period, spec.scheduler.reduction_factor)
            asha = full * frac
        axes = {k: list(v) for k, v in spec.axes.items()}
        axes.update({k: list(v) for k, v in spec.linked.items()})
        stages.append(StagePlan(
            name=name,
            trainable=spec.trainable,
            trials=stage.num_trials,
            grid_size=stage.grid_size,
            points=len(stage.trials),
            seeds=list(spec.seeds),
            axes=axes,
            conditions=len(spec.conditions),
            search=spec.search.model_dump(mode="json") if spec.search else None,
            scheduler=spec.scheduler.model_dump(mode="json"),
            budget=spec.budget.model_dump(),
            resources={**spec.resources.model_dump(), "gpus_per_trial": spec.resources.gpus},
            gpu_hours_full=full,
            gpu_hours_asha=asha,
        ))
    return Plan(sweep=sweep.name, source=sweep.source, stages=stages, effective_tflops=effective_tflops)


def plan_to_json(plan: Plan, sweep: Sweep) -> dict[str, Any]:
    """The whole expanded plan, every trial's resolved config included."""
    out = asdict(plan)
    for sp in out["stages"]:
        stage = sweep.stages[sp["name"]]
        sp["trial_list"] = [
            {"index": t.index, "key": t.key, "point": t.point, "config": t.config.model_dump(mode="json")}
            for t in stage.trials
        ]
    return out


def format_plan(plan: Plan) -> str:
    lines = [f"sweep {plan.sweep!r} from {plan.source}"]
    for s in plan.stages:
        per_seed = s.trials // len(s.seeds) if s.search is None and s.trials % len(s.seeds) == 0 else None
        count = f"{s.trials} trials"
        if s.search is not None:
            count += f" (Optuna samples over {s.points} grid points)"
        elif per_seed is not None and len(s.seeds) > 1:
            count += f" = {per_seed} per seed × {len(s.seeds)} seeds"
        elif per_seed is not None:
            count += " (1 seed)"
        lines.append("")
        lines.append(f"[{s.name}] trainable {s.trainable}: {count}")
        lines.append(f"  grid: {s.grid_size} combinations, {s.conditions} conditions")
        for axis, values in s.axes.items():
            shown = ", ".join(_short(v) for v in values)
            lines.append(f"  axis {axis} ({len(values)}): {shown}")
        lines.append(f"  seeds: {s.seeds}")
        if s.search:
            params = ", ".join(s.search["params"]) or "grid points only"
            lines.append(f"  optuna: {s.search['num_samples']} samples; continuous: {params}")
        sch = s.scheduler
        if sch["kind"] == "asha":
            lines.append(f"  scheduler: ASHA on {sch['metric']} ({sch['mode']}), grace {sch['grace_period']} "
                         f"steps, reduction {sch['reduction_factor']:g}")
        else:
            lines.append(f"  scheduler: none (metric {sch['metric']}, {sch['mode']})")
        r = s.resources
        lines.append(f"  budget: {s.budget['steps']} steps, eval every {s.budget['eval_every']}")
        lines.append(f"  resources per trial: {r['workers']} worker(s) × ({r['gpus_per_worker']:g} GPU, "
                     f"{r['cpus_per_worker']:g} CPU) = {r['gpus_per_trial']:g} GPU")
        est = f"  estimate: {_hours(s.gpu_hours_full)} GPU-hours at full budget"
        if s.gpu_hours_asha is not None:
            est += f", {_hours(s.gpu_hours_asha)} if ASHA stops as designed"
        lines.append(est)
    lines.append("")
    lines.append(f"total: {plan.total_trials} trials; "
                 f"{_hours(sum(s.gpu_hours_full for s in plan.stages))} GPU-hours at full budget "
                 f"(assuming {plan.effective_tflops:g} effective TFLOP/s; see raygrid/costs.py)")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return "none" if v is None else str(v)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def dump_json(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
