"""The fleet runtime (layer 6): taskscaler's job on anyio.

``async with Fleet(group, limits, schedule) as fleet:`` keeps an instance group
sized to demand under the active idle policy and hands out job slots with
``async with fleet.acquire(key) as slot``. See :mod:`fleetkit.fleet._fleet` for
the theory of operation (a synchronous fleet state, :mod:`fleetkit.fleet._state`,
and the async driver that performs its effects, :mod:`fleetkit.fleet._driver`)
and ``docs/fleet.md`` for a guide.
"""

from __future__ import annotations

from fleetkit._settings import FleetSettings as FleetSettings
from fleetkit.fleet._clock import WallClock as WallClock
from fleetkit.fleet._clock import anchored_wall_clock as anchored_wall_clock
from fleetkit.fleet._events import FleetEvent as FleetEvent
from fleetkit.fleet._events import InstanceDeleted as InstanceDeleted
from fleetkit.fleet._events import InstanceDraining as InstanceDraining
from fleetkit.fleet._events import InstanceFailed as InstanceFailed
from fleetkit.fleet._events import InstanceReady as InstanceReady
from fleetkit.fleet._events import InstanceRunning as InstanceRunning
from fleetkit.fleet._events import InstanceSeen as InstanceSeen
from fleetkit.fleet._events import InstancesRequested as InstancesRequested
from fleetkit.fleet._events import PlanMade as PlanMade
from fleetkit.fleet._events import SlotAcquired as SlotAcquired
from fleetkit.fleet._events import SlotReleased as SlotReleased
from fleetkit.fleet._fleet import Fleet as Fleet
from fleetkit.fleet._metrics import FleetCollector as FleetCollector
from fleetkit.fleet._metrics import register_metrics as register_metrics
from fleetkit.fleet._probe import ReadyCheck as ReadyCheck
from fleetkit.fleet._slots import Slot as Slot
from fleetkit.fleet._stats import FleetStats as FleetStats
from fleetkit.fleet._stats import HistogramSnapshot as HistogramSnapshot

__all__ = [
    "Fleet",
    "FleetCollector",
    "FleetEvent",
    "FleetSettings",
    "FleetStats",
    "HistogramSnapshot",
    "InstanceDeleted",
    "InstanceDraining",
    "InstanceFailed",
    "InstanceReady",
    "InstanceRunning",
    "InstanceSeen",
    "InstancesRequested",
    "PlanMade",
    "ReadyCheck",
    "Slot",
    "SlotAcquired",
    "SlotReleased",
    "WallClock",
    "anchored_wall_clock",
    "register_metrics",
]
