"""fleetkit.tune: the search finds a known optimum and says when the held-out part misses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import FleetConfig, Options, Trace, TraceJob, parse_boot_time
from fleetkit.simulate._trace import DEFAULT_START
from fleetkit.tune import SearchSpace, candidates, policy_blocks, tune

DAY = 86400.0
HOUR = 3600.0
# One 10-minute job per weekday; instances take a minute to boot, so only a
# slot kept idle ahead of the job gives it no wait.
OPTIONS = Options(boot=parse_boot_time("60s"), seed=1)
BASE = FleetConfig(
    name="current",
    limits=Limits(max_instances=4, capacity_per_instance=1),
    policies=[Policy(idle_count=1, idle_time=timedelta(minutes=5))],
)
SPACE = SearchSpace(
    idle_counts=(0, 1),
    idle_times=(300.0,),
    day_windows=((0, 23), (8, 10), (13, 15)),
    day_idle_counts=(1,),
)


def weekday_jobs(monday: float, tuesday: float) -> Trace:
    # DEFAULT_START is a Monday: tune on Monday, check on Tuesday (a day each,
    # to keep the test short), jobs at the hours given, 30 minutes apart.
    jobs = [
        TraceJob(day * DAY + hour * HOUR + k * 1800.0, 600.0)
        for day, hour in ((0, monday), (1, tuesday))
        for k in range(2)
    ]
    return Trace(DEFAULT_START, tuple(jobs), end=2 * DAY)


def test_the_grid_holds_static_and_working_hour_candidates() -> None:
    labels = [c.label for c in candidates(SPACE)]
    assert labels[:2] == ["idle_count=0 idle_time=5m", "idle_count=1 idle_time=5m"]
    # A day policy only where it keeps more than the base.
    assert len(labels) == 2 + 3
    text = policy_blocks(candidates(SPACE)[-1].policies)
    assert 'periods = ["* 13-15 * * mon-fri"]' in text
    assert text.count("[[runners.autoscaler.policy]]") == 2


def test_the_search_finds_the_known_optimum_and_it_holds_out() -> None:
    result = tune(
        BASE,
        weekday_jobs(9.25, 9.25),
        target_p95=0.0,
        split=DAY,
        space=SPACE,
        options=OPTIONS,
        workers=2,
    )
    assert result.best is not None
    # The narrowest window around 09:15-09:45: one idle slot 08:00-10:59.
    assert result.best.candidate.label == "idle_count=0 idle_time=5m; mon-fri 08-10h idle_count=1"
    by_label = {s.candidate.label: s.figures for s in result.scored}
    assert by_label["idle_count=0 idle_time=5m"].wait_p95_s >= 60  # waits for a boot
    assert result.best.figures.instance_minutes < result.current_tuning.instance_minutes
    assert result.best_held_out is not None
    assert result.best_held_out.wait_p95_s == 0
    assert not result.held_out_miss


def test_a_second_week_unlike_the_first_is_a_held_out_miss() -> None:
    progress: list[tuple[int, int]] = []
    result = tune(
        BASE,
        weekday_jobs(9.25, 14.25),
        target_p95=0.0,
        split=DAY,
        space=SPACE,
        options=OPTIONS,
        workers=1,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert result.best is not None
    assert result.best.candidate.label.endswith("08-10h idle_count=1")
    assert result.held_out_miss
    assert result.best_held_out is not None
    assert result.best_held_out.wait_p95_s >= 60
    # The current config (always one idle slot) meets it: the figures say so beside.
    assert result.current_held_out is not None
    assert result.current_held_out.wait_p95_s == 0
    assert progress[-1] == (6, 6)


def test_bad_searches_are_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        tune(BASE, weekday_jobs(9, 9), target_p95=1, split=3 * DAY, space=SPACE)
    with pytest.raises(ValueError, match="day window"):
        SearchSpace(day_windows=((18, 8),))
