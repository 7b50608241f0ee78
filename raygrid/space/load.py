"""Loading a search space: a shipped name or a YAML path -> a validated, expanded `Sweep`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raygrid.space.errors import SpaceError, from_validation
from raygrid.space.expand import Sweep, check_lineage, expand_stage
from raygrid.space.schema import STAGE_ORDER, SweepSpec

# The spaces shipped as package data (pyproject's package-data).
SPACES_DIR = resources.files("raygrid") / "search_spaces"


def known_spaces() -> list[str]:
    """Names of the spaces that ship with raygrid."""
    return sorted(p.name[: -len(".yaml")] for p in SPACES_DIR.iterdir() if p.name.endswith(".yaml"))


def resolve_space_path(space: str) -> Path:
    """A bare name is a space shipped in the package (raygrid/search_spaces/NAME.yaml, found with
    importlib.resources, so an installed raygrid finds it too); anything with a suffix or a slash
    is a path."""
    if space.endswith((".yaml", ".yml")) or "/" in space or "\\" in space:
        path = Path(space).expanduser()
    else:
        path = Path(str(SPACES_DIR / f"{space}.yaml"))
        if not path.exists():
            raise SpaceError(str(path), "", f"no search space named {space!r}; known: {', '.join(known_spaces())}")
    if not path.exists():
        raise SpaceError(str(path), "", "file not found")
    return path


def load_space(space: str | Path) -> Sweep:
    path = resolve_space_path(str(space))
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_error(str(path), text, e) from None
    return parse_space(raw, source=str(path))


def yaml_error(source: str, text: str, e: yaml.YAMLError) -> SpaceError:
    """One line at the line to fix. PyYAML marks where it noticed the problem; for something
    left open (a `[`, `{` or quote) that is the line after the mistake, so the line where the
    unclosed thing starts (its context mark) is the one named. Lines are 1-based and never past
    the file's last line (an unclosed quote is noticed at the end of the stream)."""
    last = max(len(text.splitlines()), 1)
    problem, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    opened = getattr(e, "context", "") or ""
    if context is not None and problem is not None and context.line < problem.line and (
            "flow" in opened or "quoted" in opened):
        thing = opened.removeprefix("while parsing a ").removeprefix("while scanning a ")
        return SpaceError(source, f"line {min(context.line + 1, last)}",
                          f"not valid YAML: this {thing} is not closed ({what} at line {min(problem.line + 1, last)})")
    where = f"line {min(problem.line + 1, last)}" if problem is not None else ""
    return SpaceError(source, where, f"not valid YAML: {what}")


def parse_space(raw: Any, source: str = "<space>") -> Sweep:
    if not isinstance(raw, dict):
        raise SpaceError(source, "", f"expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise from_validation(source, e, SweepSpec) from None
    stages = {}
    for name in STAGE_ORDER:
        if name in spec.stages:
            stages[name] = expand_stage(source, name, spec.stages[name])
    sweep = Sweep(spec=spec, source=source, stages=stages)
    check_lineage(sweep)
    return sweep
