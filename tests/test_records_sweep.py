"""End to end on a local Ray instance (slow lane): after a tiny sweep every assess and optimize run
has its per-item table at each evaluation step, every optimize run its evaluator record and its
SR crops as MLflow images at every evaluation step, and the sweep run the crops with their HR
and bicubic images — all checked through the MLflow client."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
import yaml

from raygrid.run.options import RunOptions
from raygrid.run.runner import execute
from raygrid.space import SPACES_DIR, parse_space
from raygrid.spec import mlflow as names
from raygrid.spec import records

pytestmark = pytest.mark.slow  # starts Ray


def tiny_space() -> dict:
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["name"] = "records"
    assess, optimize = raw["stages"]["assess"], raw["stages"]["optimize"]
    assess["axes"] = {"fidelity.backbone": ["vgg16_r"], "fit_on": [None]}
    assess["base"].update(max_pairs=16, n_boot=20)
    optimize["axes"] = {"fidelity.backbone": ["vgg16_r"], "loss.adversarial_weight": [0, 0.05],
                        "adversarial.discriminator": ["none", "vanilla_conv"]}
    optimize["budget"] = {"steps": 4, "eval_every": 2}
    optimize["scheduler"] = {"kind": "none", "metric": "val/psnr_y", "mode": "max"}  # every trial runs to the end
    optimize["base"]["data"].update(batch_size=2, max_eval_images=2)
    optimize["base"]["eval"]["fidelity_backbones"] = ["vgg16_r"]
    raw["stages"] = {"assess": assess, "optimize": optimize}
    return raw


def images(client, run_id: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for f in client.list_artifacts(run_id, "images"):
        m = re.match(r"(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$", Path(f.path).name)
        if m:
            out.setdefault(m[1].replace("~", "/"), []).append(int(m[2]))
    return {k: sorted(v) for k, v in out.items()}


def artifact(client, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def test_every_run_has_its_tables_record_and_images_after_a_sweep(tmp_path):
    sweep = parse_space(tiny_space(), source="records.yaml")
    result = execute(sweep, RunOptions(output_dir=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                                       num_cpus=2, report=False))
    assert sum(s.failed for s in result.stages) == 0
    client = names.client(result.tracking_uri)

    crops = json.loads(artifact(client, result.sweep_run_id, records.ARTIFACT_CROPS))["crops"]
    ids = [c["id"] for c in crops]
    assert ids and images(client, result.sweep_run_id) == {
        **{f"hr/{i}": [0] for i in ids}, **{f"bicubic/{i}": [0] for i in ids}}

    runs = names.search_trial_runs(result.tracking_uri, "records", sweep_run_id=result.sweep_run_id)
    assert sorted(runs["tags.raygrid.stage"]) == ["assess", "optimize", "optimize"]
    for _, run in runs.iterrows():
        tables = sorted(f.path for f in client.list_artifacts(run.run_id, records.ARTIFACT_SCORES_DIR))
        if run["tags.raygrid.stage"] == "assess":
            assert tables == [records.ARTIFACT_SCORES.format(step=20)]
            table = records.read_table(artifact(client, run.run_id, tables[0]), "assess")
            assert len(table) == run["metrics.pairs"] == 16
            continue
        assert tables == [records.ARTIFACT_SCORES.format(step=s) for s in (2, 4)]
        for path in tables:
            table = records.read_table(artifact(client, run.run_id, path), "optimize")
            assert len(table) == 2 * 3 and set(table.role) == {"val"}  # 2 images x 3 evaluators
        record = records.check_evaluator_record(json.loads(artifact(client, run.run_id, records.ARTIFACT_EVALUATORS)))
        assert {e["name"]: e["shares"] for e in record}["fidelity_vgg16_r"] == ["loss"]
        assert images(client, run.run_id) == {f"sr/{i}": [2, 4] for i in ids}
