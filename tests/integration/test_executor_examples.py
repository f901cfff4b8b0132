"""The executor's examples run as documented and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetkit.config import load
from fleetkit.executor import select_runner
from tests.integration.jobs_support import processes_with

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_tmpdir() -> Iterator[Path]:
    """A temp dir of this test's own, for the example's ``$TMPDIR``: the local
    provider's default root is ``$TMPDIR/fleetkit-local-OWNER``, and the
    example's owner is fixed, so two suites on one machine would share it.
    Under the system temp dir and 0711 (not pytest's 0700 tmp_path): the
    instances' login users must reach their work dirs below it."""
    path = Path(tempfile.mkdtemp(prefix="fk-embed-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embed_example_runs_four_jobs_on_two_instances(private_tmpdir: Path) -> None:
    """examples/embed.py runs its four jobs, two per instance, and deletes the instances."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embed.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TMPDIR": str(private_tmpdir)},
    )
    assert done.returncode == 0, done.stderr
    finished = [line for line in done.stdout.splitlines() if line.startswith("--- hello")]
    assert len(finished) == 4
    assert all(": success on local-" in line for line in finished)
    instances = {line.split(" on ")[1].split()[0] for line in finished}
    assert len(instances) == 2
    assert all(processes_with(i) == [] for i in instances)
    # Its root (and the owner dir in it) is gone again: nothing left behind.
    assert list(private_tmpdir.iterdir()) == []


def test_local_example_config_is_the_documented_fleet() -> None:
    """examples/local.toml: local provider, capacity 2, idle_count 1 for 1m, max 4 instances."""
    _, _, auto = select_runner(load(ROOT / "examples" / "local.toml"), None)
    limits = auto.limits()
    (policy,) = auto.schedule().policies
    assert auto.plugin == "local"
    assert (limits.capacity_per_instance, limits.max_instances) == (2, 4)
    assert (policy.idle_count, policy.idle_time.total_seconds()) == (1, 60)
    assert auto.delete_instances_on_shutdown
