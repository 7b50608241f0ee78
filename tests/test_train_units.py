"""Train-loop parts without Ray: the SR GAN step (sync-free values, health measurements that leave
the update unchanged, fused Adam, the LR made on the device) and its checkpoint state, the
runtime settings resolved per device, the loop skeleton's device-side sums and non-finite
guard, concurrency arithmetic and the preflight, SR stores included (the assess computation:
tests/test_assess.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from raygrid.run.preflight import check_weights_and_files
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
    assert all(torch.is_tensor(v) and v.dim() == 0 and torch.isfinite(v) for v in losses.values())
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
    assert set(losses) == {"loss/g_fidelity", "loss/g_pixel", "loss/g_adversarial", "loss/g_total", "loss/d",
                           "grad_norm/g", "grad_norm/d", "d/real_acc", "d/fake_acc", "d/real_logit_mean",
                           "d/real_logit_std", "d/fake_logit_mean", "d/fake_logit_std"}
    from raygrid.stages.optimize.spec import reported_metrics

    assert set(losses) <= reported_metrics(cfg)  # what the planner validates metric names against
    # device tensors, read by the loop at report time only (no host sync inside the step)
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad and torch.isfinite(v)
               for v in losses.values())
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
    assert {k: float(v) for k, v in a.items()} == pytest.approx({k: float(v) for k, v in b.items()}, rel=1e-5)


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


def test_concurrency_follows_gpu_and_cpu_arithmetic():
    from raygrid.cluster.capacity import Capacity

    paper = load_space("paper").stages["optimize"]
    gpus = Capacity({"CPU": 160, "GPU": 16}, "the nodes present")  # 8 CPUs per trial: GPUs bound it
    assert max_concurrent_trials(paper, gpus, None) == 16
    assert max_concurrent_trials(paper, gpus, 3) == 3
    with pytest.raises(SpaceError, match="no trial fits"):
        max_concurrent_trials(paper, Capacity({"CPU": 64}, "the nodes present"), None)
    demo = load_space("demo").stages["optimize"]  # 0.95 CPU + 0.01 for the driver
    assert max_concurrent_trials(demo, Capacity({"CPU": 2}, "this machine"), None) == 2
    assert driver_resources(Capacity({"CPU": 2}, "this machine")) == {"cpu": 0.01}
    assert driver_resources(Capacity({"CPU": 14, "TRAIN_DRIVER": 32}, "the head")) == {"cpu": 0.01, "TRAIN_DRIVER": 1}


def test_preflight_names_the_missing_weight_file(tmp_path):
    sweep = load_space("paper")
    with pytest.raises(SpaceError) as err:
        check_weights_and_files(sweep, weights_dir=str(tmp_path / "weights"))
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
    with pytest.raises(SpaceError, match=r"--tracking-uri: MLflow at sqlite:////dev/null/mlflow.db is not usable: "
                                         r"/dev/null is not a writable folder"):
        execute(sweep, opts)
    import ray

    assert not ray.is_initialized()  # found before Ray starts (and before the demo weights are built)


# ---------------------------------------------------------------------------------------------
# The step of issue 13 and the health measurements of issue 15
# ---------------------------------------------------------------------------------------------


def test_measuring_health_leaves_the_update_unchanged_and_measures_at_the_sr_output():
    torch.manual_seed(0)
    cfg = sr_config(discriminator="patch_conv")
    plain = SRGanModels(cfg, torch.device("cpu"))
    measured = copy.deepcopy(plain)
    reference = copy.deepcopy(plain.generator).train()
    lr, hr = batch(seed=3)
    torch.manual_seed(5)  # SwinIR's stochastic depth draws from the global RNG: the same draws
    sr = reference(lr).float().detach().requires_grad_(True)
    torch.manual_seed(5)
    plain.step(lr, hr)
    torch.manual_seed(5)
    out = measured.step(lr, hr, measure=True)
    for a, b in [(plain.generator, measured.generator), (plain.ema, measured.ema),
                 (plain.discriminator, measured.discriminator)]:
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())
                   if torch.is_tensor(x))
    assert {"health/grad_sr/fidelity", "health/grad_sr/pixel", "health/grad_sr/adversarial",
            "health/color_shift/r", "health/color_shift/g", "health/color_shift/b"} <= set(out)
    # L1's gradient is w * sign(sr - hr) / N: its norm is w / sqrt(N)
    n = sr.numel()
    assert float(out["health/grad_sr/pixel"]) == pytest.approx(0.1 / n**0.5, rel=1e-4)  # fp32 norm
    (grad,) = torch.autograd.grad(cfg.loss.fidelity_weight * plain.fidelity(sr, hr).mean(), sr)
    assert float(out["health/grad_sr/fidelity"]) == pytest.approx(float(grad.norm()), rel=1e-4)
    shift = (sr.detach() - hr).mean(dim=(0, 2, 3))
    assert [float(out[f"health/color_shift/{c}"]) for c in "rgb"] == pytest.approx(shift.tolist(), abs=1e-6)


def test_fused_adam_takes_the_step_of_the_default_adam():
    torch.manual_seed(0)
    cfg = sr_config(discriminator="patch_conv")
    fused_cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"fused_adam": True})})
    default = SRGanModels(cfg, torch.device("cpu"))
    fused = copy.deepcopy(default)
    fused.cfg, fused.runtime = fused_cfg, loop.resolve_runtime(fused_cfg.runtime, torch.device("cpu"))
    fused.opt_g = torch.optim.Adam(fused.generator.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, fused=True)
    fused.opt_d = torch.optim.Adam(fused.d_params, lr=cfg.adversarial.lr, betas=cfg.optim.betas, fused=True)
    assert SRGanModels(fused_cfg, torch.device("cpu")).opt_g.defaults["fused"]  # the setting reaches Adam
    assert not default.opt_g.defaults["fused"]
    for seed in (1, 2):
        torch.manual_seed(seed)
        default.step(*batch(seed=seed))
        torch.manual_seed(seed)
        fused.step(*batch(seed=seed))
    for a, b in zip(default.generator.parameters(), fused.generator.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_runtime_settings_resolve_per_device_and_are_reported():
    from raygrid.stages.config import Runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # resolving needs no GPU
    on_cpu = loop.resolve_runtime(Runtime(), cpu)
    assert (on_cpu.precision, on_cpu.tf32, on_cpu.fused_adam, on_cpu.lr_on_device) == ("fp32", False, False, False)
    on_gpu = loop.resolve_runtime(Runtime(), cuda)
    assert (on_gpu.precision, on_gpu.tf32, on_gpu.fused_adam, on_gpu.lr_on_device) == ("bf16", True, True, True)
    assert on_gpu.metrics() == {"runtime/bf16": 1.0, "runtime/tf32": 1.0, "runtime/fused_adam": 1.0,
                                "runtime/lr_on_device": 1.0}
    off = loop.resolve_runtime(Runtime(amp="off", tf32=False, fused_adam=False, lr_on_device=False), cuda)
    assert set(off.metrics().values()) == {0.0} and off.precision == "fp32"
    asked = loop.resolve_runtime(Runtime(amp="bf16", tf32=True, lr_on_device=True), cpu)
    assert asked.precision == "bf16" and not asked.tf32 and asked.lr_on_device  # TF32 exists on CUDA only
    with pytest.raises(ValueError, match="finite_check_every"):
        Runtime(finite_check_every=0)


def _pngs(root, n=3, size=(56, 64)):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        small = (torch.rand(size[0] // 8, size[1] // 8, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC).save(root / f"img{i}.png")
    return str(root)


def test_device_made_lr_equals_the_loaders_lr(tmp_path):
    """runtime.lr_on_device: the loader ships HR crops only and the step makes the LR from the
    batch; the same antialiased bicubic and 8-bit rounding as the loader's per-sample LR."""
    from raygrid.data.sr import SRTrainSet
    from raygrid.data.stream import train_batches

    root = _pngs(tmp_path / "hr")
    models = SRGanModels(sr_config(), torch.device("cpu"))
    loader = list(train_batches(SRTrainSet(root, hr_crop=24, seed=4), 3, stop_step=3))
    on_device = list(train_batches(SRTrainSet(root, hr_crop=24, seed=4, make_lr=False), 3, stop_step=3))
    assert len(loader) == len(on_device) == 3
    for a, b in zip(loader, on_device):
        assert "lr" not in b and torch.equal(a["hr"], b["hr"])
        lr = models.lr_from_hr(b["hr"])
        assert lr.shape == a["lr"].shape and torch.equal(lr, a["lr"])


def test_loss_window_sums_on_the_device_and_reads_means_per_key():
    window = loop.LossWindow()
    window.add({"loss/a": torch.tensor(1.0), "loss/b": 2.0})
    window.add({"loss/a": torch.tensor(3.0, dtype=torch.bfloat16), "loss/b": 4.0, "health/x": torch.tensor(7.0)})
    assert window.read() == {"loss/a": 2.0, "loss/b": 3.0, "health/x": 7.0}
    assert window.read() == {}  # a read starts the next window


def test_finite_guard_names_the_first_non_finite_step_of_losses_and_gradient_norms():
    ctx = loop.Context(0, 1, torch.device("cpu"), "t", None)
    guard = loop.FiniteGuard()
    for i in range(1, 10):
        values = {"loss/g_total": torch.tensor(1.0), "d/real_logit_std": torch.tensor(float("nan")),
                  "grad_norm/g": torch.tensor(float("inf") if i in (6, 8) else 2.0)}
        guard.add(i, values)
        if i == 5:  # a non-finite value outside losses and gradient norms is no divergence
            assert guard.first_bad(ctx) is None
    assert guard.first_bad(ctx) == 6
    host = loop.FiniteGuard()  # float values (a loop that reads its losses itself)
    for i, v in enumerate([0.5, float("nan"), 0.1], start=1):
        host.add(i, {"loss/train": v})
    assert host.first_bad(ctx) == 2


def _one_trial_sweep(tmp_path, **data):
    sweep = load_space("demo")
    stage = sweep.stages["optimize"]
    stage.trials = stage.trials[:1]
    sweep.stages = {"optimize": stage}
    for k, v in data.items():
        setattr(stage.trials[0].config.data, k, v)
    return sweep


def test_preflight_checks_the_sr_store_a_space_names_and_prepares_it_when_asked(tmp_path, capsys):
    from raygrid.run.preflight import check_sr_stores

    root = _pngs(tmp_path / "train")
    store = str(tmp_path / "train.prepared")
    refuse = _one_trial_sweep(tmp_path, train=root, store=store)
    with pytest.raises(SpaceError) as err:
        check_sr_stores(refuse, str(tmp_path))
    text = str(err.value)
    assert "\n" not in text and "stages.optimize.data.store" in text and f"{store} does not exist" in text
    check_sr_stores(_one_trial_sweep(tmp_path, train=root, store="auto"), str(tmp_path))  # none beside it: PNGs

    check_sr_stores(_one_trial_sweep(tmp_path, train=root, store=store, store_on_mismatch="rebuild"), str(tmp_path))
    assert "prepared 3 images" in capsys.readouterr().out
    check_sr_stores(refuse, str(tmp_path))  # now it matches
    (tmp_path / "train" / "img1.png").write_bytes((tmp_path / "train" / "img0.png").read_bytes())
    with pytest.raises(SpaceError, match=r"data\.store: .*img1\.png changed"):
        check_sr_stores(refuse, str(tmp_path))


def test_the_optimize_loop_reads_its_crops_from_the_store_data_store_names(tmp_path):
    from raygrid.data.sr_store import prepare
    from raygrid.stages.optimize.loop import train_set

    root = _pngs(tmp_path / "train")
    store = prepare(root, out=str(tmp_path / "s"))
    cfg = SRGanConfig.model_validate({**sr_config().model_dump(), "data": {
        "train": root, "val": ["demo_sr_val"], "hr_crop": 24, "batch_size": 2, "store": store}})
    env = loop.RunEnv(data_root=str(tmp_path))
    from_store, from_pngs = train_set(cfg, env), train_set(cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"store": None})}), env)
    assert from_store.store is not None and from_pngs.store is None
    for p in range(5):
        assert torch.equal(from_store[p]["hr"], from_pngs[p]["hr"]) and torch.equal(from_store[p]["lr"], from_pngs[p]["lr"])
