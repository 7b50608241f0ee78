"""SwinIR generator: presets, odd sizes, checkpoint formats, clear mismatch errors, one-batch fit."""

import pytest
import spandrel
import torch
import torch.nn.functional as F

from raygrid.nets.generator import SWINIR_PRESETS, create_swinir
from raygrid.weights import MissingWeightsError

# spandrel's vendored SwinIR calls torch.meshgrid without indexing= (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_swinir("tiny")


def test_swinir_m_is_the_paper_configuration():
    cfg = SWINIR_PRESETS["m"]
    assert (cfg["embed_dim"], cfg["depths"], cfg["num_heads"], cfg["window_size"], cfg["mlp_ratio"]) == (
        180, [6] * 6, [6] * 6, 8, 2.0)
    assert cfg["upsampler"] == "pixelshuffle" and cfg["resi_connection"] == "1conv" and cfg["img_range"] == 1.0
    m = create_swinir("m").eval()
    assert m.upscale == 4 and m.window_size == 8 and len(m.layers) == 6
    assert 11.8e6 < sum(p.numel() for p in m.parameters()) < 12.0e6  # SwinIR-M x4: 11.9 M
    with torch.no_grad():
        assert m(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("hw", [(32, 32), (30, 22), (17, 40)])
def test_any_input_size(tiny, hw):
    with torch.no_grad():
        out = tiny.eval()(torch.rand(1, 3, *hw))
    assert out.shape == (1, 3, 4 * hw[0], 4 * hw[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown SwinIR preset 'xl'"):
        create_swinir("xl")
    with pytest.raises(ValueError, match="scale must be"):
        create_swinir("tiny", scale=5)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_formats_round_trip(tiny, tmp_path):
    sd = tiny.state_dict()
    torch.save({"params": sd}, tmp_path / "params.pth")
    assert _same(create_swinir("tiny", checkpoint=str(tmp_path / "params.pth")), tiny)
    torch.save(sd, tmp_path / "bare.pth")
    assert _same(create_swinir("tiny", checkpoint=f"file:{tmp_path / 'bare.pth'}"), tiny)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    assert _same(create_swinir("tiny", checkpoint=str(tmp_path / "ddp.pth")), tiny)
    # params_ema is preferred when both are present; param_key picks explicitly
    other = create_swinir("tiny")
    torch.save({"params": other.state_dict(), "params_ema": sd}, tmp_path / "both.pth")
    assert _same(create_swinir("tiny", checkpoint=str(tmp_path / "both.pth")), tiny)
    assert _same(create_swinir("tiny", checkpoint=str(tmp_path / "both.pth"), param_key="params"), other)


def test_state_dict_is_official_swinir_format(tiny):
    desc = spandrel.ModelLoader().load_from_state_dict(tiny.state_dict())
    assert desc.architecture.id == "SwinIR" and desc.scale == 4


def test_derived_attention_buffers_are_rebuilt_not_loaded(tiny, tmp_path):
    # A checkpoint trained at another patch size (img_size) differs only in attn_mask shapes.
    sd = dict(tiny.state_dict())
    key = next(k for k in sd if k.endswith("attn_mask"))
    sd[key] = torch.zeros(1, 2, 3)
    torch.save({"params": sd}, tmp_path / "s48.pth")
    assert _same(create_swinir("tiny", checkpoint=str(tmp_path / "s48.pth")), tiny)


def test_mismatch_names_the_file(tiny, tmp_path):
    path = tmp_path / "tiny_x4.pth"
    torch.save({"params": tiny.state_dict()}, path)
    with pytest.raises(ValueError, match="tiny_x4.pth.*does not match") as e:
        create_swinir("m", checkpoint=str(path))
    assert "missing" in str(e.value) and "shape mismatches" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_swinir("tiny", checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match="001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth"):
        create_swinir("m", checkpoint="swinir_m_x4.classical_df2k", weights_dir=str(tmp_path))
    torch.save({"params": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="junk.pth"):
        create_swinir("tiny", checkpoint=str(tmp_path / "junk.pth"))


def test_tiny_swinir_fits_one_batch():
    torch.manual_seed(0)
    g = create_swinir("tiny").train()
    opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.9, 0.99))
    lr = torch.rand(1, 3, 32, 32)
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    losses = []
    for _ in range(20):
        loss = F.l1_loss(g(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
