"""A fleet SIGKILLed mid-run leaves no orphan: the next fleet on the same state adopts or
removes every instance, checked by listing the Auto Scaling group on moto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectorConfig, InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.provider.aws import AWSInstanceGroup
from fleetkit.testing.moto import MotoServer
from tests.integration import aws_fixtures

pytestmark = pytest.mark.integration

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto

OWNER = "crash-fleet"
CONNECTOR = ConnectorConfig(username="ec2-user")

# The child: a fleet with state storage keeping 3 idle slots, one of them held
# by a job that never ends. It says HOLDING once the state file shows the job.
CHILD = """
import json, sys
from datetime import timedelta
from pathlib import Path
import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy
from fleetkit.provider.aws import AWSInstanceGroup

plugin_config, state_dir = json.loads(sys.argv[1]), Path(sys.argv[2])

async def main():
    group = AWSInstanceGroup.from_config(
        plugin_config, ConnectorConfig(username="ec2-user"), owner="crash-fleet"
    )
    settings = FleetSettings(
        update_interval=0.5, update_interval_when_expecting=0.1,
        state_storage_dir=state_dir, owner_id="crash-fleet",
    )
    policy = Policy(idle_count=3, idle_time=timedelta(hours=1))
    async with Fleet(group, Limits(), policy, settings=settings) as fleet:
        async with fleet.acquire("job-running", timeout=60) as slot:
            for _ in range(600):
                stored = json.loads((state_dir / "state.json").read_text())["instances"]
                held = [i for i, e in stored.items() if e["acquisitions"]]
                if held and len(fleet.snapshot().instances) == 4:
                    print("HOLDING", slot.instance_id, flush=True)
                    break
                await anyio.sleep(0.05)
            await anyio.sleep(3600)

anyio.run(main)
"""


@pytest.mark.anyio
async def test_sigkilled_fleet_leaves_no_orphans(moto: MotoServer, tmp_path: Path) -> None:
    """After SIGKILL, a new fleet adopts the idle instances, removes the busy one, and
    every instance in the group is one the new fleet holds or deleted."""
    moto.create_group("crash", max_size=6)
    state_dir = tmp_path / "state"
    command = [
        sys.executable,
        "-c",
        CHILD,
        json.dumps(moto.plugin_config("crash")),
        str(state_dir),
    ]
    async with await anyio.open_process(
        command, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    ) as child:
        assert child.stdout is not None
        try:
            with anyio.fail_after(60):
                line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 4096)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    assert line.startswith(b"HOLDING"), line
    busy = line.split()[1].decode()
    before = moto.group_members("crash")
    assert busy in before
    assert len(before) == 4

    group = AWSInstanceGroup.from_config(moto.plugin_config("crash"), CONNECTOR, owner=OWNER)
    settings = FleetSettings(
        update_interval=0.5,
        update_interval_when_expecting=0.1,
        state_storage_dir=state_dir,
        owner_id=OWNER,
        delete_instances_on_shutdown=True,
        shutdown_deletion_interval=0.3,
        shutdown_deletion_retries=5,
    )
    policy = Policy(idle_count=3, idle_time=timedelta(hours=1))
    async with Fleet(group, Limits(), policy, settings=settings) as fleet:
        for _ in range(300):
            members = moto.group_members("crash")
            if busy not in members and len(members) >= 3:
                break
            await anyio.sleep(0.1)
        known = {i.id: i.state for i in fleet.snapshot().instances}
        for instance_id in moto.group_members("crash"):
            assert known.get(instance_id) in (InstanceState.READY, InstanceState.RUNNING)
        adopted = set(before) - {busy}
        assert adopted <= set(known)
    assert moto.group_members("crash") == []
