"""A griffe extension: fleetkit's docstrings use reST roles
(:class:`~fleetkit.fleet.Fleet`); mkdocstrings renders Markdown. Each role
naming a fleetkit object becomes a cross-reference (``[Fleet][fleetkit.fleet.Fleet]``),
which ``mkdocs build --strict`` fails on when the object no longer exists;
other roles become code spans."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`<>]+?)`")


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    target = target.strip()
    label = target.rsplit(".", 1)[-1] if tilde else target
    if target.startswith("fleetkit.") and not any(
        part.startswith("_") for part in target.split(".")
    ):
        return f"[`{label}`][{target}]"
    return f"`{label}`"


def convert(text: str) -> str:
    """Roles to Markdown (see the module)."""
    return _ROLE.sub(_replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **_: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
