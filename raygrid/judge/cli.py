"""`python -m raygrid.judge`: the judging page of a sweep, or `--sync` to mirror judgements to MLflow.

    python -m raygrid.judge --experiment demo                  # after `python -m raygrid.sweep`
    python -m raygrid.judge --experiment demo --judge ana --port 8765
    python -m raygrid.judge --experiment demo --sync           # judgements -> MLflow (sweep run)

Judgements go to OUTPUT_DIR/judge/<experiment>/judgements.sqlite; the crops shown are cached in
OUTPUT_DIR/judge/<experiment>/crops/. The defaults match `python -m raygrid.sweep`: OUTPUT_DIR
raygrid-runs, the MLflow store sqlite:///OUTPUT_DIR/mlflow.db.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path

from raygrid.judge.source import JudgeInputError
from raygrid.spec.mlflow import default_tracking_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXIT_BAD_INPUT = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment (= the sweep's name)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///OUTPUT_DIR/mlflow.db)")
    p.add_argument("--output-dir", default="raygrid-runs",
                   help="the sweep's output folder: judgements and cached crops go under OUTPUT_DIR/judge/")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--judge", metavar="NAME", help="judge name to start with (otherwise the page asks)")
    p.add_argument("--target", type=int, default=40, help="comparisons per judge the progress bar counts to")
    p.add_argument("--data-root", metavar="PATH",
                   help="where the SR test sets are, to render crops from checkpoints (default: $RAYGRID_DATA, "
                        "else raygrid's cache where the demo data lives)")
    p.add_argument("--sync", action="store_true",
                   help="merge the judgements with the MLflow mirror on the sweep run, upload the union, and exit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raygrid.judge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_arguments(p)
    return p


def judge_dir(output_dir: str, experiment: str) -> Path:
    return Path(output_dir) / "judge" / experiment


def store_path(output_dir: str, experiment: str) -> Path:
    from raygrid.judge.store import FILE_NAME

    return judge_dir(output_dir, experiment) / FILE_NAME


def _tracking_uri(args) -> str:
    if args.tracking_uri:
        uri = args.tracking_uri
    else:
        uri = default_tracking_uri(args.output_dir)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():  # MLflow would create an empty store and then find no experiment
            raise JudgeInputError(f"no MLflow store at {path} (give the sweep's --output-dir or --tracking-uri)")
    return uri


def bind(port: int) -> socket.socket:
    """The listening socket, bound before anything heavy starts; a port in use is one line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as every server does: a restart may rebind while old connections sit in TIME_WAIT (Linux
    # still refuses a port that another socket listens on, so "in use" is still detected)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise JudgeInputError(f"port {port} on {HOST} is in use; choose another with --port (0 = any free port)") from None
        raise JudgeInputError(f"cannot listen on {HOST}:{port} ({e.strerror})") from None
    sock.listen(128)
    return sock


def run(args: argparse.Namespace) -> int:
    try:
        if args.target < 1:
            raise JudgeInputError(f"--target must be at least 1, got {args.target}")
        uri = _tracking_uri(args)
        from raygrid.judge.store import JudgementStore

        if args.sync:
            from raygrid.judge.sync import sync

            store = JudgementStore(store_path(args.output_dir, args.experiment))
            run_id, pulled, total = sync(store, uri, args.experiment)
            print(f"raygrid judge: {total} judgement(s) of {args.experiment!r} in MLflow "
                  f"(sweep run {run_id}, judgements/judgements.parquet); {pulled} new from MLflow merged into {store.path}")
            return 0
        sock = bind(args.port)
        from raygrid.judge.source import load_crop_set

        crop_set = load_crop_set(uri, args.experiment, judge_dir(args.output_dir, args.experiment) / "crops",
                                 data_root=args.data_root, log=lambda m: print(f"raygrid judge: {m}", flush=True))
        store = JudgementStore(store_path(args.output_dir, args.experiment))
    except JudgeInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return serve(sock, crop_set, store, args)


def serve(sock: socket.socket, crop_set, store, args) -> int:
    import uvicorn

    from raygrid.judge.app import create_app

    app = create_app(crop_set, store, default_judge=args.judge, target=args.target)
    port = sock.getsockname()[1]
    items = crop_set.items()
    for note in crop_set.notes:
        print(f"raygrid judge: note: {note}", flush=True)
    print(f"raygrid judge: serving http://{HOST}:{port}/ — experiment {crop_set.experiment!r}, {len(items)} settings "
          f"({sum(len(v) for v in items.values())} runs), {len(crop_set.crops)} crops ({crop_set.crops_origin}); "
          f"judgements in {store.path} ({store.count(crop_set.experiment)} so far); Ctrl-C to stop", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
