"""`fleetkit plan` in a subprocess: the planner's decisions for a described fleet, with reasons."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.executor_support import local_config, run_fleetkit

pytestmark = pytest.mark.integration


def _plan(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_fleetkit("plan", *args, timeout=60)


def test_idle_instances_past_idle_time_are_removed_with_the_reason(tmp_path: Path) -> None:
    """Four idle instances, idle longer than idle_time, shrink to the idle target; each removal says why."""
    config = local_config(tmp_path, use_sshd=False, capacity=2, idle_count=1, idle_time="1m")
    done = _plan(config, "--instances", "4", "--idle-for", "2m")
    assert done.returncode == 0, done.stderr
    removals = [line for line in done.stdout.splitlines() if "deprovision" in line]
    assert len(removals) == 3
    assert all("idle for 120s, over idle_time 60s" in line for line in removals)
    assert "one more reservation: granted" in done.stdout


def test_pending_jobs_provision_up_to_max_instances(tmp_path: Path) -> None:
    """Pending acquisitions make the plan provision, capped by max_instances, as JSON too."""
    config = local_config(tmp_path, use_sshd=False, capacity=2, max_instances=3)
    done = _plan(config, "--instances", "1", "--acquired", "2", "--pending", "9", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["provision"] == 2
    assert report["figures"]["capped_by"] == "max_instances"
    assert report["figures"]["pending"] == 9
    assert any(line.startswith("provision 2") for line in report["decisions"])


def test_policy_at_a_moment_and_impossible_fleet(tmp_path: Path) -> None:
    """--at picks the policy whose period matches; more acquired slots than instances is an error."""
    config = local_config(tmp_path, use_sshd=False, capacity=1)
    text = config.read_text() + (
        '\n    [[runners.autoscaler.policy]]\n      periods = ["* 9-17 * * mon-fri"]\n'
        '      timezone = "Europe/Berlin"\n      idle_count = 5\n      idle_time = "20m"\n'
    )
    config.write_text(text)
    weekday = _plan(config, "--at", "2026-03-02T09:30+01:00")
    assert "policy: policy[1]: idle_count 5, idle_time 20m0s" in weekday.stdout
    assert "provision 3" in weekday.stdout  # max_instances 3 caps the idle target of 5
    sunday = _plan(config, "--at", "2026-03-01T09:30+01:00")
    assert "policy: policy[0]: idle_count 0" in sunday.stdout
    impossible = _plan(config, "--instances", "1", "--acquired", "3")
    assert impossible.returncode == 1
    assert "--acquired: 3 slots need at least 3 ready instances" in impossible.stderr
