import sys

from raygrid.judge.cli import main

sys.exit(main())
