"""Run a sweep: preflight, Ray, one Tune experiment per stage, MLflow lineage, summary.

Data flows one way: space → plan → Tune (per stage) → Train loops → MLflow → analysis → report.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrid import catalog, io, tracking
from raygrid.space import SpaceError, Stage, Sweep


@dataclass
class RunOptions:
    output_dir: str = "raygrid-runs"
    storage: str | None = None
    s3_endpoint_url: str | None = None
    tracking_uri: str | None = None
    artifact_root: str | None = None
    data_root: str | None = None
    weights_dir: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    max_concurrent: int | None = None
    resume: bool = False
    report: bool = True

    @classmethod
    def from_args(cls, args) -> RunOptions:
        return cls(output_dir=args.output_dir, storage=args.storage, s3_endpoint_url=args.s3_endpoint_url,
                   tracking_uri=args.tracking_uri, artifact_root=args.artifact_root, data_root=args.data_root, weights_dir=args.weights_dir,
                   address=args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                   max_concurrent=args.max_concurrent, resume=args.resume, report=not args.no_report)


@dataclass
class StageSummary:
    name: str
    trials: int = 0
    finished: int = 0
    stopped: int = 0
    failed: int = 0
    skipped: int = 0
    best: str = "-"
    seconds: float = 0.0


@dataclass
class SweepResult:
    experiment: str
    sweep_run_id: str
    tracking_uri: str
    output_dir: str
    storage_uri: str
    stages: list[StageSummary] = field(default_factory=list)
    report: str | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Preflight: everything a trial would fail on later, checked before anything starts
# ---------------------------------------------------------------------------------------------


def _weight_needs(sweep: Sweep) -> list[tuple[str, str, str]]:
    """(backbone, weights spec, where) for every pretrained component the sweep loads."""
    needs = []
    for name, stage in sweep.stages.items():
        for t in stage.trials:
            c, where = t.config, f"stages.{name}"
            if c["trainable"] in ("sr_gan", "assess"):
                needs.append((c["fidelity"]["backbone"], c["fidelity"]["weights"], f"{where}.fidelity.weights"))
            if c["trainable"] == "sr_gan":
                needs += [(b, c["eval"]["weights"], f"{where}.eval.weights") for b in c["eval"]["fidelity_backbones"]]
                disc = c["adversarial"]["discriminator"]
                if disc != catalog.NO_DISCRIMINATOR:
                    trunk = catalog.split_discriminator(disc)[1]
                    if trunk != "conv":
                        needs.append((trunk, c["adversarial"]["weights"], f"{where}.adversarial.weights"))
            if c["trainable"] == "iqa_finetune" and c["model"]["init"] == "imagenet":
                needs.append((c["model"]["backbone"], c["model"]["weights"], f"{where}.model.weights"))
    return sorted(set(needs))


def preflight(sweep: Sweep, data_root: str, weights_dir: str | None) -> None:
    from raygrid.weights import MissingWeightsError, check_weights

    for backbone, spec, where in _weight_needs(sweep):
        try:
            check_weights(backbone, spec, weights_dir)
        except (MissingWeightsError, ValueError) as e:
            raise SpaceError(sweep.source, where, str(e).replace("\n", " ")) from None
    nr_metrics = sorted({m for st in sweep.stages.values() for t in st.trials
                         for m in t.config.get("eval", {}).get("nr_metrics", [])})
    if nr_metrics:
        from raygrid.metrics.panel import check_pyiqa_metric

        for metric in nr_metrics:
            try:
                check_pyiqa_metric(metric, weights_dir)
            except (ImportError, ValueError, FileNotFoundError) as e:
                raise SpaceError(sweep.source, "eval.nr_metrics", str(e).replace("\n", " ")) from None
    for name, stage in sweep.stages.items():
        for t in stage.trials:
            gen = t.config.get("generator", {}).get("checkpoint")
            if gen and not io.is_s3(gen) and not Path(gen).expanduser().is_file():
                raise SpaceError(sweep.source, f"stages.{name}.base.generator.checkpoint",
                                 f"SwinIR checkpoint {gen} does not exist")
            for ab in (t.config.get("fidelity", {}).get("alpha_beta", ""),):
                if ab.startswith("file:") and not Path(ab[5:]).expanduser().is_file():
                    raise SpaceError(sweep.source, f"stages.{name}.fidelity.alpha_beta", f"file {ab[5:]} does not exist")
    _check_datasets(sweep, data_root)


def _dataset_names(sweep: Sweep) -> tuple[set[str], set[str]]:
    sr, iqa = set(), set()
    for stage in sweep.stages.values():
        for t in stage.trials:
            c = t.config
            if c["trainable"] == "sr_gan":
                sr |= {c["data"]["train"], *c["data"]["val"]}
            elif c["trainable"] == "assess":
                iqa |= {c["benchmark"]} | ({c["fit_on"]} if c["fit_on"] else set())
            else:
                iqa |= {c["data"]["train"], *c["data"]["test"]}
    return sr, iqa


def _check_datasets(sweep: Sweep, data_root: str) -> None:
    """Build the demo sets if used; check that every other dataset's folder exists (local roots)."""
    from raygrid.data.iqa import resolve_benchmark_root
    from raygrid.data.sr import resolve_sr_root

    sr, iqa = _dataset_names(sweep)
    if any(n.startswith("demo_") for n in sr | iqa):
        from raygrid.data.demo import build_demo

        t0 = time.time()
        build_demo(data_root)
        print(f"demo data ready under {data_root} ({time.time() - t0:.1f} s)")
    if io.is_s3(data_root):
        return  # synced by the readers on first use
    for name in sorted(sr):
        root = resolve_sr_root(name, data_root)
        if not io.is_s3(root) and not Path(root).exists():
            raise SpaceError(sweep.source, "data_root", f"SR set {name!r}: folder {root} does not exist")
    for name in sorted(iqa):
        root = resolve_benchmark_root(name, data_root)
        if not io.is_s3(root) and not Path(root).exists():
            raise SpaceError(sweep.source, "data_root", f"benchmark {name!r}: folder {root} does not exist")


# ---------------------------------------------------------------------------------------------
# Transfer lineage: "initialise from the discriminator of optimize runs matching X"
# ---------------------------------------------------------------------------------------------


def resolve_discriminator_sources(stage: Stage, tracking_uri: str, experiment: str, sweep_run_id: str,
                                  metric: str, mode: str) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """For each transfer trial with init 'discriminator': the optimize run and checkpoint it starts
    from. Prefers runs of this sweep invocation, then earlier sweeps of the experiment.
    Returns ({trial index: {"checkpoint", "init_from_run"}}, [indices with no matching run])."""
    import pandas as pd

    wanted = [t for t in stage.trials if t.config["model"]["init"] == "discriminator"
              and not t.config["model"]["discriminator_checkpoint"]]
    if not wanted:
        return {}, []
    runs = tracking.search_trial_runs(tracking_uri, experiment, stage="optimize")
    found, missing = {}, []
    for t in wanted:
        m = t.config["model"]
        src = m["discriminator"]
        disc = f"{src['head']}_{m['backbone']}"
        ckpt_tag = f"tags.{tracking.TAG_CKPT_BEST if src['pick'] == 'best' else tracking.TAG_CKPT_FINAL}"
        if runs.empty or ckpt_tag not in runs:
            missing.append(t.index)
            continue
        sel = runs[(runs["params.adversarial.discriminator"] == disc)
                   & (runs["params.fidelity.backbone"] == src["fidelity_backbone"])
                   & runs[ckpt_tag].notna()]
        if src["adversarial_weight"] is not None:
            sel = sel[pd.to_numeric(sel["params.loss.adversarial_weight"]) == src["adversarial_weight"]]
        if sel.empty:
            missing.append(t.index)
            continue
        mine = sel[sel[f"tags.{tracking.TAG_SWEEP_RUN}"] == sweep_run_id]
        sel = mine if not mine.empty else sel
        score_col = f"tags.raygrid.best.{metric}" if src["pick"] == "best" else f"metrics.{metric}"
        scores = pd.to_numeric(sel[score_col], errors="coerce") if score_col in sel else pd.Series(dtype=float)
        pick = sel.loc[(scores.idxmax() if mode == "max" else scores.idxmin())] if scores.notna().any() else sel.iloc[0]
        found[t.index] = {"checkpoint": io.join(pick[ckpt_tag], "state.pt"), "init_from_run": pick["run_id"]}
    return found, missing


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


def _start_ray(opts: RunOptions) -> bool:
    """Connect to a cluster or start a local instance; True if this call started it."""
    import ray

    # Tune's classic progress output: it honours the trimmed CLIReporter (raygrid.tuning._reporter).
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

    from raygrid.plan import make_plan, plan_to_json
    from raygrid.tuning import StageRun, max_concurrent_trials, run_stage, trial_specs

    t_start = time.time()
    out = Path(opts.output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage_uri = opts.storage or str(out / "ray")
    endpoint = io.endpoint(opts.s3_endpoint_url)
    tracking_uri = opts.tracking_uri or tracking.default_tracking_uri(str(out))
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    artifact_root = opts.artifact_root or (str(out / "mlartifacts") if local_store else None)
    data_root = io.data_root(opts.data_root, sweep.spec.data_root)
    if opts.s3_endpoint_url:
        os.environ.setdefault("RAYGRID_S3_ENDPOINT_URL", opts.s3_endpoint_url)
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", opts.s3_endpoint_url)

    preflight(sweep, data_root, opts.weights_dir)
    try:
        experiment_id = tracking.ensure_experiment(tracking_uri, sweep.name, artifact_root)
    except Exception as e:  # MlflowException, connection errors: nothing has run yet
        raise SpaceError("--tracking-uri", "", f"MLflow at {tracking_uri} is not usable: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    sweep_run_id, resumed = tracking.start_sweep_run(tracking_uri, experiment_id, sweep.name, storage_uri,
                                                     opts.resume, {"raygrid.space": sweep.source})
    client = tracking.client(tracking_uri)
    if not resumed:
        with tempfile.TemporaryDirectory() as tmp:
            plan = plan_to_json(make_plan(sweep), sweep)
            (Path(tmp) / "plan.json").write_text(json.dumps(plan, indent=1, default=str))
            client.log_artifact(sweep_run_id, str(Path(tmp) / "plan.json"))
        # the validated space (defaults filled in), whatever file or dict it came from
        client.log_dict(sweep_run_id, sweep.spec.model_dump(mode="json", by_alias=True, exclude_none=True), "space.yaml")
    result = SweepResult(sweep.name, sweep_run_id, tracking_uri, str(out), storage_uri)
    print(f"sweep {sweep.name!r}: MLflow run {sweep_run_id} in {tracking_uri}; trial state in {storage_uri}")

    env = {"data_root": data_root, "weights_dir": opts.weights_dir, "s3_endpoint_url": endpoint,
           "sweep_name": sweep.name}
    started_ray = _start_ray(opts)
    ok = False
    try:
        cluster = ray.cluster_resources()
        for name, stage in sweep.stages.items():
            t0 = time.time()
            summary = StageSummary(name)
            extra, skipped = {}, []
            if name == "transfer":
                opt = sweep.spec.stages.get("optimize")
                metric, mode = (opt.scheduler.metric, opt.scheduler.mode) if opt else ("val/psnr_y", "max")
                extra, skipped = resolve_discriminator_sources(stage, tracking_uri, sweep.name, sweep_run_id, metric, mode)
            specs = [s for s in trial_specs(stage, extra) if s["meta"]["index"] not in skipped]
            for s in specs:
                if s["meta"].get("checkpoint"):
                    s["trial"]["model"]["discriminator_checkpoint"] = s["meta"].pop("checkpoint")
            summary.skipped = len(skipped)
            if skipped:
                print(f"[{name}] {len(skipped)} trial(s) skipped: no optimize run with the discriminator they "
                      f"start from (trial indices {skipped})", file=sys.stderr)
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
            _summarise(grid, stage, summary)
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
                      f"python -m raygrid.report --experiment {sweep.name} --tracking-uri {tracking_uri}", file=sys.stderr)
        tracking.end_run(tracking_uri, sweep_run_id, ok)
        if started_ray:
            ray.shutdown()
    return result


def _summarise(grid, stage: Stage, summary: StageSummary) -> None:
    sched = stage.spec.scheduler
    best_value, best_name = None, "-"
    for r in grid:
        summary.trials += 1
        if r.error is not None:
            summary.failed += 1
            continue
        m = r.metrics or {}
        if m.get("step", 0) >= stage.spec.budget.steps:
            summary.finished += 1
        else:
            summary.stopped += 1
        v = m.get(sched.metric)
        if v is not None and (best_value is None or (v > best_value if sched.mode == "max" else v < best_value)):
            point = (r.config.get("spec") or {}).get("meta", {}).get("point", r.config.get("search", {}))
            best_value, best_name = v, f"{sched.metric}={v:.4g} " + ", ".join(f"{k}={p}" for k, p in point.items())
    summary.best = best_name


def _report(result: SweepResult) -> str | None:
    from raygrid.analysis.report import build_report

    return build_report(result.experiment, tracking_uri=result.tracking_uri, sweep_run_id=result.sweep_run_id,
                        out_dir=str(Path(result.output_dir) / "report"))


def format_summary(result: SweepResult) -> str:
    rows = [("stage", "trials", "finished", "stopped early", "failed", "skipped", "wall", "best trial")]
    for s in result.stages:
        rows.append((s.name, str(s.trials), str(s.finished), str(s.stopped), str(s.failed), str(s.skipped),
                     f"{s.seconds:.0f} s", s.best))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["", f"sweep {result.experiment!r} done in {result.seconds / 60:.1f} min"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    lines.append("")
    lines.append(f"MLflow: {result.tracking_uri} (experiment {result.experiment!r}, sweep run {result.sweep_run_id})")
    if result.tracking_uri.startswith("sqlite:"):
        lines.append(f"  open it with: mlflow ui --backend-store-uri {result.tracking_uri}")
    lines.append(f"trial state and checkpoints: {result.storage_uri}")
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)
