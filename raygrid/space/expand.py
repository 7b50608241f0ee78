"""Grid expansion: a validated stage -> its trials, every trial's config resolved and validated.

The grid is the product of the stage's axes (linked axes by choice name) and seeds, filtered by
its conditions; each point's config is `base` with the point's values set at their dotted keys,
validated by the stage trainable's config model. A mistake names the axis value, the base key or
the combination that causes it. Optuna samples are applied to grid points here too
(`sampled_json`), for the Tune driver and the MLflow logger alike.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from raygrid.space.errors import SpaceError, fmt_point, message, model_fields_of
from raygrid.space.schema import StageSpec, SweepSpec
from raygrid.spec import trainables
from raygrid.spec.trainables import TrainableSpec
from raygrid.stages.config import KeyedValueError, Strict

# ---------------------------------------------------------------------------------------------
# Expanded trials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    stage: str
    index: int
    point: dict[str, Any]  # the axis values that make this trial (axes, linked names, seed)
    config: Strict  # the full resolved trial config: the stage trainable's config model

    @functools.cached_property
    def key(self) -> str:
        """Stable identity of the trial: the hash of its resolved config (used for dedup/resume)."""
        blob = json.dumps({"stage": self.stage, "config": self.config.model_dump(mode="json")},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_json(self, config: Strict | None = None, **meta: Any) -> dict[str, Any]:
        """The trial as it crosses a process boundary (Tune's param space, the train loop):
        {"trial": <config as JSON>, "meta": {"trial_key", "point", "index", **meta}}. `config` is what
        the trial runs with when the runner filled something in (a lineage checkpoint); the key
        stays the planned trial's."""
        config = self.config if config is None else config
        return {"trial": config.model_dump(mode="json"),
                "meta": {"trial_key": self.key, "point": self.point, "index": self.index, **meta}}


@dataclass
class Stage:
    name: str
    spec: StageSpec
    trials: list[Trial] = field(default_factory=list)
    grid_size: int = 0  # combinations before conditions
    # trial index -> the trial of the lineage's source stage it starts from (check_lineage)
    sources: dict[int, Trial] = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        return self.spec.search.num_samples if self.spec.search else len(self.trials)

    @property
    def study_axes(self) -> list[str]:
        """The axes the study compares: every grid axis and linked axis that takes more than one
        value among the trials (seeds and Optuna-sampled values are not study axes)."""
        names = [*self.spec.axes, *self.spec.linked]
        return [a for a in names if len({json.dumps(t.point[a], sort_keys=True) for t in self.trials}) > 1]

    def group_key(self, point: dict[str, Any]) -> tuple[Any, ...]:
        """The group of a grid point under the scheduler's group_by (ASHA competes within one)."""
        return tuple(point[a] for a in self.spec.scheduler.group_by)

    def groups(self) -> dict[tuple[Any, ...], int]:
        """Trials per scheduler group (with an Optuna search: samples per group, grid points in turn)."""
        counts: dict[tuple[Any, ...], int] = {}
        for t in self.trials:
            counts[self.group_key(t.point)] = counts.get(self.group_key(t.point), 0) + 1
        if self.spec.search is not None:
            per_point = self.spec.search.num_samples // len(self.trials)
            counts = {k: v * per_point for k, v in counts.items()}
        return counts


@dataclass
class Sweep:
    spec: SweepSpec
    source: str
    stages: dict[str, Stage]

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------


def expand_stage(source: str, name: str, spec: StageSpec) -> Stage:
    where = f"stages.{name}"
    trainable = trainables.get(spec.trainable)
    model = trainable.config
    for key in ("seed", "budget", "trainable"):
        if key in spec.base or key in spec.axes:
            section = "base" if key in spec.base else "axes"
            raise SpaceError(source, f"{where}.{section}.{key}",
                             f"set by the stage ({'seeds' if key == 'seed' else key}), not here")

    # Axis keys must exist in the trial config, and each value must fit the field's type.
    for key, values in spec.axes.items():
        ann = _field_annotation(source, f"{where}.axes.{key}", model, key)
        if not values:
            raise SpaceError(source, f"{where}.axes.{key}", "expected a non-empty list of values")
        _check_values(source, f"{where}.axes.{key}", ann, values)
    for lname, bundles in spec.linked.items():
        if lname in spec.axes or "." in lname:
            raise SpaceError(source, f"{where}.linked.{lname}",
                             "a linked axis needs a plain name that is not also an axis key")
        if not bundles:
            raise SpaceError(source, f"{where}.linked.{lname}", "expected at least one named choice")
        for bname, sets in bundles.items():
            for key, value in sets.items():
                k = f"{where}.linked.{lname}.{bname}.{key}"
                if key in spec.axes:
                    raise SpaceError(source, k, f"{key!r} is also an axis; set it in one place")
                _check_values(source, k, _field_annotation(source, k, model, key), [value])

    dims: dict[str, list[Any]] = {**spec.axes, **{n: list(b) for n, b in spec.linked.items()}}
    dims["seed"] = list(spec.seeds)
    if not spec.seeds:
        raise SpaceError(source, f"{where}.seeds", "expected at least one seed")
    _check_conditions(source, where, spec, dims)

    grid_size = math.prod(len(v) for v in dims.values())
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    for values in itertools.product(*dims.values()):
        point = dict(zip(dims, values))
        if not all(c.keeps(point) for c in spec.conditions):
            continue
        config = _resolve_config(source, where, spec, model, point)
        trial = Trial(stage=name, index=len(trials), point=point, config=config)
        if trial.key in seen:
            other = trials[seen[trial.key]].point
            raise SpaceError(source, where, f"two grid points give the same trial config: {fmt_point(other)} "
                             f"and {fmt_point(point)} (an axis has no effect on them)")
        seen[trial.key] = trial.index
        trials.append(trial)
    if not trials:
        raise SpaceError(source, f"{where}.conditions", "the conditions remove every trial of the grid")

    stage = Stage(name=name, spec=spec, trials=trials, grid_size=grid_size)
    _check_scheduler(source, where, stage, trainable, trials[0].config, dims)
    _check_report(source, where, spec, trainable, trials[0].config)
    if spec.search is not None:
        _check_search(source, where, spec, model, dims, len(trials))
    return stage


def _resolve_config(source: str, where: str, spec: StageSpec, model: type[BaseModel],
                    point: dict[str, Any]) -> Strict:
    config = copy.deepcopy(spec.base)
    overrides: dict[str, Any] = {}
    for key, value in point.items():
        if key in spec.linked:
            overrides.update(spec.linked[key][value])
        elif key != "seed":
            overrides[key] = value
    for key, value in overrides.items():
        set_dotted(config, key, copy.deepcopy(value))
    config["seed"] = point["seed"]
    config["budget"] = spec.budget.model_dump()
    try:
        return model.model_validate(config)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        below = (err.get("ctx") or {}).get("error")
        if isinstance(below, KeyedValueError):  # a model validator naming a key below its model
            loc = f"{loc}.{below.key}" if loc else below.key
        msg = message(err, model)
        hit = [k for k in overrides if loc == k or loc.startswith((k + ".", k + "["))]
        if hit:
            key, value = hit[0], overrides[hit[0]]
            values = spec.axes.get(key, [])
            at = f"[{values.index(value)}]" if value in values else ""
            raise SpaceError(source, f"{where}.axes.{key}{at}", f"value {value!r}: {msg}") from None
        related = [k for k in overrides if k.startswith(loc + ".") or not loc]
        if related or not _in_base(spec.base, loc):
            combo = {k: point[k] for k in point if k != "seed"}
            raise SpaceError(source, where + (f".{loc}" if loc else ""),
                             f"impossible combination {fmt_point(combo)}: {msg}") from None
        raise SpaceError(source, f"{where}.base.{loc}", msg) from None


def _check_conditions(source: str, where: str, spec: StageSpec, dims: dict[str, list[Any]]) -> None:
    for i, cond in enumerate(spec.conditions):
        for part, preds in (("if", cond.if_), ("then", cond.then)):
            if not preds:
                raise SpaceError(source, f"{where}.conditions[{i}].{part}", "expected at least one axis test")
            for key, pred in preds.items():
                k = f"{where}.conditions[{i}].{part}.{key}"
                if key not in dims:
                    raise SpaceError(source, k, f"not an axis of this stage; expected one of {', '.join(dims)}")
                for v in pred.listed_values():
                    if v not in dims[key]:
                        raise SpaceError(source, k, f"value {v!r} is not one of the axis values {dims[key]}")


def _check_scheduler(source: str, where: str, stage: Stage, trainable: TrainableSpec, example: Strict,
                     dims: dict[str, list[Any]]) -> None:
    spec = stage.spec
    sched = spec.scheduler
    known = trainable.reported_metrics(example)
    if sched.metric not in known:
        raise SpaceError(source, f"{where}.scheduler.metric",
                         f"{sched.metric!r} is not reported by {spec.trainable}; expected one of "
                         f"{', '.join(sorted(known))}")
    if sched.metric.startswith("test/"):
        raise SpaceError(source, f"{where}.scheduler.metric",
                         f"{sched.metric!r} is a test metric: what the tables report never selects or stops a "
                         "trial; use a val/... metric")
    if sched.kind != "asha":
        return
    if not sched.metric.startswith("val/"):
        raise SpaceError(source, f"{where}.scheduler.metric",
                         f"ASHA stops trials on {sched.metric!r}; it must be a val/... metric (a selection set)")
    if sched.grace_period > spec.budget.steps:
        raise SpaceError(source, f"{where}.scheduler.grace_period",
                         f"{sched.grace_period} is beyond the budget of {spec.budget.steps} steps")
    if sched.grace_period < spec.budget.eval_every:
        raise SpaceError(source, f"{where}.scheduler.grace_period",
                         f"{sched.grace_period} is shorter than eval_every ({spec.budget.eval_every}): "
                         "ASHA would decide before the first evaluation")
    for i, axis in enumerate(sched.group_by):
        if axis == "seed":
            raise SpaceError(source, f"{where}.scheduler.group_by[{i}]",
                             "seeds are what competes within a group; group by the stage's axes only")
        if axis not in dims:
            raise SpaceError(source, f"{where}.scheduler.group_by[{i}]",
                             f"{axis!r} is not an axis of this stage; expected some of "
                             f"{', '.join(a for a in dims if a != 'seed')}")
    missing = [a for a in stage.study_axes if a not in sched.group_by]
    if missing:
        key = f"{where}.scheduler.group_by" if sched.group_by else f"{where}.scheduler"
        what = "a plain ASHA (no group_by)" if not sched.group_by else "this ASHA"
        raise SpaceError(source, key,
                         f"{what} would stop trials across the study axes {', '.join(map(repr, missing))}: only "
                         "trials that differ in seeds or sampled values may compete; list every study axis in "
                         f"scheduler.group_by ({', '.join(stage.study_axes)})")


def _check_report(source: str, where: str, spec: StageSpec, trainable: TrainableSpec, example: Strict) -> None:
    report, budget = spec.report, spec.budget
    if report.step is not None:
        if report.step > budget.steps:
            raise SpaceError(source, f"{where}.report.step",
                             f"{report.step} is beyond the budget of {budget.steps} steps")
        if report.step % budget.eval_every and report.step != budget.steps:
            raise SpaceError(source, f"{where}.report.step",
                             f"{report.step} is not an evaluation step (every {budget.eval_every} and the last)")
    if report.selection is not None:
        metric = report.selection.metric
        known = trainable.reported_metrics(example)
        if not metric.startswith("val/"):
            raise SpaceError(source, f"{where}.report.selection.metric",
                             f"{metric!r} is not a val/... metric: a test metric never selects what the tables "
                             "report")
        if metric not in known:
            raise SpaceError(source, f"{where}.report.selection.metric",
                             f"{metric!r} is not reported by {spec.trainable}; expected one of "
                             f"{', '.join(sorted(m for m in known if m.startswith('val/')))}")


def _check_search(source: str, where: str, spec: StageSpec, model: type[BaseModel],
                  dims: dict[str, list[Any]], points: int) -> None:
    if spec.search.num_samples % points:
        raise SpaceError(source, f"{where}.search.num_samples",
                         f"{spec.search.num_samples} samples over {points} grid points: expected a multiple of "
                         f"{points}, so that every grid point (every compared cell) gets the same number of samples")
    if spec.search.num_samples > points and not spec.scheduler.metric.startswith("val/"):
        raise SpaceError(source, f"{where}.scheduler.metric",
                         f"Optuna picks among {spec.search.num_samples // points} samples per grid point by "
                         f"{spec.scheduler.metric!r}: a search selects, so it needs a val/... metric")
    for key, dist in spec.search.params.items():
        k = f"{where}.search.params.{key}"
        if key in dims:
            raise SpaceError(source, k, "is also a grid axis; sample it or grid it, not both")
        ann = _field_annotation(source, k, model, key)
        probe = list(dist.uniform or dist.loguniform or dist.choice)
        _check_values(source, k, ann, probe)
        for wkey, pred in dist.when.items():
            if wkey not in dims:
                raise SpaceError(source, f"{k}.when.{wkey}", f"not an axis of this stage; expected one of {', '.join(dims)}")


def check_lineage(sweep: Sweep) -> None:
    """A trial that starts from another stage's run (transfer from an optimize run's
    discriminator) needs exactly one trial of that stage, when that stage is here, that its rule
    names and that the lineage does not refuse (a frozen trunk). Records it in `stage.sources`."""
    for name, stage in sweep.stages.items():
        lineage = trainables.get(stage.spec.trainable).lineage
        source = sweep.stages.get(lineage.source_stage) if lineage is not None else None
        if source is None:
            continue
        key = f"stages.{name}.{lineage.key}"
        for t in stage.trials:
            if not lineage.wants(t.config):
                continue
            fits = [s for s in source.trials if lineage.accepts(t.config, s.config)]
            if not fits:
                raise SpaceError(sweep.source, key, f"impossible combination {fmt_point(t.point)}: no "
                                 f"{lineage.source_stage} trial has {lineage.describe(t.config)}")
            if len(fits) > 1:
                differ = sorted({k for s in fits for k in s.point if s.point[k] != fits[0].point[k]})
                raise SpaceError(sweep.source, key,
                                 f"{fmt_point(t.point)}: the rule names {len(fits)} {lineage.source_stage} trials "
                                 f"(they differ in {', '.join(differ)}); a source is one cell, never picked by a "
                                 "metric among several")
            why = lineage.refuse(t.config, fits[0].config)
            if why:
                raise SpaceError(sweep.source, key, f"{fmt_point(t.point)}: {lineage.source_stage} trial "
                                 f"{fmt_point(fits[0].point)}: {why}")
            if lineage.checkpoint(t.config) == "best" and source.spec.selection is None:
                raise SpaceError(sweep.source, f"{key}.checkpoint",
                                 f"'best' needs stages.{lineage.source_stage}.report.selection (a val metric) to "
                                 "say what best means; use 'final'")
            stage.sources[t.index] = fits[0]


def sampled_json(spec: dict[str, Any], values: dict[str, Any], stage: str) -> dict[str, Any]:
    """A grid point's JSON form (`Trial.to_json`) with an Optuna sample's continuous values set at
    their dotted keys and validated; the key is that of the sampled config, the point gains the
    values."""
    spec = copy.deepcopy(spec)
    for key, value in values.items():
        set_dotted(spec["trial"], key, value)
    config = trainables.get(spec["trial"]["trainable"]).config.model_validate(spec["trial"])
    spec["trial"] = config.model_dump(mode="json")
    spec["meta"]["trial_key"] = Trial(stage, -1, spec["meta"]["point"], config).key
    spec["meta"]["point"] = {**spec["meta"]["point"], **values}
    return spec


# ---------------------------------------------------------------------------------------------
# Helpers: dotted keys into the pydantic trial models
# ---------------------------------------------------------------------------------------------


def _field_annotation(source: str, where: str, model: type[BaseModel], dotted: str) -> Any:
    current: Any = model
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = model_fields_of(current)
        if fields is None:
            raise SpaceError(source, where, f"{'.'.join(parts[:i])!r} is a value, not a section")
        if part not in fields:
            section = ".".join(parts[:i]) or "the trial config"
            raise SpaceError(source, where, f"unknown key {part!r} in {section}; expected one of {', '.join(fields)}")
        info = fields[part]
        current = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return current


def _check_values(source: str, where: str, annotation: Any, values: list[Any]) -> None:
    adapter = TypeAdapter(annotation)
    for i, value in enumerate(values):
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            raise SpaceError(source, f"{where}[{i}]", f"value {value!r}: {message(e.errors()[0], None)}") from None


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = config
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise TypeError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def _in_base(base: dict[str, Any], loc: str) -> bool:
    node: Any = base
    for p in loc.split(".") if loc else []:
        p = p.split("[", 1)[0]  # "test[1]": the list at "test"
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return bool(loc)
