"""`fleetkit validate` on VM isolation: what it will apply, and what cannot work refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_cli_validate import run_cli

_BASE = """
[[runners]]
  name = "isolated"
  executor = "instance"
  [runners.instance]
    allowed_images = [{allowed}]
  [runners.autoscaler]
    plugin = "local"
    [runners.autoscaler.plugin_config]
      use_sshd = false
    [runners.autoscaler.connector_config]
      protocol = "{protocol}"
    [runners.autoscaler.vm_isolation]
      enabled = true
      nesting_host = "{host}"
      image = "default"
    [runners.autoscaler.vm_isolation.connector_config]
      username = "vm"
      protocol = "{vm_protocol}"
"""


def _config(tmp_path: Path, **fields: str) -> str:
    values = {
        "allowed": '"default", "ubuntu:*"',
        "protocol": "ssh",
        "host": "unix:nesting.sock",
        "vm_protocol": "ssh",
    }
    values.update(fields)
    path = tmp_path / "config.toml"
    path.write_text(_BASE.format(**values))
    return str(path)


def test_the_summary_explains_the_isolation_it_will_apply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Daemon address, default image, allowed patterns and how VMs are reached."""
    status, out, err = run_cli(capsys, "validate", _config(tmp_path))
    assert (status, err) == (0, "")
    assert (
        "  vm isolation: each job in a VM of its own, made by the nesting daemon at "
        "unix:nesting.sock (reached through the instance's connection; no port is opened)"
    ) in out
    assert "    default image: 'default'; variables in an image are expanded first" in out
    assert "    allowed images: 'default', 'ubuntu:*' (doublestar" in out
    assert (
        "    VMs reached over SSH through the instance, as vm, with the instance's credentials"
        in out
    )


def test_an_empty_allow_list_says_any_image(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """allowed_images = [] allows every image, and the summary says so."""
    _, out, _ = run_cli(capsys, "validate", _config(tmp_path, allowed=""))
    assert "    allowed images: any ([runners.instance] allowed_images is empty)" in out


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"host": "nesting.sock"}, "vm_isolation.nesting_host", "unix:///abs/path"),
        ({"host": "unix://relative"}, "vm_isolation.nesting_host", "unix:///absolute/path"),
        ({"host": "daemon:99999"}, "vm_isolation.nesting_host", "host:port"),
        ({"vm_protocol": "winrm"}, "vm_isolation.connector_config.protocol", "WinRM"),
    ],
)
def test_what_cannot_work_is_refused_with_its_path(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    fields: dict[str, str],
    path: str,
    message: str,
) -> None:
    """A nesting_host in none of the three forms, or a VM connector fleetkit cannot
    speak, is a problem at its TOML path; exit 1."""
    status, _, err = run_cli(capsys, "validate", _config(tmp_path, **fields))
    assert status == 1
    line = next(line for line in err.splitlines() if path in line)
    assert f"runners[0].autoscaler.{path}: " in line
    assert message in line
