"""Shutdown: stop granting, settle the held slots, delete, then let the provider go.

In order: waiting acquisitions fail with :class:`~fleetkit.errors.FleetClosed`
and reservations are dropped; held slots are waited for (up to
``shutdown_timeout``) unless ``cancel_acquisitions_on_shutdown``, and the rest
are cancelled; after the update loop has stopped, the instances are deleted in
rounds when ``delete_instances_on_shutdown``, the table is saved, and only then
is the provider's ``shutdown`` called. The callers run all of it shielded.
"""

from __future__ import annotations

import math

import anyio

from fleetkit.errors import FleetClosed, ProviderError
from fleetkit.fleet._clock import loop_time
from fleetkit.fleet._polling import GONE, fetch_statuses
from fleetkit.fleet._runtime import Runtime, log

__all__ = ["stop_granting", "teardown"]


async def stop_granting(rt: Runtime) -> None:
    """Refuse new work and settle every held slot (released or cancelled)."""
    rt.closing = True
    for waiter in rt.pending.values():
        waiter.error = FleetClosed(f"fleet {rt.name!r} is shutting down")
        waiter.event.set()
    rt.pending.clear()
    rt.reservations.clear()
    if not rt.held:
        return
    rt.all_released = anyio.Event()
    if not rt.settings.cancel_acquisitions_on_shutdown:
        log.info(
            "shutdown: waiting for %d held slots",
            len(rt.held),
            extra={"fleet": rt.name, "held": len(rt.held)},
        )
        timeout = rt.settings.shutdown_timeout
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            await rt.all_released.wait()
    if rt.held:
        log.warning(
            "shutdown: cancelling %d held slots",
            len(rt.held),
            extra={"fleet": rt.name, "held": len(rt.held)},
        )
        for slot in tuple(rt.held.values()):
            slot._lose(FleetClosed(f"fleet {rt.name!r} shut down while the slot was held"))
        await rt.all_released.wait()


async def teardown(rt: Runtime) -> None:
    """Delete the instances (if so set), save the table, shut the provider down."""
    try:
        if rt.settings.delete_instances_on_shutdown:
            await _delete_everything(rt)
        rt.persist(force=True)
    finally:
        rt.open = False
        if rt.store is not None:
            rt.store.close()
        await rt.calls.shutdown()
        rt.hub.close()


async def _delete_everything(rt: Runtime) -> None:
    settings = rt.settings
    for attempt in range(settings.shutdown_deletion_retries + 1):
        live = await _poll_for_shutdown(rt)
        if live is not None and not live:
            return
        if attempt == settings.shutdown_deletion_retries:
            break
        ids = live if live is not None else list(rt.records)
        if ids:
            try:
                await rt.calls.decrease(ids)
                rt.book.instance_operations["delete"] += len(ids)
            except ProviderError as exc:
                log.warning(
                    "shutdown: decrease failed: %s",
                    exc,
                    extra={"fleet": rt.name, "instances": len(ids)},
                )
            for instance_id in ids:
                record = rt.records.get(instance_id)
                if record is not None:
                    record.we_deleted = True
        await anyio.sleep(settings.shutdown_deletion_interval)
    log.error(
        "shutdown: instances still present after %d deletion rounds: %s",
        settings.shutdown_deletion_retries,
        sorted(rt.records),
        extra={"fleet": rt.name, "instances": len(rt.records)},
    )


async def _poll_for_shutdown(rt: Runtime) -> list[str] | None:
    statuses = await fetch_statuses(rt, "shutdown: update failed: %s")
    if statuses is None:
        return None
    now = loop_time()
    live = []
    for status in statuses:
        if status.state in GONE:
            record = rt.records.get(status.id)
            if record is not None:
                rt.forget(record, now)
        else:
            live.append(status.id)
    reported = {s.id for s in statuses}
    for record in [r for r in rt.records.values() if r.id not in reported]:
        rt.forget(record, now)
    return live
