"""Training health (issue 15) and the early end of a run that collapsed or diverged (issue 11 a):
the detectors on a discriminator that really wins, and the real loop skeleton (stages/loop.train
with the optimize step, a fake Context and ray.train.report captured) ending a collapsing run
"collapsed at step k" and a diverging one "diverged at step k", read back by the MLflow callback."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow_store import sweep_store

from raygrid.nets.discriminators import GANLoss
from raygrid.run.telemetry import TrialTelemetry
from raygrid.stages import loop
from raygrid.stages.config import COLLAPSED_AT, DIVERGED_AT
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.health import (
    COLLAPSE,
    D_WINS,
    D_WINS_STREAK,
    STALLED,
    STALLED_STREAK,
    DiscriminatorWins,
    HealthConfig,
    HealthMonitor,
    Stalled,
    outcome_from_result,
)
from raygrid.stages.optimize.models import SRGanModels, discriminator_stats


@functools.cache
def _photographs() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    return data.astronaut(), data.coffee()


def natural_crops(n: int, size: int, seed: int) -> torch.Tensor:
    """Random crops of scikit-image's astronaut and coffee photographs, in [0, 1]."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = _photographs()[i % 2]
        top, left = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        crops.append(torch.from_numpy(img[top:top + size, left:left + size].transpose(2, 0, 1).copy()))
    return torch.stack(crops).float() / 255


def tiny_discriminator() -> torch.nn.Module:
    """A small image-level discriminator (two strided convs, pooled, one logit)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(16, 32, 3, 2, 1),
        torch.nn.LeakyReLU(0.2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 1))


def _train_discriminator(fake_of, steps=120, every=8):
    """A discriminator trained on natural crops (real) vs `fake_of(real, step)` with the vanilla
    GAN loss; the monitor sees the window means of its logit statistics every `every` steps."""
    torch.manual_seed(0)
    d = tiny_discriminator()
    gan = GANLoss("vanilla")
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.9, 0.99))
    monitor = HealthMonitor(HealthConfig(d_wins_accuracy=0.95, patience=3), final_step=10_000)
    window, history = loop.LossWindow(), []
    for step in range(1, steps + 1):
        real = natural_crops(8, 32, seed=step)
        real_logits, fake_logits = d(real), d(fake_of(real, step))
        loss = gan.d_loss(real_logits, fake_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.add(discriminator_stats(real_logits.detach(), fake_logits.detach(), "vanilla"))
        if step % every == 0:
            metrics = window.read()
            history.append({**metrics, **monitor(step, metrics)})
    return history


def test_a_discriminator_that_wins_outright_raises_the_collapse_flag():
    # fake = the photographs with strong visible noise: easily told apart
    history = _train_discriminator(lambda real, step: (real + 0.3 * torch.randn_like(real)).clamp(0, 1))
    wins = [h[D_WINS] for h in history]
    assert wins[0] == 0.0  # the first window includes the untrained discriminator
    streak = 0
    for h, won in zip(history, wins):
        assert won == float(h["d/real_acc"] >= 0.95 and h["d/fake_acc"] >= 0.95)
        streak = streak + 1 if won else 0
        assert h[D_WINS_STREAK] == streak
        # the flag rises exactly when the streak reaches patience (3), with the step to stop at
        assert h[COLLAPSE] == float(streak >= 3) and (COLLAPSED_AT in h) == (streak >= 3)
    assert history[-1][COLLAPSE] == 1.0 and history[-1][COLLAPSED_AT] == 120


def test_a_discriminator_that_cannot_tell_real_from_fake_never_wins():
    # fake = other crops of the same photographs: nothing to tell apart
    history = _train_discriminator(lambda real, step: natural_crops(8, 32, seed=1000 + step))
    assert all(h[D_WINS] == 0.0 and h[COLLAPSE] == 0.0 and COLLAPSED_AT not in h for h in history)


def test_stalled_signals_flag_after_patience_and_any_movement_resets_them():
    stalled = Stalled(["d/fake_logit_mean", "loss/g_adversarial"], rtol=1e-3, atol=1e-6, patience=2)
    assert stalled.update({"d/fake_logit_mean": -3.0, "loss/g_adversarial": 0.5}) is None  # nothing before
    assert stalled.update({"d/fake_logit_mean": -3.001, "loss/g_adversarial": 0.5}) is True
    assert stalled.update({"d/fake_logit_mean": -3.2, "loss/g_adversarial": 0.5}) is False  # the logits moved
    assert stalled.streak == 0 and not stalled.held
    for _ in range(2):
        assert stalled.update({"d/fake_logit_mean": -3.2, "loss/g_adversarial": 0.5})
    assert stalled.held
    assert Stalled(["d/fake_logit_mean"], 0, 0, 1).update({"loss/g_total": 1.0}) is None  # not reported: no verdict


def test_monitor_judges_only_adversarial_runs_and_never_stops_at_the_last_step():
    cfg = HealthConfig(d_wins_accuracy=0.9, patience=1)
    assert HealthMonitor(cfg, final_step=30)(10, {"loss/g_total": 1.0, "loss/g_fidelity": 1.0}) == {}
    won = {"d/real_acc": 1.0, "d/fake_acc": 0.95, "d/fake_logit_mean": -5.0}
    m = HealthMonitor(cfg, final_step=30)
    assert m(10, won)[COLLAPSED_AT] == 10
    last = HealthMonitor(cfg, final_step=30)(30, won)
    assert last[COLLAPSE] == 1.0 and COLLAPSED_AT not in last  # it ran its budget: finished, flagged
    flag_only = HealthMonitor(cfg.model_copy(update={"stop": False}), final_step=30)(10, won)
    assert flag_only[COLLAPSE] == 1.0 and COLLAPSED_AT not in flag_only
    assert DiscriminatorWins(0.9, 1).update({"d/real_acc": 1.0, "d/fake_acc": 0.5}) is False


def test_monitor_streaks_survive_a_restart():
    cfg = HealthConfig(d_wins_accuracy=0.9, patience=3)
    won = {"d/real_acc": 1.0, "d/fake_acc": 1.0, "d/fake_logit_mean": -5.0, "loss/g_adversarial": 0.3}
    before = HealthMonitor(cfg, final_step=100)
    before(10, won)
    before(20, won)
    after = HealthMonitor(cfg, final_step=100)
    after.load_state_dict(json.loads(json.dumps(before.state_dict())))  # as it travels in the checkpoint
    out = after(30, won)
    assert out[D_WINS_STREAK] == 3 and out[COLLAPSED_AT] == 30 and out[STALLED_STREAK] == 2


# ---------------------------------------------------------------------------------------------
# The real loop skeleton ending runs early
# ---------------------------------------------------------------------------------------------


def gan_config(**over) -> SRGanConfig:
    base = {
        "fidelity": {"backbone": "vgg16_r", "weights": "random"},
        "generator": {"preset": "tiny"},
        "adversarial": {"discriminator": "vanilla_conv", "weights": "random", "lr": 2e-3},
        "loss": {"adversarial_weight": 0.05, "pixel_weight": 0.1},
        "optim": {"ema_decay": 0.9},
        "data": {"train": "demo_sr_train", "val": ["demo_sr_val"], "test": [], "hr_crop": 32, "batch_size": 2},
        "health": {"d_wins_accuracy": 0.95, "patience": 2},
        "budget": {"steps": 60, "eval_every": 3},
        "runtime": {"finite_check_every": 4},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value}
    return SRGanConfig.model_validate(base)


class Captured:
    """ray.train.report, captured: the metrics and what the checkpoint directory held."""

    def __init__(self):
        self.reports: list[dict] = []

    def __call__(self, metrics, checkpoint=None):
        entry = {"metrics": dict(metrics), "meta": None, "state": None}
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                entry["meta"] = json.loads((Path(d) / loop.META_FILE).read_text())
                entry["state"] = torch.load(Path(d) / loop.STATE_FILE, weights_only=False)
        self.reports.append(entry)


def run_loop(cfg: SRGanConfig, monkeypatch, nan_at: int | None = None, freeze_generator: bool = False):
    """The optimize stage's pieces in the real skeleton: SRGanModels, the loop's step closures
    (HR-only batches: the LR is made on the device), the health monitor and its state."""
    import ray.train

    from raygrid.metrics.sr import psnr_y_batch
    from raygrid.stages.optimize.loop import HEALTH_STATE, train_steps
    from raygrid.stages.optimize.spec import reported_metrics

    captured = Captured()
    monkeypatch.setattr(ray.train, "report", captured)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    models = SRGanModels(cfg, cpu)
    if freeze_generator:  # a generator that cannot learn: the discriminator wins outright
        for group in models.opt_g.param_groups:
            group["lr"] = 0.0
    monitor = HealthMonitor(cfg.health, final_step=cfg.budget.steps)
    telemetry = TrialTelemetry("optimize", "t")
    telemetry._gauges = {}  # no Ray metrics outside Ray
    ctx = loop.Context(0, 1, cpu, "t", telemetry, runtime=loop.resolve_runtime(cfg.runtime, cpu))
    consumed = []

    def batches():
        for step in range(1, cfg.budget.steps + 1):
            hr = natural_crops(cfg.data.batch_size, cfg.data.hr_crop, seed=step)
            if step == nan_at:
                hr[0, 0, 0, 0] = float("nan")  # a deterministic divergence
            consumed.append(step)
            yield {"hr": hr}

    val_hr = natural_crops(2, cfg.data.hr_crop, seed=999)

    def evaluate(step):
        with torch.no_grad():
            sr = models.ema(models.lr_from_hr(val_hr)).clamp(0, 1)
        return {"val/psnr_y": float(psnr_y_batch(sr, val_hr, crop_border=4).mean())}, {}

    step, measure_step = train_steps(models, cpu)
    loop.train(ctx, cfg.budget, 0, batches(), step, evaluate,
               state=lambda: {**models.state(), HEALTH_STATE: monitor.state_dict()},
               measure_step=measure_step, monitor=monitor, metric_keys=reported_metrics(cfg))
    return captured.reports, consumed


def fidelity_only(**over) -> SRGanConfig:
    return gan_config(adversarial={"discriminator": "none"}, loss={"adversarial_weight": 0.0},
                      budget={"steps": 20, "eval_every": 5}, **over)


@pytest.fixture(scope="module")
def collapsed_run():
    with pytest.MonkeyPatch.context() as mp:
        return run_loop(gan_config(), mp, freeze_generator=True)


@pytest.fixture(scope="module")
def diverged_run():
    with pytest.MonkeyPatch.context() as mp:
        return run_loop(fidelity_only(), mp, nan_at=7)


def test_a_collapsing_gan_run_is_stopped_early_and_marked_collapsed_at_step_k(collapsed_run):
    cfg = gan_config()
    reports, consumed = collapsed_run
    last = reports[-1]["metrics"]
    k = last["step"]
    assert COLLAPSED_AT in last and last[COLLAPSED_AT] == k and k < cfg.budget.steps and k % 3 == 0
    assert consumed[-1] == k  # stopped right at the evaluation that saw it
    # the flag held for `patience` (2) evaluations: the last two windows had D winning outright
    assert [r["metrics"][D_WINS] for r in reports[-2:]] == [1.0, 1.0]
    assert all(r["metrics"][COLLAPSE] == 0.0 for r in reports[:-1]) and last[COLLAPSE] == 1.0
    assert last["d/real_acc"] >= 0.95 and last["d/fake_acc"] >= 0.95
    # finite weights: the last report keeps its checkpoint, with the monitor's state
    assert reports[-1]["meta"]["step"] == k and reports[-1]["state"]["health"]["d_wins_streak"] == 2
    outcome, step, reason = outcome_from_result(last)
    assert (outcome, step) == ("collapsed", k) and "won outright for 2 evaluations" in reason
    # every report carries the health signals and the resolved runtime
    for r in reports:
        m = r["metrics"]
        assert {"health/grad_sr/fidelity", "health/grad_sr/adversarial", "health/grad_sr/pixel",
                "health/color_shift/r", "d/fake_logit_mean", "d/real_logit_std", "grad_norm/g", "grad_norm/d",
                "runtime/bf16", "runtime/lr_on_device"} <= set(m)
        assert m["runtime/bf16"] == 0.0 and all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("nan_at,detected_at,report_steps", [
    (7, 8, [5, 7]),     # between reports: found at the next check (every 4 steps)
    (10, 10, [5, 10]),  # on a report step: found before evaluating it
    (2, 4, [2]),        # before the first report: the scheduler's metric is still there (NaN)
])
def test_a_diverging_run_is_marked_diverged_at_step_k(monkeypatch, nan_at, detected_at, report_steps):
    reports, consumed = run_loop(fidelity_only(), monkeypatch, nan_at=nan_at)
    assert [r["metrics"]["step"] for r in reports] == report_steps
    assert consumed[-1] == detected_at  # at most runtime.finite_check_every steps late
    last = reports[-1]
    m = last["metrics"]
    assert m[DIVERGED_AT] == nan_at and last["state"] is None  # no checkpoint of non-finite weights
    assert math.isnan(m["loss/g_fidelity"]) and math.isnan(m["val/psnr_y"])
    assert all(r["state"] is not None and all(math.isfinite(v) for v in r["metrics"].values()) for r in reports[:-1])
    outcome, step, reason = outcome_from_result(m)
    assert (outcome, step) == ("diverged", nan_at) and "loss/g_fidelity" in reason and f"step {nan_at}" in reason


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    status: str = "TERMINATED"
    last_result: dict = field(default_factory=dict)


@pytest.mark.parametrize("kind", ["collapsed", "diverged"])
def test_the_mlflow_callback_tags_the_outcome_the_loop_reported(tmp_path, request, kind):
    """The loop -> callback contract, driven by both real ends: the loop's reports fed to the
    Tune driver's TrialRunLogger become raygrid.outcome / outcome_step / outcome_reason."""
    from raygrid.run import tracking
    from raygrid.space import load_space
    from raygrid.spec import mlflow as names

    reports, _ = request.getfixturevalue(f"{kind}_run")
    uri, exp, parent = sweep_store(tmp_path)
    logger = tracking.TrialRunLogger(uri, exp, parent, "demo", "optimize", "val/psnr_y", "max",
                                     60, str(tmp_path / "ray"), telemetry=False)
    trial = FakeTrial("t0", {"spec": load_space("demo").stages["optimize"].trials[1].to_json()})
    logger.on_trial_start(0, [trial], trial)
    for r in reports:
        logger.on_trial_result(0, [trial], trial, {**r["metrics"], "training_iteration": 1})
        trial.last_result = r["metrics"]
    logger.on_trial_complete(0, [trial], trial)
    run = names.search_trial_runs(uri, "demo").iloc[0]
    k = int(reports[-1]["metrics"]["step"])
    assert run["tags.raygrid.outcome"] == kind and run["tags.raygrid.outcome_step"] == str(k)
    assert run["tags.raygrid.outcome_reason"] == outcome_from_result(reports[-1]["metrics"])[2]
    assert run["params.runtime.precision"] == "fp32"
    assert names.client(uri).get_metric_history(run.run_id, f"outcome/{kind}_at")[-1].value == k


def test_outcome_from_result_leaves_finished_and_stopped_runs_to_the_caller():
    assert outcome_from_result({"step": 60, "loss/g_total": 0.3, COLLAPSE: 1.0}) is None
    stalled = outcome_from_result({COLLAPSED_AT: 40.0, STALLED: 1.0, STALLED_STREAK: 3.0, D_WINS: 0.0,
                                   D_WINS_STREAK: 0.0})
    assert stalled == ("collapsed", 40, "the fake logits and generator losses stopped moving for 3 evaluations")
