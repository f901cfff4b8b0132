"""The local provider: instances on this machine, so fleetkit runs without a cloud.

Each instance is a sandbox directory plus a process of its own:

* with OpenSSH's ``/usr/sbin/sshd`` installed (the default then), an sshd on its
  own loopback address ``127.0.0.N`` (N from 2 upward) and a free port, with its
  own host key (``ConnectInfo.host_key``) and the client key this group
  generates in :meth:`LocalInstanceGroup.init` in its ``authorized_keys``
  (dynamic credentials, as cloud plugins provision them);
* without sshd, a keeper process (``sleep infinity``) whose working directory is
  the sandbox. ``ConnectInfo.protocol`` is then ``"local"`` and the address is
  the sandbox path, for :class:`fleetkit.connector.local.LocalConnector`.

Theory of operation
-------------------
Layout on disk: ``ROOT/OWNER/INSTANCE_ID/`` holds ``instance.json`` (owner,
pid, address) and, in sshd mode, ``sshd/`` (config, host key, log) and
``work/`` (owned by the login user). ``ROOT/OWNER/.lock`` is ``flock``-ed from
``init`` to ``shutdown``: the kernel drops it when the manager dies, so a group
that gets the lock knows that everything under ``ROOT/OWNER`` is left over from
a dead manager and sweeps it: processes whose command line or working directory
lies under ``ROOT/OWNER`` (read from ``/proc``: a pid is only signalled after
that check) and their descendants are ended, then the directories removed.
A second live group with the same root and owner is refused instead.

Starting is synchronous within :meth:`~LocalInstanceGroup.increase`: it starts
the accepted instances concurrently in a task group it owns and returns when
each has started or failed, so no task outlives a verb. Each start runs under a
shield (sshd's own start-up timeout bounds it), so cancelling ``increase``
cannot orphan a process. ``update`` and ``decrease`` may run from other tasks
meanwhile: an instance being started reports ``creating``, and a ``decrease`` of
it marks it; the starting task then stops it as soon as its process is up.
``boot_delay`` mimics a cloud: a started instance reports ``creating`` until
that long after the ``increase``.

States only move forward: ``creating -> running -> deleting -> deleted``. An
instance whose process died is reported ``deleted`` (once, then forgotten) and
its sandbox removed. Unlike cloud providers, :meth:`~LocalInstanceGroup.shutdown`
stops the instances still running: a local instance cannot outlive its manager
usefully, so after ``shutdown`` nothing of this group is left on disk or in the
process table, whatever the fleet's settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, Self

import anyio
import anyio.abc
import attrs

from fleetkit import __version__, _cgroup
from fleetkit._files import MAX_KEY_BYTES, read_bounded
from fleetkit._owned import UnsafePath, open_own_file, own_dir, write_own_file
from fleetkit._procs import end_detached, end_tree, exists, spawn_detached
from fleetkit._sshd import (
    SSHDaemon,
    SSHDaemonError,
    generate_keypair,
    reachable_by_others,
    sshd_available,
)
from fleetkit._text import key_path
from fleetkit.config import parse_duration
from fleetkit.errors import ConfigError, InstanceNotFound, Problem, ProviderError, RetryLater
from fleetkit.model import ConnectInfo, ConnectorConfig, ProviderState, mask_secret
from fleetkit.provider import _local_nesting
from fleetkit.provider._local_isolation import (
    end_user_processes,
    is_pool_user,
    lease_host,
    pool_user,
    port_free,
)
from fleetkit.provider._protocol import InstanceGroupFactory, InstanceStatus, ProviderInfo

if TYPE_CHECKING:
    from fleetkit.provider._protocol import InstanceGroup

__all__ = ["LocalInstanceGroup"]

log = logging.getLogger(__name__)

SSHD_PATH = "/usr/sbin/sshd"
# 127.0.0.1 is the host's own; .2 to .254 give one address per instance.
_FIRST_HOST = 2
_LAST_HOST = 254
_MAX_INSTANCES = _LAST_HOST - _FIRST_HOST + 1
_DEFAULT_MAX = 16
_STOP_GRACE = 5.0
_SWEEP_GRACE = 2.0
_RECORD = "instance.json"
#: What a manager that shuts down cleanly tells its watchdog before leaving.
_WATCHDOG_BYE = b"shut down\n"
_SIDE_WORK = "fleetkit-work-"
_PROC = Path("/proc/self")
_LOCK = ".lock"
_KNOWN_KEYS = frozenset({"root", "max_instances", "boot_delay", "use_sshd", "nesting"})
# Go's GOARCH names, which ConnectInfo.arch uses (fleeting's convention).
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class _Machine(Protocol):
    """The process that is an instance: an sshd or a keeper."""

    pid: int

    def alive(self) -> bool: ...

    async def stop(self) -> None: ...


def _alive(machine: _Machine) -> bool:
    # The child watcher learns of an exit on its own schedule; /proc knows at
    # once (a dead child not yet reaped is a zombie, which exists() treats as gone).
    return machine.alive() and (exists(machine.pid) or not _PROC.exists())


class _Keeper:
    """The instance's process when there is no sshd: ``sleep infinity`` in the sandbox."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid
        self._stopped = False

    @classmethod
    async def start(cls, sandbox: Path, cgroup: Path | None) -> _Keeper:
        sleep = shutil.which("sleep") or "/bin/sleep"
        # An instance outlives a manager's Ctrl-C, as a cloud VM would.
        process = spawn_detached(
            [sleep, "infinity"],
            cwd=sandbox,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if cgroup is not None:
            await anyio.to_thread.run_sync(_cgroup.move, cgroup, process.pid)
        return cls(process)

    def alive(self) -> bool:
        return self._process.poll() is None

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await end_detached(self._process, grace=_STOP_GRACE)


@attrs.define(eq=False)
class _Instance:
    id: str
    host: int  # N of 127.0.0.N (sshd mode)
    sandbox: Path
    state: ProviderState
    boot_until: float
    machine: _Machine | None = None
    nesting: anyio.abc.Process | None = None
    # Who jobs run as, the directory that is theirs, and the lease on `host`.
    user: str | None = None
    work: Path | None = None
    lease: socket.socket | None = None
    cgroup: Path | None = None
    starting: bool = True
    delete_requested: bool = False
    removing: bool = False


@attrs.frozen(kw_only=True)
class _Settings:
    root: Path
    max_instances: int
    boot_delay: float
    use_sshd: bool
    nesting: str | None = None


@attrs.define
class _Session:
    """What ``init`` prepared and ``shutdown`` releases."""

    lock: IO[bytes]
    owner_dir: Path
    # None: each instance gets a user of its own (root, no configured username).
    login_user: str | None
    private_key: bytes | None = attrs.field(repr=mask_secret)
    public_key: str | None
    # Where instance cgroups go (None: the machine offers none to this process).
    cgroup_base: Path | None = None
    watchdog: subprocess.Popen[bytes] | None = None


def _slug(owner: str | None) -> str:
    """The owner as a directory name; distinct owners never share one."""
    if owner is None:
        return "default"
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)[:64]
    if slug != owner or slug in {"", ".", "..", "default"}:
        slug = f"{slug}-{hashlib.sha256(owner.encode()).hexdigest()[:8]}"
    return slug


class LocalInstanceGroup:
    """An instance group whose instances are sandboxes (and sshds) on this machine.

    Build it with :meth:`from_config` (or :func:`fleetkit.provider.load` with
    plugin ``"local"``), then ``await init()``. See the module docstring for
    the layout on disk, the crash sweep and how starting interacts with the
    other verbs.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None = None,
        max_instances: int = _DEFAULT_MAX,
        boot_delay: float = 0.0,
        use_sshd: bool | None = None,
        connector_config: ConnectorConfig | None = None,
        owner: str | None = None,
        nesting: str | None = None,
    ) -> None:
        """Prefer :meth:`from_config`, which validates its input; this
        constructor takes the values already typed. ``use_sshd=None`` means
        "when ``/usr/sbin/sshd`` is installed". ``nesting`` names the
        hypervisor of a nesting daemon started in each instance (see
        :mod:`fleetkit.provider._local_nesting`)."""
        base = Path(root).expanduser() if root is not None else Path(tempfile.gettempdir())
        if root is None:
            base = base / f"fleetkit-local-{_slug(owner)}"
        self._settings = _Settings(
            root=base.absolute(),
            max_instances=max_instances,
            boot_delay=boot_delay,
            use_sshd=sshd_available(SSHD_PATH) if use_sshd is None else use_sshd,
            nesting=nesting,
        )
        self._connector = connector_config or ConnectorConfig()
        self._owner = owner
        self._session: _Session | None = None
        self._closed = False
        self._instances: dict[str, _Instance] = {}

    @property
    def protocol(self) -> str:
        """``ConnectInfo.protocol`` of this group's instances: ``"ssh"`` with
        sshd, ``"local"`` for plain sandboxes."""
        return "ssh" if self._settings.use_sshd else "local"

    def __repr__(self) -> str:
        mode = "sshd" if self._settings.use_sshd else "sandbox"
        return (
            f"<LocalInstanceGroup owner={self._owner!r} root={str(self._settings.root)!r} "
            f"mode={mode} instances={len(self._instances)}/{self._settings.max_instances}>"
        )

    @classmethod
    def from_config(
        cls,
        plugin_config: Mapping[str, Any],
        connector_config: ConnectorConfig,
        *,
        owner: str | None = None,
    ) -> Self:
        """Validate ``plugin_config`` (keys ``root``, ``max_instances``,
        ``boot_delay``, ``use_sshd``, ``nesting``) and build the group.

        Raises :class:`~fleetkit.errors.ConfigError` naming each bad key as
        ``plugin_config.<key>``.
        """
        problems: list[Problem] = []

        def bad(key: str, message: str) -> None:
            problems.append(Problem(key_path("plugin_config", key), message))

        for key in sorted(set(plugin_config) - _KNOWN_KEYS):
            bad(key, f"unknown key; the local provider takes {', '.join(sorted(_KNOWN_KEYS))}")
        root = plugin_config.get("root")
        if root is not None and (not isinstance(root, str) or not root):
            bad("root", f"expected a directory path, got {root!r}")
        max_instances = plugin_config.get("max_instances", _DEFAULT_MAX)
        if (
            not isinstance(max_instances, int)
            or isinstance(max_instances, bool)
            or not 1 <= max_instances <= _MAX_INSTANCES
        ):
            bad("max_instances", f"expected an integer 1..{_MAX_INSTANCES}, got {max_instances!r}")
            max_instances = _DEFAULT_MAX
        boot_delay = _boot_delay(plugin_config.get("boot_delay", 0), bad)
        use_sshd = plugin_config.get("use_sshd")
        if use_sshd is not None and not isinstance(use_sshd, bool):
            bad("use_sshd", f"expected true or false, got {use_sshd!r}")
            use_sshd = None
        elif use_sshd and not sshd_available(SSHD_PATH):
            bad("use_sshd", f"is true but {SSHD_PATH} or ssh-keygen is not installed")
        nesting = _local_nesting.hypervisor_option(plugin_config.get("nesting"), bad)
        if problems:
            raise ConfigError(problems)
        return cls(
            root=root,
            max_instances=max_instances,
            boot_delay=boot_delay,
            use_sshd=use_sshd,
            connector_config=connector_config,
            owner=owner,
            nesting=nesting,
        )

    # --- the verbs ------------------------------------------------------

    async def init(self) -> ProviderInfo:
        """Take the owner's lock, sweep a dead manager's leftovers, make the client key.

        Raises :class:`~fleetkit.errors.ProviderError` when another live group
        uses the same root and owner, or the root cannot be created.
        """
        if self._session is not None or self._closed:
            raise ProviderError(f"{self!r}: init() may be called once, before the other verbs")
        if self._settings.use_sshd and not sshd_available(SSHD_PATH):
            raise ProviderError(f"{self!r}: use_sshd is set but {SSHD_PATH} is not installed")
        owner_dir = self._settings.root / _slug(self._owner)
        login_user = await anyio.to_thread.run_sync(self._login_user)
        lock = await anyio.to_thread.run_sync(_take_lock, owner_dir, self._owner)
        watchdog = None
        try:
            await _sweep(owner_dir)
            private_key, public_key = await self._credentials(owner_dir)
            watchdog = _start_watchdog(self._settings.root, owner_dir)
        except BaseException:
            if watchdog is not None:
                await _dismiss(watchdog)
            lock.close()
            raise
        own = _cgroup.own_cgroup() if _cgroup.available() else None
        self._session = _Session(
            lock=lock,
            owner_dir=owner_dir,
            login_user=login_user,
            private_key=private_key,
            public_key=public_key,
            # One per root and owner: groups of one owner under other roots differ.
            cgroup_base=own / _cgroup_name(owner_dir) if own else None,
            watchdog=watchdog,
        )
        if not self._settings.use_sshd:
            # Said once per group: a missing sshd is a degraded setup, a
            # configured use_sshd = false is a choice.
            missing = not sshd_available(SSHD_PATH)
            log.log(
                logging.WARNING if missing else logging.INFO,
                "local provider %s: no sshd in use (%s); instances are plain sandbox "
                "directories reached through fleetkit.connector.local.LocalConnector",
                owner_dir,
                f"{SSHD_PATH} missing" if missing else "use_sshd = false",
            )
        return ProviderInfo(
            id=f"local/{_slug(self._owner)}",
            max_size=self._settings.max_instances,
            version=__version__,
            capabilities=frozenset({"heartbeat"}),
        )

    async def update(self) -> list[InstanceStatus]:
        """Report every instance once; a dead process makes its instance ``deleted``.

        A ``deleted`` instance is reported once and then forgotten.
        """
        self._live()
        now = anyio.current_time()
        statuses: list[InstanceStatus] = []
        for instance in list(self._instances.values()):
            if instance.state in (ProviderState.CREATING, ProviderState.RUNNING):
                machine = instance.machine
                if machine is not None and not _alive(machine):
                    log.warning("local instance %s: its process died; deleting", instance.id)
                    await self._remove(instance)
                elif machine is not None and now >= instance.boot_until:
                    instance.state = ProviderState.RUNNING
            statuses.append(InstanceStatus(id=instance.id, state=instance.state, owner=self._owner))
            if instance.state is ProviderState.DELETED:
                self._instances.pop(instance.id, None)
        return statuses

    async def increase(self, n: int) -> int:
        """Start up to ``n`` instances (fewer when ``max_instances`` is near).

        Returns when each accepted instance has started or failed; returns how
        many started. Raises :class:`~fleetkit.errors.RetryLater` when room
        existed but none could be started.
        """
        session = self._live()
        in_use = sum(i.state is not ProviderState.DELETED for i in self._instances.values())
        count = min(n, self._settings.max_instances - in_use)
        if count <= 0:
            return 0
        boot_until = anyio.current_time() + self._settings.boot_delay
        batch = [
            instance
            for _ in range(count)
            if (instance := self._reserve(session, boot_until)) is not None
        ]
        if not batch:
            raise RetryLater(
                "local provider: every loopback address 127.0.0.2-254 is held by another "
                "fleet on this machine (or its protocol_port is taken there)"
            )
        errors: list[str] = []
        async with anyio.create_task_group() as tg:
            for instance in batch:
                tg.start_soon(self._start, session, instance, errors)
        started = sum(i.machine is not None for i in batch)
        if started == 0:
            raise RetryLater(f"local provider started none of {count} instance(s): {errors[0]}")
        return started

    async def decrease(self, ids: Sequence[str]) -> list[str]:
        """Stop the instances' processes and remove their sandboxes; return every id.

        Unknown ids count as already removed. An instance still starting is
        stopped by the starting task as soon as its process is up.
        """
        self._live()
        to_stop: list[_Instance] = []
        for instance_id in ids:
            instance = self._instances.get(instance_id)
            if instance is None or instance.state in (
                ProviderState.DELETING,
                ProviderState.DELETED,
            ):
                continue
            instance.state = ProviderState.DELETING
            instance.delete_requested = True
            if not instance.starting:
                to_stop.append(instance)
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for instance in to_stop:
                    tg.start_soon(self._remove, instance)
        return list(ids)

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        """How to reach the instance: SSH on its loopback address, or its sandbox path."""
        session = self._live()
        instance = self._find(instance_id)
        machine = instance.machine
        if machine is None:
            raise RetryLater(f"local instance {instance_id!r} is still starting")
        cc = self._connector
        common: dict[str, Any] = {
            "id": instance_id,
            "os": cc.os or "linux",
            "arch": cc.arch or _GOARCH.get(platform.machine().lower(), platform.machine()),
            "password": cc.password,
            "use_static_credentials": cc.use_static_credentials,
            "keepalive": cc.keepalive,
            "timeout": cc.timeout,
        }
        if isinstance(machine, SSHDaemon):
            return ConnectInfo(
                internal_addr=machine.address,
                protocol="ssh",
                protocol_port=machine.port,
                username=instance.user,
                key=session.private_key,
                host_key=machine.host_public_key,
                **common,
            )
        return ConnectInfo(
            internal_addr=str(instance.work),
            protocol="local",
            username=instance.user,
            # For the nesting daemon's VMs (the local connector needs none).
            key=session.private_key,
            **common,
        )

    async def heartbeat(self, instance_id: str) -> None:
        """Raise :class:`~fleetkit.errors.InstanceNotFound` unless the instance's process lives."""
        self._live()
        instance = self._find(instance_id)
        if instance.machine is not None and not _alive(instance.machine):
            raise InstanceNotFound(instance_id, f"local instance {instance_id!r}: process died")

    async def shutdown(self) -> None:
        """Stop the instances still running, release the owner lock, forget the client key.

        Idempotent. Unlike a cloud's, a local instance cannot outlive its
        manager usefully (the next ``init`` with this root and owner would only
        sweep it, warning that a manager did not shut down), so a clean
        shutdown ends them whatever the fleet's ``delete_instances_on_shutdown``.
        """
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is None:
            return
        session.private_key = None
        with anyio.CancelScope(shield=True):
            alive = [i for i in self._instances.values() if i.state is not ProviderState.DELETED]
            if alive:
                log.info(
                    "local provider %s: shutting down; stopping %d instance(s) still running",
                    session.owner_dir,
                    len(alive),
                )
            async with anyio.create_task_group() as tg:
                for instance in alive:
                    instance.delete_requested = True  # one still starting: its task stops it
                    if not instance.starting:
                        tg.start_soon(self._remove, instance)
            await anyio.to_thread.run_sync(
                _release,
                session.lock,
                session.owner_dir,
                self._settings.root,
                all(i.state is ProviderState.DELETED for i in alive),
            )
            if session.cgroup_base is not None:
                with contextlib.suppress(OSError):
                    session.cgroup_base.rmdir()
            if session.watchdog is not None:
                await _dismiss(session.watchdog)

    # --- internals ------------------------------------------------------

    def _live(self) -> _Session:
        if self._closed:
            raise ProviderError(f"{self!r}: already shut down")
        if self._session is None:
            raise ProviderError(f"{self!r}: init() was not called")
        return self._session

    def _find(self, instance_id: str) -> _Instance:
        instance = self._instances.get(instance_id)
        if instance is None or instance.state in (ProviderState.DELETING, ProviderState.DELETED):
            raise InstanceNotFound(instance_id, f"no local instance {instance_id!r}")
        return instance

    def _login_user(self) -> str | None:
        """Who jobs run as: the configured user, else (as root) a user per
        instance (``None`` here), else this process's user. Blocking."""
        me = getpass.getuser()
        wanted = self._connector.username
        if wanted is None:
            return None if os.geteuid() == 0 else me
        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            raise ProviderError(
                f"{self!r}: connector_config.username {wanted!r} is not a user on this machine"
            ) from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise ProviderError(
                f"{self!r}: connector_config.username is {wanted!r} but this process runs as "
                f"{me!r}; running jobs as another user needs root (leave username out to run "
                "them as yourself)"
            )
        if entry.pw_uid == 0:
            log.warning(
                "local provider: jobs run as root, as connector_config.username says; "
                "leave it out to give each instance an unprivileged user of its own"
            )
        return wanted

    async def _credentials(self, owner_dir: Path) -> tuple[bytes | None, str | None]:
        """The client key pair (generated unless static ones are given)."""
        cc = self._connector
        if cc.key_path is not None:
            # GitLab reads key_path at init whatever the credentials, and fails
            # init when it cannot: so does this group, naming the file.
            await anyio.to_thread.run_sync(_readable_key, Path(cc.key_path))
        if not self._settings.use_sshd and not self._settings.nesting:
            # The VMs of the nesting daemons are sshds: they need the key too.
            return None, None
        if cc.key_path is not None:
            # Static: the key to log in with. Dynamic: the key to provision, as a
            # cloud plugin installs the configured key instead of a generated one.
            path = Path(cc.key_path)
            return await anyio.to_thread.run_sync(_static_key, path)
        if cc.use_static_credentials:
            return None, None
        key_path = owner_dir / "client_ed25519"
        return await anyio.to_thread.run_sync(_ephemeral_keypair, key_path)

    def _reserve(self, session: _Session, boot_until: float) -> _Instance | None:
        """A new instance on a host number no other fleet on this machine holds
        (and, with a fixed ``protocol_port``, whose address:port is free);
        ``None`` when there is none."""
        taken = {i.host for i in self._instances.values()}
        port = self._connector.protocol_port
        for host in range(_FIRST_HOST, _LAST_HOST + 1):
            if host in taken or (lease := lease_host(host)) is None:
                continue
            if self._settings.use_sshd and port and not port_free(f"127.0.0.{host}", port):
                lease.close()
                continue
            instance_id = f"local-{uuid.uuid4().hex[:12]}"
            instance = _Instance(
                id=instance_id,
                host=host,
                sandbox=session.owner_dir / instance_id,
                state=ProviderState.CREATING,
                boot_until=boot_until,
                lease=lease,
            )
            self._instances[instance_id] = instance
            return instance
        return None

    async def _start(self, session: _Session, instance: _Instance, errors: list[str]) -> None:
        # Shielded: a cancelled increase must not leave a half-started process
        # that nobody will stop. sshd's own start timeout bounds the wait.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(_make_sandbox, instance, self._owner)
                instance.user = session.login_user
                if instance.user is None:
                    instance.user = await anyio.to_thread.run_sync(pool_user, instance.host)
                    # What a crashed manager's instance left running as this user.
                    await anyio.to_thread.run_sync(end_user_processes, instance.user)
                instance.work = await anyio.to_thread.run_sync(_make_work_dir, instance)
                if session.cgroup_base is not None:
                    try:
                        await anyio.to_thread.run_sync(_make_cgroup, instance, session.cgroup_base)
                    except OSError as exc:
                        # The machine said yes and then no: go on as where it offers none.
                        log.warning(
                            "local provider: no cgroups for instances (%s); jobs that leave "
                            "their session then live until their instance is deleted",
                            exc,
                        )
                        session.cgroup_base = instance.cgroup = None
                instance.machine = await self._launch(session, instance)
                await anyio.to_thread.run_sync(_write_record, instance, self._owner)
            except (OSError, SSHDaemonError) as exc:
                errors.append(f"{instance.id}: {exc}")
                log.error("local instance %s failed to start: %s", instance.id, exc)
                await self._remove(instance)
            finally:
                instance.starting = False
            if instance.delete_requested and instance.state is not ProviderState.DELETED:
                await self._remove(instance)

    async def _launch(self, session: _Session, instance: _Instance) -> _Machine:
        machine = await self._launch_machine(session, instance)
        if self._settings.nesting is not None:
            try:
                assert instance.user is not None
                instance.nesting = await _local_nesting.start_daemon(
                    instance.sandbox,
                    self._settings.nesting,
                    instance.user,
                    session.public_key,
                )
            except BaseException:
                await machine.stop()
                raise
        return machine

    async def _launch_machine(self, session: _Session, instance: _Instance) -> _Machine:
        if not self._settings.use_sshd:
            return await _Keeper.start(instance.sandbox, instance.cgroup)
        assert instance.user is not None
        # The login user's home is "/", so work that falls back to $TMPDIR (job
        # build dirs) would land in a shared /tmp dir that outlives the instance;
        # pointing TMPDIR into the instance's work dir makes it go with the instance.
        env = f'"TMPDIR={instance.work}"'
        if instance.cgroup is not None:
            env += f' "FLEETKIT_CGROUP={instance.cgroup}"'
        if self._settings.nesting is not None:
            # nesting_host "unix:nesting.sock" is taken from HOME; jobs run in
            # the VMs, which have homes of their own.
            env += f' "HOME={instance.sandbox}"'
        extra = {"SetEnv": env}
        return await SSHDaemon.start(
            instance.sandbox / "sshd",
            address=f"127.0.0.{instance.host}",
            port=self._connector.protocol_port or 0,
            login_user=instance.user,
            authorized_keys=[session.public_key] if session.public_key else [],
            extra_config=extra,
            sshd_path=SSHD_PATH,
            cgroup=instance.cgroup,
        )

    async def _remove(self, instance: _Instance) -> None:
        """Stop the instance's process, remove its sandbox, mark it deleted."""
        if instance.removing:
            return  # another task is removing it; its state moves on there
        instance.removing = True
        with anyio.CancelScope(shield=True):
            instance.state = ProviderState.DELETING
            if instance.nesting is not None:
                await _local_nesting.stop_daemon(instance.nesting)
            if instance.machine is not None:
                await instance.machine.stop()
            # Deleting a machine ends everything on it. The machine's stop()
            # ends its own tree; what runs from the sandbox outside that tree is
            # ended here: in sandbox mode every LocalConnector command (children
            # of this process, not of the keeper), and in either mode a process
            # that left its session (setsid and a dead parent, as a daemon does).
            await _end_instance(instance.sandbox, instance.work, instance.user, instance.cgroup)
            await anyio.to_thread.run_sync(_remove_tree, instance.sandbox)
            if instance.lease is not None:
                instance.lease.close()
            instance.state = ProviderState.DELETED


if TYPE_CHECKING:
    _check_factory: InstanceGroupFactory = LocalInstanceGroup
    _check_group: type[InstanceGroup] = LocalInstanceGroup


# --- configuration ------------------------------------------------------------


# inf or 1e300 seconds would make every instance "creating" forever.
_MAX_BOOT_DELAY = 24 * 3600


def _boot_delay(value: object, bad: Callable[[str, str], None]) -> float:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float) and 0 <= value < _MAX_BOOT_DELAY:
        return float(value)
    elif isinstance(value, timedelta) and timedelta(0) <= value < timedelta(days=1):
        return value.total_seconds()
    elif isinstance(value, str):
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            bad("boot_delay", str(exc))
            return 0.0
        if timedelta(0) <= parsed < timedelta(days=1):
            return parsed.total_seconds()
    shown = repr(value) if isinstance(value, str | int | float) else type(value).__name__
    bad("boot_delay", f'expected a Go duration from "0s" to under "24h" like "30s", got {shown}')
    return 0.0


# --- disk and /proc (blocking; called through anyio.to_thread) ------------------


def _dir_mode() -> int:
    # As root, instance users traverse (never list) the directories down to
    # their work dir and sshd's authorized_keys.
    return 0o711 if os.geteuid() == 0 else 0o700


def _take_lock(owner_dir: Path, owner: str | None) -> IO[bytes]:
    try:
        own_dir(owner_dir, _dir_mode(), levels=2)
        fd = open_own_file(owner_dir, _LOCK, os.O_RDWR | os.O_CREAT)
        lock = os.fdopen(fd, "r+b")
    except UnsafePath as exc:
        raise ProviderError(
            f"local provider cannot use {owner_dir}: {exc}; remove it, or set "
            "plugin_config.root to a directory of this user's"
        ) from None
    except OSError as exc:
        raise ProviderError(f"local provider cannot use {owner_dir}: {exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ProviderError(
            f"another live local provider uses {owner_dir} (owner {owner!r}); "
            "give this group another owner or root"
        ) from None
    return lock


def _release(lock: IO[bytes], owner_dir: Path, root: Path, empty: bool) -> None:
    if empty:
        (owner_dir / _LOCK).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            owner_dir.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()  # only when no other owner uses it
    lock.close()


def _make_sandbox(instance: _Instance, owner: str | None) -> None:
    # A fresh directory (mkdir fails on an existing one) in the owner dir,
    # which only this user can write: nothing in it can be planted.
    instance.sandbox.mkdir(mode=_dir_mode())
    instance.sandbox.chmod(_dir_mode())
    _write_record(instance, owner)


def _make_work_dir(instance: _Instance) -> Path:
    """Make the instance user's ``work`` dir (its TMPDIR, and in sandbox mode
    the commands' working directory), mode 0700 and owned by that user.

    It lies in the sandbox when the user can reach the sandbox, else (a
    private root, such as a test's temp dir) in a directory of its own in the
    system temp dir, named in ``instance.json`` and removed with the instance.
    Job build dirs land in it either way, so they go with the instance.
    """
    assert instance.user is not None
    entry = pwd.getpwnam(instance.user)
    base = instance.sandbox
    if entry.pw_uid != os.geteuid() and not reachable_by_others(base):
        base = Path(tempfile.mkdtemp(prefix=f"{_SIDE_WORK}{instance.id}-"))
        base.chmod(0o711)
    work = base / "work"
    work.mkdir(mode=0o700)
    os.chown(work, entry.pw_uid, entry.pw_gid)
    instance.work = work
    _write_record(instance, None)
    return work


def _write_record(instance: _Instance, owner: str | None) -> None:
    machine = instance.machine
    record = {
        "id": instance.id,
        "owner": owner,
        "pid": machine.pid if machine is not None else None,
        "address": getattr(machine, "address", str(instance.sandbox)),
        "port": getattr(machine, "port", None),
        "user": instance.user,
        "work": str(instance.work) if instance.work is not None else None,
        "cgroup": str(instance.cgroup) if instance.cgroup is not None else None,
    }
    text = json.dumps(record, indent=2) + "\n"
    write_own_file(instance.sandbox / _RECORD, text)
    if instance.work is not None and instance.work.parent != instance.sandbox:
        # A copy beside a work dir outside the sandbox, where the local
        # connector reads it (the instance's cgroup).
        write_own_file(instance.work.parent / _RECORD, text)


def _cgroup_name(owner_dir: Path) -> str:
    digest = hashlib.sha256(str(owner_dir).encode()).hexdigest()[:8]
    return f"fleetkit-local-{owner_dir.name}-{digest}"


def _make_cgroup(instance: _Instance, base: Path) -> None:
    """The instance's cgroup, delegated to its user (see :mod:`fleetkit._cgroup`)."""
    assert instance.user is not None
    instance.cgroup = _cgroup.make(base / instance.id, parents=True)
    entry = pwd.getpwnam(instance.user)
    if entry.pw_uid != os.geteuid():
        _cgroup.delegate(instance.cgroup, entry.pw_uid, entry.pw_gid)
    _write_record(instance, None)


def _start_watchdog(root: Path, owner_dir: Path) -> subprocess.Popen[bytes]:
    """A process that sweeps this owner's instances when this one dies without
    shutting down (SIGKILL, a crash): jobs never outlive their manager. It
    reads stdin until EOF; :func:`_dismiss` says goodbye first."""
    watchdog = spawn_detached(
        [sys.executable, "-m", "fleetkit.provider._local_watchdog"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    assert watchdog.stdin is not None
    where = {"root": str(root), "owner_dir": str(owner_dir), "manager": os.getpid()}
    watchdog.stdin.write(json.dumps(where).encode())
    watchdog.stdin.write(b"\n")
    watchdog.stdin.flush()
    return watchdog


async def _dismiss(watchdog: subprocess.Popen[bytes]) -> None:
    with anyio.CancelScope(shield=True):
        assert watchdog.stdin is not None
        with contextlib.suppress(OSError):
            watchdog.stdin.write(_WATCHDOG_BYE)
            watchdog.stdin.close()
        with anyio.move_on_after(_STOP_GRACE):
            await anyio.to_thread.run_sync(watchdog.wait)
        if watchdog.poll() is None:
            await end_detached(watchdog, grace=0)


def _read_record(sandbox: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        fd = open_own_file(sandbox, _RECORD, os.O_RDONLY)
        with os.fdopen(fd, "rb") as file:
            record = json.loads(file.read())
        if isinstance(record, dict):
            return record
    return {}


def _side_work(sandbox: Path) -> Path | None:
    """The work dir's own directory outside the sandbox, if it has one."""
    work = _read_record(sandbox).get("work")
    if not isinstance(work, str):
        return None
    side = Path(work).parent
    if side.parent == Path(tempfile.gettempdir()) and side.name.startswith(_SIDE_WORK):
        return side
    return None


def _ephemeral_keypair(path: Path) -> tuple[bytes, str]:
    """A fresh client key pair; the private key lives in memory only."""
    try:
        return generate_keypair(path)
    finally:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".pub").unlink(missing_ok=True)


def _readable_key(key_path: Path) -> bytes:
    """The bytes of ``key_path`` (bounded: /dev/zero is not a key)."""
    try:
        return read_bounded(key_path.expanduser(), MAX_KEY_BYTES)
    except OSError as exc:
        raise ConfigError(
            [
                Problem(
                    "connector_config.key_path",
                    f"cannot read the key file {key_path}: {exc.strerror}",
                )
            ]
        ) from None


def _static_key(key_path: Path) -> tuple[bytes, str]:
    """The configured private key and its public line (``ssh-keygen -y``)."""
    key_path = key_path.expanduser()
    private = _readable_key(key_path)
    done = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key_path)], capture_output=True, check=False
    )
    if done.returncode != 0:
        # ssh-keygen's message names the file, never the key's content.
        raise ConfigError(
            [
                Problem(
                    "connector_config.key_path",
                    f"cannot read a private key from {key_path}: "
                    f"{done.stderr.decode(errors='replace').strip()}",
                )
            ]
        )
    return private, " ".join(done.stdout.decode().split()[:2])


def _remove_tree(sandbox: Path) -> None:
    _remove_side_dirs(sandbox)
    side = _side_work(sandbox)
    if side is not None:
        shutil.rmtree(side, ignore_errors=True)
    shutil.rmtree(sandbox, ignore_errors=True)


async def _end_instance(
    sandbox: Path, work: Path | None, user: str | None, cgroup: Path | None
) -> None:
    """End everything on an instance: its cgroup, what runs from its
    directories and, when its user is its own, every process of that user."""
    if cgroup is not None:
        await anyio.to_thread.run_sync(_cgroup.remove, cgroup)
        if cgroup.parent.name.startswith("fleetkit-local-"):
            with contextlib.suppress(OSError):
                cgroup.parent.rmdir()  # the owner's, once its last instance is gone
    roots = await anyio.to_thread.run_sync(_processes_under, sandbox)
    if work is not None and sandbox not in work.parents:
        roots += await anyio.to_thread.run_sync(_processes_under, work)
    await end_tree(roots, grace=_SWEEP_GRACE)
    if user is not None and is_pool_user(user):
        await anyio.to_thread.run_sync(end_user_processes, user)


def _remove_side_dirs(sandbox: Path) -> None:
    """Remove the authorized_keys side directory sshd was given outside the sandbox.

    :class:`fleetkit._sshd.SSHDaemon` puts ``authorized_keys`` in a temp dir of
    its own when the sandbox is not reachable by the login user; after a crash
    only the sshd config still names it.
    """
    config = sandbox / "sshd" / "sshd_config"
    with contextlib.suppress(OSError):
        for line in config.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key != "AuthorizedKeysFile":
                continue
            side = Path(value.strip()).parent
            if side.parent == Path(tempfile.gettempdir()) and side.name.startswith(
                "fleetkit-sshd-"
            ):
                shutil.rmtree(side, ignore_errors=True)


def _ours(pid: int, owner_dir: Path) -> bool:
    """Whether the process runs from, or was started with a path in, ``owner_dir``."""
    prefix = f"{owner_dir}/"
    try:
        # sshd retitles its listener ("sshd: /usr/sbin/sshd -D -f CONFIG [listener]"),
        # which puts every argument into one string: split on blanks too.
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return False
    if any(word.decode(errors="replace").startswith(prefix) for word in words):
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == str(owner_dir) or cwd.startswith(prefix)


def _processes_under(owner_dir: Path) -> list[int]:
    """Processes running from, or started with a path under, ``owner_dir`` (an
    owner's directory or one sandbox); :func:`fleetkit._procs.end_tree` finds
    what runs below them."""
    if not _PROC.exists():
        return []
    me = os.getpid()
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and int(entry.name) != me and _ours(int(entry.name), owner_dir)
    ]


def _leftover_sandboxes(owner_dir: Path) -> list[Path]:
    return [p for p in owner_dir.iterdir() if p.is_dir()]


async def _sweep(owner_dir: Path) -> None:
    """End a dead manager's instance processes and remove their sandboxes.

    Only called with the owner's lock held, which proves that manager is gone.
    """
    stale = await anyio.to_thread.run_sync(_processes_under, owner_dir)
    sandboxes = await anyio.to_thread.run_sync(_leftover_sandboxes, owner_dir)
    if not stale and not sandboxes:
        return
    log.warning(
        "local provider %s: sweeping %d process(es) and %d sandbox(es) left by a "
        "manager that did not shut down",
        owner_dir,
        len(stale),
        len(sandboxes),
    )
    await end_tree(stale, grace=_SWEEP_GRACE)
    for sandbox in sandboxes:
        record = await anyio.to_thread.run_sync(_read_record, sandbox)
        user, work, group = record.get("user"), record.get("work"), record.get("cgroup")
        # The dead manager's host lease went with it: another live fleet may
        # hold that host, and run an instance as its user, by now. Every
        # process of the user is this sweep's only while it holds the lease.
        lease = _user_lease(user) if isinstance(user, str) else None
        try:
            await _end_instance(
                sandbox,
                Path(work) if isinstance(work, str) else None,
                user if lease is not None else None,
                Path(group) if isinstance(group, str) and _cgroup.valid_path(group) else None,
            )
        finally:
            if lease is not None:
                lease.close()
        await anyio.to_thread.run_sync(_remove_tree, sandbox)


def _user_lease(user: str) -> socket.socket | None:
    """The host lease of pool user ``user`` (``fleetkit-iN``: host N), or None
    when another fleet holds it or ``user`` is no pool user."""
    if not is_pool_user(user):
        return None
    return lease_host(int(user.removeprefix("fleetkit-i")))
