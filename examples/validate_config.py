"""Load a GitLab Runner config.toml and print each runner's limits and active policy.

Run: python examples/validate_config.py [CONFIG]   (default: the seed's first example)
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from fleetkit.config import format_duration, load
from fleetkit.errors import ConfigError


def main(path: Path) -> int:
    try:
        config = load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"problem: {problem}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}")
    now = datetime.now(UTC)
    for index, runner in config.autoscaled_runners():
        assert runner.autoscaler is not None  # autoscaled_runners() guarantees it
        limits = runner.autoscaler.limits()
        policy = runner.autoscaler.schedule().active(now)
        print(f"runners[{index}] {runner.name or '(unnamed)'}")
        print(f"  limits: {limits}")
        print(
            f"  active policy now: idle_count={policy.idle_count} "
            f"idle_time={format_duration(policy.idle_time)} preemptive={policy.preemptive}"
        )
    return 0


if __name__ == "__main__":
    default = Path(__file__).parent / "seed-one-job-per-instance.toml"
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
