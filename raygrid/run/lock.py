"""One sweep per output folder.

Two sweeps writing into one `--output-dir` would share the MLflow store, the Tune state and the
report: two runs per trial, one sweep's state overwritten by the other, and a later `--resume`
attaching to whichever started last. So a sweep holds `<output dir>/sweep.lock` while it runs:

- the lock is an exclusive `flock` on that file, which the kernel releases when the holding
  process ends however it ends (SIGKILL included): taking over a dead holder's lock is the same
  atomic `flock` call, with no window in which two processes both believe they hold it;
- the file says who holds it (PID, host, start time, command), for the one-line refusal. On
  this host a successful `flock` is proof that the recorded holder is gone (a dead PID, or a
  sweep killed with SIGKILL): the record is overwritten. A record naming another host is
  respected even then, since network file systems do not always share locks between machines
  and raygrid cannot tell whether a process there is alive: it stands until someone deletes it;
- the file is emptied, never deleted, on release: deleting a locked file lets a second process
  lock a new file of the same name while a third still holds the old one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raygrid.errors import PermanentError

LOCK_NAME = "sweep.lock"


class SweepLocked(PermanentError, RuntimeError):
    """Another sweep is writing into this output folder (one line naming it)."""


def _holder(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def describe(record: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    return f"pid {record['pid']} on {record.get('host', '?')} since {since}"


@contextmanager
def sweep_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the folder's lock for the duration of the block; `SweepLocked` if another sweep
    holds it."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _holder(path.read_text()) or {"pid": "?", "host": "?"}
            raise SweepLocked(f"{path.parent}: another sweep writes into this folder ({describe(record)}); "
                              "wait for it, stop it, or use another --output-dir") from None
        record = _holder(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        host = socket.gethostname()
        if record and record.get("host") != host:
            raise SweepLocked(f"{path.parent}: held by a sweep on another machine ({describe(record)}); "
                              f"if it no longer runs, delete {path}")
        mine = {"pid": os.getpid(), "host": host, "started": time.time(), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
