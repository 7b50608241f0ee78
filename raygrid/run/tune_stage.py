"""One stage of a sweep on Ray Tune: a Tuner over a trial driver that launches a TorchTrainer.

Ray 2.60 runs Train V2, where a trainer cannot be handed to a Tuner: each Tune trial is the small
`trial_driver` function below, which builds a `TorchTrainer` named after the trial id (so a
retried or resumed trial finds its own Train state and continues from its last checkpoint) and
forwards Train's reports to Tune with `TuneReportCallback`.

Failures: the driver decides what Tune retries (raygrid.run.failures): a permanent error (bad
data or configuration) ends the trial at once, a crash is raised for Tune to retry. Waiting for
nodes has a limit (`StageRun.node_timeout_s`): a trial whose workers find no room in that time
fails with `NO_NODES`, and `StopOnNoNodes` then stops the whole stage.

Kept apart from `raygrid.plan` so that the dry run never imports Ray or torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from raygrid import io
from raygrid.cluster.capacity import AUTOSCALER_LOG, Capacity, describe_resources
from raygrid.cluster.errors import TRAIN_DRIVER
from raygrid.run import failures
from raygrid.space import SpaceError, Stage
from raygrid.space.expand import sampled_json
from raygrid.spec.trainables import get as trainable

DRIVER_CPU = 0.01  # the trial driver only waits on its trainer
NO_NODES = "NoNodeCameUp"  # Failure.type of a trial whose workers found no room in time
# Ray Train's wait for a worker group's placement group (read by the Train controller, to which a
# TorchTrainer forwards it from the creating process's environment).
_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


@dataclass
class StageRun:
    """Everything a stage needs besides its trials."""

    sweep_name: str
    storage_uri: str  # local folder or s3:// prefix (Tune and Train state, checkpoints)
    env: dict[str, Any]  # raygrid.stages.loop.RunEnv fields
    max_concurrent: int
    resume: bool
    callbacks: list[Any]
    capacity: Capacity
    node_timeout_s: float = 1800.0  # how long a trial's workers may wait for room (nodes)
    stopper: Any = None  # a tune.Stopper (StopOnNoNodes) shared with the runner
    verbose: int = 1  # Tune's verbosity (its status tables go to the sweep's log file)
    autoscaler_log: str = AUTOSCALER_LOG  # named in the "no node came up" line


def trial_driver(config: dict[str, Any], env: dict[str, Any], stage: dict[str, Any],
                 points: list[dict[str, Any]] | None = None) -> None:
    """One Tune trial = one Ray Train run of the trial's train loop.

    `config` is {"spec": <a Trial.to_json>} for a grid, or {"search": {"point", "values"}} when
    Optuna picks a grid point (one of `points`) and continuous values."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    search = config.get("search")
    spec = sampled_json(points[search["point"]], search["values"], stage["name"]) if search else config["spec"]
    trial_id = ray.tune.get_context().get_trial_id()
    res = stage["resources"]
    per_worker = {"CPU": res["cpus_per_worker"]}
    if res["gpus_per_worker"]:
        per_worker["GPU"] = res["gpus_per_worker"]
    fs, path = io.filesystem(stage["train_storage"], env.get("s3_endpoint_url"))
    os.environ[_START_TIMEOUT_ENV] = str(stage["node_timeout_s"])
    trainer = TorchTrainer(
        trainable(spec["trial"]["trainable"]).load_loop(),
        train_loop_config={"trial": spec["trial"], "env": env,
                           "meta": {**spec["meta"], "trial_id": trial_id, "stage": stage["name"],
                                    "cpus_per_worker": res["cpus_per_worker"]}},
        scaling_config=ray.train.ScalingConfig(num_workers=res["workers"], use_gpu=res["gpus_per_worker"] > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # The name is a function of the trial id only: a retried or restored trial resumes it.
            name=f"{stage['name']}-{trial_id}",
            storage_path=path,
            storage_filesystem=fs,
            # Retries happen at the Tune level; a worker group that finds no room within the
            # start timeout is not retried here either (the driver reports it as NO_NODES).
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=0),
            checkpoint_config=_checkpoint_config(stage.get("selection")),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as e:
        failure = _no_nodes(e, stage) or failures.describe(e)
        if failure.retryable:
            raise failures.TrialCrashed(failure) from None  # Tune retries it (max_failures)
        # Permanent: end the trial now, as failed, without a retry (the tracking callback and
        # the summary read the failure from this last result).
        ray.tune.report({failures.RESULT_KEY: failure.to_json()})


def _no_nodes(error: BaseException, stage: dict[str, Any]) -> failures.Failure | None:
    """The NO_NODES failure when Train gave up waiting for the workers' placement group (its
    start timeout), or found that no node type can ever hold them."""
    from ray.train.v2._internal.exceptions import (
        InsufficientClusterResourcesError,
        WorkerGroupStartupTimeoutError,
    )

    cause = getattr(error, "controller_failure", None)
    if not isinstance(cause, (WorkerGroupStartupTimeoutError, InsufficientClusterResourcesError)):
        return None
    minutes = stage["node_timeout_s"] / 60
    res = stage["resources"]
    what = "GPU" if res["gpus_per_worker"] else describe_resources(_per_worker(res))
    if stage.get("autoscaling"):
        message = (f"no {what} node came up in {minutes:g} min: check EC2 quota and the autoscaler log "
                   f"({stage.get('autoscaler_log', AUTOSCALER_LOG)} on the head; `ray status` lists pending and "
                   "failed launches)")
    else:
        message = (f"the workers of a {stage['name']} trial ({what}) found no room in {minutes:g} min on a "
                   f"cluster that does not autoscale")
    return failures.Failure("permanent", NO_NODES, message, "", str(cause))


def _per_worker(res: dict[str, Any]) -> dict[str, float]:
    out = {"CPU": float(res["cpus_per_worker"])}
    if res["gpus_per_worker"]:
        out["GPU"] = float(res["gpus_per_worker"])
    return out


def _stop_on_no_nodes_base():
    from ray.tune import Stopper

    return Stopper


class StopOnNoNodes(_stop_on_no_nodes_base()):
    """Stops the whole stage once one trial's workers found no node in time: the others would
    only wait as long again. `failure` holds what the runner reports."""

    def __init__(self) -> None:
        self.failure: failures.Failure | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        found = failures.from_result(result)
        if found is not None and found.type == NO_NODES:
            self.failure = found
            return True
        return False

    def stop_all(self) -> bool:
        return self.failure is not None


def _checkpoint_config(selection: dict[str, str] | None):
    """Keep the best checkpoint by the stage's selection metric (report.selection: a val metric)
    and the latest; with no selection, the latest ones only. Never a test metric: what the tables
    report must not decide which checkpoint survives."""
    import ray.train

    if selection is None:
        return ray.train.CheckpointConfig(num_to_keep=2)
    return ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=selection["metric"],
                                      checkpoint_score_order=selection["mode"])


class TrialName:
    """Short trial names and folders ("optimize_3f6c9_00001"): Tune's default folder name spells
    out the whole config, which here is the entire trial spec."""

    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, trial) -> str:
        return f"{self.stage}_{trial.trial_id}"


def driver_resources(capacity: Capacity) -> dict[str, float]:
    """A driver only waits on its trainer. On raygrid's cluster.yaml the head advertises
    TRAIN_DRIVER: drivers must live there, off the (spot) GPU workers, since a driver owns its
    trial's fault tolerance."""
    res = {"cpu": DRIVER_CPU}
    if capacity.resources.get(TRAIN_DRIVER):
        res[TRAIN_DRIVER] = 1
    return res


def trial_needs(stage: Stage, capacity: Capacity) -> dict[str, float]:
    """What one trial holds while it runs: its Train workers and its driver."""
    r = stage.spec.resources
    needs = {"CPU": r.cpus, "GPU": r.gpus}
    if capacity.resources.get(TRAIN_DRIVER):
        needs[TRAIN_DRIVER] = 1.0
    else:
        needs["CPU"] += DRIVER_CPU
    return needs


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def max_concurrent_trials(stage: Stage, capacity: Capacity, override: int | None) -> int:
    """Tune does not see the trainers' resources: derive concurrency from what the cluster can
    have (raygrid.cluster.capacity: on an autoscaling cluster, the nodes it may add)."""
    r = stage.spec.resources
    per_worker = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    where = f"stages.{stage.name}.resources"
    if capacity.autoscaling and capacity.node_types and not capacity.fitting_types(per_worker):
        raise SpaceError(where, "", f"no node type of {capacity.source} can hold one worker of "
                         f"{_article(stage.name)} trial ({describe_resources({k: v for k, v in per_worker.items() if v})})")
    if override is not None:
        return override
    needs = trial_needs(stage, capacity)
    n = capacity.trials(needs)
    if n < 1:
        have = describe_resources({k: capacity.resources.get(k, 0.0) for k, v in needs.items() if v})
        hint = "" if capacity.autoscaling else (
            "; on an autoscaling cluster pass its config with --cluster-config cluster.yaml")
        raise SpaceError(where, "", f"no trial fits: {capacity.source} give at most {have}; "
                         f"{_article(stage.name)} trial needs {describe_resources({k: v for k, v in needs.items() if v})}"
                         f"{hint}")
    return n


def run_stage(stage: Stage, run: StageRun, specs: list[dict[str, Any]]):
    """Fit (or, with resume, restore and finish) the stage's Tuner; returns its ResultGrid."""
    from ray import tune

    spec = stage.spec
    sched = spec.scheduler
    stage_info = {
        "name": stage.name, "metric": sched.metric, "mode": sched.mode,
        "selection": spec.selection.model_dump() if spec.selection else None,
        "resources": spec.resources.model_dump(),
        "train_storage": io.join(run.storage_uri, run.sweep_name, "train"),
        "node_timeout_s": run.node_timeout_s, "autoscaling": run.capacity.autoscaling,
        "autoscaler_log": run.autoscaler_log,
    }
    searcher = None
    if spec.search is None:
        param_space = {"spec": tune.grid_search(specs)}
        num_samples, points = 1, None
    else:
        searcher = _optuna_searcher(stage, specs)
        param_space, num_samples, points = {}, spec.search.num_samples, specs
    # Constant inputs go through with_parameters, not the param space: Tune does not treat them
    # as hyperparameters, and the MLflow params stay the trial config alone.
    driver = tune.with_resources(
        tune.with_parameters(trial_driver, env=run.env, stage=stage_info, points=points), driver_resources(run.capacity))
    scheduler = make_scheduler(stage, [sp["meta"]["point"] for sp in specs] if spec.search else None)
    fs, path = io.filesystem(run.storage_uri, run.env.get("s3_endpoint_url"))
    name = f"{run.sweep_name}-{stage.name}"
    exp_path = f"{path.rstrip('/')}/{name}"
    if run.resume and tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        tuner = tune.Tuner.restore(exp_path, trainable=driver, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space, storage_filesystem=fs)
        _use_this_invocations_run_config(tuner, run, stage)
    else:
        tuner = tune.Tuner(
            driver,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=sched.metric, mode=sched.mode, scheduler=scheduler,
                                        search_alg=searcher, num_samples=num_samples,
                                        max_concurrent_trials=run.max_concurrent,
                                        trial_name_creator=TrialName(stage.name),
                                        trial_dirname_creator=TrialName(stage.name)),
            run_config=tune.RunConfig(
                name=name, storage_path=path, storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=run.callbacks, progress_reporter=_reporter(stage), verbose=run.verbose,
                stop=run.stopper,
            ),
        )
    return tuner.fit()


def make_scheduler(stage: Stage, points: list[dict[str, Any]] | None = None):
    """The stage's Tune scheduler: FIFO (kind none), ASHA within groups (group_by), or a plain ASHA,
    which validation allows only where the stage has no study axis (one group). `points`: the grid
    points an Optuna stage's samples index (None for a grid)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raygrid.run.schedulers import GroupedASHA

    sched, budget = stage.spec.scheduler, stage.spec.budget
    if sched.kind != "asha":
        return FIFOScheduler()
    if sched.group_by:
        return GroupedASHA(sched.group_by, time_attr="step", max_t=budget.steps, grace_period=sched.grace_period,
                           reduction_factor=sched.reduction_factor, points=points)
    return ASHAScheduler(time_attr="step", max_t=budget.steps, grace_period=sched.grace_period,
                         reduction_factor=sched.reduction_factor)


def _use_this_invocations_run_config(tuner, run: StageRun, stage: Stage) -> None:
    """A restored Tuner runs with the callbacks, stopper and reporter pickled by the first
    invocation; use this one's (its console, its stopper, its verbosity). The callbacks keep their
    order, so Tune hands each its saved state back (Callback.set_state, by position)."""
    internal = getattr(tuner, "_local_tuner", None)  # None in Ray Client mode: keep the saved ones
    if internal is None:
        return
    rc = internal.get_run_config()
    rc.callbacks, rc.stop = run.callbacks, run.stopper
    rc.progress_reporter, rc.verbose = _reporter(stage), run.verbose


def _reporter(stage: Stage):
    """Ray's CLI reporter trimmed to what matters: the axes, the step and the stage metric.
    (Tune's newer output engine ignores reporters; the runner selects the classic one.)"""
    from ray.tune import CLIReporter

    sched = stage.spec.scheduler
    axes = [*stage.spec.axes, *stage.spec.linked] + (["seed"] if len(stage.spec.seeds) > 1 else [])
    params = {f"spec/meta/point/{a}": a.rsplit(".", 1)[-1] for a in axes}
    if stage.spec.search is not None:
        params = {"search/point": "point"}
    return CLIReporter(metric_columns={"step": "step", sched.metric: sched.metric}, parameter_columns=params,
                       max_report_frequency=30, sort_by_metric=True)  # metric/mode come from TuneConfig


class _DefineByRun:
    """Optuna's define-by-run space: the grid points in turn (sample n goes to point n mod the
    number of points, so every compared cell gets the same number of samples: validation asks
    for a multiple), then each continuous parameter whose `when` holds at that point. Optuna tunes
    the continuous values; it never spends more samples on a cell that looks better. A class, not
    a closure: Tune pickles the searcher with its experiment state."""

    def __init__(self, points: list[dict[str, Any]], params: dict[str, Any]):
        self.points, self.params = points, params

    def __call__(self, trial) -> dict[str, Any]:
        index = trial.number % len(self.points)
        trial.set_user_attr("point", index)
        values = {}
        for key, dist in self.params.items():
            if not all(p.holds(self.points[index][k]) for k, p in dist.when.items()):
                continue
            if dist.uniform is not None:
                values[key] = trial.suggest_float(key, *dist.uniform)
            elif dist.loguniform is not None:
                values[key] = trial.suggest_float(key, *dist.loguniform, log=True)
            else:
                values[key] = trial.suggest_categorical(key, dist.choice)
        return {"search": {"point": index, "values": values}}


def _optuna_searcher(stage: Stage, specs: list[dict[str, Any]]):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search, sched = stage.spec.search, stage.spec.scheduler
    space = _DefineByRun([sp["meta"]["point"] for sp in specs], dict(search.params))
    return OptunaSearch(space=space, metric=sched.metric, mode=sched.mode,
                        sampler=optuna.samplers.TPESampler(seed=search.seed))
