"""AWS provider call budget, measured on moto in server mode.

Counts come from the provider's own client-call counter (``AWSInstanceGroup.stats``)
and are cross-checked against the requests the moto server received. Goals:
at most 2 calls per steady update tick, and 1 SetDesiredCapacity per scale-up.

Run: ``python bench/bench_aws.py``; prints ``BENCH <name>=<value> <unit>`` lines.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping

from fleetkit.model import ConnectorConfig
from fleetkit.provider.aws import AWSInstanceGroup
from fleetkit.testing.moto import MotoServer

SCALE_UP = 20
TICKS = 20


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> Counter[str]:
    return Counter(after) - Counter(before)


def _report(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name}={value:g} {unit}", flush=True)


async def _measure(moto: MotoServer) -> None:
    moto.create_group("bench", max_size=SCALE_UP + 5)
    group = AWSInstanceGroup.from_config(
        moto.plugin_config("bench"),
        ConnectorConfig(username="ec2-user"),
        owner="bench",
        rng=random.Random(0),
    )
    await group.init()
    try:
        await group.update()
        before, server_before = group.stats.calls, moto.calls
        accepted = await group.increase(SCALE_UP)
        scale_up = _diff(group.stats.calls, before)
        if accepted != SCALE_UP or scale_up != _diff(moto.calls, server_before):
            sys.exit(f"increase({SCALE_UP}) accepted {accepted}; calls {scale_up}")
        _report(f"aws_calls_per_scale_up_{SCALE_UP}", scale_up.total(), "calls")
        _report(
            f"aws_set_desired_capacity_per_scale_up_{SCALE_UP}",
            scale_up["SetDesiredCapacity"],
            "calls",
        )

        before = group.stats.calls
        await group.update()
        _report(
            f"aws_calls_first_update_after_scale_up_{SCALE_UP}",
            _diff(group.stats.calls, before).total(),
            "calls",
        )

        before, server_before = group.stats.calls, moto.calls
        started = time.perf_counter()
        for _ in range(TICKS):
            statuses = await group.update()
        elapsed = time.perf_counter() - started
        steady = _diff(group.stats.calls, before)
        if steady != _diff(moto.calls, server_before) or len(statuses) != SCALE_UP:
            sys.exit(f"steady ticks disagree: client {steady}, {len(statuses)} instances")
        _report("aws_calls_per_steady_update", steady.total() / TICKS, "calls")
        _report("aws_steady_update_ms", round(elapsed / TICKS * 1000, 1), "ms")

        ids = [s.id for s in statuses]
        before = group.stats.calls
        removed = await group.decrease(ids)
        if len(removed) != SCALE_UP:
            sys.exit(f"decrease removed {len(removed)} of {SCALE_UP}")
        _report(
            f"aws_calls_per_decrease_{SCALE_UP}",
            _diff(group.stats.calls, before).total(),
            "calls",
        )
    finally:
        await group.shutdown()


def main() -> None:
    """Start moto, measure, stop."""
    logging.basicConfig(level=logging.WARNING)
    with MotoServer() as moto:
        asyncio.run(_measure(moto))


if __name__ == "__main__":
    main()
