"""The SR evaluator panel: PSNR/SSIM, fidelity measures, and pyiqa NR models loaded offline from
random state dicts saved under the file names pyiqa expects."""

import sys

import numpy as np
import pytest
import scipy.io
import torch

from raygrid.metrics.panel import (
    PyiqaMissingError,
    build_panel,
    evaluate,
    panel_record,
    parse_pyiqa_range,
    pyiqa_checkpoint_name,
)
from raygrid.metrics.sr import psnr_y, ssim_y
from raygrid.spec.records import EVALUATOR_KEYS, check_evaluator_record
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


def test_the_evaluator_record_gives_direction_range_weights_and_what_a_run_shares():
    import json

    panel = build_panel(["vgg16_r", "resnet50"], weights="random")
    # a run trained with a VGG-16-R loss against a patch discriminator on ResNet-50
    record = check_evaluator_record(json.loads(json.dumps(panel_record(panel, "vgg16_r", "resnet50"))))
    by = {e["name"]: e for e in record}
    assert [e["name"] for e in record] == ["psnr_y", "ssim_y", "fidelity_vgg16_r", "fidelity_resnet50"]
    assert all(tuple(e) == EVALUATOR_KEYS for e in record)
    assert by["psnr_y"] == {"name": "psnr_y", "metric": "psnr_y", "family": "signal fidelity (BT.601 Y)",
                            "mode": "FR", "higher_better": True, "range": None, "backbone": None,
                            "weights": None, "shares": []}
    assert by["ssim_y"]["range"] == [-1.0, 1.0]
    fid = by["fidelity_vgg16_r"]
    assert (fid["higher_better"], fid["range"], fid["backbone"]) == (False, [0.0, 1.0], "vgg16_r")
    # VGG-16-R's "random" is its fixed-seed init, which the record names as such
    assert fid["weights"] == "vgg16_r.seed" and by["fidelity_resnet50"]["weights"] == "random"
    assert fid["shares"] == ["loss"] and by["fidelity_resnet50"]["shares"] == ["discriminator"]
    # the same panel judging a ResNet-50 loss without a discriminator
    shares = {e["name"]: e["shares"] for e in panel_record(panel, "resnet50", None)}
    assert shares == {"psnr_y": [], "ssim_y": [], "fidelity_vgg16_r": [], "fidelity_resnet50": ["loss"]}
    both = {e["name"]: e["shares"] for e in panel_record(panel, "resnet50", "resnet50")}
    assert both["fidelity_resnet50"] == ["loss", "discriminator"]
    with pytest.raises(ValueError, match=r"evaluators.json\[0\]: keys"):
        check_evaluator_record([{k: v for k, v in record[0].items() if k != "shares"}])


def test_pyiqa_score_ranges_are_parsed_from_pyiqa_text():
    assert parse_pyiqa_range("0, 1") == (0.0, 1.0)
    assert parse_pyiqa_range("~0, ~100") == (0.0, 100.0)
    assert parse_pyiqa_range("~-1, ~0.1") == (-1.0, 0.1)
    assert parse_pyiqa_range("0, ~") is None and parse_pyiqa_range("~, 2") is None
    assert parse_pyiqa_range("quality: 0, 1; rank: 0, 2; rank_prob: 0, 1") is None
    assert parse_pyiqa_range(None) is None


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
    entry = ev.record("resnet50", None)
    assert (entry["higher_better"], entry["range"], entry["weights"], entry["shares"]) == (True, [0.0, 1.0], fname, [])
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
    assert ev.record()["range"] == [0.0, 100.0]  # pyiqa: "~0, ~100"
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
    # the direction is pyiqa's own (lower_better in its metric config), not a list of raygrid's
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert ev.record()["higher_better"] is (not DEFAULT_CONFIGS["niqe"]["lower_better"]) is False
    assert ev.record()["range"] == [0.0, 100.0]
    assert torch.isfinite(ev(*_batch(n=1, side=96))).all()


def test_without_pyiqa_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # makes `import pyiqa` raise ImportError
    with pytest.raises(PyiqaMissingError, match="pip install pyiqa"):
        build_panel([], ["musiq"])
