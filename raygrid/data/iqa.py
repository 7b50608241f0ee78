"""IQA benchmark readers: every benchmark becomes one table with the same columns.

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

Original formats (datasets.md §5): LIVE Release 2 (dmos.mat + refnames_all.mat), CSIQ
(csiq.DMOS.xlsx, or its text copies csiq_dmos.txt / csiq_label.txt), TID2013
(mos_with_names.txt), KADID-10k (dmos.csv), PIPAL (Train_Label/*.txt), KonIQ-10k
(koniq10k_distributions_sets.csv or koniq10k_scores_and_distributions.csv), SPAQ
(MOS and Image attribute scores.xlsx, or a CSV export of it), LIVE Challenge
(Data/AllImages_release.mat + AllMOS_release.mat). The demo sets use the KADID-10k (demo_fr) and
KonIQ-10k (demo_nr) formats, so they go through these same readers.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from raygrid import catalog
from raygrid.data.images import (
    CaseInsensitiveIndex,
    DatasetRootError,
    ImageDecodeError,
    read_rgb,
    resize_rgb,
    to_tensor,
)
from raygrid.io import ensure_local
from raygrid.io import is_s3 as is_s3_uri

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
COLUMNS = ["dist", "ref", "score", "score_raw", "score_norm", "split", "ref_id", "origin"]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class BenchmarkFormatError(ValueError):
    """A label file that does not parse: names the file, the line (or entry/row) and what was
    expected."""

    def __init__(self, path: str | os.PathLike, where: str | None, problem: str, expected: str | None = None):
        self.path, self.where, self.problem, self.expected = str(path), where, problem, expected
        loc = f"{self.path}, {where}" if where else self.path
        msg = f"{loc}: {problem}"
        if expected:
            msg += f"; expected {expected}"
        super().__init__(msg)


class MissingImageError(BenchmarkFormatError, FileNotFoundError):
    """A label that names an image which is not on disk."""


# ---------------------------------------------------------------------------------------------
# Benchmark descriptions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    mode: Literal["FR", "NR"]
    score_column: str  # the rating's column / variable name in the original files
    lower_better: bool  # direction of the raw rating
    score_range: tuple[float, float]  # nominal range: used to flip and to normalise
    pyiqa_meta: str | None  # meta_info_<X>Dataset.csv stem


SPECS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("live", "FR", "dmos", True, (0.0, 100.0), "LIVEIQA"),
        BenchmarkSpec("csiq", "FR", "dmos", True, (0.0, 1.0), "CSIQ"),
        BenchmarkSpec("tid2013", "FR", "mos", False, (0.0, 9.0), "TID2013"),
        BenchmarkSpec("kadid10k", "FR", "dmos", False, (1.0, 5.0), "KADID10k"),
        # Elo scores: observed 917-1836; pyiqa's config says [0, 1], which is wrong for Elo.
        BenchmarkSpec("pipal", "FR", "elo_score", False, (800.0, 2000.0), "PIPAL"),
        BenchmarkSpec("koniq10k", "NR", "MOS", False, (0.0, 100.0), "KonIQ10k"),
        BenchmarkSpec("spaq", "NR", "MOS", False, (0.0, 100.0), "SPAQ"),
        BenchmarkSpec("livec", "NR", "AllMOS_release", False, (0.0, 100.0), "LIVEChallenge"),
        BenchmarkSpec("demo_fr", "FR", "dmos", False, (1.0, 5.0), None),
        BenchmarkSpec("demo_nr", "NR", "MOS", False, (0.0, 100.0), None),
    ]
}

# LIVE Release 2: dmos.mat lists the five distortion folders in this order, with these counts
# (227 + 233 + 174 * 3 = 982 entries, 203 of them reference copies flagged by `orgs`).
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVEC_TRAINING_IMAGES = 7  # CLIVE's first 7 entries are its training images; readers drop them


@dataclass
class Row:
    dist: str
    ref: str | None
    score_raw: float
    ref_id: str
    origin: str
    split: str | None = None


@dataclass
class Parsed:
    """What a reader returns; `finish` turns it into the table."""

    rows: list[Row]
    label_file: str
    score_column: str
    source: str
    has_official_split: bool = False
    missing: list[tuple[str, str]] = field(default_factory=list)  # (origin, name) not found


# ---------------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------------


def _number(value, path, where: str, column: str) -> float:
    try:
        x = float(str(value).strip())
    except ValueError:
        raise BenchmarkFormatError(path, where, f"column {column!r} is {value!r}", "a number") from None
    if not np.isfinite(x):
        raise BenchmarkFormatError(path, where, f"column {column!r} is {value!r}", "a finite number")
    return x


def _csv_records(path: str, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Rows of a headed CSV as (line number, {column: value}); checks the header and row widths."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BenchmarkFormatError(path, "line 1", "file is empty", f"a header with {', '.join(required)}") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise BenchmarkFormatError(
                path, "line 1", f"header {','.join(header)!r} lacks {', '.join(missing)}",
                f"columns {', '.join(required)}",
            )
        records = []
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise BenchmarkFormatError(
                    path, f"line {line}", f"{len(values)} fields", f"{len(header)} fields ({','.join(header)})"
                )
            records.append((line, {h: v.strip() for h, v in zip(header, values)}))
    return header, records


def _loadmat(path: str) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a bad file
        raise BenchmarkFormatError(path, None, f"not a readable MATLAB file ({type(exc).__name__}: {exc})") from exc


def _mat_var(mat: dict, path: str, names: Sequence[str]):
    for n in names:
        if n in mat:
            return mat[n]
    found = [k for k in mat if not k.startswith("__")]
    raise BenchmarkFormatError(path, None, f"variables {found}", f"a variable named {' or '.join(names)}")


def _mat_strings(arr) -> list[str]:
    """A MATLAB cell array of strings (any shape) -> list of str."""
    out = []
    for item in np.asarray(arr, dtype=object).ravel():
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        if isinstance(item, np.ndarray):
            item = "".join(item.ravel().tolist()) if item.dtype.kind == "U" else str(item.ravel()[0])
        out.append(str(item).strip())
    return out


def _resolver(folders: Iterable[str], recursive: bool = False) -> CaseInsensitiveIndex:
    return CaseInsensitiveIndex([f for f in folders if os.path.isdir(f)], recursive=recursive)


def _find_first(root: str, patterns: Sequence[str]) -> str | None:
    """First file matching one of the patterns ('<subfolder>/<glob>', the glob matched
    case-insensitively against file names)."""
    for pattern in patterns:
        directory, name = os.path.split(pattern)
        base = os.path.join(root, directory)
        if not os.path.isdir(base):
            continue
        regex = re.compile(fnmatch.translate(name), re.IGNORECASE)
        for entry in sorted(os.listdir(base)):
            full = os.path.join(base, entry)
            if os.path.isfile(full) and regex.match(entry):
                return full
    return None


def _origin(path: str, where: str) -> str:
    """'<file>:<line>' for text lines, '<file>:row N' / '<file>:entry N' otherwise."""
    return f"{path}:{where[len('line '):]}" if where.startswith("line ") else f"{path}:{where}"


class _Lookup:
    """Resolve names from a label file to paths; collects the misses with their origin."""

    def __init__(self, index: CaseInsensitiveIndex, extensions: Sequence[str] = ()):
        self.index = index
        self.extensions = extensions
        self.missing: list[tuple[str, str]] = []

    def __call__(self, name: str, origin: str) -> str:
        found = self.index.find(name)
        if found is None and not os.path.splitext(name)[1]:
            for ext in self.extensions:
                found = self.index.find(name + ext)
                if found:
                    break
        if found is None:
            self.missing.append((origin, name))
            return name
        return found


# ---------------------------------------------------------------------------------------------
# Readers of the original formats
# ---------------------------------------------------------------------------------------------


def _table_lines(path: str, fields: int, expected: str, errors: str = "strict"):
    """(line number, fields) of a whitespace- or tab-separated label file, blank lines skipped;
    a line with another number of fields is a BenchmarkFormatError naming the file and line."""
    with open(path, encoding="utf-8", errors=errors) as f:
        for line_no, line in enumerate(f, 1):
            parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split()) if p.strip()]
            if not parts:
                continue
            if len(parts) != fields:
                raise BenchmarkFormatError(path, f"line {line_no}", f"{len(parts)} fields in {line.strip()!r}", expected)
            yield line_no, parts


def read_kadid10k(root: str) -> Parsed:
    """KADID-10k `dmos.csv`: dist_img,ref_img,dmos,var; images in `images/`. Higher = better."""
    label = os.path.join(root, "dmos.csv")
    _, records = _csv_records(label, ["dist_img", "ref_img", "dmos"])
    find = _Lookup(_resolver([os.path.join(root, "images"), root]))
    rows = []
    for line, rec in records:
        where = f"line {line}"
        origin = f"{label}:{line}"
        score = _number(rec["dmos"], label, where, "dmos")
        rows.append(Row(find(rec["dist_img"], origin), find(rec["ref_img"], origin), score,
                        os.path.splitext(rec["ref_img"])[0], origin))
    return Parsed(rows, label, "dmos", "original", missing=find.missing)


def read_tid2013(root: str) -> Parsed:
    """TID2013 `mos_with_names.txt`: '<mos> <name>' per line; refs are `I01.BMP` (mixed case)."""
    label = _find_first(root, ["mos_with_names.txt"])
    if label is None:
        raise FileNotFoundError(os.path.join(root, "mos_with_names.txt"))
    find = _Lookup(_resolver([os.path.join(root, "distorted_images"), os.path.join(root, "reference_images"), root]))
    rows = []
    for line_no, parts in _table_lines(label, 2, "'<mos> <image name>', e.g. '5.51429 I01_01_1.bmp'", "replace"):
        where = f"line {line_no}"
        score = _number(parts[0], label, where, "mos")
        name = parts[1]
        if not re.match(r"^[iI]\d\d_", name):
            raise BenchmarkFormatError(label, where, f"image name {name!r}", "a name like I01_01_1.bmp")
        ref_id = name[:3].upper()
        origin = f"{label}:{line_no}"
        ref = find(f"{ref_id}.bmp", origin)
        rows.append(Row(find(name, origin), ref, score, ref_id, origin))
    return Parsed(rows, label, "mos", "original", missing=find.missing)


def read_live(root: str) -> Parsed:
    """LIVE Release 2: dmos.mat (`dmos`, `orgs`) + refnames_all.mat; entries in folder order
    jp2k, jpeg, wn, gblur, fastfading as imgN.bmp; `orgs == 1` marks reference copies (dropped).
    DMOS: lower = better."""
    dmos_file = os.path.join(root, "dmos.mat")
    refs_file = os.path.join(root, "refnames_all.mat")
    if not os.path.isfile(dmos_file):
        raise FileNotFoundError(dmos_file)
    if not os.path.isfile(refs_file):
        raise BenchmarkFormatError(refs_file, None, "file not found", "refnames_all.mat next to dmos.mat")
    mat = _loadmat(dmos_file)
    dmos = np.asarray(_mat_var(mat, dmos_file, ["dmos"]), dtype=float).ravel()
    orgs = np.asarray(_mat_var(mat, dmos_file, ["orgs"])).ravel()
    refnames = _mat_strings(_mat_var(_loadmat(refs_file), refs_file, ["refnames_all"]))
    total = sum(n for _, n in LIVE_FOLDERS)
    expected = f"{total} entries ({' + '.join(f'{n} {d}' for d, n in LIVE_FOLDERS)})"
    if dmos.size != total:
        raise BenchmarkFormatError(dmos_file, "variable dmos", f"{dmos.size} entries", expected)
    if orgs.size != total:
        raise BenchmarkFormatError(dmos_file, "variable orgs", f"{orgs.size} entries", expected)
    if len(refnames) != total:
        raise BenchmarkFormatError(refs_file, "variable refnames_all", f"{len(refnames)} entries", expected)
    find = _Lookup(_resolver([os.path.join(root, "refimgs")]))
    rows = []
    k = 0
    for folder, count in LIVE_FOLDERS:
        dist_find = _Lookup(_resolver([os.path.join(root, folder)]))
        for j in range(1, count + 1):
            if not orgs[k]:
                origin = f"{dmos_file}:entry {k + 1}"
                if not np.isfinite(dmos[k]):
                    raise BenchmarkFormatError(dmos_file, f"entry {k + 1}", f"dmos is {dmos[k]}", "a finite number")
                dist = dist_find(f"img{j}.bmp", origin)
                ref = find(refnames[k], origin)
                rows.append(Row(dist, ref, float(dmos[k]), os.path.splitext(refnames[k])[0], origin))
            k += 1
        find.missing.extend((o, f"{folder}/{n}") for o, n in dist_find.missing)
    return Parsed(rows, dmos_file, "dmos", "original", missing=find.missing)


# CSIQ distortion types as the spreadsheet writes them -> (folder, tag in the file name)
_CSIQ_TYPES = {
    "noise": ("awgn", "AWGN"), "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg2000": ("jpeg2000", "jpeg2000"), "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"), "f noise": ("fnoise", "fnoise"), "pink noise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}


def _csiq_dist_name(image: str, dst_type: str, level, path, where) -> str:
    key = re.sub(r"\s+", " ", str(dst_type).strip().lower())
    if key not in _CSIQ_TYPES:
        raise BenchmarkFormatError(path, where, f"distortion type {dst_type!r}",
                                   "one of noise, jpeg, jpeg 2000, f noise, blur, contrast")
    lev = int(_number(level, path, where, "dst_lev"))
    return f"{image}.{_CSIQ_TYPES[key][1]}.{lev}.png"


def read_csiq(root: str) -> Parsed:
    """CSIQ: csiq.DMOS.xlsx (columns image, dst_idx, dst_type, dst_lev, dmos_std, dmos), or the
    tab-separated copy csiq_dmos.txt with those six columns, or csiq_label.txt ('<name> <dmos>').
    Images: dst_imgs/<type>/<image>.<TAG>.<lev>.png, src_imgs/<image>.png. DMOS: lower = better."""
    find = _Lookup(_resolver([os.path.join(root, "dst_imgs"), os.path.join(root, "src_imgs")], recursive=True))
    rows: list[Row] = []

    def add(image: str, dist_name: str, score: float, label: str, where: str) -> None:
        origin = _origin(label, where)
        rows.append(Row(find(dist_name, origin), find(f"{image}.png", origin), score, image, origin))

    xlsx = _find_first(root, ["csiq.DMOS.xlsx", "*DMOS*.xlsx"])
    txt6 = _find_first(root, ["csiq_dmos.txt"])
    txt2 = _find_first(root, ["csiq_label.txt"])
    if xlsx:
        label = xlsx
        table, first_row = _excel_table(xlsx, ["image", "dst_type", "dst_lev", "dmos"])
        for i, rec in enumerate(table.to_dict("records")):
            where = f"row {first_row + i}"
            if pd.isna(rec["image"]):
                continue
            image = str(rec["image"]).strip()
            image = image.removesuffix(".0")  # numeric names such as 1600 come back as floats
            add(image, _csiq_dist_name(image, rec["dst_type"], rec["dst_lev"], xlsx, where),
                _number(rec["dmos"], xlsx, where, "dmos"), xlsx, where)
    elif txt6:
        label = txt6
        six = "6 tab-separated fields: image dst_idx dst_type dst_lev dmos_std dmos"
        for line_no, parts in _table_lines(txt6, 6, six):
            where = f"line {line_no}"
            add(parts[0], _csiq_dist_name(parts[0], parts[2], parts[3], txt6, where),
                _number(parts[5], txt6, where, "dmos"), txt6, where)
    elif txt2:
        label = txt2
        for line_no, parts in _table_lines(txt2, 2, "'<image name> <dmos>'"):
            where = f"line {line_no}"
            name = os.path.basename(parts[0])
            add(name.split(".")[0], name, _number(parts[1], txt2, where, "dmos"), txt2, where)
    else:
        raise FileNotFoundError(os.path.join(root, "csiq.DMOS.xlsx"))
    return Parsed(rows, label, "dmos", "original", missing=find.missing)


def _excel_table(path: str, required: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """The first sheet with a header row (within its first 10 rows) holding `required` columns
    (matched case-insensitively). Returns the table and the spreadsheet row number of its first
    data row, for error messages."""
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None)
    except ImportError as exc:
        raise ImportError(f"reading {path} needs openpyxl (pip install openpyxl): {exc}") from exc
    except Exception as exc:
        raise BenchmarkFormatError(path, None, f"not a readable spreadsheet ({type(exc).__name__}: {exc})") from exc
    want = [r.lower() for r in required]
    for raw in sheets.values():
        for h in range(min(10, len(raw))):
            names = [str(v).strip() for v in raw.iloc[h].tolist()]
            lowered = [n.lower() for n in names]
            if all(w in lowered for w in want):
                table = raw.iloc[h + 1 :].copy()
                table.columns = names
                rename = {n: r for r in required for n in names if n.lower() == r.lower()}
                return table.rename(columns=rename).reset_index(drop=True), h + 2
    raise BenchmarkFormatError(path, None, "no sheet has a header row with the needed columns",
                               f"columns {', '.join(required)}")


def read_pipal(root: str) -> Parsed:
    """PIPAL: Train_Label/A0001.txt with lines 'A0001_00_00.bmp,1520.0648' (name, Elo);
    references Train_Ref/A0001.bmp; distorted images anywhere else under root. Higher = better."""
    label_dir = os.path.join(root, "Train_Label")
    label_files = sorted(glob.glob(os.path.join(label_dir, "*.txt")))
    if not label_files:
        raise FileNotFoundError(os.path.join(label_dir, "*.txt"))
    dist_folders = [os.path.join(root, d) for d in sorted(os.listdir(root))
                    if os.path.isdir(os.path.join(root, d)) and d not in ("Train_Label", "Train_Ref")]
    find_dist = _Lookup(_resolver(dist_folders, recursive=True))
    find_ref = _Lookup(_resolver([os.path.join(root, "Train_Ref")]))
    rows = []
    for label in label_files:
        ref_id = os.path.splitext(os.path.basename(label))[0]
        with open(label, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"line {line_no}"
                parts = [p.strip() for p in line.split(",")]
                if len(parts) != 2:
                    raise BenchmarkFormatError(label, where, f"{len(parts)} fields in {line.strip()!r}",
                                               "'<image name>,<elo score>', e.g. 'A0001_00_00.bmp,1520.0648'")
                origin = f"{label}:{line_no}"
                score = _number(parts[1], label, where, "elo_score")
                rows.append(Row(find_dist(parts[0], origin), find_ref(f"{ref_id}.bmp", origin), score, ref_id, origin))
    return Parsed(rows, label_dir, "elo_score", "original", missing=find_dist.missing + find_ref.missing)


_SPLIT_NAMES = {
    "train": "train", "training": "train", "0": "train",
    "val": "val", "valid": "val", "validation": "val", "1": "val",
    "test": "test", "testing": "test", "2": "test",
}


def _split_value(value: str, path, where) -> str:
    key = str(value).strip().lower()
    key = key.removesuffix(".0")
    if key not in _SPLIT_NAMES:
        raise BenchmarkFormatError(path, where, f"split {value!r}", "training/validation/test (or train/val/test, 0/1/2)")
    return _SPLIT_NAMES[key]


def _koniq_images(root: str) -> list[str]:
    return [os.path.join(root, d) for d in ("1024x768", "512x384", "images")] + [root]


def read_koniq10k(root: str) -> Parsed:
    """KonIQ-10k: koniq10k_distributions_sets.csv (image_name, ..., MOS on 0-100, SD, set) with the
    official training/validation/test split; else koniq10k_scores_and_distributions.csv (MOS_zscore
    on 0-100, no split). Images in 1024x768/ (or 512x384/). Higher = better."""
    sets = _find_first(root, ["koniq10k_distributions_sets.csv"])
    scores = _find_first(root, ["koniq10k_scores_and_distributions.csv"])
    if sets:
        label, score_col, split_col = sets, "MOS", "set"
    elif scores:
        label, score_col, split_col = scores, "MOS_zscore", None
    else:
        raise FileNotFoundError(os.path.join(root, "koniq10k_distributions_sets.csv"))
    required = ["image_name", score_col] + ([split_col] if split_col else [])
    _, records = _csv_records(label, required)
    folder = next((d for d in _koniq_images(root) if os.path.isdir(d)), root)
    find = _Lookup(_resolver([folder]))
    rows = []
    for line, rec in records:
        where = f"line {line}"
        origin = f"{label}:{line}"
        split = _split_value(rec[split_col], label, where) if split_col else None
        name = rec["image_name"]
        rows.append(Row(find(name, origin), None, _number(rec[score_col], label, where, score_col),
                        os.path.splitext(name)[0], origin, split))
    return Parsed(rows, label, score_col, "original", has_official_split=bool(split_col), missing=find.missing)


def read_spaq(root: str) -> Parsed:
    """SPAQ: Annotations/MOS and Image attribute scores.xlsx (columns 'Image name', 'MOS', ...), or a
    CSV export with the same columns; images in TestImage/. MOS 0-100, higher = better."""
    sheet = _find_first(root, ["Annotations/MOS and Image attribute scores.xlsx", "MOS and Image attribute scores.xlsx"])
    csv_copy = _find_first(root, ["Annotations/MOS and Image attribute scores.csv", "MOS and Image attribute scores.csv"])
    find = _Lookup(_resolver([os.path.join(root, "TestImage")] + [root]))
    rows = []
    if sheet:
        label = sheet
        table, first_row = _excel_table(sheet, ["Image name", "MOS"])
        records = [(first_row + i, rec) for i, rec in enumerate(table.to_dict("records"))]
        prefix = "row"
    elif csv_copy:
        label = csv_copy
        _, records = _csv_records(csv_copy, ["Image name", "MOS"])
        prefix = "line"
    else:
        raise FileNotFoundError(os.path.join(root, "Annotations", "MOS and Image attribute scores.xlsx"))
    for n, rec in records:
        if pd.isna(rec["Image name"]) or not str(rec["Image name"]).strip():
            continue
        where = f"{prefix} {n}"
        origin = _origin(label, where)
        name = str(rec["Image name"]).strip()
        rows.append(Row(find(name, origin), None, _number(rec["MOS"], label, where, "MOS"),
                        os.path.splitext(name)[0], origin))
    return Parsed(rows, label, "MOS", "original", missing=find.missing)


def read_livec(root: str) -> Parsed:
    """LIVE Challenge: Data/AllImages_release.mat + Data/AllMOS_release.mat (1169 entries); the first
    7 (training images) are dropped, as HyperIQA-style loaders do. Images in Images/. Higher = better."""
    data = os.path.join(root, "Data")
    names_file = os.path.join(data, "AllImages_release.mat")
    mos_file = os.path.join(data, "AllMOS_release.mat")
    if not os.path.isfile(mos_file):
        raise BenchmarkFormatError(mos_file, None, "file not found", "AllMOS_release.mat next to AllImages_release.mat")
    names = _mat_strings(_mat_var(_loadmat(names_file), names_file, ["AllImages_release"]))
    mos = np.asarray(_mat_var(_loadmat(mos_file), mos_file, ["AllMOS_release"]), dtype=float).ravel()
    if len(names) != mos.size:
        raise BenchmarkFormatError(mos_file, "variable AllMOS_release",
                                   f"{mos.size} entries but AllImages_release has {len(names)}", "the same count")
    find = _Lookup(_resolver([os.path.join(root, "Images"), os.path.join(root, "Images", "trainingImages")]))
    rows = []
    for k in range(LIVEC_TRAINING_IMAGES, len(names)):
        origin = f"{mos_file}:entry {k + 1}"
        if not np.isfinite(mos[k]):
            raise BenchmarkFormatError(mos_file, f"entry {k + 1}", f"MOS is {mos[k]}", "a finite number")
        rows.append(Row(find(names[k], origin), None, float(mos[k]), os.path.splitext(names[k])[0], origin))
    return Parsed(rows, mos_file, "AllMOS_release", "original", missing=find.missing)


# ---------------------------------------------------------------------------------------------
# pyiqa meta-info CSVs (positional: FR ref,dist,score; NR name,score)
# ---------------------------------------------------------------------------------------------

# Image folders (relative to the benchmark root) for pyiqa's meta CSV of each benchmark:
# (distorted-image folders, reference folders, search recursively, extensions for bare names)
_PYIQA_FOLDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool, tuple[str, ...]]] = {
    "live": ((".",), ("refimgs", "."), False, (".bmp",)),
    "csiq": (("dst_imgs",), ("src_imgs",), True, ()),
    "tid2013": (("distorted_images",), ("reference_images",), False, ()),
    "kadid10k": (("images",), ("images",), False, ()),
    "pipal": (("Dist_Imgs", "Train_Dist", "Distortion", "."), ("Train_Ref",), True, ()),
    "koniq10k": (("1024x768", "512x384", "images"), (), False, ()),
    "spaq": (("TestImage",), (), False, ()),
    "livec": (("Images",), (), True, ()),
}
_SPLIT_COLUMNS = ("official_split", "split")


def find_pyiqa_meta(name: str, root: str) -> str | None:
    spec = SPECS.get(name)
    if spec is None or spec.pyiqa_meta is None:
        return None
    fname = f"meta_info_{spec.pyiqa_meta}Dataset.csv"
    for folder in (root, os.path.join(root, "meta_info"), os.path.join(os.path.dirname(root.rstrip("/")), "meta_info")):
        path = os.path.join(folder, fname)
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


def _read_pyiqa(name: str, root: str, csv_path: str) -> Parsed:
    dist_dirs, ref_dirs, recursive, exts = _PYIQA_FOLDERS[name]
    parsed, _ = read_meta_csv(csv_path, root, SPECS[name].mode, dist_dirs, ref_dirs, recursive, exts,
                              skip_rows=LIVEC_TRAINING_IMAGES if name == "livec" else 0)
    return parsed


# ---------------------------------------------------------------------------------------------
# Registry, table assembly, splits
# ---------------------------------------------------------------------------------------------

Reader = Callable[[str], Parsed]

# The original-format reader of every catalog benchmark (the demo sets reuse real formats).
READERS: dict[str, Reader] = {
    "live": read_live,
    "csiq": read_csiq,
    "tid2013": read_tid2013,
    "kadid10k": read_kadid10k,
    "pipal": read_pipal,
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "livec": read_livec,
    "demo_fr": read_kadid10k,
    "demo_nr": read_koniq10k,
}

# What each original reader looks for, for the "nothing found" message.
_EXPECTED_FILES = {
    "live": "dmos.mat + refnames_all.mat",
    "csiq": "csiq.DMOS.xlsx (or csiq_dmos.txt / csiq_label.txt)",
    "tid2013": "mos_with_names.txt",
    "kadid10k": "dmos.csv",
    "pipal": "Train_Label/*.txt",
    "koniq10k": "koniq10k_distributions_sets.csv (or koniq10k_scores_and_distributions.csv)",
    "spaq": "Annotations/MOS and Image attribute scores.xlsx",
    "livec": "Data/AllImages_release.mat + Data/AllMOS_release.mat",
    "demo_fr": "dmos.csv",
    "demo_nr": "koniq10k_distributions_sets.csv",
}


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
    """Folder of a benchmark: a catalog name is looked up under `data_root` (demo sets are built on
    first use); "csv:<path>" gives the CSV's folder (relative paths are under `data_root`); anything
    else is taken as a path."""
    if name in catalog.BENCHMARKS:
        if name.startswith("demo_"):
            from raygrid.data.demo import build_demo

            # an s3:// data root cannot hold a locally built demo: use the local cache then
            return build_demo(None if is_s3_uri(data_root) else data_root)[name]
        folder = catalog.BENCHMARKS[name].folder
        if is_s3_uri(data_root):
            return f"{data_root.rstrip('/')}/{folder}"
        return os.path.join(os.path.expanduser(data_root), folder)
    if name.startswith(catalog.CSV_PREFIX):
        path = os.path.expanduser(name[len(catalog.CSV_PREFIX) :])
        if not os.path.isabs(path):
            path = os.path.join(os.path.expanduser(data_root), path)
        return os.path.dirname(path)
    return os.path.expanduser(name)


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
    """The table of benchmark `name` (a catalog name or "csv:<path>") found at `root`.

    `source="auto"` reads the original label files when present, else pyiqa's meta CSV. A label
    that names a missing image raises MissingImageError (file and line), unless `skip_missing`,
    which drops such rows and logs the count. `lower_better` sets the direction of a generic
    "csv:" set (default: higher = better); catalog benchmarks know theirs. `seed` and the
    fractions drive the random split of benchmarks without an official one.
    """
    if is_s3_uri(root):
        root = ensure_local(root, endpoint_url)
    if name.startswith(catalog.CSV_PREFIX):
        given = os.path.expanduser(name[len(catalog.CSV_PREFIX) :])
        candidates = [given] if os.path.isabs(given) else [
            given, os.path.join(root, os.path.basename(given)), os.path.join(root, given)]
        csv_path = next((c for c in candidates if os.path.isfile(c)), candidates[-1])
        if not os.path.isfile(csv_path):
            raise DatasetRootError(f"benchmark {name!r}: meta-info CSV not found: {csv_path}")
        parsed, mode = read_meta_csv(csv_path, root)
        parsed.source = "csv"
        lb = bool(lower_better)
        spec = BenchmarkSpec(name, mode, parsed.score_column, lb, _observed_range(parsed), None)
        return finish(parsed, spec, seed, test_fraction, val_fraction, skip_missing)

    if name not in SPECS:
        known = ", ".join(sorted(SPECS))
        raise ValueError(f"unknown benchmark {name!r}; expected one of {known} or csv:<path>")
    spec = SPECS[name]
    if not os.path.isdir(root):
        raise DatasetRootError(
            f"benchmark {name!r}: dataset root does not exist: {root} "
            f"(expected {_EXPECTED_FILES[name]} there, or pyiqa's meta_info CSV)"
        )
    parsed = None
    if source in ("auto", "original"):
        try:
            parsed = READERS[name](root)
        except FileNotFoundError as exc:  # no label file in the original format: try pyiqa's
            if source == "original":
                raise DatasetRootError(
                    f"benchmark {name!r}: label file not found under {root}: {exc} "
                    f"(expected {_EXPECTED_FILES[name]})"
                ) from exc
    if parsed is None:
        csv_path = find_pyiqa_meta(name, root)
        if csv_path is None:
            meta = f"meta_info_{spec.pyiqa_meta}Dataset.csv" if spec.pyiqa_meta else None
            also = f" or pyiqa's {meta} in {root} or its meta_info folder" if meta and source == "auto" else ""
            raise DatasetRootError(
                f"benchmark {name!r}: no label files under {root}; expected {_EXPECTED_FILES[name]}{also}"
            )
        parsed = _read_pyiqa(name, root, csv_path)
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


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class IQADataset(Dataset):
    """Images (NR) or image pairs (FR) with their scores, from a `load_benchmark` table.

    Yields {"dist": float32 3xHxW in [0, 1], "ref": same (FR only), "score": float32 scalar,
    "index": row position in the split}. `size` resizes every image to size x size (bicubic),
    for batching; None keeps the native resolution (use batch_size=1). `crop` takes a random
    crop, at the same place in dist and ref, drawn from (seed, epoch, index) so workers and ranks
    agree; `set_epoch` changes it. `target` picks the score column ("score" or "score_norm").
    With `skip_unreadable`, an image that does not decode is replaced by the next readable row and
    counted in the log (for training; use `check_images` to clean an evaluation table).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        split: str | Sequence[str],
        size: int | None = None,
        crop: int | None = None,
        seed: int = 0,
        target: str = "score",
        skip_unreadable: bool = False,
    ):
        splits = [split] if isinstance(split, str) else list(split)
        rows = table[table["split"].isin(splits)].reset_index(drop=True)
        if rows.empty:
            have = sorted(table["split"].dropna().unique().tolist())
            raise ValueError(f"no rows in split {splits} of {table.attrs.get('benchmark', 'table')}; splits present: {have}")
        if target not in rows.columns:
            raise ValueError(f"target {target!r} is not a column of the table")
        self.rows = rows
        self.mode = table.attrs.get("mode") or ("FR" if rows["ref"].notna().all() else "NR")
        self.size, self.crop, self.seed, self.target = size, crop, seed, target
        self.skip_unreadable = skip_unreadable
        self.epoch = 0
        self.skipped = 0
        self._unreadable: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _images(self, i: int) -> list[np.ndarray]:
        row = self.rows.iloc[i]
        paths = [row["dist"]] + ([row["ref"]] if self.mode == "FR" else [])
        return [read_rgb(p, listed_at=row["origin"]) for p in paths]

    def __getitem__(self, index: int) -> dict:
        n = len(self.rows)
        for step in range(n):
            i = (index + step) % n
            if i in self._unreadable:
                continue
            try:
                images = self._images(i)
                break
            except ImageDecodeError as exc:
                if not self.skip_unreadable:
                    raise
                self._unreadable.add(i)
                self.skipped += 1
                log.warning("skipped unreadable image %s (%d skipped so far in this process)", exc.path, self.skipped)
        else:
            raise DatasetRootError("IQA dataset: no readable image left")
        if self.size is not None:
            images = [resize_rgb(im, (self.size, self.size)) for im in images]
        if self.crop is not None:
            h, w = images[0].shape[:2]
            c = self.crop
            if h < c or w < c:
                raise ValueError(f"image {self.rows.iloc[i]['dist']} is {h}x{w}, smaller than crop={c}")
            rng = np.random.default_rng([self.seed, self.epoch, index])
            top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            images = [im[top : top + c, left : left + c] for im in images]
        out = {
            "dist": to_tensor(images[0]),
            "score": torch.tensor(float(self.rows.iloc[i][self.target]), dtype=torch.float32),
            "index": i,
        }
        if self.mode == "FR":
            out["ref"] = to_tensor(images[1])
        return out
