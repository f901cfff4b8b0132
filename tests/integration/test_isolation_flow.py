"""The per-job isolation flow through real SSH to a real nesting daemon (sandbox VMs)."""

from __future__ import annotations

import json
import posixpath
import pwd
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import anyio.abc
import attrs
import pytest

from fleetkit.connector._forward import splice
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import ConfigError, ImageRejected, NestingUnavailable
from fleetkit.isolation import IsolatedVM, Isolator
from fleetkit.jobs import Job, JobOptions, JobStatus, MemoryLog, run_job
from fleetkit.model import ConnectInfo, ConnectorConfig
from fleetkit.provider._local_isolation import is_pool_user
from tests.integration.executor_support import wait_until
from tests.integration.isolation_support import (
    Instance,
    isolator_for,
    running_instance,
    short_dir,
)
from tests.support import require_root

pytestmark = pytest.mark.integration

__all__ = ["short_dir"]  # the fixture, used by name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def instance(short_dir: Path) -> AsyncIterator[Instance]:
    async with running_instance(short_dir) as running:
        yield running


@pytest.fixture
async def ssh() -> AsyncIterator[SSHConnector]:
    async with SSHConnector(dial_timeout=15, retry_interval=0.05, keepalive=5) as connector:
        yield connector


@attrs.define
class _Slot:
    """A slot as a fleet hands it out, recording the failures reported to it."""

    instance_id: str
    number: int
    connect_info: ConnectInfo | None
    failures: int = 0

    def report_failure(self) -> None:
        self.failures += 1

    def attach(self, scope: anyio.CancelScope) -> None:
        """Never lost in these tests."""


async def _vms(instance: Instance) -> list[str]:
    async with instance.client() as client:
        return [vm.id for vm in await client.list()]


async def _home(vm: IsolatedVM) -> str:
    return (await vm.connection.run('printf %s "$HOME"')).stdout_text


@pytest.mark.anyio
async def test_a_command_runs_in_a_vm_that_is_deleted_afterwards(
    instance: Instance, ssh: SSHConnector
) -> None:
    """open() makes a VM for the slot, the command runs inside it (its home is
    the VM's directory), and the VM is gone after the block, processes too."""
    slot = _Slot("inst-1", 0, instance.info())
    lines: list[str] = []

    async def note(text: str) -> None:
        lines.append(text)

    async with isolator_for(instance) as isolator, isolator.open(slot, ssh, note=note) as vm:
        assert vm.image == "default"
        assert (await _home(vm)).startswith(str(instance.vm_dir))
        assert await _vms(instance) == [vm.vm.id]
        assert instance.vm_processes()
    assert await _vms(instance) == []
    assert instance.vm_processes() == []
    assert slot.failures == 0
    assert lines[0] == "Creating VM from image default in slot 0...\n"
    assert lines[-1] == f"VM {vm.vm.id} deleted\n"


@pytest.mark.anyio
async def test_relative_nesting_host_is_taken_from_the_login_directory(
    instance: Instance, ssh: SSHConnector
) -> None:
    """``unix:rel/path`` reaches the daemon relative to the instance login's directory."""
    async with ssh.connect(instance.info()) as conn:
        login = (await conn.run('printf %s "${HOME:-$PWD}"')).stdout_text
    relative = posixpath.relpath(instance.socket, login)
    slot = _Slot("inst-1", 0, instance.info())
    async with (
        isolator_for(instance, nesting_host=f"unix:{relative}") as isolator,
        isolator.open(slot, ssh) as vm,
    ):
        assert (await vm.connection.run("true")).ok


@pytest.mark.anyio
async def test_tcp_nesting_host_is_reached_through_the_instance(
    instance: Instance, ssh: SSHConnector
) -> None:
    """``host:port`` is dialled from the instance's side of the connection: here a
    relay on the instance's loopback in front of the daemon's socket."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    relaying = 0

    async def relay(client: anyio.abc.SocketStream) -> None:
        nonlocal relaying
        relaying += 1
        try:
            async with client, await anyio.connect_unix(instance.socket) as daemon:
                await splice(client, daemon)
        finally:
            relaying -= 1

    slot = _Slot("inst-1", 1, instance.info())
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, relay)
        async with (
            isolator_for(instance, nesting_host=f"127.0.0.1:{port}") as isolator,
            isolator.open(slot, ssh) as vm,
        ):
            assert (await vm.connection.run("true")).ok
        # The client closed its stream: let each relay end by itself (cancelling a
        # unix stream's receive races its close on asyncio, agronholm/anyio#1267).
        with anyio.fail_after(10):
            await wait_until(lambda: relaying == 0)
        tg.cancel_scope.cancel()
    assert await _vms(instance) == []


@pytest.mark.anyio
async def test_a_vm_left_in_the_slot_is_stomped_and_logged(
    instance: Instance, ssh: SSHConnector, caplog: pytest.LogCaptureFixture
) -> None:
    """A VM a killed job left in slot 2 is replaced by the next job's; the
    replacement is logged with the old VM's id."""
    async with instance.client() as client:
        left = (await client.create("default", slot=2)).vm.id
    slot = _Slot("inst-1", 2, instance.info())
    async with isolator_for(instance) as isolator, isolator.open(slot, ssh) as vm:
        assert vm.stomped_vm_id == left
        assert await _vms(instance) == [vm.vm.id]
    assert left in caplog.text
    assert await _vms(instance) == []


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["failure", "cancel", "timeout"])
async def test_the_vm_is_deleted_however_the_block_ends(
    instance: Instance, ssh: SSHConnector, ending: str
) -> None:
    """An exception, a cancel or a timeout inside the block still deletes the VM."""
    slot = _Slot("inst-1", 0, instance.info())
    async with isolator_for(instance) as isolator:
        with anyio.move_on_after(30) as outer:
            with anyio.CancelScope() as scope:
                try:
                    async with isolator.open(slot, ssh) as vm:
                        if ending == "failure":
                            raise RuntimeError("the job broke")
                        if ending == "cancel":
                            scope.cancel()
                        with anyio.move_on_after(0.5 if ending == "timeout" else 30):
                            await vm.connection.run("sleep 30")
                except RuntimeError:
                    pass
        assert not outer.cancelled_caught
    assert await _vms(instance) == []
    assert instance.vm_processes() == []


@pytest.mark.anyio
async def test_a_broken_connection_still_deletes_the_vm(
    instance: Instance, ssh: SSHConnector
) -> None:
    """When the instance connection breaks under the job, Delete goes over a
    fresh connection."""
    slot = _Slot("inst-1", 0, instance.info())
    lines: list[str] = []

    async def note(text: str) -> None:
        lines.append(text)

    async with isolator_for(instance) as isolator, isolator.open(slot, ssh, note=note) as vm:
        assert vm.vm.id in await _vms(instance)
        # Every pooled connection to the instance goes away at once, and
        # with them the job's connection, its VM's and the daemon's stream.
        await ssh.forget("inst-1")
    assert lines[-1] == f"VM {vm.vm.id} deleted\n"
    assert await _vms(instance) == []


@pytest.mark.anyio
async def test_a_refused_image_fails_before_any_vm_and_is_not_the_instances_fault(
    instance: Instance, ssh: SSHConnector
) -> None:
    """A ``$VARIABLE`` expanding to a refused name is refused before a VM exists;
    the slot's instance gets no health failure."""
    slot = _Slot("inst-1", 0, instance.info())
    async with isolator_for(instance, allowed_images=("default", "ok/*")) as isolator:
        with pytest.raises(ImageRejected, match=r"'ok/a/b' \(written 'ok/\$SUB'\)"):
            async with isolator.open(slot, ssh, image="ok/$SUB", variables={"SUB": "a/b"}):
                pass
        async with ssh.connect(instance.info()) as conn:
            with pytest.raises(ImageRejected):
                await isolator.vm(conn, instance.info(), slot=0, image="evil").__aenter__()
    assert slot.failures == 0
    assert await _vms(instance) == []


@pytest.mark.anyio
async def test_a_dead_daemon_is_a_health_failure(instance: Instance, ssh: SSHConnector) -> None:
    """With the daemon gone, opening a VM raises NestingUnavailable and counts
    against the instance; ready-up says the daemon does not answer."""
    slot = _Slot("inst-1", 0, instance.info())
    async with isolator_for(instance) as isolator:
        assert await isolator.ready_check(ssh, within=5)(instance.info()) is None
        await instance.daemon.stop()
        with pytest.raises(NestingUnavailable):
            async with isolator.open(slot, ssh):
                pass
        assert slot.failures == 1
        reason = await isolator.ready_check(ssh, within=0.5)(instance.info())
    assert reason is not None
    assert "does not answer" in reason


@pytest.mark.anyio
async def test_two_jobs_on_one_instance_get_two_vms(instance: Instance, ssh: SSHConnector) -> None:
    """Two slots of one instance hold two VMs at once, each with its own home;
    a file one job writes is not in the other's."""
    async with (
        isolator_for(instance) as isolator,
        isolator.open(_Slot("inst-1", 0, instance.info()), ssh) as first,
        isolator.open(_Slot("inst-1", 1, instance.info()), ssh) as second,
    ):
        assert first.vm.id != second.vm.id
        homes = [await _home(first), await _home(second)]
        assert homes[0] != homes[1]
        # Commands start in the login user's directory; each VM's is its HOME.
        await first.connection.run('cd "$HOME" && echo secret > mine.txt')
        assert (await first.connection.run('cat "$HOME/mine.txt"')).ok
        assert not (await second.connection.run('cat "$HOME/mine.txt"')).ok
        assert sorted(await _vms(instance)) == sorted([first.vm.id, second.vm.id])
    assert await _vms(instance) == []


def _processes_of(uid: int) -> list[str]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        uids = next((line.split() for line in lines if line.startswith("Uid:")), [])
        state = next((line.split() for line in lines if line.startswith("State:")), [])
        # A zombie has ended; only its parent's reaping is left.
        if len(uids) > 1 and int(uids[1]) == uid and state[1:2] not in (["Z"], ["X"]):
            found.append(status.parent.name)
    return found


@pytest.mark.anyio
async def test_two_vms_of_one_instance_cannot_read_each_others_build_dirs(
    instance: Instance, ssh: SSHConnector
) -> None:
    """As root with no username configured, each sandbox VM has a login user of
    its own (reported to the manager, who logs in as it): one VM's job can
    neither list nor read the other's build directory, and what a job left
    running, detached, ends with its VM."""
    require_root("making the sandbox's per-VM users")
    config = {
        "authorized_keys": [instance.sshd.client_key.public_key],
        "working_directory": str(instance.vm_dir),
    }
    async with (
        isolator_for(
            instance, nesting_config=config, connector_config=ConnectorConfig()
        ) as isolator,
        isolator.open(_Slot("inst-1", 0, instance.info()), ssh) as first,
        isolator.open(_Slot("inst-1", 1, instance.info()), ssh) as second,
    ):
        users = [(await vm.connection.run("id -un")).stdout_text.strip() for vm in (first, second)]
        assert users[0] != users[1]
        assert all(user.startswith("fleetkit-v") and is_pool_user(user) for user in users)
        assert [first.vm.username, second.vm.username] == users
        home = await _home(first)
        made = await first.connection.run(
            'mkdir -p "$HOME/builds/project" && echo secret > "$HOME/builds/project/key"'
            " && (setsid sleep 300 </dev/null >/dev/null 2>&1 &)"
        )
        assert made.ok, made.stderr_text
        assert (await first.connection.run(f"cat {home}/builds/project/key")).ok
        for attack in (f"cat {home}/builds/project/key", f"ls {home}", f"ls {home}/builds"):
            stolen = await second.connection.run(attack)
            assert not stolen.ok, attack
            assert "secret" not in stolen.stdout_text
        uid = pwd.getpwnam(users[0]).pw_uid
        assert _processes_of(uid), "the detached job process runs"
    assert await _vms(instance) == []
    assert _processes_of(uid) == [], "nothing of the VM's user outlives its VM"


@pytest.mark.anyio
async def test_a_bad_nesting_host_fails_at_construction(instance: Instance) -> None:
    """A nesting_host in none of the three forms is a ConfigError at once."""
    with pytest.raises(ConfigError, match=r"vm_isolation\.nesting_host"):
        Isolator(instance.settings(nesting_host="nesting.sock"))


@pytest.mark.anyio
async def test_run_job_runs_the_script_in_the_vm(instance: Instance, ssh: SSHConnector) -> None:
    """Through connector_for, run_job runs the job in a VM of its slot (its build
    directory is in the VM), logs the VM's life, and the VM is deleted after."""
    slot = _Slot("inst-1", 0, instance.info())
    log = MemoryLog()
    job = Job(id=1, name="in-vm", shell="sh", script='echo "home=$HOME pwd=$PWD"')
    async with isolator_for(instance) as isolator:
        connector = isolator.connector_for(ssh, slot=0, image="default", note=log.write)
        result = await run_job(slot, job, connector, log=log)
    assert result.status is JobStatus.SUCCESS, log.text
    assert f"home={instance.vm_dir}/" in log.text
    assert f"pwd={instance.vm_dir}/" in log.text
    assert "Creating VM from image default in slot 0" in log.text
    assert await _vms(instance) == []


@pytest.mark.anyio
async def test_run_job_timeout_ends_the_job_and_deletes_the_vm(
    instance: Instance, ssh: SSHConnector
) -> None:
    """A job past its timeout is ended and its VM deleted; no process is left."""
    slot = _Slot("inst-1", 0, instance.info())
    job = Job(id=2, name="slow", shell="sh", script="sleep 60", timeout=timedelta(seconds=1))
    async with isolator_for(instance) as isolator:
        connector = isolator.connector_for(ssh, slot=0, image="default")
        result = await run_job(
            slot, job, connector, log=MemoryLog(), options=JobOptions(kill_grace=1)
        )
    assert result.status is JobStatus.TIMED_OUT
    assert await _vms(instance) == []
    assert instance.vm_processes() == []


@pytest.mark.anyio
async def test_run_job_with_a_dead_daemon_is_a_system_failure_of_the_instance(
    instance: Instance, ssh: SSHConnector
) -> None:
    """No daemon: a system failure (retried elsewhere by the executor) reported
    to the slot; a refused image: a job failure, not reported."""
    slot = _Slot("inst-1", 0, instance.info())
    job = Job(id=3, name="nodaemon", shell="sh", script="true")
    async with isolator_for(instance, allowed_images=("default",)) as isolator:
        refused = await run_job(
            slot, job, isolator.connector_for(ssh, slot=0, image="other"), log=MemoryLog()
        )
        assert refused.status is JobStatus.FAILED
        assert slot.failures == 0
        await instance.daemon.stop()
        result = await run_job(
            slot, job, isolator.connector_for(ssh, slot=0, image="default"), log=MemoryLog()
        )
    assert result.status is JobStatus.SYSTEM_FAILURE
    assert "NestingUnavailable" in (result.message or "")
    assert slot.failures == 1


_KILLED_MANAGER = """
import json, sys
import anyio
from fleetkit.connector.ssh import SSHConnector
from fleetkit.isolation import IsolationSettings, Isolator
from fleetkit.model import ConnectInfo, ConnectorConfig

spec = json.loads(sys.argv[1])

class Slot:
    instance_id = spec["info"]["id"]
    number = spec["slot"]
    connect_info = ConnectInfo(**spec["info"], key=open(spec["key"], "rb").read())

async def main() -> None:
    settings = IsolationSettings(
        nesting_host=spec["nesting_host"],
        nesting_config=spec["nesting_config"],
        connector_config=ConnectorConfig(username=spec["vm_user"]),
        image="default",
    )
    async with SSHConnector() as ssh, Isolator(settings) as isolator:
        async with isolator.open(Slot(), ssh) as vm:
            print(vm.vm.id, flush=True)
            await anyio.sleep_forever()

anyio.run(main)
"""


@pytest.mark.anyio
async def test_a_killed_managers_vm_is_stomped_by_the_next_job_in_its_slot(
    instance: Instance, ssh: SSHConnector
) -> None:
    """A manager SIGKILLed mid-job leaves its VM behind; the next job in that slot
    gets a fresh VM and the left one is deleted by the daemon (its id reported)."""
    info = instance.info("inst-1")
    settings = instance.settings()
    spec = {
        "info": {
            "id": info.id,
            "internal_addr": info.internal_addr,
            "protocol_port": info.protocol_port,
            "username": info.username,
        },
        "key": str(instance.sshd.client_key.path),
        "slot": 3,
        "nesting_host": settings.nesting_host,
        "nesting_config": dict(settings.nesting_config),
        "vm_user": instance.vm_user,
    }
    async with await anyio.open_process(
        [sys.executable, "-c", _KILLED_MANAGER, json.dumps(spec)]
    ) as manager:
        assert manager.stdout is not None
        with anyio.fail_after(60):
            left = (await manager.stdout.receive()).decode().strip()
        manager.kill()
        await manager.wait()
    assert await _vms(instance) == [left]
    async with (
        isolator_for(instance) as isolator,
        isolator.open(_Slot("inst-1", 3, info), ssh) as vm,
    ):
        assert vm.stomped_vm_id == left
        assert await _vms(instance) == [vm.vm.id]
    assert await _vms(instance) == []
    assert instance.vm_processes() == []
