"""Fixtures for integration tests that need a real OpenSSH server.

``sshd`` gives a running :class:`fleetkit.testing.sshd.TestSSHD` (daemon, client
key, ``connect_info()``) on 127.0.0.1 and a free port, stopped after the test;
``ssh_connector`` an :class:`~fleetkit.connector.ssh.SSHConnector` with short
timeouts, closed after the test.
Async fixtures run on the requesting test's ``anyio_backend``, so any test module
that uses them defines that fixture (asyncssh needs ``"asyncio"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetkit.connector import Connection
from fleetkit.connector.local import LocalConnector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import TestSSHD, running_sshd
from tests.support import require_executable

SSHD_PATH = "/usr/sbin/sshd"
_INSTALL_HINT = "apt-get install -y openssh-server"


@pytest.fixture
def sshd_path() -> str:
    """The sshd binary; skips (fails under CI=true) when OpenSSH is missing."""
    require_executable("ssh-keygen", _INSTALL_HINT)
    return require_executable(SSHD_PATH, _INSTALL_HINT)


@pytest.fixture
async def sshd(sshd_path: str, tmp_path: Path) -> AsyncIterator[TestSSHD]:
    """A throwaway sshd trusting a fresh client key, stopped after the test."""
    async with running_sshd(tmp_path / "sshd-fixture") as server:
        yield server


@pytest.fixture(params=["ssh", "local"])
async def conn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Connection]:
    """A connection to a real sshd, or a local connection in a temp dir: behaviour every
    connection has is tested on both."""
    if request.param == "local":
        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        info = ConnectInfo(id="local-0", internal_addr=str(sandbox), protocol="local")
        async with LocalConnector().connect(info) as local:
            yield local
        return
    require_executable(SSHD_PATH, "apt-get install -y openssh-server")
    async with (
        running_sshd(tmp_path / "sshd") as server,
        SSHConnector(dial_timeout=10, retry_interval=0.05) as ssh,
        ssh.connect(server.connect_info()) as remote,
    ):
        yield remote


@pytest.fixture
async def ssh_connector() -> AsyncIterator[SSHConnector]:
    """An SSHConnector with short timeouts, closed (with its pool) after the test."""
    async with SSHConnector(dial_timeout=10, retry_interval=0.05, keepalive=5) as connector:
        yield connector


def cmdlines_containing(needle: bytes) -> list[Path]:
    """The /proc/*/cmdline files (process arguments) on this machine that contain
    ``needle``: the far side of every test sshd and local connection."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue  # the process ended meanwhile
    return found
