"""What would the planner do? Load a config.toml and ask, for given times and load.

    python examples/what_if.py examples/seed-five-jobs-per-instance.toml \\
        --at 2026-03-23T09:00 --at 2026-03-28T03:00 --running 40 --waiting 3

For each time, the active policy of the runner's schedule is picked; a fleet
carrying ``--running`` jobs (packed onto as few ready instances as they fit) is
planned with ``--waiting`` acquisitions and ``--reserved`` reservations. The
first plan is printed as the planner explains it, then the plan is carried out
with instances becoming ready at once, until nothing changes: the fleet this
policy settles on. ``--idle-minutes`` says how long the idle instances of the
starting fleet have been idle (it decides whether any of them may go).

Only the pure planner is used: no provider, no clock, no event loop.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import attrs

from fleetkit.config import format_duration, load
from fleetkit.errors import ConfigError
from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import Plan, plan
from fleetkit.policy import Policy

NOW = 1_000_000.0  # any monotonic instant: only differences matter to the planner


def starting_fleet(limits: Limits, running: int, idle_seconds: float) -> list[Instance]:
    """Ready instances holding ``running`` jobs, lowest slots first, oldest full."""
    cap = limits.capacity_per_instance
    fleet = []
    for n in range(math.ceil(running / cap)):
        held = min(cap, running - n * cap)
        fleet.append(
            Instance(
                id=f"i-{n:03d}",
                state=InstanceState.READY,
                created_at=NOW - 3600 - n,
                ready_at=NOW - 3600 - n,
                slots_in_use=frozenset(range(held)),
                use_count=held,
                idle_since=NOW - idle_seconds,
            )
        )
    return fleet


def carry_out(fleet: list[Instance], snapshot: Snapshot, the_plan: Plan) -> Snapshot:
    """The fleet after ``the_plan``, with new instances ready at once."""
    by_id = {i.id: i for i in fleet}
    for a in the_plan.assignments:
        i = by_id[a.instance_id]
        by_id[i.id] = attrs.evolve(
            i, slots_in_use=i.slots_in_use | {a.slot}, use_count=i.use_count + 1
        )
    for d in the_plan.deprovisions:
        del by_id[d.instance_id]
    for n in range(the_plan.provision.count if the_plan.provision else 0):
        iid = f"new-{len(by_id)}-{n}"
        by_id[iid] = Instance(
            id=iid, state=InstanceState.READY, created_at=NOW, ready_at=NOW, idle_since=NOW
        )
    assigned = {a.key for a in the_plan.assignments}
    fleet[:] = by_id.values()
    return attrs.evolve(
        snapshot,
        instances=tuple(fleet),
        pending=tuple(k for k in snapshot.pending if k not in assigned),
    )


def describe(policy: Policy) -> str:
    return (
        f"idle_count={policy.idle_count} idle_time={format_duration(policy.idle_time)} "
        f"scale_factor={policy.scale_factor} scale_factor_limit={policy.scale_factor_limit}"
    )


def what_if(limits: Limits, policy: Policy, args: argparse.Namespace) -> None:
    fleet = starting_fleet(limits, args.running, args.idle_minutes * 60)
    snapshot = Snapshot(
        instances=tuple(fleet),
        pending=tuple(f"waiting-{k}" for k in range(args.waiting)),
        reservations=tuple(f"reserved-{k}" for k in range(args.reserved)),
    )
    first = plan(snapshot, policy, limits, NOW)
    print("  first plan:")
    for line in str(first).splitlines():
        print(f"    {line}")
    the_plan = first
    for _ in range(50):
        if the_plan.empty:
            break
        snapshot = carry_out(fleet, snapshot, the_plan)
        the_plan = plan(snapshot, policy, limits, NOW)
    f = the_plan.figures
    busy = sum(1 for i in fleet if i.slots_in_use)
    print(
        f"  settles on {len(fleet)} instances ({busy} busy, {len(fleet) - busy} idle): "
        f"{f.acquired} slots in use, {f.idle} idle slots (idle target {f.idle_target})"
        + (f", capped by {f.capped_by}" if f.capped_by else "")
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--runner", type=int, default=None, help="runners[] index")
    parser.add_argument(
        "--at",
        action="append",
        type=datetime.fromisoformat,
        help="an ISO time (UTC unless it has an offset); repeatable",
    )
    parser.add_argument("--running", type=int, default=0, help="jobs running now")
    parser.add_argument("--waiting", type=int, default=0, help="jobs waiting for a slot")
    parser.add_argument("--reserved", type=int, default=0, help="reservations held")
    parser.add_argument("--idle-minutes", type=float, default=0.0, help="idle age of idle slots")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in args.at or [datetime.now(UTC)]]
    for index, runner in config.autoscaled_runners():
        if args.runner is not None and index != args.runner:
            continue
        assert runner.autoscaler is not None  # autoscaled_runners() guarantees it
        limits = runner.autoscaler.limits()
        schedule = runner.autoscaler.schedule()
        print(f"runners[{index}] {runner.name or '(unnamed)'}: {limits}")
        for at in times:
            policy = schedule.active(at)
            print(f"at {at.isoformat()} ({at:%A}): {describe(policy)}")
            what_if(limits, policy, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
