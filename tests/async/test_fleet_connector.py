"""Ready-up and heartbeats over a scripted connector, in trio's virtual time."""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.connector import CommandResult
from fleetkit.errors import ConfigError, ConnectTimeout
from fleetkit.fleet import Fleet, FleetSettings, InstanceFailed
from fleetkit.model import ConnectInfo, InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import Delay, SimulatedGroup

READY_COMMAND = "cloud-init status --wait"
SETTINGS = FleetSettings(
    update_interval=10.0,
    update_interval_when_expecting=1.0,
    instance_ready_command=READY_COMMAND,
    ready_command_timeout=60.0,
    ready_backoff_initial=10.0,
    ready_backoff_max=80.0,
)
ONE_IDLE = Policy(idle_count=1, idle_time=timedelta(minutes=10))
NO_IDLE = Policy(idle_count=0, idle_time=timedelta(minutes=10))


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def test_ready_command_needs_a_connector() -> None:
    """A ready command without a connector is refused at construction, naming the setting."""
    with pytest.raises(ConfigError, match="instance_ready_command: is set but the fleet"):
        Fleet(SimulatedGroup(), Limits(), ONE_IDLE, settings=SETTINGS)


@pytest.mark.anyio
async def test_instance_takes_work_only_after_the_ready_command() -> None:
    """The ready command runs once per new instance, and no slot is granted before it ends."""
    connector = FakeConnector()
    connector.on(READY_COMMAND, CommandResult(0, b"status: done\n", b""), delay=40.0)
    group = SimulatedGroup(boot=Delay(5.0, 5.0))
    async with Fleet(group, Limits(), ONE_IDLE, connector=connector, settings=SETTINGS) as fleet:
        started = anyio.current_time()
        async with fleet.acquire("job", timeout=120.0) as slot:
            waited = anyio.current_time() - started
        assert 45.0 <= waited <= 47.0
        assert connector.commands(slot.instance_id) == [READY_COMMAND]
        ready_hist = fleet.stats().histograms["instance_readiness_time_seconds"]
        assert ready_hist.count >= 1


@pytest.mark.anyio
async def test_failed_ready_up_removes_the_instance_and_backs_off() -> None:
    """A non-zero ready command removes the instance; repeated failures double the pause
    before the next scale-up."""
    connector = FakeConnector()
    connector.on(READY_COMMAND, CommandResult(1, b"", b"cloud-init failed"), times=4)
    group = SimulatedGroup(boot=Delay(2.0, 2.0), deletion=Delay(1.0, 1.0))
    fleet = Fleet(group, Limits(), NO_IDLE, connector=connector, settings=SETTINGS)
    async with fleet, fleet.events() as stream:
        async with fleet.acquire("job", timeout=600.0) as slot:
            assert slot.instance_id == "sim-00005"
        failures = []
        for _ in range(100):
            event = stream.receive_nowait()
            if isinstance(event, InstanceFailed):
                failures.append(event.reason)
            if len(failures) == 4:
                break
    assert all("command exited with 1" in reason for reason in failures)
    increases = [c.at for c in group.calls_to("increase")]
    failed_at = [increase + 2.0 for increase in increases]
    # Each failure is seen when the instance boots (2s); the next increase waits
    # 10, 20, 40, 80 seconds after it.
    pauses = [round(b - a) for a, b in zip(failed_at, increases[1:], strict=False)]
    assert pauses == [10, 20, 40, 80]
    assert [c.args[0] for c in group.calls_to("decrease")][:4] == [
        (f"sim-0000{n}",) for n in range(1, 5)
    ]


@pytest.mark.anyio
async def test_ready_command_timeout_counts_as_failure() -> None:
    """A ready command running past ready_command_timeout fails ready-up."""
    connector = FakeConnector()
    connector.on(READY_COMMAND, CommandResult(0, b"", b""), delay=500.0, times=1)
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    fleet = Fleet(group, Limits(), NO_IDLE, connector=connector, settings=SETTINGS)
    async with fleet, fleet.acquire("job", timeout=600.0) as slot:
        assert slot.instance_id == "sim-00002"
    first = group.calls_to("decrease")[0]
    assert first.args == (("sim-00001",),)
    assert first.at == pytest.approx(group.calls_to("increase")[0].at + 61.0, abs=0.1)


@pytest.mark.anyio
async def test_heartbeat_failures_make_an_instance_unhealthy() -> None:
    """Failed heartbeats count toward failure_threshold; the instance is then replaced."""
    connector = FakeConnector()
    group = SimulatedGroup(boot=Delay(1.0, 1.0))
    settings = attrs.evolve(
        SETTINGS, instance_ready_command=None, heartbeat_interval=30.0, heartbeat_timeout=5.0
    )
    limits = Limits(failure_threshold=2)
    async with Fleet(group, limits, ONE_IDLE, connector=connector, settings=settings) as fleet:
        await anyio.sleep(10.0)
        first = fleet.snapshot().instances[0].id
        connector.fail_connect(first, ConnectTimeout(f"{first}: no route"), times=2)
        await anyio.sleep(100.0)
        states = {i.id: i.state for i in fleet.snapshot().instances}
        assert first not in states or states[first] is not InstanceState.READY
        assert InstanceState.READY in states.values()
        assert connector.connects.count(first) == 2
        assert connector.commands(first) == []
    assert group.calls_to("decrease")[0].args == ((first,),)


class _SecretGroup(SimulatedGroup):
    """Hands out connect info carrying a password and a private key."""

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        info = await super().connect_info(instance_id)
        return attrs.evolve(info, password="hunter2-password", key=b"PRIVATE-KEY-hunter2")


@pytest.mark.anyio
async def test_no_secret_reaches_logs_events_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    """Passwords and keys in connect info appear in no log record, event or repr."""
    caplog.set_level(logging.DEBUG, logger="fleetkit")
    connector = FakeConnector()
    connector.on(READY_COMMAND, CommandResult(1, b"", b"boom"), times=1)
    group = _SecretGroup(boot=Delay(1.0, 1.0))
    seen: list[str] = []
    fleet = Fleet(group, Limits(), ONE_IDLE, connector=connector, settings=SETTINGS)
    async with fleet, fleet.events() as stream:
        async with fleet.acquire("job", timeout=600.0) as slot:
            assert slot.connect_info is not None
            assert slot.connect_info.password == "hunter2-password"
            seen += [repr(slot), repr(slot.connect_info), repr(fleet), repr(fleet.snapshot())]
        for _ in range(1000):
            try:
                seen.append(repr(stream.receive_nowait()))
            except anyio.WouldBlock:
                break
    seen += [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    assert any("ready-up" in text for text in seen)
    assert not [text for text in seen if "hunter2" in text]
