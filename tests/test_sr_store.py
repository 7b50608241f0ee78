"""The prepared SR store: crops equal the PNG path's, a stale or half-built store is never read
(rebuilt or refused), `raygrid data prepare` from a folder and from S3 (moto_server)."""

import json
import os
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from raygrid.data.images import ImageDecodeError
from raygrid.data.sr import SRTrainSet
from raygrid.data.sr_store import (
    MANIFEST,
    MARKER,
    StoreError,
    build_store,
    open_store,
)
from raygrid.data.stream import train_batches



def prepare(argv: list[str]) -> int:
    """`raygrid data prepare ...`, through the real command line."""
    from raygrid.cli import main

    return main(["data", "prepare", *argv])

def _write(path, seed, size=(60, 72), mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[0], size[1], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if mode == "L" else arr, mode).save(path)


@pytest.fixture
def source(tmp_path):
    """HR images of different sizes and modes (greyscale and alpha go through read_rgb's rules),
    one in a subfolder."""
    root = tmp_path / "DF2K"
    (root / "flickr").mkdir(parents=True)
    _write(root / "0001.png", 1)
    _write(root / "0002.png", 2, (48, 90), mode="RGBA")
    _write(root / "flickr" / "000001.png", 3, (70, 50), mode="L")
    return str(root)


def _crops(ds, n=12):
    return [ds[p] for p in range(n)]


def _same(xs, ys):
    return len(xs) == len(ys) and all(torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
                                      for a, b in zip(xs, ys))


def test_store_crops_equal_png_crops(source, capsys):
    assert prepare([source]) == 0
    assert "prepared 3 images" in capsys.readouterr().out
    store = f"{source}.srstore"
    assert os.path.isfile(os.path.join(store, MARKER))
    png = SRTrainSet(source, hr_crop=32, seed=5, cache=False)
    from_store = SRTrainSet(source, hr_crop=32, seed=5, store="auto")
    assert png.store is None and from_store.store.location == store
    assert isinstance(from_store._image(0), np.memmap)
    assert _same(_crops(png), _crops(from_store))
    # through the loop's data path with forked workers reading the memmaps
    a = list(train_batches(png, 2, 0, num_workers=0, stop_step=4))
    b = list(train_batches(from_store, 2, 0, num_workers=2, stop_step=4))
    assert _same(a, b)
    manifest = json.loads(Path(store, MANIFEST).read_text())
    assert [e["name"] for e in manifest["images"]] == ["0001.png", "0002.png", "flickr/000001.png"]
    assert manifest["images"][2]["shape"] == [70, 50, 3]
    assert prepare([source]) == 0 and "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["modified", "added", "removed"])
def test_stale_store_is_refused_naming_the_file(source, change):
    store = build_store(source, f"{source}.srstore")
    target = os.path.join(source, "0002.png")
    if change == "modified":
        _write(target, 99, (48, 90))  # other content and size
    elif change == "added":
        target = os.path.join(source, "flickr", "000002.png")
        _write(target, 4)
    else:
        os.remove(target)
    with pytest.raises(StoreError) as err:
        SRTrainSet(source, hr_crop=32, store="auto")
    message = str(err.value)
    assert "\n" not in message and target in message and store in message
    assert "raygrid data prepare" in message


def test_same_size_edit_is_caught_by_sha256_and_a_copy_is_not_a_change(source):
    store = build_store(source, f"{source}.srstore")
    path = os.path.join(source, "0001.png")
    data = Path(path).read_bytes()
    # rewritten with the same bytes and a new mtime (what a copy or an S3 sync does): still current
    Path(path).write_bytes(data)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert open_store(source, store).names[0] == "0001.png"
    # same size, other bytes: only the hash can tell
    flipped = bytearray(data)
    flipped[-20] ^= 0xFF
    Path(path).write_bytes(bytes(flipped))
    with pytest.raises(StoreError, match=r"0001.png changed since the store was built \(sha256 differs\)"):
        open_store(source, store)


def test_stale_store_is_rebuilt_reusing_unchanged_images(source):
    store = build_store(source, f"{source}.srstore")
    kept = os.stat(os.path.join(store, "arrays", "000000.npy")).st_ino
    _write(os.path.join(source, "0002.png"), 42, (64, 64))
    ds = SRTrainSet(source, hr_crop=32, seed=2, store="auto", on_mismatch="rebuild")
    assert _same(_crops(ds), _crops(SRTrainSet(source, hr_crop=32, seed=2, cache=False)))
    assert ds.store.entries[1]["shape"] == [64, 64, 3]
    assert os.stat(os.path.join(store, "arrays", "000000.npy")).st_ino == kept  # linked, not decoded
    assert not [n for n in os.listdir(os.path.dirname(store)) if ".building-" in n or ".old-" in n]
    open_store(source, store)  # now current: refuse mode accepts it


def test_half_built_store_is_not_used(source):
    store = build_store(source, f"{source}.srstore")
    os.remove(os.path.join(store, MARKER))  # as if the build had stopped before its last write
    with pytest.raises(StoreError, match=r"\.srstore is incomplete \(no COMPLETE marker"):
        SRTrainSet(source, hr_crop=32, store="auto")
    # a marker that does not vouch for this manifest is no marker
    Path(store, MARKER).write_text("0" * 64)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(source, store)
    ds = SRTrainSet(source, hr_crop=32, store=store, on_mismatch="rebuild")
    assert _same(_crops(ds, 4), _crops(SRTrainSet(source, hr_crop=32, cache=False), 4))
    with pytest.raises(StoreError, match="does not exist"):
        open_store(source, store + "-elsewhere")


def test_interrupted_build_leaves_the_old_store_and_no_partial_one(source):
    store = build_store(source, f"{source}.srstore")
    before = Path(store, MANIFEST).read_text()
    with open(os.path.join(source, "0002.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageDecodeError, match="0002.png"):
        build_store(source, store)
    assert Path(store, MANIFEST).read_text() == before
    assert sorted(os.listdir(os.path.dirname(store))) == ["DF2K", "DF2K.srstore"]
    # with skip_unreadable the broken file is recorded and skipped the way the PNG path skips it
    build_store(source, store, skip_unreadable=True)
    ds = SRTrainSet(source, hr_crop=32, store=store, skip_unreadable=True)
    assert _same(_crops(ds), _crops(SRTrainSet(source, hr_crop=32, skip_unreadable=True, cache=False)))
    assert ds.skipped == 1


def test_prepare_a_catalog_set_under_a_data_root_with_worker_processes(source, capsys):
    data_root = os.path.dirname(source)  # source is <tmp>/DF2K, the catalog folder of "df2k"
    assert prepare(["df2k", "--data-root", data_root, "--workers", "2"]) == 0
    assert "prepared 3 images" in capsys.readouterr().out
    ds = SRTrainSet(source, hr_crop=32, seed=4, store=os.path.join(data_root, "DF2K.srstore"))
    assert _same(_crops(ds), _crops(SRTrainSet(source, hr_crop=32, seed=4, cache=False)))


def test_prepare_bad_input_is_one_line(tmp_path, capsys):
    assert prepare([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert prepare([str(tmp_path / "empty")]) == 2
    assert "no images in" in capsys.readouterr().err


def test_prepare_from_s3_then_train_from_the_synced_store(source, s3_env, tmp_path, monkeypatch, capsys):
    client = boto3.client("s3", endpoint_url=s3_env)
    bucket = f"sr-{time.time_ns()}"
    client.create_bucket(Bucket=bucket)
    for dirpath, _, files in os.walk(source):
        for name in files:
            path = os.path.join(dirpath, name)
            client.upload_file(path, bucket, f"data/DF2K/{os.path.relpath(path, source)}")
    uri = f"s3://{bucket}/data/DF2K"
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "prep-cache"))
    assert prepare([uri]) == 0
    assert "(uploaded from" in capsys.readouterr().out
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="data/DF2K.srstore/")["Contents"]}
    assert f"data/DF2K.srstore/{MARKER}" in keys and "data/DF2K.srstore/arrays/000002.npy" in keys
    assert prepare([uri]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "uploaded" not in out

    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "trainer-cache"))  # another machine
    ds = SRTrainSet(uri, hr_crop=32, seed=1, store="auto")
    assert ds.store.location.startswith(str(tmp_path / "trainer-cache"))
    assert _same(_crops(ds), _crops(SRTrainSet(source, hr_crop=32, seed=1, cache=False)))
    # a shared store is never rewritten by a trainer: a stale one is refused, or rebuilt locally
    client.upload_file(os.path.join(source, "0001.png"), bucket, "data/DF2K/0002.png")
    with pytest.raises(StoreError, match=rf"SR store s3://{bucket}/data/DF2K.srstore does not match .*0002.png"):
        SRTrainSet(uri, hr_crop=32, store="auto")
    ds = SRTrainSet(uri, hr_crop=32, store="auto", on_mismatch="rebuild")
    assert ds.store.location.endswith(".rebuilt")
    assert client.get_object(Bucket=bucket, Key=f"data/DF2K.srstore/{MARKER}")  # untouched
