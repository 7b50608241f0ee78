"""Running a sweep: Ray Tune per stage, Ray Train per trial, MLflow for everything.

  options     RunOptions: where outputs go and which cluster runs it
  runner      execute / run_sweep: preflight, stages in order, summary, report
  preflight   weights, named files and datasets every trial needs, checked before anything starts
  lineage     the source runs of trials that start from another stage's runs (typed records)
  tune_stage  one stage on Ray Tune: a trial driver per trial that runs a TorchTrainer
  tracking    the MLflow writer: experiment, sweep run, one child run per trial (a Tune callback)
  telemetry   the metrics raygrid exports through Ray's metrics system
  summary     per-stage counts and the closing lines of a sweep
  failures    a failed trial described (the original error, file and line); what is retried
  interrupt   Ctrl-C / SIGTERM: the first stops the sweep cleanly, a second exits at once
  lock        one sweep per output folder
  console     Ray's output into a log file; raygrid's lines and the summary on the terminal
  progress    one stage's progress line (a Tune callback)
  reaper      the watchdog that kills what a local Ray instance leaves behind a dead sweep

Importing the package imports none of them: Ray, MLflow and torch load when a sweep runs.
"""
