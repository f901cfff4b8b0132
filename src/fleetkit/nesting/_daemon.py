"""The nesting daemon: GitLab's nesting API on a unix socket, over a hypervisor.

Start-up, in this order: take the state dir's lock (one daemon per state),
let the hypervisor remove what a killed daemon left (:meth:`Hypervisor.recover`),
apply the ``--config`` JSON when given (as an ``Init``), check and bind the
socket (0600, see :mod:`fleetkit.nesting._paths`), serve. The socket's path
appears only once calls are answered (it is bound under a private name and
renamed into place), so waiting for the path is waiting for the daemon. Stop: refuse new
calls, let running ones finish briefly, delete every VM (each delete bounded,
all of it bounded by ``stop_timeout``), shut the hypervisor down, remove the
socket and the lock. A daemon killed with ``SIGKILL`` does none of that; the
next one on the same socket recovers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import grpc
import grpc.aio

from fleetkit.errors import IsolationError
from fleetkit.nesting._grpc import add_service
from fleetkit.nesting._paths import (
    SocketOwner,
    StateLock,
    check_socket_path,
    default_socket_path,
    default_state_dir,
    private_dir,
    remove_socket,
    restrict_socket,
    socket_umask,
)
from fleetkit.nesting._protocol import BackgroundWork, Hypervisor, HypervisorFactory
from fleetkit.nesting._registry import load_hypervisor
from fleetkit.nesting._service import DEFAULT_DELETE_TIMEOUT, NestingService

__all__ = ["NestingDaemon"]

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 300.0  # GitLab's daemon allows its VMs five minutes at stop
_RPC_GRACE = 2.0
_BACKGROUND_GRACE = 10.0


class NestingDaemon:
    """A nesting daemon serving ``hypervisor`` (a name from the
    ``fleetkit.hypervisors`` entry points, or a factory) on ``socket_path``.

    ``socket_path`` defaults to GitLab's rule
    (:func:`~fleetkit.nesting.default_socket_path`); ``state_dir`` to
    ``<socket>.state``. ``config`` initializes the daemon at start (as an
    ``Init`` with that JSON object would; a manager's later ``Init`` is then
    answered ``already initialized``, which GitLab's client takes as success).
    ``socket_owner`` (a user name or uid) hands the 0600 socket to that user, so
    a manager logging in as it may call the daemon (the daemon itself may need
    to run as root, for example to start sshds).

    ``async with NestingDaemon(...) as daemon:`` serves until the block ends,
    then stops as described in the module docstring; :meth:`serve` serves
    until SIGTERM or SIGINT. :meth:`start` and :meth:`stop` may be called
    directly too, but a hypervisor's background work
    (:class:`~fleetkit.nesting.BackgroundWork`) runs only under ``async with``
    or :meth:`serve`, which own a task group for it. Raises :class:`~fleetkit.errors.IsolationError`
    subclasses at start for an unknown hypervisor, a busy state dir or an
    unsafe socket path, and :class:`~fleetkit.errors.ConfigError` for a bad
    ``config``. grpc.aio needs anyio's asyncio backend.
    """

    def __init__(
        self,
        hypervisor: str | HypervisorFactory,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        socket_owner: str | None = None,
        delete_timeout: float = DEFAULT_DELETE_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self._hypervisor_name = hypervisor if isinstance(hypervisor, str) else None
        self._factory = load_hypervisor(hypervisor) if isinstance(hypervisor, str) else hypervisor
        path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.socket_path = path.expanduser().absolute()
        self.state_dir = (
            Path(state_dir).expanduser().absolute()
            if state_dir is not None
            else default_state_dir(self.socket_path)
        )
        self._config = None if config is None else dict(config)
        self._socket_owner = None if socket_owner is None else SocketOwner.lookup(socket_owner)
        self._delete_timeout = delete_timeout
        self._stop_timeout = stop_timeout
        self._lock: StateLock | None = None
        self._server: grpc.aio.Server | None = None
        self._service: NestingService | None = None
        # Background work (BackgroundWork.run) runs in the task group of an
        # ``async with`` or ``serve()``, under a cancel scope of its own, which
        # stop() cancels (never the group's own scope: that one encloses the
        # caller's block).
        self._task_group: anyio.abc.TaskGroup | None = None
        self._background: tuple[anyio.CancelScope, anyio.Event] | None = None
        self._stopped = False
        self.recovered: list[str] = []

    def __repr__(self) -> str:
        name = self._hypervisor_name or getattr(self._factory, "__name__", "custom")
        return f"<NestingDaemon hypervisor={name} socket={str(self.socket_path)!r}>"

    @property
    def target(self) -> str:
        """The gRPC target of the socket: ``unix:/path``."""
        return f"unix:{self.socket_path}"

    async def __aenter__(self) -> Self:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        try:
            await self.start()
        except BaseException:
            # start() ended the background work already: the group is empty
            # and is left without the error, which goes out as raised.
            self._task_group = None
            await task_group.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            # Empty by now (stop() ended the background work); the block's
            # exception is not handed in, so it goes out as raised, unwrapped.
            task_group, self._task_group = self._task_group, None
            if task_group is not None:
                await task_group.__aexit__(None, None, None)

    async def start(self) -> None:
        """Lock, recover, initialize (with ``config``), bind and serve."""
        if self._lock is not None or self._stopped:
            raise IsolationError(f"{self!r}: start() may be called once")
        # The socket's directory first: the state dir is usually inside it, and
        # a socket owner needs it open to enter (0711), not private (0700).
        mode = 0o700 if self._socket_owner is None else 0o711
        await anyio.to_thread.run_sync(
            partial(private_dir, self.socket_path.parent, "socket directory", mode=mode)
        )
        lock = StateLock(self.state_dir)
        await anyio.to_thread.run_sync(lock.acquire)
        self._lock = lock
        try:
            await self._start_locked()
        except BaseException:
            # Only empty directories are removed: what a failed recovery left
            # stays for the next start.
            with anyio.CancelScope(shield=True):
                await self._end_background()
                await self._teardown(remove_state=True)
            raise

    async def _start_locked(self) -> None:
        hv_dir = private_dir(
            self.state_dir / (self._hypervisor_name or "hypervisor"), "state directory"
        )
        hypervisor = self._factory(hv_dir)
        self.recovered = list(await hypervisor.recover())
        service = NestingService(
            hypervisor,
            delete_timeout=self._delete_timeout,
            on_initialized=lambda: self._start_background(hypervisor),
        )
        self._service = service
        if self._config is not None:
            await service.init(json.dumps(self._config).encode())
        owner = self._socket_owner
        await anyio.to_thread.run_sync(check_socket_path, self.socket_path, owner)
        # Bound under a private name and renamed into place once serving, so
        # that the socket's path exists only while calls are answered: a
        # waiter may take the path appearing as the daemon being ready.
        binding = self._binding_path
        await anyio.to_thread.run_sync(check_socket_path, binding, owner)
        server = grpc.aio.server()
        add_service(server, service)
        with socket_umask():
            bound = server.add_insecure_port(f"unix:{binding}")
        if not bound:
            raise IsolationError(f"cannot listen on {self.socket_path}")
        self._server = server
        restrict_socket(binding, owner)
        await server.start()
        os.replace(binding, self.socket_path)
        log.info("nesting daemon serving on %s (state %s)", self.socket_path, self.state_dir)

    def _start_background(self, hypervisor: Hypervisor) -> None:
        if not isinstance(hypervisor, BackgroundWork):
            return
        if self._task_group is None:
            log.warning(
                "the hypervisor has background work, which runs only under "
                "'async with NestingDaemon(...)' or serve(); not started"
            )
            return
        scope, done = anyio.CancelScope(), anyio.Event()
        self._background = (scope, done)
        self._task_group.start_soon(self._run_background, hypervisor, scope, done)

    async def _run_background(
        self, work: BackgroundWork, scope: anyio.CancelScope, done: anyio.Event
    ) -> None:
        try:
            with scope:
                await work.run()
        except Exception:
            log.exception(
                "the hypervisor's background work failed; the daemon serves on without it"
            )
        finally:
            done.set()

    async def _end_background(self) -> None:
        background, self._background = self._background, None
        if background is not None:
            scope, done = background
            scope.cancel()
            with anyio.move_on_after(_BACKGROUND_GRACE):
                await done.wait()

    @property
    def _binding_path(self) -> Path:
        return self.socket_path.with_name(f".{os.getpid()}.s")

    async def serve(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop."""
        async with self:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    break

    async def stop(self) -> None:
        """Refuse new calls, delete every VM (bounded), remove the socket and
        the lock. Idempotent; shielded from cancellation."""
        if self._stopped:
            return
        self._stopped = True
        with anyio.CancelScope(shield=True):
            await self._end_background()
            await self._teardown(remove_state=True)

    async def _teardown(self, *, remove_state: bool) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(_RPC_GRACE)
        service, self._service = self._service, None
        if service is not None and not await service.close(self._stop_timeout):
            remove_state = False
        if server is not None:
            for path in (self._binding_path, self.socket_path):
                await anyio.to_thread.run_sync(remove_socket, path, self._socket_owner)
        lock, self._lock = self._lock, None
        if lock is not None:
            hv_dir = self.state_dir / (self._hypervisor_name or "hypervisor")
            if remove_state:
                with contextlib.suppress(OSError):
                    hv_dir.rmdir()
            await anyio.to_thread.run_sync(lambda: lock.release(remove=remove_state))
