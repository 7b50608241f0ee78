"""The sweep report: one self-contained HTML page, plus the tables as CSV and figures as PNG.

    build_report(experiment, tracking_uri=..., sweep_run_id=..., out_dir=...) -> path of index.html

Data flows one way: MLflow -> `load.load_sweep` -> `tables` -> `stats` (+ `people`) -> `figures`
-> HTML. With a sweep run id the output folder is also logged to that run (under `report/`).

The page is a list of sections (`default_sections()`): each is a `SectionSpec(anchor, title,
fill)` whose `fill(report, section)` adds HTML to `section` (`section.add(...)`, notes in
`section.notes`) and files to `report.files`; it reads the sweep and every table from `report`
(a `Report`: `report.data` is the SweepData, the tables are computed once, on first use). A
section that fails states its error on the page and the others still render: a report must not
take the sweep down. To add a section, insert a SectionSpec into the list.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid.analysis import load, people, stats, tables
from raygrid.analysis.report import methods, sections, views
from raygrid.analysis.report.html import Section, page
from raygrid.spec import mlflow as names


@dataclass
class ReportOptions:
    checkpoint: str | None = None  # None: each stage's plan.json report entry; "final"/"best" for all
    exclude_same_backbone: bool = True  # False: evaluators judge runs trained on their own features too
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95
    samples: bool = True
    data_root: str | None = None
    max_sample_runs: int = 12
    max_curve_runs: int = 12


@dataclass
class Report:
    """What every section reads: the sweep, the options, the files written next to index.html,
    and the analysis tables (computed on first use, once)."""

    data: load.SweepData
    opts: ReportOptions
    files: dict[str, bytes] = field(default_factory=dict)

    def csv(self, name: str, df: pd.DataFrame) -> None:
        self.files[name] = df.to_csv(index=False).encode()

    @cached_property
    def assessment(self) -> pd.DataFrame:
        return tables.assessment_table(self.data, self.opts.n_boot, self.opts.seed, self.opts.level)

    @cached_property
    def iqa_items(self) -> pd.DataFrame:
        return tables.iqa_items(self.data)

    @cached_property
    def opt_items(self) -> pd.DataFrame:
        return tables.optimization_items(self.data)

    @cached_property
    def evaluators(self) -> pd.DataFrame:
        return tables.evaluator_table(self.opt_items)

    @cached_property
    def run_values(self) -> pd.DataFrame:
        return tables.run_values(self.data, self.opt_items)

    @cached_property
    def optimization(self) -> pd.DataFrame:
        return tables.optimization_table(self.data, self.opt_items)

    @cached_property
    def asymmetry(self) -> stats.Asymmetry:
        return stats.asymmetry(self.iqa_items, self.opt_items, n_boot=self.opts.n_boot, seed=self.opts.seed,
                               level=self.opts.level, exclude_shared=self.opts.exclude_same_backbone)

    @cached_property
    def discriminators(self) -> pd.DataFrame:
        return tables.discriminator_table(self.opt_items)

    @cached_property
    def transfer_cells(self) -> pd.DataFrame:
        return tables.transfer_cells(self.data, self.opts.n_boot, self.opts.seed, self.opts.level)

    @cached_property
    def transfer(self) -> pd.DataFrame:
        return tables.transfer_table(self.transfer_cells)

    @cached_property
    def transfer_differences(self) -> pd.DataFrame:
        return stats.transfer_differences(self.transfer_cells, n_boot=self.opts.n_boot, seed=self.opts.seed,
                                          level=self.opts.level)

    @cached_property
    def run_test_values(self) -> pd.DataFrame:
        """One row per compared optimize or transfer run: run_id and its `metrics.test/...` at the
        compared step, from the per-item tables (optimize: per evaluator; transfer: per benchmark)."""
        frames = []
        if len(self.run_values):
            frames.append(self.run_values.rename(columns=lambda c: c if c == "run_id" else f"metrics.{c}"))
        cells = self.transfer_cells
        if len(cells) and "srcc" in cells and cells["compared"].astype(bool).any():
            wide = cells[cells["compared"].astype(bool)].pivot_table(index="run_id", columns="test_set",
                                                                    values=["srcc", "plcc"])
            wide.columns = [f"metrics.test/{bench}/{m}" for m, bench in wide.columns]
            frames.append(wide.reset_index())
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])

    def trials_at_step(self, stage: str) -> pd.DataFrame:
        """The stage's trials for per-trial views (the views' axis importance, parallel
        coordinates): `state` = "compared" for the trials compared at the common step (else their
        outcome), and their `metrics.test/...` at the compared step (`run_test_values`)."""
        df = self.data.stage(stage).copy()
        df["state"] = np.where(df["compared"].astype(bool), "compared", df["outcome"]) if len(df) else []
        values = self.run_test_values[self.run_test_values["run_id"].isin(set(df["run_id"].dropna()))]
        values = values.dropna(axis=1, how="all")
        if values.shape[1] <= 1:
            return df
        df = df.drop(columns=[c for c in values.columns if c != "run_id" and c in df.columns])
        return df.merge(values, on="run_id", how="left")

    @cached_property
    def people(self):
        trained = set(self.opt_items["alpha_beta"]) if len(self.opt_items) else set()
        variant = "uniform" if "uniform" in trained or not trained else min(trained)
        return people.people(load.judgements(self.data), experiment=self.data.experiment,
                             tracking_uri=self.data.tracking_uri, assessment=self.assessment,
                             run_values=self.run_values, evaluators=self.evaluators, variant=variant,
                             n_boot=self.opts.n_boot, seed=self.opts.seed, level=self.opts.level)


Fill = Callable[[Report, Section], None]


@dataclass(frozen=True)
class SectionSpec:
    anchor: str
    title: str
    fill: Fill


def default_sections() -> list[SectionSpec]:
    """The page's sections, in order."""
    return [
        SectionSpec("overview", "Overview", sections.overview),
        SectionSpec("assess", "1. Fidelity measures as IQA models (assess)", sections.assess),
        SectionSpec("optimize", "2. Fidelity measures as losses (optimize)", sections.optimize),
        SectionSpec("importance", "Which axis matters", views.axis_importance),
        SectionSpec("asymmetry", "3. The asymmetry: IQA rank vs optimization rank", sections.asymmetry),
        SectionSpec("discriminators", "4. Discriminator designs", sections.discriminators),
        SectionSpec("transfer", "5. Discriminators as IQA initialisations (transfer)", sections.transfer),
        SectionSpec("people", "6. What people saw", sections.people),
        SectionSpec("curves", "7. Training curves", sections.curves),
        SectionSpec("samples", "8. SR crops side by side", views.crops),
        SectionSpec("not-compared", "Trials not compared", sections.not_compared),
        SectionSpec("methods", "How the numbers are computed", methods.fill),
    ]


def build_report(experiment_name: str, tracking_uri: str | None = None, sweep_run_id: str | None = None,
                 out_dir: str | None = None, sections_list: list[SectionSpec] | None = None, **options: Any) -> str:
    """Analyse a sweep from MLflow and write `<out_dir>/index.html` (+ CSV, PNG); returns its path.

    options: the fields of ReportOptions. sections_list: default `default_sections()`."""
    opts = ReportOptions(**options)
    out = Path(out_dir or f"raygrid-report-{experiment_name}").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = load.load_sweep(experiment_name, tracking_uri, sweep_run_id, checkpoint=opts.checkpoint)
    report = Report(data, opts)
    rendered = [render_section(report, spec) for spec in (sections_list or default_sections())]
    for name, blob in report.files.items():
        (out / name).write_bytes(blob)
    index = out / "index.html"
    index.write_text(page(f"raygrid report — {data.experiment}", _subtitle(report), rendered, data.tracking_uri),
                     encoding="utf-8")
    if sweep_run_id:
        names.client(data.tracking_uri).log_artifacts(sweep_run_id, str(out), names.ARTIFACT_REPORT)
    return str(index)


def render_section(report: Report, spec: SectionSpec) -> Section:
    import traceback

    sec = Section(spec.anchor, spec.title)
    try:
        spec.fill(report, sec)
    except Exception as exc:  # noqa: BLE001 — one broken part must not lose the whole report
        sec.notes.append(f"{spec.title} could not be produced: {type(exc).__name__}: {exc}")
        sec.add(f'<pre class="error">{html.escape(traceback.format_exc(limit=6))}</pre>')
    return sec


def _subtitle(report: Report) -> str:
    data = report.data
    counts = ", ".join(f"{s}: {int((data.trials['stage'] == s).sum())}" for s in data.report)
    steps = "; ".join(f"{s} at {r.describe()}" for s, r in data.report.items())
    shared = "never judge" if report.opts.exclude_same_backbone else "also judge"
    return (f"Experiment <b>{html.escape(data.experiment)}</b> · trials {html.escape(counts)} · compared at one step "
            f"per stage: {html.escape(steps)} · evaluators {shared} runs trained on their own features")
