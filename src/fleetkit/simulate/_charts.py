"""PNG charts of a comparison: demand against capacity over time, and waits.

Needs matplotlib (the ``plot`` extra), imported only here and with the
non-interactive Agg backend, so that no display is needed and nothing else of
fleetkit pays for the import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fleetkit.errors import ConfigError, Problem
from fleetkit.simulate._api import Result

__all__ = ["require_matplotlib", "write_charts"]


def require_matplotlib() -> None:
    """Raise :class:`~fleetkit.errors.ConfigError` when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            [Problem("--report", "charts need matplotlib: pip install 'fleetkit[plot]'")]
        ) from None


def write_charts(results: Sequence[Result], directory: str | Path) -> list[Path]:
    """Write ``capacity.png`` and ``waits.png`` into ``directory``; return their paths.

    Each result needs its series (``Options(series_step=...)``).
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "capacity.png", out / "waits.png"]

    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    demand_drawn = False
    for result in results:
        s = result.series
        if s is None:
            continue
        hours = [i * s.step / 3600 for i in range(len(s.demand))]
        if not demand_drawn:
            ax.fill_between(
                hours, s.demand, step="post", color="0.8", label="demand (jobs waiting or running)"
            )
            demand_drawn = True
        ax.step(
            hours,
            s.capacity,
            where="post",
            linewidth=1.2,
            label=f"{result.figures.config}: ready slots",
        )
    ax.set_xlabel("hours from the trace's start")
    ax.set_ylabel("slots")
    ax.set_title("Demand against capacity")
    ax.legend(loc="upper right", fontsize="small")
    ax.margins(x=0)
    fig.tight_layout()
    fig.savefig(paths[0])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for result in results:
        waits = sorted(result.waits)
        if not waits:
            continue
        n = len(waits)
        # Share of jobs that waited longer than x: the tail is what hurts. Jobs
        # that did not wait at all are the curve's height at its left end.
        first = next((i for i, w in enumerate(waits) if w >= 0.1), n)
        xs = [0.1, *waits[first:]]
        ys = [(n - first) / n] + [1 - (i + 1) / n for i in range(first, n)]
        f = result.figures
        label = f"{f.config}: {(n - first) / n:.0%} waited, p95 {f.wait_p95_s:.0f}s"
        ax.step(xs, ys, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("wait for a slot, seconds (log)")
    ax.set_ylabel("share of jobs that waited longer")
    ax.set_title("Wait distribution")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
