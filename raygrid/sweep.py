"""`python -m raygrid.sweep`: plan and run a raygrid sweep (the same as `raygrid sweep`).

With no arguments it runs the demo space on a local Ray instance with a local MLflow store (CPU,
minutes). `--space paper --dry-run` prints the paper grid without running anything.
"""

from __future__ import annotations

import argparse
import sys

from raygrid.cli import add_sweep_arguments, run_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m raygrid.sweep",
        description="Run (or plan) a raygrid sweep: assess, optimize and transfer stages on Ray "
        "Tune/Train, tracked in MLflow, followed by the asymmetry analysis and report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sweep_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_sweep(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
