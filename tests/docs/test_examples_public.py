"""The examples and the docs use fleetkit's public names only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.samples import DOCS, ROOT

PRIVATE = re.compile(r"\bfleetkit(?:\.\w+)*\._\w+")
# Notes for maintainers (which generator keeps a table in step) are not for readers.
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "examples").rglob("*.py"), *DOCS.rglob("*.md")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_private_module_is_used(path: Path) -> None:
    """No example imports, and no page points readers at, a private fleetkit module."""
    assert PRIVATE.findall(COMMENT.sub("", path.read_text())) == []
