"""config.toml to the fleet's runtime settings, in one place
(``AutoscalerConfig.fleet_settings``, next to ``limits()`` and ``schedule()``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetkit.config import load
from fleetkit.fleet import FleetSettings
from fleetkit.fleet._stats import DEFAULT_BUCKETS, LIFE_BUCKETS, StatsBook

CONFIG = """
[[runners]]
  name = "r"
  executor = "instance"
{flags}
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 4
    update_interval = "30s"
    delete_instances_on_shutdown = true
{autoscaler}
"""


def settings(flags: str = "", autoscaler: str = "") -> FleetSettings:
    config = load(CONFIG.format(flags=flags, autoscaler=autoscaler))
    runner = config.runners[0]
    assert runner.autoscaler is not None
    return runner.autoscaler.fleet_settings(
        owner="owner-1", config_dir=Path("/etc/gl"), feature_flags=runner.feature_flags
    )


def test_autoscaler_keys_reach_the_fleet_settings() -> None:
    """Durations become seconds, the owner id and state storage dir are set."""
    s = settings(autoscaler="    [runners.autoscaler.state_storage]\n      enabled = true\n")
    assert s.update_interval == 30.0
    assert s.delete_instances_on_shutdown
    assert s.owner_id == "owner-1"
    assert s.state_storage_dir == Path("/etc/gl/.taskscaler/owner-1")
    assert not s.acquire_heartbeats
    assert s.heartbeat_interval is None


def test_the_heartbeat_feature_flag_turns_on_acquire_heartbeats_every_five_minutes() -> None:
    """FF_USE_FLEETING_ACQUIRE_HEARTBEATS: a heartbeat before hand-out and every 5 minutes
    (issue 13: the flag was ignored)."""
    on = settings(
        flags="  [runners.feature_flags]\n    FF_USE_FLEETING_ACQUIRE_HEARTBEATS = true\n"
    )
    assert on.acquire_heartbeats
    assert on.heartbeat_interval == 300.0
    off = settings(
        flags="  [runners.feature_flags]\n    FF_USE_FLEETING_ACQUIRE_HEARTBEATS = false\n"
    )
    assert not off.acquire_heartbeats


def test_histogram_buckets_reach_the_histograms() -> None:
    """instance_*_buckets are used by the stats histograms; the operation buckets are the
    fallback of the four operation histograms, as in GitLab (issue 13: validated, unused)."""
    s = settings(
        autoscaler=(
            "    instance_operation_time_buckets = [1.0, 2.0]\n"
            "    instance_readiness_time_buckets = [3.0, 30.0, 300.0]\n"
            "    instance_life_duration_buckets = [600.0]\n"
        )
    )
    histograms = StatsBook(s).histograms()
    assert histograms["instance_creation_time_seconds"].buckets == (1.0, 2.0)
    assert histograms["instance_deletion_time_seconds"].buckets == (1.0, 2.0)
    assert histograms["instance_readiness_time_seconds"].buckets == (3.0, 30.0, 300.0)
    assert histograms["instance_life_duration_seconds"].buckets == (600.0,)
    defaults = StatsBook(FleetSettings()).histograms()
    assert defaults["instance_creation_time_seconds"].buckets == DEFAULT_BUCKETS
    assert defaults["instance_life_duration_seconds"].buckets == LIFE_BUCKETS


def test_fleet_settings_refuse_unordered_buckets() -> None:
    """A bucket list out of order is refused naming the field."""
    with pytest.raises(ValueError, match="instance_creation_time_buckets must be finite"):
        FleetSettings(instance_creation_time_buckets=(5.0, 1.0))
