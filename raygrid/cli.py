"""`raygrid <command>`: one entry point for everything raygrid does from a shell.

    raygrid sweep   [--space demo|paper|PATH] [--dry-run] ...   plan and run a sweep (python -m raygrid.sweep)
    raygrid plan    [--space ...] [--plan-out FILE]              the dry run: trials, axes, resources, GPU-hours
    raygrid report  --experiment NAME [--tracking-uri URI] ...   the asymmetry report of a sweep, from MLflow
    raygrid data    demo [--force]                               build the offline demo data (raygrid's cache); print where
    raygrid data    prepare SET|FOLDER|s3:// [--out DIR]         the prepared store of an SR training set
    raygrid cluster check cluster.yaml [--strict]                offline checks of the AWS cluster file
    raygrid judge   --experiment NAME [--port P] [--sync]        side-by-side human judging of a sweep's SR crops

Each command is an `add_arguments(parser)` and a `run(args) -> exit code` pair below. Nothing
heavy is imported before a command needs it: `plan` and `sweep --dry-run` import no torch, Ray,
MLflow or timm.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from raygrid import costs
from raygrid.run.options import RunOptions
from raygrid.space import STAGE_ORDER, SpaceError, Sweep, load_space

# ---------------------------------------------------------------------------------------------
# plan (and the part of sweep that plans)
# ---------------------------------------------------------------------------------------------


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="demo",
                   help="search space: a name shipped with raygrid (demo, paper, ...) or a path to a YAML file")
    p.add_argument("--plan-out", metavar="FILE",
                   help="write the expanded plan (every trial's resolved config) as JSON")
    p.add_argument("--stages", default=",".join(STAGE_ORDER),
                   help="comma-separated stages to run, in order; others in the space are skipped")
    p.add_argument("--effective-tflops", type=float, default=costs.EFFECTIVE_TFLOPS,
                   help="sustained TFLOP/s per GPU used for the GPU-hour estimate")


def _load(args: argparse.Namespace) -> Sweep:
    sweep = load_space(args.space)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        raise SpaceError("--stages", "", f"unknown stage {unknown[0]!r}; expected {', '.join(STAGE_ORDER)}")
    sweep.stages = {k: v for k, v in sweep.stages.items() if k in stages}
    if not sweep.stages:
        raise SpaceError(sweep.source, "stages", f"none of {stages} is in this space")
    return sweep


def _plan(args: argparse.Namespace, sweep: Sweep, show: bool) -> None:
    from pathlib import Path

    from raygrid.plan import dump_json, format_plan, make_plan, plan_to_json

    plan = make_plan(sweep, effective_tflops=args.effective_tflops)
    if args.plan_out:
        Path(args.plan_out).parent.mkdir(parents=True, exist_ok=True)
        dump_json(plan_to_json(plan, sweep), args.plan_out)
    if show:
        print(format_plan(plan))
        if args.plan_out:
            print(f"plan written to {args.plan_out}")


def run_plan(args: argparse.Namespace) -> int:
    args.dry_run = True
    return run_sweep(args)


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------

# The run options' flags (their help is RunOptions' field descriptions).
_RUN_FLAGS: dict[str, dict] = {
    "output_dir": {"default": "raygrid-runs"},
    "storage": {"metavar": "PATH|s3://BUCKET/PREFIX"},
    "s3_endpoint_url": {"metavar": "URL"},
    "tracking_uri": {"metavar": "URI"},
    "artifact_root": {"metavar": "PATH|s3://"},
    "data_root": {"metavar": "PATH|s3://"},
    "weights_dir": {"metavar": "DIR"},
    "address": {"metavar": "ADDR"},
    "num_cpus": {"type": int},
    "num_gpus": {"type": int},
    "max_concurrent": {"type": int},
    "cluster_config": {"metavar": "FILE"},
    "node_timeout": {"type": float, "metavar": "MIN", "default": 30.0},
    "resume": {"action": "store_true"},
    "verbose": {"action": "store_true", "flags": ("-v", "--verbose")},
}


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (trials per stage, axes, resources, GPU-hour estimate) and exit")
    for name, kw in _RUN_FLAGS.items():
        kw = dict(kw)
        flags = kw.pop("flags", ("--" + name.replace("_", "-"),))
        p.add_argument(*flags, dest=name, help=RunOptions.model_fields[name].description, **kw)
    p.add_argument("--no-report", action="store_true", help="skip the analysis and report at the end")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run options from the flags; a bad value is one SpaceError naming the flag."""
    from pydantic import ValidationError

    try:
        return RunOptions(**{name: getattr(args, name) for name in _RUN_FLAGS}, report=not args.no_report)
    except ValidationError as e:
        err = e.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        msg = err["msg"].replace("Input should be", "expected")
        raise SpaceError(flag, "", f"{err.get('input')!r}: {msg}") from None


def resume_command(argv: list[str] | None = None) -> str:
    """The command that resumes this sweep: how it was started, plus --resume."""
    import shlex
    from pathlib import Path

    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]) if argv else Path("raygrid")
    if prog.name == "sweep.py" and prog.parent.name == "raygrid":
        head = ["python", "-m", "raygrid.sweep"]
    elif prog.name == "__main__.py" and prog.parent.name == "raygrid":
        head = ["python", "-m", "raygrid"]
    else:
        head = [prog.name]
    rest = argv[1:]
    return shlex.join(head + rest + ([] if "--resume" in rest else ["--resume"]))


def run_sweep(args: argparse.Namespace) -> int:
    try:
        sweep = _load(args)
        opts = run_options(args)
    except SpaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _plan(args, sweep, show=args.dry_run)
    if args.dry_run:
        return 0
    from raygrid.errors import PermanentError
    from raygrid.run.runner import SweepStopped
    from raygrid.run.runner import run_sweep as run  # heavy: Ray, MLflow, torch

    try:
        return run(sweep, opts, resume_command())
    except SweepStopped as e:  # no node came up: the cluster, not the input
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (SpaceError, PermanentError) as e:  # preflight, services, the lock, "no trial fits"
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment (= the sweep's name)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLflow's own, $MLFLOW_TRACKING_URI or ./mlruns; a local "
                   "sweep's store is sqlite:///<output dir>/mlflow.db, which the sweep prints)")
    p.add_argument("--sweep-run", default=None,
                   help="the sweep run id: only its trials, and the report is logged to it (under report/); "
                   "default: every trial run of the experiment, a trial re-run later counted once")
    p.add_argument("--out", default=None, help="output folder (default: ./raygrid-report-<experiment>)")
    p.add_argument("--checkpoint", choices=("best", "final"), default=None,
                   help="default: each stage's report entry in plan.json; 'final': every stage at its common step; "
                   "'best': the best evaluation up to it by the stage's val/ selection metric, where it names one")
    p.add_argument("--include-same-backbone", action="store_true",
                   help="let evaluators judge runs trained on their own features (the loss backbone, the "
                   "discriminator trunk): a check of the circularity exclusion, not a result")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-samples", action="store_true", help="skip the SR sample crops (no checkpoint downloads)")
    p.add_argument("--data-root", default=None,
                   help="where the SR validation sets are, for the sample crops (default: the sweep's data root)")


def run_report(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    commands = p.add_subparsers(dest="data_command", required=True)
    demo = commands.add_parser("demo", help="build the offline demo data (scikit-image's images, real benchmark "
                                            "formats) in raygrid's cache ($RAYGRID_CACHE, else ~/.cache/raygrid), "
                                            "where sweeps find it, and print where each set is")
    demo.add_argument("--force", action="store_true", help="rebuild even if a current build is there")
    from raygrid.data.sr_store import add_prepare_arguments

    add_prepare_arguments(commands.add_parser(
        "prepare", help="write an SR training set's HR images once as memory-mapped arrays (the prepared store "
                        "crops are read from without decoding whole images)"))


def run_data(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        from raygrid.data.sr_store import run_prepare

        return run_prepare(args)
    from raygrid.data.demo import build_demo

    for name, folder in build_demo(None, force=args.force).items():
        print(f"{name}\t{folder}")
    return 0


# ---------------------------------------------------------------------------------------------
# cluster
# ---------------------------------------------------------------------------------------------


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    from raygrid.cluster.cli import add_arguments

    add_arguments(p)


def run_cluster(args: argparse.Namespace) -> int:
    from raygrid.cluster.cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------
# judge
# ---------------------------------------------------------------------------------------------


def add_judge_arguments(p: argparse.ArgumentParser) -> None:
    from raygrid.judge.cli import add_arguments

    add_arguments(p)


def run_judge(args: argparse.Namespace) -> int:
    from raygrid.judge.cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------

Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
COMMANDS: dict[str, Command] = {
    "sweep": (add_sweep_arguments, run_sweep, "plan and run a sweep: stages on Ray Tune/Train, tracked in MLflow, "
              "then the asymmetry analysis and report"),
    "plan": (add_plan_arguments, run_plan, "print the plan of a sweep without running anything (the dry run)"),
    "report": (add_report_arguments, run_report, "the asymmetry report of a sweep, from MLflow"),
    "data": (add_data_arguments, run_data, "datasets: build the demo data, prepare an SR training store"),
    "cluster": (add_cluster_arguments, run_cluster, "offline checks of the AWS cluster file"),
    "judge": (add_judge_arguments, run_judge, "a local page where people compare the SR crops of a sweep's runs "
              "two at a time; judgements go to SQLite and MLflow"),
}


def build_parser(prog: str = "raygrid") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
