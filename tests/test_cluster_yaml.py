"""The shipped cluster.yaml passes raygrid's offline checks; broken copies fail naming the field.

Pure offline: Ray's schema and prepare/validate_config, botocore's bundled models. No Ray cluster,
no network, no AWS credentials.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from raygrid.cli import main as raygrid_main
from raygrid.cluster import (
    ClusterConfigError,
    find_placeholders,
    instance_gpus,
    parse_exports,
    validate_cluster_config,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, config: dict[str, Any], name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _broken(tmp_path: Path, shipped: dict[str, Any], edit: Callable[[dict], None]) -> Path:
    config = copy.deepcopy(shipped)
    edit(config)
    return _write(tmp_path, config)


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _set_setting(config: dict, name: str, value: str) -> None:
    """Rewrite one `export NAME=...` line of the settings block (setup_commands[0])."""
    lines = config["setup_commands"][0].splitlines()
    lines = [f"export {name}={value}" if line.startswith(f"export {name}=") else line
             for line in lines]
    config["setup_commands"][0] = "\n".join(lines)


# --- the shipped file -------------------------------------------------------------------------


def test_shipped_cluster_yaml_validates():
    validate_cluster_config(SHIPPED)


def test_shipped_placeholders_are_the_ami_and_the_bucket():
    found = {value: field for field, value in find_placeholders(SHIPPED)}
    assert set(found) == {"ami-CHANGEME", "raygrid-CHANGEME-bucket"}
    # One AMI (a YAML alias) for all three node types, reported once.
    assert found["ami-CHANGEME"].count("node_config.ImageId") == 3
    assert found["raygrid-CHANGEME-bucket"] == "setup_commands[0] (export RAYGRID_BUCKET)"


def test_strict_rejects_placeholders():
    with pytest.raises(ClusterConfigError, match=r"ImageId.*'ami-CHANGEME' is a placeholder"):
        validate_cluster_config(SHIPPED, strict=True)


def test_filled_in_copy_passes_strict(tmp_path, shipped):
    config = copy.deepcopy(shipped)
    for node_type in config["available_node_types"].values():
        node_type["node_config"]["ImageId"] = "ami-0123456789abcdef0"
    _set_setting(config, "RAYGRID_BUCKET", "my-lab-raygrid")
    path = _write(tmp_path, config)
    validate_cluster_config(path, strict=True)
    assert find_placeholders(path) == []


def test_shipped_settings_block(shipped):
    env = parse_exports(shipped["setup_commands"][0])
    assert env["RAYGRID_S3_PREFIX"] == "s3://raygrid-CHANGEME-bucket/raygrid"
    assert env["RAYGRID_WEIGHTS"] == "/weights"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["AWS_DEFAULT_REGION"] == shipped["provider"]["region"]


def test_shipped_layout(shipped):
    """The decisions the docs rely on: CPU head with TRAIN_DRIVER, a 1-GPU and an 8-GPU type,
    the pinned stack installed from the mounted project, MLflow on loopback without job runner."""
    types = shipped["available_node_types"]
    head = types[shipped["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and head["resources"]["TRAIN_DRIVER"] >= 1
    gpus = sorted(instance_gpus(t["node_config"]["InstanceType"]) for t in types.values())
    assert gpus == [0, 1, 8]
    setup = "\n".join(shipped["setup_commands"])
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "ray[default,tune,train]==2.60.0",
                "mlflow==3.17.2", "-e \"$HOME/raygrid[iqa]\""):
        assert pin in setup
    assert shipped["file_mounts"]["~/raygrid"] == "."
    server = next(c for c in shipped["head_setup_commands"] if "mlflow server" in c)
    assert "--host 127.0.0.1" in server and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in server
    assert "--artifacts-destination $RAYGRID_S3_PREFIX/" in server
    assert "postgresql" in server


# --- broken copies ----------------------------------------------------------------------------

def _nt(config: dict, name: str) -> dict:
    return config["available_node_types"][name]


def _nc(config: dict, name: str) -> dict:
    return _nt(config, name)["node_config"]


NT = "available_node_types"
BROKEN = {
    # Ray's schema: node types allow no extra keys.
    "min_worker typo": (
        lambda c: _rename(_nt(c, "gpu_1x"), "min_workers", "min_worker"),
        (f"{NT}.gpu_1x.min_worker: unknown field (not in Ray's cluster schema);"
        " did you mean 'min_workers'?")),
    # Ray's schema allows any provider key: raygrid's check catches it.
    "regoin typo": (
        lambda c: _rename(c["provider"], "region", "regoin"),
        "provider.regoin: unknown AWS provider field (Ray ignores it); did you mean 'region'?"),
    "missing region": (
        lambda c: c["provider"].pop("region"),
        "provider.region: missing"),
    "not a region": (
        lambda c: c["provider"].update(region="us-west-9"),
        "provider.region: 'us-west-9' is not an AWS region"),
    "head_node_type names no node type": (
        lambda c: c.update(head_node_type="hed"),
        "head_node_type: 'hed' is not one of available_node_types"),
    "unknown instance type": (
        lambda c: _nc(c, "gpu_1x").update(InstanceType="g5.3xlarge"),
        (f"{NT}.gpu_1x.node_config.InstanceType: unknown EC2 instance type 'g5.3xlarge'"
        " (did you mean 'g5.xlarge'?); expected a GPU type of g4dn, g5, g6, g6e, p3, p3dn, p4d,")),
    "bad size of a CPU family": (
        lambda c: _nc(c, "head").update(InstanceType="m7i.4xlage"),
        f"{NT}.head.node_config.InstanceType: '4xlage' is not an EC2 size"),
    "node_config typo (free-form for Ray, checked against EC2's model)": (
        lambda c: _rename(_nc(c, "gpu_8x"), "InstanceType", "InstanceTypoe"),
        (f"{NT}.gpu_8x.node_config.InstanceTypoe: unknown EC2 RunInstances parameter;"
        " did you mean 'InstanceType'?")),
    "nested node_config type error": (
        lambda c: _nc(c, "head")["BlockDeviceMappings"][0]["Ebs"].update(VolumeSize="300"),
        (f"{NT}.head.node_config.BlockDeviceMappings[0].Ebs.VolumeSize: '300' has the wrong"
        " type; expected int")),
    "GPU count mismatch": (
        lambda c: _nt(c, "gpu_8x")["resources"].update(GPU=4),
        f"{NT}.gpu_8x.resources.GPU: 4 does not match p4d.24xlarge, which has 8 GPU(s)"),
    "fractional custom resource": (
        lambda c: _nt(c, "head")["resources"].update(TRAIN_DRIVER=0.5),
        f"{NT}.head.resources.TRAIN_DRIVER: 0.5 is not of type 'integer'"),
    "no TRAIN_DRIVER on the head": (
        lambda c: _nt(c, "head")["resources"].pop("TRAIN_DRIVER"),
        f"{NT}.head.resources.TRAIN_DRIVER: missing or 0"),
    "TRAIN_DRIVER on a worker": (
        lambda c: _nt(c, "gpu_1x")["resources"].update(TRAIN_DRIVER=4),
        f"{NT}.gpu_1x.resources.TRAIN_DRIVER: only the head may advertise it"),
    "GPU head": (
        lambda c: (_nc(c, "head").update(InstanceType="g5.xlarge"),
                   _nt(c, "head").update(resources={"GPU": 1, "TRAIN_DRIVER": 8})),
        f"{NT}.head.node_config.InstanceType: g5.xlarge has 1 GPU(s)"),
    "bad AMI id": (
        lambda c: _nc(c, "gpu_1x").update(ImageId="ami-12zz"),
        f"{NT}.gpu_1x.node_config.ImageId: 'ami-12zz' is not an AMI id"),
    "Ray's default AMI": (
        lambda c: _nc(c, "gpu_1x").update(ImageId="latest_dlami"),
        f"{NT}.gpu_1x.node_config.ImageId: latest_dlami is Ray's default AMI"),
    "worker without instance profile": (
        lambda c: _nc(c, "gpu_8x").pop("IamInstanceProfile"),
        f"{NT}.gpu_8x.node_config.IamInstanceProfile: missing"),
    "settings region differs from provider.region": (
        lambda c: _set_setting(c, "AWS_DEFAULT_REGION", "eu-west-1"),
        "setup_commands[0] (export AWS_DEFAULT_REGION): 'eu-west-1' differs from provider.region"),
    "tracking URI off loopback": (
        lambda c: _set_setting(c, "MLFLOW_TRACKING_URI", "http://10.0.0.5:5000"),
        ("setup_commands[0] (export MLFLOW_TRACKING_URI): 'http://10.0.0.5:5000'; expected"
        " http://127.0.0.1:<port>")),
    "bad bucket name": (
        lambda c: _set_setting(c, "RAYGRID_BUCKET", "My_Bucket"),
        "setup_commands[0] (export RAYGRID_BUCKET): 'My_Bucket' is not an S3 bucket name"),
    "settings block only on the head": (
        lambda c: c["head_setup_commands"].insert(0, c["setup_commands"].pop(0)),
        ("setup_commands: no raygrid settings block (a command with `export RAYGRID_BUCKET=...`);"
        " it is in head_setup_commands")),
    "wrong provider": (
        lambda c: c["provider"].update(type="awz"),
        "provider.type: 'awz' is not supported; raygrid's cluster file targets AWS"),
    "sum of min_workers above max_workers (Ray's semantic check)": (
        lambda c: _nt(c, "gpu_1x").update(min_workers=20, max_workers=20),
        ("max_workers: The specified global `max_workers` is smaller than the sum of"
        " `min_workers`")),
}


@pytest.mark.parametrize("edit, expected", BROKEN.values(), ids=BROKEN.keys())
def test_broken_copy_names_the_field(tmp_path, shipped, edit, expected):
    path = _broken(tmp_path, shipped, edit)
    with pytest.raises(ClusterConfigError) as raised:
        validate_cluster_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "cluster.yaml"
    text = SHIPPED.read_text().replace("  cache_stopped_nodes: false",
                                       "  cache_stopped_nodes: false\n  region: eu-west-1")
    path.write_text(text)
    duplicate = r"cluster.yaml: line \d+: .*duplicate key 'region'"
    with pytest.raises(ClusterConfigError, match=duplicate):
        validate_cluster_config(path)


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ClusterConfigError, match=r"nope.yaml: \(file\): cannot read it"):
        validate_cluster_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ClusterConfigError, match=r"list.yaml: \(top level\): expected a mapping"):
        validate_cluster_config(path)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_ok_on_shipped_file_with_placeholder_warnings(capsys):
    assert raygrid_main(["cluster", "check", str(SHIPPED)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok: {SHIPPED}")
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings)


def test_cli_strict_fails_on_placeholders(capsys):
    assert raygrid_main(["cluster", "check", "--strict", str(SHIPPED)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "is a placeholder" in err


def test_cli_error_is_one_line_naming_file_and_field(tmp_path, shipped, capsys):
    path = _broken(tmp_path, shipped, lambda c: _rename(c["provider"], "region", "regoin"))
    assert raygrid_main(["cluster", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        (f"{path}: provider.regoin: unknown AWS provider field (Ray ignores it);"
        " did you mean 'region'?")]


def test_cli_module_entry_point(tmp_path, shipped):
    """`python -m raygrid.cluster` itself: exit codes and streams."""
    ok = subprocess.run([sys.executable, "-m", "raygrid.cluster", "check", "cluster.yaml"],
                        cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: cluster.yaml")
    bad = _broken(tmp_path, shipped, lambda c: c["provider"].pop("region"))
    failed = subprocess.run([sys.executable, "-m", "raygrid.cluster", "check", str(bad)],
                            cwd=REPO, check=False, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip() == (f"{bad}: provider.region: missing; expected the AWS region"
                                     " to run in, e.g. us-west-2")
