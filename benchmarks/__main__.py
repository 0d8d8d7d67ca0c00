"""Runs the benchmark suite: ``python -m benchmarks [--quick]``."""

import sys

from benchmarks._cli import main

if __name__ == "__main__":
    sys.exit(main())
