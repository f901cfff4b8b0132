"""Tune GitLab Runner's own policies with the simulator: ``fleetkit tune``.

:func:`tune` simulates every candidate of a :class:`SearchSpace` (static
``idle_count`` / ``idle_time`` / ``scale_factor`` policies, and the same with a
second policy for weekday working hours) on the first part of a trace, picks
the cheapest whose p95 wait meets the target, and checks it on the held-out
rest (:attr:`TuneResult.held_out_miss` says when it misses there).
:func:`policy_blocks` writes the ``[[runners.autoscaler.policy]]`` blocks to
paste. Simulations run in a process pool (``workers``).
"""

from __future__ import annotations

from fleetkit.tune._search import Scored as Scored
from fleetkit.tune._search import TuneResult as TuneResult
from fleetkit.tune._search import tune as tune
from fleetkit.tune._space import Candidate as Candidate
from fleetkit.tune._space import SearchSpace as SearchSpace
from fleetkit.tune._space import candidates as candidates
from fleetkit.tune._space import policy_blocks as policy_blocks

__all__ = [
    "Candidate",
    "Scored",
    "SearchSpace",
    "TuneResult",
    "candidates",
    "policy_blocks",
    "tune",
]
