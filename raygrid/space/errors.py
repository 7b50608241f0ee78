"""Search-space errors: one line naming the file, the dotted key and what was expected, built
from pydantic's validation errors."""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from raygrid.errors import PermanentError


class SpaceError(PermanentError, ValueError):
    """A search space that cannot be run. `str(err)` is one line: `file: dotted.key: message`."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


def model_fields_of(tp: Any) -> dict[str, Any] | None:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    # Optional[Model]
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg.model_fields
    return None


def message(err: dict[str, Any], root: type[BaseModel] | None) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_at(root, err["loc"][:-1]) if root else None
        return "unknown key" + (f"; expected one of {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required key is missing"
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    return msg


def _allowed_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed at `loc` (for "unknown key" messages); None when it cannot tell."""
    current: Any = root
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = model_fields_of(current)
        if fields is None or part not in fields:
            return None
        current = _unwrap(fields[part].annotation)
        if get_origin(current) is dict and parts:  # dict[name, Model]: skip the key
            parts.pop(0)
            current = _unwrap(get_args(current)[1])
    fields = model_fields_of(current)
    return [f.alias or n for n, f in fields.items()] if fields else None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) is not dict and len(args) == 1 and model_fields_of(args[0]) is not None:
        return args[0]  # Optional[Model]
    return tp


def from_validation(source: str, e: ValidationError, root: type[BaseModel]) -> SpaceError:
    errors = e.errors()
    # A misspelt key also makes the right key "missing": report the misspelling first.
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return SpaceError(source, loc, message(err, root) + more)


def fmt_point(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in point.items()) + "}"
