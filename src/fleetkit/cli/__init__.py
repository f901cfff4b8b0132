"""The ``fleetkit`` command: one subcommand per module of this package.

Each subcommand module defines ``register(commands)``, which adds its parser to
the subparsers and sets ``run`` (a function of the parsed arguments returning
the exit status) as a default. Adding a subcommand is one entry in
:data:`COMMANDS`. Exit status: 0 success, 1 the command found problems, 2 usage
errors (argparse's own), 141 when the reader of stdout went away (``fleetkit
validate c.toml | head -1``), quietly, as a tool ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from fleetkit import __version__

__all__ = ["COMMANDS", "INTERRUPTED", "STDOUT_CLOSED", "build_parser", "main"]

#: Exit status when stdout's reader went away: 128 + SIGPIPE, what a shell
#: reports for a tool the signal ended.
STDOUT_CLOSED = 128 + 13

#: Exit status after Ctrl-C, as a shell reports a tool SIGINT ended.
INTERRUPTED = 128 + 2

#: Subcommand modules under ``fleetkit.cli``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("validate", "plan", "run", "exec", "nesting", "simulate", "tune")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="fleetkit",
        description="Composable autoscaling for CI fleets, driven by GitLab Runner's config.toml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        # Each module keeps heavy imports inside its run function, so that
        # `fleetkit validate` never loads an event loop or a cloud client.
        importlib.import_module(f"{__name__}.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fleetkit`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status; argparse exits with 2 itself on bad arguments.
    A closed stdout ends the command quietly with :data:`STDOUT_CLOSED`; a
    Ctrl-C before a command has taken over signals (while it starts up) with
    :data:`INTERRUPTED`, also quietly.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
            status: int = args.run(args)
        finally:
            # Output still buffered goes now, where a closed pipe is handled,
            # not at interpreter exit, which would print the error.
            sys.stdout.flush()
    except KeyboardInterrupt:
        return INTERRUPTED
    except BaseExceptionGroup as group:
        # A Ctrl-C inside a task group that had not started watching signals.
        if group.subgroup(lambda e: not isinstance(e, KeyboardInterrupt | BaseExceptionGroup)):
            raise
        return INTERRUPTED
    except BrokenPipeError:
        # Python ignores SIGPIPE, so a reader that went away (`| head`) is this
        # error. As the Python docs' "Note on SIGPIPE" says: point stdout at
        # devnull so that the flush at exit finds nothing to fail on.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return STDOUT_CLOSED
    return status
