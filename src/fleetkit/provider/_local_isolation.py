"""What keeps local instances apart: a host number leased machine-wide and a
Unix user per instance.

Host numbers
------------
Instance N listens on ``127.0.0.N``. Two fleets (two owners, or two
processes) on one machine must never pick the same N, or a fixed
``protocol_port`` makes them collide. :func:`lease_host` binds an abstract
unix socket named after N (Linux; network-namespace wide, like 127.0.0.N
itself): the kernel gives each name to one socket at a time and frees it when
its holder dies, so a crashed manager leaves no stale lease.

Users
-----
As root, every instance whose login user is not configured gets a user of its
own, ``fleetkit-iN`` (N its host number), made once with ``useradd`` and
marked as fleetkit's in its GECOS field. Jobs on different instances therefore
run as different users: none can read another's ``/proc/PID/environ``, signal
its processes or enter its work directory. Because such a user is only ever an
instance's, "every process of this user" is exactly "everything on this
instance", which :func:`end_user_processes` ends (``kill -KILL -1`` run as
that user, which signals every process of that user and nothing else) when
the instance starts and when it is removed, whatever sessions or process
groups its jobs made.

The ``sandbox`` nesting hypervisor reuses the same scheme for its VMs:
``fleetkit-vN`` (:func:`vm_user`, GECOS :data:`VM_COMMENT`), leased
machine-wide by :func:`lease_vm_user` so two daemons never share one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
from pathlib import Path

from fleetkit._sshd import SSHDaemonError, ensure_login_user

__all__ = [
    "POOL_COMMENT",
    "VM_COMMENT",
    "end_user_processes",
    "is_pool_user",
    "lease_host",
    "lease_vm_user",
    "pool_user",
    "port_free",
    "vm_user",
]

#: The GECOS field that marks a user as one of fleetkit's instance users.
POOL_COMMENT = "fleetkit local instance"
_POOL_NAME = re.compile(r"fleetkit-i\d{1,3}\Z")
#: The GECOS field that marks a user as one of the sandbox hypervisor's VM users.
VM_COMMENT = "fleetkit sandbox vm"
_VM_NAME = re.compile(r"fleetkit-v\d{1,3}\Z")
#: How many VM users there can be (``fleetkit-v1`` ... ``fleetkit-v999``).
VM_USERS = 999
_KILL_ROUNDS = 5
_SETPRIV = "/usr/bin/setpriv"  # util-linux, essential on Debian


def lease_host(host: int) -> socket.socket | None:
    """Hold host number ``host`` machine-wide; ``None`` when another holds it.
    Close the socket to give it back."""
    return _lease(f"fleetkit-local-host-{host}")


def lease_vm_user(number: int) -> socket.socket | None:
    """Hold VM user ``fleetkit-vNUMBER`` machine-wide (as :func:`lease_host`);
    ``None`` when another daemon holds it."""
    return _lease(f"fleetkit-sandbox-vm-user-{number}")


def _lease(name: str) -> socket.socket | None:
    lease = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lease.bind(f"\0{name}")
    except OSError:
        lease.close()
        return None
    return lease


def port_free(address: str, port: int) -> bool:
    """Whether ``address:port`` can be listened on now (as sshd would bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def pool_user(host: int) -> str:
    """The instance user for host number ``host``, made if missing. Blocking.

    Raises :class:`~fleetkit._sshd.SSHDaemonError` when a user of that name
    exists but is not fleetkit's (its GECOS field says otherwise)."""
    name = f"fleetkit-i{host}"
    ensure_login_user(name, comment=POOL_COMMENT)
    return name


def vm_user(number: int) -> str:
    """The sandbox VM user ``fleetkit-vNUMBER``, made if missing. Blocking.

    Raises :class:`~fleetkit._sshd.SSHDaemonError` as :func:`pool_user` does."""
    name = f"fleetkit-v{number}"
    ensure_login_user(name, comment=VM_COMMENT)
    return name


def is_pool_user(name: str) -> bool:
    """Whether ``name`` is one of fleetkit's instance or sandbox VM users (name
    and GECOS mark)."""
    if _POOL_NAME.match(name):
        comment = POOL_COMMENT
    elif _VM_NAME.match(name):
        comment = VM_COMMENT
    else:
        return False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return False
    return entry.pw_uid != 0 and entry.pw_gecos == comment


def _uid_running(uid: int) -> bool:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, StopIteration):
                lines = Path(entry.path, "status").read_text().splitlines()
                state = next(line for line in lines if line.startswith("State:"))
                uids = next(line for line in lines if line.startswith("Uid:"))
                if int(uids.split()[1]) == uid and state.split()[1] not in {"Z", "X"}:
                    return True
    return False


def end_user_processes(name: str) -> None:
    """End every process of instance user ``name`` (only a pool user: see
    :func:`is_pool_user`; any other name is refused). Blocking.

    ``kill(-1, SIGKILL)`` from that user reaches each of its processes, in any
    session, group or cgroup, and nothing of any other user; repeated while
    any is left (a fork racing the first round).
    """
    if not is_pool_user(name):
        raise SSHDaemonError(f"refusing to end the processes of {name!r}: not a fleetkit user")
    entry = pwd.getpwnam(name)
    for _round in range(_KILL_ROUNDS):
        if not _uid_running(entry.pw_uid):
            return
        # setpriv drops to the user, not subprocess's user=: with user= Python
        # forks (no vfork), and a fork of a process running gRPC threads (the
        # nesting daemon, an isolating manager) can crash in the child.
        subprocess.run(
            [
                _SETPRIV,
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                "--",
                "/bin/sh",
                "-c",
                "kill -KILL -1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
