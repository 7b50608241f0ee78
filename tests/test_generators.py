"""Generators: registry, spandrel parity, official checkpoint layouts, mismatch errors, FLOP table,
one deterministic training step per tiny preset."""

import copy
import subprocess
import sys

import pytest
import spandrel
import torch
import torch.nn.functional as F
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.HAT import HAT
from spandrel.architectures.SwinIR import SwinIR
from torch.utils.flop_counter import FlopCounterMode

from raygrid.nets.generators import (
    NETS,
    CheckpointMismatchError,
    create_generator,
    parameter_count,
)
from raygrid.spec.generators import (
    CHECKPOINTS,
    GENERATORS,
    OFFICIAL,
    checkpoints_for,
    flop_table,
    forward_gflops,
    get_preset,
    resolve_checkpoint,
)
from raygrid.weights import MissingWeightsError, WeightsHashError

# spandrel's vendored SwinIR/HAT call torch.meshgrid without indexing= (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")

ARCHS = list(GENERATORS)
SPANDREL_CLASS = {"swinir": (SwinIR, "upscale"), "rrdbnet": (ESRGAN, "scale"), "hat": (HAT, "upscale")}
ALL_PRESETS = [(a, p) for a in GENERATORS for p in GENERATORS[a].presets]


def _spandrel_net(arch: str, preset: str, seed: int) -> torch.nn.Module:
    """The preset built directly from spandrel's class, with spandrel's own init."""
    cls, scale_kw = SPANDREL_CLASS[arch]
    torch.manual_seed(seed)
    return cls(**dict(get_preset(arch, preset).kwargs), **{scale_kw: 4}).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_is_consistent():
    assert NETS.keys() == GENERATORS.keys() == {"swinir", "rrdbnet", "hat"}
    for arch, spec in GENERATORS.items():
        assert spec.arch == arch and spec.default_preset in spec.presets and "tiny" in spec.presets
        for name, p in spec.presets.items():
            assert p.name == name
            if p.warm_start is not None:
                assert p.warm_start in checkpoints_for(arch, name), (arch, name, p.warm_start)
    for key, c in CHECKPOINTS.items():
        assert c.weights.key == key and c.preset in GENERATORS[c.arch].presets and c.scale == 4
        assert c.weights.sha256 is None or len(c.weights.sha256) in (8, 64)


def test_spec_imports_no_torch():
    code = ("import sys, raygrid.spec.generators; "
            "assert not {'torch', 'spandrel'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_names_are_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as e:
        create_generator("esrgan", "tiny")
    assert _one_line(e) == "unknown generator.arch 'esrgan'; expected one of swinir, rrdbnet, hat"
    with pytest.raises(ValueError) as e:
        create_generator("hat", "m")
    assert _one_line(e) == "unknown generator.preset 'm' for arch 'hat'; expected one of full, tiny"
    with pytest.raises(ValueError, match=r"generator.scale 5 .* RRDBNet; expected one of \(2, 3, 4, 8\)"):
        create_generator("rrdbnet", "tiny", scale=5)


# ---------------------------------------------------------------------------------------------
# Parity with spandrel and the official file layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_spandrel_state_dict_loads_with_identical_outputs(arch, tmp_path):
    ref = _spandrel_net(arch, "tiny", seed=1)
    torch.save({"params": ref.state_dict()}, tmp_path / "ref.pth")
    g = create_generator(arch, "tiny", checkpoint=str(tmp_path / "ref.pth")).eval()
    x = torch.rand(1, 3, 12, 20)  # not a window multiple: SwinIR/HAT pad and crop
    with torch.no_grad():
        out = g(x)
        assert out.shape == (1, 3, 48, 80)
        assert torch.equal(out, ref(x))
        # and the other way: spandrel reads raygrid's state dict as an official file
        desc = spandrel.ModelLoader().load_from_state_dict(g.state_dict())
        assert desc.architecture.id == GENERATORS[arch].spandrel_id and desc.scale == 4
        assert torch.equal(desc.model.eval()(x), out)


def _rrdb_layout(sd: dict, layout: str) -> dict:
    """spandrel's RRDBNet names ("model.N", ESRGAN's original layout) -> the names BasicSR's or
    the ESRGAN repository's RRDBNet uses (written out here from those repositories' modules)."""
    n_blocks = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("model.1.sub.") and ".RDB" in k)
    basicsr = layout == "basicsr"
    top = {"model.0": "conv_first", f"model.1.sub.{n_blocks}": "conv_body" if basicsr else "trunk_conv",
           "model.3": "conv_up1" if basicsr else "upconv1", "model.6": "conv_up2" if basicsr else "upconv2",
           "model.8": "conv_hr" if basicsr else "HRconv", "model.10": "conv_last"}
    out = {}
    for k, v in sd.items():
        stem, param = k.rsplit(".", 1)
        if stem in top:
            out[f"{top[stem]}.{param}"] = v
        else:  # model.1.sub.<i>.RDB<j>.conv<c>.0
            _, _, _, i, rdb, conv, _ = stem.split(".")
            out[f"body.{i}.rdb{rdb[3:]}.{conv}.{param}" if basicsr else f"RRDB_trunk.{i}.{rdb}.{conv}.{param}"] = v
    assert len(out) == len(sd)
    return out


@pytest.mark.parametrize("layout", ["basicsr", "esrgan_repo"])
def test_rrdbnet_reads_basicsr_and_esrgan_repository_layouts(layout, tmp_path):
    ref = _spandrel_net("rrdbnet", "tiny", seed=2)
    renamed = _rrdb_layout(ref.state_dict(), layout)
    assert "model.0.weight" not in renamed
    torch.save({"params_ema": renamed} if layout == "basicsr" else renamed, tmp_path / "rrdb.pth")
    g = create_generator("rrdbnet", "tiny", checkpoint=f"file:{tmp_path / 'rrdb.pth'}").eval()
    x = torch.rand(1, 3, 12, 9)
    with torch.no_grad():
        assert torch.equal(g(x), ref(x))


def test_official_name_resolves_in_the_weights_dir_and_converts(tmp_path):
    # RRDBNet full from a manifest name: the ESRGAN repository's RRDB_PSNR_x4.pth layout (a bare
    # state dict with RRDB_trunk.* names) found in the weights dir
    torch.manual_seed(3)
    trained = create_generator("rrdbnet", "full")
    torch.save(_rrdb_layout(trained.state_dict(), "esrgan_repo"), tmp_path / "RRDB_PSNR_x4.pth")
    g = create_generator("rrdbnet", "full", checkpoint="rrdbnet_full_x4.rrdb_psnr", weights_dir=tmp_path)
    assert _same_weights(g, trained)


def test_checkpoint_containers(tmp_path):
    a, b = _spandrel_net("swinir", "tiny", seed=4), _spandrel_net("swinir", "tiny", seed=5)
    torch.save({"params": b.state_dict(), "params_ema": a.state_dict()}, tmp_path / "both.pth")
    assert _same_weights(create_generator("swinir", "tiny", checkpoint=str(tmp_path / "both.pth")), a)
    assert _same_weights(
        create_generator("swinir", "tiny", checkpoint=str(tmp_path / "both.pth"), param_key="params"), b)
    torch.save({f"module.{k}": v for k, v in a.state_dict().items()}, tmp_path / "ddp.pth")
    assert _same_weights(create_generator("swinir", "tiny", checkpoint=str(tmp_path / "ddp.pth")), a)


@pytest.mark.parametrize("arch, key", [("swinir", "attn_mask"), ("hat", "relative_position_index_SA")])
def test_derived_buffers_are_rebuilt_not_loaded(arch, key, tmp_path):
    # e.g. a SwinIR checkpoint trained on 48 px patches differs from a 64 px one only in attn_mask
    ref = _spandrel_net(arch, "tiny", seed=6)
    sd = dict(ref.state_dict())
    name = next(k for k in sd if k.endswith(key))
    sd[name] = torch.zeros(1, 2, 3, dtype=sd[name].dtype)
    torch.save({"params": sd}, tmp_path / "other_patch.pth")
    g = create_generator(arch, "tiny", checkpoint=str(tmp_path / "other_patch.pth"))
    assert _same_weights(g, ref)


# ---------------------------------------------------------------------------------------------
# Mismatches and names
# ---------------------------------------------------------------------------------------------


def test_mismatches_name_the_file_and_the_first_key(tmp_path):
    sd = _spandrel_net("swinir", "tiny", seed=7).state_dict()
    path = tmp_path / "swinir_tiny.pth"

    missing = {k: v for k, v in sd.items() if k != "conv_after_body.weight"}
    torch.save({"params": missing}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("swinir", "tiny", checkpoint=str(path))
    assert _one_line(e).startswith(f"{path}: does not fit swinir/tiny x4: missing key 'conv_after_body.weight' "
                                   "(1 missing, 0 unexpected, 0 shape mismatches)")

    torch.save({"params": {**sd, "extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("swinir", "tiny", checkpoint=str(path))
    assert "unexpected key 'extra.weight' (0 missing, 1 unexpected, 0 shape mismatches)" in _one_line(e)

    torch.save({"params": sd}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("swinir", "tiny", scale=3, checkpoint=str(path))
    assert ("does not fit swinir/tiny x3: key 'upsample.0.weight' has shape (256, 64, 3, 3) in the file, "
            "(576, 64, 3, 3) in the model (0 missing, 2 unexpected, 2 shape mismatches)") in _one_line(e)

    torch.save({"params_ema": _spandrel_net("hat", "tiny", seed=8).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("swinir", "tiny", checkpoint=str(path))
    assert _one_line(e).endswith("; spandrel reads the file as HAT)")

    torch.save({"params": [1, 2]}, path)
    with pytest.raises(CheckpointMismatchError, match="swinir_tiny.pth: not a state dict of tensors"):
        create_generator("swinir", "tiny", checkpoint=str(path))
    with pytest.raises(CheckpointMismatchError, match="no key 'params_ema'"):
        create_generator("swinir", "tiny", checkpoint=str(path), param_key="params_ema")


def test_rrdbnet_of_another_size_reads_as_a_key_mismatch(tmp_path):
    # a 1-block BasicSR file for the 2-block preset: spandrel converts it, the key check rejects it
    torch.manual_seed(9)
    one_block = ESRGAN(num_filters=32, num_blocks=1, scale=4)
    torch.save({"params": _rrdb_layout(one_block.state_dict(), "basicsr")}, tmp_path / "small.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("rrdbnet", "tiny", checkpoint=str(tmp_path / "small.pth"))
    assert "does not fit rrdbnet/tiny x4: missing key 'model.1.sub.1.RDB1.conv1.0.weight' " \
        "(32 missing, 2 unexpected, 0 shape mismatches)" in _one_line(e)


def test_a_broken_rrdbnet_file_is_one_line(tmp_path):
    sd = _rrdb_layout(_spandrel_net("rrdbnet", "tiny", seed=10).state_dict(), "basicsr")
    del sd["body.1.rdb2.conv3.weight"]  # still recognisable as RRDBNet, no longer convertible
    torch.save({"params": sd}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("rrdbnet", "tiny", checkpoint=str(tmp_path / "broken.pth"))
    assert _one_line(e).startswith(f"{tmp_path / 'broken.pth'}: not a rrdbnet/tiny x4 checkpoint (converting")
    assert "model.1.sub.1.RDB2.conv3.0.weight" in str(e.value)  # the key in spandrel's names
    # a file of another architecture is not converted; the key check names it
    torch.save({"params": _spandrel_net("swinir", "tiny", seed=10).state_dict()}, tmp_path / "swinir.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        create_generator("rrdbnet", "tiny", checkpoint=str(tmp_path / "swinir.pth"))
    assert "does not fit rrdbnet/tiny x4: missing key 'model.0.weight'" in _one_line(e)
    assert str(e.value).endswith("; spandrel reads the file as SwinIR)")


def test_checkpoint_names_resolve_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError, match="'official': swinir/tiny x4 has no official warm start"):
        create_generator("swinir", "tiny", checkpoint=OFFICIAL)
    with pytest.raises(ValueError) as e:
        create_generator("rrdbnet", "full", checkpoint="hat_full_x4.df2k")
    assert "is a hat/full x4 file; rrdbnet/full x4 takes one of ['rrdbnet_full_x4.psnr_df2k'" in _one_line(e)
    with pytest.raises(MissingWeightsError, match="HAT_SRx4.pth"):
        create_generator("hat", checkpoint=OFFICIAL, weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_generator("hat", "tiny", checkpoint=str(tmp_path / "nope.pth"))
    # a file whose sha256 is not the published one is refused (the name embeds BasicSR's prefix)
    (tmp_path / "ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth").write_bytes(b"not the file")
    with pytest.raises(WeightsHashError, match="expected prefix 150ff491"):
        create_generator("rrdbnet", checkpoint=OFFICIAL, weights_dir=tmp_path)
    # the preflight (torch-free) finds the file without hashing it
    assert resolve_checkpoint("rrdbnet", None, OFFICIAL, tmp_path, verify=False).name.endswith("-150ff491.pth")


# ---------------------------------------------------------------------------------------------
# FLOPs and sizes
# ---------------------------------------------------------------------------------------------


def _gflops(model: torch.nn.Module, size: int) -> tuple[float, tuple[int, ...]]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.zeros(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9, tuple(out.shape)


@pytest.mark.parametrize("arch, preset", ALL_PRESETS)
def test_parameters_and_flop_table(arch, preset):
    p = get_preset(arch, preset)
    model = create_generator(arch, preset).eval()
    assert round(parameter_count(model) / 1e6, 3) == p.params_m
    meta = copy.deepcopy(model).to("meta")  # FLOPs from shapes alone: seconds even for HAT
    full, shape = _gflops(meta, p.flops_lr_size)
    assert shape == (1, 3, 4 * p.flops_lr_size, 4 * p.flops_lr_size)
    assert full == pytest.approx(p.gflops, abs=5e-4) == flop_table()[f"{arch}_{preset}"][0]
    # fixed-size windows: linear in the pixel count (HAT: up to its channel attention's 1x1 convs
    # on pooled features, a per-image constant of a few kFLOPs)
    half, _ = _gflops(meta, p.flops_lr_size // 2)
    assert half == pytest.approx(full / 4, rel=1e-5)
    assert forward_gflops(arch, preset, (p.flops_lr_size // 2) ** 2) == pytest.approx(p.gflops / 4)


def test_full_presets_have_the_published_sizes():
    # SwinIR paper: SwinIR (classical SR) 11.9 M; HAT paper: HAT 20.8 M; ESRGAN's RRDBNet 16.7 M
    published = {"swinir": 11.9, "rrdbnet": 16.7, "hat": 20.8}
    for arch, millions in published.items():
        assert round(get_preset(arch).params_m, 1) == millions


# ---------------------------------------------------------------------------------------------
# Initialisation and training
# ---------------------------------------------------------------------------------------------


def test_rrdbnet_starts_from_basicsr_init():
    torch.manual_seed(0)
    g = create_generator("rrdbnet", "tiny")
    conv = g.model[1].sub[0].RDB2.conv3[0]  # in 32 + 2*32 channels
    expected = 0.1 * (2 / (conv.in_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(g.model[0].bias) > 0  # outside the dense blocks: PyTorch's default


def _one_step(arch: str, seed: int) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    g = create_generator(arch, "tiny").train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.9, 0.99))
    lr = torch.rand(1, 3, 32, 32)
    hr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    sr = g(lr)
    # L1 plus a fidelity-free term (total variation of the output)
    tv = (sr[..., 1:, :] - sr[..., :-1, :]).abs().mean() + (sr[..., 1:] - sr[..., :-1]).abs().mean()
    loss = F.l1_loss(sr, hr) + 0.01 * tv
    opt.zero_grad()
    loss.backward()
    opt.step()
    return before, g.state_dict()


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_preset_trains_one_deterministic_step(arch):
    before, after = _one_step(arch, seed=11)
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    params = {n for n, _ in create_generator(arch, "tiny").named_parameters()}
    assert set(changed) == params  # every weight moved; no buffer did
    _, again = _one_step(arch, seed=11)
    assert all(torch.equal(after[k], again[k]) for k in after)
