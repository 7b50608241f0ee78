"""An autoscaling cluster that starts with no worker node (Ray's fake multi-node provider: real
raylets on this machine, launched by Ray's autoscaler): the sweep sizes its concurrency from the
autoscaler's config, not from the one CPU present, and its trials run on the nodes the autoscaler
adds. When no node can come up for a trial, the sweep stops with one line after the stated wait;
when no node type could ever hold a trial's worker, it says so before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import ray_procs as rp
import yaml

pytestmark = pytest.mark.slow  # starts Ray

PLACEMENT = textwrap.dedent("""
    import json, sys
    import ray
    from ray.util.state import list_actors, list_nodes
    ray.init(address=sys.argv[1], logging_level="ERROR")
    # the State API by this cluster's dashboard: a node registered under two addresses
    # (127.0.0.1 and the host's) reads as two Ray instances to the address lookup
    nodes = list_nodes(address=sys.argv[2], limit=100)
    workers = list_actors(address=sys.argv[2], filters=[("class_name", "=", "RayTrainWorker")], limit=100)
    print(json.dumps({"head": [n.node_id for n in nodes if n.is_head_node],
                      "workers": [a.node_id for a in workers], "nodes": len(nodes)}))
""")


def assess(name: str, path, cpus_per_worker: float):
    stage = dict(rp.TINY_ASSESS, resources={"workers": 1, "gpus_per_worker": 0, "cpus_per_worker": cpus_per_worker})
    return rp.tiny_space(name, {"assess": stage}, path)


def test_autoscaling_cluster_runs_trials_on_nodes_it_adds_and_times_out_in_one_line(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    # The head: 1 CPU and the TRAIN_DRIVER resource (as cluster.yaml's head); the trial drivers
    # take 0.01 CPU of it, so no 1-CPU trainer fits there: every trainer needs a new node.
    with rp.head(cache, num_cpus=1, resources={"TRAIN_DRIVER": 4},
                 autoscaling={"cpu_node": {"resources": {"CPU": 1}, "max_workers": 2}}) as h:
        address = f"127.0.0.1:{h.port}"
        out = tmp_path / "out"
        proc = subprocess.run(rp.sweep_cmd("--space", str(assess("autoscaled", tmp_path / "a.yaml", 1)),
                                           "--address", address, "--output-dir", str(out), "--no-report"),
                              capture_output=True, text=True, env=h.env, cwd=rp.REPO, timeout=900)
        console = proc.stdout + proc.stderr
        assert proc.returncode == 0, console
        assert "up to 3 at a time (the autoscaler's config" in console, console  # head 1 + 2 x 1 CPU
        trials = rp.trial_runs(out / "mlflow.db")
        assert len(trials) == 2 and {r["tags"]["raygrid.outcome"] for r in trials} == {"finished"}
        query = subprocess.run([sys.executable, "-c", PLACEMENT, address, h.dashboard], capture_output=True, text=True,
                               env=h.env, timeout=120)
        assert query.returncode == 0, query.stderr[-3000:]
        placed = json.loads(query.stdout.splitlines()[-1])
        assert placed["nodes"] >= 2 and placed["workers"], placed
        assert not set(placed["workers"]) & set(placed["head"]), placed  # every trainer on an added node

        # A trial whose worker no node of this autoscaler can hold, while the config the user
        # passed promises one: it waits the stated time, then the sweep stops with one line.
        claimed = tmp_path / "claimed.yaml"
        claimed.write_text(yaml.safe_dump(rp.fake_autoscaler_config(
            h.port, {"CPU": 1, "TRAIN_DRIVER": 4}, {"big": {"resources": {"CPU": 2}, "max_workers": 1}})))
        waiting = tmp_path / "waiting"
        proc = subprocess.run(rp.sweep_cmd("--space", str(assess("waits", tmp_path / "w.yaml", 2)), "--address",
                                           address, "--output-dir", str(waiting), "--no-report", "--cluster-config",
                                           str(claimed), "--node-timeout", "0.3"),
                              capture_output=True, text=True, env=h.env, cwd=rp.REPO, timeout=600)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith('error: no {"CPU": 2} node came up in 0.3 min: check EC2 quota and the autoscaler '
                               f"log ({h.temp_dir}/session_"), last
        assert "monitor.log on the head" in last
        assert {r["status"] for r in rp.trial_runs(waiting / "mlflow.db")} == {"FAILED"}

        # Without the promise, the autoscaler's own config says at once that nothing can hold it.
        never = tmp_path / "never"
        proc = subprocess.run(rp.sweep_cmd("--space", str(assess("never", tmp_path / "n.yaml", 2)), "--address",
                                           address, "--output-dir", str(never), "--no-report"),
                              capture_output=True, text=True, env=h.env, cwd=rp.REPO, timeout=600)
        assert proc.returncode == 2
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "no node type of the autoscaler's config" in err[0], proc.stderr
        assert 'one worker of an assess trial ({"CPU": 2})' in err[0]
        assert not (never / "mlflow.db").exists()
