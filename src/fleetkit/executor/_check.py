"""Building the parts a runner would run, without contacting anything, so that
their own checks run where ``fleetkit validate`` and ``InstanceExecutor.from_config``
can report them with full TOML paths.

``provider.load`` builds the provider from ``plugin_config`` (its ``from_config``
checks its keys, naming ``plugin_config.<key>``; nothing is called until
``init``); the connector factories are built for the protocols the runner may
meet; ``key_path`` is read, as GitLab reads it at ``init``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from fleetkit import provider
from fleetkit._files import MAX_KEY_BYTES, read_bounded
from fleetkit.config import AutoscalerConfig, Runner
from fleetkit.errors import ConfigError, FleetkitError, PluginNotFound, Problem
from fleetkit.executor._connectors import connector_factories, connector_problems
from fleetkit.executor._runners import owner_id
from fleetkit.provider import InstanceGroup

__all__ = ["build_group", "check_runners", "key_path_problem"]


def _prefixed(prefix: str, problems: Iterable[Problem]) -> list[Problem]:
    return [Problem(f"{prefix}.{p.path}" if p.path else prefix, p.message) for p in problems]


def build_group(index: int, entry: Runner, auto: AutoscalerConfig) -> InstanceGroup:
    """The provider of ``runners[index]``, built and checked but not started.

    Raises :class:`~fleetkit.errors.ConfigError` whose problems carry full TOML
    paths (``runners[0].autoscaler.plugin_config.nmae``), and for a plugin that
    is not installed, one at ``runners[0].autoscaler.plugin``.
    """
    where = f"runners[{index}].autoscaler"
    try:
        return provider.load(
            auto.plugin, auto.plugin_config, auto.connector_config, owner=owner_id(entry, index)
        )
    except ConfigError as exc:
        raise ConfigError(_prefixed(where, exc.problems), source=exc.source) from None
    except PluginNotFound as exc:
        raise ConfigError([Problem(f"{where}.plugin", str(exc))]) from None


def key_path_problem(path: str, key_path: str | None) -> Problem | None:
    """``key_path`` that cannot be read, as a problem at ``path`` (GitLab fails
    ``init`` when it cannot read the key, with static or dynamic credentials)."""
    if not key_path:
        return None
    file = os.path.expanduser(key_path)
    try:
        read_bounded(file, MAX_KEY_BYTES)
    except OSError as exc:
        return Problem(path, f"cannot read the key file {key_path}: {exc.strerror}")
    return None


def check_runners(runners: Sequence[tuple[int, Runner]]) -> list[Problem]:
    """Every problem building the providers and connectors of ``runners`` finds, at once."""
    found: list[Problem] = []
    for index, entry in runners:
        auto = entry.autoscaler
        if auto is None:
            continue
        where = f"runners[{index}].autoscaler"
        try:
            build_group(index, entry, auto)
        except ConfigError as exc:
            found += exc.problems
        except FleetkitError as exc:
            found.append(Problem(f"{where}.plugin", str(exc)))
        for section, config in (
            ("connector_config", auto.connector_config),
            ("vm_isolation.connector_config", auto.vm_isolation.connector_config),
        ):
            if section.startswith("vm_isolation") and not auto.vm_isolation.enabled:
                continue
            found += _prefixed(f"{where}.{section}", connector_problems(config))
        problem = key_path_problem(
            f"{where}.connector_config.key_path", auto.connector_config.key_path
        )
        if problem is not None:
            found.append(problem)
        found += _connectors_built(where, auto)
        if auto.vm_isolation.enabled:
            found += isolation_problems(where, auto)
    return found


def isolation_problems(where: str, auto: AutoscalerConfig) -> list[Problem]:
    """What would stop VM isolation from working, found before any job: the
    isolation extra missing, a ``nesting_host`` in none of the three forms, an
    unreadable ``key_path`` for the VMs. (A protocol other than SSH, for the
    instances or the VMs, is refused by the connector checks already.)"""
    vm = auto.vm_isolation
    path = f"{where}.vm_isolation"
    try:
        from fleetkit.isolation import parse_nesting_host
    except ImportError as exc:
        return [
            Problem(
                f"{path}.enabled",
                f"VM isolation needs the isolation extra ({exc.name} is missing): "
                "pip install 'fleetkit[isolation]'",
            )
        ]
    found: list[Problem] = []
    if vm.nesting_host:  # an empty one is reported by config.load already
        try:
            parse_nesting_host(vm.nesting_host, where=f"{path}.nesting_host")
        except ConfigError as exc:
            found += exc.problems
    problem = key_path_problem(f"{path}.connector_config.key_path", vm.connector_config.key_path)
    if problem is not None:
        found.append(problem)
    return found


def _connectors_built(where: str, auto: AutoscalerConfig) -> list[Problem]:
    """Build each connector the runner may meet (none connects until asked)."""
    found: list[Problem] = []
    for protocol, factory in connector_factories(auto.connector_config).items():
        try:
            factory()
        except (ValueError, TypeError) as exc:
            found.append(Problem(f"{where}.connector_config", f"{protocol} connector: {exc}"))
        except ImportError as exc:
            found.append(
                Problem(
                    f"{where}.connector_config",
                    f"the {protocol} connector cannot be loaded ({exc}): "
                    "pip install 'fleetkit[ssh]'",
                )
            )
    return found
