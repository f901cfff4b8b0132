"""Executor: the main job's wall time, and what running one job costs beyond its script.

* ``main_job_wall``: ``fleetkit run examples/local.toml examples/jobs.toml`` in a
  subprocess, start to exit (the README's first command after install; the
  goal is under a minute on a fresh machine).
* ``run_job_overhead_local`` / ``run_job_overhead_ssh``: median time of
  ``run_job`` for a job whose script is ``true``, on a warm instance of the local
  provider, over the local connector and over real SSH: preparing the build
  directory, uploading the script and variables, running, cleaning up.

Run: ``python bench/bench_executor.py`` (prints ``BENCH name=value unit`` lines).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from fleetkit._sshd import sshd_available
from fleetkit.executor import ProtocolConnector, connector_factories
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.jobs import Job, MemoryLog, run_job
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy
from fleetkit.provider.local import LocalInstanceGroup

ROOT = Path(__file__).resolve().parents[1]
JOBS = 30


def main_job_wall() -> float:
    """Seconds for the README's command, run as a user would."""
    start = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetkit.cli",
            "run",
            str(ROOT / "examples" / "local.toml"),
            str(ROOT / "examples" / "jobs.toml"),
            "--plain",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return time.monotonic() - start


async def run_job_overhead(use_sshd: bool) -> float:
    """Median milliseconds of run_job for ``true`` on one warm instance."""
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-", dir="/tmp") as root:
        await anyio.Path(root).chmod(0o755)  # the SSH login user reads authorized_keys below it
        group = LocalInstanceGroup.from_config(
            {"root": root, "use_sshd": use_sshd}, ConnectorConfig(), owner="bench-executor"
        )
        connector = ProtocolConnector(connector_factories(ConnectorConfig()))
        settings = FleetSettings(
            update_interval=0.5,
            update_interval_when_expecting=0.1,
            delete_instances_on_shutdown=True,
            shutdown_deletion_interval=0.1,
        )
        job = Job(id=1, name="noop", shell="sh", script="true")
        times = []
        try:
            async with (
                Fleet(
                    group,
                    Limits(max_instances=1),
                    Policy(idle_count=1),
                    connector=connector,
                    settings=settings,
                ) as fleet,
                fleet.acquire("bench") as slot,
            ):
                await run_job(slot, job, connector, log=MemoryLog())  # warm the connection
                for _ in range(JOBS):
                    start = anyio.current_time()
                    result = await run_job(slot, job, connector, log=MemoryLog())
                    times.append(anyio.current_time() - start)
                    assert result.ok, result
        finally:
            await connector.aclose()
        return statistics.median(times) * 1000


def main() -> None:
    """Print every figure."""
    print(f"BENCH run_job_overhead_local={anyio.run(run_job_overhead, False):.1f} ms")
    if sshd_available():
        ssh = anyio.run(run_job_overhead, True, backend="asyncio")
        print(f"BENCH run_job_overhead_ssh={ssh:.1f} ms")
    print(f"BENCH main_job_wall={main_job_wall():.1f} s")


if __name__ == "__main__":
    main()
