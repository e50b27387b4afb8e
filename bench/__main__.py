"""`python -m flaxsent.bench`: the benchmark harness (same as `flaxsent bench`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
