"""Trainables: one record per kind of trial, so that nothing outside its stage package branches on
a trainable's name.

A `TrainableSpec` bundles what the rest of raygrid asks about a trainable: its stage, its config
model, where its Ray Train loop is (imported only when a trial starts), the metrics it reports,
the pretrained files and datasets a trial needs (the preflight checks them before anything
runs), its FLOP count (the dry run's GPU-hours) and, for trainables that start from another
stage's runs, its lineage. Each stage package defines its record in `spec.py` (torch-free); the
registry below lists them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

# ---------------------------------------------------------------------------------------------
# What a trial needs before it can start
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneWeights:
    """A backbone's pretrained weights (raygrid.weights.check_weights)."""

    backbone: str
    weights: str
    key: str  # dotted key of the trial config that asks for them, for the error line


@dataclass(frozen=True)
class NRMetric:
    """A no-reference pyiqa evaluator and its checkpoint."""

    name: str
    key: str


@dataclass(frozen=True)
class LocalFile:
    """A file named in the trial config (a warm-start checkpoint, fitted α/β)."""

    path: str
    key: str
    what: str  # how the error line names it


@dataclass(frozen=True)
class GeneratorCheckpoint:
    """A generator's warm-start checkpoint (raygrid.spec.generators.resolve_checkpoint): a
    checkpoint name found in the weights dir, "official", a local file or an s3:// object."""

    arch: str
    preset: str
    scale: int
    checkpoint: str
    key: str


WeightNeed = BackboneWeights | NRMetric | LocalFile | GeneratorCheckpoint


@dataclass(frozen=True)
class DatasetNeeds:
    sr_sets: frozenset[str] = frozenset()  # SR set names or paths
    benchmarks: frozenset[str] = frozenset()  # IQA benchmark names or csv: sets
    # (SR training set, HR crop side): every image of the set must be at least that large
    sr_crops: frozenset[tuple[str, int]] = frozenset()


# ---------------------------------------------------------------------------------------------
# Lineage: trials that start from a checkpoint of another stage's runs
# ---------------------------------------------------------------------------------------------


class Lineage:
    """How a trainable's trials find the run they start from (the transfer stage initialises IQA
    backbones from optimize runs' discriminators). Subclasses answer on typed configs: the
    planner uses `accepts` on the source stage's trials, the runner on the source runs' configs."""

    source_stage: str  # the stage whose runs are the sources
    key: str  # dotted key of the config that describes the source (for error lines)

    def wants(self, config: BaseModel) -> bool:
        """True if this trial starts from a source run the sweep has to find."""
        raise NotImplementedError

    def accepts(self, config: BaseModel, source: BaseModel) -> bool:
        """True if a source trial with config `source` is the one this trial's rule names."""
        raise NotImplementedError

    def refuse(self, config: BaseModel, source: BaseModel) -> str | None:
        """Why an accepted source cannot initialise this trial (e.g. its trunk never trained), or None."""
        return None

    def describe(self, config: BaseModel) -> str:
        """What the trial needs, as a phrase ("discriminator 'patch_vgg16' with ...")."""
        raise NotImplementedError

    def checkpoint(self, config: BaseModel) -> Literal["final", "best"]:
        """Which checkpoint of the source run: its final one, or its best by the source stage's
        selection metric (a val metric)."""
        raise NotImplementedError

    def attach(self, config: BaseModel, checkpoint: str) -> BaseModel:
        """The config that starts from `checkpoint` (a state.pt path or URI)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainableSpec:
    name: str
    stage: str  # the stage it implements (assess, optimize, transfer)
    config: type[BaseModel]  # the trial config model (strict; its `trainable` field is `name`)
    loop: str  # "module:function" of the Ray Train loop, imported when a trial starts
    reported_metrics: Callable[[Any | None], set[str]]  # given a config (None: any config)
    weight_needs: Callable[[Any], list[WeightNeed]]
    datasets: Callable[[Any], DatasetNeeds]
    gflops: Callable[[Any, int], float]  # (config, steps) -> total GFLOPs of the trial
    # the metrics a sweep's results are summarised by (the axis ranking, summaries), picked from
    # the names a stage's runs logged
    headline: Callable[[list[str]], list[str]] = lambda names: []
    lineage: Lineage | None = None

    def load_loop(self) -> Callable[[dict[str, Any]], None]:
        module, _, function = self.loop.partition(":")
        return getattr(importlib.import_module(module), function)


@functools.cache
def registry() -> dict[str, TrainableSpec]:
    """Every trainable, by name. The stage packages are listed here, not discovered."""
    from raygrid.stages.assess.spec import SPEC as assess
    from raygrid.stages.optimize.spec import SPEC as optimize
    from raygrid.stages.transfer.spec import SPEC as transfer

    return {s.name: s for s in (assess, optimize, transfer)}


def get(name: str) -> TrainableSpec:
    try:
        return registry()[name]
    except KeyError:
        raise ValueError(f"unknown trainable {name!r}; expected one of {', '.join(registry())}") from None


def for_stage(stage: str) -> TrainableSpec:
    """The record of the trainable that implements `stage`."""
    found = [s for s in registry().values() if s.stage == stage]
    if not found:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(s.stage for s in registry().values())}")
    return found[0]


def of(config: BaseModel) -> TrainableSpec:
    """The record of a trial config (by its `trainable` field)."""
    return get(config.trainable)
