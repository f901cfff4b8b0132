"""The instance ledger: what the fleet created and deleted, and for how long.

Fed with the fleet's events; gives the figures of ``fleetkit run``'s summary
(instances created and deleted, instance-minutes) and a short history of what
happened to instances for the live display.
"""

from __future__ import annotations

from collections import deque

import attrs

from fleetkit.fleet import (
    FleetEvent,
    InstanceDeleted,
    InstanceDraining,
    InstanceFailed,
    InstanceReady,
    InstanceSeen,
)

__all__ = ["InstanceLedger", "LedgerFigures", "Note"]


@attrs.frozen
class LedgerFigures:
    """``created``/``deleted`` count instances seen and gone during the run;
    ``instance_seconds`` sums their lifetimes (to ``now`` for live ones)."""

    created: int
    deleted: int
    live: int
    instance_seconds: float

    @property
    def instance_minutes(self) -> float:
        """``instance_seconds`` in minutes."""
        return self.instance_seconds / 60


@attrs.frozen
class Note:
    """One happening to an instance: its number, when it happened (the event's
    runtime-clock time, not when a display read it) and what it was."""

    seq: int
    at: float
    text: str


class InstanceLedger:
    """Books instance lifetimes from fleet events; ``notes`` keeps the last few
    happenings as numbered :class:`Note` values (``i-1 ready``, ``i-2 draining:
    idle for 61s ...``) stamped with the time they happened, so a display can
    show each once, in order."""

    __slots__ = ("_born", "_closed_seconds", "created", "deleted", "notes", "seq")

    def __init__(self, notes: int = 50) -> None:
        self._born: dict[str, float] = {}
        self._closed_seconds = 0.0
        self.created = 0
        self.deleted = 0
        self.seq = 0
        self.notes: deque[Note] = deque(maxlen=notes)

    def _note(self, at: float, text: str) -> None:
        self.seq += 1
        self.notes.append(Note(self.seq, at, text))

    def notes_since(self, seq: int) -> list[Note]:
        """The notes numbered above ``seq`` that are still kept."""
        return [note for note in self.notes if note.seq > seq]

    def __repr__(self) -> str:
        return (
            f"<InstanceLedger created={self.created} deleted={self.deleted} live={len(self._born)}>"
        )

    def record(self, event: FleetEvent) -> None:
        """Take one fleet event into account."""
        match event:
            case InstanceSeen(at=at, instance_id=iid) if iid not in self._born:
                self._born[iid] = at
                self.created += 1
                self._note(at, f"{iid} created")
            case InstanceReady(at=at, instance_id=iid):
                self._note(at, f"{iid} ready")
            case InstanceDraining(at=at, instance_id=iid, reason=reason):
                self._note(at, f"{iid} draining: {reason}")
            case InstanceFailed(at=at, instance_id=iid, reason=reason):
                self._note(at, f"{iid} failed: {reason}")
            case InstanceDeleted(at=at, instance_id=iid, expected=expected):
                born = self._born.pop(iid, None)
                if born is not None:
                    self._closed_seconds += max(at - born, 0.0)
                self.deleted += 1
                self._note(at, f"{iid} deleted" + ("" if expected else " (lost)"))
            case _:
                pass

    def figures(self, now: float) -> LedgerFigures:
        """The figures as of ``now`` (runtime clock)."""
        open_seconds = sum(max(now - born, 0.0) for born in self._born.values())
        return LedgerFigures(
            created=self.created,
            deleted=self.deleted,
            live=len(self._born),
            instance_seconds=self._closed_seconds + open_seconds,
        )
