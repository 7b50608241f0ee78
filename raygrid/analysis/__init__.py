"""The analysis stage: MLflow -> pandas -> the paper's tables, the asymmetry statistics, the report.

- `load`: every MLflow read (`load_sweep` -> `SweepData`: trials compared at one step per stage,
  per-item tables, evaluator records; metric histories, images, judgements on demand).
- `tables`: assessment, optimization, discriminator and transfer tables; outcomes.
- `intervals`: the paired hierarchical bootstrap of the asymmetry (docs/statistics.md).
- `stats`: the asymmetry rows (α/β pairing, settings, the independent panel, per generator) and
  the transfer differences.
- `people`: the human judgements against the analysis (raygrid.judge).
- `figures`: matplotlib figures (PNG bytes).
- `report`: `build_report(...)` -> a self-contained HTML page plus CSV/PNG files.

Submodules are imported on use: `import raygrid.analysis` stays cheap for the sweep runner.
docs/analysis.md describes the tables, the statistics and their units.
"""
