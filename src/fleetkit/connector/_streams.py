"""What every connection shares: running a command to its end on top of the
streaming form, and closing as an async context manager."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import anyio
import anyio.abc

from fleetkit._duration import Duration, DurationLike, optional_duration
from fleetkit._resource import AsyncResource
from fleetkit.connector import Command, CommandResult, RunningCommand, StderrMode, TunnelTarget
from fleetkit.connector._forward import forward_through
from fleetkit.connector._output import guarded, redirected
from fleetkit.errors import ConnectorError

__all__ = ["ConnectionBase", "communicate"]


class ConnectionBase(AsyncResource):
    """``run``, ``forward`` and ``async with`` on top of a subclass's ``stream``,
    ``open_tunnel`` and ``aclose``."""

    @abstractmethod
    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        """A stream to ``target``; see :meth:`fleetkit.connector.Connection.open_tunnel`."""

    def forward(self, target: TunnelTarget) -> AbstractAsyncContextManager[TunnelTarget]:
        """A private local unix socket leading to ``target``; see
        :meth:`fleetkit.connector.Connection.forward`."""
        return forward_through(self.open_tunnel, target, where=repr(self))

    @abstractmethod
    def _stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        timeout: Duration | None,
    ) -> AbstractAsyncContextManager[RunningCommand]:
        """Start ``command`` with the transport's own streams."""

    def stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        timeout: DurationLike | None = None,
        stderr: StderrMode = "pipe",
    ) -> AbstractAsyncContextManager[RunningCommand]:
        """Start ``command``; see :meth:`fleetkit.connector.Connection.stream`."""
        where = repr(self)
        seconds = optional_duration(timeout, f"{where}: stream.timeout", positive=True)
        command = redirected(command, stderr, where=f"{where}: stream")
        return guarded(self._stream(command, env=env, timeout=seconds))

    async def run(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        timeout: DurationLike | None = None,  # noqa: ASYNC109 - fixed public API; ends the command
        stderr: StderrMode = "pipe",
    ) -> CommandResult:
        """Run ``command`` to the end; see :meth:`fleetkit.connector.Connection.run`."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        async with self.stream(command, env=env, timeout=timeout, stderr=stderr) as proc:
            out, err = await communicate(proc, data)
            status = await proc.wait()
        return CommandResult(status.exit_code, out, err, status.signal)


async def communicate(proc: RunningCommand, stdin: bytes | None) -> tuple[bytes, bytes]:
    """Feed ``stdin`` (then EOF) and collect all output, concurrently: reading
    both streams at once keeps a command that fills one from blocking."""
    out, err = bytearray(), bytearray()

    async def collect(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
        async for chunk in stream:
            into += chunk

    async def feed() -> None:
        if stdin:
            # A command that exits without reading its input is not an error.
            with contextlib.suppress(
                ConnectorError, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                await proc.stdin.send(stdin)
        with contextlib.suppress(ConnectorError, anyio.BrokenResourceError):
            await proc.stdin.aclose()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, proc.stdout, out)
            tg.start_soon(collect, proc.stderr, err)
            tg.start_soon(feed)
    except BaseExceptionGroup as group:
        # The readers fail together when the connection breaks; callers catch
        # one ConnectorError, not a group of them.
        leaves = _leaves(group)
        if all(isinstance(leaf, ConnectorError) for leaf in leaves):
            raise leaves[0] from leaves[0].__cause__
        raise
    return bytes(out), bytes(err)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
