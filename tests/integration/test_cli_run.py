"""`fleetkit run` end to end, in a subprocess, on the local provider (SSH and sandbox)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.executor_support import (
    FLEETKIT,
    interrupt_if_running,
    kill_instance,
    local_config,
    remove_lost_build_dirs,
    run_fleetkit,
    run_on_terminal,
    sandbox_root,
)
from tests.integration.jobs_support import processes_with
from tests.integration.local_provider_support import leftovers, processes_under, require_sshd

pytestmark = pytest.mark.integration


@pytest.fixture(params=["ssh", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    """Instances reached over real SSH (an sshd each) or as local sandboxes."""
    if request.param == "ssh":
        require_sshd()
    return str(request.param)


def _jobs_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text('[defaults]\nshell = "sh"\n' + body)
    return path


def _run(*args: str | Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_fleetkit(*args, timeout=timeout)


def test_run_reports_jobs_and_masks_secrets(tmp_path: Path, mode: str) -> None:
    """A run with an allowed failure exits 0, summarises, and keeps masked values out of every log."""
    secret = "sv-" + secrets.token_hex(10)
    jobs = _jobs_file(
        tmp_path,
        f"""
[[job]]
name = "uses secret"
script = ['echo "token is $TOKEN"', 'echo "$TOKEN" >&2', 'echo "$CI_JOB_NAME on $FLEETKIT_INSTANCE_ID"']
[job.variables]
TOKEN = {{ value = "{secret}", masked = true }}

[[job]]
name = "works"
parallel = 2
script = "sleep 0.3; echo shard $CI_NODE_INDEX"

[[job]]
name = "allowed to fail"
allow_failure = true
script = "echo about to fail; exit 4"
""",
    )
    config = local_config(tmp_path, use_sshd=mode == "ssh", max_instances=2)
    logs = tmp_path / "logs"
    done = _run("run", config, jobs, "--logs", logs)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "4 jobs: 3 ok, 0 failed, 1 failed (allowed), 0 cancelled" in out
    assert re.search(r"wait p50 \d+\.\ds, p95 \d+\.\ds", out)
    assert re.search(r"instances: [12] created, [12] deleted, \d+\.\d\d instance-minutes", out)
    assert "failed (allowed to fail): allowed to fail" in out
    assert "| about to fail" in out
    texts = {p.name: p.read_text() for p in logs.iterdir()}
    assert sorted(texts) == ["job-1-1.log", "job-2-1.log", "job-3-1.log", "job-4-1.log"]
    assert "token is [MASKED]" in texts["job-1-1.log"]
    assert "\n[MASKED]\n" in texts["job-1-1.log"]
    assert all(secret not in text for text in texts.values())
    assert secret not in out
    assert secret not in done.stderr
    assert leftovers(sandbox_root(tmp_path)) == []


def test_failed_job_exits_1_and_json_lists_every_result(tmp_path: Path) -> None:
    """A job not allowed to fail makes the exit status 1; --json gives results and summary."""
    jobs = _jobs_file(
        tmp_path,
        '[[job]]\nname = "ok"\nscript = "true"\n[[job]]\nname = "bad"\nscript = "exit 2"\n',
    )
    config = local_config(tmp_path, use_sshd=False)
    done = _run("run", config, jobs, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    by_name = {j["name"]: j for j in report["jobs"]}
    assert by_name["bad"]["status"] == "failed"
    assert by_name["bad"]["exit_code"] == 2
    assert by_name["ok"]["status"] == "success"
    assert report["summary"]["blocking"] == 1
    assert report["summary"]["instances_created"] == report["summary"]["instances_deleted"]


def test_job_timeout_ends_the_remote_process(tmp_path: Path, mode: str) -> None:
    """A job past its timeout is reported timed out and its processes are gone."""
    marker = str(5000 + secrets.randbelow(900))
    jobs = _jobs_file(
        tmp_path,
        f'[[job]]\nname = "slow"\ntimeout = "1s"\nscript = "echo start; sleep {marker}7"\n',
    )
    config = local_config(tmp_path, use_sshd=mode == "ssh")
    done = _run("run", config, jobs, "--json")
    assert done.returncode == 1, done.stderr
    (job,) = json.loads(done.stdout)["jobs"]
    assert job["status"] == "timed_out"
    assert job["duration"] < 15
    assert processes_with(f"sleep {marker}7") == []
    assert leftovers(sandbox_root(tmp_path)) == []


@pytest.fixture
def open_temp() -> Iterator[Path]:
    """A TMPDIR the SSH login user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="fleetkit-cli-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_sigint_leaves_no_instance_process_or_temp_dir(
    tmp_path: Path, mode: str, open_temp: Path
) -> None:
    """Ctrl-C ends running jobs, deletes every instance and leaves nothing behind."""
    marker = str(6000 + secrets.randbelow(900))
    jobs = _jobs_file(
        tmp_path,
        f'[[job]]\nname = "long"\nparallel = 3\nscript = "echo started; sleep {marker}3"\n',
    )
    config = local_config(tmp_path, use_sshd=mode == "ssh", max_instances=2, root=False)
    temp = open_temp
    env = {**os.environ, "TMPDIR": str(temp)}
    with subprocess.Popen(
        [*FLEETKIT, "run", str(config), str(jobs), "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        deadline = time.monotonic() + 60
        try:
            # The output is small: it waits in the pipe until communicate() reads it.
            while len(processes_with(f"sleep {marker}3")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(processes_with(f"sleep {marker}3")) >= 2, "the jobs never started"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            interrupt_if_running(proc)
    assert proc.returncode == 130, err
    text = out
    assert "interrupted" in text
    assert "3 cancelled" in text
    instances = set(re.findall(r"instance (local-[0-9a-f]+) created", text))
    assert instances
    assert all(f"instance {i} deleted" in text for i in instances)
    assert processes_with(f"sleep {marker}3") == []
    assert processes_under(temp) == []
    assert sorted(p.name for p in temp.iterdir()) == []
    # Build directories of SSH logins land under /tmp/fleetkit-UID: none of ours may stay.
    assert [p for i in instances for p in Path("/tmp").glob(f"fleetkit-*/builds/{i}")] == []


def test_job_on_a_dying_instance_is_retried_and_both_attempts_reported(
    tmp_path: Path, mode: str
) -> None:
    """Killing the instance under a running job makes `run` retry it elsewhere; the JSON
    reports both attempts and the exit status is 0."""
    jobs = _jobs_file(
        tmp_path,
        '[[job]]\nname = "survivor"\n'
        'script = \'echo "started $FLEETKIT_ATTEMPT"; '
        '[ "$FLEETKIT_ATTEMPT" = 1 ] && sleep 60; echo finished\'\n',
    )
    config = local_config(tmp_path, use_sshd=mode == "ssh", capacity=1, max_instances=2)
    logs = tmp_path / "logs"
    with subprocess.Popen(
        [*FLEETKIT, "run", str(config), str(jobs), "--json", "--logs", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            first = logs / "job-1-1.log"
            deadline = time.monotonic() + 60
            while "started 1" not in (first.read_text() if first.exists() else ""):
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.05)
            instance = re.search(r"on instance (\S+) slot", first.read_text())
            assert instance is not None
            kill_instance(sandbox_root(tmp_path), instance[1])
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (job,) = json.loads(out)["jobs"]
    assert (job["status"], job["attempt"]) == ("success", 2)
    (earlier,) = job["earlier"]
    assert earlier["status"] == "system_failure"
    assert earlier["instance_id"] == instance[1]
    assert job["instance_id"] != instance[1]
    assert "finished" in (logs / "job-1-2.log").read_text()
    assert leftovers(sandbox_root(tmp_path)) == []
    remove_lost_build_dirs(instance[1])


def test_rich_display_on_a_terminal(tmp_path: Path) -> None:
    """With a terminal attached, `run` draws the live panel and still ends with the summary."""
    jobs = _jobs_file(tmp_path, '[[job]]\nname = "hello"\nparallel = 2\nscript = "echo hi"\n')
    config = local_config(tmp_path, use_sshd=False)
    status, output = run_on_terminal("run", config, jobs)
    assert status == 0
    screen = output.decode(errors="replace")
    assert "fleetkit run ·" in screen
    assert "2 jobs: 2 ok, 0 failed" in screen
    assert leftovers(sandbox_root(tmp_path)) == []


def test_invalid_jobs_file_exits_1_naming_the_problem(tmp_path: Path) -> None:
    """A bad jobs file is reported with its path and key before any instance is made."""
    jobs = _jobs_file(tmp_path, '[[job]]\nname = "x"\nscript = "true"\ntimeout = "soon"\n')
    config = local_config(tmp_path, use_sshd=False)
    done = _run("run", config, jobs)
    assert done.returncode == 1
    assert "job[0].timeout" in done.stderr
    assert not sandbox_root(tmp_path).exists()


def test_provider_that_cannot_start_is_reported_without_a_traceback(tmp_path: Path) -> None:
    """A provider failing at init ends `run` with its message and status 1, not a traceback."""
    jobs = _jobs_file(tmp_path, '[[job]]\nname = "x"\nscript = "true"\n')
    config = local_config(tmp_path, use_sshd=False)
    blocker = tmp_path / "instances"
    blocker.write_text("a file where the provider wants its directory")
    done = _run("run", config, jobs)
    assert done.returncode == 1
    assert "fleetkit run: local provider cannot use" in done.stderr
    assert "Traceback" not in done.stderr
