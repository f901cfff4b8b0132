"""Which ``[[runners]]`` entry of a config.toml fleetkit drives.

Apart from the executor so that ``fleetkit plan`` picks a runner without
loading an event loop, a provider or a connector.
"""

from __future__ import annotations

import hashlib

from fleetkit.config import AutoscalerConfig, Config, Runner
from fleetkit.errors import ConfigError, Problem

__all__ = ["owner_id", "select_runner"]


def select_runner(
    config: Config, runner: str | int | None, *, source: str | None = None
) -> tuple[int, Runner, AutoscalerConfig]:
    """The ``[[runners]]`` entry named or indexed by ``runner`` (default: the only
    one fleetkit drives), with its index and autoscaler section."""
    driven = config.autoscaled_runners()
    if runner is None:
        if len(driven) != 1:
            names = ", ".join(f"[{i}] {r.name!r}" for i, r in driven) or "none"
            raise ConfigError(
                [
                    Problem(
                        "runners",
                        f"expected exactly one runner with executor 'instance' and an "
                        f"[runners.autoscaler] section, found {len(driven)} ({names}); "
                        "choose one by name or index",
                    )
                ],
                source=source,
            )
        index, entry = driven[0]
    elif isinstance(runner, int):
        if not 0 <= runner < len(config.runners):
            raise ConfigError(
                [Problem(f"runners[{runner}]", f"no such runner ({len(config.runners)} in file)")],
                source=source,
            )
        index, entry = runner, config.runners[runner]
    else:
        matches = [(i, r) for i, r in enumerate(config.runners) if r.name == runner]
        if not matches:
            known = ", ".join(repr(r.name) for r in config.runners) or "none"
            raise ConfigError(
                [Problem("runners", f"no runner named {runner!r} (runners: {known})")],
                source=source,
            )
        index, entry = matches[0]
    if entry.autoscaler is None or not entry.autoscaled:
        raise ConfigError(
            [
                Problem(
                    f"runners[{index}]",
                    "fleetkit drives runners with executor 'instance' and a "
                    "[runners.autoscaler] section; this one has "
                    f"executor {entry.executor!r}"
                    + ("" if entry.autoscaler else " and no autoscaler section"),
                )
            ],
            source=source,
        )
    return index, entry, entry.autoscaler


def owner_id(entry: Runner, index: int) -> str:
    """A stable id for the fleet of ``entry``, stamped on the instances it creates.

    GitLab keys a runner's taskscaler by ``URL|runner-ID`` (the token when the
    ID is 0); fleetkit hashes the same, so a restart proves the instances its
    predecessor made are its own, and the token never leaves the process.
    """
    ident = str(entry.id) if entry.id else (entry.token or entry.name or f"runners[{index}]")
    digest = hashlib.sha256(f"{entry.url or ''}|{ident}".encode()).hexdigest()
    return f"fleetkit-{digest[:12]}"
