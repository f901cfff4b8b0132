"""Writing a :class:`Config` back as TOML that :func:`~fleetkit.config.load` reads equal.

Values equal to their default are left out, durations are written in Go's
canonical form and ``extra`` data (other executors' sections, unmodelled keys)
is written back as it was read. The writer handles every value tomllib
produces, including nested arrays of tables inside ``plugin_config``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import attrs

from fleetkit.config._duration import format_duration
from fleetkit.config._schema import Config
from fleetkit.model import Duration

__all__ = ["dump", "toml_text"]


def dump(config: Config) -> str:
    """``config`` as TOML text; secrets are written as they are (this is the file)."""
    return toml_text(_as_table(config))


def toml_text(table: Mapping[str, Any]) -> str:
    """Any table of TOML values (as tomllib returns them) as TOML text."""
    lines: list[str] = []
    _write_table(lines, (), table, array=False)
    return "\n".join(lines).lstrip("\n") + "\n"


def _as_table(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attrs.fields(type(obj)):
        if a.name == "warnings":
            continue
        value = getattr(obj, a.name)
        if a.name == "extra":
            out.update(value)
            continue
        if value is None or value == _default(a):
            continue
        out[a.name] = _plain(value)
    return out


def _default(a: attrs.Attribute[Any]) -> Any:
    default = a.default
    factory = getattr(default, "factory", None)
    if callable(factory):
        default = factory()
    return a.converter(default) if callable(a.converter) else default


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta | Duration):
        return format_duration(value)
    if attrs.has(type(value)):
        return _as_table(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _write_table(
    lines: list[str], path: tuple[str, ...], table: Mapping[str, Any], *, array: bool
) -> None:
    if path:
        dotted = ".".join(_key(p) for p in path)
        lines.append("")
        lines.append(f"[[{dotted}]]" if array else f"[{dotted}]")
    # TOML requires a table's plain keys before any of its sub-tables.
    nested = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_inline(value)}")
    for key, value in nested:
        if isinstance(value, dict):
            _write_table(lines, (*path, key), value, array=False)
        else:
            for item in value:
                _write_table(lines, (*path, key), item, array=True)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
}
_ESCAPES.update({c: f"\\u{c:04x}" for c in [*range(0x20), 0x7F] if c not in _ESCAPES})


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _inline(value: Any) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            return repr(value)  # inf, -inf, nan and 1e+16 are all valid TOML floats
        case str():
            return _string(value)
        case datetime() | date() | time():
            return value.isoformat()
        case list() | tuple():
            return "[" + ", ".join(_inline(v) for v in value) + "]"
        case Mapping():
            return "{" + ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
