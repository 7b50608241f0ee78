"""The sweep's sample crops: the selection rule on images whose answer is known, and the sweep
run's record (crops.json, HR and bicubic images) in a real MLflow store, kept on resume."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow_store import sweep_store

from raygrid.judge.crops import parse_crops
from raygrid.run import samples
from raygrid.spec import mlflow as names
from raygrid.spec import records


def flat(h=128, w=128, value=128):
    return np.full((h, w, 3), value, np.uint8)


def with_noise(img, top, left, side, amp, seed=0):
    rng = np.random.default_rng(seed)
    out = img.astype(float)
    out[top:top + side, left:left + side] += rng.normal(0, amp, (side, side, 1))
    return out.clip(0, 255).astype(np.uint8)


def test_texture_prefers_a_stationary_pattern_to_one_strong_edge_and_detail_finds_the_busy_window():
    img = flat(192, 192)
    img[:, :40] = 0  # one strong vertical edge at x = 40 (an edge, not a texture)
    img = with_noise(img, 96, 96, 96, 12)  # fine, even noise in the bottom-right window
    scores = samples.window_scores(img, 96)
    assert scores["texture"][1:] == (96, 96)
    busy = with_noise(flat(192, 192), 0, 96, 96, 60)  # strong noise top right
    assert samples.window_scores(busy, 96)["detail"][1:] == (0, 96)


def test_choice_faces_and_text_by_name_then_detail_and_texture_round_robin_one_crop_per_image():
    images = [
        ("set5", "bird", with_noise(flat(), 0, 0, 64, 30, seed=1)),
        ("set5", "head", flat(120, 100)),  # a listed close-up portrait
        ("set14", "ppt3", with_noise(flat(), 64, 0, 64, 50, seed=2)),  # Set14's slide: text
        ("set14", "zebra", with_noise(flat(), 32, 32, 96, 40, seed=3)),
        ("set14", "monarch", with_noise(flat(), 0, 0, 128, 20, seed=4)),
        ("bsd100", "tiny", flat(12, 12)),  # too small for a crop: never chosen
    ]
    crops = samples.choose(images, scale=4, size=64, max_crops=5)
    assert [c.id for c in crops] == ["c00", "c01", "c02", "c03", "c04"]
    assert [(c.kind, c.set, c.image) for c in crops] == [
        ("face", "set5", "head"), ("text", "set14", "ppt3"),
        ("detail", "set5", "bird"),  # turn 0: set5
        ("texture", "set14", "zebra"),  # turn 1: set5 has no unused image left, so set14
        ("detail", "set14", "monarch"),
    ]
    face = crops[0]  # the centre window, on the scale grid
    assert (face.top, face.left, face.size) == (28, 16, 64)
    assert crops[1].top == 64 and crops[1].left == 0  # the text image's busiest window
    assert all(c.top % 4 == 0 and c.left % 4 == 0 and c.size % 16 == 0 for c in crops)
    assert len({(c.set, c.image) for c in crops}) == len(crops)
    assert samples.choose(images, scale=4, size=64, max_crops=5) == crops  # deterministic
    # with more room than images, every usable image gets exactly one crop
    assert len(samples.choose(images, scale=4, size=64, max_crops=20)) == 5


def test_the_sweep_sets_are_the_test_sets_else_the_validation_sets():
    from raygrid.space import load_space

    assert samples.sample_sets(load_space("paper")) == (
        ["set5", "set14", "bsd100", "urban100", "manga109", "div2k_val_test"], 4)
    assert samples.sample_sets(load_space("demo")) == (["demo_sr_test"], 4)
    demo = load_space("demo")
    for trial in demo.stages["optimize"].trials:
        trial.config.data.test = []
    assert samples.sample_sets(demo) == (["demo_sr_select"], 4)  # no test set: the validation sets
    demo = load_space("demo")
    demo.stages = {"assess": demo.stages["assess"]}
    assert samples.sample_sets(demo) == ([], 4)


def _image_keys(client, run_id) -> list[tuple[str, int]]:
    out = []
    for f in client.list_artifacts(run_id, "images"):
        m = re.match(r"(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$", Path(f.path).name)
        if m:
            out.append((m[1].replace("~", "/"), int(m[2])))
    return sorted(out)


def test_the_sweep_run_gets_crops_json_and_hr_bicubic_images_once(tmp_path):
    from raygrid.data.demo import build_demo
    from raygrid.judge.crops import TestImages
    from raygrid.space import load_space

    root = str(tmp_path / "data")
    build_demo(root)
    uri, exp, run_id = sweep_store(tmp_path)
    client = names.client(uri)
    sweep = load_space("demo")
    crops = samples.sweep_samples(sweep, client, run_id, root)
    assert crops and crops == [c.to_dict() for c in samples.choose_for_sweep(sweep, root)]
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run_id, records.ARTIFACT_CROPS, tmp)).read_text()
    assert [c.to_dict() for c in parse_crops(text, "crops.json", 4)] == crops  # the judge's reader
    assert set(json.loads(text)) == {"crops"}
    keys = _image_keys(client, run_id)
    assert keys == sorted([(f"hr/{c['id']}", 0) for c in crops] + [(f"bicubic/{c['id']}", 0) for c in crops])
    # the HR image is the crop of the HR test image
    c = crops[0]
    name = next(f.path for f in client.list_artifacts(run_id, "images")
                if f.path.split("/")[-1].startswith(f"hr~{c['id']}+") and f.path.endswith(".png"))
    with tempfile.TemporaryDirectory() as tmp:
        from raygrid.data.images import read_rgb
        from raygrid.data.tensors import to_uint8

        logged = read_rgb(client.download_artifacts(run_id, name, tmp))
    _, hr = TestImages(root, 4).pair(c["set"], c["image"])
    assert np.array_equal(logged, to_uint8(hr)[c["top"]:c["top"] + c["size"], c["left"]:c["left"] + c["size"]])
    # a resumed sweep keeps its crops and logs nothing again
    assert samples.sweep_samples(sweep, client, run_id, root) == crops
    assert _image_keys(client, run_id) == keys


@pytest.mark.parametrize("kind", ["face", "text"])
def test_named_images_absent_means_no_such_crop(kind):
    images = [("set5", "bird", with_noise(flat(), 0, 0, 64, 30))]
    assert all(c.kind != kind for c in samples.choose(images, scale=4, size=64))
