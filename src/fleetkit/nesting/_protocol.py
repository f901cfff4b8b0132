"""The ``Hypervisor`` protocol: what the nesting daemon asks of a VM backend.

The daemon (:mod:`fleetkit.nesting._daemon`) owns everything GitLab's API
promises on top: the ``not initialized`` gate, VM ids, slots and stomping, the
deletes at ``Shutdown`` and at stop, and the bounds on each. A hypervisor only
makes and removes VMs, so a new backend (``qemu``, a cloud's microVMs) is a
class with six verbs registered under the entry-point group
``fleetkit.hypervisors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["VM", "BackgroundWork", "Hypervisor", "HypervisorFactory"]


@attrs.frozen
class VM:
    """One VM as a hypervisor reports it.

    ``id`` is the id the daemon chose in :meth:`Hypervisor.create`; ``image``
    is the image name it was made from (``name`` on the wire); ``addr`` is
    ``host:port`` of its SSH server as reachable from this host (a loopback
    port forward is fine: the manager dials it through its connection to this
    host). ``host_key`` is that SSH server's public host key
    (``"ssh-ed25519 AAAA..."``): the daemon reports it to the manager, which
    pins it. A hypervisor that cannot know it gives ``None``. ``username`` is
    the user the manager must log in as when the hypervisor chose it for this
    VM (the sandbox's ``fleetkit-vN``); ``None`` leaves the manager's own
    setting.
    """

    id: str
    image: str
    addr: str
    host_key: str | None = None
    username: str | None = None


@runtime_checkable
class Hypervisor(Protocol):
    """A VM backend of the nesting daemon. All verbs are async; the daemon
    calls them from one event loop (asyncio) and never twice at once for the
    same VM id.

    Construction: the entry point names a callable (usually the class) taking
    ``state_dir``, a directory private to this daemon (0700, kept across daemon
    runs that use the same socket) where the hypervisor keeps whatever it needs
    to find its VMs again. Construction must be cheap and do no I/O.

    Errors: raise :class:`~fleetkit.errors.ConfigError` from :meth:`init` for a
    bad config (the daemon answers ``INVALID_ARGUMENT``),
    :class:`~fleetkit.errors.UnknownImage` from :meth:`create` for an image it
    does not have (``NOT_FOUND``), :class:`~fleetkit.errors.HypervisorFull`
    when it holds all the VMs it may (``RESOURCE_EXHAUSTED``) and
    :class:`~fleetkit.errors.HypervisorError` for any other failure
    (``INTERNAL``). Messages reach the manager: no secrets in them. Anything
    else raised is a bug; the daemon logs it and answers ``INTERNAL``.
    """

    async def recover(self) -> Sequence[str]:
        """Remove every VM a previous daemon left in ``state_dir`` (its
        processes, disks, sockets) and return their ids.

        Called once at daemon start, before :meth:`init` and before the socket
        accepts calls, while the daemon holds the state dir's lock (so the
        daemon that made those VMs is gone: killed, crashed, or the host
        rebooted). Needs no config.
        """
        ...

    async def init(self, config: Mapping[str, Any]) -> None:
        """Take the daemon's configuration (the JSON object of ``Init``, keys
        chosen by the hypervisor; ``{}`` must work when every key has a
        default). Called at most once successfully; a failed ``init`` leaves
        the daemon uninitialized and may be retried.
        """
        ...

    async def create(self, vm_id: str, image: str) -> VM:
        """Make and start a VM from ``image`` and return it once its SSH server
        accepts connections (boot time is spent here; the manager's call waits
        for it). ``vm_id`` is chosen by the daemon: unique, ``[a-z0-9-]``,
        safe as a file name. On failure, leave nothing of the VM behind.
        """
        ...

    async def delete(self, vm_id: str) -> None:
        """Stop the VM hard enough to be sure (a hung guest included) and remove
        everything of it. Idempotent: an unknown id is no error. Must finish
        in bounded time; the daemon also bounds it (cancelling the call, so
        shield only the steps that must not be cut short).
        """
        ...

    async def list(self) -> Sequence[VM]:
        """The VMs this hypervisor holds now (a VM whose process died is
        not listed)."""
        ...

    async def shutdown(self) -> None:
        """Release what :meth:`init` took. The daemon has deleted every VM
        first; a hypervisor may remove stragglers here. Idempotent. The daemon
        calls it shielded, within its stop timeout (cancelling it when the time
        is up): what is left then, :meth:`recover` removes at the next start."""
        ...


@runtime_checkable
class BackgroundWork(Protocol):
    """Optional for a hypervisor: work that runs beside the calls, such as
    booting a warm pool of VMs ahead so that ``create`` hands one out at once.

    When the hypervisor has ``run``, the daemon starts it in its own task group
    once an ``init`` succeeded and cancels it at stop, before deleting the VMs
    and calling ``shutdown``; a ``run`` that raises is logged and not
    restarted. ``run`` must not return early on purpose (return means done).
    A pool's VMs are the hypervisor's until ``create`` hands one out under the
    daemon's id; record them in ``state_dir`` so that :meth:`Hypervisor.recover`
    finds them after a crash, and never hand one out twice.
    """

    async def run(self) -> None:
        """Do the background work until cancelled."""
        ...


#: What the entry point names: ``factory(state_dir) -> Hypervisor``.
HypervisorFactory = Callable[[Path], Hypervisor]
