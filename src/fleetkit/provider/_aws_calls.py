"""AWS API calls with jittered exponential backoff, counted, and their errors
translated into :mod:`fleetkit.errors` (the one place botocore exceptions are
looked at).

botocore's own retries are switched off by the provider so that every attempt
passes through here: the counts in :class:`AWSCallStats` are then exactly the
requests AWS saw, and the backoff uses an injected ``random.Random`` (tests are
deterministic) and ``anyio.sleep`` (time comes from anyio only).
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
from botocore import xform_name
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.parsers import ResponseParserError

from fleetkit.errors import ConfigError, Problem, ProviderError, RetryLater, Throttled

__all__ = ["AWSAPIError", "AWSCallStats", "AWSCaller", "RetryPolicy", "translate_error"]

_log = logging.getLogger("fleetkit.provider.aws")

# Codes AWS documents (or botocore's retry handler treats) as throttling. EC2
# says RequestLimitExceeded, Auto Scaling says Throttling.
_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "SlowDown",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)
# Failures where the same request may succeed a moment later. Auto Scaling
# answers ScalingActivityInProgress/ResourceContention while another change to
# the group is being applied.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "ScalingActivityInProgress",
        "ResourceContention",
    }
)


class AWSAPIError(ProviderError):
    """AWS refused a call for a reason retrying will not fix (validation, access).

    ``code`` is AWS's error code (``ValidationError``, ``AccessDenied``, ...).
    Raised by :class:`~fleetkit.provider.aws.AWSInstanceGroup` verbs.
    """

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        self.aws_message = message
        super().__init__(f"AWS {operation} failed: {code}: {message}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for throttled and transient failures.

    A call is tried at most ``attempts`` times; before retry ``k`` (0-based) it
    waits a uniform random time in ``[0, min(cap, base * 2**k)]`` seconds (AWS's
    "full jitter", which spreads many clients' retries apart).
    """

    attempts: int = attrs.field(default=5)
    base: float = 0.2
    cap: float = 10.0

    @attempts.validator
    def _check_attempts(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise ValueError(f"attempts must be >= 1, got {value}")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return rng.uniform(0.0, min(self.cap, self.base * 2.0**retry))


@attrs.frozen(kw_only=True)
class AWSCallStats:
    """Counts of AWS requests since the provider was built.

    ``calls`` maps each operation (``DescribeAutoScalingGroups``, ...) to the
    requests sent, retries included; ``retries`` counts re-sent requests,
    ``throttled`` and ``transient`` the failures of each kind seen,
    ``failed`` the calls that ended in an error, and ``backoff`` the seconds
    spent waiting before retries.
    """

    calls: Mapping[str, int] = attrs.field(factory=dict)
    retries: int = 0
    throttled: int = 0
    transient: int = 0
    failed: int = 0
    backoff: float = 0.0

    @property
    def total(self) -> int:
        """All requests sent."""
        return sum(self.calls.values())


class _Kind(enum.Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    FATAL = "fatal"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _classify(exc: Exception) -> _Kind:
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in _THROTTLE_CODES:
            return _Kind.THROTTLED
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_CODES or int(status) >= 500:
            return _Kind.TRANSIENT
        return _Kind.FATAL
    # A 5xx whose body is not AWS's XML (a proxy's or moto's HTML page) fails
    # parsing; on real AWS that only happens for transient gateway errors.
    if isinstance(exc, ConnectionError | HTTPClientError | ResponseParserError):
        return _Kind.TRANSIENT
    return _Kind.FATAL


def _translate(operation: str, exc: Exception, kind: _Kind, attempts: int) -> Exception:
    if kind is _Kind.THROTTLED:
        code = _error_code(exc) if isinstance(exc, ClientError) else "throttled"
        return Throttled(f"AWS {operation} throttled ({code}) after {attempts} attempts")
    if kind is _Kind.TRANSIENT:
        what = _error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        return RetryLater(f"AWS {operation} failed ({what}) after {attempts} attempts")
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message", ""))
        return AWSAPIError(operation, _error_code(exc), message)
    if isinstance(exc, NoRegionError):
        return ConfigError(
            [Problem("plugin_config.region", "missing: no region set here or in the AWS profile")]
        )
    if isinstance(exc, ProfileNotFound):
        return ConfigError([Problem("plugin_config.profile", str(exc))])
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            [
                Problem(
                    "plugin_config.credentials_file",
                    f"no usable AWS credentials ({type(exc).__name__}): set them in the "
                    "environment, the credentials file or the profile, or use an instance role",
                )
            ]
        )
    return ProviderError(f"AWS {operation} failed: {type(exc).__name__}: {exc}")


def translate_error(operation: str, exc: Exception) -> Exception:
    """The fleetkit error for a botocore failure of ``operation`` tried once."""
    return _translate(operation, exc, _classify(exc), 1)


class AWSCaller:
    """Sends AWS requests: retries throttled and transient failures with
    jittered backoff, counts every attempt, translates the final error."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._calls: Counter[str] = Counter()
        self._retries = 0
        self._throttled = 0
        self._transient = 0
        self._failed = 0
        self._backoff = 0.0

    @property
    def stats(self) -> AWSCallStats:
        """A snapshot of the counts so far."""
        return AWSCallStats(
            calls=dict(self._calls),
            retries=self._retries,
            throttled=self._throttled,
            transient=self._transient,
            failed=self._failed,
            backoff=self._backoff,
        )

    async def __call__(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` (AWS's CamelCase name) on an aiobotocore ``client``."""
        method = getattr(client, xform_name(operation))
        retry = 0
        while True:
            self._calls[operation] += 1
            try:
                response: dict[str, Any] = await method(**params)
            except (BotoCoreError, ClientError, ResponseParserError) as exc:
                kind = _classify(exc)
                if kind is _Kind.THROTTLED:
                    self._throttled += 1
                elif kind is _Kind.TRANSIENT:
                    self._transient += 1
                if kind is _Kind.FATAL or retry + 1 >= self._policy.attempts:
                    self._failed += 1
                    raise _translate(operation, exc, kind, retry + 1) from exc
                delay = self._policy.delay(retry, self._rng)
                _log.debug("AWS %s %s; retry %d in %.2fs", operation, kind.value, retry + 1, delay)
                self._retries += 1
                self._backoff += delay
                retry += 1
                await anyio.sleep(delay)
            else:
                return response
