"""Hypothesis strategies for fleetkit's value types, and a reference plan applier.

Use them to property-test code built on the planner: a what-if script, a
runtime of your own, a policy you are about to deploy::

    from hypothesis import given
    from fleetkit.planner import plan
    from fleetkit.testing.strategies import fleets

    @given(fleets())
    def test_my_policy_never_removes_a_busy_instance(fleet):
        snapshot, policy, limits, now = fleet
        ...

Every strategy draws small values on purpose (a handful of instances, slots and
keys): planner bugs show up at the edges (capacity 1, max_use_count 1, a full
fleet), and hypothesis shrinks small examples to readable ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import attrs
from hypothesis import strategies as st

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import Plan
from fleetkit.policy import Policy

__all__ = [
    "apply_plan",
    "cron_periods",
    "fleets",
    "instances",
    "limits",
    "policies",
    "snapshots",
]

_STATES = [
    InstanceState.CREATING,
    InstanceState.RUNNING,
    InstanceState.READY,
    InstanceState.READY,
    InstanceState.READY,
    InstanceState.DRAINING,
    InstanceState.DELETING,
    InstanceState.DELETED,
]


def _cron_field(low: int, high: int, names: Sequence[str] = ()) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    single = number.map(str) | (st.sampled_from(list(names)) if names else number.map(str))
    span = st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}")
    stepped = st.tuples(span | st.just("*"), st.integers(1, max(1, high - low))).map(
        lambda rs: f"{rs[0]}/{rs[1]}"
    )
    listed = st.lists(single | span, min_size=2, max_size=3).map(",".join)
    return st.just("*") | single | span | stepped | listed


def cron_periods() -> st.SearchStrategy[str]:
    """Five-field cron periods as GitLab's policies take them: ``*``, numbers,
    ranges, steps, lists, and month and weekday names."""
    months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    return (
        st.tuples(
            _cron_field(0, 59),
            _cron_field(0, 23),
            _cron_field(1, 31),
            _cron_field(1, 12, months),
            _cron_field(0, 7, days),
        )
        .map(" ".join)
        .filter(_fires)
    )


def _fires(period: str) -> bool:
    # Days a month never has ("0 0 31 2 *") make a period that never matches,
    # which Policy refuses.
    try:
        Policy(periods=(period,))
    except ValueError:
        return False
    return True


def policies(
    *, periods: st.SearchStrategy[tuple[str, ...]] | None = None
) -> st.SearchStrategy[Policy]:
    """Idle policies with GitLab's knobs over small ranges; periods default to
    ``* * * * *`` unless a strategy for them is given."""
    return st.builds(
        Policy,
        idle_count=st.integers(0, 12),
        idle_time=st.integers(0, 3600).map(lambda s: timedelta(seconds=s)),
        scale_factor=st.sampled_from([0.0, 0.5, 1.0, 1.5]) | st.floats(0, 3),
        scale_factor_limit=st.integers(0, 20),
        preemptive_mode=st.none() | st.booleans(),
        periods=periods if periods is not None else st.just(("* * * * *",)),
        timezone=st.sampled_from([None, "UTC", "Europe/Berlin", "America/New_York"]),
    )


def limits(*, max_instances: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Limits]:
    """Limits with 1-6 slots per instance, optional use and instance caps, an
    optional failure threshold and ready timeout."""
    return st.builds(
        Limits,
        capacity_per_instance=st.integers(1, 6),
        max_use_count=st.sampled_from([0, 0, 1, 2, 5]),
        max_instances=max_instances if max_instances is not None else st.integers(0, 12),
        failure_threshold=st.integers(0, 4),
        ready_timeout=st.none() | st.floats(30, 900),
    )


@st.composite
def instances(draw: st.DrawFn, limits: Limits, now: float, iid: str = "i") -> Instance:
    """One instance consistent with ``limits`` as of ``now``: slots within the
    capacity, a use count at least the slots held, times not after ``now``."""
    state = draw(st.sampled_from(_STATES))
    created_at = draw(st.floats(0, now))
    booting = state in {InstanceState.CREATING, InstanceState.RUNNING}
    ready_at = None if booting else draw(st.floats(created_at, now))
    slots: frozenset[int] = frozenset()
    if not booting:
        slots = draw(st.frozensets(st.integers(0, limits.capacity_per_instance - 1)))
    top = limits.max_use_count or 8
    use_count = draw(st.integers(len(slots), max(len(slots), top)))
    idle_since = None
    if ready_at is not None and not slots:
        idle_since = draw(st.none() | st.floats(ready_at, now))
    return Instance(
        id=iid,
        state=state,
        created_at=created_at,
        ready_at=ready_at,
        slots_in_use=slots,
        use_count=use_count,
        idle_since=idle_since,
        health_failures=draw(st.integers(0, 5)),
        drain_reason=draw(st.none() | st.just("operator")),
    )


@st.composite
def snapshots(draw: st.DrawFn, limits: Limits, now: float, *, max_instances: int = 10) -> Snapshot:
    """A fleet of up to ``max_instances`` instances with unique ids, plus unique
    pending and reserved keys and a few requested instances."""
    count = draw(st.integers(0, max_instances))
    members = tuple(draw(instances(limits, now, iid=f"i{n}")) for n in range(count))
    keys = draw(st.lists(st.integers(0, 40), unique=True, max_size=16))
    split = draw(st.integers(0, len(keys)))
    return Snapshot(
        instances=members,
        pending=tuple(f"job{k}" for k in keys[:split]),
        reservations=tuple(f"job{k}" for k in keys[split:]),
        requested=draw(st.integers(0, 3)),
    )


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Snapshot, Policy, Limits, float]:
    """Everything ``plan()`` takes: (snapshot, policy, limits, now)."""
    chosen = draw(limits())
    now = draw(st.floats(0, 20_000))
    return draw(snapshots(chosen, now)), draw(policies()), chosen, now


def apply_plan(snapshot: Snapshot, the_plan: Plan, now: float) -> Snapshot:
    """The fleet right after a runtime carried out ``the_plan`` at ``now``.

    A reference for tests and what-if scripts: assigned keys leave ``pending``
    and hold their slots (one more use each), provisioned instances are
    ``requested``, removed instances are ``DELETING``. Nothing else moves: time
    does not pass and no job ends.
    """
    by_id = {i.id: i for i in snapshot.instances}
    taken: dict[str, set[int]] = {}
    for assignment in the_plan.assignments:
        taken.setdefault(assignment.instance_id, set()).add(assignment.slot)
    for instance_id, slots in taken.items():
        old = by_id[instance_id]
        by_id[instance_id] = attrs.evolve(
            old, slots_in_use=old.slots_in_use | slots, use_count=old.use_count + len(slots)
        )
    for removal in the_plan.deprovisions:
        by_id[removal.instance_id] = attrs.evolve(
            by_id[removal.instance_id], state=InstanceState.DELETING
        )
    assigned = {a.key for a in the_plan.assignments}
    added = the_plan.provision.count if the_plan.provision else 0
    return Snapshot(
        instances=tuple(by_id[i.id] for i in snapshot.instances),
        pending=tuple(k for k in snapshot.pending if k not in assigned),
        reservations=snapshot.reservations,
        requested=snapshot.requested + added,
    )
