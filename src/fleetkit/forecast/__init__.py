"""Demand forecasting for the idle target: pure, synchronous, explained.

From the history of job arrivals, :class:`DemandModel` predicts arrivals per
hour ahead (an hour-of-week profile times a smoothed level and damped trend);
:func:`lead_from_histogram` / :func:`lead_from_samples` turn measured boot
times into how far ahead capacity must be asked for; :func:`demand_floor`
turns both into the slots the fleet should hold now, never negative and never
over ``max_slots``. :class:`Forecaster` keeps a model up to date as arrivals
come in. The floor enters the planner as ``plan(demand_floor=)``: it can only
raise the idle target, so the reactive policy stays the floor and no instance
is removed on a forecast alone.

Pure: no clock, no I/O; every instant is a POSIX timestamp the caller passes.
"""

from __future__ import annotations

from fleetkit.forecast._floor import Readiness as Readiness
from fleetkit.forecast._floor import batch_dispersion as batch_dispersion
from fleetkit.forecast._floor import demand_floor as demand_floor
from fleetkit.forecast._floor import lead_from_histogram as lead_from_histogram
from fleetkit.forecast._floor import lead_from_samples as lead_from_samples
from fleetkit.forecast._forecaster import Forecaster as Forecaster
from fleetkit.forecast._model import HOUR as HOUR
from fleetkit.forecast._model import WEEK_HOURS as WEEK_HOURS
from fleetkit.forecast._model import DemandModel as DemandModel
from fleetkit.forecast._model import ModelSettings as ModelSettings
from fleetkit.forecast._model import hour_of_week as hour_of_week
from fleetkit.forecast._model import hourly_counts as hourly_counts

__all__ = [
    "HOUR",
    "WEEK_HOURS",
    "DemandModel",
    "Forecaster",
    "ModelSettings",
    "Readiness",
    "batch_dispersion",
    "demand_floor",
    "hour_of_week",
    "hourly_counts",
    "lead_from_histogram",
    "lead_from_samples",
]
