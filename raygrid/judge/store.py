"""The judgements file: an append-only SQLite table.

- One INSERT per judgement, keyed by the client-generated id (PRIMARY KEY): a request retried
  after a lost reply inserts nothing the second time (`add` says it was a duplicate), and a
  different judgement under a used id is refused.
- Append-only is enforced by the file itself: triggers abort any UPDATE or DELETE.
- WAL journal, a connection per call and a busy timeout: several app processes and threads
  (several judges) write one file at once without corrupting it or losing a row.
- `merge` adds judgements from elsewhere (another judge's file, the MLflow mirror) with the
  same keyed insert, so sittings and judges merge and re-merging changes nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from raygrid.judge.schema import CHOICES, COLUMNS, empty_frame

TABLE = "judgements"
FILE_NAME = "judgements.sqlite"
BUSY_TIMEOUT_S = 30.0

_SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    + ", ".join(f"{c} {t}" + (" PRIMARY KEY" if c == "id" else "") for c, (t, _) in COLUMNS.items())
    + f", CHECK (choice IN ({', '.join(repr(c) for c in CHOICES)}))"
    + ", CHECK (left_run <> right_run))",
    (f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE} "
     "BEGIN SELECT RAISE(ABORT, 'judgements are append-only'); END"),
    (f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
     "BEGIN SELECT RAISE(ABORT, 'judgements are append-only'); END"),
    f"CREATE INDEX IF NOT EXISTS {TABLE}_judge ON {TABLE} (experiment, judge)",
]


class ConflictError(ValueError):
    """A judgement id already stored with different content."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JudgementStore:
    """The SQLite file of one experiment's judgements (path: <dir>/judgements.sqlite)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            for stmt in _SCHEMA:
                con.execute(stmt)

    @contextlib.contextmanager
    def _connect(self):
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA synchronous=NORMAL")  # durable at each commit in WAL mode up to a power cut
            yield con
        finally:
            con.close()

    def add(self, record: Mapping[str, Any]) -> bool:
        """Store one judgement; True if new, False if this exact judgement was already stored.
        Raises ConflictError when the id is taken by a different judgement."""
        row = {c: record.get(c) for c in COLUMNS}
        if not row["id"]:
            raise ValueError("a judgement needs an id")
        if row["choice"] not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {row['choice']!r}")
        row["created_at"] = row["created_at"] or now_iso()
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        with self._connect() as con:
            cur = con.execute(f"INSERT INTO {TABLE} ({cols}) VALUES ({marks}) ON CONFLICT(id) DO NOTHING",
                              [row[c] for c in COLUMNS])
            if cur.rowcount == 1:
                return True
            stored = con.execute(f"SELECT {cols} FROM {TABLE} WHERE id = ?", (row["id"],)).fetchone()
        same = all(stored[i] == row[c] for i, c in enumerate(COLUMNS) if c != "created_at")
        if not same:
            raise ConflictError(f"judgement id {row['id']} is already stored with different content")
        return False

    def merge(self, frame: pd.DataFrame) -> int:
        """Insert the judgements of `frame` that are not here yet (by id); returns how many."""
        if frame.empty:
            return 0
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        rows = [[_plain(r.get(c)) for c in COLUMNS] for r in frame.to_dict("records")]
        with self._connect() as con:
            before = con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
            con.execute("BEGIN IMMEDIATE")
            con.executemany(f"INSERT INTO {TABLE} ({cols}) VALUES ({marks}) ON CONFLICT(id) DO NOTHING", rows)
            con.execute("COMMIT")
            after = con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
        return int(after - before)

    def frame(self, experiment: str | None = None, judge: str | None = None) -> pd.DataFrame:
        """The judgements as a DataFrame (schema.COLUMNS), in insertion order."""
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?"); args.append(experiment)
        if judge is not None:
            where.append("judge = ?"); args.append(judge)
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY rowid"
        with self._connect() as con:
            rows = con.execute(sql, args).fetchall()
        if not rows:
            return empty_frame()
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        for c, (t, _) in COLUMNS.items():
            if t == "INTEGER":
                df[c] = df[c].astype("Int64")
        return df

    def count(self, experiment: str | None = None, judge: str | None = None) -> int:
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?"); args.append(experiment)
        if judge is not None:
            where.append("judge = ?"); args.append(judge)
        with self._connect() as con:
            return int(con.execute(f"SELECT COUNT(*) FROM {TABLE}" + (f" WHERE {' AND '.join(where)}" if where else ""),
                                   args).fetchone()[0])

    def integrity(self) -> str:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0]


def _plain(value: Any) -> Any:
    """pandas/numpy scalars and missing values as SQLite takes them."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value


def read_files(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Judgements of several files (judges' own copies), merged by id."""
    frames = [JudgementStore(p).frame() for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    return pd.concat(frames, ignore_index=True).drop_duplicates("id", keep="first").reset_index(drop=True)
