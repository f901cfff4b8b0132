"""The AWS provider end to end against moto (no AWS account needed).

Starts moto on 127.0.0.1, creates a launch template and an Auto Scaling group
of MaxSize 4, then drives the group the way a fleet does: init, increase,
update, connect_info, decrease, shutdown. Run it with::

    python examples/aws_provider.py
"""

from __future__ import annotations

import asyncio

from fleetkit.model import ConnectorConfig, ProviderState
from fleetkit.provider import load
from fleetkit.provider.aws import AWSInstanceGroup
from fleetkit.testing.moto import MotoServer


async def drive(moto: MotoServer) -> None:
    """Scale the group up past its MaxSize, look at it, and scale it back to zero."""
    group = load(
        "fleeting-plugin-aws",
        moto.plugin_config("example-asg"),
        ConnectorConfig(username="ec2-user"),
        owner="example-fleet",
    )
    assert isinstance(group, AWSInstanceGroup)
    info = await group.init()
    print(f"group {info.id}: max size {info.max_size}")
    try:
        accepted = await group.increase(6)
        print(f"increase(6) accepted {accepted} (MaxSize caps it)")
        statuses = await group.update()
        for status in statuses:
            print(f"  {status.id}: {status.state.value}, owner {status.owner}")
        running = [s.id for s in statuses if s.state is ProviderState.RUNNING]
        connect = await group.connect_info(running[0])
        print(
            f"connect to {running[0]}: {connect.username}@{connect.external_addr} "
            f"(private {connect.internal_addr}), pushed key valid until {connect.expires_at}"
        )
        removed = await group.decrease(running)
        after = await group.update()
        deleted = sum(s.state is ProviderState.DELETED for s in after)
        print(f"decrease removed {len(removed)}; next update: {deleted} of {len(after)} deleted")
        print(f"AWS calls: {dict(group.stats.calls)}")
    finally:
        await group.shutdown()


def main() -> None:
    """Start moto, create the group, drive it, stop moto."""
    with MotoServer() as moto:
        moto.create_group("example-asg", max_size=4)
        asyncio.run(drive(moto))


if __name__ == "__main__":
    main()
