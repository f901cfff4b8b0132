"""The fleet runtime's settings: one frozen value with GitLab's defaults (spec §1.2, §1.6).

Public as :class:`fleetkit.fleet.FleetSettings`. It lives below the runtime so
that ``fleetkit.config`` can build it from ``[runners.autoscaler]``
(:meth:`fleetkit.config.AutoscalerConfig.fleet_settings`, next to ``limits()``
and ``schedule()``) without loading an event loop.

Durations are :class:`~fleetkit.model.Duration` values (seconds as a float,
because the runtime measures them on anyio's clock); each takes seconds or a
:class:`datetime.timedelta`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from fleetkit._duration import Duration, duration_check, to_duration, to_optional_duration

__all__ = ["FleetSettings"]


def _nonneg(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"FleetSettings.{attribute.name} must be >= 0, got {value}")


def _buckets(value: Iterable[float] | None) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def _increasing(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[float, ...] | None
) -> None:
    if value is not None and (
        not all(math.isfinite(v) for v in value) or list(value) != sorted(value)
    ):
        raise ValueError(
            f"FleetSettings.{attribute.name} must be finite numbers in increasing order, "
            f"got {list(value)}"
        )


def _bucket_field() -> Any:
    return attrs.field(default=None, converter=_buckets, validator=_increasing)


# Written out per field: mypy's attrs plugin reads a converter only there.
_POSITIVE = duration_check(positive=True)


@attrs.frozen(kw_only=True)
class FleetSettings:
    """How the fleet runtime behaves, apart from the policy and the limits.

    * ``update_interval`` / ``update_interval_when_expecting``: how often the
      provider's ``update`` is polled; the faster cadence applies while an
      instance is requested, creating, not yet ready, draining or deleting.
    * ``deletion_retry_interval``: wait before re-issuing ``decrease`` for an
      instance whose deletion failed or had no effect.
    * ``delete_instances_on_shutdown``, ``shutdown_deletion_interval``,
      ``shutdown_deletion_retries``: delete every instance at shutdown, in up
      to that many delete-and-check rounds.
    * ``cancel_acquisitions_on_shutdown``: at shutdown, cancel held slots
      (their holders see :class:`~fleetkit.errors.FleetClosed`) instead of
      waiting up to ``shutdown_timeout`` seconds (``None``: forever) for them.
    * ``instance_ready_command``: run over the connector on every new instance
      before it takes work; a non-zero exit removes the instance and backs off
      scale-ups exponentially (``ready_backoff_initial`` doubling up to
      ``ready_backoff_max``); the same backoff follows failed ``increase`` calls.
    * ``heartbeat_interval``: when set, heartbeat every ready instance that
      often; failures count toward ``failure_threshold``. A heartbeat is the
      provider's ``heartbeat`` verb when it declares the ``"heartbeat"``
      capability, and ``heartbeat_command`` over the connector when the fleet
      has one (GitLab runs ``exit 0`` there).
    * ``acquire_heartbeats``: also heartbeat an instance before each slot on it
      is handed out; a failure counts toward ``failure_threshold`` and the
      acquisition tries the next instance. ``FF_USE_FLEETING_ACQUIRE_HEARTBEATS``
      in ``[runners.feature_flags]`` turns this on with a 5 minute
      ``heartbeat_interval``, as in GitLab.
    * ``scale_throttle_limit`` / ``scale_throttle_burst``: the instance creation
      token bucket (0 means 100/s, -1 unlimited; burst ``None`` means
      ``max_instances``, or the limit when that is 0).
    * ``reservation_throttling``: cap reservations to idle capacity minus one
      instance's capacity (GitLab's default: on).
    * ``acquire_timeout``: the default ``acquire`` timeout
      (``instance_acquire_timeout``, 15m).
    * ``requested_timeout``: forget an accepted ``increase`` whose instance
      never showed up in ``update`` after this long.
    * ``state_storage_dir``: when set, the instance table is stored there
      (``state_storage.enabled``); ``keep_instance_with_acquisitions`` keeps an
      instance restored with acquisitions instead of removing it.
    * ``wake_coalesce``: after a wake-up (acquire, release, reserve, ready-up)
      the loop waits this long so that a burst is served by one tick.
    * ``owner_id``: the fleet's id, the owner tag the provider stamps on the
      instances it creates; at start an instance carrying it is proven ours,
      and an instance carrying another owner is never touched.
    * ``instance_*_buckets``: histogram bucket bounds (seconds) for
      ``stats().histograms`` and the Prometheus collector;
      ``instance_operation_time_buckets`` is the fallback of the four operation
      histograms, as in GitLab. ``None``: fleetkit's defaults.
    """

    update_interval: Duration = attrs.field(
        default=Duration(60.0), converter=to_duration, validator=_POSITIVE
    )
    update_interval_when_expecting: Duration = attrs.field(
        default=Duration(2.0), converter=to_duration, validator=_POSITIVE
    )
    deletion_retry_interval: Duration = attrs.field(
        default=Duration(60.0), converter=to_duration, validator=_POSITIVE
    )
    delete_instances_on_shutdown: bool = False
    shutdown_deletion_interval: Duration = attrs.field(
        default=Duration(10.0), converter=to_duration, validator=_POSITIVE
    )
    shutdown_deletion_retries: int = attrs.field(default=3, validator=_nonneg)
    cancel_acquisitions_on_shutdown: bool = False
    shutdown_timeout: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=_POSITIVE
    )
    instance_ready_command: str | None = None
    ready_command_timeout: Duration = attrs.field(
        default=Duration(300.0), converter=to_duration, validator=_POSITIVE
    )
    ready_backoff_initial: Duration = attrs.field(
        default=Duration(5.0), converter=to_duration, validator=_POSITIVE
    )
    ready_backoff_max: Duration = attrs.field(
        default=Duration(300.0), converter=to_duration, validator=_POSITIVE
    )

    @ready_backoff_max.validator
    def _check_backoff(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if value < self.ready_backoff_initial:
            raise ValueError(
                f"FleetSettings.ready_backoff_max ({value}) must be >= "
                f"ready_backoff_initial ({self.ready_backoff_initial})"
            )

    heartbeat_interval: Duration | None = attrs.field(
        default=None, converter=to_optional_duration, validator=_POSITIVE
    )
    heartbeat_command: str = "exit 0"
    heartbeat_timeout: Duration = attrs.field(
        default=Duration(30.0), converter=to_duration, validator=_POSITIVE
    )
    acquire_heartbeats: bool = False
    scale_throttle_limit: int = 0
    scale_throttle_burst: int | None = None
    reservation_throttling: bool = True
    acquire_timeout: Duration = attrs.field(
        default=Duration(900.0), converter=to_duration, validator=_POSITIVE
    )
    requested_timeout: Duration = attrs.field(
        default=Duration(600.0), converter=to_duration, validator=_POSITIVE
    )
    state_storage_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    keep_instance_with_acquisitions: bool = False
    wake_coalesce: Duration = attrs.field(
        default=Duration(0.01), converter=to_duration, validator=duration_check()
    )
    owner_id: str | None = None
    instance_operation_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_creation_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_is_running_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_deletion_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_readiness_time_buckets: tuple[float, ...] | None = _bucket_field()
    instance_life_duration_buckets: tuple[float, ...] | None = _bucket_field()
