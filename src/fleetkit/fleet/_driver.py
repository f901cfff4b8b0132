"""The fleet driver: performs what the fleet state decides.

Theory of operation
-------------------
:class:`Driver` owns everything with a clock or a socket: the provider (one
call per verb at a time, :mod:`fleetkit.fleet._calls`), the connector checks
(:mod:`fleetkit.fleet._probe`), the state store, the event hub, the task group
with the update loop and the ready-up and heartbeat tasks, the user-facing
:class:`~fleetkit.fleet.Slot` objects and the waiting acquisitions' events. It
changes no fleet state itself: it hands what happened to
:class:`~fleetkit.fleet._state.FleetState` with the loop time and carries out
the :class:`~fleetkit.fleet._state.Effects` that come back (:meth:`apply`),
httpcore's "decide, then do the I/O" (``connection_pool.py``).

The update loop (:meth:`run`): each tick polls the provider when due, lets the
state plan and carry the plan out, performs the ``decrease`` and ``increase``
it asks for, saves the table when it changed, then sleeps until the state's
next deadline, the next policy change (cron periods in their time zone), or a
wake-up from an acquisition, release, reservation, ready-up or schedule change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetkit._settings import FleetSettings
from fleetkit.connector import Connector
from fleetkit.errors import AcquireTimeout, FleetError, InstanceLost, ProviderError, Throttled
from fleetkit.fleet._calls import GroupCalls
from fleetkit.fleet._clock import WallClock, anchored_wall_clock, loop_clock, loop_time
from fleetkit.fleet._effects import WAKE_ONLY, Effects, Grant
from fleetkit.fleet._events import FleetEvent
from fleetkit.fleet._hub import EventHub
from fleetkit.fleet._probe import Probe, ReadyCheck
from fleetkit.fleet._slots import Slot
from fleetkit.fleet._state import FleetState
from fleetkit.fleet._state_store import StateStore
from fleetkit.model import Duration, Limits
from fleetkit.policy import Policy, Schedule
from fleetkit.provider import InstanceGroup

__all__ = ["Driver", "log"]

#: Every part of the runtime logs under the one name users configure.
log = logging.getLogger("fleetkit.fleet")


class _Waiter:
    """One acquisition waiting for a slot: ``slot`` or ``error``, then ``event``."""

    __slots__ = ("error", "event", "slot")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.slot: Slot | None = None
        self.error: FleetError | None = None


class Driver:
    """Runs one fleet: the state's effects, the loop, the tasks (module docstring)."""

    def __init__(
        self,
        group: InstanceGroup,
        limits: Limits,
        schedule: Schedule,
        *,
        connector: Connector | None,
        settings: FleetSettings,
        wall_clock: WallClock | None,
        name: str,
        ready_check: ReadyCheck | None = None,
    ) -> None:
        self.state = FleetState(limits, settings, name=name)
        self.settings = settings
        self.name = name
        self.schedule = schedule
        self.connector = connector
        self.wall_clock = wall_clock
        self.calls = GroupCalls(group, self.state.book.internal_operations)
        self.probe = Probe(self.calls, connector, self.wall_now, ready_check=ready_check)
        self.store = StateStore(settings.state_storage_dir) if settings.state_storage_dir else None
        self.hub = EventHub()
        self.slots: dict[str, Slot] = {}
        self.waiters: dict[str, _Waiter] = {}
        self.all_released: anyio.Event | None = None
        self.tg: TaskGroup | None = None
        self._backlog: list[str] = []
        self._wake_event: anyio.Event | None = None
        self._woken = False
        self._tick_cost = 0.0
        self._now = loop_time

    # --- time and policy ----------------------------------------------------

    def wall_now(self) -> datetime:
        """The fleet's wall-clock time now."""
        assert self.wall_clock is not None
        return self.wall_clock(loop_time())

    def policy_at(self, now: float) -> Policy:
        """The idle policy in force at loop time ``now``."""
        assert self.wall_clock is not None
        return self.schedule.active(self.wall_clock(now))

    # --- effects ------------------------------------------------------------

    def apply(self, fx: Effects) -> None:
        """Carry out ``fx``: logs, events, hand-outs, refusals, losses, tasks."""
        if fx is WAKE_ONLY:
            self.wake()
            return
        for line in fx.logs:
            log.log(line.level, line.message, *line.args, extra=dict(line.extra))
        if fx.events:
            hub = self.hub
            for event in fx.events:
                hub.publish(event)
        for grant in fx.grants:
            waiter = self.waiters.pop(grant.key, None)
            if waiter is not None:
                waiter.slot = self._hold(grant)
                waiter.event.set()
        for key, error in fx.refusals:
            waiter = self.waiters.pop(key, None)
            if waiter is not None:
                waiter.error = error
                waiter.event.set()
        for key, error in fx.losses:
            slot = self.slots.get(key)
            if slot is not None:
                slot._lose(error)
        for instance_id in fx.forgotten:
            self.probe.forget(instance_id)
        for instance_id in fx.ready_ups:
            self._start(self._ready_up, instance_id, f"ready-up {instance_id}")
        for instance_id in fx.heartbeats:
            self._start(self._heartbeat, instance_id, f"heartbeat {instance_id}")
        if fx.wake:
            self.wake()

    def _start(self, task: object, instance_id: str, name: str) -> None:
        if self.tg is None:
            # During reconcile the task group does not exist yet: ready-ups of
            # adopted instances start as soon as it does.
            self._backlog.append(instance_id)
            return
        self.tg.start_soon(task, instance_id, name=name)  # type: ignore[arg-type]

    def _hold(self, grant: Grant) -> Slot:
        slot = Slot(
            self,
            grant.key,
            grant.instance_id,
            grant.number,
            self.probe.cached(grant.instance_id),
        )
        self.slots[grant.key] = slot
        return slot

    def persist(self, *, force: bool = False) -> None:
        """Save the table to the state store when it changed (or when ``force``)."""
        if self.store is None:
            return
        table = self.state.take_table(force=force)
        if table is not None:
            # Written inline, not in a worker thread: the file is small, and a
            # thread would let a virtual clock (trio's MockClock) jump while it runs.
            self.store.save(table)

    @asynccontextmanager
    async def subscribe(
        self, max_buffer: int
    ) -> AsyncIterator[MemoryObjectReceiveStream[FleetEvent]]:
        """A stream of the fleet's events while the context is open."""
        try:
            async with self.hub.subscribe(max_buffer) as stream:
                self.state.publishing = True
                yield stream
        finally:
            # The state builds event values only while someone listens.
            self.state.publishing = self.hub.active

    def wake(self) -> None:
        """Have the update loop run a tick soon."""
        if self._woken:
            # Already woken since the loop last looked: the event is set, or the
            # loop sees the flag before it would wait.
            return
        self._woken = True
        if self._wake_event is not None:
            self._wake_event.set()

    # --- start --------------------------------------------------------------

    async def start(self) -> None:
        """``init`` the provider and reconcile the instances it already has;
        on failure the provider is shut down (shielded) before raising."""
        state = self.state
        if state.is_open or state.closing:
            raise FleetError(f"fleet {self.name!r} cannot be entered twice")
        self._wake_event = anyio.Event()
        self._now = loop_clock()
        if self.wall_clock is None:
            self.wall_clock = anchored_wall_clock()
        try:
            if self.store is not None:
                self.store.open()  # first: a second fleet on this table stops here
            info = await self.calls.init()
            self.probe.verb = "heartbeat" in info.capabilities
            state.begin(
                info,
                loop_time(),
                can_heartbeat=self.probe.verb or self.connector is not None,
            )
            stored = self.store.load() if self.store else {}
            statuses = await self.calls.update()
            self.apply(state.reconcile(statuses, stored, loop_time()))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.calls.shutdown()
            if self.store is not None:
                self.store.close()
            raise

    def run(self, tg: TaskGroup) -> None:
        """Start the update loop, and the ready-ups held back during reconcile, in ``tg``."""
        self.tg = tg
        backlog, self._backlog = self._backlog, []
        for instance_id in backlog:
            self._start(self._ready_up, instance_id, f"ready-up {instance_id}")
        tg.start_soon(self._loop, name=f"fleet {self.name} update loop")

    # --- the update loop ----------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._woken = False
            started = loop_time()
            delay = await self._tick()
            self._tick_cost = loop_time() - started
            if not self._woken:
                self._wake_event = anyio.Event()
                with anyio.move_on_after(max(delay, 0.0)):
                    await self._wake_event.wait()
            if self._woken:
                # A burst of acquires, releases or ready-ups is served by one tick:
                # a tick costs O(instances), and nothing urgent waits for it
                # (waiting acquisitions are served at release and at ready-up).
                # Waiting at least as long as the last tick took keeps the loop
                # under half of the CPU on a big fleet.
                await anyio.sleep(max(self.settings.wake_coalesce, self._tick_cost))

    async def _tick(self) -> float:
        state = self.state
        now = loop_time()
        if state.poll_due(now):
            await self._poll()
            now = loop_time()
        policy = self.policy_at(now)
        fx = state.tick(policy, now)
        self.apply(fx)
        if fx.decrease:
            await self._decrease(fx.decrease)
        if fx.increase:
            await self._increase(fx.increase)
        self.persist()
        now = loop_time()
        return self._next_wake(now, policy) - now

    async def _poll(self) -> None:
        try:
            statuses = await self.calls.update()
        except ProviderError as exc:
            self.apply(self.state.update_failed(str(exc), loop_time()))
            return
        self.apply(self.state.observe(statuses, loop_time()))

    async def _decrease(self, ids: list[str]) -> None:
        try:
            accepted = list(await self.calls.decrease(ids))
            error = None
        except ProviderError as exc:
            accepted, error = [], str(exc)
        self.apply(self.state.decrease_done(ids, accepted, error, loop_time()))

    async def _increase(self, count: int) -> None:
        try:
            accepted = await self.calls.increase(count)
        except ProviderError as exc:
            fx = self.state.increase_done(
                count, 0, str(exc), loop_time(), throttled=isinstance(exc, Throttled)
            )
        else:
            fx = self.state.increase_done(count, accepted, None, loop_time())
        self.apply(fx)

    def _next_wake(self, now: float, policy: Policy) -> float:
        wake = self.state.next_wake(policy, now)
        assert self.wall_clock is not None
        wall = self.wall_clock(now)
        horizon = timedelta(seconds=min(wake - now, 86400.0) + 60.0)
        change = self.schedule.next_change(wall, horizon=horizon)
        if change is not None:
            at = now + (change - wall).total_seconds()
            wake = min(wake, at)
        return wake

    # --- ready-up and heartbeats --------------------------------------------

    async def _ready_up(self, instance_id: str) -> None:
        s = self.settings
        reason = await self.probe.ready_up(
            instance_id, s.instance_ready_command, s.ready_command_timeout
        )
        self.apply(self.state.ready_up_done(instance_id, reason, loop_time()))

    async def _heartbeat(self, instance_id: str) -> None:
        s = self.settings
        reason = await self.probe.heartbeat(instance_id, s.heartbeat_command, s.heartbeat_timeout)
        self.apply(self.state.heartbeat_done(instance_id, reason, loop_time()))

    # --- acquisitions -------------------------------------------------------

    async def acquire(self, key: str, wait: float | None) -> Slot:
        """A slot for ``key``: at once if one is free, else within ``wait`` seconds."""
        state = self.state
        # The time only dates events: no clock read when nobody listens.
        grant, fx = state.acquire(key, self._now() if state.publishing else 0.0)
        if fx is not None:
            self.apply(fx)
        self.wake()
        if grant is not None and not self.settings.acquire_heartbeats:
            return self._hold(grant)
        return await self._acquire_slowly(key, grant, wait)

    async def _acquire_slowly(self, key: str, grant: Grant | None, wait: float | None) -> Slot:
        limit = self.settings.acquire_timeout if wait is None else wait
        slot = self._hold(grant) if grant is not None else None
        waiter: _Waiter | None = None
        try:
            with anyio.move_on_after(limit):
                while True:
                    if slot is None:
                        waiter = self.waiters[key] = _Waiter()
                        await waiter.event.wait()
                        if waiter.error is not None:
                            raise waiter.error
                        slot, waiter = waiter.slot, None
                        assert slot is not None
                    if not self.settings.acquire_heartbeats or slot.lost_error is not None:
                        return slot
                    # FF_USE_FLEETING_ACQUIRE_HEARTBEATS: a heartbeat before hand-out;
                    # on failure this acquisition tries the next instance.
                    if await self._healthy(slot):
                        return slot
                    slot = self._retry_elsewhere(key)
        except BaseException:
            if waiter is not None and waiter.slot is not None:
                slot = waiter.slot
            self._give_up(key, slot, timed_out=False)
            raise
        if waiter is not None and waiter.slot is not None:
            slot = waiter.slot
            if not self.settings.acquire_heartbeats:
                # Granted just as the time ran out: take it.
                return slot
        self._give_up(key, slot, timed_out=True)
        self.wake()
        raise AcquireTimeout(f"no slot for {key!r} became ready within {Duration(limit)}")

    async def _healthy(self, slot: Slot) -> bool:
        s = self.settings
        reason = await self.probe.heartbeat(
            slot.instance_id, s.heartbeat_command, s.heartbeat_timeout
        )
        self.apply(self.state.heartbeat_done(slot.instance_id, reason, loop_time()))
        return reason is None

    def _retry_elsewhere(self, key: str) -> Slot | None:
        self.slots.pop(key, None)
        grant, fx = self.state.retry_elsewhere(key, loop_time())
        self.apply(fx)
        return self._hold(grant) if grant is not None else None

    def _give_up(self, key: str, slot: Slot | None, *, timed_out: bool) -> None:
        if slot is not None:
            self.release(slot)
        else:
            self.waiters.pop(key, None)
            self.state.abandon(key, timed_out=timed_out)

    def release(self, slot: Slot) -> None:
        """Give ``slot`` back (once), then serve whoever waits."""
        key = slot.key
        if self.slots.get(key) is not slot:
            return
        del self.slots[key]
        self.apply(self.state.release(key, self._now(), failed=slot.failed, lost=slot.is_lost))
        if self.all_released is not None and not self.slots:
            self.all_released.set()

    def report_failure(self, slot: Slot) -> None:
        """``slot``'s holder reports that its instance failed it."""
        self.apply(
            self.state.report_failure(slot.instance_id, f"reported by {slot.key!r}", loop_time())
        )

    # What an Acquisition and a Slot call (straight here, not through the Fleet:
    # one call less on the hot path).
    _report_failure = report_failure

    def _acquire(self, key: str, wait: float | None) -> Coroutine[Any, Any, Slot]:
        return self.acquire(key, wait)

    def _release(self, slot: Slot) -> None:
        self.release(slot)

    def _refresh(self, slot: Slot) -> Coroutine[Any, Any, None]:
        return self.refresh(slot)

    async def refresh(self, slot: Slot) -> None:
        """Fetch the slot's connect info when the fleet has none yet, or renew it
        when its credentials have expired; a provider that cannot say makes the
        instance lost for this acquisition."""
        info = slot.known_connect_info
        if info is not None and (info.expires_at is None or not self.probe.expired(info)):
            return
        if info is not None and slot.instance_id not in self.state.records:
            return
        try:
            slot.connect_info = await self.probe.connect_info(slot.instance_id)
        except ProviderError as exc:
            raise InstanceLost(slot.instance_id, f"no connect info: {exc}") from exc

    def reserve(self, key: str) -> None:
        """Reserve capacity for ``key`` (raises ``NoCapacity``/``FleetClosed``)."""
        now = loop_time()
        self.state.reserve(key, self.policy_at(now), now)
        self.wake()

    def unreserve(self, key: str) -> None:
        """Drop ``key``'s reservation; unknown keys are ignored."""
        if self.state.unreserve(key):
            self.wake()

    # --- shutdown -----------------------------------------------------------

    async def stop_granting(self) -> None:
        """Refuse new work and settle every held slot (released or cancelled)."""
        with anyio.CancelScope(shield=True):
            self.apply(self.state.close())
            if not self.slots:
                return
            self.all_released = anyio.Event()
            if not self.settings.cancel_acquisitions_on_shutdown:
                log.info(
                    "shutdown: waiting for %d held slots",
                    len(self.slots),
                    extra={"fleet": self.name, "held": len(self.slots)},
                )
                timeout = self.settings.shutdown_timeout
                with anyio.move_on_after(math.inf if timeout is None else timeout):
                    await self.all_released.wait()
            if self.slots:
                log.warning(
                    "shutdown: cancelling %d held slots",
                    len(self.slots),
                    extra={"fleet": self.name, "held": len(self.slots)},
                )
                self.apply(self.state.cancel_held())
                await self.all_released.wait()

    async def teardown(self) -> None:
        """Delete our instances (if so set), save the table, shut the provider down."""
        with anyio.CancelScope(shield=True):
            try:
                if self.settings.delete_instances_on_shutdown:
                    await self._delete_everything()
                self.persist(force=True)
            finally:
                self.state.stop()
                if self.store is not None:
                    self.store.close()
                await self.calls.shutdown()
                self.hub.close()

    async def _delete_everything(self) -> None:
        settings = self.settings
        state = self.state
        for attempt in range(settings.shutdown_deletion_retries + 1):
            live = await self._poll_for_shutdown()
            if live is not None and not live:
                return
            if attempt == settings.shutdown_deletion_retries:
                break
            ids = live if live is not None else list(state.records)
            if ids:
                try:
                    await self.calls.decrease(ids)
                    ok = True
                except ProviderError as exc:
                    ok = False
                    log.warning(
                        "shutdown: decrease failed: %s",
                        exc,
                        extra={"fleet": self.name, "instances": len(ids)},
                    )
                state.deletion_sent(ids, ok=ok)
            await anyio.sleep(settings.shutdown_deletion_interval)
        log.error(
            "shutdown: instances still present after %d deletion rounds: %s",
            settings.shutdown_deletion_retries,
            sorted(state.records),
            extra={"fleet": self.name, "instances": len(state.records)},
        )

    async def _poll_for_shutdown(self) -> list[str] | None:
        try:
            statuses = await self.calls.update()
        except ProviderError as exc:
            self.apply(self.state.update_failed(str(exc), loop_time(), shutdown=True))
            return None
        live, fx = self.state.shutdown_view(statuses, loop_time())
        self.apply(fx)
        return live
