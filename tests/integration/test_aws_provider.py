"""The AWS provider against moto in server mode (real HTTP through aiobotocore).

Where moto is lenient (no MaxSize enforcement, HTTP 500 for unknown ids, no
throttling), the tests check the provider is right anyway: call counts come
from the server's own record, and AWS's error answers are injected at the
HTTP layer so botocore parses them as it would AWS's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tests.support import IN_CI

if not IN_CI:  # skip here without the aws extra; under CI=true the imports below fail
    pytest.importorskip("aiobotocore", reason="pip install 'fleetkit[aws]'")
    pytest.importorskip("moto", reason="pip install 'moto[server]'")

from fleetkit.errors import (
    ConfigError,
    InstanceNotFound,
    ProviderError,
    QuotaExceeded,
    RetryLater,
    Throttled,
)
from fleetkit.model import ConnectorConfig, ProviderState
from fleetkit.provider import aws
from fleetkit.provider._aws_config import parse_aws_config
from fleetkit.provider.aws import OWNER_TAG, AWSAPIError, AWSInstanceGroup, RetryPolicy
from fleetkit.testing.moto import (
    REQUEST_LIMIT_EXCEEDED,
    SERVICE_UNAVAILABLE,
    THROTTLING,
    Fault,
    MotoServer,
)
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import DYNAMIC, FAST_RETRY, WALL, build, running

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NOT_IN_GROUP = Fault(
    400,
    "ValidationError",
    "Instance Id not found - No managed instance found for instance ID: i-0",
)


async def _running_ids(group: AWSInstanceGroup) -> list[str]:
    return sorted(s.id for s in await group.update() if s.state is ProviderState.RUNNING)


# --- init ------------------------------------------------------------------------


async def test_init_describes_the_group_and_tags_it(moto: MotoServer) -> None:
    """init reports aws/<region>/<name> and MaxSize, and tags the group once per owner."""
    moto.create_group("ci", max_size=7)
    moto.create_group("other", max_size=5)
    calls: dict[str, dict[str, int]] = {}
    for key, name, owner in [
        ("first", "ci", "fleet-a"),
        ("restart", "ci", "fleet-a"),
        ("none", "other", None),
    ]:
        group = build(moto, name, owner=owner)
        described = await group.init()
        await group.shutdown()
        calls[key] = dict(group.stats.calls)
        assert described.id == f"aws/us-east-1/{name}"
        assert described.max_size == {"ci": 7, "other": 5}[name]
    assert calls == {
        "first": {"DescribeAutoScalingGroups": 1, "CreateOrUpdateTags": 1},
        "restart": {"DescribeAutoScalingGroups": 1},
        "none": {"DescribeAutoScalingGroups": 1},
    }
    tags = moto.client("autoscaling").describe_tags()["Tags"]
    owned = {(t["ResourceId"], t["Key"], t["Value"], t["PropagateAtLaunch"]) for t in tags}
    assert owned == {("ci", OWNER_TAG, "fleet-a", True)}


async def test_init_of_a_missing_group_names_the_key(moto: MotoServer) -> None:
    """An unknown group name is a ConfigError at plugin_config.name, and nothing stays open."""
    group = build(moto, "no-such-group")
    with pytest.raises(ConfigError) as exc:
        await group.init()
    assert [p.path for p in exc.value.problems] == ["plugin_config.name"]
    assert "no-such-group" in str(exc.value)
    with pytest.raises(ProviderError, match="init"):
        await group.update()


async def test_init_reports_a_missing_credentials_file(moto: MotoServer, tmp_path: Path) -> None:
    """A credentials_file that does not exist is a ConfigError naming that key."""
    moto.create_group("ci")
    config = {**moto.plugin_config("ci"), "credentials_file": str(tmp_path / "nope")}
    group = AWSInstanceGroup.from_config(config, DYNAMIC)
    with pytest.raises(ConfigError) as exc:
        await group.init()
    assert [p.path for p in exc.value.problems] == ["plugin_config.credentials_file"]


async def test_init_reports_an_unreadable_key_path(moto: MotoServer, tmp_path: Path) -> None:
    """Static credentials with a key_path that cannot be read fail init at connector_config.key_path."""
    moto.create_group("ci")
    connector = ConnectorConfig(
        username="ec2-user", use_static_credentials=True, key_path=str(tmp_path / "id_missing")
    )
    group = build(moto, "ci", connector=connector)
    with pytest.raises(ConfigError) as exc:
        await group.init()
    assert [p.path for p in exc.value.problems] == ["connector_config.key_path"]


async def test_dynamic_credentials_fail_init_on_an_unreadable_key_path(
    moto: MotoServer, tmp_path: Path
) -> None:
    """key_path was ignored under dynamic credentials; GitLab fails init when it cannot
    read it, and so does fleetkit, naming the file."""
    moto.create_group("ci")
    missing = tmp_path / "id_missing"
    group = build(moto, "ci", connector=ConnectorConfig(username="ec2-user", key_path=str(missing)))
    with pytest.raises(ConfigError) as exc:
        await group.init()
    (problem,) = exc.value.problems
    assert problem.path == "connector_config.key_path"
    assert str(missing) in problem.message


async def test_dynamic_credentials_push_the_configured_key(
    moto: MotoServer, tmp_path: Path
) -> None:
    """With key_path under dynamic credentials, that key is the one pushed and handed out."""
    from fleetkit.provider._aws_keys import generate_key_pair

    mine = generate_key_pair("mine")
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(mine.private)
    connector = ConnectorConfig(username="ec2-user", key_path=str(key_file))
    async with running(moto, connector=connector) as group:
        await group.increase(1)
        (instance_id,) = await _running_ids(group)
        info = await group.connect_info(instance_id)
        assert info.key == mine.private
        assert not info.use_static_credentials


async def test_unreachable_endpoint_is_retry_later(moto: MotoServer) -> None:
    """A refused connection is retried with backoff, then raised as RetryLater."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # the port is now closed: connections are refused
    config = {**moto.plugin_config("ci"), "endpoint_url": f"http://127.0.0.1:{port}"}
    group = AWSInstanceGroup.from_config(config, DYNAMIC, retry=FAST_RETRY)
    with pytest.raises(RetryLater):
        await group.init()
    stats = group.stats
    assert stats.calls == {"DescribeAutoScalingGroups": FAST_RETRY.attempts}
    assert (stats.transient, stats.retries, stats.failed) == (FAST_RETRY.attempts, 2, 1)


# --- update ------------------------------------------------------------------------


async def test_steady_update_is_one_call(moto: MotoServer) -> None:
    """Once every instance was seen, an update is one DescribeAutoScalingGroups, nothing else."""
    async with running(moto, max_size=5) as group:
        await group.increase(3)
        first = await group.update()
        assert [s.state for s in first] == [ProviderState.RUNNING] * 3
        before = moto.calls
        for _ in range(3):
            assert await group.update() == first
        after = moto.calls
        assert after - before == {"DescribeAutoScalingGroups": 3}


async def test_update_follows_describe_instances_pages(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New instances spread over several DescribeInstances pages are all described."""
    monkeypatch.setattr(aws, "_DESCRIBE_PAGE", 5)  # AWS's smallest page
    async with running(moto, max_size=8) as group:
        for _ in range(6):  # one reservation per launch: six of them
            assert await group.increase(1) == 1
        statuses = await group.update()
        assert len(statuses) == 6
        assert {s.owner for s in statuses} == {"fleet-test"}
        assert group.stats.calls["DescribeInstances"] == moto.calls["DescribeInstances"] == 2


async def test_instances_report_the_owner_tag(moto: MotoServer) -> None:
    """Instances launched after init carry the owner; a restart under another owner tells them apart."""
    async with running(moto, max_size=5, owner="fleet-a") as first:
        await first.increase(2)
        mine = await _running_ids(first)
    second = build(moto, owner="fleet-b")
    await second.init()
    try:
        await second.increase(1)
        owners = {s.id: s.owner for s in await second.update()}
    finally:
        await second.shutdown()
    assert {owners[i] for i in mine} == {"fleet-a"}
    assert [o for i, o in owners.items() if i not in mine] == ["fleet-b"]
    ec2 = moto.client("ec2").describe_instances(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": ["fleet-b"]}]
    )
    assert sum(len(r["Instances"]) for r in ec2["Reservations"]) == 1


async def test_vanished_instance_is_reported_deleted_once(moto: MotoServer) -> None:
    """An instance that left the group outside fleetkit shows up once as deleted, then not at all."""
    async with running(moto) as group:
        await group.increase(2)
        victim, survivor = await _running_ids(group)
        moto.client("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=victim, ShouldDecrementDesiredCapacity=True
        )
        states = {s.id: s.state for s in await group.update()}
        assert states == {victim: ProviderState.DELETED, survivor: ProviderState.RUNNING}
        assert {s.id for s in await group.update()} == {survivor}
        with pytest.raises(InstanceNotFound):
            await group.heartbeat(victim)
        await group.heartbeat(survivor)


async def test_lifecycle_states_on_the_wire(moto: MotoServer) -> None:
    """Pending, Terminating and a lingering Terminated map forward only, deleted reported once."""
    async with running(moto) as group:
        await group.increase(2)
        booting, leaving = await _running_ids(group)
        moto.set_lifecycle_state("ci", booting, "Pending")  # lagging: must stay running
        moto.set_lifecycle_state("ci", leaving, "Terminating:Wait")
        states = {s.id: s.state for s in await group.update()}
        assert states == {booting: ProviderState.RUNNING, leaving: ProviderState.DELETING}

        before = moto.calls
        assert list(await group.decrease([leaving])) == [leaving]
        moto.set_lifecycle_state("ci", leaving, "InService")  # a lagging answer
        states = {s.id: s.state for s in await group.update()}
        assert states[leaving] is ProviderState.DELETING

        moto.set_lifecycle_state("ci", leaving, "Terminated")
        states = {s.id: s.state for s in await group.update()}
        assert states[leaving] is ProviderState.DELETED
        assert [s.id for s in await group.update()] == [booting]  # moto still lists it
        assert list(await group.decrease([leaving])) == [leaving]
        with pytest.raises(InstanceNotFound):
            await group.connect_info(leaving)
        assert "TerminateInstanceInAutoScalingGroup" not in moto.calls - before


async def test_pending_instance_is_creating_then_running(moto: MotoServer) -> None:
    """An instance first seen Pending is reported creating, then running once InService."""
    async with running(moto) as group:
        await group.increase(1)
        (instance_id,) = moto.group_instances("ci")
        moto.set_lifecycle_state("ci", instance_id, "Pending:Wait")
        assert [s.state for s in await group.update()] == [ProviderState.CREATING]
        moto.set_lifecycle_state("ci", instance_id, "InService")
        assert [s.state for s in await group.update()] == [ProviderState.RUNNING]


async def test_standby_and_unhealthy_states(moto: MotoServer) -> None:
    """A Standby instance stays running; one Auto Scaling marked Unhealthy is reported deleting."""
    async with running(moto) as group:
        await group.increase(2)
        standby, sick = await _running_ids(group)
        asg = moto.client("autoscaling")
        asg.enter_standby(
            AutoScalingGroupName="ci", InstanceIds=[standby], ShouldDecrementDesiredCapacity=False
        )
        asg.set_instance_health(InstanceId=sick, HealthStatus="Unhealthy")
        assert moto.group_instances("ci")[standby] == "Standby"
        states = {s.id: s.state for s in await group.update()}
        assert states[standby] is ProviderState.RUNNING
        assert states[sick] is ProviderState.DELETING
        # Standby without decrement makes Auto Scaling launch a replacement.
        assert len(states) == 3


async def test_update_retries_throttling_and_counts_it(moto: MotoServer) -> None:
    """Throttled DescribeAutoScalingGroups and DescribeInstances are retried, and counted."""
    async with running(moto) as group:
        await group.increase(1)
        moto.inject("DescribeAutoScalingGroups", THROTTLING, times=2)
        moto.inject("DescribeInstances", REQUEST_LIMIT_EXCEEDED, times=1)
        statuses = await group.update()
        assert [s.state for s in statuses] == [ProviderState.RUNNING]
        stats = group.stats
        assert (stats.throttled, stats.retries, stats.failed) == (3, 3, 0)
        assert stats.calls["DescribeInstances"] == moto.calls["DescribeInstances"] == 2


async def test_backoff_comes_from_the_injected_rng(moto: MotoServer) -> None:
    """The same seed gives the same jittered waits; another seed gives other waits."""
    moto.create_group("ci")
    policy = RetryPolicy(attempts=4, base=0.01, cap=0.05)
    waits: list[float] = []
    for seed in (1, 1, 2):
        group = build(moto, "ci", retry=policy, seed=seed)
        await group.init()
        moto.inject("DescribeAutoScalingGroups", THROTTLING, times=3)
        await group.update()
        await group.shutdown()
        assert group.stats.retries == 3
        waits.append(group.stats.backoff)
    assert waits[0] == waits[1] != waits[2]
    assert all(0 < w <= 0.01 + 0.02 + 0.04 for w in waits)


async def test_update_gives_up_with_retry_later(moto: MotoServer) -> None:
    """A 503 on every attempt ends in RetryLater; a throttle on every attempt in Throttled."""
    async with running(moto) as group:
        moto.inject("DescribeAutoScalingGroups", SERVICE_UNAVAILABLE, times=FAST_RETRY.attempts)
        with pytest.raises(RetryLater) as exc:
            await group.update()
        assert not isinstance(exc.value, Throttled)
        moto.inject("DescribeAutoScalingGroups", THROTTLING, times=FAST_RETRY.attempts)
        with pytest.raises(Throttled, match="DescribeAutoScalingGroups"):
            await group.update()
        assert group.stats.failed == 2
        assert await group.update() == []


# --- increase ------------------------------------------------------------------------


async def test_increase_is_capped_at_max_size(moto: MotoServer) -> None:
    """increase never asks beyond MaxSize (moto would launch them) and reports what it accepted."""
    async with running(moto, max_size=3) as group:
        assert await group.increase(5) == 3
        assert len(moto.group_instances("ci")) == 3
        before = moto.calls
        assert await group.increase(1) == 0
        assert moto.calls - before == {}, "a full group must not call AWS"
        assert len(await _running_ids(group)) == 3


async def test_increase_counts_instances_launched_elsewhere(moto: MotoServer) -> None:
    """Partial success: with 2 of MaxSize 3 already desired, increase(5) accepts 1."""
    async with running(moto, max_size=3) as group:
        moto.client("autoscaling").set_desired_capacity(
            AutoScalingGroupName="ci", DesiredCapacity=2
        )
        await group.update()
        assert await group.increase(5) == 1
        assert len(moto.group_instances("ci")) == 3


async def test_increase_after_update_is_one_call(moto: MotoServer) -> None:
    """Right after an update, a scale-up of N is exactly one SetDesiredCapacity."""
    async with running(moto, max_size=10) as group:
        await group.update()
        before = moto.calls
        assert await group.increase(6) == 6
        assert moto.calls - before == {"SetDesiredCapacity": 1}
        assert len(await _running_ids(group)) == 6


async def test_increase_retries_throttling(moto: MotoServer) -> None:
    """A throttled SetDesiredCapacity is retried and then applied once."""
    async with running(moto) as group:
        moto.inject("SetDesiredCapacity", THROTTLING, times=2)
        assert await group.increase(2) == 2
        assert moto.calls["SetDesiredCapacity"] == 3
        assert len(moto.group_instances("ci")) == 2


async def test_increase_refused_is_quota_exceeded(moto: MotoServer) -> None:
    """A desired capacity above MaxSize is QuotaExceeded; another ValidationError is AWSAPIError."""
    async with running(moto) as group:
        moto.inject(
            "SetDesiredCapacity",
            Fault(400, "ValidationError", "New SetDesiredCapacity value 2 is above max value 1"),
        )
        with pytest.raises(QuotaExceeded, match="above max value"):
            await group.increase(2)
        moto.inject(
            "SetDesiredCapacity",
            Fault(400, "ValidationError", "AutoScalingGroup name not found - null"),
        )
        with pytest.raises(AWSAPIError) as refused:
            await group.increase(1)
        assert not isinstance(refused.value, QuotaExceeded)
        assert refused.value.code == "ValidationError"
        # The view was marked stale: the next increase reads the group again.
        before = moto.calls
        assert await group.increase(1) == 1
        assert moto.calls - before == {"DescribeAutoScalingGroups": 1, "SetDesiredCapacity": 1}


# --- decrease ------------------------------------------------------------------------


async def test_decrease_terminates_and_lowers_desired(moto: MotoServer) -> None:
    """decrease removes exactly the given instances and lowers the desired capacity (no replacement)."""
    async with running(moto, max_size=5) as group:
        await group.increase(4)
        ids = await _running_ids(group)
        removed = await group.decrease([ids[2], ids[0], ids[2]])
        assert list(removed) == [ids[2], ids[0]]
        assert moto.calls["TerminateInstanceInAutoScalingGroup"] == 2
        assert sorted(moto.group_instances("ci")) == [ids[1], ids[3]]
        desc = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["ci"])
        assert desc["AutoScalingGroups"][0]["DesiredCapacity"] == 2


async def test_decrease_never_sends_ids_known_gone(moto: MotoServer) -> None:
    """Ids already gone or never in the group count as removed without reaching AWS."""
    async with running(moto) as group:
        await group.increase(1)
        (victim,) = await _running_ids(group)
        assert list(await group.decrease([victim])) == [victim]
        assert list(await group.decrease([victim])) == [victim]
        await group.update()
        before = moto.calls
        stranger = "i-0123456789abcdef0"
        assert list(await group.decrease([victim, stranger])) == [victim, stranger]
        assert "TerminateInstanceInAutoScalingGroup" not in moto.calls - before


async def test_decrease_treats_aws_not_found_as_removed(moto: MotoServer) -> None:
    """AWS's ValidationError "No managed instance found" means the instance is already gone."""
    async with running(moto) as group:
        await group.increase(1)
        (victim,) = await _running_ids(group)
        moto.inject("TerminateInstanceInAutoScalingGroup", NOT_IN_GROUP)
        assert list(await group.decrease([victim])) == [victim]
        assert list(await group.decrease([victim])) == [victim]
        assert moto.calls["TerminateInstanceInAutoScalingGroup"] == 1


async def test_decrease_leaves_out_what_aws_refused(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An id throttled on every attempt is left out for a later retry; the others are removed."""
    moto.create_group("ci")
    # One termination at a time, so the injected faults all hit the first id.
    group = AWSInstanceGroup(
        parse_aws_config(moto.plugin_config("ci"), DYNAMIC),
        DYNAMIC,
        retry=FAST_RETRY,
        decrease_concurrency=1,
    )
    await group.init()
    try:
        await group.increase(3)
        ids = await _running_ids(group)
        moto.inject("TerminateInstanceInAutoScalingGroup", THROTTLING, times=FAST_RETRY.attempts)
        with caplog.at_level(logging.WARNING, logger="fleetkit.provider.aws"):
            removed = await group.decrease(ids)
        assert list(removed) == ids[1:]
        assert ids[0] in caplog.text
        assert sorted(moto.group_instances("ci")) == [ids[0]]
        assert list(await group.decrease([ids[0]])) == [ids[0]]
    finally:
        await group.shutdown()


# --- connect_info ------------------------------------------------------------------------


async def test_connect_info_pushes_an_instance_connect_key(moto: MotoServer) -> None:
    """Dynamic credentials: an Ed25519 key pushed once per minute, expiring 55 s after the push."""
    async with running(moto) as group:
        await group.increase(1)
        (instance_id,) = await _running_ids(group)
        info = await group.connect_info(instance_id)
        assert info.internal_addr
        assert info.external_addr
        assert (info.os, info.arch, info.protocol, info.username) == (
            "linux",
            "amd64",
            "ssh",
            "ec2-user",
        )
        assert info.key
        assert info.key.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        assert not info.use_static_credentials
        assert info.expires_at == WALL + timedelta(seconds=55)
        again = await group.connect_info(instance_id)
        assert again.key == info.key
        assert moto.calls["SendSSHPublicKey"] == 1
        assert info.key.decode() not in repr(info)


async def test_connect_info_retries_a_throttled_push(moto: MotoServer) -> None:
    """A throttled SendSSHPublicKey (JSON protocol) is retried like the XML services."""
    async with running(moto) as group:
        await group.increase(1)
        (instance_id,) = await _running_ids(group)
        moto.inject("SendSSHPublicKey", Fault(400, "ThrottlingException", "slow down"), times=2)
        info = await group.connect_info(instance_id)
        assert info.key is not None
        assert moto.calls["SendSSHPublicKey"] == 3
        assert group.stats.throttled == 2


async def test_connect_info_static_credentials(moto: MotoServer, tmp_path: Path) -> None:
    """Static credentials: the key file's bytes, the password, no Instance Connect call."""
    key_path = tmp_path / "id_test"
    key_path.write_bytes(b"not-a-real-key")
    connector = ConnectorConfig(
        username="admin",
        password="s3cret",
        key_path=str(key_path),
        use_static_credentials=True,
        protocol_port=2222,
        os="linux",
        arch="arm64",
    )
    async with running(moto, connector=connector) as group:
        await group.increase(1)
        (instance_id,) = await _running_ids(group)
        info = await group.connect_info(instance_id)
        assert (info.key, info.password, info.username) == (b"not-a-real-key", "s3cret", "admin")
        assert (info.port, info.arch, info.expires_at) == (2222, "arm64", None)
        assert "SendSSHPublicKey" not in moto.calls
        assert "s3cret" not in repr(info)
        assert "not-a-real-key" not in repr(info)


async def test_connect_info_detects_arm64(moto: MotoServer) -> None:
    """The instance's architecture comes from EC2 when connector_config leaves it out."""
    moto.create_group("arm", image_id="ami-0e9271c829888680e")
    group = build(moto, "arm")
    await group.init()
    try:
        await group.increase(1)
        (instance_id,) = await _running_ids(group)
        assert (await group.connect_info(instance_id)).arch == "arm64"
    finally:
        await group.shutdown()


async def test_connect_info_of_unknown_id_calls_nothing(moto: MotoServer) -> None:
    """An id not in the group raises InstanceNotFound without an AWS call (moto would 500)."""
    async with running(moto) as group:
        before = moto.calls
        with pytest.raises(InstanceNotFound) as exc:
            await group.connect_info("i-0123456789abcdef0")
        assert exc.value.instance_id == "i-0123456789abcdef0"
        assert moto.calls - before == {}


# --- lifecycle of the provider object -----------------------------------------------------


async def test_shutdown_is_idempotent_and_final(moto: MotoServer) -> None:
    """shutdown twice is fine; a verb after it raises ProviderError; instances stay."""
    async with running(moto) as group:
        await group.increase(1)
    await group.shutdown()
    with pytest.raises(ProviderError, match="shut down"):
        await group.update()
    assert len(moto.group_instances("ci")) == 1


async def test_no_secret_in_logs_or_repr(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The generated private key never shows in the provider's repr or its debug logs."""
    with caplog.at_level(logging.DEBUG):
        async with running(moto) as group:
            moto.inject("SetDesiredCapacity", THROTTLING)
            await group.increase(1)
            (instance_id,) = await _running_ids(group)
            key = (await group.connect_info(instance_id)).key
            text = repr(group)
    assert key is not None
    secret = key.decode().splitlines()[1]
    assert secret not in caplog.text
    assert secret not in text
    assert "throttled" in caplog.text
