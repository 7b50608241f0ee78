"""What a judgement is: the columns the store writes, the app fills and the analysis reads.

An *item* is what gets ranked: one optimize setting (the run's grid point without its seed, so
runs of the same setting with different seeds are pooled into one item). Its key is that point
as compact JSON with sorted keys, e.g.
`{"adversarial.discriminator":"none","fidelity.backbone":"vgg16_r","loss.adversarial_weight":0}`,
so a judgement names its settings on its own, readable without MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

CHOICES = ("left", "right", "same")

# name -> (SQLite type, meaning). The order is the table's column order.
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("TEXT", "client-generated UUID of the judgement; a retried request reuses it"),
    "experiment": ("TEXT", "MLflow experiment (the sweep's name)"),
    "judge": ("TEXT", "the judge's name as typed"),
    "sitting": ("TEXT", "one page load of the judging app (UUID); a judge's sittings merge"),
    "seq": ("INTEGER", "position of the comparison in its sitting, from 1"),
    "created_at": ("TEXT", "server time the judgement was stored, UTC ISO-8601"),
    "crop_id": ("TEXT", "the crop (samples/crops.json id)"),
    "left_run": ("TEXT", "MLflow run id shown on the left"),
    "right_run": ("TEXT", "MLflow run id shown on the right"),
    "left_item": ("TEXT", "setting (item key) of the left run"),
    "right_item": ("TEXT", "setting (item key) of the right run"),
    "left_step": ("INTEGER", "training step of the left SR crop"),
    "right_step": ("INTEGER", "training step of the right SR crop"),
    "choice": ("TEXT", "left | right | same: which SR crop looks closer to the reference"),
    "elapsed_ms": ("INTEGER", "time from the three images being shown to the answer"),
    "repeat_of": ("TEXT", "id of the judge's earlier judgement this one repeats with sides swapped, or NULL"),
    "source": ("TEXT", "where the SR crops came from: logged (MLflow images) | rendered (from checkpoints)"),
}

OUTCOME = {"left": 0, "right": 1, "same": 2}

# Point keys of the optimize stage's canonical axes (the names raygrid's spaces use).
BACKBONE, DISCRIMINATOR, ADV_WEIGHT = "fidelity.backbone", "adversarial.discriminator", "loss.adversarial_weight"
NO_DISCRIMINATOR = "none"


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="Int64" if t == "INTEGER" else "object") for c, (t, _) in COLUMNS.items()})


def item_key(point: Mapping[str, Any]) -> str:
    """The item of a run: its grid point without the seed."""
    return json.dumps({k: v for k, v in point.items() if k != "seed"}, sort_keys=True, separators=(",", ":"))


def item_point(key: str) -> dict[str, Any]:
    """The grid point of an item key ({} for a key that is not a point, e.g. a hand-made label)."""
    try:
        point = json.loads(key)
    except (json.JSONDecodeError, TypeError):
        return {}
    return point if isinstance(point, dict) else {}


def item_label(key: str) -> str:
    """A short human label: the axis values, known axes first ("vgg16_r · none · 0")."""
    point = item_point(key)
    if not point:
        return str(key)
    first = [k for k in (BACKBONE, DISCRIMINATOR, ADV_WEIGHT) if k in point]
    rest = sorted(k for k in point if k not in first)
    return " · ".join(str(point[k]) for k in first) + ("" if not rest else " · " + ", ".join(f"{k.rsplit('.', 1)[-1]}={point[k]}" for k in rest))


def item_attributes(items: Iterable[str]) -> pd.DataFrame:
    """One row per item: item, label, backbone, discriminator, adv_weight (NaN when the point lacks
    the axis) and the full point."""
    rows = []
    for key in items:
        point = item_point(key)
        rows.append({"item": key, "label": item_label(key), "backbone": point.get(BACKBONE),
                     "discriminator": point.get(DISCRIMINATOR), "adv_weight": point.get(ADV_WEIGHT),
                     "point": point})
    return pd.DataFrame(rows, columns=["item", "label", "backbone", "discriminator", "adv_weight", "point"])


def validate(df: pd.DataFrame, where: str = "judgements") -> pd.DataFrame:
    """The columns present and the choices known; one line naming what is wrong otherwise."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    bad = sorted(set(df["choice"].dropna()) - set(CHOICES))
    if bad or df["choice"].isna().any():
        raise ValueError(f"{where}: choice must be one of {', '.join(CHOICES)}, got {bad or ['<missing>']}")
    if (df["left_item"] == df["right_item"]).any():
        raise ValueError(f"{where}: a judgement compares a setting with itself (left_item == right_item)")
    return df
