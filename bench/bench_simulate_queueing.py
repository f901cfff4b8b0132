"""The simulator against queueing theory, as figures: the Erlang C check's numbers.

Run as ``python bench/bench_simulate_queueing.py``; prints ``BENCH name=value unit`` lines.

The scenario of ``tests/async/test_simulate_queueing.py``: 2 single-slot
instances always there, booting in no time; Poisson arrivals at load 0.5,
exponential durations of mean 6 s; 40,339 jobs (seed 3). Printed: the fleet's
mean wait, Erlang C's, their relative difference, the largest difference of
one job's wait from the FCFS two-server recursion on the same trace, and the
CPU time of the replay.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import (
    FleetConfig,
    Options,
    Poisson,
    erlang_c_wait,
    fcfs_waits,
    generate,
    parse_boot_time,
    replay,
)

SERVERS, LOAD, MEAN, JOBS = 2, 0.5, 6.0, 40_000


def main() -> None:
    service_rate = 1 / MEAN
    arrival_rate = LOAD * SERVERS * service_rate
    days = JOBS / arrival_rate / 86400
    trace = generate(Poisson(rate=arrival_rate * 3600, duration=MEAN, days=days, seed=3))
    config = FleetConfig(
        name="fixed",
        limits=Limits(capacity_per_instance=1, max_instances=SERVERS),
        policies=[Policy(idle_count=SERVERS, idle_time=timedelta(days=365))],
    )
    cpu = time.process_time()
    run = replay(config, trace, Options(boot=parse_boot_time("0s")))
    cpu = time.process_time() - cpu
    expected = fcfs_waits(
        [j.arrival for j in trace.jobs], [j.duration for j in trace.jobs], SERVERS
    )
    worst = max(abs(a - b) for a, b in zip(run.waits, expected, strict=True))
    mean = math.fsum(run.waits) / len(run.waits)
    theory = erlang_c_wait(SERVERS, arrival_rate, service_rate)
    print(f"BENCH erlang_jobs={len(trace.jobs)} jobs")
    print(f"BENCH erlang_mean_wait={mean:.4f} s")
    print(f"BENCH erlang_c_mean_wait={theory:.4f} s")
    print(f"BENCH erlang_mean_wait_error={100 * (mean / theory - 1):+.2f} %")
    print(f"BENCH erlang_worst_job_vs_fcfs={1000 * worst:.3f} ms")
    print(f"BENCH erlang_replay_cpu={cpu:.2f} s")


if __name__ == "__main__":
    main()
