"""The optimize trainable `sr_gan`: its record for the planner, the preflight and the runner.

Torch-free: the dry run reads it."""

from __future__ import annotations

from raygrid.costs import forward_gflops
from raygrid.spec.backbones import BACKBONES
from raygrid.spec.datasets import SR_SETS
from raygrid.spec.discriminators import CONV_TRUNK, trunk_of
from raygrid.spec.generators import flop_key
from raygrid.spec.mlflow import metric_name
from raygrid.spec.trainables import (
    BackboneWeights,
    DatasetNeeds,
    GeneratorCheckpoint,
    LocalFile,
    NRMetric,
    TrainableSpec,
    WeightNeed,
)
from raygrid.stages.optimize.config import SRGanConfig

# Reported at every evaluation besides `step`; plus `<role>/<evaluator>` per panel member for each
# role that has sets (val: selection, test: the tables).
BASE_METRICS = (
    "loss/g_total", "loss/g_fidelity", "loss/g_adversarial", "loss/g_pixel", "loss/d", "d/real_acc",
    "d/fake_acc", "throughput/images_per_s",
    # the trainer's health signals (raygrid.stages.optimize.health); per-backbone gradient and
    # colour-shift keys (health/grad_sr/..., health/color_shift/...) come on top
    "d/real_logit_mean", "d/real_logit_std", "d/fake_logit_mean", "d/fake_logit_std", "grad_norm/g",
    "grad_norm/d", "health/collapse", "health/d_wins", "health/d_wins_streak", "health/stalled",
    "health/stalled_streak",
)


def reported_metrics(config: SRGanConfig | None) -> set[str]:
    backbones = config.eval.fidelity_backbones if config is not None else list(BACKBONES)
    evaluators = ["psnr_y", "ssim_y", *(metric_name("fidelity_" + b) for b in backbones)]
    if config is not None:
        evaluators += [metric_name(m) for m in config.eval.nr_metrics]
    roles = [r for r in ("val", "test") if config is None or getattr(config.data, r)]
    return set(BASE_METRICS) | {f"{role}/{e}" for role in roles for e in evaluators}


def weight_needs(c: SRGanConfig) -> list[WeightNeed]:
    needs: list[WeightNeed] = [BackboneWeights(c.fidelity.backbone, c.fidelity.weights, "fidelity.weights")]
    needs += [BackboneWeights(b, c.eval.weights, "eval.weights") for b in c.eval.fidelity_backbones]
    trunk = trunk_of(c.adversarial.discriminator)
    if trunk not in (None, CONV_TRUNK):  # the conv trunk trains from scratch
        needs.append(BackboneWeights(trunk, c.adversarial.weights, "adversarial.weights"))
    needs += [NRMetric(m, "eval.nr_metrics") for m in c.eval.nr_metrics]
    g = c.generator
    if g.checkpoint:
        needs.append(GeneratorCheckpoint(g.arch, g.preset, g.scale, g.checkpoint, "generator.checkpoint"))
    if c.fidelity.alpha_beta.startswith("file:"):
        needs.append(LocalFile(c.fidelity.alpha_beta[len("file:"):], "fidelity.alpha_beta", "file"))
    return needs


def datasets(c: SRGanConfig) -> DatasetNeeds:
    return DatasetNeeds(sr_sets=frozenset({c.data.train, *c.data.val, *c.data.test}),
                        sr_crops=frozenset({(c.data.train, c.data.hr_crop)}))


def gflops(c: SRGanConfig, steps: int) -> float:
    crop = c.data.hr_crop
    hr_px, lr_px = crop * crop, (crop // 4) ** 2
    gen = flop_key(c.generator.arch, c.generator.preset)
    per_image = 3 * forward_gflops(gen, lr_px)  # G forward + backward
    # fidelity: forward+input-grad on SR, forward on HR
    per_image += 3 * forward_gflops(c.fidelity.backbone, hr_px)
    trunk = trunk_of(c.adversarial.discriminator)
    if trunk is not None:
        # D step: real+fake forward+backward (2×3); G step: fake forward + input grad (2)
        per_image += 8 * forward_gflops(trunk, hr_px)
    total = per_image * c.data.batch_size * steps
    # evaluation: every eval_every steps, G + every panel measure on each val image
    evals = steps // c.budget.eval_every
    for name in [*c.data.val, *c.data.test]:
        info = SR_SETS.get(name)
        if info is None:
            continue
        n = info.images if c.data.max_eval_images is None else min(info.images, c.data.max_eval_images)
        px = int(info.megapixels * 1e6)
        per_val = forward_gflops(gen, px // 16) + sum(2 * forward_gflops(b, px) for b in c.eval.fidelity_backbones)
        total += evals * n * per_val
    return total


def headline(names: list[str]) -> list[str]:
    """The pooled test metric of every evaluator (`test/<evaluator>`)."""
    return sorted(m for m in names if m.startswith("test/") and m.count("/") == 1 and not m.endswith(("_lo", "_hi")))


SPEC = TrainableSpec(
    name="sr_gan",
    stage="optimize",
    config=SRGanConfig,
    loop="raygrid.stages.optimize.loop:train_loop_per_worker",
    reported_metrics=reported_metrics,
    weight_needs=weight_needs,
    datasets=datasets,
    gflops=gflops,
    headline=headline,
)
