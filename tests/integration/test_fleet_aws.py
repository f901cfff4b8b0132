"""The fleet on the AWS provider against moto over real HTTP (asyncio, real time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anyio
import attrs
import pytest

from fleetkit._procs import wait_until
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.testing.moto import THROTTLING, MotoServer
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import build

pytestmark = pytest.mark.integration

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto

QUICK = FleetSettings(
    update_interval=0.5,
    update_interval_when_expecting=0.1,
    deletion_retry_interval=1.0,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=0.3,
    shutdown_deletion_retries=5,
    owner_id="fleet-test",
)


async def until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll ``predicate`` every 50 ms; fail after ``seconds``."""
    with anyio.fail_after(seconds):
        await wait_until(predicate, 0.05)


@pytest.mark.anyio
async def test_fleet_scales_an_auto_scaling_group_up_and_to_zero(moto: MotoServer) -> None:
    """idle_count 2 creates two EC2 instances; a job runs; a zero policy removes them all."""
    moto.create_group("ci", max_size=4)
    group = build(moto, "ci")
    policy = Policy(idle_count=2, idle_time=timedelta(seconds=1))
    async with Fleet(group, Limits(), policy, settings=QUICK) as fleet:
        await until(
            lambda: [i.state for i in fleet.snapshot().instances] == [InstanceState.READY] * 2
        )
        assert len(moto.group_members("ci")) == 2
        async with fleet.acquire("job-1", timeout=10.0) as slot:
            assert slot.instance_id in moto.group_members("ci")
            assert slot.connect_info is not None
            assert slot.connect_info.internal_addr
        fleet.set_schedule(Policy(idle_count=0, idle_time=timedelta(0)))
        await until(lambda: moto.group_members("ci") == [])
        assert fleet.limits.max_instances == 4
    assert moto.calls["SetDesiredCapacity"] >= 1


@pytest.mark.anyio
async def test_fleet_never_asks_beyond_the_groups_max_size(moto: MotoServer) -> None:
    """Demand beyond MaxSize (which moto does not enforce) stops at MaxSize; shutdown empties it."""
    moto.create_group("small", max_size=2)
    group = build(moto, "small")
    async with Fleet(group, Limits(), Policy(idle_count=5), settings=QUICK) as fleet:
        await until(lambda: len(moto.group_members("small")) == 2)
        await anyio.sleep(1.0)
        assert len(moto.group_members("small")) == 2
        assert fleet.stats().desired_instances == 2
    assert moto.group_members("small") == []


@pytest.mark.anyio
async def test_fleet_survives_throttling_from_aws(moto: MotoServer) -> None:
    """Throttled SetDesiredCapacity calls are backed off and the fleet still scales up."""
    moto.create_group("busy", max_size=3)
    moto.inject("SetDesiredCapacity", THROTTLING, times=8)
    group = build(moto, "busy")
    settings = attrs.evolve(QUICK, ready_backoff_initial=0.2, ready_backoff_max=0.5)
    async with Fleet(group, Limits(), Policy(idle_count=1), settings=settings) as fleet:
        await until(lambda: fleet.stats().instances["ready"] == 1)
        assert fleet.stats().scale_operations.get("up_failure", 0) >= 1
