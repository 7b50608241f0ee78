"""ASHA within groups (raygrid.run.schedulers.GroupedASHA): trials compete only with the trials of
their own group, and every group gets the same budget.

The first tests drive the scheduler's Tune hooks with Tune's own Trial objects (no Ray instance);
the last one is a tiny real Tune run of plain function trainables (slow lane, starts Ray: run it
under `flock /tmp/raygrid-ray.lock` on a shared host).
"""

from __future__ import annotations

import pytest

from raygrid.run.schedulers import GroupedASHA

GRACE, MAX_T, RF = 2, 8, 2
STEPS = (2, 4, 8)  # the evaluation steps of every trial
SEEDS = range(6)


def trial(group: str, seed: int):
    from ray.tune.experiment import Trial

    return Trial("__fake", config={"spec": {"meta": {"point": {"cell": group, "seed": seed}}}}, stub=True)


def value(group: str, seed: int, offset: dict[str, float]) -> float:
    # within a group, a later seed is worse: the trials that arrive later at a rung get cut
    return offset[group] - seed


def drive(scheduler, offset: dict[str, float], order: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Report every trial at every evaluation step, in `order`, until the scheduler stops it;
    returns the last step each trial ran to."""
    trials = {key: trial(*key) for key in order}
    scheduler.set_search_properties("val/m", "max")
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    last: dict[tuple[str, int], int] = {}
    stopped: set[tuple[str, int]] = set()
    for step in STEPS:
        for key in order:
            if key in stopped:
                continue
            decision = scheduler.on_trial_result(None, trials[key], {"step": step, "val/m": value(*key, offset)})
            last[key] = step
            if decision == "STOP":
                stopped.add(key)
    return last


def grouped() -> GroupedASHA:
    return GroupedASHA(["cell"], time_attr="step", max_t=MAX_T, grace_period=GRACE, reduction_factor=RF)


ORDER = [(g, s) for s in SEEDS for g in ("a", "b")]  # the groups' results interleave


def steps_by_group(ran: dict[tuple[str, int], int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for (g, s), step in sorted(ran.items()):
        out.setdefault(g, []).append(step)
    return out


def test_trials_compete_only_within_their_group_and_every_group_gets_the_same_budget():
    from ray.tune.schedulers import ASHAScheduler

    far_apart = {"a": 100.0, "b": 0.0}  # every trial of b is worse than every trial of a
    ran = steps_by_group(drive(grouped(), far_apart, ORDER))
    # the same rung decisions in both groups: group b is not pruned for being worse than group a
    assert ran["a"] == ran["b"]
    assert sum(ran["a"]) == sum(ran["b"])  # the same steps (budget) per group
    assert MAX_T in ran["b"] and min(ran["b"]) < MAX_T  # within b, trials still compete
    # the same results under one plain ASHA: the worse group is cut across the board
    plain = ASHAScheduler(time_attr="step", max_t=MAX_T, grace_period=GRACE, reduction_factor=RF)
    flat = steps_by_group(drive(plain, far_apart, ORDER))
    assert sum(flat["b"]) < sum(flat["a"])


def test_a_groups_decisions_do_not_depend_on_the_other_groups_results():
    base = drive(grouped(), {"a": 100.0, "b": 0.0}, ORDER)
    other = drive(grouped(), {"a": 100.0, "b": 1e6}, ORDER)  # group b now far better than a
    assert {k: v for k, v in base.items() if k[0] == "a"} == {k: v for k, v in other.items() if k[0] == "a"}
    only_a = drive(grouped(), {"a": 100.0, "b": 0.0}, [k for k in ORDER if k[0] == "a"])
    assert only_a == {k: v for k, v in base.items() if k[0] == "a"}


def test_groups_of_an_optuna_stage_come_from_the_sampled_grid_point():
    from ray.tune.experiment import Trial

    points = [{"cell": "a", "seed": 0}, {"cell": "b", "seed": 0}]
    s = GroupedASHA(["cell"], time_attr="step", max_t=MAX_T, grace_period=GRACE, reduction_factor=RF, points=points)
    t = Trial("__fake", config={"search": {"point": 1, "values": {"lr": 0.1}}}, stub=True)
    assert s.group_key(t) == '{"cell": "b"}'


def test_the_grid_points_of_a_search_are_visited_in_turn():
    import optuna

    from raygrid.run.tune_stage import _DefineByRun
    from raygrid.space.schema import Distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = [{"cell": "a"}, {"cell": "b"}, {"cell": "c"}]
    space = _DefineByRun(points, {"lr": Distribution(loguniform=(1e-4, 1e-2))})
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    chosen = []
    for _ in range(9):
        t = study.ask()
        out = space(t)
        chosen.append(out["search"]["point"])
        study.tell(t, 1.0 if out["search"]["point"] == 0 else 0.0)  # point 0 looks best: no more samples for it
        assert 1e-4 <= out["search"]["values"]["lr"] <= 1e-2
    assert chosen == [0, 1, 2] * 3


@pytest.mark.slow
def test_a_tiny_tune_run_stops_trials_within_their_group_only(tmp_path):
    import ray
    from ray import tune

    def trainable(config):  # self-contained: Ray's workers cannot import this test module
        from ray import tune

        point = config["spec"]["meta"]["point"]
        offset = {"a": 100.0, "b": 0.0}[point["cell"]]  # as value(): b is worse, a later seed is worse
        for step in (2, 4, 8):
            tune.report({"step": step, "val/m": offset - point["seed"]})

    specs = [{"meta": {"point": {"cell": g, "seed": s}}} for s in SEEDS for g in ("a", "b")]
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"spec": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(metric="val/m", mode="max", scheduler=grouped(), max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="grouped", verbose=0),
        )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    ran: dict[str, list[int]] = {}
    for r in grid:
        point = r.config["spec"]["meta"]["point"]
        ran.setdefault(point["cell"], []).append(int(r.metrics["step"]))
    assert sorted(ran["a"]) == sorted(ran["b"])  # the same budget per group
    assert max(ran["b"]) == MAX_T and min(ran["b"]) < MAX_T  # b's trials competed among themselves
