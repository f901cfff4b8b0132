"""fleetkit.testing.moto.MotoServer (the helper the AWS tests stand on) and the
runnable AWS example built on it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import IN_CI

if not IN_CI:  # skip here without the aws extra; under CI=true the imports below fail
    pytest.importorskip("aiobotocore", reason="pip install 'fleetkit[aws]'")
    pytest.importorskip("moto", reason="pip install 'moto[server]'")

from fleetkit.testing.moto import THROTTLING, MotoServer
from tests.integration import aws_fixtures

anyio_backend = aws_fixtures.anyio_backend
moto_server = aws_fixtures.moto_server
moto = aws_fixtures.moto

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_stop_leaves_nothing_behind() -> None:
    """After the with-block the port is closed and the credentials directory is gone."""
    with MotoServer() as server:
        config = server.plugin_config("any")
        files = Path(config["credentials_file"]).parent
        assert Path(config["config_file"]).read_text().strip().endswith("us-east-1")
        port = int(server.endpoint_url.rsplit(":", 1)[1])
    assert not files.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.endpoint_url


def test_reset_forgets_resources_faults_and_calls(moto: MotoServer) -> None:
    """reset empties moto, drops queued faults and zeroes the recorded calls."""
    moto.create_group("ci", desired=2)
    moto.inject("DescribeAutoScalingGroups", THROTTLING, times=5)
    assert moto.calls["CreateAutoScalingGroup"] == 1
    moto.reset()
    assert moto.calls == {}
    assert moto.group_instances("ci") == {}  # no group, and no injected throttle either
    assert moto.calls == {"DescribeAutoScalingGroups": 1}


def test_create_group_launches_the_desired_instances(moto: MotoServer) -> None:
    """create_group makes a launch template and a group with the given sizes."""
    moto.create_group("ci", max_size=4, desired=2)
    assert sorted(set(moto.group_instances("ci").values())) == ["InService"]
    assert len(moto.group_instances("ci")) == 2
    group = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["ci"])
    assert group["AutoScalingGroups"][0]["MaxSize"] == 4


def test_group_members_leaves_out_terminating_instances(moto: MotoServer) -> None:
    """group_members lists the group's instance ids, sorted, without those terminating."""
    moto.create_group("ci", max_size=4, desired=3)
    first, second, third = sorted(moto.group_instances("ci"))
    moto.set_lifecycle_state("ci", first, "Terminating:Wait")
    moto.set_lifecycle_state("ci", third, "Terminated")
    assert moto.group_members("ci") == [second]


def test_example_runs_against_moto() -> None:
    """examples/aws_provider.py runs end to end, is capped by MaxSize and prints no key."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "aws_provider.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "increase(6) accepted 4" in done.stdout
    assert "4 of 4 deleted" in done.stdout
    assert "PRIVATE KEY" not in done.stdout + done.stderr
