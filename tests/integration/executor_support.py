"""Configs and oracles for the executor and `fleetkit` command tests."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio


def local_config(
    tmp_path: Path,
    *,
    use_sshd: bool,
    capacity: int = 2,
    max_instances: int = 3,
    idle_count: int = 0,
    idle_time: str = "1m",
    concurrent: int = 8,
    extra_autoscaler: str = "",
    root: bool = True,
) -> Path:
    """Write a config.toml for the local provider rooted under ``tmp_path``; its path.

    Update intervals are short so that tests see the fleet move within moments;
    instances are deleted at shutdown so nothing outlives a test. ``root=False``
    leaves the provider's default root (under ``$TMPDIR``).
    """
    root_line = f'root = "{tmp_path / "instances"}"' if root else ""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
concurrent = {concurrent}

[[runners]]
  name = "test"
  url = "https://gitlab.example.com"
  token = "glrt-test-token"
  executor = "instance"

  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = {capacity}
    max_instances = {max_instances}
    update_interval = "200ms"
    update_interval_when_expecting = "100ms"
    deletion_retry_interval = "500ms"
    delete_instances_on_shutdown = true
    shutdown_deletion_interval = "100ms"
    shutdown_deletion_retries = 20
{extra_autoscaler}
    [runners.autoscaler.plugin_config]
      {root_line}
      use_sshd = {"true" if use_sshd else "false"}

    [[runners.autoscaler.policy]]
      idle_count = {idle_count}
      idle_time = "{idle_time}"
"""
    )
    return path


def sandbox_root(tmp_path: Path) -> Path:
    """Where :func:`local_config` puts the instances."""
    return tmp_path / "instances"


async def wait_until(condition: Callable[[], object], *, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true (bound the wait with ``anyio.fail_after``)."""
    while not condition():  # noqa: ASYNC110 - state owned by other code, no event to wait on
        await anyio.sleep(interval)


def kill_instance(root: Path, instance_id: str) -> None:
    """SIGKILL the process that is a local instance (its sshd or keeper), as a crash would."""
    (sandbox,) = root.glob(f"*/{instance_id}")
    # The provider's record names the instance's own process; the job's
    # processes (whose working directory is the sandbox too) are not it.
    record = json.loads((sandbox / "instance.json").read_text())
    os.kill(int(record["pid"]), signal.SIGKILL)


def remove_lost_build_dirs(instance_id: str) -> None:
    """Remove what a job on a killed local instance left in the shared SSH build dir.

    A lost instance gets no cleanup (in a cloud its disk goes with it); the local
    provider's SSH login user has no writable home, so its jobs build under the
    shared ``/tmp/fleetkit-UID`` and outlive the instance. Tests that kill an
    instance tidy up after it here.
    """
    for path in Path("/tmp").glob(f"fleetkit-*/builds/{instance_id}"):
        shutil.rmtree(path, ignore_errors=True)
        for parent in (path.parent, path.parent.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()


FLEETKIT = [sys.executable, "-m", "fleetkit.cli"]


def interrupt_if_running(proc: subprocess.Popen[str]) -> None:
    """Let a `fleetkit` that is still running delete what it made (SIGINT), even
    when a test failed, and kill it only if that does not end it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def run_fleetkit(*args: str | Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the `fleetkit` command to its end and return what it did.

    Past ``timeout`` it gets SIGINT first, so that it deletes the instances it
    made even when a test fails, and is killed only if that does not end it.
    """
    argv = [*FLEETKIT, *map(str, args)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            finally:
                proc.kill()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_on_terminal(*args: str | Path, columns: int = 120) -> tuple[int, bytes]:
    """Run the `fleetkit` command on a pseudo-terminal (so rich draws its panel) to
    its end; its exit status and every byte it wrote to the terminal."""
    controller, terminal = pty.openpty()
    chunks = []
    try:
        with subprocess.Popen(
            [*FLEETKIT, *map(str, args)],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm"},
        ) as proc:
            os.close(terminal)
            terminal = -1
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the command exited and closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            status = proc.wait(timeout=60)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return status, b"".join(chunks)
