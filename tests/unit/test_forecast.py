"""The forecaster on series with known answers, and its bounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.fleet import HistogramSnapshot
from fleetkit.forecast import (
    HOUR,
    DemandModel,
    Forecaster,
    ModelSettings,
    batch_dispersion,
    demand_floor,
    hour_of_week,
    lead_from_histogram,
    lead_from_samples,
)

#: Monday 2026-11-30 00:00 UTC.
MONDAY = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
WEEK = 168


def arrivals(per_hour: Sequence[float]) -> list[float]:
    """Evenly spaced arrivals, ``round(per_hour[h])`` of them in hour ``h`` from MONDAY."""
    out = []
    for hour, rate in enumerate(per_hour):
        n = round(rate)
        out += [MONDAY + hour * HOUR + (i + 0.5) * HOUR / n for i in range(n)]
    return out


def fit(per_hour: Sequence[float], **settings: object) -> DemandModel:
    return DemandModel.fit(
        arrivals(per_hour),
        MONDAY,
        MONDAY + len(per_hour) * HOUR,
        ModelSettings(**settings),  # type: ignore[arg-type]
    )


def test_monday_is_hour_zero_of_the_week() -> None:
    assert hour_of_week(int(MONDAY // HOUR)) == 0
    assert hour_of_week(int(MONDAY // HOUR) + 24 * 6 + 23) == 167


@given(st.integers(0, 40), st.integers(1, 3))
def test_a_constant_series_forecasts_the_constant(rate: int, weeks: int) -> None:
    model = fit([rate] * (WEEK * weeks))
    end = MONDAY + WEEK * weeks * HOUR
    for ahead in (0, 5, 30, 100):
        assert model.rate(end + ahead * HOUR) == pytest.approx(rate, abs=1e-6)


@given(st.integers(5, 50), st.integers(0, 23))
def test_a_daily_sine_is_forecast_hour_by_hour(amplitude: int, phase: int) -> None:
    def curve(hour: int) -> float:
        return round(amplitude * (1 + math.sin(2 * math.pi * ((hour + phase) % 24) / 24)))

    model = fit([curve(h) for h in range(WEEK)], pool_weekdays=False)
    end = MONDAY + WEEK * HOUR
    for ahead in range(48):
        assert model.rate(end + ahead * HOUR) == pytest.approx(curve(WEEK + ahead), abs=1e-6)


@given(st.integers(1, 40), st.integers(0, 5), st.booleans())
def test_weekdays_and_weekends_are_told_apart(busy: int, quiet: int, pooled: bool) -> None:
    week = [busy if h < 5 * 24 else quiet for h in range(WEEK)]
    model = fit(week * 2, pool_weekdays=pooled)
    end = MONDAY + 2 * WEEK * HOUR
    assert model.rate(end + 3 * HOUR) == pytest.approx(busy, abs=1e-6)  # Monday 03:00
    assert model.rate(end + (5 * 24 + 10) * HOUR) == pytest.approx(quiet, abs=1e-6)  # Saturday


def test_a_level_shift_is_followed_within_hours() -> None:
    series = [10.0] * (2 * WEEK) + [20.0] * 12
    model = fit(series)
    end = MONDAY + len(series) * HOUR
    assert model.rate(end + HOUR) == pytest.approx(20, rel=0.15)
    # And back down: the level follows a quiet spell too.
    model = model.observe([5] * 12)
    assert model.rate(end + 13 * HOUR) < 10


@given(
    st.lists(st.floats(0, 3 * WEEK * HOUR), max_size=300),
    st.floats(0, 4 * WEEK * HOUR),
    st.floats(0, 7200),
    st.floats(0, 7200),
    st.integers(0, 500),
    st.floats(0, 4),
)
def test_the_floor_is_never_negative_and_never_over_max_slots(
    offsets: list[float], at: float, lead: float, duration: float, max_slots: int, margin: float
) -> None:
    model = DemandModel.fit((MONDAY + o for o in offsets), MONDAY, MONDAY + 3 * WEEK * HOUR)
    model = model.observe([0] * 30 + [1000] * 3)  # a burst: level and trend jump
    floor = demand_floor(
        model, MONDAY + at, lead=lead, mean_duration=duration, max_slots=max_slots, margin=margin
    )
    assert floor >= 0
    if max_slots:
        assert floor <= max_slots
    for ahead in range(0, 500, 7):
        assert model.rate(MONDAY + at + ahead * HOUR) >= 0


def test_the_floor_looks_one_lead_ahead() -> None:
    # Nights empty, 60 jobs an hour from 08:00: at 07:50 with a 15-minute lead
    # the floor already asks for the morning, with 5-minute lead not yet.
    day = [60.0 if 8 <= h % 24 < 18 else 0.0 for h in range(WEEK * 2)]
    model = fit(day)
    morning = MONDAY + 2 * WEEK * HOUR + 7 * HOUR + 50 * 60
    busy = 60 / HOUR * 600  # Little's law: 10 slots busy
    assert demand_floor(model, morning, lead=300, mean_duration=600, max_slots=0) == 0
    ahead = demand_floor(model, morning, lead=900, mean_duration=600, max_slots=0, margin=0)
    assert ahead == math.ceil(busy)
    assert demand_floor(model, morning, lead=900, mean_duration=600, max_slots=4) == 4


def test_the_forecaster_learns_hour_by_hour() -> None:
    history = [(a, 300.0) for a in arrivals([12.0] * WEEK)]
    forecaster = Forecaster.from_history(history, MONDAY, MONDAY + WEEK * HOUR, margin=0)
    assert forecaster.mean_duration == pytest.approx(300)
    now = MONDAY + WEEK * HOUR
    assert forecaster.floor(now, lead=0, max_slots=0) == 1  # 12/h * 300 s = 1 slot
    for hour in range(6):  # demand quadruples
        for i in range(48):
            forecaster.record(now + hour * HOUR + i * 75, 300.0)
    assert forecaster.floor(now + 6 * HOUR, lead=0, max_slots=0) >= 3
    assert forecaster.model.next_bucket == int((now + 6 * HOUR) // HOUR)


def test_batches_widen_the_margin() -> None:
    assert batch_dispersion([]) == 1.0
    assert batch_dispersion([0.0, 10.0, 20.0]) == 1.0
    # Batches of 4 arrive together: E[n^2]/E[n] = 4.
    assert batch_dispersion([t + i * 0.01 for t in (0.0, 100.0, 200.0) for i in range(4)]) == 4.0
    model = fit([36.0] * WEEK)
    at = MONDAY + WEEK * HOUR
    single = demand_floor(model, at, lead=0, mean_duration=100, max_slots=0, margin=1)
    batched = demand_floor(
        model, at, lead=0, mean_duration=100, max_slots=0, margin=1, dispersion=4
    )
    assert (single, batched) == (2, 3)  # 1 busy + 1 * sqrt(1 * 4)


def test_lead_from_boot_times() -> None:
    assert lead_from_samples([], extra=30) == 30
    assert lead_from_samples([40, 50, 60, 70, 300], quantile=0.8, extra=0) == 70
    histogram = HistogramSnapshot((10, 30, 60, 120), (0, 2, 9, 10, 10), 500.0, 10)
    assert lead_from_histogram(histogram, quantile=0.9, extra=15) == 75
    assert lead_from_histogram(histogram, quantile=1.0, extra=0) == 120
    with pytest.raises(ValueError, match="quantile"):
        lead_from_samples([1.0], quantile=0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ModelSettings(alpha=1.5)
    with pytest.raises(ValueError, match="end must be after start"):
        DemandModel.fit([], 10.0, 10.0)
    with pytest.raises(ValueError, match="lead"):
        demand_floor(fit([1.0] * 24), MONDAY, lead=-1, mean_duration=1, max_slots=0)
