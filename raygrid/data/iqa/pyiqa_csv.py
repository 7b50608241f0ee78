"""pyiqa's meta-info CSVs: positional rows (FR: ref name, dist name, score; NR: name, score) with
a header line, for the benchmarks whose original label files are absent and for generic "csv:"
sets. Where a benchmark's images are for its CSV is in its record (raygrid.spec.datasets.PyiqaMeta).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Literal

from raygrid.data.iqa.parsing import BenchmarkFormatError, Parsed, Row, _Lookup, _number, _resolver, _split_value
from raygrid.spec.datasets import BenchmarkSpec


_SPLIT_COLUMNS = ("official_split", "split")


def find_pyiqa_meta(spec: BenchmarkSpec, root: str) -> str | None:
    """The benchmark's meta-info CSV in `root`, `root/meta_info` or a sibling `meta_info` folder."""
    if spec.pyiqa is None:
        return None
    for folder in (root, os.path.join(root, "meta_info"), os.path.join(os.path.dirname(root.rstrip("/")), "meta_info")):
        path = os.path.join(folder, spec.pyiqa.file)
        if os.path.isfile(path):
            return path
    return None


def read_meta_csv(
    csv_path: str,
    image_root: str,
    mode: Literal["FR", "NR"] | None = None,
    dist_dirs: Sequence[str] = (".",),
    ref_dirs: Sequence[str] = (),
    recursive: bool = False,
    extensions: Sequence[str] = (),
    skip_rows: int = 0,
) -> tuple[Parsed, Literal["FR", "NR"]]:
    """A pyiqa meta-info CSV: FR rows are (ref name, dist name, score, ...), NR rows (name, score,
    ...), with a header line. A `split` / `official_split` column, if present, is the split. The
    mode is inferred from the first row when not given (a number in column 2 means NR)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BenchmarkFormatError(csv_path, "line 1", "file is empty", "a header line") from None
        body = [(reader.line_num, v) for v in reader if v and any(x.strip() for x in v)]
    if not body:
        raise BenchmarkFormatError(csv_path, "line 2", "no data rows", "one row per image")
    if mode is None:
        try:
            float(body[0][1][1])
            mode = "NR"
        except (ValueError, IndexError):
            mode = "FR"
    n_min = 3 if mode == "FR" else 2
    split_idx = next((header.index(c) for c in _SPLIT_COLUMNS if c in header), None)

    def dirs(names: Sequence[str]) -> list[str]:
        return [os.path.normpath(os.path.join(image_root, d)) for d in names]

    find_dist = _Lookup(_resolver(dirs(dist_dirs), recursive), extensions)
    find_ref = _Lookup(_resolver(dirs(ref_dirs or dist_dirs), recursive), extensions)
    score_col = header[2] if mode == "FR" and len(header) > 2 else (header[1] if len(header) > 1 else "score")
    rows = []
    for line, values in body[skip_rows:]:
        values = [v.strip() for v in values]
        where = f"line {line}"
        if len(values) < n_min:
            expected = "ref_name,dist_name,score" if mode == "FR" else "image_name,score"
            raise BenchmarkFormatError(csv_path, where, f"{len(values)} fields", f"at least {n_min}: {expected}")
        origin = f"{csv_path}:{line}"
        split = None
        if split_idx is not None and split_idx < len(values) and values[split_idx] != "":
            split = _split_value(values[split_idx], csv_path, where)
        if mode == "FR":
            ref_name, dist_name, score = values[0], values[1], values[2]
            rows.append(Row(find_dist(dist_name, origin), find_ref(ref_name, origin),
                            _number(score, csv_path, where, score_col),
                            os.path.splitext(os.path.basename(ref_name))[0], origin, split))
        else:
            name, score = values[0], values[1]
            rows.append(Row(find_dist(name, origin), None, _number(score, csv_path, where, score_col),
                            os.path.splitext(name)[0], origin, split))
    has_split = split_idx is not None and all(r.split is not None for r in rows)
    if not has_split:
        for r in rows:
            r.split = None
    return Parsed(rows, csv_path, score_col, "pyiqa-csv", has_official_split=has_split,
                  missing=find_dist.missing + find_ref.missing), mode


def read_pyiqa(spec: BenchmarkSpec, root: str, csv_path: str) -> Parsed:
    """A benchmark's own meta CSV, its images where the record says they are."""
    meta = spec.pyiqa
    parsed, _ = read_meta_csv(csv_path, root, spec.mode, meta.dist_dirs, meta.ref_dirs, meta.recursive,
                              meta.extensions, skip_rows=meta.skip_rows)
    return parsed
