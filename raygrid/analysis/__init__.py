"""The analysis stage: MLflow → pandas → the paper's tables, the asymmetry statistics, the report.

- `raygrid.analysis.sweep_data`: `load_sweep` (read a sweep back from MLflow) → `SweepData`.
- `raygrid.analysis.asymmetry`: the tables and statistics (`assessment_table`,
  `optimization_table`, `asymmetry`, `discriminator_table`, `transfer_table`,
  `transfer_differences`).
- `raygrid.analysis.figures`: matplotlib figures of those tables (PNG bytes).
- `raygrid.analysis.report`: `build_report(experiment, tracking_uri, sweep_run_id, out_dir)` → a
  self-contained HTML page plus CSV/PNG files (also `raygrid report`).

Submodules are imported on use: `import raygrid.analysis` stays cheap for the sweep runner.
"""
