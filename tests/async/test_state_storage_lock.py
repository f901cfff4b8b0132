"""Two fleets never share one state table by accident (issue 10, item 19)."""

from __future__ import annotations

from pathlib import Path

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.errors import StateStoreError
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import Limits
from fleetkit.policy import Policy
from fleetkit.testing.simulated import SimulatedGroup

FAST = FleetSettings(update_interval=10.0, update_interval_when_expecting=1.0)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_a_second_fleet_on_the_same_state_storage_is_refused(tmp_path: Path) -> None:
    """The second fleet fails to start naming state.json; the first runs on, and after it
    closes the table is free again."""
    settings = attrs.evolve(FAST, state_storage_dir=tmp_path, owner_id="same-url-and-token")
    # The group stamps the fleet's owner id, as provider.load(owner=...) does: an
    # instance with another owner's tag is never used (issue 13).
    first_group = SimulatedGroup(owner="same-url-and-token")
    second_group = SimulatedGroup(owner="same-url-and-token")
    async with Fleet(first_group, Limits(), Policy(idle_count=1), settings=settings) as first:
        with pytest.raises(StateStoreError, match=r"state\.json: in use by another fleet \(pid "):
            async with Fleet(second_group, Limits(), Policy(idle_count=1), settings=settings):
                pass  # pragma: no cover - never entered
        assert second_group.calls_to("increase") == []
        async with first.acquire("job", timeout=30.0) as slot:
            assert slot.instance_id
        await anyio.sleep(1.0)
    async with Fleet(SimulatedGroup(), Limits(), Policy(), settings=settings):
        pass
