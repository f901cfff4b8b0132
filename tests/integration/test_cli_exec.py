"""`fleetkit exec` end to end, in a subprocess, on the local provider."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.executor_support import FLEETKIT, local_config, run_fleetkit, sandbox_root
from tests.integration.jobs_support import processes_with
from tests.integration.local_provider_support import leftovers, require_sshd

pytestmark = pytest.mark.integration


def _exec(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleetkit("exec", config, *args, timeout=60)


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


def test_ctrl_c_ends_the_remote_command_and_deletes_the_instance(tmp_path: Path) -> None:
    """SIGINT to `exec` ends the command on the instance, deletes the instance, exits 130."""
    require_sshd()
    base = os.getpid() % 1000 + 7000
    marker = f"{base}9"
    config = local_config(tmp_path, use_sshd=True)
    # The shell computes the marker on the instance, so that this command's own
    # command line does not contain it.
    with subprocess.Popen(
        [*FLEETKIT, "exec", str(config), "--", f"sleep $(({base}8 + 1))"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            while not processes_with(f"sleep {marker}") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert processes_with(f"sleep {marker}"), "the command never started"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert processes_with(f"sleep {marker}") == []
    assert leftovers(sandbox_root(tmp_path)) == []
