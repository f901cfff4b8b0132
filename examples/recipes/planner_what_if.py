"""Recipe 5: ask the planner, without running anything, what a policy would do."""

from __future__ import annotations

from datetime import datetime, timedelta

from fleetkit.model import Instance, InstanceState, Limits, Snapshot
from fleetkit.planner import plan
from fleetkit.policy import Policy, Schedule

schedule = Schedule(
    [
        Policy(idle_count=0, idle_time=timedelta(minutes=5)),
        Policy(
            idle_count=10,
            idle_time=timedelta(minutes=30),
            scale_factor=0.5,
            periods=["* 9-17 * * mon-fri"],
            timezone="Europe/Berlin",
        ),
    ]
)
limits = Limits(capacity_per_instance=4, max_instances=50)
busy = tuple(
    Instance(
        id=f"i-{n}",
        state=InstanceState.READY,
        created_at=0.0,
        ready_at=0.0,
        slots_in_use=frozenset(range(4)),
        use_count=1,
    )
    for n in range(10)
)  # 10 instances with 40 jobs running
for at in (datetime(2026, 3, 2, 7, 30), datetime(2026, 3, 2, 9, 0)):  # a Monday, UTC
    policy = schedule.active(at)
    decided = plan(Snapshot(instances=busy), policy, limits, now=3600.0)
    wanted = decided.provision.count if decided.provision else 0
    print(f"{at:%H:%M} UTC: idle_count {policy.idle_count}, provision {wanted} instance(s)")
