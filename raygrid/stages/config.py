"""What the trial configs of every stage share: strict models, name validators, the budget, the
runtime settings and the fidelity measure's settings.

A trial config is what one Tune trial (one Train run) receives: fully resolved, validated, and
logged to MLflow as flattened params. Each stage's model is in `raygrid.stages.<stage>.config`.
Search spaces (`raygrid.space`) set values in these models by dotted keys (``fidelity.backbone``);
an unknown key, a wrong type or an unknown name is an error.

No torch here: the dry run validates every trial of the paper grid in well under a second.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from raygrid.spec.backbones import is_backbone, unknown_backbone
from raygrid.spec.datasets import BENCHMARKS, CSV_PREFIX, SR_SETS, is_benchmark
from raygrid.spec.discriminators import NO_DISCRIMINATOR, split_discriminator


class Strict(BaseModel):
    """Unknown keys are errors, never ignored (the BasicSR trap)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KeyedValueError(ValueError):
    """A model validator's error about one key below the model (e.g. `test[1]` of a data section):
    pydantic reports it at the model, the search space names `<model key>.<key>` (raygrid.space)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


def _check_weights_spec(value: str) -> str:
    # "imagenet" (the backbone's standard pretrained weights in raygrid.weights' manifest:
    # ImageNet for the CNNs and Swin, OpenAI for CLIP, LVD-142M for DINOv2, the fixed-seed random
    # init for VGG-16-R), "random", a library's pretrained tag, or "file:PATH".
    # Whether the file exists is checked by raygrid.weights before a sweep starts.
    if not value or (value.startswith("file:") and len(value) == len("file:")):
        raise ValueError("expected 'random', 'imagenet', a pretrained tag or 'file:PATH'")
    return value


def _check_backbone(value: str) -> str:
    if not is_backbone(value):
        raise ValueError(unknown_backbone(value))
    return value


def _check_benchmark(value: str) -> str:
    if not is_benchmark(value):
        raise ValueError(
            f"unknown dataset {value!r}; expected one of {', '.join(BENCHMARKS)} or '{CSV_PREFIX}<meta-info csv>'"
        )
    return value


def check_sr_set(value: str, role: str) -> str:
    names = [n for n, s in SR_SETS.items() if s.role == role]
    if value not in names and not value.startswith(("/", "./", "s3://", "~")):
        raise ValueError(
            f"unknown SR {role} set {value!r}; expected one of {', '.join(names)} or a path/s3:// URI"
        )
    return value


def _check_discriminator(value: str) -> str:
    if value != NO_DISCRIMINATOR:
        split_discriminator(value)  # raises with the list of names
    return value


BackboneName = Annotated[str, AfterValidator(_check_backbone)]
DiscriminatorName = Annotated[str, AfterValidator(_check_discriminator)]
WeightsSpec = Annotated[str, AfterValidator(_check_weights_spec)]
BenchmarkName = Annotated[str, AfterValidator(_check_benchmark)]


class Budget(Strict):
    """Per-trial budget. `steps` is the scheduler's time attribute (monotonic across restarts)."""

    steps: PositiveInt
    eval_every: PositiveInt

    @model_validator(mode="after")
    def _eval_within_budget(self) -> Budget:
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) is larger than steps ({self.steps})")
        return self


class Runtime(Strict):
    """How the train loop runs. None of these settings changes what is trained; the two that
    change numerics (`amp`, `tf32`) are resolved for the device at the start of every run and
    recorded with its results: metrics `runtime/bf16`, `runtime/tf32`, `runtime/fused_adam`,
    `runtime/lr_on_device` (1 or 0) in every report, `"runtime"` in each checkpoint's meta.json,
    and the MLflow param `runtime.precision` (bf16 | fp32). docs/training.md."""

    # bf16 autocast of the networks' forward passes. auto: bf16 on CUDA, fp32 elsewhere
    amp: Literal["auto", "bf16", "off"] = "auto"
    # TF32 tensor-core matmuls and convolutions for fp32 work on CUDA (10-bit mantissa products,
    # fp32 accumulation). auto: on on CUDA; no effect on other devices
    tf32: bool | Literal["auto"] = "auto"
    # torch's fused (single-kernel) Adam. auto: on on CUDA; same update up to float rounding
    fused_adam: bool | Literal["auto"] = "auto"
    # make the LR image from the HR crop on the training device (the loader then only crops);
    # the same antialiased bicubic + 8-bit rounding as the loader. auto: on on CUDA
    lr_on_device: bool | Literal["auto"] = "auto"
    # steps between host reads of the on-device non-finite flag (and at every report); a
    # diverged run is stopped at most this many steps late and names the first bad step exactly
    finite_check_every: PositiveInt = 100
    # DataLoader workers per Train worker; "auto": the Train worker's CPUs minus one for the loop
    # (raygrid.data.stream.loader_workers)
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    threads: Annotated[int, Field(ge=0)] = 0  # torch threads per Train worker; 0 = torch default


# How a train loop ends a run early (the last report carries one of these = the step; the Tune
# driver's MLflow callback turns it into the tags raygrid.outcome / outcome_step / outcome_reason).
OUTCOME_PREFIX = "outcome/"
DIVERGED_AT = "outcome/diverged_at"  # a non-finite loss or gradient first seen at this step
COLLAPSED_AT = "outcome/collapsed_at"  # a collapse flag held for `health.patience` evaluations


class FidelityConfig(Strict):
    backbone: BackboneName
    weights: WeightsSpec = "imagenet"
    alpha_beta: str = "uniform"  # uniform | dists (official file, vgg16 only) | file:PATH

    @field_validator("alpha_beta")
    @classmethod
    def _alpha_beta(cls, v: str) -> str:
        if v not in ("uniform", "dists") and not (v.startswith("file:") and len(v) > 5):
            raise ValueError("expected 'uniform', 'dists' or 'file:PATH'")
        return v

    @model_validator(mode="after")
    def _dists_needs_vgg(self) -> FidelityConfig:
        if self.alpha_beta == "dists" and self.backbone != "vgg16":
            raise ValueError(
                f"alpha_beta 'dists' (the official DISTS weights) exists only for backbone "
                f"'vgg16', not {self.backbone!r}"
            )
        return self
