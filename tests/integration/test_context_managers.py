"""An exception raised inside any of fleetkit's public `async with` blocks leaves it
as it was raised: never wrapped in an ExceptionGroup, never swallowed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleetkit.connector import Connection
from fleetkit.connector.local import LocalConnector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import AcquireTimeout
from fleetkit.executor import InstanceExecutor
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectInfo, Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import Delay, SimulatedGroup
from fleetkit.testing.sshd import SSHDaemon, generate_keypair, running_sshd
from tests.integration.conftest import SSHD_PATH
from tests.support import require_executable

pytestmark = pytest.mark.integration


class Boom(Exception):
    """What the block raises."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the SSH connector's loop; everything else runs on it too


def _fleet(connector: Any = None) -> Fleet:
    group = SimulatedGroup(seed=2, boot=Delay(0.01, 0.01), deletion=Delay(0.01, 0.01))
    settings = FleetSettings(update_interval_when_expecting=0.05, delete_instances_on_shutdown=True)
    return Fleet(group, Limits(max_instances=1), Policy(), connector=connector, settings=settings)


def _local_info(tmp_path: Path) -> ConnectInfo:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir(exist_ok=True)
    return ConnectInfo(id="local-0", internal_addr=str(sandbox), protocol="local")


@asynccontextmanager
async def _local_connection(tmp_path: Path) -> AsyncIterator[Connection]:
    async with LocalConnector().connect(_local_info(tmp_path)) as conn:
        yield conn


@asynccontextmanager
async def _stream(tmp_path: Path) -> AsyncIterator[object]:
    async with _local_connection(tmp_path) as conn, conn.stream("sleep 30") as proc:
        yield proc


@asynccontextmanager
async def _forward(tmp_path: Path) -> AsyncIterator[object]:
    async with _local_connection(tmp_path) as conn, conn.forward("x.sock") as target:
        yield target


@asynccontextmanager
async def _acquire(tmp_path: Path) -> AsyncIterator[object]:
    fleet = _fleet()
    async with fleet, fleet.acquire("job", timeout=10) as slot:
        yield slot


@asynccontextmanager
async def _events(tmp_path: Path) -> AsyncIterator[object]:
    fleet = _fleet()
    async with fleet, fleet.events() as events:
        yield events


@asynccontextmanager
async def _results(tmp_path: Path) -> AsyncIterator[object]:
    executor = InstanceExecutor(_fleet(), FakeConnector())
    async with executor:
        results = executor.submit([])
        async with results:
            yield results


@asynccontextmanager
async def _ssh_connection(tmp_path: Path) -> AsyncIterator[object]:
    require_executable(SSHD_PATH, "apt-get install -y openssh-server")
    async with (
        running_sshd(tmp_path / "sshd") as server,
        SSHConnector(dial_timeout=10) as ssh,
        ssh.connect(server.connect_info()) as conn,
        conn.stream("sleep 30") as proc,
    ):
        yield proc


@asynccontextmanager
async def _daemon(tmp_path: Path) -> AsyncIterator[object]:
    require_executable(SSHD_PATH, "apt-get install -y openssh-server")
    _, public = await anyio.to_thread.run_sync(generate_keypair, tmp_path / "key")
    async with await SSHDaemon.start(tmp_path / "sshd", authorized_keys=[public]) as daemon:
        yield daemon


BLOCKS: dict[str, Callable[[Path], AbstractAsyncContextManager[object]]] = {
    "Fleet": lambda _: _fleet(),
    "Fleet.acquire": _acquire,
    "Fleet.events": _events,
    "SSHConnector": lambda _: SSHConnector(),
    "SSHConnector.connect+stream": _ssh_connection,
    "LocalConnector.connect": _local_connection,
    "Connection.stream": _stream,
    "Connection.forward": _forward,
    "InstanceExecutor": lambda _: InstanceExecutor(_fleet(), FakeConnector()),
    "JobResults": _results,
    "FakeConnector.connect": lambda p: FakeConnector().connect(_local_info(p)),
    "testing.sshd.running_sshd": lambda p: _daemon_or_skip(p),
    "testing.sshd.SSHDaemon": _daemon,
}


def _daemon_or_skip(tmp_path: Path) -> AbstractAsyncContextManager[object]:
    require_executable(SSHD_PATH, "apt-get install -y openssh-server")
    return running_sshd(tmp_path / "sshd")


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(BLOCKS))
async def test_an_exception_leaves_the_block_as_raised(name: str, tmp_path: Path) -> None:
    """Boom raised in the block is what the caller catches: the same object, unwrapped."""
    boom = Boom(name)

    async def block() -> None:
        async with BLOCKS[name](tmp_path):
            raise boom

    with anyio.fail_after(60), pytest.raises(Boom) as caught:
        await block()
    assert caught.value is boom


@pytest.mark.anyio
async def test_a_nested_fleets_acquire_timeout_leaves_the_ssh_connector_as_raised() -> None:
    """The issue's case: AcquireTimeout from a Fleet inside `async with SSHConnector()`."""

    async def block() -> None:
        async with SSHConnector() as ssh, _fleet(ssh) as fleet, fleet.acquire("job", timeout=0.01):
            pass

    with pytest.raises(AcquireTimeout):
        await block()
