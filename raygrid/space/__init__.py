"""Search spaces: YAML -> validated pydantic models -> the list of trials of each stage.

  schema  the YAML's strict models (SweepSpec, StageSpec, conditions, scheduler, search, resources)
  expand  grid expansion into typed trials (Trial, Stage, Sweep), Optuna samples on grid points
  errors  SpaceError: one line naming the file, the dotted key and what was expected
  load    load_space(name or path), parse_space(dict)
"""

from raygrid.space.errors import SpaceError
from raygrid.space.expand import Stage, Sweep, Trial
from raygrid.space.load import SPACES_DIR, known_spaces, load_space, parse_space, resolve_space_path
from raygrid.space.schema import STAGE_ORDER

__all__ = ["SPACES_DIR", "STAGE_ORDER", "SpaceError", "Stage", "Sweep", "Trial", "known_spaces", "load_space",
           "parse_space", "resolve_space_path"]
