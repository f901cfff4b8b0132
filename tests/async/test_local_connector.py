"""LocalConnector on both anyio backends: commands, environment, cancel and errors."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import exists, wait_until
from fleetkit.connector.local import LocalConnection, LocalConnector
from fleetkit.errors import CommandTimeout, ConfigError, ConnectionLost, ConnectorError
from fleetkit.model import ConnectInfo


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[LocalConnection]:
    """A local connection working in a fresh sandbox directory."""
    info = ConnectInfo(id="sandbox-1", internal_addr=str(tmp_path), protocol="local")
    async with LocalConnector().connect(info) as connection:
        yield connection


@pytest.mark.anyio
async def test_commands_run_in_the_sandbox_directory(conn: LocalConnection, tmp_path: Path) -> None:
    """A local instance's commands run in its sandbox directory."""
    result = await conn.run("pwd")
    assert result.stdout_text.strip() == str(tmp_path)


@pytest.mark.anyio
async def test_other_protocols_use_the_connector_workdir(tmp_path: Path) -> None:
    """Connect info that names no sandbox runs commands in the connector's workdir."""
    info = ConnectInfo(id="manager", internal_addr="10.0.0.1")
    async with LocalConnector(workdir=tmp_path).connect(info) as connection:
        assert (await connection.run(["pwd"])).stdout_text.strip() == str(tmp_path)


@pytest.mark.anyio
async def test_missing_sandbox_is_connection_lost(tmp_path: Path) -> None:
    """A sandbox directory that is gone means the instance is gone."""
    info = ConnectInfo(id="gone", internal_addr=str(tmp_path / "gone"), protocol="local")
    with pytest.raises(ConnectionLost, match="gone"):
        async with LocalConnector().connect(info):
            pass


@pytest.mark.anyio
async def test_env_adds_to_the_environment(conn: LocalConnection) -> None:
    """env values are added to this process's environment, quotes and all."""
    result = await conn.run(["sh", "-c", 'printf %s "$A|$HOME"'], env={"A": "it's $x"})
    assert result.stdout_text == f"it's $x|{os.environ['HOME']}"


@pytest.mark.anyio
async def test_empty_command_is_a_config_error(conn: LocalConnection) -> None:
    """An empty command is refused with the instance named."""
    with pytest.raises(ConfigError, match="sandbox-1"):
        await conn.run([])


@pytest.mark.anyio
async def test_missing_program_is_a_connector_error(conn: LocalConnection) -> None:
    """An argument vector naming no program raises a ConnectorError, not OSError."""
    with pytest.raises(ConnectorError, match="could not start"):
        await conn.run(["/nonexistent/program"])


@pytest.mark.anyio
async def test_cancel_ends_the_whole_process_group(conn: LocalConnection, tmp_path: Path) -> None:
    """Leaving a stream early ends the command and the children it started."""
    async with conn.stream("sleep 60 & echo $!; wait") as proc:
        child = int((await proc.stdout.receive()).decode())
    with anyio.fail_after(10):
        await wait_until(lambda: not exists(child))


@pytest.mark.anyio
async def test_cancel_ends_a_child_in_a_session_of_its_own(conn: LocalConnection) -> None:
    """Leaving a stream early also ends a child that left the command's process
    group and session, which a signal to the group would miss."""
    async with conn.stream("setsid sleep 60 & echo $!; wait") as proc:
        child = int((await proc.stdout.receive()).decode())
        with anyio.fail_after(10):
            await wait_until(lambda: os.getsid(child) == child)
    with anyio.fail_after(10):
        await wait_until(lambda: not exists(child))


@pytest.mark.anyio
async def test_timeout_raises_command_timeout(conn: LocalConnection) -> None:
    """A command past its timeout raises CommandTimeout."""
    with pytest.raises(CommandTimeout, match="sandbox-1"):
        await conn.run(["sleep", "30"], timeout=0.2)


@pytest.mark.anyio
async def test_signal_is_reported(conn: LocalConnection) -> None:
    """A command killed by a signal reports the signal's name."""
    result = await conn.run("kill -TERM $$")
    assert (result.exit_code, result.signal) == (None, signal.SIGTERM.name.removeprefix("SIG"))


@pytest.mark.anyio
async def test_closed_connection_refuses_commands(conn: LocalConnection) -> None:
    """After aclose a connection runs nothing more."""
    await conn.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await conn.run("true")
