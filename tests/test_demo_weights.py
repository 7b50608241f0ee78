"""The demo's pretrained weights: a short seeded pre-training on the demo data, written under the
manifest's file names with their sha256 recorded, loaded through the path real weights take; the
demo's "imagenet" init is then not its "random" one."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from raygrid.data.demo_weights import (
    FOLDER,
    build_demo_weights,
    demo_weights_dir,
    entry_of,
    pretrain,
    resolve_weights_dir,
    write_weights,
)
from raygrid.spec.backbones import BACKBONES
from raygrid.weights import WEIGHTS_RECORD, WeightsHashError, resolve_weights, sha256_of


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    start = time.perf_counter()
    folder = build_demo_weights(str(root), backbones=("resnet50",))  # one backbone keeps the test short
    print(f"\ndemo weights for resnet50 built in {time.perf_counter() - start:.1f} s")
    return root, folder


def test_files_carry_the_manifest_names_and_their_recorded_sha256(built):
    root, folder = built
    assert folder == demo_weights_dir(str(root)) == root / FOLDER
    record = json.loads((folder / WEIGHTS_RECORD).read_text())
    assert record["kind"] == "demo" and record["backbones"] == {"resnet50": "resnet50.tv_in1k.safetensors"}
    assert record["files"] == {"resnet50.tv_in1k.safetensors": sha256_of(folder / "resnet50.tv_in1k.safetensors")}
    assert not [p for p in root.iterdir() if p.name.startswith(".demo-weights")]  # no temporary folders left


def test_imagenet_init_loads_the_demo_file_through_the_manifest_and_differs_from_random(built):
    from safetensors.torch import load_file

    from raygrid.nets.iqa import create_iqa_model

    _, folder = built
    source = resolve_weights("resnet50", "imagenet", folder)  # find_file + verify_file, as for real weights
    assert source.kind == "file" and source.path == folder / "resnet50.tv_in1k.safetensors"
    pretrained = create_iqa_model("nr", "resnet50", init="imagenet", weights_dir=str(folder)).backbone.model
    random = create_iqa_model("nr", "resnet50", init="random", weights_dir=str(folder)).backbone.model
    saved = load_file(str(source.path))
    assert torch.equal(pretrained.state_dict()["conv1.weight"], saved["conv1.weight"])
    differ = [k for k, v in pretrained.state_dict().items() if v.is_floating_point()
              and not torch.allclose(v, random.state_dict()[k])]
    assert len(differ) > 100  # every layer was trained, not just touched


def test_a_changed_file_fails_its_recorded_hash(built, tmp_path):
    _, folder = built
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    path = copy / "resnet50.tv_in1k.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsHashError, match=f"recorded in .*{WEIGHTS_RECORD}"):
        resolve_weights("resnet50", "imagenet", copy)


def test_a_second_build_is_a_no_op(built):
    root, folder = built
    mtime = (folder / WEIGHTS_RECORD).stat().st_mtime_ns
    start = time.perf_counter()
    assert build_demo_weights(str(root), backbones=("resnet50",)) == folder
    assert time.perf_counter() - start < 1.0
    assert (folder / WEIGHTS_RECORD).stat().st_mtime_ns == mtime


def test_the_weights_dir_of_a_sweep(built, tmp_path):
    root, folder = built
    mine = str(tmp_path / "my-weights")
    assert resolve_weights_dir(mine, "demo", str(root)) == mine  # an explicit --weights-dir wins
    assert resolve_weights_dir(None, "~/w", str(root)).endswith("/w")
    assert resolve_weights_dir(None, None, str(root)) is None  # raygrid.weights' default applies
    assert not (tmp_path / "my-weights").exists()  # the demo never writes into a user's folder


def test_vgg16_is_written_in_torchvision_layout_and_checked_against_its_record(tmp_path):
    from raygrid.data.demo import build_demo
    from raygrid.data.demo_weights import _training_images
    from raygrid.nets.backbones import create_backbone

    images = _training_images(build_demo(str(tmp_path))["demo_sr_train"])
    spec = BACKBONES["vgg16"]
    state = pretrain(spec, images, seed=0, steps=1, batch=2)
    folder = tmp_path / "w"
    folder.mkdir()
    path = write_weights(spec, state, folder)
    assert path.name == entry_of("vgg16").file == "vgg16-397923af.pth"
    assert {"features.0.weight", "classifier.6.weight"} <= set(torch.load(path, weights_only=True))
    # the published file's hash prefix is what the manifest checks, and a demo file does not have it
    with pytest.raises(WeightsHashError, match="expected prefix 397923af"):
        resolve_weights("vgg16", "imagenet", folder)
    (folder / WEIGHTS_RECORD).write_text(json.dumps({"kind": "demo", "files": {path.name: sha256_of(path)}}))
    net = create_backbone("vgg16", "imagenet", str(folder))
    assert torch.equal(net.features[0].weight, state["features.0.weight"])
