"""A multi-node Ray cluster on this machine (ray.cluster_utils.Cluster): a head node for the
trial drivers (TRAIN_DRIVER, as in cluster.yaml) and two worker nodes for the trainers; Tune
storage and MLflow artifacts on S3 (moto_server on loopback). Trials run on both workers; one
worker node is removed mid-sweep and its trial recovers from its checkpoint on the survivor."""

from __future__ import annotations

import os
import threading
import time

import pytest
import yaml

from raygrid.run.options import RunOptions
from raygrid.run.runner import execute
from raygrid.space import SPACES_DIR, parse_space
from raygrid.spec import mlflow as names

pytestmark = pytest.mark.slow  # starts Ray


def space() -> dict:
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    opt = raw["stages"]["optimize"]
    opt["axes"] = {"fidelity.backbone": ["vgg16_r", "resnet50"]}
    opt["conditions"], opt["linked"] = [], {}
    opt["base"]["data"]["batch_size"] = 2
    opt["base"]["eval"]["fidelity_backbones"] = ["vgg16_r"]
    opt["budget"] = {"steps": 16, "eval_every": 2}
    opt["scheduler"] = {"kind": "none", "metric": "val/psnr_y", "mode": "max"}
    opt["resources"] = {"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}  # one trainer per node
    opt["max_failures"] = 2
    return {"name": "multinode", "weights_dir": raw["weights_dir"], "stages": {"optimize": opt}}


def worker_nodes_with_trainers(worker_ids: set[str]) -> set[str]:
    from ray.util.state import list_actors

    alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return {a.node_id for a in alive} & worker_ids


def registered_checkpoints(s3, bucket: str, prefix: str) -> set[str]:
    """Train runs under `prefix` whose checkpoint manager snapshot names a latest checkpoint."""
    import json

    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    runs = set()
    for obj in listing.get("Contents", []):
        if obj["Key"].endswith("/checkpoint_manager_snapshot.json"):
            snapshot = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if snapshot.get("latest_checkpoint_result"):
                runs.add(obj["Key"][len(prefix):].split("/")[0])
    return runs


def test_trials_spread_over_nodes_and_survive_losing_one(tmp_path, s3_env):
    import boto3
    import ray
    import ray.util
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.25"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="raygrid-multinode")

    import socket

    with socket.socket() as sock:  # the dashboard (State API) must be up; any free port
        sock.bind(("127.0.0.1", 0))
        dashboard_port = sock.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"TRAIN_DRIVER": 4}, "include_dashboard": True,
        "dashboard_port": dashboard_port})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        worker_ids = {w.node_id for w in workers}
        sweep = parse_space(space(), source="multinode.yaml")
        opts = RunOptions(output_dir=str(tmp_path / "out"), storage="s3://raygrid-multinode/ray",
                          artifact_root="s3://raygrid-multinode/mlflow", s3_endpoint_url=s3_env, report=False)
        outcome: dict = {}
        def run():
            try:
                outcome["result"] = execute(sweep, opts)
            except BaseException as e:  # noqa: BLE001 — shown by the wait below
                outcome["error"] = e

        runner = threading.Thread(target=run, daemon=True)
        runner.start()

        # Wait until both trainers run on the two worker nodes and both trials have a checkpoint
        # that Train has *registered*: its run snapshot in S3 names a latest checkpoint. A
        # state.pt in S3 is not enough: it is uploaded before the controller registers it, and a
        # node lost in between leaves the retry nothing to resume from.
        deadline = time.time() + 240
        busy: set[str] = set()
        registered: set[str] = set()
        while time.time() < deadline:
            assert "error" not in outcome, f"the sweep stopped: {outcome.get('error')!r}"
            busy = worker_nodes_with_trainers(worker_ids)
            registered = registered_checkpoints(s3, "raygrid-multinode", "ray/multinode/train/")
            if len(busy) == 2 and len(registered) == 2:
                break
            time.sleep(0.5)
        assert len(busy) == 2, "the two trials did not run on the two worker nodes"
        assert len(registered) == 2, f"checkpoints registered only for {registered}"
        victim = next(w for w in workers if w.node_id in busy)
        cluster.remove_node(victim)

        runner.join(timeout=420)
        assert not runner.is_alive(), "the sweep did not finish after losing a node"
        result = outcome["result"]
        runs = names.search_trial_runs(result.tracking_uri, "multinode", sweep_run_id=result.sweep_run_id)
        shown = [c for c in ("run_id", "tags.raygrid.retries", "tags.raygrid.outcome", "tags.raygrid.error") if c in runs]
        assert (result.stages[0].trials, result.stages[0].finished, result.stages[0].failed) == (2, 2, 0), \
            f"{result.stages}\n{runs[shown].to_string()}"
        assert len(runs) == 2  # no duplicate run for the retried trial
        client = names.client(result.tracking_uri)
        retried = runs[runs["tags.raygrid.retries"].notna()]
        assert len(retried) == 1, runs[shown].to_string()
        starts = [m.value for m in client.get_metric_history(retried.run_id.iloc[0], "progress/start_step")]
        assert starts[0] == 0 and starts[-1] > 0, starts  # resumed from a checkpoint, not from zero
        steps = [m.step for m in client.get_metric_history(retried.run_id.iloc[0], "val/psnr_y")]
        assert steps == list(range(2, 17, 2))
        assert all(u.startswith("s3://raygrid-multinode/mlflow/") for u in runs["artifact_uri"])

        # every trainer that ever ran was on a worker node, never on the drivers' head node
        trainers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000)
        assert {a.node_id for a in trainers} <= worker_ids
        deadline = time.time() + 60  # the cleaner polls; a removed node's group takes longer
        while any(pg["state"] != "REMOVED" for pg in ray.util.placement_group_table().values()):
            left = [(pg["name"], pg["state"]) for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
            assert time.time() < deadline, f"placement groups left behind: {left}"
            time.sleep(0.5)
    finally:
        ray.shutdown()
        cluster.shutdown()
