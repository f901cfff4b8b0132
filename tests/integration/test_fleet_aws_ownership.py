"""Issue 13's defects on the AWS provider against moto (real HTTP, asyncio, real time):
another owner's instance in the group, an instance of unknown past, heartbeats before
hand-out."""

from __future__ import annotations

from datetime import timedelta

import anyio
import attrs
import pytest

from fleetkit.connector import CommandResult
from fleetkit.fleet import Fleet
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.provider.aws import OWNER_TAG
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.moto import LINUX_AMI, MotoServer
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import build
from tests.integration.test_fleet_aws import QUICK, until

pytestmark = pytest.mark.integration

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto


def _attach(moto: MotoServer, group: str, owner: str) -> str:
    """Launch an instance tagged for ``owner`` and attach it to ``group``, as another
    manager sharing the group would have; return its id."""
    reservation = moto.client("ec2").run_instances(
        ImageId=LINUX_AMI,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": OWNER_TAG, "Value": owner}]}
        ],
    )
    instance_id: str = reservation["Instances"][0]["InstanceId"]
    moto.client("autoscaling").attach_instances(
        InstanceIds=[instance_id], AutoScalingGroupName=group
    )
    return instance_id


@pytest.mark.anyio
async def test_another_owners_instances_are_left_alone_on_aws(moto: MotoServer) -> None:
    """One foreign instance in the group at start and one attached mid-run: neither is
    drained, given a job or terminated, shutdown included; ours are all terminated."""
    moto.create_group("shared", max_size=6)
    at_start = _attach(moto, "shared", "someone-else")
    async with Fleet(
        build(moto, "shared"), Limits(), Policy(idle_count=1), settings=QUICK
    ) as fleet:
        await until(lambda: len(moto.group_members("shared")) == 2)
        mid_run = _attach(moto, "shared", "someone-else")
        await anyio.sleep(1.5)
        for n in range(2):
            async with fleet.acquire(f"job-{n}", timeout=20.0) as slot:
                assert slot.instance_id not in (at_start, mid_run)
        assert not {at_start, mid_run} & set(fleet.snapshot().by_id())
    assert moto.group_members("shared") == sorted([at_start, mid_run])


@pytest.mark.anyio
async def test_an_instance_of_unknown_past_is_removed_under_max_use_count(
    moto: MotoServer,
) -> None:
    """Without state storage an instance carrying our tag may have run jobs: with
    max_use_count 1 it is terminated and the job runs on a fresh instance."""
    moto.create_group("single-use", max_size=4)
    earlier = _attach(moto, "single-use", "fleet-test")
    limits = Limits(max_use_count=1)
    group = build(moto, "single-use")
    async with Fleet(group, limits, Policy(idle_count=1), settings=QUICK) as fleet:
        async with fleet.acquire("job", timeout=20.0) as slot:
            assert slot.instance_id != earlier
        await until(lambda: earlier not in moto.group_members("single-use"))
    assert moto.group_members("single-use") == []


@pytest.mark.anyio
async def test_acquire_heartbeats_skip_an_instance_that_does_not_answer(moto: MotoServer) -> None:
    """acquire_heartbeats on AWS (no provider heartbeat verb): `exit 0` runs over the
    connector before each hand-out; the instance where it fails gets no job."""
    moto.create_group("beats", max_size=4)
    connector = FakeConnector()
    settings = attrs.evolve(QUICK, acquire_heartbeats=True, heartbeat_interval=300.0)
    policy = Policy(idle_count=2, idle_time=timedelta(minutes=5))
    group = build(moto, "beats")
    async with Fleet(group, Limits(), policy, connector=connector, settings=settings) as fleet:
        await until(
            lambda: len(fleet.snapshot().instances) == 2 and fleet.stats().tasks["idle"] == 2
        )
        oldest = min(fleet.snapshot().instances, key=lambda i: (i.ready_at, i.id)).id
        connector.on("exit 0", CommandResult(1, b"", b""), instance_id=oldest)
        async with fleet.acquire("job", timeout=20.0) as slot:
            assert slot.instance_id != oldest
        assert connector.commands(oldest) == ["exit 0"]
        assert connector.commands(slot.instance_id) == ["exit 0"]
        assert fleet.snapshot().by_id()[oldest].health_failures == 1
