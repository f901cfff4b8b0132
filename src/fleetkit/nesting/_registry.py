"""Hypervisors by name, from the entry-point group ``fleetkit.hypervisors``.

A package adds one with, in its ``pyproject.toml``::

    [project.entry-points."fleetkit.hypervisors"]
    mine = "my_package.hypervisor:MyHypervisor"

where ``MyHypervisor(state_dir)`` returns a :class:`~fleetkit.nesting.Hypervisor`.
"""

from __future__ import annotations

import importlib.metadata

from fleetkit.errors import HypervisorNotFound
from fleetkit.nesting._protocol import HypervisorFactory

__all__ = ["ENTRY_POINT_GROUP", "installed_hypervisors", "load_hypervisor"]

#: The entry-point group that hypervisors register under.
ENTRY_POINT_GROUP = "fleetkit.hypervisors"


def installed_hypervisors() -> list[str]:
    """The names of the installed hypervisors, sorted."""
    return sorted(
        {entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    )


def load_hypervisor(name: str) -> HypervisorFactory:
    """The factory registered as ``name``.

    Raises :class:`~fleetkit.errors.HypervisorNotFound` naming the installed
    hypervisors when none has that name, or when its module fails to import.
    """
    entries = [
        e for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if e.name == name
    ]
    installed = ", ".join(installed_hypervisors()) or "none"
    if not entries:
        raise HypervisorNotFound(f"no hypervisor named {name!r}; installed: {installed}")
    try:
        factory = entries[0].load()
    except (ImportError, AttributeError) as exc:
        raise HypervisorNotFound(
            f"hypervisor {name!r} ({entries[0].value}) failed to load: {exc}"
        ) from exc
    if not callable(factory):
        raise HypervisorNotFound(f"hypervisor {name!r} ({entries[0].value}) is not callable")
    loaded: HypervisorFactory = factory
    return loaded
