"""Serving the fleets' metrics over HTTP, as GitLab Runner does on ``listen_address``.

prometheus_client's own server answers on a thread of its own; each scrape asks
the event loop for every fleet's :meth:`~fleetkit.fleet.Fleet.stats` (through
``anyio.from_thread``), so the figures are read where the fleet changes them,
never beside it. Families carry GitLab's constant labels ``runner`` (a digest of
the runner's identity, never any part of its token), ``runner_name`` and
``system_id``.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from fleetkit.errors import ConfigError, Problem
from fleetkit.executor._job_stats import JobCollector, JobStats
from fleetkit.fleet import Fleet, FleetCollector

__all__ = ["MetricsServer", "system_id"]


def system_id() -> str:
    """This machine's id for the ``system_id`` label (GitLab's ``s_...`` form)."""
    return "s_" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


class _LoopCollector:
    """One fleet's families, its stats read on the event loop."""

    def __init__(self, fleet: Fleet, labels: dict[str, str], token: Any) -> None:
        self._inner = FleetCollector(fleet, labels)
        self._fleet = fleet
        self._token = token

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        try:
            stats = anyio.from_thread.run_sync(self._fleet.stats, token=self._token)
        except RuntimeError:
            return  # the loop has ended: nothing left to report
        yield from self._inner.families(stats)


class _LoopJobCollector:
    """One executor's job families, its figures read on the event loop."""

    def __init__(self, read: Callable[[], JobStats], labels: dict[str, str], token: Any) -> None:
        self._inner = JobCollector(read, labels)
        self._read = read
        self._token = token

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        try:
            stats = anyio.from_thread.run_sync(self._read, token=self._token)
        except RuntimeError:
            return
        yield from self._inner.families(stats)


class MetricsServer:
    """prometheus_client's HTTP server for ``fleets`` on ``(host, port)``.

    ``fleets`` pairs each fleet with its runner's ``(runner, runner_name)``
    labels; ``jobs`` gives, per fleet, its executor's ``job_stats`` (job
    metrics beside the fleet's, see :mod:`fleetkit.executor._job_stats`). Start it inside the event loop (:meth:`start`); :meth:`close` stops
    the server and joins its thread; ``with`` does both. ``port`` 0 picks a
    free port (:attr:`port` says which).
    """

    def __init__(
        self,
        address: tuple[str, int],
        fleets: Sequence[tuple[Fleet, str, str]],
        jobs: Sequence[Callable[[], JobStats] | None] = (),
    ) -> None:
        self.address = address
        self.fleets = tuple(fleets)
        # Per fleet, where its executor's job figures come from (None: no jobs).
        self.jobs = tuple(jobs)
        self._server: Any = None
        self._thread: Any = None

    def __repr__(self) -> str:
        return f"<MetricsServer {self.address[0]}:{self.port} fleets={len(self.fleets)}>"

    @property
    def port(self) -> int:
        """The port served (the one picked when 0 was asked for)."""
        if self._server is None:
            return self.address[1]
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve; raises :class:`~fleetkit.errors.ConfigError` at ``listen_address``
        when prometheus_client is missing or the address cannot be bound."""
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError(
                [
                    Problem(
                        "listen_address",
                        "serving metrics needs prometheus_client: pip install 'fleetkit[metrics]'",
                    )
                ]
            ) from None
        token = anyio.lowlevel.current_token()
        registry = CollectorRegistry(auto_describe=False)
        sid = system_id()
        for index, (fleet, runner, name) in enumerate(self.fleets):
            labels = {"runner": runner, "runner_name": name, "system_id": sid}
            registry.register(_LoopCollector(fleet, labels, token))
            read = self.jobs[index] if index < len(self.jobs) else None
            if read is not None:
                registry.register(_LoopJobCollector(read, labels, token))
        host, port = self.address
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(
                [Problem("listen_address", f"cannot listen on {host}:{port}: {exc.strerror}")]
            ) from None

    async def aclose(self) -> None:
        """:meth:`close` off the event loop (a scrape in flight waits on the loop)."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Stop serving and join the server's thread; idempotent. From inside the
        event loop, use :meth:`aclose`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
