"""VM isolation on the manager's side: a VM per job slot on an instance.

:class:`Isolator` runs GitLab Runner's per-job flow (image, nesting client over
the instance's connection, ``Create`` in the job's slot, the job in the VM,
``Delete``); :class:`IsolationSettings` holds what it needs::

    isolator = Isolator(IsolationSettings(nesting_host="unix:nesting.sock", image="default"))
    async with fleet.acquire("job-1") as slot, isolator.open(slot, connector) as vm:
        result = await vm.connection.run("uname -a")

:class:`NestingClient` speaks GitLab's nesting API (``shared/spec/nesting.md``)
to a nesting daemon, GitLab's or :mod:`fleetkit.nesting`; results are
:class:`VirtualMachine` and :class:`CreateResult`; errors are the
:class:`~fleetkit.errors.IsolationError` branch. :func:`choose_image` picks
and checks a job's image (``allowed_images``, doublestar globs, variables
expanded first). Needs the ``isolation`` extra
(``pip install 'fleetkit[isolation]'``).
"""

from __future__ import annotations

from fleetkit.isolation._images import (
    ImageChoice,
    choose_image,
    expand_variables,
    image_allowed,
)
from fleetkit.isolation._isolator import (
    IsolatedVM,
    IsolationSettings,
    Isolator,
    Note,
    parse_nesting_host,
)
from fleetkit.isolation._nesting_client import (
    HOST_KEY_METADATA,
    CreateResult,
    NestingClient,
    VirtualMachine,
)

__all__ = [
    "HOST_KEY_METADATA",
    "CreateResult",
    "ImageChoice",
    "IsolatedVM",
    "IsolationSettings",
    "Isolator",
    "NestingClient",
    "Note",
    "VirtualMachine",
    "choose_image",
    "expand_variables",
    "image_allowed",
    "parse_nesting_host",
]
