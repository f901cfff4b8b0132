"""The side-by-side table of figures, as rows of text any renderer can draw.

:func:`rows` gives ``(label, [one cell per config])`` pairs; the command draws
them with rich on a terminal and as aligned plain text otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetkit.simulate._figures import Figures

__all__ = ["duration_text", "rows", "summary_line"]


def duration_text(seconds: float) -> str:
    """``0s``, ``4.2s``, ``12m5s``, ``3h20m``, ``2d4h``: short and exact enough."""
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == 0 else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _minutes(value: float) -> str:
    return f"{value:,.0f}"


def _share(part: float, whole: float) -> str:
    return f" ({part / whole:.0%})" if whole > 0 else ""


def rows(results: Sequence[Figures], *, price_per_hour: float) -> list[tuple[str, list[str]]]:
    """The report's rows, one cell per config."""

    def each(fn: object) -> list[str]:
        return [fn(f) for f in results]  # type: ignore[operator]

    threshold = duration_text(results[0].wait_threshold_s) if results else "?"
    cost_label = f"cost at {price_per_hour:g}/instance-hour"
    out: list[tuple[str, list[str]]] = [
        ("jobs", each(lambda f: f"{f.jobs:,}")),
        ("wait mean", each(lambda f: duration_text(f.wait_mean_s))),
        (
            "wait p50 / p95 / p99",
            each(
                lambda f: " / ".join(
                    duration_text(v) for v in (f.wait_p50_s, f.wait_p95_s, f.wait_p99_s)
                )
            ),
        ),
        ("wait max", each(lambda f: duration_text(f.wait_max_s))),
        (
            f"jobs waiting > {threshold}",
            each(
                lambda f: (
                    f"{f.jobs_waited_over_threshold:,}{_share(f.jobs_waited_over_threshold, f.jobs)}"
                )
            ),
        ),
        ("instance-minutes", each(lambda f: _minutes(f.instance_minutes))),
        (
            "  busy",
            each(
                lambda f: (
                    _minutes(f.busy_instance_minutes)
                    + _share(f.busy_instance_minutes, f.instance_minutes)
                )
            ),
        ),
        (
            "  idle",
            each(
                lambda f: (
                    _minutes(f.idle_instance_minutes)
                    + _share(f.idle_instance_minutes, f.instance_minutes)
                )
            ),
        ),
        (
            "  booting",
            each(
                lambda f: (
                    _minutes(f.booting_instance_minutes)
                    + _share(f.booting_instance_minutes, f.instance_minutes)
                )
            ),
        ),
        (
            "instances created / deleted",
            each(lambda f: f"{f.instances_created:,} / {f.instances_deleted:,}"),
        ),
        ("  deleted without a job", each(lambda f: f"{f.instances_unused:,}")),
        ("time at max_instances", each(lambda f: duration_text(f.time_at_max_instances_s))),
        (
            "jobs retried / failed / unfinished",
            each(lambda f: f"{f.jobs_retried:,} / {f.jobs_failed:,} / {f.jobs_unfinished:,}"),
        ),
        (cost_label, each(lambda f: f"{f.cost:,.2f}")),
        (
            "lower bound (no wait)",
            each(
                lambda f: (
                    f"{_minutes(f.lower_bound_instance_minutes)} min, {f.lower_bound_cost:,.2f}"
                )
            ),
        ),
        (
            "  instance-minutes / bound",
            each(
                lambda f: (
                    f"{f.instance_minutes / f.lower_bound_instance_minutes:.2f}x"
                    if f.lower_bound_instance_minutes > 0
                    else "-"
                )
            ),
        ),
    ]
    return out


def summary_line(
    jobs: int, span: float, source: str, boot: str, warm: bool, seed: int, not_started: int
) -> str:
    """One line saying what was simulated."""
    jobs_word = "job" if not_started == 1 else "jobs"
    skipped = (
        f"; {not_started:,} {jobs_word} of the export never started (not replayed)"
        if not_started
        else ""
    )
    return (
        f"{jobs:,} jobs over {duration_text(span)} from {source}; boot time {boot}; "
        f"{'warm' if warm else 'cold'} start; seed {seed}{skipped}"
    )
