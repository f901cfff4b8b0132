"""An "instance" for the isolation tests: a real sshd plus a real nesting daemon behind it.

The daemon (``sandbox`` hypervisor) serves a unix socket that only its own
user may open; the instance's sshd therefore logs in as that user (root under
CI, whose interpreter other users cannot run here). The manager reaches the
daemon only through the SSH connection, as in production.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from fleetkit._sshd import ensure_login_user
from fleetkit.connector.ssh import SSHConnector
from fleetkit.isolation import IsolationSettings, Isolator, NestingClient
from fleetkit.model import ConnectInfo, ConnectorConfig
from fleetkit.nesting import NestingDaemon
from fleetkit.nesting.sandbox import SandboxHypervisor
from fleetkit.testing.sshd import TestSSHD, running_sshd
from tests.integration.conftest import cmdlines_containing
from tests.support import require_executable

_INSTALL_HINT = "apt-get install -y openssh-server"


@attrs.define
class Instance:
    """A test instance: its sshd, its daemon, how to reach it, and where its VMs live."""

    sshd: TestSSHD
    daemon: NestingDaemon
    socket: Path
    vm_dir: Path
    vm_user: str

    def info(self, instance_id: str = "inst-1") -> ConnectInfo:
        """Connect info of the instance (not of its daemon, which is not dialled)."""
        return self.sshd.connect_info(instance_id)

    def settings(self, **overrides: Any) -> IsolationSettings:
        """Isolation settings reaching this daemon, whose VMs trust the manager's
        key for their login user (the instance's key is used: no key_path)."""
        fields: dict[str, Any] = {
            "nesting_host": f"unix://{self.socket}",
            "nesting_config": {
                "authorized_keys": [self.sshd.client_key.public_key],
                "working_directory": str(self.vm_dir),
                "username": self.vm_user,
            },
            "connector_config": ConnectorConfig(username=self.vm_user),
            "image": "default",
            "delete_timeout": 20.0,
            "call_timeout": 20.0,
        }
        fields.update(overrides)
        return IsolationSettings(**fields)

    def client(self) -> NestingClient:
        """A client of the daemon dialled directly (for checking what it holds)."""
        return NestingClient(self.daemon.target, init_config=self.settings().nesting_config)

    def vm_processes(self) -> list[Path]:
        """Live processes running from the VMs' directories."""
        return cmdlines_containing(str(self.vm_dir).encode())


def require_sshd() -> None:
    """sshd and ssh-keygen, or skip (fail under CI)."""
    require_executable("ssh-keygen", _INSTALL_HINT)
    require_executable("/usr/sbin/sshd", _INSTALL_HINT)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fk-iso-"))
    path.chmod(0o755)  # the VMs' login user enters the working directory below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_instance(directory: Path) -> AsyncIterator[Instance]:
    """A real sshd logging in as this user and a sandbox nesting daemon of this user."""
    require_sshd()
    root = os.geteuid() == 0
    login = "root" if root else None
    vm_user = await anyio.to_thread.run_sync(ensure_login_user) if root else getpass.getuser()
    vm_dir = directory / "vms"
    vm_dir.mkdir(mode=0o755)
    socket = directory / "run" / "nesting.sock"
    async with (
        running_sshd(directory / "sshd", login_user=login) as sshd,
        NestingDaemon(
            SandboxHypervisor, socket_path=socket, state_dir=directory / "state"
        ) as daemon,
    ):
        yield Instance(sshd=sshd, daemon=daemon, socket=socket, vm_dir=vm_dir, vm_user=vm_user)


@asynccontextmanager
async def isolator_for(instance: Instance, **overrides: Any) -> AsyncIterator[Isolator]:
    """An isolator for ``instance`` whose VM connector has short timeouts."""
    async with (
        SSHConnector(dial_timeout=15, retry_interval=0.05, keepalive=5) as vms,
        Isolator(instance.settings(**overrides), vm_connector=vms) as isolator,
    ):
        yield isolator
