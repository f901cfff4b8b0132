"""The nesting daemon's semantics (NestingService) in virtual time, over the memory hypervisor.

No gRPC here (the integration tests cover the wire): the service is anyio
code, so it runs under trio's MockClock, and a hypothesis state machine checks
GitLab's slot rules against a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.from_thread
import pytest
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fleetkit.errors import ConfigError, HypervisorError
from fleetkit.nesting._service import (
    AlreadyInitializedError,
    NestingService,
    NoSuchVM,
    NotInitializedError,
)
from fleetkit.testing.nesting import MemoryHypervisor


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_the_gate_and_a_failed_init() -> None:
    hypervisor = MemoryHypervisor()
    service = NestingService(hypervisor)
    for call in (service.list, service.shutdown, lambda: service.create("default", 0)):
        with pytest.raises(NotInitializedError):
            await call()
    with pytest.raises(NotInitializedError):
        await service.delete("vm-x")
    with pytest.raises(ConfigError):
        await service.init(b'{"invalid": 1}')
    assert not service.initialized
    await service.init(b"")  # empty means {}
    assert hypervisor.configs == [{}]
    with pytest.raises(AlreadyInitializedError):
        await service.init(b"{}")


@pytest.mark.anyio
async def test_a_hung_delete_ends_at_the_bound_and_frees_the_slot() -> None:
    hypervisor = MemoryHypervisor()
    service = NestingService(hypervisor, delete_timeout=60)
    await service.init(b"{}")
    first = await service.create("default", 1)
    hypervisor.hang_deletes = True
    start = anyio.current_time()
    with pytest.raises(HypervisorError, match=r"did not finish in time \(60s at most\)"):
        await service.delete(first.vm.id)
    assert anyio.current_time() - start == pytest.approx(60)
    hypervisor.hang_deletes = False
    second = await service.create("default", 1)
    assert second.stomped_vm_id is None


@pytest.mark.anyio
async def test_close_is_bounded_even_when_every_delete_hangs() -> None:
    hypervisor = MemoryHypervisor()
    service = NestingService(hypervisor, delete_timeout=60)
    await service.init(b"{}")
    for slot in range(3):
        await service.create("default", slot)
    hypervisor.hang_deletes = True
    start = anyio.current_time()
    with anyio.CancelScope() as outer:
        outer.cancel()  # a stop inside a cancelled scope still does its work
        finished = await service.close(within=30)
    assert not finished
    assert anyio.current_time() - start == pytest.approx(30), "the stop's bound, not 3 x 60 s"
    with pytest.raises(HypervisorError, match="stopping"):
        await service.create("default", None)


@pytest.mark.anyio
async def test_creates_in_one_slot_wait_for_each_other() -> None:
    hypervisor = MemoryHypervisor(boot_time=10)
    service = NestingService(hypervisor)
    await service.init(b"{}")
    outcomes = []

    async def create() -> None:
        outcomes.append(await service.create("default", 2))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(create)
    assert anyio.current_time() - start == pytest.approx(30), "one slot boots one VM at a time"
    assert [o.stomped_vm_id for o in outcomes] == [None, outcomes[0].vm.id, outcomes[1].vm.id]
    assert [vm.id for vm in await service.list()] == [outcomes[2].vm.id]


@pytest.mark.anyio
async def test_a_cancelled_create_still_tracks_its_vm() -> None:
    """A manager that hangs up mid-Create: the VM is made and tracked, never orphaned."""
    hypervisor = MemoryHypervisor(boot_time=10)
    service = NestingService(hypervisor)
    await service.init(b"{}")
    with anyio.move_on_after(1):
        await service.create("default", 5)
    assert [vm.id for vm in await service.list()] == hypervisor.created
    again = await service.create("default", 5)
    assert again.stomped_vm_id == hypervisor.created[0]


@contextmanager
def _portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    options = {"clock": trio.testing.MockClock(autojump_threshold=0)}
    with anyio.from_thread.start_blocking_portal("trio", options) as portal:
        yield portal


class SlotRules(RuleBasedStateMachine):
    """Create (with or without a slot), delete, a VM dying, shutdown: the
    service agrees with a model of GitLab's rules at every step."""

    def __init__(self) -> None:
        super().__init__()
        self._context = _portal()
        self.portal = self._context.__enter__()
        self.hypervisor = MemoryHypervisor(boot_time=1, delete_time=0.5)
        self.service = NestingService(self.hypervisor)
        self.portal.call(self.service.init, b"{}")
        self.slots: dict[int, str] = {}
        self.vms: set[str] = set()

    def teardown(self) -> None:
        self._context.__exit__(None, None, None)

    @rule(slot=st.none() | st.integers(0, 3))
    def create(self, slot: int | None) -> None:
        outcome = self.portal.call(self.service.create, "default", slot)
        expected = self.slots.get(slot) if slot is not None else None
        assert outcome.stomped_vm_id == expected
        if expected is not None:
            self.vms.discard(expected)
            assert expected in self.hypervisor.deleted
        if slot is not None:
            self.slots[slot] = outcome.vm.id
        self.vms.add(outcome.vm.id)

    @precondition(lambda self: self.vms)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        vm_id = data.draw(st.sampled_from(sorted(self.vms)))
        self.portal.call(self.service.delete, vm_id)
        self.vms.discard(vm_id)
        self.slots = {s: v for s, v in self.slots.items() if v != vm_id}

    @rule()
    def delete_unknown(self) -> None:
        with pytest.raises(NoSuchVM):
            self.portal.call(self.service.delete, "vm-unknown")

    @precondition(lambda self: self.vms)
    @rule(data=st.data())
    def a_vm_dies(self, data: st.DataObject) -> None:
        vm_id = data.draw(st.sampled_from(sorted(self.vms)))
        self.hypervisor.vanish(vm_id)
        self.portal.call(self.service.list)  # the daemon notices on List
        self.vms.discard(vm_id)
        self.slots = {s: v for s, v in self.slots.items() if v != vm_id}

    @rule()
    def shutdown(self) -> None:
        self.portal.call(self.service.shutdown)
        self.vms.clear()
        self.slots.clear()

    @invariant()
    def agrees_with_the_model(self) -> None:
        listed = {vm.id for vm in self.portal.call(self.service.list)}
        assert listed == self.vms
        assert {vm.id for vm in self.portal.call(self.hypervisor.list)} == self.vms
        assert len(set(self.slots.values())) == len(self.slots), "a VM in two slots"


TestSlotRules = SlotRules.TestCase
# Each step is a round trip through the portal's thread: slow to hypothesis's
# eye on a loaded machine, though no data generation is slow.
TestSlotRules.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
