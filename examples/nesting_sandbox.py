"""Run a nesting daemon with the sandbox hypervisor, make a VM, log in to it, delete it.

Run: ``python examples/nesting_sandbox.py`` (needs ``/usr/sbin/sshd`` and the
``isolation`` extra; as root each VM logs in as a user of its own,
``fleetkit-vN``, made on first use and reported by the daemon).

The same client code works against a daemon on an instance (``fleetkit
nesting serve --hypervisor sandbox`` there, reached through the instance's SSH
connection) or against GitLab's own nesting daemon. The sandbox isolates
nothing: a sandbox "VM" is a directory and an sshd on this host.
"""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path

import anyio

from fleetkit.connector.ssh import SSHConnector
from fleetkit.isolation import NestingClient
from fleetkit.model import ConnectInfo
from fleetkit.nesting import NestingDaemon
from fleetkit.testing.sshd import generate_keypair


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fk-nesting-") as tmp:
        workdir = Path(tmp)
        private_key, public_key = await anyio.to_thread.run_sync(
            generate_keypair, workdir / "client_ed25519"
        )
        # What a manager sends as Init (vm_isolation.nesting_config): the key
        # its connector logs in to each VM with.
        nesting_config = {"authorized_keys": [public_key]}
        async with (
            NestingDaemon("sandbox", socket_path=workdir / "nesting.sock") as daemon,
            NestingClient(daemon.target, init_config=nesting_config) as nesting,
        ):
            created = await nesting.create("default", slot=0)  # Init is sent on demand
            vm = created.vm
            print(f"created {vm.id} from image {vm.name!r} at {vm.addr}")
            host, _, port = vm.addr.rpartition(":")
            info = ConnectInfo(
                id=vm.id,
                internal_addr=host,
                protocol_port=int(port),
                # The daemon names the VM's own login user when it chose one.
                username=vm.username or getpass.getuser(),
                key=private_key,
                host_key=vm.host_key,  # the daemon reported it: pinned, not trusted on first use
            )
            async with SSHConnector(dial_timeout=10) as ssh, ssh.connect(info) as conn:
                result = await conn.run("echo hello from $(id -un) in a sandbox VM", timeout=10)
            print(f"in the VM: {result.stdout_text.strip()} (exit code {result.exit_code})")

            again = await nesting.create("default", slot=0)
            print(f"slot 0 again: {again.vm.id}, stomped {again.stomped_vm_id}")
            await nesting.delete(again.vm.id)
            print(f"VMs left: {await nesting.list()}")


if __name__ == "__main__":
    anyio.run(main)
