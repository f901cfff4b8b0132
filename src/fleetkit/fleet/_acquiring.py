"""Acquisitions: granting slots, waiting for them, and releasing them.

An acquisition that finds a free slot and nobody waiting ahead of it is granted
on the spot (:func:`try_grant`: the planner's walk, oldest ready healthy
instance, lowest slot), without waiting for a tick. Otherwise it waits as a
:class:`Waiter`, first come first served, and is handed a slot by whichever
comes first: a release or a ready-up (:func:`serve_pending`) or a plan's
assignment (:func:`grant_assignments`). Nothing awaits between finding a slot
and granting it.
"""

from __future__ import annotations

import anyio

from fleetkit.errors import AcquireTimeout, FleetError
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._events import SlotAcquired, SlotReleased
from fleetkit.fleet._runtime import Runtime
from fleetkit.fleet._slots import Slot
from fleetkit.fleet._table import Record, pick_slot
from fleetkit.planner import Plan

__all__ = [
    "Waiter",
    "acquire",
    "grant_assignments",
    "refresh",
    "release",
    "serve_pending",
]


class Waiter:
    """One acquisition waiting for a slot: set ``slot`` or ``error``, then ``event``."""

    __slots__ = ("error", "event", "key", "slot")

    def __init__(self, key: str) -> None:
        self.key = key
        self.event = anyio.Event()
        self.slot: Slot | None = None
        self.error: FleetError | None = None


def _grant(rt: Runtime, record: Record, number: int, key: str, now: float) -> Slot:
    record.take(number, key)
    slot = Slot(rt.slot_owner, key, record.id, number, record.info)
    rt.held[key] = slot
    rt.book.task_operations["acquire"] += 1
    rt.dirty = True
    if rt.hub.active:
        rt.hub.publish(SlotAcquired(now, key, record.id, number))
    return slot


def _hand_over(rt: Runtime, key: str, record: Record, number: int, now: float) -> None:
    waiter = rt.pending.pop(key)
    waiter.slot = _grant(rt, record, number, key, now)
    waiter.event.set()


def serve_pending(rt: Runtime) -> None:
    """Hand free slots to waiting acquisitions, first come first served."""
    while rt.pending:
        found = pick_slot(rt.ready, rt.limits)
        if found is None:
            return
        _hand_over(rt, next(iter(rt.pending)), found[0], found[1], loop_time())


def grant_assignments(rt: Runtime, the_plan: Plan, now: float) -> None:
    """Grant the plan's assignments that still hold (the waiter waits, the slot is free)."""
    for assignment in the_plan.assignments:
        waiter = rt.pending.get(assignment.key)
        record = rt.records.get(assignment.instance_id)
        if waiter is None or record is None or assignment.slot in record.slots:
            continue
        _hand_over(rt, assignment.key, record, assignment.slot, now)


def release(rt: Runtime, slot: Slot) -> None:
    """Give ``slot`` back (once), then serve whoever waits."""
    if rt.held.pop(slot.key, None) is None:
        return
    now = loop_time()
    record = rt.records.get(slot.instance_id)
    if record is not None and record.slots.get(slot.number) == slot.key:
        record.free(slot.number, now)
        if not slot.failed and slot.lost_error is None:
            record.health_failures = 0
    rt.book.task_operations["release"] += 1
    rt.dirty = True
    if rt.hub.active:
        rt.hub.publish(SlotReleased(now, slot.key, slot.instance_id, slot.number, slot.failed))
    if rt.all_released is not None and not rt.held:
        rt.all_released.set()
    serve_pending(rt)
    rt.wake()


def _try_grant(rt: Runtime, key: str) -> Slot | None:
    if rt.pending:
        return None
    found = pick_slot(rt.ready, rt.limits)
    if found is None:
        return None
    return _grant(rt, found[0], found[1], key, loop_time())


async def acquire(rt: Runtime, key: str, wait: float | None) -> Slot:
    """A slot for ``key``: at once if one is free, else within ``wait`` seconds."""
    rt.check_open()
    if key in rt.held or key in rt.pending:
        raise FleetError(f"acquisition key {key!r} is already held or waiting")
    rt.reservations.pop(key, None)
    slot = _try_grant(rt, key)
    if slot is not None:
        rt.wake()
        return slot
    waiter = Waiter(key)
    rt.pending[key] = waiter
    rt.wake()
    limit = rt.settings.acquire_timeout if wait is None else wait
    try:
        with anyio.move_on_after(limit):
            await waiter.event.wait()
    except BaseException:
        if waiter.slot is not None:
            release(rt, waiter.slot)
        else:
            rt.pending.pop(key, None)
        raise
    if waiter.slot is not None:
        return waiter.slot
    rt.pending.pop(key, None)
    if waiter.error is not None:
        raise waiter.error
    rt.book.task_operations["acquire_timeout"] += 1
    rt.wake()
    raise AcquireTimeout(f"no slot for {key!r} became ready within {limit:.0f}s")


async def refresh(rt: Runtime, slot: Slot) -> None:
    """Renew the slot's connect info when its credentials have expired."""
    info = slot.connect_info
    if info is None or info.expires_at is None or not rt.probe.expired(info):
        return
    record = rt.records.get(slot.instance_id)
    if record is not None:
        slot.connect_info = await rt.probe.connect_info(record)
