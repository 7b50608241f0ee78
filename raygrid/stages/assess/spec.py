"""The assess trainable `assess`: its record for the planner, the preflight and the runner.

Torch-free: the dry run reads it."""

from __future__ import annotations

from raygrid.costs import forward_gflops
from raygrid.spec.datasets import BENCHMARKS
from raygrid.spec.trainables import BackboneWeights, DatasetNeeds, LocalFile, TrainableSpec, WeightNeed
from raygrid.stages.assess.config import AssessConfig

BASE_METRICS = ("srcc", "plcc", "krcc", "abs_srcc")


def reported_metrics(config: AssessConfig | None) -> set[str]:
    return set(BASE_METRICS)


def weight_needs(c: AssessConfig) -> list[WeightNeed]:
    needs: list[WeightNeed] = [BackboneWeights(c.fidelity.backbone, c.fidelity.weights, "fidelity.weights")]
    if c.fidelity.alpha_beta.startswith("file:"):
        needs.append(LocalFile(c.fidelity.alpha_beta[len("file:"):], "fidelity.alpha_beta", "file"))
    return needs


def datasets(c: AssessConfig) -> DatasetNeeds:
    return DatasetNeeds(benchmarks=frozenset({c.benchmark} | ({c.fit_on} if c.fit_on else set())))


def gflops(c: AssessConfig, steps: int) -> float:
    px = (c.image_size or 512) ** 2
    fwd = 2 * forward_gflops(c.fidelity.backbone, px)
    info = BENCHMARKS.get(c.benchmark)
    n = info.size if info else 1000
    if c.max_pairs is not None:
        n = min(n, c.max_pairs)
    total = n * fwd
    if c.fit_on is not None:
        total += 3 * fwd * c.batch_size * c.budget.steps
    return total


def headline(names: list[str]) -> list[str]:
    """The benchmark's SRCC."""
    return [m for m in ("srcc",) if m in names]


SPEC = TrainableSpec(
    name="assess",
    stage="assess",
    config=AssessConfig,
    loop="raygrid.stages.assess.loop:train_loop_per_worker",
    reported_metrics=reported_metrics,
    weight_needs=weight_needs,
    datasets=datasets,
    gflops=gflops,
    headline=headline,
)
