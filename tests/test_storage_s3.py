"""raygrid.io against a real moto_server process (the session fixture in conftest; no boto3 mocks):
mirroring an S3 prefix into the local cache, the endpoint rule, fetching a checkpoint folder."""

import logging
import time

import boto3
import numpy as np
import pytest
from PIL import Image

from raygrid.data.sr import SRTrainSet
from raygrid import io
from raygrid.io import MANIFEST_NAME, mirror, mirror_dir, parse_s3


@pytest.fixture
def s3(moto_server, monkeypatch):
    """A fresh bucket on the session's moto_server (tests/conftest.py); no endpoint in the env."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ENDPOINT_URL_S3", "RAYGRID_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    client = boto3.client("s3", endpoint_url=moto_server)
    bucket = f"data-{time.time_ns()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket, moto_server


def _png_bytes(seed, side=40):
    import io

    arr = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_uri():
    assert parse_s3("s3://b/x/y/") == ("b", "x/y")
    assert parse_s3("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        parse_s3("/local/path")


def test_sync_downloads_layout_and_skips_unchanged(s3, tmp_path, caplog):
    client, bucket, endpoint = s3
    objects = {
        "sets/Set5/HR/baby.png": _png_bytes(0),
        "sets/Set5/LR_bicubic/X4/babyx4.png": _png_bytes(1, 10),
        "sets/Set5/readme.txt": b"hello",
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    client.put_object(Bucket=bucket, Key="sets/Set5/", Body=b"")  # a folder marker
    client.put_object(Bucket=bucket, Key="sets/Set5x/other.png", Body=b"not below the prefix")

    dest = tmp_path / "mirror"
    with caplog.at_level(logging.INFO, logger="raygrid.io"):
        assert mirror(f"s3://{bucket}/sets/Set5", str(dest), endpoint_url=endpoint) == str(dest)
    assert "3 downloaded, 0 already present" in caplog.text
    for key, body in objects.items():
        assert (dest / key[len("sets/Set5/") :]).read_bytes() == body
    assert not (tmp_path / "Set5x").exists() and not any(p.name == "other.png" for p in dest.rglob("*"))

    mtimes = {p: p.stat().st_mtime_ns for p in dest.rglob("*.png")}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raygrid.io"):
        mirror(f"s3://{bucket}/sets/Set5/", str(dest), endpoint_url=endpoint)
    assert "0 downloaded, 3 already present" in caplog.text
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # A changed object of the same size is fetched again (its last-modified time differs: S3
    # keeps it to the second, hence the wait); a local file edited by hand (size differs) too.
    time.sleep(1.1)
    client.put_object(Bucket=bucket, Key="sets/Set5/readme.txt", Body=b"HELLO")
    (dest / "HR" / "baby.png").write_bytes(b"corrupt")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raygrid.io"):
        mirror(f"s3://{bucket}/sets/Set5", str(dest), endpoint_url=endpoint)
    assert "2 downloaded, 1 already present" in caplog.text
    assert (dest / "readme.txt").read_bytes() == b"HELLO"
    assert (dest / "HR" / "baby.png").read_bytes() == objects["sets/Set5/HR/baby.png"]
    assert (dest / MANIFEST_NAME).is_file()


def test_files_present_without_manifest_are_checked_by_md5(s3, tmp_path, caplog):
    client, bucket, endpoint = s3
    client.put_object(Bucket=bucket, Key="p/a.bin", Body=b"abc")
    (tmp_path / "a.bin").write_bytes(b"abc")  # copied by hand: same content, no manifest
    with caplog.at_level(logging.INFO, logger="raygrid.io"):
        mirror(f"s3://{bucket}/p", str(tmp_path), endpoint_url=endpoint)
    assert "0 downloaded, 1 already present" in caplog.text


def test_endpoint_rule_order(monkeypatch):
    for var in io.ENDPOINT_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert io.endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://c")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://b")
    assert io.endpoint() == "http://b"
    monkeypatch.setenv("RAYGRID_S3_ENDPOINT_URL", "http://a")
    assert io.endpoint() == "http://a" and io.endpoint("http://explicit") == "http://explicit"


def test_fetch_copies_a_checkpoint_folder_from_s3(s3, tmp_path):
    client, bucket, endpoint = s3
    client.put_object(Bucket=bucket, Key="ray/ckpt_000002/state.pt", Body=b"state")
    client.put_object(Bucket=bucket, Key="ray/ckpt_000002/sub/meta.json", Body=b"{}")
    dest = io.fetch(f"s3://{bucket}/ray/ckpt_000002", str(tmp_path), endpoint_url=endpoint)
    assert dest == str(tmp_path / "ckpt_000002")
    assert (tmp_path / "ckpt_000002" / "state.pt").read_bytes() == b"state"
    assert (tmp_path / "ckpt_000002" / "sub" / "meta.json").read_bytes() == b"{}"
    with pytest.raises(FileNotFoundError, match="not found in storage"):
        io.fetch(f"s3://{bucket}/ray/ckpt_999", str(tmp_path), endpoint_url=endpoint)


def test_endpoint_from_env_and_missing_prefix(s3, tmp_path, monkeypatch):
    client, bucket, endpoint = s3
    client.put_object(Bucket=bucket, Key="x/y.txt", Body=b"1")
    monkeypatch.setenv("RAYGRID_S3_ENDPOINT_URL", endpoint)
    mirror(f"s3://{bucket}/x", str(tmp_path / "a"))
    assert (tmp_path / "a" / "y.txt").read_bytes() == b"1"
    monkeypatch.delenv("RAYGRID_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    with pytest.raises(FileNotFoundError, match=rf"no objects under s3://{bucket}/nothing"):
        mirror(f"s3://{bucket}/nothing", str(tmp_path / "b"))


def test_sr_train_set_from_s3(s3, tmp_path, monkeypatch):
    client, bucket, endpoint = s3
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"DIV2K/DIV2K_train_HR/{i:04d}.png", Body=_png_bytes(i))
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{bucket}/DIV2K/DIV2K_train_HR"
    ds = SRTrainSet(uri, hr_crop=32, endpoint_url=endpoint)
    assert len(ds) == 3 and ds[0]["lr"].shape == (3, 8, 8)
    assert ds.root == mirror_dir(uri) and ds.root.startswith(str(tmp_path / "cache"))
