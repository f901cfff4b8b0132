"""The ``fleetkit`` command: one subcommand per module of this package.

Each subcommand module defines ``register(commands)``, which adds its parser to
the subparsers and sets ``run`` (a function of the parsed arguments returning
the exit status) as a default. Adding a subcommand is one entry in
:data:`COMMANDS`. Exit status: 0 success, 1 the command found problems, 2 usage
errors (argparse's own).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from fleetkit import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules under ``fleetkit.cli``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("validate", "plan", "run", "exec")


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
    """
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status
