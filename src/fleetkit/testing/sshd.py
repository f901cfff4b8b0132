"""A real OpenSSH server for tests, with a client key and the matching connect info.

Pytest-free building blocks, so a user's own test suite can test code that uses
:class:`fleetkit.connector.ssh.SSHConnector` against a real sshd::

    async with running_sshd(tmp_path) as server:
        async with SSHConnector().connect(server.connect_info()) as conn:
            result = await conn.run("echo hi")

The daemon itself is :class:`SSHDaemon` (``SSHDaemon.start(workdir,
authorized_keys=[...])``, ``stop()``; an async context manager too), with
:func:`generate_keypair` for client keys and :func:`ensure_login_user`, the one
change it makes to the machine: a dedicated login user when running as root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import attrs

from fleetkit._sshd import SSHDaemon, SSHDaemonError, ensure_login_user, generate_keypair
from fleetkit.model import ConnectInfo, mask_secret

__all__ = [
    "ClientKey",
    "SSHDaemon",
    "SSHDaemonError",
    "TestSSHD",
    "ensure_login_user",
    "ensure_password_user",
    "generate_keypair",
    "new_client_key",
    "running_sshd",
]


@attrs.frozen
class ClientKey:
    """A client key pair on disk: ``private_key`` bytes (masked in repr), the
    public key line and the private key's path."""

    path: Path
    public_key: str
    private_key: bytes = attrs.field(repr=mask_secret)


async def new_client_key(path: Path) -> ClientKey:
    """Generate an ed25519 client key pair at ``path``."""
    private, public = await anyio.to_thread.run_sync(generate_keypair, path)
    return ClientKey(path=path, public_key=public, private_key=private)


@attrs.define
class TestSSHD:
    """A running test sshd plus the client key it trusts."""

    __test__ = False  # not a pytest test class despite the name

    daemon: SSHDaemon
    client_key: ClientKey
    password: str | None = attrs.field(default=None, repr=mask_secret)

    def ssh_command(self, command: str, *, key_path: Path | None = None) -> list[str]:
        """argv of the OpenSSH client running ``command`` on this server as its
        login user (batch mode, host key not recorded)."""
        return [
            "ssh",
            "-i",
            str(key_path or self.client_key.path),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(self.daemon.port),
            f"{self.daemon.login_user}@{self.daemon.address}",
            command,
        ]

    def connect_info(
        self,
        instance_id: str = "sshd-0",
        *,
        use_key: bool = True,
        username: str | None = None,
        **overrides: object,
    ) -> ConnectInfo:
        """Connect info reaching this server as its login user, with the client
        key (or, ``use_key=False``, the password). ``overrides`` replace fields."""
        fields: dict[str, object] = {
            "id": instance_id,
            "internal_addr": self.daemon.address,
            "protocol_port": self.daemon.port,
            "username": username or self.daemon.login_user,
            "key": self.client_key.private_key if use_key else None,
            "password": None if use_key else self.password,
        }
        fields.update(overrides)
        return ConnectInfo(**fields)  # type: ignore[arg-type]


def ensure_password_user(name: str, password: str) -> str:
    """As root: ensure the login user ``name`` exists and set its password
    (``chpasswd``), for password-login tests. Blocking; returns ``name``."""
    if os.geteuid() != 0:
        raise SSHDaemonError("setting a login password needs root")
    ensure_login_user(name)
    done = subprocess.run(
        ["chpasswd"], input=f"{name}:{password}\n".encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SSHDaemonError(f"chpasswd for {name} failed")
    return name


@asynccontextmanager
async def running_sshd(
    workdir: Path,
    *,
    login_user: str | None = None,
    password: str | None = None,
    port: int = 0,
    extra_config: Mapping[str, str] = {},
) -> AsyncIterator[TestSSHD]:
    """Start a throwaway sshd in ``workdir`` trusting a fresh client key, yield it,
    and stop it (and every session process under it) on exit.

    With ``password``, password authentication is on; the login user must
    have that password (see :func:`ensure_password_user`).
    """
    await anyio.Path(workdir).mkdir(parents=True, exist_ok=True)
    key = await new_client_key(workdir / "client_ed25519")
    daemon = await SSHDaemon.start(
        workdir / "sshd",
        address="127.0.0.1",
        port=port,
        login_user=login_user,
        authorized_keys=[key.public_key],
        password_auth=password is not None,
        extra_config=extra_config,
    )
    try:
        yield TestSSHD(daemon=daemon, client_key=key, password=password)
    finally:
        await daemon.stop()
