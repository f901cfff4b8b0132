"""Recipe 1: run a batch of jobs from a config.toml and read each one's output."""

from __future__ import annotations

import sys

import anyio

from fleetkit.executor import InstanceExecutor
from fleetkit.jobs import Job


async def main(config: str) -> None:
    jobs = [
        Job(id=1, name="build", script=["echo compiling", "echo done"]),
        Job(id=2, name="test", script="echo 3 passed; exit 1", allow_failure=True),
        Job(id=3, name="lint", script="echo clean", timeout=60),
    ]
    async with InstanceExecutor.from_config(config, delete_instances_on_shutdown=True) as ex:
        async for result in ex.submit(jobs):
            print(f"{result.name}: {result.status.value} (exit {result.exit_code})")
            print("  " + result.output.strip().splitlines()[-2])  # the job's last line
        stats = ex.job_stats()
    print(f"finished: {dict(sorted(stats.finished.items()))}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "examples/local.toml")
