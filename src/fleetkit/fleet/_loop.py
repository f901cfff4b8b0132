"""The update loop: one planning tick at a time, then sleep until something is due.

A tick polls the provider when due, asks the pure planner for a plan on a
frozen snapshot, and carries it out (assignments, then removals, deletions and
the increase); then the loop sleeps until the earliest of the next poll, idle
expiry, ready timeout, deletion retry, end of a backoff or throttle, heartbeat
round or policy change, or until :meth:`Runtime.wake`.
"""

from __future__ import annotations

import math
from datetime import timedelta

import anyio

from fleetkit.fleet._acquiring import grant_assignments
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._health import start_heartbeats
from fleetkit.fleet._polling import expire_requests, poll
from fleetkit.fleet._runtime import Runtime
from fleetkit.fleet._scaling import issue_deletions, mark_removals, provision, report_plan
from fleetkit.model import InstanceState
from fleetkit.planner import plan
from fleetkit.policy import Policy

__all__ = ["run"]

S = InstanceState


async def run(rt: Runtime) -> None:
    """Tick, then sleep until the next tick is due or the loop is woken; for ever."""
    while True:
        rt.woken = False
        started = loop_time()
        delay = await _tick(rt)
        rt.tick_cost = loop_time() - started
        if not rt.woken:
            rt.wake_event = anyio.Event()
            with anyio.move_on_after(max(delay, 0.0)):
                await rt.wake_event.wait()
        if rt.woken:
            # A burst of acquires, releases or ready-ups is served by one tick:
            # a tick costs O(instances), and nothing urgent waits for it
            # (waiting acquisitions are served at release and at ready-up).
            # Waiting at least as long as the last tick took keeps the loop
            # under half of the CPU on a big fleet.
            await anyio.sleep(max(rt.settings.wake_coalesce, rt.tick_cost))


async def _tick(rt: Runtime) -> float:
    now = loop_time()
    if now >= rt.next_poll:
        await poll(rt)
        now = loop_time()
    expire_requests(rt, now)
    policy = rt.policy_at(now)
    the_plan = plan(rt.snapshot(), policy, rt.limits, now)
    rt.desired = the_plan.figures.desired_instances
    grant_assignments(rt, the_plan, now)
    report_plan(rt, the_plan, now)
    mark_removals(rt, the_plan.deprovisions, now)
    await issue_deletions(rt, now)
    if the_plan.provision is not None:
        await provision(rt, the_plan.provision.count)
    start_heartbeats(rt, loop_time())
    rt.persist()
    now = loop_time()
    return _next_wake(rt, now, policy) - now


def _next_wake(rt: Runtime, now: float, policy: Policy) -> float:
    wake = rt.next_poll
    idle_time = policy.idle_time.total_seconds()
    ready_timeout = rt.limits.ready_timeout
    for record in rt.records.values():
        state = record.state
        if state is S.READY and not record.slots:
            since = record.idle_since if record.idle_since is not None else record.ready_at
            if since is not None:
                # Just past the instant, so the planner's "idle for >= idle_time"
                # holds despite float rounding.
                expiry = _just_after(since + idle_time)
                if now < expiry < wake:
                    wake = expiry
        elif ready_timeout is not None and state in (S.CREATING, S.RUNNING):
            deadline = _just_after(record.created_at + ready_timeout)
            if now < deadline < wake:
                wake = deadline
        if record.delete_due is not None and not record.slots and record.delete_due < wake:
            wake = record.delete_due
    for t in (rt.scale_up_not_before, rt.throttled_until, rt.next_heartbeat):
        if now < t < wake:
            wake = t
    change = _next_policy_change(rt, now, wake)
    if change is not None and change < wake:
        wake = change
    return wake


def _next_policy_change(rt: Runtime, now: float, before: float) -> float | None:
    assert rt.wall_clock is not None
    wall = rt.wall_clock(now)
    horizon = timedelta(seconds=min(before - now, 86400.0) + 60.0)
    change = rt.schedule.next_change(wall, horizon=horizon)
    if change is None:
        return None
    return now + (change - wall).total_seconds()


def _just_after(t: float) -> float:
    return math.nextafter(t + abs(t) * 1e-12, math.inf)
