"""Train-loop parts without Ray: the SR GAN step and its checkpoint state, divergence detection,
concurrency arithmetic and the preflight (the assess computation: tests/test_assess.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from raygrid.run.preflight import preflight
from raygrid.run.tune_stage import driver_resources, max_concurrent_trials
from raygrid.space import SpaceError, load_space
from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.models import SRGanModels, resolve_trunk_trainable


def sr_config(arch: str = "swinir", **adversarial) -> SRGanConfig:
    return SRGanConfig.model_validate({
        "fidelity": {"backbone": "vgg16_r", "weights": "random"},
        "generator": {"arch": arch, "preset": "tiny"},
        "adversarial": {"weights": "random", **adversarial},
        "loss": {"adversarial_weight": 0.05 if adversarial else 0.0, "pixel_weight": 0.1},
        "optim": {"ema_decay": 0.9},
        "data": {"train": "demo_sr_train", "val": ["demo_sr_val"], "hr_crop": 48, "batch_size": 2},
    })


def batch(seed=0, n=2, size=48):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size, size, generator=g)
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)
    return lr, hr


@pytest.mark.parametrize("arch", ["swinir", "rrdbnet", "hat"])
def test_every_generator_trains_a_step_of_the_optimize_step(arch):
    """generator.arch is an axis: each architecture's tiny preset runs the real GAN step."""
    torch.manual_seed(0)
    models = SRGanModels(sr_config(arch, discriminator="patch_conv"), torch.device("cpu"))
    before = copy.deepcopy(models.generator.state_dict())
    losses = models.step(*batch())
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(before[k], v) for k, v in models.generator.state_dict().items()
               if v.is_floating_point())
    assert type(models.generator).__name__ == {"swinir": "SwinIR", "rrdbnet": "RRDBNet", "hat": "HAT"}[arch]


def test_gan_step_updates_g_d_and_ema_and_state_round_trips():
    torch.manual_seed(0)
    cfg = sr_config(discriminator="patch_conv", gan_loss="relativistic")
    models = SRGanModels(cfg, torch.device("cpu"))
    g0 = copy.deepcopy(models.generator.state_dict())
    d0 = copy.deepcopy(models.discriminator.state_dict())
    losses = models.step(*batch())
    assert {"loss/g_fidelity", "loss/g_pixel", "loss/g_adversarial", "loss/g_total", "loss/d",
            "d/real_acc", "d/fake_acc"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    def changed(a, b):
        return any(not torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point())

    assert changed(models.generator.state_dict(), g0) and changed(models.discriminator.state_dict(), d0)
    # EMA moved towards G but is not G (decay 0.9)
    assert changed(models.ema.state_dict(), g0) and changed(models.ema.state_dict(), models.generator.state_dict())

    state = models.state()
    torch.manual_seed(123)  # a different stream: the restored one must win
    other = SRGanModels(cfg, torch.device("cpu"))
    other.load_state(state)
    lr, hr = batch(seed=1)
    with torch.no_grad():
        assert torch.equal(other.generator(lr), models.generator(lr))
        assert torch.equal(other.discriminator(hr), models.discriminator(hr))
    # the same RNG state and optimiser moments: the next steps are identical
    loop.set_rng_state(state["rng"])
    a = models.step(*batch(seed=2))
    loop.set_rng_state(state["rng"])
    b = other.step(*batch(seed=2))
    assert a == pytest.approx(b, rel=1e-5)


def test_frozen_discriminator_trunk_stays_fixed_while_its_head_learns():
    torch.manual_seed(0)
    cfg = sr_config(discriminator="patch_resnet50", trunk_trainable=False)
    models = SRGanModels(cfg, torch.device("cpu"))
    trunk0 = copy.deepcopy(models.discriminator.trunk.state_dict())
    head0 = copy.deepcopy(models.discriminator.head.state_dict())
    models.step(*batch())
    assert all(torch.equal(v, trunk0[k]) for k, v in models.discriminator.trunk.state_dict().items())
    assert any(not torch.equal(v, head0[k]) for k, v in models.discriminator.head.state_dict().items())


def test_trunk_trainable_auto_fine_tunes_cnns_and_freezes_transformers():
    assert resolve_trunk_trainable(sr_config(discriminator="vanilla_conv"))
    assert resolve_trunk_trainable(sr_config(discriminator="patch_vgg16"))
    assert not resolve_trunk_trainable(sr_config(discriminator="patch_dinov2_vits14"))
    assert resolve_trunk_trainable(sr_config(discriminator="patch_dinov2_vits14", trunk_trainable=True))


def test_non_finite_loss_fails_with_step_and_losses():
    with pytest.raises(loop.TrainingDiverged, match=r"step 7: loss/g_total=nan, loss/d=0.5"):
        loop.check_finite(7, {"loss/g_total": float("nan"), "loss/d": 0.5})
    loop.check_finite(7, {"loss/g_total": 1.0})


def test_concurrency_follows_gpu_and_cpu_arithmetic():
    paper = load_space("paper").stages["optimize"]
    assert max_concurrent_trials(paper, {"CPU": 64, "GPU": 16}, None) == 16
    assert max_concurrent_trials(paper, {"CPU": 64, "GPU": 16}, 3) == 3
    with pytest.raises(SpaceError, match="no trial fits: the cluster has 0 GPUs"):
        max_concurrent_trials(paper, {"CPU": 64}, None)
    demo = load_space("demo").stages["optimize"]  # 0.95 CPU + 0.01 for the driver
    assert max_concurrent_trials(demo, {"CPU": 2}, None) == 2
    assert driver_resources({"CPU": 2}) == {"cpu": 0.01}
    assert driver_resources({"CPU": 14, "TRAIN_DRIVER": 32}) == {"cpu": 0.01, "TRAIN_DRIVER": 1}


def test_preflight_names_the_missing_weight_file(tmp_path):
    sweep = load_space("paper")
    with pytest.raises(SpaceError) as err:
        preflight(sweep, data_root=str(tmp_path), weights_dir=str(tmp_path / "weights"))
    text = str(err.value)
    assert "\n" not in text and "paper.yaml" in text
    assert str(tmp_path / "weights") in text and (".pth" in text or ".safetensors" in text)


def test_unusable_tracking_store_stops_the_sweep_before_anything_runs(tmp_path):
    from raygrid.run.options import RunOptions
    from raygrid.run.runner import execute

    sweep = load_space("demo")
    sweep.stages = {"assess": sweep.stages["assess"]}
    opts = RunOptions(output_dir=str(tmp_path), tracking_uri="sqlite:////dev/null/mlflow.db",
                      data_root=str(tmp_path / "data"))
    with pytest.raises(SpaceError, match=r"--tracking-uri: MLflow at sqlite:////dev/null/mlflow.db is not usable"):
        execute(sweep, opts)
