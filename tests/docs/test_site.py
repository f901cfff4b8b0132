"""The docs site builds with mkdocs --strict: a broken link, a missing anchor, a page
left out of the nav or a reference to an object that no longer exists fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.samples import ROOT
from tests.support import require_module

pytestmark = pytest.mark.integration


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",  # not with -q, which hides the warnings strict mode counts
            "-f",
            str(config),
            "-d",
            str(site),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=config.parent,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_the_docs_site_builds_strict(tmp_path: Path) -> None:
    """Every page, the recipes and the API reference from the docstrings, no warning."""
    require_module("mkdocstrings", "pip install -e '.[test]'")
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    reference = (tmp_path / "site" / "reference" / "fleet" / "index.html").read_text()
    assert 'id="fleetkit.fleet.Fleet"' in reference
    assert (tmp_path / "site" / "search" / "search_index.json").exists()


def test_a_broken_link_or_a_stale_reference_fails_the_build(tmp_path: Path) -> None:
    """The same settings on a planted site: each defect is reported and fails it."""
    require_module("mkdocstrings", "pip install -e '.[test]'")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# A\n\n[gone](b.md#no-such-heading), [missing](nowhere.md), "
        "[Gone][fleetkit.fleet.NoSuchThing]\n\n::: fleetkit.model.Duration\n"
    )
    (docs / "b.md").write_text("# B\n")
    (docs / "left-out.md").write_text("# not in the nav\n")
    config = (ROOT / "mkdocs.yml").read_text()
    head, _, _ = config.partition("\nnav:")
    config = head.replace("paths: [src]", f"paths: [{ROOT / 'src'}]").replace(
        "docs/_griffe/roles.py", str(ROOT / "docs" / "_griffe" / "roles.py")
    )
    (tmp_path / "mkdocs.yml").write_text(config + "\nnav:\n  - index.md\n  - b.md\n")
    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "does not contain an anchor '#no-such-heading'" in output
    assert "nowhere.md" in output
    assert "fleetkit.fleet.NoSuchThing" in output
    assert "left-out.md" in output
