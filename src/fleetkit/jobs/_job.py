"""Jobs and their results: what to run, and what became of it.

A :class:`Job` is shell text plus the variables it runs with (some masked), a
timeout and whether it may fail. A :class:`JobResult` says how one attempt
ended, where and when. Both are frozen values; nothing here does I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from fleetkit._duration import Duration, duration_problem, to_duration
from fleetkit._text import control_characters, key_path
from fleetkit.errors import ConfigError, Problem

__all__ = ["SHELLS", "Job", "JobResult", "JobStatus", "Variable", "is_variable_name"]

#: The shells a job's script may be written for.
SHELLS = frozenset({"bash", "sh", "pwsh"})

#: GitLab's default job timeout.
DEFAULT_TIMEOUT = Duration(3600)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME_RULE = "a variable name is letters, digits and _, not starting with a digit"


def is_variable_name(name: str) -> bool:
    """Whether ``name`` can be exported as a shell variable."""
    return _NAME.match(name) is not None


@attrs.frozen
class Variable:
    """One job variable. A masked variable's value is replaced in the job log and
    never shown in a repr."""

    key: str
    value: str
    masked: bool = False

    def __repr__(self) -> str:
        shown = "'***'" if self.masked else repr(self.value)
        return f"Variable(key={self.key!r}, value={shown}, masked={self.masked})"


def _to_variables(value: Mapping[str, str | Variable] | Iterable[Variable]) -> tuple[Variable, ...]:
    if isinstance(value, Mapping):
        return tuple(
            v if isinstance(v, Variable) else Variable(str(k), str(v)) for k, v in value.items()
        )
    items: object = value
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        return items  # type: ignore[return-value]  # _check_job names the field
    return tuple(items)


def _to_script(value: str | Sequence[str]) -> str:
    # A list of lines, as the jobs file and .gitlab-ci.yml take it.
    if isinstance(value, list | tuple) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    return value  # type: ignore[return-value]  # anything else: _check_job names the field


def _kind(value: object) -> str:
    return type(value).__name__


def _to_tags(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _check_types(job: Job, where: str) -> list[Problem]:
    # Read as plain objects: a caller without a type checker may pass anything.
    fields: dict[str, object] = attrs.asdict(job, recurse=False)
    problems = []
    job_id = fields["id"]
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0:
        problems.append(Problem(where + ".id", f"expected an integer >= 0, got {job_id!r}"))
    for name in ("name", "shell"):
        if name == "shell" and fields[name] is None:
            continue  # the runner's shell
        if not isinstance(fields[name], str):
            problems.append(
                Problem(f"{where}.{name}", f"expected a string, got {_kind(fields[name])}")
            )
    if not isinstance(fields["script"], str):
        problems.append(
            Problem(
                where + ".script",
                f"expected shell text or a list of lines (strings), got {_kind(fields['script'])}",
            )
        )
    if not isinstance(fields["allow_failure"], bool):
        problems.append(Problem(where + ".allow_failure", "expected True or False"))
    image = fields["image"]
    if image is not None and not isinstance(image, str):
        problems.append(Problem(where + ".image", f"expected a string, got {_kind(image)}"))
    runner = fields["runner"]
    if runner is not None and not isinstance(runner, str):
        problems.append(Problem(where + ".runner", f"expected a string, got {_kind(runner)}"))
    if not all(isinstance(t, str) and t for t in fields["tags"]):  # type: ignore[attr-defined]
        problems.append(Problem(where + ".tags", "expected a list of non-empty strings"))
    variables = fields["variables"]
    if not isinstance(variables, tuple) or not all(isinstance(v, Variable) for v in variables):
        problems.append(
            Problem(
                where + ".variables",
                "expected a mapping of name to value, or a list of Variable",
            )
        )
    return problems


def _variable_path(where: str, key: object) -> str:
    # A key may hold anything (a newline): quoted unless a plain word.
    return key_path(f"{where}.variables", key)


def _check_job(job: Job) -> None:
    named = isinstance(job.name, str) and job.name
    where = f"job {job.name!r}" if named else f"job {job.id!r}"
    problems = _check_types(job, where)
    if problems:
        raise ConfigError(problems)
    if not job.name.strip():
        problems.append(Problem(where + ".name", "must not be empty"))
    controls = control_characters(job.name, tab=True)
    if controls:
        # A newline in a name would forge lines in the log and the output
        # ("ERROR: Job failed"), an escape would drive the terminal.
        problems.append(
            Problem(
                where + ".name",
                f"must be one line of text without control characters, got {', '.join(controls)}",
            )
        )
    if not job.script.strip():
        problems.append(Problem(where + ".script", "must not be empty"))
    if job.shell is not None and job.shell not in SHELLS:
        problems.append(
            Problem(where + ".shell", f"expected one of {sorted(SHELLS)}, got {job.shell!r}")
        )
    message = duration_problem(job.timeout, positive=True, infinite=False)
    if message is not None:
        problems.append(Problem(where + ".timeout", message))
    if "\0" in job.script:
        problems.append(Problem(where + ".script", "contains a NUL character"))
    seen: set[str] = set()
    for var in job.variables:
        key: object = var.key
        value: object = var.value
        if not isinstance(key, str) or not isinstance(value, str):
            # Named by key only: the value may be a secret.
            problems.append(
                Problem(_variable_path(where, var.key), "name and value must be strings")
            )
            continue
        if "\0" in var.value:
            # Named only: the value may be a secret.
            problems.append(
                Problem(_variable_path(where, var.key), "value contains a NUL character")
            )
        if not is_variable_name(var.key):
            problems.append(Problem(_variable_path(where, var.key), _NAME_RULE))
        if var.key in seen:
            problems.append(Problem(_variable_path(where, var.key), "given twice"))
        seen.add(var.key)
    if problems:
        raise ConfigError(problems)


@attrs.frozen(kw_only=True)
class Job:
    """A unit of work: ``script`` run by ``shell`` on an acquired slot.

    ``shell`` ``None`` (the default) runs the script in the runner's shell
    (``config.toml``'s ``shell``, ``bash`` when not set, as GitLab Runner); a
    job may name one of its own (a fleetkit extension).

    ``script`` is shell text, or a list of lines (joined with newlines, as
    GitLab runs a ``script:`` list). ``timeout`` is seconds or a timedelta.

    ``variables`` (a mapping of name to value, or :class:`Variable` values for
    masked ones) are exported to the script after fleetkit's own ``CI_*``
    variables, so a job may override those. ``timeout`` ends the job (and every
    process it started) when exceeded. ``image`` selects the nested VM image
    when VM isolation is on; it is not used otherwise. ``runner`` names the
    ``[[runners]]`` entry that must run the job; else ``tags`` pick a runner
    whose tags include them all (as GitLab matches job and runner tags); with
    neither, any runner that runs untagged jobs takes it.

    Every argument is checked when the job is made: a bad one raises
    :class:`~fleetkit.errors.ConfigError` naming the job and the field
    (``job 'tests'.script: expected shell text or a list of lines ...``).
    """

    id: int
    name: str
    script: str = attrs.field(converter=_to_script)
    shell: str | None = None
    variables: tuple[Variable, ...] = attrs.field(default=(), converter=_to_variables)
    timeout: Duration = attrs.field(default=DEFAULT_TIMEOUT, converter=to_duration)
    allow_failure: bool = False
    image: str | None = None
    runner: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)

    def __attrs_post_init__(self) -> None:
        _check_job(self)

    @property
    def masked_values(self) -> tuple[str, ...]:
        """The values to hide from the log."""
        return tuple(v.value for v in self.variables if v.masked and v.value)

    def environment(self) -> dict[str, str]:
        """The job's own variables as a name -> value mapping."""
        return {v.key: v.value for v in self.variables}


class JobStatus(enum.Enum):
    """How one attempt at a job ended.

    ``SYSTEM_FAILURE`` means the job could not run to its end for a reason that
    is not the job's: the instance was lost, the connection broke, the build
    directory could not be prepared. Such attempts may be retried elsewhere.
    """

    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SYSTEM_FAILURE = "system_failure"


_FAILURE_REASONS = {
    JobStatus.FAILED: "script_failure",
    JobStatus.TIMED_OUT: "job_execution_timeout",
    JobStatus.CANCELLED: "job_canceled",
    JobStatus.SYSTEM_FAILURE: "runner_system_failure",
}


@attrs.frozen(kw_only=True)
class JobResult:
    """One attempt at a job, as it ended.

    Times are seconds on the runtime clock (anyio's ``current_time()``):
    ``queued_at`` when the job was handed to the executor, ``started_at`` when
    its slot was acquired, ``finished_at`` when the attempt ended. ``log`` says
    where the log can be read (a path) when the sink keeps one. ``message``
    explains a failure that is not the script's own exit code; it never holds a
    secret. ``earlier`` holds the attempts before this one that ended in a
    system failure and were retried. ``runner`` names the runner (its
    :class:`~fleetkit.executor.RunnerLane`) that ran it, when an executor did.
    ``output`` is the end of the attempt's
    log, masked as the log is: its last :data:`~fleetkit.jobs.OUTPUT_LIMIT`
    (64 Ki) characters (the whole log goes to the log sink); not in the repr.
    """

    job_id: int
    name: str
    status: JobStatus
    exit_code: int | None = None
    queued_at: float
    started_at: float | None = None
    finished_at: float
    instance_id: str | None = None
    slot: int | None = None
    log: str | None = None
    attempt: int = 1
    allow_failure: bool = False
    message: str | None = None
    earlier: tuple[JobResult, ...] = ()
    runner: str | None = None
    output: str = attrs.field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status is JobStatus.SUCCESS

    @property
    def passed(self) -> bool:
        """Whether the job counts as passed: succeeded, or failed while allowed to."""
        return self.ok or (self.allow_failure and self.status is not JobStatus.CANCELLED)

    @property
    def failure_reason(self) -> str | None:
        """GitLab's name for why the job failed (``script_failure``,
        ``job_execution_timeout``, ``job_canceled``, ``runner_system_failure``),
        or ``None`` for a success (spec §3.3)."""
        return _FAILURE_REASONS.get(self.status)

    @property
    def wait(self) -> float | None:
        """Seconds from queued to started (``None`` if it never started)."""
        return None if self.started_at is None else self.started_at - self.queued_at

    @property
    def duration(self) -> float | None:
        """Seconds from started to finished (``None`` if it never started)."""
        return None if self.started_at is None else self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, for ``fleetkit run --json``."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wait": self.wait,
            "duration": self.duration,
            "instance_id": self.instance_id,
            "slot": self.slot,
            "log": self.log,
            "attempt": self.attempt,
            "allow_failure": self.allow_failure,
            "message": self.message,
            "failure_reason": self.failure_reason,
            "earlier": [e.to_dict() for e in self.earlier],
            "runner": self.runner,
        }
