"""Shared helpers for the jobs and executor integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

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
