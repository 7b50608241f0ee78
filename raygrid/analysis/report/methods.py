"""The report's "How the numbers are computed" section: what is compared, what is resampled and
in which unit, what is left out, and why (docs/analysis.md says the same at more length)."""

from __future__ import annotations

from raygrid.analysis import stats
from raygrid.analysis.report.html import items, paragraph


def _protocol(r) -> list[str]:
    out = []
    for stage, rep in r.data.report.items():
        out.append(f"{stage}: every trial is compared at {rep.describe()} ({rep.source}). A trial whose evaluations "
                   "did not reach that step (stopped by a grouped scheduler, collapsed, diverged, failed, interrupted, "
                   "still running, never started) is listed with its outcome and step and enters no table or ranking; "
                   "the tables count such trials per cell.")
    out.append("Selection and report are apart: a 'best' step is chosen only by the stage's val/ selection metric "
               "(sets no table reports); every table and ranking uses test/ sets only.")
    return out


def _resampled(r) -> list[str]:
    a = r.asymmetry
    main = a.summary[(a.summary["panel"] == stats.PANELS[0]) & (a.summary["generator"] == stats.ALL)] \
        if len(a.summary) else a.summary
    said = main.iloc[0]["resampled"] if len(main) else "(no asymmetry row was computed)"
    n = r.opts.n_boot
    return [
        ("IQA correlations (assess, transfer): SRCC/PLCC from each run's per-item table; the bootstrap resamples "
         "whole reference images (unit: a reference with all its distorted pairs, drawn with replacement; "
         f"{n} resamples, BCa interval), because a measure that misjudges a reference misjudges all its pairs. "
         "No-reference benchmarks resample images. KRCC is shown without an interval."),
        ("The asymmetry ρ/τ (raygrid.analysis.intervals): a paired, hierarchical bootstrap from the per-item tables: "
         "test images within each test set, seeds, evaluators (each with all its test sets) and IQA reference "
         "images within each benchmark are drawn independently, each draw shared by every backbone; fixed: "
         f"backbones, benchmarks, test sets, setting cells; both rankings recomputed per resample; {n} resamples, "
         f"percentile {r.opts.level:.0%} interval; p-values from exact permutation tests (up to 8 backbones). "
         f"On this sweep: {said}."),
        ("Transfer differences: paired (backbone, protocol, benchmark, seed) cells resampled; a single cell combines "
         "the two runs' own intervals as normal errors."),
        "The human ranking: a crossed bootstrap over judges and crops (raygrid.judge).",
    ]


def _exclusions(r) -> list[str]:
    rule = ("never judges" if r.opts.exclude_same_backbone else "here still judges (exclusion switched off)")
    return [
        (f"Circularity: an evaluator whose record says it shares a trunk with a run's loss backbone or its "
         f"discriminator trunk (evaluators.json, 'shares') {rule} that run: in the loss rankings it is left out of "
         "that backbone's score, in the discriminator-design rankings it is left out of the loss's whole ranking."),
        ("The independent panel: the robustness rows use only evaluators that are no-reference models or have no "
         "learned backbone (PSNR/SSIM) — no DISTS-style measure judges them; 'flips' says when the conclusion changes."),
        ("α/β pairing: an IQA variant's rank is correlated only with losses trained with the same α/β; a variant "
         "without such an optimize arm (e.g. α/β fitted in the assess stage) has no asymmetry rows, and a note says so."),
        ("Equal evidence: a benchmark, setting cell, seed, (evaluator, test set) or image that some backbone lacks "
         "is left out for every backbone, and named in the notes."),
        "Directions, families and backbones of the evaluators come from each run's evaluator record, never from names.",
    ]


def fill(r, sec) -> None:
    sec.add("<h3>Protocol</h3>")
    sec.add(items(_protocol(r)))
    sec.add("<h3>Statistics: what is resampled, and the units</h3>")
    sec.add(items(_resampled(r), ordered=True))
    sec.add("<h3>What is left out</h3>")
    sec.add(items(_exclusions(r)))
    sec.add(paragraph("Rank 1 = best. IQA rank: by mean SRCC over the benchmarks every compared backbone has. "
                      "Optimization rank: per (evaluator, test set) the backbones are ranked by their mean over setting "
                      "cells, seeds and test images in the evaluator's direction; an evaluator's ranks are averaged over "
                      "its test sets, a backbone's score over its evaluators."))
