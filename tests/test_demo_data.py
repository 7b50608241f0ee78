"""The demo data: built offline, fast, through the real readers, idempotent and race-safe."""

import json
import multiprocessing as mp
import os
import re
import time

import numpy as np
import pytest
import torch

from raygrid import spec
from raygrid.data.demo import (
    DEMO_VERSION,
    DISTORTIONS,
    MARKER,
    N_LEVELS,
    build_demo,
    pseudo_mos,
)
from raygrid.data.iqa import load_benchmark, resolve_benchmark_root
from raygrid.data.iqa.dataset import IQADataset
from raygrid.data.sr import SRTestSet, SRTrainSet, resolve_sr_root


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-root")
    start = time.perf_counter()
    paths = build_demo(str(root))
    seconds = time.perf_counter() - start
    return root, paths, seconds


def test_builds_offline_quickly_with_marker(demo):
    root, paths, seconds = demo
    assert seconds < 60
    assert set(paths) == {"demo_sr_train", "demo_sr_val", "demo_fr", "demo_nr"}
    for name, folder in paths.items():
        info = spec.SR_SETS.get(name) or spec.BENCHMARKS[name]
        assert folder == os.path.join(str(root), info.folder) and os.path.isdir(folder)
    marker = json.loads((root / "demo" / MARKER).read_text())
    assert marker["version"] == DEMO_VERSION
    assert marker["contents"] == {"sr_train_images": 10, "sr_val_images": 4, "fr_references": 8,
                                  "fr_distorted": 160, "nr_images": 168}
    assert marker["bytes"] < 20 * 2**20
    print(f"\ndemo data: {marker['bytes'] / 2**20:.1f} MiB built in {seconds:.2f} s")
    assert not [p for p in os.listdir(root) if p.startswith(".demo-")]  # no temp folders left


def test_second_call_is_a_no_op(demo):
    root, paths, _ = demo
    mtime = (root / "demo" / MARKER).stat().st_mtime_ns
    start = time.perf_counter()
    assert build_demo(str(root)) == paths
    assert time.perf_counter() - start < 0.5
    assert (root / "demo" / MARKER).stat().st_mtime_ns == mtime


def test_fr_set_through_the_kadid_reader(demo):
    _, paths, _ = demo
    df = load_benchmark("demo_fr", paths["demo_fr"], seed=0)
    assert len(df) == 160 and df["ref_id"].nunique() == 8
    assert df.attrs["score_column"] == "dmos" and df.attrs["source"] == "original"
    assert df["score"].between(1, 5).all()
    assert df.groupby("ref_id")["split"].nunique().eq(1).all()
    # the pseudo-MOS falls strictly with the level, for every reference and distortion type
    parts = df["dist"].map(lambda p: re.match(r"I(\d\d)_(\d\d)_(\d\d)\.png", os.path.basename(p)).groups())
    df = df.assign(ref=parts.str[0], kind=parts.str[1], level=parts.str[2].astype(int))
    assert df["kind"].nunique() == 5 and df["level"].nunique() == N_LEVELS
    for _, g in df.groupby(["ref", "kind"]):
        assert g.sort_values("level")["score"].is_monotonic_decreasing and g["score"].nunique() == N_LEVELS
    # and stays within the documented noise of the noise-free formula
    for d in DISTORTIONS:
        got = df[df["kind"] == f"{d.code:02d}"]
        want = np.array([pseudo_mos(d, lv) for lv in got["level"]])
        assert np.abs(got["score"] - want).max() <= 0.1 + 1e-4


def test_nr_set_through_the_koniq_reader(demo):
    _, paths, _ = demo
    df = load_benchmark("demo_nr", paths["demo_nr"])
    assert len(df) == 168 and df["ref"].isna().all()
    assert df.attrs["split_rule"] == "official"
    assert df["split"].value_counts().to_dict() == {"train": 105, "test": 42, "val": 21}
    refs = df[df["dist"].str.match(r".*I\d\d\.png$")]
    assert len(refs) == 8 and refs["score"].min() > df.drop(refs.index)["score"].max()
    ds = IQADataset(df, "test", size=64)
    assert ds[0]["dist"].shape == (3, 64, 64)


def test_sr_sets(demo):
    _, paths, _ = demo
    train = SRTrainSet(paths["demo_sr_train"], hr_crop=64, seed=0)
    assert len(train) == 10 and train[0]["lr"].shape == (3, 16, 16)
    val = SRTestSet(paths["demo_sr_val"])
    assert len(val) == 4 and val.lr_dir is not None
    s = val[0]
    assert s["hr"].shape == (3, 192, 192) and s["lr"].shape == (3, 48, 48)


def test_resolvers_build_the_demo_in_the_cache_never_in_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "cache"))
    user_root = tmp_path / "my-datasets"
    user_root.mkdir()
    assert resolve_sr_root("demo_sr_val", str(user_root)) == str(tmp_path / "cache" / "demo" / "sr" / "val")
    assert os.path.isfile(tmp_path / "cache" / "demo" / MARKER)
    assert resolve_benchmark_root("demo_nr", str(user_root)) == str(tmp_path / "cache" / "demo" / "iqa_nr")
    assert list(user_root.iterdir()) == []  # nothing written into the user's data root


def test_default_root_is_raygrid_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "cache"))
    assert build_demo()["demo_fr"] == str(tmp_path / "cache" / "demo" / "iqa_fr")


def _build(root, queue):
    queue.put(build_demo(root))


def test_concurrent_builds_end_with_one_complete_tree(tmp_path):
    ctx = mp.get_context("fork")  # two real processes racing; forked, they need not import torch again
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert results[0] == results[1]
    assert len(load_benchmark("demo_fr", results[0]["demo_fr"])) == 160
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_force_rebuild_and_foreign_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("user data")
    with pytest.raises(RuntimeError, match="not a raygrid demo build"):
        build_demo(str(tmp_path))
    paths = build_demo(str(tmp_path), force=True)
    assert not (tmp_path / "demo" / "mine.txt").exists()
    assert torch.is_tensor(SRTrainSet(paths["demo_sr_train"], 32)[0]["hr"])
