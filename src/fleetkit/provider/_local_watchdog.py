"""The local provider's watchdog: ``python -m fleetkit.provider._local_watchdog``.

Started by :meth:`fleetkit.provider.local.LocalInstanceGroup.init` in a session
of its own, with a pipe from the manager on its stdin, whose first line names
the root and owner directory (JSON; not arguments, so that no sweep mistakes
the watchdog for a process of the instances). When the manager shuts
down cleanly it writes a goodbye line and closes the pipe; when it dies any
other way (SIGKILL, a crash) the kernel closes the pipe without one, and the
watchdog sweeps the owner's instances at once, as the next ``init`` would: so
no job outlives its manager, in either mode. It takes the owner's lock first:
a manager that started meanwhile has swept already and is left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO

import anyio

_WAIT = 5.0


def main(argv: list[str]) -> int:
    """Wait for the manager to go; sweep unless it said goodbye."""
    from fleetkit.provider import local

    where = json.loads(sys.stdin.buffer.readline())
    root, owner_dir = Path(where["root"]), Path(where["owner_dir"])
    said = sys.stdin.buffer.read()
    if said.endswith(local._WATCHDOG_BYE):
        return 0
    lock = anyio.run(_lock_after, int(where["manager"]), owner_dir)
    if lock is None:
        return 0  # a new manager holds the lock: its init has swept
    anyio.run(local._sweep, owner_dir)
    local._release(lock, owner_dir, root, True)
    return 0


async def _lock_after(manager: int, owner_dir: Path) -> IO[bytes] | None:
    """The owner's lock, once the dying manager has let it go. Its pipe may
    close before its lock does (the kernel closes a dead process's files one
    by one): wait for it to be gone, then try a few times."""
    from fleetkit._procs import exists, wait_until
    from fleetkit.errors import ProviderError
    from fleetkit.provider import local

    with anyio.move_on_after(_WAIT):
        await wait_until(lambda: not exists(manager))
    with anyio.move_on_after(_WAIT):
        while True:
            try:
                return local._take_lock(owner_dir, None)
            except ProviderError:
                await anyio.sleep(0.05)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
