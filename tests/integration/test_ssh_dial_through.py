"""Dialling SSH through another connection (SSH inside SSH), against real OpenSSH servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path

import anyio
import anyio.abc
import attrs
import pytest

from fleetkit.connector import Command, Connection, RunningCommand, TunnelTarget
from fleetkit.connector._streams import ConnectionBase
from fleetkit.connector.local import LocalConnector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import ConnectionLost, ConnectorError, ConnectTimeout
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import TestSSHD, running_sshd

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def inner(sshd_path: str, tmp_path: Path) -> AsyncIterator[TestSSHD]:
    """A second sshd, standing for a nested VM behind the first."""
    async with running_sshd(tmp_path / "inner") as server:
        yield server


class _Relay(ConnectionBase):
    """A connection of a kind the SSH connector does not know: it can only use
    the protocol's ``forward``/``open_tunnel``, never asyncssh internals."""

    def __init__(self, inner: Connection) -> None:
        self.inner = inner
        self.tunnels: list[TunnelTarget] = []

    def _stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        timeout: float | None,
    ) -> AbstractAsyncContextManager[RunningCommand]:
        return self.inner.stream(command, env=env, timeout=timeout)

    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        self.tunnels.append(target)
        return await self.inner.open_tunnel(target)

    async def upload(self, local: Path, remote: str) -> None:
        await self.inner.upload(local, remote)

    async def download(self, remote: str, local: Path) -> None:
        await self.inner.download(remote, local)

    async def aclose(self) -> None:
        pass


def _vm_info(inner: TestSSHD, vm_id: str = "vm-1") -> ConnectInfo:
    return inner.connect_info(vm_id)


@pytest.mark.anyio
async def test_dial_through_ssh_runs_in_the_inner_server(
    sshd: TestSSHD, inner: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """A connection via an SSH connection runs commands on the inner server; it
    is the block's own (not pooled) and ends with it, leaving the outer usable."""
    async with ssh_connector.connect(sshd.connect_info("host-1")) as outer:
        async with ssh_connector.connect(_vm_info(inner), via=outer) as vm:
            result = await vm.run('echo inside; id -un; printf %s "$SSH_CONNECTION"')
            lines = result.stdout_text.split("\n")
            assert lines[:2] == ["inside", inner.daemon.login_user]
            # The inner server is reached at its own port from the outer's side.
            assert lines[2].split()[3] == str(inner.daemon.port)
        assert ssh_connector.open_connections("vm-1") == 0
        assert (await outer.run("true")).ok


@pytest.mark.anyio
async def test_dial_through_goes_through_the_outer_server(
    sshd_path: str, inner: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """When the outer server forbids forwarding, the inner one cannot be reached
    through it, although it can be reached directly: the route is the outer."""
    async with (
        running_sshd(tmp_path / "closed", extra_config={"AllowTcpForwarding": "no"}) as closed,
        ssh_connector.connect(closed.connect_info("host-2")) as outer,
    ):
        vm = attrs.evolve(_vm_info(inner), timeout=timedelta(seconds=1))
        with pytest.raises(ConnectTimeout):
            async with ssh_connector.connect(vm, via=outer):
                pass
        async with ssh_connector.connect(vm) as direct:
            assert (await direct.run("true")).ok


@pytest.mark.anyio
async def test_inner_connection_breaks_when_the_outer_is_lost(
    sshd: TestSSHD, inner: TestSSHD
) -> None:
    """Losing the outer server ends commands on the inner connection with ConnectionLost."""
    async with (
        SSHConnector(dial_timeout=10, retry_interval=0.05, keepalive=1) as ssh,
        ssh.connect(sshd.connect_info("host-3")) as outer,
        ssh.connect(_vm_info(inner), via=outer) as vm,
    ):
        assert (await vm.run("true")).ok
        await sshd.daemon.stop()
        with pytest.raises(ConnectionLost), anyio.fail_after(30):
            await vm.run("sleep 60")


@pytest.mark.anyio
async def test_dial_through_any_connection_uses_its_forward(
    sshd: TestSSHD, inner: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """Through a connection that is not an SSHConnection, SSH runs over the
    connection's forward: one tunnel per dial, each to the inner address."""
    async with ssh_connector.connect(sshd.connect_info("host-4")) as outer:
        relay = _Relay(outer)
        async with ssh_connector.connect(_vm_info(inner), via=relay) as vm:
            assert (await vm.run("echo relayed")).stdout_text == "relayed\n"
        assert relay.tunnels == [(inner.daemon.address, inner.daemon.port)]
        assert (await outer.run("true")).ok


@pytest.mark.anyio
async def test_dial_through_a_local_connection_dials_directly(
    inner: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """A local connection reaches what this machine reaches: SSH through it works."""
    info = ConnectInfo(id="local-9", internal_addr=str(tmp_path), protocol="local")
    async with (
        LocalConnector().connect(info) as local,
        ssh_connector.connect(_vm_info(inner), via=local) as vm,
    ):
        assert (await vm.run("echo ok")).stdout_text == "ok\n"


@pytest.mark.anyio
async def test_local_connector_refuses_to_run_through_ssh(
    sshd: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """Subprocesses here cannot run on the far side of an SSH connection: a clear error."""
    info = ConnectInfo(id="local-8", internal_addr=str(tmp_path), protocol="local")
    async with ssh_connector.connect(sshd.connect_info("host-5")) as outer:
        with pytest.raises(ConnectorError, match="cannot run commands through"):
            async with LocalConnector().connect(info, via=outer):
                pass
