"""The figures of a replay: wait, instance-minutes by state, churn, cost.

Instance-minutes count what a cloud bills: from the create call until the
instance is gone, within the replay's window (the trace's start to the later of
its end and the last job's end). They split into *booting* (requested, not yet
ready: boot time and ready-up), *busy* (at least one slot held) and *idle* (the
rest, including draining and deleting). The clairvoyant lower bound is the
job-minutes divided by the slots per instance: what a fleet that knew the
future and booted in no time would pay, with no job waiting.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import attrs

from fleetkit.simulate._replay import Replay

__all__ = ["JSON_KEYS", "Figures", "Series", "figures", "lower_bound_minutes", "series"]

#: The keys of :meth:`Figures.to_json` every config has, in order (the issue's
#: list first, then the other figures the report shows).
JSON_KEYS = (
    "config",
    "jobs",
    "wait_mean_s",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p99_s",
    "wait_max_s",
    "instance_minutes",
    "busy_instance_minutes",
    "idle_instance_minutes",
    "booting_instance_minutes",
    "instances_created",
    "instances_deleted",
    "instances_unused",
    "cost",
    "jobs_waited_over_threshold",
    "wait_threshold_s",
    "time_at_max_instances_s",
    "jobs_retried",
    "jobs_failed",
    "jobs_unfinished",
    "lower_bound_instance_minutes",
    "lower_bound_cost",
)


@attrs.frozen(kw_only=True)
class Figures:
    """One config's figures over one trace (times in seconds, instance-time in minutes)."""

    config: str
    jobs: int
    wait_mean_s: float
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    wait_max_s: float
    instance_minutes: float
    busy_instance_minutes: float
    idle_instance_minutes: float
    booting_instance_minutes: float
    instances_created: int
    instances_deleted: int
    instances_unused: int
    cost: float
    jobs_waited_over_threshold: int
    wait_threshold_s: float
    time_at_max_instances_s: float
    jobs_retried: int
    jobs_failed: int
    jobs_unfinished: int
    lower_bound_instance_minutes: float
    lower_bound_cost: float

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON object with the keys of :data:`JSON_KEYS`."""
        out: dict[str, Any] = {}
        for key in JSON_KEYS:
            value = getattr(self, key)
            out[key] = round(value, 3) if isinstance(value, float) else value
        return out


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linear between ranks (numpy's default)."""
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def lower_bound_minutes(job_seconds: float, capacity: int) -> float:
    """Instance-minutes a clairvoyant fleet with instant boots would need."""
    return job_seconds / capacity / 60.0


def _union(intervals: list[tuple[float, float]], begin: float, end: float) -> float:
    """The time within [begin, end] that the intervals cover."""
    total = 0.0
    cur_start = cur_end = -math.inf
    for start, stop in sorted(intervals):
        start = max(start, begin)
        stop = min(stop, end)
        if stop <= start:
            continue
        if start > cur_end:
            if cur_end > cur_start:
                total += cur_end - cur_start
            cur_start, cur_end = start, stop
        elif stop > cur_end:
            cur_end = stop
    if cur_end > cur_start:
        total += cur_end - cur_start
    return total


def figures(
    run: Replay, *, wait_threshold: float, price_per_hour: float, since: float = 0.0
) -> Figures:
    """The figures of ``run``, counting from ``since`` seconds into the trace.

    From ``since`` on: the jobs that arrived then or later, instance-time
    within the window, instances created and deleted in it.
    """
    end = run.end
    jobs = [i for i, job in enumerate(run.trace.jobs) if job.arrival >= since]
    waits = sorted(run.waits[i] for i in jobs)
    booting = busy = total = 0.0
    created = deleted = unused = 0
    for life in run.lives:
        start = max(life.requested_at, since)
        gone = min(life.ended_at, end)
        if gone <= start and not (since <= life.ended_at <= end):
            continue
        total += max(0.0, gone - start)
        ready = run.ready_at.get(life.id, math.inf)
        booting += max(0.0, min(ready, gone) - start)
        held = run.holds.get(life.id)
        if held:
            busy += _union(held, start, gone)
        if not life.preloaded and life.requested_at >= since:
            created += 1
        if since <= life.ended_at <= end:
            deleted += 1
            if not held:
                unused += 1
    idle = max(0.0, total - booting - busy)
    job_seconds = math.fsum(run.trace.jobs[i].duration for i in jobs)
    bound = lower_bound_minutes(job_seconds, run.capacity)
    failed = sum(1 for i in jobs if i in run.failed_jobs)
    unfinished = sum(1 for i in jobs if math.isnan(run.finished[i])) - failed
    return Figures(
        config=run.config.name,
        jobs=len(jobs),
        wait_mean_s=math.fsum(waits) / len(waits) if waits else 0.0,
        wait_p50_s=percentile(waits, 0.50),
        wait_p95_s=percentile(waits, 0.95),
        wait_p99_s=percentile(waits, 0.99),
        wait_max_s=waits[-1] if waits else 0.0,
        instance_minutes=total / 60.0,
        busy_instance_minutes=busy / 60.0,
        idle_instance_minutes=idle / 60.0,
        booting_instance_minutes=booting / 60.0,
        instances_created=created,
        instances_deleted=deleted,
        instances_unused=unused,
        cost=total / 3600.0 * price_per_hour,
        jobs_waited_over_threshold=sum(1 for w in waits if w > wait_threshold),
        wait_threshold_s=wait_threshold,
        time_at_max_instances_s=_time_at_max(run, since),
        jobs_retried=sum(run.retries[i] for i in jobs),
        jobs_failed=failed,
        jobs_unfinished=unfinished,
        lower_bound_instance_minutes=bound,
        lower_bound_cost=bound / 60.0 * price_per_hour,
    )


def _time_at_max(run: Replay, since: float) -> float:
    if not run.max_instances:
        return 0.0
    steps = sorted(
        [(life.requested_at, 1) for life in run.lives]
        + [(life.ended_at, -1) for life in run.lives if life.ended_at < run.end]
    )
    alive, previous, total = 0, 0.0, 0.0
    for at, change in steps:
        if alive >= run.max_instances:
            total += max(0.0, at - max(previous, since))
        alive += change
        previous = max(previous, at)
    if alive >= run.max_instances:
        total += max(0.0, run.end - max(previous, since))
    return total


@attrs.frozen
class Series:
    """Samples every ``step`` seconds from the trace's start: jobs in the system
    (waiting or running) as slots of demand, ready slots, and instances billed."""

    step: float
    demand: tuple[int, ...]
    capacity: tuple[int, ...]
    instances: tuple[int, ...]


def series(run: Replay, step: float) -> Series:
    """Demand against capacity over the replay, sampled every ``step`` seconds."""
    arrivals = sorted(j.arrival for j in run.trace.jobs)
    ends = sorted(f if not math.isnan(f) else math.inf for f in run.finished)
    ready = sorted(run.ready_at.values())
    unready = sorted(
        min(run.draining_at.get(life.id, math.inf), life.ended_at)
        for life in run.lives
        if life.id in run.ready_at
    )
    requested = sorted(life.requested_at for life in run.lives)
    gone = sorted(life.ended_at for life in run.lives)
    points = [i * step for i in range(int(run.end // step) + 1)]

    def count(ups: list[float], downs: list[float], at: float) -> int:
        return bisect.bisect_right(ups, at) - bisect.bisect_right(downs, at)

    cap = run.capacity
    return Series(
        step=step,
        demand=tuple(count(arrivals, ends, t) for t in points),
        capacity=tuple(cap * count(ready, unready, t) for t in points),
        instances=tuple(count(requested, gone, t) for t in points),
    )
