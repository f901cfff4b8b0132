"""Planner benchmarks: plan() at 1,000 and 10,000 instances, Schedule.active() look-ups.

Run as ``python bench/bench_planner.py``; prints ``BENCH name=value unit`` lines.

The plan() fleet: instances of 4 slots, ready (90%), creating (5%) or draining
(5%), with a seeded random mix of held slots, use counts, health failures and
idle times, under ``max_use_count = 50``, ``failure_threshold = 3``,
``max_instances`` unlimited, an idle policy of 20 slots with a 0.5 scale factor,
and 20,000 pending acquisitions plus 500 reservations: a large share of the
pending keys get slots and the rest ask for instances.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import plan
from fleetkit.policy import Policy, Schedule

NOW = 100_000.0
LIMITS = Limits(capacity_per_instance=4, max_use_count=50, failure_threshold=3)
POLICY = Policy(idle_count=20, idle_time=timedelta(minutes=20), scale_factor=0.5)


def fleet(instances: int, pending: int, seed: int = 7) -> Snapshot:
    """A seeded snapshot of ``instances`` 4-slot instances and ``pending`` waiting keys."""
    rng = random.Random(seed)
    members = []
    for n in range(instances):
        roll = rng.random()
        created = rng.uniform(0, NOW - 4000)
        if roll < 0.05:
            members.append(
                Instance(id=f"i-{n:06d}", state=InstanceState.CREATING, created_at=NOW - 30)
            )
            continue
        state = InstanceState.DRAINING if roll < 0.10 else InstanceState.READY
        held = frozenset(s for s in range(4) if rng.random() < 0.5)
        members.append(
            Instance(
                id=f"i-{n:06d}",
                state=state,
                created_at=created,
                ready_at=created + 60,
                slots_in_use=held,
                use_count=len(held) + rng.randrange(0, 40),
                idle_since=None if held else NOW - rng.uniform(0, 3000),
                health_failures=3 if rng.random() < 0.01 else 0,
            )
        )
    return Snapshot(
        instances=tuple(members),
        pending=tuple(f"job-{k}" for k in range(pending)),
        reservations=tuple(f"res-{k}" for k in range(500)),
    )


def median_ms(snapshot: Snapshot, rounds: int) -> tuple[float, float]:
    """Median wall and CPU time of plan() on ``snapshot``, in milliseconds.

    The CPU figure is the one to trust on a shared machine: other processes
    stretch the wall time of a single-threaded call, not its CPU time.
    """
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        plan(snapshot, POLICY, LIMITS, NOW)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def office_schedule() -> Schedule:
    """Three policies in two zones, the shape of a typical config."""
    return Schedule(
        [
            Policy(idle_count=2, periods=("* 8-18 * * mon-fri",), timezone="Europe/Berlin"),
            Policy(idle_count=10, periods=("*/15 9-11 * * mon-fri",), timezone="Europe/Berlin"),
            Policy(idle_count=0, periods=("* * * * sat,sun",), timezone="America/New_York"),
        ]
    )


def schedule_rate(pattern: str) -> float:
    """Schedule.active() look-ups per second.

    ``sequential``: the runtime's pattern, a look-up every 3 s moving forward
    (mostly answered from the per-minute cache); ``random_year``: instants
    spread over a year, so nearly every look-up misses the cache.
    """
    schedule = office_schedule()
    start_at = datetime(2026, 3, 23, tzinfo=UTC)
    if pattern == "sequential":
        instants = [start_at + timedelta(seconds=3 * k) for k in range(200_000)]
    else:
        rng = random.Random(3)
        instants = [start_at + timedelta(minutes=rng.randrange(525_600)) for _ in range(100_000)]
    began = time.perf_counter()
    for at in instants:
        schedule.active(at)
    return len(instants) / (time.perf_counter() - began)


def next_change_ms() -> float:
    """Median time of next_change() over a week of starting points (each finds
    the next switch, up to a weekend away)."""
    schedule = office_schedule()
    start_at = datetime(2026, 3, 23, tzinfo=UTC)
    times = []
    for hour in range(0, 7 * 24, 5):
        began = time.perf_counter()
        schedule.next_change(start_at + timedelta(hours=hour, minutes=17))
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    small, small_cpu = median_ms(fleet(1_000, 20_000), rounds=31)
    large, large_cpu = median_ms(fleet(10_000, 20_000), rounds=31)
    print(f"BENCH plan_1k_instances_20k_pending={small:.2f} ms")
    print(f"BENCH plan_10k_instances_20k_pending={large:.2f} ms")
    print(f"BENCH plan_10k_over_1k_ratio={large / small:.2f} x")
    print(f"BENCH plan_1k_instances_20k_pending_cpu={small_cpu:.2f} ms")
    print(f"BENCH plan_10k_instances_20k_pending_cpu={large_cpu:.2f} ms")
    print(f"BENCH schedule_active_sequential={schedule_rate('sequential'):.0f} lookups/s")
    print(f"BENCH schedule_active_random_year={schedule_rate('random'):.0f} lookups/s")
    print(f"BENCH schedule_next_change={next_change_ms():.2f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
