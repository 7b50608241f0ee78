"""The analysis stage: MLflow -> pandas -> the paper's tables, the asymmetry statistics, the report.

- `load`: every MLflow read (`load_sweep` -> `SweepData`: trials compared at one step per stage,
  per-item tables, evaluator records; metric histories, images, judgements on demand).
- `outcomes`: why a trial is not compared ("collapsed at step 40"), counts per cell, overview.
- `tables`: assessment, optimization, discriminator and transfer tables.
- `evidence`, `intervals`: the asymmetry's evidence (missing-data rules) and its paired
  hierarchical bootstrap (docs/statistics.md).
- `stats`: the asymmetry rows (α/β pairing, settings, the independent panel, per generator) and
  the transfer differences.
- `people`: the human judgements against the analysis (raygrid.judge).
- `figures`: matplotlib figures (PNG bytes).
- `report`: `build_report(...)` -> a self-contained HTML page plus CSV/PNG files.

Submodules are imported on use: `import raygrid.analysis` stays cheap for the sweep runner.
docs/analysis.md describes the tables, the statistics and their units.
"""
