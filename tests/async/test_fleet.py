"""The fleet runtime on the simulated group, in trio's virtual time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.errors import AcquireTimeout, FleetClosed, InstanceLost, NoCapacity
from fleetkit.fleet import (
    Fleet,
    FleetSettings,
    InstanceDeleted,
    InstanceReady,
    SlotAcquired,
    anchored_wall_clock,
    register_metrics,
)
from fleetkit.model import InstanceState, Limits
from fleetkit.policy import Policy, Schedule
from fleetkit.testing.simulated import Call, Delay, Faults, SimulatedGroup

FAST = FleetSettings(update_interval=10.0, update_interval_when_expecting=1.0)
MONDAY = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def hours(
    idle_count: int, idle_minutes: float, period: str, timezone: str = "Europe/Berlin"
) -> Policy:
    """A policy active in the cron ``period`` of ``timezone``."""
    return Policy(
        idle_count=idle_count,
        idle_time=timedelta(minutes=idle_minutes),
        periods=(period,),
        timezone=timezone,
    )


def idle(count: int, minutes: float = 5.0, *, preemptive_mode: bool | None = None) -> Policy:
    return Policy(
        idle_count=count, idle_time=timedelta(minutes=minutes), preemptive_mode=preemptive_mode
    )


@asynccontextmanager
async def open_fleet(
    group: SimulatedGroup,
    schedule: Schedule | Policy,
    limits: Limits | None = None,
    settings: FleetSettings = FAST,
    start: datetime = MONDAY,
) -> AsyncIterator[Fleet]:
    async with Fleet(
        group,
        limits or Limits(),
        schedule,
        settings=settings,
        wall_clock=anchored_wall_clock(start, at=anyio.current_time()),
    ) as fleet:
        yield fleet


def states(fleet: Fleet) -> list[InstanceState]:
    return [i.state for i in fleet.snapshot().instances]


async def wait_for(predicate: object, *, step: float = 0.5, limit: float = 3600.0) -> float:
    """Sleep in virtual time until ``predicate()`` holds; return the time it took."""
    assert callable(predicate)
    start = anyio.current_time()
    while not predicate():
        if anyio.current_time() - start > limit:
            raise AssertionError(f"condition not met within {limit}s")
        await anyio.sleep(step)
    return anyio.current_time() - start


@pytest.mark.anyio
async def test_idle_count_is_kept_warm_and_acquire_gets_a_ready_slot() -> None:
    """With idle_count 2 the fleet boots two instances and hands out a slot on the oldest."""
    group = SimulatedGroup(boot=Delay(10.0, 10.0))
    async with open_fleet(group, idle(2)) as fleet:
        await wait_for(lambda: states(fleet).count(InstanceState.READY) == 2)
        oldest = fleet.snapshot().instances[0].id
        async with fleet.acquire("job-1", timeout=5.0) as slot:
            assert (slot.instance_id, slot.number) == (oldest, 0)
            assert slot.connect_info is not None
            assert fleet.stats().tasks["acquired"] == 1
            # Demand grew by one slot: the idle target is kept on top of it.
            await wait_for(lambda: states(fleet).count(InstanceState.READY) == 3)
        assert fleet.stats().task_operations["release"] == 1


@pytest.mark.anyio
async def test_idle_instance_removed_exactly_at_idle_time() -> None:
    """An instance left idle is drained at idle_since + idle_time, to the virtual second."""
    group = SimulatedGroup(boot=Delay(3.0, 3.0), deletion=Delay(1.0, 1.0))
    async with open_fleet(group, idle(0, minutes=5)) as fleet:
        async with fleet.acquire("job", timeout=60.0):
            await anyio.sleep(100.0)
        released_at = anyio.current_time()
        async with fleet.events() as stream:
            async for event in stream:
                if isinstance(event, InstanceDeleted):
                    break
        draining = group.calls_to("decrease")
        assert len(draining) == 1
        assert draining[0].at == pytest.approx(released_at + 300.0, abs=1e-6)
        assert fleet.snapshot().instances == ()


@pytest.mark.anyio
async def test_policy_switch_at_nine_in_berlin() -> None:
    """A work-hours policy takes effect at 09:00 Europe/Berlin, with no restart."""
    work = hours(3, 30, "* 9-17 * * mon-fri")
    schedule = Schedule([idle(0), work])
    # 07:00 UTC on a Monday in November is 08:00 in Berlin (CET).
    start = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    group = SimulatedGroup(boot=Delay(5.0, 5.0))
    async with open_fleet(group, schedule, start=start) as fleet:
        await anyio.sleep(3500.0)
        assert fleet.snapshot().instances == ()
        assert group.calls_to("increase") == []
        await wait_for(lambda: states(fleet).count(InstanceState.READY) == 3)
        first_increase = group.calls_to("increase")[0].at
        assert first_increase == pytest.approx(3600.0 + group.calls[0].at, abs=1e-6)


@pytest.mark.anyio
async def test_scale_to_zero_with_capacity_four() -> None:
    """With capacity 4 and idle_count 0, every instance goes once idle (GitLab #37643)."""
    group = SimulatedGroup(boot=Delay(5.0, 5.0), deletion=Delay(2.0, 2.0))
    limits = Limits(capacity_per_instance=4)
    async with open_fleet(group, idle(0, minutes=1), limits) as fleet:
        async with anyio.create_task_group() as tg:
            for n in range(6):

                async def job(key: str = f"job-{n}") -> None:
                    async with fleet.acquire(key, timeout=120.0):
                        await anyio.sleep(30.0)

                tg.start_soon(job)
        assert len(group.live_ids()) == 2
        await anyio.sleep(65.0)
        await wait_for(lambda: group.live_ids() == [], limit=30.0)
        assert fleet.snapshot().instances == ()


@pytest.mark.anyio
async def test_never_ready_instance_is_replaced() -> None:
    """An instance stuck creating is removed at ready_timeout and a new one takes its place."""
    group = SimulatedGroup(boot=Delay(5.0, 5.0), faults=Faults(stuck_creating=1.0))
    limits = Limits(ready_timeout=120.0)
    async with open_fleet(group, idle(1), limits) as fleet:
        await anyio.sleep(10.0)
        stuck = group.live_ids()
        assert len(stuck) == 1
        group.faults = Faults()
        await wait_for(lambda: states(fleet) == [InstanceState.READY])
        decreases = group.calls_to("decrease")
        assert decreases[0].args == (tuple(stuck),)
        assert decreases[0].at - group.calls_to("increase")[0].at == pytest.approx(120.0, abs=1.5)
        assert fleet.snapshot().instances[0].id not in stuck


@pytest.mark.anyio
async def test_failed_increases_back_off_exponentially() -> None:
    """Throttled increases are retried after doubling pauses, not on every tick."""
    group = SimulatedGroup(faults=Faults(throttle=0.0, increase_error=1.0))
    settings = attrs.evolve(FAST, ready_backoff_initial=5.0, ready_backoff_max=40.0)
    async with open_fleet(group, idle(1), settings=settings):
        await anyio.sleep(200.0)
    times = [c.at for c in group.calls_to("increase")]
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [5, 10, 20, 40]
    assert set(gaps[4:]) == {40}


@pytest.mark.anyio
async def test_scale_throttle_limits_creation_rate() -> None:
    """With limit 1/s and burst 2, ten wanted instances are asked for 2 at once, then 1 a second."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    settings = attrs.evolve(FAST, scale_throttle_limit=1, scale_throttle_burst=2)
    async with open_fleet(group, idle(10), settings=settings) as fleet:
        await wait_for(lambda: len(fleet.snapshot().instances) == 10)
    asked = [(round(c.at - group.calls[0].at), c.args[0]) for c in group.calls_to("increase")]
    assert asked == [(0, 2)] + [(t, 1) for t in range(1, 9)]


@pytest.mark.anyio
async def test_lost_instance_cancels_its_slot_with_instance_lost() -> None:
    """When the provider loses an instance under a held slot, the block ends with InstanceLost."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    async with open_fleet(group, idle(1)) as fleet:
        held = []

        async def doomed_job() -> None:
            async with fleet.acquire("job", timeout=30.0) as slot:
                held.append(slot)
                group.kill(slot.instance_id)
                await anyio.sleep(3600.0)

        with pytest.raises(InstanceLost, match="unexpectedly removed") as caught:
            await doomed_job()
        assert caught.value.instance_id == held[0].instance_id
        assert held[0].lost.is_set()


@pytest.mark.anyio
async def test_reported_failures_make_an_instance_unhealthy_and_replaced() -> None:
    """After failure_threshold reports the instance takes no work and is removed once free."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    async with open_fleet(group, idle(1), Limits(failure_threshold=2)) as fleet:
        await wait_for(lambda: states(fleet) == [InstanceState.READY])
        bad = fleet.snapshot().instances[0].id
        for n in range(2):
            async with fleet.acquire(f"job-{n}", timeout=30.0) as slot:
                assert slot.instance_id == bad
                slot.report_failure()
        async with fleet.acquire("after", timeout=30.0) as slot:
            assert slot.instance_id != bad
        assert [c.args for c in group.calls_to("decrease")] == [((bad,),)]


@pytest.mark.anyio
async def test_acquire_timeout_and_reservations() -> None:
    """acquire times out with AcquireTimeout; preemptive reservations need a ready slot."""
    group = SimulatedGroup(boot=Delay(100.0, 100.0))
    async with open_fleet(group, idle(1, preemptive_mode=True)) as fleet:
        with pytest.raises(NoCapacity, match="no immediately available capacity"):
            fleet.reserve("r1")
        with pytest.raises(AcquireTimeout):
            async with fleet.acquire("job", timeout=10.0):
                pass
        await wait_for(lambda: states(fleet) == [InstanceState.READY])
        fleet.reserve("r1")
        assert fleet.snapshot().reservations == ("r1",)
        async with fleet.acquire("r1", timeout=1.0) as slot:
            assert fleet.snapshot().reservations == ()
            assert slot.key == "r1"
        fleet.unreserve("unknown")


@pytest.mark.anyio
async def test_waiting_acquisitions_are_served_in_order() -> None:
    """Acquisitions that wait are granted first come, first served as capacity boots."""
    group = SimulatedGroup(boot=Delay(5.0, 20.0), seed=4)
    granted: list[str] = []
    async with open_fleet(group, idle(0)) as fleet, anyio.create_task_group() as tg:
        for n in range(5):

            async def job(key: str = f"job-{n}") -> None:
                async with fleet.acquire(key, timeout=100.0):
                    granted.append(key)
                    await anyio.sleep(1000.0)

            tg.start_soon(job)
            await anyio.sleep(0.01)
    assert granted == [f"job-{n}" for n in range(5)]


class _ShutdownWatcher(SimulatedGroup):
    """Notes which instances were still alive when the provider was shut down."""

    alive_at_shutdown: list[str] | None = None

    async def shutdown(self) -> None:
        self.alive_at_shutdown = self.live_ids()
        await super().shutdown()


@pytest.mark.anyio
async def test_shutdown_deletes_then_shuts_the_provider_down() -> None:
    """delete_instances_on_shutdown empties the group before the provider's shutdown."""
    group = _ShutdownWatcher(boot=Delay(1.0, 1.0), deletion=Delay(3.0, 3.0))
    settings = attrs.evolve(FAST, delete_instances_on_shutdown=True, shutdown_deletion_interval=5.0)
    async with open_fleet(group, idle(3), settings=settings) as fleet:
        await wait_for(lambda: states(fleet).count(InstanceState.READY) == 3)
        ready = [i.id for i in fleet.snapshot().instances]
    assert group.alive_at_shutdown == []
    assert group.calls[-1].verb == "shutdown"
    assert sorted(i for c in group.calls_to("decrease") for i in c.args[0]) == sorted(ready)  # type: ignore[attr-defined]

    group = _ShutdownWatcher(boot=Delay(1.0, 1.0))
    async with open_fleet(group, idle(2)) as fleet:
        await wait_for(lambda: states(fleet).count(InstanceState.READY) == 2)
    assert group.alive_at_shutdown is not None
    assert len(group.alive_at_shutdown) == 2
    assert group.calls_to("decrease") == []


@pytest.mark.anyio
async def test_shutdown_waits_for_held_slots_or_cancels_them() -> None:
    """Shutdown waits for held slots by default; with the option it cancels them with FleetClosed."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    finished: list[float] = []
    async with anyio.create_task_group() as tg:
        async with open_fleet(group, idle(1)) as fleet:

            async def job() -> None:
                async with fleet.acquire("long", timeout=30.0):
                    await anyio.sleep(500.0)
                finished.append(anyio.current_time())

            tg.start_soon(job)
            await anyio.sleep(10.0)
        closed_at = anyio.current_time()
    assert finished == [closed_at]

    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    settings = attrs.evolve(FAST, cancel_acquisitions_on_shutdown=True)
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        async with open_fleet(group, idle(1), settings=settings) as fleet:

            async def cancelled_job() -> None:
                try:
                    async with fleet.acquire("long", timeout=30.0):
                        await anyio.sleep(500.0)
                except FleetClosed as exc:
                    errors.append(exc)

            tg.start_soon(cancelled_job)
            await anyio.sleep(10.0)
        assert anyio.current_time() < 20.0 + group.calls[0].at
    assert len(errors) == 1
    with pytest.raises(FleetClosed):
        fleet.reserve("late")


@pytest.mark.anyio
async def test_events_stream_tells_the_story() -> None:
    """A subscriber sees instances become ready and slots acquired, in order."""
    group = SimulatedGroup(boot=Delay(2.0, 2.0))
    async with open_fleet(group, idle(1)) as fleet, fleet.events() as stream:
        async with fleet.acquire("job", timeout=30.0):
            pass
        seen = []
        while True:
            event = stream.receive_nowait()
            seen.append(type(event))
            if isinstance(event, SlotAcquired):
                break
        assert InstanceReady in seen
        assert seen.index(InstanceReady) < len(seen) - 1


@pytest.mark.anyio
async def test_a_day_of_traffic_in_virtual_time() -> None:
    """24 hours of jobs on a work-hours schedule: every job runs and the night scales to zero."""
    work = hours(4, 20, "* 8-18 * * *")
    schedule = Schedule([idle(0, minutes=10), work])
    group = SimulatedGroup(seed=11, boot=Delay(20.0, 60.0), deletion=Delay(5.0, 30.0))
    limits = Limits(capacity_per_instance=2, max_instances=20)
    done = 0
    night_counts: list[int] = []
    start = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    async with open_fleet(group, schedule, limits, start=start) as fleet:
        async with anyio.create_task_group() as tg:
            for minute in range(24 * 60):
                hour = minute // 60
                if minute % (3 if 8 <= hour < 17 else 45) == 0:

                    async def job(key: str = f"job-{minute}") -> None:
                        nonlocal done
                        async with fleet.acquire(key, timeout=3600.0):
                            await anyio.sleep(600.0)
                        done += 1

                    tg.start_soon(job)
                if minute == 23 * 60 + 30:
                    night_counts.append(len(group.live_ids()))
                await anyio.sleep(60.0)
        await anyio.sleep(1800.0)
        assert fleet.snapshot().instances == ()
    expected = sum(1 for m in range(24 * 60) if m % (3 if 8 <= m // 60 < 17 else 45) == 0)
    assert done == expected
    assert night_counts[0] <= 1
    stats = fleet.stats()
    assert (
        stats.histograms["instance_readiness_time_seconds"].count
        == stats.instance_operations["create"]
    )


@pytest.mark.anyio
async def test_stats_and_prometheus_metrics_agree() -> None:
    """stats() and a Prometheus scrape show the same figures under GitLab's names."""
    prometheus_client = pytest.importorskip("prometheus_client")
    group = SimulatedGroup(boot=Delay(4.0, 4.0))
    limits = Limits(capacity_per_instance=2, max_instances=5)
    async with open_fleet(group, idle(3), limits) as fleet:
        await wait_for(lambda: states(fleet).count(InstanceState.READY) == 2)
        registry = prometheus_client.CollectorRegistry()
        register_metrics(fleet, registry, labels={"runner": "r1"})
        async with fleet.acquire("job", timeout=5.0):
            stats = fleet.stats()
            assert stats.tasks["acquired"] == 1
            assert stats.tasks["idle"] == 3
            assert stats.instances["ready"] == 2
            assert stats.desired_instances == 2
            sample = registry.get_sample_value
            labels = {"runner": "r1"}
            assert sample("fleeting_taskscaler_tasks", {**labels, "state": "acquired"}) == 1
            assert sample("fleeting_taskscaler_tasks", {**labels, "state": "idle"}) == 3
            assert sample("fleeting_provisioner_instances", {**labels, "state": "ready"}) == 2
            assert sample("fleeting_taskscaler_desired_instances", labels) == 2
            assert sample("fleeting_provisioner_max_instances", labels) == 5
            assert (
                sample(
                    "fleeting_taskscaler_task_operations_total",
                    {**labels, "operation": "acquire"},
                )
                == 1
            )
            readiness = "fleeting_taskscaler_task_instance_readiness_time_seconds"
            assert sample(f"{readiness}_count", labels) == 2
            assert sample(f"{readiness}_bucket", {**labels, "le": "1.0"}) == 0
            assert sample(f"{readiness}_bucket", {**labels, "le": "5.0"}) == 2


@pytest.mark.anyio
async def test_reserve_failures_and_provider_calls_carry_gitlabs_metric_labels() -> None:
    """A preemptive reserve with no idle slot counts reserve_available_capacity_failure,
    a non-preemptive one past max_instances reserve_iop_capacity_failure (it was one
    reserve_failure label); provider calls show in fleeting_provisioner_internal_operations."""
    prometheus_client = pytest.importorskip("prometheus_client")
    limits = Limits(capacity_per_instance=1, max_instances=1)
    async with open_fleet(SimulatedGroup(), idle(0, preemptive_mode=True), limits) as fleet:
        with pytest.raises(NoCapacity):
            fleet.reserve("early")
        fleet.set_schedule(idle(0, preemptive_mode=False))
        async with fleet.acquire("job", timeout=60.0):
            with pytest.raises(NoCapacity):
                fleet.reserve("late")
            registry = prometheus_client.CollectorRegistry()
            register_metrics(fleet, registry)
            stats = fleet.stats()
    operations = stats.task_operations
    assert operations["reserve_available_capacity_failure"] == 1
    assert operations["reserve_iop_capacity_failure"] == 1
    assert "reserve_failure" not in operations
    assert stats.internal_operations["init"] == 1
    assert stats.internal_operations["increase"] == 1
    assert stats.internal_operations["update"] >= 1
    sample = registry.get_sample_value
    internal = "fleeting_provisioner_internal_operations_total"
    assert sample(internal, {"operation": "increase"}) == 1
    task = "fleeting_taskscaler_task_operations_total"
    assert sample(task, {"operation": "reserve_iop_capacity_failure"}) == 1


class _FullGroup(SimulatedGroup):
    """Accepts nothing, without raising: a quota or a full group."""

    async def increase(self, n: int) -> int:
        self.calls.append(Call("increase", (n,), anyio.current_time(), "0"))
        return 0


@pytest.mark.anyio
async def test_increase_accepting_nothing_backs_off_too() -> None:
    """A provider that accepts 0 instances is asked again after doubling pauses."""
    group = _FullGroup()
    settings = attrs.evolve(FAST, ready_backoff_initial=5.0, ready_backoff_max=20.0)
    async with open_fleet(group, idle(1), settings=settings):
        await anyio.sleep(100.0)
    times = [c.at for c in group.calls_to("increase")]
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [5, 10, 20]
    assert set(gaps[3:]) == {20}


@pytest.mark.anyio
async def test_teardown_finishes_even_when_the_owner_is_cancelled() -> None:
    """Cancelling the code that holds the fleet still deletes the instances and then
    shuts the provider down: teardown is shielded."""
    group = _ShutdownWatcher(boot=Delay(1.0, 1.0), deletion=Delay(3.0, 3.0))
    settings = attrs.evolve(FAST, delete_instances_on_shutdown=True, shutdown_deletion_interval=5.0)
    with anyio.move_on_after(60.0) as scope:
        async with open_fleet(group, idle(2), settings=settings):
            await anyio.sleep(3600.0)
    assert scope.cancelled_caught
    assert group.alive_at_shutdown == []
    assert len(group.calls_to("decrease")) >= 1
    assert group.calls[-1].verb == "shutdown"


@pytest.mark.anyio
async def test_max_use_count_one_gives_every_job_a_fresh_instance() -> None:
    """With max_use_count 1 each job lands on a new instance, deleted right after it."""
    group = SimulatedGroup(boot=Delay(5.0, 5.0), deletion=Delay(1.0, 1.0))
    limits = Limits(max_use_count=1)
    used: list[str] = []
    async with open_fleet(group, idle(1), limits) as fleet:
        for n in range(3):
            async with fleet.acquire(f"job-{n}", timeout=60.0) as slot:
                used.append(slot.instance_id)
                await anyio.sleep(10.0)
            released = anyio.current_time()
            await anyio.sleep(0.5)
            decreased = {c.args[0][0]: c.at for c in group.calls_to("decrease")}  # type: ignore[index]
            assert decreased[slot.instance_id] == pytest.approx(released, abs=0.05)
    assert len(set(used)) == 3


@pytest.mark.anyio
async def test_each_scale_decision_is_logged_once_with_its_reasons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scale-up retried on many ticks is logged once, with its figures as extras."""
    caplog.set_level(logging.INFO, logger="fleetkit.fleet")
    group = SimulatedGroup(faults=Faults(increase_error=1.0))
    async with open_fleet(group, idle(2)):
        await anyio.sleep(300.0)
    assert len(group.calls_to("increase")) > 3
    ups = [r for r in caplog.records if r.getMessage().startswith("scale up")]
    assert len(ups) == 1
    assert "idle target 2" in ups[0].getMessage()
    assert ups[0].__dict__["figures"]["desired_instances"] == 2
    assert ups[0].__dict__["fleet"] == "fleet"


@pytest.mark.anyio
async def test_idle_removal_does_not_recreate_an_instance() -> None:
    """Removing an expired idle instance does not immediately create another (GitLab #37673)."""
    group = SimulatedGroup(boot=Delay(5.0, 5.0), deletion=Delay(2.0, 2.0))
    async with open_fleet(group, idle(1, minutes=5)) as fleet:
        await wait_for(lambda: states(fleet) == [InstanceState.READY])
        async with fleet.acquire("job", timeout=60.0):
            await wait_for(lambda: states(fleet).count(InstanceState.READY) == 2)
        await anyio.sleep(3600.0)
        assert states(fleet) == [InstanceState.READY]
    assert [c.args for c in group.calls_to("increase")] == [(1,), (1,)]
    assert len(group.calls_to("decrease")) == 1
