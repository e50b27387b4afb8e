"""`python -m flaxsent.bench`: the benchmark harness (same as `flaxsent bench`)."""

import sys

from flaxsent.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
