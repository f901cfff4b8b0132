"""The gRPC face of :class:`~fleetkit.nesting._service.NestingService`.

Requests are read and answers written in GitLab's messages; fleetkit errors
become gRPC statuses here, once:

========================================  ========================================
``not initialized`` / ``already initialized``  ``FAILED_PRECONDITION``, that message
unknown VM id, unknown image              ``NOT_FOUND``
bad request or Init config                ``INVALID_ARGUMENT``
hypervisor full                           ``RESOURCE_EXHAUSTED``
any other hypervisor failure              ``INTERNAL``
========================================  ========================================

VM host keys go into the trailing metadata of ``Create`` and ``List``
(:data:`fleetkit._nesting_proto.HOST_KEY_METADATA`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from fleetkit._nesting_proto import (
    HOST_KEY_METADATA,
    USERNAME_METADATA,
    nesting_pb2,
    nesting_pb2_grpc,
)
from fleetkit.errors import (
    ConfigError,
    HypervisorFull,
    IsolationError,
    UnknownImage,
)
from fleetkit.nesting._protocol import VM
from fleetkit.nesting._service import (
    AlreadyInitializedError,
    InvalidRequest,
    NestingService,
    NoSuchVM,
    NotInitializedError,
)

__all__ = ["add_service"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[Any, Any]

_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (NotInitializedError, grpc.StatusCode.FAILED_PRECONDITION),
    (AlreadyInitializedError, grpc.StatusCode.FAILED_PRECONDITION),
    (NoSuchVM, grpc.StatusCode.NOT_FOUND),
    (UnknownImage, grpc.StatusCode.NOT_FOUND),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (HypervisorFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (IsolationError, grpc.StatusCode.INTERNAL),
)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ConfigError):
        return "; ".join(str(problem) for problem in exc.problems)
    return " ".join(str(exc).split())


async def _answer(rpc: str, context: _Context, work: Callable[[], Awaitable[_T]]) -> _T:
    try:
        return await work()
    except Exception as exc:
        for kind, code in _STATUS:
            if isinstance(exc, kind):
                log.info("%s refused: %s: %s", rpc, code.name, _one_line(exc))
                await context.abort(code, _one_line(exc))
        log.exception("%s failed with an unexpected error", rpc)
        await context.abort(
            grpc.StatusCode.INTERNAL, f"{rpc}: internal error in the nesting daemon (see its log)"
        )
        raise  # abort() raises; this only tells the type checker


def _wire(vm: VM) -> nesting_pb2.VirtualMachine:
    return nesting_pb2.VirtualMachine(id=vm.id, name=vm.image, addr=vm.addr)


def _report_host_keys(context: _Context, vms: Iterable[VM]) -> None:
    vms = list(vms)
    keys = tuple(
        (HOST_KEY_METADATA, f"{vm.id} {vm.host_key}") for vm in vms if vm.host_key is not None
    ) + tuple(
        (USERNAME_METADATA, f"{vm.id} {vm.username}") for vm in vms if vm.username is not None
    )
    if keys:
        context.set_trailing_metadata(keys)


class _Servicer(nesting_pb2_grpc.NestingServicer):
    def __init__(self, service: NestingService) -> None:
        self._service = service

    async def Init(
        self, request: nesting_pb2.InitRequest, context: _Context
    ) -> nesting_pb2.InitResponse:
        await _answer("Init", context, lambda: self._service.init(request.config))
        return nesting_pb2.InitResponse()

    async def Create(
        self, request: nesting_pb2.CreateRequest, context: _Context
    ) -> nesting_pb2.CreateResponse:
        slot = request.slot if request.HasField("slot") else None
        outcome = await _answer("Create", context, lambda: self._service.create(request.name, slot))
        _report_host_keys(context, [outcome.vm])
        response = nesting_pb2.CreateResponse(vm=_wire(outcome.vm))
        if outcome.stomped_vm_id is not None:
            response.stompedVmId = outcome.stomped_vm_id
        return response

    async def Delete(
        self, request: nesting_pb2.DeleteRequest, context: _Context
    ) -> nesting_pb2.DeleteResponse:
        await _answer("Delete", context, lambda: self._service.delete(request.id))
        return nesting_pb2.DeleteResponse()

    async def List(
        self, request: nesting_pb2.ListRequest, context: _Context
    ) -> nesting_pb2.ListResponse:
        vms = await _answer("List", context, self._service.list)
        _report_host_keys(context, vms)
        return nesting_pb2.ListResponse(vms=[_wire(vm) for vm in vms])

    async def Shutdown(
        self, request: nesting_pb2.ShutdownRequest, context: _Context
    ) -> nesting_pb2.ShutdownResponse:
        await _answer("Shutdown", context, self._service.shutdown)
        return nesting_pb2.ShutdownResponse()


def add_service(server: grpc.aio.Server, service: NestingService) -> None:
    """Serve ``service`` as ``nesting.Nesting`` on ``server``."""
    nesting_pb2_grpc.add_NestingServicer_to_server(_Servicer(service), server)  # type: ignore[no-untyped-call]
