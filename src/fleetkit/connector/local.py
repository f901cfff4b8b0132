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
import os
import posixpath
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

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

    def __init__(self, info: ConnectInfo, workdir: Path) -> None:
        self._info = info
        self.workdir = workdir
        self._closed = False

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
        try:
            process = await anyio.open_process(
                argv,
                cwd=self.workdir,
                env={**os.environ, **extra},
                start_new_session=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise ConnectorError(f"{where}: could not start the command: {exc.strerror}") from exc
        running = _LocalRunning(process)
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                yield running
        finally:
            await running._end()
        if scope.cancelled_caught:
            raise CommandTimeout(f"{where}: command ran longer than {timeout} and was ended")

    async def upload(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` (relative to the working directory)."""
        await self._copy(Path(local), self._path(remote))

    async def download(self, remote: str, local: Path) -> None:
        """Copy ``remote`` (relative to the working directory) to ``local``."""
        await self._copy(self._path(remote), Path(local))

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
                return await anyio.connect_unix(posixpath.normpath(self._path(target)))
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
        yield posixpath.normpath(self._path(target)) if isinstance(target, str) else target

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
        connection = LocalConnection(info, workdir)
        try:
            yield connection
        finally:
            await connection.aclose()


if TYPE_CHECKING:
    _check_connector: type[Connector] = LocalConnector
    _check_connection: type[Connection] = LocalConnection
