"""The recipes page's five programs run as printed (each in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.samples import ROOT
from tests.integration.local_provider_support import require_sshd

pytestmark = pytest.mark.integration

RECIPES = ROOT / "examples" / "recipes"


def _run(name: str, *args: str, tmp: Path) -> str:
    # The local provider's sandboxes go to the default TMPDIR: its login user must
    # reach them, which pytest's private tmp dirs do not allow.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, str(RECIPES / name), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_recipe_is_on_the_page_and_run_here() -> None:
    """The page includes each file of examples/recipes/, and this module runs each."""
    page = (ROOT / "docs" / "recipes.md").read_text()
    files = sorted(p.name for p in RECIPES.glob("*.py"))
    assert len(files) == 5
    for name in files:
        assert f'--8<-- "examples/recipes/{name}"' in page
        assert f'"{name}"' in Path(__file__).read_text()


def test_run_jobs(tmp_path: Path) -> None:
    """Three jobs from the local demo config: outputs and outcomes."""
    config = (ROOT / "examples" / "local.toml").read_text()
    # An owner of its own, so a demo run elsewhere on this machine does not clash.
    config = config.replace('name = "local demo"', 'name = "recipe test"')
    (tmp_path / "config.toml").write_text(config)
    out = _run("run_jobs.py", str(tmp_path / "config.toml"), tmp=tmp_path)
    assert "build: success (exit 0)\n  done\n" in out
    assert "test: failed (exit 1)\n  3 passed\n" in out
    assert "finished: {'cancelled': 0, 'failed': 1, 'success': 2," in out


def test_fleet_under_trio(tmp_path: Path) -> None:
    """A slot on a sandbox instance, under trio."""
    out = _run("fleet_under_trio.py", tmp=tmp_path)
    assert "hello from " in out
    assert "instances: 1" in out


def test_ssh_fleet(tmp_path: Path) -> None:
    """Over SSH to a local sshd instance; the second acquire times out as printed."""
    require_sshd()
    out = _run("ssh_fleet.py", tmp=tmp_path)
    assert " via SSH\n" in out
    assert "as expected: no slot for 'job-2' became ready within 500ms\n" in out


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        (
            "command_streams.py",  # both streams, merged, stdout alone past 5 MB of stderr
            "stdout='out\\n' stderr='err\\n'\nmerged='one\\ntwo\\nthree\\n'\nresult: 42 (exit 0)\n",
        ),
        (
            "planner_what_if.py",  # the planner's answer before and after 09:00 in Berlin
            (
                "07:30 UTC: idle_count 0, provision 0 instance(s)\n"
                "09:00 UTC: idle_count 10, provision 5 instance(s)\n"
            ),
        ),
    ],
)
def test_recipes_print_exactly_what_the_page_shows(name: str, printed: str, tmp_path: Path) -> None:
    """The recipes with a fixed output print it, line for line."""
    assert _run(name, tmp=tmp_path) == printed
