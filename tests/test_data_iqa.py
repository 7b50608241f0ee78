"""IQA benchmark readers on tiny fixtures in every original format and in pyiqa's meta CSVs:
row counts, score direction, splits (by reference, official), the Dataset, and bad input."""

import csv
import logging
import os

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
from PIL import Image

from raygrid.data.images import DatasetRootError, ImageDecodeError
from raygrid.data.iqa import (
    LIVE_FOLDERS,
    READERS,
    BenchmarkFormatError,
    MissingImageError,
    check_images,
    load_benchmark,
    resolve_benchmark_root,
    split_groups,
)
from raygrid.data.iqa.dataset import IQADataset
from raygrid.spec.datasets import BENCHMARKS

SIDE = 12


def img(path, seed=0, side=SIDE):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(abs(hash(path)) % 2**32 + seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)  # format from the extension (.png, .bmp, .jpg)


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def assert_split_by_reference(df):
    groups = df.groupby("ref_id")["split"].nunique()
    assert (groups == 1).all(), "a reference appears in two splits"
    assert set(df["split"]) <= {"train", "val", "test"}


# --- fixture builders, one per original format --------------------------------------------------


def make_kadid(root, n_ref=5, n_dist=3):
    rows = []
    for r in range(1, n_ref + 1):
        img(root / "images" / f"I{r:02d}.png")
        for d in range(1, n_dist + 1):
            name = f"I{r:02d}_{d:02d}_01.png"
            img(root / "images" / name)
            rows.append([name, f"I{r:02d}.png", round(5 - d * 0.9 - r * 0.01, 3), 0.3])
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return rows


def make_tid2013(root, n_ref=5):
    lines = []
    for r in range(1, n_ref + 1):
        # TID2013 mixes case: upper-case reference files, some lower-case distorted names
        img(root / "reference_images" / f"I{r:02d}.BMP".replace(".BMP", ".bmp"), 0)
        os.rename(root / "reference_images" / f"I{r:02d}.bmp", root / "reference_images" / f"I{r:02d}.BMP")
        for k in range(1, 3):
            name = f"{'i' if r == 2 else 'I'}{r:02d}_{k:02d}_1.bmp"
            img(root / "distorted_images" / name)
            lines.append(f"{6.0 - k + r / 10:.5f} {name}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return lines


def make_live(root, per_folder=2):
    total = sum(n for _, n in LIVE_FOLDERS)
    refs = ["bikes.bmp", "caps.bmp", "house.bmp", "monarch.bmp"]
    dmos = np.linspace(10, 80, total)
    orgs = np.ones(total)
    refnames = np.empty((1, total), dtype=object)
    k = 0
    for folder, count in LIVE_FOLDERS:
        for j in range(1, count + 1):
            refnames[0, k] = refs[k % len(refs)]
            if j <= per_folder:  # a few real distorted entries; the rest are reference copies
                orgs[k] = 0
                img(root / folder / f"img{j}.bmp")
            k += 1
    for r in refs:
        img(root / "refimgs" / r)
    scipy.io.savemat(root / "dmos.mat", {"dmos": dmos[None], "orgs": orgs[None]})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": refnames})
    return dmos, orgs


CSIQ_TYPES = [("noise", "awgn", "AWGN"), ("jpeg", "jpeg", "JPEG"), ("blur", "blur", "BLUR")]


def make_csiq_images(root, refs=("1600", "boston", "cactus", "elk", "fisher")):
    rows = []
    for r in refs:
        img(root / "src_imgs" / f"{r}.png")
        for t, (label, folder, tag) in enumerate(CSIQ_TYPES):
            img(root / "dst_imgs" / folder / f"{r}.{tag}.1.png")
            rows.append([r, t + 1, label, 1, 0.05, round(0.1 * (t + 1) + 0.01 * len(r), 4)])
    return rows


def make_pipal(root, n_ref=5):
    for r in range(1, n_ref + 1):
        ref = f"A{r:04d}"
        img(root / "Train_Ref" / f"{ref}.bmp")
        lines = []
        for d in range(3):
            name = f"{ref}_{d:02d}_00.bmp"
            img(root / "Distortion" / name)
            lines.append(f"{name},{1500 - 100 * d + r:.4f}")
        (root / "Train_Label").mkdir(parents=True, exist_ok=True)
        (root / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")


def make_koniq(root, n=10, with_sets=True):
    sets = ["training"] * 6 + ["validation"] * 2 + ["test"] * 2
    rows_sets, rows_scores = [], []
    for i in range(n):
        name = f"{1000 + i}.jpg"
        img(root / "1024x768" / name)
        c = [0.1, 0.2, 0.4, 0.2, 0.1]
        rows_sets.append([name, *c, 100, 30 + 5 * i, 0.5, sets[i]])
        rows_scores.append([name, *c, 100, 2 + 0.2 * i, 0.5, 30 + 5 * i])
    head = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total"]
    if with_sets:
        write_csv(root / "koniq10k_distributions_sets.csv", head + ["MOS", "SD", "set"], rows_sets)
    write_csv(root / "koniq10k_scores_and_distributions.csv", head + ["MOS", "SD", "MOS_zscore"], rows_scores)


def make_spaq(root, n=10):
    pytest.importorskip("openpyxl")
    names = [f"{i:05d}.jpg" for i in range(1, n + 1)]
    for nm in names:
        img(root / "TestImage" / nm)
    df = pd.DataFrame({"Image name": names, "MOS": np.linspace(20, 90, n), "Brightness": 50.0,
                       "Colorfulness": 50.0, "Contrast": 50.0, "Noisiness": 50.0, "Sharpness": 50.0})
    (root / "Annotations").mkdir(parents=True)
    df.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)


def make_livec(root, n=10):
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.bmp" for i in range(100, 100 + n)]
    for nm in names[7:]:
        img(root / "Images" / nm)
    cell = np.empty((len(names), 1), dtype=object)
    for i, nm in enumerate(names):
        cell[i, 0] = nm
    (root / "Data").mkdir(parents=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.linspace(10, 90, len(names))[None]})
    scipy.io.savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))})


# --- the registry -------------------------------------------------------------------------------


def test_every_benchmark_record_names_a_reader_and_its_files():
    for name, spec in BENCHMARKS.items():
        assert spec.label_format in READERS, name
        assert spec.expected_files, name
        if not name.startswith("demo_"):
            assert spec.pyiqa is not None and spec.pyiqa.file.startswith("meta_info_"), name


# --- original formats ---------------------------------------------------------------------------


def test_kadid10k(tmp_path):
    rows = make_kadid(tmp_path)
    df = load_benchmark("kadid10k", str(tmp_path), seed=0)
    assert len(df) == len(rows) == 15
    assert df.attrs["score_column"] == "dmos" and df.attrs["source"] == "original"
    assert not df.attrs["lower_better_raw"]
    assert np.allclose(df["score"], df["score_raw"])  # KADID's "dmos" is already higher = better
    assert np.allclose(df["score_norm"], (df["score_raw"] - 1) / 4)
    assert all(os.path.isfile(p) for p in df["dist"]) and all(os.path.isfile(p) for p in df["ref"])
    assert df["ref_id"].nunique() == 5
    assert_split_by_reference(df)
    assert set(df["split"]) == {"train", "test"}
    assert df.groupby("split")["ref_id"].nunique().to_dict() == {"train": 4, "test": 1}
    assert df["origin"].iloc[0].endswith("dmos.csv:2")


def test_split_is_seeded_and_by_reference(tmp_path):
    make_kadid(tmp_path, n_ref=10, n_dist=2)
    a = load_benchmark("kadid10k", str(tmp_path), seed=1)
    b = load_benchmark("kadid10k", str(tmp_path), seed=1)
    seeds = [load_benchmark("kadid10k", str(tmp_path), seed=s) for s in range(2, 6)]
    assert a["split"].tolist() == b["split"].tolist()
    assert any(s["split"].tolist() != a["split"].tolist() for s in seeds)
    for df in [a, *seeds]:
        assert_split_by_reference(df)
        assert df.groupby("split")["ref_id"].nunique().to_dict() == {"test": 2, "train": 8}
    three = load_benchmark("kadid10k", str(tmp_path), seed=1, test_fraction=0.2, val_fraction=0.1)
    assert three.groupby("split")["ref_id"].nunique().to_dict() == {"test": 2, "train": 7, "val": 1}
    assert split_groups(["a"], 0) == {"a": "train"}


def test_tid2013_mixed_case(tmp_path):
    make_tid2013(tmp_path)
    df = load_benchmark("tid2013", str(tmp_path))
    assert len(df) == 10 and df["ref_id"].nunique() == 5
    assert df.attrs["score_column"] == "mos" and np.allclose(df["score"], df["score_raw"])
    assert df.loc[df["ref_id"] == "I02", "dist"].str.contains("i02_").all()
    assert df["ref"].str.endswith(".BMP").all()
    assert_split_by_reference(df)


def test_live_drops_reference_copies_and_flips_dmos(tmp_path):
    dmos, orgs = make_live(tmp_path)
    df = load_benchmark("live", str(tmp_path))
    assert len(df) == int((orgs == 0).sum()) == 10
    assert df.attrs["lower_better_raw"] and df.attrs["score_column"] == "dmos"
    assert np.allclose(df["score"], 100 - df["score_raw"])  # DMOS on [0, 100] flipped
    assert np.corrcoef(df["score"], df["score_raw"])[0, 1] == pytest.approx(-1)
    assert np.allclose(df["score_norm"], 1 - df["score_raw"] / 100)
    assert {os.path.basename(os.path.dirname(p)) for p in df["dist"]} == {f for f, _ in LIVE_FOLDERS}
    # entry 228 is the first jpeg entry: jpeg/img1.bmp
    row = df[df["origin"].str.endswith("entry 228")].iloc[0]
    assert row["dist"].endswith(os.path.join("jpeg", "img1.bmp")) and row["score_raw"] == pytest.approx(dmos[227])
    assert_split_by_reference(df)


def test_csiq_xlsx_and_text_copy(tmp_path):
    pytest.importorskip("openpyxl")
    rows = make_csiq_images(tmp_path)
    table = pd.DataFrame(rows, columns=["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    with pd.ExcelWriter(tmp_path / "csiq.DMOS.xlsx") as xw:
        pd.DataFrame([["CSIQ DMOS"]]).to_excel(xw, sheet_name="all_by_image", index=False, header=False)
        table.to_excel(xw, sheet_name="all_by_image", index=False, startrow=2)  # title row above the header
    df = load_benchmark("csiq", str(tmp_path))
    assert len(df) == 15 and df.attrs["lower_better_raw"]
    assert np.allclose(df["score"], 1 - df["score_raw"])
    assert df["dist"].str.contains(os.path.join("dst_imgs", "awgn", "1600.AWGN.1.png")).any()
    assert df["origin"].iloc[0].endswith("csiq.DMOS.xlsx:row 4")
    assert_split_by_reference(df)

    os.remove(tmp_path / "csiq.DMOS.xlsx")
    (tmp_path / "csiq_dmos.txt").write_text("\n".join("\t".join(map(str, r)) for r in rows) + "\n")
    df2 = load_benchmark("csiq", str(tmp_path))
    assert df2["dist"].tolist() == df["dist"].tolist() and np.allclose(df2["score_raw"], df["score_raw"])


def test_pipal(tmp_path):
    make_pipal(tmp_path)
    df = load_benchmark("pipal", str(tmp_path))
    assert len(df) == 15 and df.attrs["score_column"] == "elo_score"
    assert np.allclose(df["score"], df["score_raw"]) and df["score_raw"].between(1300, 1600).all()
    assert df["ref"].str.endswith(os.path.join("Train_Ref", "A0001.bmp")).sum() == 3
    assert_split_by_reference(df)


def test_koniq_official_split_and_scores_only(tmp_path):
    make_koniq(tmp_path)
    df = load_benchmark("koniq10k", str(tmp_path))
    assert len(df) == 10 and df["ref"].isna().all()
    assert df["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    assert df.attrs["split_rule"] == "official" and df.attrs["score_column"] == "MOS"
    assert df["score"].tolist() == [30 + 5 * i for i in range(10)]

    os.remove(tmp_path / "koniq10k_distributions_sets.csv")
    df = load_benchmark("koniq10k", str(tmp_path), seed=0)
    assert df.attrs["score_column"] == "MOS_zscore" and df.attrs["split_rule"].startswith("random by image")
    assert df["split"].value_counts().to_dict() == {"train": 8, "test": 2}


def test_spaq(tmp_path):
    make_spaq(tmp_path)
    df = load_benchmark("spaq", str(tmp_path))
    assert len(df) == 10 and df.attrs["score_column"] == "MOS" and df["ref"].isna().all()
    assert df["score"].is_monotonic_increasing and df["origin"].iloc[0].endswith(":row 2")


def test_livec_drops_training_images(tmp_path):
    make_livec(tmp_path)
    df = load_benchmark("livec", str(tmp_path))
    assert len(df) == 10
    assert os.path.basename(df["dist"].iloc[0]) == "100.bmp"
    assert df["score"].iloc[0] == pytest.approx(np.linspace(10, 90, 17)[7])


# --- pyiqa meta CSVs ----------------------------------------------------------------------------


def test_pyiqa_meta_csvs(tmp_path):
    kadid = tmp_path / "kadid10k"
    rows = make_kadid(kadid)
    os.remove(kadid / "dmos.csv")
    write_csv(tmp_path / "meta_info" / "meta_info_KADID10kDataset.csv", ["ref_name", "dist_name", "dmos", "std"],
              [[r[1], r[0], r[2], r[3]] for r in rows])
    df = load_benchmark("kadid10k", str(kadid))
    assert df.attrs["source"] == "pyiqa-csv" and len(df) == 15
    assert_split_by_reference(df)

    live = tmp_path / "LIVE"
    img(live / "refimgs" / "bikes.bmp")
    img(live / "jp2k" / "img2.bmp")
    img(live / "wn" / "img1.bmp")
    write_csv(live / "meta_info_LIVEIQADataset.csv", ["ref_name", "dist_name", "mos"],
              [["bikes.bmp", "jp2k/img2", 30.0], ["bikes.bmp", "wn/img1", 60.0]])
    df = load_benchmark("live", str(live))
    assert df["dist"].str.endswith(os.path.join("jp2k", "img2.bmp")).any()
    assert np.allclose(df["score"], [70.0, 40.0])  # still DMOS: flipped

    koniq = tmp_path / "koniq10k"
    for i in range(4):
        img(koniq / "512x384" / f"{i}.jpg")
    write_csv(koniq / "meta_info_KonIQ10kDataset.csv", ["img_name", "mos", "std", "split"],
              [[f"{i}.jpg", 50 + i, 0.5, s] for i, s in enumerate(["training", "training", "validation", "test"])])
    df = load_benchmark("koniq10k", str(koniq), source="pyiqa")
    assert df["split"].tolist() == ["train", "train", "val", "test"]


def test_generic_csv_set(tmp_path):
    for i in range(5):
        img(tmp_path / "imgs" / f"r{i}.png")
        img(tmp_path / "imgs" / f"d{i}.png")
    write_csv(tmp_path / "tqd.csv", ["ref", "dist", "score"], [[f"imgs/r{i}.png", f"imgs/d{i}.png", i] for i in range(5)])
    root = resolve_benchmark_root(f"csv:{tmp_path / 'tqd.csv'}", "/unused")
    assert root == str(tmp_path)
    df = load_benchmark(f"csv:{tmp_path / 'tqd.csv'}", root)
    assert df.attrs["mode"] == "FR" and len(df) == 5 and df.attrs["source"] == "csv"
    lb = load_benchmark(f"csv:{tmp_path / 'tqd.csv'}", root, lower_better=True)
    assert np.allclose(lb["score"], 4 - lb["score_raw"])
    write_csv(tmp_path / "nr.csv", ["image", "mos"], [[f"imgs/d{i}.png", i] for i in range(5)])
    assert load_benchmark("csv:nr.csv", str(tmp_path)).attrs["mode"] == "NR"


def test_resolve_benchmark_root(tmp_path):
    for name, info in BENCHMARKS.items():
        if not name.startswith("demo_"):
            assert resolve_benchmark_root(name, str(tmp_path)) == os.path.join(str(tmp_path), info.folder)
    assert resolve_benchmark_root("csv:sets/x.csv", str(tmp_path)) == str(tmp_path / "sets")


# --- Dataset ------------------------------------------------------------------------------------


def test_iqa_dataset_fr_and_nr(tmp_path):
    make_kadid(tmp_path / "k")
    df = load_benchmark("kadid10k", str(tmp_path / "k"))
    ds = IQADataset(df, "train")
    assert len(ds) == 12
    s = ds[0]
    assert set(s) == {"dist", "ref", "score", "index"}
    assert s["dist"].shape == s["ref"].shape == (3, SIDE, SIDE) and s["score"].dtype == torch.float32
    assert float(s["score"]) == pytest.approx(ds.rows.iloc[0]["score"])
    assert len(IQADataset(df, ["train", "test"])) == 15
    sized = IQADataset(df, "test", size=20, target="score_norm")[0]
    assert sized["dist"].shape == (3, 20, 20) and 0 <= float(sized["score"]) <= 1
    a, b = IQADataset(df, "train", crop=8, seed=3), IQADataset(df, "train", crop=8, seed=3)
    assert torch.equal(a[1]["dist"], b[1]["dist"]) and a[1]["dist"].shape == (3, 8, 8)
    full = ds[1]
    # the crop is taken at the same place in dist and ref
    crop = a[1]
    hits = [(t, l) for t in range(SIDE - 7) for l in range(SIDE - 7)
            if torch.equal(full["dist"][:, t : t + 8, l : l + 8], crop["dist"])
            and torch.equal(full["ref"][:, t : t + 8, l : l + 8], crop["ref"])]
    assert hits
    make_koniq(tmp_path / "q")
    nr = IQADataset(load_benchmark("koniq10k", str(tmp_path / "q")), "val")
    assert "ref" not in nr[0] and len(nr) == 2
    with pytest.raises(ValueError, match="splits present"):
        IQADataset(df, "val")


# --- bad input ----------------------------------------------------------------------------------


def test_missing_root_and_missing_label_file(tmp_path):
    with pytest.raises(DatasetRootError, match=r"'tid2013'.*does not exist: .*nowhere.*mos_with_names.txt"):
        load_benchmark("tid2013", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetRootError, match=r"no label files.*dmos.csv.*meta_info_KADID10kDataset.csv"):
        load_benchmark("kadid10k", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("nope", str(tmp_path))


def test_label_files_that_do_not_parse(tmp_path):
    make_kadid(tmp_path / "k")
    text = (tmp_path / "k" / "dmos.csv").read_text().splitlines()
    text[2] = text[2].replace("0.3", "").rsplit(",", 2)[0] + ",abc,0.3"
    (tmp_path / "k" / "dmos.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"dmos.csv, line 3: column 'dmos' is 'abc'; expected a number"):
        load_benchmark("kadid10k", str(tmp_path / "k"))
    (tmp_path / "k" / "dmos.csv").write_text("dist,ref,score\n")
    with pytest.raises(BenchmarkFormatError, match=r"dmos.csv, line 1: header .* lacks dist_img, ref_img, dmos"):
        load_benchmark("kadid10k", str(tmp_path / "k"))

    make_tid2013(tmp_path / "t")
    with open(tmp_path / "t" / "mos_with_names.txt", "a") as f:
        f.write("\n4.2 I03_01_1.bmp extra\n")
    with pytest.raises(BenchmarkFormatError, match=r"mos_with_names.txt, line 12: 3 fields.*expected '<mos> <image name>'"):
        load_benchmark("tid2013", str(tmp_path / "t"))

    make_pipal(tmp_path / "p")
    (tmp_path / "p" / "Train_Label" / "A0002.txt").write_text("A0002_00_00.bmp;1400\n")
    with pytest.raises(BenchmarkFormatError, match=r"A0002.txt, line 1: 1 fields"):
        load_benchmark("pipal", str(tmp_path / "p"))

    make_koniq(tmp_path / "q")
    sets = tmp_path / "q" / "koniq10k_distributions_sets.csv"
    sets.write_text(sets.read_text().replace("validation", "holdout", 1))
    with pytest.raises(BenchmarkFormatError, match=r"sets.csv, line 8: split 'holdout'; expected training/validation/test"):
        load_benchmark("koniq10k", str(tmp_path / "q"))

    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "dmos.mat").write_bytes(b"not a mat file")
    (tmp_path / "l" / "refnames_all.mat").write_bytes(b"")
    with pytest.raises(BenchmarkFormatError, match=r"dmos.mat: not a readable MATLAB file"):
        load_benchmark("live", str(tmp_path / "l"))
    scipy.io.savemat(tmp_path / "l" / "dmos.mat", {"dmos": np.ones((1, 5)), "orgs": np.zeros((1, 5))})
    scipy.io.savemat(tmp_path / "l" / "refnames_all.mat", {"refnames_all": np.array([["a.bmp"] * 5], dtype=object)})
    with pytest.raises(BenchmarkFormatError, match=r"dmos.mat, variable dmos: 5 entries; expected 982 entries"):
        load_benchmark("live", str(tmp_path / "l"))


def test_label_naming_a_missing_image(tmp_path, caplog):
    make_kadid(tmp_path)
    os.remove(tmp_path / "images" / "I02_03_01.png")
    with pytest.raises(MissingImageError, match=r"dmos.csv, line 7: names image 'I02_03_01.png', which is not on disk"):
        load_benchmark("kadid10k", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="raygrid.data.iqa"):
        df = load_benchmark("kadid10k", str(tmp_path), skip_missing=True)
    assert len(df) == 14 and "skipped 1 rows naming missing images" in caplog.text


def test_image_that_does_not_decode(tmp_path, caplog):
    make_kadid(tmp_path)
    (tmp_path / "images" / "I01_02_01.png").write_bytes(b"\x89PNG broken")
    df = load_benchmark("kadid10k", str(tmp_path), seed=0)
    split = df.loc[df["dist"].str.endswith("I01_02_01.png"), "split"].iloc[0]
    ds = IQADataset(df, split)
    bad = ds.rows.index[ds.rows["dist"].str.endswith("I01_02_01.png")][0]
    with pytest.raises(ImageDecodeError, match=r"I01_02_01.png \(listed at .*dmos.csv:3\)"):
        ds[bad]
    ds = IQADataset(df, split, skip_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="raygrid.data.iqa"):
        s = ds[bad]
    assert s["index"] != bad and ds.skipped == 1 and "I01_02_01.png" in caplog.text
    with pytest.raises(ImageDecodeError):
        check_images(df)
    clean = check_images(df, skip_unreadable=True)
    assert len(clean) == len(df) - 1 and clean.attrs == df.attrs
