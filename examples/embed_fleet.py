"""Embed a fleet in your own program: jobs acquire slots, the fleet sizes itself.

Runs on the simulated group in trio's virtual time, so a working day of jobs
(a busy morning under an office-hours policy, then a quiet evening) takes a
second or two of real time. Swap ``SimulatedGroup`` for
``fleetkit.provider.load("aws", {...}, ConnectorConfig())`` (and drop the mock
clock) to run the same code against a real Auto Scaling group.

    python examples/embed_fleet.py
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import trio.testing

from fleetkit.fleet import Fleet, FleetSettings, InstanceReady, anchored_wall_clock
from fleetkit.model import Limits
from fleetkit.policy import Policy, Schedule
from fleetkit.testing.simulated import Delay, SimulatedGroup

OFFICE_HOURS = Policy(
    idle_count=4,
    idle_time=timedelta(minutes=20),
    periods=("* 8-17 * * mon-fri",),
    timezone="Europe/Berlin",
)
BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = Policy(idle_count=0, idle_time=timedelta(minutes=5))


async def main() -> None:
    group = SimulatedGroup(seed=1, boot=Delay(30.0, 90.0), deletion=Delay(10.0, 30.0))
    limits = Limits(capacity_per_instance=2, max_instances=10)
    settings = FleetSettings(delete_instances_on_shutdown=True)
    # Monday 06:00 UTC is 07:00 in Berlin: the office-hours policy starts an hour in.
    wall = anchored_wall_clock(datetime(2026, 11, 23, 6, 0, tzinfo=UTC), at=anyio.current_time())
    rng = random.Random(7)
    finished: list[str] = []

    async def job(fleet: Fleet, key: str) -> None:
        async with fleet.acquire(key, timeout=3600.0) as slot:
            # A real job would run commands with a connector on slot.connect_info.
            await anyio.sleep(rng.uniform(120.0, 900.0))
            finished.append(f"{key} on {slot.instance_id} slot {slot.number}")

    async def report(fleet: Fleet) -> None:
        async with fleet.events() as stream:
            async for event in stream:
                if isinstance(event, InstanceReady):
                    stats = fleet.stats()
                    print(
                        f"{wall(event.at).astimezone(BERLIN):%H:%M} Berlin: {event.instance_id} ready; "
                        f"{stats.instances['ready']} ready, {stats.tasks['acquired']} slots busy"
                    )

    schedule = Schedule([NIGHT, OFFICE_HOURS])
    async with Fleet(group, limits, schedule, settings=settings, wall_clock=wall) as fleet:
        async with anyio.create_task_group() as reporting:
            reporting.start_soon(report, fleet)
            async with anyio.create_task_group() as jobs:
                for minute in range(12 * 60):
                    busy = 60 <= minute < 6 * 60
                    if rng.random() < (0.3 if busy else 0.03):
                        jobs.start_soon(job, fleet, f"job-{minute}")
                    await anyio.sleep(60.0)
            reporting.cancel_scope.cancel()
        stats = fleet.stats()
    print(f"{len(finished)} jobs finished; scale-ups {stats.scale_operations.get('up', 0)}")
    print(f"instances left after shutdown: {group.live_ids()}")


if __name__ == "__main__":
    anyio.run(
        main,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
