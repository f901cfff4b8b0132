"""Forecasting against tuned and static policies, on the simulator.

Run as ``python bench/bench_forecast.py``; prints ``BENCH name=value unit`` lines.

The workload: two synthetic weeks (sim16's workday generator, one day at a time)
with day-to-day variation (each weekday's volume drawn from 0.6 to 1.4 times
the mean) and bursts (on four days, 25 extra pipelines within ten minutes at a
random working hour), single-slot instances up to 80, Linux-VM boot times.

Everything is chosen on week one and measured on week two (the replay runs
both weeks; figures count from the second Monday):

* best static: the cheapest single ``idle_count``/``idle_time`` policy whose
  week-one p95 wait meets the target (``fleetkit.tune`` with no periods);
* best tuned: the same with a second policy for weekday working hours;
* forecast: policy ``idle_count=0, idle_time=5m`` plus the forecast floor
  (``ForecastController``); its margin is the smallest of a few whose p95 wait
  meets the target on week one (trained on Monday and Tuesday, measured on
  the rest of week one), then it is trained on week one for week two;
* lower bound: job-minutes of week two (a clairvoyant fleet, zero boot time).

Ratios are instance-minutes over the forecast's; the issue's goals are
forecast/static <= 0.75, forecast/tuned <= 0.9, forecast/bound <= 1.3, at
the compared p95 wait or better (the p95 lines say whether that held).
"""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

from fleetkit.forecasting import ForecastController
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import (
    Figures,
    FleetConfig,
    Options,
    Trace,
    TraceJob,
    Workday,
    generate,
    lower_bound_minutes,
    simulate_one,
)
from fleetkit.tune import SearchSpace, tune

DAY = 86400.0
WEEK = 7 * DAY
TARGET_P95 = 60.0
MARGINS = (0.5, 1.0, 2.0, 3.0)


def workload(seed: int = 7) -> Trace:
    """Two weeks, day by day, with varying volume and a few bursts."""
    rng = random.Random(seed)
    first = Workday().start
    jobs: list[TraceJob] = []
    burst_days = set(rng.sample([d for d in range(14) if d % 7 < 5], 4))
    for day in range(14):
        volume = 150 * rng.uniform(0.6, 1.4)
        one = generate(
            Workday(pipelines=volume, days=1, start=first + timedelta(days=day), seed=seed + day)
        )
        jobs += [TraceJob(j.arrival + day * DAY, j.duration) for j in one.jobs]
        if day in burst_days:
            at = day * DAY + rng.uniform(9, 16) * 3600
            for _ in range(25):
                when = at + rng.uniform(0, 600)
                jobs += [
                    TraceJob(when, rng.lognormvariate(5.7, 0.6))
                    for _ in range(1 + rng.randint(1, 6))
                ]
    jobs.sort(key=lambda j: j.arrival)
    start = generate(Workday(days=1)).start
    return Trace(start, tuple(jobs), end=14 * DAY, source="bench_forecast")


BASE = FleetConfig(
    name="base",
    limits=Limits(max_instances=80, capacity_per_instance=1),
    policies=[Policy(idle_count=0, idle_time=timedelta(minutes=5))],
)


def _forecast(margin: float, trace: Trace, train_for: float, measure_from: float) -> Figures:
    options = Options(seed=1, measure_from=measure_from)
    controller = ForecastController(train_for=train_for, margin=margin)
    return simulate_one(BASE, trace, options, controller=controller).figures


def _line(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value:.4g} {unit}", flush=True)


def main() -> None:
    started = time.perf_counter()
    trace = workload()
    options = Options(seed=1)
    static_space = SearchSpace(
        idle_counts=(0, 1, 2, 3, 4, 6, 8, 10, 12), idle_times=(300.0, 900.0), day_windows=()
    )
    tuned_space = SearchSpace(
        idle_counts=(0, 1, 2),
        idle_times=(300.0, 900.0),
        day_windows=((7, 18), (8, 17)),
        day_idle_counts=(2, 4, 6, 8, 10, 12),
    )
    picks: dict[str, Figures] = {}
    for name, space in (("static", static_space), ("tuned", tuned_space)):
        result = tune(
            BASE, trace, target_p95=TARGET_P95, split=WEEK, space=space, options=options, workers=2
        )
        if result.best is None or result.best_held_out is None:
            print(f"{name}: no candidate met the target on week one", file=sys.stderr)
            return
        print(f"# {name}: {result.best.candidate.label}", flush=True)
        picks[name] = result.best_held_out
    # The forecast's margin, chosen within week one.
    week_one = trace.between(0.0, WEEK)
    with ProcessPoolExecutor(max_workers=2) as pool:
        trials = list(
            pool.map(
                _forecast,
                MARGINS,
                [week_one] * len(MARGINS),
                [2 * DAY] * len(MARGINS),
                [2 * DAY] * len(MARGINS),
            )
        )
    margin = next(
        (m for m, f in zip(MARGINS, trials, strict=True) if f.wait_p95_s <= TARGET_P95),
        MARGINS[-1],
    )
    print(f"# forecast: margin={margin:g} (week-one p95s {[round(f.wait_p95_s) for f in trials]})")
    picks["forecast"] = _forecast(margin, trace, WEEK, WEEK)
    week_two = trace.between(WEEK, 2 * WEEK)
    bound = lower_bound_minutes(week_two.job_seconds, BASE.limits.capacity_per_instance)
    _line("forecast_target_p95_wait", TARGET_P95, "s")
    for name, figs in picks.items():
        _line(f"forecast_{name}_instance_minutes", figs.instance_minutes, "min")
        _line(f"forecast_{name}_p95_wait", figs.wait_p95_s, "s")
    _line("forecast_lower_bound_instance_minutes", bound, "min")
    forecast = picks["forecast"].instance_minutes
    _line("forecast_ratio_vs_static", forecast / picks["static"].instance_minutes, "x")
    _line("forecast_ratio_vs_tuned", forecast / picks["tuned"].instance_minutes, "x")
    _line("forecast_ratio_vs_lower_bound", forecast / bound, "x")
    _line("forecast_bench_wall", time.perf_counter() - started, "s")


if __name__ == "__main__":
    main()
