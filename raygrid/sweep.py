"""`python -m raygrid.sweep`: plan and run a raygrid sweep.

With no arguments it runs search_spaces/demo.yaml on a local Ray instance with a local MLflow
store (CPU, minutes). `--space paper --dry-run` prints the paper grid without running anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raygrid import costs
from raygrid.space import STAGE_ORDER, SpaceError, load_space


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m raygrid.sweep",
        description="Run (or plan) a raygrid sweep: assess, optimize and transfer stages on Ray "
        "Tune/Train, tracked in MLflow, followed by the asymmetry analysis and report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", default="demo",
                   help="search space: a name in search_spaces/ (demo, paper, ...) or a path to a YAML file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (trials per stage, axes, resources, GPU-hour estimate) and exit")
    p.add_argument("--plan-out", metavar="FILE",
                   help="write the expanded plan (every trial's resolved config) as JSON")
    p.add_argument("--stages", default=",".join(STAGE_ORDER),
                   help="comma-separated stages to run, in order; others in the space are skipped")
    p.add_argument("--output-dir", default="raygrid-runs",
                   help="local folder for the MLflow store (by default), the report and logs")
    p.add_argument("--storage", metavar="PATH|s3://BUCKET/PREFIX",
                   help="Ray Tune/Train storage for trial state and checkpoints (default: OUTPUT_DIR/ray); "
                   "must be shared (S3/NFS) on a multi-node cluster")
    p.add_argument("--s3-endpoint-url", metavar="URL",
                   help="endpoint of an S3-compatible store (MinIO, moto); credentials come from the "
                   "usual AWS environment variables or instance profile")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: sqlite:///OUTPUT_DIR/mlflow.db with artifacts in OUTPUT_DIR/mlartifacts)")
    p.add_argument("--artifact-root", metavar="PATH|s3://",
                   help="where MLflow stores artifacts of a new experiment (default: OUTPUT_DIR/mlartifacts "
                   "with the local store; the server's setting with --tracking-uri http://...)")
    p.add_argument("--data-root", metavar="PATH|s3://",
                   help="root of the datasets (overrides the space's data_root); demo sets build under the raygrid cache")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder of pretrained weight files (default: $RAYGRID_WEIGHTS or ~/.cache/raygrid/weights)")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster address ('auto' on a cluster head); default: start a local Ray instance")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray instance (default: all)")
    p.add_argument("--num-gpus", type=int, help="GPUs for a local Ray instance (default: all visible)")
    p.add_argument("--max-concurrent", type=int,
                   help="cap on concurrent trials per stage (default: from cluster resources ÷ trial resources)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep of the same space and output/storage: finished "
                   "trials are kept, unfinished ones resume from their last checkpoint")
    p.add_argument("--no-report", action="store_true", help="skip the analysis and report at the end")
    p.add_argument("--effective-tflops", type=float, default=costs.EFFECTIVE_TFLOPS,
                   help="sustained TFLOP/s per GPU used for the GPU-hour estimate")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = load_space(args.space)
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGE_ORDER]
        if unknown:
            raise SpaceError("--stages", "", f"unknown stage {unknown[0]!r}; expected {', '.join(STAGE_ORDER)}")
        sweep.stages = {k: v for k, v in sweep.stages.items() if k in stages}
        if not sweep.stages:
            raise SpaceError(sweep.source, "stages", f"none of {stages} is in this space")
    except SpaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from raygrid.plan import dump_json, format_plan, make_plan, plan_to_json

    plan = make_plan(sweep, effective_tflops=args.effective_tflops)
    if args.plan_out:
        Path(args.plan_out).parent.mkdir(parents=True, exist_ok=True)
        dump_json(plan_to_json(plan, sweep), args.plan_out)
    if args.dry_run:
        print(format_plan(plan))
        if args.plan_out:
            print(f"plan written to {args.plan_out}")
        return 0

    from raygrid.runner import RunOptions, run_sweep  # heavy: Ray, MLflow, torch

    opts = RunOptions.from_args(args)
    try:
        return run_sweep(sweep, opts)
    except SpaceError as e:  # preflight problems (missing weights, datasets) are reported the same way
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
