"""Ready-up and health: is a running instance fit for work, and does it stay so.

Once the provider reports an instance running, a ready-up task fetches its
connect info and runs ``instance_ready_command``; success makes it READY (and
serves waiting acquisitions), failure drains it and pauses scale-ups by the
ready-up backoff. While READY, a heartbeat round every ``heartbeat_interval``
runs ``heartbeat_command``; each failure (or a holder's
:meth:`~fleetkit.fleet.Slot.report_failure`) counts toward the
``failure_threshold`` past which the instance takes no new work.
"""

from __future__ import annotations

import math

from fleetkit.fleet._acquiring import serve_pending
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._events import InstanceFailed, InstanceReady
from fleetkit.fleet._runtime import Runtime, log
from fleetkit.fleet._table import Record, Trigger
from fleetkit.model import InstanceState

__all__ = ["count_failure", "start_heartbeats", "start_held_back_ready_ups", "start_ready_up"]

S = InstanceState


def start_ready_up(rt: Runtime, record: Record) -> None:
    """Start ``record``'s ready-up task (or hold it back until the task group exists)."""
    if rt.tg is None:
        # During reconcile the task group does not exist yet: ready-up of
        # adopted instances starts as soon as it does.
        rt.ready_backlog.append(record)
        return
    rt.tg.start_soon(_ready_up, rt, record, name=f"ready-up {record.id}")


def start_held_back_ready_ups(rt: Runtime) -> None:
    """Start the ready-ups held back during reconcile, now that the task group exists."""
    for record in rt.ready_backlog:
        start_ready_up(rt, record)
    rt.ready_backlog.clear()


async def _ready_up(rt: Runtime, record: Record) -> None:
    reason = await rt.probe.check(
        record, rt.settings.instance_ready_command, rt.settings.ready_command_timeout
    )
    now = loop_time()
    if rt.records.get(record.id) is not record:
        return
    if reason is None:
        record.ready_at = now
        record.idle_since = now
        rt.move(record, Trigger.READY_UP_OK)
        if record.state is not S.READY:
            return
        rt.scale_up_failures = 0
        rt.book.readiness_time.observe(now - record.created_at)
        rt.publish(InstanceReady(now, record.id))
        serve_pending(rt)
    else:
        backoff = rt.pause_scale_ups(now)
        log.warning(
            "ready-up of %s failed (%s); removing it, scale-ups paused %.0fs",
            record.id,
            reason,
            backoff,
            extra={"fleet": rt.name, "instance_id": record.id, "reason": reason},
        )
        rt.publish(InstanceFailed(now, record.id, f"ready-up failed: {reason}"))
        rt.move(record, Trigger.READY_UP_FAILED)
        rt.drain(record, f"ready-up failed: {reason}", now, already=True)
    rt.dirty = True
    rt.wake()


def start_heartbeats(rt: Runtime, now: float) -> None:
    """Start a heartbeat round on every READY instance when one is due."""
    interval = rt.settings.heartbeat_interval
    if interval is None or rt.connector is None or rt.tg is None:
        return
    if rt.next_heartbeat == math.inf:
        rt.next_heartbeat = now + interval
        return
    if now < rt.next_heartbeat:
        return
    rt.next_heartbeat = now + interval
    for record in rt.records.values():
        if record.state is S.READY:
            rt.tg.start_soon(_heartbeat, rt, record, name=f"heartbeat {record.id}")


async def _heartbeat(rt: Runtime, record: Record) -> None:
    reason = await rt.probe.check(
        record, rt.settings.heartbeat_command, rt.settings.heartbeat_timeout
    )
    if rt.records.get(record.id) is not record:
        return
    if reason is None:
        record.health_failures = 0
    else:
        count_failure(rt, record, f"heartbeat failed: {reason}")


def count_failure(rt: Runtime, record: Record, reason: str) -> None:
    """Count one health failure of ``record`` against the ``failure_threshold``."""
    record.health_failures += 1
    now = loop_time()
    rt.publish(InstanceFailed(now, record.id, reason))
    threshold = rt.limits.failure_threshold
    if threshold and record.health_failures == threshold:
        log.warning(
            "instance %s unhealthy after %d failures (last: %s); it takes no new work",
            record.id,
            record.health_failures,
            reason,
            extra={"fleet": rt.name, "instance_id": record.id},
        )
    rt.dirty = True
    rt.wake()
