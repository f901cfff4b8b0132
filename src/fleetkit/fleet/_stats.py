"""The fleet's figures without any metrics library: counters, histograms, a snapshot.

Names follow GitLab's metrics (spec §5) so that :mod:`fleetkit.fleet._metrics`
only has to translate :class:`FleetStats` into Prometheus families.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import attrs

from fleetkit._settings import FleetSettings
from fleetkit.fleet._table import Record
from fleetkit.model import InstanceState, Limits
from fleetkit.planner import classify

__all__ = [
    "DEFAULT_BUCKETS",
    "FleetStats",
    "Histogram",
    "HistogramSnapshot",
    "StatsBook",
    "count_slots",
]

#: Seconds; instance operations take from seconds to many minutes.
DEFAULT_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LIFE_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)


@attrs.frozen
class HistogramSnapshot:
    """Cumulative bucket counts (``le`` upper bounds, then ``+Inf``), sum and count."""

    buckets: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """A fixed-bucket histogram of seconds."""

    __slots__ = ("_counts", "buckets", "count", "sum")

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one value."""
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        """The histogram now, with cumulative counts as Prometheus reports them."""
        running, cumulative = 0, []
        for c in self._counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.buckets, tuple(cumulative), self.sum, self.count)


class StatsBook:
    """The counters and histograms the runtime updates as it works."""

    __slots__ = (
        "creation_time",
        "deletion_time",
        "instance_operations",
        "internal_operations",
        "is_running_time",
        "life_duration",
        "missed_updates",
        "readiness_time",
        "scale_operations",
        "task_operations",
    )

    def __init__(self, settings: FleetSettings | None = None) -> None:
        s = settings or FleetSettings()
        operation = s.instance_operation_time_buckets or DEFAULT_BUCKETS
        self.task_operations: Counter[str] = Counter()
        self.scale_operations: Counter[str] = Counter()
        self.instance_operations: Counter[str] = Counter()
        # Calls to the instance group by verb, failed ones as "<verb>_failure".
        self.internal_operations: Counter[str] = Counter()
        self.missed_updates = 0
        # GitLab: each operation histogram falls back to
        # instance_operation_time_buckets, the lifetime one to its own default.
        self.creation_time = Histogram(s.instance_creation_time_buckets or operation)
        self.is_running_time = Histogram(s.instance_is_running_time_buckets or operation)
        self.deletion_time = Histogram(s.instance_deletion_time_buckets or operation)
        self.readiness_time = Histogram(s.instance_readiness_time_buckets or operation)
        self.life_duration = Histogram(s.instance_life_duration_buckets or LIFE_BUCKETS)

    def histograms(self) -> dict[str, HistogramSnapshot]:
        """Every histogram now, under its GitLab name without the prefix."""
        return {
            "instance_creation_time_seconds": self.creation_time.snapshot(),
            "instance_is_running_time_seconds": self.is_running_time.snapshot(),
            "instance_deletion_time_seconds": self.deletion_time.snapshot(),
            "instance_readiness_time_seconds": self.readiness_time.snapshot(),
            "instance_life_duration_seconds": self.life_duration.snapshot(),
        }


_S = InstanceState


def count_slots(
    records: Iterable[Record], limits: Limits, requested: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Slots by GitLab task state (through :func:`fleetkit.planner.classify`,
    as the planner counts them) and instances by lifecycle state (plus
    ``requested``). ``pending`` and ``reserved`` are left at 0 for the caller."""
    idle = unready = unavailable = unhealthy = acquired = 0
    instances = {state.value: 0 for state in _S if state is not _S.DELETED}
    instances["requested"] = requested
    for record in records:
        state = record.state
        instances[state.value] += 1
        busy = len(record.slots)
        acquired += busy
        a, b, c, d = classify(state, busy, record.use_count, record.health_failures, limits)
        idle += a
        unready += b
        unavailable += c
        unhealthy += d
    tasks = {
        "idle": idle,
        "pending": 0,
        "reserved": 0,
        "acquired": acquired,
        "unavailable": unavailable,
        "unhealthy": unhealthy,
        "unready": unready + requested * limits.capacity_per_instance,
    }
    return tasks, instances


@attrs.frozen(kw_only=True)
class FleetStats:
    """The fleet's figures at one instant, under GitLab's names.

    ``tasks`` counts slots by state (idle, pending, reserved, acquired,
    unavailable, unhealthy, unready); ``instances`` counts instances by lifecycle
    state plus ``requested``. Counters are totals since the fleet started;
    ``events_dropped`` counts events a full subscriber buffer refused.
    """

    tasks: Mapping[str, int]
    instances: Mapping[str, int]
    desired_instances: int
    max_instances: int
    capacity_per_instance: int
    max_use_count: int
    task_operations: Mapping[str, int]
    scale_operations: Mapping[str, int]
    instance_operations: Mapping[str, int]
    missed_updates: int
    events_dropped: int
    histograms: Mapping[str, HistogramSnapshot]
    #: Calls to the instance group by verb (``update``, ``increase``, ...), and
    #: ``<verb>_failure`` for those that raised.
    internal_operations: Mapping[str, int] = attrs.field(factory=dict)
