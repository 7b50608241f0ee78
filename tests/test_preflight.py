"""Preflight of the data and the services: each problem is one line naming the file (and line)
or the option, found before Ray starts. No Ray, no torch work: labels are parsed, image headers
read, nothing decoded."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_sweep_cli import run_cli

from raygrid.data.images import write_rgb
from raygrid.run.preflight import check_datasets, check_services
from raygrid.space import SPACES_DIR, SpaceError, load_space, parse_space

REPO = Path(__file__).resolve().parents[1]


def image(path: Path, size: int = 64, seed: int = 0) -> Path:
    write_rgb(path, np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))
    return path


def fr_csv(folder: Path, rows: list[str]) -> Path:
    """A pyiqa-style FR meta CSV (ref_name,dist_name,score) with its images."""
    folder.mkdir(parents=True, exist_ok=True)
    image(folder / "ref.png")
    for i in range(3):
        image(folder / f"d{i}.png", seed=i + 1)
    path = folder / "labels.csv"
    path.write_text("\n".join(["ref_name,dist_name,mos", *rows]) + "\n")
    return path


def sweep_with(assess_benchmark: str | None = None, sr_train: str | None = None, hr_crop: int = 48):
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    stages = {}
    if assess_benchmark is not None:
        a = raw["stages"]["assess"]
        a["axes"] = {"fidelity.backbone": ["vgg16_r"]}
        a["base"]["benchmark"] = assess_benchmark
        stages["assess"] = a
    if sr_train is not None:
        o = raw["stages"]["optimize"]
        o["axes"], o["conditions"], o["linked"] = {"fidelity.backbone": ["vgg16_r"]}, [], {}
        o["base"]["data"].update(train=sr_train, hr_crop=hr_crop)
        stages["optimize"] = o
    raw["stages"] = stages
    return parse_space(raw, source="tiny.yaml")


def test_a_good_csv_benchmark_and_training_folder_pass(tmp_path):
    labels = fr_csv(tmp_path / "bench", ["ref.png,d0.png,3.5", "ref.png,d1.png,2.0", "ref.png,d2.png,4.0"])
    train = tmp_path / "train"
    for i in range(3):
        image(train / f"{i}.png", size=64, seed=i)
    check_datasets(sweep_with(f"csv:{labels}", str(train)), str(tmp_path))


def test_an_empty_benchmark_folder_is_one_line(tmp_path):
    (tmp_path / "bench").mkdir()
    with pytest.raises(SpaceError) as e:
        check_datasets(sweep_with(f"csv:{tmp_path / 'bench' / 'labels.csv'}"), str(tmp_path))
    assert str(e.value) == (f"tiny.yaml: stages.assess (benchmark 'csv:{tmp_path}/bench/labels.csv'): "
                            f"folder {tmp_path}/bench is empty; expected its label file and images")


def test_a_benchmark_record_whose_folder_is_empty_is_one_line(tmp_path):
    (tmp_path / "kadid10k").mkdir()
    with pytest.raises(SpaceError, match=r"stages.assess \(benchmark 'kadid10k'\): folder .*kadid10k is empty"):
        check_datasets(sweep_with("kadid10k"), str(tmp_path))


@pytest.mark.parametrize("row,expected", [
    ("ref.png,d1.png,abc", "line 3: column 'mos' is 'abc'; expected a number"),
    ("ref.png,missing.png,2.0", "line 3: names image 'missing.png', which is not on disk"),
    ("ref.png", "line 3: 1 fields; expected at least 3"),
])
def test_a_broken_csv_benchmark_names_the_file_and_line(tmp_path, row, expected):
    labels = fr_csv(tmp_path / "bench", ["ref.png,d0.png,3.5", row])
    with pytest.raises(SpaceError) as e:
        check_datasets(sweep_with(f"csv:{labels}"), str(tmp_path))
    assert f"{labels}, {expected}" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_a_training_image_smaller_than_the_crop_is_found_from_its_header(tmp_path):
    train = tmp_path / "train"
    image(train / "a.png", size=64)
    image(train / "small.png", size=40)
    with pytest.raises(SpaceError) as e:
        check_datasets(sweep_with(sr_train=str(train), hr_crop=48), str(tmp_path))
    assert f"HR image {train}/small.png is 40x40, smaller than data.hr_crop=48" in str(e.value)


def test_an_empty_training_folder_and_a_missing_one_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpaceError, match=r"stages.optimize \(SR set '.*empty'\): no images in"):
        check_datasets(sweep_with(sr_train=str(tmp_path / "empty")), str(tmp_path))
    with pytest.raises(SpaceError, match=r"folder .*nowhere does not exist"):
        check_datasets(sweep_with(sr_train=str(tmp_path / "nowhere")), str(tmp_path))


def test_the_demo_passes_and_is_built_in_the_cache_not_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "cache"))
    user = tmp_path / "user-data"
    user.mkdir()
    check_datasets(load_space("demo"), str(user))
    assert (tmp_path / "cache" / "demo").is_dir() and list(user.iterdir()) == []


def test_the_cli_stops_on_an_empty_benchmark_folder_before_ray(tmp_path):
    (tmp_path / "bench").mkdir()
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["stages"] = {"assess": raw["stages"]["assess"]}
    raw["stages"]["assess"]["base"]["benchmark"] = f"csv:{tmp_path / 'bench' / 'labels.csv'}"
    raw["stages"]["assess"]["axes"] = {"fidelity.backbone": ["vgg16_r"]}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    proc = run_cli("--space", str(space), "--output-dir", str(tmp_path / "out"), "--no-report")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {space}: stages.assess") and "is empty" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "IMPORTED []" in proc.stdout  # nothing heavy before the line: no torch, Ray, MLflow or timm
    assert not (tmp_path / "out" / "mlflow.db").exists() and not (tmp_path / "out" / "ray").exists()


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def test_a_dead_tracking_port_is_one_line(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SpaceError) as e:
        check_services(uri, str(tmp_path / "ray"), str(tmp_path), None)
    assert str(e.value).startswith(f"--tracking-uri: {uri}: cannot connect")


def test_unreachable_s3_storage_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SpaceError) as e:
        check_services("sqlite:///x.db", "s3://no-such/ray", str(tmp_path), endpoint)
    line = str(e.value)
    assert line.startswith(f"--storage: s3://no-such/ray at {endpoint}: ") and len(line.splitlines()) == 1


def test_a_missing_bucket_is_one_line(tmp_path, s3_env):
    with pytest.raises(SpaceError, match="--storage: s3://raygrid-missing/ray at .*: bucket 'raygrid-missing' does not exist"):
        check_services("sqlite:///x.db", "s3://raygrid-missing/ray", str(tmp_path), s3_env)


def test_a_yaml_error_names_the_line_to_fix(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: demo\nstages: [1, 2\nother: 3\n")
    with pytest.raises(SpaceError) as e:
        load_space(str(path))
    assert str(e.value).startswith(f"{path}: line 2: not valid YAML: this flow sequence is not closed")
    path.write_text('name: demo\nstages:\n  assess:\n    trainable: "assess\n')
    with pytest.raises(SpaceError, match=r": line 4: not valid YAML: this quoted scalar is not closed .* at line 4\)"):
        load_space(str(path))
