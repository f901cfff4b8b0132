"""The forecasting policy on the real fleet in virtual time (through the simulator)."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from fleetkit.fleet import Fleet
from fleetkit.forecast import DemandModel, Forecaster
from fleetkit.forecasting import ForecastController, follow_forecast
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.simulate import FleetConfig, Options, Trace, Workday, generate, simulate_one

DAY = 86400.0
# Monday and Tuesday: train on Monday, measure Tuesday.
TRACE = generate(Workday(pipelines=60, jobs=3, days=2, seed=5))
REACTIVE = FleetConfig(
    name="reactive",
    limits=Limits(capacity_per_instance=2, max_instances=40),
    policies=[Policy(idle_count=0, idle_time=timedelta(minutes=10))],
)
OPTIONS = Options(measure_from=DAY, seed=2)


def test_the_forecast_holds_capacity_ahead_of_the_morning_and_waits_less() -> None:
    reactive = simulate_one(REACTIVE, TRACE, OPTIONS).figures
    forecast = simulate_one(
        REACTIVE, TRACE, OPTIONS, controller=ForecastController(train_for=DAY, margin=2.0)
    ).figures
    assert forecast.jobs == reactive.jobs
    # Capacity asked for ahead costs idle minutes and saves waiting.
    assert forecast.idle_instance_minutes > reactive.idle_instance_minutes
    assert forecast.wait_mean_s < reactive.wait_mean_s
    assert forecast.wait_p95_s <= reactive.wait_p95_s


def test_follow_forecast_sets_the_floor_and_learns_from_the_fleet() -> None:
    base = TRACE.start.timestamp()
    monday = [base + j.arrival for j in TRACE.jobs if j.arrival < DAY]
    seen: list[int] = []
    kept: list[Forecaster] = []

    async def controller(fleet: Fleet, trace: Trace) -> None:
        forecaster = Forecaster(
            DemandModel.fit(monday, base, base + DAY), mean_duration=300.0, margin=2.0
        )
        kept.append(forecaster)
        t0 = anyio.current_time()
        await anyio.sleep(DAY)

        async def watch() -> None:
            while True:
                seen.append(fleet.snapshot().requested + len(fleet.snapshot().instances))
                await anyio.sleep(600)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await follow_forecast(
                fleet, forecaster, clock=lambda: base + anyio.current_time() - t0, every=300
            )

    reactive = simulate_one(REACTIVE, TRACE, OPTIONS).figures
    forecast = simulate_one(REACTIVE, TRACE, OPTIONS, controller=controller).figures
    assert forecast.wait_mean_s < reactive.wait_mean_s
    assert max(seen) > 0
    # It learnt Tuesday's hours from the slots the fleet handed out.
    assert kept[0].model.next_bucket >= (base + 2 * DAY) // 3600 - 1
    # Had it recorded nothing, a day of empty hours would have sunk the level.
    assert kept[0].model.level > 0.5


def test_follow_forecast_refuses_a_bad_period() -> None:
    async def main() -> None:
        forecaster = Forecaster(DemandModel.fit([], 0.0, 3600.0), mean_duration=1.0)
        with pytest.raises(ValueError, match="every"):
            await follow_forecast(None, forecaster, every=0)  # type: ignore[arg-type]

    anyio.run(main)
