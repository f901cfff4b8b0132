"""A clean exit leaves no local instance running, whatever the fleet's settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleetkit.connector.local import LocalConnector
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectorConfig, Limits
from fleetkit.policy import Policy
from fleetkit.provider.local import LocalInstanceGroup
from tests.integration.local_provider_support import leftovers, require_sshd

pytestmark = pytest.mark.integration

OWNER = "clean-exit"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def one_job(root: Path, *, use_sshd: bool) -> None:
    """A fleet with default settings (delete_instances_on_shutdown off) runs one slot."""
    group = LocalInstanceGroup.from_config(
        {"root": str(root), "use_sshd": use_sshd, "max_instances": 2},
        ConnectorConfig(),
        owner=OWNER,
    )
    fleet = Fleet(group, Limits(), Policy(idle_count=1), connector=LocalConnector())
    async with fleet, fleet.acquire("job-1", timeout=30.0):
        pass
    assert not FleetSettings().delete_instances_on_shutdown


@pytest.mark.anyio
@pytest.mark.parametrize("use_sshd", [True, False], ids=["sshd", "sandbox"])
async def test_clean_exit_leaves_nothing_and_next_start_is_quiet(
    use_sshd: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a clean exit no instance process or directory is left, and the next
    start finds nothing 'left by a manager that did not shut down'."""
    if use_sshd:
        require_sshd()
    root = tmp_path / "root"
    await one_job(root, use_sshd=use_sshd)
    assert leftovers(root) == []
    with caplog.at_level(logging.WARNING, logger="fleetkit"):
        await one_job(root, use_sshd=use_sshd)
    assert not [r for r in caplog.records if "did not shut down" in r.getMessage()]
    assert leftovers(root) == []
