"""Run a sweep: preflight, Ray, one Tune experiment per stage, lineage between stages, MLflow,
the summary and the report.

Data flows one way: space → plan → Tune (per stage) → Train loops → MLflow → analysis → report.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from raygrid import io
from raygrid.run import lineage, tracking
from raygrid.run.options import RunOptions
from raygrid.run.preflight import preflight
from raygrid.run.samples import sweep_samples
from raygrid.run.summary import StageSummary, SweepResult, format_summary, summarise
from raygrid.space import SpaceError, Stage, Sweep
from raygrid.spec import mlflow as names
from raygrid.spec.trainables import get as trainable


def _start_ray(opts: RunOptions) -> bool:
    """Connect to a cluster or start a local instance; True if this call started it."""
    import ray

    # Tune's classic progress output: it honours the trimmed CLIReporter (raygrid.run.tune_stage._reporter).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    if opts.address:
        ray.init(address=opts.address)
        return True
    # A local instance: faster trainer start-up polling (the default 2 s makes every nested
    # TorchTrainer ~10 s slower); the dashboard must be on so Ray Train can free the placement
    # groups of trials that Tune stops (ray[default], State API).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    ray.init(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, include_dashboard=True,
             log_to_driver=True, configure_logging=True, logging_level="WARNING")
    return True


def run_sweep(sweep: Sweep, opts: RunOptions) -> int:
    result = execute(sweep, opts)
    print(format_summary(result))
    failed = sum(s.failed for s in result.stages)
    return 1 if failed and failed == sum(s.trials for s in result.stages) else 0


def execute(sweep: Sweep, opts: RunOptions) -> SweepResult:
    import ray

    from raygrid.run.tune_stage import StageRun, max_concurrent_trials, run_stage

    t_start = time.time()
    out = Path(opts.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage_uri = opts.storage or str(out / "ray")
    endpoint = io.endpoint(opts.s3_endpoint_url)
    tracking_uri = opts.tracking_uri or tracking.default_tracking_uri(str(out))
    data_root = io.data_root(opts.data_root, sweep.spec.data_root)
    if opts.s3_endpoint_url:
        os.environ.setdefault("RAYGRID_S3_ENDPOINT_URL", opts.s3_endpoint_url)
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", opts.s3_endpoint_url)

    from raygrid.data.demo_weights import resolve_weights_dir

    # --weights-dir wins; a space's `weights_dir: demo` is the demo's own pretrained files (built here)
    weights_dir = resolve_weights_dir(opts.weights_dir, sweep.spec.weights_dir, data_root)
    preflight(sweep, data_root, weights_dir)
    experiment_id, sweep_run_id = _open_sweep_run(sweep, opts, out, tracking_uri, storage_uri)
    client = names.client(tracking_uri)
    result = SweepResult(sweep.name, sweep_run_id, tracking_uri, str(out), storage_uri)
    print(f"sweep {sweep.name!r}: MLflow run {sweep_run_id} in {tracking_uri}; trial state in {storage_uri}")

    env = {"data_root": data_root, "weights_dir": weights_dir, "s3_endpoint_url": endpoint,
           "sweep_name": sweep.name,
           # the sample crops, chosen once per sweep and logged on its run (a resume keeps them)
           "samples": sweep_samples(sweep, client, sweep_run_id, data_root)}
    started_ray = _start_ray(opts)
    ok = False
    try:
        cluster = ray.cluster_resources()
        for name, stage in sweep.stages.items():
            t0 = time.time()
            summary = StageSummary(name)
            specs, skipped = _trial_specs(sweep, stage, tracking_uri, sweep_run_id)
            summary.skipped = len(skipped)
            if not specs:
                result.stages.append(summary)
                continue
            sched = stage.spec.scheduler
            callback = tracking.TrialRunLogger(
                tracking_uri, experiment_id, sweep_run_id, sweep.name, name, sched.metric, sched.mode,
                stage.spec.budget.steps, storage_uri, endpoint,
                points=specs if stage.spec.search else None)
            run = StageRun(sweep.name, storage_uri, env, max_concurrent_trials(stage, cluster, opts.max_concurrent),
                           opts.resume, [callback], cluster)
            print(f"[{name}] {len(specs) if not stage.spec.search else stage.spec.search.num_samples} trials, "
                  f"up to {run.max_concurrent} at a time")
            grid = run_stage(stage, run, specs)
            summarise(grid, stage, summary)
            summary.seconds = time.time() - t0
            result.stages.append(summary)
        ok = True
    finally:
        result.seconds = time.time() - t_start
        for s in result.stages:
            for key in ("trials", "finished", "stopped", "failed", "skipped"):
                client.log_metric(sweep_run_id, f"{s.name}/{key}", getattr(s, key))
        if ok and opts.report:
            try:
                result.report = _report(result)
            except Exception as e:  # the sweep's results are in MLflow either way; say so, close the run
                print(f"report failed ({type(e).__name__}: {e}); rerun it with "
                      f"raygrid report --experiment {sweep.name} --tracking-uri {tracking_uri}", file=sys.stderr)
        tracking.end_run(tracking_uri, sweep_run_id, ok)
        if started_ray:
            ray.shutdown()
    return result


def _open_sweep_run(sweep: Sweep, opts: RunOptions, out: Path, tracking_uri: str,
                    storage_uri: str) -> tuple[str, str]:
    """The sweep's experiment and this invocation's parent run (the last unfinished one with
    --resume); a new run gets the plan and the validated space as artifacts."""
    from raygrid.plan import make_plan, plan_to_json

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


def _trial_specs(sweep: Sweep, stage: Stage, tracking_uri: str, sweep_run_id: str) -> tuple[list[dict], list[int]]:
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
        print(f"[{stage.name}] {len(skipped)} trial(s) skipped: no {lin.source_stage} run they can start from "
              f"(trial indices {skipped})", file=sys.stderr)
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


