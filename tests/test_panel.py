"""The SR evaluator panel: PSNR/SSIM, fidelity measures, and pyiqa NR models loaded offline from
random state dicts saved under the file names pyiqa expects."""

import sys

import numpy as np
import pytest
import scipy.io
import torch

from raygrid.metrics.panel import PyiqaMissingError, build_panel, evaluate, pyiqa_checkpoint_name
from raygrid.metrics.sr import psnr_y, ssim_y
from raygrid.weights import MissingWeightsError


def _batch(n=2, side=48, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, side, side, generator=g)
    sr = (hr + noise * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return sr, hr


def test_psnr_ssim_evaluators():
    panel = build_panel([])
    assert [(e.name, e.mode, e.lower_better, e.backbone) for e in panel] == [
        ("psnr_y", "FR", False, None), ("ssim_y", "FR", False, None)]
    sr, hr = _batch()
    scores = evaluate(panel, sr, hr)
    assert scores["psnr_y"].shape == (2,)
    assert scores["psnr_y"][1].item() == pytest.approx(psnr_y(sr[1], hr[1], 4))
    assert scores["ssim_y"][0].item() == pytest.approx(ssim_y(sr[0], hr[0], 4))
    assert build_panel([], scale=2)[0](sr, hr)[0].item() == pytest.approx(psnr_y(sr[0], hr[0], 2))
    with pytest.raises(ValueError, match="needs hr"):
        panel[0](sr, None)


def test_fidelity_evaluators():
    pytest.importorskip("raygrid.nets.fidelity")
    panel = build_panel(["vgg16_r"], weights="random")
    fid = panel[-1]
    assert (fid.name, fid.mode, fid.lower_better, fid.backbone) == ("fidelity_vgg16_r", "FR", True, "vgg16_r")
    sr, hr = _batch(noise=0.02)
    worse, _ = _batch(noise=0.2)
    d_same, d_small, d_big = fid(hr, hr), fid(sr, hr), fid(worse, hr)
    assert d_same.shape == (2,) and torch.all(d_same.abs() < 1e-6)
    assert torch.all(d_small > 0) and torch.all(d_big > d_small)
    with pytest.raises(ValueError, match="duplicate"):
        build_panel(["vgg16_r", "vgg16_r"])


# --- pyiqa, offline -----------------------------------------------------------------------------


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "pyiqa"
    hub.mkdir(parents=True)
    return hub


def _random_state_dict(arch_cls, path, wrap_key=None, **kwargs):
    """Save a random init of a pyiqa architecture in the checkpoint layout its loader expects
    (some wrap the state dict as {"params": ...})."""
    torch.manual_seed(0)
    net = arch_cls(**kwargs)  # kwargs switch the architecture's own checkpoint loading off
    state = net.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], 0.0123)  # recognisable: proves this file was loaded
    torch.save({wrap_key: state} if wrap_key else state, path)
    return first


def test_pyiqa_model_loads_random_weights_from_private_torch_home(torch_home, tmp_path):
    pytest.importorskip("pyiqa")
    from pyiqa.archs.cnniqa_arch import CNNIQA

    fname = pyiqa_checkpoint_name("cnniqa")
    assert fname == "CNNIQA_koniq10k-e6f14c91.pth"
    key = _random_state_dict(CNNIQA, torch_home / fname, wrap_key="params", pretrained=None)
    panel = build_panel([], ["cnniqa"], weights_dir=str(tmp_path / "no-weights-here"))
    ev = panel[-1]
    assert (ev.name, ev.mode, ev.lower_better, ev.backbone) == ("cnniqa", "NR", False, "cnniqa_cnn")
    assert torch.all(ev.module.net.state_dict()[key] == 0.0123)
    scores = ev(*_batch(side=64))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_pyiqa_weights_dir_before_cache_and_missing_file(torch_home, tmp_path):
    pytest.importorskip("pyiqa")
    from pyiqa.archs.cnniqa_arch import CNNIQA

    wdir = tmp_path / "weights"
    (wdir / "pyiqa").mkdir(parents=True)
    key = _random_state_dict(CNNIQA, wdir / "pyiqa" / "CNNIQA_koniq10k-e6f14c91.pth", wrap_key="params", pretrained=None)
    ev = build_panel([], ["cnniqa"], weights_dir=str(wdir))[-1]
    assert torch.all(ev.module.net.state_dict()[key] == 0.0123)
    with pytest.raises(MissingWeightsError, match=r"(?s)'musiq'.*'musiq_koniq_ckpt-e95806b9.pth' not found.*torch/hub/pyiqa"):
        build_panel([], ["musiq"], weights_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not a pyiqa no-reference metric"):
        build_panel([], ["lpips"])


def test_pyiqa_musiq_transformer(torch_home, tmp_path):
    pytest.importorskip("pyiqa")
    from pyiqa.archs.musiq_arch import MUSIQ

    key = _random_state_dict(MUSIQ, torch_home / pyiqa_checkpoint_name("musiq"), pretrained=False)
    ev = build_panel([], ["musiq"], weights_dir=str(tmp_path / "empty"))[-1]
    assert (ev.lower_better, ev.backbone) == (False, "musiq_vit")
    assert torch.all(ev.module.net.state_dict()[key] == 0.0123)
    assert torch.isfinite(ev(*_batch(n=1, side=32))).all()


def test_pyiqa_niqe_from_parameter_file(torch_home, tmp_path):
    pytest.importorskip("pyiqa")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 36))
    scipy.io.savemat(torch_home / pyiqa_checkpoint_name("niqe"),
                     {"mu_prisparam": rng.normal(size=(1, 36)), "cov_prisparam": a @ a.T / 36 + np.eye(36)})
    ev = build_panel([], ["niqe"], weights_dir=str(tmp_path / "empty"))[-1]
    assert (ev.name, ev.lower_better, ev.backbone) == ("niqe", True, None)
    assert torch.isfinite(ev(*_batch(n=1, side=96))).all()


def test_without_pyiqa_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # makes `import pyiqa` raise ImportError
    with pytest.raises(PyiqaMissingError, match="pip install pyiqa"):
        build_panel([], ["musiq"])
