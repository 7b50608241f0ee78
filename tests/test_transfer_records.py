"""The transfer loop's evaluation through its real caller (train_loop_per_worker, with Ray Train's
session calls captured): every evaluation reports correlations whose intervals resample reference
images and ships the per-item table (raygrid.spec.records.SCHEMAS["transfer"]) in its checkpoint,
one row per scored image and set, with the ids the benchmark table gives."""

from __future__ import annotations

import io as _io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raygrid.spec import records
from raygrid.stages import loop
from raygrid.stages.transfer import loop as transfer_loop
from raygrid.stages.transfer.config import IQAFinetuneConfig


class Reports:
    def __init__(self):
        self.metrics: list[dict] = []
        self.files: list[dict[str, bytes]] = []

    def __call__(self, metrics, checkpoint=None):
        self.metrics.append(dict(metrics))
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                from pathlib import Path

                self.files.append({p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()})


@pytest.fixture(scope="module")
def run():
    import ray.train
    import ray.train.torch

    from raygrid.run.telemetry import TrialTelemetry

    cfg = IQAFinetuneConfig.model_validate({
        "model": {"kind": "fr", "backbone": "resnet50", "init": "random"},
        "data": {"train": "demo_fr", "test": ["demo_fr"], "image_size": 32, "batch_size": 8, "max_images": 48},
        "n_boot": 50, "budget": {"steps": 2, "eval_every": 2}, "runtime": {"num_workers": 0, "threads": 1},
    })
    reports = Reports()
    cpu = torch.device("cpu")
    telemetry = TrialTelemetry("transfer", "t")
    telemetry._gauges = {}  # no Ray metrics outside Ray
    ctx = loop.Context(0, 1, cpu, "t", telemetry, runtime=loop.resolve_runtime(cfg.runtime, cpu))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "start", lambda c, m: (cfg, loop.RunEnv(data_root=None), ctx))
        mp.setattr(ray.train, "get_checkpoint", lambda: None)
        mp.setattr(ray.train, "report", reports)
        mp.setattr(ray.train.torch, "prepare_model", lambda m, **kw: m)
        mp.setattr(ray.train.torch, "prepare_data_loader", lambda d, **kw: d)
        torch.manual_seed(0)
        transfer_loop.train_loop_per_worker({})
    return cfg, reports


def test_each_evaluation_ships_its_per_item_table(run):
    from raygrid.data.iqa import item_ids, open_benchmark, subset
    from raygrid.stages.transfer.splits import carve_val

    cfg, reports = run
    assert reports.files and all(records.CKPT_SCORES in f for f in reports.files)
    table = pq.read_table(_io.BytesIO(reports.files[-1][records.CKPT_SCORES])).to_pandas()
    assert list(table.columns) == [c for c, _ in records.SCHEMAS["transfer"]]
    assert set(table["role"]) == {"val", "test"} and set(table["benchmark"]) == {"demo_fr"}
    # the rows are the benchmark's own images of each split, named as the assess stage names them
    bench = carve_val(open_benchmark("demo_fr", None, cfg.seed), cfg.data.val_fraction, cfg.seed)
    ids = dict(zip(bench["dist"], item_ids(bench)))
    for role, split in (("val", ["val"]), ("test", ["test"])):
        rows = subset(bench, split, cfg.data.max_images, cfg.seed)
        got = table[table["role"] == role]
        assert list(got["item"]) == [ids[p] for p in rows["dist"]]
        assert list(got["ref_id"]) == [str(r) for r in rows["ref_id"]]
        assert np.allclose(got["score"], rows["score"], atol=1e-4)
    # val and test never share a reference image (the val split is carved by reference)
    assert not set(table.loc[table["role"] == "val", "ref_id"]) & set(table.loc[table["role"] == "test", "ref_id"])


def test_each_evaluation_names_the_model_in_an_evaluator_record(run):
    import json

    cfg, reports = run
    record = records.check_evaluator_record(json.loads(reports.files[-1][records.CKPT_EVALUATORS]))
    assert [(e["name"], e["mode"], e["higher_better"], e["backbone"], e["weights"], e["shares"]) for e in record] == [
        ("iqa_fr_resnet50", "FR", True, "resnet50", "random", [])]


def test_the_reported_intervals_resample_reference_images(run):
    from raygrid.metrics.correlation import srcc

    _, reports = run
    last = reports.metrics[-1]
    table = pq.read_table(_io.BytesIO(reports.files[-1][records.CKPT_SCORES])).to_pandas()
    test = table[table["role"] == "test"]
    assert last["test/demo_fr/n_clusters"] == test["ref_id"].nunique() < len(test)
    assert last["test/demo_fr/srcc"] == pytest.approx(srcc(test["pred"], test["score"]), abs=1e-6)
    # the demo benchmark's test split has 2 reference images: too few to resample, so no interval
    assert test["ref_id"].nunique() == 2
    assert np.isnan(last["test/demo_fr/srcc_lo"]) and np.isnan(last["test/demo_fr/srcc_hi"])


def test_with_three_references_or_more_the_interval_is_the_clustered_bootstrap():
    from raygrid.metrics.correlation import correlations, reference_correlations

    rng = np.random.default_rng(0)
    refs = np.repeat([f"r{i}" for i in range(8)], 6)
    pred = rng.normal(size=refs.size)
    score = pred + rng.normal(size=refs.size)
    got = reference_correlations(pred, score, refs, n_boot=200, seed=3)
    want = correlations(pred, score, n_boot=200, seed=3, clusters=refs)
    assert got["n_clusters"] == 8 and got["srcc_lo"] == want["srcc_lo"] and got["srcc_hi"] == want["srcc_hi"]
    assert got["srcc_lo"] < got["srcc"] < got["srcc_hi"]
