"""Synthetic job traces for users without one: ``--workload SPEC``.

``workday[:key=value,...]`` arrives like a team's CI: pipelines on weekdays
shaped like a working day (a morning ramp, a lunch dip, an evening tail, a quiet
night), few at weekends; each pipeline is a batch of jobs that arrive together
and run in parallel; durations are lognormal. Keys (defaults in brackets):

* ``pipelines`` [400]: pipelines on a weekday;
* ``jobs`` [4]: mean jobs per pipeline (1 + a Poisson draw, so never 0);
* ``duration`` [5m], ``sigma`` [0.8]: median job duration and lognormal shape;
* ``days`` [7]; ``weekend`` [0.05]: weekend traffic as a share of a weekday's;
* ``lunch`` [0.5]: traffic at 12:00-13:00 as a share of the peak;
* ``shape`` [workday]: ``workday``, or ``flat`` for the same daily volume spread
  evenly over all 24 hours;
* ``tz`` [UTC]: the team's time zone; ``start`` [2026-01-05]: the first day
  (a Monday by default); ``seed`` [0].

``poisson[:key=value,...]`` is the textbook queue, for checks against queueing
theory: Poisson arrivals at ``rate`` per hour [60] and exponential durations of
mean ``duration`` [5m], for ``days`` [1]; ``seed`` [0].
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from fleetkit.errors import ConfigError, Problem
from fleetkit.simulate._boot import parse_seconds
from fleetkit.simulate._trace import DEFAULT_START, Trace, TraceJob

__all__ = ["Poisson", "Workday", "generate", "parse_workload"]

# Relative arrival intensity for each hour of a working day (local time), peak
# 1.0; the lunch hour (12) is scaled by ``lunch``.
_WORKDAY_HOURS = (
    0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.08, 0.3,
    0.7, 1.0, 1.0, 0.9, 1.0, 0.85, 1.0, 1.0,
    0.9, 0.65, 0.4, 0.22, 0.13, 0.08, 0.05, 0.03,
)  # fmt: skip

_FIRST_DAY = DEFAULT_START.date()

#: Longest job a synthetic trace holds: the lognormal's far tail is cut here.
_MAX_DURATION = 6 * 3600.0


@attrs.frozen(kw_only=True)
class Workday:
    """Parameters of the working-day workload (see the module docs)."""

    pipelines: float = 400.0
    jobs: float = 4.0
    duration: float = 300.0
    sigma: float = 0.8
    days: int = 7
    weekend: float = 0.05
    lunch: float = 0.5
    shape: str = "workday"
    tz: str = "UTC"
    start: date = _FIRST_DAY
    seed: int = 0

    def weight(self, local: datetime) -> float:
        """Relative intensity at a local time (peak of a weekday: 1.0)."""
        if self.shape == "flat":
            base = sum(_WORKDAY_HOURS) / 24
        else:
            # Linear between hour midpoints, so the ramp has no steps.
            x = local.hour + local.minute / 60 + local.second / 3600 - 0.5
            low = math.floor(x)
            frac = x - low
            base = (1 - frac) * self._hour(low % 24) + frac * self._hour((low + 1) % 24)
        return base * (self.weekend if local.weekday() >= 5 else 1.0)

    def _hour(self, hour: int) -> float:
        return _WORKDAY_HOURS[hour] * (self.lunch if hour == 12 else 1.0)


@attrs.frozen(kw_only=True)
class Poisson:
    """Poisson arrivals at ``rate`` per hour, exponential durations of mean ``duration``."""

    rate: float = 60.0
    duration: float = 300.0
    days: float = 1.0
    seed: int = 0
    start: date = _FIRST_DAY


def parse_workload(spec: str, *, seed: int | None = None) -> Workday | Poisson:
    """Parse ``--workload SPEC``; ``seed`` applies when the spec sets none.

    Raises :class:`~fleetkit.errors.ConfigError` naming the bad key or value.
    """
    kind, _, rest = spec.strip().partition(":")
    types: dict[str, type[Workday | Poisson]] = {"workday": Workday, "poisson": Poisson}
    if kind not in types:
        raise ConfigError(
            [Problem("--workload", f"unknown workload {kind!r}; expected workday or poisson")]
        )
    cls = types[kind]
    fields = {a.name: a for a in attrs.fields(cls)}
    values: dict[str, object] = {}
    problems: list[Problem] = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, text = item.partition("=")
        key = key.strip()
        where = f"--workload {kind}:{key}"
        if not eq or key not in fields:
            problems.append(
                Problem(where, f"expected KEY=VALUE with KEY one of {', '.join(fields)}")
            )
            continue
        try:
            values[key] = _value(key, text.strip(), fields[key].default)
        except ValueError as exc:
            problems.append(Problem(where, str(exc)))
    if problems:
        raise ConfigError(problems)
    if seed is not None and "seed" not in values:
        values["seed"] = seed
    try:
        return cls(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError([Problem("--workload", str(exc))]) from None


def _value(key: str, text: str, default: object) -> object:
    if key == "duration":
        seconds = parse_seconds(text)
        if seconds <= 0:
            raise ValueError("must be above 0s")
        return seconds
    if key == "tz":
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {text!r}") from None
        return text
    if key == "start":
        return date.fromisoformat(text)
    if key == "shape":
        if text not in ("workday", "flat"):
            raise ValueError(f"unknown shape {text!r}; expected workday or flat")
        return text
    if isinstance(default, int) and key in ("seed", "days") and not isinstance(default, bool):
        number: float = int(text)
    else:
        number = float(text)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{text!r} must be a number >= 0")
    if key in ("jobs",) and number < 1:
        raise ValueError("a pipeline has at least 1 job")
    return number


def generate(workload: Workday | Poisson) -> Trace:
    """A seeded trace of ``workload``: the same parameters give the same jobs."""
    if isinstance(workload, Poisson):
        return _poisson(workload)
    return _workday(workload)


def _poisson(w: Poisson) -> Trace:
    rng = random.Random(w.seed)
    end = w.days * 86400.0
    rate = w.rate / 3600.0
    jobs: list[TraceJob] = []
    t = rng.expovariate(rate) if rate > 0 else end
    while t < end:
        jobs.append(TraceJob(t, rng.expovariate(1.0 / w.duration), f"job-{len(jobs) + 1}"))
        t += rng.expovariate(rate)
    zone = ZoneInfo("UTC")
    return Trace(datetime.combine(w.start, time(), zone), tuple(jobs), end=end, source="poisson")


def _workday(w: Workday) -> Trace:
    rng = random.Random(w.seed)
    zone = ZoneInfo(w.tz)
    start = datetime.combine(w.start, time(), zone)
    end = w.days * 86400.0
    # Thinning (Lewis and Shedler): candidates at the peak rate, each kept with
    # probability weight/peak, gives a Poisson process of the shaped rate.
    # A weekday's mean weight (the piecewise-linear curve has the same integral
    # as its hourly values), so that a weekday holds ``pipelines`` on average.
    if w.shape == "flat":
        mean_weight = sum(_WORKDAY_HOURS) / 24
    else:
        mean_weight = sum(w._hour(h) for h in range(24)) / 24
    peak_rate = w.pipelines / 86400.0 / mean_weight if w.pipelines > 0 else 0.0
    jobs: list[TraceJob] = []
    pipeline = 0
    t = rng.expovariate(peak_rate) if peak_rate > 0 else end
    while t < end:
        local = (start + timedelta(seconds=t)).astimezone(zone)
        if rng.random() < w.weight(local):
            pipeline += 1
            size = 1 + _poisson_draw(rng, w.jobs - 1)
            for index in range(size):
                duration = min(w.duration * math.exp(rng.gauss(0.0, w.sigma)), _MAX_DURATION)
                jobs.append(TraceJob(t, duration, f"pipeline-{pipeline}-job-{index + 1}"))
        t += rng.expovariate(peak_rate)
    return Trace(start, tuple(jobs), end=end, source="workday")


def _poisson_draw(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means a pipeline size has.
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
