"""The local provider's connect info works with fleetkit's connectors, end to end."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from fleetkit._cgroup import available as cgroup_available
from fleetkit._procs import wait_until
from fleetkit.connector import Connector
from fleetkit.connector.local import LocalConnector
from fleetkit.errors import ConnectionLost
from fleetkit.model import ProviderState
from tests.integration.conftest import cmdlines_containing
from tests.integration.local_provider_support import local_group, require_sshd
from tests.support import require_module


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncssh, under the SSH connector, runs on asyncio only


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user may traverse (tmp_path's parent is private), so
    the login user reaches its work directory; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="fleetkit-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.anyio
async def test_sandbox_instance_runs_commands_through_local_connector(tmp_path: Path) -> None:
    """A sandbox instance's connect info makes LocalConnector run commands in the sandbox."""
    async with local_group(tmp_path, use_sshd=False) as group:
        await group.increase(1)
        (status,) = await group.update()
        assert status.state is ProviderState.RUNNING
        info = await group.connect_info(status.id)
        async with LocalConnector().connect(info) as conn:
            result = await conn.run("pwd; echo made > job.txt")
        assert result.exit_code == 0
        assert result.stdout.decode().strip() == info.internal_addr
        assert (Path(info.address()) / "job.txt").read_text() == "made\n"
        await group.decrease([status.id])
        with pytest.raises(ConnectionLost):
            async with LocalConnector().connect(info):
                pass


@pytest.mark.anyio
async def test_sshd_instance_sessions_keep_temporary_files_in_the_sandbox(
    open_root: Path,
) -> None:
    """An sshd instance's sessions get TMPDIR in its sandbox, so files that fall
    back to it (job build dirs) are deleted with the instance."""
    require_sshd()
    require_module("asyncssh", "pip install 'fleetkit[ssh]'")
    from fleetkit.connector.ssh import SSHConnector

    async with local_group(open_root) as group:
        await group.increase(1)
        (status,) = await group.update()
        info = await group.connect_info(status.id)
        async with SSHConnector(dial_timeout=10) as ssh, ssh.connect(info) as conn:
            result = await conn.run('mkdir -p "$TMPDIR/build" && echo "$TMPDIR"')
        assert result.exit_code == 0
        tmpdir = Path(result.stdout.decode().strip())
        assert tmpdir.name == "work"
        assert open_root in tmpdir.parents
        assert await anyio.Path(tmpdir / "build").is_dir()
        await group.decrease([status.id])
        assert not await anyio.Path(tmpdir).exists()


@pytest.mark.anyio
async def test_sshd_instance_runs_commands_through_ssh_connector(tmp_path: Path) -> None:
    """An sshd instance's connect info (generated key, host key) makes SSHConnector log in."""
    require_sshd()
    require_module("asyncssh", "pip install 'fleetkit[ssh]'")
    from fleetkit.connector.ssh import SSHConnector

    async with local_group(tmp_path) as group:
        await group.increase(2)
        statuses = await group.update()
        async with SSHConnector(dial_timeout=10) as ssh:
            for status in statuses:
                info = await group.connect_info(status.id)
                async with ssh.connect(info) as conn:
                    result = await conn.run("id -un")
                assert result.exit_code == 0
                assert result.stdout.decode().strip() == info.username


@pytest.mark.anyio
@pytest.mark.parametrize("use_sshd", [False, True], ids=["sandbox", "sshd"])
async def test_daemon_left_in_the_sandbox_ends_with_its_instance(
    open_root: Path, use_sshd: bool
) -> None:
    """A process a command leaves running from the sandbox in a session of its own,
    outside the instance's process tree, ends when the instance is deleted (or,
    with cgroups, when its command ends)."""
    marker = f"3600.{uuid.uuid4().int % 10**9:09d}"
    if use_sshd:
        require_sshd()
        require_module("asyncssh", "pip install 'fleetkit[ssh]'")
    try:
        async with local_group(open_root, use_sshd=use_sshd) as group:
            await group.increase(1)
            (status,) = await group.update()
            info = await group.connect_info(status.id)
            sandbox = open_root / "fleet-test" / status.id
            where = sandbox / "work" if use_sshd else sandbox
            daemon = f"cd {where} && setsid sleep {marker} </dev/null >/dev/null 2>&1 &"
            async with _connector(use_sshd) as connector, connector.connect(info) as conn:
                assert (await conn.run(daemon)).exit_code == 0
            if not use_sshd and cgroup_available():
                # Sooner still: each local command has a cgroup of its own,
                # removed (with all in it) when the command ends.
                assert not _sleeping(marker)
                return
            with anyio.fail_after(5):
                await wait_until(lambda: _sleeping(marker))
            assert await group.decrease([status.id]) == [status.id]
            assert cmdlines_containing(marker.encode()) == []
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            # setsid may still be forking when a failed check brings us here.
            while found := cmdlines_containing(marker.encode()):
                for path in found:
                    with contextlib.suppress(OSError):
                        os.kill(int(path.parent.name), signal.SIGKILL)
                await anyio.sleep(0.05)


def _sleeping(marker: str) -> bool:
    """Whether ``sleep MARKER`` runs (not setsid or a shell about to exec it)."""
    needle = f"sleep\0{marker}\0".encode()
    for path in cmdlines_containing(needle):
        with contextlib.suppress(OSError):
            if path.read_bytes() == needle:
                return True
    return False


@contextlib.asynccontextmanager
async def _connector(use_sshd: bool) -> AsyncIterator[Connector]:
    if not use_sshd:
        yield LocalConnector()
        return
    from fleetkit.connector.ssh import SSHConnector

    async with SSHConnector(dial_timeout=10) as ssh:
        yield ssh
