"""`python -m raygrid <command>`: the same as the `raygrid` console script (raygrid.cli)."""

import sys

from raygrid.cli import main

sys.exit(main())
