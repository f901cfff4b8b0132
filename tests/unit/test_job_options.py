"""JobOptions: a runner's job settings as one frozen value, checked when made."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from fleetkit.errors import ConfigError
from fleetkit.jobs import JobOptions


def test_defaults_are_gitlabs() -> None:
    """Without arguments: bash, builds/, nothing kept, no scripts, 5 s between TERM and KILL."""
    options = JobOptions()
    assert (options.builds_dir, options.shell, options.kill_grace) == ("builds", "bash", 5.0)
    flags = (options.keep_build_dir, options.common_build_dir)
    assert (*flags, options.log_internal_ip, options.log_external_ip) == (False,) * 4
    assert (options.pre_build_script, options.post_build_script) == (None, None)
    assert dict(options.variables) == {}


def test_options_are_frozen_and_keep_their_own_variables() -> None:
    """Changing the caller's dict afterwards changes nothing; the options cannot be changed."""
    env = {"REGION": "eu"}
    options = JobOptions(variables=env)
    env["REGION"] = "us"
    assert dict(options.variables) == {"REGION": "eu"}
    with pytest.raises(TypeError):
        options.variables["REGION"] = "us"  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.shell = "sh"  # type: ignore[misc]
    assert attrs.evolve(options, shell="sh").variables == {"REGION": "eu"}


def test_repr_never_shows_variable_values() -> None:
    """A runner's environment may hold secrets."""
    options = JobOptions(variables={"TOKEN": "s3cr3t-value"})
    assert "s3cr3t" not in repr(options)
    hash(options)  # hashable although variables is a mapping


def test_kill_grace_takes_a_timedelta() -> None:
    assert JobOptions(kill_grace=timedelta(milliseconds=500)).kill_grace == 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"builds_dir": ""}, ConfigError, r"^JobOptions\.builds_dir: must not be empty$"),
        ({"builds_dir": 3}, TypeError, r"^JobOptions\.builds_dir: expected a string, got int$"),
        ({"shell": ""}, ConfigError, r"^JobOptions\.shell: must not be empty$"),
        ({"keep_build_dir": "yes"}, TypeError, r"^JobOptions\.keep_build_dir: expected True"),
        ({"log_external_ip": 1}, TypeError, r"^JobOptions\.log_external_ip: expected True"),
        ({"pre_build_script": 7}, TypeError, r"^JobOptions\.pre_build_script: expected a string"),
        ({"kill_grace": -1}, ConfigError, r"^JobOptions\.kill_grace: must be >= 0s"),
        ({"kill_grace": "5s"}, TypeError, r"^JobOptions\.kill_grace: expected seconds"),
        ({"variables": ["A"]}, TypeError, r"^JobOptions\.variables: expected a mapping"),
        ({"variables": {"A": 1}}, TypeError, r"^JobOptions\.variables\['A'\]: expected a string"),
        ({"variables": {1: "x"}}, TypeError, r"^JobOptions\.variables: names must be strings"),
    ],
)
def test_a_bad_field_is_refused_by_name(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    """Each bad value fails where it is given, naming JobOptions.field and what was expected."""
    with pytest.raises(error, match=message):
        JobOptions(**kwargs)  # type: ignore[arg-type]


def test_a_variable_value_is_never_in_the_error() -> None:
    with pytest.raises(TypeError) as raised:
        JobOptions(variables={"TOKEN": b"s3cr3t-bytes"})  # type: ignore[dict-item]
    assert "s3cr3t" not in str(raised.value)
