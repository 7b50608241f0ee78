"""Readers of the benchmarks' original label files; each returns the parsed rows (`Parsed`).

Formats (docs/datasets.md): LIVE Release 2 (dmos.mat + refnames_all.mat), CSIQ (csiq.DMOS.xlsx,
or its text copies csiq_dmos.txt / csiq_label.txt), TID2013 (mos_with_names.txt), KADID-10k
(dmos.csv), PIPAL (Train_Label/*.txt), KonIQ-10k (koniq10k_distributions_sets.csv or
koniq10k_scores_and_distributions.csv), SPAQ (MOS and Image attribute scores.xlsx, or a CSV
export of it), LIVE Challenge (Data/AllImages_release.mat + AllMOS_release.mat). A benchmark
record's `label_format` (raygrid.spec.datasets) names its reader in READERS; the demo sets use the
KADID-10k and KonIQ-10k formats, so they go through these same readers.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from raygrid.data.iqa.parsing import (
    BenchmarkFormatError,
    Parsed,
    Row,
    _csv_records,
    _excel_table,
    _find_first,
    _Lookup,
    _loadmat,
    _mat_strings,
    _mat_var,
    _number,
    _origin,
    _resolver,
    _split_value,
    _table_lines,
)
from raygrid.spec.datasets import LIVEC_TRAINING_IMAGES, LabelFormat

# LIVE Release 2: dmos.mat lists the five distortion folders in this order, with these counts
# (227 + 233 + 174 * 3 = 982 entries, 203 of them reference copies flagged by `orgs`).
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))





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



Reader = Callable[[str], Parsed]

# The reader of each original label-file format.
READERS: dict[LabelFormat, Reader] = {
    "live": read_live,
    "csiq": read_csiq,
    "tid2013": read_tid2013,
    "kadid10k": read_kadid10k,
    "pipal": read_pipal,
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "livec": read_livec,
}
