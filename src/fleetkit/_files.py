"""Reading input files with a bound, so that ``/dev/zero`` or a runaway file
named as a config, jobs file, key or state file is an error, not a process that
fills memory."""

from __future__ import annotations

import errno
import os

__all__ = ["MAX_KEY_BYTES", "MiB", "read_bounded"]

MiB = 1 << 20
#: A private key file is a few kilobytes; ``key_path = "/dev/zero"`` is not one.
MAX_KEY_BYTES = 1 * MiB


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them.

    Raises :class:`OSError` as reading does, and ``OSError(EFBIG)`` whose
    ``strerror`` says the bound when the file holds more (a pipe or a device
    that never ends included).
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {_size(limit)}")
    return data


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit} bytes"
