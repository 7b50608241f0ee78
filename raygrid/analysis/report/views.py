"""The report's sections built on the per-run views: which axis matters (raygrid.analysis.importance)
and the SR crops side by side (raygrid.analysis.viewer, or a static strip rendered from the
checkpoints when the runs logged no crops)."""

from __future__ import annotations

from raygrid.analysis import importance as I
from raygrid.analysis import tables
from raygrid.analysis import viewer as V
from raygrid.analysis.report import sections


def axis_importance(r, sec) -> None:
    trials = r.trials_at_step("optimize")
    metrics = [f"test/{e}" for e in tables.pooled_evaluators(r.optimization)]
    if trials.empty or not metrics:
        sec.notes.append("No optimize trial was compared at the common step: no axis ranking.")
        return
    sec.add(I.importance_section(trials, r.data.axes("optimize"), metrics, states=("compared",)))


def crops(r, sec) -> None:
    if not r.opts.samples:
        sec.notes.append("SR samples were not requested (samples=False).")
        return
    try:
        sweep_run = r.data.sweep_run_ids[-1] if r.data.sweep_run_ids else None
        sec.add(V.crop_viewer(r.data.tracking_uri, r.data.experiment, sweep_run))
    except V.ViewerError as e:
        # Runs logged before the sample crops existed (or without test images): the static strip.
        sec.notes.append(f"No crop viewer: {e}. Instead, crops rendered from the checkpoints:")
        sections.samples(r, sec)
