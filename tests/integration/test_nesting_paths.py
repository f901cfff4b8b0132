"""Where the daemon listens: GitLab's default rule, and a socket nobody else can use or replace."""

from __future__ import annotations

import os
import socket as socketlib
import sys
from pathlib import Path

import anyio
import pytest

from fleetkit.errors import HypervisorNotFound, IsolationError
from fleetkit.nesting import (
    NestingDaemon,
    default_socket_path,
    installed_hypervisors,
    load_hypervisor,
)
from fleetkit.nesting.sandbox import SandboxHypervisor
from tests.integration.nesting_support import serving, short_dir
from tests.support import require_root

pytestmark = [pytest.mark.integration]
__all__ = ["short_dir"]

NOBODY = 65534


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio runs on asyncio only


def test_default_socket_path_follows_gitlabs_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_socket_path({"NESTING_SOCKET": "/a/b.sock", "XDG_RUNTIME_DIR": "/r"}) == Path(
        "/a/b.sock"
    )
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        "/run/user/7/nesting.sock"
    )
    monkeypatch.setenv("HOME", "/home/someone")
    assert default_socket_path({}) == Path("/home/someone/nesting.sock")


def test_hypervisors_come_from_entry_points() -> None:
    assert "sandbox" in installed_hypervisors()
    assert load_hypervisor("sandbox") is SandboxHypervisor
    with pytest.raises(
        HypervisorNotFound, match=r"no hypervisor named 'kvm'; installed: .*sandbox"
    ):
        load_hypervisor("kvm")


def _refused(socket: Path, match: str) -> None:
    async def start() -> None:
        async with NestingDaemon("sandbox", socket_path=socket):
            pass

    with pytest.raises(IsolationError, match=match):
        anyio.run(start)


def test_unsafe_socket_paths_are_refused(short_dir: Path) -> None:
    target = short_dir / "elsewhere"
    target.write_text("precious")
    link = short_dir / "link.sock"
    link.symlink_to(target)
    _refused(link, "is a symlink")
    assert target.read_text() == "precious"

    plain = short_dir / "file.sock"
    plain.write_text("")
    _refused(plain, "exists and is not a socket")

    open_dir = short_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    _refused(open_dir / "nesting.sock", "writable by other users")

    dir_link = short_dir / "dirlink"
    dir_link.symlink_to(short_dir / "open")
    _refused(dir_link / "nesting.sock", "is a symlink")

    _refused(short_dir / ("x" * 120) / "n.sock", "longer than the 107 bytes")


def test_another_users_socket_is_refused(short_dir: Path) -> None:
    require_root("chown to another user")
    path = short_dir / "nesting.sock"
    listener = socketlib.socket(socketlib.AF_UNIX)
    try:
        listener.bind(str(path))
        os.chown(path, NOBODY, NOBODY)
        _refused(path, "belongs to uid 65534")
    finally:
        listener.close()


@pytest.mark.anyio
async def test_one_daemon_per_state_and_a_dead_daemons_socket_is_replaced(short_dir: Path) -> None:
    stale = socketlib.socket(socketlib.AF_UNIX)
    stale.bind(str(short_dir / "nesting.sock"))
    stale.close()  # a socket file nobody listens on: what a killed daemon leaves
    async with serving(short_dir) as (daemon, client):
        await client.ping()
        with pytest.raises(IsolationError, match=rf"another nesting daemon \(pid {os.getpid()}\)"):
            async with NestingDaemon("sandbox", socket_path=daemon.socket_path):
                pass
        await client.ping()  # the refused second daemon touched nothing


def _open_up(*directories: Path) -> int:
    """Open the directories to everyone (even then the socket is not); return
    the last one's mode before."""
    mode = directories[-1].stat().st_mode & 0o777
    for directory in directories:
        directory.chmod(0o755)
    return mode


_CONNECT_AS = (
    "import os, socket, sys\n"
    "uid = int(sys.argv[2]); os.setgid(uid); os.setuid(uid)\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "except PermissionError:\n"
    "    sys.exit(13)\n"
)


async def _connect_as(uid: int, socket: Path) -> int:
    done = await anyio.run_process(
        [sys.executable, "-c", _CONNECT_AS, str(socket), str(uid)], check=False
    )
    return done.returncode


@pytest.mark.anyio
async def test_another_user_cannot_connect(short_dir: Path) -> None:
    """The socket is 0600 in a 0700 directory: an unprivileged user gets EACCES."""
    require_root("a second, unprivileged user")
    socket_dir = short_dir / "run"
    async with serving(socket_dir) as (daemon, client):
        assert _open_up(short_dir, socket_dir) == 0o700
        assert await _connect_as(NOBODY, daemon.socket_path) == 13
        await client.ping()


@pytest.mark.anyio
async def test_a_socket_owner_may_connect_and_no_one_else(short_dir: Path) -> None:
    """--socket-owner: the manager's login user reaches the socket; others still cannot."""
    require_root("a second, unprivileged user")
    _open_up(short_dir)
    socket_dir = short_dir / "run"
    async with serving(socket_dir, socket_owner="nobody") as (daemon, client):
        info = daemon.socket_path.lstat()
        assert (info.st_uid, info.st_mode & 0o777) == (NOBODY, 0o600)
        assert socket_dir.stat().st_mode & 0o777 == 0o711
        assert await _connect_as(NOBODY, daemon.socket_path) == 0
        assert await _connect_as(NOBODY - 1, daemon.socket_path) == 13
        await client.ping()
    assert not daemon.socket_path.exists()
    closed = short_dir / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(IsolationError, match=r"socket owner nobody cannot reach .*closed"):
        async with NestingDaemon("sandbox", socket_path=closed / "n.sock", socket_owner="nobody"):
            pass
    with pytest.raises(IsolationError, match="socket owner 'no-such-user' is not a user"):
        NestingDaemon("sandbox", socket_path=closed / "n.sock", socket_owner="no-such-user")
