"""Masking secrets out of a streamed log.

A job's output arrives in chunks cut wherever the transport cut them, so a
secret may be split across two chunks. :class:`Masker` holds back just enough
text (one byte less than the longest secret) to decide every match, and so
replaces each occurrence however the stream was cut.

A stream can also end in the middle of a secret: a job killed at its timeout
or cancelled while printing one. What is held back then ends with the first
characters of a secret, and showing them would give away most of it (19 of 21
characters in the case that found this). At the end, a tail that is the start
of a secret is masked too, however short.
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

    __slots__ = ("_decoder", "_hold", "_pattern", "_pending", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that where one secret contains another the whole of
        # the longer one is hidden rather than leaving its tail in the log.
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = tuple(unique)
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
        """Mask and return whatever is held back; the stream has ended.

        A tail that is the beginning of a secret (the stream was cut inside
        it) is masked as well.
        """
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if self._pattern is None:
            return tail
        out: list[str] = []
        pos = 0
        for match in self._pattern.finditer(tail):
            out += (tail[pos : match.start()], MASK)
            pos = match.end()
        rest = tail[pos:]
        cut = self._cut_secret(rest)
        if cut:
            rest = rest[:-cut] + MASK
        out.append(rest)
        return "".join(out)

    def _cut_secret(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins some secret."""
        longest = 0
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(text)), longest, -1):
                if text.endswith(secret[:size]):
                    longest = size
                    break
        return longest
