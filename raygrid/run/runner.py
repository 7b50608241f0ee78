"""Run a sweep: the lock, preflight, Ray, one Tune experiment per stage, lineage between stages,
MLflow, the summary and the report.

Data flows one way: space → plan → Tune (per stage) → Train loops → MLflow → analysis → report.
Everything that can be checked before a trial runs is checked before anything is written to
MLflow: the output folder's lock, the services (tracking server, storage), the data and
weights (preflight), and whether a trial fits what the cluster can have (concurrency).
docs/reliability.md describes interruption, failures and the console.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from raygrid import io
from raygrid.errors import PermanentError
from raygrid.run import interrupt, lineage, reaper
from raygrid.run.console import Console
from raygrid.run.lock import sweep_lock
from raygrid.run.options import RunOptions
from raygrid.run.preflight import check_services, preflight
from raygrid.run.samples import sweep_samples
from raygrid.run.summary import StageSummary, SweepResult, format_summary, summarise
from raygrid.space import SpaceError, Stage, Sweep
from raygrid.spec import mlflow as names
from raygrid.spec.trainables import get as trainable


class SweepStopped(PermanentError, RuntimeError):
    """The sweep could not go on (no node came up for its trials): one line, exit 1."""


def _start_ray(opts: RunOptions) -> bool:
    """Connect to a cluster or start a local instance; True if this call started it."""
    import ray

    # Tune's classic progress output: it honours the trimmed CLIReporter (raygrid.run.tune_stage._reporter).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A trial driver that failed for good reports only its failure (raygrid.run.failures), without
    # the stage metric; Tune would otherwise reject that last result.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if ray.is_initialized():
        return False
    if opts.address:
        with _keeping_sigterm():
            ray.init(address=opts.address, log_to_driver=True, logging_level="WARNING")
        return True
    # A local instance: faster trainer start-up polling (the default 2 s makes every nested
    # TorchTrainer ~10 s slower); the dashboard must be on so Ray Train can free the placement
    # groups of trials that Tune stops (ray[default], State API).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # Ray's processes start with SIGINT ignored (a disposition that survives exec): a Ctrl-C at
    # the terminal reaches the whole process group, and the dashboard it would kill is what
    # frees the placement groups of the trials the sweep is stopping.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        with _keeping_sigterm():
            # address="local": always a new instance of this sweep's own, never one that a
            # `ray start` left on this machine (that needs --address, and takes no num_cpus)
            ray.init(address="local", num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, include_dashboard=True,
                     log_to_driver=True, configure_logging=True, logging_level="WARNING")
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    global _reaper
    _reaper = reaper.start()  # kills what Ray leaves behind if this process dies (docs/reliability.md)
    return True


_reaper = None  # the watchdog of the local Ray instance's processes (raygrid.run.reaper)


@contextlib.contextmanager
def _keeping_sigterm():
    """ray.init installs the core worker's failure-signal handler for SIGTERM in this process
    (it prints "*** SIGTERM received ***" and kills the process): the sweep's own handler
    (raygrid.run.interrupt), which `ray job stop` relies on, is put back afterwards."""
    main = threading.current_thread() is threading.main_thread()
    ours = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and callable(ours):
            signal.signal(signal.SIGTERM, ours)


def _shutdown_ray() -> None:
    import ray

    global _reaper
    ray.shutdown()
    reaper.stop(_reaper)
    _reaper = None


def run_sweep(sweep: Sweep, opts: RunOptions, resume_command: str | None = None) -> int:
    """The CLI's sweep: the console (Ray's output into the log file), signal handling, the run
    and its summary. Exit code: 0, 1 if every trial failed or the sweep could not go on, 128 +
    the signal after Ctrl-C (130) or SIGTERM (143)."""
    out = Path(opts.output_dir).expanduser().resolve()
    console = Console(out / "logs", verbose=opts.verbose)
    hint = f"resume with: {resume_command}" if resume_command else "resume with the same command plus --resume"
    with console, interrupt.Interrupt(console.say, hint):
        result = execute(sweep, opts, console)
        console.say(format_summary(result, resume_command))
    if result.interrupted:
        return interrupt.exit_code(interrupt.received() or 2)
    failed = sum(s.failed for s in result.stages)
    return 1 if failed and failed == sum(s.trials for s in result.stages) else 0


def execute(sweep: Sweep, opts: RunOptions, console: Console | None = None) -> SweepResult:
    console = console or Console()  # tests: plain prints, nothing redirected
    t_start = time.time()
    out = Path(opts.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage_uri = opts.storage or str(out / "ray")
    endpoint = io.endpoint(opts.s3_endpoint_url)
    tracking_uri = opts.tracking_uri or names.default_tracking_uri(str(out))
    data_root = io.data_root(opts.data_root, sweep.spec.data_root)
    if opts.s3_endpoint_url:
        os.environ.setdefault("RAYGRID_S3_ENDPOINT_URL", opts.s3_endpoint_url)
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", opts.s3_endpoint_url)

    def weights_dir() -> str | None:
        # --weights-dir wins; a space's `weights_dir: demo` is the demo's own pretrained files,
        # built once the data checks passed (imported here: it needs torch, a bad space does not)
        from raygrid.data.demo_weights import resolve_weights_dir

        return resolve_weights_dir(opts.weights_dir, sweep.spec.weights_dir, data_root)

    with sweep_lock(out):
        check_services(tracking_uri, storage_uri, data_root, endpoint)
        return _run(sweep, opts, console, t_start, out, storage_uri, endpoint, tracking_uri, data_root,
                    preflight(sweep, data_root, weights_dir, endpoint))


def _run(sweep: Sweep, opts: RunOptions, console: Console, t_start: float, out: Path, storage_uri: str,
         endpoint: str | None, tracking_uri: str, data_root: str, weights_dir: str | None) -> SweepResult:
    from raygrid.cluster.capacity import autoscaler_log, discover

    # tracking and progress subclass Ray Tune's callback: imported once the checks passed
    from raygrid.run import tracking
    from raygrid.run.progress import StageProgress
    from raygrid.run.tune_stage import (
        StageRun,
        StopOnNoNodes,
        max_concurrent_trials,
        run_stage,
    )

    started_ray = _start_ray(opts)
    sweep_run_id = None
    try:
        capacity = discover(opts.cluster_config)
        concurrency = {name: max_concurrent_trials(stage, capacity, opts.max_concurrent)
                       for name, stage in sweep.stages.items()}  # "no trial fits" before MLflow is written
        experiment_id, sweep_run_id = _open_sweep_run(sweep, opts, out, tracking_uri, storage_uri)
    except BaseException:
        if started_ray:
            _shutdown_ray()
        raise
    client = names.client(tracking_uri)
    result = SweepResult(sweep.name, sweep_run_id, tracking_uri, str(out), storage_uri,
                         log_file=str(console.log_file) if console.log_file else None)
    console.say(f"sweep {sweep.name!r}: MLflow run {sweep_run_id} in {tracking_uri}; trial state in {storage_uri}")
    env = {"data_root": data_root, "weights_dir": weights_dir, "s3_endpoint_url": endpoint,
           "sweep_name": sweep.name,
           # the sample crops, chosen once per sweep and logged on its run (a resume keeps them)
           "samples": sweep_samples(sweep, client, sweep_run_id, data_root)}
    ok, stopped = False, None
    try:
        for name, stage in sweep.stages.items():
            if interrupt.received() is not None:
                result.not_started.append(name)
                continue
            t0 = time.time()
            summary = StageSummary(name)
            specs, skipped = _trial_specs(sweep, stage, tracking_uri, sweep_run_id, console)
            summary.skipped = len(skipped)
            if not specs:
                result.stages.append(summary)
                continue
            sched = stage.spec.scheduler
            n = len(specs) if not stage.spec.search else stage.spec.search.num_samples
            logger = tracking.TrialRunLogger(
                tracking_uri, experiment_id, sweep_run_id, sweep.name, name, sched.metric, sched.mode,
                stage.spec.budget.steps, storage_uri, endpoint,
                points=specs if stage.spec.search else None)
            progress = StageProgress(console, name, n, stage.spec.budget.steps, sched.metric, sched.mode)
            stopper = StopOnNoNodes()
            run = StageRun(sweep.name, storage_uri, env, concurrency[name], opts.resume, [logger, progress],
                           capacity, node_timeout_s=opts.node_timeout * 60, stopper=stopper,
                           autoscaler_log=autoscaler_log())
            console.say(f"[{name}] {n} trial{'s' if n != 1 else ''}, up to {run.max_concurrent} at a time ({capacity.source}); "
                        f"a trial waits up to {opts.node_timeout:g} min for room on a node")
            grid = run_stage(stage, run, specs)
            summarise(grid, stage, summary, progress, interrupted=interrupt.received() is not None,
                      aborted=stopper.failure)
            summary.seconds = time.time() - t0
            result.stages.append(summary)
            if stopper.failure is not None:
                stopped = stopper.failure
                result.not_started.extend(n for n in sweep.stages if n not in {s.name for s in result.stages})
                break
        ok = interrupt.received() is None and stopped is None
    finally:
        signum = interrupt.received()
        result.interrupted = interrupt.signal_name(signum) if signum is not None else None
        result.seconds = time.time() - t_start
        for s in result.stages:
            for key in ("trials", "finished", "stopped", "failed", "interrupted", "skipped"):
                client.log_metric(sweep_run_id, f"{s.name}/{key}", getattr(s, key))
        if ok and opts.report:
            try:
                result.report = _report(result)
            except Exception as e:  # the sweep's results are in MLflow either way; say so, close the run
                console.say(f"report failed ({type(e).__name__}: {e}); rerun it with "
                            f"raygrid report --experiment {sweep.name} --tracking-uri {tracking_uri}")
        tracking.end_run(tracking_uri, sweep_run_id, ok, status="KILLED" if signum is not None else None)
        if started_ray:
            _shutdown_ray()
    if stopped is not None:
        console.say(format_summary(result))
        raise SweepStopped(stopped.message)
    return result


def _open_sweep_run(sweep: Sweep, opts: RunOptions, out: Path, tracking_uri: str,
                    storage_uri: str) -> tuple[str, str]:
    """The sweep's experiment and this invocation's parent run (the last unfinished one with
    --resume); a new run gets the plan and the validated space as artifacts."""
    from raygrid.plan import make_plan, plan_to_json
    from raygrid.run import tracking

    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    artifact_root = opts.artifact_root or (str(out / "mlartifacts") if local_store else None)
    try:
        experiment_id = tracking.ensure_experiment(tracking_uri, sweep.name, artifact_root)
    except Exception as e:  # MlflowException, connection errors: nothing has run yet
        raise SpaceError("--tracking-uri", "", f"MLflow at {tracking_uri} is not usable: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    sweep_run_id, resumed = tracking.start_sweep_run(
        tracking_uri, experiment_id, sweep.name, storage_uri, opts.resume,
        {names.TAG_SPACE: sweep.source})
    if not resumed:
        client = names.client(tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            plan = plan_to_json(make_plan(sweep), sweep)
            (Path(tmp) / names.ARTIFACT_PLAN).write_text(json.dumps(plan, indent=1, default=str))
            client.log_artifact(sweep_run_id, str(Path(tmp) / names.ARTIFACT_PLAN))
        # the validated space (defaults filled in), whatever file or dict it came from
        client.log_dict(sweep_run_id, sweep.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                        names.ARTIFACT_SPACE)
    return experiment_id, sweep_run_id


def _trial_specs(sweep: Sweep, stage: Stage, tracking_uri: str, sweep_run_id: str,
                 console: Console) -> tuple[list[dict], list[int]]:
    """The stage's trials as JSON for Tune, with lineage sources filled in by the rule each trial
    names (raygrid.run.lineage); trials whose source run does not exist are skipped (returned by
    index); a source the lineage refuses (a frozen discriminator trunk) stops the sweep."""
    found, skipped = {}, []
    lin = trainable(stage.spec.trainable).lineage
    if lin is not None and any(lin.wants(t.config) for t in stage.trials):
        runs = lineage.source_runs(tracking_uri, sweep.name, lin)
        found, skipped, refused = lineage.choose(stage, lin, runs, sweep_run_id)
        if refused:
            index, why = next(iter(refused.items()))
            raise SpaceError(sweep.source, f"stages.{stage.name}.{lin.key}",
                             f"trial {index} {stage.trials[index].point}: {why}")
    if skipped:
        console.say(f"[{stage.name}] {len(skipped)} trial(s) skipped: no {lin.source_stage} run they can start "
                    f"from (trial indices {skipped})")
    specs = []
    for t in stage.trials:
        if t.index in skipped:
            continue
        src = found.get(t.index)
        if src is None:
            specs.append(t.to_json())
        else:
            config = lin.attach(t.config, lineage.checkpoint_file(src, lin.checkpoint(t.config)))
            specs.append(t.to_json(config, init_from_run=src.run_id))
    return specs, skipped


def _report(result: SweepResult) -> str | None:
    from raygrid.analysis.report import build_report

    return build_report(result.experiment, tracking_uri=result.tracking_uri, sweep_run_id=result.sweep_run_id,
                        out_dir=str(Path(result.output_dir) / "report"))
