"""``fleetkit run CONFIG JOBS``: run a jobs file on the fleet a config.toml describes.

Shows the fleet while it works: with rich on a terminal, a live panel
(instances by state, jobs queued, running and done, the last finished jobs and
what happened to instances); otherwise one plain line per finished job and per
change of the fleet. Ends with a summary: jobs ok and failed, wait p50 and
p95, instance-minutes, instances created and deleted. ``--json`` prints one
JSON document (every result and the summary) instead.

Exit status: 0 when every job passed (succeeded, or failed while allowed to),
1 when a job not allowed to fail did not succeed or the input is invalid, 130
after Ctrl-C. Ctrl-C (or SIGTERM) takes no new job, ends the running ones and
deletes every instance the command made; SIGHUP reloads the idle policies.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from fleetkit._text import printable
from fleetkit.cli._common import (
    INTERRUPTED,
    add_fleet_arguments,
    fail,
    interruptible,
    percentile,
    run_async,
    runner_choice,
    seconds,
    watch_signals,
)
from fleetkit.errors import FleetkitError

if TYPE_CHECKING:
    # Imported where used, so that `fleetkit --help` loads no event loop.
    from fleetkit.cli._run_display import Display
    from fleetkit.cli._run_logs import JobLogs
    from fleetkit.executor import InstanceExecutor, LedgerFigures, MetricsServer
    from fleetkit.jobs import Job, JobResult

__all__ = ["Summary", "register", "run", "summarize"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``run`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "run",
        help="run a jobs file on the autoscaled fleet of a config.toml",
        description="Run the [[job]] tables of JOBS on the fleet CONFIG describes, showing "
        "the fleet grow and shrink, then a summary.",
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, help="path to config.toml")
    parser.add_argument("jobs", metavar="JOBS", type=Path, help="path to the jobs file (TOML)")
    add_fleet_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    parser.add_argument(
        "--logs", metavar="DIR", type=Path, help="write each job's log to DIR/job-ID-ATTEMPT.log"
    )
    parser.add_argument(
        "--retries",
        metavar="N",
        type=int,
        default=1,
        help="retry a job N times after a system failure of its instance (default 1)",
    )
    parser.add_argument(
        "--keep-build-dir", action="store_true", help="keep each job's build directory"
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain lines even when a terminal is attached"
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        type=_listen,
        help="serve Prometheus metrics (GitLab's names) here while the run lasts "
        "(default: the config's global listen_address, if set)",
    )
    parser.set_defaults(run=run)


def _listen(text: str) -> tuple[str, int]:
    from fleetkit.config._schema import parse_listen_address

    try:
        return parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@interruptible
def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from fleetkit.cli._run_display import choose_display, warnings_to
    from fleetkit.cli._run_logs import JobLogs, LogDirectoryError
    from fleetkit.config import load
    from fleetkit.executor import build
    from fleetkit.jobs import load_jobs

    if args.retries < 0:
        print("fleetkit run: --retries must be >= 0", file=sys.stderr)
        return 2
    try:
        jobs = load_jobs(args.jobs)
    except FleetkitError as exc:
        return fail("run", exc, 1)
    try:
        logs = JobLogs(args.logs)
    except LogDirectoryError as exc:
        return fail("run", f"--logs {args.logs}: {exc}", 2)
    try:
        executor = build(
            args.config,
            runner_choice(args.runner),
            retries=args.retries,
            log_factory=logs.open,
            keep_build_dir=args.keep_build_dir,
            delete_instances_on_shutdown=not args.keep_instances,
        )
        # A job no runner takes is refused before any instance is made.
        executor.check_jobs(jobs)
        listen = args.metrics_listen or load(args.config).listen_address
    except FleetkitError as exc:
        logs.close()
        return fail("run", exc, 1)
    display = choose_display(args, executor, total=len(jobs))
    try:
        with warnings_to(display):
            outcome = run_async(_main, executor, jobs, display, logs, listen)
    except FleetkitError as exc:
        display.close()
        return fail("run", exc, 1)
    finally:
        logs.close()
    results, interrupted, elapsed, figures = outcome
    summary = summarize(results, figures, elapsed, interrupted=interrupted)
    if args.json:
        json.dump(
            {"summary": summary.to_dict(), "jobs": [r.to_dict() for r in results]},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        print_summary(summary, results, logs, sys.stdout)
    if interrupted:
        return INTERRUPTED
    return 0 if summary.blocking == 0 else 1


async def _main(
    executor: InstanceExecutor,
    jobs: list[Job],
    display: Display,
    logs: JobLogs,
    listen: tuple[str, int] | None = None,
) -> tuple[list[JobResult], bool, float, LedgerFigures]:
    import contextlib

    import anyio

    display.begin(anyio.current_time())
    async with contextlib.AsyncExitStack() as stack:
        if listen is not None:
            server = _metrics_server(executor, listen)
            server.start()
            stack.push_async_callback(server.aclose)
            display.note(f"metrics on http://{listen[0]}:{server.port}/metrics")
        return await _run_jobs(executor, jobs, display, logs)


def _metrics_server(executor: InstanceExecutor, listen: tuple[str, int]) -> MetricsServer:
    from fleetkit.executor import MetricsServer

    # GitLab's `runner` label is a short token; a digest of the runner's identity
    # serves the same purpose without any part of the token.
    fleets = [
        (fleet, (fleet.settings.owner_id or fleet.name).removeprefix("fleetkit-")[:8], fleet.name)
        for fleet in executor.fleets
    ]
    # The executor's job figures go with its first runner's families.
    jobs = [executor.job_stats] + [None] * (len(fleets) - 1)
    return MetricsServer(listen, fleets, jobs=jobs)


async def _run_jobs(
    executor: InstanceExecutor, jobs: list[Job], display: Display, logs: JobLogs
) -> tuple[list[JobResult], bool, float, LedgerFigures]:
    import anyio

    results: list[JobResult] = []
    start = anyio.current_time()
    interrupted = False

    def on_signal(signum: signal.Signals) -> None:
        nonlocal interrupted
        if signum == signal.SIGHUP:
            try:
                executor.reload()
                display.note("policies reloaded")
            except FleetkitError as exc:
                display.note(f"reload failed, policies unchanged: {exc}")
            except Exception as exc:  # a reload must never end the run
                logging.getLogger("fleetkit").debug("reload failed", exc_info=True)
                display.note(f"reload failed, policies unchanged: {type(exc).__name__}: {exc}")
        elif not interrupted:
            interrupted = True
            display.note("interrupted: ending running jobs, deleting instances")
            executor.stop()
        else:
            display.note("already stopping; instances are being deleted")

    async with anyio.create_task_group() as watchers:
        # Signals are ours before the first instance can be made.
        await watchers.start(
            partial(watch_signals, on_signal, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        )
        watchers.start_soon(display.refresh_loop, start)
        try:
            async with executor:
                async with executor.submit(jobs) as stream:
                    async for result in stream:
                        results.append(result)
                        logs.finished(result)
                        display.finished(result)
                display.note("all jobs done; shutting the fleet down")
        finally:
            watchers.cancel_scope.cancel()
            display.close()
    return results, interrupted, anyio.current_time() - start, executor.figures()


@attrs.frozen
class Summary:
    """The end-of-run figures of ``fleetkit run``.

    ``blocking`` counts jobs that did not pass (not succeeded and not allowed
    to fail), which makes the exit status 1.
    """

    total: int
    ok: int
    failed: int
    allowed_failures: int
    cancelled: int
    system_failures: int
    retried: int
    blocking: int
    wait_p50: float | None
    wait_p95: float | None
    instances_created: int
    instances_deleted: int
    instance_minutes: float
    elapsed: float
    interrupted: bool

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return attrs.asdict(self)


def summarize(
    results: list[JobResult], figures: LedgerFigures, elapsed: float, *, interrupted: bool
) -> Summary:
    """The summary of ``results`` and the instance ledger's ``figures``."""
    from fleetkit.jobs import JobStatus

    def count(status: JobStatus, *, allowed: bool | None = None) -> int:
        return sum(
            1
            for r in results
            if r.status is status and (allowed is None or r.allow_failure == allowed)
        )

    failed_statuses = (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.SYSTEM_FAILURE)
    waits = [r.wait for r in results if r.wait is not None]
    return Summary(
        total=len(results),
        ok=count(JobStatus.SUCCESS),
        failed=sum(1 for r in results if r.status in failed_statuses and not r.allow_failure),
        allowed_failures=sum(1 for r in results if r.status in failed_statuses and r.allow_failure),
        cancelled=count(JobStatus.CANCELLED),
        system_failures=count(JobStatus.SYSTEM_FAILURE),
        retried=sum(len(r.earlier) for r in results),
        blocking=sum(1 for r in results if not r.passed),
        wait_p50=percentile(waits, 50),
        wait_p95=percentile(waits, 95),
        instances_created=figures.created,
        instances_deleted=figures.deleted,
        instance_minutes=figures.instance_minutes,
        elapsed=elapsed,
        interrupted=interrupted,
    )


def print_summary(summary: Summary, results: list[JobResult], logs: JobLogs, out: TextIO) -> None:
    """The human-readable summary, with the log tail of each failed job."""
    s = summary
    print(file=out)
    print(
        f"{s.total} jobs: {s.ok} ok, {s.failed} failed, {s.allowed_failures} failed (allowed), "
        f"{s.cancelled} cancelled" + (f"; {s.retried} attempts retried" if s.retried else ""),
        file=out,
    )
    print(f"wait p50 {seconds(s.wait_p50)}, p95 {seconds(s.wait_p95)}", file=out)
    print(
        f"instances: {s.instances_created} created, {s.instances_deleted} deleted, "
        f"{s.instance_minutes:.2f} instance-minutes",
        file=out,
    )
    print(f"wall time {s.elapsed:.1f}s" + (" (interrupted)" if s.interrupted else ""), file=out)
    for result in results:
        for attempt in (*result.earlier, result):
            if attempt.ok or attempt.status.value == "cancelled":
                continue
            allowed = " (allowed to fail)" if attempt.allow_failure else ""
            where = f" on {attempt.instance_id}" if attempt.instance_id else ""
            # The names and the log tail are others' text: a terminal gets
            # their control characters as escapes, never as commands.
            print(
                printable(
                    f"{attempt.status.value}{allowed}: {attempt.name} (job {attempt.job_id}, "
                    f"attempt {attempt.attempt}{where}): {attempt.message}"
                ),
                file=out,
            )
            for line in logs.tail(attempt.job_id, attempt.attempt, lines=5):
                print(f"    | {printable(line)}", file=out)
