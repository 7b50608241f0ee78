"""The asymmetry rows on tables built in memory (no MLflow): α/β pairing, the independent panel
and a flip with intervals clear of zero, the verdicts, the per-cell outcome counts."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from raygrid.analysis import outcomes, stats

BACKBONES = ["a", "b", "c", "d", "e"]  # IQA order: a best


def iqa_table(variants=("uniform",), n_ref=12, per_ref=3, seed=0) -> pd.DataFrame:
    """Measure k predicts the score with noise 0.1 + 0.4k: SRCC falls with k on any resample (the
    same draws for every variant)."""
    rows = []
    for variant, (j, bench) in itertools.product(variants, enumerate(["B0", "B1"])):
        rng = np.random.default_rng(seed + j)
        ref = np.repeat(np.arange(n_ref), per_ref)
        score = rng.normal(size=ref.size)
        for k, b in enumerate(BACKBONES):
            pred = -score + (0.1 + 0.4 * k) * rng.normal(size=ref.size)
            rows += [{"backbone": b, "variant": variant, "benchmark": bench, "item": f"i{i}", "ref_id": f"r{ref[i]}",
                      "pred": pred[i], "lower_better": True, "score": score[i], "seed": 0, "run_id": f"{b}-{variant}"}
                     for i in range(ref.size)]
    return pd.DataFrame(rows)


def opt_table(evaluators: dict[str, tuple[bool, bool, int]], alpha_beta="uniform", n_img=10, n_seeds=2, seed=0,
              order=None) -> pd.DataFrame:
    """evaluators: name -> (higher_better, independent, sign): sign +1 ranks the losses in the IQA
    order, −1 in reverse; small image and seed noise."""
    rng = np.random.default_rng(seed)
    order = order or {b: k for k, b in enumerate(BACKBONES)}
    rows = []
    for b, s, (e, (hb, ind, sign)), i in itertools.product(BACKBONES, range(n_seeds), evaluators.items(), range(n_img)):
        quality = -sign * order[b] + 0.05 * rng.normal()
        rows.append({"run_id": f"{b}-{s}-{alpha_beta}", "backbone": b, "discriminator": "none", "adv_weight": 0.0,
                     "alpha_beta": alpha_beta, "seed": s, "evaluator": e, "test_set": "T", "image": f"img{i}",
                     "value": quality if hb else -quality, "higher_better": hb, "independent": ind,
                     "excluded": False})
    return pd.DataFrame(rows)


def test_the_independent_panel_flips_a_clear_asymmetry():
    # ten DISTS-style evaluators rank the losses against the IQA order, three independent ones with it
    panel = {f"fid{j}": (False, False, -1) for j in range(10)}
    panel.update({"psnr_y": (True, True, 1), "ssim_y": (True, True, 1), "niqe": (False, True, 1)})
    res = stats.asymmetry(iqa_table(), opt_table(panel), n_boot=300)
    full = res.summary.set_index("panel").loc[stats.PANELS[0]]
    indep = res.summary.set_index("panel").loc[stats.PANELS[1]]
    # full panel: score (10(k+1 reversed) + 3k)/13 keeps the reverse order unless a resample draws
    # 7 of the 3 independent evaluators' (P(Bin(13, 3/13) ≥ 7) ≈ 0.6 % < 2.5 %)
    assert full["spearman"] == pytest.approx(-1.0) and full["spearman_hi"] < 0
    assert full["conclusion"] == "asymmetry (ρ < 0)"
    assert indep["spearman"] == pytest.approx(1.0) and indep["spearman_lo"] > 0
    assert indep["conclusion"] == "agreement (ρ > 0)" and indep["flips"] == "yes: ρ -1.00 → +1.00"
    assert indep["evaluators"] == "niqe, psnr_y, ssim_y" and indep["n_evaluators"] == 3
    assert res.lines == [("[uniform | all | no adversarial loss] judged by the independent panel only, the conclusion "
                          "flips (yes: ρ -1.00 → +1.00).")]


def test_each_alpha_beta_pairs_only_with_losses_trained_with_it():
    panel = {"psnr_y": (True, True, 1), "ssim_y": (True, True, 1), "niqe": (False, True, 1)}
    iqa = iqa_table(("uniform", "dists", "fitted on kadid10k"))
    # uniform losses follow the IQA order, "dists" losses the reverse
    opt = pd.concat([opt_table(panel, "uniform"), opt_table({k: (h, i, -s) for k, (h, i, s) in panel.items()}, "dists")])
    res = stats.asymmetry(iqa, opt, n_boot=0)
    rho = res.summary[res.summary["panel"] == stats.PANELS[0]].set_index("iqa_variant")["spearman"]
    assert rho.to_dict() == pytest.approx({"uniform": 1.0, "dists": -1.0})
    assert any("'fitted on kadid10k': no optimize arm was trained with these α/β (losses trained with: dists, "
               "uniform)" in n for n in res.notes)


def test_an_evaluator_without_a_record_is_not_ranked():
    panel = {"psnr_y": (True, True, 1), "ssim_y": (True, True, 1), "niqe": (False, True, 1)}
    opt = opt_table(panel)
    opt["higher_better"] = opt["higher_better"].astype(object)
    opt.loc[opt["evaluator"] == "niqe", "higher_better"] = None
    res = stats.asymmetry(iqa_table(), opt, n_boot=0)
    assert res.summary.iloc[0]["evaluators"] == "psnr_y, ssim_y"
    assert "have no evaluator record (evaluators.json) for niqe" in res.notes[0]


def test_verdicts():
    assert stats.conclusion(-0.8, -1.0, -0.2) == "asymmetry (ρ < 0)"
    assert stats.conclusion(0.6, 0.1, 1.0) == "agreement (ρ > 0)"
    assert stats.conclusion(-0.4, -1.0, 0.4) == "inconclusive (interval contains 0)"
    assert stats.conclusion(-0.4, np.nan, np.nan) == "ρ < 0 (no interval)"
    assert stats.conclusion(np.nan, np.nan, np.nan) == "not computed"


def test_outcomes_are_counted_per_cell():
    g = pd.DataFrame({"compared": [True, True, False, False, False],
                      "outcome": ["finished", "finished", "collapsed", "collapsed", "diverged"],
                      "why": ["", "", "collapsed at step 40", "collapsed at step 60", "diverged at step 20"]})
    c = outcomes.counts(g)
    assert (c["n_compared"], c["n_planned"], c["n_collapsed"], c["n_diverged"], c["n_failed"]) == (2, 5, 2, 1, 0)
    assert c["status"] == "2/5 compared; 1 collapsed at step 40, 1 collapsed at step 60, 1 diverged at step 20"
