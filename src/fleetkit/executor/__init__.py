"""The InstanceExecutor: the composition root of fleetkit.

:meth:`InstanceExecutor.from_config` reads a GitLab Runner ``config.toml`` and
builds the provider, schedule, limits, connector and fleet; the executor runs
jobs on the fleet (``run``, ``submit``), retries system failures on another
attempt, and applies new policies without a restart (``reload``). This package
is the only one that picks concrete providers and connectors.
"""

from __future__ import annotations

from fleetkit.executor._compose import build as build
from fleetkit.executor._compose import fleet_settings as fleet_settings
from fleetkit.executor._compose import owner_id as owner_id
from fleetkit.executor._compose import select_runner as select_runner
from fleetkit.executor._connectors import ProtocolConnector as ProtocolConnector
from fleetkit.executor._connectors import connector_factories as connector_factories
from fleetkit.executor._executor import InstanceExecutor as InstanceExecutor
from fleetkit.executor._executor import JobCounts as JobCounts
from fleetkit.executor._executor import JobResults as JobResults
from fleetkit.executor._executor import LogFactory as LogFactory
from fleetkit.executor._ledger import InstanceLedger as InstanceLedger
from fleetkit.executor._ledger import LedgerFigures as LedgerFigures

__all__ = [
    "InstanceExecutor",
    "InstanceLedger",
    "JobCounts",
    "JobResults",
    "LedgerFigures",
    "LogFactory",
    "ProtocolConnector",
    "build",
    "connector_factories",
    "fleet_settings",
    "owner_id",
    "select_runner",
]
