"""After a manager is killed with SIGKILL (its watchdog too), the next init
sweeps its instances away."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import descendants
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.local_provider_support import (
    leftovers,
    processes_under,
    require_sshd,
    running,
)
from tests.support import require_root

OWNER = "crashy"

# The manager: starts two instances, says so, then waits to be killed.
MANAGER = """
import sys, anyio
from fleetkit._procs import descendants
from fleetkit.provider.local import LocalInstanceGroup
from tests.support import require_root

async def main() -> None:
    group = LocalInstanceGroup(root=sys.argv[1], owner=sys.argv[2], use_sshd=sys.argv[3] == "1")
    await group.init()
    print(await group.increase(2), flush=True)
    await anyio.sleep(3600)

anyio.run(main)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def killed_manager(root: Path, *, use_sshd: bool) -> list[int]:
    """Run a manager that starts two instances, SIGKILL it, return its orphans' pids."""
    async with await anyio.open_process(
        [sys.executable, "-c", MANAGER, str(root), OWNER, "1" if use_sshd else "0"],
        stderr=subprocess.DEVNULL,
    ) as manager:
        assert manager.stdout is not None
        with anyio.fail_after(20):
            line = await manager.stdout.receive()
        assert line.strip() == b"2"
        # The watchdog would sweep at once (tests/integration/test_hostile_os.py
        # checks that); killed with its manager, it leaves the sweep to init.
        for pid in watchdogs_of(manager.pid):
            os.kill(pid, signal.SIGKILL)
        manager.send_signal(signal.SIGKILL)
        await manager.wait()
    orphans = processes_under(root / OWNER)
    assert orphans, "the killed manager's instances should outlive it"
    return orphans


def watchdogs_of(manager: int) -> list[int]:
    """The local provider's watchdog processes the manager started."""
    found = []
    for pid in descendants(manager):
        with contextlib.suppress(OSError):
            if b"fleetkit.provider._local_watchdog" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def side_dirs(root: Path) -> list[Path]:
    """authorized_keys directories sshd was given outside the sandboxes."""
    found = []
    for config in root.glob(f"{OWNER}/*/sshd/sshd_config"):
        for line in config.read_text().splitlines():
            if line.startswith("AuthorizedKeysFile "):
                found.append(Path(line.split(" ", 1)[1]).parent)
    return [d for d in found if root not in d.parents]


@pytest.mark.anyio
@pytest.mark.parametrize("use_sshd", [True, False], ids=["sshd", "sandbox"])
async def test_next_init_sweeps_killed_managers_leftovers(use_sshd: bool, tmp_path: Path) -> None:
    """init after a SIGKILLed manager ends its instance processes and removes their directories."""
    if use_sshd:
        require_sshd()
    root = tmp_path / "root"
    orphans = await killed_manager(root, use_sshd=use_sshd)
    outside = side_dirs(root)
    assert len(list((root / OWNER).glob("local-*"))) == 2

    group = LocalInstanceGroup(root=root, owner=OWNER, use_sshd=use_sshd)
    await group.init()
    try:
        assert [pid for pid in orphans if running(pid)] == []
        assert sorted(p.name for p in (root / OWNER).iterdir()) == [".lock"]
        assert [d for d in outside if d.exists()] == []
        assert await group.update() == []
    finally:
        await group.shutdown()
    assert leftovers(root) == []
    assert not root.exists()


@pytest.mark.anyio
async def test_sweep_spares_processes_that_are_not_ours(tmp_path: Path) -> None:
    """A recorded pid now used by an unrelated process, or another owner's process, is not killed."""
    root = tmp_path / "root"
    stale = root / OWNER / "local-000000000000"
    stale.mkdir(parents=True)
    other_owner = root / "someone-else"
    other_owner.mkdir()
    async with (
        await anyio.open_process(["sleep", "60"], cwd=tmp_path) as unrelated,
        await anyio.open_process(["sleep", "60"], cwd=other_owner) as neighbour,
    ):
        (stale / "instance.json").write_text(json.dumps({"owner": OWNER, "pid": unrelated.pid}))
        group = LocalInstanceGroup(root=root, owner=OWNER, use_sshd=False)
        await group.init()
        await group.shutdown()
        try:
            assert running(unrelated.pid)
            assert running(neighbour.pid)
            assert not stale.exists()
        finally:
            unrelated.kill()
            neighbour.kill()


@pytest.mark.anyio
async def test_a_sweep_spares_the_user_of_a_host_another_fleet_holds(tmp_path: Path) -> None:
    """A dead manager's host lease goes with it, so another fleet may lease that
    host, and run an instance as its pool user, before the sweep of the dead
    one's leftovers. The sweep then ends what runs from the leftover sandbox,
    not every process of that user."""
    require_root("pool users")
    from fleetkit.provider import _local_isolation, local

    leases = [_local_isolation.lease_host(h) for h in range(254, 200, -1)]
    try:
        host = next(254 - n for n, lease in enumerate(leases) if lease is not None)
        user = await anyio.to_thread.run_sync(_local_isolation.pool_user, host)
        owner_dir = tmp_path / "root" / OWNER
        sandbox = owner_dir / "local-0123456789ab"
        sandbox.mkdir(mode=0o700, parents=True)
        (sandbox / "instance.json").write_text(json.dumps({"user": user}))
        # The live fleet's instance: runs as that user, from elsewhere.
        async with await anyio.open_process(["sleep", "3600.424242"], user=user, cwd="/") as other:
            try:
                await local._sweep(owner_dir)
                assert running(other.pid), "the sweep ended another fleet's instance"
                assert not sandbox.exists()
            finally:
                other.kill()
    finally:
        for lease in leases:
            if lease is not None:
                lease.close()
