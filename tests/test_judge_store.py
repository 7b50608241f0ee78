"""The judgements file: append-only, idempotent by id, safe under concurrent writers."""

import multiprocessing as mp
import sqlite3
import threading
import uuid

import pandas as pd
import pytest

from raygrid.judge.store import ConflictError, JudgementStore, read_files


def record(judge="ana", **kw):
    base = {"id": str(uuid.uuid4()), "experiment": "demo", "judge": judge, "sitting": "s1", "seq": 1,
            "crop_id": "c00", "left_run": "r1", "right_run": "r2", "left_item": "A", "right_item": "B",
            "left_step": 60, "right_step": 60, "choice": "left", "elapsed_ms": 1800, "repeat_of": None,
            "source": "logged"}
    base.update(kw)
    return base


def test_append_only_and_idempotent(tmp_path):
    store = JudgementStore(tmp_path / "j.sqlite")
    rec = record()
    assert store.add(rec) is True
    assert store.add(rec) is False  # a retried request: nothing new
    assert store.count() == 1
    with pytest.raises(ConflictError, match=rec["id"]):
        store.add({**rec, "choice": "right"})  # the same id for another answer is refused
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE judgements SET choice = 'right'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM judgements")
    with pytest.raises(sqlite3.IntegrityError):  # the file's own checks, not only the app's
        con.execute("INSERT INTO judgements (id, choice, left_run, right_run) VALUES ('x1', 'maybe', 'a', 'b')")
    con.close()
    assert store.frame().iloc[0]["choice"] == "left"
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="choice"):
        store.add(record(choice="both"))


def test_sittings_and_judges_merge(tmp_path):
    a, b = JudgementStore(tmp_path / "a.sqlite"), JudgementStore(tmp_path / "b.sqlite")
    shared = record("ana")
    for s in (a, b):
        s.add(shared)
    a.add(record("ana", sitting="s2"))
    b.add(record("ben"))
    assert a.merge(b.frame()) == 1  # only ben's judgement is new
    assert a.merge(b.frame()) == 0
    df = a.frame()
    assert len(df) == 3 and sorted(df["judge"]) == ["ana", "ana", "ben"] and df["sitting"].nunique() == 2
    assert len(read_files([tmp_path / "a.sqlite", tmp_path / "b.sqlite"])) == 3
    assert df["left_step"].dtype == "Int64"


def _writer(path, judge, n, barrier):
    store = JudgementStore(path)
    barrier.wait()
    for i in range(n):
        rec = record(judge, seq=i + 1)
        store.add(rec)
        store.add(rec)  # and a retry of each


def test_concurrent_writers_threads_and_processes(tmp_path):
    path = tmp_path / "j.sqlite"
    JudgementStore(path)
    n = 40
    ctx = mp.get_context("spawn")
    pbarrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(path), f"proc{k}", n, pbarrier)) for k in range(2)]
    for p in procs:
        p.start()
    tbarrier = threading.Barrier(3)
    threads = [threading.Thread(target=_writer, args=(path, f"thread{k}", n, tbarrier)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = JudgementStore(path)
    assert store.integrity() == "ok"
    df = store.frame()
    assert df["id"].is_unique
    counts = df.groupby("judge").size()
    assert counts.to_dict() == {**{f"proc{k}": n for k in range(2)}, **{f"thread{k}": n for k in range(3)}}
    assert pd.Series(df.groupby("judge")["seq"].apply(lambda s: sorted(s) == list(range(1, n + 1)))).all()
