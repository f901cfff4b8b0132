"""The scale throttle as a pure token bucket (``scale_throttle.limit``/``burst``).

GitLab's meaning: ``limit`` is the refill rate in instances per second (0 means
100/s, -1 unlimited); ``burst`` is the bucket size (0 means ``max_instances``,
or ``limit`` when ``max_instances`` is 0). The bucket starts full: with limit 1
and burst 60, 60 instances may be created at once, then one a second.

A value, like urllib3's ``Retry``: ``take`` returns a new bucket, and the time is
always a parameter, never read from a clock.
"""

from __future__ import annotations

import math

import attrs

from fleetkit.errors import ConfigError, Problem

__all__ = ["TokenBucket"]

# Float refills can land a hair under a whole token at the very instant
# next_available() promised one.
_EPSILON = 1e-9


@attrs.frozen
class TokenBucket:
    """``tokens`` (of at most ``burst``) as of ``updated_at``, refilled at ``rate``
    per second; ``rate`` is ``math.inf`` when unlimited."""

    rate: float
    burst: int
    tokens: float
    updated_at: float

    @classmethod
    def for_limits(cls, limit: int, burst: int, max_instances: int, now: float) -> TokenBucket:
        """A full bucket for ``[runners.autoscaler.scale_throttle]`` at ``now``."""
        problems = []
        if limit < -1:
            problems.append(
                Problem("scale_throttle.limit", f"must be -1 (unlimited) or >= 0, got {limit}")
            )
        if burst < 0:
            problems.append(Problem("scale_throttle.burst", f"must be >= 0, got {burst}"))
        if problems:
            raise ConfigError(problems)
        if limit == -1:
            return cls(math.inf, 0, math.inf, now)
        rate = 100 if limit == 0 else limit
        size = burst or max_instances or rate
        return cls(float(rate), size, float(size), now)

    @property
    def unlimited(self) -> bool:
        """Whether the bucket never runs dry."""
        return math.isinf(self.rate)

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (time before ``updated_at`` counts as none)."""
        if self.unlimited:
            return math.inf
        elapsed = max(now - self.updated_at, 0.0)
        return min(float(self.burst), self.tokens + elapsed * self.rate)

    def take(self, n: int, now: float) -> tuple[int, TokenBucket]:
        """Take up to ``n`` whole tokens at ``now``: (granted, the bucket after)."""
        if n < 0:
            raise ValueError(f"cannot take {n} tokens")
        if self.unlimited:
            return n, self
        tokens = self.available(now)
        granted = min(n, math.floor(tokens + _EPSILON))
        left = max(tokens - granted, 0.0)
        return granted, attrs.evolve(self, tokens=left, updated_at=max(now, self.updated_at))

    def next_available(self, now: float) -> float:
        """The earliest time, not before ``now``, at which one whole token is there."""
        tokens = self.available(now)
        if tokens + _EPSILON >= 1:
            return now
        return max(now, self.updated_at) + (1 - tokens) / self.rate
