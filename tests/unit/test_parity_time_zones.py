"""Issue 14: a policy without ``timezone`` is read in the local zone, as GitLab Runner
reads it (``TZ`` when set), and ``validate`` and ``plan`` say which zone that was."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fleetkit._localzone import local_zone
from fleetkit.cli import main
from fleetkit.cli._common import instant
from fleetkit.config import load

OFFICE = """
concurrent = 4
[[runners]]
  name = "office"
  executor = "instance"
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 4
    [runners.autoscaler.plugin_config]
      name = "asg"
    [runners.autoscaler.connector_config]
      username = "ec2-user"
    [[runners.autoscaler.policy]]
      periods = ["* 9-16 * * mon-fri"]
      idle_count = 2
      idle_time = "10m"
"""


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")


@pytest.fixture
def office(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(OFFICE)
    return config


def test_a_policy_without_timezone_follows_tz(new_york: None) -> None:
    """With TZ=America/New_York, "9-17 on weekdays" starts at 14:00 UTC (09:00 EST), not 09:00."""
    scaler = load(OFFICE).runners[0].autoscaler
    assert scaler is not None
    (office,) = scaler.policy
    schedule = scaler.schedule()
    assert schedule.active(datetime(2026, 3, 2, 9, 30, tzinfo=UTC)) is not office
    assert schedule.active(datetime(2026, 3, 2, 13, 59, tzinfo=UTC)) is not office
    assert schedule.active(datetime(2026, 3, 2, 14, 0, tzinfo=UTC)) is office
    assert schedule.active(datetime(2026, 3, 2, 21, 59, tzinfo=UTC)) is office
    assert schedule.active(datetime(2026, 3, 2, 22, 0, tzinfo=UTC)) is not office


def test_next_change_uses_the_local_zone(new_york: None) -> None:
    """The runtime's wake-up for a policy change falls on local 09:00."""
    scaler = load(OFFICE).runners[0].autoscaler
    assert scaler is not None
    change = scaler.schedule().next_change(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    assert change is not None
    assert change.astimezone(UTC) == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def test_local_zone_reads_tz_then_localtime(tmp_path: Path) -> None:
    """TZ names the zone; without it /etc/localtime's target does; an unknown TZ is UTC."""
    assert local_zone({"TZ": "Europe/Berlin"}).zone == ZoneInfo("Europe/Berlin")
    assert local_zone({"TZ": ":Asia/Tokyo"}).name == "Asia/Tokyo"
    assert local_zone({"TZ": ""}).zone is UTC
    unknown = local_zone({"TZ": "Mars/Olympus"})
    assert unknown.zone is UTC
    assert "not a known zone" in unknown.source
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Chicago")
    found = local_zone({}, localtime=link)
    assert (found.name, found.zone) == ("America/Chicago", ZoneInfo("America/Chicago"))
    assert local_zone({}, localtime=tmp_path / "missing").zone is UTC


def test_validate_says_which_zone(
    new_york: None, office: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate names the zone a policy without timezone is read in (it said "UTC")."""
    assert main(["validate", str(office), "--at", "2026-03-02T09:30"]) == 0
    out = capsys.readouterr().out
    assert (
        "    [0] * 9-16 * * mon-fri (no timezone set: America/New_York, the local zone (TZ)): "
        "idle_count 2, idle_time 10m0s, preemptive  <- active at 2026-03-02T09:30-05:00"
    ) in out


def test_plan_says_which_zone(
    new_york: None, office: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan evaluates --at in the local zone and names it."""
    assert main(["plan", str(office), "--at", "2026-03-02T08:30"]) == 0
    out = capsys.readouterr().out
    assert "policy: default (no period matches)" in out
    assert "  time zone: America/New_York, the local zone (TZ): no timezone set" in out
    assert main(["plan", str(office), "--at", "2026-03-02T09:30"]) == 0
    assert "policy: policy[0]" in capsys.readouterr().out


def test_a_naive_at_is_local_time(new_york: None) -> None:
    """--at without an offset is the local zone's wall time."""
    assert instant("2026-03-02T09:30").utcoffset() == ZoneInfo("America/New_York").utcoffset(
        datetime(2026, 3, 2, 9, 30)
    )


def test_the_suite_runs_in_utc_unless_told() -> None:
    """tests/conftest.py fixes TZ, so outputs that name the zone are the same everywhere."""
    assert os.environ["TZ"] == "UTC"
