"""The ``sandbox`` hypervisor: each "VM" is a directory and an OpenSSH sshd of its own.

**It isolates nothing.** A job in a sandbox VM runs as an ordinary user of the
host, sees the host's file system, processes and network, and can reach the
other VMs. It exists for development, tests and demos of the nesting flow
(create, connect, run, delete, stomp) on any Linux machine with OpenSSH; for
isolation use a hypervisor that runs real VMs (``qemu``).

A VM ``vm-...`` made from image ``NAME`` is:

* ``WORKDIR/vm-.../home/``: a copy of the image directory
  ``IMAGE_DIRECTORY/NAME`` (the image ``default`` is an empty directory unless
  the image directory has one), owned by the login user; sessions get it as
  ``HOME`` and ``TMPDIR`` when the login user can reach it;
* an sshd (:class:`fleetkit._sshd.SSHDaemon`) on ``ADDRESS`` and a free port,
  with a host key generated for this VM (reported as :attr:`VM.host_key`, so
  the manager pins it) and the keys of ``authorized_keys`` (config) plus the
  image's own ``authorized_keys`` file, for the login user.

Config (the JSON of ``Init``; every key optional): ``image_directory`` (where
images are), ``working_directory`` (where VM directories go; default: the
hypervisor's state dir), ``authorized_keys`` (list of public key lines),
``username`` (one login user for every VM; default: as root, a user of its
own per VM, else the daemon's user), ``address`` (a loopback address,
default ``127.0.0.1``), ``max_vms`` (default 16).

As root with no ``username``, each VM gets a login user of its own,
``fleetkit-vN`` (made once, marked as fleetkit's by its GECOS field, leased
machine-wide so two daemons never share one; the local provider's scheme,
:mod:`fleetkit.provider._local_isolation`). Its home is 0700 and owned by it,
so a VM's jobs cannot read another VM's files or signal its processes; at
delete every process of that user is ended, whatever session it made. The
daemon reports the user to the manager (gRPC trailing metadata), which logs
in as it. That is Unix-user separation on one kernel, still not a VM: the
file system, network and kernel are shared.

Each VM is recorded in ``STATE_DIR/vms/ID.json`` (its directory, later its
sshd pid) before anything of it exists, so :meth:`SandboxHypervisor.recover`
finds what a killed daemon left, even mid-create: it ends each VM's sshd (the
processes whose arguments name that VM's sshd config, read from ``/proc``)
with its whole tree, sessions included, and removes the directories.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from fleetkit._procs import end_tree, exists
from fleetkit._sshd import (
    SSHDaemon,
    SSHDaemonError,
    ensure_login_user,
    reachable_by_others,
    sshd_available,
)
from fleetkit.errors import (
    ConfigError,
    HypervisorError,
    HypervisorFull,
    Problem,
    UnknownImage,
)
from fleetkit.nesting._protocol import VM
from fleetkit.provider._local_isolation import (
    VM_USERS,
    end_user_processes,
    is_pool_user,
    lease_vm_user,
    vm_user,
)

if TYPE_CHECKING:
    from fleetkit.nesting._protocol import HypervisorFactory

__all__ = ["SandboxHypervisor"]

log = logging.getLogger(__name__)

SSHD_PATH = "/usr/sbin/sshd"
DEFAULT_IMAGE = "default"
_DEFAULT_MAX_VMS = 16
_SWEEP_GRACE = 2.0
_KEYS = frozenset(
    {"image_directory", "working_directory", "authorized_keys", "username", "address", "max_vms"}
)
# An image name is one or more path segments of these characters; no segment
# starts with a dot, so no "..", no hidden files, nothing outside the directory.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]*")
_KEY_LINE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?")


@attrs.frozen(kw_only=True)
class _Settings:
    image_directory: Path | None
    working_directory: Path | None
    authorized_keys: tuple[str, ...]
    username: str | None
    address: str
    max_vms: int


@attrs.define(eq=False)
class _SandboxVM:
    vm: VM
    directory: Path
    sshd: SSHDaemon
    user: _VMUser | None = None


@attrs.define(eq=False)
class _VMUser:
    """A ``fleetkit-vN`` user leased for one VM (``lease`` held while it lives)."""

    name: str
    lease: socket.socket


def _settings(config: Mapping[str, Any]) -> _Settings:
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(f"config.{key}", message))

    for key in sorted(set(config) - _KEYS):
        bad(key, f"unknown key; the sandbox hypervisor takes {', '.join(sorted(_KEYS))}")
    paths: dict[str, Path | None] = {}
    for key in ("image_directory", "working_directory"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            bad(key, f"expected an absolute directory path, got {value!r}")
            value = None
        paths[key] = Path(value) if value else None
    keys = config.get("authorized_keys", [])
    if not isinstance(keys, list) or not all(
        isinstance(k, str) and _KEY_LINE.fullmatch(k.strip()) for k in keys
    ):
        bad(
            "authorized_keys", "expected a list of OpenSSH public key lines ('ssh-ed25519 AAAA...')"
        )
        keys = []
    username = config.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        bad("username", f"expected a user name, got {username!r}")
        username = None
    address = config.get("address", "127.0.0.1")
    try:
        if not ipaddress.ip_address(address).is_loopback:
            bad(
                "address",
                f"expected a loopback address (the sandbox listens on no network), got {address!r}",
            )
    except (TypeError, ValueError):
        bad("address", f"expected an IP address, got {address!r}")
    max_vms = config.get("max_vms", _DEFAULT_MAX_VMS)
    if not isinstance(max_vms, int) or isinstance(max_vms, bool) or max_vms < 1:
        bad("max_vms", f"expected a positive integer, got {max_vms!r}")
        max_vms = _DEFAULT_MAX_VMS
    if problems:
        raise ConfigError(problems)
    return _Settings(
        image_directory=paths["image_directory"],
        working_directory=paths["working_directory"],
        authorized_keys=tuple(k.strip() for k in keys),
        username=username,
        address=str(address),
        max_vms=max_vms,
    )


class SandboxHypervisor:
    """VMs that are directories with an sshd each, for development and tests.
    **No isolation at all**; see the module docstring for layout and config."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = Path(state_dir)
        self._records = self._state_dir / "vms"
        self._settings: _Settings | None = None
        self._login_user = ""
        # As root with no configured username: a login user per VM.
        self._user_per_vm = False
        self._vms: dict[str, _SandboxVM] = {}
        self._starting = 0  # creates under way, counted against max_vms

    def __repr__(self) -> str:
        return f"<SandboxHypervisor state_dir={str(self._state_dir)!r} vms={len(self._vms)}>"

    async def recover(self) -> list[str]:
        """End the sshds a killed daemon left and remove their directories."""
        records = await anyio.to_thread.run_sync(_read_records, self._records)
        for vm_id, record in records.items():
            directory = Path(record.get("directory", ""))
            # Found by the config path in their arguments, not by the recorded
            # pid: that may be missing (killed mid-create) or reused since.
            pids = await anyio.to_thread.run_sync(_sshds_of, directory)
            await end_tree(pids, grace=_SWEEP_GRACE)
            user = record.get("user")
            if isinstance(user, str):
                await anyio.to_thread.run_sync(_end_leftover_user, user)
            await anyio.to_thread.run_sync(_remove_vm_files, self._records, vm_id, directory)
        if records:
            log.warning(
                "sandbox: removed %d VM(s) a previous daemon left: %s",
                len(records),
                ", ".join(records),
            )
        return list(records)

    async def init(self, config: Mapping[str, Any]) -> None:
        """Check the config; find the login user (see the module docstring)."""
        settings = _settings(config)
        if not sshd_available(SSHD_PATH):
            raise HypervisorError(
                f"the sandbox hypervisor needs OpenSSH: {SSHD_PATH} or ssh-keygen is missing"
            )
        if settings.image_directory is not None and not settings.image_directory.is_dir():
            raise ConfigError(
                [
                    Problem(
                        "config.image_directory", f"{settings.image_directory} is not a directory"
                    )
                ]
            )
        self._user_per_vm = settings.username is None and os.geteuid() == 0
        try:
            login_user = settings.username
            if self._user_per_vm:
                login_user = "root"  # unused: each VM leases its own
            elif login_user is None:
                login_user = await anyio.to_thread.run_sync(ensure_login_user)
            pwd.getpwnam(login_user)
            self._login_user = login_user
        except (KeyError, SSHDaemonError) as exc:
            raise ConfigError(
                [Problem("config.username", f"no usable login user: {exc}")]
            ) from None
        await anyio.to_thread.run_sync(_make_dir, self._records)
        self._settings = settings

    def _image(self, settings: _Settings, name: str) -> Path | None:
        segments = name.split("/")
        if not all(_SEGMENT.fullmatch(s) for s in segments):
            raise UnknownImage(f"image name {name!r} is not a valid sandbox image name")
        if settings.image_directory is not None:
            candidate = settings.image_directory.joinpath(*segments)
            # No part may be a symlink: a link inside the image directory
            # would make any directory of the host an image.
            parts = [
                settings.image_directory.joinpath(*segments[:n])
                for n in range(1, len(segments) + 1)
            ]
            if candidate.is_dir() and not any(p.is_symlink() for p in parts):
                return candidate
        if name == DEFAULT_IMAGE:
            return None
        where = settings.image_directory or "(no image_directory configured)"
        raise UnknownImage(f"no sandbox image {name!r} in {where}")

    async def create(self, vm_id: str, image: str) -> VM:
        """Copy the image into a new VM directory and start its sshd."""
        settings = self._ready()
        source = self._image(settings, image)
        if len(self._vms) + self._starting >= settings.max_vms:
            raise HypervisorFull(f"the sandbox holds its maximum of {settings.max_vms} VMs")
        self._starting += 1
        try:
            return await self._start(settings, vm_id, image, source)
        finally:
            self._starting -= 1

    async def _start(self, settings: _Settings, vm_id: str, image: str, source: Path | None) -> VM:
        base = settings.working_directory or self._state_dir / "work"
        directory = base / vm_id
        keys = list(settings.authorized_keys)
        user: _VMUser | None = None
        login_user = self._login_user
        try:
            # Recorded before anything exists, so that recover() finds every
            # step of a create that a killed daemon left half done.
            await anyio.to_thread.run_sync(_write_record, self._records, vm_id, directory, None)
            if self._user_per_vm:
                user = await anyio.to_thread.run_sync(_lease_user)
                login_user = user.name
                await anyio.to_thread.run_sync(
                    _write_record, self._records, vm_id, directory, None, login_user
                )
            home = await anyio.to_thread.run_sync(_make_home, directory, source, login_user)
            keys += await anyio.to_thread.run_sync(_image_keys, source)
            env = {"SetEnv": f'"HOME={home}" "TMPDIR={home}"'} if home is not None else {}
            sshd = await SSHDaemon.start(
                directory / "sshd",
                address=settings.address,
                login_user=login_user,
                authorized_keys=keys,
                extra_config=env,
                sshd_path=SSHD_PATH,
            )
        except (OSError, SSHDaemonError, HypervisorFull) as exc:
            if user is not None:
                await anyio.to_thread.run_sync(_release_user, user)
            await anyio.to_thread.run_sync(_remove_vm_files, self._records, vm_id, directory)
            if isinstance(exc, HypervisorFull):
                raise
            raise HypervisorError(
                f"sandbox VM {vm_id} from {image!r} failed to start: {exc}"
            ) from exc
        await anyio.to_thread.run_sync(
            _write_record, self._records, vm_id, directory, sshd.pid, login_user
        )
        vm = VM(
            id=vm_id,
            image=image,
            addr=f"{_host(sshd.address)}:{sshd.port}",
            host_key=sshd.host_public_key,
            username=login_user if user is not None else None,
        )
        self._vms[vm_id] = _SandboxVM(vm=vm, directory=directory, sshd=sshd, user=user)
        return vm

    async def delete(self, vm_id: str) -> None:
        """Stop the VM's sshd with every session under it; remove its directory."""
        sandbox = self._vms.pop(vm_id, None)
        if sandbox is None:
            return
        with anyio.CancelScope(shield=True):
            await sandbox.sshd.stop()
            if sandbox.user is not None:
                # What the VM's jobs left, in any session or group: that user
                # is only ever this VM's.
                await anyio.to_thread.run_sync(_release_user, sandbox.user)
            await anyio.to_thread.run_sync(
                _remove_vm_files, self._records, vm_id, sandbox.directory
            )

    async def list(self) -> list[VM]:
        """The VMs whose sshd is running."""
        return [s.vm for s in self._vms.values() if s.sshd.alive() and exists(s.sshd.pid)]

    async def shutdown(self) -> None:
        """Delete any VM still held (the daemon normally has). The daemon
        bounds and shields this call."""
        for vm_id in list(self._vms):
            await self.delete(vm_id)
        with contextlib.suppress(OSError):
            (self._state_dir / "work").rmdir()
        with contextlib.suppress(OSError):
            self._records.rmdir()

    def _ready(self) -> _Settings:
        if self._settings is None:
            raise HypervisorError("the sandbox hypervisor was not initialized")
        return self._settings


if TYPE_CHECKING:
    _check_factory: HypervisorFactory = SandboxHypervisor


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# --- disk and /proc (blocking; called through anyio.to_thread) ------------------


def _make_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _make_home(directory: Path, source: Path | None, login_user: str) -> Path | None:
    """Make the VM directory and its ``home`` (a copy of the image, owned by the
    login user); return ``home`` when that user can reach it."""
    directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    directory.mkdir(mode=0o711)
    home = directory / "home"
    if source is None:
        home.mkdir(mode=0o700)
    else:
        shutil.copytree(source, home, symlinks=True)
        home.chmod(0o700)
    entry = pwd.getpwnam(login_user)
    if os.geteuid() == 0 and entry.pw_uid != 0:
        for path in [home, *home.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    # The login user must traverse down to home; only directories made here
    # (0711: enter, not list) are opened up, and only when the rest allows it.
    return home.absolute() if reachable_by_others(directory.absolute()) else None


def _image_keys(source: Path | None) -> list[str]:
    if source is None:
        return []
    keys = source / "authorized_keys"
    if not keys.is_file():
        return []
    return [
        line.strip() for line in keys.read_text().splitlines() if _KEY_LINE.fullmatch(line.strip())
    ]


def _lease_user() -> _VMUser:
    """Lease the first ``fleetkit-vN`` no other VM (of any daemon) holds, make it
    if missing, and end whatever a VM that had it before left running."""
    for number in range(1, VM_USERS + 1):
        lease = lease_vm_user(number)
        if lease is None:
            continue
        try:
            name = vm_user(number)
            end_user_processes(name)
        except BaseException:
            lease.close()
            raise
        return _VMUser(name=name, lease=lease)
    raise HypervisorFull(f"all {VM_USERS} sandbox VM users are in use on this machine")


def _release_user(user: _VMUser) -> None:
    try:
        end_user_processes(user.name)
    finally:
        user.lease.close()


def _end_leftover_user(name: str) -> None:
    """End what a killed daemon's VM user left, unless another daemon leased
    that user since (its VM's processes are not ours to end)."""
    match = re.fullmatch(r"fleetkit-v(\d+)", name)
    if match is None or not is_pool_user(name):
        return
    lease = lease_vm_user(int(match.group(1)))
    if lease is None:
        return
    try:
        end_user_processes(name)
    finally:
        lease.close()


def _write_record(
    records: Path, vm_id: str, directory: Path, pid: int | None, user: str | None = None
) -> None:
    path = records / f"{vm_id}.json"
    temporary = path.with_suffix(".tmp")
    record = {"id": vm_id, "directory": str(directory), "pid": pid, "user": user}
    temporary.write_text(json.dumps(record) + "\n")
    temporary.replace(path)


def _read_records(records: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    if not records.is_dir():
        return found
    for path in sorted(records.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        found[path.stem] = record if isinstance(record, dict) else {}
    return found


def _sshds_of(directory: Path) -> list[int]:
    """This user's processes started with the sshd config of the VM in
    ``directory`` (sshd retitles its listener, but keeps ``-f CONFIG`` in it).
    Another user's process naming that path is never ours to signal."""
    if not directory.is_absolute():
        return []
    config = os.fsencode(directory / "sshd" / "sshd_config")
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if config in entry.read_bytes().replace(b"\0", b" ").split() and _mine(entry.parent):
                found.append(int(entry.parent.name))
        except (OSError, ValueError):
            continue  # ended meanwhile
    return found


def _mine(proc: Path) -> bool:
    """Whether the process runs as this user (real and effective uid, from
    ``status``: a process that changed uid is not dumpable, and its /proc
    entry then belongs to root whoever it runs as)."""
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            real, effective = (int(uid) for uid in line.split()[1:3])
            return real == effective == os.geteuid()
    return False


def _remove_vm_files(records: Path, vm_id: str, directory: Path) -> None:
    # Only a directory named after the VM is removed: a corrupt record must
    # not turn into an rmtree of something else.
    if directory.is_absolute() and directory.name == vm_id:
        _remove_side_dir(directory)
        shutil.rmtree(directory, ignore_errors=True)
    (records / f"{vm_id}.json").unlink(missing_ok=True)
    (records / f"{vm_id}.tmp").unlink(missing_ok=True)


def _remove_side_dir(directory: Path) -> None:
    """The authorized_keys side dir :class:`SSHDaemon` made outside an unreachable
    workdir (its ``stop`` removes it, a killed daemon does not)."""
    config = directory / "sshd" / "sshd_config"
    with contextlib.suppress(OSError):
        for line in config.read_text().splitlines():
            key, _, value = line.partition(" ")
            side = Path(value.strip()).parent
            if key == "AuthorizedKeysFile" and side.name.startswith("fleetkit-sshd-"):
                shutil.rmtree(side, ignore_errors=True)
