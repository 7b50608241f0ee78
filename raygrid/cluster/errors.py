"""A cluster-file problem as one line naming the file and the field, and the helpers that build
such lines."""

from __future__ import annotations

import difflib
import os
from typing import Any, NoReturn

from raygrid.errors import PermanentError

PLACEHOLDER = "CHANGEME"
TRAIN_DRIVER = "TRAIN_DRIVER"  # the custom resource the head advertises for trial drivers


class ClusterConfigError(PermanentError, ValueError):
    """A cluster file problem as one line: `<file>: <field>: <what is wrong; what was expected>`."""

    def __init__(self, file: str | os.PathLike[str], field: str, message: str):
        self.file, self.field = str(file), field
        self.message = " ".join(str(message).split())  # one line, whatever Ray/YAML said
        super().__init__(f"{self.file}: {field}: {self.message}")


def fail(path, field: str, message: str) -> NoReturn:
    raise ClusterConfigError(path, field, message)


def field_path(*parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def kind_of(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
