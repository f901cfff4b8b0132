"""Local provider: time from increase(10) until all 10 instances are reachable.

"Reachable" means a completed SSH login through fleetkit's SSH connector, with
the instance's own host key pinned and the group's generated client key; or,
without asyncssh, a TCP connect to the instance's port; without sshd, an
existing sandbox.

Run: ``python bench/bench_local_provider.py`` (prints ``BENCH name=value unit`` lines).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from fleetkit._sshd import sshd_available
from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState
from fleetkit.provider.local import LocalInstanceGroup

if TYPE_CHECKING:
    from fleetkit.connector.ssh import SSHConnector

COUNT = 10
ROUNDS = 3


async def reach(info: ConnectInfo, ssh: SSHConnector | None) -> None:
    """Wait until the instance answers: an SSH login, a TCP connect, or its sandbox."""
    if info.protocol == "local":
        if not await anyio.Path(info.address()).is_dir():
            raise RuntimeError(f"sandbox of {info.id} is missing")
    elif ssh is None:
        stream = await anyio.connect_tcp(info.address(), info.port)
        await stream.aclose()
    else:
        async with ssh.connect(info):
            pass


@asynccontextmanager
async def _ssh_connector() -> AsyncIterator[SSHConnector | None]:
    """fleetkit's SSH connector (host key pinned from connect info), if asyncssh is here."""
    try:
        from fleetkit.connector.ssh import SSHConnector
    except ImportError:
        yield None
        return
    async with SSHConnector(dial_timeout=30) as ssh:
        yield ssh


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
        async with _ssh_connector() as ssh, anyio.create_task_group() as tg:
            for info in infos:
                tg.start_soon(reach, info, ssh)
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
