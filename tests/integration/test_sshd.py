"""The throwaway OpenSSH server of fleetkit._sshd, against the real sshd."""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import descendants, exists, wait_until
from fleetkit._sshd import SSHDaemon, SSHDaemonError, ensure_login_user, generate_keypair
from fleetkit.testing.sshd import TestSSHD
from tests.integration.conftest import cmdlines_containing


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ssh(
    server: TestSSHD, command: str, *, key: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        server.ssh_command(command, key_path=key),
        capture_output=True,
        timeout=20,
        check=False,
    )


@contextlib.asynccontextmanager
async def _ssh_session(server: TestSSHD, command: str) -> AsyncIterator[None]:
    """The OpenSSH client running ``command`` on ``server``, killed and reaped on exit."""
    session = await anyio.open_process(
        server.ssh_command(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                session.kill()
            await session.wait()
            await session.aclose()


@pytest.mark.anyio
async def test_client_logs_in_with_trusted_key_as_login_user(sshd: TestSSHD) -> None:
    """The OpenSSH client logs in with the trusted key and runs as the login user with /bin/sh."""
    done = await anyio.to_thread.run_sync(_ssh, sshd, "id -un; echo $0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [sshd.daemon.login_user, "sh"]


@pytest.mark.anyio
async def test_untrusted_key_is_refused(sshd: TestSSHD, tmp_path: Path) -> None:
    """A key not in authorized_keys is refused."""
    await anyio.to_thread.run_sync(generate_keypair, tmp_path / "other")
    done = await anyio.to_thread.run_sync(lambda: _ssh(sshd, "true", key=tmp_path / "other"))
    assert done.returncode == 255
    assert b"Permission denied" in done.stderr


@pytest.mark.anyio
async def test_host_public_key_is_the_key_sshd_presents(sshd: TestSSHD) -> None:
    """host_public_key matches what ssh-keyscan reads from the port."""
    done = await anyio.run_process(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(sshd.daemon.port), sshd.daemon.address],
        check=False,
    )
    scanned = done.stdout.decode().split()
    assert " ".join(scanned[1:3]) == sshd.daemon.host_public_key


@pytest.mark.anyio
async def test_stop_ends_daemon_and_sessions_and_is_idempotent(sshd: TestSSHD) -> None:
    """stop() ends the listener and every session process under it; a second stop is a no-op."""
    async with _ssh_session(sshd, "sleep 300"):
        with anyio.fail_after(10):
            await wait_until(
                lambda: any(
                    _cmdline(pid).startswith(b"sleep") for pid in descendants(sshd.daemon.pid)
                )
            )
        tree = descendants(sshd.daemon.pid)
        await sshd.daemon.stop()
        assert not sshd.daemon.alive()
        assert not [pid for pid in tree if exists(pid)]
        await sshd.daemon.stop()
        with pytest.raises(OSError):
            await anyio.connect_tcp(sshd.daemon.address, sshd.daemon.port)


@pytest.mark.anyio
async def test_stop_ends_what_a_session_starts_while_being_stopped(sshd: TestSSHD) -> None:
    """A session that answers TERM by starting an orphan and exiting leaves nothing
    running after stop(): a process forked after the tree was listed is found too."""
    marker, inner = (f"3600.{uuid.uuid4().int % 10**9:09d}" for _ in range(2))
    async with _ssh_session(sshd, f"trap 'sleep {marker} & exit 0' TERM; sleep {inner} & wait"):
        try:
            # Once sleep has exec'd it no longer carries the shell's TERM trap.
            with anyio.fail_after(10):
                await wait_until(lambda: bool(cmdlines_containing(f"sleep\0{inner}".encode())))
            await sshd.daemon.stop()
            assert cmdlines_containing(marker.encode()) == []
            assert cmdlines_containing(inner.encode()) == []
        finally:
            for path in cmdlines_containing(marker.encode()):
                with contextlib.suppress(OSError):
                    os.kill(int(path.parent.name), signal.SIGKILL)


@pytest.mark.anyio
async def test_killed_daemon_is_not_alive_and_stop_still_works(sshd: TestSSHD) -> None:
    """A daemon killed from outside reports not alive, and stop() then succeeds."""
    os.kill(sshd.daemon.pid, signal.SIGKILL)
    with anyio.fail_after(5):
        await wait_until(lambda: not sshd.daemon.alive())
    await sshd.daemon.stop()
    assert not sshd.daemon.alive()


def test_ensure_login_user_is_idempotent() -> None:
    """ensure_login_user returns the same usable /bin/sh user however often it is called."""
    first = ensure_login_user()
    assert ensure_login_user() == first
    if os.geteuid() == 0:
        entry = pwd.getpwnam(first)
        assert (entry.pw_shell, entry.pw_dir) == ("/bin/sh", "/")


@pytest.mark.anyio
async def test_private_workdir_gets_a_side_dir_removed_at_stop(
    sshd_path: str, tmp_path: Path
) -> None:
    """Under a private parent, authorized_keys lives in a side directory that stop() removes."""
    private = tmp_path / "private"
    await anyio.Path(private).mkdir(mode=0o700)
    daemon = await SSHDaemon.start(private / "sshd")
    config = await anyio.Path(private / "sshd" / "sshd_config").read_text()
    keys = Path(
        next(
            line.split()[1] for line in config.splitlines() if line.startswith("AuthorizedKeysFile")
        )
    )
    try:
        if daemon.login_user != getpass.getuser():
            assert not keys.is_relative_to(private)
        assert await anyio.Path(keys).exists()
    finally:
        await daemon.stop()
    if daemon.login_user != getpass.getuser():
        assert not await anyio.Path(keys.parent).exists()


@pytest.mark.anyio
async def test_leaving_async_with_stops_the_daemon(sshd_path: str, tmp_path: Path) -> None:
    """``async with`` on a started daemon stops it on exit, as stop() does."""
    async with await SSHDaemon.start(tmp_path / "sshd") as daemon:
        assert daemon.alive()
    assert not daemon.alive()
    assert not exists(daemon.pid)
    await daemon.aclose()  # idempotent, like stop()


@pytest.mark.anyio
async def test_bad_config_reports_sshd_error(sshd_path: str, tmp_path: Path) -> None:
    """A config sshd rejects raises SSHDaemonError carrying sshd's own message."""
    with pytest.raises(SSHDaemonError, match="NoSuchOption"):
        await SSHDaemon.start(tmp_path / "bad", extra_config={"NoSuchOption": "yes"})


@pytest.mark.anyio
async def test_busy_port_is_an_error_naming_it(sshd: TestSSHD, tmp_path: Path) -> None:
    """Asking for a port already in use fails with sshd's bind error, leaving nothing running."""
    with pytest.raises(SSHDaemonError, match="did not start"):
        await SSHDaemon.start(tmp_path / "second", port=sshd.daemon.port)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
