"""Public constructors check their arguments when called and name the field; one
duration type (seconds or a timedelta in, a Duration out) across them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.config import parse_duration
from fleetkit.errors import ConfigError
from fleetkit.jobs import Job
from fleetkit.model import (
    ConnectInfo,
    ConnectorConfig,
    Duration,
    Instance,
    InstanceState,
    Limits,
    Snapshot,
)
from fleetkit.planner import plan
from fleetkit.policy import Policy


def untyped(value: object) -> Any:
    """A value the type checker would refuse, as an untyped caller passes it."""
    return value


def test_job_takes_a_list_of_lines_as_its_script() -> None:
    """Job(script=[...]) is a script of those lines, as the jobs file reads it."""
    assert Job(id=1, name="a", script=["echo a", "echo b"]).script == "echo a\necho b"


@pytest.mark.parametrize(
    ("kwargs", "path", "expected"),
    [
        ({"script": 42}, "job 'a'.script", "expected shell text or a list of lines"),
        ({"script": ["echo", 3]}, "job 'a'.script", "expected shell text or a list of lines"),
        ({"script": "  "}, "job 'a'.script", "must not be empty"),
        ({"timeout": "5m"}, "job 'a'.timeout", "expected seconds (a number) or a timedelta"),
        ({"timeout": -1}, "job 'a'.timeout", "must be > 0s, got -1s"),
        ({"variables": "A=b"}, "job 'a'.variables", "expected a mapping"),
        ({"allow_failure": "yes"}, "job 'a'.allow_failure", "expected True or False"),
        ({"id": "7"}, "job 'a'.id", "expected an integer >= 0"),
        ({"shell": 3}, "job 'a'.shell", "expected a string"),
    ],
)
def test_a_bad_job_argument_is_refused_naming_the_field(
    kwargs: dict[str, Any], path: str, expected: str
) -> None:
    """Each wrong Job argument raises ConfigError at construction, naming job and field."""
    args: dict[str, Any] = {"id": 1, "name": "a", "script": "true", **kwargs}
    with pytest.raises(ConfigError) as caught:
        Job(**args)
    assert [p.path for p in caught.value.problems] == [path]
    assert expected in caught.value.problems[0].message


@pytest.mark.parametrize(
    ("build", "field", "error"),
    [
        (lambda: Limits(ready_timeout=untyped("5m")), "Limits.ready_timeout", TypeError),
        (lambda: Limits(ready_timeout=0), "Limits.ready_timeout", ConfigError),
        (
            lambda: Limits(capacity_per_instance=untyped("2")),
            "Limits.capacity_per_instance",
            TypeError,
        ),
        (lambda: Limits(max_instances=-1), "Limits.max_instances", ConfigError),
        (lambda: Policy(idle_time=untyped("20m")), "Policy.idle_time", TypeError),
        (lambda: Policy(idle_time=-1), "Policy.idle_time", ConfigError),
        (lambda: Policy(idle_count=untyped(1.5)), "Policy.idle_count", TypeError),
        (lambda: Policy(scale_factor=untyped("2")), "Policy.scale_factor", TypeError),
        (lambda: Policy(preemptive_mode=untyped("no")), "Policy.preemptive_mode", TypeError),
        (lambda: ConnectInfo(id="i", timeout=untyped("30s")), "ConnectInfo.timeout", TypeError),
        (lambda: ConnectorConfig(keepalive=float("nan")), "ConnectorConfig.keepalive", ConfigError),
    ],
)
def test_bad_arguments_name_class_and_field(build: Any, field: str, error: type[Exception]) -> None:
    """A wrong type is a TypeError, a wrong value a ConfigError; both name Class.field."""
    with pytest.raises(error, match=rf"^{field}: "):
        build()


def test_durations_take_seconds_or_a_timedelta_and_store_one_type() -> None:
    """Seconds and timedeltas give equal values, each a Duration."""
    pairs = [
        (
            Limits(ready_timeout=90).ready_timeout,
            Limits(ready_timeout=timedelta(seconds=90)).ready_timeout,
        ),
        (Policy(idle_time=90).idle_time, Policy(idle_time=timedelta(seconds=90)).idle_time),
        (
            Job(id=1, name="a", script="x", timeout=90).timeout,
            Job(id=1, name="a", script="x", timeout=timedelta(seconds=90)).timeout,
        ),
        (
            ConnectInfo(id="i", keepalive=90).keepalive,
            ConnectInfo(id="i", keepalive=timedelta(seconds=90)).keepalive,
        ),
        (
            ConnectorConfig(timeout=90).timeout,
            ConnectorConfig(timeout=timedelta(seconds=90)).timeout,
        ),
    ]
    for a, b in pairs:
        assert type(a) is Duration
        assert type(b) is Duration
        assert a == b == 90
        assert a == timedelta(seconds=90)
        assert str(a) == "1m30s"
        assert a.total_seconds() == 90.0
        assert a.as_timedelta() == timedelta(seconds=90)


def test_a_timedelta_ready_timeout_plans() -> None:
    """Limits(ready_timeout=timedelta(...)) is accepted and plan() uses it (it used to
    crash with a bare TypeError)."""
    snapshot = Snapshot(
        instances=(Instance(id="i-1", state=InstanceState.RUNNING, created_at=0.0),)
    )
    decided = plan(snapshot, Policy(), Limits(ready_timeout=timedelta(seconds=30)), now=60.0)
    assert [d.instance_id for d in decided.deprovisions] == ["i-1"]
    assert "timeout 30s" in str(decided)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (1.5, "1.5s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (3605, "1h0m5s"),
        (86400, "24h"),
        (float("inf"), "forever"),
    ],
)
def test_durations_print_as_people_read_them(seconds: float, text: str) -> None:
    """str(Duration) is short, without Go's zero units, and never rounds to 0s."""
    assert str(Duration(seconds)) == text
    assert f"within {Duration(seconds)}" == f"within {text}"


@given(st.integers(min_value=0, max_value=10**15))
def test_printed_durations_parse_back(us: int) -> None:
    """Every printed duration reads back with Go's ParseDuration to the same value."""
    value = Duration(timedelta(microseconds=us))
    assert parse_duration(str(value)) == value.as_timedelta()


def test_the_ssh_connector_takes_durations_and_checks_its_arguments() -> None:
    """SSHConnector's durations are seconds or timedeltas; a wrong argument names itself."""
    from fleetkit.connector.ssh import SSHConnector

    ssh = SSHConnector(dial_timeout=timedelta(minutes=5), keepalive=15, idle_timeout=90)
    assert (float(ssh.dial_timeout), float(ssh.keepalive), str(ssh.idle_timeout)) == (
        300,
        15,
        "1m30s",
    )
    with pytest.raises(TypeError, match=r"^SSHConnector.dial_timeout: expected seconds"):
        SSHConnector(dial_timeout=untyped("5m"))
    with pytest.raises(ConfigError, match=r"^SSHConnector.max_sessions: must be >= 1"):
        SSHConnector(max_sessions=0)
    with pytest.raises(TypeError, match=r"^SSHConnector.max_sessions: expected an integer"):
        SSHConnector(max_sessions=untyped("10"))
