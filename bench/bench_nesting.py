"""The nesting daemon's own cost, with the sandbox hypervisor, over real gRPC on a unix socket.

(a) ``Create`` to an answer (a sandbox VM: image copy, host key, sshd started
and listening), (b) ``Delete`` (sshd and its tree ended, directory removed),
(c) ``Create`` in an occupied slot (stomp + create), (d) an empty ``List``
round trip (the gRPC floor). p50 and p95 over RUNS each. What isolation adds
to a whole job (connect to the VM too) is measured by the executor's
benchmark; this one isolates the daemon.

Run: ``python bench/bench_nesting.py``; prints ``BENCH <name>=<value> <unit>``
lines. Needs ``/usr/sbin/sshd`` and the ``isolation`` extra.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from fleetkit._sshd import sshd_available
from fleetkit.isolation import NestingClient
from fleetkit.nesting import NestingDaemon

RUNS = 30


def _report(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value:.4g} {unit}", flush=True)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(round(p / 100 * len(ordered)) - 1, 0)]


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def _summary(name: str, times: list[float]) -> None:
    _report(f"nesting_{name}_p50", _percentile(times, 50) * 1000, "ms")
    _report(f"nesting_{name}_p95", _percentile(times, 95) * 1000, "ms")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fk-bn-") as tmp:
        async with (
            NestingDaemon("sandbox", socket_path=Path(tmp) / "n.sock", config={}) as daemon,
            NestingClient(daemon.target) as client,
        ):
            creates, deletes, stomps, lists = [], [], [], []
            for _ in range(RUNS):
                lists.append(await _timed(client.list))
            for _ in range(RUNS):
                start = time.perf_counter()
                made = await client.create("default")
                creates.append(time.perf_counter() - start)
                start = time.perf_counter()
                await client.delete(made.vm.id)
                deletes.append(time.perf_counter() - start)
            await client.create("default", slot=0)
            for _ in range(RUNS):
                stomps.append(await _timed(lambda: client.create("default", slot=0)))
            await client.shutdown()
    _summary("create", creates)
    _summary("delete", deletes)
    _summary("stomp_create", stomps)
    _summary("list", lists)


if __name__ == "__main__":
    if not sshd_available():
        print("bench_nesting: /usr/sbin/sshd is missing (apt-get install openssh-server)")
        sys.exit(1)
    logging.basicConfig(level=logging.ERROR)  # each stomp logs a warning
    anyio.run(main)
