"""Demo pretrained weights: a short, seeded pre-training of each demo backbone on the demo data,
written under the weights manifest's file names, so that the demo's "imagenet" init is a trained
network (not the "random" one again) and loads through the path real weights take.

The task: tell which of the demo's 10 SR training images (raygrid.data.demo) a random 32 x 32
crop (random flips) comes from, a 10-way classification head on the pooled last feature map, SGD
with momentum for `STEPS` steps (a few seconds per backbone on 2 CPU cores), everything seeded. The backbone is the library's own full model (timm), so the
file is exactly what a real checkpoint of it is: timm's state dict as safetensors, named as the
manifest's entry for the backbone's standard tag (e.g. `resnet50.tv_in1k.safetensors`); VGG-16
writes torchvision's layout (`features.*`). The weights say nothing about ImageNet: they exist so
the demo exercises the pretrained path end to end and no arm equals another by construction.

Where: `<data root>/demo-weights` (the cache when the data root is unset or on S3), never a
user's weights dir. `raygrid-weights.json` there records every file's sha256, which
`raygrid.weights.verify_file` checks the file against (a demo file cannot have the published
file's hash). Built in a temporary folder and renamed into place; a version marker makes later
calls return at once; safe to call from several processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raygrid.io import local_root
from raygrid.spec.backbones import BACKBONES, BackboneSpec, WeightFile
from raygrid.weights import WEIGHTS_RECORD, sha256_of

log = logging.getLogger(__name__)

DEMO_WEIGHTS_VERSION = 1
FOLDER = "demo-weights"
SPACE_VALUE = "demo"  # a space's `weights_dir: demo`
BACKBONES_TRAINED = ("resnet50", "convnext_tiny")  # the demo's backbones that load a file
SEED = 2509
CROP = 32  # the smallest input every backbone takes (raygrid.nets.backbones.MIN_SIZE): cheap steps
BATCH = 8
STEPS = 24
LR = 0.02
MOMENTUM = 0.9


def demo_weights_dir(data_root: str | None = None) -> Path:
    return Path(local_root(data_root)) / FOLDER


def _record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / WEIGHTS_RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _current(folder: Path, backbones: tuple[str, ...]) -> bool:
    from raygrid.data.demo import DEMO_VERSION

    record = _record(folder)
    return (record is not None and record.get("version") == DEMO_WEIGHTS_VERSION
            and record.get("data_version") == DEMO_VERSION and set(backbones) <= set(record.get("backbones", {})))


def entry_of(backbone: str) -> WeightFile:
    """The manifest entry the backbone's "imagenet" means: its file name is what the demo writes."""
    spec = BACKBONES[backbone]
    return spec.tags[spec.default_tag]


def build_demo_weights(data_root: str | None = None, force: bool = False,
                       backbones: tuple[str, ...] = BACKBONES_TRAINED) -> Path:
    """The demo weights folder, built (from the demo data under `data_root`) unless current."""
    folder = demo_weights_dir(data_root)
    if not force and _current(folder, backbones):
        return folder
    from raygrid.data.demo import DEMO_VERSION, build_demo

    images = _training_images(build_demo(data_root)["demo_sr_train"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".demo-weights-", dir=folder.parent))
    try:
        files, names = {}, {}
        for i, name in enumerate(backbones):
            path = write_weights(BACKBONES[name], pretrain(BACKBONES[name], images, SEED + i), tmp)
            files[path.name], names[name] = sha256_of(path), path.name
        record = {"kind": "demo", "version": DEMO_WEIGHTS_VERSION, "data_version": DEMO_VERSION,
                  "task": f"which of {len(images)} demo SR training images a {CROP}px crop comes from",
                  "steps": STEPS, "batch": BATCH, "seed": SEED, "backbones": names, "files": files,
                  "build_seconds": round(time.perf_counter() - start, 2)}
        (tmp / WEIGHTS_RECORD).write_text(json.dumps(record, indent=1))
        _install(tmp, folder, backbones, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("demo weights ready in %s", folder)
    return folder


def resolve_weights_dir(explicit: str | None, space_value: str | None, data_root: str | None) -> str | None:
    """The weights dir of a sweep: an explicit --weights-dir wins; a space's `weights_dir: demo`
    is the demo weights folder (built here); another value is a folder; None leaves the default
    ($RAYGRID_WEIGHTS, else ~/.cache/raygrid/weights) to raygrid.weights."""
    if explicit:
        return explicit
    if space_value == SPACE_VALUE:
        return str(build_demo_weights(data_root))
    return os.path.expanduser(space_value) if space_value else None


# ---------------------------------------------------------------------------------------------
# Pre-training
# ---------------------------------------------------------------------------------------------


def _training_images(folder: str) -> list[np.ndarray]:
    from raygrid.data.images import list_images, read_rgb

    return [read_rgb(p) for p in list_images(folder)]


def _batch(images: list[np.ndarray], rng: np.random.Generator, crop: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from raygrid.data.tensors import to_tensor

    labels = rng.integers(0, len(images), size=n)
    crops = []
    for k in labels:
        img = images[k]
        top, left = rng.integers(0, img.shape[0] - crop + 1), rng.integers(0, img.shape[1] - crop + 1)
        patch = img[top:top + crop, left:left + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        crops.append(to_tensor(patch))
    return torch.stack(crops), torch.from_numpy(labels)


def _library_model(spec: BackboneSpec) -> torch.nn.Module:
    """The library's own full network (what its checkpoint files hold), randomly initialised."""
    if spec.library == "timm":
        import timm

        return timm.create_model(spec.arch, pretrained=False)
    if spec.library == "torchvision" and spec.arch == "vgg16":
        from torchvision.models import vgg16

        return vgg16(weights=None)
    raise ValueError(f"no demo pre-training for backbone {spec.name!r} ({spec.library})")


def _features(spec: BackboneSpec, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if spec.library == "timm":
        return model.forward_features(x)
    return model.features(x)


def pretrain(spec: BackboneSpec, images: list[np.ndarray], seed: int, steps: int = STEPS,
             crop: int = CROP, batch: int = BATCH) -> dict[str, torch.Tensor]:
    """The library model's state dict after `steps` seeded steps of the demo task."""
    threads = torch.get_num_threads()
    # one thread: on a shared 2-core machine two spinning OpenMP threads per step were several
    # times slower than one, and the result does not depend on the machine's core count
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _train(spec, images, np.random.default_rng(seed), steps, crop, batch)
    finally:
        torch.set_num_threads(threads)


def _train(spec: BackboneSpec, images: list[np.ndarray], rng: np.random.Generator, steps: int, crop: int,
           batch: int) -> dict[str, torch.Tensor]:
    norm = entry_of(spec.name).norm  # the statistics the backbone normalises its inputs with
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    model = _library_model(spec)
    with torch.no_grad():
        channels = _features(spec, model.eval(), torch.zeros(1, 3, crop, crop)).shape[1]
    head = torch.nn.Linear(channels, len(images))
    # SGD, not Adam: its update is one pass over the weights (ResNet-50 has 25 M of them)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=LR, momentum=MOMENTUM)
    model.train()
    for _ in range(steps):
        x, y = _batch(images, rng, crop, batch)
        loss = F.cross_entropy(head(_features(spec, model, (x - mean) / std).mean((2, 3))), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def write_weights(spec: BackboneSpec, state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write `state` as the library's file under the manifest entry's file name."""
    path = folder / entry_of(spec.name).file
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"raygrid": "demo pre-training", "format": "pt"})
    else:  # torchvision's .pth: torch.save of the state dict
        torch.save(state, path)
    return path


def _install(tmp: Path, folder: Path, backbones: tuple[str, ...], force: bool) -> None:
    """Move a finished build into place, atomically; another process may race us."""
    try:
        os.rename(tmp, folder)
        return
    except OSError:
        pass
    if _current(folder, backbones) and not force:
        return  # another process finished first: its build is as good as ours
    old = Path(tempfile.mkdtemp(prefix=".demo-weights-old-", dir=folder.parent))
    try:
        os.rename(folder, old / FOLDER)
    except FileNotFoundError:
        pass
    try:
        os.rename(tmp, folder)
    except OSError:
        if not _current(folder, backbones):
            raise
    shutil.rmtree(old, ignore_errors=True)
