"""Shared test configuration: hypothesis profiles and the anyio backends."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Policies without a timezone read the local zone (TZ, as GitLab Runner): every
# test starts in UTC whatever the machine's zone, and those about zones set TZ.
os.environ["TZ"] = "UTC"
