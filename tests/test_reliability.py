"""Reliability without Ray: exceptions that cross process boundaries, how a failure is described
and whether it is retried, the output folder's lock, the signal handler, the console and the
summary of an interrupted sweep. (The same paths with Ray: test_reliability_ray.py.)"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raygrid.data.images import (
    DatasetRootError,
    ImageDecodeError,
    ImageSizeError,
    read_rgb,
    write_rgb,
)
from raygrid.data.iqa.parsing import BenchmarkFormatError, MissingImageError
from raygrid.errors import PermanentError, Picklable
from raygrid.run import failures
from raygrid.space.errors import SpaceError

REPO = Path(__file__).resolve().parents[1]

# Modules whose exceptions a trial (or the runner) can raise.
MODULES = ["raygrid.data.images", "raygrid.data.iqa.parsing", "raygrid.data.sr_store", "raygrid.metrics.panel",
           "raygrid.nets.generators", "raygrid.run.failures", "raygrid.run.lock", "raygrid.run.runner",
           "raygrid.space.errors", "raygrid.stages.loop", "raygrid.weights", "raygrid.cluster.errors"]


def instances() -> list[BaseException]:
    from raygrid.cluster.errors import ClusterConfigError
    from raygrid.data.sr_store import StoreError
    from raygrid.metrics.panel import PyiqaMissingError
    from raygrid.nets.generators import CheckpointMismatchError
    from raygrid.run.lock import SweepLocked
    from raygrid.run.runner import SweepStopped
    from raygrid.weights import MissingWeightsError, WeightsHashError

    return [
        ImageDecodeError("/d/x.png", "OSError: image file is truncated", listed_at="/d/labels.csv:3"),
        ImageSizeError("HR image /d/a.png is 40x40, smaller than hr_crop=48"),
        DatasetRootError("SR training set: no images in /d"),
        BenchmarkFormatError("/d/labels.csv", "line 3", "column 'mos' is 'abc'", "a number"),
        MissingImageError("/d/labels.csv", "line 4", "names image 'b.png', which is not on disk", "the image"),
        SpaceError("space.yaml", "stages.optimize.axes", "unknown key"),
        StoreError("SR store /d.srstore is stale"),
        MissingWeightsError("weights 'x' for backbone 'vgg16': file '/w/x.pth' does not exist"),
        WeightsHashError("sha256 mismatch for /w/x.pth"),
        CheckpointMismatchError("/w/g.pth: no key 'params_ema'"),
        PyiqaMissingError("pyiqa is not installed"),
        ClusterConfigError("cluster.yaml", "provider.region", "'us-west-9' is not a region"),
        SweepLocked("/out: another sweep writes into this folder (pid 1 on h since ...)"),
        SweepStopped("no GPU node came up in 30 min: check EC2 quota and the autoscaler log"),
        failures.TrialCrashed(failures.Failure("crash", "RuntimeError", "boom", "raygrid/x.py:1 in f", "tb")),
    ]


@pytest.mark.parametrize("exc", instances(), ids=lambda e: type(e).__name__)
def test_every_raygrid_exception_pickles_with_its_message_and_fields(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args
    assert back.__dict__ == exc.__dict__
    for base in type(exc).__mro__[1:]:
        if base.__module__ == "builtins":
            assert isinstance(back, base)


def test_every_exception_class_with_its_own_init_is_picklable():
    """A new exception class with a custom __init__ must inherit Picklable, or Ray loses it."""
    for name in MODULES:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name \
                    and "__init__" in cls.__dict__:
                assert issubclass(cls, Picklable), f"{name}.{cls.__name__}"


def test_data_and_config_errors_are_permanent_crashes_are_not():
    for exc in instances()[:-1]:
        assert isinstance(exc, PermanentError), type(exc).__name__
    assert not isinstance(RuntimeError("CUDA error"), PermanentError)


# ---------------------------------------------------------------------------------------------
# Failures: the original error, where it was raised, retryable or not
# ---------------------------------------------------------------------------------------------


def truncated_png(path: Path) -> Path:
    import numpy as np

    write_rgb(path, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header is intact, the pixel data is cut off
    return path


def worker_group_error(exc: BaseException):
    """Ray Train's wrapping of a train loop's exception, as the trial driver receives it."""
    from ray.train import WorkerGroupError
    from ray.train.v2._internal.util import construct_user_exception_with_traceback

    try:
        raise exc
    except BaseException as e:
        wrapped = construct_user_exception_with_traceback(e)
    return pickle.loads(pickle.dumps(WorkerGroupError("rank 0 failed", {0: wrapped})))


def test_a_corrupt_image_in_a_trial_is_permanent_and_names_the_file_and_the_raising_line(tmp_path):
    bad = truncated_png(tmp_path / "bad.png")
    try:
        read_rgb(bad, listed_at=f"{tmp_path}/labels.csv:3")
    except ImageDecodeError as e:
        error = worker_group_error(e)
    f = failures.describe(error)
    assert f.kind == "permanent" and not f.retryable and f.type == "ImageDecodeError"
    assert str(bad) in f.message and "labels.csv:3" in f.message
    assert f.where.startswith("raygrid/data/images.py:") and f.where.endswith(" in read_rgb")
    assert f.text().splitlines()[-1] == f.line()  # the report reads the last line
    assert "Traceback" in f.text() and "ray/train" not in f.line()
    assert failures.Failure.from_json(f.to_json()) == f


def test_a_crash_in_a_library_is_retryable_and_names_the_raygrid_caller():
    import torch

    def conv_with_wrong_shape():
        return torch.nn.functional.conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(8, 5, 3, 3))

    try:
        conv_with_wrong_shape()
    except RuntimeError as e:
        error = worker_group_error(e)
    f = failures.describe(error)
    assert f.kind == "crash" and f.retryable and f.type == "RuntimeError"
    assert "test_reliability.py" in f.where and "conv_with_wrong_shape" in f.where


def test_a_retried_crash_keeps_its_failure_through_tunes_pickle():
    crash = failures.TrialCrashed(failures.Failure("crash", "OSError", "disk full", "raygrid/x.py:3 in save", "tb"))
    back = pickle.loads(pickle.dumps(crash))
    assert failures.describe(back).line() == "OSError: disk full (raygrid/x.py:3 in save)"
    assert str(back).endswith("OSError: disk full (raygrid/x.py:3 in save)")


def test_failure_reported_as_a_result_is_found_again():
    f = failures.Failure("permanent", "BenchmarkFormatError", "/d/l.csv, line 3: bad", "raygrid/data/iqa/parsing.py:9 in _number")
    assert failures.from_result({failures.RESULT_KEY: f.to_json(), "training_iteration": 1}) == f
    assert failures.from_result({"step": 3}) is None and failures.from_result(None) is None


# ---------------------------------------------------------------------------------------------
# One sweep per output folder
# ---------------------------------------------------------------------------------------------


HOLD = textwrap.dedent("""
    import sys, time
    from raygrid.run.lock import sweep_lock
    with sweep_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_sweep_into_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    from raygrid.run.lock import LOCK_NAME, SweepLocked, sweep_lock

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLocked) as e:
            with sweep_lock(tmp_path):
                pass
        line = str(e.value)
        assert len(line.splitlines()) == 1
        assert f"pid {holder.pid} on {socket.gethostname()}" in line and str(tmp_path) in line
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing (SIGKILL): its record is still there, and is taken over
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    with sweep_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: emptied, not deleted


def test_a_lock_recorded_by_another_host_is_respected(tmp_path):
    from raygrid.run.lock import LOCK_NAME, SweepLocked, sweep_lock

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "other-head", "started": 0}))
    with pytest.raises(SweepLocked, match="on other-head .*delete"):
        with sweep_lock(tmp_path):
            pass


def test_the_cli_refuses_a_locked_output_dir_with_one_line_before_ray_starts(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "raygrid.sweep", "--output-dir", str(tmp_path / "out"),
                               "--no-report"], capture_output=True, text=True, timeout=120, cwd=REPO)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"pid {holder.pid}" in err[0], proc.stderr
    assert not (tmp_path / "out" / "mlflow.db").exists()  # nothing was written


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


SIGNALLED = textwrap.dedent("""
    import os, signal, sys, time
    from raygrid.run import interrupt
    seen = []
    with interrupt.Interrupt(lambda line: print(line, flush=True), "resume with: X --resume"):
        signal.signal(signal.SIGUSR1, lambda s, f: seen.append("tune"))  # as Tuner.fit installs it
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(0.2)
        print("after first:", interrupt.received(), seen, flush=True)
        if len(sys.argv) > 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            print("not reached", flush=True)
    sys.exit(interrupt.exit_code(interrupt.received()))
""")


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_the_first_signal_stops_gracefully_through_tunes_handler(sig, code):
    proc = subprocess.run([sys.executable, "-c", SIGNALLED, sig], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == code, proc.stderr
    assert f"{sig}: stopping the sweep" in proc.stdout
    assert f"after first: {getattr(signal, sig).value} ['tune']" in proc.stdout


def test_a_second_signal_exits_at_once():
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", SIGNALLED, "SIGTERM", "again"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 143 and "not reached" not in proc.stdout
    assert "SIGINT again: exiting now" in proc.stdout and "resume with: X --resume" in proc.stdout
    assert time.time() - t0 < 30


def test_resume_command_repeats_the_invocation_with_resume():
    from raygrid.cli import resume_command

    assert resume_command([str(REPO / "raygrid" / "sweep.py"), "--space", "my space.yaml"]) == \
        "python -m raygrid.sweep --space 'my space.yaml' --resume"
    assert resume_command(["/usr/bin/raygrid", "sweep", "--resume"]) == "raygrid sweep --resume"


def test_bad_run_options_are_one_line_naming_the_flag():
    for value in ("0", "-1"):
        proc = subprocess.run([sys.executable, "-m", "raygrid.sweep", "--max-concurrent", value], capture_output=True,
                              text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"error: --max-concurrent: {int(value)!r}: expected greater than or equal to 1"
