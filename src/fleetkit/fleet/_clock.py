"""Where the runtime gets time: anyio's loop clock, and one wall clock mapped from it.

The runtime reads ``anyio.current_time()`` only through :func:`loop_time`, and
turns loop time into a wall-clock instant (for cron policy periods) only through
a :data:`WallClock`, so a test under trio's ``MockClock`` can start the day at
any datetime it likes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel

__all__ = ["WallClock", "anchored_wall_clock", "loop_clock", "loop_time"]

#: Maps a loop time (``anyio.current_time()`` seconds) to an aware datetime.
WallClock = Callable[[float], datetime]


def loop_time() -> float:
    """The runtime's monotonic time in seconds."""
    return anyio.current_time()


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock, as a function found once.

    Reads the same time as :func:`loop_time`; ``anyio.current_time()`` looks the
    backend up on every call, which costs more than the rest of a warm acquire.
    Call inside the event loop the function is to be used in.
    """
    return anyio.lowlevel.current_token().backend_class.current_time


def anchored_wall_clock(start: datetime | None = None, *, at: float | None = None) -> WallClock:
    """A wall clock that reads ``start`` at loop time ``at`` and runs with the loop.

    ``start`` defaults to now (UTC) and ``at`` to the loop's time now, so it must
    be called inside an event loop unless both are given. A naive ``start`` is
    taken as UTC.
    """
    origin = datetime.now(UTC) if start is None else start
    if origin.tzinfo is None:
        origin = origin.replace(tzinfo=UTC)
    zero = loop_time() if at is None else at

    def wall(t: float) -> datetime:
        return origin + timedelta(seconds=t - zero)

    return wall
