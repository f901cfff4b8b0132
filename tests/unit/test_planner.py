"""Example tests of plan(): the seed document's examples and each rule by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetkit.errors import ConfigError, PlanInputError
from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import (
    Assignment,
    Deprovision,
    Drained,
    IdleExpired,
    NotReadyInTime,
    OverMaxInstances,
    Unhealthy,
    UseCountExhausted,
    plan,
)
from fleetkit.policy import Policy

READY = InstanceState.READY


def ready(
    iid: str,
    at: float = 0.0,
    *,
    slots: frozenset[int] = frozenset(),
    uses: int | None = None,
    idle_since: float | None = None,
    failures: int = 0,
    state: InstanceState = READY,
    drain_reason: str | None = None,
) -> Instance:
    return Instance(
        id=iid,
        state=state,
        created_at=at,
        ready_at=at,
        slots_in_use=slots,
        use_count=len(slots) if uses is None else uses,
        idle_since=idle_since,
        health_failures=failures,
        drain_reason=drain_reason,
    )


def booting(iid: str, at: float = 0.0, state: InstanceState = InstanceState.CREATING) -> Instance:
    return Instance(id=iid, state=state, created_at=at)


IDLE5 = Policy(idle_count=5, idle_time=timedelta(minutes=10))


def test_capacity_one_idle_count_five_keeps_five_idle_instances() -> None:
    """Seed example: capacity 1 with idle_count 5 provisions five idle instances."""
    p = plan(Snapshot(), IDLE5, Limits(capacity_per_instance=1), now=0.0)
    assert p.provision is not None
    assert p.provision.count == 5
    fleet = Snapshot(instances=tuple(ready(f"i{n}") for n in range(5)))
    assert plan(fleet, IDLE5, Limits(capacity_per_instance=1), now=3600.0).empty


@pytest.mark.parametrize(("in_use", "instances"), [(0, 1), (1, 2), (4, 2), (5, 2), (6, 3)])
def test_capacity_five_idle_count_five_keeps_one_idle_instance(in_use: int, instances: int) -> None:
    """Seed example: capacity 5, idle_count 5 wants ceil((in_use + 5) / 5) instances."""
    slots = frozenset(range(min(in_use, 5)))
    fleet = [ready("a", slots=slots)]
    if in_use > 5:
        fleet.append(ready("b", 1.0, slots=frozenset(range(in_use - 5))))
    p = plan(Snapshot(instances=tuple(fleet)), IDLE5, Limits(capacity_per_instance=5), now=10.0)
    assert p.figures.desired_instances == instances
    assert (p.provision.count if p.provision else 0) == instances - len(fleet)
    assert p.deprovisions == ()


def test_max_use_count_one_never_reuses_an_instance() -> None:
    """Seed example: with max_use_count 1 a used instance takes no job and goes when free."""
    limits = Limits(capacity_per_instance=1, max_use_count=1)
    used = ready("used", uses=1, idle_since=5.0)
    p = plan(Snapshot(instances=(used,), pending=("job",)), Policy(), limits, now=6.0)
    assert p.assignments == ()
    assert p.deprovisions == (Deprovision("used", UseCountExhausted(1, 1)),)
    assert p.provision is not None
    assert p.provision.count == 1


def test_assignment_packs_oldest_instance_lowest_slot_first() -> None:
    """Pending keys fill the oldest ready instance's lowest free slots, in arrival order."""
    fleet = (
        ready("new", 20.0),
        ready("old", 10.0, slots=frozenset({0, 2})),
        ready("sick", 1.0, failures=3),
    )
    p = plan(
        Snapshot(instances=fleet, pending=("k1", "k2", "k3")),
        Policy(),
        Limits(capacity_per_instance=4),
        30.0,
    )
    assert p.assignments == (
        Assignment("k1", "old", 1),
        Assignment("k2", "old", 3),
        Assignment("k3", "new", 0),
    )


def test_remaining_uses_bound_free_slots() -> None:
    """An instance with two uses left takes two jobs even with four free slots."""
    limits = Limits(capacity_per_instance=4, max_use_count=5)
    p = plan(
        Snapshot(instances=(ready("a", uses=3),), pending=("k1", "k2", "k3")),
        Policy(),
        limits,
        1.0,
    )
    assert [a.key for a in p.assignments] == ["k1", "k2"]
    assert p.provision is not None
    assert p.provision.count == 1


def test_idle_count_zero_scales_to_zero_whatever_the_capacity() -> None:
    """gitlab-runner#37643: with no jobs and idle_count 0, every instance goes after idle_time."""
    policy = Policy(idle_count=0, idle_time=timedelta(minutes=5))
    fleet = tuple(ready(f"i{n}", float(n)) for n in range(3))
    for cap in (1, 2, 5):
        p = plan(Snapshot(instances=fleet), policy, Limits(capacity_per_instance=cap), 302.0)
        assert {d.instance_id for d in p.deprovisions} == {"i0", "i1", "i2"}
        assert p.provision is None
    early = plan(Snapshot(instances=fleet), policy, Limits(capacity_per_instance=2), 301.0)
    assert [d.instance_id for d in early.deprovisions] == ["i0", "i1"]


def test_expired_idle_instance_is_not_replaced() -> None:
    """gitlab-runner#37673: the idle target is kept by one instance; the surplus one goes alone."""
    policy = Policy(idle_count=1, idle_time=timedelta(minutes=5))
    fleet = (ready("a", 0.0), ready("b", 100.0))
    p = plan(Snapshot(instances=fleet), policy, Limits(), 1000.0)
    assert p.deprovisions == (Deprovision("a", IdleExpired(1000.0, 300.0)),)
    assert p.provision is None


def test_busy_instance_is_never_removed() -> None:
    """An instance with a held slot stays even when unhealthy, drained or over the limit."""
    limits = Limits(capacity_per_instance=2, max_instances=1)
    fleet = (
        ready("busy-sick", slots=frozenset({0}), failures=9),
        ready("busy-drain", slots=frozenset({1}), state=InstanceState.DRAINING),
    )
    p = plan(Snapshot(instances=fleet), Policy(), limits, 1e6)
    assert p.deprovisions == ()
    assert p.figures.unavailable == 2


def test_forced_removals_carry_their_reasons() -> None:
    """Free drained, unhealthy and late instances go, each with its reason."""
    limits = Limits(failure_threshold=2, ready_timeout=60.0)
    fleet = (
        ready("d", state=InstanceState.DRAINING, drain_reason="operator"),
        ready("u", failures=2),
        booting("late", 0.0, InstanceState.RUNNING),
        booting("fresh", 50.0),
    )
    p = plan(Snapshot(instances=fleet), Policy(idle_time=timedelta(hours=1)), limits, 60.0)
    assert p.deprovisions == (
        Deprovision("d", Drained("operator")),
        Deprovision("u", Unhealthy(2, 2)),
        Deprovision("late", NotReadyInTime(60.0, 60.0)),
    )
    assert p.provision is None


def test_max_instances_counts_every_state() -> None:
    """Deleting instances and requested ones leave no room beyond max_instances."""
    fleet = (ready("a", slots=frozenset({0})), booting("gone", state=InstanceState.DELETING))
    snap = Snapshot(instances=fleet, pending=("k1", "k2", "k3"), requested=1)
    p = plan(snap, Policy(), Limits(max_instances=4), 0.0)
    assert p.provision is not None
    assert p.provision.count == 1
    assert p.figures.capped_by == "max_instances"
    assert p.figures.desired_instances == 3


def test_lowered_max_instances_removes_free_instances() -> None:
    """After max_instances was lowered, free instances beyond it go, booting ones first."""
    fleet = (
        ready("a", 0.0),
        ready("b", 1.0),
        booting("c", 2.0),
        ready("busy", slots=frozenset({0})),
    )
    p = plan(
        Snapshot(instances=fleet),
        Policy(idle_time=timedelta(hours=1)),
        Limits(max_instances=2),
        10.0,
    )
    assert p.deprovisions == (
        Deprovision("c", OverMaxInstances(4, 2)),
        Deprovision("a", OverMaxInstances(4, 2)),
    )


def test_reservations_keep_ready_capacity() -> None:
    """An expired idle instance a reservation counts on stays, even with capacity booting."""
    policy = Policy(idle_time=timedelta(0))
    fleet = (ready("a"), booting("b", 50.0))
    p = plan(Snapshot(instances=fleet, reservations=("r",)), policy, Limits(), 100.0)
    assert p.deprovisions == ()
    alone = plan(Snapshot(instances=fleet), policy, Limits(), 100.0)
    assert alone.deprovisions == (Deprovision("a", IdleExpired(100.0, 0.0)),)


def test_lowered_max_instances_keeps_what_reservations_need() -> None:
    """Over a lowered max_instances, instances reservations count on are not removed."""
    policy = Policy(idle_time=timedelta(hours=1))
    fleet = (ready("a"), ready("b", 1.0))
    p = plan(
        Snapshot(instances=fleet, reservations=("r1", "r2")), policy, Limits(max_instances=1), 9.0
    )
    assert p.deprovisions == ()
    one = plan(
        Snapshot(instances=fleet, reservations=("r1",)), policy, Limits(max_instances=1), 9.0
    )
    assert one.deprovisions == (Deprovision("a", OverMaxInstances(2, 1)),)


def test_repeated_pending_key_is_rejected_with_its_place() -> None:
    """A key pending twice is a bad snapshot, named by its index."""
    with pytest.raises(PlanInputError, match=r"snapshot.pending\[1\]") as raised:
        plan(Snapshot(pending=("k", "k")), Policy(), Limits(), 0.0)
    assert not isinstance(raised.value, ConfigError)
    assert [p.path for p in raised.value.problems] == ["snapshot.pending[1]"]


def test_repeated_instance_id_is_rejected_with_its_place() -> None:
    """An instance listed twice is a bad snapshot too; still a ValueError."""
    with pytest.raises(ValueError, match=r"snapshot.instances\[1\]: id 'a' is repeated"):
        plan(Snapshot(instances=(ready("a"), ready("a"))), Policy(), Limits(), 0.0)


def test_plan_reads_as_one_line_per_decision() -> None:
    """str(plan) has one line per decision."""
    fleet = (ready("a", uses=1, idle_since=0.0),)
    limits = Limits(max_use_count=1)
    p = plan(Snapshot(instances=fleet, pending=("k",)), Policy(), limits, 1.0)
    assert str(p).splitlines() == [
        "provision 1: demand 1 slots (in use 0, pending 1, idle target 0) wants 1 instances, have 0",
        "deprovision a: use count 1 reached max_use_count 1",
    ]
