"""One connector for a whole fleet: each connection by its instance's protocol.

A provider says per instance how to reach it (``ConnectInfo.protocol``): the
local provider gives ``"ssh"`` when it runs an sshd per instance and
``"local"`` otherwise, a cloud gives ``"ssh"``. :class:`ProtocolConnector`
builds the concrete connector for a protocol the first time it is needed, so
a fleet that never meets SSH never imports asyncssh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

from fleetkit.connector import (
    ClosingConnector,
    Connection,
    Connector,
    ForgetsInstances,
    check_event_loop,
)
from fleetkit.errors import ConnectorError, Problem
from fleetkit.model import ConnectInfo, ConnectorConfig

__all__ = ["ProtocolConnector", "connector_factories", "connector_problems"]


class ProtocolConnector:
    """A :class:`~fleetkit.connector.Connector` dispatching on ``ConnectInfo.protocol``.

    ``factories`` maps a protocol name to a function building its connector.
    Connectors built are closed by :meth:`aclose`. An instance whose protocol
    has no factory fails to connect with a :class:`~fleetkit.errors.ConnectorError`.
    ``expect`` names the protocols the instances are known to use (the
    provider's): :meth:`check_event_loop` checks their connectors at start.
    """

    def __init__(
        self, factories: Mapping[str, Callable[[], Connector]], *, expect: Iterable[str] = ()
    ) -> None:
        self._factories = dict(factories)
        self._built: dict[str, Connector] = {}
        self._expect = tuple(p for p in expect if p in self._factories)

    def check_event_loop(self) -> None:
        """Raise :class:`~fleetkit.errors.UnsupportedEventLoop` when the connector of
        an expected protocol cannot run on the current event loop."""
        for protocol in self._expect:
            check_event_loop(self.for_protocol(protocol))

    def __repr__(self) -> str:
        return (
            f"<ProtocolConnector protocols={sorted(self._factories)} built={sorted(self._built)}>"
        )

    def for_protocol(self, protocol: str) -> Connector:
        """The connector for ``protocol``, built on first use."""
        connector = self._built.get(protocol)
        if connector is None:
            factory = self._factories.get(protocol)
            if factory is None:
                raise ConnectorError(
                    f"no connector for protocol {protocol!r} "
                    f"(fleetkit has {', '.join(sorted(self._factories))})"
                )
            connector = self._built[protocol] = factory()
        return connector

    def connect(
        self, info: ConnectInfo, *, via: Connection | None = None
    ) -> AbstractAsyncContextManager[Connection]:
        """A connection to ``info``'s instance through its protocol's connector
        (dialled through ``via`` when given)."""
        return self.for_protocol(info.protocol).connect(info, via=via)

    async def forget(self, instance_id: str) -> None:
        """Drop what the connectors keep for a deleted instance (pooled connections,
        pinned host key), where they keep anything."""
        for connector in tuple(self._built.values()):
            if isinstance(connector, ForgetsInstances):
                await connector.forget(instance_id)

    async def aclose(self) -> None:
        """Close every connector built (pooled connections included); idempotent."""
        built, self._built = self._built, {}
        with anyio.CancelScope(shield=True):
            for connector in built.values():
                if isinstance(connector, ClosingConnector):
                    await connector.aclose()


def connector_problems(config: ConnectorConfig) -> list[Problem]:
    """What in ``connector_config`` fleetkit's connectors cannot do, with paths
    relative to it: WinRM (fleetkit speaks SSH) and Windows instances (the job
    wrapper is POSIX sh)."""
    found: list[Problem] = []
    if config.protocol in ("winrm", "winrm+https"):
        found.append(
            Problem(
                "protocol",
                f"{config.protocol!r}: fleetkit has no WinRM connector (Windows instances are "
                'not supported yet); use protocol = "ssh", or leave it out',
            )
        )
    if config.os == "windows":
        found.append(
            Problem(
                "os",
                "'windows': fleetkit does not run Windows instances yet (jobs run under a "
                "POSIX shell); use Linux or macOS instances",
            )
        )
    return found


def connector_factories(config: ConnectorConfig) -> dict[str, Callable[[], Connector]]:
    """Factories for fleetkit's connectors, set up from ``connector_config``.

    ``"ssh"``: :class:`~fleetkit.connector.ssh.SSHConnector` (needs the ``ssh``
    extra); ``"local"``: :class:`~fleetkit.connector.local.LocalConnector`.
    """

    def ssh() -> Connector:
        from fleetkit.connector.ssh import SSHConnector

        options: dict[str, Any] = {"use_external_addr": config.use_external_addr}
        if config.timeout is not None:
            options["dial_timeout"] = config.timeout.total_seconds()
        if config.keepalive is not None:
            options["keepalive"] = config.keepalive.total_seconds()
        if config.username is not None:
            options["username"] = config.username
        return SSHConnector(**options)

    def local() -> Connector:
        from fleetkit.connector.local import LocalConnector

        return LocalConnector()

    return {"ssh": ssh, "local": local}
