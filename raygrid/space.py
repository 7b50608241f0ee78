"""Search spaces: YAML → validated pydantic models → the list of trials of each stage.

A search space names stages (assess, optimize, transfer). Each stage has a trainable, a `base`
trial config, grid `axes` (dotted keys into the trial config, each a list of values), `linked`
axes (a named choice that sets several keys together), `conditions` between axes, `seeds`, a
per-trial `budget`, a `scheduler`, an optional Optuna `search`, and `resources` per trial.

Every mistake is a `SpaceError` whose one-line message names the file, the dotted key and what was
expected; nothing unknown is ignored.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from raygrid import catalog
from raygrid.config import TRIAL_CONFIGS, Budget, Strict, reported_metrics

STAGE_ORDER = ("assess", "optimize", "transfer")
SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class SpaceError(ValueError):
    """A search space that cannot be run. `str(err)` is one line: `file: dotted.key: message`."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


# ---------------------------------------------------------------------------------------------
# The YAML schema
# ---------------------------------------------------------------------------------------------


class Predicate(Strict):
    """A test on one axis value. Several fields in one predicate must all hold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eq: Any = None
    ne: Any = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_eq(cls, data: Any) -> Any:
        # `{fit_on: kadid10k}` is shorthand for `{fit_on: {eq: kadid10k}}`
        return data if isinstance(data, dict) else {"eq": data}

    def listed_values(self) -> list[Any]:
        """Values the predicate names explicitly (checked against the axis values)."""
        named = [getattr(self, k) for k in ("eq", "ne") if k in self.model_fields_set]
        return named + list(self.in_ or []) + list(self.not_in or [])

    def holds(self, value: Any) -> bool:
        s = self.model_fields_set
        if "eq" in s and value != self.eq:
            return False
        if "ne" in s and value == self.ne:
            return False
        for op, bound in (("gt", self.gt), ("ge", self.ge), ("lt", self.lt), ("le", self.le)):
            if bound is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            if not {"gt": value > bound, "ge": value >= bound, "lt": value < bound,
                    "le": value <= bound}[op]:
                return False
        if self.in_ is not None and value not in self.in_:
            return False
        if self.not_in is not None and value in self.not_in:
            return False
        return True


class Condition(Strict):
    """Keep a combination only if: when every `if` predicate holds, every `then` predicate holds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    if_: dict[str, Predicate] = Field(alias="if")
    then: dict[str, Predicate]

    def keeps(self, point: dict[str, Any]) -> bool:
        if all(p.holds(point[k]) for k, p in self.if_.items()):
            return all(p.holds(point[k]) for k, p in self.then.items())
        return True


class SchedulerSpec(Strict):
    kind: Literal["asha", "none"] = "none"
    metric: str
    mode: Literal["min", "max"]
    grace_period: Annotated[int, Field(gt=0)] | None = None  # in steps (ASHA)
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0

    @model_validator(mode="after")
    def _asha_needs_grace(self) -> SchedulerSpec:
        if self.kind == "asha" and self.grace_period is None:
            raise ValueError("ASHA needs grace_period (in steps)")
        return self


class Distribution(Strict):
    """One continuous (or categorical) parameter for Optuna; exactly one of the forms."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = None
    when: dict[str, Predicate] = {}  # sample only when these axis predicates hold; else base value

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        forms = [f for f in ("uniform", "loguniform", "choice") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError("expected exactly one of uniform: [lo, hi], loguniform: [lo, hi], choice: [...]")
        for f in ("uniform", "loguniform"):
            lo_hi = getattr(self, f)
            if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{f}: expected [low, high] with low < high, got {list(lo_hi)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: the low end must be > 0")
        return self


class SearchSpec(Strict):
    """Optuna over the valid grid points (as one categorical) plus continuous parameters."""

    kind: Literal["optuna"] = "optuna"
    num_samples: Annotated[int, Field(gt=0)]
    params: dict[str, Distribution] = {}
    seed: int = 0


class Resources(Strict):
    workers: Annotated[int, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker


class StageSpec(Strict):
    trainable: Literal[tuple(TRIAL_CONFIGS)]  # type: ignore[valid-type]
    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    linked: dict[str, dict[str, dict[str, Any]]] = {}
    conditions: list[Condition] = []
    seeds: list[int] = [0]
    budget: Budget
    scheduler: SchedulerSpec
    search: SearchSpec | None = None
    resources: Resources = Resources()
    max_failures: Annotated[int, Field(ge=0)] = 2  # Tune-level retries of a failed trial


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    data_root: str | None = None  # local folder or s3:// prefix; default: the raygrid cache
    stages: dict[Literal[STAGE_ORDER], StageSpec]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _some_stage(self) -> SweepSpec:
        if not self.stages:
            raise ValueError("expected at least one stage (assess, optimize, transfer)")
        return self


# ---------------------------------------------------------------------------------------------
# Expanded trials
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    stage: str
    index: int
    point: dict[str, Any]  # the axis values that make this trial (axes, linked names, seed)
    config: dict[str, Any]  # the full resolved trial config (validated)

    @property
    def key(self) -> str:
        """Stable identity of the trial: the hash of its resolved config (used for dedup/resume)."""
        blob = json.dumps({"stage": self.stage, "config": self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Stage:
    name: str
    spec: StageSpec
    trials: list[Trial] = field(default_factory=list)
    grid_size: int = 0  # combinations before conditions

    @property
    def num_trials(self) -> int:
        return self.spec.search.num_samples if self.spec.search else len(self.trials)


@dataclass
class Sweep:
    spec: SweepSpec
    source: str
    stages: dict[str, Stage]

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def resolve_space_path(space: str) -> Path:
    """A bare name resolves to search_spaces/NAME.yaml; anything with a suffix or slash is a path."""
    if space.endswith((".yaml", ".yml")) or "/" in space or "\\" in space:
        path = Path(space).expanduser()
    else:
        path = SPACES_DIR / f"{space}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
            raise SpaceError(str(path), "", f"no search space named {space!r}; known: {', '.join(known)}")
    if not path.exists():
        raise SpaceError(str(path), "", "file not found")
    return path


def load_space(space: str | Path) -> Sweep:
    path = resolve_space_path(str(space))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise SpaceError(str(path), where, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_space(raw, source=str(path))


def parse_space(raw: Any, source: str = "<space>") -> Sweep:
    if not isinstance(raw, dict):
        raise SpaceError(source, "", f"expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise _from_validation(source, e, SweepSpec) from None
    stages = {}
    for name in STAGE_ORDER:
        if name in spec.stages:
            stages[name] = _expand_stage(source, name, spec.stages[name])
    sweep = Sweep(spec=spec, source=source, stages=stages)
    _check_transfer_sources(sweep)
    return sweep


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------


def _expand_stage(source: str, name: str, spec: StageSpec) -> Stage:
    where = f"stages.{name}"
    model = TRIAL_CONFIGS[spec.trainable]
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
            raise SpaceError(source, where, f"two grid points give the same trial config: {_fmt(other)} "
                             f"and {_fmt(point)} (an axis has no effect on them)")
        seen[trial.key] = trial.index
        trials.append(trial)
    if not trials:
        raise SpaceError(source, f"{where}.conditions", "the conditions remove every trial of the grid")

    stage = Stage(name=name, spec=spec, trials=trials, grid_size=grid_size)
    _check_scheduler(source, where, spec, model, trials[0].config)
    if spec.search is not None:
        _check_search(source, where, spec, model, dims)
    return stage


def _resolve_config(source: str, where: str, spec: StageSpec, model: type[BaseModel],
                    point: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(spec.base)
    overrides: dict[str, Any] = {}
    for key, value in point.items():
        if key in spec.linked:
            overrides.update(spec.linked[key][value])
        elif key != "seed":
            overrides[key] = value
    for key, value in overrides.items():
        _set_dotted(config, key, copy.deepcopy(value))
    config["seed"] = point["seed"]
    config["budget"] = spec.budget.model_dump()
    try:
        return model.model_validate(config).model_dump(mode="json")
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = _message(err, model)
        hit = [k for k in overrides if loc == k or loc.startswith(k + ".")]
        if hit:
            key, value = hit[0], overrides[hit[0]]
            values = spec.axes.get(key, [])
            at = f"[{values.index(value)}]" if value in values else ""
            raise SpaceError(source, f"{where}.axes.{key}{at}", f"value {value!r}: {msg}") from None
        related = [k for k in overrides if k.startswith(loc + ".") or not loc]
        if related or not _in_base(spec.base, loc):
            combo = {k: point[k] for k in point if k != "seed"}
            raise SpaceError(source, where + (f".{loc}" if loc else ""),
                             f"impossible combination {_fmt(combo)}: {msg}") from None
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


def _check_scheduler(source: str, where: str, spec: StageSpec, model: type[BaseModel],
                     example: dict[str, Any]) -> None:
    sched = spec.scheduler
    known = reported_metrics(spec.trainable, model.model_validate(example))
    if sched.metric not in known:
        raise SpaceError(source, f"{where}.scheduler.metric",
                         f"{sched.metric!r} is not reported by {spec.trainable}; expected one of "
                         f"{', '.join(sorted(known))}")
    if sched.kind == "asha":
        if sched.grace_period > spec.budget.steps:
            raise SpaceError(source, f"{where}.scheduler.grace_period",
                             f"{sched.grace_period} is beyond the budget of {spec.budget.steps} steps")
        if sched.grace_period < spec.budget.eval_every:
            raise SpaceError(source, f"{where}.scheduler.grace_period",
                             f"{sched.grace_period} is shorter than eval_every ({spec.budget.eval_every}): "
                             "ASHA would decide before the first evaluation")


def _check_search(source: str, where: str, spec: StageSpec, model: type[BaseModel],
                  dims: dict[str, list[Any]]) -> None:
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


def _check_transfer_sources(sweep: Sweep) -> None:
    """init: discriminator needs optimize trials with that discriminator (when optimize is here)."""
    transfer, optimize = sweep.stages.get("transfer"), sweep.stages.get("optimize")
    if transfer is None or optimize is None:
        return
    available = {
        (t.config["adversarial"]["discriminator"], t.config["fidelity"]["backbone"],
         t.config["loss"]["adversarial_weight"])
        for t in optimize.trials
    }
    for t in transfer.trials:
        m = t.config["model"]
        if m["init"] != "discriminator" or m["discriminator_checkpoint"]:
            continue
        src = m["discriminator"]
        disc = f"{src['head']}_{m['backbone']}"
        ok = any(d == disc and fb == src["fidelity_backbone"]
                 and (src["adversarial_weight"] is None or w == src["adversarial_weight"])
                 for d, fb, w in available)
        if not ok:
            raise SpaceError(
                sweep.source, "stages.transfer.base.model.discriminator",
                f"impossible combination {_fmt(t.point)}: no optimize trial has discriminator {disc!r} "
                f"with fidelity.backbone {src['fidelity_backbone']!r}"
                + (f" and loss.adversarial_weight {src['adversarial_weight']}" if src["adversarial_weight"] else ""),
            )


# ---------------------------------------------------------------------------------------------
# Helpers: dotted keys into the pydantic trial models, error messages
# ---------------------------------------------------------------------------------------------


def _field_annotation(source: str, where: str, model: type[BaseModel], dotted: str) -> Any:
    current: Any = model
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = _model_fields(current)
        if fields is None:
            raise SpaceError(source, where, f"{'.'.join(parts[:i])!r} is a value, not a section")
        if part not in fields:
            section = ".".join(parts[:i]) or "the trial config"
            raise SpaceError(source, where, f"unknown key {part!r} in {section}; expected one of {', '.join(fields)}")
        info = fields[part]
        current = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return current


def _model_fields(tp: Any) -> dict[str, Any] | None:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    # Optional[Model]
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg.model_fields
    return None


def _check_values(source: str, where: str, annotation: Any, values: list[Any]) -> None:
    adapter = TypeAdapter(annotation)
    for i, value in enumerate(values):
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            raise SpaceError(source, f"{where}[{i}]", f"value {value!r}: {_message(e.errors()[0], None)}") from None


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
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
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return bool(loc)


def _message(err: dict[str, Any], root: type[BaseModel] | None) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_at(root, err["loc"][:-1]) if root else None
        return "unknown key" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required key is missing"
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    return msg


def _allowed_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at `loc` (for "unknown key" messages); None when it cannot tell."""
    current: Any = root
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = _model_fields(current)
        if fields is None or part not in fields:
            return None
        current = _unwrap(fields[part].annotation)
        if get_origin(current) is dict and parts:  # dict[name, Model]: skip the key
            parts.pop(0)
            current = _unwrap(get_args(current)[1])
    fields = _model_fields(current)
    return [f.alias or n for n, f in fields.items()] if fields else None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) is not dict and len(args) == 1 and _model_fields(args[0]) is not None:
        return args[0]  # Optional[Model]
    return tp


def _from_validation(source: str, e: ValidationError, root: type[BaseModel]) -> SpaceError:
    errors = e.errors()
    # A misspelt key also makes the right key "missing": report the misspelling first.
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return SpaceError(source, loc, _message(err, root) + more)


def _fmt(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in point.items()) + "}"
