"""What VM isolation adds to a job, with the sandbox hypervisor, through real SSH and gRPC.

One instance: an OpenSSH sshd and a nesting daemon (sandbox hypervisor) on
this machine, reached as production reaches one: the nesting stream forwarded
over the instance's SSH connection, each VM dialled through it. JOBS jobs run
on the instance directly and JOBS in a VM each (``Isolator.connector_for``),
alternating in the same run so drift hits both alike; each is a
``run_job`` of a one-line script. Reported, p50 and p95 in ms:

* ``isolation_job_plain`` / ``isolation_job_isolated``: the whole job;
* ``isolation_added``: isolated minus plain, pairwise (what isolation costs);
* ``isolation_create``, ``isolation_connect``, ``isolation_delete``: its
  phases, from the job log's notes (Create until it answered; SSH to the VM
  through the instance; Delete until it answered).

Run: ``python bench/bench_isolation.py``; prints ``BENCH <name>=<value> <unit>``
lines. Needs ``/usr/sbin/sshd`` and the ``isolation`` extra.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

from fleetkit._sshd import ensure_login_user, sshd_available
from fleetkit.connector import Connector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.isolation import IsolationSettings, Isolator
from fleetkit.jobs import Job, JobStatus, MemoryLog, run_job
from fleetkit.model import ConnectInfo, ConnectorConfig
from fleetkit.nesting import NestingDaemon
from fleetkit.testing.sshd import running_sshd

JOBS = 50
_PHASES = {
    "create": ("Creating VM from image", "created at"),
    "connect": ("created at", ") connected"),
    "delete": ("Deleting VM", " deleted"),
}


class _Slot:
    def __init__(self, info: ConnectInfo) -> None:
        self.instance_id = info.id
        self.number = 0
        self.connect_info = info


def _report(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value:.4g} {unit}", flush=True)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(round(p / 100 * len(ordered)) - 1, 0)]


def _summary(name: str, seconds: list[float]) -> None:
    _report(f"isolation_{name}_p50", _percentile(seconds, 50) * 1000, "ms")
    _report(f"isolation_{name}_p95", _percentile(seconds, 95) * 1000, "ms")


class _TimedLog(MemoryLog):
    """A job log that stamps each write with the time it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    async def write(self, text: str) -> None:
        self.stamps.append((time.perf_counter(), text))
        await super().write(text)

    def between(self, start: str, end: str) -> float:
        first = next(t for t, text in self.stamps if start in text)
        last = next(t for t, text in self.stamps if end in text and t >= first)
        return last - first


async def _job(slot: _Slot, connector: Connector, number: int, log: _TimedLog) -> float:
    job = Job(id=number, name=f"bench {number}", shell="sh", script="echo ok")
    start = time.perf_counter()
    result = await run_job(slot, job, connector, log=log)
    elapsed = time.perf_counter() - start
    if result.status is not JobStatus.SUCCESS:
        raise SystemExit(f"job {number} did not succeed: {result.message}\n{log.text}")
    return elapsed


def main() -> None:
    if not sshd_available():
        print("bench_isolation: needs /usr/sbin/sshd (apt-get install openssh-server)")
        sys.exit(1)
    logging.disable(logging.WARNING)
    # Short (unix socket paths) and enterable by the VMs' login user.
    root = Path(tempfile.mkdtemp(prefix="fk-bench-iso-"))
    root.chmod(0o755)
    try:
        anyio.run(_measure, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _measure(root: Path) -> None:
    # The instance's login user is the VMs' (the dedicated user as root), so
    # plain and isolated jobs run as the same user with the same shell.
    as_root = os.geteuid() == 0
    user = await anyio.to_thread.run_sync(ensure_login_user) if as_root else getpass.getuser()
    vms = root / "vms"
    vms.mkdir(mode=0o755)
    socket = root / "run" / "nesting.sock"
    async with (
        running_sshd(root / "sshd", login_user=user) as sshd,
        NestingDaemon(
            "sandbox",
            socket_path=socket,
            state_dir=root / "state",
            socket_owner=user if as_root else None,
        ),
        SSHConnector(dial_timeout=15, retry_interval=0.05) as ssh,
    ):
        settings = IsolationSettings(
            nesting_host=f"unix://{socket}",
            nesting_config={
                "authorized_keys": [sshd.client_key.public_key],
                "working_directory": str(vms),
                "username": user,
            },
            image="default",
            connector_config=ConnectorConfig(username=user),
        )
        slot = _Slot(sshd.connect_info("bench-instance"))
        plain: list[float] = []
        isolated: list[float] = []
        phases: dict[str, list[float]] = {name: [] for name in _PHASES}
        async with Isolator(settings, vm_connector=ssh) as isolator:
            # One of each first, unmeasured: Init, the first dials, warm caches.
            await _job(slot, ssh, 0, _TimedLog())
            warm = _TimedLog()
            await _job(
                slot, isolator.connector_for(ssh, slot=0, image="default", note=warm.write), 0, warm
            )
            for number in range(1, JOBS + 1):
                plain.append(await _job(slot, ssh, number, _TimedLog()))
                log = _TimedLog()
                vm_connector = isolator.connector_for(ssh, slot=0, image="default", note=log.write)
                isolated.append(await _job(slot, vm_connector, number, log))
                for name, (start, end) in _PHASES.items():
                    phases[name].append(log.between(start, end))
    _summary("job_plain", plain)
    _summary("job_isolated", isolated)
    _summary("added", [i - p for i, p in zip(isolated, plain, strict=True)])
    for name, seconds in phases.items():
        _summary(name, seconds)
    _report("isolation_jobs", JOBS, "jobs")


if __name__ == "__main__":
    main()
