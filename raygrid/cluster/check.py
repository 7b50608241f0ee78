"""Offline checks for raygrid's AWS `cluster.yaml`: Ray's own schema plus what it lets through.

    raygrid cluster check cluster.yaml            # exit 0 "ok", or 2 and one line
    raygrid cluster check cluster.yaml --strict   # placeholders are errors, too

(also `python -m raygrid.cluster check ...`)

`ray up` validates a cluster file only when it is already talking to AWS, and even then Ray's
JSON schema waves through typos in `provider` (it allows extra keys), anything inside
`node_config` (free-form EC2 arguments) and AMI/instance-type mistakes (docs/ray-mlflow.md). This
module runs Ray's own `prepare_config` + `validate_config` (what `ray up` runs; private API, hence
the pinned Ray) and then raygrid's checks for the rest, using botocore's bundled region list and
EC2 `RunInstances` model, so it needs no network and no credentials.

Every error is one line naming the file and the field: `cluster.yaml: provider.regoin: ...`.
The shipped template contains placeholders (`CHANGEME`) the user fills in; they are warnings
unless `strict=True`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from raygrid.cluster.aws import _check_node_types, _check_provider
from raygrid.cluster.errors import PLACEHOLDER, ClusterConfigError, did_you_mean, fail, field_path, kind_of

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_EXPORT = re.compile(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$")

# raygrid's settings live in `export NAME=value` lines of one setup command (Ray's schema forbids
# unknown top-level keys; setup_commands reach every node and the shell that runs `ray start`).
SETTINGS_MARKER = "export RAYGRID_BUCKET="
REQUIRED_SETTINGS = ("RAYGRID_BUCKET", "AWS_DEFAULT_REGION", "RAYGRID_S3_PREFIX", "RAYGRID_DATA",
                     "RAYGRID_WEIGHTS", "MLFLOW_TRACKING_URI")


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
            fail(path, field, f"{value!r} is a placeholder; fill it in before `ray up`")


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
        fail(path, "(file)", f"cannot read it: {e.strerror or e}")
    try:
        config = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}" if mark else "(file)"
        fail(path, where, f"not valid YAML: {e.problem or e.context}")
    except yaml.YAMLError as e:
        fail(path, "(file)", f"not valid YAML: {e}")
    if not isinstance(config, dict):
        fail(path, "(top level)", f"expected a mapping of cluster fields, got {kind_of(config)}")
    return config


# ---------------------------------------------------------------------------------------------
# Ray's own checks
# ---------------------------------------------------------------------------------------------


def _check_shape(path, config: dict[str, Any]) -> None:
    """What Ray's prepare_config indexes unchecked: fail here with the field, not a KeyError."""
    provider = config.get("provider")
    if not isinstance(provider, dict):
        fail(path, "provider", "missing; expected a mapping with type: aws and region")
    if provider.get("type") != "aws":
        what = "missing" if "type" not in provider else f"{provider['type']!r} is not supported"
        fail(path, "provider.type", f"{what}; raygrid's cluster file targets AWS: expected 'aws'")
    types = config.get("available_node_types")
    if not isinstance(types, dict) or not types:
        fail(path, "available_node_types", "missing; expected the head and GPU worker node types")
    for name, node_type in types.items():
        if not isinstance(node_type, dict):
            fail(path, f"available_node_types.{name}",
                  f"expected a mapping, got {kind_of(node_type)}")
    head = config.get("head_node_type")
    if head not in types:
        what = "missing" if head is None else f"{head!r} is not one of available_node_types"
        fail(path, "head_node_type", f"{what}; expected one of {', '.join(map(str, types))}")


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
            return ClusterConfigError(path, field_path(*where, extra[0]),
                                      "unknown field (not in Ray's cluster schema)"
                                      + did_you_mean(str(extra[0]), allowed))
    if e.validator == "required":
        missing = re.match(r"'(.+)' is a required property", e.message)
        if missing:
            return ClusterConfigError(path, field_path(*where, missing.group(1)),
                                      "missing (required by Ray's cluster schema)")
    return ClusterConfigError(path, field_path(*where) or "(top level)",
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
        fail(path, field, f"{message} (Ray's validate_config)")
    return config




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
        fail(path, "setup_commands",
              f"no raygrid settings block (a command with `{SETTINGS_MARKER}...`)"
              + (f"; it is in {elsewhere[0]}, but must be in setup_commands to reach every node"
                 if elsewhere else "; copy it from the shipped cluster.yaml"))
    index = hits[0]
    env = parse_exports(commands[index])

    def where(name: str) -> str:
        return f"setup_commands[{index}] (export {name})"

    for name in REQUIRED_SETTINGS:
        if name not in env:
            fail(path, where(name), "missing from the raygrid settings block")

    bucket = env["RAYGRID_BUCKET"]
    if PLACEHOLDER not in bucket and (not _BUCKET.fullmatch(bucket) or ".." in bucket):
        fail(path, where("RAYGRID_BUCKET"),
              f"{bucket!r} is not an S3 bucket name; expected 3-63 of a-z 0-9 . -")
    region = config["provider"]["region"]
    if env["AWS_DEFAULT_REGION"] != region:
        fail(path, where("AWS_DEFAULT_REGION"),
              f"{env['AWS_DEFAULT_REGION']!r} differs from provider.region {region!r}; expected"
              " them equal (the nodes' AWS clients and the cluster must agree)")
    if not env["RAYGRID_S3_PREFIX"].startswith(f"s3://{bucket}"):
        fail(path, where("RAYGRID_S3_PREFIX"),
              f"{env['RAYGRID_S3_PREFIX']!r}; expected s3://$RAYGRID_BUCKET/<prefix>")
    for name in ("RAYGRID_DATA", "RAYGRID_WEIGHTS"):
        if not env[name].startswith("/"):
            fail(path, where(name), f"{env[name]!r}; expected an absolute path on the nodes")

    uri = urlsplit(env["MLFLOW_TRACKING_URI"])
    if uri.scheme != "http" or uri.hostname not in ("127.0.0.1", "localhost") or not uri.port:
        fail(path, where("MLFLOW_TRACKING_URI"),
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
            fail(path, field, "mlflow server must bind to 127.0.0.1 (--host 127.0.0.1), not the"
                               " network: it has no authentication")
        server_port = re.search(r"(?:--port|-p)[ =](\d+)", command)
        if int(server_port.group(1) if server_port else 5000) != port:
            fail(path, field, f"mlflow server listens on port "
                               f"{server_port.group(1) if server_port else 5000}, but"
                               f" MLFLOW_TRACKING_URI points at port {port}")
        return
    fail(path, "head_setup_commands",
          "no `mlflow server` command; the head runs raygrid's tracking server")



def _walk(value: Any, *where: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, *where, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, *where, i)
    elif isinstance(value, str):
        yield field_path(*where), value


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
