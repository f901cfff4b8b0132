"""Oracles for the local provider's tests: what /proc and the file system say.

Written independently of the provider's own sweep code, so a test does not
check the provider against itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from fleetkit._procs import exists
from fleetkit.model import ConnectorConfig
from fleetkit.provider.local import LocalInstanceGroup
from tests.support import require_executable

INSTALL_HINT = "apt-get install -y openssh-server"


def require_sshd() -> None:
    """Skip (fail under CI=true) without OpenSSH's server and ssh-keygen."""
    require_executable("ssh-keygen", INSTALL_HINT)
    require_executable("/usr/sbin/sshd", INSTALL_HINT)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended)."""
    return exists(pid)


def processes_under(path: Path) -> list[int]:
    """Live processes whose command line or working directory lies under ``path``."""
    prefix = str(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not running(int(entry.name)):
            continue
        try:
            # A retitled sshd holds all its arguments in one blank-separated string.
            args = (
                (entry / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
            )
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if any(a.startswith(prefix) for a in args) or cwd.startswith(prefix):
            found.append(int(entry.name))
    return found


def instance_process(sandbox: Path) -> int:
    """The one process that is the instance (not its per-connection children)."""
    pids = processes_under(sandbox)
    tops = [pid for pid in pids if _parent(pid) not in pids]
    assert len(tops) == 1, f"expected one instance process under {sandbox}, found {tops}"
    return tops[0]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def instances_up(owner_dir: Path) -> list[str]:
    """The sandboxes under ``owner_dir`` that have a live process."""
    if not owner_dir.exists():
        return []
    return sorted(p.name for p in owner_dir.iterdir() if p.is_dir() and processes_under(p))


def leftovers(root: Path) -> list[str]:
    """Every file or directory left under ``root``, and every process running from it."""
    files = [str(p.relative_to(root)) for p in root.rglob("*")] if root.exists() else []
    return files + [f"pid {pid}" for pid in processes_under(root)]


@asynccontextmanager
async def local_group(
    root: Path,
    *,
    owner: str = "fleet-test",
    connector_config: ConnectorConfig | None = None,
    **plugin_config: Any,
) -> AsyncIterator[LocalInstanceGroup]:
    """An initialised local group under ``root``; on exit every instance is
    decreased, the group shut down, and nothing of ``owner`` may be left behind."""
    group = LocalInstanceGroup.from_config(
        {"root": str(root), **plugin_config}, connector_config or ConnectorConfig(), owner=owner
    )
    await group.init()
    try:
        yield group
    finally:
        with anyio.CancelScope(shield=True):
            statuses = await group.update()
            await group.decrease([s.id for s in statuses])
            await group.update()
            await group.shutdown()
    left = leftovers(root / owner)
    assert left == [], f"left behind under {root / owner}: {left}"
    assert not (root / owner).exists()
