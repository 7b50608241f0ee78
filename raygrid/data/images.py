"""Image files shared by the SR and IQA readers: listing, decoding, writing and resizing RGB
images as `uint8` numpy arrays in HWC order, and the errors a reader raises. No torch here, so
that checking a space and its IQA benchmarks' labels (raygrid.run.preflight) does not wait for
it; the tensor side is raygrid.data.tensors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from raygrid.errors import PermanentError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetRootError(PermanentError, FileNotFoundError):
    """A dataset root that does not exist or holds no usable files."""


class ImageDecodeError(PermanentError, ValueError):
    """An image file that exists but cannot be decoded (truncated, not an image, ...)."""

    def __init__(self, path: str | os.PathLike, reason: str, listed_at: str | None = None):
        self.path = str(path)
        self.listed_at = listed_at
        where = f" (listed at {listed_at})" if listed_at else ""
        super().__init__(f"cannot decode image {self.path}{where}: {reason}")


class ImageSizeError(PermanentError, ValueError):
    """An image too small for what a trial does with it (an HR crop larger than the image)."""


def is_image_file(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Image files in `folder`, sorted by relative path (stable across machines)."""
    root = Path(folder)
    if recursive:
        paths = [p for p in root.rglob("*") if p.is_file() and is_image_file(p.name)]
    else:
        paths = [p for p in root.iterdir() if p.is_file() and is_image_file(p.name)]
    return [str(p) for p in sorted(paths, key=lambda p: p.relative_to(root).as_posix())]


def read_rgb(path: str | os.PathLike, listed_at: str | None = None) -> np.ndarray:
    """Decode an image file to a uint8 HWC RGB array.

    Greyscale images are replicated to three channels; an alpha channel is composited onto white
    (so transparent areas do not become arbitrary colours). Raises FileNotFoundError for a
    missing file and ImageDecodeError for one that does not decode.
    """
    path = str(path)
    if not os.path.isfile(path):
        where = f" (listed at {listed_at})" if listed_at else ""
        raise FileNotFoundError(f"image not found: {path}{where}")
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode here, so truncated files fail now
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}", listed_at) from exc


def write_rgb(path: str | os.PathLike, array: np.ndarray, **save_kwargs) -> None:
    """Write a uint8 HWC RGB array (PNG/JPEG/BMP by extension), creating parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, **save_kwargs)


def resize_rgb(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 HWC image to (width, height) with PIL's antialiased bicubic filter."""
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BICUBIC))


class CaseInsensitiveIndex:
    """Find files under a folder by name, ignoring case (TID2013 mixes `I01.BMP` and `i25.bmp`).

    Indexes basenames (recursively when asked) once; `find("I01_01_1.bmp")` returns the path or
    None. When two files share a lower-cased name, the first in sorted order wins.
    """

    def __init__(self, folders: Iterable[str | os.PathLike], recursive: bool = False):
        self._folders = [Path(f) for f in folders]
        self._by_name: dict[str, str] = {}
        self._by_rel: dict[str, str] = {}
        for folder in self._folders:
            if not folder.is_dir():
                continue
            walker = folder.rglob("*") if recursive else folder.iterdir()
            for p in sorted(walker):
                if p.is_file():
                    self._by_name.setdefault(p.name.lower(), str(p))
                    self._by_rel.setdefault(p.relative_to(folder).as_posix().lower(), str(p))

    def find(self, name: str) -> str | None:
        """Exact relative path under a folder first (names may carry subfolders, e.g. pyiqa's
        `jp2k/img2`), then the case-insensitive name."""
        name = name.replace("\\", "/")
        for folder in self._folders:
            if (folder / name).is_file():
                return str(folder / name)
        key = name.lower()
        return self._by_rel.get(key) or self._by_name.get(os.path.basename(key))

    def __len__(self) -> int:
        return len(self._by_name)
