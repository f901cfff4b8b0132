"""Idle policies and the schedule that picks the active one.

A :class:`Policy` says how much idle capacity (in slots) to keep warm and for how
long; its ``periods`` (5-field cron, evaluated in ``timezone``) say when it
applies. :class:`Schedule` picks the active policy for a wall-clock instant: the
*last* policy in file order with a period matching that minute, else
:data:`DEFAULT_POLICY` (``idle_count = 0``, ``idle_time = 5m``, no scale factor).

Pure: nothing here reads a clock; callers pass the instant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import attrs
from croniter import CroniterBadDateError, croniter

from fleetkit._checks import boolean, int_at_least, nonneg_number
from fleetkit._duration import Duration, duration_check, to_duration

__all__ = ["DEFAULT_POLICY", "Policy", "Schedule", "idle_target"]


def _periods(
    _inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for period in value:
        if not isinstance(period, str):
            raise TypeError(f"{attribute.name}: expected cron strings, got {type(period).__name__}")
        shown = _shown(period)
        if len(period) > _MAX_PERIOD or len(period.split()) != 5 or not croniter.is_valid(period):
            raise ValueError(f"{attribute.name}: {shown} is not a 5-field cron expression")
        backwards = _backward_range(period)
        if backwards:
            raise ValueError(
                f"{attribute.name}: {shown} has the range {backwards!r}, which runs backwards: "
                "write ranges low to high (e.g. '22-23,0-5' for a night)"
            )
        if not _can_fire(period):
            raise ValueError(
                f"{attribute.name}: {shown} never matches (no month it names has such a day), "
                "so the policy would never apply"
            )


# Longer than any real cron line; keeps a pasted blob out of messages and croniter.
_MAX_PERIOD = 200
_NAMES = {
    name: number
    for names in (
        ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
        ("", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    )
    for number, name in enumerate(names)
    if name
}


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _backward_range(period: str) -> str | None:
    """The first ``a-b`` of ``period`` with ``a > b`` (croniter wraps those around;
    GitLab's cron parser refuses them)."""
    for field in period.split():
        for item in field.split(","):
            low, dash, high = item.partition("/")[0].partition("-")
            if not dash:
                continue
            values = [_NAMES.get(x.lower(), x) for x in (low, high)]
            if all(isinstance(v, int) or v.isdigit() for v in values) and int(values[0]) > int(
                values[1]
            ):
                return item
    return None


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of a leap year


def _can_fire(period: str) -> bool:
    """Whether ``period`` matches some minute of some year (``"0 0 31 2 *"`` does not)."""
    compiled = _compile(period)
    if compiled.exotic:
        # L, nth weekday and the like: let croniter search (a rare, slower path).
        try:
            croniter(period, datetime(2000, 1, 1), max_years_between_matches=30).get_next(datetime)
        except (CroniterBadDateError, ValueError):
            return False
        return True
    if not (compiled.minutes and compiled.hours and compiled.months and compiled.weekdays):
        return False
    if compiled.day_or or (len(compiled.weekdays) < 7 and len(compiled.days) == 31):
        return True  # some weekday of some month always matches
    return any(
        day <= _DAYS_IN_MONTH[month - 1] for month in compiled.months for day in compiled.days
    )


def _to_periods(value: Iterable[str]) -> tuple[str, ...]:
    # A named converter (not ``tuple``) so type checkers see ``Iterable[str]``.
    if isinstance(value, str):
        raise TypeError(f"periods must be a list of cron strings, got the string {value!r}")
    return tuple(value)


def _timezone(_inst: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    problem = f"{attribute.name}: {_shown(value)} is not an IANA time zone name"
    # The name becomes a path under the tz database: bound it before the file
    # system sees it (a name over 255 bytes, a NUL, a directory).
    if not value or len(value) > 64 or not value.isprintable():
        raise ValueError(problem + " (such as 'Europe/Berlin' or 'UTC')")
    try:
        ZoneInfo(value)
    except IsADirectoryError:
        inside = sorted(z for z in available_timezones() if z.startswith(value + "/"))[:2]
        example = f", e.g. {' or '.join(map(repr, inside))}" if inside else ""
        raise ValueError(f"{problem}: it is a region; name a zone in it{example}") from None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(problem + " (such as 'Europe/Berlin' or 'UTC')") from None


@attrs.frozen(kw_only=True)
class Policy:
    """One ``[[runners.autoscaler.policy]]`` entry, with GitLab's defaults.

    ``idle_count`` is idle capacity in *slots*, not instances. ``scale_factor``
    adds idle capacity proportional to the slots in use, capped by
    ``scale_factor_limit`` (0 = no cap). ``preemptive_mode`` left as ``None``
    means ``idle_count > 0``. ``timezone`` ``None`` evaluates periods in the
    schedule's local zone (GitLab: the system's), or, in :meth:`matches` and a
    :class:`Schedule` without one, in the zone of the instant given (UTC for
    naive instants).
    """

    idle_count: int = attrs.field(default=0, validator=int_at_least(0))
    idle_time: Duration = attrs.field(
        default=Duration(0), converter=to_duration, validator=duration_check()
    )
    scale_factor: float = attrs.field(default=0.0, validator=nonneg_number)
    scale_factor_limit: int = attrs.field(default=0, validator=int_at_least(0))
    preemptive_mode: bool | None = attrs.field(default=None, validator=boolean)
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
        local = _localize(at, self.timezone)
        return any(_compile(p).matches(local) for p in self.periods)


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
    return at.astimezone(_zone(timezone)) if timezone else at


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# croniter parses (names, ranges, steps, lists, 7 = Sunday); matching a minute
# against the sets it expands to is ~1,000 times faster than croniter.match,
# which walks back to the previous fire time. Periods using croniter's
# extensions (L, nth weekday) are matched by croniter itself.
@attrs.frozen
class _Period:
    """One cron period as sets of the values each field accepts."""

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as cron has it
    # Vixie cron's rule: restricted day-of-month and day-of-week match when either does.
    day_or: bool
    exotic: bool

    def day_matches(self, local: datetime) -> bool:
        if local.month not in self.months:
            return False
        dom = local.day in self.days
        dow = local.isoweekday() % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def matches(self, local: datetime) -> bool:
        """Whether the minute of ``local`` (wall time in the period's zone) matches."""
        if self.exotic:
            return croniter.match(self.expr, local.replace(second=0, microsecond=0))
        return local.minute in self.minutes and local.hour in self.hours and self.day_matches(local)

    def status(self, local: datetime) -> tuple[bool, int]:
        """Whether ``local``'s minute matches, and for how many wall minutes from it
        (at least 1) the answer stays the same, looking no further than the day."""
        if self.exotic:
            return self.matches(local), 1
        minute, hour = local.minute, local.hour
        to_day_end = 1440 - (hour * 60 + minute)
        if not self.day_matches(local):
            return False, to_day_end
        if hour not in self.hours:
            return False, 60 - minute
        if len(self.minutes) == 60:
            return True, to_day_end if len(self.hours) == 24 else 60 - minute
        inside = minute in self.minutes
        same = 1
        while minute + same < 60 and ((minute + same) in self.minutes) == inside:
            same += 1
        return inside, same


_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


@functools.lru_cache(maxsize=512)
def _compile(expr: str) -> _Period:
    cron = croniter(expr)
    fields: list[frozenset[int]] = []
    exotic = bool(cron.nth_weekday_of_month)
    for (low, high), values in zip(_RANGES, cron.expanded, strict=True):
        if values == ["*"]:
            fields.append(frozenset(range(low, high + 1)))
        elif all(isinstance(v, int) for v in values):
            fields.append(frozenset(int(v) % 7 if high == 6 else int(v) for v in values))
        else:
            exotic = True
            fields.append(frozenset())
    day_or = cron.expanded[2] != ["*"] and cron.expanded[4] != ["*"]
    minutes, hours, days, months, weekdays = fields
    return _Period(expr, minutes, hours, days, months, weekdays, day_or, exotic)


# Built here, after _compile, which validating its periods needs.
#: The policy in force when no configured policy's period matches.
DEFAULT_POLICY = Policy(idle_count=0, idle_time=timedelta(minutes=5))


class Schedule:
    """The configured policies, in file order, and which one is active when.

    ``local_zone`` is where policies without ``timezone`` read their periods
    (GitLab Runner: the system's local zone; see
    :meth:`fleetkit.config.AutoscalerConfig.schedule`). ``None`` reads them in
    the zone of each instant asked about.
    """

    __slots__ = ("_cache", "_compiled", "_zoned", "local_zone", "policies")

    def __init__(self, policies: Iterable[Policy] = (), local_zone: tzinfo | None = None) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.local_zone = local_zone
        # Last in file order first: the first match is the active policy.
        self._compiled: tuple[tuple[Policy, tzinfo | None, tuple[_Period, ...]], ...] = tuple(
            (
                policy,
                _zone(policy.timezone) if policy.timezone else local_zone,
                tuple(_compile(p) for p in policy.periods),
            )
            for policy in reversed(self.policies)
        )
        # Without a zone, a policy reads the instant's own zone, so the cache key
        # must then include the instant's UTC offset.
        self._zoned = all(zone is not None for _, zone, _ in self._compiled)
        # Periods have minute resolution, so one answer serves a whole minute.
        self._cache: dict[object, Policy] = {}

    def __repr__(self) -> str:
        zone = "" if self.local_zone is None else f", local_zone={self.local_zone!r}"
        return f"Schedule({list(self.policies)!r}{zone})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schedule)
            and other.policies == self.policies
            and other.local_zone == self.local_zone
        )

    def __hash__(self) -> int:
        return hash(self.policies)

    def zone_of(self, policy: Policy) -> tzinfo | None:
        """The zone ``policy``'s periods are read in (``None``: the instant's own)."""
        return _zone(policy.timezone) if policy.timezone else self.local_zone

    def active(self, at: datetime) -> Policy:
        """The last policy whose period matches the minute of ``at``, else the default."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        minute = int(at.timestamp() // 60)
        key: object = minute if self._zoned else (minute, at.utcoffset())
        found = self._cache.get(key)
        if found is None:
            found = self._lookup(at)
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _lookup(self, at: datetime) -> Policy:
        for policy, zone, periods in self._compiled:
            local = at.astimezone(zone) if zone is not None else at
            for period in periods:
                if period.matches(local):
                    return policy
        return DEFAULT_POLICY

    def _scan(self, at: datetime, zone_of_instant: tzinfo) -> tuple[Policy, int]:
        """The policy active at ``at`` and for how many minutes no period can
        change its answer (at least 1). Policies without a zone read
        ``zone_of_instant``."""
        found: Policy | None = None
        stable = 1440
        for policy, zone, periods in self._compiled:
            local = at.astimezone(zone if zone is not None else zone_of_instant)
            for period in periods:
                matched, same = period.status(local)
                stable = min(stable, same)
                if matched and found is None:
                    found = policy
        return found or DEFAULT_POLICY, max(stable, 1)

    def next_change(
        self, after: datetime, *, horizon: timedelta = timedelta(days=8)
    ) -> datetime | None:
        """The first minute boundary after ``after`` at which the active policy differs
        from the one active at ``after``; ``None`` if none within ``horizon``.

        Skips ahead over stretches where no period's answer can change (the rest
        of an hour or a day), so a week is a few hundred steps, not 10,080.
        """
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        if not self.policies:
            return None
        current = self.active(after)
        own_zone = after.tzinfo
        assert own_zone is not None
        # Step in UTC: arithmetic on aware datetimes is wall-clock arithmetic in
        # their own zone, which a DST change would bend.
        at = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = at + horizon
        zones = {zone for _, zone, _ in self._compiled if zone is not None} | {own_zone}
        while at < end:
            policy, stable = self._scan(at, own_zone)
            if policy is not current:
                return at.astimezone(own_zone)
            step = timedelta(minutes=stable)
            # Wall minutes equal real ones only while no zone changes its offset;
            # across a DST change, go minute by minute.
            if stable > 1 and any(
                (at + step).astimezone(z).utcoffset() != at.astimezone(z).utcoffset() for z in zones
            ):
                step = timedelta(minutes=1)
            at += step
        return None

    @property
    def policy_list(self) -> Sequence[Policy]:
        """The configured policies in file order."""
        return self.policies
