"""Issue 10, the OS side: attacks by hostile jobs and hostile local users.

Each test replays one attack from the issue as an attacker would make it: a
job script that tampers with what fleetkit relies on, a job variable chosen to
collide with the wrapper's names, a local user (``nobody``) planting files
where a root-run fleetkit will look. Every attack counts in ``ATTACKS``: the
closing note reports how many the suite tries.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from fleetkit._cgroup import available as cgroup_available
from fleetkit._procs import end_tree, wait_until
from fleetkit._sshd import SSHDaemon, SSHDaemonError, ensure_login_user
from fleetkit.connector import CommandResult
from fleetkit.connector.local import LocalConnector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import ConnectorError, ProviderError
from fleetkit.jobs import Job, JobOptions, JobStatus, MemoryLog, Variable, run_job
from fleetkit.model import ConnectInfo, ConnectorConfig
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.jobs_support import Target, job_target, processes_with
from tests.integration.local_provider_support import (
    instance_process,
    local_group,
    processes_under,
    require_sshd,
    running,
)
from tests.support import require_root

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


class _Leftovers:
    """What a test's manager subprocess may leave: the roots its instances run
    from and the markers its jobs' programs carry."""

    def __init__(self) -> None:
        self.roots: list[Path] = []
        self.markers: list[str] = []


@pytest.fixture
async def leftovers_ended() -> AsyncIterator[_Leftovers]:
    """After a test that runs a manager in a subprocess, end by pid what still
    runs from the roots it names (instances' sshds and keepers) or carries its
    markers (jobs' programs). A fixture's teardown, so it runs after the
    test's own checks: it only stops a failed or interrupted run (a
    ``fail_after`` under load, a timeout) from leaving instances behind,
    reparented to init, for the rest of the machine's life."""
    left = _Leftovers()
    yield left
    with anyio.CancelScope(shield=True):
        pids = [pid for root in left.roots for pid in processes_under(root)]
        pids += [pid for marker in left.markers for pid in processes_with(marker)]
        await end_tree(sorted(set(pids)), grace=1)


async def _started(command: str) -> list[int]:
    """The pids of the processes with ``command`` (``sleep MARKER``) in their
    command line, once its program itself runs: the shells that start it carry
    it in their arguments too and come first, so a snapshot taken at the first
    of them missed the program (and the victim check then failed)."""
    await _started_program(command.split()[0], command)
    return processes_with(command)


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
            result = await run_job(
                target.slot(), job, target.connector, log=log, options=JobOptions(kill_grace=0.5)
            )
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
        result = await run_job(
            target.slot(), job, target.connector, log=log, options=JobOptions(kill_grace=0.5)
        )
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


# --- helpers for the local provider's attacks ------------------------------------

ATTACKER = "nobody"


def as_attacker(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with /bin/sh as the unprivileged attacker (``nobody``)."""
    return subprocess.run(
        ["/bin/sh", "-c", script],
        user=ATTACKER,
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A root-owned, world-writable, sticky directory like /tmp, with a name of
    its own (so the attacker can reach it and nothing else is touched)."""
    require_root("planting files as another user")
    path = Path(tempfile.mkdtemp(prefix="fleetkit-hostile-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _refused(group: LocalInstanceGroup) -> str:
    with pytest.raises(ProviderError) as caught:
        await group.init()
    await group.shutdown()
    return str(caught.value)


async def _started_program(program: str, marker: str) -> list[int]:
    """The processes running ``program`` with ``marker`` in their arguments
    (not the shells that started them), once there are any."""

    def found() -> list[int]:
        pids = []
        for pid in processes_with(marker):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == program:
                    pids.append(pid)
        return pids

    with anyio.fail_after(10):
        await wait_until(lambda: bool(found()))
    return found()


# --- item 1: directories fleetkit makes or reuses are its own --------------------


@pytest.mark.anyio
async def test_planted_lock_symlink_is_refused(public_dir: Path) -> None:
    """A `.lock` symlink planted by another user in the owner dir makes init
    refuse, naming the path and why; nothing is created at the link's target."""
    target = public_dir / "created-by-root"
    done = as_attacker(
        f"mkdir -p {public_dir}/root/fleet && ln -s {target} {public_dir}/root/fleet/.lock"
    )
    assert done.returncode == 0, done.stderr
    message = await _refused(LocalInstanceGroup(root=public_dir / "root", owner="fleet"))
    assert f"{public_dir}/root" in message
    assert "owned by nobody" in message
    assert not target.exists()


@pytest.mark.anyio
async def test_default_root_planted_by_another_user_is_refused(public_dir: Path) -> None:
    """The predictable default root /tmp/fleetkit-local-OWNER made by another
    user is refused, not reused."""
    owner = f"hostile-{secrets.token_hex(4)}"
    planted = Path(tempfile.gettempdir()) / f"fleetkit-local-{owner}"
    done = as_attacker(f"mkdir -m 777 {planted} && mkdir -m 777 {planted}/{owner}")
    assert done.returncode == 0, done.stderr
    try:
        message = await _refused(LocalInstanceGroup(owner=owner, use_sshd=False))
        assert str(planted) in message
        assert "owned by nobody" in message
        assert as_attacker(f"ls -A {planted}/{owner}").stdout == ""
    finally:
        shutil.rmtree(planted, ignore_errors=True)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
async def test_root_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A root directory that others can write is refused with its mode."""
    require_root("a root-owned directory with a chosen mode")
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(mode)
    message = await _refused(LocalInstanceGroup(root=root, owner="fleet", use_sshd=False))
    assert str(root) in message
    assert "writable by other users" in message


@pytest.mark.anyio
async def test_symlinked_owner_dir_is_refused(public_dir: Path) -> None:
    """An owner dir that is a symlink (to a directory the attacker controls) is refused."""
    done = as_attacker(
        f"mkdir {public_dir}/elsewhere && mkdir {public_dir}/root && "
        f"ln -s {public_dir}/elsewhere {public_dir}/root/fleet"
    )
    assert done.returncode == 0, done.stderr
    message = await _refused(LocalInstanceGroup(root=public_dir / "root", owner="fleet"))
    assert f"{public_dir}/root" in message
    assert list((public_dir / "elsewhere").iterdir()) == []


@pytest.mark.anyio
async def test_sshd_workdir_planted_by_another_user_is_refused(public_dir: Path) -> None:
    """sshd's working directory made by another user, with sshd_config and
    authorized_keys as symlinks to root's files, is refused: root writes no
    config through them and sshd never trusts the attacker's keys."""
    require_sshd()
    victim = public_dir / "victim"
    victim.write_text("root's file\n")
    done = as_attacker(
        f"mkdir {public_dir}/sshd && ln -s {victim} {public_dir}/sshd/sshd_config && "
        f"ln -s {victim} {public_dir}/sshd/authorized_keys"
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(SSHDaemonError, match="owned by nobody"):
        await SSHDaemon.start(public_dir / "sshd")
    assert victim.read_text() == "root's file\n"


# --- items 2 and 3: jobs run as the configured user, or an instance's own -----------


async def _run_on(group: LocalInstanceGroup, instance_id: str, command: str) -> CommandResult:
    info = await group.connect_info(instance_id)
    if info.protocol == "local":
        async with LocalConnector().connect(info) as conn:
            return await conn.run(command, timeout=30)
    async with SSHConnector(dial_timeout=10) as ssh, ssh.connect(info) as conn:
        return await conn.run(command, timeout=30)


def _use_sshd(mode: str) -> bool:
    if mode == "sshd":
        require_sshd()
    return mode == "sshd"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
async def test_jobs_never_run_as_root_by_default(tmp_path: Path, mode: str) -> None:
    """As root with no username configured, commands on an instance run as an
    unprivileged user."""
    require_root("the root default")
    async with local_group(tmp_path, use_sshd=_use_sshd(mode)) as group:
        assert await group.increase(1) == 1
        (status,) = await group.update()
        done = await _run_on(group, status.id, "id -u")
        assert done.ok, done.stderr_text
        assert done.stdout_text.strip() != "0"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
async def test_configured_username_is_the_one_jobs_run_as(tmp_path: Path, mode: str) -> None:
    """connector_config.username is who commands run as, in both modes."""
    require_root("running as another user")
    # A login shell that runs commands (nobody's refuses every login).
    user = await anyio.to_thread.run_sync(ensure_login_user, "fleetkit-hostile")
    config = ConnectorConfig(username=user)
    async with local_group(tmp_path, use_sshd=_use_sshd(mode), connector_config=config) as group:
        assert await group.increase(1) == 1
        (status,) = await group.update()
        info = await group.connect_info(status.id)
        assert info.username == user
        done = await _run_on(group, status.id, "id -un")
        assert done.stdout_text.strip() == user, done.stderr_text


@pytest.mark.anyio
async def test_unknown_username_is_refused(tmp_path: Path) -> None:
    """A username that is no user here is refused at init, naming the key."""
    config = ConnectorConfig(username=f"no-such-{secrets.token_hex(3)}")
    group = LocalInstanceGroup(root=tmp_path, use_sshd=False, connector_config=config)
    assert "connector_config.username" in await _refused(group)


@pytest.mark.anyio
async def test_local_connector_refuses_another_user_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root, the local connector refuses to run a command as another user
    (never silently as itself). The interpreter here lives where an
    unprivileged user cannot run it, so this process's euid reads as theirs."""
    monkeypatch.setattr("fleetkit.connector.local.os.geteuid", lambda: 65534)
    info = ConnectInfo(id="i", internal_addr=str(tmp_path), protocol="local", username="root")
    with pytest.raises(ConnectorError, match="cannot run commands as 'root'"):
        async with LocalConnector().connect(info) as conn:
            await conn.run("id -un")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
@pytest.mark.parametrize("where", ["other fleet", "same fleet"])
async def test_jobs_on_other_instances_cannot_read_or_signal(
    tmp_path: Path, mode: str, where: str
) -> None:
    """A job on one instance cannot read a job's environment (its masked
    variable) on another instance, of the same fleet or another, nor signal it."""
    require_root("a user per instance")
    use_sshd = _use_sshd(mode)
    secret = "masked-" + secrets.token_hex(8)
    marker = _marker()
    async with (
        local_group(tmp_path / "a", owner="fleet-a", use_sshd=use_sshd) as a,
        local_group(tmp_path / "b", owner="fleet-b", use_sshd=use_sshd) as b,
    ):
        assert await a.increase(2 if where == "same fleet" else 1) >= 1
        assert await b.increase(1) == 1
        victim_id, *rest = [s.id for s in await a.update()]
        attacker_group, attacker_id = (a, rest[0]) if where == "same fleet" else (b, None)
        if attacker_id is None:
            (attacker_id,) = [s.id for s in await b.update()]
        info = await a.connect_info(victim_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_on, a, victim_id, f"TOKEN={secret} exec sleep {marker}7")
            (pid,) = await _started_program("sleep", f"{marker}7")
            assert secret.encode() in await anyio.Path(f"/proc/{pid}/environ").read_bytes()
            done = await _run_on(
                attacker_group,
                attacker_id,
                f"cat /proc/{pid}/environ; echo read=$?; kill -KILL {pid}; echo kill=$?",
            )
            assert secret not in done.stdout_text
            assert "read=1" in done.stdout_text
            assert "kill=1" in done.stdout_text
            assert await _started_program("sleep", f"{marker}7") == [pid]
            os.kill(pid, signal.SIGKILL)
            tg.cancel_scope.cancel()
        assert info.username != (await attacker_group.connect_info(attacker_id)).username


# --- item 6: instances live in their own sessions -----------------------------------

MANAGER = """
import signal, sys, anyio
from fleetkit.provider.local import LocalInstanceGroup

async def main() -> None:
    # The manager survives the Ctrl-C here, so the test can ask it afterwards.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    group = LocalInstanceGroup(root=sys.argv[1], owner="ctrl-c", use_sshd=sys.argv[2] == "1")
    await group.init()
    print(await group.increase(2), flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    print(sorted(s.state.value for s in await group.update()), flush=True)
    await group.decrease([s.id for s in await group.update()])
    await group.shutdown()

anyio.run(main)
"""


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
async def test_ctrl_c_at_the_terminal_leaves_instances_running(
    tmp_path: Path, mode: str, leftovers_ended: _Leftovers
) -> None:
    """A SIGINT to the manager's whole process group (Ctrl-C at a terminal)
    reaches no instance: each lives in a session of its own."""
    use_sshd = _use_sshd(mode)
    root = tmp_path / "root"
    leftovers_ended.roots.append(root)
    async with await anyio.open_process(
        [sys.executable, "-c", MANAGER, str(root), "1" if use_sshd else "0"],
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a terminal's foreground group of its own
    ) as manager:
        assert manager.stdout is not None
        assert manager.stdin is not None
        with anyio.fail_after(20):
            assert (await manager.stdout.receive()).strip() == b"2"
        instances = [instance_process(p) for p in (root / "ctrl-c").glob("local-*")]
        assert all(os.getsid(pid) != os.getsid(manager.pid) for pid in instances)
        os.killpg(manager.pid, signal.SIGINT)
        # Signals are delivered before kill() returns to a process of ours, so
        # by the manager's next answer the instances have met theirs.
        await manager.stdin.send(b"report\n")
        with anyio.fail_after(20):
            report = await manager.stdout.receive()
            await manager.wait()
    assert report.strip() == b"['running', 'running']"
    assert len(instances) == 2
    assert [pid for pid in instances if running(pid)] == []


# --- item 11: fleets never share an address and port --------------------------------


@pytest.mark.anyio
async def test_fixed_port_fleets_do_not_collide(tmp_path: Path) -> None:
    """Two fleets with the same fixed protocol_port each start at once, on
    distinct addresses."""
    require_sshd()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ConnectorConfig(protocol_port=port)
    async with (
        local_group(tmp_path / "a", owner="fleet-a", use_sshd=True, connector_config=config) as a,
        local_group(tmp_path / "b", owner="fleet-b", use_sshd=True, connector_config=config) as b,
    ):
        with anyio.fail_after(15):
            assert await a.increase(2) == 2
            assert await b.increase(2) == 2
        seen = []
        for group in (a, b):
            for status in await group.update():
                info = await group.connect_info(status.id)
                seen.append((info.internal_addr, info.protocol_port))
        assert {p for _, p in seen} == {port}
        assert len(set(seen)) == 4


# --- item 9: ending a job ends every process it started ------------------------------


@asynccontextmanager
async def _local_instance(
    tmp_path: Path, mode: str
) -> AsyncIterator[tuple[LocalInstanceGroup, Target]]:
    """One instance of a local group, with the connector its protocol needs."""
    use_sshd = _use_sshd(mode)
    async with local_group(tmp_path, use_sshd=use_sshd) as group:
        assert await group.increase(1) == 1
        (status,) = await group.update()
        info = await group.connect_info(status.id)
        if use_sshd:
            async with SSHConnector(dial_timeout=10) as ssh:
                yield group, Target(ssh, info)
        else:
            yield group, Target(LocalConnector(), info)


_ESCAPES = {
    "setsid": "cd / && setsid sleep {m} </dev/null >/dev/null 2>&1 &\n",
    "double fork": "(cd / && (setsid sh -c 'exec sleep {m}' </dev/null >/dev/null 2>&1 &) &)\n",
    "nohup": "cd / && nohup setsid sleep {m} </dev/null >/dev/null 2>&1 &\n",
}


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
@pytest.mark.parametrize("escape", sorted(_ESCAPES))
@pytest.mark.parametrize("ending", ["success", "timeout"])
async def test_processes_a_job_detached_end_with_it(
    tmp_path: Path, mode: str, escape: str, ending: str
) -> None:
    """A process a job moves to a session of its own (setsid, a double fork,
    cd /) ends when the job ends, by itself or at its timeout (with cgroup v2;
    without, when its instance is deleted)."""
    require_root("cgroups or a user per instance")
    marker = f"{_marker()}.{secrets.randbelow(10**6):06d}"
    script = _ESCAPES[escape].format(m=marker) + "echo detached\n"
    if ending == "timeout":
        script += f"sleep {marker}1\n"
    job = Job(id=21, name="escape", shell="sh", script=script, timeout=timedelta(seconds=2))
    async with _local_instance(tmp_path, mode) as (_group, target):
        log = MemoryLog()
        with anyio.fail_after(30):
            result = await run_job(
                target.slot(), job, target.connector, log=log, options=JobOptions(kill_grace=0.5)
            )
        assert "detached" in log.text, log.text
        expected = JobStatus.SUCCESS if ending == "success" else JobStatus.TIMED_OUT
        assert result.status is expected, log.text
        if cgroup_available():
            assert processes_with(marker) == [], "a process of the job outlived it"
    # Without cgroups (docs/security.md): at the latest with its instance, as
    # every process of the instance's own user ends then.
    assert processes_with(marker) == [], "a process of the job outlived its instance"


# --- item 10: jobs die with the manager; build dirs go with their instance ----------

JOB_MANAGER = """
import sys, anyio
from fleetkit.connector.local import LocalConnector
from fleetkit.jobs import Job, run_job
from fleetkit.provider.local import LocalInstanceGroup

class Out:
    location = None
    async def write(self, text: str) -> None:
        print(text, end="", flush=True)

class Slot:
    def __init__(self, info):
        self.instance_id, self.number, self.connect_info = info.id, 1, info

async def main() -> None:
    group = LocalInstanceGroup(root=sys.argv[1], owner="killed", use_sshd=sys.argv[2] == "1")
    await group.init()
    await group.increase(1)
    (status,) = await group.update()
    info = await group.connect_info(status.id)
    script = sys.argv[3]
    if info.protocol == "local":
        await run_job(Slot(info), Job(id=1, name="x", shell="sh", script=script), LocalConnector(), log=Out())
    else:
        from fleetkit.connector.ssh import SSHConnector
        async with SSHConnector(dial_timeout=10) as ssh:
            await run_job(Slot(info), Job(id=1, name="x", shell="sh", script=script), ssh, log=Out())

anyio.run(main)
"""


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sshd", "sandbox"])
async def test_jobs_die_with_a_killed_manager(
    tmp_path: Path, mode: str, leftovers_ended: _Leftovers
) -> None:
    """SIGKILL of the manager ends its jobs (a detached process of theirs too)
    and removes their build directories (with `env`, which holds the job's
    variables), at once, not at the next run; with a private root too."""
    use_sshd = _use_sshd(mode)
    marker = f"{_marker()}.{secrets.randbelow(10**6):06d}"
    script = (
        f"cd / && setsid sleep {marker}1 </dev/null >/dev/null 2>&1 &\n"
        'echo "project=$CI_PROJECT_DIR"\n'
        f"sleep {marker}2\n"
    )
    root = tmp_path / "root"  # a private root: under pytest's 0700 directory
    leftovers_ended.roots.append(root)
    leftovers_ended.markers.append(marker)
    async with await anyio.open_process(
        [sys.executable, "-c", JOB_MANAGER, str(root), "1" if use_sshd else "0", script],
        stderr=subprocess.DEVNULL,
    ) as manager:
        assert manager.stdout is not None
        output = b""
        with anyio.fail_after(30):
            while b"project=" not in output or not output.endswith(b"\n"):
                output += await manager.stdout.receive()
        await _started_program("sleep", f"{marker}2")
        project = Path(output.split(b"project=")[1].split(b"\n")[0].decode())
        assert await anyio.Path(f"{project}.tmp/env").exists()
        manager.send_signal(signal.SIGKILL)
        await manager.wait()
    with anyio.fail_after(20):
        await wait_until(lambda: processes_with(marker) == [] and not project.exists())
    assert not await anyio.Path(f"{project}.tmp").exists()
    with anyio.fail_after(20):
        await wait_until(lambda: not root.exists())
