"""Both output streams of a command without the classic pipe deadlock.

A command writes stdout and stderr into two pipes (two SSH channel streams);
each has a bounded window, so a caller that reads only stdout of a command
that writes much to stderr waits for ever: the command is blocked on its full
stderr. Here each stream is pumped into a buffer of its own (``STREAM_BUFFER``
bytes). A full buffer holds its pump back (flow control, so a slow reader
slows the command instead of memory growing) *except* while the caller waits
on the other stream: then holding back could only deadlock, so what does not
fit is dropped and counted (``RunningCommand.dropped``). A caller that reads
both streams as they come (as ``run`` does) loses nothing.

``stderr="stdout"`` merges the two on the far side (``exec 2>&1``, so the
order is the command's own) and ``stderr="discard"`` sends stderr to
``/dev/null``; both are done by rewriting the command, the same way for every
connector.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import anyio.abc

from fleetkit.connector import (
    STREAM_BUFFER,
    Command,
    ExitStatus,
    RunningCommand,
    StderrMode,
    argv_or_line,
)
from fleetkit.errors import ConfigError, ConnectorError, Problem

__all__ = ["guarded", "redirected"]

_REDIRECT = {"stdout": "exec 2>&1", "discard": "exec 2>/dev/null"}


def redirected(command: Command, stderr: StderrMode, *, where: str) -> Command:
    """``command`` with its stderr merged or discarded as ``stderr`` says."""
    if stderr == "pipe":
        return command
    if stderr not in _REDIRECT:
        raise ConfigError(
            [Problem(f"{where}.stderr", f'expected "pipe", "stdout" or "discard", got {stderr!r}')]
        )
    normal = argv_or_line(command, where=where)
    if isinstance(normal, str):
        return f"{_REDIRECT[stderr]}\n{normal}"
    return ["/bin/sh", "-c", f'{_REDIRECT[stderr]}; exec "$@"', "sh", *normal]


class _Pair:
    """Wake-ups shared by the two buffers of one command."""

    def __init__(self) -> None:
        self.changed = anyio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class _Buffered(anyio.abc.ByteReceiveStream):
    """One output stream, pumped from the transport into a bounded buffer."""

    def __init__(self, source: anyio.abc.ByteReceiveStream, pair: _Pair, limit: int) -> None:
        self._source = source
        self._pair = pair
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._ended = False
        self._error: BaseException | None = None
        self.other: _Buffered | None = None
        self.waiting = False
        self.dropped = 0

    async def pump(self) -> None:
        try:
            async for chunk in self._source:
                while self._size >= self._limit:
                    other = self.other
                    if other is not None and other.waiting:
                        break
                    changed = self._pair.changed
                    await changed.wait()
                if self._size >= self._limit:
                    self.dropped += len(chunk)
                    continue
                self._chunks.append(chunk)
                self._size += len(chunk)
                self._pair.notify()
        except (ConnectorError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._error = exc
        finally:
            self._ended = True
            self._pair.notify()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._chunks:
            if self._ended:
                if isinstance(self._error, ConnectorError):
                    raise self._error
                raise anyio.EndOfStream
            changed = self._pair.changed
            self.waiting = True
            self._pair.notify()
            try:
                await changed.wait()
            finally:
                self.waiting = False
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._size -= len(chunk)
        self._pair.notify()
        return chunk

    async def aclose(self) -> None:
        self._chunks.clear()
        self._size = 0
        self._pair.notify()


class _Guarded:
    """A :class:`~fleetkit.connector.RunningCommand` whose output streams are buffered."""

    def __init__(self, raw: RunningCommand, limit: int) -> None:
        self._raw = raw
        pair = _Pair()
        self._stdout = _Buffered(raw.stdout, pair, limit)
        self._stderr = _Buffered(raw.stderr, pair, limit)
        self._stdout.other, self._stderr.other = self._stderr, self._stdout

    @property
    def stdin(self) -> anyio.abc.ByteSendStream:
        return self._raw.stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream:
        return self._stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream:
        return self._stderr

    @property
    def dropped(self) -> tuple[int, int]:
        """Bytes of (stdout, stderr) dropped while the caller waited on the other stream."""
        return self._stdout.dropped, self._stderr.dropped

    async def wait(self) -> ExitStatus:
        return await self._raw.wait()

    async def terminate(self) -> None:
        await self._raw.terminate()


@contextlib.asynccontextmanager
async def guarded(
    raw: AbstractAsyncContextManager[RunningCommand], limit: int = STREAM_BUFFER
) -> AsyncIterator[RunningCommand]:
    """Enter ``raw`` and give it back with both output streams pumped (see the module)."""
    async with raw as proc:
        running = _Guarded(proc, limit)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            tg.start_soon(running._stdout.pump)
            tg.start_soon(running._stderr.pump)
            yield running
        finally:
            tg.cancel_scope.cancel()
            # Not given the block's exception, which a task group would wrap
            # in an ExceptionGroup: it leaves the block as raised.
            await tg.__aexit__(None, None, None)
