"""The end-of-run summary of `fleetkit run`: counts, exit-status blockers, wait percentiles."""

from __future__ import annotations

from fleetkit.cli._common import percentile
from fleetkit.cli.run import summarize
from fleetkit.executor import LedgerFigures
from fleetkit.jobs import JobResult, JobStatus


def _result(
    job_id: int,
    status: JobStatus,
    *,
    wait: float | None = 1.0,
    allow_failure: bool = False,
    earlier: tuple[JobResult, ...] = (),
) -> JobResult:
    return JobResult(
        job_id=job_id,
        name=f"job {job_id}",
        status=status,
        queued_at=0.0,
        started_at=None if wait is None else wait,
        finished_at=100.0,
        allow_failure=allow_failure,
        earlier=earlier,
    )


def test_percentile_is_nearest_rank() -> None:
    """p50 and p95 pick real samples by nearest rank; no samples give None."""
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def test_summary_counts_and_blocking_jobs() -> None:
    """Allowed failures do not block; failures, timeouts and exhausted system failures do."""
    lost = _result(5, JobStatus.SYSTEM_FAILURE, wait=2.0)
    results = [
        _result(1, JobStatus.SUCCESS, wait=1.0),
        _result(2, JobStatus.FAILED, wait=3.0, allow_failure=True),
        _result(3, JobStatus.TIMED_OUT, wait=5.0),
        _result(4, JobStatus.CANCELLED, wait=None),
        _result(5, JobStatus.SUCCESS, wait=4.0, earlier=(lost,)),
        _result(6, JobStatus.SYSTEM_FAILURE, wait=2.0),
    ]
    figures = LedgerFigures(created=3, deleted=3, live=0, instance_seconds=90.0)
    summary = summarize(results, figures, 12.5, interrupted=False)
    assert (summary.total, summary.ok, summary.failed, summary.allowed_failures) == (6, 2, 2, 1)
    assert (summary.cancelled, summary.system_failures, summary.retried) == (1, 1, 1)
    assert summary.blocking == 3  # timed out, system failure, cancelled
    assert (summary.wait_p50, summary.wait_p95) == (3.0, 5.0)
    assert summary.instance_minutes == 1.5
    assert summary.to_dict()["instances_created"] == 3
