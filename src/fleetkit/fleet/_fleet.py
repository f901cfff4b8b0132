"""The fleet runtime: taskscaler's job on anyio.

Theory of operation
-------------------
A :class:`Fleet` owns the instance table (:mod:`fleetkit.fleet._table`) and one
update loop. Each pass of the loop (a *tick*):

1. polls the provider's ``update`` when due (every ``update_interval``, every
   ``update_interval_when_expecting`` while anything is in transition) and
   moves records through the lifecycle table;
2. freezes the table into a :class:`~fleetkit.model.Snapshot` and asks the
   pure planner for a :class:`~fleetkit.planner.Plan`;
3. carries the plan out: assignments first (waiting acquisitions get their
   slots with no ``await`` between planning and granting), then removals, which
   are re-checked against the table *as it is now* and marked draining before
   any provider call, so a job that just landed is never killed; then
   ``decrease`` and ``increase`` (the latter through the scale throttle and the
   ready-up/increase failure backoff);
4. sleeps until the earliest of: the next poll, the next idle expiry, the next
   policy change, a deletion retry, the end of a backoff, a heartbeat round, or
   a wake-up from ``acquire``/``release``/``reserve``/``set_schedule``.

Decide under no lock, then do the I/O (httpcore's pool): every provider call
happens after the table is updated, from the loop task or a ready-up task, one
call per verb at a time.

An acquisition that finds a free slot and nobody waiting ahead of it is granted
on the spot, without waiting for a tick (the same walk the planner uses: oldest
ready healthy instance, lowest slot), which is what makes acquire cheap on warm
capacity.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetkit.connector import Connector
from fleetkit.errors import (
    AcquireTimeout,
    ConfigError,
    FleetClosed,
    FleetError,
    InstanceLost,
    NoCapacity,
    Problem,
    ProviderError,
    Throttled,
)
from fleetkit.fleet._calls import GroupCalls
from fleetkit.fleet._clock import WallClock, anchored_wall_clock, loop_time
from fleetkit.fleet._events import (
    EventHub,
    FleetEvent,
    InstanceDeleted,
    InstanceDraining,
    InstanceFailed,
    InstanceReady,
    InstanceRunning,
    InstanceSeen,
    InstancesRequested,
    PlanMade,
    SlotAcquired,
    SlotReleased,
)
from fleetkit.fleet._probe import Probe
from fleetkit.fleet._settings import FleetSettings
from fleetkit.fleet._slots import Acquisition, Slot
from fleetkit.fleet._state_store import StateStore, StoredInstance
from fleetkit.fleet._stats import FleetStats, StatsBook, count_slots
from fleetkit.fleet._table import Record, Trigger, pick_slot, seniority, transition
from fleetkit.model import InstanceState, Limits, ProviderState, Snapshot
from fleetkit.planner import Deprovision, Plan, TokenBucket, can_reserve, plan
from fleetkit.policy import Policy, Schedule
from fleetkit.provider import InstanceGroup, InstanceStatus, ProviderInfo

__all__ = ["Fleet"]

log = logging.getLogger("fleetkit.fleet")

S = InstanceState
_IN_TRANSITION = frozenset({S.CREATING, S.RUNNING, S.DRAINING, S.DELETING})
_GONE = frozenset({ProviderState.DELETED, ProviderState.TIMEOUT})


class _Waiter:
    __slots__ = ("error", "event", "key", "slot")

    def __init__(self, key: str) -> None:
        self.key = key
        self.event = anyio.Event()
        self.slot: Slot | None = None
        self.error: FleetError | None = None


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
        self._group = group
        self._calls = GroupCalls(group)
        self._limits = limits
        self._schedule = _as_schedule(schedule)
        self._connector = connector
        self._wall_clock = wall_clock
        self._probe = Probe(self._calls, connector, self._wall_now)
        self._store = (
            StateStore(self.settings.state_storage_dir) if self.settings.state_storage_dir else None
        )
        self._records: dict[str, Record] = {}
        # READY records in acquire order (planner's seniority): the fast path walks this.
        self._ready: list[Record] = []
        self._held: dict[str, Slot] = {}
        self._pending: dict[str, _Waiter] = {}
        self._reservations: dict[str, float] = {}
        self._requested: deque[float] = deque()
        self._hub = EventHub()
        self._book = StatsBook()
        self._info: ProviderInfo | None = None
        self._tg: TaskGroup | None = None
        self._wake_event: anyio.Event | None = None
        self._ready_backlog: list[Record] = []
        self._woken = False
        self._tick_cost = 0.0
        self._closing = False
        self._open = False
        self._dirty = False
        self._all_released: anyio.Event | None = None
        self._next_poll = 0.0
        self._next_heartbeat = math.inf
        self._bucket: TokenBucket | None = None
        self._throttled_until = 0.0
        self._scale_up_not_before = 0.0
        self._scale_up_failures = 0
        self._desired = 0
        self._last_logged_provision: tuple[int, int] | None = None

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for record in self._records.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return (
            f"Fleet({self.name!r}, instances={counts}, held={len(self._held)}, "
            f"pending={len(self._pending)}, reserved={len(self._reservations)})"
        )

    # --- lifecycle of the fleet itself --------------------------------------

    async def __aenter__(self) -> Self:
        if self._open or self._closing:
            raise FleetError(f"fleet {self.name!r} cannot be entered twice")
        self._wake_event = anyio.Event()
        if self._wall_clock is None:
            self._wall_clock = anchored_wall_clock()
        try:
            info = await self._calls.init()
            self._info = info
            if info.max_size and (
                not self._limits.max_instances or info.max_size < self._limits.max_instances
            ):
                # The group's own ceiling is a limit the planner must see.
                self._limits = attrs.evolve(self._limits, max_instances=info.max_size)
            now = loop_time()
            burst = self.settings.scale_throttle_burst or 0
            self._bucket = TokenBucket.for_limits(
                self.settings.scale_throttle_limit, burst, self._limits.max_instances, now
            )
            await self._reconcile(now)
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._calls.shutdown()
            raise
        self._open = True
        for record in self._ready_backlog:
            self._tg.start_soon(self._ready_up, record, name=f"ready-up {record.id}")
        self._ready_backlog.clear()
        self._tg.start_soon(self._loop, name=f"fleet {self.name} update loop")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_granting()
        finally:
            assert self._tg is not None
            self._tg.cancel_scope.cancel()
            try:
                await self._tg.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._teardown()

    async def _stop_granting(self) -> None:
        self._closing = True
        for waiter in self._pending.values():
            waiter.error = FleetClosed(f"fleet {self.name!r} is shutting down")
            waiter.event.set()
        self._pending.clear()
        self._reservations.clear()
        if not self._held:
            return
        self._all_released = anyio.Event()
        if not self.settings.cancel_acquisitions_on_shutdown:
            log.info(
                "shutdown: waiting for %d held slots",
                len(self._held),
                extra={"fleet": self.name, "held": len(self._held)},
            )
            timeout = self.settings.shutdown_timeout
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await self._all_released.wait()
        if self._held:
            log.warning(
                "shutdown: cancelling %d held slots",
                len(self._held),
                extra={"fleet": self.name, "held": len(self._held)},
            )
            for slot in tuple(self._held.values()):
                slot._lose(FleetClosed(f"fleet {self.name!r} shut down while the slot was held"))
            await self._all_released.wait()

    async def _teardown(self) -> None:
        try:
            if self.settings.delete_instances_on_shutdown:
                await self._delete_everything()
            self._persist(force=True)
        finally:
            self._open = False
            await self._calls.shutdown()
            self._hub.close()

    async def _delete_everything(self) -> None:
        settings = self.settings
        for attempt in range(settings.shutdown_deletion_retries + 1):
            live = await self._poll_for_shutdown()
            if live is not None and not live:
                return
            if attempt == settings.shutdown_deletion_retries:
                break
            ids = live if live is not None else list(self._records)
            if ids:
                try:
                    await self._calls.decrease(ids)
                    self._book.instance_operations["delete"] += len(ids)
                except ProviderError as exc:
                    log.warning(
                        "shutdown: decrease failed: %s",
                        exc,
                        extra={"fleet": self.name, "instances": len(ids)},
                    )
                for instance_id in ids:
                    record = self._records.get(instance_id)
                    if record is not None:
                        record.we_deleted = True
            await anyio.sleep(settings.shutdown_deletion_interval)
        log.error(
            "shutdown: instances still present after %d deletion rounds: %s",
            settings.shutdown_deletion_retries,
            sorted(self._records),
            extra={"fleet": self.name, "instances": len(self._records)},
        )

    async def _poll_for_shutdown(self) -> list[str] | None:
        try:
            statuses = await self._calls.update()
        except ProviderError as exc:
            self._book.missed_updates += 1
            log.warning("shutdown: update failed: %s", exc, extra={"fleet": self.name})
            return None
        now = loop_time()
        live = []
        for status in statuses:
            if status.state in _GONE:
                record = self._records.get(status.id)
                if record is not None:
                    self._forget(record, now)
            else:
                live.append(status.id)
        reported = {s.id for s in statuses}
        for record in [r for r in self._records.values() if r.id not in reported]:
            self._forget(record, now)
        return live

    # --- reconcile at start -------------------------------------------------

    async def _reconcile(self, now: float) -> None:
        stored = self._store.load() if self._store else {}
        statuses = await self._calls.update()
        owner = self.settings.owner_id
        for status in statuses:
            if status.state in _GONE:
                continue
            prior = stored.get(status.id)
            record = Record(
                status.id,
                S.CREATING,
                now,
                owner=status.owner,
                use_count=prior.use_count if prior else 0,
            )
            self._records[status.id] = record
            if status.state is ProviderState.DELETING:
                record.we_deleted = True
                self._move(record, Trigger.SEEN_DELETING)
                continue
            proven = prior is not None or (owner is not None and status.owner == owner)
            if not proven:
                self._drain(record, "no data on pre-existing instance so removing for safety", now)
            elif (
                prior is not None
                and prior.acquisitions
                and not (self.settings.keep_instance_with_acquisitions)
            ):
                self._drain(
                    record, "pre-existing instance has acquisitions so removing for safety", now
                )
            else:
                log.info(
                    "adopting pre-existing instance %s",
                    status.id,
                    extra={"fleet": self.name, "instance_id": status.id},
                )
                self._observe(record, status, now)
        self._dirty = True
        self._next_poll = now + self._poll_interval()

    # --- the update loop ----------------------------------------------------

    def _wake(self) -> None:
        self._woken = True
        if self._wake_event is not None:
            self._wake_event.set()

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
        now = loop_time()
        if now >= self._next_poll:
            await self._poll()
            now = loop_time()
        self._expire_requests(now)
        policy = self._policy_at(now)
        the_plan = plan(self._snapshot(), policy, self._limits, now)
        self._desired = the_plan.figures.desired_instances
        self._grant_assignments(the_plan, now)
        self._report_plan(the_plan, now)
        self._mark_removals(the_plan.deprovisions, now)
        await self._issue_deletions(now)
        if the_plan.provision is not None:
            await self._provision(the_plan.provision.count)
        self._start_heartbeats(loop_time())
        self._persist()
        now = loop_time()
        return self._next_wake(now, policy) - now

    def _wall_now(self) -> datetime:
        assert self._wall_clock is not None
        return self._wall_clock(loop_time())

    def _policy_at(self, now: float) -> Policy:
        assert self._wall_clock is not None
        return self._schedule.active(self._wall_clock(now))

    def _poll_interval(self) -> float:
        expecting = bool(self._requested) or any(
            r.state in _IN_TRANSITION for r in self._records.values()
        )
        s = self.settings
        return s.update_interval_when_expecting if expecting else s.update_interval

    def _next_wake(self, now: float, policy: Policy) -> float:
        wake = self._next_poll
        idle_time = policy.idle_time.total_seconds()
        ready_timeout = self._limits.ready_timeout
        for record in self._records.values():
            state = record.state
            if state is S.READY and not record.slots:
                since = record.idle_since if record.idle_since is not None else record.ready_at
                if since is not None:
                    # Just past the instant, so the planner's "idle for >= idle_time"
                    # holds despite float rounding.
                    expiry = _just_after(since + idle_time)
                    if now < expiry < wake:
                        wake = expiry
            elif ready_timeout is not None and state in (S.CREATING, S.RUNNING):
                deadline = _just_after(record.created_at + ready_timeout)
                if now < deadline < wake:
                    wake = deadline
            if record.delete_due is not None and not record.slots and record.delete_due < wake:
                wake = record.delete_due
        for t in (self._scale_up_not_before, self._throttled_until, self._next_heartbeat):
            if now < t < wake:
                wake = t
        change = self._next_policy_change(now, wake)
        if change is not None and change < wake:
            wake = change
        return wake

    def _next_policy_change(self, now: float, before: float) -> float | None:
        assert self._wall_clock is not None
        wall = self._wall_clock(now)
        horizon = timedelta(seconds=min(before - now, 86400.0) + 60.0)
        change = self._schedule.next_change(wall, horizon=horizon)
        if change is None:
            return None
        return now + (change - wall).total_seconds()

    # --- polling the provider -----------------------------------------------

    async def _poll(self) -> None:
        try:
            statuses = await self._calls.update()
        except ProviderError as exc:
            self._book.missed_updates += 1
            log.warning(
                "update failed, keeping the previous view: %s", exc, extra={"fleet": self.name}
            )
            self._next_poll = loop_time() + self.settings.update_interval_when_expecting
            return
        self._book.instance_operations["update"] += 1
        now = loop_time()
        reported: set[str] = set()
        for status in statuses:
            reported.add(status.id)
            record = self._records.get(status.id)
            if record is None:
                if status.state in _GONE:
                    continue
                record = self._new_record(status, now)
            self._observe(record, status, now)
        for record in [r for r in self._records.values() if r.id not in reported]:
            self._gone(record, now, "no longer reported by the provider")
        self._next_poll = now + self._poll_interval()

    def _new_record(self, status: InstanceStatus, now: float) -> Record:
        record = Record(status.id, S.CREATING, now, owner=status.owner)
        self._records[status.id] = record
        if self._requested:
            requested_at = self._requested.popleft()
            self._book.creation_time.observe(now - requested_at)
        self._dirty = True
        self._publish(InstanceSeen(now, status.id))
        return record

    def _observe(self, record: Record, status: InstanceStatus, now: float) -> None:
        state = status.state
        if state is ProviderState.CREATING:
            self._move(record, Trigger.SEEN_CREATING)
        elif state is ProviderState.RUNNING:
            old = self._move(record, Trigger.SEEN_RUNNING)
            if old is S.CREATING:
                record.running_at = now
                self._book.is_running_time.observe(now - record.created_at)
                self._publish(InstanceRunning(now, record.id))
                self._start_ready_up(record)
        elif state is ProviderState.DELETING:
            if not record.we_deleted:
                self._lose_slots(record, "the provider is deleting it unexpectedly")
            self._move(record, Trigger.SEEN_DELETING)
        else:
            self._gone(record, now, f"reported {state.value} by the provider")

    def _gone(self, record: Record, now: float, why: str) -> None:
        if not record.we_deleted:
            log.error(
                "instance %s unexpectedly removed: %s",
                record.id,
                why,
                extra={"fleet": self.name, "instance_id": record.id, "held": len(record.slots)},
            )
            self._publish(InstanceFailed(now, record.id, f"unexpectedly removed: {why}"))
            self._lose_slots(record, f"unexpectedly removed: {why}")
        self._forget(record, now)

    def _forget(self, record: Record, now: float) -> None:
        self._move(record, Trigger.GONE)
        del self._records[record.id]
        self._book.life_duration.observe(now - record.created_at)
        if record.deletion_requested_at is not None:
            self._book.deletion_time.observe(now - record.deletion_requested_at)
        self._dirty = True
        self._publish(InstanceDeleted(now, record.id, record.we_deleted))

    def _lose_slots(self, record: Record, reason: str) -> None:
        for key in tuple(record.slots.values()):
            slot = self._held.get(key)
            if slot is not None:
                slot._lose(InstanceLost(record.id, reason))

    def _expire_requests(self, now: float) -> None:
        limit = self.settings.requested_timeout
        while self._requested and now - self._requested[0] >= limit:
            self._requested.popleft()
            log.warning(
                "a requested instance never appeared within %.0fs; forgetting it",
                limit,
                extra={"fleet": self.name},
            )

    # --- ready-up and heartbeats --------------------------------------------

    def _start_ready_up(self, record: Record) -> None:
        if self._tg is None:
            # During reconcile the task group does not exist yet: ready-up of
            # adopted instances starts as soon as it does.
            self._ready_backlog.append(record)
            return
        self._tg.start_soon(self._ready_up, record, name=f"ready-up {record.id}")

    async def _ready_up(self, record: Record) -> None:
        reason = await self._probe.check(
            record, self.settings.instance_ready_command, self.settings.ready_command_timeout
        )
        now = loop_time()
        if self._records.get(record.id) is not record:
            return
        if reason is None:
            record.ready_at = now
            record.idle_since = now
            self._move(record, Trigger.READY_UP_OK)
            if record.state is not S.READY:
                return
            self._scale_up_failures = 0
            self._book.readiness_time.observe(now - record.created_at)
            self._publish(InstanceReady(now, record.id))
            self._serve_pending()
        else:
            backoff = self._pause_scale_ups(now)
            log.warning(
                "ready-up of %s failed (%s); removing it, scale-ups paused %.0fs",
                record.id,
                reason,
                backoff,
                extra={"fleet": self.name, "instance_id": record.id, "reason": reason},
            )
            self._publish(InstanceFailed(now, record.id, f"ready-up failed: {reason}"))
            self._move(record, Trigger.READY_UP_FAILED)
            self._drain(record, f"ready-up failed: {reason}", now, already=True)
        self._dirty = True
        self._wake()

    def _start_heartbeats(self, now: float) -> None:
        interval = self.settings.heartbeat_interval
        if interval is None or self._connector is None or self._tg is None:
            return
        if self._next_heartbeat == math.inf:
            self._next_heartbeat = now + interval
            return
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + interval
        for record in self._records.values():
            if record.state is S.READY:
                self._tg.start_soon(self._heartbeat, record, name=f"heartbeat {record.id}")

    async def _heartbeat(self, record: Record) -> None:
        reason = await self._probe.check(
            record, self.settings.heartbeat_command, self.settings.heartbeat_timeout
        )
        if self._records.get(record.id) is not record:
            return
        if reason is None:
            record.health_failures = 0
        else:
            self._count_failure(record, f"heartbeat failed: {reason}")

    def _count_failure(self, record: Record, reason: str) -> None:
        record.health_failures += 1
        now = loop_time()
        self._publish(InstanceFailed(now, record.id, reason))
        threshold = self._limits.failure_threshold
        if threshold and record.health_failures == threshold:
            log.warning(
                "instance %s unhealthy after %d failures (last: %s); it takes no new work",
                record.id,
                record.health_failures,
                reason,
                extra={"fleet": self.name, "instance_id": record.id},
            )
        self._dirty = True
        self._wake()

    def _pause_scale_ups(self, now: float) -> float:
        """Count one more scale-up failure and hold scale-ups off: the backoff."""
        self._scale_up_failures += 1
        s = self.settings
        exponent = min(self._scale_up_failures - 1, 30)
        backoff = float(min(s.ready_backoff_initial * 2**exponent, s.ready_backoff_max))
        self._scale_up_not_before = now + backoff
        return backoff

    # --- carrying out a plan ------------------------------------------------

    def _move(self, record: Record, trigger: Trigger) -> InstanceState:
        old = transition(record, trigger)
        if old is S.READY and record.state is not S.READY:
            self._ready.remove(record)
        elif record.state is S.READY and old is not S.READY:
            bisect.insort(self._ready, record, key=seniority)
        return old

    def _serve_pending(self) -> None:
        """Hand free slots to waiting acquisitions, first come first served."""
        while self._pending:
            found = pick_slot(self._ready, self._limits)
            if found is None:
                return
            self._hand_over(next(iter(self._pending)), found[0], found[1], loop_time())

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            instances=tuple(r.freeze() for r in self._records.values()),
            reservations=tuple(self._reservations),
            pending=tuple(self._pending),
            requested=len(self._requested),
        )

    def _grant_assignments(self, the_plan: Plan, now: float) -> None:
        for assignment in the_plan.assignments:
            waiter = self._pending.get(assignment.key)
            record = self._records.get(assignment.instance_id)
            if waiter is None or record is None or assignment.slot in record.slots:
                continue
            self._hand_over(assignment.key, record, assignment.slot, now)

    def _hand_over(self, key: str, record: Record, number: int, now: float) -> None:
        waiter = self._pending.pop(key)
        waiter.slot = self._grant(record, number, key, now)
        waiter.event.set()

    def _report_plan(self, the_plan: Plan, now: float) -> None:
        provision = the_plan.provision
        signature = (provision.count, provision.figures.desired_instances) if provision else None
        new_provision = signature is not None and signature != self._last_logged_provision
        self._last_logged_provision = signature
        removals = [d for d in the_plan.deprovisions if self._is_new_removal(d)]
        if not (new_provision or removals):
            return
        if new_provision and provision is not None:
            log.info(
                "scale up: %s",
                provision,
                extra={"fleet": self.name, "figures": attrs.asdict(provision.figures)},
            )
        for removal in removals:
            log.info(
                "scale down: %s",
                removal,
                extra={
                    "fleet": self.name,
                    "instance_id": removal.instance_id,
                    "reason": str(removal.reason),
                },
            )
        if self._hub.active:
            self._publish(PlanMade(now, the_plan))

    def _is_new_removal(self, removal: Deprovision) -> bool:
        record = self._records.get(removal.instance_id)
        return record is not None and record.state not in (S.DRAINING, S.DELETING)

    def _mark_removals(self, removals: Sequence[Deprovision], now: float) -> None:
        for removal in removals:
            if not self._is_new_removal(removal):
                continue
            record = self._records[removal.instance_id]
            # Re-check against the table as it is now: a job may have landed
            # since the snapshot (taskscaler's "terminates non-idle instance").
            if record.slots:
                log.info(
                    "not removing %s: a slot was acquired since the plan",
                    record.id,
                    extra={"fleet": self.name, "instance_id": record.id},
                )
                continue
            self._book.scale_operations["down"] += 1
            self._drain(record, str(removal.reason), now)

    def _drain(self, record: Record, reason: str, now: float, *, already: bool = False) -> None:
        if not already:
            self._move(record, Trigger.DRAIN)
        record.we_deleted = True
        record.drain_reason = reason
        if record.delete_due is None:
            record.delete_due = now
        self._dirty = True
        self._publish(InstanceDraining(now, record.id, reason))

    async def _issue_deletions(self, now: float) -> None:
        due = [
            r
            for r in self._records.values()
            if r.delete_due is not None and r.delete_due <= now and not r.slots
        ]
        if not due:
            return
        ids = [r.id for r in due]
        retry_at = now + self.settings.deletion_retry_interval
        try:
            accepted = set(await self._calls.decrease(ids))
        except ProviderError as exc:
            log.warning(
                "decrease of %d instances failed, retrying in %.0fs: %s",
                len(ids),
                self.settings.deletion_retry_interval,
                exc,
                extra={"fleet": self.name, "instances": ids},
            )
            accepted = set()
        for record in due:
            record.delete_due = retry_at
            if record.id in accepted and self._records.get(record.id) is record:
                self._move(record, Trigger.DELETE_ACCEPTED)
                if record.deletion_requested_at is None:
                    record.deletion_requested_at = now
                    self._book.instance_operations["delete"] += 1
        if accepted:
            self._poll_soon(now)

    async def _provision(self, count: int) -> None:
        now = loop_time()
        if now < self._scale_up_not_before:
            return
        granted = count
        if self._bucket is not None:
            granted, self._bucket = self._bucket.take(count, now)
            if granted < count:
                self._throttled_until = self._bucket.next_available(now)
            if granted == 0:
                return
        try:
            accepted = await self._calls.increase(granted)
        except ProviderError as exc:
            backoff = self._pause_scale_ups(loop_time())
            self._book.scale_operations["up_failure"] += 1
            log.warning(
                "increase(%d) failed, scale-ups paused %.0fs: %s",
                granted,
                backoff,
                exc,
                extra={
                    "fleet": self.name,
                    "asked": granted,
                    "throttled": isinstance(exc, Throttled),
                },
            )
            return
        now = loop_time()
        self._requested.extend([now] * accepted)
        self._book.scale_operations["up"] += 1
        self._book.instance_operations["create"] += accepted
        if accepted < granted:
            log.info(
                "increase(%d): the provider accepted %d",
                granted,
                accepted,
                extra={"fleet": self.name, "asked": granted, "accepted": accepted},
            )
        self._publish(InstancesRequested(now, granted, accepted))
        if accepted:
            self._poll_soon(now)
        else:
            # Nothing accepted is not an error (a quota, a full group), but asking
            # again on every tick would hammer the provider: back off as after one.
            self._pause_scale_ups(now)

    def _poll_soon(self, now: float) -> None:
        self._next_poll = min(self._next_poll, now + self.settings.update_interval_when_expecting)

    def _persist(self, *, force: bool = False) -> None:
        if self._store is None or not (self._dirty or force):
            return
        self._dirty = False
        table = {
            r.id: StoredInstance(
                id=r.id, owner=r.owner, use_count=r.use_count, acquisitions=dict(r.slots)
            )
            for r in self._records.values()
        }
        # Written inline, not in a worker thread: the file is small, and a thread
        # would let a virtual clock (trio's MockClock) jump while it runs.
        self._store.save(table)

    def _publish(self, event: FleetEvent) -> None:
        if self._hub.active:
            self._hub.publish(event)

    def _check_open(self) -> None:
        if self._closing or not self._open:
            raise FleetClosed(f"fleet {self.name!r} is not open")

    # --- slots --------------------------------------------------------------

    def _grant(self, record: Record, number: int, key: str, now: float) -> Slot:
        record.take(number, key)
        slot = Slot(self, key, record.id, number, record.info)
        self._held[key] = slot
        self._book.task_operations["acquire"] += 1
        self._dirty = True
        if self._hub.active:
            self._hub.publish(SlotAcquired(now, key, record.id, number))
        return slot

    def _release(self, slot: Slot) -> None:
        if self._held.pop(slot.key, None) is None:
            return
        now = loop_time()
        record = self._records.get(slot.instance_id)
        if record is not None and record.slots.get(slot.number) == slot.key:
            record.free(slot.number, now)
            if not slot.failed and slot.lost_error is None:
                record.health_failures = 0
        self._book.task_operations["release"] += 1
        self._dirty = True
        if self._hub.active:
            self._hub.publish(
                SlotReleased(now, slot.key, slot.instance_id, slot.number, slot.failed)
            )
        if self._all_released is not None and not self._held:
            self._all_released.set()
        self._serve_pending()
        self._wake()

    def _report_failure(self, slot: Slot) -> None:
        record = self._records.get(slot.instance_id)
        if record is not None:
            self._count_failure(record, f"reported by {slot.key!r}")

    def _try_grant(self, key: str) -> Slot | None:
        if self._pending:
            return None
        found = pick_slot(self._ready, self._limits)
        if found is None:
            return None
        return self._grant(found[0], found[1], key, loop_time())

    async def _acquire(self, key: str, wait: float | None) -> Slot:
        self._check_open()
        if key in self._held or key in self._pending:
            raise FleetError(f"acquisition key {key!r} is already held or waiting")
        self._reservations.pop(key, None)
        slot = self._try_grant(key)
        if slot is not None:
            self._wake()
            return slot
        waiter = _Waiter(key)
        self._pending[key] = waiter
        self._wake()
        limit = self.settings.acquire_timeout if wait is None else wait
        try:
            with anyio.move_on_after(limit):
                await waiter.event.wait()
        except BaseException:
            if waiter.slot is not None:
                self._release(waiter.slot)
            else:
                self._pending.pop(key, None)
            raise
        if waiter.slot is not None:
            return waiter.slot
        self._pending.pop(key, None)
        if waiter.error is not None:
            raise waiter.error
        self._book.task_operations["acquire_timeout"] += 1
        self._wake()
        raise AcquireTimeout(f"no slot for {key!r} became ready within {limit:.0f}s")

    async def _refresh(self, slot: Slot) -> None:
        """Renew the slot's connect info when its credentials have expired."""
        info = slot.connect_info
        if info is None or info.expires_at is None or not self._probe.expired(info):
            return
        record = self._records.get(slot.instance_id)
        if record is not None:
            slot.connect_info = await self._probe.connect_info(record)

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
        self._check_open()
        if key in self._reservations or key in self._held or key in self._pending:
            return
        now = loop_time()
        decision = can_reserve(
            self._snapshot(),
            self._policy_at(now),
            self._limits,
            throttling=self.settings.reservation_throttling,
        )
        if not decision.granted:
            self._book.task_operations["reserve_failure"] += 1
            raise NoCapacity(f"no capacity to reserve {key!r}: {decision.reason}")
        self._reservations[key] = now
        self._book.task_operations["reserve"] += 1
        self._wake()

    def unreserve(self, key: str) -> None:
        """Drop the reservation of ``key`` (no job came); unknown keys are ignored."""
        if self._reservations.pop(key, None) is not None:
            self._book.task_operations["unreserve"] += 1
            self._wake()

    def snapshot(self) -> Snapshot:
        """The fleet now, as the planner sees it."""
        return self._snapshot()

    @property
    def limits(self) -> Limits:
        """The limits in force (``max_instances`` lowered to the group's size)."""
        return self._limits

    @property
    def provider_info(self) -> ProviderInfo | None:
        """What the provider's ``init`` reported, once the fleet is open."""
        return self._info

    def set_schedule(self, schedule: Schedule | Policy) -> None:
        """Apply new idle policies from the next tick on, without a restart."""
        self._schedule = _as_schedule(schedule)
        log.info("policy schedule replaced", extra={"fleet": self.name})
        self._wake()

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
        async with self._hub.subscribe(max_buffer) as stream:
            yield stream

    def stats(self) -> FleetStats:
        """The fleet's figures under GitLab's metric names (spec §5)."""
        limits = self._limits
        tasks, instances = count_slots(self._records.values(), limits, len(self._requested))
        tasks["pending"] = len(self._pending)
        tasks["reserved"] = len(self._reservations)
        book = self._book
        return FleetStats(
            tasks=tasks,
            instances=instances,
            desired_instances=self._desired,
            max_instances=limits.max_instances,
            capacity_per_instance=limits.capacity_per_instance,
            max_use_count=limits.max_use_count,
            task_operations=dict(book.task_operations),
            scale_operations=dict(book.scale_operations),
            instance_operations=dict(book.instance_operations),
            missed_updates=book.missed_updates,
            events_dropped=self._hub.dropped,
            histograms=book.histograms(),
        )


def _just_after(t: float) -> float:
    return math.nextafter(t + abs(t) * 1e-12, math.inf)


def _as_schedule(schedule: Schedule | Policy) -> Schedule:
    return schedule if isinstance(schedule, Schedule) else Schedule([schedule])
