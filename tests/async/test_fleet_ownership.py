"""Issue 13's defects in trio's virtual time: foreign instances, instances of unknown
past, heartbeats before hand-out (FF_USE_FLEETING_ACQUIRE_HEARTBEATS)."""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.connector import CommandResult
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.model import InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.testing.connector import FakeConnector
from fleetkit.testing.simulated import Delay, SimulatedGroup

OURS = "fleet-ours"
SETTINGS = FleetSettings(
    update_interval=10.0,
    update_interval_when_expecting=1.0,
    delete_instances_on_shutdown=True,
    shutdown_deletion_interval=1.0,
    owner_id=OURS,
)
ONE_IDLE = Policy(idle_count=1, idle_time=timedelta(minutes=10))


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _decreased(group: SimulatedGroup) -> set[str]:
    return {i for c in group.calls_to("decrease") for i in c.args[0]}  # type: ignore[attr-defined]


def _left_alone(caplog: pytest.LogCaptureFixture, instance_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"leaving instance {instance_id} alone")
    ]


@pytest.mark.anyio
async def test_foreign_instances_are_never_drained_used_or_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another owner's instance, present at start or appearing mid-run, gets no job, no
    drain and no decrease, shutdown included; the log says so once per instance."""
    caplog.set_level(logging.INFO, logger="fleetkit.fleet")
    group = SimulatedGroup(owner=OURS, boot=Delay(2.0, 2.0), deletion=Delay(1.0, 1.0))
    group.add_existing("theirs-at-start", owner="fleet-theirs")
    async with Fleet(group, Limits(), ONE_IDLE, settings=SETTINGS) as fleet:
        await anyio.sleep(30.0)
        group.add_existing("theirs-mid-run", owner="fleet-theirs")
        await anyio.sleep(30.0)
        seen = set()
        for n in range(3):
            async with fleet.acquire(f"job-{n}", timeout=60.0) as slot:
                seen.add(slot.instance_id)
        assert not {"theirs-at-start", "theirs-mid-run"} & seen
        assert not {"theirs-at-start", "theirs-mid-run"} & set(fleet.snapshot().by_id())
    assert not {"theirs-at-start", "theirs-mid-run"} & _decreased(group)
    assert {"theirs-at-start", "theirs-mid-run"} <= set(group.live_ids())
    ours = set(group.live_ids()) - {"theirs-at-start", "theirs-mid-run"}
    assert ours == set()
    for instance_id in ("theirs-at-start", "theirs-mid-run"):
        (line,) = _left_alone(caplog, instance_id)
        assert "'fleet-theirs', not this fleet's 'fleet-ours'" in line


@pytest.mark.anyio
async def test_tag_only_instance_is_removed_when_uses_are_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """max_use_count 1 and no state storage: an instance proven ours only by its tag may
    have run a job already, so it is removed (with its reason) and the job gets a new one."""
    caplog.set_level(logging.INFO, logger="fleetkit.fleet")
    group = SimulatedGroup(owner=OURS, boot=Delay(2.0, 2.0), deletion=Delay(1.0, 1.0))
    group.add_existing("used-before", owner=OURS)
    limits = Limits(max_use_count=1)
    fleet = Fleet(group, limits, ONE_IDLE, settings=SETTINGS)
    async with fleet, fleet.acquire("job", timeout=60.0) as slot:
        assert slot.instance_id != "used-before"
    assert "used-before" in _decreased(group)
    reasons = [r.getMessage() for r in caplog.records if "used-before" in r.getMessage()]
    assert any("its use count is unknown and max_use_count is 1" in m for m in reasons)


@pytest.mark.anyio
async def test_tag_only_instance_is_adopted_after_ready_up_when_use_is_unlimited() -> None:
    """With unlimited use, a tag-proven instance is adopted, but takes work only once its
    ready-up succeeded; one whose ready-up fails is removed."""
    connector = FakeConnector()
    connector.on("ready", CommandResult(1, b"", b"broken"), instance_id="broken-one")
    connector.on("ready", CommandResult(0, b"", b""), instance_id="good-one", delay=20.0)
    group = SimulatedGroup(owner=OURS, boot=Delay(2.0, 2.0), deletion=Delay(1.0, 1.0))
    group.add_existing("good-one", owner=OURS)
    group.add_existing("broken-one", owner=OURS)
    settings = attrs.evolve(SETTINGS, instance_ready_command="ready")
    policy = Policy(idle_count=0, idle_time=timedelta(minutes=10))
    async with Fleet(group, Limits(), policy, connector=connector, settings=settings) as fleet:
        started = anyio.current_time()
        async with fleet.acquire("job", timeout=60.0) as slot:
            assert slot.instance_id == "good-one"
            assert anyio.current_time() - started >= 20.0
        assert "broken-one" in _decreased(group)
        assert "good-one" not in _decreased(group)


@pytest.mark.anyio
async def test_acquire_heartbeat_checks_before_hand_out_and_skips_a_failing_instance() -> None:
    """acquire_heartbeats: each hand-out heartbeats first (the provider's verb and the
    command over the connector); a failing instance is skipped and counts failures until
    unhealthy, and then gets no slot at all; heartbeats also run every interval."""
    connector = FakeConnector()
    group = SimulatedGroup(owner=OURS, boot=Delay(2.0, 2.0), deletion=Delay(1.0, 1.0))
    settings = attrs.evolve(
        SETTINGS, acquire_heartbeats=True, heartbeat_interval=300.0, heartbeat_timeout=5.0
    )
    limits = Limits(capacity_per_instance=2, failure_threshold=2)
    policy = Policy(idle_count=4, idle_time=timedelta(hours=1))
    async with Fleet(group, limits, policy, connector=connector, settings=settings) as fleet:
        await anyio.sleep(30.0)
        first, second = sorted(
            (i for i in fleet.snapshot().instances), key=lambda i: (i.ready_at, i.id)
        )
        connector.on("exit 0", CommandResult(1, b"", b""), instance_id=first.id)
        async with fleet.acquire("job-1", timeout=60.0) as slot:
            assert slot.instance_id == second.id
        assert fleet.snapshot().by_id()[first.id].health_failures == 1
        async with fleet.acquire("job-2", timeout=60.0) as slot:
            assert slot.instance_id == second.id
        # Past failure_threshold: unhealthy slots are not given out (nor checked again).
        assert fleet.stats().tasks["unhealthy"] == 2
        checks = len(connector.commands(first.id))
        async with fleet.acquire("job-3", timeout=60.0) as slot:
            assert slot.instance_id != first.id
        assert len(connector.commands(first.id)) == checks
        assert group.calls_to("heartbeat")
        before = len(group.calls_to("heartbeat"))
        await anyio.sleep(301.0)
        assert len(group.calls_to("heartbeat")) > before
        states = {i.id: i.state for i in fleet.snapshot().instances}
        assert states.get(first.id) is not InstanceState.READY
