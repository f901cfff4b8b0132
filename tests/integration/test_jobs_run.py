"""run_job over real SSH (OpenSSH sshd) and over the local connector (subprocesses):
variables, masking, exit codes, timeouts, cancel, cleanup."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from fleetkit.connector.local import LocalConnector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.jobs import MASK, Job, JobOptions, JobStatus, MemoryLog, Variable, run_job
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import TestSSHD, running_sshd
from tests.integration.executor_support import remove_lost_build_dirs
from tests.integration.jobs_support import StaticSlot, Target, job_target, processes_with
from tests.integration.local_provider_support import require_sshd

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    """asyncssh runs on asyncio only."""
    return "asyncio"


@pytest.fixture(params=["ssh", "local"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """A real sshd reached over SSH, or a directory reached with the local connector."""
    async with job_target(request.param, tmp_path) as found:
        yield found


@pytest.mark.anyio
async def test_job_sees_ci_variables_and_secret_is_masked(target: Target) -> None:
    """The script sees GitLab's and fleetkit's variables, and a masked value never reaches the log."""
    secret = "tok-" + secrets.token_hex(8)
    job = Job(
        id=42,
        name="vars",
        shell="sh",
        script=(
            'echo "id=$CI_JOB_ID name=$CI_JOB_NAME slot=$FLEETKIT_SLOT ci=$CI gitlab=$GITLAB_CI"\n'
            'echo "instance=$FLEETKIT_INSTANCE_ID dir=$CI_PROJECT_DIR pwd=$(pwd)"\n'
            'echo "secret=$TOKEN" ; echo "to stderr $TOKEN" >&2\n'
            'echo "plain=$PLAIN"\n'
        ),
        variables=[Variable("TOKEN", secret, masked=True), Variable("PLAIN", "visible")],
    )
    log = MemoryLog()
    result = await run_job(target.slot(), job, target.connector, log=log)
    assert result.status is JobStatus.SUCCESS, log.text
    assert (result.exit_code, result.instance_id, result.slot) == (0, target.info.id, 1)
    assert "id=42 name=vars slot=1 ci=true gitlab=true" in log.text
    assert f"secret={MASK}" in log.text
    assert f"to stderr {MASK}" in log.text
    assert "plain=visible" in log.text
    assert secret not in log.text
    assert (
        f"Dialing instance {target.info.id}...\nInstance {target.info.id} connected\n" in log.text
    )
    line = next(x for x in log.text.splitlines() if x.startswith("instance="))
    project_dir = line.split("dir=")[1].split()[0]
    assert project_dir.endswith(f"/{target.info.id}/1/42")
    assert line.endswith(f"pwd={project_dir}")
    async with target.connector.connect(target.info) as conn:
        gone = await conn.run(f"test -e {project_dir} || test -e {project_dir}.tmp")
    assert gone.exit_code == 1  # the build directory was removed


@pytest.mark.anyio
async def test_failing_script_reports_its_exit_code(target: Target) -> None:
    """A script stops at its first failing command (pipes included in bash) with its exit code."""
    log = MemoryLog()
    piped = Job(id=1, name="pipe", script="echo before\nfalse | true\necho after\n")
    result = await run_job(target.slot(), piped, target.connector, log=log)
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 1)
    assert "before" in log.text
    assert "after" not in log.text
    log = MemoryLog()
    three = Job(id=2, name="three", shell="sh", script="(exit 3)\necho after\n")
    result = await run_job(target.slot(), three, target.connector, log=log)
    assert (result.status, result.exit_code) == (JobStatus.FAILED, 3)
    assert "after" not in log.text
    assert "ERROR: Job failed: exit code 3" in log.text


@pytest.mark.anyio
async def test_timeout_ends_every_process_of_the_job(target: Target) -> None:
    """Past its timeout the job and the processes it started are gone, and it counts as timed out."""
    marker = str(3000 + secrets.randbelow(900))
    job = Job(
        id=7,
        name="sleeps",
        shell="sh",
        # A background child and a TERM-ignoring foreground child: both must end.
        script=f"sleep {marker}1 &\ntrap '' TERM\necho started\nsleep {marker}2\n",
        timeout=timedelta(seconds=1),
    )
    log = MemoryLog()
    with anyio.fail_after(30):
        result = await run_job(
            target.slot(), job, target.connector, log=log, options=JobOptions(kill_grace=0.5)
        )
    assert result.status is JobStatus.TIMED_OUT, log.text
    assert "started" in log.text
    assert "job timeout" in (result.message or "")
    assert result.duration is not None
    assert result.duration < 10
    assert processes_with(f"sleep {marker}") == []


@pytest.mark.anyio
async def test_kept_build_dir_stays_without_its_secrets(target: Target) -> None:
    """With keep_build_dir the project directory stays, the private files with variables do not."""
    job = Job(id=9, name="keep", shell="sh", script="echo artifact > out.txt\npwd\n")
    log = MemoryLog()
    result = await run_job(
        target.slot(0), job, target.connector, log=log, options=JobOptions(keep_build_dir=True)
    )
    assert result.ok, log.text
    project_dir = next(x for x in log.text.splitlines() if x.startswith("/"))
    async with target.connector.connect(target.info) as conn:
        kept = await conn.run(f"cat {project_dir}/out.txt; test -e {project_dir}.tmp")
        await conn.run(f"rm -rf {project_dir}; rmdir -p $(dirname {project_dir}) 2>/dev/null")
    assert kept.stdout_text == "artifact\n"
    assert kept.exit_code == 1


@pytest.mark.anyio
async def test_unreachable_instance_is_a_system_failure(sshd: TestSSHD) -> None:
    """A slot whose instance refuses connections ends as a system failure, not a job failure."""
    info = sshd.connect_info("gone", protocol_port=1)
    log = MemoryLog()
    async with SSHConnector(dial_timeout=0.5) as ssh:
        result = await run_job(
            StaticSlot("gone", 0, info),
            Job(id=1, name="x", script="true"),
            ssh,
            log=log,
        )
    assert result.status is JobStatus.SYSTEM_FAILURE
    assert result.message is not None
    assert "ConnectTimeout" in result.message
    assert "system failure" in log.text


@pytest.mark.anyio
async def test_cancel_ends_the_job_and_cleans_up(target: Target) -> None:
    """Cancelling run_job ends the remote processes and removes the build directory."""
    marker = str(4000 + secrets.randbelow(900))
    job = Job(id=5, name="long", shell="sh", script=f"echo $CI_PROJECT_DIR\nsleep {marker}\n")
    log = MemoryLog()
    with anyio.move_on_after(1.5) as scope:
        await run_job(target.slot(), job, target.connector, log=log)
    assert scope.cancelled_caught
    assert "Job cancelled" in log.text
    assert processes_with(f"sleep {marker}") == []
    project_dir = next(x for x in log.text.splitlines() if x.startswith("/"))
    async with target.connector.connect(target.info) as conn:
        gone = await conn.run(f"test -e {project_dir}")
    assert gone.exit_code == 1


@pytest.mark.anyio
async def test_missing_local_instance_is_a_system_failure(tmp_path: Path) -> None:
    """A local 'instance' whose directory is gone ends as a system failure."""
    info = ConnectInfo(id="gone", internal_addr=str(tmp_path / "missing"), protocol="local")
    log = MemoryLog()
    job = Job(id=1, name="x", script="true")
    result = await run_job(StaticSlot("gone", 0, info), job, LocalConnector(), log=log)
    assert result.status is JobStatus.SYSTEM_FAILURE
    assert "ConnectionLost" in (result.message or "")


@pytest.mark.anyio
async def test_dialing_line_shows_addresses_when_configured(target: Target) -> None:
    """With log_internal_ip the job log names the address dialled, as GitLab's setting does."""
    log = MemoryLog()
    job = Job(id=3, name="where", shell="sh", script="true")
    result = await run_job(
        target.slot(), job, target.connector, log=log, options=JobOptions(log_internal_ip=True)
    )
    assert result.ok, log.text
    assert f"Dialing instance {target.info.id}, internal IP: {target.info.internal_addr}..." in (
        log.text
    )


@pytest.mark.anyio
async def test_common_build_dir_is_one_per_instance(target: Target) -> None:
    """With common_build_dir every job's project dir is INSTANCE/common, removed afterwards."""
    dirs = []
    for job_id in (1, 2):
        log = MemoryLog()
        job = Job(id=job_id, name="c", shell="sh", script='echo "dir=$CI_PROJECT_DIR"')
        result = await run_job(
            target.slot(job_id - 1),
            job,
            target.connector,
            log=log,
            options=JobOptions(common_build_dir=True),
        )
        assert result.ok, log.text
        dirs.append(next(x for x in log.text.splitlines() if x.startswith("dir=")))
    assert dirs[0] == dirs[1]
    assert dirs[0].endswith(f"/{target.info.id}/common")
    async with target.connector.connect(target.info) as conn:
        gone = await conn.run(f"test -e {dirs[0].removeprefix('dir=')}")
    assert gone.exit_code == 1


@pytest.mark.anyio
async def test_connection_lost_mid_job_is_a_system_failure(tmp_path: Path) -> None:
    """When the instance's sshd and its sessions die under a running job, the job ends as a
    system failure, soon, not as a failure of its script."""
    require_sshd()
    instance = f"cut-{secrets.token_hex(4)}"
    log = MemoryLog()
    job = Job(id=8, name="cut", shell="sh", script="echo started; sleep 30")
    async with (
        running_sshd(tmp_path / "sshd") as sshd,
        SSHConnector(dial_timeout=1, keepalive=0.5) as ssh,
        anyio.create_task_group() as tg,
    ):
        results = []

        async def run() -> None:
            slot = StaticSlot(instance, 0, sshd.connect_info(instance))
            results.append(await run_job(slot, job, ssh, log=log))

        tg.start_soon(run)
        with anyio.fail_after(10):
            while "started" not in log.text:  # noqa: ASYNC110 - the log is a plain buffer
                await anyio.sleep(0.05)
        await sshd.daemon.stop()
    (result,) = results
    assert result.status is JobStatus.SYSTEM_FAILURE, log.text
    assert result.duration is not None
    assert result.duration < 15
    # No cleanup reaches a dead connection; here the "instance" shares this /tmp.
    remove_lost_build_dirs(instance)
