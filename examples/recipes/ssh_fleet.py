"""Recipe 4: a fleet whose instances you reach over SSH (asyncio), with a deadline."""

from __future__ import annotations

import anyio

from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import AcquireTimeout
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.provider.local import LocalInstanceGroup


async def main() -> None:
    # Each instance is its own sshd on 127.0.0.N (needs OpenSSH's sshd installed).
    group = LocalInstanceGroup(owner="recipe-ssh", use_sshd=True, max_instances=1)
    settings = FleetSettings(update_interval_when_expecting=0.1)
    async with (
        SSHConnector(dial_timeout=10) as ssh,
        Fleet(group, Limits(), Policy(idle_count=1), connector=ssh, settings=settings) as fleet,
        fleet.acquire("job-1", timeout=30) as slot,
    ):
        async with ssh.connect(slot.connect_info) as conn:
            result = await conn.run(["sh", "-c", 'echo "$(id -un) via SSH"'], timeout=10)
        print(f"{slot.instance_id}: {result.stdout_text.strip()}")
        try:  # the only instance is busy and the fleet may not grow
            async with fleet.acquire("job-2", timeout=0.5):
                pass
        except AcquireTimeout as exc:
            print(f"as expected: {exc}")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")  # asyncssh runs on asyncio only
