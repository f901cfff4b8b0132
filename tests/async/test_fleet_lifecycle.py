"""Fleet start, storage and deletion rules: adoption, state files, retries, re-checks."""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.errors import AcquireTimeout, FleetError, RetryLater
from fleetkit.fleet import Fleet, FleetSettings
from fleetkit.fleet._state_store import StateStore, StoredInstance
from fleetkit.fleet._table import (
    TRANSITIONS,
    LifecycleError,
    Record,
    Trigger,
    render_table,
    transition,
)
from fleetkit.model import ConnectInfo, InstanceState, Limits
from fleetkit.policy import Policy
from fleetkit.testing.simulated import Delay, Faults, SimulatedGroup

FAST = FleetSettings(update_interval=10.0, update_interval_when_expecting=1.0)
IDLE0 = Policy(idle_count=0, idle_time=timedelta(minutes=5))


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def test_lifecycle_table_only_moves_forward() -> None:
    """Every transition in the table leads to the same or a later state; DELETED is final."""
    order = list(InstanceState)
    for state, moves in TRANSITIONS.items():
        for trigger, target in moves.items():
            assert order.index(target) >= order.index(state), (state, trigger)
    record = Record("i-1", InstanceState.DELETED, 0.0)
    with pytest.raises(LifecycleError, match="no transition from deleted on seen running"):
        transition(record, Trigger.SEEN_RUNNING)


def test_docs_show_the_lifecycle_table_as_it_is() -> None:
    """docs/fleet.md carries the transition table exactly as the code defines it."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"
    assert render_table() in docs.read_text()


def test_state_store_is_atomic_and_private(tmp_path: Path) -> None:
    """The state file is written 0600 through a rename, and read back as written."""
    store = StateStore(tmp_path / "state")
    assert store.load() == {}
    entry = StoredInstance(id="i-1", owner="me", use_count=3, acquisitions={0: "job-7"})
    store.save({"i-1": entry})
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["state.json", "state.lock"]
    assert store.load() == {"i-1": entry}
    store.path.write_text("{not json")
    with pytest.raises(FleetError, match=r"state\.json: not a fleetkit state file"):
        store.load()


@pytest.mark.anyio
async def test_start_adopts_proven_idle_instances_and_removes_the_rest(tmp_path: Path) -> None:
    """At start: stored or tagged idle instances are adopted; unknown or busy ones removed;
    another owner's instance is left alone (issue 13: it used to be removed)."""
    StateStore(tmp_path).save(
        {
            "stored-idle": StoredInstance(
                id="stored-idle", owner=None, use_count=2, acquisitions={}
            ),
            "stored-busy": StoredInstance(
                id="stored-busy", owner=None, use_count=1, acquisitions={0: "job-1"}
            ),
        }
    )
    group = SimulatedGroup(deletion=Delay(1.0, 1.0))
    for instance_id, owner in [
        ("stored-idle", None),
        ("stored-busy", None),
        ("tagged", "fleet-a"),
        ("stranger", "fleet-b"),
        ("untagged", None),
    ]:
        group.add_existing(instance_id, owner=owner)
    settings = attrs.evolve(FAST, state_storage_dir=tmp_path, owner_id="fleet-a")
    policy = Policy(idle_count=2, idle_time=timedelta(minutes=5))
    async with Fleet(group, Limits(), policy, settings=settings) as fleet:
        await anyio.sleep(5.0)
        snapshot = fleet.snapshot().by_id()
        assert snapshot["stored-idle"].state is InstanceState.READY
        assert snapshot["stored-idle"].use_count == 2
        assert snapshot["tagged"].state is InstanceState.READY
        removed = {i for c in group.calls_to("decrease") for i in c.args[0]}  # type: ignore[attr-defined]
        assert removed == {"stored-busy", "untagged"}
        assert "stranger" not in snapshot
        assert group.calls_to("increase") == []
    stored = json.loads((tmp_path / "state.json").read_text())
    assert set(stored["instances"]) == {"stored-idle", "tagged"}


@pytest.mark.anyio
async def test_keep_instance_with_acquisitions(tmp_path: Path) -> None:
    """keep_instance_with_acquisitions adopts an instance restored with acquisitions."""
    StateStore(tmp_path).save(
        {"busy": StoredInstance(id="busy", owner=None, use_count=1, acquisitions={0: "j"})}
    )
    group = SimulatedGroup()
    group.add_existing("busy")
    settings = attrs.evolve(FAST, state_storage_dir=tmp_path, keep_instance_with_acquisitions=True)
    fleet = Fleet(group, Limits(), Policy(idle_count=1), settings=settings)
    async with fleet, fleet.acquire("job", timeout=5.0) as slot:
        assert slot.instance_id == "busy"
    assert group.calls_to("decrease") == []


@pytest.mark.anyio
async def test_failed_deletions_are_retried_after_the_interval() -> None:
    """A decrease that fails is re-issued after deletion_retry_interval, not sooner."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0), deletion=Delay(1.0, 1.0))
    settings = attrs.evolve(FAST, deletion_retry_interval=30.0)
    async with Fleet(group, Limits(), IDLE0, settings=settings) as fleet:
        async with fleet.acquire("job", timeout=10.0):
            pass
        group.faults = Faults(decrease_error=1.0)
        await anyio.sleep(301.0)
        first = group.calls_to("decrease")
        assert len(first) == 1
        group.faults = Faults()
        await anyio.sleep(40.0)
        calls = group.calls_to("decrease")
        assert len(calls) == 2
        assert calls[1].at - calls[0].at == pytest.approx(30.0)
        await anyio.sleep(5.0)
        assert fleet.snapshot().instances == ()


@pytest.mark.anyio
async def test_deletion_with_no_effect_is_reissued() -> None:
    """An accepted decrease that leaves the instance running is issued again after the interval."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0), deletion=Delay(1.0, 1.0))
    settings = attrs.evolve(FAST, deletion_retry_interval=20.0)
    async with Fleet(group, Limits(), IDLE0, settings=settings) as fleet:
        async with fleet.acquire("job", timeout=10.0):
            pass
        group.faults = Faults(decrease_ignored=1.0)
        await anyio.sleep(345.0)
        calls = group.calls_to("decrease")
        assert [round(b.at - a.at) for a, b in itertools.pairwise(calls)] == [20, 20]
        group.faults = Faults()
        await anyio.sleep(25.0)
        assert fleet.snapshot().instances == ()


class _RacingGroup(SimulatedGroup):
    """Tries to acquire a slot at the moment the fleet calls decrease."""

    fleet: Fleet | None = None
    racer_got: list[str] = []
    busy_at_decrease: list[int] = []

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        assert self.fleet is not None
        by_id = self.fleet.snapshot().by_id()
        self.busy_at_decrease += [by_id[i].acquired for i in ids if i in by_id]
        try:
            async with self.fleet.acquire(f"racer-{len(self.calls)}", timeout=0.0) as slot:
                self.racer_got.append(slot.instance_id)
        except AcquireTimeout:
            pass
        return await super().decrease(ids)


@pytest.mark.anyio
async def test_removal_marks_draining_so_no_job_lands_before_decrease() -> None:
    """An acquire racing a removal never lands on the instance being deleted."""
    group = _RacingGroup(boot=Delay(1.0, 1.0), deletion=Delay(50.0, 50.0))
    group.racer_got, group.busy_at_decrease = [], []
    async with Fleet(group, Limits(), IDLE0, settings=FAST) as fleet:
        group.fleet = fleet
        async with fleet.acquire("first", timeout=10.0) as slot:
            old = slot.instance_id
        await anyio.sleep(400.0)
    assert [c.args for c in group.calls_to("decrease")] == [((old,),)]
    assert group.busy_at_decrease == [0]
    assert old not in group.racer_got


@pytest.mark.anyio
async def test_a_started_fleet_cannot_be_entered_again() -> None:
    """Entering the same Fleet twice is refused with a FleetError."""
    group = SimulatedGroup()
    fleet = Fleet(group, Limits(), IDLE0, settings=FAST)
    async with fleet:
        with pytest.raises(FleetError, match="cannot be entered twice"):
            await fleet.__aenter__()
    assert group.calls[-1].verb == "shutdown"
    assert [c.verb for c in group.calls].count("init") == 1


class _SlowToDescribe(SimulatedGroup):
    """connect_info answers RetryLater ``failures`` times per instance, as AWS does
    for an instance DescribeInstances does not show yet."""

    failures = 2
    asked: dict[str, int]

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        self.asked[instance_id] = self.asked.get(instance_id, 0) + 1
        if self.asked[instance_id] <= self.failures:
            raise RetryLater(f"{instance_id} not visible yet")
        return await super().connect_info(instance_id)


@pytest.mark.anyio
async def test_connect_info_retry_later_is_retried_not_fatal() -> None:
    """RetryLater from connect_info delays ready-up; only a persistent one fails it."""
    group = _SlowToDescribe(boot=Delay(1.0, 1.0))
    group.asked = {}
    async with Fleet(group, Limits(), Policy(idle_count=1), settings=FAST) as fleet:
        async with fleet.acquire("job", timeout=60.0) as slot:
            assert group.asked[slot.instance_id] == 3
        assert group.calls_to("decrease") == []

    group = _SlowToDescribe(boot=Delay(1.0, 1.0))
    group.asked, group.failures = {}, 1000
    async with Fleet(group, Limits(), Policy(idle_count=1), settings=FAST):
        await anyio.sleep(60.0)
    first = group.calls_to("decrease")[0]
    assert first.args == (("sim-00001",),)
    assert group.asked["sim-00001"] == 7


def test_settings_reject_bad_values_naming_the_setting() -> None:
    """FleetSettings names the setting and the expectation for each bad value."""
    with pytest.raises(ValueError, match=r"^FleetSettings\.update_interval: must be > 0s, got 0s$"):
        FleetSettings(update_interval=0)
    with pytest.raises(
        ValueError, match=r"ready_backoff_max \(5s\) must be >= ready_backoff_initial \(10s\)"
    ):
        FleetSettings(ready_backoff_initial=10.0, ready_backoff_max=5.0)
    assert FleetSettings(state_storage_dir="/tmp/x").state_storage_dir == Path("/tmp/x")


def test_a_no_op_trigger_keeps_the_cached_frozen_copy() -> None:
    """A sighting that does not move the record (running seen running) keeps its frozen
    Instance, so a poll does not make the next snapshot rebuild every record."""
    record = Record("i-1", InstanceState.CREATING, 0.0)
    transition(record, Trigger.SEEN_RUNNING)
    frozen = record.freeze()
    assert transition(record, Trigger.SEEN_RUNNING) is InstanceState.RUNNING
    assert record.freeze() is frozen
    transition(record, Trigger.DRAIN)
    assert record.freeze() is not frozen
