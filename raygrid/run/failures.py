"""How a failed trial is described, and whether it is retried.

A train loop's exception reaches the Tune driver inside Ray Train's `TrainingFailedError`: a
`WorkerGroupError` holds, per rank, the original exception and its traceback text (Train's
`UserExceptionWithTraceback`), a `ControllerError` the controller's exception. `describe` digs
the original out and names where it was raised: the innermost frame, and the last raygrid frame
when the innermost is in a library ("torch/nn/functional.py:5 in conv2d, from
raygrid/nets/x.py:45 in forward"); that is the line MLflow's error tag, the summary and the report
end with, instead of Ray's wrapper.

Retries: Tune's `FailureConfig` retries every error alike, so the trial driver decides. A
`raygrid.errors.PermanentError` (bad data, bad configuration, a deterministic divergence) ends the
trial at once: the driver reports the failure under `RESULT_KEY` and returns, so Tune counts one
attempt and the tracking callback marks the run failed. Anything else (a crash, a lost node, an
out-of-memory kill) is raised again as `TrialCrashed`, which Tune retries up to the stage's
`max_failures`.
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raygrid.errors import TRACEBACK_ATTR, PermanentError, Picklable

# The key of the last result of a trial that failed for good (a JSON `Failure`).
RESULT_KEY = "raygrid/failure"

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)', re.M)
_PACKAGE = Path(__file__).resolve().parents[1]  # .../raygrid


@dataclass(frozen=True)
class Failure:
    """One trial failure, as the summary, the console and MLflow show it."""

    kind: str  # "permanent" (never retried) or "crash" (retried up to max_failures)
    type: str  # the exception's class name
    message: str
    where: str  # "raygrid/data/images.py:77 in read_rgb" (see module docstring); "" when unknown
    traceback: str = ""  # the original traceback text (the worker's, not Ray's wrapper)

    @property
    def retryable(self) -> bool:
        return self.kind != "permanent"

    def line(self) -> str:
        """One line: `<Type>: <first line of the message> (<where>)`."""
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.type}: {first}" + (f" ({self.where})" if self.where else "")

    def text(self, limit: int = 4000) -> str:
        """The traceback's tail, then `line()` last (readers take the last line)."""
        tail = self.traceback.strip()
        budget = limit - len(self.line()) - 1
        if len(tail) > budget:
            tail = "..." + tail[-max(budget - 3, 0):]
        return f"{tail}\n{self.line()}" if tail else self.line()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Failure:
        return cls(**json.loads(text))


class TrialCrashed(Picklable, RuntimeError):
    """What a trial driver raises for a retryable failure: Tune retries it, and the tracking
    callback reads `failure` back from Tune's pickled error."""

    def __init__(self, failure: Failure):
        self.failure = failure
        super().__init__(failure.text())


def _relative(path: str) -> str:
    """raygrid's own files relative to the package's parent ("raygrid/data/images.py"); library
    files from their site-packages folder on ("torch/nn/functional.py")."""
    p = Path(path)
    try:
        return p.resolve().relative_to(_PACKAGE.parent).as_posix()
    except (ValueError, OSError):
        pass
    parts = p.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return Path(*parts[parts.index(marker) + 1:]).as_posix()
    if "raygrid" in parts[:-1]:  # raygrid's files on another machine (a worker's checkout)
        last = len(parts) - 1 - parts[:-1][::-1].index("raygrid") - 1
        return Path(*parts[last:]).as_posix()
    return path


def where(tb_text: str) -> str:
    """The innermost frame of a traceback text, plus the last raygrid frame if the innermost is
    elsewhere; frames of the final exception only (a chained cause comes first in the text)."""
    frames = list(_FRAME.finditer(tb_text))
    if not frames:
        return ""

    def fmt(m: re.Match) -> str:
        return f"{_relative(m['file'])}:{m['line']} in {m['func']}"

    last = frames[-1]
    shown = fmt(last)
    if not _relative(last["file"]).startswith("raygrid/"):
        # search back to the start of the final exception's traceback
        start = tb_text.rfind("Traceback (most recent call last)", 0, last.start())
        ours = [m for m in frames if m.start() > start and _relative(m["file"]).startswith("raygrid/")]
        if ours:
            shown += f", from {fmt(ours[-1])}"
    return shown


def _original(exc: BaseException) -> tuple[BaseException, str]:
    """The exception a train loop raised and its traceback text, from whatever wraps it."""
    seen = 0
    while seen < 10:
        seen += 1
        failures = getattr(exc, "worker_failures", None)  # ray.train.WorkerGroupError
        if failures:
            exc = failures[min(failures)]
            continue
        controller = getattr(exc, "controller_failure", None)  # ray.train.ControllerError
        if controller is not None:
            exc = controller
            continue
        base = getattr(exc, "_base_exc", None)  # Train's UserExceptionWithTraceback
        if base is not None:
            carried = getattr(base, TRACEBACK_ATTR, None)  # raygrid's own: the text it was raised with
            train_tb = getattr(exc, "_traceback_str", "")
            return base, carried if carried else (train_tb if _FRAME.search(train_tb or "") else _format(base) or train_tb)
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, BaseException) and cause is not exc:
            exc = cause
            continue
        break
    return exc, _format(exc)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def describe(exc: BaseException) -> Failure:
    """The `Failure` behind a trainer's or a trial's exception (see the module docstring)."""
    if isinstance(exc, TrialCrashed):
        return exc.failure
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TrialCrashed):
        return cause.failure
    original, tb = _original(exc)
    tb = getattr(original, TRACEBACK_ATTR, None) or tb
    if isinstance(original, TrialCrashed):
        return original.failure
    kind = "permanent" if isinstance(original, PermanentError) else "crash"
    return Failure(kind, type(original).__name__, str(original), where(tb), tb)


def from_result(result: dict[str, Any] | None) -> Failure | None:
    """The failure a trial driver reported as its last result, if it did."""
    text = (result or {}).get(RESULT_KEY)
    return Failure.from_json(text) if isinstance(text, str) else None


def from_trial(trial) -> Failure | None:
    """The failure of a Tune trial: the one its driver reported, else its pickled error, else
    the tail of its error file."""
    reported = from_result(getattr(trial, "last_result", None))
    if reported is not None:
        return reported
    pickled = getattr(trial, "pickled_error_file", None)
    if pickled and Path(pickled).exists():
        import cloudpickle

        try:
            with open(pickled, "rb") as f:
                return describe(cloudpickle.load(f))
        except Exception:  # an error that does not unpickle: fall back to the text
            pass
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).exists():
        text = Path(error_file).read_text()[-4000:]
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else ""
        # the text's last line is Python's `Type: message` (a dotted type from a library)
        typ, sep, message = last.partition(": ")
        if not (sep and re.fullmatch(r"[A-Za-z_][\w.]*", typ)):
            typ, message = "Error", last
        return Failure("crash", typ.rsplit(".", 1)[-1], message, where(text), text)
    return None
