"""Carrying out a plan's scaling: report it, drain and delete, then increase.

Removals are re-checked against the table *as it is now* and marked draining
before any provider call, so a job that just landed is never killed (style
rec. 4); deletions due are then sent in one ``decrease``, retried every
``deletion_retry_interval`` until accepted. ``increase`` goes through the scale
throttle's token bucket and the scale-up backoff.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from fleetkit.errors import ProviderError, Throttled
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._events import InstancesRequested, PlanMade
from fleetkit.fleet._runtime import Runtime, log
from fleetkit.fleet._table import Trigger
from fleetkit.model import InstanceState
from fleetkit.planner import Deprovision, Plan

__all__ = ["issue_deletions", "mark_removals", "provision", "report_plan"]

S = InstanceState


def report_plan(rt: Runtime, the_plan: Plan, now: float) -> None:
    """Log and publish what the plan changes (a scale-up once per new figure)."""
    provision = the_plan.provision
    signature = (provision.count, provision.figures.desired_instances) if provision else None
    new_provision = signature is not None and signature != rt.last_logged_provision
    rt.last_logged_provision = signature
    removals = [d for d in the_plan.deprovisions if _is_new_removal(rt, d)]
    if not (new_provision or removals):
        return
    if new_provision and provision is not None:
        log.info(
            "scale up: %s",
            provision,
            extra={"fleet": rt.name, "figures": attrs.asdict(provision.figures)},
        )
    for removal in removals:
        log.info(
            "scale down: %s",
            removal,
            extra={
                "fleet": rt.name,
                "instance_id": removal.instance_id,
                "reason": str(removal.reason),
            },
        )
    if rt.hub.active:
        rt.publish(PlanMade(now, the_plan))


def _is_new_removal(rt: Runtime, removal: Deprovision) -> bool:
    record = rt.records.get(removal.instance_id)
    return record is not None and record.state not in (S.DRAINING, S.DELETING)


def mark_removals(rt: Runtime, removals: Sequence[Deprovision], now: float) -> None:
    """Drain each instance to remove that is still free."""
    for removal in removals:
        if not _is_new_removal(rt, removal):
            continue
        record = rt.records[removal.instance_id]
        # Re-check against the table as it is now: a job may have landed
        # since the snapshot (taskscaler's "terminates non-idle instance").
        if record.slots:
            log.info(
                "not removing %s: a slot was acquired since the plan",
                record.id,
                extra={"fleet": rt.name, "instance_id": record.id},
            )
            continue
        rt.book.scale_operations["down"] += 1
        rt.drain(record, str(removal.reason), now)


async def issue_deletions(rt: Runtime, now: float) -> None:
    """Ask ``decrease`` for every free instance whose deletion is due."""
    due = [
        r
        for r in rt.records.values()
        if r.delete_due is not None and r.delete_due <= now and not r.slots
    ]
    if not due:
        return
    ids = [r.id for r in due]
    retry_at = now + rt.settings.deletion_retry_interval
    try:
        accepted = set(await rt.calls.decrease(ids))
    except ProviderError as exc:
        log.warning(
            "decrease of %d instances failed, retrying in %.0fs: %s",
            len(ids),
            rt.settings.deletion_retry_interval,
            exc,
            extra={"fleet": rt.name, "instances": ids},
        )
        accepted = set()
    for record in due:
        record.delete_due = retry_at
        if record.id in accepted and rt.records.get(record.id) is record:
            rt.move(record, Trigger.DELETE_ACCEPTED)
            if record.deletion_requested_at is None:
                record.deletion_requested_at = now
                rt.book.instance_operations["delete"] += 1
    if accepted:
        rt.poll_soon(now)


async def provision(rt: Runtime, count: int) -> None:
    """Ask ``increase`` for ``count`` instances, as far as throttle and backoff allow."""
    now = loop_time()
    if now < rt.scale_up_not_before:
        return
    granted = count
    if rt.bucket is not None:
        granted, rt.bucket = rt.bucket.take(count, now)
        if granted < count:
            rt.throttled_until = rt.bucket.next_available(now)
        if granted == 0:
            return
    try:
        accepted = await rt.calls.increase(granted)
    except ProviderError as exc:
        backoff = rt.pause_scale_ups(loop_time())
        rt.book.scale_operations["up_failure"] += 1
        log.warning(
            "increase(%d) failed, scale-ups paused %.0fs: %s",
            granted,
            backoff,
            exc,
            extra={
                "fleet": rt.name,
                "asked": granted,
                "throttled": isinstance(exc, Throttled),
            },
        )
        return
    now = loop_time()
    rt.requested.extend([now] * accepted)
    rt.book.scale_operations["up"] += 1
    rt.book.instance_operations["create"] += accepted
    if accepted < granted:
        log.info(
            "increase(%d): the provider accepted %d",
            granted,
            accepted,
            extra={"fleet": rt.name, "asked": granted, "accepted": accepted},
        )
    rt.publish(InstancesRequested(now, granted, accepted))
    if accepted:
        rt.poll_soon(now)
    else:
        # Nothing accepted is not an error (a quota, a full group), but asking
        # again on every tick would hammer the provider: back off as after one.
        rt.pause_scale_ups(now)
