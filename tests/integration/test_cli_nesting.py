"""``fleetkit nesting``: the daemon and the client verbs as processes, signals, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from fleetkit._procs import wait_until
from fleetkit.isolation import NestingClient
from fleetkit.nesting import NestingDaemon
from tests.integration.nesting_support import require_sshd, short_dir, sshds_of

pytestmark = [pytest.mark.integration]
__all__ = ["short_dir"]

FLEETKIT = [sys.executable, "-m", "fleetkit.cli"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio runs on asyncio only


def fleetkit(*args: str, socket: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NESTING_SOCKET": str(socket)}
    return subprocess.run(
        [*FLEETKIT, "nesting", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@contextmanager
def daemon_process(socket: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """``fleetkit nesting serve --hypervisor sandbox`` on ``socket``, ready; killed at the end."""
    require_sshd()
    process = subprocess.Popen(
        [*FLEETKIT, "nesting", "serve", "--hypervisor", "sandbox", "--socket", str(socket), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        anyio.run(_wait_ready, socket, process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


async def _wait_ready(socket: Path, process: subprocess.Popen[str]) -> None:
    with anyio.fail_after(30):
        await wait_until(lambda: socket.exists() or process.poll() is not None)
    assert process.poll() is None, process.communicate()[1]
    async with NestingClient(str(socket), timeout=10) as client:
        await client.ping()


def test_client_verbs_end_to_end(short_dir: Path) -> None:
    socket = short_dir / "nesting.sock"
    absent = fleetkit("list", socket=socket)
    assert absent.returncode == 3
    assert absent.stderr.startswith("fleetkit nesting list: nesting daemon at unix:")
    assert len(absent.stderr.splitlines()) == 1
    config = short_dir / "config.json"
    config.write_text(json.dumps({"max_vms": 4}))
    with daemon_process(socket) as process:
        early = fleetkit("create", "default", socket=socket)
        assert (early.returncode, early.stdout) == (1, "")
        assert early.stderr.strip().endswith("Create failed: FAILED_PRECONDITION: not initialized")

        bad = short_dir / "bad.json"
        bad.write_text("{nope")
        refused = fleetkit("init", "--config", str(bad), socket=socket)
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"fleetkit nesting init: {bad} is not JSON")

        assert fleetkit("init", "--config", str(config), socket=socket).returncode == 0
        again = fleetkit("init", socket=socket)
        assert again.returncode == 1
        assert "already initialized" in again.stderr

        made = fleetkit("create", "default", "--slot", "1", socket=socket)
        assert made.returncode == 0, made.stderr
        vm_id, name, addr = made.stdout.strip().split("\t")
        assert name == "default"
        assert addr.startswith("127.0.0.1:")
        stomp = fleetkit("create", "default", "--slot", "1", "--json", socket=socket)
        record = json.loads(stomp.stdout)
        assert record["stomped_vm_id"] == vm_id
        assert record["host_key"].startswith("ssh-ed25519 ")

        listed = fleetkit("list", "--json", socket=socket)
        assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [record["id"]]
        gone = fleetkit("delete", vm_id, socket=socket)
        assert gone.returncode == 1
        assert "NOT_FOUND" in gone.stderr
        assert fleetkit("delete", record["id"], socket=socket).returncode == 0
        fleetkit("create", "default", socket=socket)
        assert fleetkit("shutdown", socket=socket).returncode == 0
        assert fleetkit("list", socket=socket).stdout == ""

        usage = fleetkit("create", "default", "--slot", "-2", socket=socket)
        assert usage.returncode == 2
        assert process.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_and_deletes_every_vm(
    short_dir: Path, signum: signal.Signals
) -> None:
    socket = short_dir / "nesting.sock"
    config = short_dir / "config.json"
    config.write_text("{}")
    with daemon_process(socket, "--config", str(config)) as process:
        for slot in ("0", "1"):
            assert fleetkit("create", "default", "--slot", slot, socket=socket).returncode == 0
        state = Path(f"{socket}.state")
        assert len(sshds_of(state)) >= 2
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    assert sshds_of(state) == []
    assert sorted(os.listdir(short_dir)) == ["config.json"]


def test_after_kill_9_the_next_daemon_removes_the_vms_left(short_dir: Path) -> None:
    socket = short_dir / "nesting.sock"
    state = Path(f"{socket}.state")
    config = short_dir / "config.json"
    config.write_text("{}")
    with daemon_process(socket, "--config", str(config)) as process:
        ids = []
        for slot in ("0", "1"):
            made = fleetkit("create", "default", "--slot", slot, socket=socket)
            ids.append(made.stdout.split("\t")[0])
        # Killed between the sshd's start and the record of its pid: as the
        # first record would read then.
        record = state / "sandbox" / "vms" / f"{ids[0]}.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "pid": None}))
        process.kill()
        process.wait(timeout=30)
    left = sshds_of(state)
    assert len(left) >= 2, (
        "the killed daemon's sshds should still run (else this test proves nothing)"
    )
    recovered = anyio.run(_restart, socket, state)
    assert sorted(recovered) == sorted(ids)
    assert sshds_of(state) == []
    assert sorted(os.listdir(short_dir)) == ["config.json"]


async def _restart(socket: Path, state: Path) -> list[str]:
    async with NestingDaemon("sandbox", socket_path=socket) as daemon:
        assert sshds_of(state) == []
        async with NestingClient(daemon.target, init_config={}) as client:
            assert await client.list() == []
        return daemon.recovered


def test_serve_reports_bad_input_in_one_line(short_dir: Path) -> None:
    socket = short_dir / "nesting.sock"
    unknown = subprocess.run(
        [*FLEETKIT, "nesting", "serve", "--hypervisor", "xen", "--socket", str(socket)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "fleetkit nesting serve: no hypervisor named 'xen'; installed: qemu, sandbox\n"
    )
    config = short_dir / "config.json"
    config.write_text('{"max_vms": "many", "colour": 1}')
    bad = subprocess.run(
        [
            *FLEETKIT,
            "nesting",
            "serve",
            "--hypervisor",
            "sandbox",
            "--socket",
            str(socket),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == (
        "fleetkit nesting serve: --config: config.colour: unknown key; the sandbox hypervisor "
        "takes address, authorized_keys, image_directory, max_vms, username, working_directory; "
        "config.max_vms: expected a positive integer, got 'many'"
    )
    assert sorted(os.listdir(short_dir)) == ["config.json"]


def test_without_the_isolation_extra_the_verbs_say_what_to_install(short_dir: Path) -> None:
    blocked = (
        "import sys\n"
        "sys.modules['grpc'] = None  # as if grpcio were not installed\n"
        "from fleetkit.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for verb in (["list"], ["serve", "--hypervisor", "sandbox"]):
        done = subprocess.run(
            [sys.executable, "-c", blocked, "nesting", *verb, "--socket", str(short_dir / "n")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert done.stderr.startswith(
            f"fleetkit nesting {verb[0]}: needs the isolation extra "
            "(pip install 'fleetkit[isolation]')"
        )
        assert len(done.stderr.splitlines()) == 1
