"""fleetkit: composable autoscaling primitives for CI fleets.

Import the layer you need: :mod:`fleetkit.planner` (pure capacity planning),
:mod:`fleetkit.policy`, :mod:`fleetkit.config`, :mod:`fleetkit.provider`,
:mod:`fleetkit.connector`, :mod:`fleetkit.fleet` (the runtime),
:mod:`fleetkit.jobs` and :mod:`fleetkit.executor`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
