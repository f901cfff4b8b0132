"""A scripted connector for tests of code that uses a connector.

:class:`FakeConnector` implements :class:`fleetkit.connector.Connector` without
any network: commands answer from a script of ``(pattern, result)`` rules, every
call is recorded, and delays run in anyio time, so a test under trio's
``MockClock`` exercises timeouts in no real time::

    fake = FakeConnector()
    fake.on(r"cloud-init status", CommandResult(0, b"status: done\\n", b""))
    fake.on(r"^make", CommandResult(2, b"", b"error"), delay=30)
    fake.fail_connect("i-2", ConnectTimeout("i-2: no route"), times=2)
    ...
    assert [c.command for c in fake.calls] == ["cloud-init status --wait"]

Rules are tried newest first; the first whose regular expression is found in
the command line (an argument vector is joined with :func:`shlex.join`) and
whose ``instance_id`` matches answers. Unmatched commands get ``default``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import attrs

from fleetkit.connector import (
    Command,
    CommandResult,
    Connection,
    ExitStatus,
    RunningCommand,
    TunnelTarget,
    argv_or_line,
    check_env,
)
from fleetkit.connector._streams import ConnectionBase
from fleetkit.errors import CommandTimeout, ConnectorError
from fleetkit.model import ConnectInfo

__all__ = ["FakeCall", "FakeConnection", "FakeConnector"]

#: What a rule answers: a result, an error to raise, or a function of the call.
Answer = CommandResult | ConnectorError | Callable[["FakeCall"], CommandResult]


@attrs.frozen
class FakeCall:
    """One command a :class:`FakeConnector` was asked to run."""

    instance_id: str
    command: str
    env: Mapping[str, str] = attrs.field(factory=dict)
    stdin: bytes = b""
    timeout: float | None = None


@attrs.define
class _Rule:
    pattern: re.Pattern[str]
    answer: Answer
    instance_id: str | None
    delay: float
    times: int | None

    def matches(self, call: FakeCall) -> bool:
        if self.times == 0:
            return False
        if self.instance_id is not None and self.instance_id != call.instance_id:
            return False
        return self.pattern.search(call.command) is not None


class _BytesReceive(anyio.abc.ByteReceiveStream):
    def __init__(self, data: bytes, chunk: int = 65536) -> None:
        self._data = data
        self._chunk = chunk

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if not self._data:
            raise anyio.EndOfStream
        size = min(max_bytes, self._chunk)
        piece, self._data = self._data[:size], self._data[size:]
        return piece

    async def aclose(self) -> None:
        self._data = b""


class _BytesSend(anyio.abc.ByteSendStream):
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise anyio.ClosedResourceError
        self.data += item

    async def aclose(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class _FakeRunning:
    stdin: _BytesSend
    stdout: _BytesReceive
    stderr: _BytesReceive
    status: ExitStatus
    terminated: bool = False

    async def wait(self) -> ExitStatus:
        await anyio.lowlevel.checkpoint()
        return ExitStatus(None, "TERM") if self.terminated else self.status

    async def terminate(self) -> None:
        self.terminated = True


class FakeConnection(ConnectionBase):
    """A connection of a :class:`FakeConnector` to one instance."""

    def __init__(self, connector: FakeConnector, info: ConnectInfo) -> None:
        self._connector = connector
        self.info = info
        self.closed = False

    def __repr__(self) -> str:
        return f"<FakeConnection instance={self.info.id!r}>"

    @asynccontextmanager
    async def _stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        timeout: float | None,  # noqa: ASYNC109 - ends the command
    ) -> AsyncIterator[RunningCommand]:
        """Answer ``command`` from the script; output is given whole."""
        if self.closed:
            raise anyio.ClosedResourceError
        where = f"instance {self.info.id}"
        normal = argv_or_line(command, where=where)
        line = normal if isinstance(normal, str) else shlex.join(normal)
        call = FakeCall(self.info.id, line, check_env(env, where=where), b"", timeout)
        result = await self._connector._answer(call)
        running = _FakeRunning(
            stdin=_BytesSend(),
            stdout=_BytesReceive(result.stdout),
            stderr=_BytesReceive(result.stderr),
            status=ExitStatus(result.exit_code, result.signal),
        )
        try:
            yield running
        finally:
            self._connector.calls.append(attrs.evolve(call, stdin=bytes(running.stdin.data)))

    async def upload(self, local: Path, remote: str) -> None:
        """Record the file's bytes under ``(instance id, remote)`` in ``files``."""
        data = await anyio.Path(local).read_bytes()
        self._connector.files[(self.info.id, remote)] = data

    async def download(self, remote: str, local: Path) -> None:
        """Write the bytes recorded (or put) under ``(instance id, remote)``."""
        try:
            data = self._connector.files[(self.info.id, remote)]
        except KeyError:
            raise ConnectorError(f"instance {self.info.id}: no file {remote}") from None
        await anyio.Path(local).write_bytes(data)

    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        """A stream from the factory given to :meth:`FakeConnector.on_tunnel`."""
        factory = self._connector.tunnels.get(target)
        if factory is None:
            raise ConnectorError(f"instance {self.info.id}: no tunnel scripted to {target!r}")
        return await factory()

    async def aclose(self) -> None:
        """Refuse further commands."""
        self.closed = True


class FakeConnector:
    """A connector answering from a script; see the module docstring."""

    def __init__(self, *, default: CommandResult | None = None) -> None:
        self.default = default if default is not None else CommandResult(0, b"", b"")
        self.calls: list[FakeCall] = []
        self.connects: list[str] = []
        self.vias: dict[str, Connection] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.tunnels: dict[TunnelTarget, Callable[[], Awaitable[anyio.abc.ByteStream]]] = {}
        self._rules: list[_Rule] = []
        self._connect_errors: dict[str, list[ConnectorError]] = {}

    def __repr__(self) -> str:
        return f"<FakeConnector rules={len(self._rules)} calls={len(self.calls)}>"

    def on(
        self,
        pattern: str,
        answer: Answer,
        *,
        instance_id: str | None = None,
        delay: float = 0.0,
        times: int | None = None,
    ) -> None:
        """Answer commands matching ``pattern`` (a regular expression searched in
        the command line) with ``answer`` after ``delay`` seconds of anyio time,
        at most ``times`` times (None: always)."""
        self._rules.insert(0, _Rule(re.compile(pattern), answer, instance_id, delay, times))

    def fail_connect(self, instance_id: str, error: ConnectorError, *, times: int = 1) -> None:
        """Make the next ``times`` connects to ``instance_id`` raise ``error``."""
        self._connect_errors.setdefault(instance_id, []).extend([error] * times)

    def on_tunnel(
        self, target: TunnelTarget, factory: Callable[[], Awaitable[anyio.abc.ByteStream]]
    ) -> None:
        """Make ``open_tunnel(target)`` return what ``factory`` gives."""
        self.tunnels[target] = factory

    def commands(self, instance_id: str | None = None) -> list[str]:
        """The command lines run so far, optionally for one instance only."""
        return [c.command for c in self.calls if instance_id in (None, c.instance_id)]

    def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AbstractAsyncContextManager[FakeConnection]:
        """A fake connection to ``info``'s instance (or a scripted connect error).
        ``via`` is recorded in :attr:`vias` (instance id -> the connection it
        was dialled through) and otherwise not used."""
        return self._connect(info, via)

    @asynccontextmanager
    async def _connect(
        self, info: ConnectInfo, via: Connection | None
    ) -> AsyncIterator[FakeConnection]:
        await anyio.lowlevel.checkpoint()
        self.connects.append(info.id)
        if via is not None:
            self.vias[info.id] = via
        errors = self._connect_errors.get(info.id)
        if errors:
            raise errors.pop(0)
        connection = FakeConnection(self, info)
        try:
            yield connection
        finally:
            await connection.aclose()

    async def _answer(self, call: FakeCall) -> CommandResult:
        rule = next((r for r in self._rules if r.matches(call)), None)
        if rule is None:
            await anyio.lowlevel.checkpoint()
            return self.default
        if rule.times is not None:
            rule.times -= 1
        if call.timeout is not None and rule.delay > call.timeout:
            await anyio.sleep(call.timeout)
            self.calls.append(call)
            raise CommandTimeout(
                f"instance {call.instance_id}: command ran longer than {call.timeout} s"
            )
        await anyio.sleep(rule.delay)
        answer = rule.answer
        if isinstance(answer, ConnectorError):
            self.calls.append(call)
            raise answer
        return answer if isinstance(answer, CommandResult) else answer(call)
