"""Compare three fleets on a synthetic working week: cost against wait.

The seed's two examples (one job per instance, used once; five jobs per
instance, kept warm all week) and ``office-hours.toml`` (the five-job fleet
warm only on weekday office hours) replay the same week of CI traffic of a
Berlin team, on Linux VMs that boot in about 45 s, at 0.10 per instance-hour:

    python examples/simulate/compare.py

The same comparison from the command line, with charts in ``report/``:

    fleetkit simulate examples/seed-one-job-per-instance.toml \\
        examples/seed-five-jobs-per-instance.toml examples/simulate/office-hours.toml \\
        --workload workday:pipelines=80,jobs=3,tz=Europe/Berlin --price-per-hour 0.10 \\
        --report report
"""

from __future__ import annotations

from pathlib import Path

from fleetkit.simulate import FleetConfig, Options, generate, parse_workload, simulate

HERE = Path(__file__).parent
CONFIGS = [
    HERE.parent / "seed-one-job-per-instance.toml",
    HERE.parent / "seed-five-jobs-per-instance.toml",
    HERE / "office-hours.toml",
]


def main() -> None:
    trace = generate(parse_workload("workday:pipelines=80,jobs=3,tz=Europe/Berlin"))
    configs = [FleetConfig.from_toml(path) for path in CONFIGS]
    results = simulate(configs, trace, Options(price_per_hour=0.10), workers=2)
    print(f"{len(trace.jobs)} jobs in a week; lower bound: what a fleet that knew the future pays")
    print(
        f"{'config':<28} {'p95 wait':>9} {'max wait':>9} {'inst-hours':>11} {'cost':>7} {'x bound':>8}"
    )
    for result in results:
        f = result.figures
        print(
            f"{f.config:<28} {f.wait_p95_s:>8.0f}s {f.wait_max_s:>8.0f}s "
            f"{f.instance_minutes / 60:>11.1f} {f.cost:>7.2f} "
            f"{f.instance_minutes / f.lower_bound_instance_minutes:>7.2f}x"
        )


if __name__ == "__main__":
    main()
