"""The fleet state: every change a fleet goes through, with no I/O and no clock.

Theory of operation
-------------------
:class:`FleetState` is to the fleet what h11's ``Connection`` is to HTTP: it
holds the instance table (:class:`~fleetkit.fleet._table.Record`, moved only
through the lifecycle table), the deletion bookkeeping, the held, waiting and
reserved acquisitions, the scale-up timers and the figures, and it is the only
code that changes any of them. Each method takes *what happened* (the statuses
an ``update`` returned, an acquisition asked for or given back, a plan's turn,
a ready-up or heartbeat result, the outcome of a provider call) and the loop
time it happened at, and returns *what to do* as an :class:`Effects` value:
instances to ``decrease``, a count to ``increase``, ready-ups and heartbeats to
start, slots to hand to waiting acquisitions or to cancel, events to publish
and log lines to write. It awaits nothing, reads no clock, starts no task.

The driver (:mod:`fleetkit.fleet._driver`) performs the effects and reports
their outcomes back (:meth:`FleetState.decrease_done`,
:meth:`FleetState.increase_done`, :meth:`FleetState.ready_up_done`, ...). Because
the state is synchronous, a hypothesis ``RuleBasedStateMachine`` drives it and
the planner together, step by step (``tests/unit/test_fleet_state_machine.py``).

Ownership rules (design.md, and GitLab's "removing for safety"):

* an instance carrying another owner's tag (``InstanceStatus.owner`` set and
  not ``settings.owner_id``) is *foreign*: it gets no record, so it is never
  drained, adopted, given a job or deleted, at start, mid-run or at shutdown;
  the log says so once per instance;
* at start, an instance the state store knows is adopted with its stored use
  count (unless it held acquisitions and ``keep_instance_with_acquisitions`` is
  off); one proven ours only by its tag has an unknown past, so it is removed
  when ``max_use_count`` limits uses and adopted (after a successful ready-up)
  only when use is unlimited; an instance with no proof at all is removed.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import attrs

from fleetkit._settings import FleetSettings
from fleetkit.errors import FleetClosed, FleetError, InstanceLost, NoCapacity
from fleetkit.fleet._effects import WAKE_ONLY, Effects, Grant, LogLine
from fleetkit.fleet._events import (
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
from fleetkit.fleet._stats import FleetStats, StatsBook, count_slots
from fleetkit.fleet._stored import StoredInstance
from fleetkit.fleet._table import Record, Trigger, seniority, transition
from fleetkit.model import InstanceState, Limits, ProviderState, Snapshot
from fleetkit.planner import Deprovision, Plan, TokenBucket, can_reserve, first_free, plan, room
from fleetkit.policy import Policy
from fleetkit.provider import InstanceStatus, ProviderInfo

__all__ = ["GONE", "FleetState"]

S = InstanceState
_new_grant = tuple.__new__
#: Provider states of an instance that no longer exists.
GONE = frozenset({ProviderState.DELETED, ProviderState.TIMEOUT})
_IN_TRANSITION = frozenset({S.CREATING, S.RUNNING, S.DRAINING, S.DELETING})
_NO_AVOID: frozenset[str] = frozenset()


class FleetState:
    """The synchronous state of one fleet (see the module docstring).

    ``publishing`` is set by whoever performs the effects: while it is false,
    no event values are built (the hot path skips them).
    """

    def __init__(self, limits: Limits, settings: FleetSettings, *, name: str = "fleet") -> None:
        self.limits = limits
        self.settings = settings
        self.name = name
        self.publishing = False
        self.info: ProviderInfo | None = None
        # The instance table, and its READY records in acquire order.
        self.records: dict[str, Record] = {}
        self.ready: list[Record] = []
        # Loop times of accepted increases whose instances have not shown up.
        self.requested: deque[float] = deque()
        # Foreign instances already logged as left alone.
        self.foreign: set[str] = set()
        # Acquisitions: held, waiting (with instances to avoid), reserved.
        self.held: dict[str, Grant] = {}
        self.pending: dict[str, frozenset[str]] = {}
        self.reservations: dict[str, float] = {}
        self.book = StatsBook(settings)
        self.desired = 0
        # Slots a forecast wants held (fleetkit.forecast): only raises the idle target.
        self.demand_floor = 0
        self.is_open = False
        self.closing = False
        self.dirty = False
        self.heartbeats_on = False
        # When the loop next has something to do, and what holds scale-ups back.
        self.next_poll = 0.0
        self.next_heartbeat = math.inf
        self.bucket: TokenBucket | None = None
        self.throttled_until = 0.0
        self.scale_up_not_before = 0.0
        self.scale_up_failures = 0
        self.last_logged_provision: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"FleetState({self.summary()})"

    def summary(self) -> str:
        """Name, instances by state, held, waiting and reserved keys: for reprs."""
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return (
            f"{self.name!r}, instances={counts}, held={len(self.held)}, "
            f"pending={len(self.pending)}, reserved={len(self.reservations)}"
        )

    # --- opening ------------------------------------------------------------

    def begin(self, info: ProviderInfo, now: float, *, can_heartbeat: bool) -> None:
        """The provider's ``init`` answered ``info``: take its limits.

        ``can_heartbeat``: the driver has a way to heartbeat (the provider's
        verb or a connector).
        """
        self.info = info
        if info.max_size and (
            not self.limits.max_instances or info.max_size < self.limits.max_instances
        ):
            # The group's own ceiling is a limit the planner must see.
            self.limits = attrs.evolve(self.limits, max_instances=info.max_size)
        s = self.settings
        self.bucket = TokenBucket.for_limits(
            s.scale_throttle_limit, s.scale_throttle_burst or 0, self.limits.max_instances, now
        )
        self.heartbeats_on = s.heartbeat_interval is not None and can_heartbeat

    def reconcile(
        self,
        statuses: Sequence[InstanceStatus],
        stored: Mapping[str, StoredInstance],
        now: float,
    ) -> Effects:
        """Build the table from the first ``update`` and the state store: adopt,
        remove or leave alone each instance found (the module's ownership rules)."""
        fx = Effects()
        for status in statuses:
            if status.state in GONE:
                continue
            if self._is_foreign(status):
                self._leave_alone(status, fx)
                continue
            prior = stored.get(status.id)
            record = Record(
                status.id,
                S.CREATING,
                now,
                owner=status.owner,
                use_count=prior.use_count if prior else 0,
            )
            self.records[status.id] = record
            if status.state is ProviderState.DELETING:
                record.we_deleted = True
                self._move(record, Trigger.SEEN_DELETING)
                continue
            removal = self._why_remove(status, prior)
            if removal is not None:
                fx.logs.append(
                    LogLine(
                        logging.INFO,
                        "removing pre-existing instance %s: %s",
                        (status.id, removal),
                        {"fleet": self.name, "instance_id": status.id, "reason": removal},
                    )
                )
                self._drain(record, removal, now, fx)
            else:
                why = (
                    f"the state store knows it (use count {prior.use_count})"
                    if prior is not None
                    else "its owner tag is ours and use is unlimited; it takes work "
                    "only after a successful ready-up"
                )
                fx.logs.append(
                    LogLine(
                        logging.INFO,
                        "adopting pre-existing instance %s: %s",
                        (status.id, why),
                        {"fleet": self.name, "instance_id": status.id, "reason": why},
                    )
                )
                self._observe(record, status, now, fx)
        self.dirty = True
        self.is_open = True
        self.next_poll = now + self.poll_interval()
        return fx

    def _why_remove(self, status: InstanceStatus, prior: StoredInstance | None) -> str | None:
        """Why a pre-existing instance of ours must go, or ``None`` to adopt it."""
        owner = self.settings.owner_id
        if prior is None and not (owner is not None and status.owner == owner):
            return "no data on pre-existing instance so removing for safety"
        keep = self.settings.keep_instance_with_acquisitions
        if prior is not None and prior.acquisitions and not keep:
            return "pre-existing instance has acquisitions so removing for safety"
        max_use = self.limits.max_use_count
        if prior is None and max_use:
            # GitLab removes every instance it has no data on; fleetkit keeps a
            # tagged one only where its unknown use count cannot matter.
            return (
                "pre-existing instance proven ours only by its owner tag: its use count "
                f"is unknown and max_use_count is {max_use}, so removing for safety"
            )
        return None

    # --- what the provider reports ------------------------------------------

    def observe(self, statuses: Sequence[InstanceStatus], now: float) -> Effects:
        """An ``update`` reported ``statuses``: move every record by them."""
        fx = Effects()
        self.book.instance_operations["update"] += 1
        reported: set[str] = set()
        for status in statuses:
            reported.add(status.id)
            record = self.records.get(status.id)
            if record is None:
                if status.state in GONE:
                    continue
                if self._is_foreign(status):
                    self._leave_alone(status, fx)
                    continue
                record = self._new_record(status, now, fx)
            self._observe(record, status, now, fx)
        for record in [r for r in self.records.values() if r.id not in reported]:
            self._gone(record, now, "no longer reported by the provider", fx)
        self.foreign &= reported
        self.next_poll = now + self.poll_interval()
        return fx

    def update_failed(self, error: str, now: float, *, shutdown: bool = False) -> Effects:
        """An ``update`` failed: keep the previous view, ask again soon."""
        fx = Effects()
        self.book.missed_updates += 1
        fx.logs.append(
            LogLine(
                logging.WARNING,
                "shutdown: update failed: %s"
                if shutdown
                else "update failed, keeping the previous view: %s",
                (error,),
                {"fleet": self.name},
            )
        )
        self.next_poll = now + self.settings.update_interval_when_expecting
        return fx

    def poll_due(self, now: float) -> bool:
        """Whether the provider's ``update`` is due."""
        return now >= self.next_poll

    def poll_interval(self) -> float:
        """How long until the next ``update``: shorter while anything is in transition."""
        expecting = bool(self.requested) or any(
            r.state in _IN_TRANSITION for r in self.records.values()
        )
        s = self.settings
        return s.update_interval_when_expecting if expecting else s.update_interval

    # --- a planning tick ----------------------------------------------------

    def tick(self, policy: Policy, now: float) -> Effects:
        """One pass of the planner under ``policy``, carried out as far as the
        state can: assignments granted, removals re-checked and drained; the
        deletions due and the increase wanted come back as effects."""
        fx = Effects()
        self._expire_requests(now, fx)
        the_plan = plan(self.snapshot(), policy, self.limits, now, demand_floor=self.demand_floor)
        self.desired = the_plan.figures.desired_instances
        self._grant_assignments(the_plan, now, fx)
        self._report_plan(the_plan, now, fx)
        self._mark_removals(the_plan.deprovisions, now, fx)
        fx.decrease = self._deletions_due(now)
        if the_plan.provision is not None:
            fx.increase = self._scale_up(the_plan.provision.count, now)
        fx.heartbeats = self._heartbeats_due(now)
        return fx

    def next_wake(self, policy: Policy, now: float) -> float:
        """The loop time of the next thing due (poll, idle expiry, ready timeout,
        deletion retry, end of a backoff or throttle, heartbeat round); policy
        changes are the driver's to add, since they need the wall clock."""
        wake = self.next_poll
        idle_time = policy.idle_time.total_seconds()
        ready_timeout = self.limits.ready_timeout
        for record in self.records.values():
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
        for t in (self.scale_up_not_before, self.throttled_until, self.next_heartbeat):
            if now < t < wake:
                wake = t
        return wake

    def decrease_done(
        self, ids: Sequence[str], accepted: Iterable[str], error: str | None, now: float
    ) -> Effects:
        """``decrease(ids)`` accepted ``accepted`` (or failed with ``error``)."""
        fx = Effects()
        if error is not None:
            fx.logs.append(
                LogLine(
                    logging.WARNING,
                    "decrease of %d instances failed, retrying in %.0fs: %s",
                    (len(ids), self.settings.deletion_retry_interval, error),
                    {"fleet": self.name, "instances": list(ids)},
                )
            )
        took = set(accepted)
        for instance_id in ids:
            record = self.records.get(instance_id)
            if record is None or instance_id not in took:
                continue
            self._move(record, Trigger.DELETE_ACCEPTED)
            if record.deletion_requested_at is None:
                record.deletion_requested_at = now
                self.book.instance_operations["delete"] += 1
        if took:
            self._poll_soon(now)
        return fx

    def increase_done(
        self, asked: int, accepted: int, error: str | None, now: float, *, throttled: bool = False
    ) -> Effects:
        """``increase(asked)`` accepted ``accepted`` instances (or failed with ``error``)."""
        fx = Effects()
        if error is not None:
            backoff = self._pause_scale_ups(now)
            self.book.scale_operations["up_failure"] += 1
            fx.logs.append(
                LogLine(
                    logging.WARNING,
                    "increase(%d) failed, scale-ups paused %.0fs: %s",
                    (asked, backoff, error),
                    {"fleet": self.name, "asked": asked, "throttled": throttled},
                )
            )
            return fx
        self.requested.extend([now] * accepted)
        self.book.scale_operations["up"] += 1
        self.book.instance_operations["create"] += accepted
        if accepted < asked:
            fx.logs.append(
                LogLine(
                    logging.INFO,
                    "increase(%d): the provider accepted %d",
                    (asked, accepted),
                    {"fleet": self.name, "asked": asked, "accepted": accepted},
                )
            )
        self._publish(fx, InstancesRequested(now, asked, accepted))
        if accepted:
            self._poll_soon(now)
        else:
            # Nothing accepted is not an error (a quota, a full group), but asking
            # again on every tick would hammer the provider: back off as after one.
            self._pause_scale_ups(now)
        return fx

    # --- ready-up and health ------------------------------------------------

    def ready_up_done(self, instance_id: str, reason: str | None, now: float) -> Effects:
        """Ready-up of ``instance_id`` ended: ``reason`` is ``None`` on success,
        else why it failed (the instance is then removed and scale-ups back off)."""
        fx = Effects()
        record = self.records.get(instance_id)
        if record is None:
            return fx
        if reason is None:
            record.ready_at = now
            record.idle_since = now
            self._move(record, Trigger.READY_UP_OK)
            if record.state is not S.READY:
                return fx
            self.scale_up_failures = 0
            self.book.readiness_time.observe(now - record.created_at)
            self._publish(fx, InstanceReady(now, record.id))
            self._serve_pending(now, fx)
        else:
            backoff = self._pause_scale_ups(now)
            fx.logs.append(
                LogLine(
                    logging.WARNING,
                    "ready-up of %s failed (%s); removing it, scale-ups paused %.0fs",
                    (record.id, reason, backoff),
                    {"fleet": self.name, "instance_id": record.id, "reason": reason},
                )
            )
            self._publish(fx, InstanceFailed(now, record.id, f"ready-up failed: {reason}"))
            self._move(record, Trigger.READY_UP_FAILED)
            self._drain(record, f"ready-up failed: {reason}", now, fx, already=True)
        self.dirty = True
        fx.wake = True
        return fx

    def heartbeat_done(self, instance_id: str, reason: str | None, now: float) -> Effects:
        """A heartbeat of ``instance_id`` ended: ``None`` resets its failure count,
        a reason counts one failure toward ``failure_threshold``."""
        fx = Effects()
        record = self.records.get(instance_id)
        if record is None:
            return fx
        if reason is None:
            if record.health_failures:
                record.health_failures = 0
        else:
            self._count_failure(record, f"heartbeat failed: {reason}", now, fx)
        return fx

    def report_failure(self, instance_id: str, reason: str, now: float) -> Effects:
        """A slot holder reported that ``instance_id`` failed it."""
        fx = Effects()
        record = self.records.get(instance_id)
        if record is not None:
            self._count_failure(record, reason, now, fx)
        return fx

    # --- acquisitions -------------------------------------------------------

    def acquire(self, key: str, now: float) -> tuple[Grant | None, Effects | None]:
        """``key`` asks for a slot: the grant when one is free and nobody waits
        ahead, else ``None`` and ``key`` waits (its grant comes in a later
        :attr:`Effects.grants`). A reservation under ``key`` is converted.

        The effects are ``None`` when there is nothing to do but wake the loop
        (the hot path builds nothing it does not need); ``now`` only dates the
        events, so a driver not publishing need not read its clock for it."""
        if self.closing or not self.is_open:
            raise FleetClosed(f"fleet {self.name!r} is not open")
        if key in self.held or key in self.pending:
            raise FleetError(f"acquisition key {key!r} is already held or waiting")
        if self.reservations:
            self.reservations.pop(key, None)
        fx = Effects() if self.publishing else None
        if not self.pending:
            found = self._pick(_NO_AVOID)
            if found is not None:
                return self._grant(found[0], found[1], key, now, fx, handed=False), fx
        self.pending[key] = _NO_AVOID
        return None, fx

    def retry_elsewhere(self, key: str, now: float) -> tuple[Grant | None, Effects]:
        """``key``'s slot failed its check before hand-out: give it back (not
        clean) and look again, avoiding that instance for this acquisition."""
        grant = self.held.get(key)
        if grant is None:
            raise FleetError(f"acquisition key {key!r} holds no slot")
        avoid = self.pending.get(key, _NO_AVOID) | {grant.instance_id}
        fx = self.release(key, now, failed=True, serve=False)
        found = self._pick(avoid) if not self.pending else None
        if found is not None:
            return self._grant(found[0], found[1], key, now, fx, handed=False), fx
        self.pending[key] = avoid
        self._serve_pending(now, fx)
        return None, fx

    def abandon(self, key: str, *, timed_out: bool) -> None:
        """Waiting ``key`` gave up (cancelled, or ``timed_out``)."""
        if self.pending.pop(key, None) is not None and timed_out:
            self.book.task_operations["acquire_timeout"] += 1

    def release(
        self, key: str, now: float, *, failed: bool = False, lost: bool = False, serve: bool = True
    ) -> Effects:
        """``key`` gave its slot back; a clean release (not ``failed``, not
        ``lost``) resets the instance's failure count. Waiting keys are served."""
        grant = self.held.pop(key, None)
        if grant is None:
            return Effects()
        record = self.records.get(grant.instance_id)
        if record is not None and record.slots.get(grant.number) == key:
            record.free(grant.number, now)
            if not failed and not lost and record.health_failures:
                record.health_failures = 0
        self.book.task_operations["release"] += 1
        self.dirty = True
        if serve and not self.publishing and not self.pending:
            # The hot path: nothing to hand out or report, only the loop to wake.
            return WAKE_ONLY
        fx = Effects()
        if self.publishing:
            fx.events.append(SlotReleased(now, key, grant.instance_id, grant.number, failed))
        if serve:
            self._serve_pending(now, fx)
        fx.wake = True
        return fx

    def reserve(self, key: str, policy: Policy, now: float) -> None:
        """Reserve capacity for ``key``, or raise :class:`NoCapacity` saying why."""
        if self.closing or not self.is_open:
            raise FleetClosed(f"fleet {self.name!r} is not open")
        if key in self.reservations or key in self.held or key in self.pending:
            return
        decision = can_reserve(
            self.snapshot(), policy, self.limits, throttling=self.settings.reservation_throttling
        )
        if not decision.granted:
            # GitLab's labels: a preemptive reserve needs a ready idle slot now,
            # a non-preemptive one potential capacity (instances yet to come).
            failure = (
                "reserve_available_capacity_failure"
                if policy.preemptive
                else "reserve_iop_capacity_failure"
            )
            self.book.task_operations[failure] += 1
            raise NoCapacity(f"no capacity to reserve {key!r}: {decision.reason}")
        self.reservations[key] = now
        self.book.task_operations["reserve"] += 1

    def unreserve(self, key: str) -> bool:
        """Drop ``key``'s reservation; whether there was one."""
        if self.reservations.pop(key, None) is None:
            return False
        self.book.task_operations["unreserve"] += 1
        return True

    # --- shutdown -----------------------------------------------------------

    def close(self) -> Effects:
        """Stop granting: waiting acquisitions are refused, reservations dropped."""
        fx = Effects()
        self.closing = True
        for key in self.pending:
            fx.refusals.append((key, FleetClosed(f"fleet {self.name!r} is shutting down")))
        self.pending.clear()
        self.reservations.clear()
        return fx

    def cancel_held(self) -> Effects:
        """Shutdown cancels every held slot (their holders see ``FleetClosed``)."""
        fx = Effects()
        for key in self.held:
            fx.losses.append(
                (key, FleetClosed(f"fleet {self.name!r} shut down while the slot was held"))
            )
        return fx

    def shutdown_view(
        self, statuses: Sequence[InstanceStatus], now: float
    ) -> tuple[list[str], Effects]:
        """An ``update`` during the shutdown rounds: forget what is gone, and
        return the ids of *our* instances still there (never a foreign one)."""
        fx = Effects()
        live = []
        reported: set[str] = set()
        for status in statuses:
            reported.add(status.id)
            record = self.records.get(status.id)
            if status.state in GONE:
                if record is not None:
                    self._forget(record, now, fx)
                continue
            if record is None:
                if self._is_foreign(status) or not (
                    self.requested
                    or (self.settings.owner_id and status.owner == self.settings.owner_id)
                ):
                    # Not ours, or nothing says it is: leave it.
                    continue
                record = self._new_record(status, now, fx)
            live.append(status.id)
        for record in [r for r in self.records.values() if r.id not in reported]:
            self._forget(record, now, fx)
        return live, fx

    def deletion_sent(self, ids: Sequence[str], *, ok: bool) -> None:
        """Shutdown asked ``decrease(ids)`` (``ok``: the call did not fail)."""
        if ok:
            self.book.instance_operations["delete"] += len(ids)
        for instance_id in ids:
            record = self.records.get(instance_id)
            if record is not None:
                record.we_deleted = True

    def stop(self) -> None:
        """The fleet is closed for good."""
        self.is_open = False

    # --- views --------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The fleet now, as the planner sees it."""
        return Snapshot(
            instances=tuple(r.freeze() for r in self.records.values()),
            reservations=tuple(self.reservations),
            pending=tuple(self.pending),
            requested=len(self.requested),
        )

    def stats(self, events_dropped: int = 0) -> FleetStats:
        """The fleet's figures under GitLab's metric names (spec §5)."""
        limits = self.limits
        tasks, instances = count_slots(self.records.values(), limits, len(self.requested))
        tasks["pending"] = len(self.pending)
        tasks["reserved"] = len(self.reservations)
        book = self.book
        return FleetStats(
            tasks=tasks,
            instances=instances,
            desired_instances=self.desired,
            max_instances=limits.max_instances,
            capacity_per_instance=limits.capacity_per_instance,
            max_use_count=limits.max_use_count,
            task_operations=dict(book.task_operations),
            scale_operations=dict(book.scale_operations),
            instance_operations=dict(book.instance_operations),
            internal_operations=dict(book.internal_operations),
            missed_updates=book.missed_updates,
            events_dropped=events_dropped,
            histograms=book.histograms(),
        )

    def take_table(self, *, force: bool = False) -> dict[str, StoredInstance] | None:
        """The table to store when it changed since the last call (or ``force``)."""
        if not (self.dirty or force):
            return None
        self.dirty = False
        # An instance on its way out is not stored: were it, a restart would
        # take it for a known idle one and adopt it, undoing the removal (and,
        # for one removed for its unknown past, the use count it stood for).
        # Unstored, a restart finds it with no data and removes it again.
        return {
            r.id: StoredInstance(
                id=r.id, owner=r.owner, use_count=r.use_count, acquisitions=dict(r.slots)
            )
            for r in self.records.values()
            if not r.we_deleted
        }

    # --- the moves, each in one place ---------------------------------------

    def _publish(self, fx: Effects, event: FleetEvent) -> None:
        if self.publishing:
            fx.events.append(event)

    def _move(self, record: Record, trigger: Trigger) -> InstanceState:
        """Move ``record`` by ``trigger`` (the lifecycle table), keeping ``ready`` in step."""
        old = transition(record, trigger)
        if old is S.READY and record.state is not S.READY:
            self.ready.remove(record)
        elif record.state is S.READY and old is not S.READY:
            bisect.insort(self.ready, record, key=seniority)
        return old

    def _is_foreign(self, status: InstanceStatus) -> bool:
        owner = self.settings.owner_id
        return owner is not None and status.owner is not None and status.owner != owner

    def _leave_alone(self, status: InstanceStatus, fx: Effects) -> None:
        if status.id in self.foreign:
            return
        self.foreign.add(status.id)
        fx.logs.append(
            LogLine(
                logging.INFO,
                "leaving instance %s alone: its owner tag is %r, not this fleet's %r; "
                "it is never used, adopted or deleted (if this fleet asked for it, "
                "its provider stamps another owner than settings.owner_id)",
                (status.id, status.owner, self.settings.owner_id),
                {"fleet": self.name, "instance_id": status.id, "owner": status.owner},
            )
        )

    def _new_record(self, status: InstanceStatus, now: float, fx: Effects) -> Record:
        record = Record(status.id, S.CREATING, now, owner=status.owner)
        self.records[status.id] = record
        if self.requested:
            requested_at = self.requested.popleft()
            self.book.creation_time.observe(now - requested_at)
        self.dirty = True
        self._publish(fx, InstanceSeen(now, status.id))
        return record

    def _observe(self, record: Record, status: InstanceStatus, now: float, fx: Effects) -> None:
        state = status.state
        if state is ProviderState.RUNNING and record.state is not S.CREATING:
            # The sighting of nearly every instance on every poll; the table
            # keeps every other state on it (no move, nothing to do).
            return
        if state is ProviderState.CREATING:
            self._move(record, Trigger.SEEN_CREATING)
        elif state is ProviderState.RUNNING:
            old = self._move(record, Trigger.SEEN_RUNNING)
            if old is S.CREATING:
                record.running_at = now
                self.book.is_running_time.observe(now - record.created_at)
                self._publish(fx, InstanceRunning(now, record.id))
                fx.ready_ups.append(record.id)
        elif state is ProviderState.DELETING:
            if not record.we_deleted:
                self._lose_slots(record, "the provider is deleting it unexpectedly", fx)
            self._move(record, Trigger.SEEN_DELETING)
        else:
            self._gone(record, now, f"reported {state.value} by the provider", fx)

    def _gone(self, record: Record, now: float, why: str, fx: Effects) -> None:
        if not record.we_deleted:
            fx.logs.append(
                LogLine(
                    logging.ERROR,
                    "instance %s unexpectedly removed: %s",
                    (record.id, why),
                    {"fleet": self.name, "instance_id": record.id, "held": len(record.slots)},
                )
            )
            self._publish(fx, InstanceFailed(now, record.id, f"unexpectedly removed: {why}"))
            self._lose_slots(record, f"unexpectedly removed: {why}", fx)
        self._forget(record, now, fx)

    def _forget(self, record: Record, now: float, fx: Effects) -> None:
        self._move(record, Trigger.GONE)
        del self.records[record.id]
        self.book.life_duration.observe(now - record.created_at)
        if record.deletion_requested_at is not None:
            self.book.deletion_time.observe(now - record.deletion_requested_at)
        self.dirty = True
        fx.forgotten.append(record.id)
        self._publish(fx, InstanceDeleted(now, record.id, record.we_deleted))

    def _lose_slots(self, record: Record, reason: str, fx: Effects) -> None:
        for key in record.slots.values():
            if key in self.held:
                fx.losses.append((key, InstanceLost(record.id, reason)))

    def _drain(
        self, record: Record, reason: str, now: float, fx: Effects, *, already: bool = False
    ) -> None:
        """Take ``record`` out of service and schedule its deletion (``already``: moved)."""
        if not already:
            self._move(record, Trigger.DRAIN)
        record.we_deleted = True
        record.drain_reason = reason
        if record.delete_due is None:
            record.delete_due = now
        self.dirty = True
        self._publish(fx, InstanceDraining(now, record.id, reason))

    def _count_failure(self, record: Record, reason: str, now: float, fx: Effects) -> None:
        record.health_failures += 1
        self._publish(fx, InstanceFailed(now, record.id, reason))
        threshold = self.limits.failure_threshold
        if threshold and record.health_failures == threshold:
            fx.logs.append(
                LogLine(
                    logging.WARNING,
                    "instance %s unhealthy after %d failures (last: %s); it takes no new work",
                    (record.id, record.health_failures, reason),
                    {"fleet": self.name, "instance_id": record.id},
                )
            )
        self.dirty = True
        fx.wake = True

    def _pick(self, avoid: frozenset[str]) -> tuple[Record, int] | None:
        """GitLab's acquire walk: the oldest ready instance with room (the
        planner's :func:`~fleetkit.planner.room`), its lowest free slot."""
        limits = self.limits
        for record in self.ready:
            if room(
                record.state, len(record.slots), record.use_count, record.health_failures, limits
            ):
                if avoid and record.id in avoid:
                    continue
                return record, first_free(record.slots, limits.capacity_per_instance)
        return None

    def _grant(
        self, record: Record, number: int, key: str, now: float, fx: Effects | None, *, handed: bool
    ) -> Grant:
        """Give slot ``number`` of ``record`` to ``key``; ``handed``: to a waiting
        key, through ``fx.grants`` (else the caller returns it itself)."""
        record.take(number, key)
        # tuple.__new__ straight: a NamedTuple's own __new__ is Python code.
        grant = _new_grant(Grant, (key, record.id, number))
        self.held[key] = grant
        self.book.task_operations["acquire"] += 1
        self.dirty = True
        if fx is not None:
            if handed:
                fx.grants.append(grant)
            if self.publishing:
                fx.events.append(SlotAcquired(now, key, record.id, number))
        return grant

    def _serve_pending(self, now: float, fx: Effects) -> None:
        """Hand free slots to waiting keys, first come first served."""
        if not self.pending:
            return
        for key, avoid in list(self.pending.items()):
            found = self._pick(avoid)
            if found is None:
                if not avoid:
                    return
                continue
            del self.pending[key]
            self._grant(found[0], found[1], key, now, fx, handed=True)

    def _grant_assignments(self, the_plan: Plan, now: float, fx: Effects) -> None:
        """Grant the plan's assignments that still hold (the key waits, the slot is free)."""
        for assignment in the_plan.assignments:
            avoid = self.pending.get(assignment.key)
            record = self.records.get(assignment.instance_id)
            if avoid is None or record is None or assignment.slot in record.slots:
                continue
            if record.id in avoid:
                continue
            del self.pending[assignment.key]
            self._grant(record, assignment.slot, assignment.key, now, fx, handed=True)

    def _report_plan(self, the_plan: Plan, now: float, fx: Effects) -> None:
        """Log and publish what the plan changes (a scale-up once per new figure)."""
        provision = the_plan.provision
        signature = (provision.count, provision.figures.desired_instances) if provision else None
        new_provision = signature is not None and signature != self.last_logged_provision
        self.last_logged_provision = signature
        removals = [d for d in the_plan.deprovisions if self._is_new_removal(d)]
        if not (new_provision or removals):
            return
        if new_provision and provision is not None:
            fx.logs.append(
                LogLine(
                    logging.INFO,
                    "scale up: %s",
                    (provision,),
                    {"fleet": self.name, "figures": attrs.asdict(provision.figures)},
                )
            )
        for removal in removals:
            fx.logs.append(
                LogLine(
                    logging.INFO,
                    "scale down: %s",
                    (removal,),
                    {
                        "fleet": self.name,
                        "instance_id": removal.instance_id,
                        "reason": str(removal.reason),
                    },
                )
            )
        self._publish(fx, PlanMade(now, the_plan))

    def _is_new_removal(self, removal: Deprovision) -> bool:
        record = self.records.get(removal.instance_id)
        return record is not None and record.state not in (S.DRAINING, S.DELETING)

    def _mark_removals(self, removals: Sequence[Deprovision], now: float, fx: Effects) -> None:
        """Drain each instance to remove that is still free."""
        for removal in removals:
            if not self._is_new_removal(removal):
                continue
            record = self.records[removal.instance_id]
            # Re-check against the table as it is now: a job may have landed
            # since the snapshot (taskscaler's "terminates non-idle instance").
            if record.slots:
                fx.logs.append(
                    LogLine(
                        logging.INFO,
                        "not removing %s: a slot was acquired since the plan",
                        (record.id,),
                        {"fleet": self.name, "instance_id": record.id},
                    )
                )
                continue
            self.book.scale_operations["down"] += 1
            self._drain(record, str(removal.reason), now, fx)

    def _deletions_due(self, now: float) -> list[str]:
        """Ids of free instances whose ``decrease`` is due; the next try is
        scheduled ``deletion_retry_interval`` on (cleared by acceptance)."""
        retry_at = now + self.settings.deletion_retry_interval
        due = []
        for record in self.records.values():
            if record.delete_due is not None and record.delete_due <= now and not record.slots:
                record.delete_due = retry_at
                due.append(record.id)
        return due

    def _scale_up(self, count: int, now: float) -> int:
        """How many of ``count`` instances to ask for now (throttle and backoff)."""
        if now < self.scale_up_not_before:
            return 0
        granted = count
        if self.bucket is not None:
            granted, self.bucket = self.bucket.take(count, now)
            if granted < count:
                self.throttled_until = self.bucket.next_available(now)
        return granted

    def _heartbeats_due(self, now: float) -> list[str]:
        """The READY instances to heartbeat when a round is due."""
        interval = self.settings.heartbeat_interval
        if not self.heartbeats_on or interval is None:
            return []
        if self.next_heartbeat == math.inf:
            self.next_heartbeat = now + interval
            return []
        if now < self.next_heartbeat:
            return []
        self.next_heartbeat = now + interval
        return [r.id for r in self.records.values() if r.state is S.READY]

    def _pause_scale_ups(self, now: float) -> float:
        """Count one more scale-up failure and hold scale-ups off: the backoff."""
        self.scale_up_failures += 1
        s = self.settings
        exponent = min(self.scale_up_failures - 1, 30)
        backoff = float(min(s.ready_backoff_initial * 2**exponent, s.ready_backoff_max))
        self.scale_up_not_before = now + backoff
        return backoff

    def _poll_soon(self, now: float) -> None:
        """Bring the next ``update`` forward: the provider was just asked for a change."""
        self.next_poll = min(self.next_poll, now + self.settings.update_interval_when_expecting)

    def _expire_requests(self, now: float, fx: Effects) -> None:
        """Forget requested instances that never appeared within ``requested_timeout``."""
        limit = self.settings.requested_timeout
        while self.requested and now - self.requested[0] >= limit:
            self.requested.popleft()
            fx.logs.append(
                LogLine(
                    logging.WARNING,
                    "a requested instance never appeared within %.0fs; forgetting it",
                    (limit,),
                    {"fleet": self.name},
                )
            )


def _just_after(t: float) -> float:
    return math.nextafter(t + abs(t) * 1e-12, math.inf)
