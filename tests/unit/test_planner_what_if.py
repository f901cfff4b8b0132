"""examples/what_if.py answers "what would the planner do" for the seed's configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "what_if.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_five_jobs_per_instance_keeps_five_idle_slots() -> None:
    """With 12 jobs running and 3 waiting on 5-slot instances, the fleet settles on 4."""
    out = run(
        str(EXAMPLES / "seed-five-jobs-per-instance.toml"),
        "--at=2026-03-23T09:00",
        "--running=12",
        "--waiting=3",
    )
    assert "assign waiting-2 -> i-002 slot 4" in out
    assert "settles on 4 instances (3 busy, 1 idle)" in out


def test_one_job_per_instance_settles_on_idle_count_spare_instances() -> None:
    """max_use_count 1, idle_count 5: two busy instances and five idle ones."""
    out = run(
        str(EXAMPLES / "seed-one-job-per-instance.toml"), "--at=2026-03-23T09:00", "--running=2"
    )
    assert "settles on 7 instances (2 busy, 5 idle)" in out
