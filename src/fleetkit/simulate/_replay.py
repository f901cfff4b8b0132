"""One replay: the real :class:`~fleetkit.fleet.Fleet` over a trace, in virtual time.

Each job of the trace arrives at its time, waits for admission within
``concurrent`` and then for a slot (both first come, first served, as a CI
queue and :class:`~fleetkit.executor.InstanceExecutor` do), holds the slot for
its duration and releases it. A job whose instance is lost under it is retried
from the start, up to ``retries`` times, as the executor retries system
failures. The fleet is the real one: its planner, update loop, ready-up,
backoffs and removals run unchanged on a :class:`CloudGroup` under trio's
``MockClock(autojump_threshold=0)``, so the clock jumps to the next thing that
happens and the run is exact and deterministic.

What the figures need is recorded on the way: each job's wait, start and end,
each slot hold (instance, from, to), and from the fleet's public event stream
when each instance became ready and when it was marked draining.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from array import array
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import attrs
import trio
import trio.testing
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetkit.errors import InstanceLost
from fleetkit.fleet import Fleet, FleetEvent, InstanceDraining, InstanceReady, anchored_wall_clock
from fleetkit.policy import idle_target
from fleetkit.simulate._boot import PRESETS, BootTime
from fleetkit.simulate._config import FleetConfig
from fleetkit.simulate._provider import CloudFaults, CloudGroup, Life, ReadyUp
from fleetkit.simulate._trace import Trace

__all__ = ["Controller", "Options", "Replay", "replay"]

#: Owner tag of the simulated group, and the fleet's owner id, so that a warm
#: start's instances are adopted.
_OWNER = "simulate"


@attrs.frozen(kw_only=True)
class Options:
    """How to simulate: the cloud, the start, the seed, and what the figures count.

    ``warm``: the fleet starts as its policy wants it at the trace's start (the
    idle target's instances already ready); otherwise from no instance.
    ``wait_threshold``: jobs waiting longer than this many seconds are counted.
    ``price_per_hour``: cost of one instance-hour. ``retries``: attempts after
    an instance loss. ``series_step``: seconds between chart samples (``None``:
    no series kept). ``drain_limit``: how long past the trace's end jobs may
    still run or wait; those left then are cancelled and counted unfinished.
    ``measure_from``: seconds into the trace where the figures start (the
    fleet runs from the start, so a first part warms it up, or trains a
    policy that learns, without counting). ``fleet_logs``: let the simulated
    fleet's log through (the ``fleetkit.fleet`` logger is off during a replay).
    """

    boot: BootTime = PRESETS["linux-vm"]
    faults: CloudFaults = attrs.field(factory=CloudFaults)
    seed: int = 0
    warm: bool = True
    wait_threshold: float = 300.0
    price_per_hour: float = 0.0
    retries: int = 1
    series_step: float | None = None
    drain_limit: float = 7 * 86400.0
    measure_from: float = 0.0
    fleet_logs: bool = False


@attrs.define(kw_only=True)
class Replay:
    """What one replay recorded, in seconds from the trace's start."""

    config: FleetConfig
    trace: Trace
    end: float
    waits: array[float]
    finished: array[float]
    retries: array[int]  # per job: attempts after the first
    failed_jobs: frozenset[int]  # jobs that used up their retries

    @property
    def failed(self) -> int:
        """Jobs that used up their retries."""
        return len(self.failed_jobs)

    @property
    def retried(self) -> int:
        """Attempts after an instance loss, over all jobs."""
        return sum(self.retries)

    @property
    def unfinished(self) -> int:
        """Jobs still waiting or running when the replay ended."""
        return sum(1 for f in self.finished if math.isnan(f)) - len(self.failed_jobs)

    lives: list[Life]
    ready_at: dict[str, float]
    draining_at: dict[str, float]
    holds: dict[str, list[tuple[float, float]]]
    max_instances: int
    capacity: int
    fleet_events: int = 0


#: A task run beside a replay with its fleet and the trace, cancelled when the
#: replay ends: what changes the fleet from outside while it runs (a policy
#: that learns from arrivals and calls ``fleet.set_schedule``, say).
Controller = Callable[[Fleet, Trace], Coroutine[Any, Any, None]]


def replay(
    config: FleetConfig, trace: Trace, options: Options, *, controller: Controller | None = None
) -> Replay:
    """Run ``config`` over ``trace`` in virtual time and return what happened.

    ``controller``, if given, runs beside the jobs from the trace's start
    (loop time 0 is then the trace's start) until the replay ends.
    """
    result: list[Replay] = []

    async def main() -> None:
        result.append(await _run(config, trace, options, controller))

    # trio reverses each batch of runnable tasks at random (so that code cannot
    # come to rely on an order); seeding its generator makes the order, and so
    # the replay, the same for the same seed. A private name: the determinism
    # test notices if trio moves it.
    scheduler_rng = getattr(getattr(trio, "_core")._run, "_r", None)  # noqa: B009
    if isinstance(scheduler_rng, random.Random):
        scheduler_rng.seed(f"{options.seed}-scheduler")
    # A simulated fleet's log is about instances that never existed: the
    # spot losses and failed ready-ups asked for would reach the caller's
    # logs (or stderr) as errors. Silenced for the run unless asked for.
    fleet_log = logging.getLogger("fleetkit.fleet")
    was_disabled = fleet_log.disabled
    fleet_log.disabled = was_disabled or not options.fleet_logs
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        fleet_log.disabled = was_disabled
    return result[0]


async def _run(
    config: FleetConfig, trace: Trace, options: Options, controller: Controller | None
) -> Replay:
    t0 = anyio.current_time()
    limits = config.limits
    group = CloudGroup(options.boot, faults=options.faults, seed=options.seed, owner=_OWNER)
    # The simulated ready-up replaces the ready command (nothing runs
    # commands here); without a command it runs only when faults ask for it.
    ready_up = None
    faults = options.faults
    if config.settings.instance_ready_command or faults.ready_failure or faults.ready_time:
        ready_up = ReadyUp(faults, seed=options.seed)
    settings = attrs.evolve(
        config.settings, state_storage_dir=None, owner_id=_OWNER, instance_ready_command=None
    )
    schedule = config.schedule
    if options.warm:
        wanted = math.ceil(
            idle_target(schedule.active(trace.start), 0) / limits.capacity_per_instance
        )
        if limits.max_instances:
            wanted = min(wanted, limits.max_instances)
        group.preload(wanted)
    fleet = Fleet(
        group,
        limits,
        schedule,
        ready_check=ready_up,
        settings=settings,
        wall_clock=anchored_wall_clock(trace.start, at=t0),
        name=config.name,
    )
    jobs = trace.jobs
    waits = array("d", [math.nan]) * len(jobs)
    finished = array("d", [math.nan]) * len(jobs)
    holds: dict[str, list[tuple[float, float]]] = {}
    ready_at: dict[str, float] = {}
    draining_at: dict[str, float] = {}
    retries = array("i", [0]) * len(jobs)
    failed: set[int] = set()
    seen = [0]  # fleet events read from the stream
    slots = limits.max_instances * limits.capacity_per_instance
    # A concurrent at or above every slot the fleet can have never holds a job
    # back that the fleet would not (both queues are first come, first
    # served, and a job waiting in either adds no instance past
    # max_instances): skip it, a checkpoint less per job.
    binding = config.concurrent is not None and not (slots and config.concurrent >= slots)
    admission: anyio.Semaphore | contextlib.nullcontext[None] = (
        anyio.Semaphore(config.concurrent or 1) if binding else contextlib.nullcontext()
    )
    clock = anyio.current_time

    async def run_job(index: int) -> None:
        job = jobs[index]
        arrival = t0 + job.arrival
        async with admission:
            for attempt in range(options.retries + 1):
                started = math.nan
                instance = ""
                try:
                    async with fleet.acquire(f"{index}-{attempt}", timeout=math.inf) as slot:
                        started = clock()
                        instance = slot.instance_id
                        if attempt == 0:
                            waits[index] = started - arrival
                        # Jobs that would end in the same instant end in arrival
                        # order (a nanosecond apart): trio orders equal deadlines
                        # by object address, which differs from run to run.
                        ends = started + job.duration + index * 1e-9
                        gone = group.by_id[instance].gone_at
                        if gone < ends:
                            # The cloud takes the instance mid-job: the job's
                            # connection breaks then, before the fleet's next
                            # poll notices; the executor reports the failure
                            # and retries, as InstanceExecutor does.
                            if gone > started:
                                await anyio.sleep_until(gone)
                            slot.report_failure()
                            raise InstanceLost(instance, "connection lost")
                        await anyio.sleep_until(ends)
                except InstanceLost:
                    retries[index] += 1
                    continue
                finally:
                    if instance:
                        holds.setdefault(instance, []).append((started - t0, clock() - t0))
                finished[index] = clock() - t0
                return
            failed.add(index)

    def drain(stream: MemoryObjectReceiveStream[FleetEvent]) -> None:
        # Read what the fleet published so far without waiting: a task reading
        # the stream would be woken once per event, which costs more than the
        # fleet's own work on each.
        while True:
            try:
                event = stream.receive_nowait()
            except anyio.WouldBlock:
                return
            seen[0] += 1
            if isinstance(event, InstanceReady):
                ready_at.setdefault(event.instance_id, event.at - t0)
            elif isinstance(event, InstanceDraining):
                draining_at.setdefault(event.instance_id, event.at - t0)

    # The subscription opens before the fleet does, so no event is missed.
    async with (
        fleet.events(max_buffer=1 << 40) as stream,
        fleet,
        anyio.create_task_group() as beside,
    ):
        if controller is not None:
            beside.start_soon(controller, fleet, trace)
        with anyio.CancelScope() as overrun:
            async with anyio.create_task_group() as running:
                for index, job in enumerate(jobs):
                    if t0 + job.arrival > clock():
                        await anyio.sleep_until(t0 + job.arrival)
                    running.start_soon(run_job, index)
                    drain(stream)
                overrun.deadline = t0 + trace.end + options.drain_limit
        if t0 + trace.end > clock():
            await anyio.sleep_until(t0 + trace.end)
        end = clock() - t0
        drain(stream)
        beside.cancel_scope.cancel()
    for index, job in enumerate(jobs):
        if math.isnan(waits[index]):
            # Never got a slot before the replay ended: its wait so far, a lower bound.
            waits[index] = end - job.arrival
    return Replay(
        config=config,
        trace=trace,
        end=end,
        waits=waits,
        finished=finished,
        retries=retries,
        failed_jobs=frozenset(failed),
        lives=_relative(group.lives, t0),
        ready_at=ready_at,
        draining_at=draining_at,
        holds=holds,
        max_instances=fleet.limits.max_instances,
        capacity=limits.capacity_per_instance,
        fleet_events=seen[0],
    )


def _relative(lives: list[Life], t0: float) -> list[Life]:
    for life in lives:
        life.requested_at -= t0
        life.running_at -= t0
        life.gone_at -= t0
        life.delete_at -= t0
        life.deleted_at -= t0
    return lives
