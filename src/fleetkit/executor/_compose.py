"""The parts of an :class:`~fleetkit.executor.InstanceExecutor`, from a ``config.toml``.

The one place in fleetkit that picks concrete parts: the provider named by
``plugin`` (through :func:`fleetkit.provider.load`), the connector for each
instance's protocol, and the fleet with its settings from
``[runners.autoscaler]``. It knows nothing of the executor itself
(:func:`fleetkit.executor.build` puts the parts together), so the two modules
import one way only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from fleetkit.config import AutoscalerConfig, Config, Runner, load
from fleetkit.errors import ConfigError, Problem
from fleetkit.executor._check import build_group, check_runners
from fleetkit.executor._connectors import ProtocolConnector, connector_factories
from fleetkit.executor._runners import owner_id, select_runner
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.jobs import JobOptions
from fleetkit.policy import Schedule

if TYPE_CHECKING:
    from fleetkit.isolation import Isolator

__all__ = ["Composition", "compose", "fleet_settings", "owner_id"]


@attrs.frozen(kw_only=True)
class Composition:
    """What one runner of a ``config.toml`` builds: the fleet, the connector, and
    the executor's options from the config (``concurrent`` and the job options)."""

    fleet: Fleet
    connector: ProtocolConnector
    concurrent: int | None
    options: JobOptions
    reload: Callable[[], Schedule]
    isolator: Isolator | None
    name: str = ""
    limit: int | None = None
    max_slots: int | None = None
    tags: tuple[str, ...] = ()
    run_untagged: bool = True


def compose(
    path: str | Path,
    runner: str | int | None = None,
    *,
    delete_instances_on_shutdown: bool | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Composition:
    """The parts of the executor for one runner of the config at ``path``.

    ``delete_instances_on_shutdown`` overrides the config's value (``fleetkit
    run`` deletes what it made). ``settings`` overrides other
    :class:`~fleetkit.fleet.FleetSettings` fields. ``concurrent`` is the
    smaller of the global ``concurrent`` and the runner's ``limit``; when
    neither is set, ``max_instances * capacity_per_instance`` (GitLab's
    recommended value), or no cap when ``max_instances`` is 0.
    """
    source = Path(path)
    config = load(source)
    index, entry, auto = select_runner(config, runner, source=str(source))
    owner = owner_id(entry, index)
    # The same checks as `fleetkit validate`, so a run names every problem by its
    # TOML path before anything starts.
    problems = check_runners([(index, entry)])
    if problems:
        raise ConfigError(problems, source=str(source))
    group = build_group(index, entry, auto)
    fleet_config = fleet_settings(
        auto,
        owner=owner,
        config_dir=source.resolve().parent,
        feature_flags=entry.feature_flags,
    )
    overrides = dict(settings or {})
    if delete_instances_on_shutdown is not None:
        overrides["delete_instances_on_shutdown"] = delete_instances_on_shutdown
    if overrides:
        fleet_config = _evolve(fleet_config, overrides)
    # The local group says which protocol its instances use; a cloud's is the
    # configured one. Checked against the event loop when the executor starts.
    protocol = getattr(group, "protocol", None) or auto.connector_config.protocol or "ssh"
    connector = ProtocolConnector(connector_factories(auto.connector_config), expect=[protocol])
    isolator = _isolator(entry, auto)
    fleet = Fleet(
        group,
        auto.limits(),
        auto.schedule(),
        connector=connector,
        settings=fleet_config,
        name=entry.name or f"runners[{index}]",
        # With isolation an instance is ready only when its nesting daemon answers.
        ready_check=isolator.ready_check(connector) if isolator is not None else None,
    )

    def reload() -> Schedule:
        _, _, fresh = select_runner(load(source), index, source=str(source))
        return fresh.schedule()

    tags, run_untagged = _routing(entry, index)

    return Composition(
        fleet=fleet,
        connector=connector,
        isolator=isolator,
        concurrent=_concurrent(config, entry, auto),
        options=_job_options(entry, auto, index),
        reload=reload,
        name=fleet.name,
        limit=entry.limit or None,
        max_slots=auto.max_instances * auto.capacity_per_instance or None,
        tags=tags,
        run_untagged=run_untagged,
    )


def _job_options(entry: Runner, auto: AutoscalerConfig, index: int) -> JobOptions:
    """The runner's job options, from its ``[[runners]]`` entry: the one place
    config.toml becomes :class:`~fleetkit.jobs.JobOptions`."""
    return JobOptions(
        builds_dir=entry.builds_dir or "builds",
        variables=_environment(entry, index),
        log_internal_ip=auto.log_internal_ip,
        log_external_ip=auto.log_external_ip,
        common_build_dir=_common_build_dir(entry, auto),
        shell=entry.job_shell,
        pre_build_script=entry.pre_build_script,
        post_build_script=entry.post_build_script,
    )


def _routing(entry: Runner, index: int) -> tuple[tuple[str, ...], bool]:
    """The runner's ``tags`` and ``run_untagged``: GitLab takes them at
    registration, not from config.toml; fleetkit reads them there (when
    written) to send the jobs of a jobs file. Untagged jobs go to a runner
    without tags, or one with ``run_untagged = true``, as GitLab's default."""
    raw = entry.extra.get("tags", [])
    if isinstance(raw, str):
        raw = [t.strip() for t in raw.split(",") if t.strip()]
    if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
        raise ConfigError([Problem(f"runners[{index}].tags", "expected a list of tags (strings)")])
    untagged = entry.extra.get("run_untagged", not raw)
    if not isinstance(untagged, bool):
        raise ConfigError([Problem(f"runners[{index}].run_untagged", "expected true or false")])
    return tuple(raw), untagged


def fleet_settings(
    auto: AutoscalerConfig,
    *,
    owner: str,
    config_dir: Path,
    feature_flags: Mapping[str, bool] | None = None,
) -> FleetSettings:
    """:class:`~fleetkit.fleet.FleetSettings` from ``[runners.autoscaler]`` and the
    runner's ``[runners.feature_flags]``
    (:meth:`~fleetkit.config.AutoscalerConfig.fleet_settings`)."""
    return auto.fleet_settings(owner=owner, config_dir=config_dir, feature_flags=feature_flags)


def _evolve(settings: FleetSettings, overrides: Mapping[str, Any]) -> FleetSettings:
    known = {a.name for a in attrs.fields(FleetSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError([Problem(f"settings.{k}", "not a FleetSettings field") for k in unknown])
    return attrs.evolve(settings, **overrides)


def _concurrent(config: Config, entry: Runner, auto: AutoscalerConfig) -> int | None:
    caps = [c for c in (config.concurrent, entry.limit) if c]
    if not caps and auto.max_instances:
        caps.append(auto.max_instances * auto.capacity_per_instance)
    return min(caps) if caps else None


def _common_build_dir(entry: Runner, auto: AutoscalerConfig) -> bool:
    # GitLab honours use_common_build_dir only where a build dir cannot be shared
    # by two jobs at once: single-use instances, or a VM per job (spec §1.7);
    # config.load warns when it is set anywhere else.
    wanted = entry.instance is not None and entry.instance.use_common_build_dir
    return wanted and (auto.max_use_count == 1 or auto.vm_isolation.enabled)


def _isolator(entry: Runner, auto: AutoscalerConfig) -> Isolator | None:
    """VM isolation when ``vm_isolation.enabled``: every job then runs in a VM
    of its own, never on the instance itself."""
    if not auto.vm_isolation.enabled:
        return None
    from fleetkit.isolation import IsolationSettings, Isolator

    allowed = entry.instance.allowed_images if entry.instance is not None else ()
    return Isolator(IsolationSettings.from_config(auto.vm_isolation, allowed))


def _environment(entry: Runner, index: int) -> dict[str, str]:
    """The runner's ``environment = ["NAME=value", ...]``, exported to every job."""
    raw = entry.extra.get("environment", [])
    if not isinstance(raw, list) or not all(isinstance(x, str) and "=" in x for x in raw):
        raise ConfigError(
            [Problem(f"runners[{index}].environment", 'expected a list of "NAME=value" strings')]
        )
    return dict(item.split("=", 1) for item in raw)
