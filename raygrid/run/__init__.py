"""Running a sweep: Ray Tune per stage, Ray Train per trial, MLflow for everything.

  options     RunOptions: where outputs go and which cluster runs it
  runner      execute / run_sweep: preflight, stages in order, summary, report
  preflight   weights, named files and datasets every trial needs, checked before anything starts
  lineage     the source runs of trials that start from another stage's runs (typed records)
  tune_stage  one stage on Ray Tune: a trial driver per trial that runs a TorchTrainer
  tracking    the MLflow writer: experiment, sweep run, one child run per trial (a Tune callback)
  telemetry   the metrics raygrid exports through Ray's metrics system
  summary     per-stage counts and the closing lines of a sweep

Importing the package imports none of them: Ray, MLflow and torch load when a sweep runs.
"""
