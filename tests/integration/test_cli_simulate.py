"""``fleetkit simulate`` as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetkit.simulate import JSON_KEYS

EXAMPLES = Path(__file__).parents[2] / "examples"
SEED_ONE = EXAMPLES / "seed-one-job-per-instance.toml"
SEED_FIVE = EXAMPLES / "seed-five-jobs-per-instance.toml"
SMALL = "workday:pipelines=60,days=1,seed=3"

#: The per-config keys the issue lists, in its order.
ISSUE_KEYS = [
    "config",
    "jobs",
    "wait_mean_s",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p99_s",
    "wait_max_s",
    "instance_minutes",
    "busy_instance_minutes",
    "idle_instance_minutes",
    "booting_instance_minutes",
    "instances_created",
    "instances_deleted",
    "instances_unused",
    "cost",
]


def simulate(*args: str | Path, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "fleetkit.cli", "simulate", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_json_has_the_issue_keys_per_config_and_is_deterministic() -> None:
    args = (SEED_ONE, SEED_FIVE, "--workload", SMALL, "--price-per-hour", "0.5", "--json")
    first = simulate(*args, "--spot-loss", "0.05", hash_seed="1")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # the simulated fleet's own log stays out of the way
    configs = json.loads(first.stdout)
    assert [c["config"] for c in configs] == [SEED_ONE.stem, SEED_FIVE.stem]
    for figures in configs:
        assert list(figures)[: len(ISSUE_KEYS)] == ISSUE_KEYS
        assert list(figures) == list(JSON_KEYS)
        assert figures["jobs"] > 100
        assert figures["cost"] == pytest.approx(figures["instance_minutes"] / 60 * 0.5, abs=0.01)
    # Another process with another string hash order: the same figures.
    again = simulate(*args, "--spot-loss", "0.05", hash_seed="2")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == configs
    other_seed = simulate(*args, "--spot-loss", "0.05", "--seed", "7", hash_seed="1")
    assert json.loads(other_seed.stdout) != configs


def test_the_table_the_trace_and_the_charts(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    report = tmp_path / "report"
    result = simulate(
        SEED_FIVE,
        "--workload",
        SMALL,
        "--write-trace",
        trace,
        "--report",
        report,
        "--boot-time",
        "40s..90s",
        "--cold",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "jobs over 24h" in out
    assert "cold start" in out
    assert "boot time 40s..90s" in out
    for label in ("wait p50 / p95 / p99", "instance-minutes", "  booting", "lower bound (no wait)"):
        assert label in out
    assert trace.read_text().startswith("created_at,duration,name\n")
    for name in ("capacity.png", "waits.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The written trace replays to the same jobs.
    replayed = simulate(SEED_FIVE, "--trace", trace, "--json", "--cold", "--boot-time", "40s..90s")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)[0]["jobs"] == int(
        out.split(" jobs over")[0].replace(",", "")
    )


def test_bad_rows_fail_with_their_lines_and_no_traceback(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.csv"
    trace.write_text("created_at,duration\n0,60\nlater,60\n5,-2\n")
    result = simulate(SEED_FIVE, "--trace", trace)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"fleetkit simulate: {trace}: 2 problems:")
    assert "line 3: created_at is neither seconds nor ISO 8601" in result.stderr
    assert "line 4: duration '-2' must be a number of seconds >= 0" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workload", "workday", "--boot-time", "soon"), "--boot-time: unknown preset 'soon'"),
        (("--workload", "workday:fast=1"), "--workload workday:fast: expected KEY=VALUE"),
        (("--workload", "workday", "--wait-threshold", "5 min"), "--wait-threshold:"),
        (("--workload", "workday", "--never-ready", "2"), "never_ready must be within [0, 1]"),
        (("--workload", "workday", "--price-per-hour", "-1"), "--price-per-hour: must be"),
        (("--workload", "workday", "--workers", "0"), "--workers: must be >= 1"),
        (
            (
                "--trace",
                "/nonexistent/trace.csv",
            ),
            "cannot read the trace",
        ),
    ],
)
def test_bad_options_are_one_line_errors(args: tuple[str, ...], says: str) -> None:
    result = simulate(SEED_FIVE, *args)
    assert result.returncode == 1
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_config_names_its_toml_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        SEED_FIVE.read_text().replace("capacity_per_instance = 5", "capacity_per_instance = 0")
    )
    result = simulate(config, "--workload", SMALL)
    assert result.returncode == 1
    assert "capacity_per_instance" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_compares_three_configs() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "simulate" / "compare.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("jobs in a week; lower bound: what a fleet that knew the future pays")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"seed-one-job-per-instance", "seed-five-jobs-per-instance", "office-hours"}
    costs = {name: float(row[4]) for name, row in rows.items()}
    # Warm only in office hours is cheaper than warm all week.
    assert costs["office-hours"] < costs["seed-five-jobs-per-instance"]


def test_a_gitlab_export_replays_and_says_what_it_left_out(tmp_path: Path) -> None:
    def job(n: int, **more: object) -> dict[str, object]:
        base: dict[str, object] = {
            "id": n,
            "name": f"build-{n}",
            "created_at": f"2026-03-02T09:{n:02d}:00.000Z",
            "started_at": f"2026-03-02T09:{n:02d}:05.000Z",
            "finished_at": f"2026-03-02T09:{n + 3:02d}:05.000Z",
            "duration": 180.0,
            "queued_duration": 5.0,
        }
        base.update(more)
        return base

    export = tmp_path / "jobs.json"
    jobs = [job(n) for n in range(10)]
    jobs.append(job(50, status="manual", started_at=None, finished_at=None, duration=None))
    export.write_text(json.dumps(jobs, indent=2))
    result = simulate(SEED_FIVE, "--trace", export)
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    assert head.startswith(f"10 jobs over 9m from {export}")
    assert head.endswith("1 job of the export never started (not replayed)")
