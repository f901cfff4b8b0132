"""GitLab autoscaler failures, replayed through the real fleet: each must not happen.

One scenario per known failure (the spec's pain-point list), each a small trace
on a simulated cloud in virtual time, asserting on what the cloud saw (every
instance's life) and on the jobs' waits.
"""

from __future__ import annotations

import itertools
import math
from datetime import timedelta

import pytest

from fleetkit.fleet import FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import (
    CloudFaults,
    FleetConfig,
    Options,
    Trace,
    TraceJob,
    figures,
    parse_boot_time,
    replay,
)
from fleetkit.simulate._trace import DEFAULT_START

BOOT = parse_boot_time("60s")


def _trace(jobs: list[tuple[float, float]], end: float = 0.0) -> Trace:
    items = tuple(TraceJob(at, duration, f"job-{i}") for i, (at, duration) in enumerate(jobs))
    return Trace(DEFAULT_START, items, end=max(end, items[-1].arrival))


def test_scale_to_zero_with_several_slots_per_instance_gitlab_37643() -> None:
    # Six 10-minute jobs on 4-slot instances: two instances, then none.
    config = FleetConfig(
        name="cap4",
        limits=Limits(capacity_per_instance=4),
        policies=[Policy(idle_count=0, idle_time=timedelta(minutes=5))],
    )
    trace = _trace([(0.0, 600.0)] * 6, end=2 * 3600.0)
    run = replay(config, trace, Options(boot=BOOT, warm=False))
    assert len(run.lives) == 2
    for life in run.lives:
        # Idle from ~660 s (boot 60 s + the job), removed 5 minutes later.
        assert life.deleted_at <= 660 + 300 + 60 + 10 + 1, life
    assert all(life.ended_at < run.end for life in run.lives)
    assert figures(run, wait_threshold=300, price_per_hour=0).instances_deleted == 2


def test_no_new_instance_right_after_scaling_to_zero_gitlab_37526() -> None:
    config = FleetConfig(
        name="zero",
        limits=Limits(capacity_per_instance=2),
        policies=[Policy(idle_count=0, idle_time=timedelta(minutes=2))],
    )
    trace = _trace([(0.0, 300.0), (0.0, 300.0), (3 * 3600.0, 60.0)], end=4 * 3600.0)
    run = replay(config, trace, Options(boot=BOOT, warm=False))
    requested = sorted(life.requested_at for life in run.lives)
    # One instance for the first pair of jobs, one three hours later for the
    # last job; nothing in between once the fleet scaled to zero.
    assert len(requested) == 2, requested
    assert requested[0] < 1.0
    assert 3 * 3600.0 <= requested[1] < 3 * 3600.0 + 1.0
    first = min(run.lives, key=lambda life: life.requested_at)
    assert first.deleted_at < 3600.0


def test_a_failing_ready_command_backs_off_taskscaler_26() -> None:
    # The ready command always fails: without backoff the fleet would create
    # and delete an instance every boot (GitLab before 17.0: 60 an hour here).
    settings = FleetSettings(instance_ready_command="cloud-init status --wait")
    config = FleetConfig(
        name="broken-image",
        limits=Limits(capacity_per_instance=1, max_instances=5),
        policies=[Policy(idle_count=1, idle_time=timedelta(minutes=10))],
        settings=settings,
    )
    trace = _trace([(0.0, 60.0)], end=3600.0)
    options = Options(boot=BOOT, warm=False, faults=CloudFaults(ready_failure=1.0), drain_limit=0.0)
    run = replay(config, trace, options)
    # Each round asks for two instances (the job and idle_count 1), both fail.
    rounds = sorted({round(life.requested_at) for life in run.lives})
    gaps = [b - a for a, b in itertools.pairwise(rounds)]
    assert len(rounds) <= 14, rounds  # 5 s, 10 s, ... doubling, capped at 300 s
    assert all(later >= earlier - 2.0 for earlier, later in itertools.pairwise(gaps))
    assert max(gaps) >= 300.0
    assert run.unfinished == 1
    assert math.isnan(run.finished[0])
    figs = figures(run, wait_threshold=300, price_per_hour=0)
    assert figs.jobs_unfinished == 1
    assert figs.wait_max_s >= 3600.0
    assert figs.instances_unused == figs.instances_deleted


def test_spot_loss_mid_job_is_retried_elsewhere_gitlab_38271() -> None:
    config = FleetConfig(
        name="spot",
        limits=Limits(capacity_per_instance=1, max_instances=20),
        policies=[Policy(idle_count=0, idle_time=timedelta(minutes=5))],
    )
    # Twenty 30-minute jobs; a reclaim rate of 1 an instance-hour loses many mid-job.
    trace = _trace([(i * 60.0, 1800.0) for i in range(20)], end=4 * 3600.0)
    options = Options(boot=BOOT, faults=CloudFaults(spot_loss_per_hour=1.0), seed=2, retries=3)
    run = replay(config, trace, options)
    lost = [life for life in run.lives if life.lost]
    assert lost, "the scenario needs spot losses"
    figs = figures(run, wait_threshold=300, price_per_hour=0)
    assert figs.jobs_retried >= 1
    # Every job either finished (on another instance) or used up its retries:
    # none is stuck on a lost instance, and the run ended.
    assert figs.jobs_unfinished == 0
    assert sum(1 for f in run.finished if not math.isnan(f)) + figs.jobs_failed == 20
    for life in lost:
        for _start, stop in run.holds.get(life.id, []):
            assert stop <= life.gone_at + 1e-6  # no job ran on after its instance went
    assert figs.instances_created >= 20 + 1  # lost instances were replaced


def test_a_burst_of_300_jobs_scales_out_at_once_gitlab_38294_38355() -> None:
    # 300 jobs at once on a warm fleet of 2: they must not queue behind the two
    # existing instances; every job starts within a boot time and a poll or two.
    config = FleetConfig(
        name="burst",
        limits=Limits(capacity_per_instance=1, max_instances=400),
        policies=[Policy(idle_count=2, idle_time=timedelta(minutes=10))],
    )
    trace = _trace([(0.0, 1200.0)] * 300, end=3600.0)
    run = replay(config, trace, Options(boot=BOOT))
    figs = figures(run, wait_threshold=300, price_per_hour=0)
    assert figs.wait_max_s <= 60.0 + 2 * 2.0 + 1.0, figs
    assert figs.instances_created >= 298
    # Two preloaded instances took two jobs at once; nobody waited for a job to end.
    assert sum(1 for w in run.waits if w == 0.0) >= 2
    assert figs.jobs_waited_over_threshold == 0


def test_the_clairvoyant_bound_is_the_busy_time_of_a_perfect_fleet() -> None:
    config = FleetConfig(
        name="exact",
        limits=Limits(capacity_per_instance=1),
        policies=[Policy(idle_count=0, idle_time=timedelta(0))],
    )
    trace = _trace([(0.0, 600.0), (1200.0, 600.0)], end=1800.0)
    run = replay(config, trace, Options(boot=parse_boot_time("0s"), warm=False))
    figs = figures(run, wait_threshold=300, price_per_hour=6.0)
    assert figs.lower_bound_instance_minutes == 20.0
    assert figs.busy_instance_minutes == pytest.approx(20.0)
    assert figs.instance_minutes >= figs.lower_bound_instance_minutes
    assert figs.instance_minutes == pytest.approx(
        figs.busy_instance_minutes + figs.idle_instance_minutes + figs.booting_instance_minutes
    )
    assert figs.lower_bound_cost == 2.0
    assert figs.cost == pytest.approx(figs.instance_minutes / 60 * 6.0)
    # A job waits only for the fleet to notice the new instance (one 2 s poll).
    assert figs.wait_max_s <= 2.0 + 0.1
