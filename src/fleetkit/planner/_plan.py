"""``plan()``: one pure decision pass over a fleet snapshot.

Theory of operation. The planner works in slots. Every instance that counts as
capacity (requested, creating, running, ready, draining) holds
``capacity_per_instance`` slots, and each slot is in exactly one bucket:

* *acquired*: a job holds it;
* *idle*: free on a ready, healthy instance with uses left, so a job could take it now;
* *unready*: on an instance not ready yet (requested, creating, running);
* *unavailable*: free but never usable again (draining, unhealthy, or beyond the
  instance's remaining uses).

Demand is ``acquired + unavailable + reserved + pending + idle_target`` slots
(taskscaler's formula, spec section 2.2); desired instances are that demand
divided by the capacity, rounded up, clamped by ``max_instances``. Because the
unavailable slots are on both sides, ``instances * capacity >= demand`` says
exactly that idle plus unready slots cover reservations, pending keys and the
idle target.

The pass, in order:

1. pending keys get slots (``_assign``); everything after sees the fleet as it
   will be once those are applied, so planning again after applying the plan
   at the same instant changes nothing;
2. free instances that can never serve again are removed: drained, unhealthy,
   use count exhausted, not ready within ``ready_timeout``;
3. the figures are counted;
4. idle instances past ``idle_time`` are removed, longest idle first, while the
   instances left after the plan (provisions included) still cover demand and
   every reservation keeps a ready slot;
5. instances over a lowered ``max_instances`` are removed, free ones only,
   keeping what reservations and waiting keys need;
6. when demand exceeds what is left, instances are provisioned, never beyond
   ``max_instances`` counting every state.

An instance with an acquired slot is never removed. Deleting and deleted
instances are not capacity, but count against ``max_instances``.
"""

from __future__ import annotations

from fleetkit.errors import PlanInputError, Problem
from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner._accounting import classify
from fleetkit.planner._assign import assign
from fleetkit.planner._decisions import (
    Deprovision,
    Drained,
    Figures,
    IdleExpired,
    NotReadyInTime,
    OverMaxInstances,
    Plan,
    Provision,
    RemovalReason,
    Unhealthy,
    UseCountExhausted,
)
from fleetkit.policy import Policy, idle_target

__all__ = ["plan"]

_READY = InstanceState.READY
_DRAINING = InstanceState.DRAINING
_DELETING = InstanceState.DELETING
_DELETED = InstanceState.DELETED


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _idle_ref(instance: Instance) -> float:
    # Idle age counts from the end of the last job, else from becoming ready.
    if instance.idle_since is not None:
        return instance.idle_since
    if instance.ready_at is not None:
        return instance.ready_at
    return instance.created_at


def _check(snapshot: Snapshot) -> frozenset[str]:
    """Reject snapshots the runtime cannot have meant; return the pending keys."""
    problems: list[Problem] = []
    pending = frozenset(snapshot.pending)
    if len(pending) != len(snapshot.pending):
        seen: set[str] = set()
        for index, key in enumerate(snapshot.pending):
            if key in seen:
                problems.append(Problem(f"snapshot.pending[{index}]", f"key {key!r} is repeated"))
            seen.add(key)
    if len({i.id for i in snapshot.instances}) != len(snapshot.instances):
        seen = set()
        for index, instance in enumerate(snapshot.instances):
            if instance.id in seen:
                problems.append(
                    Problem(f"snapshot.instances[{index}]", f"id {instance.id!r} is repeated")
                )
            seen.add(instance.id)
    if snapshot.requested < 0:
        problems.append(Problem("snapshot.requested", f"must be >= 0, got {snapshot.requested}"))
    if problems:
        raise PlanInputError(problems)
    return pending


def _forced_reason(
    instance: Instance, uses: int, unhealthy: bool, limits: Limits, now: float
) -> RemovalReason | None:
    """Why a free instance must go whatever the demand, or ``None``."""
    state = instance.state
    if state is _DRAINING:
        return Drained(instance.drain_reason or "drained")
    if unhealthy:
        return Unhealthy(instance.health_failures, limits.failure_threshold)
    if state is _READY and limits.max_use_count and uses >= limits.max_use_count:
        return UseCountExhausted(uses, limits.max_use_count)
    if state is not _READY and limits.ready_timeout is not None:
        waited = now - instance.created_at
        if waited >= limits.ready_timeout:
            return NotReadyInTime(waited, limits.ready_timeout)
    return None


def _trim_over_max(
    removals: list[Deprovision],
    free_ready: list[tuple[float, float, str, int, int]],
    booting_free: list[Instance],
    limits: Limits,
    counted: int,
    idle: int,
    unready: int,
    demand: int,
    unavailable: int,
    waiting: int,
    reserved: int,
) -> tuple[int, int, int, int, int]:
    """Remove free instances beyond a lowered ``max_instances``; return the new
    counted, idle, unready, demand and unavailable figures."""
    over = counted
    cap = limits.capacity_per_instance
    removed = {d.instance_id for d in removals}
    # Booting ones first (newest first), then ready ones (longest idle first): keep
    # what is warm. Never below what reservations and pending keys wait for.
    candidates = [
        (i.id, 0, cap, 0) for i in sorted(booting_free, key=lambda i: (-i.created_at, i.id))
    ]
    candidates += [(row[2], row[3], 0, row[4]) for row in free_ready if row[2] not in removed]
    for instance_id, usable, booting, lost in candidates:
        if counted <= limits.max_instances:
            break
        if idle - usable + unready - booting < waiting:
            continue
        # As for idle removals: each reservation keeps a ready slot.
        if usable and idle - usable < reserved:
            continue
        removals.append(Deprovision(instance_id, OverMaxInstances(over, limits.max_instances)))
        counted -= 1
        idle -= usable
        unready -= booting
        demand -= lost
        unavailable -= lost
    return counted, idle, unready, demand, unavailable


def _idle_removals(
    free_ready: list[tuple[float, float, str, int, int]],
    now: float,
    idle_time: float,
    idle: int,
    reserved: int,
    after: int,
    demand: int,
    cap: int,
    allowed: set[str] | None = None,
) -> tuple[list[Deprovision], tuple[int, int, int, int]]:
    """Idle instances past ``idle_time`` to remove (``free_ready`` sorted, longest
    idle first), and the after, demand, idle and unavailable-slots-removed figures
    once they go. ``allowed``: only these may go."""
    removals: list[Deprovision] = []
    lost_total = 0
    for since, _, instance_id, usable, lost in free_ready:
        if now - since < idle_time:
            continue
        if allowed is not None and instance_id not in allowed:
            continue
        # Reservations were granted against ready slots: keep one for each.
        if idle - usable < reserved:
            continue
        if (after - 1) * cap < demand - lost:
            continue
        removals.append(Deprovision(instance_id, IdleExpired(now - since, idle_time)))
        after -= 1
        demand -= lost
        lost_total += lost
        idle -= usable
    return removals, (after, demand, idle, lost_total)


def plan(
    snapshot: Snapshot, policy: Policy, limits: Limits, now: float, *, demand_floor: int = 0
) -> Plan:
    """Decide assignments, provisioning and removals for ``snapshot`` at ``now``.

    ``now`` is on the same monotonic clock as the instances' ``created_at``,
    ``ready_at`` and ``idle_since``. Pure: the same inputs give the same plan.

    ``demand_floor`` (slots, e.g. :func:`fleetkit.forecast.demand_floor`) raises
    the idle target so that slots in use, waiting and idle reach it; it never
    lowers it. An idle instance is removed under a floor only if the plan
    without the floor removes it too: nothing goes on a forecast alone.

    Raises :class:`~fleetkit.errors.PlanInputError` naming the snapshot field when
    a pending key or an instance id is repeated.
    """
    pending_keys = _check(snapshot)
    cap = limits.capacity_per_instance
    idle_time = policy.idle_time.total_seconds()
    assignments, given = assign(snapshot.instances, snapshot.pending, limits)

    removals: list[Deprovision] = []
    counted = snapshot.requested
    acquired = unavailable = idle = 0
    unready = snapshot.requested * cap
    # Fully free ready instances: (idle since, created, id, its idle slots, its
    # unavailable slots); and free instances still booting.
    free_ready: list[tuple[float, float, str, int, int]] = []
    booting_free: list[Instance] = []
    threshold = limits.failure_threshold
    for instance in snapshot.instances:
        state = instance.state
        # Identity tests, not set membership: Enum.__hash__ is Python code.
        if state is _DELETING or state is _DELETED:
            continue
        extra = given.get(instance.id, 0) if given else 0
        busy = len(instance.slots_in_use) + extra
        uses = instance.use_count + extra
        failures = instance.health_failures
        unhealthy = threshold > 0 and failures >= threshold
        if busy == 0:
            reason = _forced_reason(instance, uses, unhealthy, limits, now)
            if reason is not None:
                removals.append(Deprovision(instance.id, reason))
                continue
        counted += 1
        acquired += busy
        usable, booting, lost, failing = classify(state, busy, uses, failures, limits)
        # Demand counts unhealthy slots as unavailable: nobody can take them.
        lost += failing
        idle += usable
        unready += booting
        unavailable += lost
        if busy == 0:
            if state is _READY and not failing:
                free_ready.append(
                    (_idle_ref(instance), instance.created_at, instance.id, usable, lost)
                )
            elif booting:
                booting_free.append(instance)

    reserved = len(snapshot.reservations)
    if pending_keys:
        # A key that moved on from reserve to acquire is demand once, as pending.
        reserved -= sum(1 for key in snapshot.reservations if key in pending_keys)
    pending = len(snapshot.pending) - len(assignments)
    in_use = acquired + reserved
    reactive = idle_target(policy, in_use)
    target = max(reactive, demand_floor - in_use - pending) if demand_floor > 0 else reactive
    demand = acquired + unavailable + reserved + pending + target
    all_instances = snapshot.requested + len(snapshot.instances)
    max_instances = limits.max_instances

    # Instances on their way out still count against max_instances.
    ceiling = max(max_instances - (all_instances - counted), 0) if max_instances else None
    required = _ceil_div(demand, cap)
    # How many instances count once this plan is carried out. A removal is
    # allowed only if those, one fewer, still cover demand: so removing never
    # makes the plan provision more (no replacement for an expired instance,
    # gitlab-runner#37673), and applying the plan leaves nothing to remove next
    # time at the same instant.
    after = max(counted, required if ceiling is None else min(required, ceiling))
    free_ready.sort()
    allowed: set[str] | None = None
    reactive_after = reactive_demand = 0
    if target > reactive:
        # What the reactive policy alone would remove: the floor may keep more, never less.
        reactive_demand = demand - target + reactive
        reactive_after = max(
            counted,
            _ceil_div(reactive_demand, cap)
            if ceiling is None
            else min(_ceil_div(reactive_demand, cap), ceiling),
        )
        allowed = {
            d.instance_id
            for d in _idle_removals(
                free_ready, now, idle_time, idle, reserved, reactive_after, reactive_demand, cap
            )[0]
        }
    before_idle, before_demand = idle, demand
    expired, (after, demand, idle, lost_total) = _idle_removals(
        free_ready, now, idle_time, idle, reserved, after, demand, cap, allowed
    )
    if allowed is not None and max_instances and counted - len(expired) > max_instances:
        # max_instances outranks the floor: what the floor kept must go first, as the
        # reactive plan removes it, or the trim below would pick another instance and
        # the forecast would remove one the reactive policy keeps.
        expired, (_, _, idle, lost_total) = _idle_removals(
            free_ready,
            now,
            idle_time,
            before_idle,
            reserved,
            reactive_after,
            reactive_demand,
            cap,
        )
        demand = before_demand - lost_total
    removals += expired
    counted -= len(expired)
    unavailable -= lost_total
    if max_instances and counted > max_instances:
        counted, idle, unready, demand, unavailable = _trim_over_max(
            removals,
            free_ready,
            booting_free,
            limits,
            counted,
            idle,
            unready,
            demand,
            unavailable,
            reserved + pending,
            reserved,
        )
    required = _ceil_div(demand, cap)
    ceiling = max(max_instances - (all_instances - counted), 0) if max_instances else None
    desired = required if ceiling is None else min(required, ceiling)
    capped_by = "max_instances" if desired < required else None
    provision_count = max(desired - counted, 0)

    figures = Figures(
        acquired=acquired,
        reserved=reserved,
        pending=pending,
        unavailable=unavailable,
        in_use=in_use,
        idle_target=target,
        demand_slots=demand,
        instances=counted,
        desired_instances=desired,
        capped_by=capped_by,
        idle=idle,
        unready=unready,
        all_instances=all_instances,
    )
    provision = Provision(provision_count, figures) if provision_count > 0 else None
    return Plan(tuple(assignments), provision, tuple(removals), figures)
