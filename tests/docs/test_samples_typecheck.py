"""Every Python sample in docs/ and every program in examples/ passes mypy --strict.

One mypy run over all of them (with the project's config and cache), so the
check stays fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.samples import ROOT, Sample, samples


def test_docs_samples_and_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """A sample that misuses the API (a None it does not handle, a wrong argument)
    fails here with its page and line."""
    found = samples()
    assert len(found) >= 20, "the extractor lost the docs' samples"
    by_file: dict[str, Sample] = {}
    for sample in found:
        path = tmp_path / f"{sample.name}.py"
        path.write_text(sample.module())
        by_file[str(path)] = sample
    examples = sorted(str(p) for p in (ROOT / "examples").rglob("*.py"))
    # In a process of its own: mypy raises the interpreter's recursion limit,
    # which other tests (deeply nested TOML) rely on.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            *by_file,
            *examples,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=600,
    )
    out, err = done.stdout, done.stderr
    if done.returncode != 0:
        lines = []
        for line in out.splitlines():
            file, _, rest = line.partition(":")
            where = by_file.get(file)
            lines.append(f"{where.page} (block at line {where.line}): {rest}" if where else line)
        pytest.fail("mypy --strict on the docs' samples:\n" + "\n".join(lines) + err)
