"""Slot accounting and slot choice, written once for the planner and the runtime.

Every slot of an instance that is still capacity (not deleting or deleted) is in
exactly one of GitLab's task states (spec §2.1):

* *acquired*: a job holds it;
* *unhealthy*: free, on an instance past ``failure_threshold`` (whatever its
  lifecycle state: a failing instance is not capacity anyone may count on);
* *idle*: free on a ready, healthy instance with uses left: a job could take it now;
* *unavailable*: free but never usable again (draining, or beyond the
  instance's remaining uses);
* *unready*: free on an instance not ready yet (creating, running).

:func:`classify` says which, for one instance given as plain figures (the
planner's frozen :class:`~fleetkit.model.Instance` and the runtime's mutable
record both reduce to them); :func:`room` is the idle part alone, the number of
new jobs an instance can take now. The planner's demand, ``can_reserve``, the
fleet's ``stats()`` and the acquire path all count through these two, so they
cannot disagree. Slot choice is :func:`first_free`: the lowest free slot number.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import NamedTuple

from fleetkit.model import Instance, InstanceState, Limits

__all__ = ["SlotCounts", "classify", "count_instances", "first_free", "room"]

_READY = InstanceState.READY
_DRAINING = InstanceState.DRAINING
_DELETING = InstanceState.DELETING
_DELETED = InstanceState.DELETED

#: (idle, unready, unavailable, unhealthy) of an instance with no free slot.
_NONE = (0, 0, 0, 0)


class SlotCounts(NamedTuple):
    """Slots by GitLab task state (``pending`` and ``reserved`` are keys, not slots)."""

    idle: int = 0
    unready: int = 0
    unavailable: int = 0
    unhealthy: int = 0
    acquired: int = 0


def room(state: InstanceState, busy: int, uses: int, failures: int, limits: Limits) -> int:
    """How many new jobs an instance can take now: its free slots, bounded by its
    remaining uses; 0 unless it is ready and healthy."""
    if state is not _READY:
        return 0
    threshold = limits.failure_threshold
    if threshold and failures >= threshold:
        return 0
    free = limits.capacity_per_instance - busy
    max_use = limits.max_use_count
    if max_use and max_use - uses < free:
        free = max_use - uses
    return max(0, free)


def classify(
    state: InstanceState, busy: int, uses: int, failures: int, limits: Limits
) -> tuple[int, int, int, int]:
    """The free slots of one instance as ``(idle, unready, unavailable, unhealthy)``.

    ``busy`` slots are acquired; an instance deleting or deleted counts nothing.
    """
    if state is _DELETING or state is _DELETED:
        return _NONE
    cap = limits.capacity_per_instance
    free = cap - busy if busy < cap else 0
    if not free:
        return _NONE
    threshold = limits.failure_threshold
    if threshold and failures >= threshold:
        return (0, 0, 0, free)
    if state is _READY:
        usable = free
        max_use = limits.max_use_count
        if max_use and max_use - uses < free:
            usable = max_use - uses if uses < max_use else 0
        return (usable, 0, free - usable, 0)
    if state is _DRAINING:
        return (0, 0, free, 0)
    return (0, free, 0, 0)


def count_instances(instances: Iterable[Instance], limits: Limits, requested: int) -> SlotCounts:
    """Slots by task state over frozen instances, plus ``requested`` instances
    not yet seen (their slots are unready)."""
    idle = unready = unavailable = unhealthy = acquired = 0
    for i in instances:
        if i.state is _DELETING or i.state is _DELETED:
            continue
        busy = len(i.slots_in_use)
        acquired += busy
        a, b, c, d = classify(i.state, busy, i.use_count, i.health_failures, limits)
        idle += a
        unready += b
        unavailable += c
        unhealthy += d
    unready += requested * limits.capacity_per_instance
    return SlotCounts(idle, unready, unavailable, unhealthy, acquired)


def first_free(used: Container[int], capacity: int) -> int:
    """The lowest slot number not in ``used`` (the caller knows one is free)."""
    for number in range(capacity):
        if number not in used:
            return number
    raise ValueError(f"no free slot among {capacity}")
