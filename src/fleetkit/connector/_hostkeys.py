"""Which SSH host key an instance must present.

Policy (GitLab's connector does not check host keys at all; fleetkit does):

* When the provider supplies the instance's key (``ConnectInfo.host_key``), the
  server must present exactly that key, from the first connection on.
* Otherwise the first key an instance presents is pinned to its instance id
  (trust on first use) and every later connection to that id must present it.
  Cloud instances get fresh host keys at boot, so pinning by id (not by
  address, which clouds reuse) is what tells a replaced machine from a changed
  key.

Either way the check happens during the handshake, before any credential is
sent. A mismatch raises :class:`~fleetkit.errors.HostKeyMismatch`. Pins live in
memory for the connector's life, optionally persisted to a file of
``instance-id key-type base64`` lines so a restarted manager keeps them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs

from fleetkit.model import ConnectInfo

__all__ = ["HostKeyStore", "normalise_key"]

log = logging.getLogger("fleetkit.connector.ssh")


def normalise_key(line: str) -> str:
    """``type base64`` of an OpenSSH public key line (comment dropped)."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("expected an OpenSSH public key line 'TYPE BASE64 [COMMENT]'")
    return f"{fields[0]} {fields[1]}"


@attrs.define
class HostKeyStore:
    """Host keys pinned per instance id; optionally persisted to ``path``."""

    path: Path | None = None
    _pins: dict[str, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3:
                    self._pins[fields[0]] = f"{fields[1]} {fields[2]}"

    def expected(self, info: ConnectInfo) -> str | None:
        """The key ``info``'s instance must present, or None to pin on this use."""
        if info.host_key:
            supplied = normalise_key(info.host_key)
            pinned = self._pins.get(info.id)
            if pinned is not None and pinned != supplied:
                log.warning(
                    "instance %s: provider supplies a host key other than the pinned one; "
                    "checking the supplied key",
                    info.id,
                )
            return supplied
        return self._pins.get(info.id)

    def pin(self, instance_id: str, key: str) -> None:
        """Remember ``key`` for ``instance_id`` (first use)."""
        key = normalise_key(key)
        if self._pins.get(instance_id) == key:
            return
        self._pins[instance_id] = key
        log.info("instance %s: pinned host key %s on first use", instance_id, key.split()[0])
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(f"{instance_id} {key}\n")

    def forget(self, instance_id: str) -> None:
        """Drop the pin of a deleted instance (its id will not come back)."""
        if self._pins.pop(instance_id, None) is not None and self.path is not None:
            self.path.write_text("".join(f"{iid} {key}\n" for iid, key in self._pins.items()))

    def pinned(self, instance_id: str) -> str | None:
        """The key pinned for ``instance_id``, if any."""
        return self._pins.get(instance_id)
