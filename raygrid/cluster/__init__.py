"""Offline checks of raygrid's AWS `cluster.yaml` (`raygrid cluster check`).

  check   the whole file: Ray's own schema and semantic checks, raygrid's settings block, placeholders
  aws     EC2 instance types, regions, RunInstances parameters, the provider and node-type checks
  errors  ClusterConfigError: one line naming the file and the field
  cli     the `cluster check` command
"""

from raygrid.cluster.aws import instance_gpus
from raygrid.cluster.check import find_placeholders, parse_exports, validate_cluster_config
from raygrid.cluster.errors import ClusterConfigError

__all__ = ["ClusterConfigError", "find_placeholders", "instance_gpus", "parse_exports", "validate_cluster_config"]
