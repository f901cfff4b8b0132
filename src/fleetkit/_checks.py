"""attrs validators for the public value types: each checks the type as well as
the range, and names ``Class.field`` in its error, so a bad argument fails where
it is given rather than deep inside a later call.

Wrong types raise :class:`TypeError`; values out of range raise
:class:`~fleetkit.errors.ConfigError` (a ``ValueError``). Called without an
instance (as :mod:`fleetkit.config` does, field by field), the message starts
with the bare field name, which the config loader turns into a TOML path.

Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from fleetkit.errors import ConfigError, Problem

__all__ = ["boolean", "int_at_least", "nonneg_number", "where"]


def where(inst: object, attribute: Any) -> str:
    """``Class.field`` for an error message (``field`` alone without an instance)."""
    if inst is None:
        return str(attribute.name)
    return f"{type(inst).__name__}.{attribute.name}"


def _kind(value: object) -> str:
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) else type(value).__name__


def int_at_least(minimum: int) -> Any:
    """A validator: an ``int`` (not a bool) ``>= minimum``."""

    def check(inst: object, attribute: Any, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where(inst, attribute)}: expected an integer, got {_kind(value)}")
        if value < minimum:
            raise ConfigError(
                [Problem(where(inst, attribute), f"must be >= {minimum}, got {value}")]
            )

    return check


def nonneg_number(inst: object, attribute: Any, value: object) -> None:
    """A validator: a finite ``int`` or ``float`` ``>= 0`` (not a bool, not NaN)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{where(inst, attribute)}: expected a number, got {_kind(value)}")
    if not value >= 0 or math.isinf(value):
        raise ConfigError(
            [Problem(where(inst, attribute), f"must be a finite number >= 0, got {value}")]
        )


def boolean(inst: object, attribute: Any, value: object) -> None:
    """A validator: ``True`` or ``False`` (``None`` too when that is the default)."""
    if value is None and attribute.default is None:
        return
    if not isinstance(value, bool):
        raise TypeError(f"{where(inst, attribute)}: expected True or False, got {_kind(value)}")
