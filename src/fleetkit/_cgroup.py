"""cgroup v2, where the machine offers it: a group of processes that no
``setsid``, double fork or ``cd /`` leaves.

A process can leave its session and process group, and once its parent is
gone it is no longer below anything fleetkit started; it cannot leave its
cgroup without write access to a cgroup above. So when this process may make
cgroups (root, with a cgroup v2 hierarchy mounted: ``/sys/fs/cgroup`` on a
unified machine, ``/sys/fs/cgroup/unified`` on a hybrid one), the local
provider gives each instance a cgroup below this process's own, the local
connector runs each command in a cgroup below its instance's, and the job
wrapper runs each job in one below that; ending any of them writes
``cgroup.kill`` (Linux 5.14+; older kernels get ``SIGKILL`` for each member,
repeated until none is left), which ends every process in it and below it.

An instance's cgroup is *delegated* to the instance's user (its directory and
``cgroup.procs``, ``cgroup.threads`` and ``cgroup.subtree_control`` are
chowned), so that user's job wrapper may make a cgroup per job below it and
move the job there, but can move nothing out of the instance's cgroup.

Where cgroups are not usable (not root, no cgroup v2, a read-only hierarchy)
:func:`available` is false and callers fall back to what ``/proc`` and a Unix
user per instance give (see ``docs/security.md``). Blocking functions.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

__all__ = [
    "available",
    "delegate",
    "kill",
    "make",
    "move",
    "own_cgroup",
    "remove",
    "valid_path",
]

# Files a delegatee must own (the kernel's cgroup v2 delegation contract).
_DELEGATED = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./-]+\Z")
_REMOVE_TIMEOUT = 5.0


def _mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, or ``None`` without cgroup v2."""
    mount = _mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def available() -> bool:
    """Whether this process can make cgroups below its own and move processes into them."""
    if os.geteuid() != 0:
        return False
    own = own_cgroup()
    return own is not None and os.access(own, os.W_OK) and (own / "cgroup.procs").exists()


def valid_path(path: str) -> bool:
    """Whether ``path`` (read back from a record or announcement) is a plain
    absolute path below a cgroup v2 mount."""
    mount = _mount()
    return (
        mount is not None
        and _SAFE_PATH.match(path) is not None
        and ".." not in path.split("/")
        and Path(path).is_relative_to(mount)
    )


def make(path: Path, *, parents: bool = False) -> Path:
    """Make the cgroup ``path`` (and, with ``parents``, missing ones above it);
    return it. Without ``parents`` a missing parent raises FileNotFoundError:
    a command's cgroup is never made where its instance's is gone."""
    path.mkdir(parents=parents, exist_ok=True)
    return path


def move(path: Path, pid: int) -> None:
    """Move process ``pid`` into the cgroup ``path``."""
    (path / "cgroup.procs").write_text(f"{pid}\n")


def delegate(path: Path, uid: int, gid: int) -> None:
    """Let ``uid`` make cgroups below ``path`` and move its processes between them."""
    os.chown(path, uid, gid)
    for name in _DELEGATED:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path / name, uid, gid)


def _members(path: Path) -> list[int]:
    pids: list[int] = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(line) for line in procs.read_text().split()]
    return pids


def kill(path: Path) -> None:
    """SIGKILL every process in ``path`` and below; return when none is left
    (or after a short bound)."""
    if not path.is_dir():
        return
    killer = path / "cgroup.kill"
    deadline = time.monotonic() + _REMOVE_TIMEOUT
    while (members := _members(path)) and time.monotonic() < deadline:
        if killer.exists():
            with contextlib.suppress(OSError):
                killer.write_text("1\n")
        else:
            for pid in members:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove(path: Path) -> None:
    """Kill what is in ``path`` and remove it with every cgroup below it."""
    if not path.is_dir():
        return
    kill(path)
    # Deepest first: a cgroup with children cannot be removed.
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
