"""An in-memory :class:`~fleetkit.nesting.Hypervisor`, in anyio time, with faults.

For tests of code above the hypervisor (the nesting daemon's semantics, a
manager's isolation flow in virtual time) where booting even a sandbox sshd is
not the point. Its VMs are records only: their ``addr`` reaches nothing. Use
the ``sandbox`` hypervisor (real sshds) where a VM must be logged in to.

It runs on any anyio backend (trio's ``MockClock`` included): ``boot_time``
and ``delete_time`` are slept in anyio time; ``hang_deletes`` makes every
delete wait until cancelled (a hung guest); ``fail_creates`` makes that many
next creates raise :class:`~fleetkit.errors.HypervisorError`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from fleetkit.errors import ConfigError, HypervisorError, UnknownImage
from fleetkit.nesting._protocol import VM

if TYPE_CHECKING:
    from fleetkit.nesting._protocol import HypervisorFactory

__all__ = ["MemoryHypervisor"]


class MemoryHypervisor:
    """VMs as records in memory; see the module docstring for the knobs.

    ``created``, ``deleted`` and ``configs`` record what was asked, in order;
    ``leftovers`` are ids :meth:`recover` reports (what a "previous daemon"
    left). ``state_dir`` is accepted for the factory signature and unused.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        images: Iterable[str] = ("default",),
        boot_time: float = 0.0,
        delete_time: float = 0.0,
        leftovers: Iterable[str] = (),
    ) -> None:
        self.state_dir = state_dir
        self.images = set(images)
        self.boot_time = boot_time
        self.delete_time = delete_time
        self.hang_deletes = False
        self.fail_creates = 0
        self.leftovers = list(leftovers)
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.configs: list[Mapping[str, Any]] = []
        self.shut_down = False
        self._vms: dict[str, VM] = {}
        self._ports = itertools.count(40000)

    def __repr__(self) -> str:
        return f"<MemoryHypervisor vms={len(self._vms)}>"

    async def recover(self) -> list[str]:
        """Report (and forget) ``leftovers``."""
        found, self.leftovers = self.leftovers, []
        return found

    async def init(self, config: Mapping[str, Any]) -> None:
        """Take any config but ``{"invalid": ...}``, which is a ConfigError."""
        if "invalid" in config:
            raise ConfigError("config.invalid: refused by the memory hypervisor")
        self.configs.append(dict(config))

    async def create(self, vm_id: str, image: str) -> VM:
        """A VM record after ``boot_time``; UnknownImage outside ``images``."""
        if image not in self.images:
            raise UnknownImage(f"no image {image!r}")
        if self.fail_creates > 0:
            self.fail_creates -= 1
            raise HypervisorError(f"VM {vm_id} failed to boot (injected)")
        await anyio.sleep(self.boot_time)
        vm = VM(
            id=vm_id,
            image=image,
            addr=f"127.0.0.1:{next(self._ports)}",
            host_key=f"ssh-ed25519 AAAA{vm_id}",
        )
        self._vms[vm_id] = vm
        self.created.append(vm_id)
        return vm

    async def delete(self, vm_id: str) -> None:
        """Forget the VM after ``delete_time`` (or never, with ``hang_deletes``)."""
        if self.hang_deletes:
            await anyio.sleep_forever()
        await anyio.sleep(self.delete_time)
        if self._vms.pop(vm_id, None) is not None:
            self.deleted.append(vm_id)

    async def list(self) -> Sequence[VM]:
        """The VMs held now."""
        return list(self._vms.values())

    async def shutdown(self) -> None:
        """Forget every VM."""
        self._vms.clear()
        self.shut_down = True

    def vanish(self, vm_id: str) -> None:
        """Drop a VM as if its process died (no delete recorded)."""
        self._vms.pop(vm_id, None)


if TYPE_CHECKING:
    _check_factory: HypervisorFactory = MemoryHypervisor
