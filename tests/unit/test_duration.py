"""Go durations: parsing what time.ParseDuration accepts, printing what Duration.String() prints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetkit.config import format_duration, parse_duration

# Go's own outputs for these values (fmt.Println(d) in Go 1.22).
CANONICAL = [
    (timedelta(0), "0s"),
    (timedelta(minutes=20), "20m0s"),
    (timedelta(hours=24), "24h0m0s"),
    (timedelta(hours=1, minutes=30), "1h30m0s"),
    (timedelta(hours=1), "1h0m0s"),
    (timedelta(seconds=-5), "-5s"),
    (timedelta(seconds=1.5), "1.5s"),
    (timedelta(milliseconds=300), "300ms"),
    (timedelta(microseconds=1500), "1.5ms"),
    (timedelta(microseconds=2), "2\u00b5s"),
    (timedelta(seconds=59, microseconds=999999), "59.999999s"),
    (timedelta(minutes=1), "1m0s"),
    (timedelta(hours=100, seconds=1, milliseconds=250), "100h0m1.25s"),
    (timedelta(microseconds=-1500), "-1.5ms"),
]


@pytest.mark.parametrize(("value", "text"), CANONICAL)
def test_format_matches_go(value: timedelta, text: str) -> None:
    """format_duration prints exactly what Go's Duration.String() prints."""
    assert format_duration(value) == text


@pytest.mark.parametrize(("value", "text"), CANONICAL)
def test_parse_reads_go_canonical_form(value: timedelta, text: str) -> None:
    """parse_duration reads Go's canonical form back to the same value."""
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("24h", timedelta(hours=24)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("0", timedelta(0)),
        ("-0", timedelta(0)),
        ("+3m", timedelta(minutes=3)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        ("1000us", timedelta(milliseconds=1)),
        ("1000\u03bcs", timedelta(milliseconds=1)),
        ("1500ns", timedelta(microseconds=2)),  # rounded to microseconds
        ("5m5m", timedelta(minutes=10)),
    ],
)
def test_parse_accepts_every_go_form(text: str, value: timedelta) -> None:
    """Forms ParseDuration accepts beyond the canonical one parse to the right value."""
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "not a Go duration"),
        ("-", "not a Go duration"),
        ("5", "missing unit"),
        ("20 minutes", "unknown unit"),
        ("1d", "unknown unit 'd'"),
        ("abc", "expected a number"),
        (".s", "expected a number"),
        ("1h 30m", "unknown unit"),
        ("3000000h", "out of range"),
    ],
)
def test_parse_rejects_what_go_rejects(text: str, complaint: str) -> None:
    """Text ParseDuration rejects raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=complaint):
        parse_duration(text)


# Go's range: int64 nanoseconds.
go_range = st.integers(min_value=-(2**63) // 1000 + 1, max_value=(2**63 - 1) // 1000).map(
    lambda us: timedelta(microseconds=us)
)


@given(go_range)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    """Any duration in Go's range formats to text that parses back to the same value."""
    assert parse_duration(format_duration(value)) == value


@given(go_range)
def test_formatted_text_is_canonical(value: timedelta) -> None:
    """Formatting is a fixed point: parse then format gives the same text."""
    text = format_duration(value)
    assert format_duration(parse_duration(text)) == text
