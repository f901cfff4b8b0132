"""The local provider on its own: two instances on this machine, then none.

Run: ``python examples/local_provider.py``. With OpenSSH's sshd installed each
instance is an sshd on its own 127.0.0.N; without it, a sandbox directory.
Secrets (the generated private key) are masked in what is printed.
"""

from __future__ import annotations

import logging

import anyio

from fleetkit.model import ConnectorConfig, ProviderState
from fleetkit.provider import InstanceGroup, load


async def wait_running(group: InstanceGroup, count: int) -> list[str]:
    """Poll update() until ``count`` instances run, as the fleet runtime would."""
    with anyio.fail_after(30):
        while True:
            statuses = await group.update()
            running = [s.id for s in statuses if s.state is ProviderState.RUNNING]
            if len(running) >= count:
                return running
            await anyio.sleep(0.1)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The same plugin and plugin_config a config.toml's [runners.autoscaler] gives.
    group = load(
        "local",
        {"max_instances": 4, "boot_delay": "500ms"},
        ConnectorConfig(),
        owner="example-fleet",
    )
    info = await group.init()
    print(f"group {info.id}: up to {info.max_size} instances")
    try:
        accepted = await group.increase(2)
        print(f"increase(2) accepted {accepted}")
        ids = await wait_running(group, accepted)
        for instance_id in ids:
            # ConnectInfo's repr masks the key and password.
            print(await group.connect_info(instance_id))
        print(f"decrease -> {await group.decrease(ids)}")
        print(f"update -> {[(s.id, s.state.value) for s in await group.update()]}")
    finally:
        await group.shutdown()


if __name__ == "__main__":
    anyio.run(main)
