"""The report's sections: `fill(report, section)` functions (raygrid.analysis.report.build)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from raygrid import spec as catalog
from raygrid.analysis import figures as F
from raygrid.analysis import load, outcomes, stats, tables
from raygrid.analysis.report import samples as S
from raygrid.analysis.report.html import (
    MISSING,
    ci,
    fmt_value,
    html_table,
    img_tag,
    items,
    paragraph,
)

COUNT_COLUMNS = [("n_compared", "compared"), ("n_collapsed", "collapsed"), ("n_diverged", "diverged"),
                 ("n_stopped", "stopped"), ("n_failed", "failed"), ("status", "status")]


def overview(r, sec) -> None:
    data = r.data
    ov = outcomes.trial_overview(data)
    r.csv("trials_overview.csv", ov)
    sec.add(paragraph(f"Experiment {data.experiment!r} in {data.tracking_uri}; sweep run(s): "
                      f"{', '.join(data.sweep_run_ids) or 'none found'}. Each stage is compared at one step; "
                      "trials that did not reach it are listed under 'Trials not compared', never averaged in."))
    sec.add(html_table(ov, status_col=None))
    for _, row in ov.iterrows():
        if row["trials"] == 0:
            sec.notes.append(f"Stage {row['stage']}: no trials in MLflow and none planned — its sections are empty.")
        elif row[outcomes.NOT_RUN] == row["trials"]:
            sec.notes.append(f"Stage {row['stage']}: planned but never started ({row['trials']} trials).")
    sec.notes += data.notes


def assess(r, sec) -> None:
    table = r.assessment
    r.csv("assessment.csv", table)
    if table.empty:
        sec.notes.append("No assess trials: the IQA side of the asymmetry is missing.")
        return
    units = sorted(set(table["resampled"].dropna()) - {""})
    none = [u for u in units if u.startswith("no interval")]
    units = [u for u in units if u not in none]
    sec.add(paragraph("SRCC / PLCC of each fidelity measure (quality = the oriented distance) against the human "
                      "scores, per benchmark; hover a cell for the 95% intervals. The bootstrap resamples "
                      f"{' / '.join(units) or 'nothing'}: the unit is the reference image, since all pairs of a "
                      "reference share its content. 'mean' is over the benchmarks of the row."
                      + (f" Some cells have no interval ({'; '.join(u.removeprefix('no interval: ') for u in none)}): "
                         "a bootstrap over so few references says nothing about others." if none else "")))
    for variant in sorted(table["variant"].dropna().unique(), key=lambda v: (v != "uniform", v)):
        sec.add(f"<h3>α/β: {html.escape(variant)}</h3>")
        sec.add(_assess_pivot(table[table["variant"] == variant]))


def _assess_pivot(sub: pd.DataFrame) -> str:
    order = list(catalog.BENCHMARKS)
    benches = sorted(sub["benchmark"].dropna().unique(), key=lambda b: order.index(b) if b in order else 99)
    head = "".join(f"<th>{html.escape(catalog.BENCHMARKS[b].label if b in catalog.BENCHMARKS else b)}</th>"
                   for b in benches)
    rows = []
    for b in sorted(sub["backbone"].dropna().unique(), key=tables.backbone_order_key):
        cells = []
        for bench in benches:
            hit = sub[(sub["backbone"] == b) & (sub["benchmark"] == bench)]
            if hit.empty or not np.isfinite(hit["srcc"].iloc[0]):
                status = hit["status"].iloc[0] if len(hit) else "not in the grid"
                cells.append(f'<td class="na" title="{html.escape(status)}">{MISSING} <small>{html.escape(status)}</small></td>')
                continue
            x = hit.iloc[0]
            tip = (f"SRCC {ci(x['srcc'], x['srcc_lo'], x['srcc_hi'])}; PLCC {ci(x['plcc'], x['plcc_lo'], x['plcc_hi'])}; "
                   f"{fmt_value(x['n_pairs'], '{:.0f}')} pairs of {fmt_value(x['n_refs'], '{:.0f}')} references")
            cells.append(f'<td title="{html.escape(tip)}">{x["srcc"]:.3f} / {x["plcc"]:.3f}</td>')
        mean = sub[sub["backbone"] == b][["srcc", "plcc"]].mean()
        cells.append(f"<td><b>{fmt_value(mean['srcc'])} / {fmt_value(mean['plcc'])}</b></td>")
        rows.append(f"<tr><th>{html.escape(F.label(b))}</th>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr><th>backbone</th>{head}<th>mean</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def optimize(r, sec) -> None:
    table = r.optimization
    r.csv("optimization.csv", table)
    if table.empty:
        sec.notes.append("No optimize trials: the optimization side of the asymmetry is missing.")
        return
    info = r.evaluators.set_index("evaluator") if len(r.evaluators) else pd.DataFrame()
    pooled = [e for e in tables.pooled_evaluators(table)]
    if not pooled:
        sec.notes.append(f"No optimize trial reached the common step with test results ({len(table)} cells; see status).")
    rep = r.data.report.get("optimize")
    sec.add(paragraph(f"Each row: a fidelity loss and adversarial setting; values: the evaluator panel on the test sets "
                      f"(every test image; per-set values in optimization.csv) at {rep.describe() if rep else '—'}, "
                      "mean over the compared seeds. Cells marked * are judged by an evaluator built on the loss's own "
                      "backbone (left out of that loss's ranking). Trials that stopped, collapsed, diverged or failed "
                      "before the common step are counted per cell, not averaged in."))
    known = [e for e in pooled if e in info.index]
    if missing := [e for e in pooled if e not in info.index]:
        sec.notes.append(f"No evaluator record for {', '.join(missing)}: its direction is unknown, it is shown but not ranked.")
    panel = [(e, not bool(info.at[e, "higher_better"]), _str(info.at[e, "evaluator_backbone"])) for e in known]
    png = F.optimization_heatmap(table, panel)
    if png:
        r.files["optimization_heatmap.png"] = png
    sec.add(img_tag(png, "Optimization grid heatmap", "optimization_heatmap"))
    arrow = {e: (" ↑" if info.at[e, "higher_better"] else " ↓") if e in info.index else "" for e in pooled}
    cols = [("backbone", "fidelity loss"), ("discriminator", "discriminator"), ("adv_weight", "λ_adv", "{:g}"),
            ("alpha_beta", "α/β")] + [(c, c[5:]) for c in table.columns if c.startswith("axis:")] + \
        [(f"test/{e}", e + arrow[e]) for e in pooled] + [("step", "step", "{:.0f}")] + COUNT_COLUMNS
    own = {e: _str(info.at[e, "evaluator_backbone"]) for e in known}
    sec.add(html_table(table, cols, flag=lambda row, c: c.startswith("test/") and own.get(c[5:]) == row["backbone"]))
    if len(r.evaluators):
        sec.add("<h3>The evaluators (from the runs' evaluator records)</h3>")
        sec.add(html_table(r.evaluators, [("evaluator", "evaluator"), ("family", "family"), ("mode", "mode"),
                                          ("higher_better", "higher is better"), ("evaluator_backbone", "built on"),
                                          ("independent", "independent panel")], status_col=None))


def _str(v) -> str | None:
    return v if isinstance(v, str) else None


ASYM_COLUMNS = [("iqa_variant", "IQA α/β"), ("setting", "optimization setting"), ("n_backbones", "backbones"),
                ("rho", "Spearman ρ [95% CI]"), ("spearman_p", "p", "{:.3f}"), ("tau", "Kendall τ [95% CI]"),
                ("kendall_p", "p", "{:.3f}"), ("conclusion", "conclusion"), ("n_evaluators", "evaluators"),
                ("n_images", "test images"), ("n_seeds", "seeds"), ("missing", "not ranked")]


def asymmetry(r, sec) -> None:
    res = r.asymmetry
    sec.notes += res.notes
    r.csv("asymmetry.csv", res.summary)
    r.csv("asymmetry_ranks.csv", res.ranks)
    if res.summary.empty:
        return
    s = res.summary.assign(rho=[ci(x.spearman, x.spearman_lo, x.spearman_hi) for x in res.summary.itertuples()],
                           tau=[ci(x.kendall, x.kendall_lo, x.kendall_hi) for x in res.summary.itertuples()])
    main = s[(s["panel"] == stats.PANELS[0]) & (s["generator"] == stats.ALL)]
    sec.add(paragraph("Spearman ρ and Kendall τ between each fidelity backbone's IQA rank (mean SRCC over the benchmarks "
                      "every backbone has) and its optimization rank (its mean rank over the evaluators, each "
                      "evaluator's ranks averaged over the test sets). ρ = +1: the best IQA measure is the best loss; "
                      "ρ < 0: the asymmetry. An evaluator built on a run's loss backbone or discriminator trunk never "
                      "judges that run. Each IQA α/β is paired only with losses trained with the same α/β."))
    if len(main):
        sec.add(paragraph(f"What the interval resamples: {main.iloc[0]['resampled']}."))
    variants = list(dict.fromkeys(main["iqa_variant"]))
    if variants:
        ranks = res.ranks[(res.ranks["panel"] == stats.PANELS[0]) & (res.ranks["generator"] == stats.ALL)]
        settings = list(dict.fromkeys(main["setting"]))[:2]
        png = F.rank_scatter(res.summary[(res.summary["panel"] == stats.PANELS[0]) & (res.summary["generator"] == stats.ALL)],
                             ranks, variants[0], settings)
        if png:
            r.files["asymmetry_scatter.png"] = png
        sec.add(img_tag(png, f"IQA rank vs optimization rank (IQA: {variants[0]})", "asymmetry_scatter"))
    sec.add(html_table(main, ASYM_COLUMNS, status_col=None))
    indep = s[(s["panel"] == stats.PANELS[1]) & (s["generator"] == stats.ALL)]
    sec.add("<h3>Robustness: judged by the independent panel only</h3>")
    sec.add(paragraph("The same statistic with no DISTS-style measure among the judges: only the no-reference models and "
                      "the measures without a learned backbone (PSNR/SSIM). 'flips' says whether the conclusion changes."))
    sec.add(html_table(indep, ASYM_COLUMNS[:8] + [("flips", "flips"), ("evaluators", "evaluators")], status_col=None))
    if res.split:
        per = s[(s["panel"] == stats.PANELS[0]) & (s["generator"] != stats.ALL)]
        sec.add(f"<h3>Per {html.escape(res.split)}</h3>")
        sec.add(html_table(per, [("generator", res.split)] + ASYM_COLUMNS[:8], status_col=None))
    if res.lines:
        sec.add(items(res.lines))
    if variants:
        sec.add(f"<h3>Per-backbone ranks (IQA: {html.escape(variants[0])})</h3>")
        sub = ranks[(ranks["iqa_variant"] == variants[0]) & ranks["setting"].isin(settings)]
        wide = _rank_pivot(sub, settings)
        sec.add(html_table(wide, [(c, c, "{:g}" if "rank" in c or "shift" in c else None) for c in wide.columns],
                           status_col=None))
        sec.add(paragraph("Rank shift = optimization rank − IQA rank: > 0, the measure is a worse loss than its IQA rank "
                          "suggests. [lo, hi]: the 95% bootstrap interval of the optimization rank."))


def _rank_pivot(ranks: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    rows = []
    for b in sorted(ranks["backbone"].unique(), key=tables.backbone_order_key):
        g = ranks[ranks["backbone"] == b]
        first = g.iloc[0]
        row = {"backbone": F.label(b), "IQA score": first.get("iqa_score"), "IQA rank": first.get("iqa_rank")}
        for setting in settings:
            hit = g[g["setting"] == setting]
            if hit.empty:
                continue
            h, short = hit.iloc[0], ("no adv." if setting == stats.NO_ADV else "adv.")
            row[f"opt. rank ({short})"] = h.get("opt_rank")
            row[f"[lo, hi] ({short})"] = f"[{fmt_value(h.get('opt_rank_lo'), '{:g}')}, {fmt_value(h.get('opt_rank_hi'), '{:g}')}]"
            row[f"shift ({short})"] = h.get("rank_shift")
        row["note"] = "; ".join(sorted({n for n in g["note"] if isinstance(n, str) and n}))
        rows.append(row)
    return pd.DataFrame(rows)


def discriminators(r, sec) -> None:
    table = r.discriminators
    r.csv("discriminators.csv", table)
    if table.empty:
        sec.notes.append("No optimize results with evaluator records at the common step: the designs cannot be ranked.")
        return
    sec.add(paragraph("Per fidelity loss: discriminator designs ranked by their mean rank over the evaluators (each "
                      "design's test values averaged over its adversarial weights and seeds; 'none' included). Left out "
                      "of a loss's ranking: every evaluator sharing a trunk with the loss or with any design's "
                      "discriminator ('left out'). 'gain' = design − none over every test image, > 0 is better."))
    gains = [c for c in table.columns if c.startswith("gain ")]
    cols = [("backbone", "fidelity loss")] + [(c, c[5:]) for c in table.columns if c.startswith("axis:")] + \
        [("discriminator", "discriminator"), ("head", "head"), ("trunk", "trunk"), ("n_weights", "weights"),
         ("n_runs", "runs"), ("n_evaluators", "evaluators"), ("mean_rank", "mean rank", "{:.2f}"),
         ("rank", "rank", "{:g}"), ("left_out", "left out")] + [(g, g, "{:+.3f}") for g in gains]
    sec.add(html_table(table, cols, status_col=None))


def transfer(r, sec) -> None:
    table = r.transfer
    r.csv("transfer.csv", table)
    if table.empty:
        sec.notes.append("No transfer trials.")
        return
    diffs = r.transfer_differences
    r.csv("transfer_differences.csv", diffs)
    png = F.transfer_bars(table)
    if png:
        r.files["transfer.png"] = png
    sec.add(img_tag(png, "IQA transfer by initialisation", "transfer"))
    rep = r.data.report.get("transfer")
    sec.add(paragraph(f"Test SRCC/PLCC of each IQA model at {rep.describe() if rep else '—'}; intervals resample the test "
                      "benchmark's reference images (FR) or images (NR). Mean over the compared seeds."))
    axes = [(c, c[5:]) for c in table.columns if c.startswith("axis:")]
    sec.add(html_table(table, [("backbone", "backbone"), ("kind", "kind"), ("train_set", "train"), ("test_set", "test"),
                               ("init", "init")] + axes +
                       [("srcc", "SRCC"), ("srcc_lo", "lo"), ("srcc_hi", "hi"), ("srcc_sd", "sd (seeds)"),
                        ("plcc", "PLCC"), ("plcc_lo", "lo"), ("plcc_hi", "hi"), ("source", "discriminator from")]
                       + COUNT_COLUMNS))
    sec.add("<h3>Differences between initialisations</h3>")
    sec.add(html_table(diffs, [("comparison", "comparison"), ("backbone", "backbone"), ("metric", "metric"),
                               ("diff", "mean difference"), ("ci_lo", "CI lo"), ("ci_hi", "CI hi"),
                               ("n_cells", "paired cells"), ("ci_method", "interval")], status_col=None))


def people(r, sec) -> None:
    saw = r.people
    if not saw.collected:
        sec.add(paragraph(saw.notes[0]))
        return
    sec.notes += saw.notes[1:] if saw.notes and saw.notes[0].startswith("No human") else saw.notes
    sec.add(paragraph(f"{saw.n_judgements} paired comparisons by {saw.judges} judge(s): which of two SR crops looks "
                      "closer to the reference. Intervals: a crossed bootstrap over judges and crops."))
    if saw.quality is not None:
        r.csv("judges.csv", saw.quality)
        flagged = saw.quality[saw.quality["flags"] != ""]
        for _, q in flagged.iterrows():
            sec.notes.append(f"judge {q['judge']} is flagged (counted): {q['flags']}")
    if saw.ranking is not None:
        t = saw.ranking.table.assign(strength_ci=[ci(x.strength, x.strength_lo, x.strength_hi)
                                                  for x in saw.ranking.table.itertuples()])
        r.csv("human_ranking.csv", saw.ranking.table)
        sec.add("<h3>The human ranking of the optimize settings</h3>")
        sec.add(html_table(t, [("rank", "rank"), ("label", "setting"), ("strength_ci", "strength [95% CI]"),
                               ("rank_lo", "rank lo", "{:g}"), ("rank_hi", "rank hi", "{:g}"), ("n", "comparisons"),
                               ("wins", "wins"), ("ties", "same"), ("losses", "losses")], status_col=None))
    if saw.asymmetry is not None:
        summary, _ = saw.asymmetry
        r.csv("human_asymmetry.csv", summary)
        sec.add("<h3>The asymmetry against people</h3>")
        sec.add(paragraph("IQA rank vs the human-judged optimization rank of the fidelity backbones."))
        sec.add(html_table(summary.assign(rho=[ci(x.spearman, x.spearman_lo, x.spearman_hi) for x in summary.itertuples()]),
                           [("setting", "setting"), ("n_backbones", "backbones"), ("rho", "Spearman ρ [95% CI]"),
                            ("spearman_p", "p", "{:.3f}"), ("missing", "not ranked")], status_col=None))
    if saw.agreement is not None:
        r.csv("evaluator_agreement.csv", saw.agreement)
        sec.add("<h3>How often each evaluator prefers what people preferred</h3>")
        sec.add(html_table(saw.agreement, [("evaluator", "evaluator"), ("backbone", "built on"), ("n_pairs", "pairs"),
                                           ("agreement", "agreement"), ("lo", "lo"), ("hi", "hi"),
                                           ("excluded_same_backbone", "pairs left out (own loss)")], status_col=None))


def curves(r, sec) -> None:
    data = r.data
    reps = S.representative_runs(data, r.opts.max_curve_runs)
    rep = data.report.get("optimize")
    sel = [rep.selection[0]] if rep and rep.selection else []
    if reps.empty:
        sec.notes.append("No compared optimize run: no optimize curves.")
    else:
        keys = sel + ["loss/g_fidelity", "loss/g_adversarial", "loss/d", "d/real_acc", "d/fake_acc"]
        hist = load.metric_histories(data, list(reps["run_id"]), keys)
        png = F.training_curves(hist, {x["run_id"]: S.run_name(x) for _, x in reps.iterrows()}, keys,
                                "optimize: a representative run per fidelity loss, without and with an adversarial loss")
        if png:
            r.files["curves_optimize.png"] = png
        sec.add(img_tag(png, "optimize training curves", "curves_optimize"))
    tr = tables.runs(data, "transfer", tables.TRANSFER_KEYS)
    tr = tr[tr["compared"]].drop_duplicates(["backbone", "init"]) if len(tr) else tr
    if tr.empty:
        sec.notes.append("No compared transfer run: no transfer curves.")
        return
    trep = data.report.get("transfer")
    keys = ([trep.selection[0]] if trep and trep.selection else []) + ["loss/train"]
    hist = load.metric_histories(data, list(tr["run_id"]), keys)
    png = F.training_curves(hist, {x["run_id"]: f"{x['backbone']} {x['init']} s{fmt_value(x['seed'])}"
                                   for _, x in tr.iterrows()}, keys, "transfer: one run per backbone and initialisation")
    if png:
        r.files["curves_transfer.png"] = png
    sec.add(img_tag(png, "transfer training curves", "curves_transfer"))


def samples(r, sec) -> None:
    if not r.opts.samples:
        sec.notes.append("SR samples were not requested (samples=False).")
        return
    reps = S.representative_runs(r.data, r.opts.max_sample_runs)
    if reps.empty:
        sec.notes.append("No compared optimize run: no SR samples.")
        return
    tiles, notes = S.sr_sample_tiles(r.data, reps, S.data_root(r.data, r.opts.data_root))
    sec.notes += notes
    png = F.image_strip(tiles, "Centre crop of the first test image: LR (nearest ×4), SR of each run (EMA generator, "
                               f"{r.data.report['optimize'].checkpoint} checkpoint), HR")
    if png:
        r.files["samples.png"] = png
    sec.add(img_tag(png, "SR samples", "samples"))


def not_compared(r, sec) -> None:
    miss = outcomes.not_compared(r.data)
    r.csv("not_compared.csv", miss)
    if miss.empty:
        sec.add(paragraph("Every planned trial reached its stage's common step."))
        return
    sec.add(paragraph(f"{len(miss)} trial(s) did not reach their stage's common step: each is listed with its outcome and "
                      f"never averaged into a table or a ranking (their cells count them and show {MISSING} when empty)."))
    sec.add(html_table(miss, [("stage", "stage"), ("why", "outcome"), ("point", "grid point"), ("run_id", "MLflow run")],
                       status_col=None))
