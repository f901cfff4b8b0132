"""The fleet on the local provider: real processes, real ready commands, nothing left behind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import attrs
import pytest

from fleetkit._procs import wait_until
from fleetkit.connector import Connector
from fleetkit.connector.local import LocalConnector
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectorConfig, InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.local_provider_support import leftovers, require_sshd
from tests.support import require_module

pytestmark = pytest.mark.integration

SETTINGS = FleetSettings(
    update_interval=0.5,
    update_interval_when_expecting=0.1,
    deletion_retry_interval=1.0,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=0.2,
    shutdown_deletion_retries=10,
    ready_command_timeout=20.0,
    owner_id="fleet-local",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncssh runs on asyncio only


async def until(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms; fail after ``seconds``."""
    with anyio.fail_after(seconds):
        await wait_until(predicate, 0.05)


async def run_fleet(
    root: Path, connector: Connector, *, use_sshd: bool, ready_command: str, job: str, output: str
) -> None:
    group = LocalInstanceGroup.from_config(
        {"root": str(root), "use_sshd": use_sshd, "max_instances": 3},
        ConnectorConfig(),
        owner="fleet-local",
    )
    policy = Policy(idle_count=2, idle_time=timedelta(seconds=1))
    limits = Limits(capacity_per_instance=2)
    settings = attrs.evolve(SETTINGS, instance_ready_command=ready_command)
    async with Fleet(group, limits, policy, connector=connector, settings=settings) as fleet:
        async with fleet.acquire("job-1", timeout=30.0) as slot:
            assert slot.connect_info is not None
            async with connector.connect(slot.connect_info) as conn:
                result = await conn.run(job)
            assert result.exit_code == 0
            assert result.stdout.decode() == output.format(info=slot.connect_info)
        ready = [i for i in fleet.snapshot().instances if i.state is InstanceState.READY]
        assert ready
        assert fleet.stats().histograms["instance_readiness_time_seconds"].count == len(ready)
        fleet.set_schedule(Policy(idle_count=0, idle_time=timedelta(0)))
        await until(lambda: fleet.snapshot().instances == ())
    assert leftovers(root / "fleet-local") == []


@pytest.mark.anyio
async def test_fleet_on_local_sandboxes(tmp_path: Path) -> None:
    """Sandbox instances get the ready command through LocalConnector, serve a job,
    scale to zero, and leave no process or directory behind."""
    await run_fleet(
        tmp_path,
        LocalConnector(),
        use_sshd=False,
        ready_command="echo ready > ready.txt",
        job="cat ready.txt",
        output="ready\n",
    )


@pytest.mark.anyio
async def test_fleet_on_local_sshd_instances(tmp_path: Path) -> None:
    """sshd instances are readied over real SSH, serve a job, and are all removed."""
    require_sshd()
    require_module("asyncssh", "pip install 'fleetkit[ssh]'")
    from fleetkit.connector.ssh import SSHConnector

    async with SSHConnector(dial_timeout=10) as ssh:
        await run_fleet(
            tmp_path,
            ssh,
            use_sshd=True,
            ready_command='test -n "$SSH_CONNECTION"',
            job="id -un",
            output="{info.username}\n",
        )
