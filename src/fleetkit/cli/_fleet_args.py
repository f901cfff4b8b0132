"""Arguments and helpers the fleet-driving commands (``run``, ``exec``) share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from fleetkit.errors import FleetkitError

__all__ = ["add_fleet_arguments", "fleetkit_error", "percentile", "runner_choice"]


def runner_choice(text: str | None) -> str | int | None:
    """``--runner``: an index when it is a number, else a runner name."""
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runner`` and ``--keep-instances``."""
    parser.add_argument(
        "--runner",
        metavar="NAME_OR_INDEX",
        help="the [[runners]] entry to use, by name or index (default: the only one "
        "with executor 'instance' and an autoscaler section)",
    )
    parser.add_argument(
        "--keep-instances",
        action="store_true",
        help="leave the instances running at the end (default: delete every instance "
        "this command made, also on Ctrl-C)",
    )


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def seconds(value: float | None) -> str:
    """``1.2s``, or ``-`` for no value."""
    return "-" if value is None else f"{value:.1f}s"


def fleetkit_error(exc: BaseException) -> FleetkitError | None:
    """The fleetkit error ``exc`` is, or the only kind a task group wrapped.

    Task groups raise exception groups; a command reports a fleetkit error in
    one as it would the bare error, and lets anything else through.
    """
    if isinstance(exc, FleetkitError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [fleetkit_error(inner) for inner in exc.exceptions]
        if found and all(f is not None for f in found):
            return found[0]
    return None
