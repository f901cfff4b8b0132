"""The InstanceExecutor: jobs in, results out, on an autoscaled fleet.

Theory of operation
-------------------
The executor owns a :class:`~fleetkit.fleet.Fleet`, a connector and a task
group. A job runs as *attempts*: each acquires a slot (the fleet grows to
provide it), runs the job there with :func:`~fleetkit.jobs.run_job`, and
releases the slot. An attempt that ends in a system failure of its instance
(instance lost, connection broken) is retried, up to ``retries`` times, and the
final result lists the earlier attempts, so both are reported. No slot within
the acquire timeout is a system failure too, but not retried. Admission
follows GitLab's order (spec §1.1): the global
``concurrent`` and the runner's ``limit`` bound the jobs in flight before the
fleet is asked for a slot.

Stopping (:meth:`InstanceExecutor.stop`, e.g. on Ctrl-C) takes no new job,
cancels running attempts (each ends its processes and cleans up) and reports
them, and jobs never started, as cancelled. Leaving ``async with`` stops, then
shuts the fleet down (deleting instances when configured), then closes the
connectors.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetkit._duration import DurationLike, optional_duration
from fleetkit._resource import AsyncResource
from fleetkit.config import load
from fleetkit.connector import ClosingConnector, Connector, ForgetsInstances, check_event_loop
from fleetkit.errors import (
    AcquireTimeout,
    ConfigError,
    ConnectorError,
    FleetClosed,
    FleetError,
    FleetkitError,
    ImageRejected,
    InstanceLost,
    Problem,
)
from fleetkit.executor._compose import Composition, compose
from fleetkit.executor._job_stats import JobStats, JobTally
from fleetkit.executor._ledger import InstanceLedger, LedgerFigures
from fleetkit.fleet import Fleet, InstanceDeleted
from fleetkit.jobs import (
    Job,
    JobOptions,
    JobResult,
    JobStatus,
    LogSink,
    MemoryLog,
    TeeLog,
    run_job,
)
from fleetkit.policy import Policy, Schedule

if TYPE_CHECKING:
    from fleetkit.isolation import Isolator

__all__ = ["InstanceExecutor", "JobCounts", "JobResults", "LogFactory", "build"]

logger = logging.getLogger("fleetkit.executor")

#: Builds the log sink of one attempt of a job: ``factory(job, attempt)``.
LogFactory = Callable[[Job, int], LogSink]


def _check_job(job: object, where: str) -> None:
    if not isinstance(job, Job):
        raise TypeError(f"{where}: expected a fleetkit.jobs.Job, got {type(job).__name__}")


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf of an exception (group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _memory_logs(job: Job, attempt: int) -> LogSink:
    return MemoryLog(limit=64 * 1024)


class JobResults(AsyncResource):
    """The results of :meth:`InstanceExecutor.submit`, in the order they finish.

    ``async for result in results`` ends after the last one and closes the
    stream; ``async with results:`` closes it early (results still to come
    are then dropped; the jobs still run). A batch never ends silently: if
    the stream ends before every job has its result, iterating raises
    :class:`~fleetkit.errors.FleetkitError` saying how many came, with the
    cause chained.
    """

    __slots__ = ("_cause", "_closed", "_expected", "_receive", "_received")

    def __init__(self, receive: MemoryObjectReceiveStream[JobResult], expected: int = 0) -> None:
        self._receive = receive
        self._expected = expected
        self._received = 0
        self._cause: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<JobResults {self._received}/{self._expected} received, "
            f"{self._receive.statistics().current_buffer_used} waiting>"
        )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobResult:
        try:
            result = await self._receive.receive()
        except anyio.EndOfStream:
            self.close()
            if self._received < self._expected:
                raise FleetkitError(
                    f"the batch ended after {self._received} of {self._expected} results"
                    + (f": {self._cause!r}" if self._cause is not None else "")
                ) from self._cause
            raise StopAsyncIteration from None
        except anyio.ClosedResourceError:
            raise StopAsyncIteration from None
        self._received += 1
        return result

    @property
    def closed(self) -> bool:
        """Whether the results are no longer received (all came, or closed early)."""
        return self._closed

    def close(self) -> None:
        """Stop receiving; idempotent."""
        self._closed = True
        self._receive.close()

    async def aclose(self) -> None:
        """Stop receiving (:meth:`close`), for ``async with``; idempotent."""
        self.close()


@attrs.frozen
class JobCounts:
    """Jobs by where they are: waiting for admission or a slot, running, done."""

    queued: int
    running: int
    done: int


def _tag_set(value: Iterable[str]) -> frozenset[str]:
    # A named converter: mypy's attrs plugin cannot bind frozenset's parameter.
    return frozenset(value)


@attrs.define(kw_only=True, eq=False)
class RunnerLane:
    """One runner an :class:`InstanceExecutor` serves: its fleet and connector, the
    job options of its ``[[runners]]`` entry (``options``, one
    :class:`~fleetkit.jobs.JobOptions`), and which jobs it takes.

    A job naming a runner (``Job.runner``) goes to the lane of that ``name``; a
    job with ``tags`` to a lane whose ``tags`` include them all; a job with
    neither to a lane that runs untagged jobs. ``limit`` caps this lane's jobs
    in flight (the runner's ``limit``; ``None``: no cap of its own).
    """

    name: str
    fleet: Fleet
    connector: Connector
    tags: frozenset[str] = attrs.field(factory=frozenset, converter=_tag_set)
    run_untagged: bool = True
    limit: int | None = None
    options: JobOptions = attrs.field(factory=JobOptions)
    reload: Callable[[], Schedule] | None = None
    isolator: Isolator | None = None
    _slots: anyio.Semaphore | None = attrs.field(default=None, init=False, repr=False)
    _load: int = attrs.field(default=0, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"RunnerLane.limit must be >= 1 or None, got {self.limit}")
        if not isinstance(self.options, JobOptions):
            raise TypeError(
                f"RunnerLane.options: expected a JobOptions, got {type(self.options).__name__}"
            )
        self._slots = anyio.Semaphore(self.limit) if self.limit else None

    def takes(self, job: Job) -> bool:
        """Whether this lane may run ``job`` (by runner name, else by tags)."""
        if job.runner is not None:
            return job.runner == self.name
        if job.tags:
            return set(job.tags) <= self.tags
        return self.run_untagged


class InstanceExecutor:
    """Runs jobs on an autoscaled fleet; the composition root of fleetkit.

    Build it with :meth:`from_config` from a GitLab Runner ``config.toml``, or
    directly around a :class:`~fleetkit.fleet.Fleet` and a connector::

        async with InstanceExecutor.from_config("config.toml") as executor:
            result = await executor.run(job)
            async for result in executor.submit(jobs):
                print(result.name, result.status)

    ``concurrent`` caps the jobs in flight (GitLab's ``concurrent`` and the
    runner's ``limit``; ``None``: no cap beyond the fleet's). ``retries`` is
    how many times an attempt ending in a system failure is tried again.
    ``log_factory`` makes each attempt's log sink (default: the last 64 KiB in
    memory). ``options`` (:class:`~fleetkit.jobs.JobOptions`: builds
    directory, variables, shell, pre/post-build scripts, addresses in job
    logs, one build directory per instance) is passed to
    :func:`~fleetkit.jobs.run_job`; ``keep_build_dir`` keeps every job's build
    directory whatever the options say (``fleetkit run --keep-build-dir``).
    ``acquire_timeout`` (seconds) bounds the wait for a slot (default: the
    fleet's). ``reload`` gives the schedule :meth:`reload` applies
    (``from_config`` re-reads the file).
    ``isolator`` (VM isolation) runs each job in a VM of its own on its slot:
    the job's image is checked before a slot is taken (a refused or missing
    image fails the job at once), and failing to reach the nesting daemon or
    to create the VM is a system failure of the instance, retried elsewhere.
    The executor closes the isolator.

    Several runners (GitLab Runner serves every ``[[runners]]`` of a config in
    one process): :meth:`serving` takes one :class:`RunnerLane` each, with a
    fleet of its own, under one ``concurrent``; ``from_config`` builds them all
    when no ``runner`` is named. Each job goes to a lane that takes it
    (:meth:`route`); a job none takes is refused before anything runs.
    """

    def __init__(
        self,
        fleet: Fleet,
        connector: Connector,
        *,
        concurrent: int | None = None,
        retries: int = 1,
        log_factory: LogFactory = _memory_logs,
        options: JobOptions | None = None,
        keep_build_dir: bool = False,
        acquire_timeout: DurationLike | None = None,
        reload: Callable[[], Schedule] | None = None,
        isolator: Isolator | None = None,
    ) -> None:
        lane = RunnerLane(
            name=fleet.name,
            fleet=fleet,
            connector=connector,
            options=JobOptions() if options is None else options,
            reload=reload,
            isolator=isolator,
        )
        self._setup(
            (lane,),
            concurrent=concurrent,
            retries=retries,
            log_factory=log_factory,
            keep_build_dir=keep_build_dir,
            acquire_timeout=acquire_timeout,
        )

    @classmethod
    def serving(
        cls,
        lanes: Iterable[RunnerLane],
        *,
        concurrent: int | None = None,
        retries: int = 1,
        log_factory: LogFactory = _memory_logs,
        keep_build_dir: bool = False,
        acquire_timeout: DurationLike | None = None,
    ) -> InstanceExecutor:
        """An executor for several runners, each with its own fleet, all under
        ``concurrent`` (GitLab's global ``concurrent``; each lane's ``limit``
        caps its own jobs)."""
        executor = cls.__new__(cls)
        executor._setup(
            tuple(lanes),
            concurrent=concurrent,
            retries=retries,
            log_factory=log_factory,
            keep_build_dir=keep_build_dir,
            acquire_timeout=acquire_timeout,
        )
        return executor

    def _setup(
        self,
        lanes: tuple[RunnerLane, ...],
        *,
        concurrent: int | None,
        retries: int,
        log_factory: LogFactory,
        keep_build_dir: bool,
        acquire_timeout: DurationLike | None,
    ) -> None:
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise TypeError(f"InstanceExecutor.retries: expected an integer, got {retries!r}")
        if retries < 0:
            raise ValueError(f"InstanceExecutor.retries: must be >= 0, got {retries}")
        if concurrent is not None and (
            not isinstance(concurrent, int) or isinstance(concurrent, bool) or concurrent < 1
        ):
            raise ValueError(
                f"InstanceExecutor.concurrent: must be an integer >= 1, got {concurrent!r}"
            )
        if not callable(log_factory):
            raise TypeError(
                "InstanceExecutor.log_factory: expected a function (job, attempt) -> LogSink"
            )
        if not lanes:
            raise ValueError("an executor needs at least one runner lane")
        names = [lane.name for lane in lanes]
        if len(set(names)) != len(names):
            raise ValueError(f"runner lanes need distinct names, got {names}")
        self.lanes = lanes
        self.concurrent = concurrent
        self.retries = retries
        self.log_factory = log_factory
        self.keep_build_dir = keep_build_dir
        self.acquire_timeout = optional_duration(
            acquire_timeout, "InstanceExecutor.acquire_timeout", infinite=True
        )
        self.ledger = InstanceLedger()
        self._admission = anyio.Semaphore(concurrent if concurrent else 2**31 - 1)
        self._tg: TaskGroup | None = None
        self._keys = itertools.count(1)
        self._attempt_scopes: set[anyio.CancelScope] = set()
        self._stopping = False
        self._active = 0
        self._drained: anyio.Event | None = None
        self._queued = 0
        self._running = 0
        self._done = 0
        self._tally = JobTally()
        # Open result streams, closed at exit when a loop over one was left early.
        self._results: set[JobResults] = set()

    def __repr__(self) -> str:
        c = self.counts()
        names = ", ".join(repr(lane.name) for lane in self.lanes)
        return f"<InstanceExecutor {names} queued={c.queued} running={c.running} done={c.done}>"

    # The first (or only) runner's parts and options, as the one-runner
    # executor always had them.
    @property
    def fleet(self) -> Fleet:
        """The first runner's fleet (the only one, for a one-runner executor)."""
        return self.lanes[0].fleet

    @property
    def fleets(self) -> tuple[Fleet, ...]:
        """Every runner's fleet, in config order."""
        return tuple(lane.fleet for lane in self.lanes)

    @property
    def connector(self) -> Connector:
        """The first runner's connector."""
        return self.lanes[0].connector

    @property
    def options(self) -> JobOptions:
        """The first runner's job options."""
        return self.lanes[0].options

    @property
    def builds_dir(self) -> str:
        """The first runner's builds directory."""
        return self.lanes[0].options.builds_dir

    @property
    def variables(self) -> Mapping[str, str]:
        """The first runner's ``environment``."""
        return self.lanes[0].options.variables

    @property
    def common_build_dir(self) -> bool:
        """Whether the first runner's jobs share one build directory per instance."""
        return self.lanes[0].options.common_build_dir

    @property
    def isolator(self) -> Isolator | None:
        """The first runner's VM isolation, if any."""
        return self.lanes[0].isolator

    def route(self, job: Job) -> RunnerLane:
        """The lane that runs ``job``: of those that take it, the least busy (the
        first in config order on a tie). Raises :class:`~fleetkit.errors.ConfigError`
        naming the job when none does."""
        takers = [lane for lane in self.lanes if lane.takes(job)]
        if not takers:
            raise ConfigError([self._no_runner(job)])
        return min(takers, key=lambda lane: lane._load)

    def check_jobs(self, jobs: Iterable[Job]) -> None:
        """Raise :class:`~fleetkit.errors.ConfigError` listing every job no runner
        takes, before any of them runs."""
        problems = [
            self._no_runner(job) for job in jobs if not any(l.takes(job) for l in self.lanes)
        ]
        if problems:
            raise ConfigError(problems)

    def _no_runner(self, job: Job) -> Problem:
        where = f"job {job.name!r}"
        known = ", ".join(
            f"{lane.name!r}" + (f" (tags {', '.join(sorted(lane.tags))})" if lane.tags else "")
            for lane in self.lanes
        )
        if job.runner is not None:
            return Problem(f"{where}.runner", f"no runner named {job.runner!r} (runners: {known})")
        if job.tags:
            return Problem(
                f"{where}.tags", f"no runner has every tag of {sorted(job.tags)} (runners: {known})"
            )
        return Problem(where, f"has no tags and no runner takes untagged jobs (runners: {known})")

    @classmethod
    def from_config(
        cls,
        path: str | Path,
        runner: str | int | None = None,
        **overrides: object,
    ) -> InstanceExecutor:
        """Build provider, limits, schedule, connector and fleet from a ``config.toml``.

        ``runner`` picks a ``[[runners]]`` entry by name or index (default: the
        only one fleetkit drives). ``overrides`` are keyword arguments of
        :func:`fleetkit.executor.build` (``retries``, ``log_factory``,
        ``delete_instances_on_shutdown``, ...). Raises
        :class:`~fleetkit.errors.ConfigError` naming the TOML path of every
        problem, those the provider and connectors find included (a plugin
        that is not installed is one at ``runners[i].autoscaler.plugin``).
        """
        return build(path, runner, **overrides)  # type: ignore[arg-type]

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> Self:
        # A connector that cannot run on this loop is refused here, once,
        # rather than failing every job against healthy instances.
        try:
            for lane in self.lanes:
                check_event_loop(lane.connector)
        except BaseException:
            await self._close_connector()
            raise
        tg = anyio.create_task_group()
        await tg.__aenter__()
        entered: list[Fleet] = []
        try:
            for lane in self.lanes:
                await tg.start(self._follow_fleet, lane)
            for lane in self.lanes:
                await lane.fleet.__aenter__()
                entered.append(lane.fleet)
        except BaseException as exc:
            # Fleets already open are shut in reverse order. Not inside a scope
            # of ours: the task group must be left from the scope it was entered
            # in; its tasks end once their fleets have shut down.
            with anyio.CancelScope(shield=True):
                for fleet in reversed(entered):
                    await fleet.__aexit__(type(exc), exc, exc.__traceback__)
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            await self._close_connector()
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        tg, self._tg = self._tg, None
        try:
            self.stop()
            if exc is not None:
                # A loop over results left by this exception left them open;
                # after a clean exit they can still be read.
                for results in tuple(self._results):
                    results.close()
            with anyio.CancelScope(shield=True):
                # Cancelled attempts end their processes and clean up (bounded).
                if self._active:
                    self._drained = anyio.Event()
                    await self._drained.wait()
            # Not inside a scope of ours: the fleets' task groups were entered
            # outside it (and each fleet shields its own teardown). Last opened,
            # first shut.
            for lane in reversed(self.lanes):
                await lane.fleet.__aexit__(exc_type, exc, tb)
        finally:
            try:
                # The jobs have ended and the fleet's event stream with the
                # fleet. Not given the block's exception, which a task group
                # would wrap in an ExceptionGroup: it leaves `async with` as raised.
                await tg.__aexit__(None, None, None)
            finally:
                await self._close_connector()

    async def _close_connector(self) -> None:
        with anyio.CancelScope(shield=True):
            for lane in self.lanes:
                if lane.isolator is not None:
                    await lane.isolator.aclose()
                if isinstance(lane.connector, ClosingConnector):
                    await lane.connector.aclose()

    async def _follow_fleet(
        self, lane: RunnerLane, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        # Subscribed before the fleet opens, so instances adopted or created at
        # start are booked too; the stream ends when the fleet has shut down.
        async with lane.fleet.events(max_buffer=100_000) as events:
            task_status.started()
            async for event in events:
                self.ledger.record(event)
                if isinstance(event, InstanceDeleted):
                    await self._forget(lane, event.instance_id)

    async def _forget(self, lane: RunnerLane, instance_id: str) -> None:
        if isinstance(lane.connector, ForgetsInstances):
            with contextlib.suppress(ConnectorError):
                await lane.connector.forget(instance_id)

    # --- running jobs -------------------------------------------------------

    def counts(self) -> JobCounts:
        """Jobs queued (admission or slot), running, and done, right now."""
        return JobCounts(self._queued, self._running, self._done)

    def job_stats(self) -> JobStats:
        """Jobs queued and running now, finished by outcome and failure reason, and
        wait and duration histograms (for :func:`~fleetkit.executor.register_job_metrics`)."""
        return self._tally.stats(self._queued, self._running)

    def figures(self) -> LedgerFigures:
        """Instances created and deleted, and instance-seconds, so far."""
        return self.ledger.figures(anyio.current_time())

    async def run(self, job: Job, *, queued_at: float | None = None) -> JobResult:
        """Run ``job`` (retrying system failures) and return its final result.

        Raises :class:`~fleetkit.errors.FleetClosed` outside ``async with executor:``.
        """
        if self._tg is None:
            raise FleetClosed("the executor is not open: use `async with executor:`")
        _check_job(job, "run: job")
        self.check_jobs([job])
        return await self._run(job, queued_at)

    async def _run(self, job: Job, queued_at: float | None) -> JobResult:
        queued = anyio.current_time() if queued_at is None else queued_at
        # A job counts as queued whenever it is in here and not running.
        self._queued += 1
        self._active += 1
        try:
            if self._stopping:
                result = self._never_started(job, queued, "the executor is stopping")
                self._tally.record(result)
                return result
            lane = self.route(job)
            result = attrs.evolve(await self._in_lane(lane, job, queued), runner=lane.name)
            self._tally.record(result)
            return result
        finally:
            self._queued -= 1
            self._done += 1
            self._active -= 1
            if not self._active and self._drained is not None:
                self._drained.set()

    async def _in_lane(self, lane: RunnerLane, job: Job, queued: float) -> JobResult:
        # Counted from here, so that jobs submitted together spread over the
        # lanes that take them. Admission as GitLab's: the global concurrent,
        # then the runner's limit.
        lane._load += 1
        try:
            async with self._admission:
                if lane._slots is None:
                    return await self._attempts(lane, job, queued)
                async with lane._slots:
                    return await self._attempts(lane, job, queued)
        finally:
            lane._load -= 1

    def submit(self, jobs: Iterable[Job]) -> JobResults:
        """Start ``jobs`` and give their results as they finish.

        ``async for result in executor.submit(jobs)`` ends after the last
        result. Jobs run within ``concurrent`` (and the fleet's capacity), in
        the order given.
        """
        if self._tg is None:
            raise FleetClosed("the executor is not open: use `async with executor:`")
        batch = list(jobs)
        for index, job in enumerate(batch):
            _check_job(job, f"submit: jobs[{index}]")
        # A job no runner takes is refused before any job of the batch runs.
        self.check_jobs(batch)
        send, receive = anyio.create_memory_object_stream[JobResult](max(len(batch), 1))
        results = JobResults(receive, expected=len(batch))
        self._results = {r for r in self._results if not r.closed}
        self._results.add(results)
        self._tg.start_soon(self._feed, batch, send, results, name="executor feed")
        return results

    async def _feed(
        self, batch: list[Job], send: MemoryObjectSendStream[JobResult], results: JobResults
    ) -> None:
        queued = anyio.current_time()
        try:
            async with send, anyio.create_task_group() as tg:
                for job in batch:
                    tg.start_soon(self._run_into, job, queued, send.clone(), name=f"job {job.id}")
        except Exception as exc:
            # Every job's own failure is its result; this is fleetkit's bug.
            # The results stream says so instead of ending short in silence.
            logger.exception("executor: the batch failed")
            results._cause = exc

    async def _run_into(
        self, job: Job, queued: float, send: MemoryObjectSendStream[JobResult]
    ) -> None:
        async with send:
            result = await self._run(job, queued)
            with contextlib.suppress(anyio.BrokenResourceError):
                await send.send(result)  # unless the receiver stopped listening

    def stop(self) -> None:
        """Take no new job; cancel running attempts (reported as cancelled)."""
        self._stopping = True
        for scope in tuple(self._attempt_scopes):
            scope.cancel()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def reload(self) -> Schedule:
        """Re-read the idle policies and apply them from the fleet's next tick.

        Only policies are reloaded, as in GitLab Runner; other settings need a
        restart. Raises :class:`~fleetkit.errors.ConfigError` when the file is
        now invalid (the running policies stay).
        """
        if any(lane.reload is None for lane in self.lanes):
            raise FleetError("this executor was not built from a config file; use set_schedule")
        # Every runner's policies are read before any is applied: a file now
        # invalid leaves all of them as they were.
        fresh = [(lane, lane.reload()) for lane in self.lanes if lane.reload is not None]
        for lane, schedule in fresh:
            lane.fleet.set_schedule(schedule)
        return fresh[0][1]

    def set_schedule(self, schedule: Schedule | Policy) -> None:
        """Apply new idle policies to every runner's fleet without a restart."""
        for lane in self.lanes:
            lane.fleet.set_schedule(schedule)

    async def _attempts(self, lane: RunnerLane, job: Job, queued: float) -> JobResult:
        image: str | None = None
        if lane.isolator is not None:
            try:
                image = self._image(lane, job, lane.isolator)
            except ImageRejected as exc:
                return await self._refused(job, queued, exc)
        earlier: list[JobResult] = []
        for attempt in range(1, self.retries + 2):
            internal = False
            if self._stopping:
                result = self._never_started(job, queued, "the executor is stopping", attempt)
            else:
                result, internal = await self._attempt(lane, job, attempt, queued, image)
            # Only a failure of an instance is retried: when no slot came within
            # the acquire timeout, another wait as long would rarely end better,
            # and a programming error would only happen again.
            retry = (
                result.status is JobStatus.SYSTEM_FAILURE
                and result.instance_id is not None
                and not internal
            )
            if not retry or attempt > self.retries:
                return attrs.evolve(result, earlier=tuple(earlier))
            logger.warning(
                "job %s (%r) attempt %d: system failure on %s: %s; retrying",
                job.id,
                job.name,
                attempt,
                result.instance_id,
                result.message,
                extra={"job_id": job.id, "attempt": attempt, "instance_id": result.instance_id},
            )
            earlier.append(result)
        raise AssertionError("unreachable: the last attempt always returns")

    def _image(self, lane: RunnerLane, job: Job, isolator: Isolator) -> str:
        # The variables a user controls, plus the predefined ones known before
        # a slot is taken (GitLab expands the image with all of the job's).
        variables = {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_JOB_ID": str(job.id),
            "CI_JOB_NAME": job.name,
            **lane.options.variables,
            **job.environment(),
        }
        where = f"job {job.id} ({job.name!r})"
        return isolator.choose(job.image, variables, where=where, masked=job.masked_values).image

    async def _refused(self, job: Job, queued: float, exc: ImageRejected) -> JobResult:
        """A job whose image is refused or missing: failed before any slot or VM."""
        log = TeeLog(self.log_factory(job, 1))
        with anyio.CancelScope(shield=True):
            await log.write(f"ERROR: Job failed: {exc}\n")
        logger.warning("%s", exc, extra={"job_id": job.id})
        return self._unfinished(job, 1, queued, None, None, JobStatus.FAILED, str(exc), log)

    def _options(self, lane: RunnerLane) -> JobOptions:
        # The executor's keep_build_dir (the CLI's --keep-build-dir) wins over a lane's.
        if self.keep_build_dir and not lane.options.keep_build_dir:
            return attrs.evolve(lane.options, keep_build_dir=True)
        return lane.options

    async def _attempt(
        self, lane: RunnerLane, job: Job, attempt: int, queued: float, image: str | None = None
    ) -> tuple[JobResult, bool]:
        """One attempt's result, and whether it ended in a programming error."""
        key = f"job-{job.id}-{attempt}-{next(self._keys)}"
        log: TeeLog | None = None
        internal = False
        result: JobResult | None = None
        where: tuple[str, int] | None = None
        started: float | None = None
        with anyio.CancelScope() as scope:
            self._attempt_scopes.add(scope)
            try:
                log = TeeLog(self.log_factory(job, attempt))
                async with lane.fleet.acquire(key, timeout=self.acquire_timeout) as slot:
                    where = (slot.instance_id, slot.number)
                    started = anyio.current_time()
                    self._queued -= 1
                    self._running += 1
                    connector = lane.connector
                    if lane.isolator is not None and image is not None:
                        connector = lane.isolator.connector_for(
                            connector, slot=slot.number, image=image, note=log.write
                        )
                    try:
                        result = await run_job(
                            slot,
                            job,
                            connector,
                            log=log,
                            options=self._options(lane),
                            queued_at=queued,
                            attempt=attempt,
                        )
                    finally:
                        self._running -= 1
                        self._queued += 1
            except InstanceLost as exc:
                result = self._unfinished(
                    job, attempt, queued, started, where, JobStatus.SYSTEM_FAILURE, str(exc), log
                )
            except AcquireTimeout as exc:
                result = self._unfinished(
                    job, attempt, queued, None, None, JobStatus.SYSTEM_FAILURE, str(exc), log
                )
            except FleetClosed as exc:
                result = self._unfinished(
                    job, attempt, queued, started, where, JobStatus.CANCELLED, str(exc), log
                )
            except Exception as exc:
                # A bug (fleetkit's, a connector's, a log sink's): this job's
                # result, with the traceback in the log; the other jobs go on.
                logger.exception(
                    "job %s (%r) attempt %d: internal error",
                    job.id,
                    job.name,
                    attempt,
                    extra={"job_id": job.id, "attempt": attempt},
                )
                internal = True
                result = self._unfinished(
                    job,
                    attempt,
                    queued,
                    started,
                    where,
                    JobStatus.SYSTEM_FAILURE,
                    f"internal error: {_describe(exc)}",
                    log,
                )
            finally:
                self._attempt_scopes.discard(scope)
        if result is None:
            # Our scope caught the cancel: stop() was called during the attempt.
            result = self._unfinished(
                job, attempt, queued, started, where, JobStatus.CANCELLED, "stopped", log
            )
        return result, internal

    def _unfinished(
        self,
        job: Job,
        attempt: int,
        queued: float,
        started: float | None,
        where: tuple[str, int] | None,
        status: JobStatus,
        message: str,
        log: TeeLog | None,
    ) -> JobResult:
        return JobResult(
            job_id=job.id,
            name=job.name,
            status=status,
            queued_at=queued,
            started_at=started,
            finished_at=anyio.current_time(),
            instance_id=where[0] if where else None,
            slot=where[1] if where else None,
            log=log.location if log is not None else None,
            output=log.tail.text if log is not None else "",
            attempt=attempt,
            allow_failure=job.allow_failure,
            message=message,
        )

    def _never_started(self, job: Job, queued: float, message: str, attempt: int = 1) -> JobResult:
        return JobResult(
            job_id=job.id,
            name=job.name,
            status=JobStatus.CANCELLED,
            queued_at=queued,
            finished_at=anyio.current_time(),
            attempt=attempt,
            allow_failure=job.allow_failure,
            message=message,
        )


def build(
    path: str | Path,
    runner: str | int | None = None,
    *,
    retries: int = 1,
    log_factory: LogFactory = _memory_logs,
    delete_instances_on_shutdown: bool | None = None,
    keep_build_dir: bool = False,
    acquire_timeout: float | None = None,
    settings: Mapping[str, Any] | None = None,
) -> InstanceExecutor:
    """Build the executor for the config at ``path``, from the parts
    :func:`~fleetkit.executor._compose.compose` makes (its arguments
    ``delete_instances_on_shutdown`` and ``settings`` are passed on); the rest
    are :class:`InstanceExecutor`'s.

    ``runner`` names one ``[[runners]]`` entry (by name or index). Without
    it, every runner fleetkit drives is served, each with its own fleet, under
    the global ``concurrent`` (each runner's ``limit`` caps its own jobs).
    """
    if runner is None:
        config = load(path)
        driven = [index for index, _ in config.autoscaled_runners()]
        if len(driven) > 1:
            return _build_several(
                path,
                config.concurrent,
                driven,
                retries=retries,
                log_factory=log_factory,
                delete_instances_on_shutdown=delete_instances_on_shutdown,
                keep_build_dir=keep_build_dir,
                acquire_timeout=acquire_timeout,
                settings=settings,
            )
    parts = compose(
        path, runner, delete_instances_on_shutdown=delete_instances_on_shutdown, settings=settings
    )
    return InstanceExecutor.serving(
        [_lane(parts, limit=None)],
        concurrent=parts.concurrent,
        retries=retries,
        log_factory=log_factory,
        keep_build_dir=keep_build_dir,
        acquire_timeout=acquire_timeout,
    )


def _lane(parts: Composition, *, limit: int | None) -> RunnerLane:
    return RunnerLane(
        name=parts.name or parts.fleet.name,
        fleet=parts.fleet,
        connector=parts.connector,
        tags=parts.tags,
        run_untagged=parts.run_untagged,
        limit=limit,
        options=parts.options,
        reload=parts.reload,
        isolator=parts.isolator,
    )


def _build_several(
    path: str | Path,
    concurrent: int | None,
    indexes: list[int],
    *,
    delete_instances_on_shutdown: bool | None,
    settings: Mapping[str, Any] | None,
    **options: Any,
) -> InstanceExecutor:
    # Every runner's parts are checked before any is kept: one report names
    # every problem of every runner.
    problems: list[Problem] = []
    composed: list[Composition] = []
    for index in indexes:
        try:
            composed.append(
                compose(
                    path,
                    index,
                    delete_instances_on_shutdown=delete_instances_on_shutdown,
                    settings=settings,
                )
            )
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems, source=str(path))
    if concurrent is None:
        # GitLab requires concurrent; without it, the runners' capacities together.
        slots = [parts.max_slots for parts in composed]
        concurrent = sum(s for s in slots if s) if all(slots) else None
    return InstanceExecutor.serving(
        [_lane(parts, limit=parts.limit) for parts in composed], concurrent=concurrent, **options
    )
