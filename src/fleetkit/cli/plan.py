"""``fleetkit plan CONFIG``: what the planner would do, and why, for a fleet you describe.

Describe the fleet with ``--instances`` (ready, idle for ``--idle-for``),
``--creating``, ``--acquired``, ``--reserved`` and ``--pending``; pick the
moment with ``--at`` (the policy in force then is used). The command prints
the policy, the figures behind the plan (in use, idle target, demand, desired
instances and what capped them) and every decision with its reason, plus
whether one more reservation would be granted. Nothing is started: the planner
is a pure function and this is a what-if.

Exit status: 0; 1 when the config is invalid or the fleet described cannot
exist (more acquired slots than instances hold).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import attrs

from fleetkit._localzone import LocalZone, local_zone
from fleetkit.cli._common import instant, runner_choice
from fleetkit.errors import FleetkitError

__all__ = ["describe_fleet", "register", "run"]

# The snapshot's clock: any value works, the planner only takes differences.
_NOW = 1_000_000.0


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``plan`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "plan",
        help="show what the planner would do for a described fleet, with reasons",
        description="A what-if: describe the fleet and the moment, see the plan the "
        "runner's policies and limits give, each decision with its reason.",
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, help="path to config.toml")
    parser.add_argument("--runner", metavar="NAME_OR_INDEX", help="the [[runners]] entry")
    parser.add_argument(
        "--at",
        metavar="WHEN",
        type=instant,
        help="the moment (ISO 8601; naive is in the local zone, TZ or the system's; default: now): picks the active policy",
    )
    count = _count
    parser.add_argument("--instances", metavar="N", type=count, default=0, help="ready instances")
    parser.add_argument(
        "--creating", metavar="N", type=count, default=0, help="instances still booting"
    )
    parser.add_argument(
        "--acquired", metavar="N", type=count, default=0, help="slots held by running jobs"
    )
    parser.add_argument(
        "--reserved", metavar="N", type=count, default=0, help="reservations (job requests)"
    )
    parser.add_argument(
        "--pending", metavar="N", type=count, default=0, help="acquisitions waiting for a slot"
    )
    parser.add_argument(
        "--idle-for",
        metavar="DURATION",
        type=_duration,
        default=timedelta(0),
        help='how long free instances have been idle, e.g. "25m" (default 0s)',
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


#: The largest count ``plan`` describes: ten times the fleet its benchmark plans
#: in milliseconds; a fleet of 9223372036854775807 would only fill memory.
MAX_COUNT = 100_000


def _count(text: str) -> int:
    try:
        value = int(text) if len(text) <= 20 else -1
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a count 0..{MAX_COUNT}, got {text[:40]!r}")
    return value


def _duration(text: str) -> timedelta:
    from fleetkit.config import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < timedelta(0):
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return value


def describe_fleet(
    *,
    capacity: int,
    instances: int,
    creating: int,
    acquired: int,
    reserved: int,
    pending: int,
    idle_for: timedelta,
) -> Any:
    """The :class:`~fleetkit.model.Snapshot` of the described fleet at ``_NOW``.

    Acquired slots are packed onto the ready instances, oldest first, as the
    runtime packs them. Raises :class:`~fleetkit.errors.ConfigError` when they
    do not fit.
    """
    from fleetkit.errors import ConfigError, Problem
    from fleetkit.model import Instance, InstanceState, Snapshot

    if acquired > instances * capacity:
        need = math.ceil(acquired / capacity)
        raise ConfigError(
            [
                Problem(
                    "--acquired",
                    f"{acquired} slots need at least {need} ready instances of capacity "
                    f"{capacity}; --instances is {instances}",
                )
            ]
        )
    idle_since = _NOW - idle_for.total_seconds()
    fleet = []
    left = acquired
    for i in range(instances):
        busy = min(left, capacity)
        left -= busy
        # Older instances first: i-1 became ready before i-2.
        ready_at = idle_since - (instances - i)
        fleet.append(
            Instance(
                id=f"i-{i + 1}",
                state=InstanceState.READY,
                created_at=ready_at - 1,
                ready_at=ready_at,
                slots_in_use=frozenset(range(busy)),
                use_count=busy,
                idle_since=_NOW if busy else idle_since,
            )
        )
    for j in range(creating):
        fleet.append(
            Instance(id=f"i-{instances + j + 1}", state=InstanceState.CREATING, created_at=_NOW)
        )
    return Snapshot(
        instances=tuple(fleet),
        reservations=tuple(f"reserved-{k + 1}" for k in range(reserved)),
        pending=tuple(f"pending-{k + 1}" for k in range(pending)),
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the plan; 0, or 1 for an invalid config or fleet."""
    from fleetkit.config import format_duration, load
    from fleetkit.executor import select_runner
    from fleetkit.planner import can_reserve, plan

    out = out or sys.stdout
    zone = local_zone()
    at: datetime = args.at or datetime.now(zone.zone)
    try:
        config = load(args.config)
        index, entry, auto = select_runner(
            config, runner_choice(args.runner), source=str(args.config)
        )
        limits = auto.limits()
        schedule = auto.schedule(zone.zone)
        policy = schedule.active(at)
        snapshot = describe_fleet(
            capacity=limits.capacity_per_instance,
            instances=args.instances,
            creating=args.creating,
            acquired=args.acquired,
            reserved=args.reserved,
            pending=args.pending,
            idle_for=args.idle_for,
        )
        the_plan = plan(snapshot, policy, limits, _NOW)
        reserve = can_reserve(snapshot, policy, limits, throttling=auto.reservation_throttling)
    except FleetkitError as exc:
        print(f"fleetkit plan: {exc}", file=sys.stderr)
        return 1
    which = next((i for i, p in enumerate(schedule.policies) if p is policy), None)
    source = f"policy[{which}]" if which is not None else "default (no period matches)"
    policy_text = (
        f"idle_count {policy.idle_count}, idle_time {format_duration(policy.idle_time)}, "
        f"scale_factor {policy.scale_factor:g}"
        + (f" (limit {policy.scale_factor_limit})" if policy.scale_factor_limit else "")
        + f", {'preemptive' if policy.preemptive else 'not preemptive'}"
    )
    if args.json:
        json.dump(
            {
                "runner": index,
                "at": at.isoformat(),
                "policy": {
                    "source": source,
                    **_policy_dict(policy),
                    "zone": policy.timezone or zone.name,
                },
                "figures": attrs.asdict(the_plan.figures),
                "assignments": [
                    {"key": a.key, "instance_id": a.instance_id, "slot": a.slot}
                    for a in the_plan.assignments
                ],
                "provision": the_plan.provision.count if the_plan.provision else 0,
                "deprovisions": [
                    {"instance_id": d.instance_id, "reason": str(d.reason)}
                    for d in the_plan.deprovisions
                ],
                "decisions": str(the_plan).splitlines(),
                "reserve": {"granted": reserve.granted, "reason": reserve.reason},
            },
            out,
            indent=2,
        )
        out.write("\n")
        return 0
    f = the_plan.figures
    name = entry.name or f"runners[{index}]"
    print(f"runner {name!r} at {at.isoformat(timespec='minutes')}", file=out)
    print(f"  policy: {source}: {policy_text}", file=out)
    print(f"  time zone: {_zone_text(policy, zone)}", file=out)
    print(
        f"  limits: capacity {limits.capacity_per_instance} per instance, max_instances "
        f"{limits.max_instances or 'unlimited'}, max_use_count "
        f"{limits.max_use_count or 'unlimited'}",
        file=out,
    )
    print(
        f"  fleet: {args.instances} ready (idle for {format_duration(args.idle_for)} when free), "
        f"{args.creating} creating; {args.acquired} acquired, {args.reserved} reserved, "
        f"{args.pending} pending",
        file=out,
    )
    capped = f", capped by {f.capped_by}" if f.capped_by else ""
    print(
        f"figures: in use {f.in_use} (acquired {f.acquired} + reserved {f.reserved}), "
        f"idle target {f.idle_target}, demand {f.demand_slots} slots "
        f"-> {f.desired_instances} instances wanted, {f.instances} counted{capped}",
        file=out,
    )
    print("decisions:", file=out)
    for line in str(the_plan).splitlines():
        print(f"  {line}", file=out)
    verdict = "granted" if reserve.granted else "refused"
    print(f"one more reservation: {verdict} ({reserve.reason})", file=out)
    return 0


def _zone_text(policy: Any, zone: LocalZone) -> str:
    if policy.timezone:
        return f"{policy.timezone} (the policy's timezone)"
    return f"{zone.describe()}: no timezone set"


def _policy_dict(policy: Any) -> dict[str, Any]:
    from fleetkit.config import format_duration

    return {
        "idle_count": policy.idle_count,
        "idle_time": format_duration(policy.idle_time),
        "scale_factor": policy.scale_factor,
        "scale_factor_limit": policy.scale_factor_limit,
        "preemptive": policy.preemptive,
        "periods": list(policy.periods),
        "timezone": policy.timezone,
    }
