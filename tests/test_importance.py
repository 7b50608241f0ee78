"""Which axis matters: the main-effects ANOVA ranking, its intervals, fANOVA, the figure, the loader."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from raygrid.analysis import importance as I


def grid(levels: dict[str, list], seeds: int, effect, rng, sigma: float = 1.0) -> pd.DataFrame:
    """Every combination of the levels × seeds; metric = effect(point) + N(0, sigma)."""
    rows = []
    for combo in itertools.product(*levels.values()):
        point = dict(zip(levels, combo))
        for s in range(seeds):
            rows.append({"point": {**point, "seed": s}, **{f"params.{k}": str(v) for k, v in point.items()},
                         "params.seed": str(s), "state": "finished",
                         "metrics.test/psnr_y": effect(point) + rng.normal(0, sigma)})
    return pd.DataFrame(rows)


LEVELS = {"fidelity.backbone": ["vgg16_r", "resnet50", "convnext_tiny", "swin_t"],
          "loss.adversarial_weight": [0.01, 0.05, 0.1], "optim.lr": [1e-4, 2e-4, 4e-4]}
DRIVE = {"vgg16_r": 0.0, "resnet50": 2.0, "convnext_tiny": 4.0, "swin_t": 6.0}


def test_the_driving_axis_ranks_first_with_an_interval_apart_from_the_noise_axis():
    rng = np.random.default_rng(1)
    trials = grid(LEVELS, 2, lambda p: DRIVE[p["fidelity.backbone"]] + 0.3 * p["loss.adversarial_weight"] * 10, rng)
    assert I.varying_axes(trials) == list(LEVELS)  # the seed replicates, it is no axis
    t = I.axis_importance(trials, metrics=["test/psnr_y"])
    assert list(t["axis"]) == ["fidelity.backbone", "loss.adversarial_weight", "optim.lr"]
    top, noise = t.iloc[0], t[t["axis"] == "optim.lr"].iloc[0]
    assert top["rank"] == 1 and top["lo"] > noise["hi"] and top["p"] < 1e-6
    assert top["lo"] <= top["importance"] <= top["hi"] and noise["lo"] <= noise["importance"] <= noise["hi"]
    assert top["df"] == 3 and top["n"] == 72 and t["share"].sum() <= 1 + 1e-9
    html = I.importance_table_html(t)
    assert html.count("<tr>") == 1 + 3 and "fidelity.backbone" in html and "95% interval" in html


def test_balanced_grid_sums_of_squares_are_the_one_way_ones_and_f_matches_scipy():
    rng = np.random.default_rng(2)
    trials = grid({"a": ["x", "y", "z"], "b": ["u", "v"]}, 3, lambda p: {"x": 0, "y": 1, "z": 3}[p["a"]], rng)
    y = trials["metrics.test/psnr_y"].to_numpy()
    fac, _ = I.factors(pd.DataFrame({"a": I.axis_values(trials, "a"), "b": I.axis_values(trials, "b")}))
    ss, _, df_res = I.type2_ss(y, fac)
    a = I.axis_values(trials, "a")
    one_way = sum((a == lvl).sum() * (y[a == lvl].mean() - y.mean()) ** 2 for lvl in ("x", "y", "z"))
    assert ss["a"][0] == pytest.approx(one_way) and ss["a"][1] == 2 and df_res == 18 - 1 - 2 - 1
    # with the one axis alone, F is scipy's one-way ANOVA F
    only = I.axis_importance(trials, ["a"], ["test/psnr_y"]).iloc[0]
    assert only["F"] == pytest.approx(stats.f_oneway(*[y[a == lvl] for lvl in ("x", "y", "z")]).statistic)


def test_noncentral_f_interval_covers_at_its_nominal_rate():
    """Under the model (additive effects, normal noise) the partial-η² interval covers the true
    value λ/(λ+n) in about 95% of simulated sweeps; the null axis's, at its boundary, in ≥ 95%."""
    rng = np.random.default_rng(3)
    levels = {"a": ["p", "q", "r"], "b": ["s", "t", "u"]}
    effect = {"p": 0.0, "q": 0.5, "r": 1.0}
    base = grid(levels, 2, lambda p: 0.0, rng)
    mu = np.array([effect[p["a"]] for p in base["point"]])
    fac, _ = I.factors(pd.DataFrame({k: I.axis_values(base, k) for k in levels}))
    (lam_a, _), (lam_b, _) = [I.type2_ss(mu, fac)[0][k] for k in ("a", "b")]  # σ = 1: SS of the means is λ
    n = len(mu)
    truth = {"a": lam_a / (lam_a + n), "b": lam_b / (lam_b + n)}
    assert truth["a"] > 0.1 and truth["b"] == pytest.approx(0.0, abs=1e-12)
    hits, reps = {"a": 0, "b": 0}, 400
    for _ in range(reps):  # axis_importance's own computation, without its pandas bookkeeping per sweep
        rows = {r["axis"]: r for r in I.anova_rows(mu + rng.normal(0, 1, n), fac, 0.95)}
        for k in hits:
            hits[k] += rows[k]["lo"] - 1e-9 <= truth[k] <= rows[k]["hi"] + 1e-9
    se = (0.95 * 0.05 / reps) ** 0.5
    assert abs(hits["a"] / reps - 0.95) < 3 * se, hits
    assert hits["b"] / reps > 0.95 - 3 * se, hits


def test_fanova_also_ranks_the_driving_axis_first():
    rng = np.random.default_rng(4)
    trials = grid(LEVELS, 1, lambda p: DRIVE[p["fidelity.backbone"]], rng, sigma=0.3)
    t = I.axis_importance(trials, list(LEVELS), ["test/psnr_y"], method="fanova")
    assert t.iloc[0]["axis"] == "fidelity.backbone" and t["importance"].sum() == pytest.approx(1.0)
    assert t.iloc[0]["importance"] > 0.6 and t["lo"].isna().all()


def test_conditioned_axes_are_one_factor_and_unfinished_trials_are_left_out():
    """The demo's slice: weight 0 ⇔ discriminator none, so the two axes cannot be told apart."""
    rng = np.random.default_rng(5)
    rows = []
    for bb, (disc, w) in itertools.product(["vgg16_r", "resnet50", "convnext_tiny"],
                                           [("none", 0), ("vanilla_conv", 0.05), ("patch_resnet50", 0.05)]):
        rows.append({"point": {"fidelity.backbone": bb, "adversarial.discriminator": disc, "loss.adversarial_weight": w, "seed": 0},
                     "state": "finished", "metrics.test/psnr_y": {"none": 3.0, "vanilla_conv": 1.0, "patch_resnet50": 0.0}[disc]
                     + rng.normal(0, 0.1)})
    rows[4]["state"] = "stopped"
    rows.append({**rows[0], "state": "collapsed", "point": {**rows[0]["point"], "seed": 1}})
    trials = pd.DataFrame(rows)
    t = I.axis_importance(trials, ["fidelity.backbone", "adversarial.discriminator", "loss.adversarial_weight"], ["test/psnr_y"])
    assert list(t["axis"]) == ["adversarial.discriminator × loss.adversarial_weight", "fidelity.backbone"]
    assert t.iloc[0]["df"] == 2 and t.iloc[0]["n"] == 8
    notes = " | ".join(t.attrs["notes"])
    assert "1 trial(s) stopped left out" in notes and "1 trial(s) collapsed left out" in notes
    assert "determine each other" in notes
    one = I.axis_importance(trials[trials["point"].map(lambda p: p["fidelity.backbone"] == "vgg16_r")],
                            ["fidelity.backbone", "adversarial.discriminator"], ["test/psnr_y"])
    assert list(one["axis"]) == ["adversarial.discriminator"] and "one level (vgg16_r)" in " ".join(one.attrs["notes"])
    # a saturated design has no residual: no test, no interval, ranked by share
    sat = I.axis_importance(trials[trials["state"] == "finished"].iloc[:3], ["adversarial.discriminator"], ["test/psnr_y"])
    assert sat.iloc[0]["lo"] != sat.iloc[0]["lo"] and "no residual" in sat.iloc[0]["note"]


def test_bad_input_names_it():
    trials = grid({"a": ["x", "y"]}, 2, lambda p: 0.0, np.random.default_rng(0))
    with pytest.raises(KeyError, match="axis 'nope': no column 'nope', 'params.nope'"):
        I.axis_importance(trials, ["nope"], ["test/psnr_y"])
    with pytest.raises(KeyError, match="metric 'test/lpips'"):
        I.axis_importance(trials, ["a"], ["test/lpips"])
    with pytest.raises(ValueError, match="method = 'shap'"):
        I.axis_importance(trials, ["a"], ["test/psnr_y"], method="shap")


def test_parallel_coordinates_draws_a_line_per_trial_coloured_by_the_metric():
    rng = np.random.default_rng(6)
    trials = grid(LEVELS, 1, lambda p: DRIVE[p["fidelity.backbone"]], rng, sigma=0.1)
    png = I.parallel_coordinates(trials, list(LEVELS), "test/psnr_y")
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert im.shape[1] > im.shape[0] > 200
    # both ends of the colour map are drawn: the worst trials (viridis purple) and the best (yellow)
    for rgb in [(68, 1, 84), (253, 231, 37)]:
        assert (np.abs(im - rgb).sum(axis=2) < 40).sum() > 50, rgb
    assert I.parallel_coordinates(trials.iloc[:1], list(LEVELS), "test/psnr_y") is None
    assert I.parallel_coordinates(trials.assign(state="stopped"), list(LEVELS), "test/psnr_y") is None


def test_headline_metrics_per_stage():
    cols = ["metrics.test/psnr_y", "metrics.test/psnr_y_lo", "metrics.test/set5/psnr_y", "metrics.val/psnr_y",
            "metrics.test/live/srcc", "metrics.test/live/plcc", "metrics.srcc", "metrics.abs_srcc"]
    frame = pd.DataFrame(columns=cols)
    assert I.headline_metrics(frame, "optimize") == ["test/psnr_y"]
    assert I.headline_metrics(frame, "transfer") == ["test/live/srcc"]
    assert I.headline_metrics(frame, "assess") == ["srcc"]
