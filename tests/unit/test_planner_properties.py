"""Properties of plan(), can_reserve() and idle_target() over generated fleets.

The oracle (``test_planner_oracle``) is written apart from the planner: it counts
the slots of a fleet from first principles, and ``apply_plan`` carries a plan out
the way a runtime does, so a property compares the planner against what its
decisions do.
"""

from __future__ import annotations

import math
from datetime import timedelta

import attrs
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import can_reserve, plan
from fleetkit.planner._assign import room, seniority
from fleetkit.policy import Policy, idle_target
from fleetkit.testing.strategies import apply_plan, fleets, instances, limits
from tests.unit.test_planner_oracle import (
    census,
    check_capacity_kept,
    check_expired_left_are_needed,
    check_no_replacement,
    check_safety,
)


@given(fleets())
def test_every_plan_is_safe(fleet: tuple[Snapshot, Policy, Limits, float]) -> None:
    """No slot given twice or on an unfit instance, no busy instance removed, max_instances kept."""
    snapshot, policy, chosen, now = fleet
    check_safety(snapshot, chosen, plan(snapshot, policy, chosen, now))


@given(fleets())
def test_removals_keep_needed_capacity_and_pending_is_served(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """Removals never eat capacity reservations and waiting keys need; waiting keys get capacity."""
    snapshot, policy, chosen, now = fleet
    check_capacity_kept(snapshot, chosen, plan(snapshot, policy, chosen, now), now)


@given(fleets())
def test_planning_again_after_applying_changes_nothing(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """Applying a plan and planning again at the same instant gives an empty plan."""
    snapshot, policy, chosen, now = fleet
    first = plan(snapshot, policy, chosen, now)
    second = plan(apply_plan(snapshot, first, now), policy, chosen, now)
    assert second.empty, f"first:\n{first}\nsecond:\n{second}"


@given(fleets())
def test_figures_add_up(fleet: tuple[Snapshot, Policy, Limits, float]) -> None:
    """Figures follow the design's formula and the slot identity."""
    snapshot, policy, chosen, now = fleet
    f = plan(snapshot, policy, chosen, now).figures
    cap = chosen.capacity_per_instance
    assert f.in_use == f.acquired + f.reserved
    assert f.idle_target == idle_target(policy, f.in_use)
    assert f.demand_slots == f.acquired + f.unavailable + f.reserved + f.pending + f.idle_target
    assert f.instances * cap == f.acquired + f.unavailable + f.idle + f.unready
    required = math.ceil(f.demand_slots / cap)
    assert f.desired_instances <= required
    assert (f.desired_instances < required) == (f.capped_by == "max_instances")


@given(
    limits(),
    st.data(),
    st.integers(0, 5000).map(lambda s: timedelta(seconds=s)),
    st.floats(0, 3),
    st.integers(0, 6),
)
def test_idle_count_zero_scales_to_zero(
    chosen: Limits, data: st.DataObject, idle_time: timedelta, factor: float, count: int
) -> None:
    """gitlab-runner#37643: no jobs and idle_count 0 plan every ready instance away after idle_time."""
    now = 100_000.0
    fleet = []
    for n in range(count):
        i = data.draw(instances(chosen, now - idle_time.total_seconds(), iid=f"i{n}"))
        fleet.append(attrs.evolve(i, slots_in_use=frozenset()))
    policy = Policy(idle_count=0, idle_time=idle_time, scale_factor=factor)
    the_plan = plan(Snapshot(instances=tuple(fleet)), policy, chosen, now)
    gone = {d.instance_id for d in the_plan.deprovisions}
    assert {i.id for i in fleet if i.state in {InstanceState.READY, InstanceState.DRAINING}} <= gone
    assert the_plan.provision is None


@st.composite
def idle_fleets(draw: st.DrawFn) -> tuple[Snapshot, Policy, Limits, float]:
    """Ready fleets, some busy, most idle for various times, no one waiting."""
    cap = draw(st.integers(1, 5))
    chosen = Limits(capacity_per_instance=cap, max_use_count=draw(st.sampled_from([0, 3])))
    now = 10_000.0
    members = []
    for n in range(draw(st.integers(1, 8))):
        slots = draw(st.frozensets(st.integers(0, cap - 1))) if draw(st.booleans()) else frozenset()
        idle_since = None if slots else draw(st.floats(0, now))
        uses = draw(st.integers(len(slots), max(len(slots), chosen.max_use_count or 9)))
        members.append(
            Instance(
                id=f"i{n}",
                state=InstanceState.READY,
                created_at=float(n),
                ready_at=float(n),
                slots_in_use=slots,
                use_count=uses,
                idle_since=idle_since,
            )
        )
    policy = Policy(
        idle_count=draw(st.integers(0, 8)),
        idle_time=timedelta(seconds=draw(st.integers(0, 9000))),
        scale_factor=draw(st.sampled_from([0.0, 0.5])),
    )
    reservations = tuple(f"r{k}" for k in range(draw(st.integers(0, 2))))
    return Snapshot(instances=tuple(members), reservations=reservations), policy, chosen, now


@given(idle_fleets())
def test_expired_idle_removal_never_comes_with_a_replacement(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """gitlab-runner#37673: expired idle instances go without a replacement, as many as demand allows."""
    snapshot, policy, chosen, now = fleet
    first = plan(snapshot, policy, chosen, now)
    check_no_replacement(snapshot, policy, chosen, now, first)
    after = apply_plan(snapshot, first, now)
    assert plan(after, policy, chosen, now).empty
    check_expired_left_are_needed(after, policy, chosen, now)


@given(
    st.integers(0, 50),
    st.floats(0, 10, allow_nan=False),
    st.integers(0, 100),
    st.integers(0, 10_000),
)
def test_idle_target_follows_the_formula(
    count: int, factor: float, limit: int, in_use: int
) -> None:
    """idle_target is max(idle_count, min(ceil(scale_factor * in_use), limit or no cap))."""
    policy = Policy(idle_count=count, scale_factor=factor, scale_factor_limit=limit)
    scaled = math.ceil(factor * in_use)
    expected = max(count, min(scaled, limit) if limit else scaled)
    assert idle_target(policy, in_use) == expected


@given(fleets())
def test_preemptive_reservation_needs_a_free_ready_slot(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """In preemptive mode a reservation is granted only with an idle slot not yet spoken for."""
    snapshot, policy, chosen, _ = fleet
    policy = attrs.evolve(policy, preemptive_mode=True)
    decision = can_reserve(snapshot, policy, chosen, throttling=False)
    free = census(snapshot, chosen).idle - len(snapshot.reservations) - len(snapshot.pending)
    assert decision.granted == (free > 0), decision.reason


@given(fleets())
def test_non_preemptive_reservation_needs_potential_capacity(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """Without preemption a reservation needs room under max_instances, unlimited at 0."""
    snapshot, policy, chosen, _ = fleet
    policy = attrs.evolve(policy, preemptive_mode=False)
    decision = can_reserve(snapshot, policy, chosen, throttling=False)
    used = census(snapshot, chosen).acquired + len(snapshot.reservations) + len(snapshot.pending)
    potential = chosen.max_instances * chosen.capacity_per_instance - used
    assert decision.granted == (chosen.max_instances == 0 or potential > 0), decision.reason


@given(fleets())
def test_throttling_caps_reservations_while_idle_capacity_exists(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """With idle slots, throttling refuses a reservation beyond max(idle - capacity, 1)."""
    snapshot, policy, chosen, _ = fleet
    idle = census(snapshot, chosen).idle
    throttled = can_reserve(snapshot, policy, chosen, throttling=True)
    free = can_reserve(snapshot, policy, chosen, throttling=False)
    if idle and len(snapshot.reservations) >= max(idle - chosen.capacity_per_instance, 1):
        assert not throttled.granted
        assert "throttled" in throttled.reason
    else:
        assert throttled == free
    # Throttling only ever takes grants away.
    assert not (throttled.granted and not free.granted)


@given(fleets())
def test_assignments_pack_the_oldest_instances_lowest_slots_first(
    fleet: tuple[Snapshot, Policy, Limits, float],
) -> None:
    """Keys go to the oldest instance with room, lowest free slots first, before any younger one."""
    snapshot, policy, chosen, now = fleet
    the_plan = plan(snapshot, policy, chosen, now)
    if not the_plan.assignments:
        return
    after = apply_plan(snapshot, the_plan, now).by_id()
    by_id = snapshot.by_id()
    given: dict[str, list[int]] = {}
    for a in the_plan.assignments:
        given.setdefault(a.instance_id, []).append(a.slot)
    youngest = max(seniority(by_id[i]) for i in given)
    for instance in snapshot.instances:
        if seniority(instance) < youngest:
            # Every older instance was filled before a younger one got a key.
            assert room(after[instance.id], chosen) == 0, instance.id
    for instance_id, slots in given.items():
        free = [
            s
            for s in range(chosen.capacity_per_instance)
            if s not in by_id[instance_id].slots_in_use
        ]
        assert slots == free[: len(slots)]
