"""Issue 14: ``fleetkit validate`` builds the providers and connectors a run would use
(contacting nothing), so their own checks run there, with full TOML paths, all at once."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from fleetkit.cli import main

LOCAL = """
concurrent = 4
[[runners]]
  name = "{name}"
  executor = "instance"
  [runners.autoscaler]
    plugin = "{plugin}"
    max_instances = 2
    [runners.autoscaler.plugin_config]
{plugin_config}
    [runners.autoscaler.connector_config]
{connector}
"""


def runner(
    name: str = "r", plugin: str = "local", plugin_config: str = "", connector: str = ""
) -> str:
    return LOCAL.format(name=name, plugin=plugin, plugin_config=plugin_config, connector=connector)


def validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *options: str
) -> tuple[int, list[str]]:
    config = tmp_path / "config.toml"
    config.write_text(text)
    status = main(["validate", str(config), *options])
    err = capsys.readouterr().err
    return status, [
        line.removeprefix("  - ") for line in err.splitlines() if line.startswith("  - ")
    ]


def paths(lines: list[str]) -> list[str]:
    return [line.split(": ", 1)[0] for line in lines]


def test_a_plugin_that_is_not_installed_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate said OK for a plugin fleetkit cannot load; now it names the key."""
    status, lines = validate(tmp_path, capsys, runner(plugin="hetzner"))
    assert status == 1
    assert paths(lines) == ["runners[0].autoscaler.plugin"]
    assert "no provider answers to plugin 'hetzner'; installed: aws, local" in lines[0]


def test_a_plugin_config_typo_is_named_by_its_toml_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in plugin_config was found only when the executor was built, and named
    plugin_config.nmae; validate now names runners[0].autoscaler.plugin_config.nmae."""
    status, lines = validate(tmp_path, capsys, runner(plugin_config="      nmae = 'x'"))
    assert status == 1
    assert paths(lines) == ["runners[0].autoscaler.plugin_config.nmae"]


def test_winrm_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """protocol = "winrm" validated OK, though fleetkit has no WinRM connector."""
    status, lines = validate(tmp_path, capsys, runner(connector="      protocol = 'winrm'"))
    assert status == 1
    assert paths(lines) == ["runners[0].autoscaler.connector_config.protocol"]
    assert "fleetkit has no WinRM connector" in lines[0]


def test_all_problems_of_all_runners_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config problem in one runner does not stop the parts of another being built."""
    text = runner(name="a", plugin_config="      nmae = 'x'") + runner(
        name="b", connector="      protocol = 'winrm'\n      timeout = 'soon'"
    ).replace("concurrent = 4", "")
    text += runner(name="c", plugin="hetzner").replace("concurrent = 4", "")
    status, lines = validate(tmp_path, capsys, text)
    assert status == 1
    assert paths(lines) == [
        "runners[1].autoscaler.connector_config.timeout",
        "runners[0].autoscaler.plugin_config.nmae",
        "runners[2].autoscaler.plugin",
    ]


def test_an_unreadable_key_path_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GitLab fails init when it cannot read key_path, dynamic credentials or not."""
    missing = tmp_path / "nope.pem"
    status, lines = validate(tmp_path, capsys, runner(connector=f"      key_path = '{missing}'"))
    assert status == 1
    expected = (
        f"runners[0].autoscaler.connector_config.key_path: cannot read the key file "
        f"{missing}: No such file or directory"
    )
    assert lines == [expected]


def test_config_only_skips_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config-only checks the TOML alone (a config for GitLab Runner's own plugins)."""
    status, lines = validate(tmp_path, capsys, runner(plugin="hetzner"), "--config-only")
    assert (status, lines) == (0, [])


def test_validate_contacts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the parts opens no connection and starts no process."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate tried to contact something")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    aws = runner(plugin="aws", plugin_config="      name = 'asg'", connector="      username = 'u'")
    status, lines = validate(tmp_path, capsys, aws + runner(name="l").replace("concurrent = 4", ""))
    assert (status, lines) == (0, [])
