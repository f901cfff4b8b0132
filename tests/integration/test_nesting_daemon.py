"""The nesting daemon's semantics over real gRPC on a real unix socket, sandbox hypervisor."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import anyio
import anyio.lowlevel
import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message

from fleetkit._nesting_proto import METHODS, nesting_pb2
from fleetkit._procs import exists, wait_until
from fleetkit.errors import (
    AlreadyInitialized,
    NestingError,
    NotInitialized,
    VMNotFound,
)
from fleetkit.isolation import NestingClient
from fleetkit.nesting import NestingDaemon
from fleetkit.nesting.sandbox import SandboxHypervisor
from fleetkit.testing.nesting import MemoryHypervisor
from tests.integration.nesting_support import serving, short_dir, sshds_of

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
__all__ = ["short_dir"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio runs on asyncio only


async def _raw(
    target: str, rpc: str, request: Message, response: type[Message]
) -> grpc.aio.AioRpcError:
    """Call ``rpc`` with plain grpc (no fleetkit client) and return its error."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = channel.unary_unary(
            METHODS[rpc],
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, timeout=10)
    return caught.value


async def test_every_verb_but_init_is_refused_until_init(short_dir: Path) -> None:
    """FAILED_PRECONDITION 'not initialized' on the wire, byte for byte GitLab's."""
    async with serving(short_dir) as (daemon, _):
        for rpc, request, response in [
            ("Create", nesting_pb2.CreateRequest(name="default"), nesting_pb2.CreateResponse),
            ("Delete", nesting_pb2.DeleteRequest(id="vm-x"), nesting_pb2.DeleteResponse),
            ("List", nesting_pb2.ListRequest(), nesting_pb2.ListResponse),
            ("Shutdown", nesting_pb2.ShutdownRequest(), nesting_pb2.ShutdownResponse),
        ]:
            error = await _raw(daemon.target, rpc, request, response)
            assert (error.code(), error.details()) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "not initialized",
            ), rpc
        async with NestingClient(daemon.target) as plain:
            with pytest.raises(NotInitialized):
                await plain.list()
            await plain.init({})
            assert await plain.list() == []
        error = await _raw(
            daemon.target, "Init", nesting_pb2.InitRequest(config=b"{}"), nesting_pb2.InitResponse
        )
        assert (error.code(), error.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "already initialized",
        )
        assert sshds_of(daemon.state_dir) == []


async def test_bad_init_config_leaves_the_daemon_uninitialized(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, _), NestingClient(daemon.target) as plain:
        for config, message in [
            (b"not json", "not JSON"),
            (b"[1]", "must be a JSON object"),
            (b'{"max_vms": 0}', "config.max_vms: expected a positive integer"),
            (b'{"colour": "red"}', "config.colour: unknown key"),
        ]:
            with pytest.raises(NestingError, match=message) as caught:
                await plain.init(config)
            assert caught.value.code == "INVALID_ARGUMENT"
        with pytest.raises(NotInitialized):
            await plain.list()
        await plain.init({"max_vms": 1})
        with pytest.raises(AlreadyInitialized):
            await plain.init({})


async def test_slot_stomping_and_delete_frees_the_slot(short_dir: Path) -> None:
    async with serving(short_dir) as (_daemon, client):
        first = await client.create("default", slot=1)
        assert first.stomped_vm_id is None
        other_slot = await client.create("default", slot=2)
        no_slot = await client.create("default")
        second = await client.create("default", slot=1)
        assert second.stomped_vm_id == first.vm.id
        listed = {vm.id for vm in await client.list()}
        assert listed == {second.vm.id, other_slot.vm.id, no_slot.vm.id}
        assert not await _accepts(first.vm.addr), "the stomped VM's sshd still listens"

        await client.delete(second.vm.id)
        third = await client.create("default", slot=1)
        assert third.stomped_vm_id is None, "Delete did not free the slot"
        # A VM made without a slot is never stomped.
        again = await client.create("default")
        assert again.stomped_vm_id is None
        assert no_slot.vm.id in {vm.id for vm in await client.list()}
        with pytest.raises(VMNotFound):
            await client.delete(second.vm.id)


async def test_concurrent_creates_in_one_slot_leave_one_vm(short_dir: Path) -> None:
    async with serving(short_dir) as (_, client):
        results = []

        async def create() -> None:
            results.append(await client.create("default", slot=7))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(create)
        assert len(await client.list()) == 1
        assert sorted(r.stomped_vm_id is None for r in results) == [False, False, True]


async def test_shutdown_deletes_every_vm_and_the_daemon_serves_on(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, client):
        made = [await client.create("default", slot=n) for n in range(3)]
        assert len(sshds_of(daemon.state_dir)) >= 3
        await client.shutdown()
        assert await client.list() == []
        assert sshds_of(daemon.state_dir) == []
        for result in made:
            assert not await _accepts(result.vm.addr)
        after = await client.create("default", slot=0)
        assert after.stomped_vm_id is None


async def test_stopping_deletes_every_vm_and_removes_socket_and_state(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, client):
        for n in range(2):
            await client.create("default", slot=n)
        socket = daemon.socket_path
        info = socket.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        state = daemon.state_dir
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert sshds_of(state) == []
    assert not socket.exists()
    assert not state.exists()
    assert os.listdir(short_dir) == []


async def _accepts(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        stream = await anyio.connect_tcp(host, int(port))
    except OSError:
        return False
    await stream.aclose()
    return True


async def test_list_drops_a_vm_whose_sshd_died_and_frees_its_slot(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, client):
        made = await client.create("default", slot=4)
        kept = await client.create("default", slot=5)
        pid = _sshd_pid(daemon.state_dir, made.vm.id)
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(10):
            await wait_until(lambda: not exists(pid))
        assert [vm.id for vm in await client.list()] == [kept.vm.id]
        again = await client.create("default", slot=4)
        assert again.stomped_vm_id is None, "the dead VM's slot was not freed"
        with pytest.raises(VMNotFound):
            await client.delete(made.vm.id)


async def test_concurrent_inits_one_wins(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, _):
        outcomes: list[str] = []

        async def init() -> None:
            async with NestingClient(daemon.target) as plain:
                try:
                    await plain.init({})
                    outcomes.append("ok")
                except AlreadyInitialized:
                    outcomes.append("already")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(init)
        assert sorted(outcomes) == ["already", "already", "already", "ok"]


class HangingDeletes(SandboxHypervisor):
    """The real sandbox, except that deleting a VM hangs first (a hung guest)."""

    async def delete(self, vm_id: str) -> None:
        await anyio.sleep_forever()


async def test_a_hanging_delete_is_bounded_and_the_next_start_recovers(short_dir: Path) -> None:
    socket = short_dir / "nesting.sock"
    hung: list[HangingDeletes] = []

    def factory(state_dir: Path) -> HangingDeletes:
        hung.append(HangingDeletes(state_dir))
        return hung[-1]

    async with (
        NestingDaemon(
            factory, socket_path=socket, config={}, delete_timeout=0.5, stop_timeout=2
        ) as daemon,
        NestingClient(daemon.target) as client,
    ):
        first = await client.create("default", slot=0)
        with pytest.raises(
            NestingError, match=r"did not finish in time \(0\.5s at most\)"
        ) as caught:
            await client.delete(first.vm.id)
        assert caught.value.code == "INTERNAL"
        second = await client.create("default", slot=0)
        assert second.stomped_vm_id is None, "a failed delete still frees the slot"
        state = daemon.state_dir
    # The stop's deletes hang too: bounded, and what is left stays for recovery.
    assert len(sshds_of(state)) >= 1
    # A daemon given a factory keeps its hypervisor's state in STATE/hypervisor.
    async with NestingDaemon(SandboxHypervisor, socket_path=socket, state_dir=state) as again:
        pass
    assert sorted(again.recovered) == sorted([first.vm.id, second.vm.id])
    assert sshds_of(state) == []
    # Both "daemons" ran in this process: reap the sshds the hung one started.
    for vm_id in (first.vm.id, second.vm.id):
        await SandboxHypervisor.delete(hung[0], vm_id)


def _sshd_pid(state: Path, vm_id: str) -> int:
    record = json.loads((state / "sandbox" / "vms" / f"{vm_id}.json").read_text())
    pid: int = record["pid"]
    return pid


async def test_requests_no_daemon_could_serve_are_invalid_argument(short_dir: Path) -> None:
    async with serving(short_dir) as (daemon, client):
        await client.init(exist_ok=True)
        for request in (
            nesting_pb2.CreateRequest(name="default", slot=-1),
            nesting_pb2.CreateRequest(name=""),
        ):
            error = await _raw(daemon.target, "Create", request, nesting_pb2.CreateResponse)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert await client.list() == []


class Pooled(MemoryHypervisor):
    """A hypervisor with background work (a warm pool's refill loop, say)."""

    events: list[str]
    fail = False

    async def run(self) -> None:
        self.events.append("run")
        try:
            if self.fail:
                raise RuntimeError("pool refill broke")
            await anyio.sleep_forever()
        finally:
            self.events.append("run ended")

    async def shutdown(self) -> None:
        self.events.append("shutdown")
        await super().shutdown()


@pytest.mark.parametrize("fail", [False, True])
async def test_background_work_runs_from_init_to_stop(short_dir: Path, fail: bool) -> None:
    made: list[Pooled] = []

    def factory(state_dir: Path) -> Pooled:
        hypervisor = Pooled(state_dir)
        hypervisor.events, hypervisor.fail = [], fail
        made.append(hypervisor)
        return hypervisor

    async with (
        NestingDaemon(factory, socket_path=short_dir / "nesting.sock") as daemon,
        NestingClient(daemon.target, init_config={}) as client,
    ):
        (hypervisor,) = made
        assert hypervisor.events == [], "background work before Init"
        await client.create("default")
        await wait_until(lambda: "run" in hypervisor.events)
        assert len(await client.list()) == 1, "the daemon serves on"
        with anyio.move_on_after(60):  # stop() from inside other scopes of the caller's
            await daemon.stop()
        assert await _still_running_after_stop(), "stop() cancelled the caller's block"
    expected = ["run", "run ended", "shutdown"]
    assert hypervisor.events == expected, "cancelled before the VMs go and shutdown"


async def _still_running_after_stop() -> bool:
    await anyio.lowlevel.checkpoint()
    return True


async def test_start_and_stop_without_async_with(short_dir: Path) -> None:
    """Direct start()/stop(): serves and stops; background work is not run."""
    hypervisor = Pooled(short_dir)
    hypervisor.events = []
    daemon = NestingDaemon(lambda _: hypervisor, socket_path=short_dir / "n.sock", config={})
    await daemon.start()
    try:
        async with NestingClient(daemon.target) as client:
            await client.create("default")
    finally:
        await daemon.stop()
    assert hypervisor.events == ["shutdown"]
    assert not daemon.socket_path.exists()


async def test_a_cancelled_stop_still_deletes_every_vm(short_dir: Path) -> None:
    """Ctrl-C in the middle of an embedding program: the daemon's teardown still runs."""
    with anyio.CancelScope() as scope:
        async with serving(short_dir) as (daemon, client):
            await client.create("default", slot=0)
            state = daemon.state_dir
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation arrives here
    assert scope.cancelled_caught
    assert sshds_of(state) == []
    assert not daemon.socket_path.exists()


async def test_an_error_in_the_block_goes_out_as_raised(short_dir: Path) -> None:
    with pytest.raises(LookupError, match="mine"):
        async with serving(short_dir):
            raise LookupError("mine")
