"""The provider conformance suite: every contract of :class:`InstanceGroup`, as checks.

Any provider, fleetkit's or a third party's, runs the whole suite with one pytest
parametrisation. Write a factory that builds a fresh group and yields it in a
:class:`Harness` with a ``settle`` helper (what "let time pass" means for this
provider), then::

    import pytest
    from fleetkit.testing.conformance import CHECKS, Check

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", CHECKS, ids=str)
    async def test_conformance(check: Check) -> None:
        await check.run(my_factory)

``my_factory(max_size=...)`` is an async context manager (for instance an
``@asynccontextmanager`` function): it builds the group with at most
``max_size`` instances (the suite asks for small groups so that checking the
size limit stays cheap), does not call ``init`` (the suite does, first), and on
exit removes whatever the check left behind. A check calls ``init`` first and
``shutdown`` last, decreases every instance it created, and raises
:class:`ConformanceError` naming the contract it found broken.

Every :meth:`~InstanceGroup.update` the suite makes goes through one observer
that checks the cross-cutting contracts on each answer: each instance reported
once, states only move forward, a deleted instance never comes back, and the
owner stamped as the harness says.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import anyio
import attrs

from fleetkit.errors import InstanceNotFound, ProviderError
from fleetkit.model import ConnectInfo, ProviderState
from fleetkit.provider import InstanceGroup, InstanceStatus, ProviderInfo

__all__ = ["CHECKS", "Check", "ConformanceError", "GroupFactory", "Harness"]


class ConformanceError(AssertionError):
    """A provider broke a contract of :class:`~fleetkit.provider.InstanceGroup`.

    Raised by :meth:`Check.run`; an ``AssertionError`` so pytest reports it as a
    test failure with its message.
    """


@attrs.frozen(kw_only=True)
class Harness:
    """A fresh, un-initialised group and how to wait for it.

    ``settle`` lets the group make progress between two ``update`` calls: sleep
    a poll interval for a real provider, advance a simulated clock for a fake.
    The suite polls at most ``max_settles`` times for a state to be reached.
    ``owner`` is the owner the factory gave the group (``None``: not checked).
    """

    group: InstanceGroup
    settle: Callable[[], Awaitable[None]]
    max_settles: int = 200
    owner: str | None = None


class GroupFactory(Protocol):
    """**Protocol:** builds a fresh group of at most ``max_size`` instances."""

    def __call__(self, *, max_size: int) -> AbstractAsyncContextManager[Harness]:
        """Return a context manager that yields the harness and cleans up on exit."""
        ...


_ORDER = {
    ProviderState.CREATING: 0,
    ProviderState.RUNNING: 1,
    ProviderState.DELETING: 2,
    ProviderState.TIMEOUT: 3,
    ProviderState.DELETED: 4,
}
_GONE = {ProviderState.DELETED}
_ALIVE = {ProviderState.CREATING, ProviderState.RUNNING}


class _Observer:
    """Checks each ``update`` answer against everything seen before."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.states: dict[str, ProviderState] = {}
        self.gone: set[str] = set()
        self.initialised = False
        self.shut_down = False

    async def update(self) -> dict[str, ProviderState]:
        answer = list(await self.harness.group.update())
        current: dict[str, ProviderState] = {}
        for status in answer:
            _expect(
                isinstance(status, InstanceStatus),
                f"update() returned {status!r}, not an InstanceStatus",
            )
            _expect(
                status.id not in current,
                f"update() reported instance {status.id!r} more than once in one answer",
            )
            current[status.id] = status.state
            self._advance(status)
        return current

    def _advance(self, status: InstanceStatus) -> None:
        before = self.states.get(status.id)
        _expect(
            status.id not in self.gone,
            f"instance {status.id!r} was reported again as {status.state.value} "
            "after it was reported deleted",
        )
        if before is not None:
            # TIMEOUT is final except for its deletion; the rest is a total order.
            moved_back = _ORDER[status.state] < _ORDER[before]
            out_of_timeout = before is ProviderState.TIMEOUT and status.state not in {
                ProviderState.TIMEOUT,
                ProviderState.DELETED,
            }
            _expect(
                not moved_back and not out_of_timeout,
                f"instance {status.id!r} moved backwards: {before.value} -> {status.state.value}",
            )
        owner = self.harness.owner
        _expect(
            owner is None or status.owner == owner,
            f"instance {status.id!r} reports owner {status.owner!r}, expected {owner!r}",
        )
        self.states[status.id] = status.state
        if status.state in _GONE:
            self.gone.add(status.id)

    async def wait_for(
        self, what: str, done: Callable[[dict[str, ProviderState]], bool]
    ) -> dict[str, ProviderState]:
        """Poll ``update`` (settling in between) until ``done`` holds."""
        current: dict[str, ProviderState] = {}
        for _ in range(self.harness.max_settles):
            current = await self.update()
            if done(current):
                return current
            await self.harness.settle()
        raise ConformanceError(
            f"gave up waiting until {what} after {self.harness.max_settles} settles; "
            f"last update: {_render(current)}"
        )

    async def wait_running(self, count: int) -> list[str]:
        """Wait until ``count`` instances are running; return their ids."""
        current = await self.wait_for(
            f"{count} instance(s) are running",
            lambda c: sum(s is ProviderState.RUNNING for s in c.values()) >= count,
        )
        return sorted(i for i, s in current.items() if s is ProviderState.RUNNING)

    async def wait_gone(self, ids: Sequence[str]) -> None:
        """Wait until every id in ``ids`` is deleted or no longer reported."""
        await self.wait_for(
            f"{sorted(ids)} are deleted",
            lambda c: all(c.get(i, ProviderState.DELETED) in _GONE for i in ids),
        )

    async def shutdown(self) -> None:
        await self.harness.group.shutdown()
        self.shut_down = True

    async def cleanup(self) -> None:
        """Decrease everything still alive and shut down, whatever happened."""
        with anyio.CancelScope(shield=True):
            if self.shut_down:
                return
            try:
                if self.initialised:
                    current = await self.update()
                    alive = [i for i, s in current.items() if s not in _GONE]
                    if alive:
                        await self.harness.group.decrease(alive)
                        await self.wait_gone(alive)
            finally:
                await self.shutdown()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def _render(states: dict[str, ProviderState]) -> str:
    return "{" + ", ".join(f"{i}: {s.value}" for i, s in sorted(states.items())) + "}"


async def _init(obs: _Observer) -> ProviderInfo:
    info = await obs.harness.group.init()
    obs.initialised = True
    _expect(isinstance(info, ProviderInfo), f"init() returned {info!r}, not a ProviderInfo")
    _expect(bool(info.id), "init() reported an empty ProviderInfo.id")
    _expect(info.max_size >= 1, f"init() reported max_size {info.max_size}, expected >= 1")
    return info


async def _grow(obs: _Observer, n: int, max_size: int) -> int:
    accepted = await obs.harness.group.increase(n)
    _expect(
        isinstance(accepted, int) and 0 <= accepted <= n,
        f"increase({n}) returned {accepted!r}, expected an int in 0..{n}",
    )
    _expect(accepted <= max_size, f"increase({n}) accepted {accepted} > max_size {max_size}")
    return accepted


# --- the checks -------------------------------------------------------------
#
# Each check takes a fresh harness and runs inside `Check.run`, which calls
# `cleanup` afterwards (shielded) so a failing check leaves nothing behind.

_CheckBody = Callable[[_Observer, int], Awaitable[None]]


async def _verbs_before_init_raise(obs: _Observer, max_size: int) -> None:
    """A verb called before init raises ProviderError rather than misbehaving."""
    group = obs.harness.group
    probes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("update()", group.update),
        ("increase(1)", lambda: group.increase(1)),
        ("connect_info('x')", lambda: group.connect_info("x")),
    ]
    for name, call in probes:
        try:
            await call()
        except ProviderError:
            continue
        raise ConformanceError(f"{name} before init() did not raise ProviderError")
    await _init(obs)


async def _init_describes_group(obs: _Observer, max_size: int) -> None:
    """init reports an id and the max_size the group was built with; the group starts empty."""
    info = await _init(obs)
    _expect(
        info.max_size == max_size,
        f"init() reported max_size {info.max_size}, the factory asked for {max_size}",
    )
    current = await obs.update()
    alive = {i: s for i, s in current.items() if s in _ALIVE}
    _expect(not alive, f"a fresh group already has instances: {_render(alive)}")


async def _increase_then_running(obs: _Observer, max_size: int) -> None:
    """Accepted instances appear, each reported once, and become running."""
    await _init(obs)
    accepted = await _grow(obs, 2, max_size)
    _expect(accepted >= 1, "increase(2) on an empty group accepted nothing")
    running = await obs.wait_running(accepted)
    _expect(
        len(running) == accepted,
        f"increase(2) accepted {accepted} but {len(running)} instances run: {running}",
    )
    for _ in range(3):
        current = await obs.update()
        _expect(
            set(running) <= set(current),
            f"running instances vanished from update(): {sorted(set(running) - set(current))}",
        )


async def _increase_capped_by_max_size(obs: _Observer, max_size: int) -> None:
    """increase beyond max_size accepts at most what fits; a full group accepts nothing."""
    await _init(obs)
    first = await _grow(obs, max_size + 2, max_size)
    _expect(first >= 1, f"increase({max_size + 2}) on an empty group accepted nothing")
    total = first
    while total < max_size:
        more = await _grow(obs, max_size, max_size)
        if more == 0:
            break
        total += more
    _expect(total <= max_size, f"accepted {total} instances in all, max_size is {max_size}")
    try:
        extra = await obs.harness.group.increase(1)
    except ProviderError:
        extra = 0  # refusing outright is allowed: nothing was accepted
    _expect(extra == 0, f"a group at max_size {max_size} accepted {extra} more")
    current = await obs.update()
    alive = [i for i, s in current.items() if s not in _GONE]
    _expect(len(alive) <= max_size, f"{len(alive)} instances exist, max_size is {max_size}")


async def _decrease_idempotent(obs: _Observer, max_size: int) -> None:
    """decrease returns the ids it removes, and an id already gone counts as removed."""
    await _init(obs)
    accepted = await _grow(obs, 2, max_size)
    _expect(accepted >= 1, "increase(2) on an empty group accepted nothing")
    running = await obs.wait_running(accepted)
    victim = running[0]
    removed = list(await obs.harness.group.decrease([victim]))
    _expect(removed == [victim], f"decrease([{victim!r}]) returned {removed!r}")
    again = list(await obs.harness.group.decrease([victim]))
    _expect(again == [victim], f"decrease of an id being deleted returned {again!r}")
    await obs.wait_gone([victim])
    gone = list(await obs.harness.group.decrease([victim]))
    _expect(gone == [victim], f"decrease of an id already gone returned {gone!r}")
    current = await obs.update()
    for other in running[1:]:
        _expect(
            current.get(other) is ProviderState.RUNNING,
            f"decrease([{victim!r}]) also touched {other!r}: {_render(current)}",
        )


async def _decrease_before_running(obs: _Observer, max_size: int) -> None:
    """An instance can be decreased as soon as update reports it, running or not."""
    await _init(obs)
    _expect(await _grow(obs, 1, max_size) == 1, "increase(1) on an empty group accepted nothing")
    current = await obs.wait_for(
        "the new instance is reported", lambda c: any(s in _ALIVE for s in c.values())
    )
    (instance_id,) = [i for i, s in current.items() if s in _ALIVE]
    removed = list(await obs.harness.group.decrease([instance_id]))
    _expect(removed == [instance_id], f"decrease([{instance_id!r}]) returned {removed!r}")
    await obs.wait_gone([instance_id])


async def _connect_info(obs: _Observer, max_size: int) -> None:
    """connect_info names a running instance's address; an unknown id raises InstanceNotFound."""
    await _init(obs)
    try:
        await obs.harness.group.connect_info("fleetkit-conformance-no-such-instance")
    except InstanceNotFound:
        pass
    else:
        raise ConformanceError("connect_info() of an unknown id did not raise InstanceNotFound")
    _expect(await _grow(obs, 1, max_size) == 1, "increase(1) on an empty group accepted nothing")
    (instance_id,) = await obs.wait_running(1)
    info = await obs.harness.group.connect_info(instance_id)
    _expect(isinstance(info, ConnectInfo), f"connect_info() returned {info!r}")
    _expect(info.id == instance_id, f"connect_info({instance_id!r}) is for {info.id!r}")
    _expect(
        bool(info.internal_addr or info.external_addr),
        f"connect_info({instance_id!r}) has no address",
    )
    await obs.harness.group.heartbeat(instance_id)


async def _decrease_all_then_empty(obs: _Observer, max_size: int) -> None:
    """After decreasing every instance, all are reported deleted or no longer reported."""
    await _init(obs)
    accepted = await _grow(obs, 2, max_size)
    running = await obs.wait_running(accepted)
    removed = list(await obs.harness.group.decrease(running))
    _expect(sorted(removed) == running, f"decrease({running}) returned {sorted(removed)}")
    await obs.wait_gone(running)
    for instance_id in running:
        try:
            await obs.harness.group.connect_info(instance_id)
        except InstanceNotFound:
            continue
        raise ConformanceError(f"connect_info({instance_id!r}) answered after deletion")


async def _random_walk(obs: _Observer, max_size: int) -> None:
    """A seeded mix of increase, decrease (of live and gone ids) and update keeps every contract."""
    await _init(obs)
    rng = random.Random(4)  # fixed: a failure replays the same walk
    gone: list[str] = []
    for _ in range(12):
        current = await obs.update()
        live = sorted(i for i, s in current.items() if s not in _GONE)
        _expect(len(live) <= max_size, f"{len(live)} instances exist, max_size is {max_size}")
        if not live or rng.random() < 0.5:
            await _grow(obs, rng.randint(1, max_size), max_size)
        else:
            victims = rng.sample(live, rng.randint(1, len(live)))
            if gone:
                victims.append(rng.choice(gone))
            removed = set(await obs.harness.group.decrease(victims))
            _expect(
                removed == set(victims),
                f"decrease({victims}) returned {sorted(removed)}: live ids, ids being "
                "deleted and ids already gone all count as removed",
            )
            gone.extend(v for v in victims if v not in gone)
        await obs.harness.settle()


async def _shutdown_idempotent(obs: _Observer, max_size: int) -> None:
    """shutdown can be called twice; the second call is a no-op."""
    await _init(obs)
    await obs.shutdown()
    try:
        await obs.harness.group.shutdown()
    except Exception as exc:
        raise ConformanceError(f"a second shutdown() raised {exc!r}") from exc


@attrs.frozen
class Check:
    """One contract of the protocol and how to test it against a factory."""

    name: str
    body: _CheckBody = attrs.field(repr=False)
    max_size: int = 3

    @property
    def doc(self) -> str:
        """The contract, in one sentence."""
        return (self.body.__doc__ or "").strip()

    def __str__(self) -> str:
        return self.name

    async def run(self, factory: GroupFactory) -> None:
        """Build a fresh group with ``factory``, check the contract, clean up.

        Raises :class:`ConformanceError` when the provider breaks the contract.
        """
        async with factory(max_size=self.max_size) as harness:
            obs = _Observer(harness)
            try:
                await self.body(obs, self.max_size)
            except BaseException as failure:
                # The broken contract is the finding; a cleanup that fails too
                # (likely, with a broken group) must not hide it.
                try:
                    await obs.cleanup()
                except Exception as also:  # noqa: BLE001 (any cleanup error is only a note)
                    failure.add_note(f"cleanup after the failure also failed: {also!r}")
                raise
            await obs.cleanup()


CHECKS: tuple[Check, ...] = (
    Check("verbs_before_init_raise", _verbs_before_init_raise),
    Check("init_describes_group", _init_describes_group),
    Check("increase_then_running", _increase_then_running),
    Check("increase_capped_by_max_size", _increase_capped_by_max_size),
    Check("decrease_idempotent", _decrease_idempotent),
    Check("decrease_before_running", _decrease_before_running),
    Check("connect_info", _connect_info),
    Check("decrease_all_then_empty", _decrease_all_then_empty),
    Check("random_walk", _random_walk),
    Check("shutdown_idempotent", _shutdown_idempotent),
)
"""Every check, in a stable order; parametrise a test over it (``ids=str``)."""
