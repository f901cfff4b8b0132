"""The local provider's ``nesting`` option: a nesting daemon inside each instance.

With ``plugin_config.nesting = "sandbox"`` (or ``true``, the same), every
local instance runs ``fleetkit nesting serve --hypervisor NAME`` as one more
process of its own, so VM isolation runs on the embedded default:

* the daemon's socket is ``nesting.sock`` in the sandbox directory, which is
  where the local connector's commands start and, with sshd, the ``HOME`` the
  provider gives SSH sessions. So ``nesting_host = "unix:nesting.sock"``
  reaches it in both modes (:data:`NESTING_HOST`); the sandbox's path must
  leave room for it (a unix socket path has at most 107 bytes: a short
  ``plugin_config.root`` helps);
* the daemon is initialised at start with the VMs' login user (the
  instance's) and the group's client key as the VMs' ``authorized_keys``, so
  the manager reaches the VMs with the instance's own credentials. A manager's
  ``Init`` is then answered ``already initialized`` (taken as success, as with
  GitLab's daemons started with ``-config``): a ``nesting_config`` in
  config.toml is not used by these daemons;
* as root with sshd, the daemon runs as root and hands its 0600 socket to the
  login user (``--socket-owner``), who is the one calling it over SSH;
* the daemon, its VMs and their files live under the sandbox, so deleting the
  instance (or the crash sweep) ends and removes them with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc

from fleetkit._procs import end_process

__all__ = ["NESTING_HOST", "hypervisor_option", "start_daemon", "stop_daemon"]

#: The ``nesting_host`` that reaches an instance's daemon, in both modes.
NESTING_HOST = "unix:nesting.sock"
_SOCKET = "nesting.sock"
_START_TIMEOUT = 30.0
# The daemon deletes its VMs on TERM before it exits.
_STOP_GRACE = 15.0


def hypervisor_option(value: object, bad: Callable[[str, str], None]) -> str | None:
    """``plugin_config.nesting``: a hypervisor name, ``true`` for ``sandbox``,
    ``false`` or absent for none."""
    if value is None or value is False:
        return None
    if value is True:
        return "sandbox"
    if isinstance(value, str) and value.strip():
        return value
    bad("nesting", f'expected a hypervisor name (e.g. "sandbox") or true/false, got {value!r}')
    return None


async def start_daemon(
    sandbox: Path, hypervisor: str, login_user: str, public_key: str | None
) -> anyio.abc.Process:
    """Start the instance's daemon (its socket in ``sandbox``) and return once
    it listens. Raises :class:`OSError` when it exits or does not listen in time."""
    socket = sandbox / _SOCKET
    config = sandbox / "nesting.json"
    # VM directories where their login user can enter them (the daemon's own
    # state dir is private), so each VM's home is its HOME and TMPDIR.
    vms = anyio.Path(sandbox / "vms")
    await vms.mkdir(mode=0o755, exist_ok=True)
    await vms.chmod(0o755)
    settings = {
        "username": login_user,
        "authorized_keys": [public_key] if public_key else [],
    }
    if hypervisor == "sandbox":
        settings["working_directory"] = str(vms)
    await anyio.Path(config).write_text(json.dumps(settings))
    command = [
        sys.executable,
        "-c",
        "import sys; from fleetkit.cli import main; sys.exit(main(sys.argv[1:]))",
        "nesting",
        "serve",
        "--hypervisor",
        hypervisor,
        "--socket",
        str(socket),
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]
    if os.geteuid() == 0 and login_user != "root":
        command += ["--socket-owner", login_user]
    log_file = await anyio.open_file(sandbox / "nesting.log", "ab")
    try:
        process = await anyio.open_process(
            command,
            cwd=sandbox,
            stdin=subprocess.DEVNULL,
            stdout=log_file.wrapped,
            stderr=log_file.wrapped,
            # Part of the instance, not of the manager's session: a Ctrl-C of
            # the manager reaches it through the instance's deletion only.
            start_new_session=True,
        )
    finally:
        await log_file.aclose()
    with anyio.move_on_after(_START_TIMEOUT):
        while process.returncode is None:
            if await anyio.Path(socket).is_socket():
                return process
            await anyio.sleep(0.05)
    await end_process(process, grace=1.0)
    tail = (await anyio.Path(sandbox / "nesting.log").read_text(errors="replace"))[-300:]
    raise OSError(f"the nesting daemon did not start ({tail.strip() or 'no output'})")


async def stop_daemon(process: anyio.abc.Process) -> None:
    """End the daemon (TERM: it deletes its VMs first), KILL after a grace period."""
    await end_process(process, grace=_STOP_GRACE)
