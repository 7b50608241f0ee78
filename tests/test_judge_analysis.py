"""Judge flags, the asymmetry against the human ranking, evaluator agreement, active sampling."""

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from raygrid.judge import bradley_terry as bt
from raygrid.judge.agreement import evaluator_agreement, flagged_judges, human_asymmetry, judge_quality
from raygrid.judge.ranking import human_ranking
from raygrid.judge.sampling import REPEAT_EVERY, next_comparison, pair_scores
from raygrid.judge.schema import COLUMNS, empty_frame, item_key


def frame(rows):
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    if df["id"].isna().any():
        df["id"] = [f"id{i}" for i in range(len(df))]
    return df[list(COLUMNS)]


BACKBONES = ["vgg16_r", "resnet50", "convnext_tiny", "swin_t"]


def grid_items():
    """backbone × {none, vanilla_conv}: 8 settings, one run each (run id = 'r<index>')."""
    items, run_of = [], {}
    for b in BACKBONES:
        for d in ("none", "vanilla_conv"):
            key = item_key({"fidelity.backbone": b, "adversarial.discriminator": d,
                            "loss.adversarial_weight": 0 if d == "none" else 0.05})
            run_of[key] = f"r{len(items)}"
            items.append(key)
    return items, run_of


def simulated(theta: dict, n: int, rng, judges=("a", "b", "c", "d"), crops=("c0", "c1", "c2", "c3"), eta=-1.2):
    items, run_of = grid_items()
    rows = []
    for _ in range(n):
        i, j = rng.choice(len(items), 2, replace=False)
        pl, pr, _ = bt.win_probabilities(theta[items[i]], theta[items[j]], eta)
        u = rng.random()
        rows.append({"judge": str(rng.choice(judges)), "crop_id": str(rng.choice(crops)), "left_item": items[i],
                     "right_item": items[j], "left_run": run_of[items[i]], "right_run": run_of[items[j]],
                     "choice": "left" if u < pl else ("right" if u < pl + pr else "same"), "elapsed_ms": 2500,
                     "sitting": "s1"})
    return frame(rows)


# -- judge quality ------------------------------------------------------------------------------


def test_fast_and_inconsistent_judges_are_flagged_not_dropped():
    rows = []
    for n in range(6):  # careful: slow, repeats agree
        rows.append({"id": f"c{n}", "judge": "careful", "left_run": "r0", "right_run": "r1", "left_item": "A",
                     "right_item": "B", "choice": "left", "elapsed_ms": 3000, "crop_id": "c0", "sitting": "s"})
        rows.append({"id": f"c{n}r", "judge": "careful", "left_run": "r1", "right_run": "r0", "left_item": "B",
                     "right_item": "A", "choice": "right", "elapsed_ms": 2800, "crop_id": "c0", "repeat_of": f"c{n}",
                     "sitting": "s"})
    for n in range(6):  # hasty: fast, and always presses "left", so every swapped repeat contradicts
        rows.append({"id": f"h{n}", "judge": "hasty", "left_run": "r0", "right_run": "r1", "left_item": "A",
                     "right_item": "B", "choice": "left", "elapsed_ms": 300, "crop_id": "c0", "sitting": "s"})
        rows.append({"id": f"h{n}r", "judge": "hasty", "left_run": "r1", "right_run": "r0", "left_item": "B",
                     "right_item": "A", "choice": "left", "elapsed_ms": 250, "crop_id": "c0", "repeat_of": f"h{n}",
                     "sitting": "s"})
    q = judge_quality(frame(rows)).set_index("judge")
    assert not q.loc["careful", "flag_fast"] and not q.loc["careful", "flag_inconsistent"]
    assert q.loc["careful", "contradictions"] == 0 and q.loc["careful", "repeats"] == 6
    assert q.loc["hasty", "flag_fast"] and q.loc["hasty", "flag_inconsistent"]
    assert q.loc["hasty", "contradiction_rate"] == 1.0 and q.loc["hasty", "left_rate"] == 1.0
    assert "median answer" in q.loc["hasty", "flags"]
    assert flagged_judges(q.reset_index()) == ["hasty"]
    # flagged, but still in the ranking unless left out on request
    r_all, r_ex = human_ranking(frame(rows), n_boot=0), human_ranking(frame(rows), n_boot=0, exclude_judges=["hasty"])
    assert r_all.n_judgements == 24 and r_ex.n_judgements == 12


# -- the asymmetry against people ---------------------------------------------------------------


@pytest.mark.parametrize("direction", [1, -1])
def test_human_asymmetry_recovers_the_sign_of_the_relation(direction):
    rng = np.random.default_rng(5)
    items, _ = grid_items()
    iqa = pd.Series({b: s for b, s in zip(BACKBONES, [0.9, 0.8, 0.7, 0.6])})
    # human strength of a backbone follows its IQA score (direction 1) or runs against it (-1)
    theta = {k: direction * 4 * (iqa[json_backbone(k)] - 0.75) + (0.3 if "vanilla" in k else 0.0) for k in items}
    ranking = human_ranking(simulated(theta, 1500, rng), n_boot=300)
    summary, ranks = human_asymmetry(ranking, iqa)
    row = summary.set_index("setting").loc["all judged settings"]
    assert row["n_backbones"] == 4 and row["spearman"] == direction and row["kendall"] == direction
    assert row["spearman_lo"] <= row["spearman"] <= row["spearman_hi"]
    assert (row["spearman_lo"] > 0) if direction == 1 else (row["spearman_hi"] < 0)
    assert set(summary["setting"]) == {"all judged settings", "no adversarial loss",
                                       "adversarial loss (all discriminators, weights)", "adversarial: vanilla_conv"}
    r = ranks[ranks["setting"] == "all judged settings"].set_index("backbone")
    assert r.loc["vgg16_r", "iqa_rank"] == 1 and r.loc["vgg16_r", "human_rank"] == (1 if direction == 1 else 4)
    # a backbone without an IQA score is named, not silently ranked
    s2, _ = human_asymmetry(ranking, iqa.drop("swin_t"))
    assert s2.iloc[0]["n_backbones"] == 3 and "swin_t (no IQA score)" in s2.iloc[0]["missing"]


def json_backbone(key: str) -> str:
    import json

    return json.loads(key)["fidelity.backbone"]


# -- evaluators against people ------------------------------------------------------------------


def test_evaluator_agreement_with_people():
    rng = np.random.default_rng(9)
    items, run_of = grid_items()
    quality = {run_of[k]: float(v) for k, v in zip(items, np.linspace(-2, 2, len(items)))}
    theta = {k: quality[run_of[k]] for k in items}
    df = simulated(theta, 600, rng)
    runs = pd.Index(sorted(quality), name="run_id")
    values = pd.DataFrame({
        "good": [quality[r] for r in runs],  # higher is better, ranks runs as people do
        "good_distance": [-quality[r] for r in runs],  # the same, as a lower-is-better distance
        "noise": rng.normal(size=len(runs)),
        "flat": np.zeros(len(runs)),  # cannot tell runs apart: every pair half
    }, index=runs)
    hb = {"good": True, "good_distance": False, "noise": True, "flat": True}
    a = evaluator_agreement(df, values, hb, n_boot=300).set_index("evaluator")
    n = int((df["choice"] != "same").sum())
    assert (a["n_pairs"] == n).all()
    assert a.loc["good", "agreement"] > 0.75 and a.loc["good", "agreement"] == a.loc["good_distance", "agreement"]
    assert a.loc["flat", "agreement"] == 0.5 and a.loc["flat", "evaluator_ties"] == n
    assert a.loc["good", "lo"] <= a.loc["good", "agreement"] <= a.loc["good", "hi"]
    assert a.loc["good", "lo"] > a.loc["flat", "agreement"]
    # reversing the direction flips agreement to its complement
    flipped = evaluator_agreement(df, values[["good"]], {"good": False}, n_boot=0).iloc[0]
    assert flipped["agreement"] == pytest.approx(1 - a.loc["good", "agreement"])
    # per-crop values: (run_id, crop_id) MultiIndex
    per_crop = pd.concat({c: values[["good"]] for c in ("c0", "c1", "c2", "c3")}, names=["crop_id"]).swaplevel().sort_index()
    pc = evaluator_agreement(df, per_crop, hb, n_boot=0).iloc[0]
    assert pc["agreement"] == pytest.approx(a.loc["good", "agreement"])
    # an evaluator built on a backbone does not judge pairs with a run trained on that backbone
    own = evaluator_agreement(df, values[["good"]], hb, n_boot=0, evaluator_backbones={"good": "vgg16_r"}).iloc[0]
    involved = df["left_item"].str.contains('"vgg16_r"') | df["right_item"].str.contains('"vgg16_r"')
    assert own["excluded_same_backbone"] == int((involved & (df["choice"] != "same")).sum()) > 0
    assert own["n_pairs"] == n - own["excluded_same_backbone"] and own["backbone"] == "vgg16_r"
    with pytest.raises(ValueError, match="no direction"):
        evaluator_agreement(df, values, {"good": True})


# -- active sampling ----------------------------------------------------------------------------


def test_active_sampling_spends_comparisons_where_the_order_is_in_doubt():
    rng = np.random.default_rng(2)
    items, run_of = grid_items()
    truth = dict(zip(items, np.linspace(-2.5, 2.5, len(items))))
    runs = {k: [run_of[k]] for k in items}
    crops = {r: ["c0", "c1", "c2"] for r in run_of.values()}
    item_of = {r: k for k, r in run_of.items()}
    df = empty_frame()
    shown = []
    for n in range(160):
        judge = ("ana", "ben")[n % 2]
        p = next_comparison(df, judge, runs, crops)
        li, ri = item_of[p.left_run], item_of[p.right_run]
        pl, pr, _ = bt.win_probabilities(truth[li], truth[ri], np.log(0.3))
        u = rng.random()
        choice = "left" if u < pl else ("right" if u < pl + pr else "same")
        if p.repeat_of is not None:
            orig = df.set_index("id").loc[p.repeat_of]
            assert (orig["left_run"], orig["right_run"], orig["crop_id"]) == (p.right_run, p.left_run, p.crop_id)
            assert orig["judge"] == judge
        df = pd.concat([df, frame([{"id": f"j{n}", "judge": judge, "left_run": p.left_run, "right_run": p.right_run,
                                     "left_item": li, "right_item": ri, "crop_id": p.crop_id, "choice": choice,
                                     "repeat_of": p.repeat_of, "created_at": f"{n:05d}", "elapsed_ms": 2000}])],
                       ignore_index=True)
        shown.append((li, ri, p.repeat_of is not None))
    # repeats: every REPEAT_EVERY-th comparison of each judge
    per_judge = df.groupby("judge")["repeat_of"].apply(lambda s: s.notna().sum())
    assert (per_judge == 80 // REPEAT_EVERY).all()
    # comparisons concentrate on neighbours in the true order (uniform sampling: 7 of 28 pairs = 25 %)
    rank = {k: i for i, k in enumerate(items)}
    gaps = np.array([abs(rank[a] - rank[b]) for a, b, rep in shown if not rep])
    assert (gaps == 1).mean() > 0.45, np.bincount(gaps)
    # both orders: every pair shown more than once was shown both ways, and about as often
    # (each judge alternates, so the two orders differ by at most one per judge)
    ordered = Counter((a, b) for a, b, _ in shown)
    twice = [(a, b) for (a, b) in ordered if a < b and ordered[(a, b)] + ordered[(b, a)] >= 2]
    assert twice and all(ordered[(a, b)] and ordered[(b, a)] for a, b in twice)
    assert all(abs(ordered[(a, b)] - ordered[(b, a)]) <= 2 for a, b in twice)
    # the current posterior puts far-apart pairs at near-zero score
    scores = pair_scores(df, items)
    far = scores[(scores["i"] == 0) & (scores["j"] == len(items) - 1)].iloc[0]
    near = scores.sort_values("score", ascending=False).iloc[0]
    assert far["p_wrong"] < 0.01 < near["p_wrong"]


def test_sampling_needs_two_settings_with_crops():
    items, run_of = grid_items()
    runs = {k: [run_of[k]] for k in items[:2]}
    with pytest.raises(ValueError, match="at least 2 settings"):
        next_comparison(empty_frame(), "ana", runs, {run_of[items[0]]: ["c0"]})
    # two settings with crops but none in common
    with pytest.raises(ValueError, match="share a crop"):
        next_comparison(empty_frame(), "ana", runs, {run_of[items[0]]: ["c0"], run_of[items[1]]: ["c1"]})
    p = next_comparison(empty_frame(), "ana", runs, {run_of[items[0]]: ["c0", "c1"], run_of[items[1]]: ["c1"]})
    assert p.crop_id == "c1" and {p.left_run, p.right_run} == {run_of[items[0]], run_of[items[1]]}
    assert list(itertools.islice(iter(runs), 1))


def test_what_people_saw_section():
    from raygrid.judge import what_people_saw

    empty = what_people_saw(empty_frame(), experiment="demo")
    assert not empty.collected and "python -m raygrid.judge --experiment demo" in empty.notes[0]
    rng = np.random.default_rng(4)
    items, run_of = grid_items()
    theta = {k: float(v) for k, v in zip(items, np.linspace(-1, 1, len(items)))}
    df = simulated(theta, 300, rng)
    df.loc[df["judge"] == "d", "elapsed_ms"] = 200  # one hasty judge
    iqa = pd.Series(dict(zip(BACKBONES, [0.6, 0.7, 0.8, 0.9])))
    values = pd.DataFrame({"good": [theta[k] for k in items]}, index=[run_of[k] for k in items])
    people = what_people_saw(df, iqa_scores=iqa, evaluator_values=values, higher_better={"good": True}, n_boot=100)
    assert people.collected and people.n_judgements == 300 and people.judges == 4
    assert people.quality.set_index("judge").loc["d", "flag_fast"] and people.excluded == []
    assert people.ranking.n_judgements == 300 and people.asymmetry[0]["spearman"].notna().all()
    assert people.agreement.iloc[0]["agreement"] > 0.5
    strict = what_people_saw(df, exclude_flagged=True, n_boot=0)
    assert strict.excluded == ["d"] and strict.ranking.n_judgements == int((df["judge"] != "d").sum())
    assert strict.asymmetry is None and strict.agreement is None
