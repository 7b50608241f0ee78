"""Pretrained-weight resolution: a weights spec -> a local file, a fixed seed, or random init.

Every pretrained component raygrid uses resolves to an explicit local file listed in MANIFEST
(logical name -> expected file name, sha256 where known): the pretrained tags of every backbone
record (raygrid.spec.backbones) plus the few files that belong to no backbone. Nothing here downloads: a file is taken
from the weights directory first, then from the cache the owning library would have filled
(torch hub for torchvision/pyiqa files, the Hugging Face cache for timm/open_clip files), and a
missing file raises MissingWeightsError naming the file and every folder searched.

Specs a backbone accepts:
  "random"      random init (VGG-16-R: its fixed-seed init, which *is* that backbone)
  "imagenet"    the backbone's default pretrained tag (BackboneSpec.default_tag; e.g. CLIP's OpenAI weights,
                DINOv2's LVD-142M weights: "imagenet" means "the standard pretrained weights")
  "<tag>"       a named pretrained tag, e.g. "a1_in1k" for resnet50 (any timm tag for timm models)
  "file:PATH"   an explicit checkpoint file, loaded through the same library hook

This module imports no torch at import time (the sweep calls check_weights() before it starts).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raygrid.errors import PermanentError
from raygrid.spec.backbones import (
    BACKBONES,
    FILE_PREFIX,
    TIMM_PREFIX,
    Normalization,
    WeightFile,
    is_backbone,
    timm_weights,
    unknown_backbone,
)
from raygrid.spec.generators import GENERATOR_WEIGHTS

ENV_WEIGHTS_DIR = "RAYGRID_WEIGHTS"
# A weights dir raygrid built itself (the demo's, raygrid.data.demo_weights) records its files'
# sha256 here; such a file is checked against that record instead of the published hash.
WEIGHTS_RECORD = "raygrid-weights.json"
RANDOM = "random"
PRETRAINED = "imagenet"  # alias for the backbone's default pretrained tag

# Every weight file raygrid knows: each backbone's pretrained tags (raygrid.spec.backbones) plus
# the files that belong to no backbone.
MANIFEST: dict[str, WeightFile] = {
    e.key: e
    for e in [
        *(w for b in BACKBONES.values() for w in b.pretrained),
        *GENERATOR_WEIGHTS.values(),  # generators' official checkpoints (raygrid.spec.generators)
        # DISTS alpha/beta: the DISTS_pytorch-0.1 wheel's weights.pt = pyiqa's DISTS_weights-f5e65c96.pth.
        WeightFile(
            "dists.alpha_beta",
            file="DISTS_weights-f5e65c96.pth",
            sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
            torch_hub=("pyiqa/DISTS_weights-f5e65c96.pth",),
            source="weights.pt inside the DISTS_pytorch-0.1 wheel on PyPI (renamed), or "
            "https://huggingface.co/chaofengc/IQA-PyTorch-Weights (DISTS_weights-f5e65c96.pth)",
        ),
    ]
}


class MissingWeightsError(PermanentError, FileNotFoundError):
    """A weights file is not in the weights dir nor in any library cache (nothing downloads)."""


class WeightsHashError(PermanentError, ValueError):
    """A weights file exists but its sha256 is not the one the manifest records."""


@dataclass(frozen=True)
class WeightSource:
    """What create_backbone loads: random init, a fixed-seed init, or one local file."""

    backbone: str
    spec: str
    kind: Literal["random", "seeded", "file"]
    path: Path | None = None
    tag: str | None = None  # pretrained tag the file holds (None for file:PATH / random)
    seed: int | None = None
    norm: Normalization | None = None  # None: the backbone's default input statistics

    @property
    def pretrained(self) -> bool:
        return self.kind == "file"


# ---------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------


def default_weights_dir() -> Path:
    env = os.environ.get(ENV_WEIGHTS_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "raygrid" / "weights"


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch (same rule: TORCH_HOME, XDG_CACHE_HOME)."""
    if "torch" in sys.modules:  # honours torch.hub.set_dir() when torch is already loaded
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "torch"
    )
    return Path(home).expanduser() / "hub"


def _hf_cached(repo_id: str, filename: str) -> tuple[Path | None, str]:
    """Path of a file already in the Hugging Face cache (no HTTP), and the folder searched."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        return None, "(huggingface_hub not installed)"
    hit = try_to_load_from_cache(repo_id, filename)
    where = f"{constants.HF_HUB_CACHE} [{repo_id}/{filename}]"
    return (Path(hit) if isinstance(hit, str) and os.path.isfile(hit) else None), where


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def find_file(entry: WeightFile, weights_dir: str | os.PathLike | None = None) -> Path:
    """Locate entry's file: weights dir first, then library caches. Raises MissingWeightsError."""
    if entry.file is None:
        raise ValueError(f"{entry.key!r} is a seeded init and has no file")
    wdir = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    searched = [f"{wdir} (weights dir: weights_dir= or ${ENV_WEIGHTS_DIR})"]
    if (wdir / entry.file).is_file():
        return wdir / entry.file
    hub = torch_hub_dir()
    for rel in entry.torch_hub:
        if (hub / rel).is_file():
            return hub / rel
        searched.append(f"{(hub / rel).parent} [{Path(rel).name}] (torch hub cache)")
    for repo_id, filename in entry.hf_hub:
        hit, where = _hf_cached(repo_id, filename)
        if hit is not None:
            return hit
        searched.append(f"{where} (Hugging Face cache)")
    lines = "\n  ".join(searched)
    raise MissingWeightsError(
        f"weights {entry.key!r}: file {entry.file!r} not found (nothing is downloaded). Searched:\n"
        f"  {lines}\nPut {entry.file!r} in the weights dir. Source: {entry.source or 'unknown'}"
    )


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def sha256_of(path: str | os.PathLike) -> str:
    st = os.stat(path)
    memo = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[memo] = h.hexdigest()
    return _VERIFIED[memo]


def recorded_sha256(path: Path) -> str | None:
    """The sha256 a raygrid-built weights dir records for `path` (WEIGHTS_RECORD), if any."""
    try:
        record = json.loads((Path(path).parent / WEIGHTS_RECORD).read_text())
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    value = files.get(Path(path).name) if isinstance(files, dict) else None
    return value if isinstance(value, str) and value else None


def verify_file(entry: WeightFile, path: Path) -> None:
    """Check path against entry.sha256 (a full digest or a prefix), or against the sha256 its
    raygrid-built folder records for it (the demo weights). No-op when neither is known."""
    recorded = recorded_sha256(path)
    expected = recorded or entry.sha256
    if not expected:
        return
    digest = sha256_of(path)
    if not digest.startswith(expected.lower()):
        source = f"recorded in {Path(path).parent / WEIGHTS_RECORD}" if recorded else f"source: {entry.source}"
        raise WeightsHashError(
            f"weights {entry.key!r}: {path} has sha256 {digest}, expected "
            f"{'prefix ' if len(expected) < 64 else ''}{expected} (wrong or corrupt file; {source})"
        )


def resolve_file(key: str, weights_dir: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """Logical name in MANIFEST -> verified local file (e.g. 'dists.alpha_beta')."""
    if key not in MANIFEST:
        raise KeyError(f"unknown weights {key!r}; known: {', '.join(sorted(MANIFEST))}")
    path = find_file(MANIFEST[key], weights_dir)
    if verify:
        verify_file(MANIFEST[key], path)
    return path


# ---------------------------------------------------------------------------------------------
# Backbone specs
# ---------------------------------------------------------------------------------------------


def _split_timm(backbone: str) -> tuple[str, str | None]:
    """'timm:resnet18.a1_in1k' -> ('resnet18', 'a1_in1k')."""
    arch, _, tag = backbone[len(TIMM_PREFIX) :].partition(".")
    return arch, tag or None


def _timm_default_tag(arch: str) -> str:
    import timm  # lazy: only "timm:<model>" + "imagenet" without an explicit tag needs it

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.tag:
        raise ValueError(f"timm model {arch!r} has no pretrained weights; use weights='random'")
    return cfg.tag


def _entry_for(backbone: str, spec: str) -> WeightFile:
    """The weight file a pretrained spec means for this backbone (synthesised for timm tags)."""
    if backbone.startswith(TIMM_PREFIX):
        arch, tag = _split_timm(backbone)
        if spec != PRETRAINED:
            if tag is not None and spec != tag:
                raise ValueError(f"backbone {backbone!r} already names tag {tag!r}; got weights {spec!r}")
            tag = spec
        tag = tag or _timm_default_tag(arch)
        return timm_weights(f"{arch}.{tag}", arch, tag)
    record = BACKBONES[backbone]
    tag = record.default_tag if spec == PRETRAINED else spec
    if tag in record.tags:
        return record.tags[tag]
    if record.library == "timm":  # any other timm tag of a timm-built backbone
        return timm_weights(f"{backbone}.{tag}", record.arch, tag)
    raise ValueError(
        f"unknown weights {spec!r} for backbone {backbone!r}; expected 'random', 'imagenet', "
        f"'file:PATH' or one of the tags {sorted(record.tags)}"
    )


def resolve_weights(
    backbone: str, spec: str = RANDOM, weights_dir: str | os.PathLike | None = None, verify: bool = True
) -> WeightSource:
    """Resolve a backbone's weights spec to a WeightSource (file found and, if known, hash-checked)."""
    if not is_backbone(backbone):
        raise ValueError(unknown_backbone(backbone))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"weights spec must be a non-empty string, got {spec!r}")
    record = BACKBONES.get(backbone)
    if record is not None and record.fixed_init and spec in (RANDOM, PRETRAINED, record.default_tag):
        # VGG-16-R *is* VGG-16 with fixed-seed random weights; "random" must not mean another draw.
        default = record.tags[record.default_tag]
        return WeightSource(backbone, spec, "seeded", tag=default.tag, seed=default.seed)
    if spec == RANDOM:
        return WeightSource(backbone, spec, "random")
    if spec.startswith(FILE_PREFIX):
        path = Path(spec[len(FILE_PREFIX) :]).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights {spec!r} for backbone {backbone!r}: file {str(path)!r} does not exist")
        return WeightSource(backbone, spec, "file", path=path)
    entry = _entry_for(backbone, spec)
    path = find_file(entry, weights_dir)
    if verify:
        verify_file(entry, path)
    return WeightSource(backbone, spec, "file", path=path, tag=entry.tag, norm=entry.norm)


def check_weights(backbone: str, spec: str = RANDOM, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """Fail fast before a sweep: the file a spec needs exists (no hashing, no torch). None = no file."""
    src = resolve_weights(backbone, spec, weights_dir, verify=False)
    return src.path
