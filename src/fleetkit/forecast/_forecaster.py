"""A model kept up to date as jobs arrive: what a fleet's controller holds."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fleetkit.forecast._floor import batch_dispersion, demand_floor
from fleetkit.forecast._model import HOUR, DemandModel, hourly_counts

__all__ = ["Forecaster"]


class Forecaster:
    """Arrivals in, slot floor out: a :class:`DemandModel` fed hour by hour.

    ``record(at, duration)`` notes a job (POSIX seconds; its duration once
    known, for the mean). ``floor(now, ...)`` first folds every hour that ended
    by ``now`` into the model, then answers :func:`demand_floor`. Pure: the
    caller passes every instant.
    """

    __slots__ = ("_current", "_durations", "dispersion", "margin", "model")

    def __init__(
        self,
        model: DemandModel,
        *,
        mean_duration: float,
        margin: float = 1.0,
        dispersion: float = 1.0,
        weight: int = 100,
    ) -> None:
        if mean_duration < 0 or margin < 0 or weight < 0 or not dispersion >= 1:
            raise ValueError("mean_duration, margin and weight must be >= 0, dispersion >= 1")
        self.model = model
        self.margin = margin
        self.dispersion = dispersion
        # The training mean counts as ``weight`` jobs, so a few odd ones move it little.
        self._durations = [mean_duration * weight, float(weight)]
        self._current: list[float] = []

    @classmethod
    def from_history(
        cls,
        jobs: Iterable[tuple[float, float]],
        start: float,
        end: float,
        *,
        margin: float = 1.0,
        model: DemandModel | None = None,
    ) -> Forecaster:
        """Train on ``(arrival, duration)`` pairs between ``start`` and ``end``
        (the model, the mean duration and how much jobs come in batches)."""
        pairs = list(jobs)
        fitted = model or DemandModel.fit((a for a, _ in pairs), start, end)
        mean = sum(d for _, d in pairs) / len(pairs) if pairs else 0.0
        return cls(
            fitted,
            mean_duration=mean,
            margin=margin,
            dispersion=batch_dispersion([a for a, _ in pairs]),
            weight=max(len(pairs), 1),
        )

    @property
    def mean_duration(self) -> float:
        """The mean job duration seen, in seconds."""
        total, count = self._durations
        return total / count if count else 0.0

    def record(self, at: float, duration: float | None = None) -> None:
        """Note one job arriving at ``at``."""
        self._current.append(at)
        if duration is not None and duration >= 0:
            self._durations[0] += duration
            self._durations[1] += 1

    def advance(self, now: float) -> None:
        """Fold every hour that ended by ``now`` into the model."""
        done = math.floor(now / HOUR)
        first = self.model.next_bucket
        if done <= first:
            return
        counts = hourly_counts(self._current, first, done)
        self._current = [a for a in self._current if a >= done * HOUR]
        self.model = self.model.observe(counts)

    def floor(self, now: float, *, lead: float, max_slots: int) -> int:
        """The slots to hold at ``now``: see :func:`demand_floor`."""
        self.advance(now)
        return demand_floor(
            self.model,
            now,
            lead=lead,
            mean_duration=self.mean_duration,
            max_slots=max_slots,
            margin=self.margin,
            dispersion=self.dispersion,
        )
