"""Reading a GitLab Runner ``config.toml`` into the :class:`Config` tree.

Three passes over one parsed document, so that one run reports every problem:

1. *shape*: every key is checked against where it may stand. Unknown keys in the
   sections fleetkit owns (``[runners.autoscaler]`` and below,
   ``[runners.instance]``) are errors with a suggestion; an autoscaler key written
   directly under ``[[runners]]`` is an error that says where it belongs; unknown
   global and runner-level keys are warnings (GitLab Runner has many keys fleetkit
   does not model). A runner with ``[runners.autoscaler]`` must use an autoscaler
   executor.
2. *values*: cattrs structures the tree through strict hooks (no ``"5"`` for 5,
   no ``true`` for 1), each failure noted with its path, the bad value and what was
   expected; the classes' own validators run field by field for the same reason.
3. *warnings* on the finished tree: capacity that ``concurrent`` or ``limit``
   makes unreachable, settings GitLab Runner would ignore.

Secrets never reach a message: values at secret-named keys are described by
type only.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import cattrs

from fleetkit._files import MiB, read_bounded
from fleetkit._toml_depth import nesting_depth
from fleetkit.config._duration import parse_duration
from fleetkit.config._schema import (
    AUTOSCALER_EXECUTORS,
    CONNECTOR_PROTOCOLS,
    FEATURE_FLAGS,
    AutoscalerConfig,
    Config,
    InstanceConfig,
    Runner,
    ScaleThrottle,
    StateStorage,
    VMIsolation,
    is_secret_name,
    parse_listen_address,
)
from fleetkit.config._suggest import (
    EXECUTORS,
    GLOBAL_KEYS,
    GOARCH,
    GOOS,
    RUNNER_KEYS,
    closest,
    did_you_mean,
    goarch_hint,
    goos_hint,
)
from fleetkit.errors import ConfigError, Problem
from fleetkit.model import ConnectorConfig, Duration
from fleetkit.policy import Policy

__all__ = ["Findings", "check", "load"]

PathPart = str | int


# --- problems with relative paths ------------------------------------------


@attrs.frozen
class _Issue:
    """A problem found below some node; ``path`` is relative to that node.

    ``safe`` is the message without the offending value, used where the path
    names a secret.
    """

    path: tuple[PathPart, ...]
    message: str
    safe: str | None = None

    def under(self, part: PathPart) -> _Issue:
        return attrs.evolve(self, path=(part, *self.path))


class _Invalid(Exception):
    def __init__(self, issues: list[_Issue]) -> None:
        super().__init__(issues)
        self.issues = issues

    @classmethod
    def expected(cls, what: str, value: object) -> _Invalid:
        return cls(
            [
                _Issue(
                    (),
                    f"expected {what}, got {_describe(value)}",
                    f"expected {what}, got {_kind(value)}",
                )
            ]
        )


def _kind(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case dict():
            return "a table"
        case list():
            return "an array"
        case datetime() | date() | time():
            return "a date/time"
    return type(value).__name__


def _describe(value: object) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case str():
            shown = value if len(value) <= 60 else value[:57] + "..."
            return f"{shown!r} (a string)"
        case int() | float():
            return str(value)
        case datetime() | date() | time():
            return f"{value.isoformat()} (a date/time)"
    return _kind(value)


def render_path(parts: tuple[PathPart, ...]) -> str:
    """``("runners", 0, "autoscaler")`` as ``runners[0].autoscaler``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _to_problem(issue: _Issue) -> Problem:
    secret = any(isinstance(p, str) and is_secret_name(p) for p in issue.path)
    message = issue.safe if secret and issue.safe is not None else issue.message
    return Problem(render_path(issue.path), message)


# --- pass 2: strict structuring hooks ----------------------------------------


def _strict(kind: type, what: str) -> Callable[[object, type], Any]:
    def hook(value: object, _type: type) -> Any:
        # bool is an int subclass in Python but not in TOML.
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        raise _Invalid.expected(what, value)

    return hook


def _integer(value: object, _type: type) -> int:
    # GitLab Runner decodes these into Go ints: 64 bits, as its TOML reader
    # refuses anything larger.
    if isinstance(value, int) and not isinstance(value, bool):
        if -(1 << 63) <= value < (1 << 63):
            return value
        raise _Invalid([_Issue((), "expected an integer within Go's 64-bit range")])
    raise _Invalid.expected("an integer", value)


def _number(value: object, _type: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _Invalid.expected("a number", value)


_DURATION = 'a Go duration such as "20m0s", "1h30m" or "300ms" (or an integer of nanoseconds)'


def _duration(value: object, _type: type) -> timedelta:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _Invalid([_Issue((), str(exc), f"expected {_DURATION}")]) from None
    if isinstance(value, int) and not isinstance(value, bool):
        # Go TOML decoders read a bare integer into time.Duration as nanoseconds.
        if not -(1 << 63) <= value < (1 << 63):
            raise _Invalid.expected(_DURATION + " within Go's range", value)
        return timedelta(microseconds=round(Fraction(value, 1000)))
    raise _Invalid.expected(_DURATION, value)


def _mapping(value: object, _type: type) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    # plugin_config and nesting_config hold credentials: never echo what was written.
    raise _Invalid([_Issue((), f"expected a table, got {_kind(value)}")])


_WHAT = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def _tuple_hook(converter: cattrs.Converter, tp: Any) -> Callable[[object, type], Any]:
    (item, _ellipsis) = typing.get_args(tp)
    what = "an array of tables" if attrs.has(item) else f"an array of {_WHAT.get(item, 'values')}"

    def hook(value: object, _type: type) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid.expected(what, value)
        items: list[Any] = []
        issues: list[_Issue] = []
        for index, element in enumerate(value):
            try:
                items.append(converter.structure(element, item))
            except _Invalid as exc:
                issues += [i.under(index) for i in exc.issues]
        if issues:
            raise _Invalid(issues)
        return tuple(items)

    return hook


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _validator_issue(
    attribute: attrs.Attribute[Any], field_type: Any, exc: ValueError | TypeError
) -> _Issue:
    """Place a validator's message: ``"protocol: ..."`` about a nested class goes one level down."""
    message = str(exc)
    for prefix in (f"{attribute.name}: ", f"{attribute.name} "):
        if message.startswith(prefix):
            return _Issue((attribute.name,), message.removeprefix(prefix))
    head, sep, rest = message.partition(": ")
    if sep and attrs.has(field_type) and head in _hints(field_type):
        return _Issue((attribute.name, head), rest)
    return _Issue((attribute.name,), message)


def _attrs_hook(converter: cattrs.Converter, cls: type) -> Callable[[object, type], Any]:
    fields = attrs.fields(cls)
    hints = _hints(cls)
    names = {a.name for a in fields}
    keeps_extra = "extra" in names

    def hook(value: object, _type: type) -> Any:
        if not isinstance(value, dict):
            raise _Invalid.expected("a table", value)
        kwargs: dict[str, Any] = {}
        issues: list[_Issue] = []
        for a in fields:
            if a.name in ("extra", "warnings"):
                continue
            if a.name not in value:
                if a.default is attrs.NOTHING:
                    issues.append(_Issue((a.name,), a.metadata.get("missing", "is missing")))
                continue
            try:
                item = converter.structure(value[a.name], hints[a.name])
            except _Invalid as exc:
                issues += [i.under(a.name) for i in exc.issues]
                continue
            if a.metadata.get("zero_means_default") and not item:
                item = a.default
            try:
                # Field by field rather than through the constructor, which
                # would stop at the first failing validator.
                if callable(a.converter):
                    item = a.converter(item)
                if a.validator is not None:
                    a.validator(None, a, item)
            except (ValueError, TypeError) as exc:
                issues.append(_validator_issue(a, hints[a.name], exc))
                continue
            kwargs[a.name] = item
        if keeps_extra:
            kwargs["extra"] = {k: v for k, v in value.items() if k not in names}
        if issues:
            raise _Invalid(issues)
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise _Invalid([_Issue((), str(exc))]) from None

    return hook


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_mapping(tp: Any) -> bool:
    origin: Any = typing.get_origin(tp)
    return origin is Mapping or origin is dict


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(int, _integer)
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook(float, _number)
    converter.register_structure_hook(timedelta, _duration)
    converter.register_structure_hook(Duration, lambda v, t: Duration(_duration(v, t)))
    converter.register_structure_hook_func(_is_mapping, _mapping)
    converter.register_structure_hook_factory(
        _is_homogeneous_tuple, lambda tp: _tuple_hook(converter, tp)
    )
    converter.register_structure_hook_factory(attrs.has, lambda cls: _attrs_hook(converter, cls))
    return converter


_CONVERTER = _make_converter()


# --- pass 1: shape -----------------------------------------------------------

# The sections fleetkit owns, by class, with the TOML header a user would write.
_OWNED: dict[type, str] = {
    AutoscalerConfig: "[runners.autoscaler]",
    Policy: "[[runners.autoscaler.policy]]",
    ConnectorConfig: "[runners.autoscaler.connector_config]",
    VMIsolation: "[runners.autoscaler.vm_isolation]",
    StateStorage: "[runners.autoscaler.state_storage]",
    ScaleThrottle: "[runners.autoscaler.scale_throttle]",
    InstanceConfig: "[runners.instance]",
}


@functools.cache
def _homes() -> dict[str, tuple[str, ...]]:
    """Each key of an owned section, with the headers of the sections it belongs in."""
    homes: dict[str, list[str]] = {}
    for cls, header in _OWNED.items():
        for a in attrs.fields(cls):
            homes.setdefault(a.name, []).append(header)
    return {k: tuple(v) for k, v in homes.items()}


def _child_class(cls: type, key: str) -> tuple[type | None, bool]:
    """The attrs class a key of ``cls`` holds, and whether it is an array of them."""
    tp = _hints(cls).get(key)
    if tp is None:
        return None, False
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if _is_homogeneous_tuple(tp):
        item = typing.get_args(tp)[0]
        return (item, True) if attrs.has(item) else (None, False)
    return (tp, False) if attrs.has(tp) else (None, False)


def _header(path: tuple[PathPart, ...]) -> str:
    names = ".".join(p for p in path if isinstance(p, str))
    return f"[[{names}]]" if path and isinstance(path[-1], int) else f"[{names}]"


def _where(homes: tuple[str, ...]) -> str:
    return " or ".join(homes)


class _Shape:
    """Pass 1 over the raw document: key placement and executors."""

    def __init__(self) -> None:
        self.errors: list[_Issue] = []
        self.warnings: list[_Issue] = []

    def document(self, doc: dict[str, Any]) -> None:
        homes = _homes()
        for key, value in doc.items():
            if key == "listen_address":
                self.errors += _listen_address(value)
                continue
            if key in ("concurrent", "runners") or key in GLOBAL_KEYS:
                continue
            if key in RUNNER_KEYS or key in homes:
                # Silently ignored by GitLab Runner at the top level: a real mistake.
                where = (*(("[[runners]]",) if key in RUNNER_KEYS else ()), *homes.get(key, ()))
                self.errors.append(
                    _Issue((key,), f"belongs in {_where(where)}, not at the top level")
                )
                continue
            self.warnings.append(
                _Issue(
                    (key,),
                    "is not a GitLab Runner global key; kept but not used"
                    + did_you_mean(key, GLOBAL_KEYS),
                )
            )
        runners = doc.get("runners")
        if isinstance(runners, dict):
            self.errors.append(
                _Issue(
                    ("runners",),
                    "expected an array of tables ([[runners]]), got a table: this looks like "
                    "a fragment; put its sections under a [[runners]] entry",
                )
            )
            # Still check the fragment's keys, so a typo in it shows in the same run.
            self.runner_keys(("runners",), runners)
        elif isinstance(runners, list):
            for index, runner in enumerate(runners):
                if isinstance(runner, dict):
                    self.runner_keys(("runners", index), runner)
                    self.executor(("runners", index), runner)

    def runner_keys(self, path: tuple[PathPart, ...], runner: dict[str, Any]) -> None:
        modelled = {a.name for a in attrs.fields(Runner)} - {"extra"}
        homes = _homes()
        for key, value in runner.items():
            if key in modelled:
                child, many = _child_class(Runner, key)
                if child is not None:
                    self.section((*path, key), child, value, many)
            elif key in RUNNER_KEYS:
                continue
            elif key in homes:
                self.errors.append(
                    _Issue(
                        (*path, key),
                        f"belongs in {_where(homes[key])}, not directly under [[runners]]",
                    )
                )
            elif key in ("tags", "run_untagged"):
                self.warnings.append(
                    _Issue(
                        (*path, key),
                        "is not a GitLab Runner key (GitLab takes it when a runner registers); "
                        "fleetkit reads it to send the jobs of a jobs file to this runner",
                    )
                )
            else:
                self.warnings.append(
                    _Issue(
                        (*path, key),
                        "is not a GitLab Runner key; kept but not used"
                        + did_you_mean(key, RUNNER_KEYS),
                    )
                )

    def executor(self, path: tuple[PathPart, ...], runner: dict[str, Any]) -> None:
        executor = runner.get("executor")
        autoscaled = "autoscaler" in runner
        where = (*path, "executor")
        if executor is None:
            if autoscaled:
                self.errors.append(
                    _Issue(
                        where,
                        "is missing: a runner with [runners.autoscaler] needs "
                        'executor = "instance"',
                    )
                )
        elif not isinstance(executor, str):
            return  # the value pass reports the type
        elif executor == "docker-autoscaler":
            self.errors.append(
                _Issue(
                    where,
                    "'docker-autoscaler' runs each job in a Docker container on the instance, "
                    'and fleetkit does not run containers: use executor = "instance" (jobs '
                    "run in the instance's shell; with vm_isolation, in a VM per job)",
                )
            )
        elif executor not in EXECUTORS:
            self.errors.append(
                _Issue(
                    where,
                    f"{executor!r} is not a GitLab Runner executor{did_you_mean(executor, EXECUTORS)}"
                    ': fleetkit runs executor = "instance"',
                )
            )
        elif executor not in AUTOSCALER_EXECUTORS:
            if autoscaled:
                self.errors.append(
                    _Issue(
                        where,
                        f"{executor!r} is not an autoscaler executor: a runner with "
                        '[runners.autoscaler] needs executor = "instance" for fleetkit',
                    )
                )
            else:
                self.warnings.append(
                    _Issue(
                        where,
                        f'{executor!r}: fleetkit runs only executor "instance", so it leaves '
                        "this runner out (no job of the jobs file can run on it)",
                    )
                )
        elif not autoscaled:
            self.errors.append(
                _Issue(
                    (*path, "autoscaler"),
                    f"is missing: executor {executor!r} needs a [runners.autoscaler] section "
                    "with at least plugin",
                )
            )

    def section(self, path: tuple[PathPart, ...], cls: type, value: object, many: bool) -> None:
        if many:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.section((*path, index), cls, item, many=False)
            return
        if not isinstance(value, dict):
            return
        names = {a.name for a in attrs.fields(cls)}
        homes = _homes()
        for key, item in value.items():
            if key in names:
                child, child_many = _child_class(cls, key)
                if child is not None:
                    self.section((*path, key), child, item, child_many)
                continue
            here = _header(path)
            elsewhere = [h for h in homes.get(key, ()) if h != here]
            if elsewhere:
                message = f"is not a key of {here}; it belongs in {_where(tuple(elsewhere))}"
            else:
                message = f"is not a key of {here}{did_you_mean(key, names)}"
                if cls is AutoscalerConfig and not closest(key, names):
                    message += "; plugin settings go in [runners.autoscaler.plugin_config]"
            self.errors.append(_Issue((*path, key), message))
        if cls is ConnectorConfig:
            # Here rather than only in the class's validator, which runs once the
            # whole table is valid: a bad timeout must not hide a bad protocol.
            self.errors += _connector_shape(path, value)


def _listen_address(value: object) -> list[_Issue]:
    if not isinstance(value, str):
        return [_Issue(("listen_address",), f'expected "host:port", got {_describe(value)}')]
    if not value:
        return []  # Go's zero value: no metrics server
    try:
        parse_listen_address(value)
    except ValueError as exc:
        return [_Issue(("listen_address",), str(exc))]
    return []


def _connector_shape(path: tuple[PathPart, ...], table: dict[str, Any]) -> list[_Issue]:
    found: list[_Issue] = []
    protocol = table.get("protocol")
    if isinstance(protocol, str) and protocol not in CONNECTOR_PROTOCOLS:
        found.append(
            _Issue(
                (*path, "protocol"),
                f"{protocol!r} is not a connector protocol (expected 'ssh', 'winrm' or "
                "'winrm+https')" + did_you_mean(protocol, CONNECTOR_PROTOCOLS),
            )
        )
    port = table.get("protocol_port")
    if isinstance(port, int) and not isinstance(port, bool) and not 0 <= port < 65536:
        found.append(
            _Issue(
                (*path, "protocol_port"),
                f"must be a TCP port 0-65535 (0: the protocol's default), got {port}",
            )
        )
    return found


# --- pass 3: warnings on the finished tree ----------------------------------


def _warnings(config: Config, *, loads: bool = True) -> list[_Issue]:
    """The findings on a structured tree; ``loads`` is false when there are
    problems, and then "nothing to drive" would only repeat them."""
    found: list[_Issue] = []
    autoscaled = config.autoscaled_runners()
    if not autoscaled and loads:
        found.append(
            _Issue(
                ("runners",),
                "no runner has executor 'instance' with a [runners.autoscaler] section: "
                "fleetkit has nothing to drive",
            )
        )
    total = 0
    # Every runner with an autoscaler section, also one whose executor is
    # refused: its other findings are still worth knowing in the same run.
    scaled = [(i, r) for i, r in enumerate(config.runners) if r.autoscaler is not None]
    for index, runner in scaled:
        assert runner.autoscaler is not None
        scaler = runner.autoscaler
        path: tuple[PathPart, ...] = ("runners", index)
        slots = scaler.max_instances * scaler.capacity_per_instance
        total += slots
        reach = (
            f"max_instances {scaler.max_instances} x capacity_per_instance "
            f"{scaler.capacity_per_instance} = {slots} slots"
        )
        if slots and config.concurrent is not None and config.concurrent < slots:
            found.append(
                _Issue(
                    ("concurrent",),
                    f"{config.concurrent} caps jobs below what runners[{index}] can run "
                    f"({reach}): raise concurrent to {slots} or lower max_instances",
                )
            )
        if slots and 0 < runner.limit < slots:
            found.append(
                _Issue(
                    (*path, "limit"),
                    f"{runner.limit} caps this runner's jobs below its {reach}",
                )
            )
        for number, policy in enumerate(scaler.policy):
            if slots and policy.idle_count > slots:
                found.append(
                    _Issue(
                        (*path, "autoscaler", "policy", number, "idle_count"),
                        f"{policy.idle_count} idle slots can never be reached ({reach})",
                    )
                )
            found += _scale_factor_warnings((*path, "autoscaler", "policy", number), policy)
        found += _no_effect_warnings(path, runner)
        found += _connector_warnings(
            (*path, "autoscaler", "connector_config"), scaler.connector_config
        )
        found += _connector_warnings(
            (*path, "autoscaler", "vm_isolation", "connector_config"),
            scaler.vm_isolation.connector_config,
        )
        if scaler.vm_isolation.enabled and not scaler.vm_isolation.nesting_host:
            found.append(
                _Issue(
                    (*path, "autoscaler", "vm_isolation", "nesting_host"),
                    "is empty although vm_isolation is enabled: jobs cannot reach nesting",
                )
            )
        if (
            runner.instance is not None
            and runner.instance.use_common_build_dir
            and not scaler.vm_isolation.enabled
            and scaler.max_use_count != 1
        ):
            found.append(
                _Issue(
                    (*path, "instance", "use_common_build_dir"),
                    "is ignored unless vm_isolation is enabled or max_use_count = 1 "
                    "(GitLab Runner ignores it too)",
                )
            )
    if len(scaled) > 1 and config.concurrent is not None and config.concurrent < total:
        found.append(
            _Issue(
                ("concurrent",),
                f"{config.concurrent} caps jobs below the {total} slots the "
                f"{len(scaled)} autoscaled runners can run together",
            )
        )
    return found


# Runner keys GitLab acts on that mean nothing to fleetkit, and why.
_NO_EFFECT = {
    "pre_get_sources_script": "fleetkit does not fetch sources (a job's script does), so there "
    "is no get_sources stage to run it before; put it in pre_build_script",
    "post_get_sources_script": "fleetkit does not fetch sources (a job's script does), so there "
    "is no get_sources stage to run it after; put it in pre_build_script",
}


def _no_effect_warnings(path: tuple[PathPart, ...], runner: Runner) -> list[_Issue]:
    """Keys that are accepted (running anyway is harmless) but change nothing in fleetkit."""
    found = [
        _Issue((*path, key), f"has no effect: {why}")
        for key, why in _NO_EFFECT.items()
        if runner.extra.get(key)
    ]
    if runner.cache_dir:
        found.append(
            _Issue(
                (*path, "cache_dir"),
                "has no effect: fleetkit keeps no job cache between jobs",
            )
        )
    if runner.request_concurrency > 1:
        found.append(
            _Issue(
                (*path, "request_concurrency"),
                f"{runner.request_concurrency} has no effect: fleetkit does not poll GitLab "
                "for jobs, so no job request holds a reservation; jobs reserve a slot one "
                "by one as they are submitted",
            )
        )
    for flag in runner.feature_flags:
        if flag not in FEATURE_FLAGS:
            found.append(
                _Issue(
                    (*path, "feature_flags", flag),
                    "has no effect: fleetkit acts on " + ", ".join(FEATURE_FLAGS) + " only",
                )
            )
    return found


def _connector_warnings(path: tuple[PathPart, ...], connector: ConnectorConfig) -> list[_Issue]:
    """``os``/``arch`` that are not Go's names: plugins and the connector compare them
    with GOOS/GOARCH, so "x86" or "macos" silently matches nothing."""
    found: list[_Issue] = []
    for key, value, go_name, known, hint, examples in (
        ("os", connector.os, "GOOS", GOOS, goos_hint, "'linux', 'windows', 'darwin'"),
        ("arch", connector.arch, "GOARCH", GOARCH, goarch_hint, "'amd64', 'arm64', '386'"),
    ):
        # Empty is Go's zero value: "not set", like leaving the key out.
        if value and value not in known:
            found.append(
                _Issue(
                    (*path, key),
                    f"{value!r} is not a Go {go_name} value such as {examples}{hint(value)}",
                )
            )
    return found


def _scale_factor_warnings(path: tuple[PathPart, ...], policy: Policy) -> list[_Issue]:
    """A ``scale_factor`` above 1 with no limit: most often a percentage written as 10."""
    if policy.scale_factor <= 1 or policy.scale_factor_limit:
        return []
    factor = f"{policy.scale_factor:g}"
    return [
        _Issue(
            (*path, "scale_factor"),
            f"{factor} with scale_factor_limit 0 grows idle capacity without bound at "
            f"{factor} times the in-use slots (up to max_instances): scale_factor "
            "is a multiplier (0.1 keeps 10% extra idle), not a percentage; set "
            "scale_factor_limit to cap it",
        )
    ]


# --- TOML syntax errors ------------------------------------------------------

_LOCATION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> Problem:
    message = str(exc)
    found = _LOCATION.search(message)
    where = "end of document"
    if found:
        message = message[: found.start()]
        if found.group(1):
            where = f"line {found.group(1)}, column {found.group(2)}"
    lines = text.splitlines()
    slashes = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith("//")]
    placeholders = [
        n for n, line in enumerate(lines, 1) if re.match(r"\s*[^#=\s]+\s*=\s*<[^>\n]*>", line)
    ]
    hints = []
    if slashes:
        hints.append(f"comments start with '#', not '//' (lines {_numbers(slashes)})")
    if placeholders:
        hints.append(
            f'placeholders such as <token> must be quoted ("<token>") or filled in '
            f"(lines {_numbers(placeholders)})"
        )
    text_hint = f"; {'; '.join(hints)}" if hints else ""
    return Problem(where, f"not valid TOML: {message}{text_hint}")


def _numbers(found: list[int]) -> str:
    shown = ", ".join(str(n) for n in found[:5])
    return shown + (", ..." if len(found) > 5 else "")


# --- entry point -------------------------------------------------------------


def _read(path_or_text: str | os.PathLike[str]) -> tuple[str, str | None]:
    """The document's text and, when it came from a file, the file's name."""
    if isinstance(path_or_text, str) and not _looks_like_path(path_or_text):
        return path_or_text, None
    path = Path(path_or_text)
    try:
        return read_bounded(path, _MAX_BYTES).decode("utf-8-sig"), str(path)
    except FileNotFoundError:
        raise ConfigError([Problem("", "no such file")], source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", "is a directory, not a file")], source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem("", f"not UTF-8 text (byte {exc.start}): TOML files are UTF-8")],
            source=str(path),
        ) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read: {exc.strerror}")], source=str(path)) from None
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(
            [Problem("", f"not a usable path: {exc}")], source=repr(str(path))
        ) from None


# A config.toml is a few kilobytes; this bound stops /dev/zero or a log named
# by mistake from filling memory.
_MAX_BYTES = 16 * MiB
# GitLab's deepest section is four tables down; plugin_config may nest a little.
_MAX_DEPTH = 32
_TOO_DEEP = f"nested more than {_MAX_DEPTH} arrays or tables deep: not a GitLab Runner config"
_NUL = "contains a NUL character (\\u0000), which no name, path or command can hold"


def _hostile_values(doc: dict[str, Any]) -> list[_Issue]:
    """Values nothing downstream can take: nesting beyond :data:`_MAX_DEPTH` (the
    first such path) and strings or keys holding NUL. Walked without recursion."""
    issues: list[_Issue] = []
    stack: list[tuple[tuple[PathPart, ...], object]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        if len(path) > _MAX_DEPTH:
            return [_Issue(path[: _MAX_DEPTH + 1], _TOO_DEEP)]
        if isinstance(value, dict):
            for key, item in value.items():
                if "\0" in key:
                    issues.append(_Issue((*path, key), _NUL))
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
        elif isinstance(value, str) and "\0" in value:
            issues.append(_Issue(path, _NUL))
    return sorted(issues, key=lambda i: render_path(i.path))


def _looks_like_path(text: str) -> bool:
    if not text or "\n" in text:
        return False
    if os.path.isfile(text):
        return True
    return "=" not in text and "[" not in text


@attrs.frozen
class Findings:
    """What one read of a config found: the config (``None`` when there are
    problems), every problem and every warning, and the file it came from."""

    config: Config | None
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    source: str | None = None
    #: The ``[[runners]]`` entries that read cleanly on their own, with their
    #: index: all of them when the config loads, else those without a problem,
    #: so that checks of their parts can still run in the same report.
    runners: tuple[tuple[int, Runner], ...] = ()

    def raise_problems(self) -> Config:
        """The config, or :class:`~fleetkit.errors.ConfigError` with every problem."""
        if self.problems or self.config is None:
            raise ConfigError(self.problems, source=self.source)
        return self.config


def check(path_or_text: str | os.PathLike[str]) -> Findings:
    """Read a config like :func:`load`, returning problems and warnings instead of raising.

    Warnings about key placement are found even when there are problems, so a
    report can show both.
    """
    try:
        text, source = _read(path_or_text)
    except ConfigError as exc:
        return Findings(None, exc.problems, (), exc.source)
    if nesting_depth(text) > _MAX_DEPTH:
        return Findings(None, (Problem("", _TOO_DEEP),), (), source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Findings(None, (_syntax_problem(exc, text),), (), source)
    except RecursionError:
        return Findings(None, (Problem("", _TOO_DEEP),), (), source)
    hostile = _hostile_values(doc)
    if any(issue.message == _TOO_DEEP for issue in hostile):
        return Findings(None, tuple(_to_problem(i) for i in hostile), (), source)
    shape = _Shape()
    shape.document(doc)
    issues = [*hostile, *shape.errors]
    config: Config | None = None
    try:
        config = _CONVERTER.structure(doc, Config)
    except _Invalid as exc:
        issues += exc.issues
    problems = _unique(_to_problem(i) for i in sorted(issues, key=_runner_index))
    found = list(shape.warnings)
    if config is not None:
        found += _warnings(config, loads=not problems)
    warnings = _unique(_to_problem(i) for i in found)
    if problems:
        return Findings(None, problems, warnings, source, _clean_runners(doc, problems))
    assert config is not None
    runners = tuple(enumerate(config.runners))
    return Findings(attrs.evolve(config, warnings=warnings), (), warnings, source, runners)


def _clean_runners(
    doc: dict[str, Any], problems: tuple[Problem, ...]
) -> tuple[tuple[int, Runner], ...]:
    raw = doc.get("runners")
    if not isinstance(raw, list):
        return ()
    clean = []
    for index, table in enumerate(raw):
        prefix = f"runners[{index}]"
        if any(
            p.path == prefix or p.path.startswith((prefix + ".", prefix + "[")) for p in problems
        ):
            continue
        try:
            clean.append((index, _CONVERTER.structure(table, Runner)))
        except _Invalid:
            continue
    return tuple(clean)


def load(path_or_text: str | os.PathLike[str]) -> Config:
    """Load a GitLab Runner ``config.toml`` from a path or from its text.

    A ``str`` holding a single line without ``=`` or ``[`` (or naming an existing
    file) is a path; any other ``str`` is TOML text. Raises
    :class:`~fleetkit.errors.ConfigError` listing every problem, each with its
    TOML path (``runners[0].autoscaler.policy[1].idle_time``); findings that do not
    stop loading are on :attr:`Config.warnings`.
    """
    return check(path_or_text).raise_problems()


def _runner_index(issue: _Issue) -> int:
    """Problems of one runner together, in runner order; global ones first."""
    match issue.path:
        case ("runners", int(index), *_):
            return index
    return -1


def _unique(problems: typing.Iterable[Problem]) -> tuple[Problem, ...]:
    """One problem per path: the first pass's message is the more specific one."""
    seen: dict[str, Problem] = {}
    for problem in problems:
        seen.setdefault(problem.path, problem)
    return tuple(seen.values())
