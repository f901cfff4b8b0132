"""Start a throwaway OpenSSH server, connect to it with fleetkit, run a command.

Run: ``python examples/ssh_run.py`` (needs ``/usr/sbin/sshd``; as root it logs in
as a dedicated ``fleetkit`` user with shell /bin/sh, created on first use).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from fleetkit.connector.ssh import SSHConnector
from fleetkit.model import ConnectInfo
from fleetkit.testing.sshd import SSHDaemon, generate_keypair


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetkit-example-") as tmp:
        workdir = Path(tmp)
        private_key, public_key = await anyio.to_thread.run_sync(
            generate_keypair, workdir / "client_ed25519"
        )
        async with await SSHDaemon.start(workdir / "sshd", authorized_keys=[public_key]) as sshd:
            info = ConnectInfo(
                id="example-0",
                internal_addr=sshd.address,
                protocol_port=sshd.port,
                username=sshd.login_user,
                key=private_key,
                host_key=sshd.host_public_key,  # checked during the handshake
            )
            async with SSHConnector(dial_timeout=10) as ssh, ssh.connect(info) as conn:
                result = await conn.run(
                    ["sh", "-c", 'echo "hello from $(id -un) on $(hostname): $GREETING"'],
                    env={"GREETING": "it's $safe; `quoted`"},
                    timeout=10,
                )
    print(f"exit code: {result.exit_code}")
    print(f"stdout: {result.stdout_text.strip()}")


if __name__ == "__main__":
    anyio.run(main)
