"""Masking secrets out of a streamed log.

A job's output arrives in chunks cut wherever the transport cut them, so a
secret may be split across two chunks. :class:`Masker` holds back just enough
text (one byte less than the longest secret) to decide every match, and so
replaces each occurrence however the stream was cut.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable

__all__ = ["MASK", "Masker"]

#: What a masked value is replaced with (GitLab's marker).
MASK = "[MASKED]"


class Masker:
    """Replaces every occurrence of the given secrets in a stream of bytes.

    Feed chunks with :meth:`feed`; call :meth:`flush` at the end of the stream
    for the text held back. Bytes are decoded as UTF-8 (invalid sequences become
    U+FFFD), also correct across chunk boundaries.
    """

    __slots__ = ("_decoder", "_hold", "_pattern", "_pending")

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that where one secret contains another the whole of
        # the longer one is hidden rather than leaving its tail in the log.
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, unique))) if unique else None
        self._hold = max(map(len, unique), default=1) - 1
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __repr__(self) -> str:
        count = 0 if self._pattern is None else self._pattern.pattern.count("|") + 1
        return f"<Masker secrets={count}>"

    def feed(self, chunk: bytes | str) -> str:
        """Mask ``chunk`` and return the text that is now safe to show."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if self._pattern is None:
            return text
        buf = self._pending + text
        # A secret starting before `limit` ends within `buf`, so every match that
        # starts there can be decided now; later starts wait for more text.
        limit = len(buf) - self._hold
        out: list[str] = []
        pos = 0
        while pos < limit:
            match = self._pattern.search(buf, pos)
            if match is None or match.start() >= limit:
                out.append(buf[pos:limit])
                pos = limit
                break
            out.append(buf[pos : match.start()])
            out.append(MASK)
            pos = match.end()
        self._pending = buf[pos:]
        return "".join(out)

    def flush(self) -> str:
        """Mask and return whatever is held back; the stream has ended."""
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if self._pattern is None:
            return tail
        return self._pattern.sub(MASK, tail)
