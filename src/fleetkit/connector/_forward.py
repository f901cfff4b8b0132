"""A local unix socket that leads through a connection to a far-side target.

gRPC (and most clients) dial an address themselves and cannot be handed a
byte stream, so :func:`forward_through` listens on a unix socket on this
machine and carries each connection made to it over a fresh
``open_tunnel(target)`` of the connection. The socket lives in a directory
made by :func:`tempfile.mkdtemp` (mode 0700): other local users, who may be
hostile, can neither connect to it nor swap it, and no TCP port is opened on
either side (GitLab's nesting dialer makes the same promise).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

from fleetkit.connector import TunnelTarget
from fleetkit.errors import ConnectorError

__all__ = ["forward_through", "splice"]

log = logging.getLogger("fleetkit.connector")

_CHUNK = 64 * 1024
# How long closing a forward waits for connections already ending.
_SETTLE = 1.0

OpenTunnel = Callable[[TunnelTarget], Awaitable[anyio.abc.ByteStream]]


@asynccontextmanager
async def forward_through(
    open_tunnel: OpenTunnel, target: TunnelTarget, *, where: str
) -> AsyncIterator[str]:
    """Listen on a private unix socket whose connections ``open_tunnel``
    carries to ``target``; yield its path. ``where`` names the instance in logs."""
    directory = Path(await anyio.to_thread.run_sync(_private_directory))
    path = directory / "socket"
    try:
        listener = await anyio.create_unix_listener(path)
        carrying: set[anyio.abc.SocketStream] = set()
        async with listener, anyio.create_task_group() as tg:

            async def carry(client: anyio.abc.SocketStream) -> None:
                carrying.add(client)
                try:
                    async with client:
                        try:
                            far = await open_tunnel(target)
                        except ConnectorError as exc:
                            # The client sees its connection close; the reason is here.
                            log.warning("%s: forward to %r failed: %s", where, target, exc)
                            return
                        async with far:
                            await splice(client, far)
                finally:
                    carrying.discard(client)

            tg.start_soon(listener.serve, carry)
            try:
                yield str(path)
            finally:
                # Clients closed by now end their carriers by themselves: give
                # them a moment, since cancelling a unix stream's receive races
                # its close on asyncio (agronholm/anyio#1267).
                with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE):
                    while carrying:  # noqa: ASYNC110 - the carriers hold no event
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))


def _private_directory() -> str:
    return tempfile.mkdtemp(prefix="fleetkit-fwd-")


async def splice(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
    """Copy bytes both ways until both directions saw end of stream (or one
    side broke); a half-close is passed on as ``send_eof``."""

    async with anyio.create_task_group() as tg:

        async def copy(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
            try:
                async for chunk in source:
                    await sink.send(chunk)
                await sink.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectorError, OSError):
                # One side broke: the other direction has nowhere to go either.
                tg.cancel_scope.cancel()

        tg.start_soon(copy, a, b)
        await copy(b, a)
