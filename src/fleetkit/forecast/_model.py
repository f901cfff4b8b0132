"""The demand model: an hour-of-week profile times a smoothed level and trend.

Arrivals are counted per hour. The *profile* is how many jobs arrive in each
hour of the week on average over the history (weekday hours pooled across
Monday to Friday unless told otherwise, so one week of history already gives a
usable curve). The *level* is how busy recent hours were against the profile
(1.0: as usual), smoothed exponentially with a damped trend (Holt's method on
the ratio), so a busier day or a level shift is followed within hours while the
daily curve still says when the morning comes.

Pure: timestamps are POSIX seconds the caller passes; nothing reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo

import attrs

__all__ = ["HOUR", "WEEK_HOURS", "DemandModel", "ModelSettings", "hour_of_week", "hourly_counts"]

HOUR = 3600.0
WEEK_HOURS = 168


def hour_of_week(bucket: int, zone: tzinfo = UTC) -> int:
    """The hour of the week (0 = Monday 00:00) of hour bucket ``bucket`` (POSIX
    seconds // 3600), read in ``zone``."""
    local = datetime.fromtimestamp(bucket * HOUR, zone)
    return local.weekday() * 24 + local.hour


def hourly_counts(arrivals: Iterable[float], first: int, last: int) -> list[int]:
    """Arrivals per hour bucket from ``first`` up to (not including) ``last``."""
    counts = [0] * max(last - first, 0)
    for at in arrivals:
        index = math.floor(at / HOUR) - first
        if 0 <= index < len(counts):
            counts[index] += 1
    return counts


def _unit(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name}: expected a number from 0 to 1, got {value!r}")


@attrs.frozen(kw_only=True)
class ModelSettings:
    """How the model learns.

    ``alpha``: how fast the level follows each hour (0..1). ``beta``: how fast
    the trend does. ``damping``: how much of the trend carries to each further
    hour ahead (below 1, so a trend never runs away). ``pool_weekdays``: one
    profile for Monday to Friday and one for the weekend days, each by hour,
    instead of 168 separate hours. ``zone``: where hours of the week are read.
    """

    alpha: float = attrs.field(default=0.3, validator=_unit)
    beta: float = attrs.field(default=0.05, validator=_unit)
    damping: float = attrs.field(default=0.8, validator=_unit)
    pool_weekdays: bool = True
    zone: tzinfo = UTC


def _profile(counts: Sequence[int], first: int, settings: ModelSettings) -> tuple[float, ...]:
    sums = [0.0] * WEEK_HOURS
    seen = [0] * WEEK_HOURS
    for offset, count in enumerate(counts):
        how = hour_of_week(first + offset, settings.zone)
        if settings.pool_weekdays:
            day, hour = divmod(how, 24)
            keys = range(hour, 5 * 24, 24) if day < 5 else range(5 * 24 + hour, WEEK_HOURS, 24)
        else:
            keys = range(how, how + 1)
        for key in keys:
            sums[key] += count
            seen[key] += 1
    known = [s / n for s, n in zip(sums, seen, strict=True) if n]
    fallback = sum(known) / len(known) if known else 0.0
    # An hour never seen (history under a week) gets the mean hour.
    return tuple(s / n if n else fallback for s, n in zip(sums, seen, strict=True))


@attrs.frozen
class DemandModel:
    """Expected arrivals per hour ahead: ``profile[hour of week] * (level + trend)``.

    Build one with :meth:`fit`; feed it each hour that ends with :meth:`observe`.
    """

    profile: tuple[float, ...]
    level: float
    trend: float
    next_bucket: int  # the first hour bucket not observed yet
    settings: ModelSettings

    @classmethod
    def fit(
        cls,
        arrivals: Iterable[float],
        start: float,
        end: float,
        settings: ModelSettings | None = None,
    ) -> DemandModel:
        """Learn from the arrivals (POSIX seconds) between ``start`` and ``end``.

        The profile comes from the whole history; the level and trend from
        running the smoothing over it, so they say how the last hours compared.
        """
        if not end > start:
            raise ValueError(f"end must be after start, got start={start!r}, end={end!r}")
        settings = settings or ModelSettings()
        first = math.floor(start / HOUR)
        last = max(math.floor(end / HOUR), first + 1)
        counts = hourly_counts(arrivals, first, last)
        model = cls(_profile(counts, first, settings), 1.0, 0.0, first, settings)
        return model.observe(counts)

    @property
    def mean_hour(self) -> float:
        """The profile's mean arrivals per hour."""
        return sum(self.profile) / len(self.profile)

    def expected(self, bucket: int) -> float:
        """The profile's arrivals for hour bucket ``bucket``, before the level."""
        return self.profile[hour_of_week(bucket, self.settings.zone)]

    def observe(self, counts: Sequence[int]) -> DemandModel:
        """The model after the next ``len(counts)`` hours had these arrivals."""
        s = self.settings
        level, trend = self.level, self.trend
        mean = self.mean_hour
        for offset, count in enumerate(counts):
            expected = self.expected(self.next_bucket + offset)
            if expected <= 0 or mean <= 0:
                level = max(level + trend * s.damping, 0.0)
                trend *= s.damping
                continue
            # A quiet hour (few jobs expected) says little about the level.
            weight = min(1.0, expected / mean)
            a, b = s.alpha * weight, s.beta * weight
            previous = level
            level = max((1 - a) * (level + s.damping * trend) + a * (count / expected), 0.0)
            trend = (1 - b) * s.damping * trend + b * (level - previous)
        return attrs.evolve(
            self, level=level, trend=trend, next_bucket=self.next_bucket + len(counts)
        )

    def rate(self, at: float) -> float:
        """Expected arrivals per hour in the hour containing ``at`` (never negative)."""
        bucket = math.floor(at / HOUR)
        ahead = max(bucket - self.next_bucket + 1, 0)
        d = self.settings.damping
        # Damped trend: sum of d^1..d^ahead.
        carried = d * (1 - d**ahead) / (1 - d) if d < 1 else float(ahead)
        factor = max(self.level + carried * self.trend, 0.0)
        return self.expected(bucket) * factor
