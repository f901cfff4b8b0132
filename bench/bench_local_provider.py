"""Local provider: time from increase(10) until all 10 instances are reachable.

"Reachable" means a completed SSH handshake with the instance's own host key
and the group's generated client key (asyncssh), or, without sshd or asyncssh,
a TCP connect to the instance's port (an existing sandbox without sshd).

Run: ``python bench/bench_local_provider.py`` (prints ``BENCH name=value unit`` lines).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import anyio

from fleetkit._sshd import sshd_available
from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState
from fleetkit.provider.local import LocalInstanceGroup

COUNT = 10
ROUNDS = 3


async def reach(info: ConnectInfo) -> None:
    """Wait until the instance answers: an SSH handshake, a TCP connect, or its sandbox."""
    if info.protocol == "local":
        if not await anyio.Path(info.address()).is_dir():
            raise RuntimeError(f"sandbox of {info.id} is missing")
        return
    try:
        import asyncssh
    except ImportError:
        stream = await anyio.connect_tcp(info.address(), info.port)
        await stream.aclose()
        return
    assert info.key is not None
    known = asyncssh.import_known_hosts(f"[{info.address()}]:{info.port} {info.host_key}\n")
    async with asyncssh.connect(
        info.address(),
        info.port,
        username=info.username,
        client_keys=[asyncssh.import_private_key(info.key)],
        known_hosts=known,
    ):
        pass


async def one_round(root: Path, use_sshd: bool) -> tuple[float, float]:
    """Seconds from increase(COUNT) to all reachable, and for decreasing them all."""
    group = LocalInstanceGroup(
        root=root,
        owner="bench",
        max_instances=COUNT,
        use_sshd=use_sshd,
        connector_config=ConnectorConfig(),
    )
    await group.init()
    try:
        start = anyio.current_time()
        accepted = await group.increase(COUNT)
        if accepted != COUNT:
            raise RuntimeError(f"increase({COUNT}) accepted {accepted}")
        ids = [s.id for s in await group.update() if s.state is ProviderState.RUNNING]
        infos = [await group.connect_info(i) for i in ids]
        async with anyio.create_task_group() as tg:
            for info in infos:
                tg.start_soon(reach, info)
        reachable = anyio.current_time() - start
        start = anyio.current_time()
        await group.decrease(ids)
        await group.update()
        removed = anyio.current_time() - start
    finally:
        await group.shutdown()
    return reachable, removed


async def main() -> None:
    use_sshd = sshd_available()
    if not use_sshd:
        print("sshd not installed: measuring sandbox instances only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="fleetkit-bench-") as tmp:
        root = Path(tmp)
        await anyio.Path(root).chmod(0o755)  # the sshd login user reads authorized_keys below it
        results = [await one_round(root / "local", use_sshd) for _ in range(ROUNDS)]
    suffix = "" if use_sshd else "_sandbox"
    print(
        f"BENCH local_increase10_reachable{suffix}={statistics.median(r[0] for r in results):.3f} s"
    )
    print(f"BENCH local_decrease10{suffix}={statistics.median(r[1] for r in results):.3f} s")


if __name__ == "__main__":
    anyio.run(main)
