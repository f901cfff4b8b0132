"""What the `fleetkit` subcommands import: the cheap ones load no event loop or cloud client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_SEED = Path(__file__).resolve().parents[2] / "examples" / "seed-five-jobs-per-instance.toml"

# What the cheap commands must not load: the event loop and the clients that
# only fleet-driving commands need.
_HEAVY = ("anyio", "asyncssh", "aiobotocore", "botocore")


# Plain `validate` builds the providers and connectors a run would use (issue 14),
# so it loads what they need; with --config-only it checks the TOML alone.
@pytest.mark.parametrize(
    "argv", [["validate", "--config-only"], ["plan", "--instances", "2", "--pending", "3"]]
)
def test_cheap_commands_load_no_event_loop_or_cloud_client(argv: list[str]) -> None:
    """`fleetkit validate --config-only` and `fleetkit plan` import no anyio, asyncssh or aiobotocore."""
    script = (
        "import json, sys\n"
        "import fleetkit.cli\n"
        "status = fleetkit.cli.main(sys.argv[1:])\n"
        f"heavy = sorted(m for m in {_HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'status': status, 'heavy': heavy}), file=sys.stderr)\n"
    )
    command, *options = argv
    done = subprocess.run(
        [sys.executable, "-c", script, command, str(_SEED), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["status"] == 0, done.stderr
    assert report["heavy"] == []


def test_every_public_name_of_the_executor_package_resolves() -> None:
    """Each name in `fleetkit.executor.__all__` loads on first use, and `dir()` lists it."""
    import fleetkit.executor

    for name in fleetkit.executor.__all__:
        assert getattr(fleetkit.executor, name) is not None, name
    assert set(fleetkit.executor.__all__) <= set(dir(fleetkit.executor))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = fleetkit.executor.no_such_name
