"""The `cluster check` command: `raygrid cluster check FILE [--strict]`, also
`python -m raygrid.cluster check FILE [--strict]`."""

from __future__ import annotations

import argparse
import sys

from raygrid.cluster.check import find_placeholders, validate_cluster_config
from raygrid.cluster.errors import ClusterConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="cluster_command", required=True)
    check = commands.add_parser(
        "check", help="validate a cluster file; exit 0 and 'ok', or 2 and one line")
    check.add_argument("file", help="the cluster file, e.g. cluster.yaml")
    check.add_argument("--strict", action="store_true",
                       help="treat CHANGEME placeholders as errors (use before `ray up`)")


def run(args: argparse.Namespace) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raygrid.cluster",
        description="Offline checks for raygrid's AWS cluster.yaml (no network, no credentials).")
    add_arguments(parser)
    return run(parser.parse_args(argv))
