"""fleetkit.isolation.NestingClient against a real gRPC server on a real unix socket.

The server here is a scripted servicer (grpc.aio, the generated base class), so
each test can make the daemon answer what GitLab's daemon would: the client's
error translation and its Init-on-demand flow are what is under test. The
daemon of fleetkit.nesting has its own tests.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from fleetkit._nesting_proto import nesting_pb2, nesting_pb2_grpc
from fleetkit.errors import (
    AlreadyInitialized,
    ImageNotFound,
    IsolationError,
    NestingError,
    NestingUnavailable,
    NotInitialized,
    VMNotFound,
)
from fleetkit.isolation import HOST_KEY_METADATA, CreateResult, NestingClient, VirtualMachine

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio runs on asyncio only


class Scripted(nesting_pb2_grpc.NestingServicer):
    """A daemon that records calls and answers from a script."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.initialized = False
        self.always_uninitialized = False
        self.lose_init_race = False

    async def _gate(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.always_uninitialized or not self.initialized:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not initialized")

    async def Init(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls.append(("Init", request.config))
        if self.lose_init_race:
            self.initialized = True
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "already initialized")
        if self.initialized:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "already initialized")
        self.initialized = True
        return nesting_pb2.InitResponse()

    async def Create(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls.append(
            ("Create", (request.name, request.slot if request.HasField("slot") else None))
        )
        await self._gate(context)
        if request.name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "image 'missing' not found")
        if request.name == "broken":
            await context.abort(grpc.StatusCode.INTERNAL, "hypervisor exploded")
        context.set_trailing_metadata(((HOST_KEY_METADATA, f"vm-1 {KEY}"),))
        response = nesting_pb2.CreateResponse(
            vm=nesting_pb2.VirtualMachine(id="vm-1", name=request.name, addr="127.0.0.1:2222")
        )
        if request.HasField("slot"):
            response.stompedVmId = "vm-0"
        return response

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls.append(("Delete", request.id))
        await self._gate(context)
        if request.id != "vm-1":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no VM {request.id}")
        return nesting_pb2.DeleteResponse()

    async def List(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls.append(("List", None))
        await self._gate(context)
        return nesting_pb2.ListResponse(
            vms=[nesting_pb2.VirtualMachine(id="vm-1", name="alpine", addr="127.0.0.1:2222")]
        )

    async def Shutdown(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls.append(("Shutdown", None))
        await self._gate(context)
        return nesting_pb2.ShutdownResponse()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="fk-nc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(short_dir: Path) -> AsyncIterator[tuple[Scripted, str]]:
    servicer = Scripted()
    server = grpc.aio.server()
    nesting_pb2_grpc.add_NestingServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    socket = short_dir / "nesting.sock"
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    try:
        yield servicer, str(socket)
    finally:
        await server.stop(None)


@pytest.mark.anyio
async def test_create_sends_init_on_demand_and_retries_once(daemon: tuple[Scripted, str]) -> None:
    """GitLab's flow: not initialized -> Init(config JSON) -> the call again."""
    servicer, socket = daemon
    async with NestingClient(f"unix:{socket}", init_config={"image_directory": "/srv"}) as client:
        result = await client.create("alpine", slot=2)
    assert result == CreateResult(
        vm=VirtualMachine(id="vm-1", name="alpine", addr="127.0.0.1:2222", host_key=KEY),
        stomped_vm_id="vm-0",
    )
    assert servicer.calls == [
        ("Create", ("alpine", 2)),
        ("Init", b'{"image_directory":"/srv"}'),
        ("Create", ("alpine", 2)),
    ]


@pytest.mark.anyio
async def test_already_initialized_during_the_retry_counts_as_success(
    daemon: tuple[Scripted, str],
) -> None:
    servicer, socket = daemon
    servicer.lose_init_race = True
    async with NestingClient(socket, init_config={}) as client:
        vms = await client.list()
    assert [vm.id for vm in vms] == ["vm-1"]
    assert [name for name, _ in servicer.calls] == ["List", "Init", "List"]


@pytest.mark.anyio
async def test_only_one_retry(daemon: tuple[Scripted, str]) -> None:
    """A daemon that stays uninitialized gets one Init and one retry, then the error."""
    servicer, socket = daemon
    servicer.always_uninitialized = True
    async with NestingClient(socket, init_config={}) as client:
        with pytest.raises(NotInitialized, match="Create failed: FAILED_PRECONDITION"):
            await client.create("alpine")
    assert [name for name, _ in servicer.calls] == ["Create", "Init", "Create"]


@pytest.mark.anyio
async def test_without_init_config_not_initialized_reaches_the_caller(
    daemon: tuple[Scripted, str],
) -> None:
    servicer, socket = daemon
    async with NestingClient(socket) as client:
        with pytest.raises(NotInitialized) as caught:
            await client.delete("vm-1")
        await client.ping()  # an answer, even "not initialized", is a live daemon
    assert caught.value.rpc == "Delete"
    assert caught.value.code == "FAILED_PRECONDITION"
    assert isinstance(caught.value, IsolationError)
    assert [name for name, _ in servicer.calls] == ["Delete", "List"]


@pytest.mark.anyio
async def test_second_init_is_already_initialized(daemon: tuple[Scripted, str]) -> None:
    _, socket = daemon
    async with NestingClient(socket) as client:
        await client.init({"x": 1})
        with pytest.raises(AlreadyInitialized):
            await client.init()
        await client.init(exist_ok=True)


@pytest.mark.anyio
async def test_errors_are_translated(daemon: tuple[Scripted, str]) -> None:
    servicer, socket = daemon
    servicer.initialized = True
    async with NestingClient(socket) as client:
        with pytest.raises(VMNotFound, match="no VM vm-9"):
            await client.delete("vm-9")
        with pytest.raises(ImageNotFound, match="image 'missing' not found"):
            await client.create("missing")
        with pytest.raises(NestingError) as caught:
            await client.create("broken")
        assert type(caught.value) is NestingError
        assert caught.value.code == "INTERNAL"
        assert str(caught.value) == (
            f"nesting daemon at unix:{socket}: Create failed: INTERNAL: hypervisor exploded"
        )
        await client.delete("vm-1")
        await client.shutdown()
        result = await client.create("alpine")
    assert result.stomped_vm_id is None


@pytest.mark.anyio
async def test_no_daemon_is_unavailable(short_dir: Path) -> None:
    async with NestingClient(f"unix:{short_dir}/absent.sock", timeout=5) as client:
        with pytest.raises(NestingUnavailable, match="unreachable"):
            await client.list()
        with pytest.raises(NestingUnavailable):
            await client.ping()


@pytest.mark.anyio
async def test_init_config_is_not_in_the_repr() -> None:
    client = NestingClient("unix:/nonexistent.sock", init_config={"license_key": "s3cret-licence"})
    try:
        assert "s3cret" not in repr(client)
    finally:
        await client.aclose()
    with pytest.raises(NestingUnavailable, match="closed"):
        await client.list()


@pytest.mark.anyio
async def test_from_channel_leaves_the_channel_open(daemon: tuple[Scripted, str]) -> None:
    servicer, socket = daemon
    servicer.initialized = True
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    try:
        async with NestingClient.from_channel(channel, target="via-ssh") as client:
            assert [vm.addr for vm in await client.list()] == ["127.0.0.1:2222"]
        again = NestingClient.from_channel(channel)
        assert len(await again.list()) == 1
    finally:
        await channel.close()


@pytest.mark.anyio
async def test_an_older_daemons_bare_vm_answer_to_create_is_read(short_dir: Path) -> None:
    """Older nesting daemons answered Create with a bare VirtualMachine."""

    async def create(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return nesting_pb2.VirtualMachine(id="vm-old", name=request.name, addr="192.168.64.5:22")

    handler = grpc.method_handlers_generic_handler(
        "nesting.Nesting",
        {
            "Create": grpc.unary_unary_rpc_method_handler(
                create,
                request_deserializer=nesting_pb2.CreateRequest.FromString,
                response_serializer=nesting_pb2.VirtualMachine.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{short_dir}/old.sock")
    await server.start()
    try:
        async with NestingClient(f"unix:{short_dir}/old.sock") as client:
            result = await client.create("macos-14")
    finally:
        await server.stop(None)
    assert result == CreateResult(
        vm=VirtualMachine(id="vm-old", name="macos-14", addr="192.168.64.5:22"),
        stomped_vm_id=None,
    )
