"""GitLab's nesting semantics over a :class:`~fleetkit.nesting.Hypervisor`.

:class:`NestingService` is the daemon's brain, independent of gRPC:

* every verb but ``init`` raises :class:`NotInitialized` until an ``init``
  succeeded; a second ``init`` raises :class:`AlreadyInitialized`;
* ``create(image, slot)`` deletes the VM holding ``slot`` first ("stomping",
  GitLab's way of reclaiming what a crashed job left) and returns its id;
  creates in one slot run one at a time, so a slot never holds two VMs;
* ``delete`` frees the slot; ``shutdown`` (the RPC) and ``close`` (the daemon
  stopping) delete every VM, each delete bounded by ``delete_timeout``.

Hypervisor calls that change VMs run shielded from cancellation: a manager
that hangs up mid-``Create`` must not leave a half-made VM nobody tracks.
:mod:`fleetkit.nesting._grpc` turns the errors into gRPC statuses.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import attrs

from fleetkit.errors import ConfigError, HypervisorError, IsolationError
from fleetkit.nesting._protocol import VM, Hypervisor

__all__ = [
    "AlreadyInitializedError",
    "CreateOutcome",
    "NestingService",
    "NoSuchVM",
    "NotInitializedError",
]

log = logging.getLogger(__name__)

DEFAULT_DELETE_TIMEOUT = 60.0  # GitLab Runner allows a Delete one minute


class NotInitializedError(IsolationError):
    """A verb before a successful ``init`` (wire: ``not initialized``)."""

    def __init__(self) -> None:
        super().__init__("not initialized")


class AlreadyInitializedError(IsolationError):
    """A second ``init`` (wire: ``already initialized``)."""

    def __init__(self) -> None:
        super().__init__("already initialized")


class NoSuchVM(IsolationError, LookupError):
    """``delete`` of an id this daemon does not hold (wire: ``NOT_FOUND``)."""


class InvalidRequest(IsolationError, ValueError):
    """A request no daemon could serve (wire: ``INVALID_ARGUMENT``)."""


@attrs.frozen
class CreateOutcome:
    """A created VM, and the id of the VM it stomped in its slot (or None)."""

    vm: VM
    stomped_vm_id: str | None


def _parse_config(raw: bytes) -> Mapping[str, Any]:
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Init config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"Init config must be a JSON object, got {type(config).__name__}")
    return config


class NestingService:
    """The nesting daemon's state: initialized or not, VMs by id, slots."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        *,
        delete_timeout: float = DEFAULT_DELETE_TIMEOUT,
        on_initialized: Callable[[], None] | None = None,
    ) -> None:
        """``on_initialized`` is called once, right after the hypervisor took
        its config (the daemon starts the hypervisor's background work there)."""
        self._hypervisor = hypervisor
        self._on_initialized = on_initialized
        self._delete_timeout = delete_timeout
        self._initialized = False
        self._init_lock = anyio.Lock()
        self._vms: dict[str, VM] = {}
        self._slot_of: dict[str, int] = {}
        self._in_slot: dict[int, str] = {}
        self._slot_locks: dict[int, anyio.Lock] = {}
        self._closed = False

    @property
    def initialized(self) -> bool:
        """Whether an ``init`` succeeded."""
        return self._initialized

    def _gate(self) -> None:
        if not self._initialized:
            raise NotInitializedError()
        if self._closed:
            raise HypervisorError("the nesting daemon is stopping")

    async def init(self, raw_config: bytes) -> None:
        """Parse the JSON config and hand it to the hypervisor, once."""
        async with self._init_lock:
            if self._initialized:
                raise AlreadyInitializedError()
            config = _parse_config(raw_config)
            with anyio.CancelScope(shield=True):
                await self._hypervisor.init(config)
            self._initialized = True
            if self._on_initialized is not None:
                self._on_initialized()

    async def create(self, image: str, slot: int | None) -> CreateOutcome:
        """A new VM from ``image``; with ``slot``, stomp the VM holding it."""
        self._gate()
        if not image:
            raise InvalidRequest("Create needs an image name")
        if slot is None:
            return CreateOutcome(await self._make(image, None), None)
        if slot < 0:
            raise InvalidRequest(f"slot must be 0 or more, got {slot}")
        lock = self._slot_locks.setdefault(slot, anyio.Lock())
        async with lock:
            self._gate()
            stomped = self._in_slot.get(slot)
            if stomped is not None:
                log.warning(
                    "slot %d: deleting VM %s before creating another (stomped)", slot, stomped
                )
                await self._remove(stomped)
            return CreateOutcome(await self._make(image, slot), stomped)

    async def _make(self, image: str, slot: int | None) -> VM:
        vm_id = f"vm-{uuid.uuid4().hex[:12]}"
        with anyio.CancelScope(shield=True):
            vm = await self._hypervisor.create(vm_id, image)
        if vm.id != vm_id:
            raise HypervisorError(f"hypervisor returned VM {vm.id!r} for {vm_id!r}")
        self._vms[vm_id] = vm
        if slot is not None:
            self._slot_of[vm_id] = slot
            self._in_slot[slot] = vm_id
        log.info("created VM %s from %s at %s (slot %s)", vm_id, image, vm.addr, slot)
        return vm

    async def delete(self, vm_id: str) -> None:
        """Delete the VM and free its slot."""
        self._gate()
        if vm_id not in self._vms:
            raise NoSuchVM(f"no VM {vm_id!r}")
        await self._remove(vm_id)

    async def _remove(self, vm_id: str, deadline: float = math.inf) -> None:
        # Forget it first: a slot is free, and List shows no VM, from the
        # moment its deletion starts, whatever the hypervisor then takes.
        self._vms.pop(vm_id, None)
        slot = self._slot_of.pop(vm_id, None)
        if slot is not None and self._in_slot.get(slot) == vm_id:
            del self._in_slot[slot]
        # Shielded from the caller, bounded by the delete timeout or the
        # caller's deadline (a stop's), whichever comes first.
        bound = anyio.CancelScope(
            deadline=min(anyio.current_time() + self._delete_timeout, deadline), shield=True
        )
        with bound:
            await self._hypervisor.delete(vm_id)
        if bound.cancelled_caught:
            raise HypervisorError(
                f"deleting VM {vm_id} did not finish in time ({self._delete_timeout:g}s at most)"
            )
        log.info("deleted VM %s", vm_id)

    async def list(self) -> list[VM]:
        """The VMs held now, as the hypervisor reports them (one whose process
        died is dropped, its slot freed)."""
        self._gate()
        live = {vm.id: vm for vm in await self._hypervisor.list()}
        for vm_id in [v for v in self._vms if v not in live]:
            log.warning("VM %s is gone from the hypervisor; forgetting it", vm_id)
            await self._remove(vm_id)
        return [live[v] for v in self._vms if v in live]

    async def shutdown(self) -> None:
        """Delete every VM (GitLab's ``Shutdown``); the daemon keeps serving."""
        self._gate()
        with anyio.CancelScope(shield=True):  # a caller that hangs up stops nothing
            await self._delete_all()

    async def _delete_all(self, deadline: float = math.inf) -> None:
        failures: list[str] = []

        async def one(vm_id: str) -> None:
            try:
                await self._remove(vm_id, deadline)
            except IsolationError as exc:
                failures.append(str(exc))

        async with anyio.create_task_group() as tg:
            for vm_id in list(self._vms):
                tg.start_soon(one, vm_id)
        if failures:
            raise HypervisorError("; ".join(failures))

    async def close(self, within: float) -> bool:
        """The daemon stops: refuse new work, delete every VM (each delete
        bounded), shut the hypervisor down, all within ``within`` seconds.
        Shielded from outside cancellation. Returns whether all of it
        succeeded in time; what did not is left for the next start's recovery."""
        if self._closed:
            return True
        self._closed = True
        done = True
        deadline = anyio.current_time() + within
        with anyio.CancelScope(deadline=deadline, shield=True) as bound:
            if self._vms:
                log.info("stopping: deleting %d VM(s)", len(self._vms))
            try:
                await self._delete_all(deadline)
            except HypervisorError as exc:
                log.error("stopping: %s", exc)
                done = False
            if self._initialized:
                await self._hypervisor.shutdown()
        if bound.cancelled_caught:
            log.error("stopping: not done within %gs; the next start removes what is left", within)
            done = False
        return done
