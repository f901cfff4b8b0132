"""The handle an acquisition holds: which instance, which slot, how to reach it.

A :class:`Slot` is valid inside ``async with fleet.acquire(key) as slot``. When
its instance disappears, the fleet cancels the block (it then raises
:class:`~fleetkit.errors.InstanceLost`), sets :attr:`Slot.lost`, and cancels any
cancel scope the holder attached with :meth:`Slot.attach`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

import anyio

from fleetkit.errors import FleetError
from fleetkit.model import ConnectInfo

__all__ = ["Acquisition", "Slot", "SlotOwner"]


class SlotOwner(Protocol):
    """Who hears of a slot's :meth:`Slot.report_failure`."""

    def _report_failure(self, slot: Slot) -> None: ...


class _Source(Protocol):
    """What an :class:`Acquisition` needs of the fleet."""

    async def _acquire(self, key: str, wait: float | None) -> Slot: ...

    async def _refresh(self, slot: Slot) -> None: ...

    def _release(self, slot: Slot) -> None: ...


class Slot:
    """One acquired slot: ``key`` holds slot ``number`` of ``instance_id``.

    ``connect_info`` says how to reach the instance (its secrets are masked in
    every repr); a slot from ``fleet.acquire`` always has it, fetched from the
    provider before the block starts when the fleet had none yet.
    """

    __slots__ = (
        "_info",
        "_lost_error",
        "_lost_event",
        "_owner",
        "_scopes",
        "failed",
        "instance_id",
        "key",
        "number",
    )

    def __init__(
        self,
        owner: SlotOwner,
        key: str,
        instance_id: str,
        number: int,
        connect_info: ConnectInfo | None,
    ) -> None:
        self._owner = owner
        self.key = key
        self.instance_id = instance_id
        self.number = number
        self._info = connect_info
        self.failed = False
        self._lost_error: FleetError | None = None
        self._lost_event: anyio.Event | None = None
        self._scopes: list[anyio.CancelScope] = []

    def __repr__(self) -> str:
        lost = f", lost={self._lost_error}" if self._lost_error else ""
        return f"Slot({self.key!r} on {self.instance_id!r} slot {self.number}{lost})"

    @property
    def connect_info(self) -> ConnectInfo:
        """How to reach the instance (refreshed when its credentials expire)."""
        if self._info is None:
            raise FleetError(f"{self!r} has no connect info yet: use it inside fleet.acquire()")
        return self._info

    @connect_info.setter
    def connect_info(self, info: ConnectInfo) -> None:
        self._info = info

    @property
    def known_connect_info(self) -> ConnectInfo | None:
        """The connect info if the fleet has it (``None`` before ``acquire`` fetched it)."""
        return self._info

    @property
    def lost(self) -> anyio.Event:
        """Set when the instance under this slot is lost (or the fleet cancels it)."""
        if self._lost_event is None:
            self._lost_event = anyio.Event()
            if self._lost_error is not None:
                self._lost_event.set()
        return self._lost_event

    @property
    def is_lost(self) -> bool:
        """Whether the slot was lost (cheaper than :attr:`lost_error` for a test)."""
        return self._lost_error is not None

    @property
    def lost_error(self) -> FleetError | None:
        """Why the slot was lost, or ``None`` while it holds."""
        return self._lost_error

    def attach(self, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` when the slot is lost (at once if it already is)."""
        if self._lost_error is not None:
            scope.cancel()
        else:
            self._scopes.append(scope)

    def report_failure(self) -> None:
        """Tell the fleet the instance failed this holder (e.g. it could not connect).

        Counts toward the instance's ``failure_threshold``; past it the instance
        takes no new work and is removed once free.
        """
        if not self.failed:
            self.failed = True
            self._owner._report_failure(self)

    def _lose(self, error: FleetError) -> None:
        if self._lost_error is not None:
            return
        self._lost_error = error
        if self._lost_event is not None:
            self._lost_event.set()
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


class Acquisition:
    """``async with fleet.acquire(key) as slot``: the slot, its release, its loss.

    The block runs inside a cancel scope that the fleet cancels when the
    instance is lost; leaving the block then raises the slot's
    :attr:`Slot.lost_error`. The slot is released however the block ends.
    """

    __slots__ = ("_key", "_scope", "_slot", "_source", "_timeout")

    def __init__(self, source: _Source, key: str, timeout: float | None) -> None:
        self._source = source
        self._key = key
        self._timeout = timeout
        self._slot: Slot | None = None
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> Slot:
        source = self._source
        slot = await source._acquire(self._key, self._timeout)
        info = slot._info
        if info is None or info.expires_at is not None:
            # Only a missing connect info or short-lived credentials need a
            # look (no coroutine otherwise: this is the hot path).
            try:
                await source._refresh(slot)
            except BaseException:
                source._release(slot)
                raise
        self._slot = slot
        scope = self._scope = anyio.CancelScope()
        slot.attach(scope)
        scope.__enter__()
        return slot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Never swallows: the only cancel this scope catches is the fleet's for
        # a lost instance, which becomes the slot's lost_error. Typed ``None``
        # so that a `return` inside the block is seen as the function's end.
        assert self._slot is not None
        assert self._scope is not None
        slot = self._slot
        try:
            self._scope.__exit__(exc_type, exc, tb)
        finally:
            self._source._release(slot)
        lost = slot._lost_error
        if lost is not None and self._scope.cancelled_caught:
            raise lost
