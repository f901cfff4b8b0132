"""The instance table: one mutable record per instance, and its lifecycle as a table.

Theory of operation
-------------------
Every change of an instance's :class:`~fleetkit.model.InstanceState` goes through
:func:`transition`, which looks the (state, trigger) pair up in
:data:`TRANSITIONS`; a pair not in the table is a bug in the runtime and raises
:class:`LifecycleError` at once rather than leaving a half-moved instance. The
table is the only place that says what can follow what (h11's ``_state.py``
rule: everything that affects the state machine lives here).

Triggers come from three sources: what the provider reports (``SEEN_*``,
``GONE``), the ready-up task (``READY_UP_OK`` / ``READY_UP_FAILED``), and the
runtime's own decisions (``DRAIN``, ``DELETE_ACCEPTED``). ``REQUESTED`` is not a
record state: an accepted ``increase`` is only a count until the instance shows
up with an id.

Only :class:`~fleetkit.fleet._state.FleetState` moves records; it asks the
planner's accounting (:func:`fleetkit.planner.room`) whether one may take a job.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from fleetkit.model import Instance, InstanceState

__all__ = [
    "TRANSITIONS",
    "LifecycleError",
    "Record",
    "Trigger",
    "render_table",
    "seniority",
    "transition",
]

S = InstanceState


class Trigger(enum.Enum):
    """What moves an instance from one state to the next."""

    SEEN_CREATING = "seen creating"
    SEEN_RUNNING = "seen running"
    READY_UP_OK = "ready-up succeeded"
    READY_UP_FAILED = "ready-up failed"
    DRAIN = "drain"
    DELETE_ACCEPTED = "delete accepted"
    SEEN_DELETING = "seen deleting"
    GONE = "gone"


T = Trigger

#: state -> trigger -> next state. Absent pairs are impossible.
TRANSITIONS: Mapping[InstanceState, Mapping[Trigger, InstanceState]] = {
    S.CREATING: {
        T.SEEN_CREATING: S.CREATING,
        T.SEEN_RUNNING: S.RUNNING,
        T.DRAIN: S.DRAINING,
        T.SEEN_DELETING: S.DELETING,
        T.GONE: S.DELETED,
    },
    # A provider's view may lag (eventual consistency): an older "creating"
    # sighting after "running" changes nothing rather than stopping the fleet.
    S.RUNNING: {
        T.SEEN_CREATING: S.RUNNING,
        T.SEEN_RUNNING: S.RUNNING,
        T.READY_UP_OK: S.READY,
        T.READY_UP_FAILED: S.DRAINING,
        T.DRAIN: S.DRAINING,
        T.SEEN_DELETING: S.DELETING,
        T.GONE: S.DELETED,
    },
    S.READY: {
        T.SEEN_CREATING: S.READY,
        T.SEEN_RUNNING: S.READY,
        T.DRAIN: S.DRAINING,
        T.SEEN_DELETING: S.DELETING,
        T.GONE: S.DELETED,
    },
    # A draining instance ignores late ready-up results and sightings: it only
    # goes on to deletion.
    S.DRAINING: {
        T.SEEN_CREATING: S.DRAINING,
        T.SEEN_RUNNING: S.DRAINING,
        T.READY_UP_OK: S.DRAINING,
        T.READY_UP_FAILED: S.DRAINING,
        T.DRAIN: S.DRAINING,
        T.DELETE_ACCEPTED: S.DELETING,
        T.SEEN_DELETING: S.DELETING,
        T.GONE: S.DELETED,
    },
    # The provider may still report an instance running for a while after an
    # accepted decrease (AWS does); that does not bring it back.
    S.DELETING: {
        T.SEEN_CREATING: S.DELETING,
        T.SEEN_RUNNING: S.DELETING,
        T.READY_UP_OK: S.DELETING,
        T.READY_UP_FAILED: S.DELETING,
        T.DRAIN: S.DELETING,
        T.DELETE_ACCEPTED: S.DELETING,
        T.SEEN_DELETING: S.DELETING,
        T.GONE: S.DELETED,
    },
    S.DELETED: {},
}


class LifecycleError(RuntimeError):
    """An impossible lifecycle transition was attempted: a bug in the runtime."""


class Record:
    """The runtime's mutable view of one instance.

    ``slots`` maps slot number to the acquisition key holding it. ``delete_due``
    is the loop time at which ``decrease`` should be (re)issued, ``None`` when no
    deletion is wanted. ``we_deleted`` tells an expected disappearance from an
    unexpected one.
    """

    __slots__ = (
        "_frozen",
        "created_at",
        "delete_due",
        "deletion_requested_at",
        "drain_reason",
        "health_failures",
        "id",
        "idle_since",
        "owner",
        "ready_at",
        "running_at",
        "slots",
        "state",
        "use_count",
        "we_deleted",
    )

    def __init__(
        self,
        instance_id: str,
        state: InstanceState,
        created_at: float,
        *,
        owner: str | None = None,
        use_count: int = 0,
    ) -> None:
        self._frozen: Instance | None = None
        self.id = instance_id
        self.state = state
        self.created_at = created_at
        self.owner = owner
        self.use_count = use_count
        self.ready_at: float | None = None
        self.running_at: float | None = None
        self.idle_since: float | None = None
        self.health_failures = 0
        self.slots: dict[int, str] = {}
        self.delete_due: float | None = None
        self.deletion_requested_at: float | None = None
        self.drain_reason: str | None = None
        self.we_deleted = False

    def __repr__(self) -> str:
        return (
            f"Record({self.id!r}, {self.state.value}, slots={sorted(self.slots)}, "
            f"use_count={self.use_count}, failures={self.health_failures})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        # Any change to a field the planner sees drops the cached frozen copy.
        if name in _FROZEN_FIELDS:
            object.__setattr__(self, "_frozen", None)
        object.__setattr__(self, name, value)

    def take(self, number: int, key: str) -> None:
        """Give slot ``number`` to acquisition ``key``."""
        # Straight to the slots, past __setattr__: this is the acquire hot path.
        self.slots[number] = key
        _set(self, "use_count", self.use_count + 1)
        _set(self, "_frozen", None)

    def free(self, number: int, now: float) -> None:
        """Free slot ``number``; the instance is idle (again) from ``now``."""
        del self.slots[number]
        _set(self, "idle_since", now)
        _set(self, "_frozen", None)

    def freeze(self) -> Instance:
        """This record as the planner's frozen :class:`~fleetkit.model.Instance`.

        Cached until a field the planner reads changes: at 10,000 instances,
        building every snapshot afresh would dominate each tick.
        """
        frozen = self._frozen
        if frozen is None:
            frozen = self._frozen = self._build()
        return frozen

    def _build(self) -> Instance:
        return Instance(
            id=self.id,
            state=self.state,
            created_at=self.created_at,
            ready_at=self.ready_at,
            slots_in_use=frozenset(self.slots),
            use_count=self.use_count,
            idle_since=self.idle_since,
            health_failures=self.health_failures,
            owner=self.owner,
            drain_reason=self.drain_reason,
        )


_set = object.__setattr__

_FROZEN_FIELDS = frozenset(
    {
        "state",
        "created_at",
        "ready_at",
        "use_count",
        "idle_since",
        "health_failures",
        "owner",
        "drain_reason",
    }
)


def transition(record: Record, trigger: Trigger) -> InstanceState:
    """Move ``record`` by ``trigger`` per :data:`TRANSITIONS`; return the old state."""
    old = record.state
    try:
        new = TRANSITIONS[old][trigger]
    except KeyError:
        raise LifecycleError(
            f"instance {record.id!r}: no transition from {old.value} on {trigger.value}"
        ) from None
    if new is not old:
        # Only a real move: setting the same state would drop the cached frozen
        # copy, and every poll re-reports every instance (sim16 measured it).
        record.state = new
    return old


def render_table() -> str:
    """:data:`TRANSITIONS` as a Markdown table (``docs/fleet.md`` shows it)."""
    lines = [
        "| state \\ trigger | " + " | ".join(t.value for t in Trigger) + " |",
        "|---|" + "---|" * len(Trigger),
    ]
    for state, moves in TRANSITIONS.items():
        cells = [moves[t].value if t in moves else "-" for t in Trigger]
        lines.append(f"| {state.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seniority(record: Record) -> tuple[float, float, str]:
    """Acquire order: oldest ready first, then oldest created, then id.

    The same order as the planner's assignment walk
    (:func:`fleetkit.planner._assign.seniority`), so a slot granted on the spot
    is the one the planner would have assigned.
    """
    ready_at = record.ready_at
    return (record.created_at if ready_at is None else ready_at, record.created_at, record.id)
