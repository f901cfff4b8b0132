"""The executor as an embedding program meets it: a bug in one job is that job's
result, a batch never ends silently, a wrong event loop is refused once at start,
and exceptions leave `async with` as raised."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio.testing

from fleetkit.connector import CommandResult
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import FleetkitError, UnsupportedEventLoop
from fleetkit.executor import InstanceExecutor, JobResults, register_job_metrics
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.jobs import OUTPUT_LIMIT, Job, JobResult, JobStatus, LogSink, MemoryLog
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import Delay, SimulatedGroup

SETTINGS = FleetSettings(update_interval_when_expecting=1.0, delete_instances_on_shutdown=True)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _fleet() -> tuple[Fleet, SimulatedGroup]:
    group = SimulatedGroup(seed=3, boot=Delay(5, 5), deletion=Delay(1, 1))
    fleet = Fleet(
        group, Limits(capacity_per_instance=4, max_instances=1), Policy(), settings=SETTINGS
    )
    return fleet, group


def _connector() -> FakeConnector:
    fake = FakeConnector()
    fake.on(r"^sh -s$", CommandResult(0, b"0\n/b\n/b/i/0/1\n", b""))
    fake.on(r"fleetkit-job", CommandResult(0, b"fleetkit-job 4242 session\nok\n", b""), delay=10)
    return fake


def _jobs(count: int) -> list[Job]:
    return [Job(id=i, name=f"job {i}", shell="sh", script="make") for i in range(1, count + 1)]


@pytest.mark.anyio
async def test_a_bug_in_one_job_is_that_jobs_result_and_the_others_run() -> None:
    """A log sink that raises for job 2 makes job 2 a system failure (not retried); jobs
    1 and 3 succeed and the batch gives all three results."""

    def logs(job: Job, attempt: int) -> LogSink:
        if job.id == 2:
            raise TypeError("a bug in the log factory")
        return MemoryLog()

    fleet, _ = _fleet()
    async with InstanceExecutor(fleet, _connector(), log_factory=logs) as executor:
        results = {r.job_id: r async for r in executor.submit(_jobs(3))}
        assert executor.counts().done == 3
    assert sorted(results) == [1, 2, 3]
    assert results[1].ok
    assert results[3].ok
    assert results[2].status is JobStatus.SYSTEM_FAILURE
    assert results[2].message == "internal error: TypeError: a bug in the log factory"
    assert (results[2].attempt, results[2].earlier) == (1, ())


@pytest.mark.anyio
async def test_submit_refuses_what_is_not_a_job_at_once() -> None:
    """submit() raises TypeError naming the item, before anything runs."""
    fleet, group = _fleet()
    jobs: list[Any] = [*_jobs(1), "echo a"]
    async with InstanceExecutor(fleet, _connector()) as executor:
        with pytest.raises(TypeError, match=r"^submit: jobs\[1\]: expected a fleetkit.jobs.Job"):
            executor.submit(jobs)
    assert group.calls_to("increase") == []


@pytest.mark.anyio
async def test_a_batch_that_ends_short_says_so() -> None:
    """Results that stop before every job has one raise instead of ending quietly."""
    send, receive = anyio.create_memory_object_stream[JobResult](1)
    results = JobResults(receive, expected=2)
    result = JobResult(job_id=1, name="a", status=JobStatus.SUCCESS, queued_at=0, finished_at=1)
    async with send:
        await send.send(result)
    with pytest.raises(FleetkitError, match="the batch ended after 1 of 2 results"):
        async for _ in results:
            pass


@pytest.mark.anyio
async def test_a_wrong_event_loop_is_refused_once_at_start() -> None:
    """Under trio, an executor with the SSH connector refuses to start with one
    UnsupportedEventLoop; no instance is requested, so none is marked unhealthy."""
    fleet, group = _fleet()
    with pytest.raises(UnsupportedEventLoop, match=r"needs anyio's asyncio backend.*on trio"):
        await InstanceExecutor(fleet, SSHConnector()).__aenter__()
    assert group.calls == []


@pytest.mark.anyio
async def test_an_exception_leaves_the_executor_block_as_raised() -> None:
    """An exception raised inside `async with executor:` comes out itself, not in a group."""
    fleet, _ = _fleet()

    class Boom(Exception):
        pass

    async def body() -> None:
        async with InstanceExecutor(fleet, _connector()) as executor:
            async for _ in executor.submit(_jobs(2)):
                raise Boom

    with pytest.raises(Boom):
        await body()


@pytest.mark.anyio
async def test_job_output_is_on_the_result_and_bounded() -> None:
    """JobResult.output holds the job's log (masked, as the log is), its last
    OUTPUT_LIMIT characters when longer, without a log factory."""
    fake = FakeConnector()
    fake.on(r"^sh -s$", CommandResult(0, b"0\n/b\n/b/i/0/1\n", b""))
    fake.on(
        r"fleetkit-job.*",
        CommandResult(0, b"fleetkit-job 4242 session\n" + b"x" * 100_000 + b"\nthe end\n", b""),
    )
    fleet, _ = _fleet()
    async with InstanceExecutor(fleet, fake) as executor:
        result = await executor.run(_jobs(1)[0])
    assert result.ok
    assert len(result.output) == OUTPUT_LIMIT
    assert result.output.endswith("x\nthe end\nJob succeeded\n")
    assert "output" not in repr(result)


@pytest.mark.anyio
async def test_job_stats_and_their_prometheus_metrics() -> None:
    """job_stats() counts finished jobs by outcome and failure reason, with wait and
    duration histograms; register_job_metrics serves them under their names."""
    from prometheus_client import CollectorRegistry, generate_latest

    def logs(job: Job, attempt: int) -> LogSink:
        if job.id == 3:
            raise OSError("disk full")  # job 3 ends in a (not retried) system failure
        return MemoryLog()

    fleet, _ = _fleet()
    registry = CollectorRegistry()
    async with InstanceExecutor(fleet, _connector(), log_factory=logs) as executor:
        register_job_metrics(executor, registry, labels={"runner": "r1"})
        before = executor.job_stats()
        results = [r async for r in executor.submit(_jobs(3))]
        stats = executor.job_stats()
    assert (before.queued, before.running, before.done) == (0, 0, 0)
    assert len(results) == 3
    assert (stats.queued, stats.running, stats.done) == (0, 0, 3)
    assert (stats.finished["success"], stats.finished["system_failure"]) == (2, 1)
    assert stats.failure_reasons == {"runner_system_failure": 1}
    assert (stats.wait.count, stats.duration.count) == (2, 2)  # job 3 never started
    text = generate_latest(registry).decode()
    assert 'fleetkit_jobs{runner="r1",state="queued"} 0.0' in text
    assert 'fleetkit_jobs_finished_total{outcome="success",runner="r1"} 2.0' in text
    assert (
        'gitlab_runner_failed_jobs_total{failure_reason="runner_system_failure",runner="r1"} 1.0'
        in text
    )
    assert 'gitlab_runner_job_duration_seconds_count{runner="r1"} 2.0' in text
    assert 'fleetkit_job_wait_seconds_bucket{le="+Inf",runner="r1"} 2.0' in text
