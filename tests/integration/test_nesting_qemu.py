"""The qemu hypervisor with real QEMU guests (TCG here): few boots, one image per session."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import wait_until
from fleetkit.errors import FleetkitError, HypervisorError
from fleetkit.executor import InstanceExecutor
from fleetkit.isolation import NestingClient
from fleetkit.jobs import Job, JobStatus
from fleetkit.nesting import NestingDaemon, _cpio
from fleetkit.nesting.qemu import QemuHypervisor
from tests.integration.qemu_support import (
    BuiltImage,
    qemu_image,
    qemu_processes_under,
    ssh,
)

pytestmark = [pytest.mark.integration, pytest.mark.qemu]
__all__ = ["qemu_image"]

FLEETKIT = [sys.executable, "-m", "fleetkit.cli"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio and qemu.qmp run on asyncio only


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fk-q-"))
    yield path
    for pid in qemu_processes_under(path):  # a failed test must not leave a guest running
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.anyio
async def test_jobs_run_in_separate_vms_that_reach_nothing(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    config = {"image_directory": str(qemu_image.images), "pool_size": 0, "boot_timeout": 240}
    # A listener on the host's loopback: what 10.0.2.2 would reach without restrict=on.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host_port = listener.getsockname()[1]
        listener.setblocking(False)
        async with (
            NestingDaemon("qemu", socket_path=short_dir / "n.sock", config=config) as daemon,
            NestingClient(daemon.target, timeout=300) as client,
        ):
            first = (await client.create("test")).vm
            second = (await client.create("test")).vm
            assert first.addr != second.addr
            assert first.username == second.username == qemu_image.image.user
            assert first.host_key
            assert second.host_key
            assert first.host_key != second.host_key
            assert {vm.id for vm in await client.list()} == {first.id, second.id}
            state = daemon.state_dir
            _, second_port = second.addr.rsplit(":", 1)
            probe = (
                "uname -r; hostname; test -e /etc/fleetkit/modules && echo guest-fs; "
                f"for port in 22 {host_port} {second_port}; do "
                '  if timeout 3 bash -c "echo > /dev/tcp/10.0.2.2/$port" 2>/dev/null; '
                "  then echo reached-$port; else echo blocked-$port; fi; done"
            )
            done = await anyio.to_thread.run_sync(
                lambda: ssh(qemu_image, first.addr, str(first.host_key), probe, workdir=short_dir)
            )
            assert done.returncode == 0, done.stderr
            lines = done.stdout.split()
            assert lines[0] == qemu_image.image.kernel_version != platform.release()
            assert lines[1] != socket.gethostname()
            assert lines[1].startswith("vm-")
            assert lines[2] == "guest-fs"
            assert not await anyio.Path("/etc/fleetkit/modules").exists()  # the guest's file
            assert lines[3:] == [f"blocked-{p}" for p in (22, host_port, second_port)]
            other = await anyio.to_thread.run_sync(
                lambda: ssh(
                    qemu_image, second.addr, str(second.host_key), "hostname", workdir=short_dir
                )
            )
            assert other.stdout.strip() not in ("", lines[1])
            # The pinned key is the VM's own: the other VM's key is refused.
            wrong = await anyio.to_thread.run_sync(
                lambda: ssh(qemu_image, first.addr, str(second.host_key), "true", workdir=short_dir)
            )
            assert wrong.returncode != 0
            assert "HOST IDENTIFICATION HAS CHANGED" in wrong.stderr

            await client.delete(first.id)
            assert [vm.id for vm in await client.list()] == [second.id]
            assert len(list((state / "qemu" / "q").iterdir())) >= 1
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected from a guest
    assert qemu_processes_under(state) == []
    assert not (state / "qemu" / "q").exists() or list((state / "qemu" / "q").iterdir()) == []


@pytest.mark.anyio
async def test_the_warm_pool_hands_out_each_vm_once_and_refills(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    state = short_dir / "state"
    hypervisor = QemuHypervisor(state)
    await hypervisor.init(
        {"image_directory": str(qemu_image.images), "pool_size": 1, "boot_timeout": 240}
    )
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hypervisor.run)
            with anyio.fail_after(240):
                await wait_until(lambda: hypervisor.pooled("test") == 1)
            first = await hypervisor.create("vm-a", "test")
            # Handed out from the pool: nothing was booted for it.
            assert hypervisor.pooled("test") == 0
            with anyio.fail_after(240):
                await wait_until(lambda: hypervisor.pooled("test") == 1)
            second = await hypervisor.create("vm-b", "test")
            assert hypervisor.pooled("test") == 0
            assert first.addr != second.addr
            assert first.host_key != second.host_key
            assert {vm.id for vm in await hypervisor.list()} == {"vm-a", "vm-b"}
            assert await hypervisor.status("vm-a") == "running"
            tasks.cancel_scope.cancel()  # mid-boot of the next warm VM, most likely
    finally:
        await hypervisor.delete("vm-a")
        await hypervisor.delete("vm-b")
        await hypervisor.shutdown()
    assert qemu_processes_under(state) == []
    assert not (state / "q").exists()


@pytest.mark.anyio
async def test_a_guest_that_never_boots_is_killed_at_the_timeout(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    # The same image with an init that never starts the SSH server.
    broken = short_dir / "images" / "broken"
    shutil.copytree(qemu_image.image.directory, broken)
    never = _cpio.newc([_cpio.file("etc/inittab", b"::sysinit:/bin/sleep 100000\n")])
    with (broken / "initramfs.img").open("ab") as out:
        out.write(never)
    meta = json.loads((broken / "image.json").read_text())
    (broken / "image.json").write_text(json.dumps({**meta, "name": "broken"}))
    state = short_dir / "state"
    hypervisor = QemuHypervisor(state)
    await hypervisor.init(
        {"image_directory": str(short_dir / "images"), "pool_size": 0, "boot_timeout": 4}
    )
    with pytest.raises(
        HypervisorError, match=r"vm-x from 'broken' did not boot within 4 s \(tcg|kvm\)"
    ):
        await hypervisor.create("vm-x", "broken")
    assert qemu_processes_under(state) == []
    assert list((state / "q").iterdir()) == []
    await hypervisor.shutdown()


def test_kill_9_of_the_daemon_then_a_restart_leaves_no_qemu(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    config = short_dir / "config.json"
    config.write_text(
        json.dumps({"image_directory": str(qemu_image.images), "pool_size": 1, "boot_timeout": 240})
    )
    sock = short_dir / "n.sock"
    state = Path(f"{sock}.state")

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *FLEETKIT,
                "nesting",
                "serve",
                "--hypervisor",
                "qemu",
                "--socket",
                str(sock),
                "--config",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = serve()
    try:
        # The warm pool boots a VM on its own; wait for its QEMU, then kill -9.
        anyio.run(_wait_for, lambda: bool(qemu_processes_under(state)) or first.poll() is not None)
        assert first.poll() is None, first.communicate()[1]
        left = qemu_processes_under(state)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        assert all(os.path.exists(f"/proc/{pid}") for pid in left)  # orphans of the kill
        second = serve()
        try:
            # The killed daemon's socket is still there: wait for an answer.
            anyio.run(_answers, sock, second)
            assert not any(_running(pid) for pid in left)
        finally:
            second.send_signal(signal.SIGTERM)
            _, errors = second.communicate(timeout=120)
        assert "removed 1 VM(s) a previous daemon left" in errors
        assert "guests run with TCG" in errors or "guests run with KVM" in errors
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=30)
    assert qemu_processes_under(state) == []


async def _answers(sock: Path, process: subprocess.Popen[str]) -> None:
    with anyio.fail_after(120):
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                async with NestingClient(str(sock), timeout=5) as client:
                    await client.ping()
                    return
            except FleetkitError:
                await anyio.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def _wait_for(condition: object) -> None:
    assert callable(condition)
    with anyio.fail_after(120):
        await wait_until(condition)


@pytest.mark.timeout(300)
def test_the_local_qemu_example_runs_each_job_in_a_vm(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    # The example's image "default", from this session's build.
    images = short_dir / "data" / "fleetkit" / "images"
    shutil.copytree(qemu_image.image.directory, images / "default")
    meta = json.loads((images / "default" / "image.json").read_text())
    (images / "default" / "image.json").write_text(json.dumps({**meta, "name": "default"}))
    examples = Path(__file__).parents[2] / "examples"
    logs = short_dir / "logs"
    done = subprocess.run(
        [
            *FLEETKIT,
            "run",
            str(examples / "local-qemu.toml"),
            str(examples / "jobs-qemu.toml"),
            "--plain",
            "--logs",
            str(logs),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "XDG_DATA_HOME": str(short_dir / "data")},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "3 jobs: 3 ok" in done.stdout
    output = "\n".join(p.read_text() for p in sorted(logs.iterdir()))
    assert output.count(f"kernel {qemu_image.image.kernel_version}") == 2
    assert platform.release() not in output
    assert "the host at 10.0.2.2 is out of reach" in output


@pytest.mark.timeout(300)  # boots four VMs or more: the job's, its retry's, the pools'
@pytest.mark.anyio
async def test_a_vm_that_dies_mid_job_makes_the_job_a_system_failure(
    qemu_image: BuiltImage, short_dir: Path
) -> None:
    images = short_dir / "data" / "fleetkit" / "images"
    shutil.copytree(qemu_image.image.directory, images / "default")
    meta = json.loads((images / "default" / "image.json").read_text())
    (images / "default" / "image.json").write_text(json.dumps({**meta, "name": "default"}))
    examples = Path(__file__).parents[2] / "examples"
    text = (examples / "local-qemu.toml").read_text()
    config = short_dir / "config.toml"
    config.write_text(
        text.replace(
            '      nesting = "qemu"', f'      root = "{short_dir / "i"}"\n      nesting = "qemu"'
        )
    )
    os.chmod(short_dir, 0o755)  # the instance's login user reaches its daemon's socket
    os.environ["XDG_DATA_HOME"] = str(short_dir / "data")  # the daemons' image directory
    killed: list[int] = []

    async def kill_the_job_vm() -> None:
        # Once the manager's SSH connection to a handed-out VM is up, its QEMU dies.
        with anyio.fail_after(240):
            await wait_until(lambda: _connected_vm(short_dir / "i") is not None, interval=0.05)
        pid = _connected_vm(short_dir / "i")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    try:
        async with (
            InstanceExecutor.from_config(config) as executor,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(kill_the_job_vm)
            result = await executor.run(Job(id=1, name="doomed", shell="bash", script="sleep 6"))
    finally:
        del os.environ["XDG_DATA_HOME"]
    assert killed
    # Retried once (the executor's default) in another, fresh VM, which succeeds.
    assert result.status is JobStatus.SUCCESS, result.message
    (lost,) = result.earlier
    assert lost.status is JobStatus.SYSTEM_FAILURE, lost.message
    assert qemu_processes_under(short_dir) == []


def _connected_vm(root: Path) -> int | None:
    """The QEMU of a handed-out VM under ``root`` with an established TCP
    connection to its forwarded SSH port, or None."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01":  # ESTABLISHED
            established.add(int(fields[1].rsplit(":", 1)[1], 16))
    for vm_id in root.rglob("q/*/id"):
        for pid in qemu_processes_under(vm_id.parent):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            except OSError:
                continue
            port = args.split("hostfwd=tcp:127.0.0.1:", 1)[1].split("-", 1)[0]
            if int(port) in established:
                return pid
    return None
