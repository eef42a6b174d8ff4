"""Run the lanpair command line: ``python -m lanpair``."""

import sys

from lanpair.cli import main

sys.exit(main())
