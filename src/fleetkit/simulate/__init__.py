"""Replay CI traffic through the real fleet in virtual time: cost against wait.

``fleetkit.simulate`` runs the real :class:`~fleetkit.fleet.Fleet` and planner
on a simulated cloud (:class:`CloudGroup`: seeded boot times, failed creations,
never-ready instances, spot losses) under trio's virtual clock, over a job
trace (:func:`read_trace`) or a synthetic workload (:func:`generate`), and
reports each config's waits, instance-minutes by state, churn and cost
(:class:`Figures`)::

    from fleetkit.simulate import FleetConfig, Options, generate, parse_workload, simulate

    trace = generate(parse_workload("workday:pipelines=300"))
    configs = [FleetConfig.from_toml("a.toml"), FleetConfig.from_toml("b.toml")]
    for result in simulate(configs, trace, Options(price_per_hour=0.1)):
        print(result.figures.config, result.figures.wait_p95_s, result.figures.cost)

Each config runs in its own virtual clock; ``workers=2`` runs them in two
processes. See ``docs/simulate.md``.
"""

from __future__ import annotations

from fleetkit.simulate._api import Result, simulate, simulate_one
from fleetkit.simulate._boot import PRESETS, BootTime, parse_boot_time, parse_seconds
from fleetkit.simulate._config import FleetConfig
from fleetkit.simulate._figures import JSON_KEYS, Figures, Series, figures, lower_bound_minutes
from fleetkit.simulate._provider import CloudFaults, CloudGroup, Life, ReadyUp
from fleetkit.simulate._replay import Controller, Options, Replay, replay
from fleetkit.simulate._theory import erlang_c_wait, fcfs_waits
from fleetkit.simulate._trace import (
    DEFAULT_START,
    Trace,
    TraceJob,
    parse_trace,
    read_trace,
    write_csv,
)
from fleetkit.simulate._workload import Poisson, Workday, generate, parse_workload

__all__ = [
    "DEFAULT_START",
    "JSON_KEYS",
    "PRESETS",
    "BootTime",
    "CloudFaults",
    "CloudGroup",
    "Controller",
    "Figures",
    "FleetConfig",
    "Life",
    "Options",
    "Poisson",
    "ReadyUp",
    "Replay",
    "Result",
    "Series",
    "Trace",
    "TraceJob",
    "Workday",
    "erlang_c_wait",
    "fcfs_waits",
    "figures",
    "generate",
    "lower_bound_minutes",
    "parse_boot_time",
    "parse_seconds",
    "parse_trace",
    "parse_workload",
    "read_trace",
    "replay",
    "simulate",
    "simulate_one",
    "write_csv",
]
