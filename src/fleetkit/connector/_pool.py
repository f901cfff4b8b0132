"""Sharing SSH connections between concurrent sessions, per instance.

One SSH connection carries at most ``limit`` sessions at a time (OpenSSH's
``MaxSessions``, 10 by default, refuses the 11th channel). The pool hands out a
session slot on a live connection with room, and dials another connection
when none has room. Dialling happens under the pool's lock, so a burst of
commands to one instance opens connections one after another instead of all at
once (a burst trips sshd's ``MaxStartups``, which drops connections at random).

A connection found closed (keepalive gave up, the server went away) is dropped
and new work dials afresh. A connection with no session and no other holder
for longer than ``idle_timeout`` is closed by :meth:`Pool.sweep`.

The pool is generic in the connection type: the SSH connector supplies ``dial``
and ``close`` and the pool keeps the bookkeeping, which a unit test can drive
without a network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import attrs

__all__ = ["Link", "Pool"]

C = TypeVar("C")


@attrs.define(eq=False)
class Link(Generic[C]):
    """One pooled connection and what holds it.

    ``sessions`` counts session channels (limited); ``holds`` counts other users
    that keep it open without a session (a tunnel, a ``Connection`` object).
    """

    conn: C
    limit: int
    sessions: int = 0
    holds: int = 0
    idle_since: float = 0.0

    @property
    def busy(self) -> bool:
        """Whether anything uses this connection now."""
        return self.sessions > 0 or self.holds > 0


@attrs.define(eq=False)
class Pool(Generic[C]):
    """The connections to one instance."""

    dial: Callable[[], Awaitable[C]]
    is_closed: Callable[[C], bool]
    close: Callable[[C], Awaitable[None]]
    limit: int = 10
    idle_timeout: float = 60.0
    links: list[Link[C]] = attrs.field(factory=list)
    _lock: anyio.Lock = attrs.field(factory=anyio.Lock)

    async def acquire_session(self) -> Link[C]:
        """A connection with a free session slot, dialling one if none has room;
        the slot is taken. Give it back with :meth:`release_session`."""
        async with self._lock:
            await self._sweep_locked()
            for link in self.links:
                if link.sessions < link.limit and not self.is_closed(link.conn):
                    link.sessions += 1
                    return link
            link = Link(await self.dial(), limit=self.limit, sessions=1)
            self.links.append(link)
            return link

    async def acquire_hold(self) -> Link[C]:
        """A live connection held open without a session slot (dialled if
        there is none). Give it back with :meth:`release_hold`."""
        async with self._lock:
            await self._sweep_locked()
            for link in self.links:
                if not self.is_closed(link.conn):
                    link.holds += 1
                    return link
            link = Link(await self.dial(), limit=self.limit, holds=1)
            self.links.append(link)
            return link

    def release_session(self, link: Link[C]) -> None:
        """Give back a session slot taken by :meth:`acquire_session`."""
        link.sessions -= 1
        if not link.busy:
            link.idle_since = anyio.current_time()

    def release_hold(self, link: Link[C]) -> None:
        """Give back a hold taken by :meth:`acquire_hold`."""
        link.holds -= 1
        if not link.busy:
            link.idle_since = anyio.current_time()

    def refused(self, link: Link[C]) -> None:
        """The server refused a session on ``link`` (after its slot was given
        back): it allows fewer sessions than assumed, so lower that
        connection's limit to what it carries now."""
        link.limit = max(1, link.sessions)

    async def sweep(self) -> None:
        """Drop closed connections and close idle ones."""
        async with self._lock:
            await self._sweep_locked()

    async def _sweep_locked(self) -> None:
        now = anyio.current_time()
        keep: list[Link[C]] = []
        expired: list[Link[C]] = []
        for link in self.links:
            if self.is_closed(link.conn) and not link.busy:
                continue
            if not link.busy and now - link.idle_since >= self.idle_timeout:
                expired.append(link)
            else:
                keep.append(link)
        self.links = keep
        for link in expired:
            await self.close(link.conn)

    async def aclose(self) -> None:
        """Close every connection."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                links, self.links = self.links, []
                for link in links:
                    await self.close(link.conn)
