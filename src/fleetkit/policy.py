"""Idle policies and the schedule that picks the active one.

A :class:`Policy` says how much idle capacity (in slots) to keep warm and for how
long; its ``periods`` (5-field cron, evaluated in ``timezone``) say when it
applies. :class:`Schedule` picks the active policy for a wall-clock instant: the
*last* policy in file order with a period matching that minute, else
:data:`DEFAULT_POLICY` (``idle_count = 0``, ``idle_time = 5m``, no scale factor).

Pure: nothing here reads a clock; callers pass the instant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import croniter

__all__ = ["DEFAULT_POLICY", "Policy", "Schedule", "idle_target"]


def _nonneg_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _nonneg_float(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0 or math.isinf(value):  # also rejects NaN
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _nonneg_duration(
    _inst: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if value < timedelta(0):
        raise ValueError(f"{attribute.name} must be >= 0s, got {value}")


def _periods(
    _inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for period in value:
        if len(period.split()) != 5 or not croniter.is_valid(period):
            raise ValueError(f"{attribute.name}: {period!r} is not a 5-field cron expression")


def _to_periods(value: Iterable[str]) -> tuple[str, ...]:
    # A named converter (not ``tuple``) so type checkers see ``Iterable[str]``.
    if isinstance(value, str):
        raise ValueError(f"periods must be a list of cron strings, got the string {value!r}")
    return tuple(value)


def _timezone(_inst: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{attribute.name}: {value!r} is not an IANA time zone name") from exc


@attrs.frozen(kw_only=True)
class Policy:
    """One ``[[runners.autoscaler.policy]]`` entry, with GitLab's defaults.

    ``idle_count`` is idle capacity in *slots*, not instances. ``scale_factor``
    adds idle capacity proportional to the slots in use, capped by
    ``scale_factor_limit`` (0 = no cap). ``preemptive_mode`` left as ``None``
    means ``idle_count > 0``. ``timezone`` ``None`` evaluates periods in the time
    zone of the instant given (UTC for naive instants).
    """

    idle_count: int = attrs.field(default=0, validator=_nonneg_int)
    idle_time: timedelta = attrs.field(default=timedelta(0), validator=_nonneg_duration)
    scale_factor: float = attrs.field(default=0.0, validator=_nonneg_float)
    scale_factor_limit: int = attrs.field(default=0, validator=_nonneg_int)
    preemptive_mode: bool | None = None
    periods: tuple[str, ...] = attrs.field(
        default=("* * * * *",), converter=_to_periods, validator=_periods
    )
    timezone: str | None = attrs.field(default=None, validator=_timezone)

    @property
    def preemptive(self) -> bool:
        """Whether reservations need a ready idle slot now."""
        return self.idle_count > 0 if self.preemptive_mode is None else self.preemptive_mode

    def matches(self, at: datetime) -> bool:
        """Whether any period matches the minute of ``at`` in this policy's zone."""
        local = _localize(at, self.timezone).replace(second=0, microsecond=0)
        return any(croniter.match(p, local) for p in self.periods)


#: The policy in force when no configured policy's period matches.
DEFAULT_POLICY = Policy(idle_count=0, idle_time=timedelta(minutes=5))


def idle_target(policy: Policy, in_use: int) -> int:
    """Idle slots to keep: ``max(idle_count, min(ceil(scale_factor * in_use), limit))``.

    ``scale_factor_limit`` 0 means no cap on the scale-factor term.
    """
    if in_use < 0:
        raise ValueError(f"in_use must be >= 0, got {in_use}")
    scaled = math.ceil(policy.scale_factor * in_use) if policy.scale_factor > 0 else 0
    if policy.scale_factor_limit > 0:
        scaled = min(scaled, policy.scale_factor_limit)
    return max(policy.idle_count, scaled)


def _localize(at: datetime, timezone: str | None) -> datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(timezone)) if timezone else at


class Schedule:
    """The configured policies, in file order, and which one is active when."""

    __slots__ = ("_cache", "policies")

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        # Periods have minute resolution, so one answer serves a whole minute.
        self._cache: dict[int, Policy] = {}

    def __repr__(self) -> str:
        return f"Schedule({list(self.policies)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.policies == self.policies

    def __hash__(self) -> int:
        return hash(self.policies)

    def active(self, at: datetime) -> Policy:
        """The last policy whose period matches the minute of ``at``, else the default."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        minute = int(at.timestamp() // 60)
        found = self._cache.get(minute)
        if found is None:
            found = self._lookup(at)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[minute] = found
        return found

    def _lookup(self, at: datetime) -> Policy:
        for policy in reversed(self.policies):
            if policy.matches(at):
                return policy
        return DEFAULT_POLICY

    def next_change(
        self, after: datetime, *, horizon: timedelta = timedelta(days=8)
    ) -> datetime | None:
        """The first minute boundary after ``after`` at which the active policy differs
        from the one active at ``after``; ``None`` if none within ``horizon``."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        current = self.active(after)
        start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for step in range(int(horizon.total_seconds() // 60)):
            t = start + timedelta(minutes=step)
            if self.active(t) is not current:
                return t
        return None

    @property
    def policy_list(self) -> Sequence[Policy]:
        """The configured policies in file order."""
        return self.policies
