"""One instance as a previous run left it: the value the state store reads and writes.

Apart from :mod:`fleetkit.fleet._state_store` (files, locks), so that the fleet
state, which builds and reads these values, imports no I/O module.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["StoredInstance"]


@attrs.frozen(kw_only=True)
class StoredInstance:
    """One instance as a previous run left it."""

    id: str
    owner: str | None
    use_count: int
    acquisitions: Mapping[int, str]
