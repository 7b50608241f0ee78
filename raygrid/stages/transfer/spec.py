"""The transfer trainable `iqa_finetune`: its record for the planner, the preflight and the
runner, including its lineage (trials initialised from an optimize run's discriminator).

Torch-free: the dry run reads it."""

from __future__ import annotations

from typing import Literal

from raygrid.costs import forward_gflops
from raygrid.spec.datasets import BENCHMARKS
from raygrid.spec.trainables import (
    BackboneWeights,
    DatasetNeeds,
    Lineage,
    TrainableSpec,
    WeightNeed,
)
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.transfer.config import IQAFinetuneConfig

BASE_METRICS = ("val/srcc", "val/plcc", "loss/train")


def reported_metrics(config: IQAFinetuneConfig | None) -> set[str]:
    tests = config.data.test if config is not None else list(BENCHMARKS)
    return set(BASE_METRICS) | {f"test/{t}/srcc" for t in tests} | {f"test/{t}/plcc" for t in tests}


def weight_needs(c: IQAFinetuneConfig) -> list[WeightNeed]:
    if c.model.init != "imagenet":
        return []  # random init, or a discriminator trunk found by lineage
    return [BackboneWeights(c.model.backbone, c.model.weights, "model.weights")]


def datasets(c: IQAFinetuneConfig) -> DatasetNeeds:
    return DatasetNeeds(benchmarks=frozenset({c.data.train, *c.data.test}))


def gflops(c: IQAFinetuneConfig, steps: int) -> float:
    px = c.data.image_size ** 2
    images = 2 if c.model.kind == "fr" else 1
    fwd = forward_gflops(c.model.backbone, px) * images
    total = 3 * fwd * c.data.batch_size * steps
    evals = steps // c.budget.eval_every + 1
    for name in [c.data.train, *c.data.test]:
        info = BENCHMARKS.get(name)
        n = info.size // 5 if info else 1000  # val/test splits are about a fifth of a set
        if c.data.max_images is not None:
            n = min(n, c.data.max_images)
        total += evals * n * fwd
    return total


class DiscriminatorLineage(Lineage):
    """init "discriminator": the backbone starts from the trunk of the discriminator
    `<head>_<backbone>` of the one optimize run the rule in `model.discriminator` names (cell and
    seed; raygrid.stages.transfer.config.DiscriminatorSource). A source whose trunk was frozen is
    refused: its trunk is its starting weights, an init the grid already has."""

    source_stage = "optimize"
    key = "base.model.discriminator"

    def wants(self, config: IQAFinetuneConfig) -> bool:
        return config.model.init == "discriminator" and not config.model.discriminator_checkpoint

    @staticmethod
    def discriminator(config: IQAFinetuneConfig) -> str:
        return f"{config.model.discriminator.head}_{config.model.backbone}"

    @staticmethod
    def seed(config: IQAFinetuneConfig) -> int:
        rule = config.model.discriminator.seed
        return config.seed if rule == "same" else rule

    def accepts(self, config: IQAFinetuneConfig, source: object) -> bool:
        src = config.model.discriminator
        return (isinstance(source, SRGanConfig)
                and source.adversarial.discriminator == self.discriminator(config)
                and source.fidelity.backbone == src.fidelity_backbone
                and source.loss.adversarial_weight == src.adversarial_weight
                and source.adversarial.weights == src.weights
                and source.seed == self.seed(config))

    def refuse(self, config: IQAFinetuneConfig, source: SRGanConfig) -> str | None:
        if source.adversarial.trunk_trained:
            return None
        return (f"the source's discriminator trunk was frozen (adversarial.trunk_trainable false): it is its "
                f"starting weights ({source.adversarial.weights!r}) by construction, not a trunk the GAN trained; "
                "name a cell whose trunk trains")

    def describe(self, config: IQAFinetuneConfig) -> str:
        src = config.model.discriminator
        return (f"discriminator {self.discriminator(config)!r} with fidelity.backbone {src.fidelity_backbone!r}, "
                f"loss.adversarial_weight {src.adversarial_weight}, adversarial.weights {src.weights!r} "
                f"and seed {self.seed(config)}")

    def checkpoint(self, config: IQAFinetuneConfig) -> Literal["final", "best"]:
        return config.model.discriminator.checkpoint

    def attach(self, config: IQAFinetuneConfig, checkpoint: str) -> IQAFinetuneConfig:
        model = config.model.model_copy(update={"discriminator_checkpoint": checkpoint})
        return config.model_copy(update={"model": model})


def headline(names: list[str]) -> list[str]:
    """SRCC on every test benchmark (`test/<benchmark>/srcc`)."""
    return sorted(m for m in names if m.startswith("test/") and m.count("/") == 2 and m.endswith("/srcc"))


SPEC = TrainableSpec(
    name="iqa_finetune",
    stage="transfer",
    config=IQAFinetuneConfig,
    loop="raygrid.stages.transfer.loop:train_loop_per_worker",
    reported_metrics=reported_metrics,
    weight_needs=weight_needs,
    datasets=datasets,
    gflops=gflops,
    lineage=DiscriminatorLineage(),
    headline=headline,
)
