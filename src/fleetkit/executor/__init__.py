"""The InstanceExecutor: the composition root of fleetkit.

:meth:`InstanceExecutor.from_config` reads a GitLab Runner ``config.toml`` and
builds the provider, schedule, limits, connector and fleet; the executor runs
jobs on the fleet (``run``, ``submit``), retries system failures on another
attempt, and applies new policies without a restart (``reload``). This package
is the only one that picks concrete providers and connectors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetkit.executor._check import check_runners as check_runners
    from fleetkit.executor._compose import fleet_settings as fleet_settings
    from fleetkit.executor._connectors import ProtocolConnector as ProtocolConnector
    from fleetkit.executor._connectors import connector_factories as connector_factories
    from fleetkit.executor._executor import InstanceExecutor as InstanceExecutor
    from fleetkit.executor._executor import JobCounts as JobCounts
    from fleetkit.executor._executor import JobResults as JobResults
    from fleetkit.executor._executor import LogFactory as LogFactory
    from fleetkit.executor._executor import RunnerLane as RunnerLane
    from fleetkit.executor._executor import build as build
    from fleetkit.executor._job_stats import JobCollector as JobCollector
    from fleetkit.executor._job_stats import JobStats as JobStats
    from fleetkit.executor._job_stats import register_job_metrics as register_job_metrics
    from fleetkit.executor._ledger import InstanceLedger as InstanceLedger
    from fleetkit.executor._ledger import LedgerFigures as LedgerFigures
    from fleetkit.executor._metrics_server import MetricsServer as MetricsServer
    from fleetkit.executor._runners import owner_id as owner_id
    from fleetkit.executor._runners import select_runner as select_runner

# Each public name and the module that holds it, imported on first use
# (PEP 562): `fleetkit plan` needs select_runner only, and must not load the
# event loop, providers and connectors the rest brings.
_WHERE = {
    "build": "_executor",
    "fleet_settings": "_compose",
    "owner_id": "_runners",
    "check_runners": "_check",
    "ProtocolConnector": "_connectors",
    "connector_factories": "_connectors",
    "InstanceExecutor": "_executor",
    "JobCounts": "_executor",
    "JobResults": "_executor",
    "LogFactory": "_executor",
    "RunnerLane": "_executor",
    "JobCollector": "_job_stats",
    "JobStats": "_job_stats",
    "register_job_metrics": "_job_stats",
    "InstanceLedger": "_ledger",
    "LedgerFigures": "_ledger",
    "MetricsServer": "_metrics_server",
    "select_runner": "_runners",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "InstanceExecutor",
    "InstanceLedger",
    "JobCollector",
    "JobCounts",
    "JobResults",
    "JobStats",
    "LedgerFigures",
    "LogFactory",
    "MetricsServer",
    "ProtocolConnector",
    "RunnerLane",
    "build",
    "check_runners",
    "connector_factories",
    "fleet_settings",
    "owner_id",
    "register_job_metrics",
    "select_runner",
]
