"""State storage: the instance table on disk, written atomically, read at start.

GitLab's ``state_storage`` (spec §1.6) keeps per-instance state so a restarted
manager can tell its own idle instances from ones that were mid-job. The file
holds ids, owners, use counts and the acquisitions held; it holds no connect
info, so no credential ever reaches the disk, and it is still created 0600
because acquisition keys may name private jobs.

A write goes to a temp file in the same directory, is flushed to disk and
renamed over the old file, so a crash at any moment leaves either the old or
the new table, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fleetkit.errors import FleetError

__all__ = ["StateStore", "StoredInstance"]

_FORMAT = 1


@attrs.frozen(kw_only=True)
class StoredInstance:
    """One instance as a previous run left it."""

    id: str
    owner: str | None
    use_count: int
    acquisitions: Mapping[int, str]


class StateStore:
    """The instance table of one fleet under ``directory/state.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "state.json"

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    def load(self) -> dict[str, StoredInstance]:
        """The stored instances; empty when there is no file yet."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise FleetError(f"state storage {self.path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
            if data.get("format") != _FORMAT:
                raise ValueError(f"expected format {_FORMAT}, got {data.get('format')!r}")
            return {
                key: StoredInstance(
                    id=key,
                    owner=entry["owner"],
                    use_count=int(entry["use_count"]),
                    acquisitions={int(k): str(v) for k, v in entry["acquisitions"].items()},
                )
                for key, entry in data["instances"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FleetError(
                f"state storage {self.path}: not a fleetkit state file ({exc})"
            ) from exc

    def save(self, instances: Mapping[str, StoredInstance]) -> None:
        """Replace the stored table with ``instances`` atomically (mode 0600)."""
        payload: dict[str, Any] = {
            "format": _FORMAT,
            "instances": {
                i.id: {
                    "owner": i.owner,
                    "use_count": i.use_count,
                    "acquisitions": {str(k): v for k, v in i.acquisitions.items()},
                }
                for i in instances.values()
            },
        }
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkstemp creates the file 0600, before any byte is written.
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(payload, handle, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise FleetError(f"state storage {self.path}: cannot write: {exc.strerror}") from exc
