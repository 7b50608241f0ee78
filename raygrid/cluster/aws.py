"""What raygrid knows about AWS for the cluster file: EC2 instance types and their GPUs/vCPUs,
regions (botocore's bundled list), the `provider` keys Ray reads, EC2 `RunInstances` parameters
(botocore's model), AMI ids, and the checks of `provider` and of every node type. Offline: no
network, no credentials.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any

from raygrid.cluster.errors import PLACEHOLDER, TRAIN_DRIVER, did_you_mean, fail, kind_of

# GPUs per instance for the EC2 GPU types raygrid's trainers run on (x86_64, NVIDIA; the
# "Accelerated computing" table of the EC2 instance-type docs). A type missing here is most often
# a typo; add it here when a new one is wanted.
GPU_INSTANCE_TYPES: dict[str, int] = {
    **{f"g4dn.{s}": 1 for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")},
    "g4dn.12xlarge": 4, "g4dn.metal": 8,
    **{
        f"{family}.{size}": gpus
        for family in ("g5", "g6", "g6e")
        for size, gpus in (("xlarge", 1), ("2xlarge", 1), ("4xlarge", 1), ("8xlarge", 1),
                           ("16xlarge", 1), ("12xlarge", 4), ("24xlarge", 4), ("48xlarge", 8))
    },
    "p3.2xlarge": 1, "p3.8xlarge": 4, "p3.16xlarge": 8, "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8, "p4de.24xlarge": 8,
    "p5.4xlarge": 1, "p5.48xlarge": 8, "p5e.48xlarge": 8, "p5en.48xlarge": 8,
    "p6-b200.48xlarge": 8,
}
# x86_64 families without GPUs, for the head (and any CPU worker type). Checked by family and
# size pattern only: EC2 itself rejects a size a family does not have when it launches the node.
CPU_FAMILIES = ("m5", "m5a", "m6i", "m6a", "m7i", "m7a", "c5", "c6i", "c6a", "c7i", "c7a",
                "r5", "r6i", "r6a", "r7i", "r7a")
_SIZE = re.compile(r"(large|xlarge|(\d+)xlarge|metal(-\d+xl)?)")

# Keys the AWS node provider and the autoscaler read from `provider` (ray 2.60:
# autoscaler/_private/aws/*, autoscaler/_private/constants.py). Ray's schema allows any key here,
# so `regoin: us-west-2` would silently fall back to no region at all.
AWS_PROVIDER_KEYS = frozenset({
    "type", "region", "availability_zone", "cache_stopped_nodes", "use_internal_ips",
    "use_external_head_ip", "security_group", "key_pair", "aws_credentials", "cloudwatch",
    "disable_node_updaters", "disable_launch_config_check", "foreground_node_launch",
    "worker_liveness_check",
})

_AMI = re.compile(r"ami-[0-9a-f]{8,17}")


@functools.lru_cache(maxsize=1)
def aws_regions() -> frozenset[str]:
    """Every region name botocore knows (its bundled endpoints data: offline)."""
    import boto3

    session = boto3.session.Session()
    return frozenset(region
                     for partition in session.get_available_partitions()
                     for region in session.get_available_regions("ec2", partition_name=partition))


def _check_provider(path, provider: dict[str, Any]) -> None:
    for key in provider:
        if key not in AWS_PROVIDER_KEYS:
            fail(path, f"provider.{key}",
                  "unknown AWS provider field (Ray ignores it)"
                  + did_you_mean(str(key), AWS_PROVIDER_KEYS))
    region = provider.get("region")
    if region is None:
        fail(path, "provider.region", "missing; expected the AWS region to run in, e.g. us-west-2")
    if not isinstance(region, str) or region not in aws_regions():
        fail(path, "provider.region",
              f"{region!r} is not an AWS region" + did_you_mean(str(region), aws_regions()))
    zones = provider.get("availability_zone")
    if zones is not None:
        for zone in str(zones).split(","):
            if not zone.strip().startswith(region):
                fail(path, "provider.availability_zone",
                      f"{zone.strip()!r} is not a zone of {region}; expected e.g. {region}a")


def instance_gpus(instance_type: str) -> int | None:
    """GPUs of a known instance type; 0 for a known CPU family; None for an unknown type."""
    if instance_type in GPU_INSTANCE_TYPES:
        return GPU_INSTANCE_TYPES[instance_type]
    family, _, size = instance_type.partition(".")
    return 0 if family in CPU_FAMILIES and _SIZE.fullmatch(size) else None


def instance_vcpus(instance_type: str) -> int | None:
    """vCPUs from the size (large=2, xlarge=4, Nxlarge=4N; the rule for every family above)."""
    m = _SIZE.fullmatch(instance_type.partition(".")[2])
    if not m or m.group(1).startswith("metal"):
        return None
    return 2 if m.group(1) == "large" else 4 * int(m.group(2) or 1)


@functools.lru_cache(maxsize=1)
def _run_instances_shape():
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


def _check_run_instances_params(path, field: str, node_config: dict[str, Any]) -> None:
    """node_config goes verbatim into EC2 RunInstances; check it against botocore's model of it
    (Ray adds MinCount/MaxCount itself)."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate({**node_config, "MinCount": 1, "MaxCount": 1},
                                       _run_instances_shape())
    if not report.has_errors():
        return
    try:
        kind, name, info = report._errors[0]  # botocore's structured form of generate_report()
    except (AttributeError, IndexError, ValueError):
        fail(path, field, report.generate_report().splitlines()[0])
    where = field + name
    if kind == "unknown field":
        fail(path, f"{where}.{info['unknown_param']}", "unknown EC2 RunInstances parameter"
              + did_you_mean(info["unknown_param"], info["valid_names"]))
    if kind == "missing required field":
        fail(path, f"{where}.{info['required_name']}", "missing (required by EC2 RunInstances)")
    if kind == "invalid type":
        types = ", ".join(re.sub(r"<class '(\w+)'>", r"\1", str(t)) for t in info["valid_types"])
        fail(path, where, f"{info['param']!r} has the wrong type; expected {types}")
    fail(path, where, report.generate_report().splitlines()[0])


def _check_node_types(path, config: dict[str, Any]) -> None:
    head = config["head_node_type"]
    gpu_workers = []
    for name, node_type in config["available_node_types"].items():
        base = f"available_node_types.{name}"
        node_config, resources = node_type["node_config"], node_type["resources"]
        _check_run_instances_params(path, f"{base}.node_config", node_config)
        # A launch template may carry the instance type, AMI and profile itself.
        templated = "LaunchTemplate" in node_config

        itype = node_config.get("InstanceType")
        gpus = None
        if itype is None and not templated:
            fail(path, f"{base}.node_config.InstanceType",
                  "missing; expected an EC2 instance type")
        if itype is not None:
            gpus = instance_gpus(itype)
            if gpus is None:
                fail(path, f"{base}.node_config.InstanceType", _unknown_instance_type(itype))
        _check_image_id(path, f"{base}.node_config.ImageId", node_config.get("ImageId"), templated)

        if gpus is not None and "GPU" in resources and resources["GPU"] != gpus:
            fail(path, f"{base}.resources.GPU",
                  f"{resources['GPU']} does not match {itype}, which has {gpus} GPU(s)")
        vcpus = instance_vcpus(itype) if itype else None
        if vcpus is not None and resources.get("CPU", 0) > vcpus:
            fail(path, f"{base}.resources.CPU",
                  f"{resources['CPU']} is more than the {vcpus} vCPUs of {itype}")
        if node_type["min_workers"] > node_type["max_workers"]:
            fail(path, f"{base}.min_workers", f"{node_type['min_workers']} is more than"
                                               f" max_workers ({node_type['max_workers']})")

        if name == head:
            _check_head(path, base, itype, gpus, resources)
            continue
        if TRAIN_DRIVER in resources:
            fail(path, f"{base}.resources.{TRAIN_DRIVER}",
                  "only the head may advertise it: trial drivers must run on the on-demand head,"
                  " next to the MLflow server on 127.0.0.1")
        if "IamInstanceProfile" not in node_config and not templated:
            fail(path, f"{base}.node_config.IamInstanceProfile",
                  "missing; workers need an instance profile with S3 access for datasets, weights"
                  " and checkpoints (Ray gives one to the head only)")
        if resources.get("GPU", gpus or 0) > 0 and node_type["max_workers"] > 0:
            gpu_workers.append(name)
    if not gpu_workers:
        fail(path, "available_node_types",
              "no GPU worker type can start (a non-head type with GPUs and max_workers >= 1)")


def _unknown_instance_type(itype: str) -> str:
    family, _, size = str(itype).partition(".")
    if family in CPU_FAMILIES:
        return f"{size!r} is not an EC2 size; expected large, xlarge or <N>xlarge"
    close = difflib.get_close_matches(str(itype), GPU_INSTANCE_TYPES, n=1)
    gpu_families = dict.fromkeys(t.partition(".")[0] for t in GPU_INSTANCE_TYPES)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown EC2 instance type {itype!r}{hint}"
            + f"; expected a GPU type of {', '.join(gpu_families)} (see GPU_INSTANCE_TYPES in"
            f" raygrid/cluster/aws.py) or a CPU type of {', '.join(CPU_FAMILIES)}")


def _check_image_id(path, field: str, image: Any, templated: bool) -> None:
    if image is None:
        if not templated:
            # Ray would fall back to its default AMI: a DLAMI with CUDA 11, too old for torch 2.14.
            fail(path, field, "missing; expected the AMI id (ami-...) of a Deep Learning Base"
                               " OSS Nvidia Driver GPU AMI (see the comment in cluster.yaml)")
        return
    if not isinstance(image, str):
        fail(path, field, f"expected an AMI id string, got {kind_of(image)}")
    if PLACEHOLDER in image:
        return  # reported by find_placeholders
    if image == "latest_dlami":
        fail(path, field, "latest_dlami is Ray's default AMI (DLAMI Ubuntu 18.04, CUDA 11), too"
                           " old for torch 2.14; expected the AMI id of a current Deep Learning"
                           " Base AMI")
    if not _AMI.fullmatch(image):
        fail(path, field, f"{image!r} is not an AMI id; expected ami- and 8 or 17 hex digits")


def _check_head(path, base: str, itype: str | None, gpus: int | None,
                resources: dict[str, int]) -> None:
    if gpus:
        fail(path, f"{base}.node_config.InstanceType",
              f"{itype} has {gpus} GPU(s); the head runs MLflow and the trial drivers, not"
              " training: expected a CPU instance type")
    if resources.get(TRAIN_DRIVER, 0) < 1:
        fail(path, f"{base}.resources.{TRAIN_DRIVER}",
              "missing or 0; the head must advertise TRAIN_DRIVER (an integer >= 1) so the sweep's"
              " trial drivers are placed on it")
    if resources.get("CPU") == 0:
        fail(path, f"{base}.resources.CPU", "0; the trial drivers and the sweep job need CPU")
