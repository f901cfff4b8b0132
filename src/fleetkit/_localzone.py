"""The system's local time zone, as GitLab Runner reads it for policies without ``timezone``.

Go's ``time.Local`` comes from ``TZ`` when it is set (``TZ=""`` means UTC, a
name is looked up in the zone database), else from ``/etc/localtime``. This
module does the same and gives a :class:`~zoneinfo.ZoneInfo` (not a fixed
offset), so that DST changes inside a schedule are seen, and a name to show.
"""

from __future__ import annotations

import os
from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["LocalZone", "local_zone"]

_LOCALTIME = Path("/etc/localtime")


class LocalZone:
    """The local zone and where it came from (for ``validate``'s summary)."""

    __slots__ = ("name", "source", "zone")

    def __init__(self, zone: tzinfo, name: str, source: str) -> None:
        self.zone = zone
        self.name = name
        self.source = source

    def __repr__(self) -> str:
        return f"LocalZone({self.name!r}, from {self.source})"

    def describe(self) -> str:
        """``America/New_York, the local zone (TZ)``."""
        return f"{self.name}, the local zone ({self.source})"


def local_zone(environ: dict[str, str] | None = None, localtime: Path = _LOCALTIME) -> LocalZone:
    """The local time zone: ``TZ`` when set, else ``/etc/localtime``, else UTC."""
    env = os.environ if environ is None else environ
    tz = env.get("TZ")
    if tz is not None:
        name = tz.removeprefix(":")
        if not name or name in ("UTC", "UTC0", "Etc/UTC"):
            return LocalZone(UTC, "UTC", "TZ")
        try:
            return LocalZone(ZoneInfo(name), name, "TZ")
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # Go falls back to UTC for a TZ it cannot load; so does GitLab Runner.
            return LocalZone(UTC, "UTC", f"TZ={tz!r} is not a known zone")
    return _from_localtime(localtime)


def _from_localtime(localtime: Path) -> LocalZone:
    try:
        target = os.path.realpath(localtime)
    except OSError:
        return LocalZone(UTC, "UTC", "no /etc/localtime")
    marker = "/zoneinfo/"
    if marker in target:
        name = target.rsplit(marker, 1)[1]
        try:
            return LocalZone(ZoneInfo(name), name, str(localtime))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open(localtime, "rb") as file:
            zone = ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return LocalZone(UTC, "UTC", f"no {localtime}")
    return LocalZone(zone, "localtime", str(localtime))
