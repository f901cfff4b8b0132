"""The local provider's connect info works with fleetkit's connectors, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetkit.connector.local import LocalConnector
from fleetkit.errors import ConnectionLost
from fleetkit.model import ProviderState
from tests.integration.local_provider_support import local_group, require_sshd
from tests.support import require_module


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncssh, under the SSH connector, runs on asyncio only


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
