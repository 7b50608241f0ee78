"""Real MLflow sqlite stores for tests, without paying MLflow's schema migrations for each.

A new sqlite store costs about 0.8 s of MLflow creating and migrating its tables, and the
default lane opens a few dozen. `new_store(path)` copies an empty store that this process made
once with the same MLflow (the same schema a new store gets); MLflow then opens it as it opens
any existing store. Tests of what MLflow does with a missing store keep using a plain path.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def _template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        from mlflow.tracking import MlflowClient

        path = Path(tempfile.mkdtemp(prefix="raygrid-mlflow-template-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the tables
        _TEMPLATE = path
    return _TEMPLATE


def new_store(path: Path) -> str:
    """The sqlite URI of an MLflow store at `path`: an empty one is put there unless one is."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), path)
    return f"sqlite:///{path}"


def sweep_store(root: Path, name: str = "demo") -> tuple[str, str, str]:
    """(uri, experiment id, sweep run id): a store under `root` with the experiment and the
    sweep's parent run, opened as the runner opens them (raygrid.run.tracking)."""
    from raygrid.run import tracking

    uri = new_store(Path(root) / "mlflow.db")
    exp = tracking.ensure_experiment(uri, name, str(Path(root) / "art"))
    parent, resumed = tracking.start_sweep_run(uri, exp, name, str(Path(root) / "ray"), resume=False)
    assert not resumed
    return uri, exp, parent
