"""The analysis against hand-computed numbers, read back from a real MLflow store.

The store (tests/report_fixtures.py) is written through raygrid.run.tracking.TrialRunLogger, with
the per-item tables and evaluator records the loops hand it; every expected value below is derived
by hand from the fixture's tables in the comment next to it.
Backbones: r = vgg16_r, v = vgg16, res = resnet50, c = convnext_tiny.

What changed with the per-item tables (Wave B): IQA correlations are computed from the assess
tables (the fixture's SRCC values are now multiples of .1, exact for 5 ranked images); the panel has
a no-reference evaluator (NIQE, lower is better, from its record) and is ordered so that the
independent panel disagrees with the full one; an evaluator sharing the discriminator's trunk is
left out as well as the loss's own; a cell that a trial did not complete at the common step is left
out for every backbone (it used to be averaged over fewer configurations); intervals resample
images, seeds, evaluators and references, so they are checked against a direct call on tables
built from the fixture's constants rather than derived by hand.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import report_fixtures as F

from raygrid.analysis import intervals, load, outcomes, stats, tables
from raygrid.analysis.load import _dedupe, load_sweep
from raygrid.analysis.report.samples import representative_runs

R, V, RES, C = F.R, F.V, F.RES, F.C
FAILED = "failed: RuntimeError: CUDA error: out of memory (raygrid/stages/optimize/loop.py:88 in step)"


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return F.shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def data(store):
    return load_sweep(store["experiment"], store["tracking_uri"])


@pytest.fixture(scope="module")
def items(data):
    return tables.optimization_items(data)


@pytest.fixture(scope="module")
def asym(data, items):
    return stats.asymmetry(tables.iqa_items(data), items, n_boot=200)


def _row(df: pd.DataFrame, **match) -> pd.Series:
    mask = np.ones(len(df), dtype=bool)
    for k, v in match.items():
        mask &= (df[k] == v).to_numpy()
    hit = df[mask]
    assert len(hit) == 1, f"{len(hit)} rows match {match}"
    return hit.iloc[0]


# ---------------------------------------------------------------------------------------------
# Reading MLflow; the common step
# ---------------------------------------------------------------------------------------------


def test_every_trial_is_a_row_with_its_outcome(data):
    t = data.trials
    counts = {k: n for k, n in t.groupby(["stage", "outcome"]).size().items()}
    # assess: 4 backbones × (3 benchmarks uniform + live fitted) = 16 planned; one failed, one never ran
    assert counts == {
        ("assess", "finished"): 14, ("assess", "failed"): 1, ("assess", "not run"): 1,
        ("optimize", "finished"): 17, ("optimize", "stopped"): 1, ("optimize", "collapsed"): 1,
        ("optimize", "failed"): 1, ("transfer", "finished"): 8, ("transfer", "failed"): 1,
    }
    assert t.groupby("stage")["compared"].sum().to_dict() == {"assess": 14, "optimize": 17, "transfer": 8}
    never = t[t["outcome"] == "not run"].iloc[0]
    assert never["run_id"] is None and never["why"] == "not run"
    assert data.sweep_run_ids and data.notes == []


def test_the_common_step_and_why_a_trial_is_not_compared(data):
    assert data.report["optimize"] == load.StageReport("final", 30, ("val/psnr_y", "max"), "plan.json")
    assert data.report["transfer"].checkpoint == "best" and data.report["transfer"].step == 30
    opt = tables.opt_runs(data)
    why = {(r.backbone, r.discriminator, r.adv_weight): r.why for r in opt[~opt["compared"]].itertuples()}
    assert why == {F.OPT_STOPPED: "stopped at step 20", F.OPT_COLLAPSED: "collapsed at step 20", F.OPT_FAILED: FAILED}
    ok = opt[opt["compared"]]
    assert set(ok["value_step"]) == {30} and set(ok["value_source"]) == {"per-item table at step 30"}
    # transfer "best" by val/srcc up to step 30: .5, .7, .6 at steps 10, 20, 30 → step 20
    tr = data.compared("transfer")
    assert set(tr["value_step"]) == {20}


def test_an_earlier_common_step_compares_the_trials_that_reached_it(store):
    d = load_sweep(store["experiment"], store["tracking_uri"], report={"optimize": {"step": 20}})
    opt = tables.opt_runs(d)
    # the stopped and the collapsed trial reached step 20; the failed one stopped at 10
    assert opt["compared"].sum() == 19
    assert list(opt.loc[~opt["compared"], "why"]) == [FAILED]
    table = tables.optimization_table(d)
    # step 20 = final + 0.3 dB: (vgg16, vanilla_conv, 0.01) 22.8 − 0.4 + 0.1 + 0.3
    assert _row(table, backbone=V, discriminator="vanilla_conv", adv_weight=0.01)["test/psnr_y"] == pytest.approx(22.8)


def test_best_by_the_selection_metric_only(store):
    d = load_sweep(store["experiment"], store["tracking_uri"], checkpoint="best")
    # best val/psnr_y up to step 30: step 20 (+0.3 beats +0 and −1); assess has no selection: final
    assert set(d.compared("optimize")["value_step"]) == {20}
    assert d.report["assess"].checkpoint == "final" and any("assess: no selection metric" in n for n in d.notes)
    table = tables.optimization_table(d)
    assert _row(table, backbone=R, discriminator="none")["test/psnr_y"] == pytest.approx(23.5 + 0.3)
    # convnext checkpoints have no meta.json: the step comes from the history, the values from the table
    assert _row(table, backbone=C, discriminator="none")[f"test/{F.TEST_SET}/fidelity_{C}"] == pytest.approx(0.11)


def test_best_without_a_selection_metric_is_one_clear_error():
    with pytest.raises(ValueError, match="checkpoint 'best' needs a report.selection metric"):
        load.stage_report({"report": {"checkpoint": "best"}, "budget": {"steps": 30}},
                          pd.DataFrame({"stage": ["optimize"]}))


def test_sweep_run_filter(store):
    same = load_sweep(store["experiment"], store["tracking_uri"], sweep_run_id=store["sweep_run_id"])
    assert len(same.trials) == 16 + 20 + 9
    other = load_sweep(store["experiment"], store["tracking_uri"], sweep_run_id="0" * 32)
    assert other.trials.empty and any("plan.json" in n for n in other.notes)
    with pytest.raises(LookupError):
        load_sweep("no-such-experiment", store["tracking_uri"])


def test_dedupe_keeps_the_latest_successful_run():
    df = pd.DataFrame({
        "stage": ["optimize"] * 3, "trial_key": ["k"] * 3, "run_id": ["old", "failed-later", "new"],
        "outcome": ["finished", "failed", "finished"], "start_time": pd.to_datetime([1, 3, 2], unit="s"),
    })
    kept, superseded = _dedupe(df)
    assert list(kept["run_id"]) == ["new"] and superseded == 2


def test_outcome_lines():
    assert outcomes.why_not_compared("diverged", 40.0, None, 60) == "diverged at step 40"
    assert outcomes.why_not_compared("interrupted", 20.0, None, 60) == "interrupted at step 20"
    assert outcomes.why_not_compared("failed", 10.0, "data.py:12 KeyError: 'x'", 60) == "failed: data.py:12 KeyError: 'x'"
    assert outcomes.why_not_compared("finished", 40.0, None, 60) == "finished, ended at step 40 before step 60"
    tags = pd.Series({"tags.raygrid.error": F.ERROR_TEXT})
    assert outcomes.failure_reason(tags) == "loop.py:88 RuntimeError: CUDA error: out of memory"
    assert outcomes.failure_reason(pd.Series({"tags.raygrid.outcome_reason": "nan in loss/d"})) == "nan in loss/d"


# ---------------------------------------------------------------------------------------------
# Assessment
# ---------------------------------------------------------------------------------------------


def test_assessment_table_from_the_per_item_tables(data):
    assess = tables.assessment_table(data, n_boot=200)
    assert len(assess) == 16  # every planned cell, the missing two included
    for b, values in F.IQA_UNIFORM.items():
        for bench, srcc in zip(F.BENCHES, values):
            row = _row(assess, variant="uniform", backbone=b, benchmark=bench)
            # 5 images ranked as a permutation with sum d² = 20(1 − SRCC); PLCC of the ranks = SRCC
            assert row["srcc"] == pytest.approx(srcc) and row["plcc"] == pytest.approx(srcc)
            assert row["srcc_lo"] <= row["srcc"] <= row["srcc_hi"]
            # the unit is the reference image: 5 pairs of 4 references (A A B C D)
            assert (row["n_pairs"], row["n_refs"], row["resampled"]) == (5, 4, "reference images")
            assert row["status"] == "ok" and row["n_compared"] == 1
    assert _row(assess, variant="fitted on kadid10k", backbone=V, benchmark="live")["srcc"] == pytest.approx(1.0)
    failed = _row(assess, variant="fitted on kadid10k", backbone=R, benchmark="live")
    assert math.isnan(failed["srcc"]) and failed["status"] == f"0/1 compared; 1 {FAILED}"
    never = _row(assess, variant="fitted on kadid10k", backbone=C, benchmark="live")
    assert never["status"] == "0/1 compared; 1 not run" and never["n_not_run"] == 1


def test_a_benchmark_with_two_references_gets_values_without_an_interval(data):
    import copy

    few = copy.copy(data)
    few.scores = dict(data.scores)
    items = data.scores["assess"].copy()
    items["ref_id"] = np.where(np.arange(len(items)) % 2 == 0, "r0", "r1")  # every run: 2 references
    few.scores["assess"] = items
    assess = tables.assessment_table(few, n_boot=50)
    row = _row(assess, variant="uniform", backbone=R, benchmark=F.BENCHES[0])
    assert np.isfinite(row["srcc"]) and math.isnan(row["srcc_lo"]) and math.isnan(row["srcc_hi"])
    assert row["n_refs"] == 2 and row["resampled"] == "no interval: 2 reference images (fewer than 3)"


# ---------------------------------------------------------------------------------------------
# Optimization table and evaluator records
# ---------------------------------------------------------------------------------------------


def test_optimization_table_from_test_sets_at_the_common_step(data, items):
    opt = tables.optimization_table(data, items)
    assert len(opt) == 20  # 4 backbones × (none + 2 discriminators × 2 weights)
    row = _row(opt, backbone=RES, discriminator="patch_resnet50", adv_weight=0.05)
    # ADV_BASE[res] + DISC[patch_resnet50] + WEIGHT[0.05]: psnr 23.2 + .4 − .1, fid .12 − .02 + .01,
    # niqe 3.4 − .2 + .05; the mean over the 3 test images (offsets −1, 0, +1 cancel)
    assert row["test/psnr_y"] == pytest.approx(23.5) and row[f"test/fidelity_{V}"] == pytest.approx(0.11)
    assert row["test/niqe"] == pytest.approx(3.25) and row[f"test/{F.TEST_SET}/ssim_y"] == pytest.approx(0.72)
    assert row["status"] == "ok" and row["step"] == 30
    assert not any(c.startswith("val/") for c in opt.columns)  # selection sets are never reported
    collapsed = _row(opt, backbone=RES, discriminator="vanilla_conv", adv_weight=0.01)
    assert collapsed["n_collapsed"] == 1 and collapsed["status"] == "0/1 compared; 1 collapsed at step 20"
    assert math.isnan(collapsed["test/psnr_y"])
    assert _row(opt, backbone=V, discriminator="vanilla_conv", adv_weight=0.01)["n_stopped"] == 1
    assert list(opt["backbone"].drop_duplicates()) == [R, V, RES, C] and opt.iloc[0]["discriminator"] == "none"


def test_evaluator_directions_and_circularity_come_from_the_records(items):
    info = tables.evaluator_table(items).set_index("evaluator")
    assert info.loc["psnr_y", "higher_better"] and not info.loc["niqe", "higher_better"]
    assert info.loc[f"fidelity_{RES}", "evaluator_backbone"] == RES and info.loc["niqe", "mode"] == "NR"
    assert set(info.index[info["independent"].astype(bool)]) == {"psnr_y", "ssim_y", "niqe"}
    # in a (vgg16_r, patch_resnet50) run: fid_r shares the loss, fid_res the discriminator trunk
    run = items[(items["backbone"] == R) & (items["discriminator"] == "patch_resnet50") & (items["adv_weight"] == 0.05)]
    flags = run.drop_duplicates("evaluator").set_index("evaluator")[["shares_loss", "shares_discriminator"]]
    assert flags[flags.any(axis=1)].to_dict("index") == {
        f"fidelity_{R}": {"shares_loss": True, "shares_discriminator": False},
        f"fidelity_{RES}": {"shares_loss": False, "shares_discriminator": True}}


# ---------------------------------------------------------------------------------------------
# The asymmetry
# ---------------------------------------------------------------------------------------------


def test_asymmetry_without_adversarial_loss(asym):
    s = _row(asym.summary, setting=stats.NO_ADV, panel=stats.PANELS[0], generator="all")
    r = asym.ranks[(asym.ranks["setting"] == stats.NO_ADV) & (asym.ranks["panel"] == stats.PANELS[0])].set_index("backbone")
    # IQA: mean SRCC r .4, v .8, res .7, c .6 → ranks v1 res2 c3 r4
    assert r["iqa_score"].to_dict() == pytest.approx({R: 0.4, V: 0.8, RES: 0.7, C: 0.6})
    assert r["iqa_rank"].to_dict() == {R: 4, V: 1, RES: 2, C: 3}
    # per evaluator (r, v, res, c): psnr, ssim 4 1 2 3; fid_*, niqe 1 4 3 2; own fid left out:
    # r (4+4+1+1+1+1)/6 = 2, v (1+1+4+4+4+4)/6 = 3, res (2+2+3+3+3+3)/6 = 16/6, c (3+3+2+2+2+2)/6 = 14/6
    assert r["opt_score"].to_dict() == pytest.approx({R: 2.0, V: 3.0, RES: 16 / 6, C: 14 / 6})
    assert r["opt_rank"].to_dict() == {R: 1, V: 4, RES: 3, C: 2} and set(r["n_evaluators"]) == {6}
    # ranks (4, 1, 2, 3) vs (1, 4, 3, 2): the exact reverse → ρ = τ = −1, p = 2/24 (2 of 24 pairings)
    assert (s["spearman"], s["kendall"]) == pytest.approx((-1.0, -1.0))
    assert (s["spearman_p"], s["kendall_p"]) == pytest.approx((2 / 24, 2 / 24))
    assert s["n_backbones"] == 4 and s["n_benchmarks"] == 3 and s["n_images"] == 3 and s["n_evaluators"] == 7
    assert "test images within each test set (3 in 1 sets)" in s["resampled"] and "seeds not resampled" in s["resampled"]
    assert s["left_out"] == "; ".join(f"fidelity_{b} (for {b})" for b in sorted([C, RES, V, R]))


def test_asymmetry_interval_is_the_bootstrap_of_the_logged_tables(asym):
    """The report's interval is intervals.asymmetry_interval on exactly what the runs logged:
    the same call on tables built from the fixture's constants gives the same numbers."""
    iqa = pd.DataFrame([{"backbone": b, **row} for b in F.BACKBONES for bench in F.BENCHES
                        for row in F.iqa_rows(bench, F.assess_values(b, bench, None))])
    opt = []
    for b in F.BACKBONES:
        _, rows = F.opt_step(b, "none", 0.0, 30)
        for row, rec in itertools.product(rows, F.evaluator_records(b, "none")):
            if row["evaluator"] == rec["name"] and row["role"] == "test":
                opt.append({"backbone": b, "discriminator": "none", "adv_weight": 0.0, "seed": 0, "test_set": row["set"],
                            "image": row["image"], "evaluator": row["evaluator"], "value": row["value"],
                            "higher_better": rec["higher_better"], "excluded": bool(rec["shares"])})
    direct = intervals.asymmetry_interval(iqa, pd.DataFrame(opt), n_boot=200)
    s = _row(asym.summary, setting=stats.NO_ADV, panel=stats.PANELS[0], generator="all")
    assert (s["spearman_lo"], s["spearman_hi"], s["kendall_lo"], s["kendall_hi"]) == pytest.approx(
        (direct.spearman_lo, direct.spearman_hi, direct.kendall_lo, direct.kendall_hi))
    assert s["resampled"] == direct.resampled and s["n_boot_valid"] == direct.n_boot_valid


def test_the_independent_panel_row_and_its_flip(asym):
    s = _row(asym.summary, setting=stats.NO_ADV, panel=stats.PANELS[1], generator="all")
    r = asym.ranks[(asym.ranks["setting"] == stats.NO_ADV) & (asym.ranks["panel"] == stats.PANELS[1])].set_index("backbone")
    # psnr, ssim, niqe only: r (4+4+1)/3 = 3, v (1+1+4)/3 = 2, res (2+2+3)/3, c (3+3+2)/3 → v1 res2 c3 r4,
    # the IQA order: ρ = +1 where the full panel says −1
    assert r["opt_score"].to_dict() == pytest.approx({R: 3.0, V: 2.0, RES: 7 / 3, C: 8 / 3})
    assert s["spearman"] == pytest.approx(1.0) and s["evaluators"] == "niqe, psnr_y, ssim_y"
    assert s["flips"] == "yes: ρ -1.00 → +1.00"
    assert any("no adversarial loss] judged by the independent panel only, the conclusion flips" in x for x in asym.lines)


def test_a_loss_ranking_leaves_out_evaluators_on_its_discriminator_trunk(asym):
    s = _row(asym.summary, setting=stats.ANY_ADV, panel=stats.PANELS[0], generator="all")
    r = asym.ranks[(asym.ranks["setting"] == stats.ANY_ADV) & (asym.ranks["panel"] == stats.PANELS[0])].set_index("backbone")
    # fid_res is built on patch_resnet50's trunk: it judges no backbone here; each fid its own loss
    # neither: r, v, c keep 5 of 7 evaluators, res 6. Every evaluator ranks r1 c2 res3 v4 (ADV_BASE).
    assert r["n_evaluators"].to_dict() == {R: 5, V: 5, RES: 6, C: 5}
    assert r["opt_score"].to_dict() == pytest.approx({R: 1.0, V: 4.0, RES: 3.0, C: 2.0})
    assert s["spearman"] == pytest.approx(-1.0)
    # the cells some backbone did not complete at step 30 are left out for every backbone
    assert s["n_cells"] == 2
    assert any("cells left out" in n and "vanilla_conv, adv_weight=0.01" in n and "patch_resnet50, adv_weight=0.01" in n
               for n in asym.notes)


def test_fitted_alpha_beta_rows_are_left_out_without_a_matching_optimize_arm(asym):
    assert set(asym.summary["iqa_variant"]) == {"uniform"}
    assert any("IQA α/β 'fitted on kadid10k': no optimize arm was trained with these α/β" in n for n in asym.notes)


def test_including_the_evaluators_that_share_a_trunk(data, items):
    res = stats.asymmetry(tables.iqa_items(data), items, n_boot=0, exclude_shared=False, per_discriminator=False)
    r = res.ranks[(res.ranks["setting"] == stats.NO_ADV) & (res.ranks["panel"] == stats.PANELS[0])].set_index("backbone")
    # all seven count: r (4+4+1·5)/7, v (1+1+4·5)/7, res (2+2+3·5)/7, c (3+3+2·5)/7
    assert r["opt_score"].to_dict() == pytest.approx({R: 13 / 7, V: 22 / 7, RES: 19 / 7, C: 16 / 7})


def test_no_optimize_results_gives_a_note_not_a_number(data, items):
    res = stats.asymmetry(tables.iqa_items(data), items.iloc[0:0])
    assert res.summary.empty and "no per-item results of optimize" in res.notes[0]


# ---------------------------------------------------------------------------------------------
# Discriminators
# ---------------------------------------------------------------------------------------------


def test_discriminator_table_leaves_out_the_evaluators_on_a_designs_trunk(items):
    d = tables.discriminator_table(items)
    r = d[d["backbone"] == R].set_index("discriminator")
    # left out for vgg16_r: fid_r (its loss) and fid_res (patch_resnet50's trunk); designs
    # (mean over weights): none psnr 23.5 ssim .74 fid .05 niqe 3.0; vanilla 23.6 .73 .105 3.2;
    # patch 24.4 .77 .06 2.8. Ranks: psnr patch1 vanilla2 none3 | ssim patch1 none2 vanilla3 |
    # fid_v, fid_c none1 patch2 vanilla3 | niqe patch1 none2 vanilla3
    assert set(r["left_out"]) == {f"fidelity_{RES}, fidelity_{R}"} and set(r["n_evaluators"]) == {5}
    assert r["mean_rank"].to_dict() == pytest.approx({"none": 9 / 5, "vanilla_conv": 14 / 5, "patch_resnet50": 7 / 5})
    assert list(d[d["backbone"] == R]["discriminator"]) == ["patch_resnet50", "none", "vanilla_conv"]
    # gains over none, signed so > 0 is better (distances and NIQE: none − design)
    assert r.loc["vanilla_conv", "gain psnr_y"] == pytest.approx(0.1)
    assert r.loc["vanilla_conv", f"gain fidelity_{V}"] == pytest.approx(0.05 - 0.105)
    assert r.loc["patch_resnet50", "gain niqe"] == pytest.approx(0.2) and r.loc["none", "gain psnr_y"] == 0.0
    assert (r.loc["patch_resnet50", "head"], r.loc["patch_resnet50", "trunk"]) == ("patch", "resnet50")
    # resnet50's vanilla design lost its 0.01 run (collapsed): one weight left
    assert _row(d, backbone=RES, discriminator="vanilla_conv")["n_weights"] == 1
    assert set(d.loc[d["backbone"] == RES, "left_out"]) == {f"fidelity_{RES}"}


# ---------------------------------------------------------------------------------------------
# Transfer
# ---------------------------------------------------------------------------------------------


def test_transfer_table_at_the_best_step(data):
    cells = tables.transfer_cells(data, n_boot=100)
    t = tables.transfer_table(cells)
    assert len(t) == 2 * 3  # test sets × inits
    live = t[t["test_set"] == "live"].set_index("init")
    # step 20 (best by val/srcc): imagenet .9 .9 .8; discriminator .8 ×3; random .6 .7 (seed 2 failed)
    assert live["srcc"].to_dict() == pytest.approx({"imagenet": 2.6 / 3, "discriminator": 0.8, "random": 0.65})
    assert live.loc["imagenet", "srcc_sd"] == pytest.approx(np.std([0.9, 0.9, 0.8], ddof=1))
    assert live.loc["random", "status"] == f"2/3 compared; 1 {FAILED}" and live.loc["imagenet", "n_compared"] == 3
    assert live.loc["discriminator", "source"].startswith("vgg16 loss + patch_resnet50 @ 0.05")
    assert set(t["axis:protocol"]) == {"fr_kadid"} and set(cells["resampled"].dropna()) == {"reference images"}


def test_transfer_differences(data):
    d = stats.transfer_differences(tables.transfer_cells(data, n_boot=0), n_boot=2000)
    row = _row(d, comparison="discriminator − imagenet", backbone="all", metric="srcc")
    # paired (benchmark, seed) cells: live −.1 −.1 0, csiq −.1 −.1 0 → −1/15. A bootstrap mean of 6
    # draws is −.1·k/6, k ~ Bin(6, 2/3): P(k = 6) = 8.8 % > 2.5 % → lower bound −.1; P(k ≤ 1) =
    # 1.8 % < 2.5 % < P(k ≤ 2) = 10 % → upper bound at k = 2: −.0333
    assert row["diff"] == pytest.approx(-1 / 15) and row["n_cells"] == 6
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((-0.1, -0.2 / 6))
    row = _row(d, comparison="discriminator − random", backbone="all", metric="srcc")
    # random seed 2 failed → 4 pairs: .2 .1 (live), .2 .1 (csiq); P(all four the same) = 6.25 % > 2.5 %
    assert row["diff"] == pytest.approx(0.15) and row["n_cells"] == 4
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((0.1, 0.2))


def test_transfer_difference_of_a_single_cell_uses_the_runs_intervals(data):
    cells = tables.transfer_cells(data, n_boot=200)
    one = cells[(cells["seed"] == 0) & (cells["test_set"] == "live")]
    row = _row(stats.transfer_differences(one), comparison="discriminator − imagenet", backbone="all", metric="srcc")
    a, b = (_row(one, init=i) for i in ("discriminator", "imagenet"))
    half = math.sqrt(((a["srcc_hi"] - a["srcc_lo"]) / 2) ** 2 + ((b["srcc_hi"] - b["srcc_lo"]) / 2) ** 2)
    assert row["n_cells"] == 1 and row["diff"] == pytest.approx(0.8 - 0.9)
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx((-0.1 - half, -0.1 + half))
    assert row["ci_method"].startswith("normal")


# ---------------------------------------------------------------------------------------------
# Overview, the trials not compared, the runs behind figures
# ---------------------------------------------------------------------------------------------


def test_overview_and_the_trials_not_compared(data):
    ov = outcomes.trial_overview(data).set_index("stage")
    assert list(ov.index) == ["assess", "optimize", "transfer"]
    assert ov.loc["optimize", ["trials", "compared", "finished", "stopped", "collapsed", "failed"]].to_dict() == {
        "trials": 20, "compared": 17, "finished": 17, "stopped": 1, "collapsed": 1, "failed": 1}
    miss = outcomes.not_compared(data)
    assert sorted(zip(miss["stage"], miss["why"])) == [
        ("assess", FAILED), ("assess", "not run"), ("optimize", "collapsed at step 20"), ("optimize", FAILED),
        ("optimize", "stopped at step 20"), ("transfer", FAILED)]


def test_representative_runs_by_the_selection_metric(data):
    reps = representative_runs(data)
    # best val/psnr_y per (backbone, with/without adversarial): none, and patch_resnet50 @ 0.01
    # (+.4 + .1); convnext's 0.01 run failed → its 0.05 one
    got = list(zip(reps["backbone"], reps["discriminator"], reps["adv_weight"]))
    assert got == [(R, "none", 0.0), (R, "patch_resnet50", 0.01), (V, "none", 0.0), (V, "patch_resnet50", 0.01),
                   (RES, "none", 0.0), (RES, "patch_resnet50", 0.01), (C, "none", 0.0), (C, "patch_resnet50", 0.05)]
    hist = load.metric_histories(data, list(reps["run_id"][:1]), ["val/psnr_y", "no/such_metric"])
    assert hist[reps.iloc[0]["run_id"]] == {"val/psnr_y": [(10, 22.5), (20, 23.8), (30, 23.5)]}
