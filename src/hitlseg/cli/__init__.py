"""The ``hitlseg`` command line: thin adapters over the library.

Bad input (:class:`hitlseg.errors.InputError`) is printed as one line without a traceback and
the command exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hitlseg import __version__
from hitlseg.errors import InputError

COMMAND_MODULES = ("hitlseg.cli.data", "hitlseg.cli.experiment", "hitlseg.cli.flim", "hitlseg.cli.project", "hitlseg.cli.select", "hitlseg.cli.nets", "hitlseg.cli.robot", "hitlseg.cli.serve")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    import importlib

    parser = argparse.ArgumentParser(prog="hitlseg", description="Human-in-the-loop segmentation with FLIM.")
    parser.add_argument("--version", action="version", version=f"hitlseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"hitlseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hitlseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
