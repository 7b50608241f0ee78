"""Crop records, the deterministic choice, and the geometry of rendering a crop."""

import json

import numpy as np
import pytest
import torch

from raygrid.judge import crops as C


def test_parse_crops_is_strict():
    good = {"crops": [{"id": "c00", "set": "set5", "image": "baby", "top": 8, "left": 4, "size": 64, "kind": "detail"}]}
    assert C.parse_crops(json.dumps(good), "x", scale=4)[0] == C.Crop("c00", "set5", "baby", 8, 4, 64, "detail")
    cases = [
        ({"crops": []}, "at least one crop"),
        ({"crops": [{**good["crops"][0], "colour": 1}]}, "unknown key"),
        ({"crops": [{k: v for k, v in good["crops"][0].items() if k != "top"}]}, "lacks"),
        ({"crops": [{**good["crops"][0], "size": "64"}]}, "expected int"),
        ({"crops": [{**good["crops"][0], "kind": "sky"}]}, "kind"),
        ({"crops": [{**good["crops"][0], "top": 6}]}, "multiples of the scale 4"),
        ({"crops": [good["crops"][0], good["crops"][0]]}, "appears twice"),
    ]
    for doc, msg in cases:
        with pytest.raises(ValueError, match=msg):
            C.parse_crops(json.dumps(doc), "samples/crops.json", scale=4)
    with pytest.raises(ValueError, match="not JSON"):
        C.parse_crops("{", "samples/crops.json")


def test_choose_crops_is_deterministic_and_finds_the_detail():
    rng = np.random.default_rng(0)
    flat = np.full((96, 128, 3), 120, np.uint8)
    busy = flat.copy()
    busy[40:72, 64:96] = rng.integers(0, 255, (32, 32, 3))  # the only detail in the image
    images = [("demo", "flat", flat), ("demo", "busy", busy)]
    a = C.choose_crops(images, scale=4, size=32, max_crops=4)
    assert a == C.choose_crops(images, scale=4, size=32, max_crops=4)
    assert [c.id for c in a] == ["c00", "c01", "c02", "c03"] and [c.kind for c in a] == ["detail"] * 2 + ["texture"] * 2
    busy_detail = a[1]
    assert (busy_detail.top, busy_detail.left) == (40, 64)
    for c in a:
        assert c.top % 4 == c.left % 4 == c.size % 4 == 0 and c.size == 32
        first = next(x for x in a if x.image == c.image and x.kind == "detail")
        if c.kind == "texture":  # the second crop of an image does not overlap the first
            assert abs(c.top - first.top) >= 32 or abs(c.left - first.left) >= 32
    # an image smaller than the crop gets a smaller crop, still a multiple of the scale
    small = C.choose_crops([("demo", "tiny", busy[:30, :30])], scale=4, size=32, max_crops=1)
    assert small[0].size == 28


class _Images(C.TestImages):
    def __init__(self, lr, hr):
        super().__init__("unused", 4)
        self.lr, self.hr = lr, hr

    def pair(self, set_name, image):
        return self.lr, self.hr


def test_render_cuts_the_crop_out_of_a_padded_lr_window():
    """With a nearest-neighbour ×4 "generator", the rendered crop must be exactly the nearest
    upscaling of the crop's own LR pixels, wherever the crop sits (borders included)."""
    torch.manual_seed(0)
    lr = torch.rand(3, 30, 40)
    hr = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="nearest")[0]
    model = torch.nn.Upsample(scale_factor=4, mode="nearest")
    images = _Images(lr, hr)
    crops = [C.Crop("a", "s", "i", 0, 0, 32, "detail"), C.Crop("b", "s", "i", 40, 60, 48, "detail"),
             C.Crop("c", "s", "i", 120 - 32, 160 - 32, 32, "detail")]
    out = C.render(model, images, crops)
    ref = {c.id: C.reference(images, c) for c in crops}
    for c in crops:
        assert out[c.id].shape == (c.size, c.size, 3)
        np.testing.assert_array_equal(out[c.id], ref[c.id][0])  # = the HR crop here
    with pytest.raises(ValueError, match="does not fit"):
        C.render(model, images, [C.Crop("d", "s", "i", 100, 0, 32, "detail")])


def test_load_generator_takes_the_ema_weights(tmp_path):
    from raygrid.nets.generators import create_generator

    torch.manual_seed(1)
    g, ema = create_generator("swinir", "tiny"), create_generator("swinir", "tiny")
    torch.save({"generator": g.state_dict(), "ema": ema.state_dict()}, tmp_path / "model.pt")
    loaded = C.load_generator(tmp_path / "model.pt", "swinir", "tiny", 4)
    for (k, v), (_, w) in zip(loaded.state_dict().items(), ema.state_dict().items()):
        assert torch.equal(v, w), k
    torch.save({"opt_g": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no generator weights"):
        C.load_generator(tmp_path / "bad.pt", "swinir", "tiny", 4)


def test_a_bad_crops_json_on_the_sweep_run_is_one_line(tmp_path, capsys):
    from judge_fixtures import build_store, judge_args

    from raygrid.spec import mlflow as names
    from raygrid.judge.cli import main

    store = build_store(tmp_path, images=False, backbones=("vgg16_r", "resnet50"), discriminators=("none",))
    bad = {"crops": [{"id": "c00", "set": "demo_sr_val", "image": "x", "top": 2, "left": 0, "size": 32, "kind": "detail"}]}
    names.client(store.uri).log_text(store.sweep_run_id, json.dumps(bad), "samples/crops.json")
    capsys.readouterr()  # MLflow's own log lines from creating the store
    assert main(judge_args(store, "--port", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "samples/crops.json of sweep run" in err and "multiples of the scale 4" in err
