"""Shared pieces of the nesting daemon tests: short socket dirs, a daemon, sshd checks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from fleetkit.isolation import NestingClient
from fleetkit.nesting import NestingDaemon
from tests.integration.conftest import cmdlines_containing
from tests.support import require_executable

_INSTALL_HINT = "apt-get install -y openssh-server"


def require_sshd() -> None:
    """The sandbox hypervisor needs OpenSSH: skip (fail under CI) without it."""
    require_executable("ssh-keygen", _INSTALL_HINT)
    require_executable("/usr/sbin/sshd", _INSTALL_HINT)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 107
    bytes), removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="fk-nd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def serving(
    directory: Path, *, config: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[NestingDaemon, NestingClient]]:
    """A sandbox daemon on ``directory/nesting.sock`` and a client of it that
    sends ``Init({})`` on demand; both closed at the end."""
    require_sshd()
    async with (
        NestingDaemon(
            "sandbox", socket_path=directory / "nesting.sock", config=config, **options
        ) as daemon,
        NestingClient(daemon.target, init_config={}, timeout=30) as client,
    ):
        yield daemon, client


def sshds_of(directory: Path) -> list[Path]:
    """The live processes whose arguments name a path under ``directory`` (the
    sandbox VMs' sshds and what runs below them)."""
    return cmdlines_containing(str(directory).encode())
