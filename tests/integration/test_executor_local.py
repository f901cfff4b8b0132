"""InstanceExecutor on the local provider: over real SSH and over the local connector."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleetkit.executor import InstanceExecutor
from fleetkit.jobs import Job, JobStatus, MemoryLog
from fleetkit.policy import Policy
from tests.integration.executor_support import (
    kill_instance,
    local_config,
    remove_lost_build_dirs,
    sandbox_root,
    wait_until,
)
from tests.integration.local_provider_support import leftovers, require_sshd

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    """asyncssh (SSH mode) runs on asyncio only."""
    return "asyncio"


@pytest.fixture(params=["ssh", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    """Instances reached over real SSH (an sshd each) or as local sandboxes."""
    if request.param == "ssh":
        require_sshd()
    return str(request.param)


def _job(job_id: int, script: str, **kw: object) -> Job:
    return Job(id=job_id, name=f"job {job_id}", shell="sh", script=script, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_jobs_run_on_a_fleet_that_grows_and_is_deleted_at_the_end(
    tmp_path: Path, mode: str
) -> None:
    """Jobs run in parallel on instances the fleet creates, and none is left at the end."""
    config = local_config(tmp_path, use_sshd=mode == "ssh", capacity=2, max_instances=2)
    jobs = [
        _job(i, f'echo "job {i} on $FLEETKIT_INSTANCE_ID slot $FLEETKIT_SLOT"; sleep 0.5')
        for i in range(1, 5)
    ]
    with anyio.fail_after(60):
        async with InstanceExecutor.from_config(config) as executor:
            results = [r async for r in executor.submit(jobs)]
            figures = executor.figures()
    assert sorted(r.job_id for r in results) == [1, 2, 3, 4]
    assert all(r.status is JobStatus.SUCCESS for r in results), [r.message for r in results]
    slots = {(r.instance_id, r.slot) for r in results}
    assert len({i for i, _ in slots}) == 2  # grew to max_instances
    assert {s for _, s in slots} == {0, 1}
    assert figures.created == 2
    final = executor.figures()
    assert (final.created, final.deleted, final.live) == (2, 2, 0)
    assert leftovers(sandbox_root(tmp_path)) == []


@pytest.mark.anyio
async def test_concurrent_caps_jobs_in_flight(tmp_path: Path) -> None:
    """With concurrent = 1 the jobs run one after the other although slots are free."""
    config = local_config(tmp_path, use_sshd=False, capacity=4, max_instances=1, concurrent=1)
    jobs = [_job(i, "sleep 0.3") for i in range(1, 4)]
    with anyio.fail_after(60):
        async with InstanceExecutor.from_config(config) as executor:
            results = [r async for r in executor.submit(jobs)]
    spans = sorted((r.started_at, r.finished_at) for r in results if r.started_at is not None)
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


@pytest.mark.anyio
async def test_job_on_a_dying_instance_is_retried_on_another(tmp_path: Path, mode: str) -> None:
    """When the instance under a running job dies, the job runs again elsewhere and both
    attempts are reported."""
    config = local_config(tmp_path, use_sshd=mode == "ssh", capacity=1, max_instances=2)
    job = _job(
        1, 'echo "started $FLEETKIT_ATTEMPT"; [ "$FLEETKIT_ATTEMPT" = 1 ] && sleep 60; echo done'
    )
    log_texts: dict[int, MemoryLog] = {}

    def logs(j: Job, attempt: int) -> MemoryLog:
        log_texts[attempt] = MemoryLog()
        return log_texts[attempt]

    results = []
    with anyio.fail_after(60):
        async with (
            InstanceExecutor.from_config(config, log_factory=logs) as executor,
            anyio.create_task_group() as tg,
        ):

            async def run() -> None:
                results.append(await executor.run(job))

            tg.start_soon(run)
            await wait_until(lambda: 1 in log_texts and "started 1" in log_texts[1].text)
            (busy,) = [i.id for i in executor.fleet.snapshot().instances if i.slots_in_use]
            kill_instance(sandbox_root(tmp_path), busy)
            await wait_until(lambda: bool(results))
            await wait_until(
                lambda: busy not in {i.id for i in executor.fleet.snapshot().instances}
            )
            if mode == "ssh":
                # The deleted instance's pooled connection (its session survived the
                # listener) was closed when the fleet reported it gone.
                ssh: Any = executor.connector.for_protocol("ssh")  # type: ignore[attr-defined]
                await wait_until(lambda: ssh.open_connections(busy) == 0)
    (result,) = results
    assert result.status is JobStatus.SUCCESS, (result, [t.text for t in log_texts.values()])
    assert result.attempt == 2
    (first,) = result.earlier
    assert first.status is JobStatus.SYSTEM_FAILURE
    assert first.instance_id == busy
    assert result.instance_id != busy
    assert "done" in log_texts[2].text
    assert "ERROR: Job failed (system failure)" in log_texts[1].text
    assert leftovers(sandbox_root(tmp_path)) == []
    remove_lost_build_dirs(busy)


@pytest.mark.anyio
async def test_reload_applies_new_policies_without_a_restart(tmp_path: Path) -> None:
    """After the config's idle_count changes, reload() makes the running fleet keep that many warm."""
    config = local_config(tmp_path, use_sshd=False, capacity=1, max_instances=3, idle_count=0)
    with anyio.fail_after(60):
        async with InstanceExecutor.from_config(config) as executor:
            await anyio.sleep(0.5)
            assert executor.fleet.snapshot().instances == ()
            config.write_text(config.read_text().replace("idle_count = 0", "idle_count = 2"))
            schedule = executor.reload()
            assert schedule.policies[0] == Policy(
                idle_count=2, idle_time=schedule.policies[0].idle_time
            )
            await wait_until(lambda: len(executor.fleet.snapshot().instances) >= 2)
    assert executor.figures().created == 2
    assert leftovers(sandbox_root(tmp_path)) == []


@pytest.mark.anyio
async def test_stop_cancels_running_and_queued_jobs(tmp_path: Path) -> None:
    """stop() ends the running job (its processes too) and reports it and the queued ones cancelled."""
    config = local_config(tmp_path, use_sshd=False, capacity=1, max_instances=1, concurrent=1)
    marker = f"{os.getpid() % 1000}7"
    jobs = [_job(1, f"sleep 60{marker}"), _job(2, "true")]
    with anyio.fail_after(60):
        async with InstanceExecutor.from_config(config) as executor:
            stream = executor.submit(jobs)
            await wait_until(lambda: executor.counts().running > 0)
            await anyio.sleep(0.3)
            executor.stop()
            results = [r async for r in stream]
    assert sorted((r.job_id, r.status) for r in results) == [
        (1, JobStatus.CANCELLED),
        (2, JobStatus.CANCELLED),
    ]
    running = next(r for r in results if r.job_id == 1)
    assert running.started_at is not None
    assert leftovers(sandbox_root(tmp_path)) == []
