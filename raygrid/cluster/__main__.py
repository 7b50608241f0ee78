"""`python -m raygrid.cluster check cluster.yaml [--strict]`."""

import sys

from raygrid.cluster.cli import main

sys.exit(main())
