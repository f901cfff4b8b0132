"""InstanceExecutor on the simulated group and a scripted connector, in trio's virtual time."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import anyio
import pytest
import trio.testing

from fleetkit.connector import CommandResult
from fleetkit.errors import FleetClosed
from fleetkit.executor import InstanceExecutor
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.jobs import Job, JobResult, JobStatus
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import Delay, Faults, SimulatedGroup

SETTINGS = FleetSettings(
    update_interval=10.0,
    update_interval_when_expecting=1.0,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=5.0,
    shutdown_deletion_retries=10,
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """trio with a clock that jumps ahead whenever every task waits."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _connector(job_seconds: float) -> FakeConnector:
    """A connector whose instances prepare jobs at once and run each for ``job_seconds``."""
    fake = FakeConnector()
    fake.on(r"^sh -s$", CommandResult(0, b"0\n/b\n/b/i/0/1\n", b""))
    fake.on(
        r"fleetkit-job",
        CommandResult(0, b"fleetkit-job 4242 session\nok\n", b""),
        delay=job_seconds,
    )
    return fake


def _jobs(count: int) -> list[Job]:
    return [Job(id=i, name=f"job {i}", shell="sh", script="make") for i in range(1, count + 1)]


def _max_overlap(results: Sequence[JobResult]) -> int:
    edges = sorted(
        itertools.chain.from_iterable(
            ((r.started_at, 1), (r.finished_at, -1)) for r in results if r.started_at is not None
        ),
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    return max(itertools.accumulate(step for _, step in edges), default=0)


@pytest.mark.anyio
async def test_fleet_grows_to_the_demand_and_concurrent_caps_jobs() -> None:
    """Forty ten-minute jobs: the fleet grows to max_instances, at most `concurrent` run at
    once, everyone waits at least one boot, and every instance is deleted at the end."""
    group = SimulatedGroup(seed=1, boot=Delay(30, 60), deletion=Delay(5, 10))
    fleet = Fleet(
        group,
        Limits(capacity_per_instance=2, max_instances=5),
        Policy(idle_count=0),
        settings=SETTINGS,
    )
    executor = InstanceExecutor(fleet, _connector(600), concurrent=8)
    async with executor:
        results = [r async for r in executor.submit(_jobs(40))]
    assert sorted(r.job_id for r in results) == list(range(1, 41))
    assert all(r.status is JobStatus.SUCCESS for r in results)
    assert _max_overlap(results) == 8
    assert min(r.wait or 0 for r in results) >= 30
    figures = executor.figures()
    assert figures.created in (4, 5)
    assert (figures.deleted, figures.live) == (figures.created, 0)
    assert group.live_ids() == []
    counts = executor.counts()
    assert (counts.queued, counts.running, counts.done) == (0, 0, 40)


@pytest.mark.anyio
async def test_jobs_on_dying_instances_are_retried_elsewhere() -> None:
    """When instances die under jobs, each job is tried again on another instance, and
    the final result lists the failed attempts."""
    group = SimulatedGroup(
        seed=7, boot=Delay(10, 20), deletion=Delay(1, 2), faults=Faults(death=0.4, death_within=900)
    )
    fleet = Fleet(
        group,
        Limits(capacity_per_instance=1, max_instances=6),
        Policy(idle_count=0),
        settings=SETTINGS,
    )
    executor = InstanceExecutor(fleet, _connector(600), retries=3)
    async with executor:
        results = [r async for r in executor.submit(_jobs(12))]
    retried = [r for r in results if r.earlier]
    assert retried, "with 40% of instances dying, some job must have been retried"
    for result in results:
        assert result.status in (JobStatus.SUCCESS, JobStatus.SYSTEM_FAILURE)
        assert result.attempt == len(result.earlier) + 1
        if result.status is JobStatus.SYSTEM_FAILURE:
            # Out of retries, or no slot in time (which is not retried).
            assert result.attempt == 4 or result.instance_id is None
        for earlier in result.earlier:
            assert earlier.status is JobStatus.SYSTEM_FAILURE
            assert earlier.instance_id != result.instance_id
            assert "lost" in (earlier.message or "")
    assert group.live_ids() == []


@pytest.mark.anyio
async def test_stop_reports_running_and_waiting_jobs_cancelled() -> None:
    """stop() during a run: jobs running and jobs still waiting all end cancelled, at once."""
    group = SimulatedGroup(seed=3, boot=Delay(10, 10), deletion=Delay(1, 1))
    fleet = Fleet(
        group,
        Limits(capacity_per_instance=1, max_instances=2),
        Policy(idle_count=0),
        settings=SETTINGS,
    )
    executor = InstanceExecutor(fleet, _connector(3600))
    async with executor:
        results = executor.submit(_jobs(5))
        await anyio.sleep(600)
        assert executor.counts().running == 2
        stopped_at = anyio.current_time()
        executor.stop()
        done = [r async for r in results]
    assert [r.status for r in done] == [JobStatus.CANCELLED] * 5
    assert sum(r.started_at is not None for r in done) == 2
    assert all(r.finished_at - stopped_at < 60 for r in done)
    assert group.live_ids() == []


@pytest.mark.anyio
async def test_leaving_at_once_after_submit_reports_every_job_cancelled() -> None:
    """Jobs submitted just before the executor closes end cancelled; none is lost or raises."""
    group = SimulatedGroup(seed=5, boot=Delay(10, 10), deletion=Delay(1, 1))
    fleet = Fleet(
        group,
        Limits(capacity_per_instance=1, max_instances=2),
        Policy(idle_count=0),
        settings=SETTINGS,
    )
    executor = InstanceExecutor(fleet, _connector(60))
    async with executor:
        results = executor.submit(_jobs(3))
    done = [r async for r in results]
    assert sorted((r.job_id, r.status) for r in done) == [
        (1, JobStatus.CANCELLED),
        (2, JobStatus.CANCELLED),
        (3, JobStatus.CANCELLED),
    ]
    with pytest.raises(FleetClosed, match="not open"):
        await executor.run(_jobs(1)[0])
