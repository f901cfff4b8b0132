"""Connectors reach an instance: run commands, move files, open tunnels.

A :class:`Connector` turns a :class:`~fleetkit.model.ConnectInfo` into a
:class:`Connection`::

    async with connector.connect(info) as conn:
        result = await conn.run("uname -a", timeout=30)
        async with conn.stream(["make", "test"], env={"CI": "1"}) as proc:
            async for chunk in proc.stdout:
                ...
            status = await proc.wait()

A connection also reaches what only its instance can reach: ``open_tunnel``
gives a byte stream to a TCP address or unix socket on the far side,
``forward`` makes such a target dialable on this machine (for clients like
gRPC that dial an address themselves), and ``connect(info, via=conn)`` dials
another instance *through* an open connection (SSH inside SSH, for a nested VM
whose address only its host can reach)::

    async with ssh.connect(host) as outer, ssh.connect(vm, via=outer) as inner:
        await inner.run("uname -a")

Implementations: :class:`fleetkit.connector.ssh.SSHConnector` (asyncssh against
any OpenSSH server; asyncio only) and :class:`fleetkit.connector.local.LocalConnector`
(subprocesses on this machine). :class:`fleetkit.testing.connector.FakeConnector`
scripts results for tests of code that uses a connector.

Commands are either a shell command line (``str``, run by a POSIX shell on the
far side) or an argument vector (a sequence of ``str``), which is quoted so
every argument arrives byte for byte. Environment values are quoted the same
way: nothing in a value can inject shell code. Errors are the
:class:`~fleetkit.errors.ConnectorError` branch; nothing else escapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import anyio.abc
import attrs

from fleetkit._duration import DurationLike
from fleetkit.errors import ConfigError, Problem
from fleetkit.model import ConnectInfo

#: What ``stderr=`` of ``run`` and ``stream`` takes: ``"pipe"`` (its own stream,
#: the default), ``"stdout"`` (merged into stdout) or ``"discard"``.
StderrMode: TypeAlias = Literal["pipe", "stdout", "discard"]

#: Bytes of unread output a command's stream keeps (see :meth:`Connection.stream`).
STREAM_BUFFER = 1 << 20

__all__ = [
    "STREAM_BUFFER",
    "ClosingConnector",
    "Command",
    "CommandResult",
    "Connection",
    "Connector",
    "ExitStatus",
    "ForgetsInstances",
    "RunningCommand",
    "StderrMode",
    "TunnelTarget",
    "check_env",
    "check_event_loop",
]

#: A shell command line, or an argument vector quoted for the far side.
Command: TypeAlias = str | Sequence[str]

#: Where a tunnel leads on the far side: ``(host, port)`` for TCP, or a unix
#: socket path (``str``).
TunnelTarget: TypeAlias = tuple[str, int] | str

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@attrs.frozen
class ExitStatus:
    """How a command ended: its exit code, or the signal that killed it.

    ``exit_code`` is ``None`` when a signal ended the process; ``signal`` is
    the signal's name without ``SIG`` (``"TERM"``, ``"KILL"``) or ``None``.
    """

    exit_code: int | None
    signal: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_code == 0


@attrs.frozen
class CommandResult:
    """A finished command: exit status and all of its output as bytes.

    ``signal`` names the signal that ended the command (``exit_code`` is then
    ``None``). Output is kept whole: use :meth:`Connection.stream` for commands
    whose output is large.
    """

    exit_code: int | None
    stdout: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    stderr: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    signal: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode(errors="replace")


class RunningCommand(Protocol):
    """**Protocol:** a command in progress, from :meth:`Connection.stream`.

    ``stdout`` and ``stderr`` yield output as it comes, with flow control: an
    unread stream makes the command wait rather than memory grow. Write to
    ``stdin`` and close it (``await proc.stdin.aclose()``) to send EOF.
    """

    @property
    def stdin(self) -> anyio.abc.ByteSendStream:
        """The command's standard input."""
        ...

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream:
        """The command's standard output."""
        ...

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream:
        """The command's standard error."""
        ...

    async def wait(self) -> ExitStatus:
        """Wait for the command to end and return how it ended.

        Raises :class:`~fleetkit.errors.ConnectionLost` when the connection
        broke first.
        """
        ...

    async def terminate(self) -> None:
        """Send TERM to the command and everything it started."""
        ...


class Connection(Protocol):
    """**Protocol:** an open connection to one instance.

    Entered with ``async with``; leaving closes it. Safe for concurrent use from
    several tasks.
    """

    async def run(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        timeout: DurationLike | None = None,  # noqa: ASYNC109 - fixed public API; ends the remote command
        stderr: StderrMode = "pipe",
    ) -> CommandResult:
        """Run ``command`` to the end and return its exit status and output.

        A non-zero exit is a result, not an error. ``timeout`` (seconds or a
        timedelta) ends the command and raises
        :class:`~fleetkit.errors.CommandTimeout`; cancelling the caller ends
        the command too. ``stderr="stdout"`` merges stderr into ``stdout`` (in
        the command's own order; ``CommandResult.stderr`` is then empty),
        ``"discard"`` drops it.
        """
        ...

    def stream(
        self,
        command: Command,
        *,
        env: Mapping[str, str] | None = None,
        timeout: DurationLike | None = None,
        stderr: StderrMode = "pipe",
    ) -> AbstractAsyncContextManager[RunningCommand]:
        """Start ``command`` and give its streams as they come.

        ``proc.stdout`` and ``proc.stderr`` may be read in any order, or only
        one of them: each stream keeps up to ``STREAM_BUFFER`` (1 MiB) unread;
        a stream's output beyond that waits for its reader (flow control),
        except while the caller waits on the *other* stream, when it is
        dropped rather than deadlock the command. ``stderr="stdout"`` merges
        stderr into stdout on the far side (``proc.stderr`` then ends at
        once), ``"discard"`` drops it.

        Leaving the block before the command ended ends it (TERM to the command
        and its children). Past ``timeout`` the command is ended and
        :class:`~fleetkit.errors.CommandTimeout` raised.
        """
        ...

    async def upload(self, local: Path, remote: str) -> None:
        """Copy the local file ``local`` to the path ``remote`` on the instance."""
        ...

    async def download(self, remote: str, local: Path) -> None:
        """Copy the file ``remote`` on the instance to the local path ``local``."""
        ...

    async def open_tunnel(self, target: TunnelTarget) -> anyio.abc.ByteStream:
        """A byte stream to ``target`` as seen from the instance: ``(host, port)``
        for TCP or a unix socket path. The caller closes it.

        A relative socket path is taken from the login user's home directory
        over SSH (``$HOME``), from the working directory locally. Raises
        :class:`~fleetkit.errors.ConnectorError` when the far side cannot
        reach ``target`` (the connection stays usable), or
        :class:`~fleetkit.errors.ConnectionLost` when the connection broke."""
        ...

    def forward(self, target: TunnelTarget) -> AbstractAsyncContextManager[TunnelTarget]:
        """Make ``target`` (as the instance sees it) dialable from this machine
        while the block lasts, for clients that dial an address themselves.

        Yields a local address: a unix socket path in a fresh directory only
        this user can enter (no port is opened anywhere), each connection to
        which is carried by its own :meth:`open_tunnel`; or, where this
        machine already reaches ``target`` itself (the local connector), the
        target with a relative path made absolute. Leaving the block closes
        the forwarded connections and removes the socket and its directory.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection: it refuses new commands. (Commands still
        running end with their own ``stream`` blocks; a pooled SSH connection
        stays pooled for the next user.)"""
        ...


class Connector(Protocol):
    """**Protocol:** opens connections to instances."""

    def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """A connection to the instance ``info`` describes, as an async context
        manager. Raises the :class:`~fleetkit.errors.ConnectorError` branch:
        :class:`~fleetkit.errors.ConnectTimeout`,
        :class:`~fleetkit.errors.AuthenticationFailed`,
        :class:`~fleetkit.errors.HostKeyMismatch`.

        With ``via``, the instance is dialled *through* that open connection:
        ``info``'s address is the one ``via``'s instance reaches (GitLab's
        dialer for nested VMs). Such a connection is never shared with direct
        ones; it closes when its block ends, and breaks when ``via`` does, so
        ``via`` must stay open meanwhile. A connector that cannot carry its
        protocol over ``via`` raises :class:`~fleetkit.errors.ConnectorError`
        saying so.

        A connector that runs on some event loops only (asyncssh: asyncio)
        also has ``check_event_loop()``, which raises
        :class:`~fleetkit.errors.UnsupportedEventLoop` on any other; see
        :func:`check_event_loop`."""
        ...


@runtime_checkable
class ForgetsInstances(Protocol):
    """**Protocol:** a connector that keeps something per instance (pooled
    connections, a pinned host key) and drops it when the instance is deleted."""

    async def forget(self, instance_id: str) -> None:
        """Drop what is kept for ``instance_id``; unknown ids are ignored."""
        ...


@runtime_checkable
class ClosingConnector(Protocol):
    """**Protocol:** a connector holding resources (pooled connections) that
    its owner closes when done with it."""

    async def aclose(self) -> None:
        """Close what the connector holds; idempotent."""
        ...


def check_event_loop(connector: object) -> None:
    """Refuse, once and at start, a connector that cannot run on the current
    event loop: calls its ``check_event_loop()`` when it has one.

    :class:`~fleetkit.fleet.Fleet` and :class:`~fleetkit.executor.InstanceExecutor`
    call it when they start, so a wrong loop is one clear
    :class:`~fleetkit.errors.UnsupportedEventLoop`, not a failure of every job
    counted against healthy instances.
    """
    check = getattr(connector, "check_event_loop", None)
    if callable(check):
        check()


def check_env(env: Mapping[str, str] | None, *, where: str) -> dict[str, str]:
    """Validate environment variable names (values may be anything but NUL).

    Raises :class:`~fleetkit.errors.ConfigError` naming ``where`` and the bad
    variable; a bad *value* is reported by name only, never shown.
    """
    if not env:
        return {}
    problems = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            problems.append(
                Problem(f"{where}.env.{name}", "expected a name of letters, digits and _")
            )
        elif "\0" in value:
            problems.append(Problem(f"{where}.env.{name}", "value contains a NUL character"))
    if problems:
        raise ConfigError(problems)
    return dict(env)


def argv_or_line(command: Command, *, where: str) -> str | list[str]:
    """Normalise a command: a non-empty line stays a ``str``, a sequence
    becomes a ``list``. Raises :class:`~fleetkit.errors.ConfigError` when empty."""
    if isinstance(command, str):
        if not command.strip():
            raise ConfigError([Problem(f"{where}.command", "expected a non-empty command")])
        return command
    argv = list(command)
    if not argv:
        raise ConfigError([Problem(f"{where}.command", "expected a non-empty argument list")])
    if any("\0" in arg for arg in argv):
        raise ConfigError([Problem(f"{where}.command", "an argument contains a NUL character")])
    return argv
