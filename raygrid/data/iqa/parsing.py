"""What every IQA label reader shares: the error types, the row records, and the parsing
helpers that turn a malformed file into one message naming the file, the line (or entry/row) and
what was expected."""

from __future__ import annotations

import csv
import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raygrid.data.images import CaseInsensitiveIndex
from raygrid.errors import PermanentError

SPLITS = ("train", "val", "test")


class BenchmarkFormatError(PermanentError, ValueError):
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


