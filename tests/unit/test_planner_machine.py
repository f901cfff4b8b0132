"""A hypothesis state machine drives the planner through a fleet's life.

Rules are what happens to a fleet between ticks (jobs arrive and end, keys
reserve and unreserve, instances boot, become ready, die, fail health checks,
time passes, the policy period changes, the operator drains) and the runtime's
one move: carry out the plan. The invariants are the planner's promises, checked
on the plan for the fleet as it stands after every step.
"""

from __future__ import annotations

import math
from datetime import timedelta

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import Plan, can_reserve, plan
from fleetkit.policy import Policy
from fleetkit.testing.strategies import apply_plan
from tests.unit.test_planner_oracle import (
    check_capacity_kept,
    check_expired_left_are_needed,
    check_no_replacement,
    check_safety,
)

READY = InstanceState.READY
GONE = {InstanceState.DELETING, InstanceState.DELETED}


class FleetMachine(RuleBasedStateMachine):
    """The fleet as a runtime would hold it, with the planner's plan carried out on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = Limits()
        self.policies = (Policy(), Policy())
        self.active = 0
        self.now = 0.0
        self.instances: dict[str, Instance] = {}
        self.pending: list[str] = []
        self.reservations: list[str] = []
        self.requested = 0
        self.jobs: dict[str, tuple[str, int]] = {}
        self.serial = 0
        # The most instances there may be: max_instances, or more for a while
        # after the limit was lowered below the fleet (never growing then).
        self.allowed = 0

    # --- set-up ------------------------------------------------------------

    @initialize(
        cap=st.integers(1, 4),
        max_use=st.sampled_from([0, 0, 1, 3]),
        max_instances=st.sampled_from([0, 3, 6]),
        threshold=st.integers(0, 3),
        ready_timeout=st.none() | st.sampled_from([120.0, 600.0]),
        day=st.tuples(st.integers(0, 6), st.integers(0, 1200), st.sampled_from([0.0, 1.0])),
        night=st.tuples(st.integers(0, 2), st.integers(0, 1200), st.integers(0, 3)),
        fleet=st.lists(st.frozensets(st.integers(0, 3)), max_size=5),
    )
    def configure(
        self,
        cap: int,
        max_use: int,
        max_instances: int,
        threshold: int,
        ready_timeout: float | None,
        day: tuple[int, int, float],
        night: tuple[int, int, int],
        fleet: list[frozenset[int]],
    ) -> None:
        self.limits = Limits(
            capacity_per_instance=cap,
            max_use_count=max_use,
            max_instances=max_instances,
            failure_threshold=threshold,
            ready_timeout=ready_timeout,
        )
        self.policies = (
            Policy(idle_count=day[0], idle_time=timedelta(seconds=day[1]), scale_factor=day[2]),
            Policy(
                idle_count=night[0],
                idle_time=timedelta(seconds=night[1]),
                scale_factor=0.5,
                scale_factor_limit=night[2],
            ),
        )
        # Start from a running fleet, some of it busy, so that few steps reach
        # the states where planners go wrong.
        if max_instances:
            fleet = fleet[:max_instances]
        for slots in fleet:
            iid = self.new_id()
            held = frozenset(s for s in slots if s < cap)
            if max_use:
                held = frozenset(sorted(held)[:max_use])
            for slot in held:
                self.jobs[self.new_key()] = (iid, slot)
            self.instances[iid] = Instance(
                id=iid,
                state=READY,
                created_at=0.0,
                ready_at=0.0,
                slots_in_use=held,
                use_count=len(held),
                idle_since=None if held else 0.0,
            )

    # --- helpers -----------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self.policies[self.active]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            instances=tuple(self.instances.values()),
            pending=tuple(self.pending),
            reservations=tuple(self.reservations),
            requested=self.requested,
        )

    def plan_now(self) -> Plan:
        return plan(self.snapshot(), self.policy, self.limits, self.now)

    def new_key(self) -> str:
        self.serial += 1
        return f"job{self.serial}"

    def new_id(self) -> str:
        self.serial += 1
        return f"i{self.serial}"

    def pick(self, data: st.DataObject, states: set[InstanceState]) -> Instance | None:
        choices = sorted(i for i, inst in self.instances.items() if inst.state in states)
        if not choices:
            return None
        return self.instances[data.draw(st.sampled_from(choices))]

    def replace(self, instance: Instance, **changes: object) -> None:
        self.instances[instance.id] = attrs.evolve(instance, **changes)  # type: ignore[arg-type]

    # --- what happens to a fleet ---------------------------------------------

    @rule(n=st.integers(1, 5))
    def jobs_arrive(self, n: int) -> None:
        self.pending += [self.new_key() for _ in range(n)]

    @rule(n=st.integers(1, 3), throttling=st.booleans())
    def reserve(self, n: int, throttling: bool) -> None:
        for _ in range(n):
            if can_reserve(self.snapshot(), self.policy, self.limits, throttling=throttling):
                self.reservations.append(self.new_key())

    @precondition(lambda self: self.reservations)
    @rule(data=st.data(), acquire=st.booleans())
    def reservation_ends(self, data: st.DataObject, acquire: bool) -> None:
        key = data.draw(st.sampled_from(self.reservations))
        self.reservations.remove(key)
        if acquire:
            self.pending.append(key)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def jobs_end(self, data: st.DataObject) -> None:
        keys = data.draw(st.lists(st.sampled_from(sorted(self.jobs)), min_size=1, unique=True))
        for key in keys:
            instance_id, slot = self.jobs.pop(key)
            instance = self.instances[instance_id]
            slots = instance.slots_in_use - {slot}
            self.replace(instance, slots_in_use=slots, idle_since=self.now if not slots else None)

    @rule(data=st.data())
    def instances_come_up(self, data: st.DataObject) -> None:
        # Each requested or booting instance moves on one stage, or not.
        for _ in range(self.requested):
            if data.draw(st.booleans()):
                self.requested -= 1
                iid = self.new_id()
                self.instances[iid] = Instance(
                    id=iid, state=InstanceState.CREATING, created_at=self.now
                )
        for instance in list(self.instances.values()):
            if instance.state is InstanceState.CREATING and data.draw(st.booleans()):
                self.replace(instance, state=InstanceState.RUNNING)
            elif instance.state is InstanceState.RUNNING and data.draw(st.booleans()):
                self.replace(instance, state=READY, ready_at=self.now, idle_since=self.now)

    @rule(data=st.data())
    def instance_dies(self, data: st.DataObject) -> None:
        instance = self.pick(data, {s for s in InstanceState if s not in GONE})
        if instance is None:
            return
        # The cloud took it: its jobs fail, the runtime forgets their slots.
        self.jobs = {k: v for k, v in self.jobs.items() if v[0] != instance.id}
        self.replace(instance, state=InstanceState.DELETED, slots_in_use=frozenset())

    @rule(data=st.data())
    def deletion_finishes(self, data: st.DataObject) -> None:
        instance = self.pick(data, GONE)
        if instance is not None:
            del self.instances[instance.id]

    @rule(data=st.data(), failed=st.integers(0, 3))
    def health_checks(self, data: st.DataObject, failed: int) -> None:
        # ``failed`` checks in a row failed (0: the last one passed).
        instance = self.pick(data, {READY, InstanceState.RUNNING})
        if instance is not None:
            failures = instance.health_failures + failed if failed else 0
            self.replace(instance, health_failures=failures)

    @rule(data=st.data())
    def operator_drains(self, data: st.DataObject) -> None:
        instance = self.pick(data, {READY})
        if instance is not None:
            self.replace(instance, state=InstanceState.DRAINING, drain_reason="operator")

    @rule(seconds=st.sampled_from([1.0, 30.0, 119.0, 300.0, 1200.0]) | st.floats(0, 3000))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def policy_period_changes(self) -> None:
        self.active = 1 - self.active

    @rule(cut=st.integers(1, 3))
    def max_instances_lowered(self, cut: int) -> None:
        # A config reload with a smaller limit: the fleet may be over it for a while.
        lowered = max(self.limits.max_instances - cut, 1) if self.limits.max_instances else 4
        self.limits = attrs.evolve(self.limits, max_instances=lowered)
        self.allowed = max(self.total(), lowered)

    @rule()
    def tick(self) -> None:
        """The runtime's update loop: time passes, then the plan is carried out."""
        self.now += 60.0
        self.carry_out_plan()

    @rule()
    def carry_out_plan(self) -> None:
        before = self.snapshot()
        the_plan = self.plan_now()
        after = apply_plan(before, the_plan, self.now)
        for assignment in the_plan.assignments:
            self.jobs[assignment.key] = (assignment.instance_id, assignment.slot)
        self.instances = {i.id: i for i in after.instances}
        self.pending = list(after.pending)
        self.requested = after.requested
        # Planning again at the same instant changes nothing.
        again = self.plan_now()
        assert again.empty, f"plan:\n{the_plan}\nthen:\n{again}"
        check_expired_left_are_needed(self.snapshot(), self.policy, self.limits, self.now)

    # --- the planner's promises --------------------------------------------

    def total(self) -> int:
        return self.requested + len(self.instances)

    @invariant()
    def never_beyond_max_instances(self) -> None:
        if self.limits.max_instances:
            assert self.total() <= max(self.allowed, self.limits.max_instances)
            self.allowed = min(self.allowed, self.total())

    @invariant()
    def no_slot_is_held_twice(self) -> None:
        held = [(iid, slot) for iid, slot in self.jobs.values()]
        assert len(set(held)) == len(held)
        for iid, slot in held:
            assert slot in self.instances[iid].slots_in_use

    @invariant()
    def plan_is_safe_and_keeps_needed_capacity(self) -> None:
        the_plan = self.plan_now()
        check_safety(self.snapshot(), self.limits, the_plan)
        check_capacity_kept(self.snapshot(), self.limits, the_plan, self.now)
        check_no_replacement(self.snapshot(), self.policy, self.limits, self.now, the_plan)

    @invariant()
    def idle_target_follows_the_formula(self) -> None:
        figures = self.plan_now().figures
        policy = self.policy
        scaled = math.ceil(policy.scale_factor * figures.in_use)
        if policy.scale_factor_limit:
            scaled = min(scaled, policy.scale_factor_limit)
        assert figures.idle_target == max(policy.idle_count, scaled)

    @invariant()
    def no_work_and_idle_count_zero_scales_to_zero(self) -> None:
        policy = self.policy
        if policy.idle_count or self.pending or self.reservations or self.jobs:
            return
        idle_time = policy.idle_time.total_seconds()
        up = [i for i in self.instances.values() if i.state in {READY, InstanceState.DRAINING}]
        if all(self.now - (i.idle_since or 0.0) >= idle_time for i in up):
            gone = {d.instance_id for d in self.plan_now().deprovisions}
            assert {i.id for i in up} <= gone


_profile = FleetMachine.TestCase.settings
# More runs than the profile's default: a run is ~20 ms, and the bad states
# (an unhealthy instance with a free slot while keys wait, a reservation that
# only booting capacity covers) take a few steps to reach.
FleetMachine.TestCase.settings = settings(
    _profile, max_examples=max(_profile.max_examples, 200), stateful_step_count=50, deadline=None
)
test_fleet_machine = FleetMachine.TestCase
