"""The conformance suite itself: it passes a correct group and catches each broken contract.

The correct group is fleetkit's SimulatedGroup in virtual time; each broken one
is a SimulatedGroup with one contract deliberately violated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
import trio.testing

from fleetkit.errors import ProviderError
from fleetkit.model import ConnectInfo, ProviderState
from fleetkit.provider import InstanceStatus
from fleetkit.testing.conformance import CHECKS, Check, ConformanceError, GroupFactory, Harness
from fleetkit.testing.simulated import Delay, SimulatedGroup


@pytest.fixture(scope="module")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Virtual time: the simulated group's boot and deletion delays pass at once."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def factory_for(cls: Callable[..., SimulatedGroup], owner: str = "fleet-a") -> GroupFactory:
    """A conformance factory building ``cls`` with cloud-like delays in virtual time."""

    @asynccontextmanager
    async def build(*, max_size: int) -> AsyncIterator[Harness]:
        group = cls(
            seed=7, max_size=max_size, boot=Delay(1.0, 5.0), deletion=Delay(0.5, 2.0), owner=owner
        )
        yield Harness(group=group, settle=lambda: anyio.sleep(1.0), owner=owner)

    def factory(*, max_size: int) -> AbstractAsyncContextManager[Harness]:
        return build(max_size=max_size)

    return factory


@pytest.mark.anyio
@pytest.mark.parametrize("check", CHECKS, ids=str)
async def test_simulated_group_conforms(check: Check) -> None:
    """fleetkit's simulated group passes every check of the suite."""
    await check.run(factory_for(SimulatedGroup))


def test_checks_have_names_and_contracts() -> None:
    """Each check has a unique name and a one-sentence contract for reports."""
    names = [str(c) for c in CHECKS]
    assert len(set(names)) == len(names)
    assert all(c.doc.endswith(".") for c in CHECKS)


# --- broken groups, one contract each -------------------------------------------


class NoInitGuard(SimulatedGroup):
    """Answers verbs before init."""

    async def update(self) -> Sequence[InstanceStatus]:
        return []


class ReportsTwice(SimulatedGroup):
    """Reports its first instance twice in one update."""

    async def update(self) -> Sequence[InstanceStatus]:
        answer = list(await super().update())
        return answer + answer[:1]


class MovesBackwards(SimulatedGroup):
    """Reports a running instance as creating again on the next update."""

    seen_running: set[str]

    async def update(self) -> Sequence[InstanceStatus]:
        if not hasattr(self, "seen_running"):
            self.seen_running = set()
        answer = []
        for status in await super().update():
            if status.id in self.seen_running and status.state is ProviderState.RUNNING:
                status = InstanceStatus(id=status.id, state=ProviderState.CREATING)
            elif status.state is ProviderState.RUNNING:
                self.seen_running.add(status.id)
            answer.append(status)
        return answer


class ComesBack(SimulatedGroup):
    """Keeps reporting deleted instances as deleted on every update."""

    async def update(self) -> Sequence[InstanceStatus]:
        answer = list(await super().update())
        known = {s.id for s in answer}
        for sim in self._instances.values():
            if sim.reported_gone and sim.id not in known:
                answer.append(InstanceStatus(id=sim.id, state=ProviderState.RUNNING))
        return answer


class IgnoresMaxSize(SimulatedGroup):
    """Accepts whatever is asked."""

    async def increase(self, n: int) -> int:
        self.max_size += n
        return await super().increase(n)


class StrictDecrease(SimulatedGroup):
    """Leaves ids it is already deleting out of decrease's answer."""

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        fresh = [i for i in ids if self.state_of(i) is not ProviderState.DELETING]
        fresh = [i for i in fresh if self.state_of(i) is not ProviderState.DELETED]
        return await super().decrease(fresh)


class RefusesCreatingDecrease(SimulatedGroup):
    """Will not delete an instance that is still creating."""

    async def decrease(self, ids: Sequence[str]) -> Sequence[str]:
        ready = [i for i in ids if self.state_of(i) is not ProviderState.CREATING]
        return await super().decrease(ready)


class AnswersUnknownIds(SimulatedGroup):
    """Invents connect info for any id."""

    async def connect_info(self, instance_id: str) -> ConnectInfo:
        return ConnectInfo(id=instance_id, internal_addr="10.0.0.1")


class ShutdownOnce(SimulatedGroup):
    """Refuses a second shutdown."""

    async def shutdown(self) -> None:
        if self._shut:
            raise ProviderError("already shut down")
        await super().shutdown()


class NeverRuns(SimulatedGroup):
    """Keeps every instance creating."""

    async def update(self) -> Sequence[InstanceStatus]:
        return [
            InstanceStatus(id=s.id, state=ProviderState.CREATING, owner=s.owner)
            if s.state is ProviderState.RUNNING
            else s
            for s in await super().update()
        ]


def check_named(name: str) -> Check:
    """The check called ``name``."""
    (found,) = [c for c in CHECKS if c.name == name]
    return found


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "check", "message"),
    [
        (NoInitGuard, "verbs_before_init_raise", "before init"),
        (ReportsTwice, "increase_then_running", "more than once"),
        (MovesBackwards, "increase_then_running", "moved backwards"),
        (ComesBack, "decrease_all_then_empty", "after it was reported deleted"),
        (IgnoresMaxSize, "increase_capped_by_max_size", "max_size"),
        (StrictDecrease, "decrease_idempotent", "decrease of an id"),
        (StrictDecrease, "random_walk", "already gone all count as removed"),
        (RefusesCreatingDecrease, "decrease_before_running", "returned \\[\\]"),
        (AnswersUnknownIds, "connect_info", "InstanceNotFound"),
        (ShutdownOnce, "shutdown_idempotent", "second shutdown"),
        (NeverRuns, "increase_then_running", "gave up waiting"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
async def test_suite_catches_broken_contract(
    broken: Callable[..., SimulatedGroup], check: str, message: str
) -> None:
    """A group breaking one contract fails the check for it, with a message naming the breach."""
    with pytest.raises(ConformanceError, match=message):
        await check_named(check).run(factory_for(broken))


@pytest.mark.anyio
async def test_suite_checks_the_owner_stamp() -> None:
    """A group reporting another owner than the harness expects fails."""

    def factory(*, max_size: int) -> AbstractAsyncContextManager[Harness]:
        @asynccontextmanager
        async def build() -> AsyncIterator[Harness]:
            group = SimulatedGroup(max_size=max_size, boot=Delay(1.0, 1.0), owner="someone-else")
            yield Harness(group=group, settle=lambda: anyio.sleep(1.0), owner="fleet-a")

        return build()

    with pytest.raises(ConformanceError, match="reports owner 'someone-else'"):
        await check_named("increase_then_running").run(factory)
