"""Go's ``time.Duration`` text form, both ways, on :class:`datetime.timedelta`.

GitLab Runner writes durations the way Go's ``Duration.String()`` prints them
("20m0s", "24h0m0s", "300ms") and reads them with ``time.ParseDuration``, which
also takes "24h", "1.5h", "1h30m" and "0". This module follows both exactly,
except that a timedelta holds microseconds: a value with a finer part (say
"1ns") is rounded to the nearest microsecond.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

__all__ = ["format_duration", "parse_duration"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, what Go prints
    "\u03bcs": 1_000,  # Greek small mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Go's ParseDuration rejects anything outside int64 nanoseconds.
_MAX_NS = (1 << 63) - 1
_MIN_NS = -(1 << 63)
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string: ``"20m0s"``, ``"1.5h"``, ``"300ms"``, ``"-5s"``, ``"0"``.

    Raises :class:`ValueError` naming the text and what was expected.
    """
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return timedelta(0)
    if not rest:
        raise ValueError(f'{text!r} is not a Go duration (expected e.g. "20m0s" or "1.5h")')
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        assert match is not None  # every part of the pattern may be empty
        whole, fraction, unit = match.groups()
        if not whole and not fraction:
            raise ValueError(f"{text!r} is not a Go duration: expected a number at {rest[pos:]!r}")
        if not unit:
            raise ValueError(f"{text!r} is not a Go duration: missing unit after a number")
        if unit not in _NS_PER_UNIT:
            raise ValueError(
                f"{text!r} is not a Go duration: unknown unit {unit!r} "
                "(expected ns, us, ms, s, m or h)"
            )
        number = Fraction(int(whole or "0"))
        if fraction:
            number += Fraction(int(fraction), 10 ** len(fraction))
        total += number * _NS_PER_UNIT[unit]
        pos = match.end()
    nanoseconds = -total if negative else total
    if not _MIN_NS <= nanoseconds <= _MAX_NS:
        raise ValueError(f"{text!r} is out of range for a Go duration (about 292 years)")
    return timedelta(microseconds=round(nanoseconds / 1000))


def format_duration(value: timedelta | float) -> str:
    """Format like Go's ``Duration.String()``: ``"20m0s"``, ``"1h30m0s"``, ``"300ms"``, ``"0s"``.

    Takes a timedelta, or seconds (a :class:`~fleetkit.model.Duration` is both).
    """
    if not isinstance(value, timedelta):
        value = timedelta(seconds=value)
    nanoseconds = (value // timedelta(microseconds=1)) * 1000
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        # Below a second Go switches to the largest unit that keeps an integer part.
        for unit, scale in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= scale:
                return f"{sign}{_with_fraction(ns, scale)}{unit}"
    seconds = _with_fraction(ns % 60_000_000_000, 1_000_000_000)
    minutes = ns // 60_000_000_000
    if minutes == 0:
        return f"{sign}{seconds}s"
    hours, minutes = divmod(minutes, 60)
    head = f"{hours}h" if hours else ""
    return f"{sign}{head}{minutes}m{seconds}s"


def _with_fraction(ns: int, scale: int) -> str:
    """``ns / scale`` in decimal, without trailing zeros in the fraction."""
    whole, part = divmod(ns, scale)
    if not part:
        return str(whole)
    digits = str(part).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
