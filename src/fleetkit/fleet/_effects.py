"""What the fleet state tells its driver to do, as data.

:class:`~fleetkit.fleet._state.FleetState` answers every call with an
:class:`Effects` value (httpcore's "decide, then return the I/O to do"); the
driver (:mod:`fleetkit.fleet._driver`) performs it. :class:`Grant` is one slot
given to one acquisition key; :class:`LogLine` one line for the logger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from fleetkit.errors import FleetError
from fleetkit.fleet._events import FleetEvent

__all__ = ["WAKE_ONLY", "Effects", "Grant", "LogLine"]


class Grant(NamedTuple):
    """Acquisition ``key`` holds slot ``number`` of instance ``instance_id``."""

    key: str
    instance_id: str
    number: int


class LogLine(NamedTuple):
    """One line for the ``fleetkit.fleet`` logger, written by the driver."""

    level: int
    message: str
    args: tuple[object, ...] = ()
    extra: Mapping[str, object] = {}


class Effects:
    """What the driver is to do after one call into the state, as data.

    ``grants`` go to waiting acquisitions, ``refusals`` fail waiting ones,
    ``losses`` cancel held slots; ``ready_ups`` and ``heartbeats`` are instance
    ids to check; ``decrease`` ids and an ``increase`` count are provider calls
    to make (their outcomes go back through :meth:`FleetState.decrease_done` and
    :meth:`FleetState.increase_done`); ``forgotten`` instances are gone (drop
    what is cached about them); ``wake`` asks for a planning tick soon.
    """

    __slots__ = (
        "decrease",
        "events",
        "forgotten",
        "grants",
        "heartbeats",
        "increase",
        "logs",
        "losses",
        "ready_ups",
        "refusals",
        "wake",
    )

    def __init__(self) -> None:
        self.grants: list[Grant] = []
        self.refusals: list[tuple[str, FleetError]] = []
        self.losses: list[tuple[str, FleetError]] = []
        self.ready_ups: list[str] = []
        self.heartbeats: list[str] = []
        self.decrease: list[str] = []
        self.increase = 0
        self.forgotten: list[str] = []
        self.events: list[FleetEvent] = []
        self.logs: list[LogLine] = []
        self.wake = False

    def __repr__(self) -> str:
        shown = [
            f"{name}={value!r}"
            for name in self.__slots__
            if (value := getattr(self, name)) and name not in ("events", "logs")
        ]
        return f"Effects({', '.join(shown)})"


#: The effects of a release with nothing to hand out or report: wake the loop.
#: Shared, so never changed (the hot path builds no Effects of its own).
WAKE_ONLY = Effects()
WAKE_ONLY.wake = True
