"""Random workloads and the soak: the fleet's invariants hold after every step, in virtual time."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import anyio
import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.errors import AcquireTimeout, FleetError, InstanceLost, NoCapacity
from fleetkit.fleet import Fleet, FleetSettings, InstanceDraining
from fleetkit.model import InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.testing.simulated import Delay, Faults, SimulatedGroup

SETTINGS = FleetSettings(
    update_interval=30.0,
    update_interval_when_expecting=2.0,
    deletion_retry_interval=20.0,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=15.0,
    shutdown_deletion_retries=10,
    ready_backoff_initial=2.0,
    ready_backoff_max=30.0,
)


class CheckedGroup(SimulatedGroup):
    """A simulated group that checks, at every decrease, that no id holds a slot."""

    fleet: Fleet | None = None
    violations: list[str]

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        if self.fleet is not None:
            by_id = self.fleet.snapshot().by_id()
            self.violations += [i for i in ids if i in by_id and by_id[i].acquired]
        return await super().decrease(ids)


def check_invariants(fleet: Fleet, holding: int) -> None:
    """The planner's safety properties, read off the fleet's snapshot."""
    snapshot = fleet.snapshot()
    limits = fleet.limits
    cap = limits.capacity_per_instance
    held = 0
    for instance in snapshot.instances:
        assert instance.slots_in_use <= frozenset(range(cap)), instance
        held += instance.acquired
        if instance.state in (InstanceState.DRAINING, InstanceState.DELETING):
            assert not instance.slots_in_use, f"busy instance being removed: {instance}"
        if instance.acquired:
            assert instance.state is InstanceState.READY, instance
    assert held == holding
    if limits.max_instances:
        assert len(snapshot.instances) + snapshot.requested <= limits.max_instances
    assert not set(snapshot.pending) & set(snapshot.reservations)


operations = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, 11), st.floats(1.0, 900.0)),
    st.tuples(st.just("reserve"), st.integers(0, 11), st.just(0.0)),
    st.tuples(st.just("unreserve"), st.integers(0, 11), st.just(0.0)),
    st.tuples(st.just("policy"), st.integers(0, 4), st.floats(0.0, 20.0)),
    st.tuples(st.just("faults"), st.integers(0, 3), st.just(0.0)),
    st.tuples(st.just("kill"), st.integers(0, 20), st.just(0.0)),
    st.tuples(st.just("sleep"), st.integers(0, 0), st.floats(0.1, 1200.0)),
)

FAULTS = [
    Faults(),
    Faults(increase_error=0.3, decrease_error=0.3, update_error=0.3),
    Faults(increase_shortfall=0.5, stuck_creating=0.3, decrease_ignored=0.3),
    Faults(throttle=0.2, stuck_creating=0.1),
]


@given(
    steps=st.lists(operations, min_size=1, max_size=30),
    capacity=st.integers(1, 3),
    max_instances=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_random_workloads_keep_the_invariants(
    steps: list[tuple[str, int, float]], capacity: int, max_instances: int, seed: int
) -> None:
    """Random acquires, releases, reservations, policy changes, faults and deaths never
    break an invariant, and with no demand the fleet ends empty after shutdown."""
    group = CheckedGroup(seed=seed, boot=Delay(5.0, 60.0), deletion=Delay(1.0, 30.0))
    group.violations = []
    limits = Limits(
        capacity_per_instance=capacity, max_instances=max_instances, ready_timeout=600.0
    )

    async def main() -> None:
        holding = 0
        outcomes: list[str] = []

        async def job(fleet: Fleet, key: str, hold: float) -> None:
            nonlocal holding
            try:
                async with fleet.acquire(key, timeout=1800.0):
                    holding += 1
                    try:
                        await anyio.sleep(hold)
                    finally:
                        holding -= 1
                outcomes.append("done")
            except (AcquireTimeout, InstanceLost) as exc:
                outcomes.append(type(exc).__name__)

        policy = Policy(idle_count=1, idle_time=timedelta(minutes=5))
        async with Fleet(group, limits, policy, settings=SETTINGS) as fleet:
            group.fleet = fleet
            async with anyio.create_task_group() as tg:
                for n, (op, a, b) in enumerate(steps):
                    if op == "acquire":
                        tg.start_soon(job, fleet, f"job-{n}", b)
                    elif op == "reserve":
                        try:
                            fleet.reserve(f"r-{a}")
                        except NoCapacity:
                            pass
                    elif op == "unreserve":
                        fleet.unreserve(f"r-{a}")
                    elif op == "policy":
                        fleet.set_schedule(Policy(idle_count=a, idle_time=timedelta(minutes=b)))
                    elif op == "faults":
                        group.faults = FAULTS[a]
                    elif op == "kill":
                        live = group.live_ids()
                        if live:
                            group.kill(live[a % len(live)])
                    else:
                        await anyio.sleep(b)
                    await anyio.sleep(0.01)
                    check_invariants(fleet, holding)
                group.faults = Faults()
                for key in [f"r-{a}" for a in range(12)]:
                    fleet.unreserve(key)
            check_invariants(fleet, 0)
            fleet.set_schedule(Policy(idle_count=0, idle_time=timedelta(0)))
            await anyio.sleep(3600.0)
            check_invariants(fleet, 0)
            assert group.live_ids() == [], fleet.snapshot()
        assert outcomes.count("done") + outcomes.count("AcquireTimeout") + outcomes.count(
            "InstanceLost"
        ) == sum(1 for s in steps if s[0] == "acquire")

    anyio.run(
        main,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
    assert group.violations == []


@pytest.mark.slow
def test_soak_a_thousand_acquisitions_with_faults() -> None:
    """1,000 acquisitions with 10% of provider calls failing and 5% of instances never
    ready: every acquisition completes, none is lost or stuck, and the group ends empty."""
    faults = Faults(increase_error=0.1, decrease_error=0.1, update_error=0.1, stuck_creating=0.05)
    group = CheckedGroup(
        seed=2024, boot=Delay(10.0, 90.0), deletion=Delay(5.0, 40.0), faults=faults
    )
    group.violations = []
    limits = Limits(capacity_per_instance=2, max_instances=25, ready_timeout=300.0)
    rng = random.Random(99)
    completed: list[str] = []
    failures: list[BaseException] = []
    never_ready: list[str] = []

    async def main() -> None:
        policy = Policy(idle_count=2, idle_time=timedelta(minutes=5), scale_factor=0.5)
        async with Fleet(group, limits, policy, settings=SETTINGS) as fleet:
            group.fleet = fleet

            async def job(key: str, hold: float) -> None:
                try:
                    async with fleet.acquire(key, timeout=4 * 3600.0):
                        await anyio.sleep(hold)
                except FleetError as exc:
                    failures.append(exc)
                else:
                    completed.append(key)

            async def watch() -> None:
                async with fleet.events(max_buffer=100_000) as stream:
                    async for event in stream:
                        if isinstance(event, InstanceDraining) and "not ready" in event.reason:
                            never_ready.append(event.instance_id)

            async with anyio.create_task_group() as watcher:
                watcher.start_soon(watch)
                with anyio.fail_after(3 * 86400.0):
                    async with anyio.create_task_group() as tg:
                        for n in range(1000):
                            tg.start_soon(job, f"job-{n}", rng.uniform(30.0, 900.0))
                            await anyio.sleep(rng.expovariate(1 / 30.0))
                watcher.cancel_scope.cancel()
            stats = fleet.stats()
            assert stats.scale_operations.get("up_failure", 0) > 0
            assert stats.missed_updates > 0
        assert group.live_ids() == []

    anyio.run(
        main,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
    assert failures == []
    assert len(completed) == 1000
    assert group.violations == []
    assert never_ready, "no never-ready instance was removed: the fault did not bite"
