"""Helpers for the slow tests that run sweeps as separate processes: a `ray start --head` cluster
of the test's own (optionally autoscaling, with Ray's fake multi-node provider), stopped by the
PIDs it started — never `ray stop`, which would stop every Ray instance on the machine — and tiny
spaces.

Token authentication (Ray 2.60's default for new clusters) is set up per cluster with a random
token in the environment of every process the test starts: no file in ~/.ray is touched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from raygrid.space import SPACES_DIR

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(cache: str | os.PathLike) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAYGRID_CACHE=str(cache),
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.25", RAY_AIR_NEW_OUTPUT="0", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    return env


class Head:
    """A running `ray start --head` cluster started by a test."""

    def __init__(self, temp_dir: str, port: int, dashboard_port: int, env: dict[str, str]):
        self.temp_dir, self.port, self.dashboard_port, self.env = temp_dir, port, dashboard_port, env

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def processes(self):
        """Every process of this cluster: those naming its temp dir or GCS port, and their
        descendants (agents and workers rename themselves and name neither)."""
        import psutil

        roots = []
        for p in psutil.process_iter(["cmdline"]):
            args = p.info["cmdline"] or []
            if any(self.temp_dir in a or a.endswith(f":{self.port}") for a in args):
                roots.append(p)
        found = {p.pid: p for p in roots}
        for p in roots:
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.Error:
                pass
        return list(found.values())

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextmanager
def head(cache, num_cpus: int = 2, resources: dict | None = None, autoscaling: dict | None = None,
         extra_env: dict[str, str] | None = None):
    """A head on loopback; `autoscaling` = worker node types for Ray's fake multi-node provider."""
    temp_dir = tempfile.mkdtemp(prefix="rgt-", dir="/tmp")  # short: Ray's socket paths must fit
    port, dash = free_port(), free_port()
    env = base_env(cache)
    env.update(extra_env or {})
    cmd = ["ray", "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
           f"--num-cpus={num_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--disable-usage-stats"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    if autoscaling is not None:
        config = fake_autoscaler_config(port, {"CPU": num_cpus, **(resources or {})}, autoscaling)
        path = Path(temp_dir) / "autoscaler.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd.append(f"--autoscaling-config={path}")
        env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    h = Head(temp_dir, port, dash, env)
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120)
        yield h
    finally:
        h.stop()


def fake_autoscaler_config(port: int, head_resources: dict, worker_types: dict, max_workers: int | None = None) -> dict:
    """A cluster config for Ray's fake multi-node provider (what Ray's own autoscaling tests use;
    the nodes are real raylets on this machine)."""
    types = {"ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0}}
    for name, spec in worker_types.items():
        types[name] = {"node_config": {}, "min_workers": 0, **spec}
    total = max_workers if max_workers is not None else sum(t.get("max_workers", 0) for t in worker_types.values())
    return {"cluster_name": "raygrid-test", "max_workers": total,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"},
            "available_node_types": types, "head_node_type": "ray.head.default", "auth": {},
            "upscaling_speed": 1.0, "idle_timeout_minutes": 0.5, "docker": {},
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": []}


# ---------------------------------------------------------------------------------------------
# Tiny spaces and MLflow read-back
# ---------------------------------------------------------------------------------------------


def tiny_space(name: str, stages: dict[str, dict], path: Path) -> Path:
    """The demo space cut down: `stages` = {stage: {key: value}} replacing the demo's keys."""
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    out = {}
    for stage, changes in stages.items():
        spec = raw["stages"][stage]
        base = changes.pop("base", {})
        spec.update(changes)
        for key, value in base.items():
            if isinstance(value, dict):
                spec["base"].setdefault(key, {}).update(value)
            else:
                spec["base"][key] = value
        out[stage] = spec
    raw["name"], raw["stages"] = name, out
    path.write_text(yaml.safe_dump(raw))
    return path


TINY_ASSESS = {"axes": {"fidelity.backbone": ["vgg16_r"], "fit_on": [None, "demo_fr"]},
               "base": {"max_pairs": 16, "n_boot": 20}}


def tiny_optimize(steps: int = 8, eval_every: int = 2, trials: int = 1) -> dict:
    return {"axes": {"fidelity.backbone": ["vgg16_r", "resnet50"][:trials]}, "conditions": [], "linked": {},
            "budget": {"steps": steps, "eval_every": eval_every},
            "scheduler": {"kind": "none", "metric": "val/psnr_y", "mode": "max"},
            "base": {"data": {"batch_size": 2}, "eval": {"fidelity_backbones": ["vgg16_r"]}}}


def runs(db: Path) -> list[dict]:
    """Every run of a sqlite MLflow store: name, status and tags (read without MLflow, so a test
    can poll a store a running sweep writes)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
            rows = c.execute("select run_uuid, name, status from runs").fetchall()
            tags = c.execute("select run_uuid, key, value from tags").fetchall()
            steps = c.execute("select run_uuid, max(value) from latest_metrics where key='progress/step' "
                              "group by run_uuid").fetchall()
    except sqlite3.Error:
        return []
    out = {r: {"run_id": r, "name": n, "status": s, "tags": {}, "step": None} for r, n, s in rows}
    for r, k, v in tags:
        out[r]["tags"][k] = v
    for r, v in steps:
        out[r]["step"] = v
    return list(out.values())


def trial_runs(db: Path) -> list[dict]:
    return [r for r in runs(db) if "raygrid.trial_id" in r["tags"]]


def sweep_runs(db: Path) -> list[dict]:
    return [r for r in runs(db) if r["tags"].get("raygrid.kind") == "sweep"]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raygrid.sweep", *args]
