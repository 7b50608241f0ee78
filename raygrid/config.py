"""Typed trial configurations, one per trainable.

A trial config is what one Tune trial (one Train run) receives: fully resolved, validated, and
logged to MLflow as flattened params. Search spaces (`raygrid.space`) set values in these models by
dotted keys (``fidelity.backbone``); an unknown key, a wrong type or an unknown name is an error.

No torch here: the dry run validates every trial of the paper grid in well under a second.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from raygrid import catalog


class Strict(BaseModel):
    """Unknown keys are errors, never ignored (the BasicSR trap)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    if not catalog.is_backbone(value):
        raise ValueError(
            f"unknown backbone {value!r}; expected one of {', '.join(catalog.BACKBONES)} "
            f"or '{catalog.TIMM_PREFIX}<timm model name>'"
        )
    return value


def _check_benchmark(value: str) -> str:
    if not catalog.is_benchmark(value):
        raise ValueError(
            f"unknown dataset {value!r}; expected one of {', '.join(catalog.BENCHMARKS)} "
            f"or '{catalog.CSV_PREFIX}<meta-info csv>'"
        )
    return value


def _check_sr_set(value: str, role: str) -> str:
    names = [n for n, s in catalog.SR_SETS.items() if s.role == role]
    if value not in names and not value.startswith(("/", "./", "s3://", "~")):
        raise ValueError(
            f"unknown SR {role} set {value!r}; expected one of {', '.join(names)} or a path/s3:// URI"
        )
    return value


def _check_discriminator(value: str) -> str:
    if value != catalog.NO_DISCRIMINATOR:
        catalog.split_discriminator(value)  # raises with the list of names
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
    """How the train loop runs; does not change the experiment's meaning."""

    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    num_workers: Annotated[int, Field(ge=0)] = 2  # DataLoader workers per Train worker
    threads: Annotated[int, Field(ge=0)] = 0  # torch threads per Train worker; 0 = torch default


# ---------------------------------------------------------------------------------------------
# optimize: SwinIR x4 GAN trainer
# ---------------------------------------------------------------------------------------------


class GeneratorConfig(Strict):
    arch: Literal["swinir"] = "swinir"
    preset: Literal["m", "tiny"] = "m"
    scale: Literal[4] = 4
    checkpoint: str | None = None  # PSNR-trained SwinIR file to warm-start from (params/params_ema)


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


class AdversarialConfig(Strict):
    discriminator: DiscriminatorName = catalog.NO_DISCRIMINATOR
    gan_loss: Literal[catalog.GAN_LOSSES] = "vanilla"  # type: ignore[valid-type]
    # "auto": fine-tune CNN trunks, freeze transformer trunks (projected-GAN style, as ADD does
    # with DINOv2); the paper does not say, so it is a setting.
    trunk_trainable: bool | Literal["auto"] = "auto"
    weights: WeightsSpec = "imagenet"
    lr: Annotated[float, Field(gt=0)] = 1e-4


class SRLossConfig(Strict):
    fidelity_weight: NonNegFloat = 1.0
    adversarial_weight: NonNegFloat = 0.0
    pixel_weight: NonNegFloat = 0.0  # optional L1


class SROptimConfig(Strict):
    lr: Annotated[float, Field(gt=0)] = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0


class SRDataConfig(Strict):
    train: str = "df2k"
    val: list[str] = ["set5", "set14", "bsd100", "urban100", "div2k_val"]
    hr_crop: PositiveInt = 256
    batch_size: PositiveInt = 16
    val_max_images: PositiveInt | None = None  # cap per val set (CPU demo); None = all

    @field_validator("train")
    @classmethod
    def _train(cls, v: str) -> str:
        return _check_sr_set(v, "train")

    @field_validator("val")
    @classmethod
    def _val(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one validation set")
        return [_check_sr_set(s, "test") for s in v]

    @field_validator("hr_crop")
    @classmethod
    def _crop(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"hr_crop {v} must be a multiple of the scale (4)")
        return v


class SREvalConfig(Strict):
    """The evaluator panel. Evaluators are independent of the loss; those sharing its backbone
    are flagged in the analysis."""

    fidelity_backbones: list[BackboneName] = list(catalog.BACKBONES)
    weights: WeightsSpec = "imagenet"
    nr_metrics: list[str] = []  # pyiqa names, e.g. musiq, maniqa, clipiqa, topiq_nr, niqe


class SRGanConfig(Strict):
    """One optimize trial: SwinIR trained with λ_fid·fidelity + λ_adv·adversarial (+ λ_pix·L1)."""

    trainable: Literal["sr_gan"] = "sr_gan"
    seed: int = 0
    budget: Budget = Budget(steps=100_000, eval_every=5_000)
    generator: GeneratorConfig = GeneratorConfig()
    fidelity: FidelityConfig
    adversarial: AdversarialConfig = AdversarialConfig()
    loss: SRLossConfig = SRLossConfig()
    optim: SROptimConfig = SROptimConfig()
    data: SRDataConfig = SRDataConfig()
    eval: SREvalConfig = SREvalConfig()
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _adversarial_pairs(self) -> SRGanConfig:
        none = self.adversarial.discriminator == catalog.NO_DISCRIMINATOR
        w = self.loss.adversarial_weight
        if none and w > 0:
            raise ValueError(
                f"loss.adversarial_weight is {w} but adversarial.discriminator is 'none': "
                "an adversarial loss needs a discriminator"
            )
        if not none and w == 0:
            raise ValueError(
                f"adversarial.discriminator is {self.adversarial.discriminator!r} but "
                "loss.adversarial_weight is 0: the 'none' discriminator pairs with weight 0 only"
            )
        return self


# ---------------------------------------------------------------------------------------------
# assess: fidelity measures as FR-IQA models
# ---------------------------------------------------------------------------------------------


class AssessConfig(Strict):
    """Score one fidelity measure on one FR benchmark (SRCC/PLCC/KRCC).

    With `fit_on`, α/β are first fitted on that set (the DISTS/pyiqa protocol: fit on KADID-10k,
    test on the others); fitted on the benchmark itself, they use its train split and are scored
    on its test split (split by reference image)."""

    trainable: Literal["assess"] = "assess"
    seed: int = 0
    budget: Budget = Budget(steps=1, eval_every=1)  # steps = α/β fitting steps when fit_on is set
    fidelity: FidelityConfig
    benchmark: BenchmarkName
    fit_on: BenchmarkName | None = None
    image_size: PositiveInt | None = None  # resize shorter side (None = native)
    batch_size: PositiveInt = 8
    lr: Annotated[float, Field(gt=0)] = 1e-3
    max_pairs: PositiveInt | None = None  # cap pairs per split (CPU demo)
    n_boot: Annotated[int, Field(ge=0)] = 1000
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _fr_only(self) -> AssessConfig:
        for key, name in (("benchmark", self.benchmark), ("fit_on", self.fit_on)):
            info = catalog.BENCHMARKS.get(name or "")
            if info is not None and info.mode != "FR":
                raise ValueError(f"{key} {name!r} is a no-reference set; fidelity measures need FR")
        return self

    @property
    def eval_split(self) -> str:
        """Where SRCC is measured: the test split when α/β are fitted on the same set's train
        split, otherwise every pair of the benchmark (nothing was fitted on it)."""
        return "test" if self.fit_on == self.benchmark else "all"


# ---------------------------------------------------------------------------------------------
# transfer: IQA models fine-tuned from ImageNet / a GAN discriminator / random
# ---------------------------------------------------------------------------------------------


class DiscriminatorSource(Strict):
    """Which optimize run's discriminator trunk initialises the IQA backbone.

    The discriminator is `<head>_<IQA backbone>`; the run is the best finished optimize trial (by
    the optimize stage's metric) with this head, fidelity backbone and adversarial weight.
    """

    head: Literal[catalog.DISCRIMINATOR_HEADS] = "patch"  # type: ignore[valid-type]
    fidelity_backbone: BackboneName = "vgg16"
    adversarial_weight: Annotated[float, Field(gt=0)] | None = None  # None = any weight
    pick: Literal["best", "last"] = "best"


class IQAModelConfig(Strict):
    kind: Literal["nr", "fr"] = "nr"
    backbone: BackboneName
    init: Literal["imagenet", "discriminator", "random"] = "imagenet"
    weights: WeightsSpec = "imagenet"  # what init "imagenet" loads (the backbone's standard pretrained weights)
    discriminator: DiscriminatorSource = DiscriminatorSource()
    # The checkpoint whose discriminator trunk initialises the backbone (init "discriminator").
    # Filled in by the sweep from `discriminator` (lineage via MLflow); set it to use a file directly.
    discriminator_checkpoint: str | None = None

    @model_validator(mode="after")
    def _disc_trunk_exists(self) -> IQAModelConfig:
        if self.init == "discriminator" and self.backbone not in catalog.DISCRIMINATOR_TRUNKS:
            raise ValueError(
                f"init 'discriminator' needs a backbone that is also a discriminator trunk "
                f"({', '.join(t for t in catalog.DISCRIMINATOR_TRUNKS if t != 'conv')}), "
                f"not {self.backbone!r}"
            )
        return self


class IQADataConfig(Strict):
    train: BenchmarkName
    test: list[BenchmarkName]
    image_size: PositiveInt = 224
    batch_size: PositiveInt = 32
    max_images: PositiveInt | None = None  # cap per split (CPU demo)

    @field_validator("test")
    @classmethod
    def _test(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one test benchmark")
        return v


class IQAOptimConfig(Strict):
    lr: Annotated[float, Field(gt=0)] = 1e-4
    backbone_lr_mult: NonNegFloat = 0.1
    weight_decay: NonNegFloat = 1e-4
    loss: Literal["l1", "mse", "plcc"] = "l1"


class IQAFinetuneConfig(Strict):
    trainable: Literal["iqa_finetune"] = "iqa_finetune"
    seed: int = 0
    budget: Budget = Budget(steps=10_000, eval_every=1_000)
    model: IQAModelConfig
    data: IQADataConfig
    optim: IQAOptimConfig = IQAOptimConfig()
    n_boot: Annotated[int, Field(ge=0)] = 1000
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _mode_matches_sets(self) -> IQAFinetuneConfig:
        want = self.model.kind.upper()
        for name in [self.data.train, *self.data.test]:
            info = catalog.BENCHMARKS.get(name)
            if info is not None and want == "FR" and info.mode != "FR":
                raise ValueError(
                    f"model.kind is 'fr' but {name!r} is a no-reference set (no reference images)"
                )
        return self


TRIAL_CONFIGS: dict[str, type[Strict]] = {
    "sr_gan": SRGanConfig,
    "assess": AssessConfig,
    "iqa_finetune": IQAFinetuneConfig,
}

# Metrics each trainable reports (besides `step`); schedulers and summaries may only use these.
# `val/<evaluator>` keys of the SR panel are added per trial (see `reported_metrics`).
BASE_METRICS: dict[str, tuple[str, ...]] = {
    "sr_gan": (
        "val/psnr_y", "val/ssim_y", "loss/g_total", "loss/g_fidelity", "loss/g_adversarial",
        "loss/g_pixel", "loss/d", "d/real_acc", "d/fake_acc", "throughput/images_per_s",
    ),
    "assess": ("srcc", "plcc", "krcc", "abs_srcc"),
    "iqa_finetune": ("val/srcc", "val/plcc", "loss/train"),
}


def _metric_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name.replace("+", "_plus"))


def reported_metrics(trainable: str, config: Strict | None = None) -> set[str]:
    names = set(BASE_METRICS[trainable])
    if trainable == "sr_gan":
        backbones = config.eval.fidelity_backbones if config is not None else list(catalog.BACKBONES)
        # the evaluator panel's names (raygrid.metrics.panel.metric_name)
        names |= {f"val/{_metric_name('fidelity_' + b)}" for b in backbones}
        if config is not None:
            names |= {f"val/{_metric_name(m)}" for m in config.eval.nr_metrics}
    if trainable == "iqa_finetune":
        tests = config.data.test if config is not None else list(catalog.BENCHMARKS)
        names |= {f"test/{t}/srcc" for t in tests} | {f"test/{t}/plcc" for t in tests}
    return names
