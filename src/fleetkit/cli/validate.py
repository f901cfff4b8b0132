"""``fleetkit validate CONFIG``: check a config.toml and summarise it on one screen.

Prints ``OK`` and a summary (runners, plugin, capacity, limits, policies and the
one active now, and the zone policies without ``timezone`` are read in) with
any warnings, exit status 0; or every problem on stderr, exit status 1. Besides
the config itself, it builds the provider and connectors each runner would run
(contacting nothing), so that a plugin that is not installed, a typo in
``plugin_config``, an unreadable ``key_path`` or a protocol fleetkit cannot
speak is reported here with its full TOML path. A missing or unreadable file is a problem too (1); bad arguments
are argparse's usage errors (2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from fleetkit._localzone import LocalZone, local_zone
from fleetkit._text import printable
from fleetkit.cli._common import instant, now_here
from fleetkit.config import Config, Runner, VMIsolation, check, format_duration
from fleetkit.errors import Problem
from fleetkit.model import ConnectorConfig
from fleetkit.policy import Policy

__all__ = ["register", "run", "summary"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``validate`` to the ``fleetkit`` command."""
    parser = commands.add_parser(
        "validate",
        help="check a config.toml and summarise it",
        description="Check a GitLab Runner config.toml the way fleetkit reads it: print OK "
        "and a summary, or every problem with its TOML path.",
    )
    parser.add_argument("config", metavar="CONFIG", type=Path, help="path to config.toml")
    parser.add_argument(
        "--at",
        metavar="WHEN",
        type=instant,
        help="show the policy active at this ISO 8601 instant (default: now; naive is in "
        "the local zone, TZ or the system's)",
    )
    parser.add_argument(
        "--config-only",
        action="store_true",
        help="check the config.toml alone: do not build the providers and connectors a run "
        "would use (for a config meant for GitLab Runner's own plugins)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate ``args.config``; 0 when it loads, 1 when it has problems."""
    out = out or sys.stdout
    err = err or sys.stderr
    path: Path = args.config
    found = check(path)
    parts: list[Problem] = []
    if not getattr(args, "config_only", False):
        from fleetkit.executor import check_runners

        # The providers and connectors a run would use, built (nothing is
        # contacted), so that their own checks report here too.
        parts = check_runners([(i, r) for i, r in found.runners if r.autoscaled])
    problems = [
        *found.problems,
        *(p for p in parts if p.path not in {q.path for q in found.problems}),
    ]
    if problems:
        print(printable(f"{path}: {_count(problems, 'problem')}"), file=err)
        for problem in problems:
            print(printable(f"  - {problem}"), file=err)
        for line in _warnings(found.warnings):
            print(printable(line), file=err)
        return 1
    assert found.config is not None
    config = found.config
    at: datetime = args.at or now_here()
    print(printable(f"OK {path}"), file=out)
    for line in summary(config, at):
        # The config is anyone's text (a url, a name): shown as data.
        print(printable(line), file=out)
    return 0


def summary(config: Config, at: datetime, zone: LocalZone | None = None) -> Iterator[str]:
    """The lines of the one-screen summary, with policies evaluated at ``at``;
    policies without ``timezone`` in ``zone`` (default: the local zone)."""
    zone = zone or local_zone()
    concurrent = "not set" if config.concurrent is None else str(config.concurrent)
    yield f"concurrent: {concurrent}"
    for index, runner in enumerate(config.runners):
        yield from _runner(index, runner, at, zone)
    yield from _warnings(config.warnings)


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _warnings(warnings: Sequence[Problem]) -> Iterator[str]:
    if warnings:
        yield f"{_count(warnings, 'warning')}:"
        yield from (f"  - {w}" for w in warnings)


def _runner(index: int, runner: Runner, at: datetime, zone: LocalZone) -> Iterator[str]:
    name = f" {runner.name!r}" if runner.name else ""
    head = f"runners[{index}]{name}: executor {runner.executor or 'not set'}"
    scaler = runner.autoscaler
    if scaler is None or not runner.autoscaled:
        yield f"{head} (not driven by fleetkit)"
        return
    yield f"{head}, url {runner.url or 'not set'}"
    keys = ", ".join(scaler.plugin_config) or "none"
    yield f"  plugin: {scaler.plugin} (plugin_config keys: {keys})"
    limits = scaler.limits()
    most = limits.max_instances or "unlimited"
    slots = limits.max_instances * limits.capacity_per_instance or "unlimited"
    uses = limits.max_use_count or "unlimited"
    yield (
        f"  capacity: {limits.capacity_per_instance} per instance, max_instances {most} "
        f"({slots} slots), max_use_count {uses}"
    )
    yield f"  connector: {_connector(scaler.connector_config)}"
    if scaler.vm_isolation.enabled:
        allowed = runner.instance.allowed_images if runner.instance is not None else ()
        yield from _isolation(scaler.vm_isolation, allowed)
    schedule = scaler.schedule(zone.zone)
    active = schedule.active(at)
    when = at.isoformat(timespec="minutes")
    if not schedule.policies:
        yield f"  policies: none; at {when} the default applies: {_policy(active)}"
        return
    yield f"  policies ({len(schedule.policies)}, the last matching one wins):"
    for number, policy in enumerate(schedule.policies):
        mark = f"  <- active at {when}" if policy is active else ""
        yield f"    [{number}] {_periods(policy, zone)}: {_policy(policy)}{mark}"
    if not any(p is active for p in schedule.policies):
        yield f"    none matches at {when}; the default applies: {_policy(active)}"


def _isolation(vm: VMIsolation, allowed: Sequence[str]) -> Iterator[str]:
    yield (
        f"  vm isolation: each job in a VM of its own, made by the nesting daemon at "
        f"{vm.nesting_host} (reached through the instance's connection; no port is opened)"
    )
    image = repr(vm.image) if vm.image else "none: a job without an image fails"
    yield f"    default image: {image}; variables in an image are expanded first"
    if allowed:
        yield (
            f"    allowed images: {', '.join(repr(p) for p in allowed)} (doublestar: * stays "
            "within one /-segment, ** crosses them); others fail before any VM exists"
        )
    else:
        yield "    allowed images: any ([runners.instance] allowed_images is empty)"
    user = vm.connector_config.username or "the instance's user"
    key = (
        "its key_path"
        if vm.connector_config.key_path
        else "its password"
        if vm.connector_config.password
        else "the instance's credentials"
    )
    yield f"    VMs reached over SSH through the instance, as {user}, with {key}"
    if vm.nesting_config:
        yield f"    Init sends nesting_config (keys: {', '.join(sorted(vm.nesting_config))})"


def _connector(connector: ConnectorConfig) -> str:
    parts = [connector.protocol or "ssh (default)"]
    if connector.username:
        parts.append(f"as {connector.username}")
    parts.append("external address" if connector.use_external_addr else "internal address")
    if connector.timeout:
        parts.append(f"timeout {format_duration(connector.timeout)}")
    return ", ".join(parts)


def _periods(policy: Policy, zone: LocalZone) -> str:
    # Without a timezone GitLab reads the periods in the system's local zone.
    where = policy.timezone or f"no timezone set: {zone.describe()}"
    return f"{' | '.join(policy.periods)} ({where})"


def _policy(policy: Policy) -> str:
    text = f"idle_count {policy.idle_count}, idle_time {format_duration(policy.idle_time)}"
    if policy.scale_factor:
        limit = f"limit {policy.scale_factor_limit}" if policy.scale_factor_limit else "no limit"
        text += f", scale_factor {policy.scale_factor:g} ({limit})"
    text += ", preemptive" if policy.preemptive else ", not preemptive"
    return text
