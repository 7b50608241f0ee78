"""The sweep report: one self-contained HTML page, plus the tables as CSV and figures as PNG.

    build_report(experiment, tracking_uri=..., sweep_run_id=..., out_dir=...) -> path of index.html

Data flows one way: MLflow → `sweep_data.load_sweep` (pandas) → tables and statistics
(`asymmetry`) → figures (`figures`) → HTML (the template `raygrid/templates/report.html`, package
data). The page needs
no network: CSS is inline and figures are base64 PNG data URIs. With a sweep run id, the output folder is also logged
as artifacts of that run (under `report/`).

The sweep runner calls this after its last stage, before it closes the sweep run; a report must
not take the sweep down, so each section catches its own errors and states them on the page
(where a test then finds them). Missing parts (a stage that did not run, failed trials, absent
checkpoints) are stated, never silently skipped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import string
import tempfile
import traceback
from collections.abc import Callable
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid import spec as catalog
from raygrid.analysis import asymmetry as A
from raygrid.analysis import figures as F
from raygrid.analysis.sweep_data import (
    NOT_RUN,
    SweepData,
    _json_list,
    _to_float,
    download_artifact,
    download_text,
    load_sweep,
)
from raygrid.spec import mlflow as tracking

MISSING = "—"


@dataclass
class Section:
    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, fragment: str | None) -> None:
        if fragment:
            self.parts.append(fragment)

    def render(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        notes_html = f'<ul class="notes">{notes}</ul>' if notes else ""
        return f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>{notes_html}{"".join(self.parts)}</section>'


# =============================================================================================
# HTML helpers
# =============================================================================================


def fmt_value(v: Any, fmt: str | None = None) -> str:
    """One cell's text: NaN/None → "—"; `fmt` (a format spec like "{:g}") when given."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if fmt is not None and isinstance(v, (int, float, np.integer, np.floating)):
        return fmt.format(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"
    return str(v)


Column = tuple  # (column, header) or (column, header, format spec)


def html_table(df: pd.DataFrame, columns: list[Column] | None = None,
               flag: Callable[[pd.Series, str], bool] | None = None,
               status_col: str | None = "status") -> str:
    """A DataFrame as an HTML table; NaN → "—". `flag(row, col)` marks a cell (e.g. an evaluator
    that shares the loss's backbone); rows whose status is not "ok" are shaded."""
    if df is None or df.empty:
        return '<p class="missing">No rows.</p>'
    columns = [c if len(c) == 3 else (c[0], c[1], None) for c in (columns or [(c, c) for c in df.columns])]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for _, row in df.iterrows():
        cls = ""
        if status_col and status_col in row and isinstance(row[status_col], str) and row[status_col] != "ok":
            cls = ' class="incomplete"'
        cells = []
        for c, _, spec in columns:
            v = row.get(c)
            text = html.escape(fmt_value(v, spec))
            klass = []
            if text == MISSING:
                klass.append("na")
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                klass.append("num")
            if flag is not None and flag(row, c):
                klass.append("flag")
                text += "<sup>*</sup>"
            cells.append(f'<td class="{" ".join(klass)}">{text}</td>' if klass else f"<td>{text}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def img_tag(png: bytes | None, alt: str, name: str) -> str:
    if not png:
        return f'<p class="missing">No figure: {html.escape(alt)} (no data).</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" data-name="{name}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


# =============================================================================================
# The report
# =============================================================================================


@dataclass
class ReportOptions:
    checkpoint: str = "best"
    exclude_same_backbone: bool = True
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95
    samples: bool = True
    data_root: str | None = None
    max_sample_runs: int = 12
    max_curve_runs: int = 12


def build_report(experiment_name: str, tracking_uri: str | None = None, sweep_run_id: str | None = None,
                 out_dir: str | None = None, **options: Any) -> str:
    """Analyse a sweep from MLflow and write `<out_dir>/index.html` (+ CSV, PNG); returns its path.

    options: the fields of ReportOptions (checkpoint "best"|"final", exclude_same_backbone,
    n_boot, seed, level, samples, data_root, ...).
    """
    opts = ReportOptions(**options)
    out = Path(out_dir or f"raygrid-report-{experiment_name}").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = load_sweep(experiment_name, tracking_uri, sweep_run_id, checkpoint=opts.checkpoint)
    files: dict[str, bytes] = {}
    sections = _sections(data, opts, files)

    for name, blob in files.items():
        (out / name).write_bytes(blob)
    page = _render(data, sections, opts)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    if sweep_run_id:
        tracking.client(data.tracking_uri).log_artifacts(sweep_run_id, str(out), "report")
    return str(index)


def _guard(section: Section, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 — one broken part must not lose the whole report
        section.notes.append(f"{what} could not be produced: {type(exc).__name__}: {exc}")
        section.add(f'<pre class="error">{html.escape(traceback.format_exc(limit=4))}</pre>')


def _csv(files: dict[str, bytes], name: str, df: pd.DataFrame) -> None:
    files[name] = df.to_csv(index=False).encode()


def _sections(data: SweepData, opts: ReportOptions, files: dict[str, bytes]) -> list[Section]:
    ov = Section("overview", "Overview")
    assess = Section("assess", "1. Fidelity measures as IQA models (assess)")
    optim = Section("optimize", "2. Fidelity measures as losses (optimize)")
    asym = Section("asymmetry", "3. The asymmetry: IQA rank vs optimization rank")
    disc = Section("discriminators", "4. Discriminator designs")
    transfer = Section("transfer", "5. Discriminators as IQA initialisations (transfer)")
    curves = Section("curves", "6. Training curves of the best trials")
    samples = Section("samples", "7. SR samples")
    missing = Section("missing", "Missing and failed trials")
    methods = Section("methods", "How the numbers are computed")
    ctx: dict[str, Any] = {}

    _guard(ov, "the overview", lambda: _overview(data, ov, files))
    _guard(assess, "the assessment table", lambda: _assess(data, assess, files, ctx))
    _guard(optim, "the optimization table", lambda: _optimize(data, optim, files, ctx, opts))
    _guard(asym, "the asymmetry statistics", lambda: _asymmetry(asym, files, ctx, opts))
    _guard(disc, "the discriminator table", lambda: _discriminators(disc, files, ctx, opts))
    _guard(transfer, "the transfer tables", lambda: _transfer(data, transfer, files, opts))
    _guard(curves, "the training curves", lambda: _curves(data, curves, files, opts))
    if opts.samples:
        _guard(samples, "the SR samples", lambda: _samples(data, samples, files, opts))
    else:
        samples.notes.append("SR samples were not requested (samples=False).")
    _guard(missing, "the list of missing trials", lambda: _missing(data, missing, files))
    methods.add(_methods_html(data, opts))
    return [ov, assess, optim, asym, disc, transfer, curves, samples, missing, methods]


# -- overview -----------------------------------------------------------------------------------


def _overview(data: SweepData, sec: Section, files: dict[str, bytes]) -> None:
    overview = A.trial_overview(data)
    _csv(files, "trials_overview.csv", overview)
    sec.add(paragraph(f"Experiment {data.experiment!r} in {data.tracking_uri}; sweep run(s): "
                      f"{', '.join(data.sweep_run_ids) or 'none found'}; values at the "
                      f"{'best' if data.checkpoint == 'best' else 'final'} checkpoint."))
    sec.add(html_table(overview, status_col=None))
    for stage, row in overview.set_index("stage").iterrows():
        if row["trials"] == 0:
            sec.notes.append(f"Stage {stage}: no trials in MLflow and none planned — its sections are empty.")
        elif row[NOT_RUN] == row["trials"]:
            sec.notes.append(f"Stage {stage}: planned but never started ({row['trials']} trials).")
    sec.notes += data.notes


# -- assess -------------------------------------------------------------------------------------


def _assess(data: SweepData, sec: Section, files: dict[str, bytes], ctx: dict[str, Any]) -> None:
    table = A.assessment_table(data)
    ctx["assess"] = table
    _csv(files, "assessment.csv", table)
    if table.empty:
        sec.notes.append("No assess trials: the IQA side of the asymmetry is missing.")
        return
    sec.add(paragraph("SRCC / PLCC of each fidelity measure (quality = −distance) against MOS, per benchmark; "
                      "hover a cell for the bootstrap intervals over the benchmark's images. "
                      "'mean' is the mean over the benchmarks the row has (see the asymmetry section "
                      "for the ranking on common benchmarks)."))
    for variant in sorted(table["variant"].dropna().unique(), key=lambda v: (v != "uniform", v)):
        sub = table[table["variant"] == variant]
        sec.add(f"<h3>α/β: {html.escape(variant)}</h3>")
        sec.add(_assess_pivot(sub))


def _assess_pivot(sub: pd.DataFrame) -> str:
    benches = sorted(sub["benchmark"].dropna().unique(), key=lambda b: list(catalog.BENCHMARKS).index(b)
                     if b in catalog.BENCHMARKS else 99)
    head = "".join(f"<th>{html.escape(catalog.BENCHMARKS[b].label if b in catalog.BENCHMARKS else b)}</th>" for b in benches)
    rows = []
    for b in sorted(sub["backbone"].dropna().unique(), key=A.backbone_order_key):
        cells = []
        for bench in benches:
            hit = sub[(sub["backbone"] == b) & (sub["benchmark"] == bench)]
            if hit.empty or not np.isfinite(hit["srcc"].iloc[0]):
                status = hit["status"].iloc[0] if len(hit) else "not in the grid"
                cells.append(f'<td class="na" title="{html.escape(status)}">{MISSING} <small>{html.escape(status)}</small></td>')
                continue
            r = hit.iloc[0]
            tip = (f"SRCC {r['srcc']:.3f} [{r['srcc_lo']:.3f}, {r['srcc_hi']:.3f}]; "
                   f"PLCC {r['plcc']:.3f} [{r['plcc_lo']:.3f}, {r['plcc_hi']:.3f}]; n={fmt_value(r['n'])}")
            cells.append(f'<td title="{html.escape(tip)}">{r["srcc"]:.3f} / {r["plcc"]:.3f}</td>')
        mean = sub[sub["backbone"] == b][["srcc", "plcc"]].mean()
        cells.append(f"<td><b>{fmt_value(mean['srcc'])} / {fmt_value(mean['plcc'])}</b></td>")
        rows.append(f"<tr><th>{html.escape(F.label(b))}</th>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr><th>backbone</th>{head}<th>mean</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


# -- optimize -----------------------------------------------------------------------------------


def _optimize(data: SweepData, sec: Section, files: dict[str, bytes], ctx: dict[str, Any], opts: ReportOptions) -> None:
    table = A.optimization_table(data)
    ctx["optimize"] = table
    _csv(files, "optimization.csv", table)
    if table.empty:
        sec.notes.append("No optimize trials: the optimization side of the asymmetry is missing.")
        return
    pooled = A.pooled_evaluators(table)
    if not pooled:
        sec.notes.append(f"No optimize trial has validation results yet ({len(table)} configurations planned; "
                         "see the status column).")
    known = list(table["backbone"].dropna().unique())
    info = {e: A.evaluator_info(e, known) for e in pooled}
    metric, mode = data.selection("optimize")
    which = "best checkpoint (by " + metric + f", {mode})" if data.checkpoint == "best" else "final checkpoint"
    sec.add(paragraph(f"Each row: a fidelity loss and adversarial setting; values are the SR evaluator panel on the "
                      f"validation sets (pooled over sets; per-set values are in optimization.csv) at the {which}, "
                      f"mean over seeds. Cells marked * are judged by the evaluator built on the loss's own backbone."))
    png = F.optimization_heatmap(table, [(e, info[e].lower_better, info[e].backbone) for e in pooled])
    if png:
        files["optimization_heatmap.png"] = png
    sec.add(img_tag(png, "Optimization grid heatmap", "optimization_heatmap"))
    cols = [("backbone", "fidelity loss"), ("discriminator", "discriminator"), ("adv_weight", "λ_adv", "{:g}")] + \
        [(c, c) for c in table.columns if c.startswith("axis:")] + \
        [(f"val/{e}", e + (" ↓" if info[e].lower_better else " ↑")) for e in pooled] + \
        [("n_seeds", "seeds"), ("step", "step", "{:.0f}"), ("status", "status")]
    sec.add(html_table(table, cols, flag=lambda row, c: c.startswith("val/") and
                       info.get(c[4:], None) is not None and info[c[4:]].backbone == row["backbone"]))


# -- asymmetry ----------------------------------------------------------------------------------


def _asymmetry(sec: Section, files: dict[str, bytes], ctx: dict[str, Any], opts: ReportOptions) -> None:
    assess, opt = ctx.get("assess"), ctx.get("optimize")
    if assess is None or opt is None or assess.empty or opt.empty:
        sec.notes.append("Not computed: it needs both assess and optimize results "
                         f"(assess: {'missing' if assess is None or assess.empty else 'present'}, "
                         f"optimize: {'missing' if opt is None or opt.empty else 'present'}).")
        return
    res = A.asymmetry(assess, opt, exclude_same_backbone=opts.exclude_same_backbone, n_boot=opts.n_boot,
                      seed=opts.seed, level=opts.level)
    ctx["asymmetry"] = res
    sec.notes += res.notes
    _csv(files, "asymmetry.csv", res.summary)
    _csv(files, "asymmetry_ranks.csv", res.ranks)
    if res.summary.empty:
        return
    variants = list(res.summary["iqa_variant"].unique())
    main = "uniform" if "uniform" in variants else variants[0]
    settings = list(dict.fromkeys(res.summary["setting"]))
    sec.add(paragraph(
        "Spearman ρ and Kendall τ between each fidelity backbone's IQA rank (mean SRCC over common benchmarks) "
        "and its optimization rank (mean rank of its SR outputs over evaluator × validation-set cells"
        + (", leaving out the evaluator built on the same backbone" if opts.exclude_same_backbone else "")
        + f"). ρ = +1: the best IQA measure is the best loss; ρ ≤ 0: the asymmetry. Intervals: {int(opts.level * 100)}% "
        "percentile bootstrap (see 'How the numbers are computed')."))
    png = F.rank_scatter(res.summary, res.ranks, main, settings[:2])
    if png:
        files["asymmetry_scatter.png"] = png
    sec.add(img_tag(png, f"IQA rank vs optimization rank (IQA: {main})", "asymmetry_scatter"))
    summary = res.summary.assign(
        rho=[_ci(r.spearman, r.spearman_lo, r.spearman_hi) for r in res.summary.itertuples()],
        tau=[_ci(r.kendall, r.kendall_lo, r.kendall_hi) for r in res.summary.itertuples()])
    sec.add(html_table(summary, [("iqa_variant", "IQA α/β"), ("setting", "optimization setting"),
                                 ("n_backbones", "backbones"), ("n_benchmarks", "benchmarks"), ("n_cells", "cells"),
                                 ("rho", "Spearman ρ [CI]"), ("spearman_p", "p", "{:.3f}"), ("tau", "Kendall τ [CI]"),
                                 ("kendall_p", "p", "{:.3f}"), ("n_boot_valid", "valid resamples"), ("missing", "not ranked")],
                       status_col=None))
    sec.add(f"<h3>Per-backbone ranks (IQA: {html.escape(main)})</h3>")
    ranks = res.ranks[(res.ranks["iqa_variant"] == main) & res.ranks["setting"].isin(settings[:2])]
    wide = _rank_pivot(ranks, settings[:2])
    sec.add(html_table(wide, [(c, c, "{:g}" if "rank" in c or "shift" in c else None) for c in wide.columns],
                       status_col=None))
    sec.add(paragraph("Rank shift = optimization rank − IQA rank: > 0, the measure is a worse loss than its IQA "
                      "rank suggests; < 0, a better one."))


def _ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return MISSING
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else f"{v:+.3f}"


def _rank_pivot(ranks: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    rows = []
    for b in sorted(ranks["backbone"].unique(), key=A.backbone_order_key):
        r = ranks[ranks["backbone"] == b]
        first = r.iloc[0]
        row = {"backbone": F.label(b), "IQA score": first["iqa_score"], "IQA rank": first["iqa_rank"]}
        for s in settings:
            hit = r[r["setting"] == s]
            short = "no adv." if s.startswith("no ") else "adv."
            if hit.empty:
                continue
            h = hit.iloc[0]
            row[f"opt. score ({short})"] = h["opt_score"]
            row[f"opt. rank ({short})"] = h["opt_rank"]
            row[f"shift ({short})"] = h["rank_shift"]
        row["note"] = "; ".join(sorted({n for n in r["note"] if n}))
        rows.append(row)
    return pd.DataFrame(rows)


# -- discriminators -----------------------------------------------------------------------------


def _discriminators(sec: Section, files: dict[str, bytes], ctx: dict[str, Any], opts: ReportOptions) -> None:
    opt = ctx.get("optimize")
    if opt is None or opt.empty:
        sec.notes.append("No optimize results: no discriminator comparison.")
        return
    if not A.pooled_evaluators(opt):
        sec.notes.append("No optimize trial has validation results yet: the designs cannot be ranked.")
    table = A.discriminator_table(opt, exclude_same_backbone=opts.exclude_same_backbone)
    _csv(files, "discriminators.csv", table)
    if table.empty:
        return
    if catalog.NO_DISCRIMINATOR not in set(opt["discriminator"]):
        sec.notes.append("No run without an adversarial loss: gains cannot be computed.")
    sec.add(paragraph("Per fidelity loss: discriminator designs (mean over adversarial weights and seeds) ranked by their "
                      "mean rank over evaluator × validation-set cells ('none' included as the reference). "
                      "'gain' = design − none on the pooled validation value, signed so that > 0 is better."))
    gains = [c for c in table.columns if c.startswith("gain ")]
    cols = [("backbone", "fidelity loss"), ("discriminator", "discriminator"), ("head", "head"), ("trunk", "trunk"),
            ("n_weights", "weights"), ("n_runs", "runs"), ("mean_rank", "mean rank", "{:.2f}"), ("rank", "rank", "{:g}")] + \
        [(g, g, "{:+.3f}") for g in gains]
    sec.add(html_table(table, cols, status_col=None))


# -- transfer -----------------------------------------------------------------------------------


def _transfer(data: SweepData, sec: Section, files: dict[str, bytes], opts: ReportOptions) -> None:
    table = A.transfer_table(data)
    _csv(files, "transfer.csv", table)
    if table.empty:
        sec.notes.append("No transfer trials.")
        return
    diffs = A.transfer_differences(data, n_boot=opts.n_boot, seed=opts.seed, level=opts.level)
    _csv(files, "transfer_differences.csv", diffs)
    png = F.transfer_bars(table)
    if png:
        files["transfer.png"] = png
    sec.add(img_tag(png, "IQA transfer by initialisation", "transfer"))
    axes = [(c, c[5:]) for c in table.columns if c.startswith("axis:")]
    sec.add(html_table(table, [("backbone", "backbone"), ("kind", "kind"), ("train_set", "train"), ("test_set", "test"),
                               ("init", "init")] + axes +
                       [("srcc", "SRCC"), ("srcc_lo", "lo"), ("srcc_hi", "hi"), ("srcc_sd", "sd (seeds)"),
                        ("plcc", "PLCC"), ("plcc_lo", "lo"), ("plcc_hi", "hi"), ("n_seeds", "seeds"),
                        ("status", "status"), ("source", "discriminator from")]))
    sec.add("<h3>Differences between initialisations</h3>")
    sec.add(html_table(diffs, [("comparison", "comparison"), ("backbone", "backbone"), ("metric", "metric"),
                               ("diff", "mean difference"), ("ci_lo", "CI lo"), ("ci_hi", "CI hi"),
                               ("n_cells", "paired cells"), ("ci_method", "interval")], status_col=None))


# -- curves -------------------------------------------------------------------------------------


def _run_name(row: pd.Series) -> str:
    if row["stage"] == "transfer":
        return f"{row['backbone']} {row['init']} s{fmt_value(row['seed'])}"
    return f"{F.label(row['backbone'])} + " + F.config_label(row["discriminator"], row["adv_weight"])


def _curves(data: SweepData, sec: Section, files: dict[str, bytes], opts: ReportOptions) -> None:
    reps = A.representative_runs(data, opts.max_curve_runs)
    metric, _ = data.selection("optimize")
    if reps.empty:
        sec.notes.append("No finished optimize run with the selection metric: no optimize curves.")
    else:
        keys = [metric, "loss/g_fidelity", "loss/g_adversarial", "loss/d", "d/real_acc", "d/fake_acc"]
        hist = A.metric_histories(data, reps, keys)
        png = F.training_curves(hist, {r["run_id"]: _run_name(r) for _, r in reps.iterrows()}, keys,
                                "optimize: the best run per fidelity loss, without and with an adversarial loss")
        if png:
            files["curves_optimize.png"] = png
        sec.add(img_tag(png, "optimize training curves", "curves_optimize"))
    best = A.best_transfer_runs(data)
    if best.empty:
        sec.notes.append("No finished transfer run: no transfer curves.")
        return
    tmetric, _ = data.selection("transfer")
    keys = [tmetric, "val/plcc", "loss/train"]
    hist = A.metric_histories(data, best, keys)
    png = F.training_curves(hist, {r["run_id"]: _run_name(r) for _, r in best.iterrows()}, keys,
                            "transfer: the best run per backbone and initialisation")
    if png:
        files["curves_transfer.png"] = png
    sec.add(img_tag(png, "transfer training curves", "curves_transfer"))


# -- SR samples ---------------------------------------------------------------------------------


def _data_root(data: SweepData, explicit: str | None) -> str:
    """Where the SR val sets are: raygrid's one data-root rule (`raygrid.io.data_root`) with the
    explicit argument first, then the data_root of the space the sweep run logged (its
    `space.yaml` artifact)."""
    from raygrid import io

    if explicit:
        return io.data_root(explicit)
    for run_id in reversed(data.sweep_run_ids):
        root = _space_data_root(data.tracking_uri, run_id)
        if root:
            return io.data_root(None, root)
    return io.data_root()


def _space_data_root(tracking_uri: str, run_id: str) -> str | None:
    """data_root of the validated space a sweep run logged as its `space.yaml` artifact."""
    import yaml

    try:
        return (yaml.safe_load(download_text(tracking_uri, run_id, "space.yaml")) or {}).get("data_root")
    except Exception:  # noqa: BLE001 — no such artifact (an older run): the caller falls back to the default
        return None


def _samples(data: SweepData, sec: Section, files: dict[str, bytes], opts: ReportOptions) -> None:
    reps = A.representative_runs(data, opts.max_sample_runs)
    if reps.empty:
        sec.notes.append("No finished optimize run: no SR samples.")
        return
    tiles, notes = sr_sample_tiles(data, reps, _data_root(data, opts.data_root))
    sec.notes += notes
    png = F.image_strip(tiles, f"Centre crop of the first validation image: LR (nearest ×4), SR of each run "
                               f"(EMA generator, {data.checkpoint} checkpoint), HR")
    if png:
        files["samples.png"] = png
    sec.add(img_tag(png, "SR samples", "samples"))


def sr_sample_tiles(data: SweepData, runs: pd.DataFrame, data_root: str, lr_crop: int = 32) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """[(caption, H×W×3)]: LR, the SR of each run's EMA generator, HR — on the centre crop of the
    first image of the runs' first validation set. Runs without the checkpoint artifact or
    without generator weights get a note instead of a tile."""
    import torch

    from raygrid.data.sr import SRTestSet, resolve_sr_root
    from raygrid.nets.generators import create_generator

    notes: list[str] = []
    first = runs.iloc[0]
    val_sets = _json_list(first.get("params.data.val"))
    if not val_sets:
        return [], ["The runs name no validation set (params.data.val): no samples."]
    scale = _to_float(first.get("params.generator.scale"))
    scale = int(scale) if np.isfinite(scale) else 4  # SwinIR x4, the only scale raygrid trains
    try:
        dataset = SRTestSet(resolve_sr_root(val_sets[0], data_root), scale=scale)
        item = dataset[0]
    except Exception as exc:  # noqa: BLE001 — data not on this machine
        return [], [f"Validation set {val_sets[0]!r} is not readable under {data_root} ({type(exc).__name__}: {exc}): no samples."]
    lr, hr = item["lr"], item["hr"]
    p = min(lr_crop, lr.shape[-2], lr.shape[-1])
    top, left = (lr.shape[-2] - p) // 2, (lr.shape[-1] - p) // 2
    lr_patch = lr[:, top:top + p, left:left + p]
    hr_patch = hr[:, top * scale:(top + p) * scale, left * scale:(left + p) * scale]
    to_img = lambda t: t.detach().clamp(0, 1).permute(1, 2, 0).numpy()
    tiles = [(f"LR ({val_sets[0]}: {item.get('name', '')})", np.repeat(np.repeat(to_img(lr_patch), scale, 0), scale, 1))]
    which = data.checkpoint
    for _, run in runs.iterrows():
        name = _run_name(run)
        try:
            with tempfile.TemporaryDirectory(prefix="raygrid-sample-") as tmp:
                path = download_artifact(data.tracking_uri, run["run_id"], f"checkpoints/{which}/model.pt", tmp)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            missing = run.get(f"tags.raygrid.checkpoint.{which}_missing")
            why = missing if isinstance(missing, str) else f"{type(exc).__name__}"
            notes.append(f"{name}: no checkpoints/{which}/model.pt artifact ({why}); no SR sample.")
            continue
        if "ema" not in state and "generator" not in state:
            notes.append(f"{name}: the {which} checkpoint holds no generator weights; no SR sample.")
            continue
        arch, preset = run.get("params.generator.arch"), run.get("params.generator.preset")
        model = create_generator(arch if isinstance(arch, str) else "swinir",
                                 preset if isinstance(preset, str) and preset != "None" else None, scale=scale)
        model.load_state_dict(state["ema"] if "ema" in state else state["generator"])
        model.eval()
        sr = _one_thread_forward(model, lr_patch)
        sr = sr[:, : hr_patch.shape[-2], : hr_patch.shape[-1]]
        mse = float(((sr - hr_patch) ** 2).mean())
        psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        tiles.append((f"{name}\n(crop RGB PSNR {psnr:.2f} dB)", to_img(sr)))
    tiles.append(("HR", to_img(hr_patch)))
    return tiles, notes


def _one_thread_forward(model, lr_patch):
    """SR of one small crop with a single torch thread: on shared cores, intra-op threads that
    wait for each other made a tiny SwinIR forward 25x slower (1.3 s instead of 0.05 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return model(lr_patch.unsqueeze(0)).clamp(0, 1)[0]
    finally:
        torch.set_num_threads(threads)


# -- missing ------------------------------------------------------------------------------------


def _missing(data: SweepData, sec: Section, files: dict[str, bytes]) -> None:
    miss = A.missing_trials(data)
    _csv(files, "missing_trials.csv", miss)
    if miss.empty:
        sec.add(paragraph("Every planned trial finished or was stopped early by the scheduler."))
        return
    sec.add(paragraph(f"{len(miss)} trial(s) have no values in the tables above; their cells show {MISSING}."))
    sec.add(html_table(miss, [("stage", "stage"), ("state", "state"), ("point", "grid point"), ("run_id", "MLflow run"),
                              ("error", "last error line")], status_col=None))


# -- methods ------------------------------------------------------------------------------------


def _methods_html(data: SweepData, opts: ReportOptions) -> str:
    metric, mode = data.selection("optimize")
    if data.checkpoint == "best":
        when = (f" (the step where {metric} was {'highest' if mode == 'max' else 'lowest'}, read from the "
                "checkpoint's meta.json or the metric history)")
    else:
        when = " (the last logged step)"
    own = ", without the cells of the evaluator built on its own backbone" if opts.exclude_same_backbone else ""
    items = [
        ("IQA (assess): SRCC/PLCC/KRCC of quality = −distance against MOS (higher is better); intervals are "
         "the assess run's bootstrap over the benchmark's images. Seeds are averaged."),
        (f"Optimization values: the validation metrics at the {data.checkpoint} checkpoint{when}; each "
         "configuration is the mean over its seeds; failed or unfinished trials are excluded and shown as "
         "missing."),
        "IQA rank: backbones ranked by mean SRCC over the benchmarks every compared backbone has (1 = best).",
        ("Optimization rank: every cell (one evaluator on one validation set) ranks the backbones' SR outputs "
         "in the evaluator's direction (PSNR/SSIM/NR higher is better, fidelity distances lower is better); a "
         f"backbone's score is its mean rank over the cells{own}; 1 = best. 'With adversarial loss' averages "
         "the metric over every discriminator × weight configuration first (and per discriminator in the rows "
         "'adversarial: <name>')."),
        (f"Asymmetry intervals: {opts.n_boot} bootstrap resamples (seed {opts.seed}); each draws the benchmarks "
         "and, independently, the evaluator × validation-set cells with replacement, recomputes both rankings "
         "and the correlations; the interval is the percentile interval. Per-image scores are not in MLflow, "
         "so test images are not resampled: the interval says how much the conclusion depends on which "
         "benchmarks and evaluators are used. p-values (of the point estimates): exact permutation tests over "
         f"all pairings up to {A.EXACT_P_MAX} backbones, scipy's spearmanr/kendalltau (tau-b) beyond."),
        ("Discriminators: per fidelity loss, each design (mean over its weights) is ranked on every cell among "
         "the designs including 'none'; the gain is the design's pooled value minus that of no adversarial "
         "loss, signed so > 0 is better."),
        ("Transfer: test SRCC/PLCC at the best checkpoint by the validation metric; differences between "
         "initialisations are paired by (backbone, protocol, test benchmark, seed); the interval resamples "
         "the paired cells (bootstrap, percentile), or, for one cell, combines the two runs' own intervals as "
         "normal errors."),
    ]
    return "<ol>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ol>"


# -- page ---------------------------------------------------------------------------------------


def _template() -> str:
    """The page template: $RAYGRID_REPORT_TEMPLATE if set, else the one shipped in the package."""
    override = os.environ.get("RAYGRID_REPORT_TEMPLATE")
    if override:
        return Path(override).read_text(encoding="utf-8")
    return (resources.files("raygrid") / "templates" / "report.html").read_text(encoding="utf-8")


def _render(data: SweepData, sections: list[Section], opts: ReportOptions) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    overview = A.trial_overview(data)
    counts = ", ".join(f"{r.stage}: {r.trials}" for r in overview.itertuples())
    subtitle = (f"Experiment <b>{html.escape(data.experiment)}</b> · trials {html.escape(counts)} · "
                f"{html.escape(data.checkpoint)} checkpoint · evaluator on the loss's own backbone "
                f"{'excluded' if opts.exclude_same_backbone else 'included'}")
    return string.Template(_template()).safe_substitute(
        title=html.escape(f"raygrid report — {data.experiment}"),
        subtitle=subtitle,
        toc=f'<nav><ul>{toc}</ul></nav>',
        body="\n".join(s.render() for s in sections),
        generated=html.escape(f"generated {_dt.datetime.now().isoformat(timespec='seconds')} from {data.tracking_uri}"),
    )


def embedded_figures(path: str) -> dict[str, Any]:
    """The figures an index.html embeds: {data-name: bytes} (used by tests and tools)."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    out = {}
    for m in re.finditer(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" data-name="([^"]+)"', text):
        out[m.group(2)] = base64.b64decode(m.group(1))
    return out


__all__ = ["ReportOptions", "build_report", "embedded_figures", "html_table", "sr_sample_tiles"]
