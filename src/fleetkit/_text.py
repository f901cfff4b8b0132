"""Text from others (job names, job output, provider messages) on its way to a
terminal or a one-line log: what counts as a control character, and how to
show one as data.

A job name with a newline forges log lines (``ERROR: Job failed``); ANSI and
OSC escapes in job output set the window title or clear the screen of whoever
watches ``fleetkit run``. Names refuse control characters outright
(:func:`control_characters`); output, which must keep its bytes in log files,
is neutralised only where it reaches a terminal (:func:`printable`).
"""

from __future__ import annotations

import re

__all__ = ["control_characters", "key_path", "printable"]

# C0 and C1 controls, DEL, the line and paragraph separators, and the bidi
# embedding/override/isolate marks that reorder what a reader sees
# ("Trojan Source"). Tab is left to the caller.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def key_path(parent: str, key: object) -> str:
    """``parent.key``, or ``parent['odd key']`` when the key is not a plain word
    (a key is anyone's text: quoted, a newline or an escape in it stays data)."""
    text = str(key)
    if _BARE_KEY.fullmatch(text):
        return f"{parent}.{text}" if parent else text
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    return f"{parent}[{shown}]"


def control_characters(text: str, *, tab: bool = False) -> list[str]:
    """The distinct control characters in ``text`` as escapes (``'\\n'``,
    ``'\\x1b'``), in order of first appearance; tab counts only when ``tab``."""
    found = dict.fromkeys(m.group() for m in _CONTROL.finditer(text))
    if tab and "\t" in text:
        found = {"\t": None, **found}
    return [_escape(c) for c in found]


def printable(text: str) -> str:
    """``text`` with every control character but tab shown as its escape
    (``\\x1b[2J`` arrives as the seven characters ``\\x1b[2J``), so that it
    can neither move the cursor, nor set a title, nor start a line of its own."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"
