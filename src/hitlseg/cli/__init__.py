"""The ``hitlseg`` command line: thin adapters over the library.

Bad input (:class:`hitlseg.errors.InputError`), a bad argument, a file that cannot be written
(:class:`OSError`: permissions, a full disk, a folder where a file belongs) and running out of
memory are printed as one line without a traceback, and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from hitlseg import __version__
from hitlseg.errors import InputError

OUT_OF_MEMORY = ("out of memory (try fewer or smaller images, a smaller --batch-size or --crop-size, "
                 "or a machine with more memory)")
COMMAND_MODULES = ("hitlseg.cli.data", "hitlseg.cli.split", "hitlseg.cli.experiment", "hitlseg.cli.flim", "hitlseg.cli.project", "hitlseg.cli.select", "hitlseg.cli.nets", "hitlseg.cli.refine", "hitlseg.cli.robot", "hitlseg.cli.serve", "hitlseg.cli.retrieval", "hitlseg.cli.quality", "hitlseg.cli.weak")


class UsageError(Exception):
    """A command line argparse rejected: raised by :class:`Parser` instead of exiting."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors :func:`main` prints as one line and returns as status 2.

    ``--help`` and ``--version`` still exit.
    """

    def error(self, message: str):
        raise UsageError(self, message)


def _threads(text: str) -> int:
    from hitlseg.threads import _parse

    try:
        return _parse(text, "--threads")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    import importlib

    parser = Parser(prog="hitlseg", description="Human-in-the-loop segmentation with FLIM.")
    parser.add_argument("--version", action="version", version=f"hitlseg {__version__}")
    parser.add_argument("--threads", type=_threads, default=None, metavar="N",
                        help="compute threads (torch, OpenMP, BLAS); default $HITLSEG_THREADS, else $OMP_NUM_THREADS, "
                             "else the CPUs available (waiting threads sleep: OMP_WAIT_POLICY=PASSIVE)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from hitlseg.threads import apply_thread_policy

    try:
        apply_thread_policy(args.threads)
    except InputError as exc:  # a bad $HITLSEG_THREADS
        print(f"hitlseg: error: {exc}", file=sys.stderr)
        return 2
    import warnings

    from hitlseg.errors import DataWarning

    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):  # repaired input: one line, like an error
            print(f"hitlseg: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        return _run(args)
    finally:
        warnings.showwarning = show


def _run(args) -> int:
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is met here, not at the interpreter's exit
        return status
    except InputError as exc:
        print(f"hitlseg: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`hitlseg info DIR | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail too
        return 1
    except OSError as exc:
        print(f"hitlseg: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"hitlseg: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_gpu_out_of_memory(exc):
            raise
        print(f"hitlseg: error: {OUT_OF_MEMORY} (GPU)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hitlseg: interrupted", file=sys.stderr)
        return 130


def os_error_message(exc: OSError) -> str:
    """``PATH: reason`` of an :class:`OSError` on one line (the target of a failed rename or copy)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.fsdecode(path)
    message = f"{path}: {reason}" if path is not None else reason
    return " ".join(message.split())


def _is_gpu_out_of_memory(exc: Exception) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (checked only where torch was imported)."""
    torch = sys.modules.get("torch")
    error = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return error is not None and isinstance(exc, error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
