"""Simulator benchmark: one simulated week of 50,000 jobs on up to 200 instances.

Run as ``python bench/bench_simulate.py``; prints ``BENCH name=value unit`` lines.

The week is the synthetic workday (2,500 pipelines of about four parallel jobs
each weekday, lognormal durations of median 5 minutes, quiet weekends, seed 1:
50,293 jobs), replayed through ``bench/simulate/week-200.toml`` (single-slot
instances, at most 200, 20 idle in office hours, 2 at other times), Linux-VM
boot times, warm start. Goal: the week in at most 30 s of wall time on the
2-core CI machine, at least 20,000 times faster than real time.

*Events* are what the replay handles: each job's arrival, start and end, and
each event the fleet publishes on its public stream (instances requested,
seen, running, ready, draining, deleted; slots acquired and released; plans
that changed something).
"""

from __future__ import annotations

import time
from pathlib import Path

from fleetkit.simulate import FleetConfig, Options, figures, generate, parse_workload, replay

WORKLOAD = "workday:pipelines=2500,jobs=4,days=7,seed=1"
CONFIG = Path(__file__).parent / "simulate" / "week-200.toml"


def main() -> None:
    trace = generate(parse_workload(WORKLOAD))
    config = FleetConfig.from_toml(CONFIG)
    wall, cpu = time.perf_counter(), time.process_time()
    run = replay(config, trace, Options())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    figs = figures(run, wait_threshold=300.0, price_per_hour=0.0)
    events = 3 * len(trace.jobs) + run.fleet_events
    steps = sorted(
        [(life.requested_at, 1) for life in run.lives]
        + [(life.ended_at, -1) for life in run.lives if life.ended_at <= run.end]
    )
    alive = peak = 0
    for _, change in steps:
        alive += change
        peak = max(peak, alive)
    print(f"BENCH simulate_week_jobs={len(trace.jobs)} jobs")
    print(f"BENCH simulate_week_wall={wall:.2f} s")
    print(f"BENCH simulate_week_cpu={cpu:.2f} s")
    print(f"BENCH simulate_week_speedup={run.end / wall:.0f} x")
    print(f"BENCH simulate_events_per_second={events / wall:.0f} events/s")
    print(f"BENCH simulate_week_events={events} events")
    print(f"BENCH simulate_week_instances_peak={peak} instances")
    print(f"BENCH simulate_week_instances_created={figs.instances_created} instances")
    print(f"BENCH simulate_week_wait_p95={figs.wait_p95_s:.1f} s")


if __name__ == "__main__":
    main()
