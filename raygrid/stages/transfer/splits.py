"""The transfer stage's selection split: carved from the training benchmark, never a test set.

A benchmark table (raygrid.data.iqa.table) labels each row train/val/test. Its official val split
is used when it has one (KonIQ-10k's `validation`); otherwise `carve_val` moves a seeded fraction
of the training *groups* (the reference image for FR sets, the image itself for NR sets) to
"val", so no reference content is in both the rows a model trains on and the rows that select it.
Test rows are never touched: what the tables report stays what it was.
"""

from __future__ import annotations

import pandas as pd

from raygrid.data.iqa.table import split_groups


def carve_val(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`table` with a val split: its own when it has one, else `fraction` of its train groups."""
    if (table["split"] == "val").any():
        return table
    train = table["split"] == "train"
    groups = table.loc[train, "ref_id"].tolist()
    if len(set(groups)) < 2:
        name = table.attrs.get("benchmark", "the training benchmark")
        raise ValueError(f"{name}: cannot carve a val split from {len(set(groups))} training group(s); "
                         "selection needs held-out training content")
    moved = {g for g, split in split_groups(groups, seed, test_fraction=fraction).items() if split == "test"}
    out = table.copy()
    out.loc[train & out["ref_id"].isin(moved), "split"] = "val"
    out.attrs.update(table.attrs)
    out.attrs["val_rule"] = (f"carved from train: {fraction:g} of its {'references' if table.attrs.get('mode') == 'FR' else 'images'}, "
                             f"seed {seed}")
    return out
