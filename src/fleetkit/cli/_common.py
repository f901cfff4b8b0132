"""Arguments and helpers more than one subcommand shares, so that no command
imports another's privates.

Imports nothing heavy at module level: ``fleetkit validate`` loads this module
too, and must not load an event loop or a cloud client.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple, Unpack

from fleetkit._localzone import local_zone
from fleetkit._text import printable
from fleetkit.errors import FleetkitError

if TYPE_CHECKING:
    import anyio.abc

__all__ = [
    "INTERRUPTED",
    "add_fleet_arguments",
    "fail",
    "fleetkit_error",
    "instant",
    "interruptible",
    "now_here",
    "percentile",
    "positive_seconds",
    "run_async",
    "runner_choice",
    "seconds",
    "watch_signals",
]

#: Exit status after Ctrl-C (or SIGTERM), as a shell reports SIGINT.
INTERRUPTED = 130

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


def instant(text: str) -> datetime:
    """``--at``: an ISO 8601 date and time; a naive one is in the local zone
    (``TZ``, else the system's), where GitLab Runner reads policies without
    ``timezone``."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date and time (e.g. 2026-03-02T09:00+01:00)"
        ) from None
    # Near year 1 or 9999 a time zone's offset or a day's step leaves the range
    # datetime can hold.
    if not _FIRST_YEAR <= at.year <= _LAST_YEAR:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the years {_FIRST_YEAR}-{_LAST_YEAR} fleetkit plans for"
        )
    return at if at.tzinfo else at.replace(tzinfo=local_zone().zone)


_FIRST_YEAR, _LAST_YEAR = 1900, 9000


def positive_seconds(text: str) -> float:
    """``--timeout SECONDS``: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0 (leave the option out for no limit), got {text!r}"
        )
    return value


def now_here() -> datetime:
    """Now, in the local zone (the default of ``--at``)."""
    return datetime.now(local_zone().zone)


def fail(command: str, error: object, status: int) -> int:
    """Report ``error`` on stderr as ``fleetkit COMMAND: error``; returns ``status``.

    Errors quote others' text (a provider's message, a file's name): each line
    reaches the terminal with its control characters shown as escapes.
    """
    text = "\n".join(printable(line) for line in str(error).split("\n"))
    print(f"fleetkit {command}: {text}", file=sys.stderr)
    return status


def interruptible(
    body: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``body`` with a Ctrl-C that comes before the event loop takes over
    signals (nothing was started yet) made exit status 130."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except KeyboardInterrupt:
            return INTERRUPTED

    return run


def run_async(main: Callable[[Unpack[_Args]], Awaitable[_T]], *args: *_Args) -> _T:
    """``main(*args)`` on anyio's asyncio backend (asyncssh and aiobotocore need
    it); a fleetkit error a task group wrapped is raised bare, so the caller
    reports it as it would one raised directly."""
    import anyio

    try:
        return anyio.run(main, *args, backend="asyncio")
    except Exception as exc:
        error = fleetkit_error(exc)
        if error is None or error is exc:
            raise
        raise error from exc


async def watch_signals(
    handle: Callable[[signal.Signals], None],
    *signums: signal.Signals,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """Call ``handle`` with each of ``signums`` that arrives; started once the
    signals are ours (start it before anything is made that Ctrl-C must end)."""
    import anyio

    with anyio.open_signal_receiver(*signums) as signals:
        task_status.started()
        async for signum in signals:
            handle(signal.Signals(signum))


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
        help="the [[runners]] entry to use, by name or index (default: for run, every "
        "runner with executor 'instance' and an autoscaler section; otherwise the only one)",
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


def reporting_errors(
    command: str, body: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """``body`` as a command's ``run``: a fleetkit error (bare or in a group) it
    raises becomes one line on stderr and exit 1; anything else propagates."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (FleetkitError, BaseExceptionGroup) as exc:
            error = fleetkit_error(exc)
            if error is None:
                raise
            return fail(command, error, 1)

    return run
