"""The asymmetry analysis against hand-computed numbers.

The store (tests/report_fixtures.py) is written through raygrid.run.tracking.TrialRunLogger; every
expected value below is derived by hand from the fixture's tables in the comment next to it.
Backbones: r = vgg16_r, v = vgg16, res = resnet50, c = convnext_tiny.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import report_fixtures as F
from scipy import stats

from raygrid.analysis import asymmetry as A
from raygrid.analysis.sweep_data import SweepData, _dedupe, load_sweep

R, V, RES, C = F.R, F.V, F.RES, F.C
CELL = f"val/{F.VAL_SET}"


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return F.shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def best(store):
    return load_sweep(store["experiment"], store["tracking_uri"], checkpoint="best")


@pytest.fixture(scope="module")
def final(store):
    return load_sweep(store["experiment"], store["tracking_uri"], checkpoint="final")


@pytest.fixture(scope="module")
def tables(final):
    assess, opt = A.assessment_table(final), A.optimization_table(final)
    return assess, opt


def _row(df: pd.DataFrame, **match) -> pd.Series:
    mask = np.ones(len(df), dtype=bool)
    for k, v in match.items():
        mask &= (df[k] == v).to_numpy()
    hit = df[mask]
    assert len(hit) == 1, f"{len(hit)} rows match {match}"
    return hit.iloc[0]


# ---------------------------------------------------------------------------------------------
# Reading MLflow
# ---------------------------------------------------------------------------------------------


def test_every_trial_is_a_row_including_failed_and_never_run(best):
    t = best.trials
    counts = {(s, st): n for (s, st), n in t.groupby(["stage", "state"]).size().items()}
    # assess: 4 backbones × 3 benchmarks × 2 variants = 24 planned; one failed, one never ran
    assert counts == {
        ("assess", "finished"): 22, ("assess", "failed"): 1, ("assess", "not run"): 1,
        ("optimize", "finished"): 18, ("optimize", "stopped"): 1, ("optimize", "failed"): 1,
        ("transfer", "finished"): 8, ("transfer", "failed"): 1,
    }
    never = t[t["state"] == "not run"].iloc[0]
    assert never["run_id"] is None and (never["backbone"], never["benchmark"]) == (C, "tid2013")
    assert best.sweep_run_ids and best.notes == []


def test_best_checkpoint_values_from_meta_json_and_from_history(best, final):
    opt_b, opt_f = best.stage("optimize"), final.stage("optimize")
    r_none_b = _row(opt_b, backbone=R, discriminator="none")
    r_none_f = _row(opt_f, backbone=R, discriminator="none")
    # best step by val/psnr_y: step 20 (final + 0.3 beats final + 0 and final − 1)
    assert r_none_b["value_step"] == 20 and r_none_b["value_source"] == "best checkpoint (meta.json)"
    assert r_none_b["metrics.val/psnr_y"] == pytest.approx(25.0 + 0.3)
    assert r_none_b[f"metrics.val/fidelity_{R}"] == pytest.approx(0.10 + 0.01)
    assert r_none_f["value_step"] == 30 and r_none_f["metrics.val/psnr_y"] == pytest.approx(25.0)
    # convnext checkpoints have no meta.json: the same values come from the metric histories
    c_none = _row(opt_b, backbone=C, discriminator="none")
    assert c_none["value_source"] == "best checkpoint (metric history)" and c_none["value_step"] == 20
    assert c_none["metrics.val/psnr_y"] == pytest.approx(23.5 + 0.3)
    assert c_none[f"metrics.{CELL}/fidelity_{C}"] == pytest.approx(0.03 + 0.01)
    # the stopped trial's last step is 20
    stopped = _row(opt_f, backbone=V, discriminator="vanilla_conv", adv_weight=0.01)
    assert stopped["state"] == "stopped" and stopped["value_step"] == 20


def test_sweep_run_filter(store):
    same = load_sweep(store["experiment"], store["tracking_uri"], sweep_run_id=store["sweep_run_id"])
    assert len(same.trials) == 24 + 20 + 9
    other = load_sweep(store["experiment"], store["tracking_uri"], sweep_run_id="0" * 32)
    assert other.trials.empty and any("plan.json" in n for n in other.notes)
    with pytest.raises(LookupError):
        load_sweep("no-such-experiment", store["tracking_uri"])


def test_dedupe_keeps_the_latest_successful_run():
    df = pd.DataFrame({
        "stage": ["optimize"] * 3, "trial_key": ["k"] * 3, "run_id": ["old", "failed-later", "new"],
        "state": ["finished", "failed", "finished"], "start_time": pd.to_datetime([1, 3, 2], unit="s"),
    })
    kept, superseded = _dedupe(df)
    assert list(kept["run_id"]) == ["new"] and superseded == 2


# ---------------------------------------------------------------------------------------------
# Assessment
# ---------------------------------------------------------------------------------------------


def test_assessment_table(tables):
    assess, _ = tables
    assert len(assess) == 24  # every planned cell, including the missing two
    for b, values in F.IQA_UNIFORM.items():
        for bench, srcc in zip(F.BENCHES, values):
            row = _row(assess, variant="uniform", backbone=b, benchmark=bench)
            assert row["srcc"] == pytest.approx(srcc) and row["plcc"] == pytest.approx(srcc + 0.02)
            assert (row["srcc_lo"], row["srcc_hi"]) == pytest.approx((srcc - 0.05, srcc + 0.05))
            assert row["status"] == "ok" and row["n_seeds"] == 1
    fitted = _row(assess, variant="fitted on kadid10k", backbone=V, benchmark="live")
    assert fitted["srcc"] == pytest.approx(0.90 + 0.05)
    failed = _row(assess, variant="fitted on kadid10k", backbone=R, benchmark="csiq")
    assert math.isnan(failed["srcc"]) and failed["status"] == "0/1 ok, 1 failed"
    never = _row(assess, variant="fitted on kadid10k", backbone=C, benchmark="tid2013")
    assert math.isnan(never["srcc"]) and never["status"] == "0/1 ok, 1 not run"
    pivot = A.assessment_pivot(assess, "uniform")
    assert pivot.loc[V, "csiq"] == pytest.approx(0.85)


# ---------------------------------------------------------------------------------------------
# Optimization table
# ---------------------------------------------------------------------------------------------


def test_optimization_table(tables):
    _, opt = tables
    # 4 backbones × (none + 2 discriminators × 2 weights) = 20 cells, one per trial (1 seed)
    assert len(opt) == 20
    row = _row(opt, backbone=RES, discriminator="patch_resnet50", adv_weight=0.05)
    # ADV_BASE[res] + DISC[patch_resnet50] + WEIGHT[0.05]: psnr 23.2 + 0.4 − 0.1, fid .12 − .02 + .01
    assert row["val/psnr_y"] == pytest.approx(23.5)
    assert row[f"val/fidelity_{V}"] == pytest.approx(0.11)
    assert row[f"{CELL}/ssim_y"] == pytest.approx(0.71 + 0.02 - 0.01)
    assert row["status"] == "ok" and row["step"] == 30
    failed = _row(opt, backbone=C, discriminator="patch_resnet50", adv_weight=0.01)
    assert failed["n_seeds"] == 0 and failed["status"] == "0/1 ok, 1 failed" and math.isnan(failed["val/psnr_y"])
    # "none" first within a backbone, backbones in the order of their records (raygrid.spec)
    assert list(opt["backbone"].drop_duplicates()) == [R, V, RES, C]
    assert opt.iloc[0]["discriminator"] == "none"
    cells = A.optimization_cells(opt)
    assert [e for _, e in cells] == sorted(F.EVALUATORS) and all(c.startswith(CELL) for c, _ in cells)


def test_evaluator_directions_and_backbones():
    assert A.evaluator_info("psnr_y") == A.EvaluatorInfo("psnr_y", None, False)
    assert A.evaluator_info(f"fidelity_{V}") == A.EvaluatorInfo(f"fidelity_{V}", V, True)
    assert A.evaluator_info("fidelity_timm_vit_small", ["timm:vit_small"]).backbone == "timm:vit_small"
    assert A.evaluator_info("topiq_nr") == A.EvaluatorInfo("topiq_nr", "resnet50", False)  # pyiqa's ResNet-50
    assert A.evaluator_info("niqe").lower_better and not A.evaluator_info("musiq").lower_better


# ---------------------------------------------------------------------------------------------
# The asymmetry
# ---------------------------------------------------------------------------------------------


def test_asymmetry_rankings_disagree_without_adversarial_loss(tables):
    assess, opt = tables
    res = A.asymmetry(assess, opt, variants=["uniform"], per_discriminator=False, n_boot=2000)
    s = _row(res.summary, setting="no adversarial loss")
    r = res.ranks[res.ranks["setting"] == "no adversarial loss"].set_index("backbone")
    # IQA: mean SRCC r .40, v .85, res .75, c .65 → ranks v 1, res 2, c 3, r 4
    assert r["iqa_score"].to_dict() == pytest.approx({R: 0.40, V: 0.85, RES: 0.75, C: 0.65})
    assert r["iqa_rank"].to_dict() == {R: 4, V: 1, RES: 2, C: 3}
    # Optimization (NOADV, final step), rank per cell, own-backbone evaluator left out:
    #   psnr  r1 res2 v3 c4 | ssim same | fid_r (r out) res2 v3 c4 | fid_v (v out) r2 res3 c4
    #   fid_res (res out) r2 v3 c4 | fid_c (c out) r2 res3 v4
    #   r (1+1+2+2+2)/5 = 1.6, v (3+3+3+3+4)/5 = 3.2, res (2+2+2+3+3)/5 = 2.4, c 20/5 = 4
    assert r["opt_score"].to_dict() == pytest.approx({R: 1.6, V: 3.2, RES: 2.4, C: 4.0})
    assert r["opt_rank"].to_dict() == {R: 1, V: 3, RES: 2, C: 4}
    assert r["rank_shift"].to_dict() == {R: -3, V: 2, RES: 0, C: 1}
    assert r["n_cells"].to_dict() == {R: 5, V: 5, RES: 5, C: 5}
    # ranks (r, v, res, c): IQA (4, 1, 2, 3), opt (1, 3, 2, 4); d² = 9 + 4 + 0 + 1 = 14
    # rho = 1 − 6·14 / (4·15) = −0.4; Kendall: 2 concordant, 4 discordant pairs → τ = −2/6
    assert s["spearman"] == pytest.approx(-0.4) and s["kendall"] == pytest.approx(-1 / 3)
    # exact permutation p: 18 of the 24 pairings have |rho| ≥ 0.4, and 18 have |tau| ≥ 1/3
    assert s["spearman_p"] == pytest.approx(18 / 24) and s["kendall_p"] == pytest.approx(18 / 24)
    # Bootstrap: a resample changes the order only if it draws nothing but the {fid_v, fid_res}
    # or {fid_r, fid_res} cells (each (2/6)^6 ≈ 0.14 % < 2.5 %), so the 95 % interval is the point.
    assert (s["spearman_lo"], s["spearman_hi"]) == pytest.approx((-0.4, -0.4))
    assert (s["kendall_lo"], s["kendall_hi"]) == pytest.approx((-1 / 3, -1 / 3))
    assert s["n_backbones"] == 4 and s["n_benchmarks"] == 3 and s["n_cells"] == 6 and s["missing"] == ""


def test_asymmetry_grows_with_adversarial_loss(tables):
    assess, opt = tables
    res = A.asymmetry(assess, opt, variants=["uniform"], n_boot=500)
    s = _row(res.summary, setting="adversarial loss (all discriminators, weights)")
    r = res.ranks[res.ranks["setting"] == "adversarial loss (all discriminators, weights)"].set_index("backbone")
    # ADV_BASE ranks every cell r < c < res < v; the discriminator/weight offsets are the same for
    # every backbone, so the mean over configurations keeps that order: opt ranks r1 c2 res3 v4,
    # the exact reverse of the IQA order → rho = tau = −1, p = 2/24 (the two perfect pairings).
    assert r["opt_rank"].to_dict() == {R: 1, V: 4, RES: 3, C: 2}
    assert r["opt_score"].to_dict() == pytest.approx({R: 1.0, V: 4.0, RES: 3.0, C: 2.0})
    assert (s["spearman"], s["kendall"]) == pytest.approx((-1.0, -1.0))
    assert (s["spearman_p"], s["kendall_p"]) == pytest.approx((2 / 24, 2 / 24))
    assert (s["spearman_lo"], s["spearman_hi"]) == pytest.approx((-1.0, -1.0))  # every cell agrees
    # convnext lost one configuration (failed): averaged over 3, the others over 4 — stated
    assert r["n_configs"].to_dict() == {R: 4, V: 4, RES: 4, C: 3}
    assert any("different numbers of configurations" in n and "convnext_tiny 3" in n for n in res.notes)
    per_disc = set(res.summary["setting"])
    assert {"adversarial: vanilla_conv", "adversarial: patch_resnet50"} <= per_disc


def test_including_the_same_backbone_evaluator(tables):
    assess, opt = tables
    res = A.asymmetry(assess, opt, variants=["uniform"], per_discriminator=False, exclude_same_backbone=False,
                      n_boot=100)
    r = res.ranks[res.ranks["setting"] == "no adversarial loss"].set_index("backbone")
    # all six cells count, each backbone's own evaluator ranks it first:
    # r (1+1+1+2+2+2)/6, v (3+3+3+1+3+4)/6, res (2+2+2+3+1+3)/6, c (4+4+4+4+4+1)/6
    assert r["opt_score"].to_dict() == pytest.approx({R: 9 / 6, V: 17 / 6, RES: 13 / 6, C: 21 / 6})
    assert r["n_cells"].to_dict() == {R: 6, V: 6, RES: 6, C: 6}


def test_fitted_variant_ranks_on_common_benchmarks_only(tables):
    assess, opt = tables
    res = A.asymmetry(assess, opt, variants=["fitted on kadid10k"], per_discriminator=False, n_boot=100)
    s = _row(res.summary, setting="no adversarial loss")
    # csiq lacks vgg16_r (failed), tid2013 lacks convnext (never ran): only live is common
    assert s["n_benchmarks"] == 1 and s["benchmarks"] == "live"
    r = res.ranks[res.ranks["setting"] == "no adversarial loss"].set_index("backbone")
    assert r["iqa_score"].to_dict() == pytest.approx({R: 0.55, V: 0.95, RES: 0.85, C: 0.75})
    assert any("benchmarks left out" in n and "csiq, tid2013" in n for n in res.notes)


def test_a_backbone_missing_on_one_side_is_listed_not_dropped(tables):
    assess, opt = tables
    res = A.asymmetry(assess, opt[opt["backbone"] != C], variants=["uniform"], per_discriminator=False, n_boot=100)
    s = _row(res.summary, setting="no adversarial loss")
    assert s["n_backbones"] == 3 and s["missing"] == "convnext_tiny (no optimize result)"
    c = _row(res.ranks, setting="no adversarial loss", backbone=C)
    assert not c["included"] and c["note"] == "no optimize result" and math.isnan(c["opt_rank"])
    # IQA ranks among r, v, res: v 1, res 2, r 3
    r = res.ranks[(res.ranks["setting"] == "no adversarial loss") & res.ranks["included"]].set_index("backbone")
    assert r["iqa_rank"].to_dict() == {R: 3, V: 1, RES: 2}


def test_no_optimize_results_gives_a_note_not_a_number(tables):
    assess, opt = tables
    empty = opt[["backbone", "discriminator", "adv_weight", "status"]]
    res = A.asymmetry(assess, empty)
    assert res.summary.empty and "no optimize trial has results" in res.notes[0]


def test_bootstrap_matches_a_loop_over_scipy():
    """The vectorised resampling equals, draw for draw, a plain loop with scipy's statistics."""
    rng = np.random.default_rng(7)
    k, nb, nc, n_boot = 5, 4, 7, 300
    iqa = rng.uniform(0.2, 0.9, (k, nb))
    raw = rng.normal(size=(k, nc))
    cell_ranks = stats.rankdata(raw, axis=0)  # ranks of the backbones within each cell
    exclude = np.zeros((k, nc), dtype=bool)
    exclude[0, 0] = exclude[1, 3] = True  # two evaluators share a loss backbone
    got = A.bootstrap_rank_correlation(iqa, cell_ranks, exclude, n_boot=n_boot, seed=3, level=0.9)

    draws = np.random.default_rng(3)
    ib = draws.integers(0, nb, size=(n_boot, nb))
    ic = draws.integers(0, nc, size=(n_boot, nc))
    rho, tau = [], []
    for b in range(n_boot):
        i_score = iqa[:, ib[b]].mean(1)
        keep = ~exclude[:, ic[b]]
        if (keep.sum(1) == 0).any():
            rho.append(np.nan)
            tau.append(np.nan)
            continue
        o_score = (cell_ranks[:, ic[b]] * keep).sum(1) / keep.sum(1)
        x, y = stats.rankdata(-np.round(i_score, 12)), stats.rankdata(np.round(o_score, 12))
        rho.append(stats.spearmanr(x, y).statistic)
        tau.append(stats.kendalltau(x, y).statistic)
    rho, tau = np.array(rho), np.array(tau)
    np.testing.assert_allclose(got["boot_spearman"], rho, atol=1e-12)
    np.testing.assert_allclose(got["boot_kendall"], tau, atol=1e-12)
    assert got["spearman_lo"] == pytest.approx(np.nanquantile(rho, 0.05))
    assert got["kendall_hi"] == pytest.approx(np.nanquantile(tau, 0.95))
    assert got["n_boot_valid"] == int(np.isfinite(rho).sum())
    # and the point estimate is scipy's on the unresampled data
    x = stats.rankdata(-iqa.mean(1))
    keep = ~exclude
    y = stats.rankdata((cell_ranks * keep).sum(1) / keep.sum(1))
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)


def test_permutation_p_values_enumerate_all_pairings():
    rng = np.random.default_rng(1)
    x, y = rng.permutation(6) + 1.0, rng.permutation(6) + 1.0
    p_rho, p_tau = A.permutation_p(x, y)
    rho0, tau0 = stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic
    perms = list(itertools.permutations(y))
    assert p_rho == pytest.approx(np.mean([abs(stats.spearmanr(x, p).statistic) >= abs(rho0) - 1e-12 for p in perms]))
    assert p_tau == pytest.approx(np.mean([abs(stats.kendalltau(x, p).statistic) >= abs(tau0) - 1e-12 for p in perms]))
    assert p_tau == pytest.approx(stats.kendalltau(x, y, method="exact").pvalue)


# ---------------------------------------------------------------------------------------------
# Discriminators
# ---------------------------------------------------------------------------------------------


def test_discriminator_table(tables):
    _, opt = tables
    d = A.discriminator_table(opt)
    r = d[d["backbone"] == R].set_index("discriminator")
    # vgg16_r designs (mean over weights = ADV_BASE + DISC):
    #   none psnr 25.0 ssim .80 fid_r .10 fid_v .12 fid_res .11 fid_c .13
    #   vanilla_conv 23.6 .73 .105 ×4;   patch_resnet50 24.4 .77 .06 ×4
    # ranks per cell without fid_r (the loss's own evaluator):
    #   psnr none1 patch2 vanilla3 | ssim same | fid_v, fid_res, fid_c: patch1 vanilla2 none3
    #   none (1+1+3+3+3)/5 = 2.2, vanilla (3+3+2+2+2)/5 = 2.4, patch (2+2+1+1+1)/5 = 1.4
    assert r["mean_rank"].to_dict() == pytest.approx({"none": 2.2, "vanilla_conv": 2.4, "patch_resnet50": 1.4})
    assert r["rank"].to_dict() == {"patch_resnet50": 1, "none": 2, "vanilla_conv": 3}
    assert list(d[d["backbone"] == R]["discriminator"]) == ["patch_resnet50", "none", "vanilla_conv"]
    # gains over none, signed so > 0 is better (distances: none − design)
    assert r.loc["vanilla_conv", "gain psnr_y"] == pytest.approx(23.6 - 25.0)
    assert r.loc["vanilla_conv", "gain ssim_y"] == pytest.approx(0.73 - 0.80)
    assert r.loc["vanilla_conv", f"gain fidelity_{V}"] == pytest.approx(0.12 - 0.105)
    assert r.loc["patch_resnet50", f"gain fidelity_{C}"] == pytest.approx(0.13 - 0.06)
    assert r.loc["none", "gain psnr_y"] == 0.0
    assert (r.loc["patch_resnet50", "head"], r.loc["patch_resnet50", "trunk"]) == ("patch", "resnet50")
    assert r.loc["vanilla_conv", "n_weights"] == 2 and r.loc["none", "n_weights"] == 1
    # convnext's patch design has one weight left (the other failed)
    assert _row(d, backbone=C, discriminator="patch_resnet50")["n_weights"] == 1


# ---------------------------------------------------------------------------------------------
# Transfer
# ---------------------------------------------------------------------------------------------


def test_transfer_table(best, final):
    t = A.transfer_table(best)
    assert len(t) == 2 * 3  # test sets × inits
    live = t[t["test_set"] == "live"].set_index("init")
    # best step 20: imagenet .90/.91/.92 → .91; discriminator .83; random seeds 0, 1 only → .805
    assert live["srcc"].to_dict() == pytest.approx({"imagenet": 0.91, "discriminator": 0.83, "random": 0.805})
    assert live["plcc"].to_dict() == pytest.approx({"imagenet": 0.94, "discriminator": 0.86, "random": 0.835})
    assert live["srcc_sd"].to_dict() == pytest.approx({"imagenet": 0.01, "discriminator": 0.01,
                                                       "random": 0.01 / math.sqrt(2)})
    assert live.loc["random", "status"] == "2/3 ok, 1 failed" and live.loc["imagenet", "n_seeds"] == 3
    assert live.loc["discriminator", "source"].startswith("vgg16 loss + patch_resnet50 @ 0.05")
    assert set(t["axis:protocol"]) == {"fr_kadid"}
    # at the final step every test value is .05 lower
    assert _row(A.transfer_table(final), test_set="live", init="imagenet")["srcc"] == pytest.approx(0.86)


def test_transfer_differences(best):
    d = A.transfer_differences(best, n_boot=2000)
    row = _row(d, comparison="discriminator − imagenet", backbone="all", metric="srcc")
    # paired (benchmark, seed) cells: live −.08 ×3, csiq −.07 ×3 → mean −.075.
    # Bootstrap mean of 6 draws = −.07 − .01·k/6, k ~ Bin(6, ½) draws of −.08: P(k = 6) = 1.6 % <
    # 2.5 % < P(k ≥ 5) = 10.9 % → lower bound at k = 5: −.078333; upper at k = 1: −.071667.
    assert row["diff"] == pytest.approx(-0.075) and row["n_cells"] == 6
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((-0.07 - 0.05 / 6, -0.07 - 0.01 / 6))
    row = _row(d, comparison="discriminator − random", backbone="all", metric="srcc")
    # random seed 2 failed → 4 pairs: live .02 ×2, csiq .04 ×2; P(all four the same) = 6.25 % > 2.5 %
    assert row["diff"] == pytest.approx(0.03) and row["n_cells"] == 4
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((0.02, 0.04))
    row = _row(d, comparison="imagenet − random", backbone=RES, metric="plcc")
    assert row["diff"] == pytest.approx(0.105)


def test_transfer_difference_of_a_single_cell_uses_the_runs_intervals(best):
    one = SweepData(best.experiment, best.tracking_uri, best.sweep_run_ids, best.checkpoint,
                      best.trials.copy(), best.plan)
    t = one.trials
    t.loc[t["stage"] == "transfer", [c for c in t.columns if c.startswith("metrics.test/csiq/")]] = np.nan
    one.trials = t[(t["stage"] != "transfer") | (t["seed"] == 0)]
    row = _row(A.transfer_differences(one), comparison="discriminator − imagenet", backbone="all", metric="srcc")
    # one cell: live seed 0, .82 − .90 = −.08; each run's CI is ±.04 → se = .04 / z;
    # half-width = z·√(2·(.04/z)²) = .04·√2
    assert row["n_cells"] == 1 and row["diff"] == pytest.approx(-0.08)
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((-0.08 - 0.04 * math.sqrt(2), -0.08 + 0.04 * math.sqrt(2)))
    assert row["ci_method"].startswith("normal")


# ---------------------------------------------------------------------------------------------
# Overview, missing trials, the runs behind figures
# ---------------------------------------------------------------------------------------------


def test_overview_and_missing_trials(best):
    ov = A.trial_overview(best).set_index("stage")
    assert ov.loc["assess"].to_dict() == {"trials": 24, "finished": 22, "stopped": 0, "failed": 1, "running": 0,
                                          "not run": 1}
    miss = A.missing_trials(best)
    assert sorted(zip(miss["stage"], miss["state"])) == [
        ("assess", "failed"), ("assess", "not run"), ("optimize", "failed"), ("transfer", "failed")]


def test_representative_runs(best):
    reps = A.representative_runs(best)
    # best val/psnr_y per (backbone, with/without adversarial): none, and patch_resnet50 @ 0.01
    # (+0.4 + 0.1) — for convnext @ 0.05, its 0.01 run failed
    got = list(zip(reps["backbone"], reps["discriminator"], reps["adv_weight"]))
    assert got == [(R, "none", 0.0), (R, "patch_resnet50", 0.01), (V, "none", 0.0), (V, "patch_resnet50", 0.01),
                   (RES, "none", 0.0), (RES, "patch_resnet50", 0.01), (C, "none", 0.0), (C, "patch_resnet50", 0.05)]
    hist = A.metric_histories(best, reps.head(1), ["val/psnr_y", "no/such_metric"])
    assert hist[reps.iloc[0]["run_id"]] == {"val/psnr_y": [(10, 24.0), (20, 25.3), (30, 25.0)]}
