"""Polling the provider: what ``update`` reports moves the records.

Each status the provider reports drives one lifecycle trigger
(:func:`observe`); an instance it no longer reports, or reports deleted, is
forgotten, and its held slots are lost unless the fleet deleted it itself. A
failed ``update`` keeps the previous view and is retried soon.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetkit.errors import ProviderError
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._events import InstanceFailed, InstanceRunning, InstanceSeen
from fleetkit.fleet._health import start_ready_up
from fleetkit.fleet._runtime import Runtime, log
from fleetkit.fleet._table import Record, Trigger
from fleetkit.model import InstanceState, ProviderState
from fleetkit.provider import InstanceStatus

__all__ = ["GONE", "expire_requests", "fetch_statuses", "observe", "poll"]

S = InstanceState
#: Provider states of an instance that no longer exists.
GONE = frozenset({ProviderState.DELETED, ProviderState.TIMEOUT})


async def fetch_statuses(rt: Runtime, failed: str) -> Sequence[InstanceStatus] | None:
    """The provider's ``update``, or ``None`` (a missed update, logged as ``failed``)."""
    try:
        return await rt.calls.update()
    except ProviderError as exc:
        rt.book.missed_updates += 1
        log.warning(failed, exc, extra={"fleet": rt.name})
        return None


async def poll(rt: Runtime) -> None:
    """Call ``update`` and move every record by what it reports."""
    statuses = await fetch_statuses(rt, "update failed, keeping the previous view: %s")
    if statuses is None:
        rt.next_poll = loop_time() + rt.settings.update_interval_when_expecting
        return
    rt.book.instance_operations["update"] += 1
    now = loop_time()
    reported: set[str] = set()
    for status in statuses:
        reported.add(status.id)
        record = rt.records.get(status.id)
        if record is None:
            if status.state in GONE:
                continue
            record = _new_record(rt, status, now)
        observe(rt, record, status, now)
    for record in [r for r in rt.records.values() if r.id not in reported]:
        _gone(rt, record, now, "no longer reported by the provider")
    rt.next_poll = now + rt.poll_interval()


def _new_record(rt: Runtime, status: InstanceStatus, now: float) -> Record:
    record = Record(status.id, S.CREATING, now, owner=status.owner)
    rt.records[status.id] = record
    if rt.requested:
        requested_at = rt.requested.popleft()
        rt.book.creation_time.observe(now - requested_at)
    rt.dirty = True
    rt.publish(InstanceSeen(now, status.id))
    return record


def observe(rt: Runtime, record: Record, status: InstanceStatus, now: float) -> None:
    """Move ``record`` by one status the provider reported for it."""
    state = status.state
    if state is ProviderState.CREATING:
        rt.move(record, Trigger.SEEN_CREATING)
    elif state is ProviderState.RUNNING:
        old = rt.move(record, Trigger.SEEN_RUNNING)
        if old is S.CREATING:
            record.running_at = now
            rt.book.is_running_time.observe(now - record.created_at)
            rt.publish(InstanceRunning(now, record.id))
            start_ready_up(rt, record)
    elif state is ProviderState.DELETING:
        if not record.we_deleted:
            rt.lose_slots(record, "the provider is deleting it unexpectedly")
        rt.move(record, Trigger.SEEN_DELETING)
    else:
        _gone(rt, record, now, f"reported {state.value} by the provider")


def _gone(rt: Runtime, record: Record, now: float, why: str) -> None:
    if not record.we_deleted:
        log.error(
            "instance %s unexpectedly removed: %s",
            record.id,
            why,
            extra={"fleet": rt.name, "instance_id": record.id, "held": len(record.slots)},
        )
        rt.publish(InstanceFailed(now, record.id, f"unexpectedly removed: {why}"))
        rt.lose_slots(record, f"unexpectedly removed: {why}")
    rt.forget(record, now)


def expire_requests(rt: Runtime, now: float) -> None:
    """Forget requested instances that never appeared within ``requested_timeout``."""
    limit = rt.settings.requested_timeout
    while rt.requested and now - rt.requested[0] >= limit:
        rt.requested.popleft()
        log.warning(
            "a requested instance never appeared within %.0fs; forgetting it",
            limit,
            extra={"fleet": rt.name},
        )
