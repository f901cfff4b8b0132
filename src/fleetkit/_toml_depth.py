"""How deeply a TOML text nests arrays and inline tables, found before parsing.

``tomllib`` recurses once per level, so a hostile file of 3,000 ``[`` ends in a
RecursionError, or, where the recursion limit was raised, in a parse that
succeeds; which one depends on the stack at the time. Measuring the nesting
first, with a scan that skips strings and comments, makes the refusal the same
every time and keeps the parser's recursion bounded.
"""

from __future__ import annotations

import re

__all__ = ["nesting_depth"]

# Strings and comments first (their brackets do not count), then one bracket.
_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""(?:""?)?'
    r"|'''.*?'''(?:''?)?"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[\[\]{}]",
    re.DOTALL,
)


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in ``text`` outside strings and
    comments (a table header such as ``[[runners]]`` counts 2)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
    return deepest
