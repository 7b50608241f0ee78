"""The evidence of the asymmetry interval: the two long tables (raygrid.analysis.intervals
documents their columns) checked and turned into arrays, with the missing-data rules applied —
benchmarks, setting cells, seeds, (evaluator, test set) combinations and images that some backbone
lacks are left out for every backbone, each step named in `notes`, so that all backbones are
compared on the same evidence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def check_columns(df: pd.DataFrame, required, what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} table: missing column(s) {missing}; expected {list(required)}")


def constant_per(df: pd.DataFrame, key: str, col: str, what: str) -> pd.Series:
    flags = df[col].astype(bool)
    n = flags.groupby(df[key]).nunique()
    if (n > 1).any():
        raise ValueError(f"{what} table: {col!r} differs within {key} {n.index[n > 1][0]!r}; expected one direction")
    return flags.groupby(df[key]).first()


def duplicates(df: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        row = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"{what} table: more than one row for {row}; expected one per {keys}")


# ---------------------------------------------------------------------------------------------
# The IQA side: per benchmark, oriented predictions (backbone x pair), scores, reference codes
# ---------------------------------------------------------------------------------------------


@dataclass
class Benchmark:
    name: str
    x: np.ndarray  # K x n oriented predictions (higher = better)
    y: np.ndarray  # n human scores
    ref: np.ndarray  # n reference codes 0..G-1
    n_refs: int


def prepare_iqa(iqa: pd.DataFrame, backbones: list[str], notes: list[str]) -> list[Benchmark]:
    df = iqa[iqa["backbone"].isin(backbones)]
    have = df.groupby("benchmark")["backbone"].unique().map(set)  # unique first: no per-row Python objects
    kept = [b for b in sorted(have.index) if have[b] >= set(backbones)]
    if dropped := sorted(set(have.index) - set(kept)):
        notes.append(f"IQA benchmarks left out (not every backbone has them): {', '.join(dropped)}.")
    df = df[df["benchmark"].isin(kept)]
    n_vals = df.groupby(["benchmark", "item"])[["ref_id", "score"]].nunique(dropna=False)
    if (n_vals > 1).any(axis=None):
        bench, item = n_vals.index[(n_vals > 1).any(axis=1)][0]
        raise ValueError(f"IQA table: benchmark {bench!r} item {item!r} has a different ref_id or score for "
                         "different backbones; expected one benchmark table")
    sign = np.where(df["lower_better"].astype(bool), -1.0, 1.0)
    wide = df.assign(x=sign * df["pred"].astype(float)).pivot(index=["benchmark", "item"], columns="backbone", values="x")
    wide = wide.reindex(columns=backbones)
    meta = df.drop_duplicates(["benchmark", "item"]).set_index(["benchmark", "item"]).loc[wide.index]
    ok = np.isfinite(wide.to_numpy(float)).all(1) & np.isfinite(meta["score"].to_numpy(float))
    out = []
    for bench in kept:
        rows = np.flatnonzero(wide.index.get_level_values(0) == bench)
        good = rows[ok[rows]]
        if good.size < rows.size:
            notes.append(f"IQA {bench}: {rows.size - good.size} of {rows.size} pairs left out (missing for some backbone).")
        ref = pd.factorize(meta["ref_id"].to_numpy()[good], sort=True)[0]  # draws index sorted ids
        if ref.size == 0 or ref.max() + 1 < 2:
            notes.append(f"IQA {bench}: left out (fewer than 2 references with pairs for every backbone).")
            continue
        out.append(Benchmark(bench, wide.to_numpy(float)[good].T, meta["score"].to_numpy(float)[good], ref,
                              int(ref.max()) + 1))
    return out


# ---------------------------------------------------------------------------------------------
# The optimization side: per test set, values evaluator x backbone x seed x image (cells averaged)
# ---------------------------------------------------------------------------------------------


@dataclass
class TestSet:
    name: str
    evaluators: np.ndarray  # indices into the evaluator list of the evaluators that have this set
    v: np.ndarray  # E_t x K x S x I oriented values (higher = better), mean over cells


@dataclass
class Evidence:
    evaluators: list[str]
    seeds: list
    sets: list[TestSet]
    keep: np.ndarray  # E x K: evaluator counts for the backbone (not excluded)
    n_cells: int


def prepare_opt(opt: pd.DataFrame, cell_columns: list[str], backbones: list[str], notes: list[str]) -> Evidence | None:
    df = opt[opt["backbone"].isin(backbones)].copy()
    direction = constant_per(df, "evaluator", "higher_better", "optimization")
    df = df.assign(value=df["value"].astype(float))
    df = df[np.isfinite(df["value"])]
    k_of = {b: i for i, b in enumerate(backbones)}
    codes = {c: pd.factorize(df[c], sort=True) for c in ("evaluator", "seed")}
    ev_names, seed_names = (list(codes[c][1]) for c in ("evaluator", "seed"))

    def groups(cols: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
        if not cols:
            return np.zeros(len(df), dtype=np.intp), pd.DataFrame(index=[0])
        g = df.groupby(cols, sort=True, dropna=False)
        return g.ngroup().to_numpy(), g.size().reset_index()[cols]

    cell_codes, cells = groups(cell_columns)
    img_codes, img_keys = groups(["test_set", "image"])
    cell_names = [", ".join(f"{c}={r[c]}" for c in cell_columns) for _, r in cells.iterrows()]
    shape = (len(ev_names), len(backbones), len(cells), len(seed_names), len(img_keys))
    v = np.full(shape, np.nan)
    v[codes["evaluator"][0], df["backbone"].map(k_of).to_numpy(), cell_codes, codes["seed"][0], img_codes] = df["value"]
    present = np.isfinite(v)

    cell_ok = present.any(axis=(0, 3, 4)).all(0)  # every backbone has the cell
    if (~cell_ok).any():
        notes.append(f"optimization cells left out (not every backbone has them): "
                     f"{', '.join(np.array(cell_names)[~cell_ok])}.")
    seed_ok = present[:, :, cell_ok].any(axis=(0, 4)).all(axis=(0, 1))  # every (backbone, cell) has the seed
    if (~seed_ok).any():
        notes.append(f"seeds left out (not every backbone and cell has them): "
                     f"{', '.join(map(str, np.array(seed_names, dtype=object)[~seed_ok]))}.")
    if not cell_ok.any() or not seed_ok.any():
        notes.append("no optimization cell and seed that every backbone has.")
        return None
    v = v[:, :, cell_ok][:, :, :, seed_ok]
    present = np.isfinite(v)
    set_of_img = img_keys["test_set"].to_numpy()
    sets, ev_used = [], set()
    for t in sorted(set(set_of_img)):
        cols = np.flatnonzero(set_of_img == t)
        p = present[..., cols]  # E x K x C x S x I_t
        has = p.any(-1).all(axis=(1, 2, 3))  # evaluator e has set t for every run
        if (~has & p.any(axis=(1, 2, 3, 4))).any():
            notes.append(f"{t}: evaluator(s) {', '.join(np.array(ev_names)[~has & p.any(axis=(1, 2, 3, 4))])} "
                         "left out on this set (missing for some run).")
        if not has.any():
            continue
        img_ok = p[has].all(axis=(0, 1, 2, 3))
        if (~img_ok).sum():
            notes.append(f"{t}: {(~img_ok).sum()} of {img_ok.size} images left out (missing for some run or evaluator).")
        if not img_ok.any():
            continue
        sub = v[has][..., cols[img_ok]].mean(axis=2)  # mean over cells: E_t x K x S x I_t
        sign = np.where([direction[e] for e in np.array(ev_names)[has]], 1.0, -1.0)
        sets.append(TestSet(t, np.flatnonzero(has), sub * sign[:, None, None, None]))
        ev_used |= set(np.flatnonzero(has))
    if not sets:
        notes.append("no test set with values for every run.")
        return None
    if dropped := [ev_names[e] for e in range(len(ev_names)) if e not in ev_used]:
        notes.append(f"evaluators left out (no complete test set): {', '.join(dropped)}.")
    keep = np.ones((len(ev_names), len(backbones)), dtype=bool)
    if "excluded" in df.columns:
        flagged = df[df["excluded"].astype(bool)].groupby(["evaluator", "backbone"]).size().index
        for e, b in flagged:
            keep[ev_names.index(e), k_of[b]] = False
    order = sorted(ev_used)  # compact the evaluator axis to the evaluators in use
    remap = {e: i for i, e in enumerate(order)}
    for s in sets:
        s.evaluators = np.array([remap[e] for e in s.evaluators])
    return Evidence([ev_names[e] for e in order], [s for s, ok in zip(seed_names, seed_ok) if ok], sets,
                keep[order], int(cell_ok.sum()))
