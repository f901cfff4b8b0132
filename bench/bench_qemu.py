"""The qemu hypervisor on this machine: cold boot, warm pool, memory per VM.

(a) ``create`` with no warm pool to a completed ``ssh VM true`` (host key
pinned): a cold boot, p50 and p95 over ``RUNS`` boots; (b) ``create`` with a
warm pool of one to a completed ``ssh VM true``, every VM never used before
(the pool refills between jobs, untimed), p50 and p95 over ``RUNS`` jobs;
(c) eight cold boots at once, time until all eight answered a login; (d) host
memory (QEMU's RSS) of one idle VM. Every line names the accelerator
(``tcg`` or ``kvm``): this machine's KVM cannot boot a standard kernel, so here
it is TCG.

Run: ``python bench/bench_qemu.py [RUNS]`` (default 10); prints ``BENCH
<name>=<value> <unit>`` lines. Needs QEMU, busybox-static, dropbear-bin, the
``qemu`` extra and the cloud kernel .deb (downloaded into the cache when
missing). Boots VMs one at a time and stops each.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from fleetkit._procs import wait_until
from fleetkit.nesting.qemu import QemuHypervisor
from fleetkit.nesting.qemu_image import Image, build_image

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def _report(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value:.4g} {unit}", flush=True)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(round(p / 100 * len(ordered)) - 1, 0)]


def _login(image: Image, key: Path, addr: str, host_key: str, work: Path) -> None:
    host, port = addr.rsplit(":", 1)
    known = work / "known_hosts"
    known.write_text(f"[{host}]:{port} {host_key}\n")
    subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-p", port, "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
         f"{image.user}@{host}", "true"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


async def _job(hypervisor: QemuHypervisor, n: int, image: Image, key: Path, work: Path) -> float:
    start = time.perf_counter()
    vm = await hypervisor.create(f"vm-{n}", image.name)
    await anyio.to_thread.run_sync(_login, image, key, vm.addr, str(vm.host_key), work)
    elapsed = time.perf_counter() - start
    await hypervisor.delete(vm.id)
    return elapsed


async def _login_only(
    hypervisor: QemuHypervisor, vm_id: str, image: Image, key: Path, work: Path
) -> None:
    vm = await hypervisor.create(vm_id, image.name)
    own = work / vm_id
    own.mkdir()
    await anyio.to_thread.run_sync(_login, image, key, vm.addr, str(vm.host_key), own)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fk-bq-") as tmp:
        work = Path(tmp)
        await anyio.run_process(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")]
        )
        image = await anyio.to_thread.run_sync(
            lambda: build_image(
                "bench", work / "images", authorized_keys=[(work / "key.pub").read_text()]
            )
        )
        base = {"image_directory": str(work / "images"), "boot_timeout": 300}

        cold = QemuHypervisor(work / "cold")
        await cold.init({**base, "pool_size": 0})
        accel = cold.accel
        boots = [await _job(cold, n, image, work / "key", work) for n in range(RUNS)]
        _report(f"qemu_{accel}_cold_boot_to_login_p50", _percentile(boots, 50), "s")
        _report(f"qemu_{accel}_cold_boot_to_login_p95", _percentile(boots, 95), "s")
        _report(f"qemu_{accel}_cold_boots", len(boots), "boots")

        # Eight cold boots at once (2 cores here): time until all answer a login.
        start = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for n in range(8):
                tasks.start_soon(_login_only, cold, f"vm-8-{n}", image, work / "key", work)
        _report(f"qemu_{accel}_eight_at_once_all_logged_in", time.perf_counter() - start, "s")
        for n in range(8):
            await cold.delete(f"vm-8-{n}")

        vm = await cold.create("vm-idle", image.name)
        await anyio.sleep(3)
        _report(f"qemu_{accel}_idle_vm_host_rss", _rss_mib(cold.process_id(vm.id)), "MiB")
        await cold.delete(vm.id)
        await cold.shutdown()

        warm = QemuHypervisor(work / "warm")
        await warm.init({**base, "pool_size": 1})
        jobs = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(warm.run)
            for n in range(RUNS):
                with anyio.fail_after(300):
                    await wait_until(lambda: warm.pooled(image.name) >= 1)
                jobs.append(await _job(warm, n, image, work / "key", work))
            tasks.cancel_scope.cancel()
        await warm.shutdown()
        _report(f"qemu_{accel}_warm_create_to_login_p50", _percentile(jobs, 50), "s")
        _report(f"qemu_{accel}_warm_create_to_login_p95", _percentile(jobs, 95), "s")
        _report(f"qemu_{accel}_warm_jobs", len(jobs), "jobs")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main)
