"""The asymmetry interval's statistic, draws, missing-data rules and input checks (coverage is in
test_intervals_coverage.py)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raygrid.analysis.evidence import prepare_iqa, prepare_opt
from raygrid.analysis.intervals import _Statistic, asymmetry_interval

BACKBONES = ["a", "b", "c", "d", "e"]


def tables(seed=0, n_eval=3, n_seeds=2, n_sets=2, n_img=4, n_bench=2, n_ref=4, per_ref=3):
    rng = np.random.default_rng(seed)
    iqa = []
    for j in range(n_bench):
        ref = np.repeat(np.arange(n_ref), per_ref)
        mos = rng.normal(size=ref.size)
        for k, b in enumerate(BACKBONES):
            iqa.append(pd.DataFrame({"backbone": b, "benchmark": f"B{j}", "item": [f"i{x}" for x in range(ref.size)],
                                     "ref_id": [f"r{x}" for x in ref], "pred": -mos + (0.3 + 0.2 * k) * rng.normal(size=ref.size),
                                     "lower_better": True, "score": mos}))
    rows = []
    for b, cell, s, e, t, i in itertools.product(BACKBONES, [("none", 0.0), ("patch_vgg16", 0.01)], range(n_seeds),
                                                 range(n_eval), range(n_sets), range(n_img)):
        rows.append({"backbone": b, "discriminator": cell[0], "adv_weight": cell[1], "seed": s, "evaluator": f"ev{e}",
                     "test_set": f"set{t}", "image": f"img{i}", "value": rng.normal() + BACKBONES.index(b) * 0.2,
                     "higher_better": e != 1})
    return pd.concat(iqa, ignore_index=True), pd.DataFrame(rows)


def naive_scores(iqa, opt, draw):
    """The textbook computation on the expanded resample: repeat the drawn references, images,
    seeds and evaluators, average, rank."""
    ev, seeds, imgs, refs = draw
    iqa_score = np.zeros(len(BACKBONES))
    for j, bench in enumerate(sorted(iqa["benchmark"].unique())):
        sub = iqa[iqa["benchmark"] == bench]
        codes = sorted(sub["ref_id"].unique())
        for k, b in enumerate(BACKBONES):
            g = sub[sub["backbone"] == b]
            take = pd.concat([g[g["ref_id"] == codes[r]] for r in refs[j]])
            iqa_score[k] += stats.spearmanr(-take["pred"], take["score"]).statistic / len(refs)
    ev_names = sorted(opt["evaluator"].unique())
    seed_names = sorted(opt["seed"].unique())
    ranks = {e: [] for e in ev_names}
    for t, test_set in enumerate(sorted(opt["test_set"].unique())):
        img_names = sorted(opt.loc[opt["test_set"] == test_set, "image"].unique())
        for e in ev_names:
            g = opt[(opt["test_set"] == test_set) & (opt["evaluator"] == e)]
            means = []
            for b in BACKBONES:
                cell_mean = g[g["backbone"] == b].groupby(["seed", "image"])["value"].mean()
                vals = [cell_mean[seed_names[s], img_names[i]] for s in seeds for i in imgs[t]]
                means.append(np.mean(vals))
            sign = -1 if e == "ev1" else 1
            ranks[e].append(stats.rankdata(-sign * np.array(means)))
    per_ev = {e: np.mean(r, axis=0) for e, r in ranks.items()}
    opt_score = np.mean([per_ev[ev_names[e]] for e in ev], axis=0)
    return iqa_score, opt_score


def test_a_resample_equals_the_textbook_computation_on_the_expanded_sample():
    iqa, opt = tables()
    notes = []
    benches = prepare_iqa(iqa, BACKBONES, notes)
    prepared = prepare_opt(opt, ["discriminator", "adv_weight"], BACKBONES, notes)
    stat = _Statistic(benches, prepared, "srcc")
    assert [f.kind for f in stat.resampled] == ["evaluator", "seed", "image", "image", "reference", "reference"]
    rng = np.random.default_rng(1)
    for _ in range(3):
        draw = [rng.integers(0, f.size, f.size) for f in stat.resampled]
        got_iqa, got_opt = (a[0] for a in stat.scores(*(d[None] for d in draw)))
        want_iqa, want_opt = naive_scores(iqa, opt, (draw[0], draw[1], draw[2:4], draw[4:6]))
        np.testing.assert_allclose(got_iqa, want_iqa, atol=1e-12)
        np.testing.assert_allclose(got_opt, want_opt, atol=1e-12)


def test_point_estimate_ranks_and_exact_permutation_p():
    iqa, opt = tables(seed=3)
    res = asymmetry_interval(iqa, opt, n_boot=200, seed=0)
    iqa_want, opt_want = naive_scores(iqa, opt, ([0, 1, 2], [0, 1], [range(4)] * 2, [range(4)] * 2))
    np.testing.assert_allclose(res.ranks["iqa_score"], iqa_want, atol=1e-12)
    np.testing.assert_allclose(res.ranks["opt_score"], opt_want, atol=1e-12)
    r_iqa, r_opt = stats.rankdata(-iqa_want), stats.rankdata(opt_want)
    assert res.spearman == pytest.approx(stats.spearmanr(r_iqa, r_opt).statistic, abs=1e-12)
    assert res.kendall == pytest.approx(stats.kendalltau(r_iqa, r_opt).statistic, abs=1e-12)
    null = [stats.spearmanr(r_iqa, r_opt[list(p)]).statistic for p in itertools.permutations(range(5))]
    assert res.spearman_p == pytest.approx(np.mean(np.abs(null) >= abs(res.spearman) - 1e-12))
    assert res.spearman_lo <= res.spearman <= res.spearman_hi and res.n_boot_valid == 200
    assert list(res.ranks["rank_shift"]) == list(res.ranks["opt_rank"] - res.ranks["iqa_rank"])
    for side in ("iqa", "opt"):
        r = res.ranks
        assert ((r[f"{side}_rank_lo"] <= r[f"{side}_rank"]) & (r[f"{side}_rank"] <= r[f"{side}_rank_hi"])).all()
        assert r[f"{side}_rank_lo"].min() >= 1 and r[f"{side}_rank_hi"].max() <= 5
    assert res.counts == {"n_backbones": 5, "n_benchmarks": 2, "n_references": 8, "n_pairs": 24, "n_evaluators": 3,
                          "n_test_sets": 2, "n_images": 8, "n_seeds": 2, "n_cells": 2}
    again = asymmetry_interval(iqa, opt, n_boot=200, seed=0)
    assert (again.spearman_lo, again.spearman_hi) == (res.spearman_lo, res.spearman_hi)
    assert "test images within each test set (8 in 2 sets); seeds (2); evaluators (3" in res.resampled


def test_one_seed_is_not_resampled_and_says_so():
    iqa, opt = tables(n_seeds=1)
    res = asymmetry_interval(iqa, opt, n_boot=50)
    assert "seeds not resampled (only 1)" in res.resampled and np.isfinite(res.spearman_lo)


def test_missing_cells_are_left_out_for_every_backbone_and_named():
    iqa, opt = tables()
    opt = opt[~((opt["backbone"] == "b") & (opt["image"] == "img2") & (opt["test_set"] == "set0"))]  # one image
    opt = opt[~((opt["backbone"] == "c") & (opt["seed"] == 1) & (opt["discriminator"] == "none"))]  # one run
    opt = opt[~((opt["backbone"] == "d") & (opt["discriminator"] == "patch_vgg16"))]  # a whole cell
    iqa = iqa[~((iqa["backbone"] == "a") & (iqa["benchmark"] == "B1") & (iqa["item"] == "i0"))]
    iqa = pd.concat([iqa, iqa[iqa["benchmark"] == "B0"].assign(benchmark="B9")[lambda d: d["backbone"] != "e"]])
    opt = pd.concat([opt, opt[opt["backbone"] == "a"].assign(backbone="f")])  # IQA missing for f
    res = asymmetry_interval(iqa, opt, n_boot=50)
    notes = " ".join(res.notes)
    assert res.missing == {"f": "no IQA result"}
    assert "IQA benchmarks left out (not every backbone has them): B9" in notes
    assert "IQA B1: 1 of 12 pairs left out" in notes
    assert "cells left out (not every backbone has them): discriminator=patch_vgg16, adv_weight=0.01" in notes
    assert "seeds left out (not every backbone and cell has them): 1" in notes
    assert "set0: 1 of 4 images left out" in notes
    assert res.counts["n_cells"] == 1 and res.counts["n_seeds"] == 1 and res.counts["n_images"] == 7
    assert res.counts["n_pairs"] == 23 and list(res.ranks["backbone"]) == BACKBONES


def test_excluded_evaluator_is_left_out_of_its_backbone_only():
    iqa, opt = tables(seed=5)
    opt["excluded"] = (opt["evaluator"] == "ev0") & (opt["backbone"] == "c")
    res = asymmetry_interval(iqa, opt, n_boot=0)
    _, with_all = naive_scores(iqa, opt, ([0, 1, 2], [0, 1], [range(4)] * 2, [range(4)] * 2))
    _, without_ev0 = naive_scores(iqa, opt, ([1, 2], [0, 1], [range(4)] * 2, [range(4)] * 2))
    want = with_all.copy()
    want[2] = without_ev0[2]
    np.testing.assert_allclose(res.ranks["opt_score"], want, atol=1e-12)
    assert list(res.ranks["n_evaluators"]) == [3, 3, 2, 3, 3]
    opt["excluded"] = opt["evaluator"].isin(["ev0", "ev1", "ev2"]) & (opt["backbone"] == "c")
    res = asymmetry_interval(iqa, opt, n_boot=0)
    assert res.missing == {"c": "every evaluator shares its trunk"} and len(res.ranks) == 4


def test_too_few_backbones_is_a_note_not_a_number():
    iqa, opt = tables()
    res = asymmetry_interval(iqa[iqa["backbone"].isin(["a", "b"])], opt, n_boot=10)
    assert np.isnan(res.spearman) and "needs 3 backbones" in " ".join(res.notes)
    assert res.missing == {"c": "no IQA result", "d": "no IQA result", "e": "no IQA result"}


def test_bad_tables_are_one_clear_error():
    iqa, opt = tables()
    with pytest.raises(ValueError, match=r"IQA table: missing column\(s\) \['ref_id'\]"):
        asymmetry_interval(iqa.drop(columns="ref_id"), opt)
    with pytest.raises(ValueError, match=r"optimization table: missing column\(s\) \['adv_weight'\]"):
        asymmetry_interval(iqa, opt.drop(columns="adv_weight"))
    flip = opt.copy()
    flip.loc[0, "higher_better"] = not flip.loc[0, "higher_better"]
    with pytest.raises(ValueError, match="'higher_better' differs within evaluator 'ev0'"):
        asymmetry_interval(iqa, flip)
    with pytest.raises(ValueError, match="more than one row for"):
        asymmetry_interval(iqa, pd.concat([opt, opt.iloc[:1]]))
    other = iqa.copy()
    other.loc[(other["backbone"] == "b") & (other["item"] == "i3"), "score"] += 1
    with pytest.raises(ValueError, match="benchmark 'B0' item 'i3' has a different ref_id or score"):
        asymmetry_interval(other, opt)
    with pytest.raises(ValueError, match="iqa_metric 'krcc'"):
        asymmetry_interval(iqa, opt, iqa_metric="krcc")
