"""The assess computation without Ray: α/β fitted with DISTS's two terms (texture pairs cut from
the fitting benchmark's references), intervals that resample reference images, and the per-item
table behind the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from raygrid.data.iqa import open_benchmark
from raygrid.metrics.correlation import correlations
from raygrid.spec import records
from raygrid.stages import loop
from raygrid.stages.assess.config import AssessConfig
from raygrid.stages.assess.loop import run_assess, texture_pairs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from raygrid.data.demo import build_demo

    root = str(tmp_path_factory.mktemp("data"))
    build_demo(root)
    return root


def config(**kw) -> AssessConfig:
    base = {"fidelity": {"backbone": "vgg16_r", "weights": "random"}, "benchmark": "demo_fr", "image_size": 32,
            "max_pairs": 24, "n_boot": 20, "budget": {"steps": 5, "eval_every": 5}}
    return AssessConfig.model_validate({**base, **kw})


def test_fit_on_the_train_split_uses_both_terms_and_scores_the_test_split(root):
    cfg = config(fit_on="demo_fr")
    assert cfg.eval_split == "test" and cfg.fit.texture_weight == 1.0
    metrics, measure, files = run_assess(cfg, loop.RunEnv(data_root=root), torch.device("cpu"))
    assert metrics["pairs"] == 24 and metrics["abs_srcc"] == abs(metrics["srcc"])
    # DISTS's fit: the MOS term and the texture-invariance term, each before and after
    assert metrics["fit/texture_weight"] == 1.0 and metrics["fit/n_texture"] > 0
    assert np.isfinite([metrics["fit/texture_ratio_before"], metrics["fit/texture_ratio_after"],
                        metrics["fit/srcc_before"], metrics["fit/srcc_after"]]).all()
    a, b = measure.normalized_weights()
    assert float(a.sum() + b.sum()) == pytest.approx(1.0) and bool((a >= 0).all() and (b >= 0).all())
    table = records.read_table(files[records.CKPT_SCORES], "assess")
    assert len(table) == 24 and set(table.split) == {"test"} and set(table.benchmark) == {"demo_fr"}
    # the demo's test split holds 2 of its 8 references: too few to resample, so no interval
    assert metrics["n_clusters"] == table.ref_id.nunique() == 2
    assert np.isnan(metrics["srcc_lo"]) and np.isnan(metrics["srcc_hi"])
    # the measure under assessment, in the evaluator record's schema (the analysis reads it so)
    (entry,) = records.check_evaluator_record(json.loads(files[records.CKPT_EVALUATORS]))
    assert (entry["name"], entry["mode"], entry["higher_better"], entry["backbone"], entry["weights"]) == (
        "fidelity_vgg16_r", "FR", False, "vgg16_r", "vgg16_r.seed")  # VGG-16-R: its seeded random weights
    assert entry["range"] == [0.0, 1.0] and entry["shares"] == [] and "fitted on demo_fr" in entry["family"]


def test_the_table_holds_each_scored_pair_and_the_intervals_resample_its_references(root):
    cfg = config()
    metrics, measure, files = run_assess(cfg, loop.RunEnv(data_root=root), torch.device("cpu"))
    table = records.read_table(files[records.CKPT_SCORES], "assess")
    assert list(table.columns) == ["benchmark", "item", "ref_id", "split", "pred", "lower_better", "score"]
    bench = open_benchmark("demo_fr", root, cfg.seed)
    rows = bench.set_index(bench["dist"].map(lambda p: p.rsplit("/", 1)[-1]))
    assert table.item.is_unique and set(table.item) <= set(rows.index)  # ids relative to the benchmark
    assert list(table.ref_id) == list(rows.loc[table.item, "ref_id"])
    assert np.allclose(table.score, rows.loc[table.item, "score"], rtol=1e-6)
    assert set(table.split) == {"train", "test"} and table.lower_better.all()
    # pred is the measure's raw distance of that pair
    from raygrid.data.images import read_rgb, resize_rgb
    from raygrid.data.tensors import to_tensor

    first = rows.loc[table.item.iloc[0]]
    dist, ref = (to_tensor(resize_rgb(read_rgb(p), (32, 32)))[None] for p in (first["dist"], first["ref"]))
    with torch.no_grad():
        assert float(measure(dist, ref)) == pytest.approx(float(table.pred.iloc[0]), rel=1e-5)
    # the reported intervals are the bootstrap over reference images, computed from this table
    expected = correlations(-table.pred.to_numpy(float), table.score.to_numpy(float), n_boot=cfg.n_boot,
                            seed=cfg.seed, clusters=table.ref_id.to_numpy())
    assert metrics["n_clusters"] == expected["n_clusters"] == table.ref_id.nunique() > 2
    for key in ("srcc", "srcc_lo", "srcc_hi", "plcc_lo", "plcc_hi"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5)
    assert "resampled" not in metrics and "ci_method" not in metrics  # text, stated in docs/records.md


def test_texture_pairs_are_cut_from_the_fitting_references_and_weight_zero_fits_mos_alone(root):
    bench = open_benchmark("demo_fr", root, 0)
    cfg = config(fit={"texture_pairs_per_image": 3})
    pairs = texture_pairs(bench, cfg)
    a = torch.cat([p[0] for p in pairs])
    assert a.shape == (8 * 3, 3, 64, 64)  # 8 references of 128 px: crops of half the side, 3 per image
    assert texture_pairs(bench, config(fit={"texture_crop": 40}))[0][0].shape[-1] == 40
    mos_only = config(fit_on="demo_fr", fit={"texture_weight": 0})
    metrics, _, _ = run_assess(mos_only, loop.RunEnv(data_root=root), torch.device("cpu"))
    assert metrics["fit/n_texture"] == 0 and metrics["fit/texture_weight"] == 0
    assert np.isnan(metrics["fit/texture_ratio_after"])
    with pytest.raises(ValidationError, match=r"fit\.texture_weight"):
        config(fit={"texture_weight": -1})
    with pytest.raises(ValidationError, match=r"fit\.texture_wieght"):
        config(fit={"texture_wieght": 1})
