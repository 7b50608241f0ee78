"""Concurrency from what the cluster can have: the autoscaler's node types and max workers (the
repository's cluster.yaml starts with no GPU), not the resources present at start."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raygrid.cluster.capacity import Capacity, from_config, load_config
from raygrid.cluster.errors import ClusterConfigError
from raygrid.run.tune_stage import max_concurrent_trials
from raygrid.space import SpaceError, load_space

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_cluster_yaml_can_hold_24_gpus_and_32_drivers():
    cap = from_config(load_config(REPO / "cluster.yaml"), "cluster.yaml")
    assert cap.autoscaling
    # 2 x gpu_8x + 8 x gpu_1x fill the 10 workers: 16 + 8 GPUs
    assert cap.resources["GPU"] == 24 and cap.resources["TRAIN_DRIVER"] == 32
    assert "8 x gpu_1x" in cap.source and "2 x gpu_8x" in cap.source
    paper = load_space("paper")
    assert max_concurrent_trials(paper.stages["optimize"], cap, None) == 24  # 1 GPU per trial
    assert max_concurrent_trials(paper.stages["optimize"], cap, 3) == 3


def test_the_total_max_workers_bounds_the_mix_of_node_types():
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 2}},
                                       "small": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 8},
                                       "big": {"resources": {"CPU": 8, "GPU": 4}, "max_workers": 2}}}
    cap = from_config(config, "test")
    assert cap.resources["GPU"] == 2 * 4 + 1 * 1  # the two big ones, then one small
    assert cap.resources["CPU"] == 2 + 2 * 8 + 1
    assert cap.trials({"GPU": 2, "CPU": 1}) == 4


def test_a_fresh_cluster_with_no_gpu_present_says_what_to_pass():
    present = Capacity({"CPU": 14, "TRAIN_DRIVER": 32}, "the 1 node present")
    with pytest.raises(SpaceError) as e:
        max_concurrent_trials(load_space("paper").stages["optimize"], present, None)
    assert "no trial fits: the 1 node present give at most" in str(e.value)
    assert "--cluster-config cluster.yaml" in str(e.value) and "an optimize trial needs" in str(e.value)


def test_assess_grammar_and_a_worker_no_node_type_can_hold():
    config = {"max_workers": 2, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 1}},
                                       "cpu": {"resources": {"CPU": 1}, "max_workers": 2}}}
    cap = from_config(config, "the autoscaler's config x.yaml")
    stage = load_space("demo").stages["assess"]
    stage.spec.resources.cpus_per_worker = 2
    with pytest.raises(SpaceError) as e:
        max_concurrent_trials(stage, cap, None)
    assert "no node type of the autoscaler's config x.yaml" in str(e.value)
    assert "one worker of an assess trial" in str(e.value)


def test_unknown_cpu_of_a_node_type_does_not_limit_concurrency():
    config = {"max_workers": 4, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 4, "TRAIN_DRIVER": 8}},
                                       "gpu": {"resources": {"GPU": 1}, "max_workers": 4}}}
    cap = from_config(config, "cluster.yaml")
    assert math.isinf(cap.resources["CPU"])  # `ray up` fills the CPUs of AWS types in later
    assert cap.trials({"CPU": 8, "GPU": 1, "TRAIN_DRIVER": 1}) == 4


def test_a_file_without_node_types_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cluster_name: x\n")
    with pytest.raises(ClusterConfigError, match="c.yaml: available_node_types: missing"):
        load_config(path)
