"""Issue 10, the input side, in the pure parts: hostile values in config files,
jobs files and policies come out as clean errors (a ConfigError whose problems
each name their path, on one line), never as another exception.

Hypothesis mutates a realistic document one leaf (or one new key) at a time
with values chosen to hurt: NUL and control characters, huge and non-finite
numbers, deep nesting, tzdata directory names, cron lines that never fire,
dates at the edges of what datetime holds. ``tests/unit/test_state_store.py``
fuzzes state.json the same way; ``tests/integration/test_hostile_input.py``
replays each item of the issue through the ``fleetkit`` command.
"""

from __future__ import annotations

import io
import math
import tomllib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetkit._text import control_characters, printable
from fleetkit._toml_depth import nesting_depth
from fleetkit.config import check
from fleetkit.config._dump import toml_text
from fleetkit.errors import ConfigError
from fleetkit.jobs import parse_jobs
from fleetkit.policy import Policy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = tomllib.loads((EXAMPLES / "local.toml").read_text())
JOBS = tomllib.loads((EXAMPLES / "jobs.toml").read_text())

# --- hostile values -----------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "/tmp/a\x00b",
    "x\nERROR: Job failed",
    "\x1b]0;pwned\x07\x1b[2J",
    "deploy\u202eod",
    "America",
    "Europe/",
    "../../etc/passwd",
    "/etc/localtime",
    "A" * 300,
    "0 0 31 2 *",
    "5-1 * * * *",
    "* * * * fri-mon",
    "*/0 * * * *",
    "-1s",
    "-9223372036854775808ns",
    "9223372036854775807ns",
    "2562048h",
    "1e999s",
    "nan",
    "inf",
    "0",
    "/dev/zero",
    "local",
    "aws",
    "x" * 5000,
]
NASTY_NUMBERS = [
    0,
    -1,
    2**63 - 1,
    -(2**63),
    10**30,
    -(10**30),
    math.inf,
    -math.inf,
    math.nan,
    1e308,
    -0.0,
    0.5,
]


def _deep(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"b": value}
    return value


hostile_values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.sampled_from(NASTY_NUMBERS),
    st.text(max_size=40),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.sampled_from([datetime(1, 1, 1), date(9999, 12, 31), time(23, 59, 59)]),
    st.integers(20, 60).map(_deep),
    st.lists(st.sampled_from(NASTY_STRINGS), max_size=3),
    st.dictionaries(st.sampled_from(NASTY_STRINGS), st.sampled_from(NASTY_STRINGS), max_size=2),
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _tables(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [p for p in [(), *_paths(node)] if isinstance(_at(node, p), dict)]


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with one to three leaves replaced, or keys added, by hostile values."""
    document: dict[str, Any] = _copy(base)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            path = draw(st.sampled_from(_paths(document)))
            parent = _at(document, path[:-1])
            parent[path[-1]] = draw(hostile_values)
        else:
            table = _at(document, draw(st.sampled_from(_tables(document))))
            key = draw(st.sampled_from(NASTY_STRINGS[1:8]) | st.text(min_size=1, max_size=8))
            table[key] = draw(hostile_values)
    return document


def _one_line_problems(error: ConfigError) -> None:
    assert error.problems
    for problem in error.problems:
        assert "\n" not in problem.path
        assert "\n" not in problem.message, problem
        assert not control_characters(problem.message, tab=True), problem


# --- config files ---------------------------------------------------------------

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(mutated(CONFIG))
def test_a_hostile_config_loads_or_is_a_config_error(document: dict[str, Any]) -> None:
    """A config with hostile values anywhere loads, or lists clean problems; what loads
    also yields limits, a schedule and an active policy at the edges of time."""
    try:
        text = toml_text(document)
    except (TypeError, ValueError):
        return  # a value TOML cannot hold (NaN key order and the like): nothing to read
    found = check(text)
    if found.config is None:
        _one_line_problems(ConfigError(found.problems))
        return
    for _, runner in found.config.autoscaled_runners():
        assert runner.autoscaler is not None
        runner.autoscaler.limits()
        schedule = runner.autoscaler.schedule()
        for at in (datetime(1900, 1, 1), datetime(2026, 3, 2, 9), datetime(9000, 12, 31, 23, 59)):
            schedule.active(at)


# The whole command builds providers per example: a smaller budget keeps CI fast.
@settings(FUZZ, max_examples=min(settings().max_examples, 30))
@given(document=mutated(CONFIG))
def test_fleetkit_validate_on_a_hostile_config_exits_0_or_1(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The whole ``fleetkit validate`` path (config, then each runner's provider and
    connectors built) answers 0 or 1 and prints one line per problem."""
    from fleetkit.cli import build_parser
    from fleetkit.cli import validate as command

    try:
        text = toml_text(document)
    except (TypeError, ValueError):
        return
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["validate", str(path), "--at", "2026-03-02T09:00"])
    status = command.run(args, out=out, err=err)
    assert status in (0, 1)
    assert status == 0 or "problem" in err.getvalue().splitlines()[0]
    for line in (out.getvalue() + err.getvalue()).splitlines():
        assert not control_characters(line), line


# --- jobs files -------------------------------------------------------------------


@FUZZ
@given(mutated(JOBS))
def test_a_hostile_jobs_file_parses_or_is_a_config_error(document: dict[str, Any]) -> None:
    """A jobs file with hostile values anywhere gives jobs with one-line names, or a
    ConfigError whose problems name their paths."""
    try:
        text = toml_text(document)
    except (TypeError, ValueError):
        return
    try:
        jobs = parse_jobs(text, source="jobs.toml")
    except ConfigError as exc:
        _one_line_problems(exc)
        return
    for job in jobs:
        assert not control_characters(job.name, tab=True)
        assert job.timeout.total_seconds() > 0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_a_jobs_file_are_jobs_or_a_config_error(data: bytes) -> None:
    """Any bytes, decoded as the loader decodes them: jobs or a ConfigError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        jobs = len(parse_jobs(text))
    except ConfigError as exc:
        jobs = len(exc.problems)  # an error always says what is wrong
    assert jobs > 0


def test_a_jobs_file_nested_beyond_the_parser_is_a_config_error() -> None:
    """3,000 nested arrays are refused before tomllib sees them (its recursion would
    end one way or another depending on the stack), the same way every time."""
    for depth in (33, 3000, 100_000):
        with pytest.raises(ConfigError, match="nested more than 32 deep: not a jobs file"):
            parse_jobs("job = " + "[" * depth + "]" * depth + "\n")


def test_the_same_depth_in_a_config_is_one_problem() -> None:
    """Config files get the same bound, before the parser."""
    for depth in (33, 100_000):
        (problem,) = check("a = " + "[" * depth + "]" * depth + "\n").problems
        assert problem.message.startswith("nested more than 32 arrays or tables deep")


def _nest_values(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3)


@given(st.recursive(st.integers() | st.text(max_size=5), _nest_values, max_leaves=20))
def test_the_depth_scan_counts_what_the_parser_nests(value: Any) -> None:
    """The scan before parsing measures exactly the nesting of inline arrays that
    tomllib builds; brackets inside strings and comments do not count."""
    text = toml_text({"s": "[[[{{{", "t": "]]]", "a": value}) + "# [[[[[\n"
    assert nesting_depth(text) == _depth(tomllib.loads(text)["a"])


def test_the_depth_scan_counts_inline_tables_and_skips_multiline_strings() -> None:
    """Inline tables count as a level; brackets in every kind of string do not."""
    text = 'x = { a = [ { b = 1 } ] }\nm = """ [[[[ \\""" ]]]] """\nl = \'\'\' {{{{ \'\'\'\n'
    assert tomllib.loads(text)["x"] == {"a": [{"b": 1}]}
    assert nesting_depth(text) == 3


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(v) for v in items), default=0)
    return 0


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("x\nERROR: Job failed", "\\n"),
        ("x\rERROR", "\\r"),
        ("\x1b]0;pwned\x07", "\\x1b, \\x07"),
        ("a\tb", "\\t"),
        ("deploy\u202eod", "\\u202e"),
        ("line\u2028break", "\\u2028"),
        ("c1\x9bcontrol", "\\x9b"),
    ],
)
def test_job_names_refuse_control_characters(name: str, shown: str) -> None:
    """Item 15: a name is one line of text; the problem shows the characters as escapes."""
    text = f'[[job]]\nname = {toml_text({"n": name}).split("=", 1)[1].strip()}\nscript = "true"\n'
    with pytest.raises(ConfigError, match=r"job\[0\]\.name: must be one line") as caught:
        parse_jobs(text)
    assert shown in str(caught.value)
    _one_line_problems(caught.value)


def test_a_huge_integer_timeout_is_a_problem_not_an_overflow() -> None:
    """Item 12: timeout = 10**16 seconds was an OverflowError in timedelta."""
    with pytest.raises(ConfigError, match=r"job\[0\]\.timeout: .* out of range"):
        parse_jobs('[[job]]\nname = "x"\nscript = "true"\ntimeout = 10000000000000000\n')


# --- policies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"timezone": "America"}, "it is a region; name a zone in it, e.g. 'America/"),
        ({"timezone": "A" * 300}, "is not an IANA time zone name"),
        ({"timezone": "Europe/Berlin\x00"}, "is not an IANA time zone name"),
        ({"timezone": "../../etc/passwd"}, "is not an IANA time zone name"),
        ({"timezone": "zone.tab"}, "is not an IANA time zone name"),
        ({"periods": ["0 0 31 2 *"]}, "never matches"),
        ({"periods": ["0 0 31 4,6,9,11 *"]}, "never matches"),
        ({"periods": ["0 0 30 2 1#5"]}, "never matches"),
        ({"periods": ["* 18-8 * * *"]}, "'18-8', which runs backwards"),
        ({"periods": ["* * * dec-jan *"]}, "'dec-jan', which runs backwards"),
        ({"periods": ["* * * * 5-1/2"]}, "'5-1/2', which runs backwards"),
        ({"periods": ["* " * 200]}, "is not a 5-field cron expression"),
    ],
)
def test_policies_refuse_what_never_applies_or_cannot_be_read(
    kwargs: dict[str, Any], expected: str
) -> None:
    """Items 7, 12 and 14: each is a ValueError with the field and the reason (the
    config loader turns it into a problem at its TOML path)."""
    with pytest.raises(ValueError, match=r"^(timezone|periods): ") as caught:
        Policy(**kwargs)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "period",
    ["0 0 29 2 *", "0 0 31 * *", "0 0 L 2 *", "0 9 * * 1#5", "* 22-23,0-5 * * *", "* * 31 2 1"],
)
def test_rare_but_real_periods_are_kept(period: str) -> None:
    """Leap days, the 31st of some months, the last day, a fifth Monday, a night
    written as two ranges, and a day-of-month or day-of-week rule all fire."""
    Policy(periods=(period,))


def test_the_config_loader_reports_a_tzdata_directory_at_its_path() -> None:
    """Item 7/12 through the loader: the problem is at policy[0].timezone."""
    text = (
        (EXAMPLES / "local.toml")
        .read_text()
        .replace('idle_time = "1m0s"', 'idle_time = "1m0s"\n      timezone = "America"')
    )
    found = check(text)
    (problem,) = found.problems
    assert problem.path == "runners[0].autoscaler.policy[0].timezone"
    assert "it is a region" in problem.message


# --- the terminal ----------------------------------------------------------------------


@given(st.text())
def test_printable_text_holds_no_control_character_but_tab(text: str) -> None:
    """Whatever a job prints, printable() leaves nothing a terminal would act on, and
    is idempotent."""
    shown = printable(text)
    assert control_characters(shown) == []
    assert printable(shown) == shown


def test_printable_shows_escapes_as_text() -> None:
    """The summary tail's case: an OSC title, a clear-screen, a carriage return."""
    assert printable("\x1b]0;t\x07\x1b[2Ja\rb\tc") == "\\x1b]0;t\\x07\\x1b[2Ja\\rb\tc"


def test_edges_of_time_are_refused_by_plan_at() -> None:
    """Item 13/14: --at years whose zone offsets overflow datetime are a usage error."""
    import argparse

    from fleetkit.cli._common import instant

    for text in ("0001-01-01T00:00", "9999-12-31T23:59"):
        with pytest.raises(argparse.ArgumentTypeError, match="outside the years"):
            instant(text)
    assert instant("2026-03-02T09:00+01:00").utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt(), BaseExceptionGroup("task group", [KeyboardInterrupt()])],
    ids=["bare", "in a task group"],
)
def test_ctrl_c_while_the_command_starts_is_a_quiet_130(
    monkeypatch: pytest.MonkeyPatch, interrupt: BaseException
) -> None:
    """Item 12: a Ctrl-C while the parser is built (the subcommands import) or from
    inside a task group that did not watch signals yet is exit 130, not a traceback."""
    import fleetkit.cli

    def interrupted() -> Any:
        raise interrupt

    monkeypatch.setattr(fleetkit.cli, "build_parser", interrupted)
    assert fleetkit.cli.main(["validate", "x.toml"]) == 130


def test_other_errors_in_a_group_are_not_taken_for_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group holding anything besides KeyboardInterrupt still propagates."""
    import fleetkit.cli

    def broken() -> Any:
        raise BaseExceptionGroup("task group", [KeyboardInterrupt(), RuntimeError("bug")])

    monkeypatch.setattr(fleetkit.cli, "build_parser", broken)
    with pytest.raises(BaseExceptionGroup):
        fleetkit.cli.main(["validate", "x.toml"])
