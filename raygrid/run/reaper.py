"""The Ray processes of a local sweep do not outlive it.

`ray.init()` without an address starts a local Ray instance whose processes are the sweep's
descendants. Ray ties the GCS and the raylet to the driver (Linux parent-death signal), but not
the raylet's own children: after the driver is killed with SIGKILL (or exits at once on a second
Ctrl-C) `ray::DashboardAgent` and `ray::RuntimeEnvAgent` stay behind, re-parented to init, and
keep their ports and memory until someone finds them.

`start()` launches a small watchdog process (`python -m raygrid.run.reaper`) that records the
driver's Ray descendants every `POLL_S` seconds and waits on a pipe whose only writer is the driver:
when the driver ends, however it ends, the pipe closes and the watchdog terminates every recorded
process that is still alive (checked by PID and start time, so a reused PID is never hit), then
exits. It ignores SIGINT, so the Ctrl-C that reaches the terminal's whole process group does not
take it down first. Only for a Ray instance the sweep started itself; a cluster joined with
`--address` is left alone. After a normal `ray.shutdown()` the sweep stops the watchdog (`stop`).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

POLL_S = 2.0
GRACE_S = 3.0


def start() -> subprocess.Popen:
    """The watchdog of this process's descendants (keep the returned object alive)."""
    return subprocess.Popen([sys.executable, "-m", "raygrid.run.reaper", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(watchdog: subprocess.Popen | None) -> None:
    """The sweep ended normally: the watchdog goes without reaping anything."""
    if watchdog is not None and watchdog.poll() is None:
        watchdog.terminate()
        watchdog.wait(timeout=10)


def _descendants(pid: int, me: int) -> dict[int, float]:
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        try:
            if child.pid != me and _is_ray(child.cmdline()):
                found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _is_ray(cmdline: list[str]) -> bool:
    """Ray's processes: its binaries and scripts live in the ray package; its workers and agents
    rename themselves `ray::...`. Anything else the driver started is not the watchdog's."""
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any("/site-packages/ray/" in a or
                                                                     a.startswith("ray::") for a in cmdline))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(recorded: dict[int, float]) -> list[int]:
    """Terminate (then kill) the recorded processes that still run; returns their PIDs."""
    import psutil

    alive = []
    for pid, created in recorded.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01:
                alive.append(proc)
        except psutil.Error:
            continue
    for proc in alive:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=GRACE_S)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return [p.pid for p in alive]


def main(driver: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    recorded: dict[int, float] = {}
    stdin = sys.stdin.fileno()
    while True:
        recorded.update(_descendants(driver, me))
        recorded = {pid: created for pid, created in recorded.items() if _exists(pid)}  # workers come and go
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready and not os.read(stdin, 4096):  # EOF: the driver is gone
            break
    time.sleep(0.5)  # let Ray's own shutdown finish what it can
    reap(recorded)


if __name__ == "__main__":
    main(int(sys.argv[1]))
