"""`fleetkit` writing to a pipe whose reader has gone: a quiet exit, as Unix tools do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_ROOT = Path(__file__).resolve().parents[2]
_SEED = _ROOT / "examples" / "seed-five-jobs-per-instance.toml"


def test_validate_into_a_closed_pipe_exits_quietly() -> None:
    """`fleetkit validate` whose reader has gone exits with 141 and no traceback on stderr."""
    read, write = os.pipe()
    # The reader is gone before the command writes a byte, as `| head -0` would be.
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fleetkit.cli", "validate", str(_SEED)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_validate_into_head_prints_the_first_line_only() -> None:
    """`fleetkit validate ... | head -n 1` shows the OK line and leaves nothing on stderr."""
    fleetkit = subprocess.Popen(
        [sys.executable, "-m", "fleetkit.cli", "validate", str(_SEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert fleetkit.stdout is not None
    assert fleetkit.stderr is not None
    with fleetkit:
        first = fleetkit.stdout.readline()
        # The reader closes early, as `head` does after its line.
        fleetkit.stdout.close()
        err = fleetkit.stderr.read().decode()
        status = fleetkit.wait(timeout=60)
    assert first.decode().startswith("OK ")
    assert "Traceback" not in err, err
    assert "BrokenPipeError" not in err, err
    assert status in (0, 141)
