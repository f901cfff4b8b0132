"""The seed document's three example configs load with every value as written."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fleetkit.config import (
    AutoscalerConfig,
    Config,
    InstanceConfig,
    Runner,
    ScaleThrottle,
    StateStorage,
    VMIsolation,
    load,
)
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy

EXAMPLES = Path(__file__).parents[2] / "examples"

AWS_PLUGIN_CONFIG = {
    "profile": "default",
    "config_file": "/home/user/.aws/config",
    "credentials_file": "/home/user/.aws/credentials",
}


def test_one_job_per_instance() -> None:
    """Example 1 loads to exactly the values it writes, defaults elsewhere, no warnings."""
    config = load(EXAMPLES / "seed-one-job-per-instance.toml")
    assert config == Config(
        concurrent=10,
        runners=(
            Runner(
                name="instance autoscaler example",
                url="https://gitlab.com",
                token="<token>",
                shell="sh",
                executor="instance",
                autoscaler=AutoscalerConfig(
                    plugin="fleeting-plugin-aws",
                    capacity_per_instance=1,
                    max_use_count=1,
                    max_instances=10,
                    plugin_config={"name": "my-linux-asg", **AWS_PLUGIN_CONFIG},
                    connector_config=ConnectorConfig(username="ec2-user", use_external_addr=True),
                    policy=(Policy(idle_count=5, idle_time=timedelta(minutes=20)),),
                ),
            ),
        ),
    )
    assert config.warnings == ()
    scaler = config.runners[0].autoscaler
    assert scaler is not None
    assert scaler.limits() == Limits(
        capacity_per_instance=1, max_use_count=1, max_instances=10, ready_timeout=600.0
    )


def test_five_jobs_per_instance() -> None:
    """Example 2 loads with capacity 5, unlimited uses and a 5m connect timeout."""
    config = load(EXAMPLES / "seed-five-jobs-per-instance.toml")
    assert config.concurrent == 50
    (runner,) = config.runners
    assert (runner.name, runner.url, runner.token, runner.shell, runner.executor) == (
        "instance autoscaler example",
        "https://gitlab.com",
        "<token>",
        "sh",
        "instance",
    )
    assert runner.autoscaler == AutoscalerConfig(
        plugin="fleeting-plugin-aws",
        capacity_per_instance=5,
        max_use_count=0,
        max_instances=10,
        plugin_config={"name": "my-windows-asg", **AWS_PLUGIN_CONFIG},
        connector_config=ConnectorConfig(
            username="Administrator", timeout=timedelta(minutes=5), use_external_addr=True
        ),
        policy=(Policy(idle_count=5, idle_time=timedelta(minutes=20)),),
    )
    assert runner.instance is None
    assert runner.extra == {}
    assert config.warnings == ()


def test_macos_nesting() -> None:
    """Example 3 loads with VM isolation, its own connector and the image allow-list."""
    config = load(EXAMPLES / "seed-macos-nesting.toml")
    assert config.concurrent == 8
    (runner,) = config.runners
    assert (runner.name, runner.url, runner.token, runner.executor, runner.shell) == (
        "macos applesilicon autoscaler example",
        "https://gitlab.com",
        "<token>",
        "instance",
        None,
    )
    assert runner.instance == InstanceConfig(allowed_images=("*",))
    scaler = runner.autoscaler
    assert scaler == AutoscalerConfig(
        plugin="fleeting-plugin-aws",
        capacity_per_instance=2,
        max_use_count=0,
        max_instances=4,
        policy=(Policy(idle_count=2, idle_time=timedelta(hours=24)),),
        connector_config=ConnectorConfig(
            username="ec2-user", key_path="macos-key.pem", timeout=timedelta(hours=1)
        ),
        plugin_config={"name": "mac2metal", "region": "us-west-2"},
        vm_isolation=VMIsolation(
            enabled=True,
            nesting_host="unix:///Users/ec2-user/Library/Application Support/nesting.sock",
            connector_config=ConnectorConfig(
                username="nested-vm-username",
                password="nested-vm-password",
                timeout=timedelta(minutes=20),
            ),
        ),
    )
    # Slow Mac boots: the one-hour dial timeout plus the ready grace.
    assert scaler.limits().ready_timeout == 3600 + 600
    assert config.warnings == ()


def test_seed_defaults_are_gitlabs() -> None:
    """What the seed leaves out takes GitLab's (taskscaler's) documented defaults."""
    scaler = load(EXAMPLES / "seed-one-job-per-instance.toml").runners[0].autoscaler
    assert scaler is not None
    assert scaler.instance_acquire_timeout == timedelta(minutes=15)
    assert scaler.update_interval == timedelta(minutes=1)
    assert scaler.update_interval_when_expecting == timedelta(seconds=2)
    assert scaler.deletion_retry_interval == timedelta(minutes=1)
    assert scaler.shutdown_deletion_interval == timedelta(seconds=10)
    assert scaler.shutdown_deletion_retries == 3
    assert scaler.failure_threshold == 3
    assert scaler.reservation_throttling is True
    assert scaler.scale_throttle == ScaleThrottle(limit=0, burst=0)
    assert scaler.state_storage == StateStorage()
    assert scaler.vm_isolation == VMIsolation()
    assert scaler.instance_ready_command == ""
    assert scaler.instance_operation_time_buckets is None
    (policy,) = scaler.policy
    assert policy.periods == ("* * * * *",)
    assert policy.timezone is None
    assert policy.scale_factor == 0.0
    assert policy.preemptive is True  # idle_count 5 > 0
