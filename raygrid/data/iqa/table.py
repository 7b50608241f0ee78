"""Every benchmark becomes one table with the same columns (`load_benchmark`).

`load_benchmark(name, root)` reads the benchmark's original label files when they are there, else
pyiqa's meta-info CSV (`meta_info_<X>Dataset.csv` in `root`, `root/meta_info` or a sibling
`meta_info` folder), and returns a pandas DataFrame with one row per rated image:

  dist        path of the rated (distorted) image
  ref         path of the reference image (FR sets), None for NR sets
  score       the rating with its direction normalised to higher = better: a lower-is-better
              rating r on the nominal range [lo, hi] becomes lo + hi - r (same scale, flipped)
  score_raw   the rating as the label file gives it
  score_norm  pyiqa's `mos_normalize`: (r - lo) / (hi - lo), then 1 - x if lower-is-better
  split       "train" / "val" / "test"
  ref_id      group key: the reference image (FR) or the image itself (NR)
  origin      "<label file>:<line>" (or entry/row) the row came from, for error messages

and `df.attrs` holding benchmark, mode, score_column (the original column name), lower_better_raw,
score_range, label_file, source ("original" / "pyiqa-csv" / "csv"), split_rule.

Splits: the official split when the files carry one (KonIQ-10k's `set` column, a `split` /
`official_split` column of a meta CSV); otherwise a seeded random split of the groups, 80 %
"train" / 20 % "test" by default, by reference image for FR sets (no reference content in two
splits) and by image for NR sets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from raygrid.data.images import DatasetRootError, ImageDecodeError, read_rgb
from raygrid.data.iqa.parsing import BenchmarkFormatError, MissingImageError, Parsed
from raygrid.data.iqa.pyiqa_csv import find_pyiqa_meta, read_meta_csv, read_pyiqa
from raygrid.data.iqa.readers import READERS
from raygrid.io import ensure_local, is_s3
from raygrid.spec.datasets import BENCHMARKS, CSV_PREFIX, BenchmarkSpec

log = logging.getLogger(__name__)

COLUMNS = ["dist", "ref", "score", "score_raw", "score_norm", "split", "ref_id", "origin"]


def split_groups(groups: Sequence[str], seed: int, test_fraction: float = 0.2, val_fraction: float = 0.0) -> dict[str, str]:
    """Seeded random assignment of group keys to train/val/test.

    Groups are sorted before shuffling, so the result depends only on the set of groups and the
    seed. With two or more groups, a positive fraction gets at least one group and train keeps
    at least one.
    """
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)

    def count(frac: float) -> int:
        return 0 if frac <= 0 or n < 2 else max(1, round(n * frac))

    n_test, n_val = count(test_fraction), count(val_fraction)
    while n_test + n_val > n - 1 and (n_test > 1 or n_val > 1):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    assignment = {}
    for rank, i in enumerate(order):
        g = unique[i]
        assignment[g] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return assignment


def finish(
    parsed: Parsed,
    spec: BenchmarkSpec,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Rows -> the benchmark table (direction, normalisation, split, attrs)."""
    if parsed.missing:
        if not skip_missing:
            origin, name = parsed.missing[0]
            path, _, where = origin.rpartition(":")
            more = f" (and {len(parsed.missing) - 1} more)" if len(parsed.missing) > 1 else ""
            loc = where if where.startswith(("entry", "row")) else f"line {where}"  # see _origin
            raise MissingImageError(path, loc, f"names image {name!r}, which is not on disk{more}",
                                    "the image under the benchmark root")
        bad = {o for o, _ in parsed.missing}
        parsed.rows = [r for r in parsed.rows if r.origin not in bad]
        log.warning("%s: skipped %d rows naming missing images (first: %s at %s)",
                    spec.name, len(bad), parsed.missing[0][1], parsed.missing[0][0])
    if not parsed.rows:
        raise BenchmarkFormatError(parsed.label_file, None, "no usable rows", "at least one rated image")

    df = pd.DataFrame([r.__dict__ for r in parsed.rows])
    lo, hi = spec.score_range
    raw = df["score_raw"].astype(float)
    df["score"] = (lo + hi - raw) if spec.lower_better else raw
    norm = (raw - lo) / (hi - lo)
    df["score_norm"] = 1.0 - norm if spec.lower_better else norm
    if spec.mode == "NR":
        df["ref"] = None
    if parsed.has_official_split:
        rule = "official"
    else:
        by = "reference" if spec.mode == "FR" else "image"
        rule = f"random by {by}: test {test_fraction:g}, val {val_fraction:g}, seed {seed}"
        assignment = split_groups(df["ref_id"].tolist(), seed, test_fraction, val_fraction)
        df["split"] = df["ref_id"].map(assignment)
    df = df[COLUMNS]
    df.attrs.update(
        benchmark=spec.name,
        mode=spec.mode,
        score_column=parsed.score_column,
        lower_better_raw=spec.lower_better,
        score_range=spec.score_range,
        label_file=parsed.label_file,
        source=parsed.source,
        split_rule=rule,
    )
    return df


def resolve_benchmark_root(name: str, data_root: str) -> str:
    """Folder of a benchmark: a benchmark record's folder is looked up under `data_root` (demo sets are built on
    first use, in raygrid's cache); "csv:<path>" gives the CSV's folder (relative paths are under `data_root`); anything
    else is taken as a path."""
    if name in BENCHMARKS:
        if name.startswith("demo_"):
            from raygrid.data.demo import build_demo

            # Demo sets live in raygrid's cache, never inside a user's data root.
            return build_demo()[name]
        folder = BENCHMARKS[name].folder
        if is_s3(data_root):
            return f"{data_root.rstrip('/')}/{folder}"
        return os.path.join(os.path.expanduser(data_root), folder)
    if name.startswith(CSV_PREFIX):
        path = os.path.expanduser(name[len(CSV_PREFIX) :])
        if not os.path.isabs(path):
            path = os.path.join(os.path.expanduser(data_root), path)
        return os.path.dirname(path)
    return os.path.expanduser(name)


def open_benchmark(name: str, data_root: str, seed: int, endpoint_url: str | None = None) -> pd.DataFrame:
    """The table of a benchmark named in a trial config, found under the sweep's data root."""
    return load_benchmark(name, resolve_benchmark_root(name, data_root), seed=seed, endpoint_url=endpoint_url)


def load_benchmark(
    name: str,
    root: str,
    seed: int = 0,
    *,
    source: Literal["auto", "original", "pyiqa"] = "auto",
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    skip_missing: bool = False,
    lower_better: bool | None = None,
    endpoint_url: str | None = None,
) -> pd.DataFrame:
    """The table of benchmark `name` (a benchmark record's name or "csv:<path>") found at `root`.

    `source="auto"` reads the original label files when present, else pyiqa's meta CSV. A label
    that names a missing image raises MissingImageError (file and line), unless `skip_missing`,
    which drops such rows and logs the count. `lower_better` sets the direction of a generic
    "csv:" set (default: higher = better); recorded benchmarks know theirs. `seed` and the
    fractions drive the random split of benchmarks without an official one.
    """
    if is_s3(root):
        root = ensure_local(root, endpoint_url)
    if name.startswith(CSV_PREFIX):
        given = os.path.expanduser(name[len(CSV_PREFIX) :])
        candidates = [given] if os.path.isabs(given) else [
            given, os.path.join(root, os.path.basename(given)), os.path.join(root, given)]
        csv_path = next((c for c in candidates if os.path.isfile(c)), candidates[-1])
        if not os.path.isfile(csv_path):
            raise DatasetRootError(f"benchmark {name!r}: meta-info CSV not found: {csv_path}")
        parsed, mode = read_meta_csv(csv_path, root)
        parsed.source = "csv"
        lb = bool(lower_better)
        spec = BenchmarkSpec(name, name, mode, os.path.dirname(csv_path), len(parsed.rows), None, parsed.score_column,
                             lb, _observed_range(parsed))
        return finish(parsed, spec, seed, test_fraction, val_fraction, skip_missing)

    if name not in BENCHMARKS:
        known = ", ".join(sorted(BENCHMARKS))
        raise ValueError(f"unknown benchmark {name!r}; expected one of {known} or csv:<path>")
    spec = BENCHMARKS[name]
    if not os.path.isdir(root):
        raise DatasetRootError(
            f"benchmark {name!r}: dataset root does not exist: {root} "
            f"(expected {spec.expected_files} there, or pyiqa's meta_info CSV)"
        )
    parsed = None
    if source in ("auto", "original") and spec.label_format is not None:
        try:
            parsed = READERS[spec.label_format](root)
        except FileNotFoundError as exc:  # no label file in the original format: try pyiqa's
            if source == "original":
                raise DatasetRootError(
                    f"benchmark {name!r}: label file not found under {root}: {exc} "
                    f"(expected {spec.expected_files})"
                ) from exc
    if parsed is None:
        csv_path = find_pyiqa_meta(spec, root)
        if csv_path is None:
            meta = spec.pyiqa.file if spec.pyiqa else None
            also = f" or pyiqa's {meta} in {root} or its meta_info folder" if meta and source == "auto" else ""
            raise DatasetRootError(
                f"benchmark {name!r}: no label files under {root}; expected {spec.expected_files}{also}"
            )
        parsed = read_pyiqa(spec, root, csv_path)
    return finish(parsed, spec, seed, test_fraction, val_fraction, skip_missing)


def _observed_range(parsed: Parsed) -> tuple[float, float]:
    scores = [r.score_raw for r in parsed.rows]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def subset(table: pd.DataFrame, splits: Sequence[str] | None = None, cap: int | None = None,
           seed: int = 0) -> pd.DataFrame:
    """Rows of the given splits (all when None), at most `cap` of them (a seeded sample, kept in
    table order), with the table's attrs."""
    rows = table if splits is None else table[table["split"].isin(list(splits))]
    if cap is not None and len(rows) > cap:
        rows = rows.sample(n=cap, random_state=seed).sort_index()
    out = rows.reset_index(drop=True)
    out.attrs.update(table.attrs)
    return out


def check_images(table: pd.DataFrame, skip_unreadable: bool = False) -> pd.DataFrame:
    """Decode every image of the table once. Raises ImageDecodeError (naming the file and the
    label line that lists it), or, with `skip_unreadable`, drops those rows and logs the count.
    Use before evaluation, where a Dataset must not substitute images."""
    bad = []
    for i, row in enumerate(table.itertuples(index=False)):
        for path in (row.dist, row.ref):
            if path is None or (isinstance(path, float) and np.isnan(path)):
                continue
            try:
                read_rgb(path, listed_at=row.origin)
            except ImageDecodeError:
                if not skip_unreadable:
                    raise
                bad.append(i)
                log.warning("skipped unreadable image %s (listed at %s)", path, row.origin)
                break
    if bad:
        log.warning("%s: skipped %d rows with unreadable images", table.attrs.get("benchmark", "table"), len(bad))
    out = table.drop(index=table.index[bad])
    out.attrs.update(table.attrs)
    return out


def item_ids(table) -> list[str]:
    """Each row's distorted image as a path relative to the folder that holds all of the
    benchmark's images: the same id on every machine and for every measure."""
    paths = [p for p in list(table["dist"]) + list(table["ref"]) if isinstance(p, str)]
    root = os.path.commonpath(paths) if len(set(paths)) > 1 else os.path.dirname(paths[0])
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in table["dist"]]
