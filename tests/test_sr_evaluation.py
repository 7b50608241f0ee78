"""The optimize evaluation's records without Ray: a tiny generator on the demo sets gives the
per-image table behind the metrics Tune sees, the sweep's sample crops (exactly the crops of the
full-image SR) and, once, the evaluator record."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from raygrid.data.sr import SRTestSet, resolve_sr_root
from raygrid.data.tensors import to_uint8
from raygrid.run import samples
from raygrid.spec import records
from raygrid.stages.loop import RunEnv
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.evaluate import SREvaluation


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from raygrid.data.demo import build_demo

    root = tmp_path_factory.mktemp("data")
    paths = build_demo(str(root))
    # a second evaluation set for the "test" role: a copy of the demo val set under a path
    copy = root / "copy_of_val"
    shutil.copytree(paths["demo_sr_val"], copy)
    return str(root), str(copy)


def config(test_set: str, discriminator: str = "patch_resnet50") -> SRGanConfig:
    return SRGanConfig.model_validate({
        "fidelity": {"backbone": "vgg16_r", "weights": "random"},
        "generator": {"preset": "tiny"},
        "adversarial": {"weights": "random", "discriminator": discriminator},
        "loss": {"adversarial_weight": 0.05},
        "data": {"train": "demo_sr_train", "val": ["demo_sr_val"], "test": [test_set], "max_eval_images": 2},
        "eval": {"fidelity_backbones": ["vgg16_r"], "weights": "random"},
    })


def generator():
    from raygrid.nets.generators import create_generator

    torch.manual_seed(0)
    return create_generator("swinir", "tiny", scale=4).eval()


def demo_crops(data_root: str) -> list[dict]:
    """The sweep's crops as the runner chooses them, for the demo space."""
    from raygrid.space import load_space

    return [c.to_dict() for c in samples.choose_for_sweep(load_space("demo"), data_root)]


def test_evaluation_writes_the_table_behind_its_metrics_the_crops_and_the_record_once(demo_root):
    data_root, test_set = demo_root
    crops = demo_crops(data_root)
    ds = SRTestSet(resolve_sr_root("demo_sr_val", data_root))
    evaluated = {ds[i]["name"] for i in range(2)}
    # at least one crop's image is past max_eval_images: it gets a full-image pass of its own
    assert {c["image"] for c in crops} - evaluated and {c["image"] for c in crops} & evaluated
    cfg = config(test_set)
    evaluation = SREvaluation(cfg, RunEnv(data_root=data_root, samples=tuple(crops)), torch.device("cpu"))
    g = generator()
    metrics, files = evaluation.run(g, 20)

    table = records.read_table(files[records.CKPT_SCORES], "optimize")
    assert list(table.columns) == ["role", "set", "image", "evaluator", "value"]
    evaluators = ["psnr_y", "ssim_y", "fidelity_vgg16_r"]
    assert len(table) == 2 * 2 * len(evaluators)  # (val + test) x 2 images x evaluators
    assert set(table.role) == {"val", "test"} and set(table.set) == {"demo_sr_val", test_set}
    assert set(table.image) == evaluated and set(table.evaluator) == set(evaluators)
    # the metrics Tune sees are the means of the table's rows
    for (role, set_name, ev), rows in table.groupby(["role", "set", "evaluator"]):
        assert metrics[f"{role}/{set_name}/{ev}"] == pytest.approx(rows.value.mean(), rel=1e-6)
    for (role, ev), rows in table.groupby(["role", "evaluator"]):
        assert metrics[f"{role}/{ev}"] == pytest.approx(rows.value.mean(), rel=1e-6)
    # one row per image and evaluator: the val copy and the test copy are the same images
    val = table[table.role == "val"].set_index(["image", "evaluator"]).value
    test = table[table.role == "test"].set_index(["image", "evaluator"]).value
    assert np.allclose(val.sort_index(), test.sort_index())

    # every crop is the crop of the EMA generator's full-image SR
    pngs = {k: v for k, v in files.items() if k.startswith("samples/")}
    assert sorted(pngs) == sorted(f"samples/{c['id']}.png" for c in crops)
    by_name = {ds[i]["name"]: ds[i] for i in range(len(ds))}
    for c in crops:
        item = by_name[c["image"]]
        with torch.no_grad():
            full = to_uint8(g(item["lr"][None]).clamp(0, 1)[0, :, : item["hr"].shape[1], : item["hr"].shape[2]])
        got = np.asarray(Image.open(io.BytesIO(pngs[f"samples/{c['id']}.png"])).convert("RGB"))
        assert got.shape == (c["size"], c["size"], 3)
        assert np.array_equal(got, full[c["top"]:c["top"] + c["size"], c["left"]:c["left"] + c["size"]])

    record = records.check_evaluator_record(json.loads(files[records.CKPT_EVALUATORS]))
    shares = {e["name"]: e["shares"] for e in record}
    assert shares == {"psnr_y": [], "ssim_y": [], "fidelity_vgg16_r": ["loss"]}
    # later evaluations of the same run: a new table and new crops, no second record
    g.conv_first.weight.data.mul_(0.5)  # another model state: other scores
    metrics2, files2 = evaluation.run(g, 40)
    assert records.CKPT_EVALUATORS not in files2 and records.CKPT_SCORES in files2
    assert metrics2["val/psnr_y"] != metrics["val/psnr_y"]
    assert sorted(k for k in files2 if k.startswith("samples/")) == sorted(pngs)


def test_without_sweep_crops_no_samples_and_the_record_names_the_discriminator_trunk(demo_root):
    data_root, test_set = demo_root
    cfg = config(test_set, discriminator="vanilla_conv")
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"fidelity_backbones": ["vgg16_r", "resnet50"]})})
    evaluation = SREvaluation(cfg, RunEnv(data_root=data_root), torch.device("cpu"))
    assert [e["shares"] for e in evaluation.record] == [[], [], ["loss"], []]  # the conv trunk is no backbone
    _, files = evaluation.run(generator(), 5)
    assert not [k for k in files if k.startswith("samples/")]
    bad = RunEnv(data_root=data_root, samples=({"id": "c00", "set": "demo_sr_val", "image": "logo", "top": 2,
                                                "left": 0, "size": 96, "kind": "detail"},))
    with pytest.raises(ValueError, match=r"RunEnv.samples: crops\[0\] top/left/size must be multiples of the scale 4"):
        SREvaluation(cfg, bad, torch.device("cpu"))
