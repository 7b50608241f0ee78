"""Outcomes of trials: why a trial is not compared at its stage's common step, counts per cell,
and the overview per stage (pure functions on the frames raygrid.analysis.load builds).

Outcomes (tag `raygrid.outcome`): finished | stopped (a grouped scheduler) | collapsed | diverged |
failed | interrupted; the reader adds "running" and "not run" (planned, never started).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raygrid.spec import mlflow as names

if TYPE_CHECKING:
    from raygrid.analysis.load import SweepData

NOT_RUN = "not run"
RUNNING = "running"
ENDED_EARLY = ("stopped", "collapsed", "diverged")  # "<outcome> at step k"
OUTCOMES = ("finished", *ENDED_EARLY, "failed", "interrupted", RUNNING, NOT_RUN)
TAG_OUTCOME_STEP = "raygrid.outcome_step"
TAG_OUTCOME_REASON = "raygrid.outcome_reason"


def why_not_compared(outcome: str, step: float, reason: str | None, common: int | None) -> str:
    """"stopped at step 20", "collapsed at step 40", "failed: loop.py:88", "interrupted", ..."""
    at = f" at step {int(step)}" if math.isfinite(step) else ""
    if outcome in ENDED_EARLY:
        return f"{outcome}{at}"
    if outcome == "failed":
        return f"failed: {reason}" if reason else f"failed{at}"
    if outcome in ("interrupted", RUNNING):
        return f"{outcome}{at}"
    if outcome == NOT_RUN:
        return NOT_RUN
    return f"{outcome}, ended{at} before step {common}"


def failure_reason(tags: pd.Series) -> str | None:
    """The outcome reason tag, else the innermost `File "...", line n` of the logged traceback."""
    reason = tags.get(f"tags.{TAG_OUTCOME_REASON}")
    if isinstance(reason, str) and reason.strip():
        return reason.strip().splitlines()[-1][:200]
    text = tags.get(f"tags.{names.TAG_ERROR}")
    if not isinstance(text, str) or not text.strip():
        return None
    frames = re.findall(r'File "([^"]+)", line (\d+)', text)
    last = text.strip().splitlines()[-1][:160]
    return f"{Path(frames[-1][0]).name}:{frames[-1][1]} {last}" if frames else last


def counts(group: pd.DataFrame) -> dict[str, Any]:
    """n_compared / n_planned, per-outcome counts of the trials not compared, and a status line."""
    ok = group["compared"].astype(bool)
    out: dict[str, Any] = {"n_compared": int(ok.sum()), "n_planned": len(group)}
    for outcome in ("stopped", "collapsed", "diverged", "failed", "interrupted", "running", NOT_RUN):
        out[f"n_{outcome.replace(' ', '_')}"] = int(((group["outcome"] == outcome) & ~ok).sum())
    whys = group.loc[~ok, "why"].value_counts(sort=False)
    out["status"] = "ok" if ok.all() else (f"{out['n_compared']}/{len(group)} compared; "
                                           + ", ".join(f"{n} {w}" for w, n in whys.items()))
    return out


def trial_overview(data: SweepData) -> pd.DataFrame:
    """Per stage: trials, compared at the common step, and every outcome."""
    outcomes = ["finished", "stopped", "collapsed", "diverged", "failed", "interrupted", "running", NOT_RUN]
    rows = []
    for stage in dict.fromkeys([*data.report, *data.plan]):
        df = data.stage(stage)
        rep = data.report.get(stage)
        row = {"stage": stage, "trials": len(df), "compared": int(df["compared"].sum()) if len(df) else 0,
               "common step": rep.describe() if rep else "—"}
        vc = df["outcome"].value_counts() if len(df) else {}
        row.update({o: int(vc.get(o, 0)) for o in outcomes})
        rows.append(row)
    return pd.DataFrame(rows, columns=["stage", "trials", "compared", "common step", *outcomes])


def not_compared(data: SweepData) -> pd.DataFrame:
    """Every trial outside the tables, with why ("stopped at step 20", "failed: loop.py:88 ...")."""
    t = data.trials
    cols = ["stage", "outcome", "why", "point", "run_id"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    bad = t[~t["compared"].astype(bool)]
    return pd.DataFrame({"stage": bad["stage"], "outcome": bad["outcome"], "why": bad["why"],
                         "point": [json.dumps(p, default=str) for p in bad["point"]],
                         "run_id": bad["run_id"]}).reset_index(drop=True)
