"""The fleet runtime: taskscaler's job on anyio.

Theory of operation
-------------------
A :class:`Fleet` is two parts, h11's shape applied to an autoscaler:

* the *fleet state* (:mod:`fleetkit.fleet._state`): one synchronous object
  that owns the instance table (lifecycle moves through the table in
  :mod:`fleetkit.fleet._table`), the deletion bookkeeping and the held,
  waiting and reserved acquisitions. Its methods take what happened and the
  loop time and return the effects to perform as data; it does no I/O and
  reads no clock, so tests drive it and the planner synchronously;
* the *driver* (:mod:`fleetkit.fleet._driver`): performs those effects (the
  update loop, provider calls, ready-up and heartbeat tasks, the shutdown
  rounds) and reports each outcome back to the state.

Each tick of the loop polls the provider when due, lets the state plan (the
pure :func:`fleetkit.planner.plan` on a frozen snapshot) and carry the plan
out: assignments first (no ``await`` between planning and granting), then
removals, re-checked against the table *as it is now* and marked draining
before any provider call, so a job that just landed is never killed; then the
``decrease`` and ``increase`` the state asks for (the latter through the scale
throttle and the ready-up/increase failure backoff).

An acquisition that finds a free slot and nobody waiting ahead of it is granted
on the spot (the planner's walk and accounting: oldest ready healthy instance,
lowest free slot), which is what makes acquire cheap on warm capacity.

This class is the public face: it builds the driver and enters it through an
``AsyncExitStack`` (start, task group, stop granting; unwound in reverse).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetkit._duration import DurationLike, optional_duration
from fleetkit._settings import FleetSettings
from fleetkit.connector import Connector, check_event_loop
from fleetkit.errors import ConfigError, FleetError, Problem
from fleetkit.fleet._clock import WallClock
from fleetkit.fleet._driver import Driver, log
from fleetkit.fleet._events import FleetEvent
from fleetkit.fleet._probe import ReadyCheck
from fleetkit.fleet._slots import Acquisition
from fleetkit.fleet._stats import FleetStats
from fleetkit.model import Limits, Snapshot
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
    ``ready_check`` is one more ready-up step after the ready command (see
    :class:`~fleetkit.fleet.ReadyCheck`).
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
        ready_check: ReadyCheck | None = None,
    ) -> None:
        _check_type("limits", limits, Limits)
        _check_type("schedule", schedule, (Schedule, Policy))
        if settings is not None:
            _check_type("settings", settings, FleetSettings)
        self.settings = settings or FleetSettings()
        self._connector = connector
        if self.settings.instance_ready_command and connector is None:
            raise ConfigError(
                [Problem("instance_ready_command", "is set but the fleet has no connector")]
            )
        self.name = name
        self._driver = Driver(
            group,
            limits,
            _as_schedule(schedule),
            connector=connector,
            settings=self.settings,
            wall_clock=wall_clock,
            name=name,
            ready_check=ready_check,
        )
        self._stack: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"Fleet({self._driver.state.summary()})"

    # --- lifecycle of the fleet itself --------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise FleetError(f"fleet {self.name!r} cannot be entered twice")
        driver = self._driver
        # Refused here, once: a connector that cannot run on this loop would
        # otherwise fail every ready-up and heartbeat against healthy instances.
        check_event_loop(self._connector)
        stack = AsyncExitStack()
        await driver.start()
        # Unwound in reverse: stop granting (settle held slots), stop the
        # loop and the tasks, then delete, save and shut the provider down.
        # Each step shields itself.
        stack.push_async_callback(driver.teardown)
        try:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            stack.push_async_callback(_leave, tg)
            stack.push_async_callback(driver.stop_granting)
            driver.run(tg)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        await self._stack.aclose()

    # --- public API ---------------------------------------------------------

    def acquire(self, key: str, *, timeout: DurationLike | None = None) -> Acquisition:
        """Hold a slot for ``key`` while the ``async with`` block runs.

        Waits up to ``timeout`` (seconds or a timedelta; default
        ``settings.acquire_timeout``; ``math.inf`` waits for ever) for a slot
        on a ready, healthy instance,
        then raises :class:`~fleetkit.errors.AcquireTimeout`. A reservation
        under ``key`` is converted. If the instance is lost while the block
        runs, the block is cancelled and :class:`~fleetkit.errors.InstanceLost`
        is raised from it. The slot is released when the block ends.
        """
        wait = optional_duration(timeout, "Fleet.acquire.timeout", infinite=True)
        return Acquisition(self._driver, key, wait)

    def reserve(self, key: str) -> None:
        """Reserve capacity for ``key`` (a job request in flight).

        Raises :class:`~fleetkit.errors.NoCapacity` when none can be had (in
        preemptive mode: no ready idle slot now) and
        :class:`~fleetkit.errors.FleetClosed` when shutting down.
        """
        self._driver.reserve(key)

    def unreserve(self, key: str) -> None:
        """Drop the reservation of ``key`` (no job came); unknown keys are ignored."""
        self._driver.unreserve(key)

    def snapshot(self) -> Snapshot:
        """The fleet now, as the planner sees it."""
        return self._driver.state.snapshot()

    @property
    def limits(self) -> Limits:
        """The limits in force (``max_instances`` lowered to the group's size)."""
        return self._driver.state.limits

    @property
    def provider_info(self) -> ProviderInfo | None:
        """What the provider's ``init`` reported, once the fleet is open."""
        return self._driver.state.info

    def set_schedule(self, schedule: Schedule | Policy) -> None:
        """Apply new idle policies from the next tick on, without a restart."""
        self._driver.schedule = _as_schedule(schedule)
        log.info("policy schedule replaced", extra={"fleet": self.name})
        self._driver.wake()

    def set_demand_floor(self, slots: int) -> None:
        """Hold at least ``slots`` slots (in use, waiting or idle) from the next tick
        on, e.g. a :func:`fleetkit.forecast.demand_floor`; 0 turns it off. It only
        raises the idle target: the policy's removals stay as they were."""
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise ValueError(f"slots: expected a whole number >= 0, got {slots!r}")
        driver = self._driver
        if driver.state.demand_floor != slots:
            driver.state.demand_floor = slots
            driver.wake()

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
        async with self._driver.subscribe(max_buffer) as stream:
            yield stream

    def stats(self) -> FleetStats:
        """The fleet's figures under GitLab's metric names (spec §5)."""
        driver = self._driver
        return driver.state.stats(events_dropped=driver.hub.dropped)


async def _leave(tg: TaskGroup) -> None:
    # Not the user's exception: the task group only holds the fleet's own
    # tasks, which end when cancelled; what the block raised passes through.
    tg.cancel_scope.cancel()
    await tg.__aexit__(None, None, None)


def _as_schedule(schedule: Schedule | Policy) -> Schedule:
    return schedule if isinstance(schedule, Schedule) else Schedule([schedule])


def _check_type(name: str, value: object, expected: type | tuple[type, ...]) -> None:
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        wanted = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"Fleet.{name}: expected {wanted}, got {type(value).__name__}")
