"""The planner tests' oracle: fleet slots counted from first principles, and the
safety checks every plan must pass. Shared by the property tests and the state
machine; no tests of its own."""

from __future__ import annotations

import math
from collections import Counter

import attrs

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import IdleExpired, OverMaxInstances, Plan, plan
from fleetkit.policy import Policy
from fleetkit.testing.strategies import apply_plan

LEAVING = {InstanceState.DELETING, InstanceState.DELETED}
BOOTING = {InstanceState.CREATING, InstanceState.RUNNING}


def takes_jobs(instance: Instance, limits: Limits) -> bool:
    """Ready, under the failure threshold and under max_use_count."""
    healthy = not (
        limits.failure_threshold and instance.health_failures >= limits.failure_threshold
    )
    fresh = not (limits.max_use_count and instance.use_count >= limits.max_use_count)
    return instance.state is InstanceState.READY and healthy and fresh


@attrs.frozen
class Census:
    """Slots of a fleet counted from first principles."""

    idle: int  # a job could take it now
    unready: int  # on an instance (or request) not ready yet
    acquired: int
    all_instances: int


def census(snapshot: Snapshot, limits: Limits) -> Census:
    cap = limits.capacity_per_instance
    idle = acquired = 0
    unready = snapshot.requested * cap
    for i in snapshot.instances:
        if i.state in LEAVING:
            continue
        acquired += len(i.slots_in_use)
        if i.state in BOOTING:
            unready += cap - len(i.slots_in_use)
        elif takes_jobs(i, limits):
            free = cap - len(i.slots_in_use)
            if limits.max_use_count:
                free = min(free, limits.max_use_count - i.use_count)
            idle += max(free, 0)
    return Census(idle, unready, acquired, snapshot.requested + len(snapshot.instances))


def check_safety(snapshot: Snapshot, limits: Limits, the_plan: Plan) -> None:
    """The safety properties every plan must have, whatever the fleet."""
    by_id = snapshot.by_id()
    # Never give one slot twice, nor a slot already held.
    pairs = Counter((a.instance_id, a.slot) for a in the_plan.assignments)
    assert all(n == 1 for n in pairs.values()), pairs
    per_instance = Counter(a.instance_id for a in the_plan.assignments)
    for a in the_plan.assignments:
        instance = by_id[a.instance_id]
        assert a.slot not in instance.slots_in_use, a
        assert 0 <= a.slot < limits.capacity_per_instance, a
        # Only on ready, healthy instances with uses left, within those uses.
        assert takes_jobs(instance, limits), (a, instance)
        if limits.max_use_count:
            assert instance.use_count + per_instance[a.instance_id] <= limits.max_use_count
    # Keys are served in arrival order, each at most once.
    keys = [a.key for a in the_plan.assignments]
    assert keys == list(snapshot.pending[: len(keys)])
    # Never remove an instance holding a slot, nor one just given a job.
    for removal in the_plan.deprovisions:
        assert not by_id[removal.instance_id].slots_in_use, removal
        assert removal.instance_id not in per_instance, removal
        assert by_id[removal.instance_id].state not in LEAVING, removal
    assert len({d.instance_id for d in the_plan.deprovisions}) == len(the_plan.deprovisions)
    # Never beyond max_instances, counting every state.
    if the_plan.provision is not None and limits.max_instances:
        total = snapshot.requested + len(snapshot.instances) + the_plan.provision.count
        assert total <= limits.max_instances, the_plan.provision
    # Over max_instances, nothing is provisioned.
    if any(isinstance(d.reason, OverMaxInstances) for d in the_plan.deprovisions):
        assert the_plan.provision is None


def check_capacity_kept(snapshot: Snapshot, limits: Limits, the_plan: Plan, now: float) -> None:
    """Removals leave what reservations and waiting keys need; waiting keys are served."""
    after = census(apply_plan(snapshot, the_plan, now), limits)
    reserved = the_plan.figures.reserved
    waiting = len(snapshot.pending) - len(the_plan.assignments)
    chosen = [
        d
        for d in the_plan.deprovisions
        if type(d.reason).__name__ in {"IdleExpired", "OverMaxInstances"}
    ]
    if chosen:
        # Capacity the plan chose to remove was not what reservations and waiting keys need.
        assert after.idle + after.unready >= reserved + waiting
    by_id = snapshot.by_id()
    if any(by_id[d.instance_id].state is InstanceState.READY for d in chosen):
        # Reservations were granted on ready slots: removals leave one for each.
        assert after.idle >= reserved
    if waiting:
        # Pending demand below the limits is served by an assignment or a provision.
        at_limit = limits.max_instances and after.all_instances >= limits.max_instances
        assert after.idle == 0
        assert at_limit or after.unready >= waiting, (after, waiting)


def check_expired_left_are_needed(
    snapshot: Snapshot, policy: Policy, limits: Limits, now: float
) -> None:
    """No churn (gitlab-runner#37673), as liveness: in a fleet where a plan was just
    carried out, every idle instance past ``idle_time`` that is still there is
    needed: without it demand would want another instance, or a reservation
    would lose its ready slot."""
    idle_time = policy.idle_time.total_seconds()
    for instance in snapshot.instances:
        if instance.slots_in_use or not takes_jobs(instance, limits):
            continue
        since = instance.idle_since if instance.idle_since is not None else instance.ready_at
        if since is None or now - since < idle_time:
            continue
        without = attrs.evolve(
            snapshot,
            instances=tuple(
                attrs.evolve(i, state=InstanceState.DELETING) if i.id == instance.id else i
                for i in snapshot.instances
            ),
        )
        figures = plan(without, policy, limits, now).figures
        # Wanted, even where max_instances (which the instance on its way out
        # still counts against) keeps the plan from asking for it.
        wanted = math.ceil(figures.demand_slots / limits.capacity_per_instance) > figures.instances
        short = census(without, limits).idle < len(snapshot.reservations)
        assert wanted or short, f"{instance.id} kept for nothing"


def check_no_replacement(
    snapshot: Snapshot, policy: Policy, limits: Limits, now: float, the_plan: Plan
) -> None:
    """No churn (gitlab-runner#37673): removing expired idle instances never makes
    the plan provision more than it would had they not expired."""
    removed = {d.instance_id for d in the_plan.deprovisions if isinstance(d.reason, IdleExpired)}
    if not removed:
        return
    fresh = attrs.evolve(
        snapshot,
        instances=tuple(
            attrs.evolve(i, idle_since=now) if i.id in removed else i for i in snapshot.instances
        ),
    )
    counterfactual = plan(fresh, policy, limits, now).provision
    count = the_plan.provision.count if the_plan.provision else 0
    assert count <= (counterfactual.count if counterfactual else 0), the_plan
