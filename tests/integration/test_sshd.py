"""The throwaway OpenSSH server of fleetkit._sshd, against the real sshd."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from fleetkit._sshd import (
    SSHDaemon,
    SSHDaemonError,
    _descendants,
    _exists,
    _poll,
    generate_keypair,
)
from fleetkit.testing.sshd import TestSSHD


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
    session = await anyio.open_process(
        sshd.ssh_command("sleep 300"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(10):
            await _poll(
                lambda: any(
                    _cmdline(pid).startswith(b"sleep") for pid in _descendants(sshd.daemon.pid)
                )
            )
        tree = _descendants(sshd.daemon.pid)
        await sshd.daemon.stop()
        assert not sshd.daemon.alive()
        assert not [pid for pid in tree if _exists(pid)]
        await sshd.daemon.stop()
        with pytest.raises(OSError):
            await anyio.connect_tcp(sshd.daemon.address, sshd.daemon.port)
    finally:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                session.kill()
            await session.wait()
            await session.aclose()


@pytest.mark.anyio
async def test_killed_daemon_is_not_alive_and_stop_still_works(sshd: TestSSHD) -> None:
    """A daemon killed from outside reports not alive, and stop() then succeeds."""
    os.kill(sshd.daemon.pid, signal.SIGKILL)
    with anyio.fail_after(5):
        await _poll(lambda: not sshd.daemon.alive())
    await sshd.daemon.stop()
    assert not sshd.daemon.alive()


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
