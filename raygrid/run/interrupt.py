"""Ctrl-C and SIGTERM: the first stops the sweep cleanly, a second one exits at once.

Tune's `Tuner.fit` has a graceful stop of its own: on SIGINT (or SIGUSR1) it stops starting
trials, writes its experiment state one last time (the running trials are saved as unfinished,
so `--resume` continues them, each from its last reported checkpoint), stops the trial actors
and returns normally, without an error. It does not react to SIGTERM, which is what `ray job
stop` sends, and after that it is up to the caller to notice that the sweep did not finish.

So the sweep installs its own handler for both signals (and tells Tune to leave SIGINT alone,
`TUNE_DISABLE_SIGINT_HANDLER=1`). The first signal is recorded here and handed to Tune's handler
through SIGUSR1's, which Tune installs for the duration of `fit`; the runner then starts no
further stage, ends the MLflow runs as KILLED and exits with 128 + the signal number (130 for
SIGINT, 143 for SIGTERM). A second signal exits at once (`os._exit`), leaving the runs as they
are.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []  # the first signal of this process (module state: callbacks read it)


def received() -> int | None:
    """The signal that interrupted this sweep, if one did."""
    return _received[0] if _received else None


def exit_code(signum: int) -> int:
    return 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupt:
    """Installs the handlers for a sweep (main thread only; elsewhere it does nothing) and
    restores the previous ones on exit. `say(line)` reaches the person at the terminal."""

    def __init__(self, say: Callable[[str], None], resume_hint: str = ""):
        self.say, self.resume_hint = say, resume_hint
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupt:
        _received.clear()
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def signum(self) -> int | None:
        return received()

    def _handle(self, signum: int, frame) -> None:
        name = signal_name(signum)
        if _received:
            self.say(f"{name} again: exiting now; MLflow runs of running trials stay RUNNING. "
                     f"{self.resume_hint}".rstrip())
            os._exit(exit_code(_received[0]))
        _received.append(signum)
        self.say(f"{name}: stopping the sweep (no new trials or stages; running trials resume from their last "
                 f"checkpoint with --resume). Press Ctrl-C again to exit at once.")
        tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune's, while Tuner.fit runs
        if callable(tune_handler):
            tune_handler(signal.SIGUSR1, frame)
