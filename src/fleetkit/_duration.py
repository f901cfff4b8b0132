"""One duration type for the whole public API: :class:`Duration`.

Every public constructor and call that takes a duration accepts seconds (an
``int`` or ``float``) or a :class:`datetime.timedelta`, and stores a
:class:`Duration`: a ``float`` of seconds, so the runtime can add it to anyio's
clock and sleep on it as it is, that also answers ``total_seconds()``, compares
with a ``timedelta`` and prints the way people read durations (``500ms``,
``1m30s``, ``2h``), a form Go's ``time.ParseDuration`` (and
:func:`fleetkit.config.parse_duration`) reads back.

The coercion lives here once: attrs classes use :func:`to_duration` as the
field converter and :func:`duration_check` as its validator (the converter lets
a value of the wrong type through untouched, so that the validator, which knows
the class and the field, names both in the error); plain functions call
:func:`duration`.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Self, TypeAlias

from fleetkit._checks import where
from fleetkit.errors import ConfigError, Problem

__all__ = [
    "Duration",
    "DurationLike",
    "duration",
    "duration_check",
    "duration_problem",
    "format_seconds",
    "optional_duration",
    "to_duration",
    "to_optional_duration",
]

#: What a duration argument accepts: seconds, or a timedelta.
DurationLike: TypeAlias = float | timedelta


class Duration(float):
    """A duration in seconds: a ``float`` that also reads as a ``timedelta``.

    ``Duration(90)``, ``Duration(timedelta(minutes=1, seconds=30))`` and
    ``Duration(90.0)`` are equal, and equal to ``90`` and to that timedelta.
    ``str()`` gives ``1m30s``; arithmetic gives plain floats. (As with ``1 ==
    1.0 == True``, a ``Duration`` equal to a ``timedelta`` does not share its
    hash: do not mix the two as keys of one dict.)
    """

    __slots__ = ()

    def __new__(cls, value: DurationLike = 0.0) -> Self:
        if isinstance(value, timedelta):
            return super().__new__(cls, value.total_seconds())
        return super().__new__(cls, value)

    def total_seconds(self) -> float:
        """The seconds, as :meth:`datetime.timedelta.total_seconds` gives them."""
        return float(self)

    def as_timedelta(self) -> timedelta:
        """The same duration as a timedelta (rounded to the microsecond)."""
        return timedelta(seconds=float(self))

    def __str__(self) -> str:
        return format_seconds(float(self))

    # repr stays the float's (``90.0``), so the reprs of the value types that
    # hold durations read as before; str() is for people.
    __repr__ = float.__repr__

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else float(self).__format__(spec)

    # Comparisons also take a timedelta, so code and tests written against the
    # timedelta fields of earlier versions keep working.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, timedelta):
            return float(self) == other.total_seconds()
        return float(self) == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = float.__hash__

    def __lt__(self, other: DurationLike) -> bool:
        return float(self) < _seconds(other)

    def __le__(self, other: DurationLike) -> bool:
        return float(self) <= _seconds(other)

    def __gt__(self, other: DurationLike) -> bool:
        return float(self) > _seconds(other)

    def __ge__(self, other: DurationLike) -> bool:
        return float(self) >= _seconds(other)


def _seconds(value: DurationLike) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def format_seconds(seconds: float) -> str:
    """Seconds as people read them: ``0s``, ``250ms``, ``1.5s``, ``1m30s``, ``2h``, ``1h0m5s``.

    Whole units only where they are not zero (Go's ``Duration.String()`` would
    print ``2h0m0s``), and the text parses back with Go's ``time.ParseDuration``.
    """
    if math.isnan(seconds):
        return "nan"
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    if math.isinf(seconds):
        return "forever"
    us = round(seconds * 1_000_000)
    if us == 0:
        return "0s" if seconds == 0 else f"{seconds * 1e9:.0f}ns"
    if us < 1_000_000:
        if us % 1000 == 0:
            return f"{us // 1000}ms"
        return f"{_decimal(us, 1000)}ms"
    hours, rest = divmod(us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    text = f"{hours}h" if hours else ""
    if minutes or (hours and rest):
        text += f"{minutes}m"
    if rest:
        text += f"{_decimal(rest, 1_000_000)}s"
    return text


def _decimal(value: int, scale: int) -> str:
    whole, part = divmod(value, scale)
    if not part:
        return str(whole)
    return f"{whole}." + str(part).rjust(len(str(scale)) - 1, "0").rstrip("0")


def _coerce(value: object) -> Duration | None:
    if isinstance(value, Duration):
        return value
    if isinstance(value, timedelta):
        return Duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Duration(value)
    return None


def _kind(value: object) -> str:
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) else type(value).__name__


def duration_problem(value: object, *, positive: bool, infinite: bool) -> str | None:
    """Why ``value`` is not an acceptable duration, or ``None`` when it is one."""
    seconds = _coerce(value)
    if seconds is None:
        hint = " (parse a Go duration with fleetkit.config.parse_duration)"
        return (
            f"expected seconds (a number) or a timedelta, got {_kind(value)}"
            f"{hint if isinstance(value, str) else ''}"
        )
    if math.isnan(seconds):
        return "expected a number of seconds, got NaN"
    if math.isinf(seconds) and not infinite:
        return "must be finite"
    if positive and not seconds > 0:
        return f"must be > 0s, got {seconds}"
    if not seconds >= 0:
        return f"must be >= 0s, got {seconds}"
    return None


def duration(
    value: DurationLike, where: str, *, positive: bool = False, infinite: bool = False
) -> Duration:
    """``value`` as a :class:`Duration`, for the argument named ``where``.

    Raises :class:`TypeError` for something that is neither a number nor a
    timedelta, and :class:`~fleetkit.errors.ConfigError` (a ``ValueError``)
    for a negative (or, with ``positive``, zero), NaN or (unless ``infinite``)
    infinite one; both messages start with ``where``.
    """
    message = duration_problem(value, positive=positive, infinite=infinite)
    if message is None:
        result = _coerce(value)
        assert result is not None
        return result
    if message.startswith("expected seconds"):
        raise TypeError(f"{where}: {message}")
    raise ConfigError([Problem(where, message)])


def optional_duration(
    value: DurationLike | None, where: str, *, positive: bool = False, infinite: bool = False
) -> Duration | None:
    """:func:`duration`, with ``None`` passed through."""
    if value is None:
        return None
    return duration(value, where, positive=positive, infinite=infinite)


def to_duration(value: DurationLike) -> Duration:
    """attrs converter: seconds or a timedelta to a :class:`Duration`.

    A value of another type is passed through for :func:`duration_check` to
    reject with the class and field in the message.
    """
    converted = _coerce(value)
    return value if converted is None else converted  # type: ignore[return-value]


def to_optional_duration(value: DurationLike | None) -> Duration | None:
    """attrs converter: :func:`to_duration`, with ``None`` kept."""
    return None if value is None else to_duration(value)


def duration_check(*, positive: bool = False, infinite: bool = False) -> Any:
    """attrs validator for a field converted by :func:`to_duration` (``None`` is allowed
    when the field's default is ``None``): raises as :func:`duration` does, naming
    ``Class.field``."""

    def check(inst: object, attribute: Any, value: object) -> None:
        if value is None and attribute.default is None:
            return
        duration(value, where(inst, attribute), positive=positive, infinite=infinite)  # type: ignore[arg-type]

    return check
