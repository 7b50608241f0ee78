"""End to end on a local Ray instance (slow lane), one sweep over two generators: every assess and
optimize run has its per-item table at each evaluation step and its evaluator record, every
optimize run its SR crops as MLflow images at every evaluation step, and the sweep run the crops
with their HR and bicubic images — all checked through the MLflow client; the report built from
them has the per-generator asymmetry rows."""

from __future__ import annotations

import json

import pytest
import yaml
from test_records_logging import download as artifact
from test_records_logging import image_steps as images

from raygrid.run.options import RunOptions
from raygrid.run.runner import execute
from raygrid.space import SPACES_DIR, parse_space
from raygrid.spec import mlflow as names
from raygrid.spec import records

pytestmark = pytest.mark.slow  # starts Ray


def generator_space() -> dict:
    """The demo space cut to what the records and the per-generator rows need: 3 backbones (the
    fewest a rank correlation takes) x generator.arch {swinir, hat}, no adversarial loss, 4 steps
    evaluated at 2 and 4, random weights, the demo's evaluator panel."""
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["name"] = "records"
    assess, optimize = raw["stages"]["assess"], raw["stages"]["optimize"]
    backbones = ["vgg16_r", "resnet50", "convnext_tiny"]
    assess["axes"] = {"fidelity.backbone": backbones, "fit_on": [None]}
    assess["base"].update(max_pairs=16, n_boot=20, fidelity={"weights": "random", "alpha_beta": "uniform"})
    optimize.update(axes={"fidelity.backbone": backbones, "generator.arch": ["swinir", "hat"]}, linked={}, conditions=[],
                    budget={"steps": 4, "eval_every": 2}, scheduler={"kind": "none", "metric": "val/psnr_y", "mode": "max"})
    base = optimize["base"]
    base["fidelity"]["weights"] = base["adversarial"]["weights"] = base["eval"]["weights"] = "random"
    base["data"].update(batch_size=2, max_eval_images=2)
    raw["stages"] = {"assess": assess, "optimize": optimize}
    return raw


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep (3 assess + 6 optimize trials on CPU), with its report."""
    tmp = tmp_path_factory.mktemp("records")
    result = execute(parse_space(generator_space(), source="records.yaml"),
                     RunOptions(output_dir=str(tmp / "out"), data_root=str(tmp / "data"), num_cpus=2))
    assert sum(s.failed for s in result.stages) == 0
    return result, tmp / "out" / "report"


def test_every_run_has_its_tables_record_and_images_after_a_sweep(sweep):
    result, _ = sweep
    client = names.client(result.tracking_uri)

    crops = json.loads(artifact(client, result.sweep_run_id, records.ARTIFACT_CROPS))["crops"]
    ids = [c["id"] for c in crops]
    assert ids and images(client, result.sweep_run_id) == {
        **{f"hr/{i}": [0] for i in ids}, **{f"bicubic/{i}": [0] for i in ids}}

    runs = names.search_trial_runs(result.tracking_uri, "records", sweep_run_id=result.sweep_run_id)
    assert sorted(runs["tags.raygrid.stage"]) == ["assess"] * 3 + ["optimize"] * 6
    for _, run in runs.iterrows():
        tables = sorted(f.path for f in client.list_artifacts(run.run_id, records.ARTIFACT_SCORES_DIR))
        if run["tags.raygrid.stage"] == "assess":
            assert tables == [records.ARTIFACT_SCORES.format(step=20)]
            table = records.read_table(artifact(client, run.run_id, tables[0]), "assess")
            assert len(table) == run["metrics.pairs"] == 16
            (entry,) = records.check_evaluator_record(
                json.loads(artifact(client, run.run_id, records.ARTIFACT_EVALUATORS)))
            backbone = run["params.fidelity.backbone"]
            assert entry["name"] == f"fidelity_{backbone}" and entry["shares"] == []  # the measure it assesses
            continue
        assert tables == [records.ARTIFACT_SCORES.format(step=s) for s in (2, 4)]
        for path in tables:
            table = records.read_table(artifact(client, run.run_id, path), "optimize")
            # (1 selection image + 2 of the 3 test images) x 5 evaluators (PSNR, SSIM, 3 fidelity)
            assert len(table) == 3 * 5 and set(table.role) == {"val", "test"}
            assert set(table.loc[table.role == "val", "set"]) == {"demo_sr_select"}
        record = records.check_evaluator_record(json.loads(artifact(client, run.run_id, records.ARTIFACT_EVALUATORS)))
        shares = ["loss"] if run["params.fidelity.backbone"] == "vgg16_r" else []
        assert {e["name"]: e["shares"] for e in record}["fidelity_vgg16_r"] == shares
        assert images(client, run.run_id) == {f"sr/{i}": [2, 4] for i in ids}


def test_a_real_sweep_with_two_generators_reports_per_generator_rows(sweep):
    import pandas as pd

    _, report = sweep
    html = (report / "index.html").read_text(encoding="utf-8")
    assert "could not be produced" not in html
    asym = pd.read_csv(report / "asymmetry.csv")
    per = asym[(asym["panel"] == "all evaluators") & (asym["generator"] != "all")]
    assert set(per["generator"]) == {"swinir", "hat"} and per["n_backbones"].eq(3).all()
    assert "Per generator.arch" in html and "per generator.arch: the conclusion" in html
