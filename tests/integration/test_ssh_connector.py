"""SSHConnector against a real OpenSSH server: login, host keys, dialling, pooling, keepalive."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import attrs
import pytest

from fleetkit._procs import descendants, wait_until
from fleetkit._sshd import SSHDaemon, generate_keypair
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ConfigError,
    ConnectionLost,
    ConnectorError,
    ConnectTimeout,
    HostKeyMismatch,
    UnsupportedEventLoop,
)
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import TestSSHD, ensure_password_user, running_sshd
from tests.integration.conftest import cmdlines_containing
from tests.support import require_root

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_key_login_runs_a_command(sshd: TestSSHD, ssh_connector: SSHConnector) -> None:
    """A key from the connect info logs in as its user and runs a command."""
    async with ssh_connector.connect(sshd.connect_info()) as conn:
        result = await conn.run("id -un")
    assert result.stdout_text.strip() == sshd.daemon.login_user


@pytest.mark.anyio
async def test_key_path_is_used_when_connect_info_has_no_key(sshd: TestSSHD) -> None:
    """The connector's key_path authenticates when the connect info carries no key."""
    async with (
        SSHConnector(key_path=sshd.client_key.path, dial_timeout=5) as ssh,
        ssh.connect(sshd.connect_info(key=None)) as conn,
    ):
        assert (await conn.run("true")).ok


@pytest.mark.anyio
async def test_password_login(sshd_path: str, tmp_path: Path) -> None:
    """A password logs in when the server allows password authentication."""
    require_root("setting a login password")
    password = "pw-" + os.urandom(8).hex()
    user = await anyio.to_thread.run_sync(ensure_password_user, "fleetkit-pw", password)
    async with (
        running_sshd(tmp_path, login_user=user, password=password) as server,
        SSHConnector(dial_timeout=5) as ssh,
    ):
        async with ssh.connect(server.connect_info(use_key=False)) as conn:
            assert (await conn.run("id -un")).stdout_text.strip() == user
        bad = server.connect_info("other", use_key=False, password="wrong")
        with pytest.raises(AuthenticationFailed) as caught:
            async with ssh.connect(bad):
                pass
        assert "wrong" not in str(caught.value)


@pytest.mark.anyio
async def test_wrong_key_is_authentication_failed(
    sshd: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """A key the server does not trust raises AuthenticationFailed, without retrying."""
    other, _ = await anyio.to_thread.run_sync(generate_keypair, tmp_path / "other")
    start = anyio.current_time()
    with pytest.raises(AuthenticationFailed):
        async with ssh_connector.connect(sshd.connect_info(key=other)):
            pass
    assert anyio.current_time() - start < 5


@pytest.mark.anyio
async def test_changed_host_key_on_same_instance_is_refused(
    sshd: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """A host key pinned on first use is enforced: a new key on the same instance is refused."""
    info = sshd.connect_info("pinned-0")
    async with ssh_connector.connect(info) as conn:
        assert (await conn.run("true")).ok
    assert ssh_connector.host_keys.pinned("pinned-0") == sshd.daemon.host_public_key
    port = sshd.daemon.port
    await sshd.daemon.stop()
    async with await SSHDaemon.start(
        tmp_path / "replaced", port=port, authorized_keys=[sshd.client_key.public_key]
    ) as replaced:
        assert replaced.host_public_key != sshd.daemon.host_public_key
        with pytest.raises(HostKeyMismatch):
            async with ssh_connector.connect(info):
                pass
        # Another instance id has no pin yet and connects.
        async with ssh_connector.connect(attrs.evolve(info, id="fresh-0")) as conn:
            assert (await conn.run("true")).ok


@pytest.mark.anyio
async def test_supplied_host_key_is_checked(
    sshd: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """A host key from the provider is enforced from the first connection on."""
    good = sshd.connect_info("supplied-ok", host_key=sshd.daemon.host_public_key + " comment")
    async with ssh_connector.connect(good) as conn:
        assert (await conn.run("true")).ok
    _, other_public = await anyio.to_thread.run_sync(generate_keypair, tmp_path / "hk")
    with pytest.raises(HostKeyMismatch):
        async with ssh_connector.connect(sshd.connect_info("supplied-bad", host_key=other_public)):
            pass


@pytest.mark.anyio
async def test_a_pooled_connection_is_not_reused_for_another_host_key(
    sshd: TestSSHD, ssh_connector: SSHConnector, tmp_path: Path
) -> None:
    """A connection checked against one host key never serves a caller who expects
    another for the same instance: that caller's key is checked on a dial of its own."""
    _, other_public = await anyio.to_thread.run_sync(generate_keypair, tmp_path / "hk")
    good = sshd.connect_info("pool-0", host_key=sshd.daemon.host_public_key)
    bad = attrs.evolve(good, host_key=other_public)
    async with ssh_connector.connect(good) as conn:
        assert (await conn.run("true")).ok
        # While the checked connection is in use ...
        with pytest.raises(HostKeyMismatch):
            async with ssh_connector.connect(bad):
                pass
    # ... and while it idles in the pool.
    assert ssh_connector.open_connections("pool-0") == 1
    with pytest.raises(HostKeyMismatch):
        async with ssh_connector.connect(bad):
            pass
    # A key pinned on first use (no key supplied) is no licence either.
    pinned = attrs.evolve(good, id="pool-1", host_key=None)
    async with ssh_connector.connect(pinned) as conn:
        assert (await conn.run("true")).ok
    with pytest.raises(HostKeyMismatch):
        async with ssh_connector.connect(attrs.evolve(pinned, host_key=other_public)):
            pass
    # The right key still shares the checked connection (same key, comment aside).
    async with ssh_connector.connect(
        attrs.evolve(good, host_key=sshd.daemon.host_public_key + " a comment")
    ) as conn:
        assert (await conn.run("true")).ok
    assert ssh_connector.open_connections("pool-0") == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_closed_port_times_out(sshd: TestSSHD) -> None:
    """Dialling a port nobody listens on retries until the dial timeout, then ConnectTimeout."""
    info = sshd.connect_info("closed", protocol_port=_closed_port())
    start = anyio.current_time()
    async with SSHConnector(dial_timeout=0.6, retry_interval=0.05) as ssh:
        with pytest.raises(ConnectTimeout, match=r"within 0\.6 s"):
            async with ssh.connect(info):
                pass
    assert 0.5 < anyio.current_time() - start < 5


@pytest.mark.anyio
async def test_dial_retries_until_a_late_sshd_listens(sshd: TestSSHD, tmp_path: Path) -> None:
    """An sshd that starts after the first dial attempt is reached within the dial timeout."""
    port = _closed_port()
    info = sshd.connect_info("late", protocol_port=port)
    async with SSHConnector(dial_timeout=20, retry_interval=0.05) as ssh:

        async def start_late() -> None:
            await anyio.sleep(0.5)
            daemon = await SSHDaemon.start(
                tmp_path / "late", port=port, authorized_keys=[sshd.client_key.public_key]
            )
            late.append(daemon)

        late: list[SSHDaemon] = []
        start = anyio.current_time()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(start_late)
                async with ssh.connect(info) as conn:
                    assert (await conn.run("echo up")).stdout == b"up\n"
            assert anyio.current_time() - start >= 0.5
        finally:
            for daemon in late:
                await daemon.stop()


@pytest.mark.anyio
async def test_use_external_addr_picks_and_falls_back(sshd: TestSSHD) -> None:
    """use_external_addr dials the external address, and the internal one when that is all."""
    both = sshd.connect_info("ext", internal_addr="192.0.2.1", external_addr=sshd.daemon.address)
    only_internal = sshd.connect_info("int")
    async with SSHConnector(use_external_addr=True, dial_timeout=5) as ssh:
        for info in (both, only_internal):
            async with ssh.connect(info) as conn:
                assert (await conn.run("true")).ok
    with pytest.raises(ConfigError, match="no address"):
        async with ssh.connect(ConnectInfo(id="nowhere", key=b"x")):
            pass


@pytest.mark.anyio
async def test_fifty_concurrent_commands_share_few_connections(
    sshd: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """50 concurrent commands all succeed over a pool of at most 5 connections (10 sessions each)."""
    outputs: dict[int, bytes] = {}
    peak = 0
    async with ssh_connector.connect(sshd.connect_info("pool")) as conn:

        async def one(i: int) -> None:
            nonlocal peak
            result = await conn.run(["sh", "-c", 'sleep 0.3; echo "$0"', str(i)])
            outputs[i] = result.stdout
            peak = max(peak, ssh_connector.open_connections("pool"))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert outputs == {i: f"{i}\n".encode() for i in range(50)}
    assert 1 < peak <= 5


@pytest.mark.anyio
async def test_server_with_fewer_sessions_than_assumed(
    sshd_path: str,
    tmp_path: Path,
    ssh_connector: SSHConnector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server whose MaxSessions is below the connector's limit still runs every command."""
    caplog.set_level(logging.INFO, logger="fleetkit.connector.ssh")
    async with running_sshd(tmp_path, extra_config={"MaxSessions": "3"}) as server:
        async with ssh_connector.connect(server.connect_info("small")) as conn:
            results = []

            async def one() -> None:
                results.append(await conn.run("sleep 0.5; echo ok"))

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
        assert [r.stdout for r in results] == [b"ok\n"] * 12
    assert "refused session" in caplog.text


@pytest.mark.anyio
async def test_connections_dropped_by_max_startups_are_retried(
    sshd_path: str, tmp_path: Path, ssh_connector: SSHConnector
) -> None:
    """A burst of new connections that sshd's MaxStartups drops all succeed after retries."""
    async with running_sshd(tmp_path, extra_config={"MaxStartups": "1"}) as server:
        done: list[str] = []

        async def one(i: int) -> None:
            async with ssh_connector.connect(server.connect_info(f"burst-{i}")) as conn:
                if (await conn.run("true")).ok:
                    done.append(f"burst-{i}")

        async with anyio.create_task_group() as tg:
            for i in range(15):
                tg.start_soon(one, i)
        assert len(done) == 15
        assert "drop connection" in server.daemon.log_path.read_text()


@pytest.mark.anyio
async def test_idle_connections_close(sshd: TestSSHD) -> None:
    """A pooled connection idle longer than idle_timeout is closed by the reaper."""
    async with SSHConnector(idle_timeout=0.2) as ssh:
        async with ssh.connect(sshd.connect_info("idle")) as conn:
            await conn.run("true")
        assert ssh.open_connections("idle") == 1
        with anyio.fail_after(5):
            await wait_until(lambda: ssh.open_connections("idle") == 0)


@pytest.mark.anyio
async def test_forget_closes_connections_and_drops_the_pin(
    sshd: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """forget() closes a deleted instance's pooled connections and its host key pin."""
    async with ssh_connector.connect(sshd.connect_info("deleted")) as conn:
        await conn.run("true")
    assert ssh_connector.host_keys.pinned("deleted") is not None
    await ssh_connector.forget("deleted")
    assert ssh_connector.open_connections("deleted") == 0
    assert ssh_connector.host_keys.pinned("deleted") is None


def _session_processes(daemon: SSHDaemon) -> list[int]:
    return [
        pid
        for pid in descendants(daemon.pid)
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"
    ]


@contextlib.contextmanager
def _frozen_sessions(daemon: SSHDaemon) -> Iterator[list[int]]:
    """SIGSTOP the daemon's per-connection processes: their TCP connections stay
    open but silent. On exit, kill the whole session tree remembered now (once
    a session's sshd dies, the shell and command below it leave the daemon's
    tree, so stop() would not find them)."""
    tree = descendants(daemon.pid)
    try:
        for pid in _session_processes(daemon):
            os.kill(pid, signal.SIGSTOP)
        yield tree
    finally:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_keepalive_notices_a_dead_server(sshd: TestSSHD) -> None:
    """A server that stops answering is noticed by keepalive: the running command raises
    ConnectionLost, and new work dials a fresh connection."""
    info = sshd.connect_info("frozen", keepalive=None)
    async with (
        SSHConnector(keepalive=0.2, keepalive_count_max=2, dial_timeout=5) as ssh,
        ssh.connect(info) as conn,
    ):
        async with conn.stream("echo started; sleep 30") as proc:
            assert await proc.stdout.receive() == b"started\n"
            with _frozen_sessions(sshd.daemon) as frozen:
                start = anyio.current_time()
                with pytest.raises(ConnectionLost):
                    await proc.wait()
                assert anyio.current_time() - start < 10
        assert frozen
        assert (await conn.run("echo again")).stdout == b"again\n"


@pytest.mark.anyio
async def test_pooled_connection_closed_by_the_server_is_redialled(
    sshd: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """New work on a pooled connection the server has since closed dials a fresh one."""
    async with ssh_connector.connect(sshd.connect_info("reopen")) as conn:
        assert (await conn.run("true")).ok
        for pid in _session_processes(sshd.daemon):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert (await conn.run("echo fresh")).stdout == b"fresh\n"
        assert ssh_connector.open_connections("reopen") == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_ssh_connector_refuses_a_non_asyncio_backend(sshd: TestSSHD) -> None:
    """Under trio the connector says it needs asyncio instead of failing obscurely, with
    UnsupportedEventLoop (not a ConnectorError, which would count against the instance)."""
    with pytest.raises(UnsupportedEventLoop, match="asyncio") as caught:
        async with SSHConnector().connect(sshd.connect_info()):
            pass
    assert not isinstance(caught.value, ConnectorError)
    with pytest.raises(UnsupportedEventLoop, match="on trio"):
        SSHConnector().check_event_loop()


@pytest.mark.anyio
async def test_timeout_covers_waiting_for_a_session(
    sshd: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """A command whose session cannot even open (a frozen server) times out on schedule."""
    async with ssh_connector.connect(sshd.connect_info("stuck")) as conn:
        assert (await conn.run("true")).ok
        with _frozen_sessions(sshd.daemon), pytest.raises(CommandTimeout):
            await conn.run("true", timeout=0.3)


@pytest.mark.anyio
async def test_zero_dial_timeout_still_makes_one_attempt(sshd: TestSSHD) -> None:
    """A dial timeout of zero connects to a listening server rather than failing untried."""
    async with (
        SSHConnector(dial_timeout=0) as ssh,
        ssh.connect(sshd.connect_info("zero")) as conn,
    ):
        assert (await conn.run("true")).ok


@pytest.mark.anyio
async def test_closing_the_connector_ends_commands_still_running(sshd: TestSSHD) -> None:
    """aclose() with a command in progress ends that command on the far side, not only
    the connection (which alone would leave it running)."""
    marker = f"{700 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}".encode()
    ssh = SSHConnector(dial_timeout=5)
    async with (
        ssh.connect(sshd.connect_info("closing")) as conn,
        conn.stream(f"echo go; sleep {marker.decode()}") as proc,
    ):
        assert await proc.stdout.receive() == b"go\n"
        assert cmdlines_containing(marker)
        await ssh.aclose()
        with anyio.fail_after(10):
            await wait_until(lambda: not cmdlines_containing(marker))


@pytest.mark.anyio
async def test_command_ends_when_its_session_vanishes(
    sshd: TestSSHD, ssh_connector: SSHConnector
) -> None:
    """A command whose SSH session disappears without a word (its sshd killed) is ended
    by the wrapper's watchdog instead of running on for good."""
    marker = f"{800 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6}".encode()
    async with (
        ssh_connector.connect(sshd.connect_info("vanish")) as conn,
        conn.stream(f"echo go; sleep {marker.decode()}") as proc,
    ):
        assert await proc.stdout.receive() == b"go\n"
        for pid in _session_processes(sshd.daemon):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with pytest.raises(ConnectionLost):
            await proc.wait()
    with anyio.fail_after(10):
        await wait_until(lambda: not cmdlines_containing(marker))
