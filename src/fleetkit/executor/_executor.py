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

from fleetkit._resource import AsyncResource
from fleetkit.connector import Connector, check_event_loop
from fleetkit.errors import (
    AcquireTimeout,
    ConnectorError,
    FleetClosed,
    FleetError,
    FleetkitError,
    ImageRejected,
    InstanceLost,
)
from fleetkit.executor._compose import compose
from fleetkit.executor._ledger import InstanceLedger, LedgerFigures
from fleetkit.fleet import Fleet, InstanceDeleted
from fleetkit.jobs import Job, JobResult, JobStatus, LogSink, MemoryLog, run_job
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
    memory). ``builds_dir``, ``keep_build_dir`` and ``variables`` are passed to
    :func:`~fleetkit.jobs.run_job`. ``acquire_timeout`` (seconds) bounds the
    wait for a slot (default: the fleet's). ``reload`` gives the schedule
    :meth:`reload` applies (``from_config`` re-reads the file).
    ``log_internal_ip`` / ``log_external_ip`` put instance addresses in job logs;
    ``common_build_dir`` gives all jobs on an instance one build directory.
    ``isolator`` (VM isolation) runs each job in a VM of its own on its slot:
    the job's image is checked before a slot is taken (a refused or missing
    image fails the job at once), and failing to reach the nesting daemon or
    to create the VM is a system failure of the instance, retried elsewhere.
    The executor closes the isolator.
    ``shell`` runs jobs that name no shell of their own (the runner's ``shell``,
    GitLab's default ``bash``); ``pre_build_script`` and ``post_build_script``
    run before and after each job's script, in that shell, as GitLab does.
    """

    def __init__(
        self,
        fleet: Fleet,
        connector: Connector,
        *,
        concurrent: int | None = None,
        retries: int = 1,
        log_factory: LogFactory = _memory_logs,
        builds_dir: str = "builds",
        keep_build_dir: bool = False,
        variables: Mapping[str, str] | None = None,
        acquire_timeout: float | None = None,
        reload: Callable[[], Schedule] | None = None,
        log_internal_ip: bool = False,
        log_external_ip: bool = False,
        common_build_dir: bool = False,
        isolator: Isolator | None = None,
        shell: str = "bash",
        pre_build_script: str | None = None,
        post_build_script: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if concurrent is not None and concurrent < 1:
            raise ValueError(f"concurrent must be >= 1, got {concurrent}")
        self.fleet = fleet
        self.connector = connector
        self.concurrent = concurrent
        self.retries = retries
        self.log_factory = log_factory
        self.builds_dir = builds_dir
        self.keep_build_dir = keep_build_dir
        self.variables = dict(variables or {})
        self.acquire_timeout = acquire_timeout
        self.log_internal_ip = log_internal_ip
        self.log_external_ip = log_external_ip
        self.common_build_dir = common_build_dir
        self.isolator = isolator
        self.shell = shell
        self.pre_build_script = pre_build_script
        self.post_build_script = post_build_script
        self.ledger = InstanceLedger()
        self._reload = reload
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
        # Open result streams, closed at exit when a loop over one was left early.
        self._results: set[JobResults] = set()

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"<InstanceExecutor {self.fleet.name!r} queued={c.queued} running={c.running} "
            f"done={c.done}>"
        )

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
            check_event_loop(self.connector)
        except BaseException:
            await self._close_connector()
            raise
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._follow_fleet)
            await self.fleet.__aenter__()
        except BaseException:
            # Not inside a scope of ours: the task group must be left from the
            # scope it was entered in. Its only task ends at once when cancelled.
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
            # Not inside a scope of ours: the fleet's task group was entered
            # outside it (and the fleet shields its own teardown).
            await self.fleet.__aexit__(exc_type, exc, tb)
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
            if self.isolator is not None:
                await self.isolator.aclose()
            close = getattr(self.connector, "aclose", None)
            if close is not None:
                await close()

    async def _follow_fleet(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # Subscribed before the fleet opens, so instances adopted or created at
        # start are booked too; the stream ends when the fleet has shut down.
        async with self.fleet.events(max_buffer=100_000) as events:
            task_status.started()
            async for event in events:
                self.ledger.record(event)
                if isinstance(event, InstanceDeleted):
                    await self._forget(event.instance_id)

    async def _forget(self, instance_id: str) -> None:
        forget = getattr(self.connector, "forget", None)
        if forget is not None:
            with contextlib.suppress(ConnectorError):
                await forget(instance_id)

    # --- running jobs -------------------------------------------------------

    def counts(self) -> JobCounts:
        """Jobs queued (admission or slot), running, and done, right now."""
        return JobCounts(self._queued, self._running, self._done)

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
        return await self._run(job, queued_at)

    async def _run(self, job: Job, queued_at: float | None) -> JobResult:
        queued = anyio.current_time() if queued_at is None else queued_at
        # A job counts as queued whenever it is in here and not running.
        self._queued += 1
        self._active += 1
        try:
            if self._stopping:
                return self._never_started(job, queued, "the executor is stopping")
            async with self._admission:
                return await self._attempts(job, queued)
        finally:
            self._queued -= 1
            self._done += 1
            self._active -= 1
            if not self._active and self._drained is not None:
                self._drained.set()

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
        if self._reload is None:
            raise FleetError("this executor was not built from a config file; use set_schedule")
        schedule = self._reload()
        self.fleet.set_schedule(schedule)
        return schedule

    def set_schedule(self, schedule: Schedule | Policy) -> None:
        """Apply new idle policies without a restart."""
        self.fleet.set_schedule(schedule)

    async def _attempts(self, job: Job, queued: float) -> JobResult:
        image: str | None = None
        if self.isolator is not None:
            try:
                image = self._image(job, self.isolator)
            except ImageRejected as exc:
                return await self._refused(job, queued, exc)
        earlier: list[JobResult] = []
        for attempt in range(1, self.retries + 2):
            internal = False
            if self._stopping:
                result = self._never_started(job, queued, "the executor is stopping", attempt)
            else:
                result, internal = await self._attempt(job, attempt, queued, image)
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

    def _image(self, job: Job, isolator: Isolator) -> str:
        # The variables a user controls, plus the predefined ones known before
        # a slot is taken (GitLab expands the image with all of the job's).
        variables = {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_JOB_ID": str(job.id),
            "CI_JOB_NAME": job.name,
            **self.variables,
            **job.environment(),
        }
        where = f"job {job.id} ({job.name!r})"
        return isolator.choose(job.image, variables, where=where, masked=job.masked_values).image

    async def _refused(self, job: Job, queued: float, exc: ImageRejected) -> JobResult:
        """A job whose image is refused or missing: failed before any slot or VM."""
        log = self.log_factory(job, 1)
        with anyio.CancelScope(shield=True):
            await log.write(f"ERROR: Job failed: {exc}\n")
        logger.warning("%s", exc, extra={"job_id": job.id})
        return self._unfinished(job, 1, queued, None, None, JobStatus.FAILED, str(exc), log)

    async def _attempt(
        self, job: Job, attempt: int, queued: float, image: str | None = None
    ) -> tuple[JobResult, bool]:
        """One attempt's result, and whether it ended in a programming error."""
        key = f"job-{job.id}-{attempt}-{next(self._keys)}"
        log: LogSink | None = None
        internal = False
        result: JobResult | None = None
        where: tuple[str, int] | None = None
        started: float | None = None
        with anyio.CancelScope() as scope:
            self._attempt_scopes.add(scope)
            try:
                log = self.log_factory(job, attempt)
                async with self.fleet.acquire(key, timeout=self.acquire_timeout) as slot:
                    where = (slot.instance_id, slot.number)
                    started = anyio.current_time()
                    self._queued -= 1
                    self._running += 1
                    connector = self.connector
                    if self.isolator is not None and image is not None:
                        connector = self.isolator.connector_for(
                            connector, slot=slot.number, image=image, note=log.write
                        )
                    try:
                        result = await run_job(
                            slot,
                            job,
                            connector,
                            log=log,
                            builds_dir=self.builds_dir,
                            keep_build_dir=self.keep_build_dir,
                            queued_at=queued,
                            attempt=attempt,
                            variables=self.variables,
                            log_internal_ip=self.log_internal_ip,
                            log_external_ip=self.log_external_ip,
                            common_build_dir=self.common_build_dir,
                            shell=self.shell,
                            pre_build_script=self.pre_build_script,
                            post_build_script=self.post_build_script,
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
        log: LogSink | None,
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
    """Build the executor for one runner of the config at ``path``, from the parts
    :func:`~fleetkit.executor._compose.compose` makes (its arguments
    ``delete_instances_on_shutdown`` and ``settings`` are passed on); the rest
    are :class:`InstanceExecutor`'s."""
    parts = compose(
        path, runner, delete_instances_on_shutdown=delete_instances_on_shutdown, settings=settings
    )
    return InstanceExecutor(
        parts.fleet,
        parts.connector,
        concurrent=parts.concurrent,
        retries=retries,
        log_factory=log_factory,
        builds_dir=parts.builds_dir,
        keep_build_dir=keep_build_dir,
        variables=parts.variables,
        acquire_timeout=acquire_timeout,
        reload=parts.reload,
        log_internal_ip=parts.log_internal_ip,
        log_external_ip=parts.log_external_ip,
        common_build_dir=parts.common_build_dir,
        isolator=parts.isolator,
        shell=parts.shell,
        pre_build_script=parts.pre_build_script,
        post_build_script=parts.post_build_script,
    )
