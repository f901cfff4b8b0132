"""Job-level figures of an executor, and their Prometheus collector.

:class:`JobStats` is what :meth:`InstanceExecutor.job_stats` returns: jobs
queued and running now, jobs finished by outcome and by GitLab failure reason,
and histograms of the wait (queued to started) and the duration (started to
finished) of the finished ones. Each job counts once, by its final attempt.

:class:`JobCollector` serves them beside the fleet's GitLab metrics
(``fleeting_*``): ``fleetkit_jobs{state}`` (queued, running),
``fleetkit_jobs_finished_total{outcome}``, GitLab Runner's own
``gitlab_runner_failed_jobs_total{failure_reason}``,
``fleetkit_job_wait_seconds`` and GitLab Runner's
``gitlab_runner_job_duration_seconds``. Like the fleet's collector it keeps
no state: each scrape reads :meth:`~InstanceExecutor.job_stats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from fleetkit.fleet import HistogramSnapshot
from fleetkit.fleet._metrics import _require, histogram_family
from fleetkit.fleet._stats import Histogram
from fleetkit.jobs import JobResult, JobStatus

__all__ = ["JobCollector", "JobStats", "register_job_metrics"]

#: Bucket bounds (seconds) of the wait and duration histograms.
JOB_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@attrs.frozen(kw_only=True)
class JobStats:
    """An executor's job figures at one moment (see the module)."""

    queued: int
    running: int
    finished: Mapping[str, int]
    failure_reasons: Mapping[str, int]
    wait: HistogramSnapshot
    duration: HistogramSnapshot

    @property
    def done(self) -> int:
        """Jobs finished, whatever their outcome."""
        return sum(self.finished.values())


class JobTally:
    """Records final results; :meth:`stats` freezes them with the live counts."""

    __slots__ = ("_duration", "_failures", "_finished", "_wait")

    def __init__(self, buckets: tuple[float, ...] = JOB_BUCKETS) -> None:
        self._finished: Counter[str] = Counter({s.value: 0 for s in JobStatus})
        self._failures: Counter[str] = Counter()
        self._wait = Histogram(buckets)
        self._duration = Histogram(buckets)

    def record(self, result: JobResult) -> None:
        """Count ``result``, a job's final attempt."""
        self._finished[result.status.value] += 1
        if result.failure_reason is not None:
            self._failures[result.failure_reason] += 1
        if result.wait is not None:
            self._wait.observe(result.wait)
        if result.duration is not None:
            self._duration.observe(result.duration)

    def stats(self, queued: int, running: int) -> JobStats:
        """The figures now."""
        return JobStats(
            queued=queued,
            running=running,
            finished=dict(self._finished),
            failure_reasons=dict(self._failures),
            wait=self._wait.snapshot(),
            duration=self._duration.snapshot(),
        )


class JobCollector:
    """A prometheus_client collector of one executor's :class:`JobStats`.

    ``read`` gives the figures (``executor.job_stats``, or a function that
    fetches them from the event loop); ``labels`` are constant labels on every
    family.
    """

    def __init__(self, read: Callable[[], JobStats], labels: Mapping[str, str] | None = None):
        self._read = read
        self._labels = dict(labels or {})

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        """Every family, from one read of the figures."""
        yield from self.families(self._read())

    def families(self, stats: JobStats) -> Iterator[Any]:
        """The metric families for ``stats``."""
        core = _require()
        names = [*self._labels, ""]
        values = list(self._labels.values())

        def gauge(name: str, doc: str, label: str, items: Mapping[str, int], kind: Any) -> Any:
            names[-1] = label
            family = kind(name, doc, labels=list(names))
            for key, count in sorted(items.items()):
                family.add_metric([*values, key], count)
            return family

        yield gauge(
            "fleetkit_jobs",
            "Jobs by state: waiting for admission or a slot, running.",
            "state",
            {"queued": stats.queued, "running": stats.running},
            core.GaugeMetricFamily,
        )
        yield gauge(
            "fleetkit_jobs_finished",
            "Jobs finished, by outcome (their final attempt's status).",
            "outcome",
            stats.finished,
            core.CounterMetricFamily,
        )
        yield gauge(
            "gitlab_runner_failed_jobs",
            "Jobs failed, by GitLab's failure reason.",
            "failure_reason",
            stats.failure_reasons,
            core.CounterMetricFamily,
        )
        for name, doc, snap in (
            ("fleetkit_job_wait_seconds", "Queued to started.", stats.wait),
            ("gitlab_runner_job_duration_seconds", "Started to finished.", stats.duration),
        ):
            yield histogram_family(name, doc, self._labels, snap)


def register_job_metrics(
    executor: Any, registry: Any = None, labels: Mapping[str, str] | None = None
) -> JobCollector:
    """Register a :class:`JobCollector` for ``executor`` (an
    :class:`~fleetkit.executor.InstanceExecutor`) on ``registry`` (default:
    prometheus_client's global registry) and return it. Needs the ``metrics`` extra."""
    core = _require()
    collector = JobCollector(executor.job_stats, labels)
    (registry if registry is not None else core.REGISTRY).register(collector)
    return collector
