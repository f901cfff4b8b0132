"""Queueing theory to check a simulation against: Erlang C and the FCFS recursion.

A fleet of ``c`` single-slot instances that are always there and take jobs
first come, first served is an M/M/c queue when arrivals are Poisson and
durations exponential: its mean wait is Erlang C's, and on any one trace each
job's wait is what the c-server recursion gives (Kiefer and Wolfowitz).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

__all__ = ["erlang_c_wait", "fcfs_waits"]


def erlang_c_wait(servers: int, arrival_rate: float, service_rate: float) -> float:
    """Mean wait in queue of M/M/c: ``C(c, a) / (c mu - lambda)`` with ``a = lambda / mu``.

    Raises :class:`ValueError` unless ``lambda < c mu`` (a stable queue).
    """
    if servers < 1 or arrival_rate <= 0 or service_rate <= 0:
        raise ValueError("erlang_c_wait needs servers >= 1 and positive rates")
    a = arrival_rate / service_rate
    if a >= servers:
        raise ValueError(f"load {a / servers:.3f} >= 1: the queue grows without bound")
    below = math.fsum(a**k / math.factorial(k) for k in range(servers))
    top = a**servers / math.factorial(servers) * servers / (servers - a)
    waiting = top / (below + top)
    return waiting / (servers * service_rate - arrival_rate)


def fcfs_waits(arrivals: Sequence[float], durations: Sequence[float], servers: int) -> list[float]:
    """Each job's wait with ``servers`` identical servers, first come first served."""
    free = [0.0] * servers
    waits = []
    for arrival, duration in zip(arrivals, durations, strict=True):
        start = max(arrival, heapq.heappop(free))
        waits.append(start - arrival)
        heapq.heappush(free, start + duration)
    return waits
