"""Offline checks for raygrid's AWS `cluster.yaml`: Ray's own schema plus what it lets through.

    python -m raygrid.cluster check cluster.yaml            # exit 0 "ok", or 2 and one line
    python -m raygrid.cluster check cluster.yaml --strict   # placeholders are errors, too

`ray up` validates a cluster file only when it is already talking to AWS, and even then Ray's
JSON schema waves through typos in `provider` (it allows extra keys), anything inside
`node_config` (free-form EC2 arguments) and AMI/instance-type mistakes (ray-mlflow.md §12.2). This
module runs Ray's own `prepare_config` + `validate_config` (what `ray up` runs; private API, hence
the pinned Ray) and then raygrid's checks for the rest, using botocore's bundled region list and
EC2 `RunInstances` model, so it needs no network and no credentials.

Every error is one line naming the file and the field: `cluster.yaml: provider.regoin: ...`.
The shipped template contains placeholders (`CHANGEME`) the user fills in; they are warnings
unless `strict=True`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

PLACEHOLDER = "CHANGEME"

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
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_EXPORT = re.compile(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$")

# raygrid's settings live in `export NAME=value` lines of one setup command (Ray's schema forbids
# unknown top-level keys; setup_commands reach every node and the shell that runs `ray start`).
SETTINGS_MARKER = "export RAYGRID_BUCKET="
REQUIRED_SETTINGS = ("RAYGRID_BUCKET", "AWS_DEFAULT_REGION", "RAYGRID_S3_PREFIX", "RAYGRID_DATA",
                     "RAYGRID_WEIGHTS", "MLFLOW_TRACKING_URI")
TRAIN_DRIVER = "TRAIN_DRIVER"


class ClusterConfigError(ValueError):
    """A cluster file problem as one line: `<file>: <field>: <what is wrong; what was expected>`."""

    def __init__(self, file: str | os.PathLike[str], field: str, message: str):
        self.file, self.field = str(file), field
        self.message = " ".join(str(message).split())  # one line, whatever Ray/YAML said
        super().__init__(f"{self.file}: {field}: {self.message}")


def validate_cluster_config(path: str | os.PathLike[str], *, strict: bool = False) -> None:
    """Raise ClusterConfigError for the first problem in the cluster file at `path`.

    Placeholders (values containing CHANGEME) pass unless `strict`; list them with
    `find_placeholders`.
    """
    raw = load_cluster_yaml(path)
    _check_shape(path, raw)
    _check_ray_schema(path, raw)
    config = _ray_prepare_and_validate(path, raw)
    _check_provider(path, config["provider"])
    _check_node_types(path, config)
    _check_settings(path, raw, config)
    if strict:
        for field, value in find_placeholders(path, raw):
            _fail(path, field, f"{value!r} is a placeholder; fill it in before `ray up`")


def find_placeholders(path: str | os.PathLike[str],
                      config: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(field, value) for every value still containing the CHANGEME placeholder, in file order.

    Fields holding the same value (a YAML alias, e.g. one AMI for all node types) are reported
    together as `a, b, c`.
    """
    if config is None:
        config = load_cluster_yaml(path)
    by_value: dict[str, list[str]] = {}
    for field, value in _walk(config):
        for label, shown in _placeholder_lines(field, value):
            by_value.setdefault(shown, []).append(label)
    return [(", ".join(fields), value) for value, fields in by_value.items()]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: plain PyYAML keeps the last one silently."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_cluster_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        _fail(path, "(file)", f"cannot read it: {e.strerror or e}")
    try:
        config = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}" if mark else "(file)"
        _fail(path, where, f"not valid YAML: {e.problem or e.context}")
    except yaml.YAMLError as e:
        _fail(path, "(file)", f"not valid YAML: {e}")
    if not isinstance(config, dict):
        _fail(path, "(top level)", f"expected a mapping of cluster fields, got {_kind(config)}")
    return config


# ---------------------------------------------------------------------------------------------
# Ray's own checks
# ---------------------------------------------------------------------------------------------


def _check_shape(path, config: dict[str, Any]) -> None:
    """What Ray's prepare_config indexes unchecked: fail here with the field, not a KeyError."""
    provider = config.get("provider")
    if not isinstance(provider, dict):
        _fail(path, "provider", "missing; expected a mapping with type: aws and region")
    if provider.get("type") != "aws":
        what = "missing" if "type" not in provider else f"{provider['type']!r} is not supported"
        _fail(path, "provider.type", f"{what}; raygrid's cluster file targets AWS: expected 'aws'")
    types = config.get("available_node_types")
    if not isinstance(types, dict) or not types:
        _fail(path, "available_node_types", "missing; expected the head and GPU worker node types")
    for name, node_type in types.items():
        if not isinstance(node_type, dict):
            _fail(path, f"available_node_types.{name}",
                  f"expected a mapping, got {_kind(node_type)}")
    head = config.get("head_node_type")
    if head not in types:
        what = "missing" if head is None else f"{head!r} is not one of available_node_types"
        _fail(path, "head_node_type", f"{what}; expected one of {', '.join(map(str, types))}")


@functools.lru_cache(maxsize=1)
def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler  # the schema file Ray's validate_config reads

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def _check_ray_schema(path, config: dict[str, Any]) -> None:
    """Ray's JSON schema on the file as written, so a type error names its field before
    prepare_config trips over it (e.g. `setup_commands: "..."` would be a TypeError there)."""
    import jsonschema

    try:
        jsonschema.validate(config, _ray_schema())
    except jsonschema.ValidationError as e:
        raise _from_schema_error(path, e) from None


def _from_schema_error(path, e) -> ClusterConfigError:
    where = list(e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = list(e.schema.get("properties", {}))
        patterns = list(e.schema.get("patternProperties", {}))
        extra = [k for k in e.instance
                 if k not in allowed and not any(re.search(p, str(k)) for p in patterns)]
        if extra:
            return ClusterConfigError(path, _field(*where, extra[0]),
                                      "unknown field (not in Ray's cluster schema)"
                                      + _did_you_mean(str(extra[0]), allowed))
    if e.validator == "required":
        missing = re.match(r"'(.+)' is a required property", e.message)
        if missing:
            return ClusterConfigError(path, _field(*where, missing.group(1)),
                                      "missing (required by Ray's cluster schema)")
    return ClusterConfigError(path, _field(*where) or "(top level)",
                              f"{e.message} (Ray's cluster schema)")


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)  # prepare_config logs "setting max workers ..." at INFO
    try:
        yield
    finally:
        logger.setLevel(level)


def _ray_prepare_and_validate(path, raw: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` runs first: merge aws/defaults.yaml, then schema + semantic checks."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        with _quiet("ray.autoscaler._private.util"):
            config = prepare_config(copy.deepcopy(raw))
            validate_config(config)
    except jsonschema.ValidationError as e:
        raise _from_schema_error(path, e) from None
    except (ValueError, RuntimeError, NotImplementedError, KeyError, TypeError,
            AssertionError) as e:
        # Ray's semantic checks; only "sum of min_workers > max_workers" maps to a single field.
        message = str(e)
        both = "min_workers" in message and "max_workers" in message
        field = "max_workers" if both else "(config)"
        _fail(path, field, f"{message} (Ray's validate_config)")
    return config


# ---------------------------------------------------------------------------------------------
# raygrid's checks
# ---------------------------------------------------------------------------------------------


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
            _fail(path, f"provider.{key}",
                  "unknown AWS provider field (Ray ignores it)"
                  + _did_you_mean(str(key), AWS_PROVIDER_KEYS))
    region = provider.get("region")
    if region is None:
        _fail(path, "provider.region", "missing; expected the AWS region to run in, e.g. us-west-2")
    if not isinstance(region, str) or region not in aws_regions():
        _fail(path, "provider.region",
              f"{region!r} is not an AWS region" + _did_you_mean(str(region), aws_regions()))
    zones = provider.get("availability_zone")
    if zones is not None:
        for zone in str(zones).split(","):
            if not zone.strip().startswith(region):
                _fail(path, "provider.availability_zone",
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
        _fail(path, field, report.generate_report().splitlines()[0])
    where = field + name
    if kind == "unknown field":
        _fail(path, f"{where}.{info['unknown_param']}", "unknown EC2 RunInstances parameter"
              + _did_you_mean(info["unknown_param"], info["valid_names"]))
    if kind == "missing required field":
        _fail(path, f"{where}.{info['required_name']}", "missing (required by EC2 RunInstances)")
    if kind == "invalid type":
        types = ", ".join(re.sub(r"<class '(\w+)'>", r"\1", str(t)) for t in info["valid_types"])
        _fail(path, where, f"{info['param']!r} has the wrong type; expected {types}")
    _fail(path, where, report.generate_report().splitlines()[0])


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
            _fail(path, f"{base}.node_config.InstanceType",
                  "missing; expected an EC2 instance type")
        if itype is not None:
            gpus = instance_gpus(itype)
            if gpus is None:
                _fail(path, f"{base}.node_config.InstanceType", _unknown_instance_type(itype))
        _check_image_id(path, f"{base}.node_config.ImageId", node_config.get("ImageId"), templated)

        if gpus is not None and "GPU" in resources and resources["GPU"] != gpus:
            _fail(path, f"{base}.resources.GPU",
                  f"{resources['GPU']} does not match {itype}, which has {gpus} GPU(s)")
        vcpus = instance_vcpus(itype) if itype else None
        if vcpus is not None and resources.get("CPU", 0) > vcpus:
            _fail(path, f"{base}.resources.CPU",
                  f"{resources['CPU']} is more than the {vcpus} vCPUs of {itype}")
        if node_type["min_workers"] > node_type["max_workers"]:
            _fail(path, f"{base}.min_workers", f"{node_type['min_workers']} is more than"
                                               f" max_workers ({node_type['max_workers']})")

        if name == head:
            _check_head(path, base, itype, gpus, resources)
            continue
        if TRAIN_DRIVER in resources:
            _fail(path, f"{base}.resources.{TRAIN_DRIVER}",
                  "only the head may advertise it: trial drivers must run on the on-demand head,"
                  " next to the MLflow server on 127.0.0.1")
        if "IamInstanceProfile" not in node_config and not templated:
            _fail(path, f"{base}.node_config.IamInstanceProfile",
                  "missing; workers need an instance profile with S3 access for datasets, weights"
                  " and checkpoints (Ray gives one to the head only)")
        if resources.get("GPU", gpus or 0) > 0 and node_type["max_workers"] > 0:
            gpu_workers.append(name)
    if not gpu_workers:
        _fail(path, "available_node_types",
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
            f" raygrid/cluster.py) or a CPU type of {', '.join(CPU_FAMILIES)}")


def _check_image_id(path, field: str, image: Any, templated: bool) -> None:
    if image is None:
        if not templated:
            # Ray would fall back to its default AMI: a DLAMI with CUDA 11, too old for torch 2.14.
            _fail(path, field, "missing; expected the AMI id (ami-...) of a Deep Learning Base"
                               " OSS Nvidia Driver GPU AMI (see the comment in cluster.yaml)")
        return
    if not isinstance(image, str):
        _fail(path, field, f"expected an AMI id string, got {_kind(image)}")
    if PLACEHOLDER in image:
        return  # reported by find_placeholders
    if image == "latest_dlami":
        _fail(path, field, "latest_dlami is Ray's default AMI (DLAMI Ubuntu 18.04, CUDA 11), too"
                           " old for torch 2.14; expected the AMI id of a current Deep Learning"
                           " Base AMI")
    if not _AMI.fullmatch(image):
        _fail(path, field, f"{image!r} is not an AMI id; expected ami- and 8 or 17 hex digits")


def _check_head(path, base: str, itype: str | None, gpus: int | None,
                resources: dict[str, int]) -> None:
    if gpus:
        _fail(path, f"{base}.node_config.InstanceType",
              f"{itype} has {gpus} GPU(s); the head runs MLflow and the trial drivers, not"
              " training: expected a CPU instance type")
    if resources.get(TRAIN_DRIVER, 0) < 1:
        _fail(path, f"{base}.resources.{TRAIN_DRIVER}",
              "missing or 0; the head must advertise TRAIN_DRIVER (an integer >= 1) so the sweep's"
              " trial drivers are placed on it")
    if resources.get("CPU") == 0:
        _fail(path, f"{base}.resources.CPU", "0; the trial drivers and the sweep job need CPU")


def parse_exports(command: str) -> dict[str, str]:
    """`export NAME=value` lines of a shell snippet; $NAME/${NAME} of earlier lines expanded."""
    env: dict[str, str] = {}
    for line in command.splitlines():
        m = _EXPORT.match(line)
        if not m:
            continue
        try:
            words = shlex.split(m.group(2), comments=True)
        except ValueError:  # unbalanced quotes: keep the text as written
            words = [m.group(2).strip()]
        value = words[0] if words else ""
        env[m.group(1)] = re.sub(
            r"\$(?:\{(\w+)\}|(\w+))",
            lambda v: env.get(v.group(1) or v.group(2), v.group(0)), value)
    return env


def _check_settings(path, raw: dict[str, Any], config: dict[str, Any]) -> None:
    commands = config.get("setup_commands") or []
    hits = [i for i, c in enumerate(commands) if isinstance(c, str) and SETTINGS_MARKER in c]
    if not hits:
        elsewhere = [key for key in ("head_setup_commands", "worker_setup_commands",
                                     "initialization_commands")
                     if any(SETTINGS_MARKER in c for c in raw.get(key) or [] if isinstance(c, str))]
        _fail(path, "setup_commands",
              f"no raygrid settings block (a command with `{SETTINGS_MARKER}...`)"
              + (f"; it is in {elsewhere[0]}, but must be in setup_commands to reach every node"
                 if elsewhere else "; copy it from the shipped cluster.yaml"))
    index = hits[0]
    env = parse_exports(commands[index])

    def where(name: str) -> str:
        return f"setup_commands[{index}] (export {name})"

    for name in REQUIRED_SETTINGS:
        if name not in env:
            _fail(path, where(name), "missing from the raygrid settings block")

    bucket = env["RAYGRID_BUCKET"]
    if PLACEHOLDER not in bucket and (not _BUCKET.fullmatch(bucket) or ".." in bucket):
        _fail(path, where("RAYGRID_BUCKET"),
              f"{bucket!r} is not an S3 bucket name; expected 3-63 of a-z 0-9 . -")
    region = config["provider"]["region"]
    if env["AWS_DEFAULT_REGION"] != region:
        _fail(path, where("AWS_DEFAULT_REGION"),
              f"{env['AWS_DEFAULT_REGION']!r} differs from provider.region {region!r}; expected"
              " them equal (the nodes' AWS clients and the cluster must agree)")
    if not env["RAYGRID_S3_PREFIX"].startswith(f"s3://{bucket}"):
        _fail(path, where("RAYGRID_S3_PREFIX"),
              f"{env['RAYGRID_S3_PREFIX']!r}; expected s3://$RAYGRID_BUCKET/<prefix>")
    for name in ("RAYGRID_DATA", "RAYGRID_WEIGHTS"):
        if not env[name].startswith("/"):
            _fail(path, where(name), f"{env[name]!r}; expected an absolute path on the nodes")

    uri = urlsplit(env["MLFLOW_TRACKING_URI"])
    if uri.scheme != "http" or uri.hostname not in ("127.0.0.1", "localhost") or not uri.port:
        _fail(path, where("MLFLOW_TRACKING_URI"),
              f"{env['MLFLOW_TRACKING_URI']!r}; expected http://127.0.0.1:<port>: the tracking"
              " server listens on the head's loopback only (reach it through an SSH tunnel)")
    _check_mlflow_server(path, config, uri.port)


def _check_mlflow_server(path, config: dict[str, Any], port: int) -> None:
    """The head's `mlflow server` must listen where MLFLOW_TRACKING_URI points, on loopback."""
    commands = config.get("head_setup_commands") or []
    for i, command in enumerate(commands):
        if not isinstance(command, str) or "mlflow server" not in command:
            continue
        field = f"head_setup_commands[{i}]"
        host = re.search(r"(?:--host|-h)[ =](\S+)", command)
        if not host or host.group(1) not in ("127.0.0.1", "localhost"):
            _fail(path, field, "mlflow server must bind to 127.0.0.1 (--host 127.0.0.1), not the"
                               " network: it has no authentication")
        server_port = re.search(r"(?:--port|-p)[ =](\d+)", command)
        if int(server_port.group(1) if server_port else 5000) != port:
            _fail(path, field, f"mlflow server listens on port "
                               f"{server_port.group(1) if server_port else 5000}, but"
                               f" MLFLOW_TRACKING_URI points at port {port}")
        return
    _fail(path, "head_setup_commands",
          "no `mlflow server` command; the head runs raygrid's tracking server")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _fail(path, field: str, message: str) -> NoReturn:
    raise ClusterConfigError(path, field, message)


def _field(*parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _walk(value: Any, *where: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, *where, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, *where, i)
    elif isinstance(value, str):
        yield _field(*where), value


def _placeholder_lines(field: str, value: str) -> Iterator[tuple[str, str]]:
    """(field label, placeholder) for each line of `value` containing CHANGEME; an `export` line
    is labelled with its variable and shows only its value."""
    for line in value.splitlines() or [value]:
        if PLACEHOLDER not in line:
            continue
        m = _EXPORT.match(line)
        if m:
            yield f"{field} (export {m.group(1)})", parse_exports(line)[m.group(1)]
        else:
            yield field, line.strip()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raygrid.cluster",
        description="Offline checks for raygrid's AWS cluster.yaml (no network, no credentials).")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="validate a cluster file; exit 0 and 'ok', or 2 and one line")
    check.add_argument("file", help="the cluster file, e.g. cluster.yaml")
    check.add_argument("--strict", action="store_true",
                       help="treat CHANGEME placeholders as errors (use before `ray up`)")
    args = parser.parse_args(argv)

    try:
        validate_cluster_config(args.file, strict=args.strict)
    except ClusterConfigError as e:
        print(e, file=sys.stderr)
        return 2
    placeholders = find_placeholders(args.file)
    for field, value in placeholders:
        print(f"warning: {args.file}: {field}: {value!r} is a placeholder; fill it in before"
              " `ray up`", file=sys.stderr)
    suffix = f" ({len(placeholders)} placeholder(s) left to fill in)" if placeholders else ""
    print(f"ok: {args.file}{suffix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
