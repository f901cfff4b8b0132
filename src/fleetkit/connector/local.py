"""The local connector: the connection protocol over subprocesses on this machine.

For the local provider's sandboxes without sshd (``ConnectInfo.protocol ==
"local"``, whose ``internal_addr`` is the sandbox directory) and for users who
run jobs on the manager itself::

    async with LocalConnector(workdir=Path("/srv/ci")).connect(info) as conn:
        await conn.run(["make", "test"], env={"CI": "1"}, timeout=600)

Commands run in the working directory: the sandbox directory for a ``local``
instance, else ``workdir``, else the current directory. A command line
(``str``) runs under ``/bin/sh -c``; an argument vector runs directly, with no
shell. ``env`` is added to this process's environment. Every command leads a
new session, and ending it (cancel, timeout, leaving a stream early) sends TERM
to everything it started, then KILL after a grace period: every process in that
session or below the command, found in ``/proc`` (Linux) by
:func:`fleetkit._procs.end_process`, so children in a process group or session of
their own end too. Relative paths
for upload, download and unix-socket tunnels are taken from the working
directory. Works on every anyio backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import pwd
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from fleetkit import _cgroup
from fleetkit._owned import check_own_dir, open_own_file
from fleetkit._procs import end_process
from fleetkit.connector import (
    Command,
    ExitStatus,
    RunningCommand,
    TunnelTarget,
    argv_or_line,
    check_env,
)
from fleetkit.connector._streams import ConnectionBase
from fleetkit.errors import CommandTimeout, ConnectionLost, ConnectorError
from fleetkit.model import ConnectInfo

if TYPE_CHECKING:
    from fleetkit.connector import Connection, Connector

__all__ = ["LocalConnection", "LocalConnector"]

_TERM_GRACE = 5.0
# The local provider's record of an instance, beside the instance's work dir.
_RECORD = "instance.json"
# Commands run as another user get a login's PATH and only these of ours.
_USER_PATH = "/usr/local/bin:/usr/bin:/bin"
_KEPT_ENV = frozenset({"LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"})


@attrs.define(eq=False)
class _LocalRunning:
    """A local command in progress (see :class:`fleetkit.connector.RunningCommand`)."""

    process: anyio.abc.Process

    @property
    def stdin(self) -> anyio.abc.ByteSendStream:
        assert self.process.stdin is not None
        return self.process.stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream:
        assert self.process.stdout is not None
        return self.process.stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream:
        assert self.process.stderr is not None
        return self.process.stderr

    async def wait(self) -> ExitStatus:
        code = await self.process.wait()
        if code < 0:
            return ExitStatus(None, signal.Signals(-code).name.removeprefix("SIG"))
        return ExitStatus(code)

    async def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)

    async def _end(self) -> None:
        """End everything the command started unless it ended by itself."""
        await end_process(self.process, grace=_TERM_GRACE)


if TYPE_CHECKING:
    _check_running: type[RunningCommand] = _LocalRunning


class LocalConnection(ConnectionBase):
    """Runs commands as subprocesses in one working directory.

    Made by :meth:`LocalConnector.connect`; implements
    :class:`fleetkit.connector.Connection`.
    """

    def __init__(
        self,
        info: ConnectInfo,
        workdir: Path,
        user: pwd.struct_passwd | None = None,
        cgroup: Path | None = None,
        instance_dir: Path | None = None,
    ) -> None:
        self._info = info
        self.workdir = workdir
        # The local provider's directory of the instance (root's, holding
        # instance.json and the sockets it serves, such as nesting.sock).
        self._instance_dir = instance_dir
        # Set when commands run as another user than this process's.
        self._user = user
        # The instance's cgroup, when the local provider made one: each
        # command then runs in a cgroup of its own below it.
        self._cgroup = cgroup
        self._closed = False

    def _spawn_options(self, extra: Mapping[str, str]) -> dict[str, Any]:
        if self._user is None:
            return {"env": {**os.environ, **extra}}
        user = self._user
        # A login's environment, not this (root) process's: nothing of the
        # manager's environment reaches a job of another user.
        base = {
            "HOME": str(self.workdir),
            "USER": user.pw_name,
            "LOGNAME": user.pw_name,
            "SHELL": user.pw_shell or "/bin/sh",
            "PATH": _USER_PATH,
            "TMPDIR": str(self.workdir),
        }
        base.update({k: v for k, v in os.environ.items() if k in _KEPT_ENV})
        return {
            "env": {**base, **extra},
            "user": user.pw_uid,
            "group": user.pw_gid,
            "extra_groups": [],
        }

    def __repr__(self) -> str:
        return f"<LocalConnection instance={self._info.id!r} workdir={str(self.workdir)!r}>"

    def _path(self, path: Path | str) -> Path:
        return self.workdir / path

    @asynccontextmanager
    async def _stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None,
        timeout: float | None,  # noqa: ASYNC109 - ends the command
    ) -> AsyncIterator[RunningCommand]:
        """Start ``command`` with the transport's streams; see
        :meth:`fleetkit.connector.Connection.stream`."""
        if self._closed:
            raise anyio.ClosedResourceError
        where = f"instance {self._info.id}"
        normal = argv_or_line(command, where=where)
        argv = ["/bin/sh", "-c", normal] if isinstance(normal, str) else normal
        extra = check_env(env, where=where)
        deadline = anyio.current_time() + timeout if timeout is not None else float("inf")
        group = await self._command_cgroup()
        if group is not None:
            # The command waits for one line on stdin, read byte by byte so
            # nothing of its input is taken, until it has been moved into its
            # cgroup: nothing it starts can be outside.
            argv = ["/bin/sh", "-c", 'IFS= read -r _ || exit 125; exec "$@"', "fleetkit", *argv]
            extra = {**extra, "FLEETKIT_CGROUP": str(group)}
        try:
            process = await anyio.open_process(
                argv,
                cwd=self.workdir,
                **self._spawn_options(extra),
                start_new_session=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            if group is not None:
                await anyio.to_thread.run_sync(_cgroup.remove, group)
            raise ConnectorError(f"{where}: could not start the command: {exc.strerror}") from exc
        running = _LocalRunning(process)
        try:
            if group is not None:
                try:
                    await anyio.to_thread.run_sync(_cgroup.move, group, process.pid)
                    await running.stdin.send(b"\n")
                except (OSError, anyio.BrokenResourceError) as exc:
                    # The instance was deleted under the command (its cgroup
                    # and all in it with it).
                    raise ConnectionLost(f"{where}: the instance went away: {exc}") from exc
            with anyio.CancelScope(deadline=deadline) as scope:
                yield running
        finally:
            await running._end()
            if group is not None:
                with anyio.CancelScope(shield=True):
                    # Whatever the command left running, in any session.
                    await anyio.to_thread.run_sync(_cgroup.remove, group)
        if scope.cancelled_caught:
            raise CommandTimeout(f"{where}: command ran longer than {timeout} and was ended")

    async def _command_cgroup(self) -> Path | None:
        if self._cgroup is None:
            return None
        group = self._cgroup / f"cmd-{uuid.uuid4().hex[:12]}"
        user = self._user

        def make() -> Path:
            _cgroup.make(group)
            if user is not None:
                # The job wrapper makes the job's own cgroup below this one.
                _cgroup.delegate(group, user.pw_uid, user.pw_gid)
            return group

        try:
            return await anyio.to_thread.run_sync(make)
        except FileNotFoundError as exc:
            raise ConnectionLost(f"instance {self._info.id}: the instance went away") from exc
        except OSError as exc:
            raise ConnectorError(
                f"instance {self._info.id}: cannot make a cgroup for the command: {exc}"
            ) from exc

    async def upload(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` (relative to the working directory).

        As another user, the far side is written by a process of that user, so
        a symlink there leads only where that user may write anyway."""
        if self._user is None:
            await self._copy(Path(local), self._path(remote))
            return
        try:
            data = await anyio.Path(local).read_bytes()
        except OSError as exc:
            raise ConnectorError(
                f"instance {self._info.id}: file transfer failed: {exc.strerror}: {exc.filename}"
            ) from exc
        done = await self.run(["sh", "-c", 'exec cat > "$1"', "sh", remote], stdin=data)
        if not done.ok:
            raise ConnectorError(
                f"instance {self._info.id}: file transfer failed: {done.stderr_text.strip()}"
            )

    async def download(self, remote: str, local: Path) -> None:
        """Copy ``remote`` (relative to the working directory) to ``local``;
        as another user, read by a process of that user."""
        if self._user is None:
            await self._copy(self._path(remote), Path(local))
            return
        done = await self.run(["cat", "--", remote])
        if not done.ok:
            raise ConnectorError(
                f"instance {self._info.id}: file transfer failed: {done.stderr_text.strip()}"
            )
        await self._write_local(Path(local), done.stdout)

    async def _write_local(self, local: Path, data: bytes) -> None:
        try:
            await anyio.Path(local).write_bytes(data)
        except OSError as exc:
            raise ConnectorError(
                f"instance {self._info.id}: file transfer failed: {exc.strerror}: {exc.filename}"
            ) from exc

    def _socket_path(self, target: str) -> str:
        path = posixpath.normpath(self._path(target))
        if (
            self._instance_dir is not None
            and not os.path.isabs(target)
            and not os.path.exists(path)
        ):
            # A socket the provider serves for the instance (nesting.sock).
            path = posixpath.normpath(self._instance_dir / target)
        if self._user is not None:
            # Connecting runs as this (root) process: a path the instance's
            # user controls could lead to any socket of the machine's.
            real = os.path.realpath(path)
            allowed = [self.workdir] + ([self._instance_dir] if self._instance_dir else [])
            if not any(real.startswith(f"{os.path.realpath(a)}/") for a in allowed):
                raise ConnectorError(
                    f"instance {self._info.id}: tunnel to {target!r} refused: a unix socket "
                    f"must lie in the instance's directory {self.workdir}"
                )
        return path

    async def _copy(self, source: Path, target: Path) -> None:
        try:
            await anyio.to_thread.run_sync(shutil.copyfile, source, target)
        except OSError as exc:
            raise ConnectorError(
                f"instance {self._info.id}: file transfer failed: {exc.strerror}: {exc.filename}"
            ) from exc

    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        """A stream to ``(host, port)`` or to a unix socket path."""
        try:
            if isinstance(target, str):
                # Normalised: a socket path has a length limit (108 bytes).
                return await anyio.connect_unix(self._socket_path(target))
            return await anyio.connect_tcp(*target)
        except OSError as exc:
            raise ConnectorError(
                f"instance {self._info.id}: tunnel to {target!r} refused: {exc.strerror or exc}"
            ) from exc

    @asynccontextmanager
    async def forward(self, target: TunnelTarget) -> AsyncIterator[TunnelTarget]:
        """``target`` itself (a relative socket path made absolute from the
        working directory): this machine reaches it without a forward."""
        if self._closed:
            raise anyio.ClosedResourceError
        yield self._socket_path(target) if isinstance(target, str) else target

    async def aclose(self) -> None:
        """Refuse new commands; there is nothing else to close."""
        self._closed = True


class LocalConnector:
    """Connects to "instances" that are directories on this machine.

    ``workdir`` is the working directory for instances whose connect info does
    not name one (protocol other than ``local``); ``None`` means the current
    directory.
    """

    def __init__(self, *, workdir: Path | None = None) -> None:
        self.workdir = workdir

    def __repr__(self) -> str:
        return f"<LocalConnector workdir={str(self.workdir)!r}>"

    def _workdir_for(self, info: ConnectInfo) -> Path:
        if info.protocol == "local" and info.internal_addr:
            return Path(info.internal_addr)
        return self.workdir if self.workdir is not None else Path.cwd()

    @asynccontextmanager
    async def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AsyncIterator[LocalConnection]:
        """A connection running commands in ``info``'s working directory.

        Raises :class:`~fleetkit.errors.ConnectionLost` when that directory
        does not exist (the instance is gone). ``via`` may only be another
        local connection (everything runs on this machine either way); through
        any other connection a subprocess here would not reach the far side,
        so :class:`~fleetkit.errors.ConnectorError` says so."""
        if via is not None and not isinstance(via, LocalConnection):
            raise ConnectorError(
                f"instance {info.id}: the local connector cannot run commands through {via!r}"
            )
        workdir = self._workdir_for(info)
        if not await anyio.Path(workdir).is_dir():
            raise ConnectionLost(f"instance {info.id}: working directory {workdir} is missing")
        user = _other_user(info)
        instance_dir, cgroup = await anyio.to_thread.run_sync(_instance_record, workdir)
        connection = LocalConnection(info, workdir, user, cgroup, instance_dir)
        try:
            yield connection
        finally:
            await connection.aclose()


def _instance_record(workdir: Path) -> tuple[Path | None, Path | None]:
    """The instance directory and cgroup the local provider made for the
    instance whose work dir is ``workdir``, from its record beside it
    (``instance.json``, trusted only when it is this process's own file in a
    directory of its own); ``(None, None)`` for any other directory."""
    record_dir = workdir.parent
    try:
        check_own_dir(record_dir)
        fd = open_own_file(record_dir, _RECORD, os.O_RDONLY)
        with os.fdopen(fd, "rb") as file:
            record = json.loads(file.read())
    except (OSError, ValueError):
        return None, None
    if not isinstance(record, dict):
        return None, None
    path = record.get("cgroup")
    usable = isinstance(path, str) and _cgroup.available() and _cgroup.valid_path(path)
    if usable and Path(str(path)).is_dir():
        return record_dir, Path(str(path))
    return record_dir, None


def _other_user(info: ConnectInfo) -> pwd.struct_passwd | None:
    """The user ``info`` names when it is not this process's; raises
    :class:`~fleetkit.errors.ConnectorError` when it cannot be switched to."""
    if info.username is None:
        return None
    try:
        user = pwd.getpwnam(info.username)
    except KeyError:
        raise ConnectorError(
            f"instance {info.id}: user {info.username!r} does not exist on this machine"
        ) from None
    if user.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ConnectorError(
            f"instance {info.id}: cannot run commands as {info.username!r}: this process is "
            "not root, and only root may run them as another user"
        )
    return user


if TYPE_CHECKING:
    _check_connector: type[Connector] = LocalConnector
    _check_connection: type[Connection] = LocalConnection
