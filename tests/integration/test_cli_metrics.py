"""Issue 14: `fleetkit run` serves GitLab's metrics on listen_address (or --metrics-listen)
while it runs; a scrape over real HTTP reads them with GitLab's names and labels."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.executor_support import FLEETKIT, local_config

pytestmark = pytest.mark.integration

_NAMES = (
    "fleeting_taskscaler_tasks",
    "fleeting_taskscaler_max_tasks_per_instance",
    "fleeting_taskscaler_desired_instances",
    "fleeting_taskscaler_task_operations_total",
    "fleeting_taskscaler_scale_operations_total",
    "fleeting_provisioner_instances",
    "fleeting_provisioner_max_instances",
    "fleeting_provisioner_instance_operations_total",
    "fleeting_provisioner_internal_operations_total",
    "fleeting_provisioner_missed_updates_total",
    "fleeting_provisioner_instance_creation_time_seconds_bucket",
)


# One job holds its slot: the scrape saw the run at work, not before or after it.
_ACQUIRED = re.compile(r'\nfleeting_taskscaler_tasks\{[^}]*state="acquired"[^}]*\} 1\.0\n')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str, proc: subprocess.Popen[str], deadline: float) -> str:
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fleetkit run ended before its metrics were scraped"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = str(answer.read().decode())
            if _ACQUIRED.search(text):
                return text
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"no metrics with a job running at {url}")


@pytest.mark.parametrize("where", ["listen_address", "--metrics-listen"])
def test_run_serves_metrics_while_it_runs(tmp_path: Path, where: str) -> None:
    """A scrape during a job shows the acquired slot under GitLab's names and labels;
    the endpoint is gone once the run ends."""
    port = _free_port()
    config = local_config(tmp_path, use_sshd=False, max_instances=1, capacity=1)
    args: list[str] = []
    if where == "listen_address":
        config.write_text(f'listen_address = "127.0.0.1:{port}"\n' + config.read_text())
    else:
        args = ["--metrics-listen", f"127.0.0.1:{port}"]
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[[job]]\nname = "slow"\nshell = "sh"\nscript = ["sleep 3"]\n')
    argv = [*FLEETKIT, "run", str(config), str(jobs), "--plain", *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            text = _scrape(f"http://127.0.0.1:{port}/metrics", proc, time.monotonic() + 60)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    for name in _NAMES:
        assert f"\n{name}{{" in text, name
    assert 'runner_name="test"' in text
    assert 'system_id="s_' in text
    assert "glrt-test-token" not in text
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
