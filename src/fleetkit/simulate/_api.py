"""Simulate several configs over one trace: the entry point for programs.

:func:`simulate_one` is a plain function of picklable values, so a caller that
runs many configs (a policy search) can hand it to a process pool as it is;
:func:`simulate` does that itself with ``workers`` > 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import attrs

from fleetkit.simulate._config import FleetConfig
from fleetkit.simulate._figures import Figures, Series, figures, series
from fleetkit.simulate._replay import Controller, Options, replay
from fleetkit.simulate._trace import Trace

__all__ = ["Result", "simulate", "simulate_one"]


@attrs.frozen
class Result:
    """One config's figures, and its demand/capacity samples when asked for."""

    figures: Figures
    series: Series | None = None
    waits: tuple[float, ...] = ()


def simulate_one(
    config: FleetConfig,
    trace: Trace,
    options: Options | None = None,
    *,
    controller: Controller | None = None,
) -> Result:
    """Replay ``trace`` through ``config``'s fleet and return its figures.

    With ``options.series_step`` the result also holds the demand and capacity
    samples and every job's wait (for charts). ``controller``: see
    :func:`~fleetkit.simulate.replay`.
    """
    options = options or Options()
    run = replay(config, trace, options, controller=controller)
    figs = figures(
        run,
        wait_threshold=options.wait_threshold,
        price_per_hour=options.price_per_hour,
        since=options.measure_from,
    )
    if options.series_step is None:
        return Result(figs)
    return Result(figs, series(run, options.series_step), tuple(run.waits))


def simulate(
    configs: Sequence[FleetConfig],
    trace: Trace,
    options: Options | None = None,
    *,
    workers: int = 1,
) -> list[Result]:
    """:func:`simulate_one` for each config, in order; ``workers`` > 1 uses processes."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    options = options or Options()
    if workers == 1 or len(configs) < 2:
        return [simulate_one(c, trace, options) for c in configs]
    with ProcessPoolExecutor(max_workers=min(workers, len(configs))) as pool:
        return list(
            pool.map(simulate_one, configs, [trace] * len(configs), [options] * len(configs))
        )
