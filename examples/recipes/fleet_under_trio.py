"""Recipe 2: an autoscaled fleet of your own, on trio: acquire a slot, run a command."""

from __future__ import annotations

from datetime import timedelta

import anyio

from fleetkit.connector.local import LocalConnector
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.provider.local import LocalInstanceGroup


async def main() -> None:
    # Plain sandboxes (no sshd), reached by the local connector: both run on trio.
    group = LocalInstanceGroup(owner="recipe-trio", use_sshd=False, max_instances=2)
    settings = FleetSettings(update_interval=1, update_interval_when_expecting=0.1)
    policy = Policy(idle_count=1, idle_time=timedelta(minutes=5))
    connector = LocalConnector()
    limits = Limits(capacity_per_instance=2)
    fleet = Fleet(group, limits, policy, connector=connector, settings=settings)
    async with fleet:
        async with (
            fleet.acquire("job-1", timeout=timedelta(seconds=30)) as slot,
            connector.connect(slot.connect_info) as conn,
        ):
            result = await conn.run("echo hello from $PWD", timeout=10)
        print(f"{slot.instance_id}: {result.stdout_text.strip()}")
        print(f"instances: {len(fleet.snapshot().instances)}")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
