"""A small real MLflow store (sqlite) shaped like a sweep, for the judging tests.

Written through MlflowClient exactly as the contract between the writers and the judge says
(coord layout, "Sample crops"): the sweep run (tag raygrid.kind=sweep) holds
`samples/crops.json` and `hr/<id>`, `bicubic/<id>` images at step 0; each optimize run holds
`sr/<id>` images at every evaluation step, and/or a `checkpoints/final/model.pt` with the EMA
generator under "ema" plus `checkpoints/final/meta.json` with the step.

Each setting's SR crops are the HR crop plus noise whose strength grows with the setting's index,
so a person (or a test) can tell them apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow_store import new_store

from raygrid.run import tracking
from raygrid.spec import mlflow as names

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "judgedemo"
BACKBONES = ("vgg16_r", "resnet50", "convnext_tiny")
DISCRIMINATORS = ("none", "vanilla_conv")
EVAL_STEPS = (20, 60)
CROP_SIZE = 32


@dataclass
class Store:
    root: Path
    uri: str
    experiment: str
    sweep_run_id: str
    runs: dict[str, dict] = field(default_factory=dict)  # run_id -> {"point", "seed", "noise"}
    crop_ids: list[str] = field(default_factory=list)


def _point(backbone: str, disc: str) -> dict:
    return {"fidelity.backbone": backbone, "loss.adversarial_weight": 0 if disc == "none" else 0.05,
            "adversarial.discriminator": disc}


def build_store(root: Path, *, experiment: str = EXPERIMENT, images: bool = True, checkpoints: bool = False,
                optimize: bool = True, seeds: tuple[int, ...] = (0,), backbones=BACKBONES,
                discriminators=DISCRIMINATORS, val_sets=("demo_sr_val",)) -> Store:
    """One experiment (a sweep) in the MLflow store root/mlflow.db; several experiments can share
    one store (creating a store's tables is the slow part)."""
    root.mkdir(parents=True, exist_ok=True)
    uri = new_store(root / "mlflow.db")
    exp_id = tracking.ensure_experiment(uri, experiment, str(root / "mlartifacts"))
    sweep_id, _ = tracking.start_sweep_run(uri, exp_id, experiment, str(root / "ray" / experiment), resume=False)
    client = names.client(uri)
    rng = np.random.default_rng(0)
    store = Store(root, uri, experiment, sweep_id)
    hr = {}
    if images:
        crops = []
        for n in range(3):
            cid = f"c{n:02d}"
            yy, xx = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE]
            base = 0.5 + 0.4 * np.sin((xx + 3 * n) / (2 + n)) * np.cos(yy / (3 + n))
            img = np.stack([base, base[::-1], base.T], axis=-1)
            hr[cid] = img
            crops.append({"id": cid, "set": "demo_sr_val", "image": f"img{n}", "top": 4 * n, "left": 8,
                          "size": CROP_SIZE, "kind": "detail"})
            client.log_image(sweep_id, (img * 255).astype(np.uint8), key=f"hr/{cid}", step=0)
            client.log_image(sweep_id, (img * 255).astype(np.uint8), key=f"bicubic/{cid}", step=0)
        client.log_text(sweep_id, json.dumps({"crops": crops}), "samples/crops.json")
        store.crop_ids = [c["id"] for c in crops]
    if not optimize:
        return store
    index = 0
    for backbone in backbones:
        for disc in discriminators:
            for seed in seeds:
                point = {**_point(backbone, disc), "seed": seed}
                trial_id = f"t{index:04d}"
                tags = {names.PARENT_TAG: sweep_id, names.TAG_SWEEP_RUN: sweep_id, names.TAG_SWEEP: experiment,
                        names.TAG_STAGE: "optimize", names.TAG_TRIAL_ID: trial_id,
                        names.TAG_TRIAL_KEY: f"key-{index}", "raygrid.point": json.dumps(point),
                        names.TAG_OUTCOME: "finished"}
                run = client.create_run(exp_id, run_name=f"optimize-{trial_id}", tags=tags)
                rid = run.info.run_id
                params = {"fidelity.backbone": backbone, "adversarial.discriminator": disc,
                          "loss.adversarial_weight": str(point["loss.adversarial_weight"]), "seed": str(seed),
                          "generator.preset": "tiny", "generator.scale": "4", "data.val": json.dumps(list(val_sets))}
                for k, v in params.items():
                    client.log_param(rid, k, v)
                noise = 0.02 + 0.05 * index
                if images:
                    for step in EVAL_STEPS:
                        for cid, img in hr.items():
                            # earlier steps are noisier: the judge must show the last step's crops
                            sd = noise * (3 if step != EVAL_STEPS[-1] else 1)
                            sr = np.clip(img + rng.normal(0, sd, img.shape), 0, 1)
                            client.log_image(rid, (sr * 255).astype(np.uint8), key=f"sr/{cid}", step=step)
                if checkpoints:
                    _log_checkpoint(client, rid, seed=index)
                client.set_terminated(rid, "FINISHED")
                store.runs[rid] = {"point": point, "seed": seed, "noise": noise}
                index += 1
    return store


def _log_checkpoint(client, run_id: str, seed: int) -> None:
    import torch

    from raygrid.nets.generators import create_generator

    torch.manual_seed(seed)
    model = create_generator("swinir", "tiny", scale=4)
    sd = model.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"generator": sd, "ema": sd}, Path(tmp) / "model.pt")
        (Path(tmp) / "meta.json").write_text(json.dumps({"step": EVAL_STEPS[-1], "metrics": {}}))
        client.log_artifacts(run_id, tmp, "checkpoints/final")


# ---------------------------------------------------------------------------------------------
# Running the command
# ---------------------------------------------------------------------------------------------


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def judge_args(store: Store, *extra: str) -> list[str]:
    return ["--experiment", store.experiment, "--tracking-uri", store.uri, "--output-dir", str(store.root / "out"), *extra]


def judge_cmd(store: Store, *extra: str) -> list[str]:
    return [sys.executable, "-m", "raygrid.judge", *judge_args(store, *extra)]


def run_judge(store: Store, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(judge_cmd(store, *extra), check=False, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)


class Server:
    """`python -m raygrid.judge` in a subprocess; `url` once it prints that it is serving."""

    def __init__(self, store: Store, *extra: str, port: int = 0):
        self.store, self.extra, self.port = store, extra, port
        self.proc = None
        self.url = None
        self.output: list[str] = []

    def start(self, timeout: float = 120) -> Server:
        self.proc = subprocess.Popen(judge_cmd(self.store, "--port", str(self.port), *self.extra), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if "serving http://" in line:
                self.url = line.split("serving ", 1)[1].split()[0]
                self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
                # keep draining the pipe so the server never blocks on a full one
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("judge app did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
