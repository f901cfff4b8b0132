"""A reactive policy with and without a forecast, replayed over two synthetic days.

Run: ``python examples/forecast_fleet.py``. The fleet keeps no idle instance
(``idle_count = 0``); the forecast, trained on Monday, asks for capacity one
boot time ahead of Tuesday's curve. Prints Tuesday's figures for both.
"""

from __future__ import annotations

from datetime import timedelta

from fleetkit.forecasting import ForecastController
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import FleetConfig, Options, Workday, generate, simulate_one

DAY = 86400.0


def main() -> None:
    trace = generate(Workday(pipelines=80, jobs=3, days=2, seed=4))
    config = FleetConfig(
        name="reactive",
        limits=Limits(capacity_per_instance=2, max_instances=40),
        policies=[Policy(idle_count=0, idle_time=timedelta(minutes=10))],
    )
    options = Options(measure_from=DAY, seed=1)
    for name, controller in (
        ("reactive", None),
        ("forecast", ForecastController(train_for=DAY, margin=2.0)),
    ):
        figures = simulate_one(config, trace, options, controller=controller).figures
        print(
            f"{name:>8}: {figures.instance_minutes:7.0f} instance-minutes, "
            f"wait p95 {figures.wait_p95_s:5.1f} s, mean {figures.wait_mean_s:5.1f} s"
        )


if __name__ == "__main__":
    main()
