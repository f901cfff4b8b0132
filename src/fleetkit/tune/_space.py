"""The policies GitLab Runner itself can run, as a bounded grid.

A candidate is a list of ``[[runners.autoscaler.policy]]`` entries: a base
policy for every minute (``idle_count``, ``idle_time``, ``scale_factor`` and
its limit) and, when the grid asks for it, a second for working hours on
weekdays (``* H1-H2 * * mon-fri``), which GitLab applies then because the last
matching policy wins. Nothing here runs a simulation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta

import attrs

from fleetkit.policy import Policy

__all__ = ["Candidate", "SearchSpace", "candidates", "policy_blocks"]


@attrs.frozen(kw_only=True)
class SearchSpace:
    """The grid searched (every combination; keep it small).

    ``idle_counts`` / ``idle_times`` / ``scale_factors`` (with
    ``scale_factor_limit``) for the all-week base policy; ``day_windows``:
    weekday working hours ``(first, last)`` (hours of the day, inclusive) for a
    second policy, whose idle count comes from ``day_idle_counts``; an empty
    ``day_windows`` searches static policies only.
    """

    idle_counts: tuple[int, ...] = (0, 1, 2, 4, 8)
    idle_times: tuple[float, ...] = (300.0, 900.0, 1800.0)
    scale_factors: tuple[float, ...] = (0.0,)
    scale_factor_limit: int = 0
    day_windows: tuple[tuple[int, int], ...] = ((7, 18), (8, 17))
    day_idle_counts: tuple[int, ...] = (2, 4, 8, 12)

    def __attrs_post_init__(self) -> None:
        if not self.idle_counts or not self.idle_times or not self.scale_factors:
            raise ValueError("idle_counts, idle_times and scale_factors need a value each")
        for first, last in self.day_windows:
            if not 0 <= first <= last <= 23:
                raise ValueError(f"day window {(first, last)!r}: expected 0 <= first <= last <= 23")
        if self.day_windows and not self.day_idle_counts:
            raise ValueError("day_windows need day_idle_counts")


@attrs.frozen
class Candidate:
    """One point of the grid: the policies in file order, and a short label."""

    label: str
    policies: tuple[Policy, ...]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g}m"


def _base(space: SearchSpace, count: int, idle: float, factor: float) -> Policy:
    return Policy(
        idle_count=count,
        idle_time=timedelta(seconds=idle),
        scale_factor=factor,
        scale_factor_limit=space.scale_factor_limit if factor else 0,
    )


def candidates(space: SearchSpace) -> list[Candidate]:
    """Every candidate of ``space``, static ones first."""
    grid = list(itertools.product(space.idle_counts, space.idle_times, space.scale_factors))
    out: list[Candidate] = []
    for count, idle, factor in grid:
        tag = f"idle_count={count} idle_time={_minutes(idle)}"
        if factor:
            tag += f" scale_factor={factor:g}"
        out.append(Candidate(tag, (_base(space, count, idle, factor),)))
    for (count, idle, factor), (first, last), day in itertools.product(
        grid, space.day_windows, space.day_idle_counts
    ):
        if day <= count:
            continue  # the day policy would keep no more than the base: not a new point
        base = _base(space, count, idle, factor)
        working = attrs.evolve(base, idle_count=day, periods=(f"* {first}-{last} * * mon-fri",))
        tag = (
            f"idle_count={count} idle_time={_minutes(idle)}"
            + (f" scale_factor={factor:g}" if factor else "")
            + f"; mon-fri {first:02d}-{last:02d}h idle_count={day}"
        )
        out.append(Candidate(tag, (base, working)))
    return out


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_blocks(policies: Sequence[Policy]) -> str:
    """``[[runners.autoscaler.policy]]`` blocks for ``policies``, to paste into config.toml."""
    blocks = []
    for policy in policies:
        lines = ["[[runners.autoscaler.policy]]"]
        lines.append("  periods = [" + ", ".join(map(_toml_string, policy.periods)) + "]")
        if policy.timezone:
            lines.append(f"  timezone = {_toml_string(policy.timezone)}")
        lines.append(f"  idle_count = {policy.idle_count}")
        lines.append(f'  idle_time = "{_minutes(policy.idle_time.total_seconds())}"')
        if policy.scale_factor:
            lines.append(f"  scale_factor = {policy.scale_factor:g}")
            if policy.scale_factor_limit:
                lines.append(f"  scale_factor_limit = {policy.scale_factor_limit}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
