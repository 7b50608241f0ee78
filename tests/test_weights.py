"""raygrid.weights: spec resolution, manifest, missing/corrupt files, library caches, no torch."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raygrid import spec, weights
from raygrid.spec.backbones import CLIP_NORM, VGG16_R_SEED, WeightFile
from raygrid.weights import (
    MANIFEST,
    MissingWeightsError,
    WeightsHashError,
    check_weights,
    resolve_file,
    resolve_weights,
)


def test_every_backbone_record_has_a_default_pretrained_entry():
    for name, record in spec.BACKBONES.items():
        assert MANIFEST[f"{name}.{record.default_tag}"] is record.tags[record.default_tag]
        entry = weights._entry_for(name, "imagenet")
        assert entry.file or entry.seed is not None, name
        assert entry.source, name


def test_manifest_records_known_hashes():
    assert MANIFEST["vgg16.tv_in1k"].file == "vgg16-397923af.pth"
    assert MANIFEST["vgg16.tv_in1k"].sha256 == "397923af"
    ab = MANIFEST["dists.alpha_beta"]
    assert ab.sha256 == "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"
    assert MANIFEST["clip_vit_b16.openai"].norm == CLIP_NORM
    assert MANIFEST["vgg16_r.seed"].seed == VGG16_R_SEED


def test_random_and_seeded_specs():
    src = resolve_weights("resnet50", "random")
    assert src.kind == "random" and src.path is None and not src.pretrained
    for name in ("random", "imagenet", "seed"):
        src = resolve_weights("vgg16_r", name)
        assert src.kind == "seeded" and src.seed == VGG16_R_SEED


def test_missing_weights_error_names_file_and_every_folder(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        check_weights("vgg16", "imagenet", tmp_path)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "vgg16-397923af.pth" in msg
    assert str(tmp_path) in msg
    assert str(weights.torch_hub_dir() / "checkpoints") in msg
    assert "download.pytorch.org" in msg  # where to get it

    with pytest.raises(MissingWeightsError) as e:
        check_weights("dinov2_vits14", "imagenet", tmp_path)
    msg = str(e.value)
    assert "vit_small_patch14_dinov2.lvd142m.safetensors" in msg
    assert "timm/vit_small_patch14_dinov2.lvd142m" in msg  # the Hugging Face cache was searched


def test_default_weights_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(tmp_path))
    assert weights.default_weights_dir() == tmp_path
    (tmp_path / "convnext_tiny.fb_in1k.safetensors").write_bytes(b"x")
    assert check_weights("convnext_tiny", "imagenet") == tmp_path / "convnext_tiny.fb_in1k.safetensors"
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR)
    assert weights.default_weights_dir() == Path.home() / ".cache" / "raygrid" / "weights"


def test_named_tags_and_timm_models(tmp_path):
    (tmp_path / "resnet50.a1_in1k.safetensors").write_bytes(b"x")
    src = resolve_weights("resnet50", "a1_in1k", tmp_path)
    assert src.kind == "file" and src.tag == "a1_in1k" and src.path.name == "resnet50.a1_in1k.safetensors"
    with pytest.raises(MissingWeightsError, match=r"resnet18\.a1_in1k\.safetensors"):
        check_weights("timm:resnet18.a1_in1k", "imagenet", tmp_path)
    with pytest.raises(ValueError, match="tags"):
        resolve_weights("clip_vit_b16", "laion9000", tmp_path)
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        resolve_weights("alexnet", "random")
    with pytest.raises(ValueError, match="non-empty"):
        resolve_weights("vgg16", "")


def test_file_spec(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        resolve_weights("vgg16", f"file:{tmp_path}/nope.pth")
    f = tmp_path / "robust_vgg16.pth"
    f.write_bytes(b"x")
    src = resolve_weights("vgg16_r", f"file:{f}")  # e.g. an adversarially robust VGG-16
    assert src.kind == "file" and src.path == f and src.norm is None


def test_sha256_checked_when_known(tmp_path):
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"not the real vgg16")
    assert check_weights("vgg16", "imagenet", tmp_path) == tmp_path / "vgg16-397923af.pth"  # existence only
    with pytest.raises(WeightsHashError, match="397923af"):
        resolve_weights("vgg16", "imagenet", tmp_path)
    (tmp_path / "DISTS_weights-f5e65c96.pth").write_bytes(b"junk")
    with pytest.raises(WeightsHashError, match="dists.alpha_beta"):
        resolve_file("dists.alpha_beta", tmp_path)


def test_sha256_prefix_and_full_match(tmp_path):
    data = b"some weights"
    digest = hashlib.sha256(data).hexdigest()
    f = tmp_path / "w.pth"
    f.write_bytes(data)
    for sha in (digest, digest[:8]):
        weights.verify_file(WeightFile("t.x", "w.pth", sha256=sha), f)


def test_found_in_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if "torch" in sys.modules:
        import torch

        assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    ckpt = tmp_path / "torch" / "hub" / "pyiqa" / "DISTS_weights-f5e65c96.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert weights.find_file(MANIFEST["dists.alpha_beta"], tmp_path / "empty") == ckpt


def test_found_in_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--convnext_tiny.fb_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    assert check_weights("convnext_tiny", "imagenet", tmp_path / "empty") == snap / "model.safetensors"


def test_check_weights_imports_no_torch(tmp_path):
    code = (
        "import sys, raygrid.weights as w\n"
        f"w.check_weights('vgg16_r', 'imagenet', {str(tmp_path)!r})\n"
        "try:\n"
        f"    w.check_weights('vgg16', 'imagenet', {str(tmp_path)!r})\n"
        "except w.MissingWeightsError:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {k: v for k, v in os.environ.items()}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[1])
