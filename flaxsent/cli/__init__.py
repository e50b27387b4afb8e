"""The `flaxsent` command: one module per subcommand (convert, export, predict, eval, train,
probe, explain, serve, aot), each with its `add_parser(subparsers)` and `run(args)`; bench
registers its own. A user error is one line and exit 2, never a traceback.

Building the parser imports no jax: `main` pins JAX to the CPU first where no accelerator is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flaxsent.cli import aot, convert, evaluate, explain, export, predict, probe, serve, train
from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.errors import FlaxsentError
from flaxsent.version import __version__

# in --help's order
COMMANDS = (convert, export, predict, evaluate, train, probe, explain, serve, aot)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flaxsent", description="JAX/Flax inference engine for DistilBERT text classifiers")
    parser.add_argument("--version", action="version", version=f"flaxsent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    from flaxsent.bench.cli import add_bench_parser
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and exit 2, never a traceback."""
    pin_cpu_where_no_accelerator()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlaxsentError as e:
        print(f"flaxsent {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure
        return 1
    except OSError as e:  # the system refused (a full disk, a permission): one line too
        where = f"{e.filename}: " if e.filename else ""
        print(f"flaxsent {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flaxsent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
