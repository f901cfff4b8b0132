"""``fleetkit tune`` as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """
concurrent = 4
[[runners]]
  name = "tuned"
  url = "https://gitlab.example.com"
  token = "glrt-secret-never-shown"
  executor = "instance"
  [runners.autoscaler]
    plugin = "aws"
    capacity_per_instance = 1
    max_instances = 4
    [[runners.autoscaler.policy]]
      idle_count = 1
      idle_time = "5m"
"""


def tune(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetkit.cli", "tune", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def files(tmp_path: Path, monday: float, tuesday: float) -> tuple[Path, Path]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    trace = tmp_path / "trace.csv"
    rows = [
        f"{day * 86400 + hour * 3600 + k * 1800:.0f},600"
        for day, hour in ((0, monday), (1, tuesday))
        for k in range(2)
    ]
    trace.write_text("created_at,duration\n" + "\n".join(rows) + "\n")
    return config, trace


GRID = (
    "--idle-counts", "0,1", "--idle-times", "5m", "--day-windows", "0-23,8-10,13-15",
    "--day-idle-counts", "1", "--boot-time", "60s", "--tune-on", "1d",
)  # fmt: skip


def test_prints_the_cheapest_policies_to_paste_and_the_held_out_check(tmp_path: Path) -> None:
    config, trace = files(tmp_path, 9.25, 9.25)
    result = tune(config, "--trace", trace, "--target-p95-wait", "0s", *GRID)
    assert result.returncode == 0, result.stderr
    assert "best: idle_count=0 idle_time=5m; mon-fri 08-10h idle_count=1" in result.stdout
    assert "held-out check: the target is met" in result.stdout
    assert 'periods = ["* 8-10 * * mon-fri"]' in result.stdout
    assert "simulated 6/6" in result.stderr
    assert "glrt-secret" not in result.stdout + result.stderr


def test_says_when_the_held_out_part_misses(tmp_path: Path) -> None:
    config, trace = files(tmp_path, 9.25, 14.25)
    result = tune(config, "--trace", trace, "--target-p95-wait", "0s", *GRID, "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "held-out MISS" in result.stdout


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    config, trace = files(tmp_path, 9, 9)
    for args, says in [
        (("--target-p95-wait", "soon"), "--target-p95-wait"),
        (("--target-p95-wait", "1m", "--day-windows", "18-8"), "--day-windows"),
        (("--target-p95-wait", "1m", "--tune-on", "30d"), "--tune-on"),
        (("--target-p95-wait", "1m", "--idle-counts", ""), "--idle-counts"),
    ]:
        result = tune(config, "--trace", trace, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("fleetkit tune:"), result.stderr
        assert says in result.stderr
        assert "Traceback" not in result.stderr
