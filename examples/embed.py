"""Embedding fleetkit: the three verbs (Fleet, acquire, run_job) in your own program.

Runs four jobs on an autoscaled fleet of local instances (the ``local``
provider: an sshd per instance where OpenSSH is installed, plain sandboxes
otherwise), two jobs per instance, and deletes the instances at the end::

    python examples/embed.py

No config.toml here: the program builds the provider, limits and policy
itself. ``InstanceExecutor.from_config`` does the same from a config.toml.
"""

from __future__ import annotations

from datetime import timedelta

import anyio

from fleetkit import provider
from fleetkit.executor import ProtocolConnector, connector_factories
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.jobs import Job, JobResult, MemoryLog, run_job
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy


async def run_one(fleet: Fleet, connector: ProtocolConnector, job: Job) -> JobResult:
    """Acquire a slot (the fleet grows when none is free), run the job there, release."""
    log = MemoryLog()
    async with fleet.acquire(f"job-{job.id}") as slot:
        result = await run_job(slot, job, connector, log=log)
    print(f"--- {job.name}: {result.status.value} on {result.instance_id} slot {result.slot}")
    print(log.text, end="")
    return result


async def main() -> None:
    """Build the parts, open the fleet, run the jobs concurrently."""
    group = provider.load("local", {"max_instances": 2}, owner="fleetkit-embed-example")
    # Reaches each instance by the protocol its connect info names (ssh or local).
    connector = ProtocolConnector(connector_factories(ConnectorConfig()))
    limits = Limits(capacity_per_instance=2, max_instances=2)
    policy = Policy(idle_count=0, idle_time=timedelta(minutes=1))
    settings = FleetSettings(
        update_interval=1.0,
        update_interval_when_expecting=0.2,
        delete_instances_on_shutdown=True,
        shutdown_deletion_interval=0.2,
    )
    jobs = [
        Job(
            id=i,
            name=f"hello {i}",
            shell="sh",
            script='echo "hello from $FLEETKIT_INSTANCE_ID slot $FLEETKIT_SLOT"; sleep 1',
        )
        for i in range(1, 5)
    ]
    try:
        async with (
            Fleet(group, limits, policy, connector=connector, settings=settings) as fleet,
            anyio.create_task_group() as tg,
        ):
            for job in jobs:
                tg.start_soon(run_one, fleet, connector, job)
    finally:
        await connector.aclose()


if __name__ == "__main__":
    # asyncio: the SSH connector (asyncssh) runs on asyncio only.
    anyio.run(main, backend="asyncio")
