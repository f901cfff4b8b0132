"""What one simulated fleet is made of: limits, policies, settings, concurrency.

:class:`FleetConfig` is a plain, picklable value, so that a search over
policies (``fleetkit tune``) can build thousands of them in Python and run them
in worker processes; :meth:`FleetConfig.from_toml` reads one from a GitLab
Runner ``config.toml`` the way :class:`~fleetkit.executor.InstanceExecutor`
does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

from fleetkit.config import load
from fleetkit.fleet import FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy, Schedule

__all__ = ["FleetConfig"]


def _concurrent_ok(
    _inst: object, _attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 1:
        raise ValueError(f"FleetConfig.concurrent must be >= 1 or None, got {value}")


def _policies(value: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class FleetConfig:
    """One fleet to simulate.

    ``policies`` in file order (the last matching one is active, as in GitLab).
    ``concurrent`` caps jobs in flight (the smaller of GitLab's global
    ``concurrent`` and the runner's ``limit``; ``None``: no cap but the
    fleet's). ``settings`` are the fleet's runtime settings; the simulation
    turns state storage off and sets its own owner id.
    """

    name: str
    limits: Limits = attrs.field(factory=Limits)
    policies: tuple[Policy, ...] = attrs.field(default=(), converter=_policies)
    settings: FleetSettings = attrs.field(factory=FleetSettings)
    concurrent: int | None = attrs.field(default=None, validator=_concurrent_ok)

    @property
    def schedule(self) -> Schedule:
        """The policies as a :class:`~fleetkit.policy.Schedule`."""
        return Schedule(self.policies)

    @classmethod
    def from_toml(
        cls, path: str | Path, runner: str | int | None = None, *, name: str | None = None
    ) -> FleetConfig:
        """The fleet of one ``[[runners]]`` entry of a ``config.toml``.

        Raises :class:`~fleetkit.errors.ConfigError` with TOML paths, as
        ``fleetkit validate`` reports them. ``name`` defaults to the file's stem.
        """
        from fleetkit.executor import fleet_settings, owner_id, select_runner

        source = Path(path)
        config = load(source)
        index, entry, auto = select_runner(config, runner, source=str(source))
        settings = fleet_settings(auto, owner=owner_id(entry, index), config_dir=source.parent)
        caps = [c for c in (config.concurrent, entry.limit) if c]
        if not caps and auto.max_instances:
            # As InstanceExecutor: GitLab's recommended concurrent.
            caps.append(auto.max_instances * auto.capacity_per_instance)
        return cls(
            name=name or source.stem,
            limits=auto.limits(),
            policies=auto.policy,
            settings=settings,
            concurrent=min(caps) if caps else None,
        )
