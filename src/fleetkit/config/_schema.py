"""The config tree: frozen attrs classes mirroring GitLab Runner's config structs.

Field names are the TOML keys. Defaults are GitLab's (taskscaler's where the
runner passes Go zero values through, see spec §1.2). Sections fleetkit does
not model (``[runners.docker]``, ``[runners.cache]``, ``check_interval``, ...)
are kept verbatim in ``extra`` so that :func:`fleetkit.config.dump` writes them
back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any

import attrs

from fleetkit._settings import FleetSettings
from fleetkit.config._duration import format_duration
from fleetkit.errors import Problem
from fleetkit.model import ConnectorConfig, Limits, mask_secret
from fleetkit.policy import Policy, Schedule

__all__ = [
    "AUTOSCALER_EXECUTORS",
    "FEATURE_FLAGS",
    "RUNNER_SHELLS",
    "AutoscalerConfig",
    "Config",
    "InstanceConfig",
    "Runner",
    "ScaleThrottle",
    "StateStorage",
    "VMIsolation",
    "is_secret_name",
    "masked",
    "parse_listen_address",
]

#: The executors fleetkit runs: ``instance`` (jobs in the instance's shell).
#: GitLab's ``docker-autoscaler`` runs each job in a container on the instance,
#: which fleetkit does not do, so the loader refuses it by name.
AUTOSCALER_EXECUTORS = ("instance",)

_SECRET_WORDS = ("token", "secret", "password", "passwd", "key", "credential")


def is_secret_name(name: str) -> bool:
    """Whether a key's name says its value is a secret (token, password, key, ...)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def masked(value: object) -> object:
    """A copy of plugin-style settings with every secret-named value replaced by ``'***'``."""
    if isinstance(value, Mapping):
        return {k: "***" if is_secret_name(str(k)) else masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


# Named converters rather than ``converter=tuple``: mypy's attrs plugin cannot
# bind tuple's type parameter, and callers would need type: ignore.
def _policies(value: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _runners(value: Iterable[Runner]) -> tuple[Runner, ...]:
    return tuple(value)


def _masked_repr(value: object) -> str:
    return repr(masked(value))


def _nonneg(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")


def _positive_duration(_inst: object, attribute: attrs.Attribute[Any], value: timedelta) -> None:
    if value <= timedelta(0):
        shown = format_duration(value)
        raise ValueError(f"must be > 0s (leave it out for the default), got {shown}")


# Go passes a written zero straight through and taskscaler then uses its own
# default, so the loader reads 0 as the field's default: the classes hold only
# effective values and a directly built config round-trips through dump.
_GO_ZERO_MEANS_DEFAULT = {"zero_means_default": True}


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"must be >= 1 (leave it out for the default), got {value}")


def _buckets(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[float, ...] | None
) -> None:
    if value is None:
        return
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"histogram buckets must be finite numbers, got {list(value)}")
    if list(value) != sorted(value):
        raise ValueError(f"histogram buckets must be in increasing order, got {list(value)}")


def _optional_tuple(value: Iterable[float] | None) -> tuple[float, ...] | None:
    return None if value is None else tuple(value)


def _bucket_field() -> Any:
    return attrs.field(default=None, converter=_optional_tuple, validator=_buckets)


#: GitLab's connector protocols (fleetkit's connectors speak ``ssh``).
CONNECTOR_PROTOCOLS = ("ssh", "winrm", "winrm+https")


def _protocol(_inst: object, attribute: attrs.Attribute[Any], value: ConnectorConfig) -> None:
    if value.protocol is not None and value.protocol not in CONNECTOR_PROTOCOLS:
        raise ValueError(
            f"protocol: {value.protocol!r} is not a connector protocol "
            "(expected 'ssh', 'winrm' or 'winrm+https')"
        )
    if value.protocol_port is not None and not 0 <= value.protocol_port < 65536:
        raise ValueError(
            f"protocol_port: must be a TCP port 0-65535 (0: the protocol's default), "
            f"got {value.protocol_port}"
        )


@attrs.frozen(kw_only=True)
class ScaleThrottle:
    """``[runners.autoscaler.scale_throttle]``: a token bucket for instance creation.

    ``limit`` is instances per second (0 means taskscaler's 100/s, -1 unlimited);
    ``burst`` the bucket size (0 means ``max_instances``, or ``limit`` when that is 0).
    """

    limit: int = attrs.field(default=0)
    burst: int = attrs.field(default=0, validator=_nonneg)

    @limit.validator
    def _check_limit(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < -1:
            raise ValueError(f"must be >= -1 (-1 means unlimited), got {value}")


@attrs.frozen(kw_only=True)
class StateStorage:
    """``[runners.autoscaler.state_storage]``: persist instance state across restarts."""

    enabled: bool = False
    dir: str = ""
    keep_instance_with_acquisitions: bool = False


@attrs.frozen(kw_only=True)
class VMIsolation:
    """``[runners.autoscaler.vm_isolation]``: a nested VM per job through ``nesting``.

    ``nesting_config`` is handed to the nesting daemon as is; ``connector_config``
    reaches the nested VM through the host.
    """

    enabled: bool = False
    nesting_host: str = ""
    nesting_config: Mapping[str, Any] = attrs.field(factory=dict, repr=_masked_repr, hash=False)
    image: str = ""
    connector_config: ConnectorConfig = attrs.field(factory=ConnectorConfig, validator=_protocol)


@attrs.frozen(kw_only=True)
class AutoscalerConfig:
    """``[runners.autoscaler]``: the fleet one runner drives, with GitLab's defaults.

    ``plugin_config`` is handed to the provider as is; values whose names say
    token, secret, password or key are masked in the repr. The intervals,
    ``shutdown_deletion_retries`` and ``failure_threshold`` hold effective values
    (> 0): the loader reads a written 0 as the default, as taskscaler does.
    """

    plugin: str = attrs.field(
        metadata={"missing": 'is missing: name the fleeting plugin, e.g. plugin = "aws"'}
    )
    plugin_config: Mapping[str, Any] = attrs.field(factory=dict, repr=_masked_repr, hash=False)
    capacity_per_instance: int = attrs.field(default=1)
    max_use_count: int = attrs.field(default=0, validator=_nonneg)
    max_instances: int = attrs.field(default=0, validator=_nonneg)
    instance_ready_command: str = ""
    instance_acquire_timeout: timedelta = attrs.field(
        default=timedelta(minutes=15), validator=_positive_duration, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    update_interval: timedelta = attrs.field(
        default=timedelta(minutes=1), validator=_positive_duration, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    update_interval_when_expecting: timedelta = attrs.field(
        default=timedelta(seconds=2), validator=_positive_duration, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    deletion_retry_interval: timedelta = attrs.field(
        default=timedelta(minutes=1), validator=_positive_duration, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    shutdown_deletion_interval: timedelta = attrs.field(
        default=timedelta(seconds=10), validator=_positive_duration, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    shutdown_deletion_retries: int = attrs.field(
        default=3, validator=_positive, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    failure_threshold: int = attrs.field(
        default=3, validator=_positive, metadata=_GO_ZERO_MEANS_DEFAULT
    )
    scale_throttle: ScaleThrottle = attrs.field(factory=ScaleThrottle)
    reservation_throttling: bool = True
    log_internal_ip: bool = False
    log_external_ip: bool = False
    delete_instances_on_shutdown: bool = False
    connector_config: ConnectorConfig = attrs.field(factory=ConnectorConfig, validator=_protocol)
    policy: tuple[Policy, ...] = attrs.field(default=(), converter=_policies)
    vm_isolation: VMIsolation = attrs.field(factory=VMIsolation)
    state_storage: StateStorage = attrs.field(factory=StateStorage)
    instance_operation_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_creation_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_is_running_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_deletion_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_readiness_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_life_duration_buckets: tuple[float, ...] | None = _bucket_field()

    @plugin.validator
    def _check_plugin(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not value.strip():
            raise ValueError("must name a fleeting plugin, e.g. 'aws' or 'fleeting-plugin-aws'")

    @capacity_per_instance.validator
    def _check_capacity(self, attribute: attrs.Attribute[int], value: int) -> None:
        # GitLab passes 0 through; design.md decides that a written value < 1 is a mistake.
        if value < 1:
            raise ValueError(f"must be >= 1 (jobs per instance; leave it out for 1), got {value}")

    def limits(self) -> Limits:
        """The fleet limits this section sets, for the planner and the runtime.

        ``ready_timeout`` is :data:`READY_GRACE` past the connector's dial
        timeout (or :data:`READY_GRACE` alone when none is set): GitLab has no
        key for it, but fleeting gives up on instances that never become ready,
        and an instance that cannot be reached within its dial timeout plus the
        time to boot and ready up will not be.
        """
        dial = self.connector_config.timeout or 0.0
        return Limits(
            capacity_per_instance=self.capacity_per_instance,
            max_use_count=self.max_use_count,
            max_instances=self.max_instances,
            failure_threshold=self.failure_threshold,
            ready_timeout=dial + READY_GRACE.total_seconds(),
        )

    def schedule(self, local_zone: tzinfo | None = None) -> Schedule:
        """The idle policies, in file order, as a :class:`~fleetkit.policy.Schedule`.

        Policies without ``timezone`` read their periods in ``local_zone``,
        by default the system's local zone (``TZ`` when set, else
        ``/etc/localtime``), as GitLab Runner does.
        """
        if local_zone is None:
            from fleetkit._localzone import local_zone as system_zone

            local_zone = system_zone().zone
        return Schedule(self.policy, local_zone)

    def fleet_settings(
        self,
        *,
        owner: str | None = None,
        config_dir: Path | None = None,
        feature_flags: Mapping[str, bool] | None = None,
    ) -> FleetSettings:
        """The runtime settings this section sets: every ``[runners.autoscaler]``
        key the fleet reads, in one place (the limits and the policies are
        :meth:`limits` and :meth:`schedule`).

        ``owner`` is the fleet's owner id (the provider's owner tag); it also
        names the state storage directory (GitLab's short token), under
        ``state_storage.dir`` or ``config_dir/.taskscaler``. ``feature_flags``
        are the runner's ``[runners.feature_flags]``:
        ``FF_USE_FLEETING_ACQUIRE_HEARTBEATS`` heartbeats each instance before
        a slot on it is handed out and every 5 minutes (taskscaler's period).
        """
        storage = self.state_storage
        storage_dir: Path | None = None
        if storage.enabled:
            # GitLab: <dir or config dir/.taskscaler>/<short token>; the owner id
            # plays the short token's part.
            base = Path(storage.dir) if storage.dir else (config_dir or Path()) / ".taskscaler"
            storage_dir = base / owner if owner else base
        heartbeats = bool((feature_flags or {}).get(ACQUIRE_HEARTBEATS_FLAG, False))
        throttle = self.scale_throttle
        return FleetSettings(
            update_interval=self.update_interval.total_seconds(),
            update_interval_when_expecting=self.update_interval_when_expecting.total_seconds(),
            deletion_retry_interval=self.deletion_retry_interval.total_seconds(),
            delete_instances_on_shutdown=self.delete_instances_on_shutdown,
            shutdown_deletion_interval=self.shutdown_deletion_interval.total_seconds(),
            shutdown_deletion_retries=self.shutdown_deletion_retries,
            instance_ready_command=self.instance_ready_command or None,
            heartbeat_interval=HEARTBEAT_INTERVAL.total_seconds() if heartbeats else None,
            acquire_heartbeats=heartbeats,
            scale_throttle_limit=throttle.limit,
            scale_throttle_burst=throttle.burst or None,
            reservation_throttling=self.reservation_throttling,
            acquire_timeout=self.instance_acquire_timeout.total_seconds(),
            state_storage_dir=storage_dir,
            keep_instance_with_acquisitions=storage.keep_instance_with_acquisitions,
            owner_id=owner,
            instance_operation_time_buckets=self.instance_operation_time_buckets,
            instance_creation_time_buckets=self.instance_creation_time_buckets,
            instance_is_running_time_buckets=self.instance_is_running_time_buckets,
            instance_deletion_time_buckets=self.instance_deletion_time_buckets,
            instance_readiness_time_buckets=self.instance_readiness_time_buckets,
            instance_life_duration_buckets=self.instance_life_duration_buckets,
        )


#: The feature flag that turns on heartbeats before hand-out (spec §1.8).
ACQUIRE_HEARTBEATS_FLAG = "FF_USE_FLEETING_ACQUIRE_HEARTBEATS"
#: How often taskscaler heartbeats idle instances with that flag on (ts!59).
HEARTBEAT_INTERVAL = timedelta(minutes=5)


def parse_listen_address(text: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (every interface, as Go's) or ``"[::1]:port"`` as
    ``(host, port)``; raises :class:`ValueError` saying what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f'expected "host:port" such as ":9252" or "127.0.0.1:9252", got {text!r}')
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


#: How long past the dial timeout an instance may take to become ready.
READY_GRACE = timedelta(minutes=10)


@attrs.frozen(kw_only=True)
class InstanceConfig:
    """``[runners.instance]``: image allow-list and build directory sharing."""

    allowed_images: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    use_common_build_dir: bool = False


def _not_modelled(inst: Any, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    """``extra`` holds only keys the class does not model, or dump would write a key twice."""
    modelled = {a.name for a in attrs.fields(type(inst))} - {"extra", "warnings"}
    clash = sorted(modelled & set(value))
    if clash:
        raise ValueError(f"extra must not hold modelled keys, got {clash}")


def _extra_field() -> Any:
    return attrs.field(factory=dict, repr=_masked_repr, hash=False, validator=_not_modelled)


#: The shells a runner's jobs may run in, as GitLab's ``shell`` key names them.
RUNNER_SHELLS = ("bash", "sh")
_WINDOWS_SHELLS = ("pwsh", "powershell", "cmd")


def _shell(_inst: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None or value in RUNNER_SHELLS:
        return
    if value in _WINDOWS_SHELLS:
        raise ValueError(
            f"{value!r} is a Windows shell, and fleetkit does not run Windows instances yet: "
            'use shell = "bash" or "sh"'
        )
    raise ValueError(f"expected 'bash' or 'sh' (GitLab Runner's shells for Linux), got {value!r}")


def _flags(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


def _bool_flags(_inst: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    bad = sorted(str(k) for k, v in value.items() if not isinstance(v, bool))
    if bad:
        raise ValueError(f"feature flags are true or false; not so: {', '.join(bad)}")


#: The feature flags fleetkit acts on (GitLab's names); others have no effect here.
FEATURE_FLAGS = ("FF_USE_FLEETING_ACQUIRE_HEARTBEATS",)


@attrs.frozen(kw_only=True)
class Runner:
    """One ``[[runners]]`` entry.

    ``autoscaler`` is ``None`` for a runner fleetkit does not drive. ``extra``
    holds every other key of the entry (``[runners.docker]``, ``cache``,
    ``environment``, ...) unjudged. ``token`` is masked in the repr.
    ``shell`` (``bash`` when not set, as GitLab's instance executor) runs the
    job script, ``pre_build_script`` before it and ``post_build_script`` after
    it. ``feature_flags`` are GitLab's ``FF_*`` switches; fleetkit acts on
    :data:`FEATURE_FLAGS`.
    """

    name: str | None = None
    url: str | None = None
    id: int | None = None
    token: str | None = attrs.field(default=None, repr=mask_secret)
    executor: str | None = None
    shell: str | None = attrs.field(default=None, validator=_shell)
    limit: int = attrs.field(default=0, validator=_nonneg)
    request_concurrency: int = attrs.field(default=1, validator=_nonneg)
    builds_dir: str | None = None
    cache_dir: str | None = None
    pre_build_script: str | None = None
    post_build_script: str | None = None
    feature_flags: Mapping[str, bool] = attrs.field(
        factory=dict, converter=_flags, validator=_bool_flags, hash=False
    )
    instance: InstanceConfig | None = None
    autoscaler: AutoscalerConfig | None = None
    extra: Mapping[str, Any] = _extra_field()

    @property
    def autoscaled(self) -> bool:
        """Whether fleetkit drives this runner (executor ``instance`` with an autoscaler)."""
        return self.executor in AUTOSCALER_EXECUTORS and self.autoscaler is not None

    @property
    def job_shell(self) -> str:
        """The shell jobs run in: ``shell``, or GitLab's default ``bash``."""
        return self.shell or "bash"

    def feature_flag(self, name: str) -> bool:
        """Whether feature flag ``name`` is on (GitLab's defaults: off)."""
        return bool(self.feature_flags.get(name, False))


@attrs.frozen(kw_only=True)
class Config:
    """A whole ``config.toml``: global ``concurrent``, the runners, and what else it holds.

    ``warnings`` are findings that do not stop loading (unknown runner keys,
    unreachable capacity); they take no part in equality.
    """

    concurrent: int | None = attrs.field(default=None)
    runners: tuple[Runner, ...] = attrs.field(default=(), converter=_runners)
    extra: Mapping[str, Any] = _extra_field()
    warnings: tuple[Problem, ...] = attrs.field(default=(), eq=False)

    @concurrent.validator
    def _check_concurrent(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"must be >= 1 (GitLab Runner refuses 0), got {value}")

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """The global ``listen_address`` as ``(host, port)`` (``None`` when not set):
        where ``fleetkit run`` serves its Prometheus metrics, as GitLab Runner does."""
        raw = self.extra.get("listen_address")
        return parse_listen_address(raw) if isinstance(raw, str) and raw else None

    def autoscaled_runners(self) -> tuple[tuple[int, Runner], ...]:
        """The runners fleetkit drives, each with its index in ``runners``."""
        return tuple((i, r) for i, r in enumerate(self.runners) if r.autoscaled)
