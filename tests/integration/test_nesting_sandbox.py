"""The sandbox hypervisor: a VM is a directory and an sshd; log in with a pinned host key."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import exists, wait_until
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import HostKeyMismatch, ImageNotFound, NestingError
from fleetkit.isolation import VirtualMachine
from fleetkit.model import ConnectInfo
from fleetkit.nesting.sandbox import SandboxHypervisor
from fleetkit.testing.sshd import ClientKey, new_client_key
from tests.integration.conftest import cmdlines_containing
from tests.integration.nesting_support import require_sshd, serving, short_dir, sshds_of
from tests.support import require_root

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
__all__ = ["short_dir"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio and asyncssh run on asyncio only


def _info(vm: VirtualMachine, key: ClientKey, user: str, host_key: str | None) -> ConnectInfo:
    host, _, port = vm.addr.rpartition(":")
    return ConnectInfo(
        id=vm.id,
        internal_addr=host,
        protocol_port=int(port),
        username=user,
        key=key.private_key,
        host_key=host_key,
    )


def _image_directory(base: Path) -> Path:
    base.chmod(0o755)  # the login user must reach the VM's home
    images = base / "images"
    (images / "team" / "tools").mkdir(parents=True)
    (images / "team" / "tools" / "hello.txt").write_text("from the image\n")
    return images


async def test_a_vm_is_an_image_copy_behind_its_own_pinned_sshd(short_dir: Path) -> None:
    """Log in with a key from the Init config, checked against the host key the
    daemon reported; the session's HOME is the VM's copy of the image."""
    images = _image_directory(short_dir)
    key = await new_client_key(short_dir / "client")
    config = {
        "image_directory": str(images),
        "working_directory": str(short_dir / "vms"),
        "authorized_keys": [key.public_key],
    }
    async with serving(short_dir, config=config) as (_, client):
        made = await client.create("team/tools", slot=0)
        other = await client.create("default", slot=1)
        vm = made.vm
        assert vm.name == "team/tools"
        assert vm.addr.startswith("127.0.0.1:")
        assert vm.host_key is not None
        assert vm.host_key.startswith("ssh-ed25519 ")
        assert vm.host_key != other.vm.host_key, "each VM has a host key of its own"
        assert [v.host_key for v in await client.list() if v.id == vm.id] == [vm.host_key]
        if os.geteuid() == 0:
            # As root each VM has a login user of its own, named by the daemon.
            assert vm.username is not None
            assert vm.username.startswith("fleetkit-v")
            assert vm.username != other.vm.username
        else:
            assert vm.username is None
        user = vm.username or os.environ.get("USER", "")
        async with SSHConnector(dial_timeout=10, retry_interval=0.05) as ssh:
            async with ssh.connect(_info(vm, key, user, vm.host_key)) as conn:
                result = await conn.run('cat "$HOME/hello.txt"; echo "$HOME"; touch "$HOME/new"')
            assert result.exit_code == 0, result.stderr
            text, home = result.stdout_text.splitlines()
            assert text == "from the image"
            assert home == str(short_dir / "vms" / vm.id / "home")
            assert (short_dir / "vms" / vm.id / "home" / "new").exists()
            # The same connector: its pooled, checked connection is not reused.
            with pytest.raises(HostKeyMismatch):
                async with ssh.connect(_info(vm, key, user, other.vm.host_key)):
                    pass
        await client.delete(vm.id)
        assert not (short_dir / "vms" / vm.id).exists()
        assert (images / "team" / "tools" / "hello.txt").exists(), "the image is untouched"
    assert sshds_of(short_dir) == []


async def test_images_that_do_not_exist_or_escape_are_not_found(short_dir: Path) -> None:
    images = short_dir / "images"
    images.mkdir()
    (short_dir / "secret" / "inner").mkdir(parents=True)
    (images / "link").symlink_to(short_dir / "secret")
    async with serving(short_dir, config={"image_directory": str(images)}) as (_, client):
        names = [
            "nope",
            "../secret",
            "link",
            "link/inner",
            "a//b",
            ".hidden",
            "/etc",
            "t/../../secret",
        ]
        for name in names:
            with pytest.raises(ImageNotFound, match="image"):
                await client.create(name)
        assert await client.list() == []


async def test_max_vms_is_resource_exhausted(short_dir: Path) -> None:
    async with serving(short_dir, config={"max_vms": 1}) as (_, client):
        first = await client.create("default", slot=3)
        with pytest.raises(NestingError, match="maximum of 1 VMs") as caught:
            await client.create("default")
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        # Stomping a slot stays possible at the limit: the old VM goes first.
        second = await client.create("default", slot=3)
        assert second.stomped_vm_id == first.vm.id


def test_the_example_runs_and_leaves_nothing() -> None:
    """examples/nesting_sandbox.py: create, log in, stomp, delete, stop."""
    require_sshd()
    example = Path(__file__).resolve().parents[2] / "examples" / "nesting_sandbox.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("in the VM: hello from ")
    assert lines[1].endswith("in a sandbox VM (exit code 0)")
    first = lines[0].split()[1]
    assert lines[2].endswith(f"stomped {first}")
    assert lines[3] == "VMs left: []"
    assert cmdlines_containing(b"fk-nesting-") == []


@pytest.mark.anyio
async def test_recovery_never_signals_another_users_process(short_dir: Path) -> None:
    """A local user who starts a process naming a left-over VM's sshd config
    does not get the daemon (root) to signal it."""
    require_root("a second, unprivileged user")
    state = short_dir / "state"
    vm_dir = short_dir / "work" / "vm-0123456789ab"
    config = vm_dir / "sshd" / "sshd_config"
    _leftover(state, vm_dir)
    decoy = await anyio.open_process(
        [
            sys.executable,
            "-c",
            f"import os, time; os.setuid({NOBODY}); time.sleep(60)",
            str(config),
        ]
    )
    try:
        with anyio.fail_after(30):  # until the decoy runs as the other user
            await wait_until(lambda: _uid(decoy.pid) == NOBODY)
        assert await SandboxHypervisor(state).recover() == ["vm-0123456789ab"]
        assert decoy.returncode is None
        assert exists(decoy.pid), "recovery signalled another user's process"
        assert not vm_dir.exists()
    finally:
        decoy.kill()
        await decoy.wait()


NOBODY = 65534


def _uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("Uid:")[1].split()[0])


def _leftover(state: Path, vm_dir: Path) -> None:
    """What a killed daemon leaves of one VM: its record and its directory."""
    (vm_dir / "sshd").mkdir(parents=True)
    (vm_dir / "sshd" / "sshd_config").write_text("Port 1\n")
    (state / "vms").mkdir(parents=True)
    record = {"id": vm_dir.name, "directory": str(vm_dir), "pid": None}
    (state / "vms" / f"{vm_dir.name}.json").write_text(json.dumps(record))


@pytest.mark.anyio
async def test_recovery_ends_what_a_vm_user_left_running(short_dir: Path) -> None:
    """As root each VM has its own user; after a killed daemon, the next one's
    recovery ends every process of that user, even one its job detached."""
    require_root("the sandbox's per-VM users")
    state = short_dir / "state"
    killed = SandboxHypervisor(state)
    await killed.init({"working_directory": str(short_dir / "work")})
    vm = await killed.create("vm-0123456789ab", "default")
    assert vm.username is not None
    entry = pwd.getpwnam(vm.username)
    detached = await anyio.open_process(
        [
            "/usr/bin/setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--",
            "sleep",
            "300",
        ],
        start_new_session=True,
    )
    try:
        with anyio.fail_after(30):
            await wait_until(lambda: _uid(detached.pid) == entry.pw_uid)
        # What the kernel does for a killed daemon: its lease on the user goes.
        held = killed._vms[vm.id].user
        assert held is not None
        held.lease.close()
        assert await SandboxHypervisor(state).recover() == [vm.id]
        with anyio.fail_after(30):
            await detached.wait()
        assert not (short_dir / "work" / vm.id).exists()
    finally:
        if detached.returncode is None:
            detached.kill()
            await detached.wait()
        await killed.delete(vm.id)  # reaps the sshd recovery ended
