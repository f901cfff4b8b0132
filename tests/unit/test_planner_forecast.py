"""plan(demand_floor=): a forecast raises the idle target and never removes on its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleetkit.model import Limits, Snapshot
from fleetkit.planner import plan
from fleetkit.policy import Policy
from fleetkit.testing.strategies import apply_plan, fleets
from tests.unit.test_planner_oracle import check_capacity_kept, check_safety

Fleet = tuple[Snapshot, Policy, Limits, float]


@given(fleets(), st.integers(0, 60))
def test_the_forecast_never_removes_an_instance_the_reactive_policy_keeps(
    fleet: Fleet, floor: int
) -> None:
    snapshot, policy, limits, now = fleet
    reactive = plan(snapshot, policy, limits, now)
    forecast = plan(snapshot, policy, limits, now, demand_floor=floor)
    kept = {d.instance_id for d in reactive.deprovisions}
    assert {d.instance_id for d in forecast.deprovisions} <= kept
    assert forecast.figures.idle_target >= reactive.figures.idle_target
    assert forecast.figures.desired_instances >= reactive.figures.desired_instances
    assert forecast.assignments == reactive.assignments


@given(fleets(), st.integers(0, 60))
def test_a_plan_under_a_floor_is_safe_and_settles(fleet: Fleet, floor: int) -> None:
    snapshot, policy, limits, now = fleet
    first = plan(snapshot, policy, limits, now, demand_floor=floor)
    check_safety(snapshot, limits, first)
    check_capacity_kept(snapshot, limits, first, now)
    second = plan(apply_plan(snapshot, first, now), policy, limits, now, demand_floor=floor)
    assert second.empty, f"first:\n{first}\nsecond:\n{second}"


def test_the_floor_covers_in_use_and_waiting_first() -> None:
    limits = Limits(max_instances=50, capacity_per_instance=2)
    empty = Snapshot(instances=(), pending=("a", "b", "c"), reservations=(), requested=0)
    result = plan(empty, Policy(idle_count=1), limits, 0.0, demand_floor=10)
    # 3 waiting + 7 idle = the floor of 10 slots: 5 instances.
    assert result.figures.idle_target == 7
    assert result.provision is not None
    assert result.provision.count == 5
    # A floor under what the policy keeps changes nothing.
    assert plan(empty, Policy(idle_count=9), limits, 0.0, demand_floor=4).figures.idle_target == 9
    # Bounded by max_instances like any demand.
    capped = plan(empty, Policy(), Limits(max_instances=3), 0.0, demand_floor=100)
    assert capped.figures.desired_instances == 3


def test_over_max_instances_the_floor_removes_what_the_reactive_plan_removes() -> None:
    """Over a lowered max_instances, the idle instance the floor would keep goes as the
    reactive plan removes it, rather than the trim taking a booting one instead (found by
    hypothesis: the forecast removed the booting i0, the reactive plan the idle i1)."""
    from fleetkit.model import Instance, InstanceState

    instances = (
        Instance(id="i0", state=InstanceState.CREATING, created_at=0.0),
        Instance(id="i1", state=InstanceState.READY, created_at=0.0, ready_at=0.0),
    )
    snapshot = Snapshot(instances=instances, pending=(), reservations=(), requested=0)
    policy = Policy(idle_count=0, idle_time=0.0)
    limits = Limits(capacity_per_instance=1, max_instances=1)
    reactive = plan(snapshot, policy, limits, 0.0)
    forecast = plan(snapshot, policy, limits, 0.0, demand_floor=2)
    assert [d.instance_id for d in reactive.deprovisions] == ["i1"]
    assert [d.instance_id for d in forecast.deprovisions] == ["i1"]
