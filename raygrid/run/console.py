"""What a person at the terminal sees during a sweep: a few lines, not Ray's output.

By default (`Console(log_file, verbose=False)`) the process's stdout and stderr — file
descriptors 1 and 2, so Ray's worker output forwarded to the driver, Tune's status tables, the
C++ core worker's messages, library warnings — go to `<output dir>/logs/sweep-<time>.log`, and
raygrid writes to the terminal through a copy of the original descriptors: the sweep's own
lines (`say`), one live progress line per stage (`live`, drawn by raygrid.run.progress), each
failed trial's message once, and the summary. `-v` (verbose) leaves the descriptors alone: Ray's
and Tune's output come back, and raygrid's lines are printed among them.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO


class Console:
    """A context manager: redirects fds 1/2 into the log file (unless verbose) while active."""

    def __init__(self, log_dir: str | Path | None = None, verbose: bool = True):
        self.verbose = verbose or log_dir is None
        self.log_file: Path | None = None
        if log_dir is not None and not self.verbose:
            self.log_file = Path(log_dir) / f"sweep-{datetime.now():%Y%m%d-%H%M%S}.log"
        self._saved: tuple[int, int] | None = None
        self._term: TextIO = sys.stdout
        self._live = ""  # the progress line currently drawn (TTY)
        self.tty = False

    def __enter__(self) -> Console:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = (os.dup(1), os.dup(2))
            self._term = os.fdopen(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
            log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
        else:
            self._term = sys.stdout
        self.tty = self._term.isatty()
        return self

    def __exit__(self, *exc) -> None:
        self.end_live()
        if self._saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = None
            self._term.close()
            self._term = sys.stdout

    # -- output -------------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """A line for the person (also copied into the log file)."""
        if self.tty and self._live:
            self._term.write("\r\x1b[2K")
        self._term.write(line + "\n")
        if self.tty and self._live:
            self._term.write(self._live)
        self._term.flush()
        if self.log_file is not None:
            print(line, flush=True)  # fd 1 is the log file

    def live(self, line: str) -> None:
        """The stage's progress line: redrawn in place on a terminal, printed otherwise."""
        if not self.tty:
            self.say(line)
            return
        self._live = line
        self._term.write("\r\x1b[2K" + line)
        self._term.flush()

    def end_live(self) -> None:
        if self.tty and self._live:
            self._term.write("\n")
            self._term.flush()
            if self.log_file is not None:
                print(self._live, flush=True)
        self._live = ""
