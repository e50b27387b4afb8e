"""`python -m flaxsent` runs the CLI."""

import sys

from flaxsent.cli import main

sys.exit(main())
