"""Slot choice for waiting acquisitions, and what an instance can still take.

Acquire packs: each pending key, in arrival order, goes to the oldest ready,
healthy instance with a free slot (oldest by ``ready_at``, then ``created_at``,
then id), lowest free slot number first. Packing leaves the newest instances
idle, so they are the ones whose idle time runs out (taskscaler walks its
instances "in the same order" on every acquire, ts!109).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from fleetkit.model import Instance, Limits
from fleetkit.planner import _accounting
from fleetkit.planner._decisions import Assignment

__all__ = ["assign", "is_unhealthy", "room", "seniority"]

_ID = attrgetter("id")
_CREATED = attrgetter("created_at")
_READY_AT = attrgetter("ready_at")


def _ready_or_created(instance: Instance) -> float:
    return instance.created_at if instance.ready_at is None else instance.ready_at


def is_unhealthy(instance: Instance, limits: Limits) -> bool:
    """Whether ``instance`` reached ``failure_threshold`` (0 turns the check off)."""
    threshold = limits.failure_threshold
    return threshold > 0 and instance.health_failures >= threshold


def room(instance: Instance, limits: Limits) -> int:
    """How many new jobs ``instance`` can take now: free slots, bounded by its
    remaining uses; 0 unless it is ready and healthy (:func:`_accounting.room`)."""
    return _accounting.room(
        instance.state,
        len(instance.slots_in_use),
        instance.use_count,
        instance.health_failures,
        limits,
    )


def seniority(instance: Instance) -> tuple[float, float, str]:
    """Sort key: the oldest ready instance first (never-ready ones by creation)."""
    ready_at = instance.ready_at
    return (
        instance.created_at if ready_at is None else ready_at,
        instance.created_at,
        instance.id,
    )


def assign(
    instances: Sequence[Instance], pending: Sequence[str], limits: Limits
) -> tuple[list[Assignment], dict[str, int]]:
    """Give each pending key a slot while any is free.

    Returns the assignments in arrival order of their keys and, per instance id,
    how many slots it just gave out.
    """
    assignments: list[Assignment] = []
    given: dict[str, int] = {}
    if not pending:
        return assignments, given
    cap = limits.capacity_per_instance
    fits = _accounting.room
    takers: list[Instance] = []
    unready = False
    for i in instances:
        if fits(i.state, len(i.slots_in_use), i.use_count, i.health_failures, limits):
            takers.append(i)
            unready = unready or i.ready_at is None
    # By (ready, created, id): three stable sorts on single keys.
    takers.sort(key=_ID)
    takers.sort(key=_CREATED)
    takers.sort(key=_ready_or_created if unready else _READY_AT)
    total = len(pending)
    next_key = 0
    free_slots: dict[frozenset[int], tuple[int, ...]] = {}
    # tuple.__new__ straight from a tuple: no Python-level __init__ per assignment.
    new_assignment = tuple.__new__
    append = assignments.append
    for instance in takers:
        used = instance.slots_in_use
        slots = free_slots.get(used)
        if slots is None:
            slots = free_slots[used] = tuple(s for s in range(cap) if s not in used)
        left = min(total - next_key, fits(instance.state, len(used), instance.use_count, 0, limits))
        if left < len(slots):
            slots = slots[:left]
        instance_id = instance.id
        for slot in slots:
            append(new_assignment(Assignment, (pending[next_key], instance_id, slot)))
            next_key += 1
        given[instance_id] = len(slots)
        if next_key == total:
            break
    return assignments, given
