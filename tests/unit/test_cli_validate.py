"""`fleetkit validate`: OK and a summary, or every problem; exit 0, 1 on problems, 2 on usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetkit.cli import main

ROOT = Path(__file__).parents[2]
SEED = ROOT / "examples" / "seed-one-job-per-instance.toml"
CONFIGS = Path(__file__).parent / "configs"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse ends usage errors this way
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ok_prints_summary_with_active_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config prints OK, the runner, plugin, capacity, limits and the active policy."""
    status, out, err = run_cli(capsys, "validate", str(SEED), "--at", "2026-03-02T09:00")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"OK {SEED}",
        "concurrent: 10",
        "runners[0] 'instance autoscaler example': executor instance, url https://gitlab.com",
        (
            "  plugin: fleeting-plugin-aws (plugin_config keys: name, profile, config_file, "
            "credentials_file)"
        ),
        "  capacity: 1 per instance, max_instances 10 (10 slots), max_use_count 1",
        "  connector: ssh (default), as ec2-user, external address",
        "  policies (1, the last matching one wins):",
        (
            "    [0] * * * * * (no timezone set: UTC, the local zone (TZ)): idle_count 5, idle_time 20m0s, preemptive"
            "  <- active at 2026-03-02T09:00+00:00"
        ),
    ]


def test_active_policy_follows_the_instant(capsys: pytest.CaptureFixture[str]) -> None:
    """--at picks the policy active then: the weekend policy on a Saturday."""
    config = str(CONFIGS / "several-runners.toml")
    _, saturday, _ = run_cli(
        capsys, "validate", config, "--at", "2026-03-07T12:00Z", "--config-only"
    )
    _, monday, _ = run_cli(capsys, "validate", config, "--at", "2026-03-02T12:00Z", "--config-only")
    weekend = "    [1] * * * * sat,sun (Europe/London): idle_count 0, idle_time 5m0s"
    assert f"{weekend}, not preemptive  <- active at 2026-03-07T12:00+00:00" in saturday
    assert f"{weekend}, not preemptive\n" in monday
    assert "runners[2] 'plain docker': executor docker (not driven by fleetkit)" in monday


def test_no_policy_matching_shows_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    """When no period matches, the summary says the default policy applies."""
    config = str(CONFIGS / "macos-vm-isolation.toml")
    _, out, _ = run_cli(capsys, "validate", config, "--at", "2026-03-02T09:00Z", "--config-only")
    assert (
        "    none matches at 2026-03-02T09:00+00:00; the default applies: "
        "idle_count 0, idle_time 5m0s, not preemptive"
    ) in out


def test_summary_shows_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """Tokens, passwords and secret plugin settings stay out of the summary."""
    for name in ["windows-winrm.toml", "docker-autoscaler-hetzner.toml", "macos-vm-isolation.toml"]:
        _, out, err = run_cli(capsys, "validate", str(CONFIGS / name))
        for secret in ["WinRM-Pa55word!", "glrt-", "hcloud-api-secret", "nested-vm-password"]:
            assert secret not in out + err


def test_problems_exit_1_listing_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config with problems exits 1 and lists every problem with its path on stderr."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[[runners]]\nexecutor = "instance"\nplugin = "aws"\n'
        "[runners.autoscaler]\ncapacity_per_instance = 0\n"
    )
    status, out, err = run_cli(capsys, "validate", str(config))
    assert (status, out) == (1, "")
    assert err.splitlines() == [
        f"{config}: 3 problems",
        "  - runners[0].plugin: belongs in [runners.autoscaler], not directly under [[runners]]",
        '  - runners[0].autoscaler.plugin: is missing: name the fleeting plugin, e.g. plugin = "aws"',
        (
            "  - runners[0].autoscaler.capacity_per_instance: must be >= 1 (jobs per instance; "
            "leave it out for 1), got 0"
        ),
    ]


def test_warnings_are_printed_after_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings do not fail validation; they follow the summary."""
    config = tmp_path / "config.toml"
    config.write_text(SEED.read_text().replace("concurrent = 10", "concurrent = 4"))
    status, out, _ = run_cli(capsys, "validate", str(config))
    assert status == 0
    assert out.splitlines()[-2:] == [
        "1 warning:",
        (
            "  - concurrent: 4 caps jobs below what runners[0] can run (max_instances 10 x "
            "capacity_per_instance 1 = 10 slots): raise concurrent to 10 or lower max_instances"
        ),
    ]


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file is a problem (exit 1) with a clear message, not a usage error."""
    missing = tmp_path / "nope.toml"
    status, _, err = run_cli(capsys, "validate", str(missing))
    assert status == 1
    assert err == f"{missing}: 1 problem\n  - no such file\n"


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", str(SEED), "--at", "next tuesday"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing or bad arguments and unknown commands are usage errors (exit 2)."""
    status, _, err = run_cli(capsys, *args)
    assert status == 2
    assert "usage: fleetkit" in err


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_exit_statuses(tmp_path: Path) -> None:
    """As a real process the command exits 0, 1 and 2 for OK, problems and usage errors."""
    ok = _subprocess("validate", str(SEED))
    assert (ok.returncode, ok.stdout.splitlines()[0]) == (0, f"OK {SEED}")
    bad = tmp_path / "bad.toml"
    bad.write_text("concurrent = 1\n// not a comment\n")
    problem = _subprocess("validate", str(bad))
    assert problem.returncode == 1
    assert "line 2, column 1: not valid TOML" in problem.stderr
    assert "comments start with '#', not '//'" in problem.stderr
    usage = _subprocess("validate")
    assert usage.returncode == 2
    assert "the following arguments are required: CONFIG" in usage.stderr


def test_problems_come_with_the_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When a config has problems, its key warnings are printed after them."""
    config = tmp_path / "config.toml"
    config.write_text('[[runners]]\nexecutor = "instance"\nrequest_concurency = 2\n')
    status, _, err = run_cli(capsys, "validate", str(config))
    assert status == 1
    assert err.splitlines()[-2:] == [
        "1 warning:",
        (
            "  - runners[0].request_concurency: is not a GitLab Runner key; kept but not used "
            "(did you mean 'request_concurrency'?)"
        ),
    ]


def test_example_script_prints_limits_and_active_policy() -> None:
    """examples/validate_config.py loads a config and prints its limits and active policy."""
    script = ROOT / "examples" / "validate_config.py"
    done = subprocess.run(
        [sys.executable, str(script), str(SEED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "runners[0] instance autoscaler example",
        (
            "  limits: Limits(capacity_per_instance=1, max_use_count=1, max_instances=10, "
            "failure_threshold=3, ready_timeout=600.0)"
        ),
        "  active policy now: idle_count=5 idle_time=20m0s preemptive=True",
    ]
