"""Running one job on an acquired slot, through a connector.

The flow follows GitLab's instance executor (spec §3.3): connect to the
instance, prepare a build directory for this slot and job, upload the script
with its variables, run it while streaming the (masked) log to the sink, and
clean up. How it ends maps onto :class:`~fleetkit.jobs.JobStatus`: the
script's exit code (success or failed), the job's timeout (timed out: the
job's whole process group is ended, TERM then KILL), the caller's cancel
(cancelled; the job is ended the same way before the cancel goes on), and
anything that is not the job's fault, a lost instance or a broken connection
(system failure, which a caller may retry on another instance).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import anyio
import anyio.abc

import fleetkit
from fleetkit.connector import Connection, Connector, ExitStatus, RunningCommand
from fleetkit.errors import ConnectorError, ImageRejected, IsolationError
from fleetkit.jobs import _script
from fleetkit.jobs._job import Job, JobResult, JobStatus
from fleetkit.jobs._log import LogSink, TeeLog
from fleetkit.jobs._mask import Masker
from fleetkit.jobs._options import JobOptions
from fleetkit.jobs._slot import ExplainsLoss, JobSlot, LosableSlot
from fleetkit.model import ConnectInfo

__all__ = ["run_job"]

logger = logging.getLogger("fleetkit.jobs")

# Bounds for the steps around the script, which should each take moments.
_STEP_TIMEOUT = 60.0
_CLEANUP_TIMEOUT = 30.0
_BROKEN_CLEANUP_TIMEOUT = 5.0
# How long the output may keep coming after the script's shell has exited
# (a background process holding the pipe open is killed by run.sh).
_DRAIN_TIMEOUT = 5.0
# A job killed by a signal nobody here sent most often means its instance is
# going away (a cloud terminating it ends every process first): give the fleet
# this long to report the loss before calling it the job's own failure.
_LOSS_GRACE = 2.0
# A line longer than this goes to the log in pieces.
_LINE_LIMIT = 8192
# The wrapper's announcement line is short; more before a newline is not one.
_ANNOUNCE_LIMIT = 256
# Linux passes at most this many bytes per environment entry (NAME=value and
# its NUL) to a new program (MAX_ARG_STRLEN): a larger variable would make
# every command of the job fail with "Argument list too long".
_ENV_ENTRY_LIMIT = 131072


class _SystemFailure(Exception):
    """A step failed for a reason that is not the job's; ``str`` is safe to log."""


async def run_job(
    slot: JobSlot,
    job: Job,
    connector: Connector,
    *,
    log: LogSink,
    options: JobOptions | None = None,
    queued_at: float | None = None,
    attempt: int = 1,
) -> JobResult:
    """Run ``job`` on ``slot`` through ``connector`` and return how it ended.

    ``options`` (:class:`~fleetkit.jobs.JobOptions`; default: its defaults) says
    how: the build directory, ``builds_dir/INSTANCE/SLOT/JOB_ID`` on the
    instance (or ``builds_dir/INSTANCE/common`` with ``common_build_dir``),
    emptied first and removed afterwards unless ``keep_build_dir``; the
    ``variables`` every job sees; the addresses on the ``Dialing instance``
    line; the ``shell`` for a job that names none; the pre- and post-build
    scripts; the ``kill_grace``. The script sees GitLab's ``CI_*`` variables,
    ``FLEETKIT_INSTANCE_ID``/``FLEETKIT_SLOT``/``FLEETKIT_ATTEMPT``, then
    ``options.variables``, then the job's own. Masked values are replaced by
    ``[MASKED]`` before the log reaches ``log``.

    Past ``job.timeout`` the job's processes get TERM, and KILL
    ``options.kill_grace`` seconds later. When ``slot`` is a
    :class:`~fleetkit.jobs.LosableSlot`, losing its instance ends the job as a
    system failure, and failing to reach the instance is reported to the slot.
    Cancelling the caller ends the job's processes and cleans up (shielded,
    bounded) before the cancel goes on. ``queued_at`` (runtime clock) defaults
    to the start; ``attempt`` counts tries of the same job.

    The pre-build script, the job's and the post-build script run as one
    script, as GitLab Runner runs them, stopping at the first failure: a
    failed pre-build script fails the job before its script starts, and a
    failed job skips post-build.
    """
    started = anyio.current_time()
    tee = log if isinstance(log, TeeLog) else TeeLog(log)
    log = tee
    if options is None:
        options = JobOptions()
    elif not isinstance(options, JobOptions):
        raise TypeError(f"run_job: options must be a JobOptions, got {type(options).__name__}")
    run = _Run(
        slot,
        job,
        log,
        options.builds_dir,
        options.keep_build_dir,
        options.kill_grace,
        attempt,
        options.variables,
    )
    run.shell = job.shell or options.shell
    run.script = _script.user_script(
        job.script, options.pre_build_script, options.post_build_script
    )
    run.log_ips = (options.log_internal_ip, options.log_external_ip)
    if options.common_build_dir:
        run.relative = _script.relative_project_dir(
            slot.instance_id, slot.number, job.id, common=True
        )
    status, exit_code, message = await run.execute(connector)
    return JobResult(
        job_id=job.id,
        name=job.name,
        status=status,
        exit_code=exit_code,
        queued_at=started if queued_at is None else queued_at,
        started_at=started,
        finished_at=anyio.current_time(),
        instance_id=slot.instance_id,
        slot=slot.number,
        log=log.location,
        attempt=attempt,
        allow_failure=job.allow_failure,
        message=message,
        output=tee.tail.text,
    )


class _Run:
    """One attempt at a job: the state its steps share."""

    def __init__(
        self,
        slot: JobSlot,
        job: Job,
        log: LogSink,
        builds_dir: str,
        keep_build_dir: bool,
        kill_grace: float,
        attempt: int,
        variables: Mapping[str, str] | None,
    ) -> None:
        self.slot = slot
        self.job = job
        self.log = log
        self.builds_dir = builds_dir
        self.keep_build_dir = keep_build_dir
        self.kill_grace = kill_grace
        self.attempt = attempt
        self.variables = dict(variables or {})
        self.relative = _script.relative_project_dir(slot.instance_id, slot.number, job.id)
        self.shell = job.shell or "bash"
        self.script = job.script
        self.paths: _script.JobPaths | None = None
        # The job's session as its wrapper announced it; what ending the job signals.
        self.session: _script.JobSession | None = None
        self.timed_out = False
        self.cleanup_error: ConnectorError | None = None
        self.lost_scope: anyio.CancelScope | None = None
        self.connection_broke = False
        self.log_ips = (False, False)

    def _where(self) -> str:
        return f"job {self.job.id} ({self.job.name!r}) on {self.slot.instance_id} slot {self.slot.number}"

    async def execute(self, connector: Connector) -> tuple[JobStatus, int | None, str | None]:
        """Run every step; return status, exit code and a failure message."""
        await self.log.write(
            f"Running with fleetkit {fleetkit.__version__}\n"
            f"Running job {self.job.id} ({self.job.name}) on instance "
            f"{self.slot.instance_id} slot {self.slot.number}, attempt {self.attempt}\n"
        )
        info = self.slot.connect_info
        if info is None:
            return await self._system_failure("the slot has no connect info")
        oversized = oversized_variable(self._environment())
        if oversized is not None:
            # The job's own input; another instance would fail it the same way.
            await self.log.write(f"ERROR: Job failed: {oversized}\n")
            return JobStatus.FAILED, None, oversized
        with anyio.CancelScope() as lost_scope:
            self.lost_scope = lost_scope
            if isinstance(self.slot, LosableSlot):
                self.slot.attach(lost_scope)
            try:
                return await self._connected(connector, info)
            except _SystemFailure as exc:
                return await self._system_failure(str(exc))
            except ImageRejected as exc:
                # The job's (or its configuration's) fault, found before any VM
                # existed: a failure of the job, not of the instance.
                await self.log.write(f"ERROR: Job failed: {exc}\n")
                return JobStatus.FAILED, None, str(exc)
            except anyio.get_cancelled_exc_class():
                # The cancel goes on (the caller's, or the fleet's for a lost
                # instance); the log says which before it does.
                with anyio.CancelScope(shield=True):
                    if lost_scope.cancel_called:
                        await self._system_failure(self._lost_reason())
                    else:
                        await self.log.write("ERROR: Job cancelled\n")
                raise
        # Only a lost instance cancels lost_scope, and the handler above has
        # logged it already.
        reason = self._lost_reason()
        return JobStatus.SYSTEM_FAILURE, None, reason

    def _dialing(self, info: ConnectInfo) -> str:
        # GitLab's job-log line; the addresses only when configured (spec §1.2).
        text = info.id
        internal, external = self.log_ips
        if internal and info.internal_addr:
            text += f", internal IP: {info.internal_addr}"
        if external and info.external_addr:
            text += f", external IP: {info.external_addr}"
        return text

    def _lost_reason(self) -> str:
        error = self.slot.lost_error if isinstance(self.slot, ExplainsLoss) else None
        return str(error) if error is not None else "the instance was lost"

    async def _system_failure(self, reason: str) -> tuple[JobStatus, int | None, str | None]:
        logger.warning("%s: system failure: %s", self._where(), reason)
        with anyio.CancelScope(shield=True):
            await self.log.write(f"ERROR: Job failed (system failure): {reason}\n")
        return JobStatus.SYSTEM_FAILURE, None, reason

    async def _connected(
        self, connector: Connector, info: ConnectInfo
    ) -> tuple[JobStatus, int | None, str | None]:
        await self.log.write(f"Dialing instance {self._dialing(info)}...\n")
        try:
            async with connector.connect(info) as conn:
                await self.log.write(f"Instance {info.id} connected\n")
                try:
                    await self._prepare(conn)
                    status = await self._script(conn)
                except ConnectorError:
                    self.connection_broke = True
                    raise
                finally:
                    # Runs on cancel too: end the job's processes, remove its files.
                    with anyio.CancelScope(shield=True):
                        await self._cleanup(conn)
        except (ConnectorError, IsolationError) as exc:
            if isinstance(exc, ImageRejected):
                raise
            # No connection, no nesting daemon, no VM: the instance's health.
            if isinstance(self.slot, LosableSlot):
                self.slot.report_failure()
            raise _SystemFailure(f"{type(exc).__name__}: {exc}") from exc
        return await self._finish(status)

    async def _prepare(self, conn: Connection) -> None:
        script = _script.prepare_script(
            self.builds_dir, self.relative, self.shell, self.script, self._environment()
        )
        result = await conn.run("sh -s", stdin=script, timeout=_STEP_TIMEOUT)
        if not result.ok:
            # Two jobs cleaning and creating the same shared parents can race;
            # one retry settles it.
            result = await conn.run("sh -s", stdin=script, timeout=_STEP_TIMEOUT)
        if not result.ok:
            raise _SystemFailure(
                f"could not prepare the build directory: {result.stderr_text.strip()[-300:]}"
            )
        self.paths = _script.parse_prepared(result.stdout_text)

    def _environment(self) -> dict[str, str]:
        # CI_BUILDS_DIR and CI_PROJECT_DIR are set on the instance, where they
        # are known.
        job, slot = self.job, self.slot
        env = {
            "CI": "true",
            "GITLAB_CI": "true",
            "CI_SERVER": "yes",
            "CI_JOB_ID": str(job.id),
            "CI_JOB_NAME": job.name,
            "CI_JOB_TIMEOUT": str(int(job.timeout.total_seconds())),
            "CI_CONCURRENT_ID": str(slot.number),
            "CI_RUNNER_EXECUTABLE_ARCH": _arch(slot.connect_info),
            "FLEETKIT_INSTANCE_ID": slot.instance_id,
            "FLEETKIT_SLOT": str(slot.number),
            "FLEETKIT_ATTEMPT": str(self.attempt),
        }
        if job.image:
            env["CI_JOB_IMAGE"] = job.image
        env.update(self.variables)
        env.update(job.environment())
        return env

    async def _script(self, conn: Connection) -> ExitStatus | None:
        assert self.paths is not None
        masked = self.job.masked_values
        async with (
            conn.stream(_script.run_command(self.paths, self.shell)) as proc,
            anyio.create_task_group() as pumps,
        ):
            pumps.start_soon(self._pump, proc.stderr, Masker(masked), b"")
            first = await self._announced(proc.stdout)
            pumps.start_soon(self._pump, proc.stdout, Masker(masked), first)
            # Errors are caught inside the task group: one escaping it would
            # arrive wrapped in an ExceptionGroup.
            status, lost = await self._wait(conn, proc)
            # The output pipes close when the job's session ends.
            pumps.cancel_scope.deadline = anyio.current_time() + _DRAIN_TIMEOUT
        if lost is not None:
            raise lost
        return status

    async def _announced(self, stdout: anyio.abc.ByteReceiveStream) -> bytes:
        """Read the wrapper's announcement (the job's session) from the first
        line of output; return what followed it, which is the job's. Never
        raises (a raise here would arrive wrapped in an ExceptionGroup)."""
        buffer = b""
        with anyio.move_on_after(_STEP_TIMEOUT):
            try:
                while b"\n" not in buffer and len(buffer) <= _ANNOUNCE_LIMIT:
                    buffer += await stdout.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        line, _, rest = buffer.partition(b"\n")
        self.session = _script.parse_announcement(line)
        if self.session is None:
            # Not fleetkit's wrapper on the far side (a scripted connector, or
            # a wrapper that failed to start): everything is the job's output,
            # and ending the job is left to the connector. A job cannot cause
            # this: the announcement is printed before any of its code runs.
            logger.debug("%s: no session announced by the job's wrapper", self._where())
            return buffer
        return rest

    async def _wait(
        self, conn: Connection, proc: RunningCommand
    ) -> tuple[ExitStatus | None, ConnectorError | None]:
        try:
            with anyio.move_on_after(self.job.timeout.total_seconds()):
                return await proc.wait(), None
            self.timed_out = True
            await self._end(conn, proc)
            with anyio.move_on_after(self.kill_grace + _STEP_TIMEOUT):
                return await proc.wait(), None
            return None, None
        except ConnectorError as exc:
            return None, exc

    async def _pump(
        self, stream: anyio.abc.ByteReceiveStream, masker: Masker, first: bytes
    ) -> None:
        # Whole lines go to the log, so that stdout and stderr interleave by line.
        partial = ""
        try:
            async for chunk in _chunks(first, stream):
                partial += masker.feed(chunk)
                cut = partial.rfind("\n") + 1
                if cut == 0 and len(partial) < _LINE_LIMIT:
                    continue
                cut = cut or len(partial)
                text, partial = partial[:cut], partial[cut:]
                await self.log.write(text)
        except (ConnectorError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the wait() beside it reports the broken connection
        finally:
            with anyio.CancelScope(shield=True):
                tail = partial + masker.flush()
                if tail:
                    await self.log.write(tail if tail.endswith("\n") else tail + "\n")

    async def _end(self, conn: Connection, proc: RunningCommand) -> None:
        """TERM the job's session, then KILL it if it outlives the grace period."""
        assert self.paths is not None
        await conn.run(_script.kill_command(self.session, "TERM"), timeout=_STEP_TIMEOUT)
        with anyio.move_on_after(self.kill_grace):
            await proc.wait()
            return
        await conn.run(_script.kill_command(self.session, "KILL"), timeout=_STEP_TIMEOUT)

    async def _cleanup(self, conn: Connection) -> None:
        if self.paths is None:
            return
        if self.lost_scope is not None and self.lost_scope.cancel_called:
            return  # the instance is gone, and its files with it
        command = _script.cleanup_command(
            self.paths, self.relative, keep_project=self.keep_build_dir, session=self.session
        )
        # Over a broken connection, one quick try: a dial to a dead instance
        # would otherwise retry until its timeout.
        limit = _BROKEN_CLEANUP_TIMEOUT if self.connection_broke else _CLEANUP_TIMEOUT
        with anyio.move_on_after(limit):
            try:
                # Ends whatever is left of the job (after a cancel), then removes files.
                await conn.run(command, timeout=_STEP_TIMEOUT)
            except ConnectorError as exc:
                self.cleanup_error = exc
                logger.warning("%s: cleanup failed: %s", self._where(), exc)

    async def _await_loss(self, slot: LosableSlot, signal: str | None) -> None:
        if await _wait_for_loss(slot):
            raise _SystemFailure(f"the job was killed by signal {signal} as its instance was lost")

    async def _finish(self, status: ExitStatus | None) -> tuple[JobStatus, int | None, str | None]:
        if self.timed_out:
            message = f"execution took longer than {self.job.timeout} (job timeout)"
            await self.log.write(f"ERROR: Job failed: {message}\n")
            return JobStatus.TIMED_OUT, None, message
        if status is None:
            raise _SystemFailure("the job's command did not report an exit status")
        if status.exit_code == 0:
            await self.log.write("Job succeeded\n")
            return JobStatus.SUCCESS, 0, None
        if status.exit_code is None and isinstance(self.slot, LosableSlot):
            await self._await_loss(self.slot, status.signal)
        if self.cleanup_error is not None:
            # The job failed and its instance cannot be reached any more: it
            # died under the job (which its processes dying with it shows as a
            # signal or a failure), so the failure is the instance's.
            if isinstance(self.slot, LosableSlot):
                self.slot.report_failure()
            raise _SystemFailure(
                f"the instance became unreachable during the job ({self.cleanup_error})"
            )
        if status.exit_code is None:
            message = f"killed by signal {status.signal}"
        else:
            message = f"exit code {status.exit_code}"
        await self.log.write(f"ERROR: Job failed: {message}\n")
        return JobStatus.FAILED, status.exit_code, message


async def _wait_for_loss(slot: LosableSlot) -> bool:
    """Whether ``slot`` is lost within the grace period."""
    with anyio.move_on_after(_LOSS_GRACE), anyio.CancelScope() as probe:
        slot.attach(probe)
        await anyio.sleep_forever()
    return probe.cancelled_caught


async def _chunks(first: bytes, stream: anyio.abc.ByteReceiveStream) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in stream:
        yield chunk


def oversized_variable(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot reach a program on Linux (naming the variable), or None."""
    for name, value in env.items():
        size = len(name.encode()) + len(value.encode()) + 2
        if size > _ENV_ENTRY_LIMIT:
            return (
                f"variable {name} is {size} bytes as NAME=value; Linux passes at most "
                f"{_ENV_ENTRY_LIMIT} bytes per variable to a program: pass it in a file instead"
            )
    return None


def _arch(info: ConnectInfo | None) -> str:
    return f"{info.os}/{info.arch}" if info is not None else "unknown"
