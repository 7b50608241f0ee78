"""`python -m raygrid.judge` on real sqlite MLflow stores: the crop source (logged images, or
rendered from checkpoints), the HTTP API, --sync, and bad input as one line."""

import hashlib
import io
import json
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest
from judge_fixtures import (
    CROP_SIZE,
    EVAL_STEPS,
    Server,
    build_store,
    judge_args,
    run_judge,
)
from PIL import Image

from raygrid.judge.cli import main
from raygrid.judge.source import load_crop_set
from raygrid.judge.sync import ARTIFACT, load_judgements
from raygrid.spec import mlflow as names


@pytest.fixture(scope="module")
def mlflow_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def logged(mlflow_root):
    return build_store(mlflow_root)


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_logged_images_are_the_final_steps_and_cached(logged, tmp_path):
    notes = []
    cs = load_crop_set(logged.uri, logged.experiment, tmp_path / "crops", log=notes.append)
    assert cs.crops_origin == f"sweep run {logged.sweep_run_id}" and [c.id for c in cs.crops] == logged.crop_ids
    assert set(cs.sources.values()) == {"logged"} and not notes  # nothing rendered
    assert len(cs.items()) == 6 and cs.sweep_run_id == logged.sweep_run_id
    client = names.client(logged.uri)
    for run_id in logged.runs:
        final = {a.path: a for a in client.list_artifacts(run_id, "images")
                 if f"+step+{EVAL_STEPS[-1]}+" in a.path and a.path.endswith(".png")}
        for crop_id, (path, step) in cs.sr[run_id].items():
            assert step == EVAL_STEPS[-1]
            (match,) = [p for p in final if p.split("/")[-1].startswith(f"sr~{crop_id}+")]
            original = client.download_artifacts(run_id, match, str(tmp_path / "dl"))
            assert hashlib.sha256(Path(original).read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "crops").rglob("*.png")}
    again = load_crop_set(logged.uri, logged.experiment, tmp_path / "crops")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "crops").rglob("*.png")} == stamp  # reused, not re-fetched
    assert again.sr.keys() == cs.sr.keys()


def test_api_stores_each_judgement_once_and_sync_mirrors_to_mlflow(logged, capsys):
    with Server(logged) as server:
        nxt = json.loads(_get(server.url + "api/next?judge=ana")[1])
        for key in ("reference_url", "left_url", "right_url"):
            s, png = _get(server.url + nxt[key].lstrip("/"))
            assert s == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        rec = {"id": str(uuid.uuid4()), "judge": "ana", "sitting": "s1", "seq": 1, "crop_id": nxt["crop_id"],
               "left_run": nxt["left_run"], "right_run": nxt["right_run"], "choice": "left", "elapsed_ms": 2100,
               "repeat_of": None}
        assert _post(server.url + "api/judgements", rec) == (200, {"stored": True, "duplicate": False,
                                                                   "progress": {"mine": 1, "total": 1, "target": 40}})
        code, body = _post(server.url + "api/judgements", rec)  # a retry after a lost reply
        assert code == 200 and body["duplicate"] is True
        assert _post(server.url + "api/judgements", {**rec, "choice": "right"})[0] == 409
        assert _post(server.url + "api/judgements", {**rec, "id": str(uuid.uuid4()), "left_run": "nope"})[0] == 422
        assert _post(server.url + "api/judgements", {**rec, "id": str(uuid.uuid4()), "extra": 1})[0] == 422
        assert _get(server.url + "api/config")[0] == 200
    # --sync in this process (the command itself runs as a process in test_bad_input_is_one_line)
    capsys.readouterr()
    assert main(judge_args(logged, "--sync")) == 0
    synced = capsys.readouterr().out
    assert "1 judgement(s)" in synced and logged.sweep_run_id in synced
    client = names.client(logged.uri)
    df = pd.read_parquet(client.download_artifacts(logged.sweep_run_id, ARTIFACT, str(logged.root / "dl")))
    assert list(df["id"]) == [rec["id"]] and df.iloc[0]["left_step"] == EVAL_STEPS[-1]
    assert df.iloc[0]["left_item"] == json.dumps({k: v for k, v in logged.runs[rec["left_run"]]["point"].items()
                                                  if k != "seed"}, sort_keys=True, separators=(",", ":"))
    # a second machine: empty local file, syncs, and gets the judgement from MLflow
    assert main(judge_args(logged, "--sync", "--output-dir", str(logged.root / "elsewhere"))) == 0
    assert "1 new from MLflow" in capsys.readouterr().out
    assert len(load_judgements(logged.uri, logged.experiment)) == 1


def test_rendered_from_checkpoints_when_no_images(mlflow_root):
    store = build_store(mlflow_root, experiment="ckpt", images=False, checkpoints=True, backbones=("vgg16_r", "resnet50"),
                        discriminators=("none",))
    with Server(store, "--judge", "ana") as server:
        out = "".join(server.output)
        assert out.count("rendering") == 2 and "chosen here" in out
        nxt = json.loads(_get(server.url + "api/next?judge=ana")[1])
        for key in ("reference_url", "left_url", "right_url"):
            img = Image.open(io.BytesIO(_get(server.url + nxt[key].lstrip("/"))[1]))
            assert img.size[0] == img.size[1] and img.size[0] % 4 == 0 and img.size[0] >= CROP_SIZE
        assert json.loads(_get(server.url + "api/config")[1])["judge"] == "ana"
    crops_dir = store.root / "out" / "judge" / store.experiment / "crops"
    chosen = json.loads((crops_dir / "crops.json").read_text())["crops"]
    assert chosen and all(c["set"] == "demo_sr_val" for c in chosen)
    for run_id in store.runs:
        meta = json.loads((crops_dir / "sr" / run_id / "meta.json").read_text())
        assert meta["source"] == "rendered" and meta["step"] == EVAL_STEPS[-1] and len(meta["ids"]) == len(chosen)
    # a later sitting reuses the rendered crops (the app's own loader, in this process)
    said = []
    again = load_crop_set(store.uri, store.experiment, crops_dir, log=said.append)
    assert not [line for line in said if "rendering" in line] and len(again.sr) == len(store.runs)


def _one_line(code, err, *needles):
    assert code == 2, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line(mlflow_root, capsys):
    no_opt = build_store(mlflow_root, experiment="noopt", images=True, optimize=False)
    bare = build_store(mlflow_root, experiment="bare", images=False, checkpoints=False,
                       backbones=("vgg16_r", "resnet50"), discriminators=("none",))
    # the real command: exit status and stderr of the process
    res = run_judge(no_opt, "--port", "0")
    _one_line(res.returncode, res.stderr, "no finished optimize runs", "'noopt'")
    assert "Traceback" not in res.stdout

    def judge(store, *extra):
        code = main(judge_args(store, *extra))
        return code, capsys.readouterr().err

    _one_line(*judge(bare, "--port", "0"), "SR images", "checkpoints/final/model.pt")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _one_line(*judge(bare, "--port", str(port)), f"port {port}", "in use")
    _one_line(*judge(bare, "--experiment", "nosuch", "--port", "0"), "no MLflow experiment named 'nosuch'")
    missing = mlflow_root / "none.db"
    _one_line(*judge(bare, "--tracking-uri", f"sqlite:///{missing}"), "no MLflow store")
    assert not missing.exists()  # not created as a side effect
    _one_line(*judge(no_opt, "--target", "0"), "--target")
    _one_line(*judge(no_opt, "--sync", "--experiment", "nosuch"), "no MLflow experiment")
