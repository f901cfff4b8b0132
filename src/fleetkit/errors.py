"""The exception tree of fleetkit.

One root, :class:`FleetkitError`, with branches grouped by what the caller should
*do* about the failure:

* :class:`ConfigError`: fix the configuration and try again; ``.problems`` lists every problem.
* :class:`PlanInputError`: the snapshot given to the planner is inconsistent (a
  caller's bug, not configuration); ``.problems`` lists every problem.
* :class:`ProviderError`: the instance group refused or failed; :class:`RetryLater`
  (and its child :class:`Throttled`) mean try again later, :class:`QuotaExceeded`
  means capacity is not to be had, :class:`InstanceNotFound` means treat it as gone.
* :class:`ConnectorError`: reaching an instance failed.
* :class:`IsolationError`: a nested VM could not be created or reached;
  :class:`NestingUnavailable` means the nesting daemon did not answer (a health
  failure of its instance), :class:`NestingError` that it answered with an error
  (:class:`NotInitialized`, :class:`AlreadyInitialized`, :class:`VMNotFound`,
  :class:`ImageNotFound`), :class:`HypervisorNotFound` that no hypervisor
  answers to a name, :class:`HypervisorError` (:class:`UnknownImage`,
  :class:`HypervisorFull`) that a nesting daemon's hypervisor failed.
* :class:`FleetError`: the runtime could not grant or keep a slot.

Foreign exceptions (botocore, asyncssh, OSError from subprocesses) are translated
exactly once, at the module that talks to the foreign library, and chained with
``raise ... from exc`` so the cause stays visible to a debugger but never leaks
into the type a caller has to catch.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = [
    "AcquireTimeout",
    "AlreadyInitialized",
    "AuthenticationFailed",
    "CommandTimeout",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectorError",
    "FleetClosed",
    "FleetError",
    "FleetkitError",
    "HostKeyMismatch",
    "HypervisorError",
    "HypervisorFull",
    "HypervisorNotFound",
    "ImageNotFound",
    "ImageRejected",
    "InstanceLost",
    "InstanceNotFound",
    "IsolationError",
    "NestingError",
    "NestingUnavailable",
    "NoCapacity",
    "NotInitialized",
    "PlanInputError",
    "PluginNotFound",
    "Problem",
    "ProviderError",
    "QuotaExceeded",
    "RetryLater",
    "StateStoreError",
    "Throttled",
    "UnknownImage",
    "UnsupportedEventLoop",
    "VMNotFound",
]


class FleetkitError(Exception):
    """Root of every exception fleetkit raises on purpose."""


class UnsupportedEventLoop(FleetkitError, RuntimeError):
    """A part was used under an event loop it cannot run on (the SSH connector
    needs anyio's asyncio backend). A programming error, not an instance's
    fault: raised once, at start, and never counted against an instance's health.
    Raised by :class:`~fleetkit.connector.ssh.SSHConnector` and by
    :class:`~fleetkit.fleet.Fleet` and :class:`~fleetkit.executor.InstanceExecutor`
    when they start with such a connector."""


@attrs.frozen
class Problem:
    """One finding about an input, located by ``path``.

    ``path`` reads like ``runners[0].autoscaler.policy[1].idle_time`` for a TOML
    config, or names the instance or job the finding is about.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(FleetkitError, ValueError):
    """The configuration is invalid. Raised by :func:`fleetkit.config.load` and by
    constructors that validate user input; ``problems`` holds every problem found
    in one pass, each with its path."""

    def __init__(self, problems: Iterable[Problem] | str, *, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{head}{self.problems[0]}"
        lines = [f"{head}{len(self.problems)} problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class PlanInputError(FleetkitError, ValueError):
    """The snapshot given to :func:`fleetkit.planner.plan` is inconsistent: a
    pending key or an instance id is repeated, or ``requested`` is negative.

    An input error of the caller of ``plan()`` (the fleet's driver, a
    simulator, your own loop), not of configuration, so it is not a
    :class:`ConfigError`. ``problems`` holds every problem found, each named
    by its snapshot field (``snapshot.pending[1]``)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("planner snapshot: " + "; ".join(str(p) for p in self.problems))


# --- providers ------------------------------------------------------------


class ProviderError(FleetkitError):
    """An instance group operation failed. Raised by :mod:`fleetkit.provider` verbs."""


class PluginNotFound(ProviderError, LookupError):
    """No provider answers to the plugin name. Raised by :func:`fleetkit.provider.load`."""


class RetryLater(ProviderError):
    """A transient failure: the same call may succeed later (network, 5xx)."""


class Throttled(RetryLater):
    """The cloud API throttled the call; back off before retrying."""


class QuotaExceeded(ProviderError):
    """The group cannot grow: a size limit, quota or capacity shortage."""


class InstanceNotFound(ProviderError, LookupError):
    """The instance does not exist (any more); callers treat it as removed."""

    def __init__(self, instance_id: str, message: str | None = None) -> None:
        self.instance_id = instance_id
        super().__init__(message or f"instance {instance_id!r} not found")


# --- connectors -----------------------------------------------------------


class ConnectorError(FleetkitError):
    """Reaching an instance or running a command on it failed. Raised by
    :mod:`fleetkit.connector` connections."""


class ConnectTimeout(ConnectorError, TimeoutError):
    """The instance did not accept a connection within the dial timeout."""


class AuthenticationFailed(ConnectorError, PermissionError):
    """The instance refused the credentials."""


class HostKeyMismatch(ConnectorError):
    """The instance presented a host key other than the pinned or supplied one."""


class ConnectionLost(ConnectorError, ConnectionError):
    """An established connection broke; commands running on it have failed."""


class CommandTimeout(ConnectorError, TimeoutError):
    """A command ran longer than its timeout and was ended."""


# --- isolation ------------------------------------------------------------


class IsolationError(FleetkitError):
    """A nested VM could not be created, reached or deleted. Raised by
    :mod:`fleetkit.isolation` and :mod:`fleetkit.nesting`."""


class ImageRejected(IsolationError):
    """A job's VM image is missing, or its expanded name is outside
    ``[runners.instance] allowed_images``. Raised by
    :func:`fleetkit.isolation.choose_image` before any VM exists: the job fails,
    and the instance is not at fault (no health failure, no retry)."""


class NestingUnavailable(IsolationError, ConnectionError):
    """The nesting daemon did not answer: no socket, connection refused or
    dropped, or no reply within the deadline. A health failure of the instance
    the daemon runs on."""


class NestingError(IsolationError):
    """The nesting daemon answered a call with an error.

    ``rpc`` is the call (``"Create"``), ``code`` the gRPC status name
    (``"FAILED_PRECONDITION"``) and ``detail`` the daemon's message.
    """

    def __init__(self, rpc: str, code: str, detail: str, *, target: str = "") -> None:
        self.rpc = rpc
        self.code = code
        self.detail = detail
        self.target = target
        where = f"nesting daemon at {target}" if target else "nesting daemon"
        super().__init__(f"{where}: {rpc} failed: {code}: {detail}")


class NotInitialized(NestingError):
    """The daemon refused a call because no ``Init`` has succeeded yet
    (``FAILED_PRECONDITION``, ``not initialized``)."""


class AlreadyInitialized(NestingError):
    """A second ``Init`` (``FAILED_PRECONDITION``, ``already initialized``).
    Callers that only need the daemon initialized treat it as success."""


class VMNotFound(NestingError, LookupError):
    """No VM has the id given to ``Delete`` (``NOT_FOUND``): treat it as gone."""


class ImageNotFound(NestingError, LookupError):
    """The daemon has no image of the name given to ``Create`` (``NOT_FOUND``)."""


class HypervisorNotFound(IsolationError, LookupError):
    """No hypervisor answers to the name given to the nesting daemon. Raised by
    :func:`fleetkit.nesting.load_hypervisor`; the message lists the installed ones."""


class HypervisorError(IsolationError):
    """A hypervisor of the nesting daemon could not do what it was asked.

    Raised by :class:`fleetkit.nesting.Hypervisor` implementations; the daemon
    answers the call with gRPC ``INTERNAL`` and this message, so the message
    must be fit for the manager to read (no secrets, no tracebacks).
    """


class UnknownImage(HypervisorError, LookupError):
    """The hypervisor has no image of that name; the daemon answers ``NOT_FOUND``
    (the client raises :class:`ImageNotFound`)."""


class HypervisorFull(HypervisorError):
    """The hypervisor holds as many VMs as it may; the daemon answers
    ``RESOURCE_EXHAUSTED``."""


# --- fleet runtime --------------------------------------------------------


class FleetError(FleetkitError):
    """The fleet runtime could not grant or keep a slot. Raised by :mod:`fleetkit.fleet`."""


class NoCapacity(FleetError):
    """A reservation was refused: no capacity now (preemptive) or ever (limits)."""


class AcquireTimeout(FleetError, TimeoutError):
    """No slot became ready within the acquire timeout."""


class InstanceLost(FleetError):
    """The instance under a held slot disappeared or was removed."""

    def __init__(self, instance_id: str, reason: str) -> None:
        self.instance_id = instance_id
        self.reason = reason
        super().__init__(f"instance {instance_id!r} lost: {reason}")


class FleetClosed(FleetError):
    """The fleet is shutting down or closed and grants no new slots."""


class StateStoreError(FleetError):
    """The state storage (``state_storage`` in config.toml) cannot be used: its
    ``state.json`` is unreadable or not a fleetkit state file, its directory is
    not private, or another live fleet holds it. Raised when a fleet starts
    (:class:`fleetkit.fleet.Fleet`) and when it saves its table; the message
    names the file."""
