"""Datasets: one record per IQA benchmark and per SR set, holding everything raygrid knows about it.

A benchmark's record says where it lives under the data root, how its original label files are
written (`label_format` picks the reader in `raygrid.data.iqa.readers`), what its rating means
(column, direction, nominal range), what pyiqa's meta-info CSV of it is called and where its
images are for that CSV, and what files to look for (for the "nothing found" message).
docs/datasets.md describes the formats. Adding a benchmark in a known format is one record.

A generic FR/NR set in pyiqa's meta-info CSV format (e.g. TQD) is named "csv:<path to csv>".

No torch here: search-space validation and the dry run read these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CSV_PREFIX = "csv:"

# The original label-file formats raygrid reads (one reader each in raygrid.data.iqa.readers).
LabelFormat = Literal["live", "csiq", "tid2013", "kadid10k", "pipal", "koniq10k", "spaq", "livec"]


@dataclass(frozen=True)
class PyiqaMeta:
    """pyiqa's meta-info CSV of a benchmark (`meta_info_<stem>Dataset.csv`) and where its images are."""

    stem: str
    dist_dirs: tuple[str, ...]  # distorted-image folders, relative to the benchmark root
    ref_dirs: tuple[str, ...] = ()  # reference folders (FR)
    recursive: bool = False  # search the folders recursively
    extensions: tuple[str, ...] = ()  # tried for names the CSV gives without one
    skip_rows: int = 0  # leading data rows that are not part of the benchmark

    @property
    def file(self) -> str:
        return f"meta_info_{self.stem}Dataset.csv"


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    label: str
    mode: Literal["FR", "NR"]
    folder: str  # default folder under the data root
    size: int  # scored images (distorted images for FR); for cost estimates only
    label_format: LabelFormat | None  # None: only pyiqa's meta-info CSV (a "csv:" set)
    score_column: str  # the rating's column / variable name in the original files
    lower_better: bool  # direction of the raw rating
    score_range: tuple[float, float]  # nominal range: used to flip and to normalise
    expected_files: str = ""  # what the original reader looks for (for error messages)
    pyiqa: PyiqaMeta | None = None


# CLIVE's first 7 entries are its training images; readers drop them.
LIVEC_TRAINING_IMAGES = 7

BENCHMARKS: dict[str, BenchmarkSpec] = {
    b.name: b
    for b in [
        BenchmarkSpec("live", "LIVE", "FR", "LIVE", 779, "live", "dmos", True, (0.0, 100.0),
                      "dmos.mat + refnames_all.mat",
                      PyiqaMeta("LIVEIQA", (".",), ("refimgs", "."), extensions=(".bmp",))),
        BenchmarkSpec("csiq", "CSIQ", "FR", "CSIQ", 866, "csiq", "dmos", True, (0.0, 1.0),
                      "csiq.DMOS.xlsx (or csiq_dmos.txt / csiq_label.txt)",
                      PyiqaMeta("CSIQ", ("dst_imgs",), ("src_imgs",), recursive=True)),
        BenchmarkSpec("tid2013", "TID2013", "FR", "TID2013", 3000, "tid2013", "mos", False, (0.0, 9.0),
                      "mos_with_names.txt", PyiqaMeta("TID2013", ("distorted_images",), ("reference_images",))),
        BenchmarkSpec("kadid10k", "KADID-10k", "FR", "kadid10k", 10125, "kadid10k", "dmos", False, (1.0, 5.0),
                      "dmos.csv", PyiqaMeta("KADID10k", ("images",), ("images",))),
        # Elo scores: observed 917-1836; pyiqa's config says [0, 1], which is wrong for Elo.
        BenchmarkSpec("pipal", "PIPAL", "FR", "PIPAL", 23200, "pipal", "elo_score", False, (800.0, 2000.0),
                      "Train_Label/*.txt",
                      PyiqaMeta("PIPAL", ("Dist_Imgs", "Train_Dist", "Distortion", "."), ("Train_Ref",), recursive=True)),
        BenchmarkSpec("koniq10k", "KonIQ-10k", "NR", "koniq10k", 10073, "koniq10k", "MOS", False, (0.0, 100.0),
                      "koniq10k_distributions_sets.csv (or koniq10k_scores_and_distributions.csv)",
                      PyiqaMeta("KonIQ10k", ("1024x768", "512x384", "images"))),
        BenchmarkSpec("spaq", "SPAQ", "NR", "SPAQ", 11125, "spaq", "MOS", False, (0.0, 100.0),
                      "Annotations/MOS and Image attribute scores.xlsx", PyiqaMeta("SPAQ", ("TestImage",))),
        BenchmarkSpec("livec", "LIVE Challenge", "NR", "ChallengeDB_release", 1162, "livec", "AllMOS_release",
                      False, (0.0, 100.0), "Data/AllImages_release.mat + Data/AllMOS_release.mat",
                      PyiqaMeta("LIVEChallenge", ("Images",), recursive=True, skip_rows=LIVEC_TRAINING_IMAGES)),
        # Built offline from scikit-image's images by raygrid.data.demo, in real benchmark formats.
        BenchmarkSpec("demo_fr", "demo FR", "FR", "demo/iqa_fr", 160, "kadid10k", "dmos", False, (1.0, 5.0),
                      "dmos.csv"),
        BenchmarkSpec("demo_nr", "demo NR", "NR", "demo/iqa_nr", 40, "koniq10k", "MOS", False, (0.0, 100.0),
                      "koniq10k_distributions_sets.csv"),
    ]
}


def is_benchmark(name: str) -> bool:
    return name in BENCHMARKS or (name.startswith(CSV_PREFIX) and len(name) > len(CSV_PREFIX))


@dataclass(frozen=True)
class SRSetSpec:
    """An SR image set: a folder of HR images (with or without its LR copies) or a slice of one.

    `stems` makes the set a slice of its folder: only the images with these file stems. Slices of
    one folder keep selection apart from report at the image level (docs/protocol.md): DIV2K-val
    0801-0810 select, 0811-0900 are reported, and a set is never both.
    """

    name: str
    label: str
    role: Literal["train", "test"]
    folder: str
    images: int  # for cost estimates only (slices: exactly len(stems))
    megapixels: float  # mean HR size, for cost estimates only
    stems: tuple[str, ...] | None = None  # a slice: these images of the folder only; None = all of them

    def __post_init__(self) -> None:
        if self.stems is not None and (len(set(self.stems)) != len(self.stems) or self.images != len(self.stems)):
            raise ValueError(f"SR set record {self.name!r}: {self.images} images but stems {self.stems[:3]}...")


def _stems(first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{i:04d}" for i in range(first, last + 1))


# DIV2K's 100 validation images are 0801-0900. The first ten select (the grouped scheduler, a
# "best" checkpoint); the other ninety are reported. No table reports 0801-0810.
DIV2K_SELECT = _stems(801, 810)
DIV2K_REPORT = _stems(811, 900)
# The demo's 4 SR evaluation images (raygrid.data.demo): one selects, three are reported.
DEMO_SELECT = ("retina",)
DEMO_REPORT = ("stereo_motorcycle", "colorwheel", "logo")

SR_SETS: dict[str, SRSetSpec] = {
    s.name: s
    for s in [
        SRSetSpec("df2k", "DF2K", "train", "DF2K", 3450, 2.8),
        SRSetSpec("div2k_train", "DIV2K train", "train", "DIV2K/DIV2K_train_HR", 800, 2.8),
        SRSetSpec("set5", "Set5", "test", "Set5", 5, 0.11),
        SRSetSpec("set14", "Set14", "test", "Set14", 14, 0.23),
        SRSetSpec("bsd100", "BSD100", "test", "BSD100", 100, 0.15),
        SRSetSpec("urban100", "Urban100", "test", "Urban100", 100, 0.8),
        # single manga pages; BasicSR (GTmod12 + LRbicx4) and SwinIR (HR + LR_bicubic/X4) layouts
        SRSetSpec("manga109", "Manga109", "test", "Manga109", 109, 0.97),
        SRSetSpec("div2k_val", "DIV2K val", "test", "DIV2K", 100, 2.8),
        SRSetSpec("div2k_val_select", "DIV2K val 0801-0810", "test", "DIV2K", 10, 2.8, stems=DIV2K_SELECT),
        SRSetSpec("div2k_val_test", "DIV2K val 0811-0900", "test", "DIV2K", 90, 2.8, stems=DIV2K_REPORT),
        SRSetSpec("demo_sr_train", "demo SR train", "train", "demo/sr/train", 10, 0.1),
        SRSetSpec("demo_sr_val", "demo SR val", "test", "demo/sr/val", 4, 0.03),
        SRSetSpec("demo_sr_select", "demo SR select", "test", "demo/sr/val", 1, 0.03, stems=DEMO_SELECT),
        SRSetSpec("demo_sr_test", "demo SR test", "test", "demo/sr/val", 3, 0.03, stems=DEMO_REPORT),
    ]
}


def shared_images(a: str, b: str) -> tuple[str, ...] | None:
    """The images two SR sets (names or paths) have in common: None if they share none, () if
    they share images that cannot be listed without reading the folder (one of them is the whole
    folder, or both are the same path), else the shared stems. Decided from the records alone."""
    if a == b:
        return ()
    ra, rb = SR_SETS.get(a), SR_SETS.get(b)
    if ra is None or rb is None:  # a path: the same folder only when it is the same path
        return None
    if ra.folder != rb.folder:
        return None
    if ra.stems is None or rb.stems is None:
        return ra.stems or rb.stems or ()
    shared = tuple(s for s in ra.stems if s in set(rb.stems))
    return shared or None
