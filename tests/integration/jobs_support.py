"""Shared helpers for the jobs and executor integration tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from fleetkit.connector import Connector
from fleetkit.model import ConnectInfo


@attrs.frozen
class StaticSlot:
    """A slot as plain data: what ``run_job`` needs when no fleet hands it out."""

    instance_id: str
    number: int
    connect_info: ConnectInfo | None


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@attrs.frozen
class Target:
    """Where a test's jobs run: a connector and the connect info of one instance."""

    connector: Connector
    info: ConnectInfo

    def slot(self, number: int = 1) -> StaticSlot:
        """Slot ``number`` of the instance."""
        return StaticSlot(self.info.id, number, self.info)


@asynccontextmanager
async def job_target(kind: str, tmp_path: Path) -> AsyncIterator[Target]:
    """``"ssh"``: a real sshd reached with the SSH connector; ``"local"``: a
    directory reached with the local connector."""
    if kind == "ssh":
        from fleetkit.connector.ssh import SSHConnector
        from fleetkit.testing.sshd import running_sshd
        from tests.integration.local_provider_support import require_sshd

        require_sshd()
        async with (
            running_sshd(tmp_path / "sshd") as sshd,
            SSHConnector(dial_timeout=10) as ssh,
        ):
            yield Target(ssh, sshd.connect_info("sshd-0"))
    else:
        from fleetkit.connector.local import LocalConnector

        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        yield Target(
            LocalConnector(), ConnectInfo(id="dir-0", internal_addr=str(sandbox), protocol="local")
        )
