"""Policies and the schedule: cron matching against croniter, the active policy, next_change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.policy import DEFAULT_POLICY, Policy, Schedule, _compile
from fleetkit.testing.strategies import cron_periods

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]

instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@given(
    cron_periods() | st.sampled_from(["* * L * *", "0 9 * * 5#2"]), instants, st.sampled_from(ZONES)
)
def test_period_matching_agrees_with_croniter(expr: str, at: datetime, zone: str) -> None:
    """The set-based matcher answers as croniter.match does, in any zone."""
    local = at.astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0)
    assert _compile(expr).matches(local) == croniter.match(expr, local)


@given(cron_periods(), instants, st.sampled_from(ZONES))
def test_status_holds_for_the_minutes_it_claims(expr: str, at: datetime, zone: str) -> None:
    """A period's answer stays the same for as many wall minutes as status() says."""
    local = at.astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0, tzinfo=None)
    period = _compile(expr)
    matched, same = period.status(local)
    assert same >= 1
    for offset in sorted({0, min(1, same - 1), same // 2, same - 1}):
        assert period.matches(local + timedelta(minutes=offset)) == matched


WEEKDAYS = Policy(idle_count=2, periods=("* 8-17 * * mon-fri",), timezone="Europe/Berlin")
MORNING = Policy(idle_count=9, periods=("*/10 9-10 * * *",), timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2026, 3, 23, 7, 59, tzinfo=ZoneInfo("Europe/Berlin")), DEFAULT_POLICY),
        (datetime(2026, 3, 23, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")), WEEKDAYS),
        (datetime(2026, 3, 23, 9, 10, 59, tzinfo=ZoneInfo("Europe/Berlin")), MORNING),
        (datetime(2026, 3, 23, 9, 11, tzinfo=ZoneInfo("Europe/Berlin")), WEEKDAYS),
        (datetime(2026, 3, 28, 9, 20, tzinfo=ZoneInfo("Europe/Berlin")), MORNING),
        (datetime(2026, 3, 28, 9, 21, tzinfo=ZoneInfo("Europe/Berlin")), DEFAULT_POLICY),
        (datetime(2026, 3, 23, 7, 0, tzinfo=UTC), WEEKDAYS),  # 08:00 in Berlin
    ],
)
def test_last_matching_policy_wins_else_default(at: datetime, expected: Policy) -> None:
    """The last policy in file order whose period matches the minute is active."""
    assert Schedule([WEEKDAYS, MORNING]).active(at) is expected


def test_next_change_finds_the_weekend_across_the_week() -> None:
    """From Monday morning the weekday policy ends Friday 18:00 Berlin time."""
    schedule = Schedule([WEEKDAYS])
    monday = datetime(2026, 3, 23, 8, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert schedule.next_change(monday) == datetime(
        2026, 3, 23, 18, 0, tzinfo=ZoneInfo("Europe/Berlin")
    )
    friday_night = datetime(2026, 3, 27, 19, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    # Across the DST change of 29 March: Monday 08:00 is CEST (UTC+2).
    assert schedule.next_change(friday_night) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)


def test_next_change_does_not_skip_past_a_short_day() -> None:
    """Skipping a whole day counts real minutes: 29 March 2026 has 23 hours in Berlin."""
    berlin = ZoneInfo("Europe/Berlin")
    schedule = Schedule([Policy(periods=("* 0 * * mon",), timezone="Europe/Berlin")])
    saturday = datetime(2026, 3, 28, 20, 0, tzinfo=berlin)
    assert schedule.next_change(saturday) == datetime(2026, 3, 30, 0, 0, tzinfo=berlin)


def test_next_change_is_none_when_nothing_changes() -> None:
    """A schedule that never changes has no next change."""
    assert Schedule().next_change(datetime(2026, 1, 1, tzinfo=UTC)) is None
    always = Schedule([Policy(idle_count=1)])
    assert always.next_change(datetime(2026, 1, 1, tzinfo=UTC), horizon=timedelta(days=2)) is None


def brute_force_next_change(schedule: Schedule, after: datetime, minutes: int) -> datetime | None:
    current = schedule.active(after)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for step in range(minutes):
        at = start + timedelta(minutes=step)
        if schedule.active(at) is not current:
            return at
    return None


@given(
    st.lists(
        st.builds(
            Policy,
            idle_count=st.integers(0, 3),
            periods=st.lists(cron_periods(), min_size=1, max_size=2).map(tuple),
            timezone=st.sampled_from([None, *ZONES]),
        ),
        max_size=3,
    ),
    instants,
)
def test_next_change_agrees_with_a_minute_by_minute_scan(
    policies: list[Policy], after: datetime
) -> None:
    """next_change() skips ahead yet finds the same minute as checking every minute."""
    schedule = Schedule(policies)
    horizon = timedelta(days=2)
    expected = brute_force_next_change(Schedule(policies), after, 2 * 1440)
    assert schedule.next_change(after, horizon=horizon) == expected


def test_policy_rejects_bad_periods_and_zones() -> None:
    """A period that is not 5-field cron, or an unknown zone, is refused with the field name."""
    with pytest.raises(ValueError, match="periods"):
        Policy(periods=("* * * *",))
    with pytest.raises(ValueError, match="timezone"):
        Policy(timezone="Mars/Olympus")
    with pytest.raises(TypeError, match="periods"):
        Policy(periods="* * * * *")
