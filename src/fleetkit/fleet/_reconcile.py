"""Reconcile at start: adopt or remove the instances the group already has.

Before the update loop starts, every instance the provider reports is either
adopted (the state store knows it, or it carries this fleet's ``owner_id``) or
drained for safety (no data on it, or it still had acquisitions and
``keep_instance_with_acquisitions`` is off). An instance already being deleted
is only watched until it is gone.
"""

from __future__ import annotations

from fleetkit.fleet._polling import GONE, observe
from fleetkit.fleet._runtime import Runtime, log
from fleetkit.fleet._table import Record, Trigger
from fleetkit.model import InstanceState, ProviderState

__all__ = ["reconcile"]

S = InstanceState


async def reconcile(rt: Runtime, now: float) -> None:
    """Build the instance table from the provider's ``update`` and the state store."""
    stored = rt.store.load() if rt.store else {}
    statuses = await rt.calls.update()
    owner = rt.settings.owner_id
    for status in statuses:
        if status.state in GONE:
            continue
        prior = stored.get(status.id)
        record = Record(
            status.id,
            S.CREATING,
            now,
            owner=status.owner,
            use_count=prior.use_count if prior else 0,
        )
        rt.records[status.id] = record
        if status.state is ProviderState.DELETING:
            record.we_deleted = True
            rt.move(record, Trigger.SEEN_DELETING)
            continue
        proven = prior is not None or (owner is not None and status.owner == owner)
        if not proven:
            rt.drain(record, "no data on pre-existing instance so removing for safety", now)
        elif (
            prior is not None
            and prior.acquisitions
            and not (rt.settings.keep_instance_with_acquisitions)
        ):
            rt.drain(record, "pre-existing instance has acquisitions so removing for safety", now)
        else:
            log.info(
                "adopting pre-existing instance %s",
                status.id,
                extra={"fleet": rt.name, "instance_id": status.id},
            )
            observe(rt, record, status, now)
    rt.dirty = True
    rt.next_poll = now + rt.poll_interval()
