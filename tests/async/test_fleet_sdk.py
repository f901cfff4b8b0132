"""The fleet as an embedding program meets it: durations as seconds or timedeltas,
messages that print them as people read them, a slot that always has its connect
info, and a wrong event loop refused once at start."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio.testing

from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import AcquireTimeout, UnsupportedEventLoop
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import ConnectInfo, Duration, Limits
from fleetkit.policy import Policy
from fleetkit.testing.simulated import Delay, SimulatedGroup


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _fleet(max_instances: int = 1, **settings: object) -> tuple[Fleet, SimulatedGroup]:
    group = SimulatedGroup(seed=7, boot=Delay(5, 5), deletion=Delay(1, 1), owner="fleet")
    fleet = Fleet(
        group,
        Limits(max_instances=max_instances),
        Policy(),
        settings=FleetSettings(owner_id="fleet", delete_instances_on_shutdown=True, **settings),  # type: ignore[arg-type]
    )
    return fleet, group


def test_fleet_settings_take_seconds_or_timedeltas() -> None:
    """Every duration setting takes either and stores a Duration."""
    by_seconds = FleetSettings(update_interval=5, shutdown_timeout=90, wake_coalesce=0.5)
    by_timedelta = FleetSettings(
        update_interval=timedelta(seconds=5),
        shutdown_timeout=timedelta(minutes=1, seconds=30),
        wake_coalesce=timedelta(milliseconds=500),
    )
    assert by_seconds == by_timedelta
    assert type(by_timedelta.update_interval) is Duration
    assert str(by_timedelta.shutdown_timeout) == "1m30s"


@pytest.mark.anyio
async def test_acquire_timeout_says_how_long_it_waited() -> None:
    """acquire(timeout=timedelta(milliseconds=500)) on a fleet that cannot grow raises
    AcquireTimeout 'within 500ms' (it said 'within 0s')."""
    fleet, _ = _fleet(max_instances=1)
    async with fleet, fleet.acquire("first"):
        with pytest.raises(AcquireTimeout, match=r"within 500ms$"):
            await fleet.acquire("second", timeout=timedelta(milliseconds=500)).__aenter__()


@pytest.mark.anyio
async def test_a_slot_always_has_its_connect_info() -> None:
    """Without a ready command (nothing fetched it before), the slot's connect info
    is fetched before the block starts."""
    fleet, group = _fleet()
    async with fleet, fleet.acquire("job") as slot:
        info: ConnectInfo = slot.connect_info
        assert info.id == slot.instance_id
    assert group.calls_to("connect_info")


@pytest.mark.anyio
async def test_a_return_inside_acquire_is_the_functions_end() -> None:
    """Acquisition.__aexit__ never swallows an exception and says so (returns None)."""
    fleet, _ = _fleet()

    async def first_instance() -> str:
        async with fleet.acquire("job") as slot:
            return slot.instance_id

    async with fleet:
        assert (await first_instance()).startswith("sim")
        acquisition = fleet.acquire("again")
        await acquisition.__aenter__()
        exited: object = await acquisition.__aexit__(None, None, None)  # type: ignore[func-returns-value]
        assert exited is None


@pytest.mark.anyio
async def test_a_wrong_event_loop_is_refused_once_at_start() -> None:
    """Under trio a fleet with the SSH connector refuses to start: no provider call."""
    group = SimulatedGroup(seed=1)
    fleet = Fleet(group, Limits(), Policy(), connector=SSHConnector())
    with pytest.raises(UnsupportedEventLoop, match="on trio"):
        await fleet.__aenter__()
    assert group.calls == []


def test_fleet_checks_its_arguments() -> None:
    """A wrong limits or settings argument is refused when the fleet is made."""
    group = SimulatedGroup(seed=1)
    with pytest.raises(TypeError, match=r"^Fleet.limits: expected Limits, got dict$"):
        Fleet(group, {"max_instances": 2}, Policy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Fleet.settings: expected FleetSettings"):
        Fleet(group, Limits(), Policy(), settings={"update_interval": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^Fleet.acquire.timeout: expected seconds"):
        Fleet(group, Limits(), Policy()).acquire("k", timeout="5m")  # type: ignore[arg-type]
