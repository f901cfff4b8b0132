"""The fleet's shared state, and the moves every part of the runtime makes on it.

One :class:`Runtime` per :class:`~fleetkit.fleet.Fleet` holds what the update
loop, ready-up, acquisition and shutdown all read and change: the instance
table, the held, waiting and reserved keys, the stats book, the event hub, and
the scale-up timers. The behaviour lives in plain functions taking a
``Runtime`` (one module per concern); the few moves that several of them make
live here, so that each keeps the state consistent in one place: moving a
record (which keeps the ready list in acquire order), draining and forgetting
an instance, losing its slots, waking the loop, persisting the table.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from fleetkit.connector import Connector
from fleetkit.errors import FleetClosed, InstanceLost
from fleetkit.fleet._calls import GroupCalls
from fleetkit.fleet._clock import WallClock, loop_time
from fleetkit.fleet._events import EventHub, FleetEvent, InstanceDeleted, InstanceDraining
from fleetkit.fleet._probe import Probe
from fleetkit.fleet._settings import FleetSettings
from fleetkit.fleet._slots import Slot, SlotOwner
from fleetkit.fleet._state_store import StateStore, StoredInstance
from fleetkit.fleet._stats import StatsBook
from fleetkit.fleet._table import Record, Trigger, seniority, transition
from fleetkit.model import InstanceState, Limits, Snapshot
from fleetkit.planner import TokenBucket
from fleetkit.policy import Policy, Schedule
from fleetkit.provider import InstanceGroup, ProviderInfo

if TYPE_CHECKING:
    from fleetkit.fleet._acquiring import Waiter

__all__ = ["Runtime", "log"]

#: Every part of the runtime logs under the one name users configure.
log = logging.getLogger("fleetkit.fleet")

S = InstanceState
_IN_TRANSITION = frozenset({S.CREATING, S.RUNNING, S.DRAINING, S.DELETING})


class Runtime:
    """The mutable state of one fleet (see the module docstring)."""

    def __init__(
        self,
        group: InstanceGroup,
        limits: Limits,
        schedule: Schedule,
        *,
        connector: Connector | None,
        settings: FleetSettings,
        wall_clock: WallClock | None,
        name: str,
        slot_owner: SlotOwner,
    ) -> None:
        self.settings = settings
        self.name = name
        self.slot_owner = slot_owner
        self.calls = GroupCalls(group)
        self.limits = limits
        self.schedule = schedule
        self.connector = connector
        self.wall_clock = wall_clock
        self.probe = Probe(self.calls, connector, self.wall_now)
        self.store = StateStore(settings.state_storage_dir) if settings.state_storage_dir else None
        self.info: ProviderInfo | None = None
        # The instance table.
        self.records: dict[str, Record] = {}
        # READY records in acquire order (planner's seniority): the fast path walks this.
        self.ready: list[Record] = []
        self.requested: deque[float] = deque()
        self.dirty = False
        # Acquisitions: granted, waiting, reserved.
        self.held: dict[str, Slot] = {}
        self.pending: dict[str, Waiter] = {}
        self.reservations: dict[str, float] = {}
        self.all_released: anyio.Event | None = None
        # What the fleet reports: events and figures.
        self.hub = EventHub()
        self.book = StatsBook()
        self.desired = 0
        # The fleet's own lifecycle, its tasks and its update loop.
        self.open = False
        self.closing = False
        self.tg: TaskGroup | None = None
        self.ready_backlog: list[Record] = []
        self.wake_event: anyio.Event | None = None
        self.woken = False
        self.tick_cost = 0.0
        # When the loop next has something to do, and what holds scale-ups back.
        self.next_poll = 0.0
        self.next_heartbeat = math.inf
        self.bucket: TokenBucket | None = None
        self.throttled_until = 0.0
        self.scale_up_not_before = 0.0
        self.scale_up_failures = 0
        self.last_logged_provision: tuple[int, int] | None = None

    # --- time and policy ----------------------------------------------------

    def wall_now(self) -> datetime:
        """The fleet's wall-clock time now."""
        assert self.wall_clock is not None
        return self.wall_clock(loop_time())

    def policy_at(self, now: float) -> Policy:
        """The idle policy in force at loop time ``now``."""
        assert self.wall_clock is not None
        return self.schedule.active(self.wall_clock(now))

    def poll_interval(self) -> float:
        """How long until the next ``update``: shorter while anything is in transition."""
        expecting = bool(self.requested) or any(
            r.state in _IN_TRANSITION for r in self.records.values()
        )
        s = self.settings
        return s.update_interval_when_expecting if expecting else s.update_interval

    def poll_soon(self, now: float) -> None:
        """Bring the next ``update`` forward: the provider was just asked for a change."""
        self.next_poll = min(self.next_poll, now + self.settings.update_interval_when_expecting)

    def pause_scale_ups(self, now: float) -> float:
        """Count one more scale-up failure and hold scale-ups off: the backoff."""
        self.scale_up_failures += 1
        s = self.settings
        exponent = min(self.scale_up_failures - 1, 30)
        backoff = float(min(s.ready_backoff_initial * 2**exponent, s.ready_backoff_max))
        self.scale_up_not_before = now + backoff
        return backoff

    # --- the instance table -------------------------------------------------

    def move(self, record: Record, trigger: Trigger) -> InstanceState:
        """Move ``record`` by ``trigger`` (the lifecycle table), keeping ``ready`` in step."""
        old = transition(record, trigger)
        if old is S.READY and record.state is not S.READY:
            self.ready.remove(record)
        elif record.state is S.READY and old is not S.READY:
            bisect.insort(self.ready, record, key=seniority)
        return old

    def drain(self, record: Record, reason: str, now: float, *, already: bool = False) -> None:
        """Take ``record`` out of service and schedule its deletion (``already``: moved)."""
        if not already:
            self.move(record, Trigger.DRAIN)
        record.we_deleted = True
        record.drain_reason = reason
        if record.delete_due is None:
            record.delete_due = now
        self.dirty = True
        self.publish(InstanceDraining(now, record.id, reason))

    def forget(self, record: Record, now: float) -> None:
        """Drop ``record``: its instance is gone."""
        self.move(record, Trigger.GONE)
        del self.records[record.id]
        self.book.life_duration.observe(now - record.created_at)
        if record.deletion_requested_at is not None:
            self.book.deletion_time.observe(now - record.deletion_requested_at)
        self.dirty = True
        self.publish(InstanceDeleted(now, record.id, record.we_deleted))

    def lose_slots(self, record: Record, reason: str) -> None:
        """Cancel every slot held on ``record``."""
        for key in tuple(record.slots.values()):
            slot = self.held.get(key)
            if slot is not None:
                slot._lose(InstanceLost(record.id, reason))

    def snapshot(self) -> Snapshot:
        """The fleet now, as the planner sees it."""
        return Snapshot(
            instances=tuple(r.freeze() for r in self.records.values()),
            reservations=tuple(self.reservations),
            pending=tuple(self.pending),
            requested=len(self.requested),
        )

    def persist(self, *, force: bool = False) -> None:
        """Save the table to the state store when it changed (or when ``force``)."""
        if self.store is None or not (self.dirty or force):
            return
        self.dirty = False
        table = {
            r.id: StoredInstance(
                id=r.id, owner=r.owner, use_count=r.use_count, acquisitions=dict(r.slots)
            )
            for r in self.records.values()
        }
        # Written inline, not in a worker thread: the file is small, and a thread
        # would let a virtual clock (trio's MockClock) jump while it runs.
        self.store.save(table)

    # --- signals ------------------------------------------------------------

    def publish(self, event: FleetEvent) -> None:
        """Send ``event`` to the subscribers, if any."""
        if self.hub.active:
            self.hub.publish(event)

    def wake(self) -> None:
        """Have the update loop run a tick soon (see :func:`~fleetkit.fleet._loop.run`)."""
        self.woken = True
        if self.wake_event is not None:
            self.wake_event.set()

    def check_open(self) -> None:
        """Raise :class:`~fleetkit.errors.FleetClosed` unless the fleet takes work."""
        if self.closing or not self.open:
            raise FleetClosed(f"fleet {self.name!r} is not open")
