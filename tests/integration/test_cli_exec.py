"""`fleetkit exec` end to end, in a subprocess, on the local provider."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.executor_support import local_config, sandbox_root
from tests.integration.local_provider_support import leftovers, require_sshd

pytestmark = pytest.mark.integration

FLEETKIT = [sys.executable, "-m", "fleetkit.cli"]


def _exec(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLEETKIT, "exec", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", ["ssh", "local"])
def test_exec_streams_output_and_passes_the_exit_status(tmp_path: Path, mode: str) -> None:
    """stdout and stderr arrive apart, the exit status is the command's, nothing is left."""
    if mode == "ssh":
        require_sshd()
    config = local_config(tmp_path, use_sshd=mode == "ssh")
    done = _exec(config, "--", "sh", "-c", 'echo "out $0"; echo err >&2; exit 7', "arg one")
    assert done.returncode == 7
    assert done.stdout == "out arg one\n"
    assert done.stderr == "err\n"
    assert leftovers(sandbox_root(tmp_path)) == []


def test_exec_signal_timeout_and_usage(tmp_path: Path) -> None:
    """A signal gives 128+N, --timeout gives 124, and a missing command is a usage error."""
    config = local_config(tmp_path, use_sshd=False)
    assert _exec(config, "--", "sh -c 'kill -TERM $$'").returncode == 143
    assert _exec(config, "--timeout", "0.5", "--", "sleep", "30").returncode == 124
    missing = _exec(config)
    assert missing.returncode == 2
    assert "no COMMAND" in missing.stderr


def test_exec_with_a_bad_config_exits_125(tmp_path: Path) -> None:
    """When fleetkit cannot run the command at all, the status is 125, not the command's."""
    bad = tmp_path / "config.toml"
    bad.write_text('concurrent = 0\n[[runners]]\nexecutor = "instance"\n')
    done = _exec(bad, "--", "true")
    assert done.returncode == 125
    assert "fleetkit exec:" in done.stderr
