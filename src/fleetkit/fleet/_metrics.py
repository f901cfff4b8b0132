"""Prometheus collectors under GitLab's metric names (spec §5), optional.

``register_metrics(fleet)`` needs the ``metrics`` extra (prometheus_client). The
collector holds no state of its own: each scrape reads :meth:`Fleet.stats`, so
the figures a scrape shows and ``stats()`` are the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fleetkit.fleet._stats import FleetStats, HistogramSnapshot

if TYPE_CHECKING:
    from fleetkit.fleet._fleet import Fleet

__all__ = ["FleetCollector", "register_metrics"]

_TASKSCALER = "fleeting_taskscaler"
_PROVISIONER = "fleeting_provisioner"

# stats key -> (metric name, help)
_HISTOGRAMS = {
    "instance_creation_time_seconds": (
        f"{_PROVISIONER}_instance_creation_time_seconds",
        "Request to first sighting.",
    ),
    "instance_is_running_time_seconds": (
        f"{_PROVISIONER}_instance_is_running_time_seconds",
        "Request to running.",
    ),
    "instance_deletion_time_seconds": (
        f"{_PROVISIONER}_instance_deletion_time_seconds",
        "Deletion request to gone.",
    ),
    "instance_life_duration_seconds": (
        f"{_PROVISIONER}_instance_life_duration_seconds",
        "First sighting to gone.",
    ),
    "instance_readiness_time_seconds": (
        f"{_TASKSCALER}_task_instance_readiness_time_seconds",
        "Creation to ready-up done.",
    ),
}


def histogram_family(
    name: str, doc: str, labels: Mapping[str, str], snap: HistogramSnapshot
) -> Any:
    """A Prometheus histogram family of one snapshot, with constant ``labels``."""
    core = _require()
    family = core.HistogramMetricFamily(name, doc, labels=list(labels))
    buckets = [
        (repr(float(bound)), count)
        for bound, count in zip(snap.buckets, snap.cumulative, strict=False)
    ]
    buckets.append(("+Inf", snap.cumulative[-1]))
    family.add_metric(list(labels.values()), buckets, snap.sum)
    return family


def _require() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "fleetkit metrics need prometheus_client: pip install 'fleetkit[metrics]'"
        ) from exc
    return core


class FleetCollector:
    """A prometheus_client collector reading one fleet's :class:`FleetStats`.

    ``labels`` become constant labels on every family (GitLab uses ``runner``,
    ``runner_name`` and ``system_id``).
    """

    def __init__(self, fleet: Fleet, labels: Mapping[str, str] | None = None) -> None:
        self._fleet = fleet
        self._labels = dict(labels or {})
        self._core = _require()

    def describe(self) -> list[Any]:
        """No up-front description: families are built at collect time."""
        return []

    def collect(self) -> Iterator[Any]:
        """One family per GitLab metric, from the fleet's stats now."""
        yield from self.families(self._fleet.stats())

    def families(self, stats: FleetStats) -> Iterator[Any]:
        """The metric families for ``stats``."""
        core = self._core
        names = list(self._labels)
        values = list(self._labels.values())

        def gauge(name: str, doc: str, value: float) -> Any:
            family = core.GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def by_label(kind: Any, name: str, doc: str, label: str, figures: Mapping[str, int]) -> Any:
            family = kind(name, doc, labels=[*names, label])
            for key, value in sorted(figures.items()):
                family.add_metric([*values, key], value)
            return family

        yield by_label(
            core.GaugeMetricFamily,
            f"{_TASKSCALER}_tasks",
            "Slots by state.",
            "state",
            stats.tasks,
        )
        yield gauge(
            f"{_TASKSCALER}_max_tasks_per_instance",
            "capacity_per_instance.",
            stats.capacity_per_instance,
        )
        yield gauge(
            f"{_TASKSCALER}_max_use_count_per_instance", "max_use_count.", stats.max_use_count
        )
        yield gauge(
            f"{_TASKSCALER}_desired_instances",
            "Instances the scaler wants now.",
            stats.desired_instances,
        )
        yield by_label(
            core.CounterMetricFamily,
            f"{_TASKSCALER}_task_operations",
            "Reserve, acquire and release operations.",
            "operation",
            stats.task_operations,
        )
        yield by_label(
            core.CounterMetricFamily,
            f"{_TASKSCALER}_scale_operations",
            "Scale up and down operations.",
            "operation",
            stats.scale_operations,
        )
        yield by_label(
            core.GaugeMetricFamily,
            f"{_PROVISIONER}_instances",
            "Instances by state.",
            "state",
            stats.instances,
        )
        yield gauge(f"{_PROVISIONER}_max_instances", "max_instances.", stats.max_instances)
        yield by_label(
            core.CounterMetricFamily,
            f"{_PROVISIONER}_instance_operations",
            "Provider operations.",
            "operation",
            stats.instance_operations,
        )
        yield by_label(
            core.CounterMetricFamily,
            f"{_PROVISIONER}_internal_operations",
            "Calls to the instance group by verb; failed ones as <verb>_failure.",
            "operation",
            stats.internal_operations,
        )
        missed = core.CounterMetricFamily(
            f"{_PROVISIONER}_missed_updates", "Failed update cycles.", labels=names
        )
        missed.add_metric(values, stats.missed_updates)
        yield missed
        for key, (name, doc) in _HISTOGRAMS.items():
            yield histogram_family(name, doc, self._labels, stats.histograms[key])


def register_metrics(
    fleet: Fleet, registry: Any = None, labels: Mapping[str, str] | None = None
) -> FleetCollector:
    """Register a :class:`FleetCollector` for ``fleet`` on ``registry`` (default:
    prometheus_client's global registry) and return it."""
    core = _require()
    collector = FleetCollector(fleet, labels)
    (registry if registry is not None else core.REGISTRY).register(collector)
    return collector
