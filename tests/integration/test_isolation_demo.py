"""VM isolation on the embedded default: the local provider's nesting daemons, end to end.

`fleetkit run examples/local-isolated.toml examples/jobs-isolated.toml` (sshd
and sandbox modes), Ctrl-C in the middle of isolated jobs, and a dead daemon
turning into health failures and a replaced instance.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from fleetkit.connector.ssh import SSHConnector
from fleetkit.executor import InstanceExecutor
from fleetkit.fleet import Fleet, FleetSettings, InstanceFailed, InstanceReady
from fleetkit.isolation import IsolationSettings, Isolator
from fleetkit.jobs import Job, JobStatus
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy
from fleetkit.provider import load
from tests.integration.executor_support import FLEETKIT, interrupt_if_running, wait_until
from tests.integration.jobs_support import processes_with
from tests.integration.local_provider_support import processes_under, require_sshd

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(params=["ssh", "local"])
def mode(request: pytest.FixtureRequest) -> str:
    """Instances with an sshd each, or plain sandboxes (the VMs have sshds either way)."""
    require_sshd()
    return str(request.param)


@pytest.fixture
def root() -> Iterator[Path]:
    """A short provider root the SSH login user can enter (socket paths are short)."""
    path = Path(tempfile.mkdtemp(prefix="fk-demo-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _config(root: Path, mode: str, *, extra: str = "", failure_threshold: int = 3) -> Path:
    """The example config, rooted under ``root``, in the given mode."""
    text = (EXAMPLES / "local-isolated.toml").read_text()
    text = text.replace(
        'nesting = "sandbox"       # a nesting daemon in each instance',
        f'nesting = "sandbox"\n      root = "{root / "instances"}"\n'
        f"      use_sshd = {'true' if mode == 'ssh' else 'false'}",
    )
    text = text.replace(
        'plugin = "local"', f'plugin = "local"\n    failure_threshold = {failure_threshold}{extra}'
    )
    path = root / "config.toml"
    path.write_text(text)
    return path


def _nothing_left(root: Path) -> None:
    """No process runs from ``root`` (daemons, VM sshds, jobs) and no instance file is left."""
    instances = root / "instances"
    assert processes_under(root) == []
    assert (sorted(map(str, instances.rglob("*"))) if instances.exists() else []) == []


def test_the_demo_runs_jobs_in_vms_and_exits_0(root: Path, mode: str) -> None:
    """Every allowed job runs in a VM of its own (its HOME is the VM's), the two
    refused ones fail before any VM (allowed to fail), and nothing is left."""
    logs = root / "logs"
    done = subprocess.run(
        [
            *FLEETKIT,
            "run",
            str(_config(root, mode)),
            str(EXAMPLES / "jobs-isolated.toml"),
            "--json",
            "--logs",
            str(logs),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = {job["name"]: job for job in json.loads(done.stdout)["jobs"]}
    refused = {"refused image", "variable smuggling a path"}
    assert {n for n, j in results.items() if j["status"] == "success"} == set(results) - refused
    for name in refused:
        assert results[name]["status"] == "failed"
        assert results[name]["instance_id"] is None
        assert "allowed_images" in results[name]["message"]
    assert "'ci/a/b' (written 'ci/$TARGET')" in results["variable smuggling a path"]["message"]
    build = (logs / f"job-{results['build']['job_id']}-1.log").read_text()
    vm = re.search(r"VM (vm-[0-9a-f]+) created at 127\.0\.0\.1:\d+\n", build)
    assert vm is not None, build
    assert re.search(rf"home: \S+/vms/{vm.group(1)}/home\n", build), build
    assert f"VM {vm.group(1)} (default) connected\n" in build
    assert f"Deleting VM {vm.group(1)}...\nVM {vm.group(1)} deleted\n" in build
    homes = [
        re.search(r"in its VM: (\S+)", (logs / f"job-{j['job_id']}-1.log").read_text())
        for n, j in results.items()
        if n.startswith("test ")
    ]
    assert len({h.group(1) for h in homes if h}) == 3  # three jobs, three VMs
    _nothing_left(root)


def test_sigint_during_isolated_jobs_leaves_nothing(root: Path) -> None:
    """Ctrl-C while jobs run in VMs ends them, deletes the VMs (their sshds),
    the daemons and the instances: no process or file of the run is left."""
    marker = str(7000 + secrets.randbelow(900))
    jobs = root / "jobs.toml"
    jobs.write_text(
        f'[defaults]\nshell = "sh"\n[[job]]\nname = "long"\nparallel = 2\n'
        f'script = "echo started; sleep {marker}1"\n'
    )
    with subprocess.Popen(
        [*FLEETKIT, "run", str(_config(root, "ssh")), str(jobs), "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(root)},
    ) as proc:
        deadline = time.monotonic() + 60
        try:
            while len(processes_with(f"sleep {marker}1")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(processes_with(f"sleep {marker}1")) == 2, "the jobs never started"
            assert _daemon_pids(root / "instances")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=90)
        finally:
            interrupt_if_running(proc)
    assert proc.returncode == 130, err
    assert "2 cancelled" in out
    assert processes_with(f"sleep {marker}1") == []
    # The manager's private forward sockets (under its TMPDIR) are gone too.
    assert [p.name for p in root.iterdir() if p.name.startswith("fleetkit-fwd-")] == []
    _nothing_left(root)


def _daemon_pids(root: Path) -> dict[str, int]:
    """The nesting daemon of each instance under ``root``, by instance id."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and b"--socket" in args:
            socket = Path(args[args.index(b"--socket") + 1].decode())
            if root in socket.parents:
                found[socket.parent.name] = int(entry.name)
    return found


@pytest.mark.anyio
async def test_a_dead_daemon_fails_the_instance_and_the_job_runs_elsewhere(root: Path) -> None:
    """Killing an instance's daemon makes its next job a system failure counted
    against it (failure_threshold 1 here): the instance is replaced and the
    retried job runs in a VM on another instance."""
    config = _config(root, "ssh", failure_threshold=1)
    job = Job(id=1, name="first", shell="sh", script="true")
    async with InstanceExecutor.from_config(config) as executor:
        first = await executor.run(job)
        assert first.status is JobStatus.SUCCESS, first.message
        daemons = _daemon_pids(root / "instances")
        os.kill(daemons[first.instance_id or ""], signal.SIGKILL)
        second = await executor.run(Job(id=2, name="second", shell="sh", script="true"))
        with anyio.fail_after(30):
            await wait_until(lambda: first.instance_id not in _daemon_pids(root / "instances"))
    assert second.status is JobStatus.SUCCESS, second.message
    (lost,) = second.earlier
    assert lost.status is JobStatus.SYSTEM_FAILURE
    assert lost.instance_id == first.instance_id
    assert "NestingUnavailable" in (lost.message or "")
    assert second.instance_id != first.instance_id
    _nothing_left(root)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_isolated_fleet_example_runs_and_leaves_nothing() -> None:
    """examples/isolated_fleet.py opens a VM on a fleet's slot, runs in it, and is refused
    an image a variable expands to; no instance, daemon or VM outlives it."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "isolated_fleet.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^in \S+/vms/vm-[0-9a-f]+/home$", done.stdout, re.MULTILINE), done.stdout
    assert "refused: " in done.stdout
    assert "image 'x/y' (written '$IMAGE') is not allowed" in done.stdout
    assert processes_with("isolated-example") == []


@pytest.mark.anyio
async def test_an_instance_whose_daemon_does_not_answer_never_becomes_ready(root: Path) -> None:
    """With the isolator's ready check, ready-up fails while the nesting daemon does
    not answer (here: nesting_host names a socket nobody serves), so the instance
    is never handed out (and is removed, as any instance that fails ready-up)."""
    group = load(
        "local",
        {"root": str(root / "instances"), "nesting": "sandbox", "max_instances": 1},
        ConnectorConfig(),
        owner="ready-check",
    )
    wrong = IsolationSettings(nesting_host="unix:nobody-serves.sock", image="default")
    async with (
        SSHConnector(dial_timeout=15) as ssh,
        Isolator(wrong) as isolator,
        Fleet(
            group,
            Limits(max_instances=1),
            Policy(idle_count=1),
            connector=ssh,
            settings=FleetSettings(delete_instances_on_shutdown=True, update_interval=0.5),
            ready_check=isolator.ready_check(ssh, within=1),
        ) as fleet,
        fleet.events() as events,
    ):
        failed: InstanceFailed | None = None
        with anyio.fail_after(60):
            async for event in events:
                assert not isinstance(event, InstanceReady), "ready without a daemon"
                if isinstance(event, InstanceFailed):
                    failed = event
                    break
    assert failed is not None
    assert "ready-up failed" in failed.reason
    assert "nesting daemon at unix:nobody-serves.sock does not answer" in failed.reason
    _nothing_left(root)


@pytest.mark.anyio
async def test_from_config_gates_ready_up_on_the_daemon(root: Path) -> None:
    """Built from config.toml, the fleet's ready-up asks the daemon: with a
    nesting_host nobody serves, no instance is ever handed out, so the job waits
    out its acquire timeout instead of failing on an instance."""
    config = _config(root, "local")
    config.write_text(
        config.read_text().replace('"unix:nesting.sock"', '"unix:nobody-serves.sock"')
    )
    job = Job(id=1, name="waits", shell="sh", script="true")
    async with InstanceExecutor.from_config(config, acquire_timeout=8) as executor:
        result = await executor.run(job)
    assert result.status is JobStatus.SYSTEM_FAILURE
    assert result.instance_id is None, result.message
    _nothing_left(root)
