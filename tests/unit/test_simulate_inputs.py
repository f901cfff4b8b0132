"""The simulator's inputs: boot-time specs, traces (CSV and GitLab's export), workloads."""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetkit.errors import ConfigError
from fleetkit.simulate import (
    DEFAULT_START,
    PRESETS,
    BootTime,
    Poisson,
    Workday,
    generate,
    parse_boot_time,
    parse_trace,
    parse_workload,
    read_trace,
    write_csv,
)

# --- boot time ---------------------------------------------------------------


def test_fixed_uniform_lognormal_and_list() -> None:
    rng = random.Random(1)
    assert parse_boot_time("60s").draw(rng) == 60.0
    assert parse_boot_time("0s").draw(rng) == 0.0
    assert parse_boot_time("1m30s") == BootTime("fixed", (90.0,), "1m30s")
    uniform = parse_boot_time("40s..90s")
    draws = [uniform.draw(rng) for _ in range(2000)]
    assert 40.0 <= min(draws) < 41.0
    assert 89.0 < max(draws) <= 90.0
    lognormal = parse_boot_time("lognormal:50s,0.3")
    draws = [lognormal.draw(rng) for _ in range(4000)]
    assert statistics.median(draws) == pytest.approx(50.0, rel=0.05)
    assert lognormal.mean == pytest.approx(statistics.fmean(draws), rel=0.03)
    listed = parse_boot_time("41s,38s,55s")
    assert {listed.draw(rng) for _ in range(200)} == {41.0, 38.0, 55.0}


def test_presets_and_a_file(tmp_path: Path) -> None:
    for name, boot in PRESETS.items():
        assert parse_boot_time(name) is boot
    assert PRESETS["ec2-mac"].mean > PRESETS["windows-vm"].mean > PRESETS["linux-vm"].mean
    assert PRESETS["microvm"].mean < 1.0
    samples = tmp_path / "boots.txt"
    samples.write_text("# measured on Monday\n41s\n\n52.5  # a slow one\n")
    assert parse_boot_time(f"@{samples}").values == (41.0, 52.5)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "empty"),
        ("fast", "unknown preset 'fast'"),
        ("90s..40s", "high end is below its low end"),
        ("lognormal:50s", "MEDIAN,SIGMA"),
        ("lognormal:50s,-1", "sigma"),
        ("-5s", ">= 0"),
        ("10 minutes", "Go duration"),
        ("@/nonexistent/boots.txt", "No such file"),
    ],
)
def test_bad_boot_specs_say_what_and_where(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_boot_time(spec)
    text = str(caught.value)
    assert text.startswith("--boot-time: ")
    assert says in text
    assert "preset" in text
    assert "\n" not in text


# --- CSV traces -------------------------------------------------------------------


def test_csv_in_seconds_is_anchored_and_sorted() -> None:
    trace = parse_trace("created_at,duration,name\n30,60,b\n0,120.5,a\n30,5,c\n")
    assert trace.start == DEFAULT_START
    assert DEFAULT_START.weekday() == 0
    assert [(j.arrival, j.duration, j.name) for j in trace.jobs] == [
        (0.0, 120.5, "a"),
        (30.0, 60.0, "b"),
        (30.0, 5.0, "c"),
    ]
    assert trace.end == 30.0
    assert trace.job_seconds == 185.5


def test_csv_with_zones_starts_at_the_first_job_and_names_are_optional() -> None:
    text = (
        "duration,created_at,runner\n60,2026-03-02T09:00:30+01:00,r1\n30,2026-03-02T08:00:00Z,r1\n"
    )
    trace = parse_trace(text)
    assert trace.start == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert [(j.arrival, j.duration) for j in trace.jobs] == [(0.0, 30.0), (30.0, 60.0)]
    assert all(j.name for j in trace.jobs)


def test_every_bad_csv_row_is_reported_with_its_line() -> None:
    text = (
        "created_at,duration,name\n"  # line 1
        "0,60,ok\n"  # 2
        "10,-1,negative\n"  # 3
        "\n"  # 4: blank, ignored
        "twenty,60,word\n"  # 5
        "30\n"  # 6: too short
        "2026-03-02T09:00:00Z,60,mixed\n"  # 7: ISO after seconds
        "40,abc,nan\n"  # 8
    )
    with pytest.raises(ConfigError) as caught:
        parse_trace(text, source="jobs.csv")
    paths = [p.path for p in caught.value.problems]
    assert paths == ["line 3", "line 5", "line 6", "line 7", "line 8"]
    message = str(caught.value)
    assert message.startswith("jobs.csv: 5 problems:")
    assert "duration '-1' must be a number of seconds >= 0" in message
    assert "mixes forms" in message
    assert "at least 2 columns" in message


def test_a_naive_time_and_a_bad_header_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"line 2: .*no time zone"):
        parse_trace("created_at,duration\n2026-03-02T09:00:00,60\n")
    with pytest.raises(ConfigError, match=r"line 1: the header lacks duration"):
        parse_trace("created_at,seconds\n0,60\n")
    with pytest.raises(ConfigError, match="no jobs"):
        parse_trace("created_at,duration\n")


def test_unreadable_csv_is_an_error_at_its_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3: duration .* is not a number"):
        parse_trace("created_at,duration\n0,60\n1,6\x000\n")
    long_field = "x" * 200_000
    with pytest.raises(ConfigError, match=r"line 2: unreadable CSV: field larger"):
        parse_trace(f'created_at,duration\n"{long_field}",1\n')
    with pytest.raises(ConfigError, match=r"line 1: unreadable CSV: field larger"):
        parse_trace(f"created_at,{long_field}\n")


def test_many_bad_rows_are_counted_past_the_listed_ones() -> None:
    text = "created_at,duration\n" + "x,1\n" * 30
    with pytest.raises(ConfigError) as caught:
        parse_trace(text)
    assert len(caught.value.problems) == 21
    assert caught.value.problems[-1].message == "... and 10 more bad rows"


def test_write_csv_reads_back(tmp_path: Path) -> None:
    trace = generate(Workday(pipelines=30, days=1, seed=4))
    path = tmp_path / "trace.csv"
    write_csv(trace, path)
    again = read_trace(path)
    assert len(again.jobs) == len(trace.jobs)
    offset = trace.jobs[0].arrival
    for a, b in zip(trace.jobs, again.jobs, strict=True):
        assert b.arrival == pytest.approx(a.arrival - offset, abs=1e-3)
        assert b.duration == pytest.approx(a.duration, abs=1e-3)
        assert b.name == a.name


# --- GitLab's Jobs API export -----------------------------------------------------------


def _job(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": 1,
        "name": "test",
        "status": "success",
        "created_at": "2026-03-02T09:00:00.000Z",
        "started_at": "2026-03-02T09:01:00.000Z",
        "finished_at": "2026-03-02T09:06:00.000Z",
        "duration": 300.0,
        "queued_duration": 12.5,
    }
    base.update(fields)
    return base


def test_gitlab_export_arrival_is_when_the_job_became_pending() -> None:
    jobs = [
        _job(id=1),
        _job(id=2, name="lint", duration=None, queued_duration=None),
        _job(id=3, status="manual", started_at=None, finished_at=None, duration=None),
    ]
    trace = parse_trace(json.dumps(jobs, indent=2))
    assert trace.not_started == 1
    by_name = {j.name: j for j in trace.jobs}
    assert set(by_name) == {"1:test", "2:lint"}
    # Pending at started_at - queued_duration; without queued_duration, created_at.
    assert trace.start == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert by_name["2:lint"].arrival == 0.0
    assert by_name["1:test"].arrival == 60.0 - 12.5
    assert by_name["2:lint"].duration == 300.0  # finished_at - started_at


def test_bad_export_jobs_are_reported_with_their_lines() -> None:
    jobs = [
        _job(id=1),
        _job(id=2, created_at=None, started_at=None),
        _job(id=3, duration="soon"),
        7,
    ]
    text = json.dumps(jobs, indent=2)
    with pytest.raises(ConfigError) as caught:
        parse_trace(text, source="export.json")
    problems = caught.value.problems
    assert [p.path.split(" (")[1] for p in problems] == ["job [1])", "job [2])", "job [3])"]
    lines = text.splitlines()
    for problem in problems:
        line = int(problem.path.split()[1])
        assert lines[line - 1].strip() in ("{", "7")
    assert "created_at is missing" in problems[0].message
    assert "duration 'soon' is not a number" in problems[1].message


def test_deeply_nested_json_is_refused_without_a_traceback() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_trace("[" + "[" * 100_000 + "]" * 100_001)


def test_broken_json_names_its_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3: invalid JSON"):
        parse_trace('[\n  {"id": 1},\n  {"id": ]')


# --- workloads --------------------------------------------------------------------------


def test_workday_shape_weekends_and_pipelines() -> None:
    trace = generate(parse_workload("workday:pipelines=600,jobs=5,days=14,seed=2"))
    assert trace.end == 14 * 86400.0
    assert trace == generate(parse_workload("workday:pipelines=600,jobs=5,days=14,seed=2"))
    per_hour = [0] * 24
    weekday = weekend = 0
    for job in trace.jobs:
        at = trace.start.timestamp() + job.arrival
        local = datetime.fromtimestamp(at, UTC)
        if local.weekday() >= 5:
            weekend += 1
        else:
            weekday += 1
            per_hour[local.hour] += 1
    # About 600 pipelines of 5 jobs on each of 10 weekdays.
    assert weekday == pytest.approx(600 * 5 * 10, rel=0.05)
    assert weekend == pytest.approx(600 * 5 * 4 * 0.05, rel=0.25)
    assert per_hour[3] < per_hour[7] < per_hour[9]  # night, morning ramp, peak
    assert per_hour[12] < 0.75 * per_hour[11]  # the lunch dip
    assert per_hour[20] < per_hour[18] < per_hour[16]  # the evening tail
    # Pipelines arrive as batches: jobs of one pipeline share an arrival.
    first = [j for j in trace.jobs if j.name.startswith("pipeline-1-")]
    assert len({j.arrival for j in first}) == 1
    durations = sorted(j.duration for j in trace.jobs)
    assert statistics.median(durations) == pytest.approx(300.0, rel=0.05)


def test_flat_shape_and_a_time_zone() -> None:
    flat = generate(Workday(pipelines=400, days=1, shape="flat"))
    hours = [0] * 24
    for job in flat.jobs:
        hours[int(job.arrival // 3600)] += 1
    assert min(hours) > 0.4 * max(hours)
    berlin = generate(parse_workload("workday:days=1,tz=Europe/Berlin"))
    assert berlin.start.utcoffset() is not None
    assert berlin.start.hour == 0
    assert str(berlin.start.tzinfo) == "Europe/Berlin"


def test_poisson_workload_rate_and_mean() -> None:
    trace = generate(Poisson(rate=120, duration=60, days=2, seed=5))
    assert len(trace.jobs) == pytest.approx(120 * 48, rel=0.05)
    assert statistics.fmean(j.duration for j in trace.jobs) == pytest.approx(60, rel=0.05)


def test_the_command_seed_applies_unless_the_spec_sets_one() -> None:
    assert parse_workload("workday", seed=9) == Workday(seed=9)
    assert parse_workload("workday:seed=3", seed=9) == Workday(seed=3)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("weekly", "unknown workload 'weekly'"),
        ("workday:rate=3", "--workload workday:rate: expected KEY=VALUE"),
        ("workday:pipelines=-3", "must be a number >= 0"),
        ("workday:jobs=0.5", "at least 1 job"),
        ("workday:tz=Mars/Olympus", "unknown time zone"),
        ("workday:shape=spiky", "unknown shape"),
        ("poisson:duration=0s", "above 0s"),
    ],
)
def test_bad_workloads_name_the_key(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_workload(spec)
