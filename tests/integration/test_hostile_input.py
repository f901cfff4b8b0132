"""Issue 10, the input side, replayed as an attacker or a careless user would: each
test feeds the landed code one hostile input or action through its real entry
point (the ``fleetkit`` command, ``run_job`` over the local connector) and checks
that it is refused with a clean one-line error, or handled, never a traceback.

Item numbers are the issue's. The pure parts (masking, policies, the jobs file,
config loading, the state store) also have unit tests and hypothesis fuzzing
under ``tests/unit``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from fleetkit.connector.local import LocalConnector
from fleetkit.jobs import MASK, Job, JobStatus, MemoryLog, Variable, run_job
from fleetkit.model import ConnectInfo
from tests.integration.executor_support import FLEETKIT, local_config, run_fleetkit
from tests.integration.jobs_support import StaticSlot, processes_with

pytestmark = pytest.mark.integration

SECRET = "MASKEDVAL-SECRET-3344"


def _jobs_file(tmp_path: Path, body: str, name: str = "jobs.toml") -> Path:
    path = tmp_path / name
    path.write_text('[defaults]\nshell = "sh"\n' + body)
    return path


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "Error:" not in text.replace("ERROR:", ""), text


def _wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start_run(config: Path, jobs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FLEETKIT, "run", str(config), str(jobs), "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The output of ``proc`` once it ends; SIGINT (the command deletes what it made)
    if it is still running after a minute."""
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate()


# --- item 7: a reload that fails leaves the run as it was ---------------------


def test_item_7_sighup_with_a_tzdata_directory_as_timezone_keeps_the_run(
    tmp_path: Path,
) -> None:
    """SIGHUP after the config's timezone became "America" (a tzdata directory): the
    reload is refused with the reason, the running jobs finish, the summary comes."""
    marker = str(7000 + secrets.randbelow(900))
    jobs = _jobs_file(
        tmp_path,
        f'[[job]]\nname = "long"\nparallel = 4\nscript = "echo up; sleep 2.{marker}"\n',
    )
    config = local_config(tmp_path, use_sshd=False, capacity=4, max_instances=1)
    with _start_run(config, jobs) as proc:
        _wait_for(lambda: len(processes_with(f"sleep 2.{marker}")) == 4, "the four jobs")
        text = config.read_text().replace(
            'idle_time = "1m"', 'idle_time = "1m"\n      timezone = "America"'
        )
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        out, err = _stop(proc)
    _no_traceback(err)
    assert proc.returncode == 0, err
    assert "reload failed, policies unchanged" in out
    assert "'America' is not an IANA time zone name: it is a region" in out
    assert "4 jobs: 4 ok" in out


# --- item 8: no prefix of a masked value at a timeout or a cancel -------------


def _local_target(tmp_path: Path) -> tuple[LocalConnector, StaticSlot]:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    info = ConnectInfo(id="dir-0", internal_addr=str(sandbox), protocol="local")
    return LocalConnector(), StaticSlot(info.id, 0, info)


def _prints_most_of_the_secret_then_hangs(timeout: timedelta) -> Job:
    # 19 of the 21 characters, no newline, then the job hangs: the stream is cut
    # inside the value by the timeout or the cancel.
    return Job(
        id=8,
        name="leaks",
        shell="sh",
        script='printf "token=%s" "${TOKEN%??}"\nsleep 600\n',
        variables=[Variable("TOKEN", SECRET, masked=True)],
        timeout=timeout,
    )


@pytest.mark.anyio
async def test_item_8_a_timeout_inside_a_masked_value_leaks_no_prefix(tmp_path: Path) -> None:
    """The job times out after printing 19 of 21 characters of a masked value: the log
    shows the mask, not the characters."""
    connector, slot = _local_target(tmp_path)
    log = MemoryLog()
    job = _prints_most_of_the_secret_then_hangs(timedelta(seconds=1))
    with anyio.fail_after(30):
        result = await run_job(slot, job, connector, log=log, kill_grace=0.2)
    assert result.status is JobStatus.TIMED_OUT, log.text
    assert f"token={MASK}" in log.text
    assert SECRET[4:12] not in log.text


@pytest.mark.anyio
async def test_item_8_a_cancel_inside_a_masked_value_leaks_no_prefix(tmp_path: Path) -> None:
    """The same cut by the caller's cancel."""
    connector, slot = _local_target(tmp_path)
    log = MemoryLog()
    job = _prints_most_of_the_secret_then_hangs(timedelta(minutes=5))
    with anyio.move_on_after(1.5) as scope:
        await run_job(slot, job, connector, log=log, kill_grace=0.2)
    assert scope.cancelled_caught
    assert f"token={MASK}" in log.text
    assert SECRET[4:12] not in log.text


# --- item 19: two fleets never share one state table --------------------------


def _stateful_config(tmp_path: Path, name: str, state: Path) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    storage = (
        f'    [runners.autoscaler.state_storage]\n      enabled = true\n      dir = "{state}"\n'
    )
    return local_config(directory, use_sshd=False, max_instances=1, extra_autoscaler=storage)


def test_item_19_two_configs_with_one_url_and_token_do_not_share_state(tmp_path: Path) -> None:
    """A second run whose config has the same url and token (so the same state
    directory) is refused, naming state.json and the first run's pid; the first
    run is unharmed."""
    state = tmp_path / "state"
    first_config = _stateful_config(tmp_path, "a", state)
    second_config = _stateful_config(tmp_path, "b", state)
    marker = str(1900 + secrets.randbelow(90))
    jobs = _jobs_file(tmp_path, f'[[job]]\nname = "holds"\nscript = "sleep 3.{marker}"\n')
    with _start_run(first_config, jobs) as first:
        _wait_for(lambda: processes_with(f"sleep 3.{marker}"), "the first run's job")
        second = run_fleetkit("run", second_config, jobs, "--plain")
        out, err = _stop(first)
    _no_traceback(second.stderr)
    assert second.returncode == 1, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert "state.json: in use by another fleet" in line
    assert f"pid {first.pid} " in line
    assert first.returncode == 0, err
    assert "1 jobs: 1 ok" in out
    assert os.path.exists(state)
