"""The SSH connector: asyncssh against any OpenSSH server (extra ``ssh``).

::

    async with SSHConnector(dial_timeout=300) as ssh:      # or without ``async with``
        async with ssh.connect(info) as conn:
            result = await conn.run("cloud-init status --wait", timeout=600)

What it does, and why:

* **Dial with retries.** A booting instance refuses connections, drops them or
  has no sshd yet; the connector keeps dialling every ``retry_interval``
  seconds until the dial timeout (``ConnectInfo.timeout``, else
  ``dial_timeout``) and only then raises
  :class:`~fleetkit.errors.ConnectTimeout`. A connection sshd drops during a
  burst (``MaxStartups``) is one more retry, not a failure.
* **Address.** ``use_external_addr`` dials the external address, falling back
  to the internal one when an instance has only that (and the other way
  round), as GitLab's connector does.
* **Host keys.** Checked against ``ConnectInfo.host_key`` when the provider
  supplies it, else pinned on first use per instance id; see
  :mod:`fleetkit.connector._hostkeys`. The choice is logged per dial.
* **Pooling.** Connections are shared per instance: up to ``max_sessions``
  concurrent commands per SSH connection (OpenSSH's ``MaxSessions``), another
  connection beyond that; connections idle for ``idle_timeout`` close (checked
  on each use, and by a background task while the connector is entered with
  ``async with``). A pooled connection serves only callers that supplied the
  same ``ConnectInfo.host_key`` (or none) as the one that dialled it: a
  connection checked against one key is never handed to a caller expecting
  another. Keepalive (``ConnectInfo.keepalive``, else ``keepalive``) notices
  a dead server: its connection is dropped, new work dials again, and
  commands that were running on it raise
  :class:`~fleetkit.errors.ConnectionLost`.
* **Commands** run in a small POSIX shell wrapper (:mod:`fleetkit.connector._quote`)
  so arguments and environment pass without shell injection and ending a
  command ends everything it started.

asyncssh runs on asyncio only: use this connector under anyio's asyncio
backend. asyncssh's exceptions are translated here and never escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import posixpath
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import anyio
import anyio.abc
import asyncssh
import attrs

from fleetkit._duration import DurationLike, duration
from fleetkit._files import MAX_KEY_BYTES, read_bounded
from fleetkit.connector import (
    Command,
    ExitStatus,
    RunningCommand,
    TunnelTarget,
    argv_or_line,
    check_env,
)
from fleetkit.connector._hostkeys import HostKeyStore, normalise_key
from fleetkit.connector._pool import Link, Pool
from fleetkit.connector._quote import env_header, remote_script
from fleetkit.connector._streams import ConnectionBase
from fleetkit.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ConfigError,
    ConnectionLost,
    ConnectorError,
    ConnectTimeout,
    HostKeyMismatch,
    Problem,
    UnsupportedEventLoop,
)
from fleetkit.model import ConnectInfo

if TYPE_CHECKING:
    from fleetkit.connector import Connection, Connector

__all__ = ["SSHConnection", "SSHConnector"]

log = logging.getLogger("fleetkit.connector.ssh")

_CHUNK = 64 * 1024
# How long a cancelled or timed-out command gets to end after TERM before its
# channel is closed regardless.
_TERM_GRACE = 5.0

_Conn = asyncssh.SSHClientConnection
_T = TypeVar("_T")
# (instance id, address, port, login user, the host key the caller supplied):
# a connection is shared only by callers who asked for the same server key, so
# one checked against one pin never serves a caller who passed another.
_PoolKey = tuple[str, str, int, str, str | None]


def _seconds(value: float | None, default: float) -> float:
    return float(value) if value is not None else default


@contextlib.contextmanager
def _translate(instance_id: str) -> Iterator[None]:
    """asyncssh's failures on an established connection, as fleetkit errors."""
    try:
        yield
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionLost(f"instance {instance_id}: channel refused: {exc.reason}") from exc
    except (asyncssh.Error, BrokenPipeError, ConnectionError) as exc:
        raise ConnectionLost(f"instance {instance_id}: connection lost ({exc})") from exc


class _ReadStream(anyio.abc.ByteReceiveStream):
    """An asyncssh reader as an anyio byte stream; reads at most one chunk
    at a time, so asyncssh's flow control bounds what is buffered."""

    def __init__(self, reader: asyncssh.SSHReader[bytes], instance_id: str) -> None:
        self._reader = reader
        self._id = instance_id

    async def receive(self, max_bytes: int = _CHUNK) -> bytes:
        with _translate(self._id):
            data = await self._reader.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        pass


class _WriteStream(anyio.abc.ByteSendStream):
    """An asyncssh writer as an anyio byte stream; ``aclose`` sends EOF."""

    def __init__(self, writer: asyncssh.SSHWriter[bytes], instance_id: str) -> None:
        self._writer = writer
        self._id = instance_id
        self._closed = False

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        with _translate(self._id):
            self._writer.write(item)
            await self._writer.drain()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(asyncssh.Error, OSError):
            if not self._writer.is_closing():
                self._writer.write_eof()


class _Tunnel(anyio.abc.ByteStream):
    """A direct TCP or unix-socket channel as an anyio byte stream."""

    def __init__(
        self,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
        instance_id: str,
        on_close: contextlib.AsyncExitStack,
    ) -> None:
        self._recv = _ReadStream(reader, instance_id)
        self._send = _WriteStream(writer, instance_id)
        self._writer = writer
        self._on_close = on_close

    async def receive(self, max_bytes: int = _CHUNK) -> bytes:
        return await self._recv.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            self._writer.close()
            await self._on_close.aclose()


@attrs.frozen
class _Route:
    """How a dial reaches its server: directly, inside an SSH connection's
    channel (``tunnel``), or through a local forward (``local``: a unix
    socket path, or the ``(host, port)`` this machine reaches itself)."""

    tunnel: _Conn | None = None
    local: TunnelTarget | None = None

    def socket(self) -> socket.socket | None:
        """A fresh connected socket for one dial through a unix-socket forward."""
        if not isinstance(self.local, str):
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A local unix socket whose listener is up accepts at once.
            sock.connect(self.local)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock


@attrs.define(eq=False)
class _SSHRunning:
    """A command running over SSH (see :class:`fleetkit.connector.RunningCommand`)."""

    process: asyncssh.SSHClientProcess[bytes]
    instance_id: str
    conn: _Conn
    stdin: _WriteStream
    stdout: _ReadStream
    stderr: _ReadStream
    status: ExitStatus | None = None

    async def wait(self) -> ExitStatus:
        if self.status is None:
            with _translate(self.instance_id):
                await self.process.wait_closed()
            status = self.process.exit_status
            signal = self.process.exit_signal
            if signal is not None:
                self.status = ExitStatus(None, signal[0])
            elif status is not None and status >= 0:
                self.status = ExitStatus(status)
            else:
                raise ConnectionLost(
                    f"instance {self.instance_id}: connection lost while the command ran"
                )
        return self.status

    async def terminate(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self.process.send_signal("TERM")

    async def _end(self) -> None:
        """Make sure the remote command is gone, then close the channel."""
        with anyio.CancelScope(shield=True):
            # An exit status already received means the command is gone; its
            # unread output need not be drained before the channel closes.
            ended = self.process.exit_status is not None
            if self.status is None and not ended and not self.conn.is_closed():
                await self.terminate()
                # Output nobody reads would hold the channel open (the server
                # flushes it before reporting the exit), so discard it meanwhile.
                with anyio.move_on_after(_TERM_GRACE):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_discard, self.stdout)
                        tg.start_soon(_discard, self.stderr)
                        with contextlib.suppress(ConnectorError):
                            await self.wait()
            self.process.close()


async def _discard(stream: anyio.abc.ByteReceiveStream) -> None:
    with contextlib.suppress(ConnectorError):
        async for _chunk in stream:
            pass


if TYPE_CHECKING:
    _check_running: type[RunningCommand] = _SSHRunning


class SSHConnection(ConnectionBase):
    """A connection to one instance over pooled SSH connections.

    Made by :meth:`SSHConnector.connect`; implements
    :class:`fleetkit.connector.Connection`.
    """

    def __init__(self, info: ConnectInfo, pool: Pool[_Conn], running: set[_SSHRunning]) -> None:
        self._info = info
        self._running = running
        self._pool = pool
        self._hold: Link[_Conn] | None = None
        self._closed = False
        self._login: str | None = None

    def __repr__(self) -> str:
        return f"<SSHConnection instance={self._info.id!r} closed={self._closed}>"

    async def _open(self) -> None:
        self._hold = await self._pool.acquire_hold()

    async def _tunnel_conn(self) -> _Conn:
        """The live SSH connection this one holds, to tunnel another through."""
        if self._closed or self._hold is None:
            raise anyio.ClosedResourceError
        if self._hold.conn.is_closed():
            raise ConnectionLost(f"instance {self._info.id}: connection lost")
        return self._hold.conn

    async def aclose(self) -> None:
        """Let go of the pooled connection (it stays pooled for reuse)."""
        if self._closed:
            return
        self._closed = True
        if self._hold is not None:
            self._pool.release_hold(self._hold)
            self._hold = None

    async def _open_session(
        self, open_: Callable[[_Conn], Awaitable[_T]]
    ) -> tuple[Link[_Conn], _T]:
        """Take a session slot and open a channel on it with ``open_``; the
        caller releases the slot.

        Nothing has run yet when opening fails, so two failures are retried on
        another connection: a pooled connection found closed (the server went
        away since its last use: the pool drops it and dials afresh), and a
        refused channel on a live connection, which means the server carries
        fewer sessions than assumed (``MaxSessions`` below 10; that
        connection's limit is lowered)."""
        if self._closed:
            raise anyio.ClosedResourceError
        last: BaseException | None = None
        # Each failure lowers a limit or drops a connection, so a few attempts
        # suffice even when a burst meets several fresh connections at once.
        for _attempt in range(10):
            link = await self._pool.acquire_session()
            try:
                return link, await open_(link.conn)
            except (asyncssh.Error, OSError) as exc:
                self._pool.release_session(link)
                last = exc
                if link.conn.is_closed():
                    log.info("instance %s: pooled connection was closed; redialling", self._info.id)
                elif isinstance(exc, asyncssh.ChannelOpenError):
                    log.info(
                        "instance %s: server refused session %d; lowering the limit",
                        self._info.id,
                        link.sessions + 1,
                    )
                    self._pool.refused(link)
                else:
                    raise ConnectionLost(
                        f"instance {self._info.id}: could not open a session ({_describe(exc)})"
                    ) from exc
            except BaseException:
                self._pool.release_session(link)
                raise
        raise ConnectionLost(
            f"instance {self._info.id}: no session could be opened ({_describe(last)})"
        ) from last

    @asynccontextmanager
    async def _stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        timeout: float | None,  # noqa: ASYNC109 - ends the command
    ) -> AsyncIterator[RunningCommand]:
        """Start ``command`` with the transport's streams; see
        :meth:`fleetkit.connector.Connection.stream`."""
        where = f"instance {self._info.id}"
        variables = check_env(env, where=where)
        script = remote_script(argv_or_line(command, where=where), variables)
        header = env_header(variables)
        deadline = anyio.current_time() + timeout if timeout is not None else float("inf")
        timed_out = CommandTimeout(f"{where}: command ran longer than {timeout} and was ended")
        # The timeout covers waiting for a session too (a dial, a busy pool).
        with anyio.CancelScope(deadline=deadline) as opening:
            link, process = await self._open_session(
                lambda conn: conn.create_process(script, encoding=None)
            )
        if opening.cancelled_caught:
            raise timed_out
        running = _SSHRunning(
            process=process,
            instance_id=self._info.id,
            conn=link.conn,
            stdin=_WriteStream(process.stdin, self._info.id),
            stdout=_ReadStream(process.stdout, self._info.id),
            stderr=_ReadStream(process.stderr, self._info.id),
        )
        self._running.add(running)
        try:
            if header:
                # Read by the script before the command starts; see _quote.
                with _translate(self._info.id):
                    process.stdin.write(header)
            with anyio.CancelScope(deadline=deadline) as scope:
                yield running
        finally:
            try:
                await running._end()
            finally:
                self._running.discard(running)
                self._pool.release_session(link)
        if scope.cancelled_caught:
            raise timed_out

    async def upload(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` on the instance over SFTP."""
        async with self._sftp() as sftp:
            await sftp.put(str(local), remote)

    async def download(self, remote: str, local: Path) -> None:
        """Copy ``remote`` on the instance to ``local`` over SFTP."""
        async with self._sftp() as sftp:
            await sftp.get(remote, str(local))

    @asynccontextmanager
    async def _sftp(self) -> AsyncIterator[asyncssh.SFTPClient]:
        link, sftp = await self._open_session(lambda conn: conn.start_sftp_client())
        try:
            with _translate(self._info.id):
                try:
                    yield sftp
                except asyncssh.SFTPError as exc:
                    raise ConnectorError(
                        f"instance {self._info.id}: file transfer failed: {exc.reason}"
                    ) from exc
                except OSError as exc:
                    if isinstance(exc, ConnectionError):
                        raise
                    # The local side of the copy: a missing or unwritable file.
                    raise ConnectorError(
                        f"instance {self._info.id}: file transfer failed: "
                        f"{exc.strerror}: {exc.filename}"
                    ) from exc
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(asyncssh.Error, OSError):
                    sftp.exit()
                    await sftp.wait_closed()
                self._pool.release_session(link)

    async def _login_dir(self) -> str:
        if self._login is None:
            result = await self.run('printf %s "${HOME:-$PWD}"', timeout=_TERM_GRACE * 6)
            if not result.ok or not result.stdout_text.startswith("/"):
                raise ConnectorError(
                    f"instance {self._info.id}: could not read the login directory"
                )
            self._login = result.stdout_text
        return self._login

    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        """A stream to ``target`` as the instance sees it (direct-tcpip or
        direct-streamlocal channel); closing it frees the pooled connection.

        sshd would resolve a relative socket path against its own working
        directory, which no client knows; the login user's home directory
        (``$HOME`` on the far side) is used instead, as the local connector
        uses its working directory."""
        if isinstance(target, str) and not target.startswith("/"):
            target = posixpath.normpath(posixpath.join(await self._login_dir(), target))
        link = await self._pool.acquire_hold()
        stack = contextlib.AsyncExitStack()
        stack.callback(self._pool.release_hold, link)
        try:
            with _translate(self._info.id):
                try:
                    if isinstance(target, str):
                        reader, writer = await link.conn.open_unix_connection(target)
                    else:
                        reader, writer = await link.conn.open_connection(*target)
                except asyncssh.ChannelOpenError as exc:
                    if link.conn.is_closed():
                        raise
                    # The far side could not reach the target: the connection
                    # itself is fine.
                    raise ConnectorError(
                        f"instance {self._info.id}: tunnel to {target!r} refused: {exc.reason}"
                    ) from exc
        except BaseException:
            await stack.aclose()
            raise
        return _Tunnel(reader, writer, self._info.id, stack)

    @asynccontextmanager
    async def forward(self, target: TunnelTarget) -> AsyncIterator[TunnelTarget]:
        """A private local unix socket leading to ``target``; see
        :meth:`fleetkit.connector.Connection.forward`.

        asyncssh's own local forwarding carries the connections (on asyncio
        transports, one channel each) over the held pooled connection."""
        if isinstance(target, str) and not target.startswith("/"):
            target = posixpath.normpath(posixpath.join(await self._login_dir(), target))
        link = await self._pool.acquire_hold()
        try:
            with _private_socket_path() as path:
                with _translate(self._info.id):
                    if isinstance(target, str):
                        listener = await link.conn.forward_local_path(path, target)
                    else:
                        listener = await link.conn.forward_local_path_to_port(path, *target)
                try:
                    yield path
                finally:
                    with anyio.CancelScope(shield=True):
                        listener.close()
                        with anyio.move_on_after(_TERM_GRACE):
                            await listener.wait_closed()
        finally:
            self._pool.release_hold(link)


@contextlib.contextmanager
def _private_socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="fleetkit-fwd-")
    try:
        yield os.path.join(directory, "socket")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class SSHConnector:
    """Connects to instances over SSH; see the module docstring for behaviour.

    ``dial_timeout`` (s) applies when ``ConnectInfo.timeout`` is unset;
    ``keepalive`` (s) when ``ConnectInfo.keepalive`` is unset. ``key_path`` is
    a private key file used when ``ConnectInfo.key`` is unset.
    ``known_hosts_path`` persists pinned host keys across restarts.
    """

    def __init__(
        self,
        *,
        dial_timeout: DurationLike = 60.0,
        retry_interval: DurationLike = 0.5,
        keepalive: DurationLike = 30.0,
        keepalive_count_max: int = 3,
        use_external_addr: bool = False,
        max_sessions: int = 10,
        idle_timeout: DurationLike = 60.0,
        username: str | None = None,
        key_path: Path | str | None = None,
        known_hosts_path: Path | str | None = None,
    ) -> None:
        # Checked here, naming the argument, rather than failing at the first dial.
        self.dial_timeout = duration(dial_timeout, "SSHConnector.dial_timeout")
        self.retry_interval = duration(retry_interval, "SSHConnector.retry_interval")
        self.keepalive = duration(keepalive, "SSHConnector.keepalive")
        self.idle_timeout = duration(idle_timeout, "SSHConnector.idle_timeout", positive=True)
        for name, value, least in (
            ("keepalive_count_max", keepalive_count_max, 1),
            ("max_sessions", max_sessions, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"SSHConnector.{name}: expected an integer, got {value!r}")
            if value < least:
                raise ConfigError([Problem(f"SSHConnector.{name}", f"must be >= {least}")])
        if not isinstance(use_external_addr, bool):
            raise TypeError("SSHConnector.use_external_addr: expected True or False")
        if username is not None and not isinstance(username, str):
            raise TypeError("SSHConnector.username: expected a string")
        self.keepalive_count_max = keepalive_count_max
        self.use_external_addr = use_external_addr
        self.max_sessions = max_sessions
        self.username = username
        self.key_path = Path(key_path) if key_path is not None else None
        self.host_keys = HostKeyStore(Path(known_hosts_path) if known_hosts_path else None)
        self._pools: dict[_PoolKey, Pool[_Conn]] = {}
        # Commands in progress: closing a connection under them would leave
        # them running on the far side, so closing TERMs them first.
        self._running: set[_SSHRunning] = set()
        self._reaper: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<SSHConnector pools={len(self._pools)} max_sessions={self.max_sessions}>"

    @asynccontextmanager
    async def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AsyncIterator[SSHConnection]:
        """A connection to ``info``'s instance; dials (or reuses a pooled
        connection) on entry. See :class:`fleetkit.connector.Connector`.

        With ``via``: over an :class:`SSHConnection`, SSH runs inside one of its
        direct-tcpip channels (asyncssh's ``tunnel``); over any other
        connection, through its :meth:`~fleetkit.connector.Connection.forward`.
        The connections dialled through ``via`` are this block's own and are
        closed when it ends."""
        _require_asyncio()
        if via is None:
            connection = SSHConnection(info, self._pool_for(info), self._running)
            await connection._open()
            try:
                yield connection
            finally:
                await connection.aclose()
            return
        address, username = self._target(info)
        async with contextlib.AsyncExitStack() as stack:
            route = await self._route(via, address, info.port, stack)

            async def dial() -> _Conn:
                return await self._dial(info, address, username, route=route)

            pool = self._new_pool(dial)
            stack.push_async_callback(pool.aclose)
            connection = SSHConnection(info, pool, self._running)
            await connection._open()
            try:
                yield connection
            finally:
                with anyio.CancelScope(shield=True):
                    await connection.aclose()
                    await self._terminate_running({link.conn for link in pool.links})

    async def _route(
        self, via: Connection, address: str, port: int, stack: contextlib.AsyncExitStack
    ) -> _Route:
        """How each dial through ``via`` reaches ``address:port``."""
        if isinstance(via, SSHConnection):
            return _Route(tunnel=await via._tunnel_conn())
        local = await stack.enter_async_context(via.forward((address, port)))
        return _Route(local=local)

    def _target(self, info: ConnectInfo) -> tuple[str, str]:
        try:
            address = info.address(use_external=self.use_external_addr)
        except ValueError as exc:
            raise ConfigError([Problem(f"instance {info.id}", "has no address to dial")]) from exc
        return address, info.username or self.username or getpass.getuser()

    def _new_pool(self, dial: Callable[[], Awaitable[_Conn]]) -> Pool[_Conn]:
        return Pool(
            dial=dial,
            is_closed=lambda conn: conn.is_closed(),
            close=_close_conn,
            limit=self.max_sessions,
            idle_timeout=self.idle_timeout,
        )

    def _pool_for(self, info: ConnectInfo) -> Pool[_Conn]:
        address, username = self._target(info)
        key = (info.id, address, info.port, username, _supplied_key(info))
        pool = self._pools.get(key)
        if pool is None:

            async def dial() -> _Conn:
                return await self._dial(info, address, username)

            pool = self._pools[key] = self._new_pool(dial)
        return pool

    def _credentials(self, info: ConnectInfo) -> dict[str, object]:
        where = f"instance {info.id}"
        key_bytes = info.key
        if key_bytes is None and self.key_path is not None:
            try:
                key_bytes = read_bounded(self.key_path, MAX_KEY_BYTES)
            except OSError as exc:
                raise ConfigError(
                    [Problem(f"{where}.key_path", f"cannot read {self.key_path}: {exc.strerror}")]
                ) from None
        options: dict[str, object] = {"client_keys": None, "password": info.password}
        if key_bytes is not None:
            try:
                options["client_keys"] = [asyncssh.import_private_key(key_bytes)]
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigError(
                    [Problem(f"{where}.key", "expected an unencrypted OpenSSH or PEM private key")]
                ) from exc
        if key_bytes is None and info.password is None:
            raise ConfigError([Problem(where, "expected a key, a key_path or a password")])
        return options

    def _known_hosts(self, info: ConnectInfo) -> object:
        expected = self.host_keys.expected(info)
        if expected is None:
            log.info("instance %s: no host key known; pinning the first one seen", info.id)
            return None
        source = "supplied by the provider" if info.host_key else "pinned on first use"
        log.debug("instance %s: checking host key %s", info.id, source)
        return ([asyncssh.import_public_key(expected)], [], [])

    async def _dial(
        self, info: ConnectInfo, address: str, username: str, *, route: _Route | None = None
    ) -> _Conn:
        where = f"instance {info.id}"
        route = route or _Route()
        # Through a local connection's forward, the target is dialled as is.
        host, port = route.local if isinstance(route.local, tuple) else (address, info.port)
        timeout = _seconds(info.timeout, self.dial_timeout)
        keepalive = _seconds(info.keepalive, self.keepalive)
        credentials = self._credentials(info)
        known_hosts = self._known_hosts(info)
        deadline = anyio.current_time() + timeout
        attempt = 0
        last: BaseException | None = None
        while True:
            attempt += 1
            remaining = deadline - anyio.current_time()
            if remaining <= 0 and attempt > 1:
                raise ConnectTimeout(
                    f"{where}: no SSH connection to {address}:{info.port} within {timeout:g} s "
                    f"({attempt - 1} attempts; last: {_describe(last)})"
                ) from last
            if route.tunnel is not None and route.tunnel.is_closed():
                raise ConnectionLost(f"{where}: the connection to dial through was lost")
            try:
                conn = await asyncssh.connect(
                    host,
                    port,
                    tunnel=route.tunnel or (),
                    sock=route.socket(),
                    username=username,
                    known_hosts=known_hosts,
                    config=None,
                    agent_path=None,
                    # A zero dial timeout still gets one real attempt.
                    connect_timeout=remaining if remaining > 0 else 1.0,
                    keepalive_interval=keepalive,
                    keepalive_count_max=self.keepalive_count_max,
                    **credentials,
                )
            except asyncssh.PermissionDenied as exc:
                raise AuthenticationFailed(f"{where}: {username} was refused") from exc
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyMismatch(
                    f"{where}: the server at {address}:{info.port} presented a host key "
                    "other than the expected one"
                ) from exc
            except (OSError, asyncssh.Error, ConnectorError) as exc:
                # Refused, reset, dropped before the banner (MaxStartups), or
                # the attempt timed out: the instance may still be booting.
                # (Through a tunnel, a refused channel says the same.)
                last = exc
                log.debug("%s: dial attempt %d failed: %s", where, attempt, _describe(exc))
                await anyio.sleep(
                    min(self.retry_interval, max(0.0, deadline - anyio.current_time()))
                )
                continue
            break
        if known_hosts is None:
            server_key = conn.get_server_host_key()
            if server_key is not None:
                presented = normalise_key(server_key.export_public_key("openssh").decode())
                pinned = self.host_keys.pinned(info.id)
                # Another dial to this instance pinned a key meanwhile.
                if pinned is not None and pinned != presented:
                    await _close_conn(conn)
                    raise HostKeyMismatch(
                        f"{where}: the server at {address}:{info.port} presented a host key "
                        "other than the one pinned for this instance"
                    )
                self.host_keys.pin(info.id, presented)
        log.debug("%s: connected to %s:%d after %d attempts", where, address, info.port, attempt)
        return conn

    def open_connections(self, instance_id: str) -> int:
        """How many pooled SSH connections to ``instance_id`` are open now."""
        return sum(
            1
            for key, pool in self._pools.items()
            if key[0] == instance_id
            for link in pool.links
            if not link.conn.is_closed()
        )

    async def sweep(self) -> None:
        """Close idle pooled connections now (also done on each use), and forget
        instances with no connection left."""
        for key, pool in list(self._pools.items()):
            await pool.sweep()
            if not pool.links and self._pools.get(key) is pool:
                del self._pools[key]

    async def forget(self, instance_id: str) -> None:
        """Close the pooled connections to a deleted instance and drop its host
        key pin: the id will not come back, and nothing of it should linger."""
        with anyio.CancelScope(shield=True):
            for key in [key for key in self._pools if key[0] == instance_id]:
                pool = self._pools.pop(key)
                await self._terminate_running({link.conn for link in pool.links})
                await pool.aclose()
        self.host_keys.forget(instance_id)

    async def _terminate_running(self, conns: set[_Conn] | None = None) -> None:
        """TERM the commands in progress (on ``conns``, or all) before their
        connections close."""
        for running in list(self._running):
            if conns is None or running.conn in conns:
                await running.terminate()

    async def _reap(self) -> None:
        while True:
            await anyio.sleep(max(self.idle_timeout / 2, 0.05))
            await self.sweep()

    async def aclose(self) -> None:
        """Close every pooled connection, ending the commands still running on
        them (TERM) first."""
        with anyio.CancelScope(shield=True):
            await self._terminate_running()
            pools, self._pools = list(self._pools.values()), {}
            for pool in pools:
                await pool.aclose()

    def check_event_loop(self) -> None:
        """Raise :class:`~fleetkit.errors.UnsupportedEventLoop` unless running on
        asyncio (asyncssh's only loop); callers check once, at start."""
        _require_asyncio()

    async def __aenter__(self) -> Self:
        _require_asyncio()
        self._reaper = anyio.create_task_group()
        await self._reaper.__aenter__()
        self._reaper.start_soon(self._reap)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._reaper is not None:
                self._reaper.cancel_scope.cancel()
                # Not given the block's exception: a task group would wrap it
                # in an ExceptionGroup. It propagates as raised.
                await self._reaper.__aexit__(None, None, None)
                self._reaper = None
        finally:
            await self.aclose()


def _running_loop() -> str:
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "another event loop"


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = _running_loop()
        raise UnsupportedEventLoop(
            "SSHConnector needs anyio's asyncio backend (asyncssh runs on asyncio only), "
            f"but this runs on {running}: use anyio.run(..., backend='asyncio'), "
            "or a connector that runs on any backend (the local provider's "
            "use_sshd = false with LocalConnector)"
        ) from None


async def _close_conn(conn: _Conn) -> None:
    with anyio.CancelScope(shield=True):
        conn.close()
        with anyio.move_on_after(_TERM_GRACE):
            await conn.wait_closed()


def _supplied_key(info: ConnectInfo) -> str | None:
    """``info.host_key`` as compared for pooling (comment and spacing dropped)."""
    if not info.host_key:
        return None
    try:
        return normalise_key(info.host_key)
    except ValueError:
        # Refused at the dial; a pool of its own meanwhile.
        return info.host_key


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "none"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


if TYPE_CHECKING:
    _check_connector: type[Connector] = SSHConnector
    _check_connection: type[Connection] = SSHConnection
