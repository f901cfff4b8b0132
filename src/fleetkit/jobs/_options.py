"""How jobs are run on a runner's instances: one frozen value, :class:`JobOptions`.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from fleetkit._checks import boolean, where
from fleetkit._duration import Duration, duration_check, to_duration
from fleetkit.errors import ConfigError, Problem

__all__ = ["JobOptions"]


def _text(*, optional: bool = False) -> Any:
    """A validator: a non-empty ``str``; with ``optional``, any ``str`` or ``None``."""

    def check(inst: object, attribute: Any, value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise TypeError(
                f"{where(inst, attribute)}: expected a string, got {type(value).__name__}"
            )
        if not value and not optional:
            raise ConfigError([Problem(where(inst, attribute), "must not be empty")])

    return check


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A read-only copy: the caller's dict may change after the options are made.
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        return value  # type: ignore[unreachable]  # rejected by _variables, with its field
    return MappingProxyType(dict(value))


def _variables(inst: object, attribute: Any, value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where(inst, attribute)}: expected a mapping of names to strings, "
            f"got {type(value).__name__}"
        )
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            # The value may be a secret: only its type goes in the message.
            raise TypeError(
                f"{where(inst, attribute)}[{name!r}]: expected a string, got {type(text).__name__}"
                if isinstance(name, str)
                else f"{where(inst, attribute)}: names must be strings, got {type(name).__name__}"
            )


@attrs.frozen(kw_only=True)
class JobOptions:
    """How :func:`~fleetkit.jobs.run_job` runs a job: a runner's job settings, as one value.

    - ``builds_dir``: where build directories go on the instance,
      ``builds_dir/INSTANCE/SLOT/JOB_ID`` (a relative one is taken from the
      login directory, or from ``$TMPDIR/fleetkit-UID`` where that is not
      writable). ``keep_build_dir`` keeps it after the job.
    - ``common_build_dir``: every job on an instance uses
      ``builds_dir/INSTANCE/common`` (GitLab's ``use_common_build_dir``, for
      single-use instances and VMs).
    - ``variables``: set for every job, after GitLab's ``CI_*`` and fleetkit's
      ``FLEETKIT_*`` variables and before the job's own (a runner's
      ``environment``). Kept as a read-only copy.
    - ``log_internal_ip`` / ``log_external_ip``: add the instance's addresses to
      the job log's ``Dialing instance ...`` line, as GitLab's settings of those
      names do.
    - ``shell``: runs a job that names no shell of its own (the runner's
      ``shell``; GitLab's default ``bash``).
    - ``pre_build_script`` / ``post_build_script``: run in the same shell as
      the job's script, as GitLab Runner runs them: pre-build first, then the
      job's script, then post-build, stopping at the first failure.
    - ``kill_grace``: seconds (or a timedelta) between TERM and KILL when a job
      is ended (its timeout, a cancel).

    Checked when made: a wrong type raises :class:`TypeError`, a value out of
    range (an empty ``builds_dir`` or ``shell``, a negative ``kill_grace``)
    :class:`~fleetkit.errors.ConfigError`; both name ``JobOptions.field``.
    :class:`~fleetkit.executor.InstanceExecutor` builds one per runner from
    ``config.toml`` (``RunnerLane.options``).
    """

    builds_dir: str = attrs.field(default="builds", validator=_text())
    keep_build_dir: bool = attrs.field(default=False, validator=boolean)
    common_build_dir: bool = attrs.field(default=False, validator=boolean)
    variables: Mapping[str, str] = attrs.field(
        factory=lambda: MappingProxyType({}),
        converter=_frozen_map,
        validator=_variables,
        # Values may be secrets: never in a repr; a mapping does not hash.
        repr=False,
        hash=False,
    )
    log_internal_ip: bool = attrs.field(default=False, validator=boolean)
    log_external_ip: bool = attrs.field(default=False, validator=boolean)
    shell: str = attrs.field(default="bash", validator=_text())
    pre_build_script: str | None = attrs.field(default=None, validator=_text(optional=True))
    post_build_script: str | None = attrs.field(default=None, validator=_text(optional=True))
    kill_grace: Duration = attrs.field(
        default=Duration(5.0), converter=to_duration, validator=duration_check()
    )
