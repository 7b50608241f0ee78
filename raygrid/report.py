"""Command line: the asymmetry report of a sweep, from MLflow.

    python -m raygrid.report --experiment demo
    python -m raygrid.report --experiment paper --tracking-uri http://head:5000 --sweep-run <id> --out report/

Without --tracking-uri, MLflow's own default applies (MLFLOW_TRACKING_URI, else ./mlruns); a local
sweep's store is `sqlite:///<output dir>/mlflow.db` (the sweep prints it). Without --sweep-run, every
trial run of the experiment is read (a trial re-run by a later invocation counts once). With
--sweep-run, the report is also logged as artifacts of that run (under report/).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raygrid.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="MLflow experiment (= the sweep's name)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLflow's default)")
    p.add_argument("--sweep-run", default=None, help="the sweep run id: only its trials; the report is logged to it")
    p.add_argument("--out", default=None, help="output folder (default: ./raygrid-report-<experiment>)")
    p.add_argument("--checkpoint", choices=("best", "final"), default="best",
                   help="values at each trial's best checkpoint (by the stage's scheduler metric) or its last step")
    p.add_argument("--include-same-backbone", action="store_true",
                   help="keep the evaluator built on a loss's own backbone in that loss's optimization score")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-samples", action="store_true", help="skip the SR sample crops (no checkpoint downloads)")
    p.add_argument("--data-root", default=None, help="where the SR validation sets are (for the sample crops)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygrid.analysis.report import build_report

    try:
        path = build_report(args.experiment, tracking_uri=args.tracking_uri, sweep_run_id=args.sweep_run,
                            out_dir=args.out, checkpoint=args.checkpoint,
                            exclude_same_backbone=not args.include_same_backbone, n_boot=args.n_boot,
                            seed=args.seed, samples=not args.no_samples, data_root=args.data_root)
    except LookupError as exc:  # no such experiment
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
