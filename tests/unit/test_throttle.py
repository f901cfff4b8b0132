"""The scale throttle: GitLab's limit/burst defaults and the token bucket's arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.errors import ConfigError
from fleetkit.planner import TokenBucket


@pytest.mark.parametrize(
    ("limit", "burst", "max_instances", "rate", "size"),
    [
        (0, 0, 0, 100.0, 100),  # limit 0 means 100/s; burst falls back to the limit
        (0, 0, 40, 100.0, 40),  # burst 0 means max_instances when set
        (1, 60, 0, 1.0, 60),  # GitLab's documented example
        (5, 0, 0, 5.0, 5),
    ],
)
def test_for_limits_applies_gitlab_defaults(
    limit: int, burst: int, max_instances: int, rate: float, size: int
) -> None:
    """limit 0 is 100/s and burst 0 is max_instances, or the limit without one."""
    bucket = TokenBucket.for_limits(limit, burst, max_instances, now=0.0)
    assert (bucket.rate, bucket.burst, bucket.tokens) == (rate, size, float(size))


def test_unlimited_bucket_grants_everything() -> None:
    """limit -1 never throttles."""
    bucket = TokenBucket.for_limits(-1, 0, 10, now=0.0)
    granted, after = bucket.take(10_000, now=0.0)
    assert granted == 10_000
    assert after.next_available(0.0) == 0.0


def test_documented_example_sixty_then_one_a_second() -> None:
    """limit 1, burst 60: 60 at once, then one a second, full again after 60 s."""
    bucket = TokenBucket.for_limits(1, 60, 0, now=0.0)
    granted, bucket = bucket.take(100, now=0.0)
    assert granted == 60
    assert bucket.next_available(0.0) == pytest.approx(1.0)
    granted, bucket = bucket.take(5, now=2.5)
    assert granted == 2
    assert bucket.available(200.0) == 60


@pytest.mark.parametrize(("limit", "burst"), [(-2, 0), (1, -1)])
def test_bad_limits_name_the_key(limit: int, burst: int) -> None:
    """A negative limit (other than -1) or burst is a config error naming the key."""
    with pytest.raises(ConfigError, match="scale_throttle"):
        TokenBucket.for_limits(limit, burst, 0, now=0.0)


@given(
    st.integers(1, 50),
    st.integers(0, 30),
    st.lists(st.tuples(st.floats(0, 5), st.integers(0, 20)), max_size=30),
)
def test_never_grants_more_than_rate_allows(
    limit: int, burst: int, steps: list[tuple[float, int]]
) -> None:
    """Over any run, grants never exceed the burst plus what the rate refilled."""
    bucket = TokenBucket.for_limits(limit, burst, 0, now=0.0)
    now = 0.0
    total = 0
    for gap, want in steps:
        now += gap
        granted, bucket = bucket.take(want, now)
        assert 0 <= granted <= want
        total += granted
        assert total <= bucket.burst + math.floor(now * bucket.rate + 1e-6)


@given(st.integers(1, 50), st.integers(1, 30), st.floats(0, 100), st.integers(0, 40))
def test_next_available_is_when_a_token_is_there(
    limit: int, burst: int, at: float, drain: int
) -> None:
    """At next_available() one token can be taken, and not noticeably before."""
    _, bucket = TokenBucket.for_limits(limit, burst, 0, now=0.0).take(drain, at)
    when = bucket.next_available(at)
    assert when >= at
    granted, _ = bucket.take(1, when)
    assert granted == 1
    if when > at + 1e-6:
        assert bucket.take(1, when - 1e-6)[0] == 0
