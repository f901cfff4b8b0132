"""A hypothesis state machine drives the fleet state and the planner together, synchronously.

The fleet state (:class:`fleetkit.fleet._state.FleetState`) is sans-I/O: this test
plays the driver. A small in-memory provider answers ``update``, ``increase`` and
``decrease``; rules are what happens between ticks (acquisitions asked, released,
abandoned; instances booting, dying, failing heartbeats; ready-ups ending; another
owner's instance showing up; time passing; the manager restarting, with or without
its state store). After every step the runtime's invariants hold: never more than
``max_instances``, never a ``decrease`` of an instance with an acquired slot, one
slot per key, held slots equal to the sum over the records, nothing foreign
touched, and no instance serving more than ``max_use_count`` acquisitions, across
restarts.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fleetkit.fleet import FleetSettings
from fleetkit.fleet._effects import Effects
from fleetkit.fleet._state import FleetState
from fleetkit.fleet._state_store import StoredInstance
from fleetkit.model import Limits, ProviderState
from fleetkit.policy import Policy
from fleetkit.provider import InstanceStatus, ProviderInfo

OURS = "ours"
THEIRS = "theirs"
P = ProviderState


class FleetStateMachine(RuleBasedStateMachine):
    """The fleet state with this test as its driver and a provider in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.serial = 0
        # The provider: id -> [state, owner].
        self.cloud: dict[str, list[object]] = {}
        self.ready_ups: list[str] = []
        # The driver's view: held key -> instance id, waiting keys.
        self.held: dict[str, str] = {}
        self.waiting: list[str] = []
        # Every acquisition ever granted per instance, across restarts.
        self.uses: dict[str, int] = {}
        self.keys = 0
        self.decreased: set[str] = set()
        self.stored: dict[str, StoredInstance] = {}

    @initialize(
        capacity=st.integers(1, 3),
        max_use=st.integers(0, 2),
        max_instances=st.integers(0, 5),
        idle_count=st.integers(0, 3),
        foreign=st.integers(0, 2),
        tagged=st.integers(0, 2),
    )
    def start(
        self,
        capacity: int,
        max_use: int,
        max_instances: int,
        idle_count: int,
        foreign: int,
        tagged: int,
    ) -> None:
        self.limits = Limits(
            capacity_per_instance=capacity,
            max_use_count=max_use,
            max_instances=max_instances,
            failure_threshold=2,
        )
        self.policy = Policy(idle_count=idle_count, idle_time=timedelta(minutes=1))
        self.settings = FleetSettings(
            owner_id=OURS,
            scale_throttle_limit=-1,
            heartbeat_interval=30.0,
            ready_backoff_initial=1.0,
            ready_backoff_max=4.0,
        )
        for _ in range(foreign):
            self._launch(THEIRS, P.RUNNING)
        for _ in range(tagged):
            # A previous run's instance: its use count is unknown to this one.
            instance_id = self._launch(OURS, P.RUNNING)
            self.uses[instance_id] = max_use
        self._open(stored={})

    # --- the driver's moves -------------------------------------------------

    def _launch(self, owner: str, state: ProviderState = P.CREATING) -> str:
        self.serial += 1
        instance_id = f"i-{self.serial:03d}"
        self.cloud[instance_id] = [state, owner]
        return instance_id

    def _statuses(self) -> list[InstanceStatus]:
        return [
            InstanceStatus(id=i, state=s, owner=o)  # type: ignore[arg-type]
            for i, (s, o) in self.cloud.items()
        ]

    def _open(self, stored: dict[str, StoredInstance]) -> None:
        self.state = FleetState(self.limits, self.settings, name="machine")
        self.state.publishing = True
        self.state.begin(ProviderInfo(id="sim", max_size=0), self.now, can_heartbeat=True)
        self.ready_ups = []
        self._apply(self.state.reconcile(self._statuses(), stored, self.now))
        self.allowed = max(self.limits.max_instances, len(self.state.records))

    def _apply(self, fx: Effects) -> None:
        for grant in fx.grants:
            assert grant.key in self.waiting, grant
            self.waiting.remove(grant.key)
            self._granted(grant.key, grant.instance_id)
        for key, _error in fx.refusals:
            self.waiting.remove(key)
        self.ready_ups += fx.ready_ups
        for instance_id in fx.decrease:
            record = self.state.records[instance_id]
            assert not record.slots, f"decrease of {instance_id} with slots {record.slots}"
            assert self.cloud[instance_id][1] == OURS, f"decrease of foreign {instance_id}"
        if fx.decrease:
            # The provider deletes what it is asked to.
            for instance_id in fx.decrease:
                self.cloud[instance_id][0] = P.DELETING
                self.decreased.add(instance_id)
            self._apply(self.state.decrease_done(fx.decrease, fx.decrease, None, self.now))
        if fx.increase:
            for _ in range(fx.increase):
                self._launch(OURS)
            self._apply(self.state.increase_done(fx.increase, fx.increase, None, self.now))
        for instance_id in fx.heartbeats:
            assert self.cloud[instance_id][1] == OURS
            self._apply(self.state.heartbeat_done(instance_id, None, self.now))

    def _granted(self, key: str, instance_id: str) -> None:
        assert self.cloud[instance_id][1] == OURS, f"{key} granted foreign {instance_id}"
        self.held[key] = instance_id
        self.uses[instance_id] = self.uses.get(instance_id, 0) + 1

    # --- rules --------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 1.0, 30.0, 61.0]))
    def tick(self, seconds: float) -> None:
        """Time passes and the loop ticks (polling first when due)."""
        self.now += seconds
        if self.state.poll_due(self.now):
            self._apply(self.state.observe(self._statuses(), self.now))
        self._apply(self.state.tick(self.policy, self.now))

    @rule()
    def poll(self) -> None:
        """The provider's ``update`` answers."""
        self._apply(self.state.observe(self._statuses(), self.now))

    @rule()
    def boot(self) -> None:
        """Creating instances come up running; deleting ones are gone."""
        for instance_id, entry in list(self.cloud.items()):
            if entry[0] is P.CREATING:
                entry[0] = P.RUNNING
            elif entry[0] is P.DELETING:
                del self.cloud[instance_id]

    @precondition(lambda self: bool(self.ready_ups))
    @rule(ok=st.booleans(), data=st.data())
    def ready_up_ends(self, ok: bool, data: st.DataObject) -> None:
        """A ready-up task finishes, well or not."""
        instance_id = data.draw(st.sampled_from(self.ready_ups))
        self.ready_ups.remove(instance_id)
        reason = None if ok else "command exited with 1"
        self._apply(self.state.ready_up_done(instance_id, reason, self.now))

    @rule()
    def acquire(self) -> None:
        """A job asks for a slot."""
        self.keys += 1
        key = f"job-{self.keys}"
        grant, fx = self.state.acquire(key, self.now)
        if grant is not None:
            self._granted(key, grant.instance_id)
        else:
            self.waiting.append(key)
        if fx is not None:
            self._apply(fx)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), failed=st.booleans())
    def release(self, data: st.DataObject, failed: bool) -> None:
        """A job ends and gives its slot back."""
        key = data.draw(st.sampled_from(sorted(self.held)))
        del self.held[key]
        self._apply(self.state.release(key, self.now, failed=failed))

    @precondition(lambda self: bool(self.waiting))
    @rule(data=st.data())
    def give_up(self, data: st.DataObject) -> None:
        """A waiting job times out."""
        key = data.draw(st.sampled_from(self.waiting))
        self.waiting.remove(key)
        self.state.abandon(key, timed_out=True)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def heartbeat_fails_before_hand_out(self, data: st.DataObject) -> None:
        """acquire_heartbeats: the check of a fresh grant fails, the key looks elsewhere."""
        key = data.draw(st.sampled_from(sorted(self.held)))
        instance_id = self.held.pop(key)
        self._apply(self.state.heartbeat_done(instance_id, "no answer", self.now))
        grant, fx = self.state.retry_elsewhere(key, self.now)
        if grant is not None:
            assert grant.instance_id != instance_id
            self._granted(key, grant.instance_id)
        else:
            self.waiting.append(key)
        self._apply(fx)

    @rule(data=st.data())
    def foreign_instance_appears(self, data: st.DataObject) -> None:
        """Another manager's instance shows up in the group."""
        self._launch(THEIRS, data.draw(st.sampled_from([P.CREATING, P.RUNNING])))

    @precondition(lambda self: any(o == OURS for _, o in self.cloud.values()))
    @rule(data=st.data())
    def instance_dies(self, data: st.DataObject) -> None:
        """One of our instances disappears; the next update tells."""
        ours = sorted(i for i, (_, o) in self.cloud.items() if o == OURS)
        instance_id = data.draw(st.sampled_from(ours))
        del self.cloud[instance_id]
        fx = self.state.observe(self._statuses(), self.now)
        lost = {key for key, _ in fx.losses}
        for key in [k for k, i in self.held.items() if i == instance_id]:
            assert key in lost
        self._apply(fx)
        for key in lost:
            # The holder's block is cancelled and the slot released.
            self.held.pop(key, None)
            self._apply(self.state.release(key, self.now, lost=True))

    @rule(with_store=st.booleans())
    def restart(self, with_store: bool) -> None:
        """The manager stops and starts again, with or without its state store."""
        table = self.state.take_table(force=True)
        assert table is not None
        self.held.clear()
        self.waiting.clear()
        self._open(stored=table if with_store else {})

    # --- invariants ---------------------------------------------------------

    @invariant()
    def never_more_than_max_instances(self) -> None:
        # Instances found at start may exceed the limit; the fleet then never
        # grows, and only shrinks towards it.
        limit = self.state.limits.max_instances
        count = len(self.state.records) + len(self.state.requested)
        if limit:
            assert count <= self.allowed
            self.allowed = max(limit, min(self.allowed, count))

    @invariant()
    def held_slots_are_the_sum_over_records(self) -> None:
        state = self.state
        on_records = [key for r in state.records.values() for key in r.slots.values()]
        assert len(on_records) == len(set(on_records)), "a key holds two slots"
        assert sorted(on_records) == sorted(state.held)
        assert set(state.held) == set(self.held)
        for key, grant in state.held.items():
            assert state.records[grant.instance_id].slots[grant.number] == key

    @invariant()
    def nothing_foreign_is_touched(self) -> None:
        for instance_id, (_, owner) in self.cloud.items():
            if owner == THEIRS:
                assert instance_id not in self.state.records
                assert instance_id not in self.decreased

    @invariant()
    def max_use_count_is_kept_across_restarts(self) -> None:
        limit = self.limits.max_use_count
        if limit:
            for instance_id, uses in self.uses.items():
                assert uses <= limit, f"{instance_id} served {uses} > {limit}"


_profile = FleetStateMachine.TestCase.settings
FleetStateMachine.TestCase.settings = settings(
    _profile, max_examples=max(_profile.max_examples, 100), stateful_step_count=40, deadline=None
)
test_fleet_state_machine = FleetStateMachine.TestCase
