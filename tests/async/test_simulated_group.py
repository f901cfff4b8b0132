"""The simulated instance group: delays, faults, determinism and call records, in virtual time."""

from __future__ import annotations

import anyio
import attrs
import pytest
import trio.testing

from fleetkit.errors import InstanceNotFound, ProviderError, RetryLater, Throttled
from fleetkit.model import ProviderState
from fleetkit.provider._protocol import InstanceGroup
from fleetkit.testing.simulated import Delay, Faults, SimulatedGroup


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def _states(statuses: object) -> dict[str, ProviderState]:
    assert isinstance(statuses, list | tuple)
    return {s.id: s.state for s in statuses}


def test_satisfies_the_protocol() -> None:
    """A SimulatedGroup is an InstanceGroup as far as the runtime check can tell."""
    assert isinstance(SimulatedGroup(), InstanceGroup)


@pytest.mark.anyio
async def test_instances_boot_and_delete_after_their_delays() -> None:
    """New instances are creating until the boot delay passes, then running; deletion takes its delay."""
    group = SimulatedGroup(boot=Delay(10.0, 10.0), deletion=Delay(5.0, 5.0))
    await group.init()
    assert await group.increase(2) == 2
    states = _states(await group.update())
    assert list(states.values()) == [ProviderState.CREATING] * 2
    await anyio.sleep(10.0)
    states = _states(await group.update())
    assert list(states.values()) == [ProviderState.RUNNING] * 2
    first = next(iter(states))
    assert list(await group.decrease([first])) == [first]
    assert _states(await group.update())[first] is ProviderState.DELETING
    await anyio.sleep(5.0)
    assert _states(await group.update())[first] is ProviderState.DELETED
    assert first not in _states(await group.update())


@pytest.mark.anyio
async def test_same_seed_same_run() -> None:
    """Two groups with one seed and the same calls produce the same timelines."""

    async def run(seed: int) -> list[tuple[str, ProviderState]]:
        group = SimulatedGroup(seed=seed, faults=Faults(increase_shortfall=0.5, death=0.3))
        await group.init()
        start = anyio.current_time()
        for _ in range(5):
            await group.increase(4)
        seen = []
        for _ in range(30):
            await anyio.sleep_until(start + 60.0)
            start += 60.0
            seen += sorted((s.id, s.state) for s in await group.update())
        return seen

    assert await run(7) == await run(7)
    assert await run(7) != await run(8)


@pytest.mark.anyio
async def test_increase_never_exceeds_max_size() -> None:
    """increase accepts only what fits under max_size, counting live instances."""
    group = SimulatedGroup(max_size=3, boot=Delay(1.0, 1.0), deletion=Delay(1.0, 1.0))
    await group.init()
    assert await group.increase(5) == 3
    assert await group.increase(1) == 0
    await group.decrease(group.live_ids()[:1])
    await anyio.sleep(2.0)
    assert await group.increase(5) == 1


@pytest.mark.anyio
async def test_faults_raise_translated_errors_and_can_change_mid_test() -> None:
    """Injected failures raise fleetkit errors; assigning new faults takes effect at once."""
    group = SimulatedGroup(faults=Faults(increase_error=1.0, update_error=1.0))
    await group.init()
    with pytest.raises(RetryLater):
        await group.increase(1)
    with pytest.raises(RetryLater):
        await group.update()
    group.faults = attrs.evolve(group.faults, increase_error=0.0, update_error=0.0)
    assert await group.increase(1) == 1
    group.faults = Faults(throttle=1.0)
    with pytest.raises(Throttled):
        await group.update()
    group.faults = Faults(decrease_error=1.0)
    with pytest.raises(RetryLater):
        await group.decrease(group.live_ids())


@pytest.mark.anyio
async def test_shortfall_and_ignored_decrease_are_partial_not_errors() -> None:
    """With shortfall faults increase accepts fewer; ignored decreases are left out of the result."""
    group = SimulatedGroup(seed=3, faults=Faults(increase_shortfall=1.0))
    await group.init()
    accepted = [await group.increase(4) for _ in range(10)]
    assert all(0 <= a < 4 for a in accepted)
    assert len(group.live_ids()) == sum(accepted)
    group.faults = Faults(decrease_ignored=1.0)
    assert list(await group.decrease(group.live_ids())) == []
    assert len(group.live_ids()) == sum(accepted)


@pytest.mark.anyio
async def test_stuck_and_dying_instances() -> None:
    """Stuck instances stay creating forever; dying ones are reported deleted within death_within."""
    group = SimulatedGroup(boot=Delay(1.0, 1.0), faults=Faults(stuck_creating=1.0))
    await group.init()
    await group.increase(2)
    await anyio.sleep(86400.0)
    assert set(_states(await group.update()).values()) == {ProviderState.CREATING}

    group = SimulatedGroup(boot=Delay(1.0, 1.0), faults=Faults(death=1.0, death_within=100.0))
    await group.init()
    await group.increase(3)
    await anyio.sleep(102.0)
    assert set(_states(await group.update()).values()) == {ProviderState.DELETED}
    assert group.live_ids() == []


@pytest.mark.anyio
async def test_decrease_is_idempotent_and_kill_is_seen() -> None:
    """Deleting an id twice or an unknown id counts as removed; kill makes an instance vanish."""
    group = SimulatedGroup(boot=Delay(0.0, 0.0))
    await group.init()
    await group.increase(2)
    a, b = group.live_ids()
    assert list(await group.decrease([a, "nope"])) == [a, "nope"]
    assert list(await group.decrease([a])) == [a]
    group.kill(b)
    assert _states(await group.update())[b] is ProviderState.DELETED
    with pytest.raises(InstanceNotFound):
        await group.connect_info(b)
    with pytest.raises(InstanceNotFound):
        await group.heartbeat(b)


@pytest.mark.anyio
async def test_records_every_call_and_refuses_after_shutdown() -> None:
    """Each verb is recorded with time and outcome; verbs before init or after shutdown fail."""
    group = SimulatedGroup(boot=Delay(0.0, 0.0))
    with pytest.raises(ProviderError):
        await group.update()
    await group.init()
    await group.increase(1)
    info = await group.connect_info(group.live_ids()[0])
    assert info.internal_addr == "10.0.0.1"
    await group.shutdown()
    await group.shutdown()
    with pytest.raises(ProviderError):
        await group.increase(1)
    verbs = [c.verb for c in group.calls]
    assert verbs == [
        "update",
        "init",
        "increase",
        "connect_info",
        "shutdown",
        "shutdown",
        "increase",
    ]
    assert group.calls_to("increase")[0].outcome == "1"
    assert group.calls_to("update")[0].outcome == "ProviderError"


@pytest.mark.anyio
async def test_existing_instances_carry_their_owner() -> None:
    """Instances added as pre-existing are reported with the owner given."""
    group = SimulatedGroup()
    group.add_existing("old-1", owner="me")
    group.add_existing("old-2", owner=None, running=False)
    await group.init()
    statuses = {s.id: s for s in await group.update()}
    assert statuses["old-1"].owner == "me"
    assert statuses["old-1"].state is ProviderState.RUNNING
    assert statuses["old-2"].state is ProviderState.CREATING


def test_bad_fault_values_are_rejected() -> None:
    """A probability outside [0, 1] or an inverted delay is a clear error."""
    with pytest.raises(ValueError, match=r"Faults\.death"):
        Faults(death=1.5)
    with pytest.raises(ValueError, match="low <= high"):
        Delay(5.0, 1.0)
