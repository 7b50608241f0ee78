"""What a Ray cluster can hold: the nodes it has now, and the nodes its autoscaler may add.

An autoscaling cluster starts small (raygrid's cluster.yaml: a CPU head, GPU workers with
`min_workers: 0`), so the resources present when a sweep starts say nothing about how many
trials can run. The autoscaler's own config does: each node type's resources times its
`max_workers`, with the top-level `max_workers` bounding the worker count. raygrid finds that
config, in order:

1. `--cluster-config FILE` (a cluster.yaml, or the `ray_bootstrap_config.yaml` `ray up` writes
   on the head);
2. the config the running autoscaler was started with: on a head started by `ray up` (or
   `ray start --head --autoscaling-config=...`), the autoscaler process (`monitor.py`) of this
   cluster names it on its command line (the sweep job runs on the head: README "On a cluster");
3. the cluster config KubeRay and Anyscale publish in the GCS
   (`ray._private.state.state.get_max_resources_from_cluster_config()`, which Ray Train itself
   reads to reject infeasible worker groups);
4. otherwise the cluster is fixed: the resources present.

The result is an upper bound; Tune queues what does not fit at the moment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raygrid.cluster.errors import ClusterConfigError

# Where the autoscaler logs why a node does not come up (on the head).
AUTOSCALER_LOG = "/tmp/ray/session_latest/logs/monitor.log"


@dataclass(frozen=True)
class Capacity:
    """The most of each resource the cluster can have, and where that number came from."""

    resources: dict[str, float]
    source: str  # for people: "the 2 nodes present" / "autoscaler config <file>: 8 x gpu_1x, ..."
    autoscaling: bool = False
    node_types: dict[str, dict[str, float]] = field(default_factory=dict)  # head and worker types (autoscaling)

    def trials(self, needs: dict[str, float]) -> int:
        """How many trials needing `needs` (resource -> amount) fit at once."""
        counts = [self.resources.get(r, 0.0) / n for r, n in needs.items() if n > 0]
        finite = [math.floor(c + 1e-9) for c in counts if not math.isinf(c)]
        return min(finite) if finite else (2**31 - 1 if counts else 0)

    def fitting_types(self, per_worker: dict[str, float]) -> list[str]:
        """The node types one Train worker fits on (autoscaling clusters)."""
        def holds(res: dict[str, float], r: str, n: float) -> bool:
            if r == "CPU" and r not in res:
                return True  # not stated in cluster.yaml: `ray up` fills it in from the instance type
            return res.get(r, 0.0) + 1e-9 >= n

        return [name for name, res in self.node_types.items()
                if all(holds(res, r, n) for r, n in per_worker.items() if n > 0)]


def load_config(path: str | Path) -> dict[str, Any]:
    """A cluster config file (YAML or the JSON the autoscaler writes), as a dict."""
    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text())  # JSON is YAML
    except OSError as e:
        raise ClusterConfigError(p, "", f"cannot read it: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ClusterConfigError(p, "", f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("available_node_types"), dict):
        raise ClusterConfigError(p, "available_node_types", "missing; expected the node types of an "
                                 "autoscaling cluster (a cluster.yaml or ray_bootstrap_config.yaml)")
    return raw


def from_config(config: dict[str, Any], source: str) -> Capacity:
    """The capacity an autoscaler config allows: the head's resources once, plus for each
    resource the best mix of worker nodes within each type's and the total `max_workers`."""
    types = config["available_node_types"]
    head = config.get("head_node_type")
    total_cap = int(config.get("max_workers", sum(int(t.get("max_workers", 0)) for t in types.values())))
    workers = {name: {k: float(v) for k, v in (t.get("resources") or {}).items()}
               for name, t in types.items() if name != head}
    limits = {name: int(t.get("max_workers", total_cap)) for name, t in types.items() if name != head}
    resources: dict[str, float] = {k: float(v) for k, v in ((types.get(head) or {}).get("resources") or {}).items()}
    names = {r for res in workers.values() for r in res}
    for r in names | {"CPU"}:
        if r == "CPU" and any("CPU" not in res for name, res in workers.items() if limits[name] > 0):
            # cluster.yaml names GPUs only; `ray up` fills in the CPUs of AWS instance types later
            resources["CPU"] = math.inf
            continue
        left, amount = total_cap, 0.0
        for name in sorted(workers, key=lambda n: -workers[n].get(r, 0.0)):
            n = min(limits[name], left)
            amount += n * workers[name].get(r, 0.0)
            left -= n
        resources[r] = resources.get(r, 0.0) + amount
    shown = ", ".join(f"{limits[n]} x {n}" for n in workers if limits[n] > 0) or "no worker types"
    every = {**workers, head: {k: float(v) for k, v in ((types.get(head) or {}).get("resources") or {}).items()}}
    return Capacity(resources, f"{source}: head + {shown} (at most {total_cap} workers)", True, every)


def autoscaler_config_path(gcs_address: str | None) -> str | None:
    """The `--autoscaling-config` of the autoscaler serving this cluster, if it runs on this
    machine (the head)."""
    if not gcs_address:
        return None
    import psutil

    port = gcs_address.rsplit(":", 1)[-1]
    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if not any(a.endswith("autoscaler/_private/monitor.py") or a.endswith("autoscaler/v2/monitor.py") for a in args):
            continue
        if not any(a.startswith("--gcs-address=") and a.rsplit(":", 1)[-1] == port for a in args):
            continue
        for a in args:
            if a.startswith("--autoscaling-config="):
                return a.split("=", 1)[1]
    return None


def _gcs_capacity() -> dict[str, float] | None:
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # a private API: absent or failing means "not published"
        return None
    return {k: float(v) for k, v in found.items()} if found else None


def discover(cluster_config: str | None = None) -> Capacity:
    """The connected cluster's capacity (module docstring); Ray must be initialised."""
    import ray

    present = {k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    found: Capacity | None = None
    if cluster_config:
        found = from_config(load_config(cluster_config), str(cluster_config))
    else:
        gcs = getattr(getattr(ray._private.worker, "_global_node", None), "gcs_address", None) \
            or ray.get_runtime_context().gcs_address
        path = autoscaler_config_path(gcs)
        if path and Path(path).expanduser().is_file():
            found = from_config(load_config(path), f"the autoscaler's config {path}")
        else:
            gcs_max = _gcs_capacity()
            if gcs_max:
                found = Capacity(gcs_max, "the cluster config published in the GCS", True)
    if found is None:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return Capacity(present, f"the {nodes} node{'s' if nodes != 1 else ''} present")
    # the head may advertise more than its config says (e.g. resources given to `ray start`)
    merged = {r: max(found.resources.get(r, 0.0), present.get(r, 0.0)) for r in {*found.resources, *present}}
    return Capacity(merged, found.source, True, found.node_types)


def autoscaler_log() -> str:
    """Where this cluster's autoscaler logs (on the head): the session's monitor.log."""
    import ray

    node = getattr(ray._private.worker.global_worker, "node", None)
    try:
        return str(Path(node.get_logs_dir_path()) / "monitor.log")
    except Exception:  # not connected, or an older/newer Node without it
        return AUTOSCALER_LOG


def describe_resources(res: dict[str, float]) -> str:
    def shown(v: float):
        return "unknown" if math.isinf(v) else int(v) if float(v).is_integer() else v

    return json.dumps({k: shown(v) for k, v in sorted(res.items())})
