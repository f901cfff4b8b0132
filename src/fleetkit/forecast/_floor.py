"""From expected arrivals to slots to ask for now: the lead and the floor.

A job that arrives finds a slot at once only if the instance holding it was
asked for a boot time earlier. So the slots wanted *now* are the most the
forecast wants at any moment from now until one lead (boot time plus a poll)
ahead. Busy slots follow Little's law (arrivals per second times the mean job
duration), plus a margin of ``margin`` standard deviations of a Poisson count.

The floor only ever raises the idle target (``plan(demand_floor=)``): the
reactive policy still decides everything else, and no instance is removed
because of a forecast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol

from fleetkit.forecast._model import HOUR, DemandModel

__all__ = [
    "Readiness",
    "batch_dispersion",
    "demand_floor",
    "lead_from_histogram",
    "lead_from_samples",
]


class Readiness(Protocol):
    """A cumulative histogram of boot (readiness) seconds, as
    :class:`fleetkit.fleet.HistogramSnapshot` is."""

    @property
    def buckets(self) -> tuple[float, ...]: ...

    @property
    def cumulative(self) -> tuple[int, ...]: ...

    @property
    def count(self) -> int: ...


def lead_from_samples(
    seconds: Sequence[float], *, quantile: float = 0.9, extra: float = 60.0
) -> float:
    """How far ahead to ask for capacity: the ``quantile`` of measured boot times
    plus ``extra`` seconds (the fleet's poll and planning delay). No samples: ``extra``."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    if not seconds:
        return extra
    ordered = sorted(seconds)
    index = min(math.ceil(quantile * len(ordered)) - 1, len(ordered) - 1)
    return max(ordered[max(index, 0)], 0.0) + extra


def lead_from_histogram(
    readiness: Readiness, *, quantile: float = 0.9, extra: float = 60.0
) -> float:
    """:func:`lead_from_samples` from the fleet's readiness histogram
    (``fleet.stats().histograms["instance_readiness_time_seconds"]``): the upper
    bound of the bucket holding the quantile (the last finite bound if beyond)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    if readiness.count <= 0 or not readiness.buckets:
        return extra
    wanted = quantile * readiness.count
    for bound, cumulative in zip(readiness.buckets, readiness.cumulative, strict=False):
        if cumulative >= wanted:
            return bound + extra
    return readiness.buckets[-1] + extra


def batch_dispersion(arrivals: Sequence[float], *, window: float = 1.0) -> float:
    """``E[n^2] / E[n]`` over batches of arrivals, a batch being arrivals less than
    ``window`` seconds after the previous one (1.0 without any batch)."""
    ordered = sorted(arrivals)
    if not ordered:
        return 1.0
    squares = 0
    size = 1
    for previous, current in itertools.pairwise(ordered):
        if current - previous < window:
            size += 1
        else:
            squares += size * size
            size = 1
    squares += size * size
    return max(squares / len(ordered), 1.0)


def demand_floor(
    model: DemandModel,
    now: float,
    *,
    lead: float,
    mean_duration: float,
    max_slots: int,
    margin: float = 1.0,
    dispersion: float = 1.0,
) -> int:
    """Slots the fleet should hold at ``now`` (POSIX seconds): the most busy slots
    the model expects from ``now`` to ``now + lead``, at least 0, at most
    ``max_slots`` (``max_instances * capacity_per_instance``; 0: no bound).

    ``dispersion`` widens the margin for jobs that arrive in batches (a
    pipeline's parallel jobs): the variance over the mean of the count, which
    is ``E[n^2] / E[n]`` for batches of ``n`` (1 for single arrivals)."""
    if lead < 0 or mean_duration < 0 or margin < 0 or max_slots < 0 or not dispersion >= 1:
        raise ValueError(
            "lead, mean_duration, margin and max_slots must be >= 0 and dispersion >= 1, got "
            f"{lead!r}, {mean_duration!r}, {margin!r}, {max_slots!r}, {dispersion!r}"
        )
    # A job arriving in the window holds a slot for mean_duration, so the
    # hours it overlaps reach one job's length past the window too.
    reach = now + lead
    wanted = 0.0
    at = now
    while True:
        busy = model.rate(at) / HOUR * mean_duration
        wanted = max(wanted, busy + margin * math.sqrt(busy * dispersion))
        if at >= reach:
            break
        at = min(reach, (math.floor(at / HOUR) + 1) * HOUR)
    slots = math.ceil(wanted - 1e-9)
    slots = max(slots, 0)
    return min(slots, max_slots) if max_slots else slots
