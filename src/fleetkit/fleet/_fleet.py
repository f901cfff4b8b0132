"""The fleet runtime: taskscaler's job on anyio.

Theory of operation
-------------------
A :class:`Fleet` owns the instance table (:mod:`fleetkit.fleet._table`) and one
update loop (:mod:`fleetkit.fleet._loop`). Each pass of the loop (a *tick*):

1. polls the provider's ``update`` when due (every ``update_interval``, every
   ``update_interval_when_expecting`` while anything is in transition) and
   moves records through the lifecycle table (:mod:`fleetkit.fleet._polling`);
2. freezes the table into a :class:`~fleetkit.model.Snapshot` and asks the
   pure planner for a :class:`~fleetkit.planner.Plan`;
3. carries the plan out: assignments first (waiting acquisitions get their
   slots with no ``await`` between planning and granting), then removals, which
   are re-checked against the table *as it is now* and marked draining before
   any provider call, so a job that just landed is never killed; then
   ``decrease`` and ``increase`` (the latter through the scale throttle and the
   ready-up/increase failure backoff) (:mod:`fleetkit.fleet._scaling`);
4. sleeps until the earliest of: the next poll, the next idle expiry, the next
   policy change, a deletion retry, the end of a backoff, a heartbeat round, or
   a wake-up from ``acquire``/``release``/``reserve``/``set_schedule``.

Decide under no lock, then do the I/O (httpcore's pool): every provider call
happens after the table is updated, from the loop task or a ready-up task, one
call per verb at a time.

An acquisition that finds a free slot and nobody waiting ahead of it is granted
on the spot, without waiting for a tick (the same walk the planner uses: oldest
ready healthy instance, lowest slot), which is what makes acquire cheap on warm
capacity (:mod:`fleetkit.fleet._acquiring`).

Where the rest lives: the state every part shares, and the moves that keep it
consistent, in :mod:`fleetkit.fleet._runtime`; reconcile at start in
:mod:`fleetkit.fleet._reconcile`; ready-up and heartbeats in
:mod:`fleetkit.fleet._health`; shutdown in :mod:`fleetkit.fleet._shutdown`.
This class wires them together and is the public face.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetkit.connector import Connector
from fleetkit.errors import ConfigError, FleetError, NoCapacity, Problem
from fleetkit.fleet import _acquiring, _health, _loop, _shutdown
from fleetkit.fleet._clock import WallClock, anchored_wall_clock, loop_time
from fleetkit.fleet._events import FleetEvent
from fleetkit.fleet._reconcile import reconcile
from fleetkit.fleet._runtime import Runtime, log
from fleetkit.fleet._settings import FleetSettings
from fleetkit.fleet._slots import Acquisition, Slot
from fleetkit.fleet._stats import FleetStats, count_slots
from fleetkit.model import Limits, Snapshot
from fleetkit.planner import TokenBucket, can_reserve
from fleetkit.policy import Policy, Schedule
from fleetkit.provider import InstanceGroup, ProviderInfo

__all__ = ["Fleet"]


class Fleet:
    """An autoscaled fleet of instances handing out job slots.

    ``async with Fleet(group, limits, schedule) as fleet:`` initialises the
    provider, reconciles the instances it already has (adopting or removing
    each), and runs the update loop until the block ends; then it shuts down:
    it stops granting, waits for (or cancels) held slots, deletes the instances
    when ``settings.delete_instances_on_shutdown``, and only then calls the
    provider's ``shutdown``. Teardown is shielded from cancellation.

    ``schedule`` is a :class:`~fleetkit.policy.Schedule` or a single
    :class:`~fleetkit.policy.Policy`. ``connector`` runs
    ``instance_ready_command`` and heartbeats. ``wall_clock`` maps loop time to
    the datetime used for policy periods (default: now, running with the loop).
    """

    def __init__(
        self,
        group: InstanceGroup,
        limits: Limits,
        schedule: Schedule | Policy,
        *,
        connector: Connector | None = None,
        settings: FleetSettings | None = None,
        wall_clock: WallClock | None = None,
        name: str = "fleet",
    ) -> None:
        self.settings = settings or FleetSettings()
        if self.settings.instance_ready_command and connector is None:
            raise ConfigError(
                [Problem("instance_ready_command", "is set but the fleet has no connector")]
            )
        self.name = name
        self._rt = Runtime(
            group,
            limits,
            _as_schedule(schedule),
            connector=connector,
            settings=self.settings,
            wall_clock=wall_clock,
            name=name,
            slot_owner=self,
        )

    def __repr__(self) -> str:
        rt = self._rt
        counts: dict[str, int] = {}
        for record in rt.records.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return (
            f"Fleet({self.name!r}, instances={counts}, held={len(rt.held)}, "
            f"pending={len(rt.pending)}, reserved={len(rt.reservations)})"
        )

    # --- lifecycle of the fleet itself --------------------------------------

    async def __aenter__(self) -> Self:
        rt = self._rt
        if rt.open or rt.closing:
            raise FleetError(f"fleet {self.name!r} cannot be entered twice")
        rt.wake_event = anyio.Event()
        if rt.wall_clock is None:
            rt.wall_clock = anchored_wall_clock()
        try:
            if rt.store is not None:
                rt.store.open()  # first: a second fleet on this table stops here
            info = await rt.calls.init()
            rt.info = info
            if info.max_size and (
                not rt.limits.max_instances or info.max_size < rt.limits.max_instances
            ):
                # The group's own ceiling is a limit the planner must see.
                rt.limits = attrs.evolve(rt.limits, max_instances=info.max_size)
            now = loop_time()
            burst = self.settings.scale_throttle_burst or 0
            rt.bucket = TokenBucket.for_limits(
                self.settings.scale_throttle_limit, burst, rt.limits.max_instances, now
            )
            await reconcile(rt, now)
            rt.tg = anyio.create_task_group()
            await rt.tg.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await rt.calls.shutdown()
            if rt.store is not None:
                rt.store.close()
            raise
        rt.open = True
        _health.start_held_back_ready_ups(rt)
        rt.tg.start_soon(_loop.run, rt, name=f"fleet {self.name} update loop")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rt = self._rt
        try:
            with anyio.CancelScope(shield=True):
                await _shutdown.stop_granting(rt)
        finally:
            assert rt.tg is not None
            rt.tg.cancel_scope.cancel()
            try:
                await rt.tg.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    await _shutdown.teardown(rt)

    # --- what Acquisition and Slot call -------------------------------------
    # _acquire and _refresh hand back the coroutine rather than await it: one
    # coroutine frame less on every acquire, which is the hot path.

    def _acquire(self, key: str, wait: float | None) -> Coroutine[Any, Any, Slot]:
        return _acquiring.acquire(self._rt, key, wait)

    def _refresh(self, slot: Slot) -> Coroutine[Any, Any, None]:
        return _acquiring.refresh(self._rt, slot)

    def _release(self, slot: Slot) -> None:
        _acquiring.release(self._rt, slot)

    def _report_failure(self, slot: Slot) -> None:
        record = self._rt.records.get(slot.instance_id)
        if record is not None:
            _health.count_failure(self._rt, record, f"reported by {slot.key!r}")

    # --- public API ---------------------------------------------------------

    def acquire(self, key: str, *, timeout: float | None = None) -> Acquisition:
        """Hold a slot for ``key`` while the ``async with`` block runs.

        Waits up to ``timeout`` seconds (default ``settings.acquire_timeout``;
        ``math.inf`` waits for ever) for a slot on a ready, healthy instance,
        then raises :class:`~fleetkit.errors.AcquireTimeout`. A reservation
        under ``key`` is converted. If the instance is lost while the block
        runs, the block is cancelled and :class:`~fleetkit.errors.InstanceLost`
        is raised from it. The slot is released when the block ends.
        """
        return Acquisition(self, key, timeout)

    def reserve(self, key: str) -> None:
        """Reserve capacity for ``key`` (a job request in flight).

        Raises :class:`~fleetkit.errors.NoCapacity` when none can be had (in
        preemptive mode: no ready idle slot now) and
        :class:`~fleetkit.errors.FleetClosed` when shutting down.
        """
        rt = self._rt
        rt.check_open()
        if key in rt.reservations or key in rt.held or key in rt.pending:
            return
        now = loop_time()
        decision = can_reserve(
            rt.snapshot(),
            rt.policy_at(now),
            rt.limits,
            throttling=self.settings.reservation_throttling,
        )
        if not decision.granted:
            rt.book.task_operations["reserve_failure"] += 1
            raise NoCapacity(f"no capacity to reserve {key!r}: {decision.reason}")
        rt.reservations[key] = now
        rt.book.task_operations["reserve"] += 1
        rt.wake()

    def unreserve(self, key: str) -> None:
        """Drop the reservation of ``key`` (no job came); unknown keys are ignored."""
        if self._rt.reservations.pop(key, None) is not None:
            self._rt.book.task_operations["unreserve"] += 1
            self._rt.wake()

    def snapshot(self) -> Snapshot:
        """The fleet now, as the planner sees it."""
        return self._rt.snapshot()

    @property
    def limits(self) -> Limits:
        """The limits in force (``max_instances`` lowered to the group's size)."""
        return self._rt.limits

    @property
    def provider_info(self) -> ProviderInfo | None:
        """What the provider's ``init`` reported, once the fleet is open."""
        return self._rt.info

    def set_schedule(self, schedule: Schedule | Policy) -> None:
        """Apply new idle policies from the next tick on, without a restart."""
        self._rt.schedule = _as_schedule(schedule)
        log.info("policy schedule replaced", extra={"fleet": self.name})
        self._rt.wake()

    def events(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[FleetEvent]]:
        """Subscribe to the fleet's events: ``async with fleet.events() as stream``.

        The stream buffers ``max_buffer`` events; past that, events are dropped
        for this subscriber (and counted in ``stats().events_dropped``).
        """
        return self._subscribe(max_buffer)

    @asynccontextmanager
    async def _subscribe(
        self, max_buffer: int
    ) -> AsyncIterator[MemoryObjectReceiveStream[FleetEvent]]:
        async with self._rt.hub.subscribe(max_buffer) as stream:
            yield stream

    def stats(self) -> FleetStats:
        """The fleet's figures under GitLab's metric names (spec §5)."""
        rt = self._rt
        limits = rt.limits
        tasks, instances = count_slots(rt.records.values(), limits, len(rt.requested))
        tasks["pending"] = len(rt.pending)
        tasks["reserved"] = len(rt.reservations)
        book = rt.book
        return FleetStats(
            tasks=tasks,
            instances=instances,
            desired_instances=rt.desired,
            max_instances=limits.max_instances,
            capacity_per_instance=limits.capacity_per_instance,
            max_use_count=limits.max_use_count,
            task_operations=dict(book.task_operations),
            scale_operations=dict(book.scale_operations),
            instance_operations=dict(book.instance_operations),
            missed_updates=book.missed_updates,
            events_dropped=rt.hub.dropped,
            histograms=book.histograms(),
        )


def _as_schedule(schedule: Schedule | Policy) -> Schedule:
    return schedule if isinstance(schedule, Schedule) else Schedule([schedule])
