"""The capacity and idle-policy planner: pure, synchronous, explained.

``plan(snapshot, policy, limits, now) -> Plan``: given the fleet at one instant,
decide which waiting acquisitions get which slot, how many instances to add and
which to remove, each decision with its reason. ``can_reserve`` answers whether
one more reservation fits; ``TokenBucket`` is the scale throttle as a value;
``classify``, ``room`` and ``first_free`` are the slot accounting and slot choice
the planner and the fleet runtime share.
"""

from __future__ import annotations

from fleetkit.planner._accounting import SlotCounts as SlotCounts
from fleetkit.planner._accounting import classify as classify
from fleetkit.planner._accounting import count_instances as count_instances
from fleetkit.planner._accounting import first_free as first_free
from fleetkit.planner._accounting import room as room
from fleetkit.planner._decisions import Assignment as Assignment
from fleetkit.planner._decisions import Deprovision as Deprovision
from fleetkit.planner._decisions import Drained as Drained
from fleetkit.planner._decisions import Figures as Figures
from fleetkit.planner._decisions import IdleExpired as IdleExpired
from fleetkit.planner._decisions import NotReadyInTime as NotReadyInTime
from fleetkit.planner._decisions import OverMaxInstances as OverMaxInstances
from fleetkit.planner._decisions import Plan as Plan
from fleetkit.planner._decisions import Provision as Provision
from fleetkit.planner._decisions import RemovalReason as RemovalReason
from fleetkit.planner._decisions import Unhealthy as Unhealthy
from fleetkit.planner._decisions import UseCountExhausted as UseCountExhausted
from fleetkit.planner._plan import plan as plan
from fleetkit.planner._reserve import ReserveDecision as ReserveDecision
from fleetkit.planner._reserve import can_reserve as can_reserve
from fleetkit.planner._throttle import TokenBucket as TokenBucket

__all__ = [
    "Assignment",
    "Deprovision",
    "Drained",
    "Figures",
    "IdleExpired",
    "NotReadyInTime",
    "OverMaxInstances",
    "Plan",
    "Provision",
    "RemovalReason",
    "ReserveDecision",
    "SlotCounts",
    "TokenBucket",
    "Unhealthy",
    "UseCountExhausted",
    "can_reserve",
    "classify",
    "count_instances",
    "first_free",
    "plan",
    "room",
]
