"""A nesting-compatible daemon: GitLab's nesting API served over a :class:`Hypervisor`.

Runs on an instance and makes a VM per job slot, for
:class:`fleetkit.isolation.NestingClient` (or GitLab Runner's own client) to
use over the instance's SSH connection. ``fleetkit nesting serve --hypervisor
sandbox`` runs it; in Python::

    async with NestingDaemon("sandbox", socket_path="/run/fk/nesting.sock") as daemon:
        ...  # serving on daemon.target until the block ends

Hypervisors are found by name in the entry-point group ``fleetkit.hypervisors``
(:func:`load_hypervisor`); ``sandbox`` (:mod:`fleetkit.nesting.sandbox`)
ships with fleetkit and isolates nothing. Needs the ``isolation`` extra.
"""

from __future__ import annotations

from fleetkit.nesting._daemon import DEFAULT_STOP_TIMEOUT, NestingDaemon
from fleetkit.nesting._paths import SOCKET_ENV, default_socket_path, default_state_dir
from fleetkit.nesting._protocol import VM, BackgroundWork, Hypervisor, HypervisorFactory
from fleetkit.nesting._registry import ENTRY_POINT_GROUP, installed_hypervisors, load_hypervisor

__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "SOCKET_ENV",
    "VM",
    "BackgroundWork",
    "Hypervisor",
    "HypervisorFactory",
    "NestingDaemon",
    "default_socket_path",
    "default_state_dir",
    "installed_hypervisors",
    "load_hypervisor",
]
