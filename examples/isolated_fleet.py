"""Your own orchestrator with VM isolation: take a slot, open a VM on it, run, close.

The fleet is the local provider with a nesting daemon in each instance
(``nesting = "sandbox"``), so this runs on any Linux machine with OpenSSH. The
sandbox hypervisor isolates nothing: it shows the flow. With a cloud provider
and a real hypervisor the code below is the same.

    python examples/isolated_fleet.py
"""

from __future__ import annotations

import os
import shutil
import tempfile

import anyio

from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import ImageRejected
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.isolation import IsolationSettings, Isolator
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy
from fleetkit.provider import load


async def main(root: str) -> None:
    group = load(
        "local",
        {"root": root, "nesting": "sandbox", "max_instances": 1},
        ConnectorConfig(),
        owner="isolated-example",
    )
    settings = IsolationSettings(
        nesting_host="unix:nesting.sock",  # relative to the instance's home
        image="default",
        allowed_images=("default",),
    )
    async with (
        SSHConnector() as ssh,
        Isolator(settings) as isolator,
        Fleet(
            group,
            Limits(capacity_per_instance=2, max_instances=1),
            Policy(idle_count=0),
            connector=ssh,
            settings=FleetSettings(delete_instances_on_shutdown=True),
            ready_check=isolator.ready_check(ssh),
        ) as fleet,
    ):
        async with fleet.acquire("job-1", timeout=120) as slot, isolator.open(slot, ssh) as vm:
            result = await vm.connection.run('echo "in $HOME"; uname -s')
            print(f"{vm.vm.id} on {slot.instance_id} slot {slot.number}:")
            print(result.stdout_text, end="")
        # The VM is gone now. An image outside allowed_images never gets one:
        async with fleet.acquire("job-2", timeout=120) as slot:
            try:
                async with isolator.open(slot, ssh, image="$IMAGE", variables={"IMAGE": "x/y"}):
                    pass
            except ImageRejected as refused:
                print(f"refused: {refused}")


if __name__ == "__main__":
    # A short root (the daemon's unix socket lives in each instance's directory)
    # that the instances' login user may enter.
    root = tempfile.mkdtemp(prefix="fk-example-")
    os.chmod(root, 0o755)
    try:
        anyio.run(main, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
