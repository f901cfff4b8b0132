"""The client of GitLab's nesting API: gRPC to a nesting daemon, errors translated here.

Speaks the wire protocol of ``fleetkit/_nesting_proto/nesting.proto`` exactly, so
it works with GitLab's own daemon (macOS) and with :mod:`fleetkit.nesting`. The
gRPC exceptions of ``grpc.aio`` stop at this module: callers see the
:class:`~fleetkit.errors.IsolationError` branch only.

fleetkit's daemon also reports each VM's SSH host key, in the trailing metadata
of ``Create`` and ``List`` (key :data:`HOST_KEY_METADATA`, one value per VM:
``"<vm id> <key type> <base64>"``), and the VM's login user when the
hypervisor chose one for it (:data:`USERNAME_METADATA`). Metadata is invisible to clients that do
not look for it, so the wire stays GitLab's; with GitLab's daemon
:attr:`VirtualMachine.host_key` is ``None``. Older daemons answered ``Create``
with a bare ``VirtualMachine`` (and knew no slots); the client reads that too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import anyio
import attrs
import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from fleetkit._nesting_proto import HOST_KEY_METADATA, METHODS, USERNAME_METADATA, nesting_pb2
from fleetkit._resource import AsyncResource
from fleetkit.errors import (
    AlreadyInitialized,
    ImageNotFound,
    NestingError,
    NestingUnavailable,
    NotInitialized,
    VMNotFound,
)

__all__ = ["HOST_KEY_METADATA", "CreateResult", "NestingClient", "VirtualMachine"]

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 120.0
_NOT_INITIALIZED = "not initialized"
_ALREADY_INITIALIZED = "already initialized"

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


@attrs.frozen
class VirtualMachine:
    """One VM as the daemon reports it.

    ``name`` is the image it was made from; ``addr`` is ``host:port`` of its SSH
    server as reachable *from the instance* the daemon runs on. ``host_key`` is
    that SSH server's host key (``"ssh-ed25519 AAAA..."``) when the daemon
    reports it (fleetkit's does), else ``None``. ``username`` is the user to log
    in as when the daemon chose one for this VM, else ``None``.
    """

    id: str
    name: str
    addr: str
    host_key: str | None = None
    username: str | None = None


@attrs.frozen
class CreateResult:
    """What ``Create`` returned: the new VM, and the id of the VM it replaced in
    the requested slot (``None`` when the slot was free or none was given)."""

    vm: VirtualMachine
    stomped_vm_id: str | None = None


def _normalise_target(target: str) -> str:
    # nesting_host's forms (unix:///abs, unix:rel, host:port) are gRPC target
    # strings already; a bare absolute path is taken as a unix socket.
    if target.startswith("/"):
        return f"unix:{target}"
    return target


def _config_bytes(config: bytes | Mapping[str, Any]) -> bytes:
    if isinstance(config, bytes):
        return config
    return json.dumps(dict(config), separators=(",", ":")).encode()


# metadata key -> VM id -> value, from fleetkit's per-VM trailing metadata.
_Reported = dict[str, dict[str, str]]


def _reported(metadata: grpc.aio.Metadata | None) -> _Reported:
    found: _Reported = {HOST_KEY_METADATA: {}, USERNAME_METADATA: {}}
    for key, value in metadata or ():
        if key not in found:
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        vm_id, _, line = text.partition(" ")
        if vm_id and line.strip():
            found[key][vm_id] = line.strip()
    return found


class NestingClient(AsyncResource):
    """An async client of one nesting daemon, over a ``grpc.aio`` channel.

    ``target`` is a gRPC target: ``unix:/abs/path`` (or ``unix:///abs/path``,
    or a bare absolute path), ``unix:rel/path``, or ``host:port``. To run the
    channel over something else (an SSH-forwarded socket), open the channel
    yourself and use :meth:`from_channel`. grpc.aio runs on asyncio only: build
    and use the client inside an asyncio event loop (anyio's default backend).

    ``init_config`` is the daemon's hypervisor configuration (a mapping, sent as
    JSON, or bytes as they are). When it is given, a call the daemon refuses as
    ``not initialized`` is answered as GitLab Runner does: send ``Init`` with it,
    take ``already initialized`` as success (another client won the race), and
    retry the call once. Without it, :class:`~fleetkit.errors.NotInitialized`
    reaches the caller. The config may hold secrets (a licence key): it is
    never logged nor shown in a repr.

    ``timeout`` bounds each call in seconds. Errors, all under
    :class:`~fleetkit.errors.IsolationError`:
    :class:`~fleetkit.errors.NestingUnavailable` when the daemon does not answer
    (no socket, refused, dropped, deadline), and a
    :class:`~fleetkit.errors.NestingError` when it answers with an error:
    :class:`~fleetkit.errors.NotInitialized`,
    :class:`~fleetkit.errors.AlreadyInitialized`,
    :class:`~fleetkit.errors.VMNotFound` (``delete``),
    :class:`~fleetkit.errors.ImageNotFound` (``create``), or the base class with
    the gRPC status name in ``.code``.

    ``async with NestingClient(...) as client:`` closes the channel on exit
    (a channel given to :meth:`from_channel` is the caller's to close).
    """

    def __init__(
        self,
        target: str,
        *,
        init_config: bytes | Mapping[str, Any] | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        target = _normalise_target(target)
        self._setup(
            grpc.aio.insecure_channel(target),
            target=target,
            init_config=init_config,
            timeout=timeout,
            owns_channel=True,
        )

    @classmethod
    def from_channel(
        cls,
        channel: grpc.aio.Channel,
        *,
        target: str = "",
        init_config: bytes | Mapping[str, Any] | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> Self:
        """A client over a channel the caller opened (and closes); ``target``
        only names the daemon in error messages."""
        client = cls.__new__(cls)
        client._setup(
            channel, target=target, init_config=init_config, timeout=timeout, owns_channel=False
        )
        return client

    def _setup(
        self,
        channel: grpc.aio.Channel,
        *,
        target: str,
        init_config: bytes | Mapping[str, Any] | None,
        timeout: float,
        owns_channel: bool,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._channel = channel
        self._target = target
        self._init_config = None if init_config is None else _config_bytes(init_config)
        self._timeout = timeout
        self._owns_channel = owns_channel
        self._closed = False

    def __repr__(self) -> str:
        init = "set" if self._init_config is not None else "none"
        return f"<NestingClient target={self._target!r} init_config={init}>"

    @property
    def target(self) -> str:
        """The daemon's address as given (for messages)."""
        return self._target

    # --- the verbs --------------------------------------------------------

    async def init(
        self, config: bytes | Mapping[str, Any] | None = None, *, exist_ok: bool = False
    ) -> None:
        """Send ``Init`` with ``config`` (default: the client's ``init_config``,
        else ``{}``). Raises :class:`~fleetkit.errors.AlreadyInitialized` on a
        second ``Init`` unless ``exist_ok``."""
        if config is None:
            raw = self._init_config if self._init_config is not None else b"{}"
        else:
            raw = _config_bytes(config)
        try:
            await self._unary("Init", nesting_pb2.InitRequest(config=raw), nesting_pb2.InitResponse)
        except AlreadyInitialized:
            if not exist_ok:
                raise

    async def create(self, image: str, *, slot: int | None = None) -> CreateResult:
        """Create a VM from ``image``. With ``slot``, a VM the daemon holds in that
        slot is deleted first and its id returned as ``stomped_vm_id``."""
        request = nesting_pb2.CreateRequest(name=image)
        if slot is not None:
            request.slot = slot
        response, keys = await self._call("Create", request, nesting_pb2.CreateResponse)
        stomped = response.stompedVmId if response.HasField("stompedVmId") else None
        return CreateResult(vm=_vm(response.vm, keys), stomped_vm_id=stomped or None)

    async def delete(self, vm_id: str) -> None:
        """Delete the VM ``vm_id`` and free its slot. Raises
        :class:`~fleetkit.errors.VMNotFound` when the daemon has no such VM."""
        await self._call("Delete", nesting_pb2.DeleteRequest(id=vm_id), nesting_pb2.DeleteResponse)

    async def list(self) -> list[VirtualMachine]:
        """Every VM the daemon holds."""
        response, keys = await self._call(
            "List", nesting_pb2.ListRequest(), nesting_pb2.ListResponse
        )
        return [_vm(vm, keys) for vm in response.vms]

    async def shutdown(self) -> None:
        """Ask the daemon to delete every VM it holds."""
        await self._call("Shutdown", nesting_pb2.ShutdownRequest(), nesting_pb2.ShutdownResponse)

    async def ping(self) -> None:
        """Prove the daemon answers (ready-up): a ``List`` whose answer, even
        ``not initialized``, shows a live daemon. Sends no ``Init``. Raises
        :class:`~fleetkit.errors.NestingUnavailable` when nothing answers."""
        try:
            await self._unary("List", nesting_pb2.ListRequest(), nesting_pb2.ListResponse)
        except NestingUnavailable:
            raise
        except NestingError:
            pass

    async def aclose(self) -> None:
        """Close the channel (when this client opened it). Idempotent; shielded."""
        if self._closed:
            return
        self._closed = True
        if self._owns_channel:
            with anyio.CancelScope(shield=True):
                await self._channel.close()

    # --- plumbing ---------------------------------------------------------

    async def _call(
        self, rpc: str, request: _Request, response_type: type[_Response]
    ) -> tuple[_Response, _Reported]:
        try:
            return await self._unary(rpc, request, response_type)
        except NotInitialized:
            if self._init_config is None:
                raise
        log.info("nesting daemon at %s is not initialized; sending Init", self._target)
        await self.init(exist_ok=True)
        return await self._unary(rpc, request, response_type)

    async def _unary(
        self, rpc: str, request: _Request, response_type: type[_Response]
    ) -> tuple[_Response, _Reported]:
        if self._closed:
            raise NestingUnavailable(f"nesting client for {self._target} is closed")
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response] = self._channel.unary_unary(
            METHODS[rpc],
            request_serializer=_serialize,
            response_deserializer=_deserializer(response_type),
        )
        try:
            call = method(request, timeout=self._timeout)
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise self._translate(rpc, exc) from exc
        return response, _reported(trailing)

    def _translate(self, rpc: str, exc: grpc.aio.AioRpcError) -> Exception:
        code = exc.code()
        detail = (exc.details() or "").strip()
        where = f"nesting daemon at {self._target}" if self._target else "nesting daemon"
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            reason = (
                f"did not answer {rpc} within {self._timeout:g}s"
                if code is grpc.StatusCode.DEADLINE_EXCEEDED
                else f"is unreachable ({rpc}): {detail}"
            )
            return NestingUnavailable(f"{where} {reason}")
        kind: type[NestingError] = NestingError
        if code is grpc.StatusCode.FAILED_PRECONDITION and detail == _NOT_INITIALIZED:
            kind = NotInitialized
        elif code is grpc.StatusCode.FAILED_PRECONDITION and detail == _ALREADY_INITIALIZED:
            kind = AlreadyInitialized
        elif code is grpc.StatusCode.NOT_FOUND and rpc == "Delete":
            kind = VMNotFound
        elif code is grpc.StatusCode.NOT_FOUND and rpc == "Create":
            kind = ImageNotFound
        return kind(rpc, code.name, detail, target=self._target)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _deserializer(response_type: type[_Response]) -> Callable[[bytes], _Response]:
    if response_type is nesting_pb2.CreateResponse:
        return _decode_create  # type: ignore[return-value]  # _Response is CreateResponse here
    return response_type.FromString


def _decode_create(raw: bytes) -> nesting_pb2.CreateResponse:
    """A ``CreateResponse``, or the bare ``VirtualMachine`` older daemons sent.

    Only a bare VM has a top-level field 3 (``addr``); ``CreateResponse`` has
    fields 1 and 2 only. So a non-empty ``addr`` read at the top level means
    an old daemon, whose answer is wrapped as a response without a stomp.
    """
    try:
        bare = nesting_pb2.VirtualMachine.FromString(raw)
    except DecodeError:
        bare = None  # field 1 of a CreateResponse (a message) is no valid string
    if bare is not None and bare.addr:
        return nesting_pb2.CreateResponse(vm=bare)
    return nesting_pb2.CreateResponse.FromString(raw)


def _vm(message: nesting_pb2.VirtualMachine, reported: _Reported) -> VirtualMachine:
    return VirtualMachine(
        id=message.id,
        name=message.name,
        addr=message.addr,
        host_key=reported[HOST_KEY_METADATA].get(message.id),
        username=reported[USERNAME_METADATA].get(message.id),
    )
