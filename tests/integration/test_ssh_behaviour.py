"""Behaviour every connection has, run against SSH (real OpenSSH) and the local connector."""

from __future__ import annotations

import hashlib
import os
import posixpath
import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit.connector import Connection
from fleetkit.connector.local import LocalConnection
from fleetkit.errors import CommandTimeout, ConfigError, ConnectorError
from tests.integration.conftest import cmdlines_containing

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Text that can be an environment value or argument: anything but NUL (and
# lone surrogates, which cannot be encoded to send).
_portable_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40
)


@pytest.mark.anyio
async def test_run_returns_exit_code_and_both_streams(conn: Connection) -> None:
    """run() returns the exit code, stdout and stderr of a shell command line."""
    result = await conn.run("echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr, result.signal) == (
        7,
        b"out\n",
        b"err\n",
        None,
    )


@pytest.mark.anyio
async def test_stdin_reaches_the_command(conn: Connection) -> None:
    """stdin given to run() arrives whole, followed by EOF."""
    data = os.urandom(3 * 1024 * 1024)
    result = await conn.run("cat", stdin=data)
    assert result.exit_code == 0
    assert result.stdout == data


@pytest.mark.anyio
async def test_killed_command_reports_its_signal(conn: Connection) -> None:
    """A command killed by a signal reports the signal name, not an exit code."""
    result = await conn.run("kill -USR1 $$")
    assert (result.exit_code, result.signal) == (None, "USR1")


@pytest.mark.anyio
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(value=_portable_text, args=st.lists(_portable_text, max_size=4))
async def test_env_and_argv_pass_byte_for_byte(
    conn: Connection, value: str, args: list[str]
) -> None:
    """Arbitrary environment values and arguments arrive unchanged, with no shell expansion."""
    result = await conn.run(["sh", "-c", 'printf "%s\\0" "$V" "$@"', "sh", *args], env={"V": value})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split(b"\0")[:-1] == [s.encode() for s in [value, *args]]


@pytest.mark.anyio
async def test_env_values_never_show_in_process_arguments(conn: Connection) -> None:
    """A secret passed in env is visible to the command but in no process's arguments
    on the far side (which is this machine for both connectors)."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    marker = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    async with conn.stream(
        f'printf %s "$FLEETKIT_TEST_SECRET"; sleep {marker}', env={"FLEETKIT_TEST_SECRET": secret}
    ) as proc:
        assert await proc.stdout.receive() == secret.encode()
        await _wait_far_side(conn, f"sleep {marker}", running=True)
        assert cmdlines_containing(secret.encode()) == []


@pytest.mark.anyio
async def test_bad_env_name_is_a_config_error_naming_it(conn: Connection) -> None:
    """An environment name that is not an identifier is refused before anything runs."""
    with pytest.raises(ConfigError, match=r"env\.BAD-NAME"):
        await conn.run("true", env={"BAD-NAME": "x"})


@pytest.mark.anyio
async def test_stream_delivers_output_as_it_comes(conn: Connection) -> None:
    """The streaming form yields the first line before the command ends."""
    async with conn.stream("echo first; sleep 30; echo never") as proc:
        first = await proc.stdout.receive()
        assert first == b"first\n"
        await proc.terminate()
        status = await proc.wait()
    assert status.signal == "TERM"


@pytest.mark.anyio
async def test_large_output_streams_in_bounded_memory(conn: Connection) -> None:
    """Streaming 200 MB of output keeps Python's peak allocation far below its size."""
    total = 200 * 1024 * 1024
    received = 0
    tracemalloc.start()
    try:
        async with conn.stream(f"head -c {total} /dev/zero") as proc:
            async for chunk in proc.stdout:
                received += len(chunk)
            status = await proc.wait()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.exit_code == 0
    assert received == total
    assert peak < 32 * 1024 * 1024


@pytest.mark.anyio
async def test_leaving_a_stream_with_unread_output_ends_it_without_waiting_out_the_grace(
    conn: Connection,
) -> None:
    """Leaving a stream whose large output was never read ends the command well before
    the 5 s TERM grace, and the connection stays usable."""
    marker = f"{500 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    start = anyio.current_time()
    async with conn.stream(f"head -c 50000000 /dev/zero; sleep {marker}"):
        await anyio.sleep(0.2)
    assert anyio.current_time() - start < 4
    await _wait_far_side(conn, f"sleep {marker}", running=False)
    assert (await conn.run("echo ok")).stdout == b"ok\n"


@pytest.mark.slow
@pytest.mark.anyio
async def test_one_gigabyte_of_output_does_not_grow_memory(conn: Connection) -> None:
    """A command printing 1 GB, read as it comes, leaves this process's RSS nearly unchanged."""
    total = 1024 * 1024 * 1024
    received = 0
    before = _rss()
    peak = before
    async with conn.stream(f"head -c {total} /dev/zero") as proc:
        async for chunk in proc.stdout:
            received += len(chunk)
            if received % (64 * 1024 * 1024) < len(chunk):
                peak = max(peak, _rss())
        status = await proc.wait()
    assert (status.exit_code, received) == (0, total)
    assert peak - before < 64 * 1024 * 1024


def _rss() -> int:
    """This process's resident set size in bytes, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def _far_side_pids(conn: Connection, marker: str) -> list[str]:
    # "[s]leep" matches "sleep" but not the command line of this pgrep (or of
    # the shell running it), which holds the pattern itself.
    result = await conn.run(["pgrep", "-f", f"[{marker[0]}]{marker[1:]}"])
    return result.stdout.decode().split()


async def _wait_far_side(conn: Connection, marker: str, *, running: bool) -> None:
    with anyio.fail_after(10):
        while True:
            if bool(await _far_side_pids(conn, marker)) == running:
                return
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_cancelled_run_ends_the_far_side_process(conn: Connection) -> None:
    """Cancelling run() ends the command and its children on the far side."""
    marker = f"{300 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    with anyio.move_on_after(60) as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run, f"sleep {marker} & sleep {marker}; echo never")
            await _wait_far_side(conn, f"sleep {marker}", running=True)
            tg.cancel_scope.cancel()
    assert not outer.cancelled_caught
    await _wait_far_side(conn, f"sleep {marker}", running=False)


@pytest.mark.anyio
async def test_timeout_raises_and_ends_the_command(conn: Connection) -> None:
    """A command past its timeout raises CommandTimeout and is gone on the far side."""
    marker = f"{400 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    with pytest.raises(CommandTimeout):
        await conn.run(f"sleep {marker}", timeout=0.3)
    await _wait_far_side(conn, f"sleep {marker}", running=False)


@pytest.mark.anyio
async def test_file_transfer_both_ways(conn: Connection, tmp_path: Path) -> None:
    """upload() and download() move a file unchanged, checked by the far side's sha256sum."""
    data = os.urandom(2 * 1024 * 1024 + 17)
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    remote = f"/tmp/fleetkit-transfer-{uuid.uuid4().hex}"
    try:
        await conn.upload(local, remote)
        digest = await conn.run(["sha256sum", remote])
        assert digest.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
        back = tmp_path / "down.bin"
        await conn.download(remote, back)
        assert back.read_bytes() == data
    finally:
        await conn.run(["rm", "-f", remote])


@pytest.mark.anyio
async def test_transfer_and_tunnel_failures_are_connector_errors(
    conn: Connection, tmp_path: Path
) -> None:
    """A missing file on either side, or a tunnel to a closed port, raises ConnectorError
    and leaves the connection usable."""
    with pytest.raises(ConnectorError, match="file transfer failed"):
        await conn.upload(tmp_path / "missing", "/tmp/never")
    with pytest.raises(ConnectorError, match="file transfer failed"):
        await conn.download(f"/tmp/missing-{uuid.uuid4().hex}", tmp_path / "x")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(ConnectorError, match="tunnel"):
        await conn.open_tunnel(("127.0.0.1", closed_port))
    assert (await conn.run("true")).ok


@pytest.mark.anyio
async def test_tcp_tunnel_reaches_a_far_side_port(conn: Connection) -> None:
    """A tunnel to a TCP address on the far side carries bytes both ways."""
    async with _tcp_shout() as port:
        stream = await conn.open_tunnel(("127.0.0.1", port))
        async with stream:
            await stream.send(b"hello tunnel")
            assert await stream.receive() == b"HELLO TUNNEL"


@asynccontextmanager
async def _tcp_shout() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 answering each message upper-cased; yields its port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def shout(client: anyio.abc.SocketStream) -> None:
        async with client:
            async for chunk in client:
                await client.send(chunk.upper())

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, shout)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@asynccontextmanager
async def _unix_echo() -> AsyncIterator[anyio.Path]:
    """A unix socket server (reachable by the test login user) that answers each
    message reversed; yields the socket's path."""
    sockdir = anyio.Path(f"/tmp/fleetkit-sock-{uuid.uuid4().hex[:8]}")
    await sockdir.mkdir(mode=0o755)
    path = sockdir / "s.sock"
    try:
        listener = await anyio.create_unix_listener(str(path))
        await path.chmod(0o777)
        served = anyio.Event()

        async def echo(client: anyio.abc.SocketStream) -> None:
            async with client:
                async for chunk in client:
                    await client.send(chunk[::-1])
            served.set()

        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            yield path
            # Let the handler see EOF and close before stopping the server:
            # cancelling a unix stream's receive and closing it races on
            # asyncio (agronholm/anyio#1267).
            with anyio.fail_after(10):
                await served.wait()
            tg.cancel_scope.cancel()
    finally:
        await path.unlink(missing_ok=True)
        await sockdir.rmdir()


@pytest.mark.anyio
async def test_unix_socket_tunnel(conn: Connection) -> None:
    """A tunnel to a unix socket on the far side carries bytes both ways."""
    async with _unix_echo() as path:
        stream = await conn.open_tunnel(str(path))
        async with stream:
            await stream.send(b"abc")
            assert await stream.receive() == b"cba"


@pytest.mark.anyio
async def test_relative_unix_socket_is_taken_from_home_or_the_working_directory(
    conn: Connection,
) -> None:
    """A relative socket path is taken from the login user's HOME over SSH (sshd
    alone would use its own directory), from the working directory locally."""
    base = "$PWD" if isinstance(conn, LocalConnection) else "$HOME"
    start = (await conn.run(f'printf %s "{base}"')).stdout_text
    async with _unix_echo() as path:
        stream = await conn.open_tunnel(posixpath.relpath(path, start))
        async with stream:
            await stream.send(b"rel")
            assert await stream.receive() == b"ler"


@pytest.mark.anyio
async def test_forward_makes_a_far_unix_socket_dialable_here(conn: Connection) -> None:
    """forward() yields a local address that reaches the far side's socket, for
    clients that dial themselves; a forwarding socket sits in a directory only
    this user can enter and is gone after the block."""
    async with _unix_echo() as path:
        async with conn.forward(str(path)) as local:
            assert isinstance(local, str)
            if local != str(path):
                mode = (await anyio.Path(local).parent.stat()).st_mode
                assert mode & 0o777 == 0o700
            for message in (b"one", b"two"):  # each dial is its own tunnel
                async with await anyio.connect_unix(local) as client:
                    await client.send(message)
                    assert await client.receive() == message[::-1]
        assert not await anyio.Path(local).exists() or local == str(path)


@pytest.mark.anyio
async def test_forward_reaches_a_far_tcp_port(conn: Connection) -> None:
    """forward() of a TCP target carries a connection to that port on the far side."""
    async with _tcp_shout() as port, conn.forward(("127.0.0.1", port)) as local:
        if isinstance(local, str):
            client: anyio.abc.SocketStream = await anyio.connect_unix(local)
        else:
            client = await anyio.connect_tcp(*local)
        async with client:
            await client.send(b"tcp")
            assert await client.receive() == b"TCP"
