"""The simulator's figures: accounting identities, windows, warm starts, faults, determinism."""

from __future__ import annotations

import heapq
import math
from datetime import timedelta

import anyio
import attrs
import pytest

from fleetkit.fleet import Fleet
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import (
    CloudFaults,
    FleetConfig,
    Options,
    Trace,
    TraceJob,
    Workday,
    figures,
    generate,
    parse_boot_time,
    replay,
    simulate_one,
)
from fleetkit.simulate._trace import DEFAULT_START

DAY = 86400.0
SMALL = generate(Workday(pipelines=40, jobs=3, days=2, seed=11))
SINGLE = FleetConfig(
    name="single",
    limits=Limits(capacity_per_instance=1, max_instances=30),
    policies=[Policy(idle_count=2, idle_time=timedelta(minutes=10))],
)


def test_same_seed_same_figures_other_seed_other_figures() -> None:
    options = Options(seed=4, faults=CloudFaults(spot_loss_per_hour=0.2))
    first = simulate_one(SINGLE, SMALL, options).figures
    assert simulate_one(SINGLE, SMALL, options).figures == first
    other = simulate_one(SINGLE, SMALL, attrs.evolve(options, seed=5)).figures
    assert other != first
    assert other.jobs == first.jobs


def test_instance_minutes_split_into_busy_idle_and_booting() -> None:
    run = replay(SINGLE, SMALL, Options(boot=parse_boot_time("60s"), warm=False))
    figs = figures(run, wait_threshold=300, price_per_hour=0.12)
    # One slot per instance and no losses: busy is exactly the jobs' time,
    # which is the clairvoyant bound.
    assert figs.busy_instance_minutes == pytest.approx(SMALL.job_seconds / 60)
    assert figs.lower_bound_instance_minutes == pytest.approx(figs.busy_instance_minutes)
    total = figs.busy_instance_minutes + figs.idle_instance_minutes + figs.booting_instance_minutes
    assert figs.instance_minutes == pytest.approx(total)
    assert figs.cost == pytest.approx(figs.instance_minutes / 60 * 0.12)
    # Booting is the 60 s boot plus at most one 2 s poll to notice it.
    ready = [life for life in run.lives if life.id in run.ready_at]
    for life in ready:
        assert 60.0 <= run.ready_at[life.id] - life.requested_at <= 62.0 + 1e-6
    assert figs.booting_instance_minutes * 60 == pytest.approx(
        sum(run.ready_at[life.id] - life.requested_at for life in ready)
    )
    assert figs.instances_created == len(run.lives)
    assert figs.instances_deleted == sum(1 for life in run.lives if life.ended_at <= run.end)
    assert 0 < figs.instances_unused < figs.instances_deleted


def test_figures_from_a_point_count_only_what_follows() -> None:
    run = replay(SINGLE, SMALL, Options())
    whole = figures(run, wait_threshold=300, price_per_hour=1.0)
    second = figures(run, wait_threshold=300, price_per_hour=1.0, since=DAY)
    assert second.jobs == sum(1 for j in SMALL.jobs if j.arrival >= DAY)
    assert 0 < second.jobs < whole.jobs
    assert 0 < second.instance_minutes < whole.instance_minutes
    assert second.instance_minutes == pytest.approx(
        second.busy_instance_minutes
        + second.idle_instance_minutes
        + second.booting_instance_minutes
    )
    assert second.lower_bound_instance_minutes == pytest.approx(
        sum(j.duration for j in SMALL.jobs if j.arrival >= DAY) / 60
    )
    assert figures(run, wait_threshold=300, price_per_hour=1.0, since=0.0) == whole
    via_options = simulate_one(SINGLE, SMALL, Options(measure_from=DAY, price_per_hour=1.0)).figures
    assert via_options == second


def test_a_trace_window_starts_at_its_own_zero() -> None:
    day_two = SMALL.between(DAY, 2 * DAY)
    assert day_two.start == DEFAULT_START + timedelta(days=1)
    assert day_two.end == DAY
    assert [j.arrival + DAY for j in day_two.jobs] == [
        j.arrival for j in SMALL.jobs if j.arrival >= DAY
    ]


def test_warm_start_has_the_idle_target_ready_cold_starts_empty() -> None:
    config = attrs.evolve(SINGLE, policies=[Policy(idle_count=3, idle_time=timedelta(hours=1))])
    trace = Trace(DEFAULT_START, (TraceJob(10.0, 60.0), TraceJob(10.0, 60.0)), end=600.0)
    boot = parse_boot_time("60s")
    warm = replay(config, trace, Options(boot=boot))
    assert sum(1 for life in warm.lives if life.preloaded) == 3
    assert list(warm.waits) == [0.0, 0.0]
    cold = replay(config, trace, Options(boot=boot, warm=False))
    assert not any(life.preloaded for life in cold.lives)
    assert min(cold.waits) >= 60.0 - 10.0


def test_concurrent_holds_jobs_in_arrival_order() -> None:
    # concurrent = 1 on a fleet with room for ten: one job at a time, FCFS.
    config = attrs.evolve(SINGLE, concurrent=1)
    jobs = tuple(TraceJob(i * 20.0, 45.0 + i % 3, f"j{i}") for i in range(12))
    trace = Trace(DEFAULT_START, jobs, end=0.0)
    run = replay(config, trace, Options(boot=parse_boot_time("0s")))
    free, expected = [0.0], []
    for job in jobs:
        start = max(job.arrival, heapq.heappop(free))
        expected.append(start - job.arrival)
        heapq.heappush(free, start + job.duration)
    assert list(run.waits) == pytest.approx(expected, abs=0.05)


def test_never_ready_and_failed_creations_are_replaced() -> None:
    faults = CloudFaults(never_ready=0.2, create_failure=0.2)
    config = attrs.evolve(SINGLE, limits=attrs.evolve(SINGLE.limits, ready_timeout=900.0))
    run = replay(config, SMALL.between(0, DAY), Options(faults=faults, seed=3))
    stuck = [life for life in run.lives if life.running_at == math.inf and life.gone_at == math.inf]
    failed = [life for life in run.lives if life.running_at == math.inf and life.gone_at < math.inf]
    assert stuck
    assert failed
    for life in stuck:
        if life.requested_at + 900.0 + 62.0 < run.end:
            # Removed once past the fleet's ready timeout (and a poll).
            assert life.delete_at <= life.requested_at + 900.0 + 62.0
    figs = figures(run, wait_threshold=300, price_per_hour=0)
    assert figs.jobs_unfinished == 0
    assert figs.jobs_failed == 0
    assert figs.instances_unused >= len(stuck) + len(failed) - 5  # the last few may still be alive


def test_a_controller_changes_the_fleet_while_it_runs() -> None:
    config = attrs.evolve(SINGLE, policies=[Policy(idle_count=3, idle_time=timedelta(minutes=1))])
    trace = Trace(DEFAULT_START, (TraceJob(0.0, 60.0),), end=3 * 3600.0)
    seen: list[float] = []

    async def at_one_hour_scale_to_zero(fleet: Fleet, given: Trace) -> None:
        assert given is trace
        await anyio.sleep(3600.0)
        seen.append(anyio.current_time())
        fleet.set_schedule(Policy(idle_count=0, idle_time=timedelta(minutes=1)))
        await anyio.sleep_forever()  # cancelled when the replay ends

    options = Options(boot=parse_boot_time("30s"))
    kept = replay(config, trace, options)
    assert sum(1 for life in kept.lives if life.ended_at > kept.end) == 3
    run = replay(config, trace, options, controller=at_one_hour_scale_to_zero)
    assert len(seen) == 1
    assert all(life.ended_at < 3600.0 + 60.0 + 60.0 + 10.0 + 1.0 for life in run.lives)
