"""What running a job needs from an acquired slot, as protocols.

Jobs do not import the fleet runtime: any object with an instance id, a slot
number and connect info will do (a :class:`fleetkit.fleet.Slot`, or a user's
own). Slots that can be lost (the fleet's) also offer :class:`LosableSlot`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import anyio

from fleetkit.errors import FleetError
from fleetkit.model import ConnectInfo

__all__ = ["JobSlot", "LosableSlot"]


class JobSlot(Protocol):
    """**Protocol:** slot ``number`` of instance ``instance_id``, reached with
    ``connect_info`` (``None`` when the holder has no way to reach it)."""

    @property
    def instance_id(self) -> str:
        """The instance the slot is on."""
        ...

    @property
    def number(self) -> int:
        """The slot number on its instance, from 0."""
        ...

    @property
    def connect_info(self) -> ConnectInfo | None:
        """How to reach the instance."""
        ...


@runtime_checkable
class LosableSlot(Protocol):
    """**Protocol:** a slot whose instance can disappear under it.

    :func:`~fleetkit.jobs.run_job` attaches a cancel scope so that losing the
    instance ends the job as a system failure, and reports connection failures
    so the instance's health counts them.
    """

    def attach(self, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` when the slot is lost (at once if it already is)."""
        ...

    def report_failure(self) -> None:
        """Tell the owner the instance failed this holder."""
        ...


@runtime_checkable
class ExplainsLoss(Protocol):
    """**Protocol:** a losable slot that says why it was lost (a fleet's
    :class:`~fleetkit.fleet.Slot` does); :func:`~fleetkit.jobs.run_job` puts
    the reason in the job's system failure."""

    @property
    def lost_error(self) -> FleetError | None:
        """Why the slot was lost, or ``None`` while it holds."""
        ...
