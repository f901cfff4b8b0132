"""Issue 10, the OS side: attacks by hostile jobs and hostile local users.

Each test replays one attack from the issue as an attacker would make it: a
job script that tampers with what fleetkit relies on, a job variable chosen to
collide with the wrapper's names, a local user (``nobody``) planting files
where a root-run fleetkit will look. Every attack counts in ``ATTACKS``: the
closing note reports how many the suite tries.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import wait_until
from fleetkit.jobs import Job, JobStatus, MemoryLog, Variable, run_job
from tests.integration.jobs_support import Target, job_target, processes_with

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


def _marker() -> str:
    return str(5000 + secrets.randbelow(4000))


async def _started(marker: str) -> list[int]:
    """The pids of the processes with ``marker`` in their command line, once there are any."""
    with anyio.fail_after(10):
        await wait_until(lambda: bool(processes_with(marker)))
    return processes_with(marker)


# --- item 4: timeout and cancel never depend on what the job can write ---------


@pytest.mark.anyio
@pytest.mark.parametrize("forged", ["victim", "garbage", "self-erase"])
async def test_job_cannot_redirect_or_defeat_its_timeout(target: Target, forged: str) -> None:
    """A job that rewrites or removes any file fleetkit wrote for it (its private
    dir: the old wrapper's pid file among them) still times out, all its
    processes end, and a process outside its tree (another command on the
    same instance, killable by the job's user) lives on."""
    marker = _marker()
    async with (
        target.connector.connect(target.info) as conn,
        conn.stream(f"exec sleep {marker}9") as victim_proc,
    ):
        victim = await _started(f"sleep {marker}9")
        tamper = {
            "victim": f'for f in "$CI_PROJECT_DIR.tmp"/*; do echo {victim[0]} > "$f"; done\n',
            "garbage": 'for f in "$CI_PROJECT_DIR.tmp"/*; do echo "1 -1 0" > "$f"; done\n',
            "self-erase": 'rm -rf "$CI_PROJECT_DIR.tmp"\n',
        }[forged]
        job = Job(
            id=11,
            name="tamper",
            shell="sh",
            script=f"{tamper}trap '' TERM\nsleep {marker}1 &\necho started\nsleep {marker}2\n",
            timeout=timedelta(seconds=1),
        )
        log = MemoryLog()
        with anyio.fail_after(20):
            result = await run_job(target.slot(), job, target.connector, log=log, kill_grace=0.5)
        assert result.status is JobStatus.TIMED_OUT, log.text
        assert "started" in log.text
        assert processes_with(f"sleep {marker}1") == []
        assert processes_with(f"sleep {marker}2") == []
        assert processes_with(f"sleep {marker}9") == victim, (
            "fleetkit signalled a process outside the job"
        )
        await victim_proc.terminate()


@pytest.mark.anyio
async def test_job_cannot_redirect_its_cancel(target: Target) -> None:
    """Cancelling a job that forged its private files ends the job, not the victim."""
    marker = _marker()
    async with (
        target.connector.connect(target.info) as conn,
        conn.stream(f"exec sleep {marker}9") as victim_proc,
    ):
        victim = await _started(f"sleep {marker}9")
        job = Job(
            id=12,
            name="tamper-cancel",
            shell="sh",
            script=(
                f'for f in "$CI_PROJECT_DIR.tmp"/*; do echo {victim[0]} > "$f"; done\n'
                f"echo forged\nsleep {marker}2\n"
            ),
        )
        log = MemoryLog()
        with anyio.move_on_after(2):
            await run_job(target.slot(), job, target.connector, log=log)
        assert "forged" in log.text
        assert processes_with(f"sleep {marker}2") == []
        assert processes_with(f"sleep {marker}9") == victim
        await victim_proc.terminate()


# --- item 5: job variables never change the wrapper ----------------------------

# Names the old and new wrappers use, and shell variables that steer a shell.
_WRAPPER_NAMES = ["d", "s", "c", "p", "b", "j", "child", "IFS", "PATH", "ENV", "CDPATH"]


@pytest.mark.anyio
@pytest.mark.parametrize("name", _WRAPPER_NAMES)
async def test_job_variable_cannot_change_the_wrapper(target: Target, name: str) -> None:
    """A job variable named like one of the wrapper's own changes neither which
    script runs nor its timeout."""
    marker = _marker()
    value = {"IFS": "/", "PATH": "/nonexistent"}.get(name, f"/tmp/fleetkit-attack-{marker}")
    job = Job(
        id=13,
        name="collide",
        shell="sh",
        # Builtins only: a hostile PATH is the job's own to suffer.
        script=f"echo ran-the-real-script\nwhile :; do : {marker}; done\n",
        variables=[Variable(name, value)],
        timeout=timedelta(seconds=1),
    )
    log = MemoryLog()
    with anyio.fail_after(30):
        result = await run_job(target.slot(), job, target.connector, log=log, kill_grace=0.5)
    assert "ran-the-real-script" in log.text
    assert result.status is JobStatus.TIMED_OUT, log.text
    assert processes_with(f": {marker}") == []


# --- item 17: large variables ---------------------------------------------------


@pytest.mark.anyio
async def test_large_variable_works(target: Target) -> None:
    """A 120 KiB variable (under Linux's per-entry limit) reaches the job whole."""
    job = Job(
        id=14,
        name="big",
        shell="sh",
        script='printf "%s" "$BIG" | wc -c\n',
        variables=[Variable("BIG", "x" * (120 * 1024))],
    )
    log = MemoryLog()
    result = await run_job(target.slot(), job, target.connector, log=log)
    assert result.ok, log.text
    assert str(120 * 1024) in log.text


@pytest.mark.anyio
@pytest.mark.parametrize("kib", [128, 1024])
async def test_too_large_variable_is_named(target: Target, kib: int) -> None:
    """A variable over the kernel's per-entry limit fails the job with an error
    naming it, not as the script's own failure (``Argument list too long``)."""
    job = Job(
        id=15,
        name="huge",
        shell="sh",
        script="echo should-not-run\n",
        variables=[Variable("SMALL", "1"), Variable("HUGE_VALUE", "y" * (kib * 1024))],
    )
    log = MemoryLog()
    result = await run_job(target.slot(), job, target.connector, log=log)
    assert result.status is JobStatus.FAILED, log.text
    assert "HUGE_VALUE" in (result.message or "")
    assert "HUGE_VALUE" in log.text
    assert "should-not-run" not in log.text
    assert "Argument list too long" not in log.text
