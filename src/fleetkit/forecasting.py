"""Run a fleet with a forecast: the async side of :mod:`fleetkit.forecast`.

:func:`follow_forecast` runs beside a :class:`~fleetkit.fleet.Fleet` (in the
caller's task group) and every ``every`` seconds sets the fleet's demand floor
(:meth:`~fleetkit.fleet.Fleet.set_demand_floor`) to what the
:class:`~fleetkit.forecast.Forecaster` wants one lead ahead, the lead taken
from the fleet's own readiness histogram unless given. It learns from the
fleet's acquisitions as they happen. The floor only raises the idle target,
so the configured policies stay in charge of everything else.

:class:`ForecastController` is the same for :mod:`fleetkit.simulate`: a
picklable controller for ``simulate_one(controller=)`` that trains on the
trace's first part and then follows the forecast, learning from the jobs that
have arrived so far (never from later ones).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
import attrs

from fleetkit.fleet import Fleet, SlotAcquired
from fleetkit.forecast import DemandModel, Forecaster, ModelSettings, lead_from_histogram

if TYPE_CHECKING:
    # Only a type: running a real fleet with a forecast needs no simulator extra.
    from fleetkit.simulate import Trace

__all__ = ["ForecastController", "follow_forecast"]

_READINESS = "instance_readiness_time_seconds"


def _max_slots(fleet: Fleet) -> int:
    limits = fleet.limits
    return limits.max_instances * limits.capacity_per_instance


async def follow_forecast(
    fleet: Fleet,
    forecaster: Forecaster,
    *,
    every: float = 300.0,
    lead: float | None = None,
    learn: bool = True,
    clock: Callable[[], float] | None = None,
) -> None:
    """Keep ``fleet``'s demand floor at ``forecaster``'s until cancelled.

    ``lead``: seconds ahead to ask for capacity (``None``: the fleet's measured
    readiness 90th percentile plus a minute). ``learn``: record each slot the
    fleet hands out as an arrival. ``clock``: POSIX seconds now (default: the
    wall clock read once at the start, advanced with anyio's clock).
    """
    if not every > 0:
        raise ValueError(f"every must be > 0 seconds, got {every!r}")
    if clock is None:
        origin = datetime.now(UTC).timestamp() - anyio.current_time()

        def clock() -> float:
            return origin + anyio.current_time()

    offset = clock() - anyio.current_time()
    async with fleet.events(max_buffer=100_000) as stream:
        while True:
            if learn:
                while True:
                    try:
                        event = stream.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if isinstance(event, SlotAcquired):
                        forecaster.record(event.at + offset)
            ahead = lead
            if ahead is None:
                ahead = lead_from_histogram(fleet.stats().histograms[_READINESS])
            fleet.set_demand_floor(
                forecaster.floor(clock(), lead=ahead, max_slots=_max_slots(fleet))
            )
            await anyio.sleep(every)


@attrs.frozen(kw_only=True)
class ForecastController:
    """A forecasting policy for ``fleetkit.simulate.simulate_one(controller=)``.

    Until ``train_for`` seconds into the trace the fleet runs on its policies
    alone; then a :class:`~fleetkit.forecast.DemandModel` is fitted on the jobs
    that arrived so far, and every ``every`` seconds the floor is set from it,
    the model learning each hour from the jobs that arrived in it. ``lead``:
    as in :func:`follow_forecast`. ``margin``: standard deviations of headroom.
    """

    train_for: float
    every: float = 300.0
    lead: float | None = None
    margin: float = 1.0
    settings: ModelSettings = attrs.field(factory=ModelSettings)

    async def __call__(self, fleet: Fleet, trace: Trace) -> None:
        """Run beside the replay (the controller protocol)."""
        t0 = anyio.current_time()
        base = trace.start.timestamp()
        await anyio.sleep_until(t0 + self.train_for)
        jobs = trace.jobs
        seen = 0
        while seen < len(jobs) and jobs[seen].arrival < self.train_for:
            seen += 1
        model = DemandModel.fit(
            (base + j.arrival for j in jobs[:seen]), base, base + self.train_for, self.settings
        )
        forecaster = Forecaster.from_history(
            ((base + j.arrival, j.duration) for j in jobs[:seen]),
            base,
            base + self.train_for,
            margin=self.margin,
            model=model,
        )

        def clock() -> float:
            return base + anyio.current_time() - t0

        # The jobs that arrived since the last step are the history the
        # forecaster may learn from: exactly what a runtime would have seen.
        def feed() -> None:
            nonlocal seen
            now = anyio.current_time() - t0
            while seen < len(jobs) and jobs[seen].arrival <= now:
                forecaster.record(base + jobs[seen].arrival, jobs[seen].duration)
                seen += 1

        while True:
            feed()
            ahead = self.lead
            if ahead is None:
                ahead = lead_from_histogram(fleet.stats().histograms[_READINESS])
            floor = forecaster.floor(clock(), lead=ahead, max_slots=_max_slots(fleet))
            fleet.set_demand_floor(floor)
            await anyio.sleep(self.every)
