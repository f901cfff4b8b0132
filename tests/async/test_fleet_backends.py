"""The same Fleet on asyncio and on trio, in real time with sub-second delays."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from fleetkit.errors import InstanceLost
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.testing.simulated import Delay, SimulatedGroup

QUICK = FleetSettings(
    update_interval=0.2,
    update_interval_when_expecting=0.02,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=0.05,
    shutdown_deletion_retries=10,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_fleet_runs_on_both_backends() -> None:
    """Scale up, serve concurrent jobs, lose an instance, and empty the group on exit."""
    group = SimulatedGroup(boot=Delay(0.02, 0.05), deletion=Delay(0.01, 0.03))
    policy = Policy(idle_count=1, idle_time=timedelta(seconds=0.2))
    lost: list[str] = []
    done: list[str] = []
    with anyio.fail_after(10):
        async with Fleet(group, Limits(capacity_per_instance=2), policy, settings=QUICK) as fleet:

            async def job(key: str, victim: bool) -> None:
                try:
                    async with fleet.acquire(key, timeout=5.0) as slot:
                        if victim:
                            group.kill(slot.instance_id)
                        await anyio.sleep(0.3)
                    done.append(key)
                except InstanceLost as exc:
                    lost.append(exc.instance_id)

            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(job, f"job-{n}", n == 5)
                    await anyio.sleep(0.01)
    assert len(done) + len(lost) == 6
    assert len(lost) >= 1
    assert group.live_ids() == []
