"""The TOML jobs file of `fleetkit run`: jobs, defaults, parallel, and errors with paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from fleetkit.errors import ConfigError
from fleetkit.jobs import Variable, load_jobs, parse_jobs


def test_jobs_are_numbered_in_order_and_take_defaults() -> None:
    """Jobs get ids from 1 in file order and inherit [defaults], merged key by key."""
    jobs = parse_jobs(
        """
        [defaults]
        timeout = "90s"
        shell = "sh"
        variables = { A = "default", B = "b" }

        [[job]]
        name = "first"
        script = ["echo one", "echo two"]

        [[job]]
        name = "second"
        script = "exit 1"
        shell = "bash"
        allow_failure = true
        timeout = 5
        variables = { A = "own" }
        """
    )
    first, second = jobs
    assert (first.id, first.name, first.script) == (1, "first", "echo one\necho two")
    assert (first.shell, float(first.timeout)) == ("sh", 90.0)
    assert first.timeout == timedelta(seconds=90)
    assert first.environment() == {"A": "default", "B": "b"}
    assert (second.id, second.shell, second.allow_failure) == (2, "bash", True)
    assert second.timeout == timedelta(seconds=5)
    assert second.environment() == {"A": "own", "B": "b"}


def test_parallel_expands_into_numbered_jobs() -> None:
    """parallel = 3 gives three jobs named 'n i/3' with CI_NODE_INDEX and CI_NODE_TOTAL."""
    jobs = parse_jobs('[[job]]\nname = "t"\nscript = "true"\nparallel = 3\n')
    assert [j.name for j in jobs] == ["t 1/3", "t 2/3", "t 3/3"]
    assert [j.id for j in jobs] == [1, 2, 3]
    assert jobs[2].environment() == {"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "3"}


def test_masked_variable_table() -> None:
    """{ value, masked } marks a variable masked."""
    (job,) = parse_jobs(
        '[[job]]\nname = "t"\nscript = "true"\n'
        '[job.variables]\nTOKEN = { value = "abcdef123", masked = true }\n'
    )
    assert job.variables == (Variable("TOKEN", "abcdef123", masked=True),)


def test_every_problem_is_reported_with_its_path() -> None:
    """One pass reports all problems, each located by table index and key."""
    with pytest.raises(ConfigError) as info:
        parse_jobs(
            """
            extra = 1
            [[job]]
            script = "true"
            colour = "red"
            [[job]]
            name = "x"
            script = "true"
            timeout = "5 minutes"
            parallel = 0
            [job.variables]
            "1A" = "b"
            S = { value = "hidden-value", masked = "yes" }
            """,
            source="jobs.toml",
        )
    err = info.value
    assert err.source == "jobs.toml"
    assert sorted(p.path for p in err.problems) == [
        "extra",
        "job[0].colour",
        "job[0].name",
        "job[1].parallel",
        "job[1].timeout",
        "job[1].variables.1A",
        "job[1].variables.S",
    ]
    assert "hidden-value" not in str(err)


def test_empty_file_is_an_error() -> None:
    """A file without [[job]] tables is refused: there is nothing to run."""
    with pytest.raises(ConfigError, match="no \\[\\[job\\]\\] tables"):
        parse_jobs("")


def test_duplicate_ids_are_an_error() -> None:
    """Two jobs with the same id are refused."""
    with pytest.raises(ConfigError, match="id 7 also used"):
        parse_jobs(
            '[[job]]\nid = 7\nname = "a"\nscript = "x"\n[[job]]\nid = 7\nname = "b"\nscript = "x"\n'
        )


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    """Broken TOML and a missing file are ConfigErrors naming the file."""
    bad = tmp_path / "jobs.toml"
    bad.write_text("[[job]\n")
    with pytest.raises(ConfigError, match=r"jobs\.toml: not valid TOML"):
        load_jobs(bad)
    with pytest.raises(ConfigError, match="cannot read jobs file"):
        load_jobs(tmp_path / "missing.toml")


def test_example_jobs_file_loads() -> None:
    """examples/jobs.toml is valid and has about twenty jobs, one allowed to fail."""
    root = Path(__file__).resolve().parents[2]
    jobs = load_jobs(root / "examples" / "jobs.toml")
    assert 15 <= len(jobs) <= 25
    assert [j.allow_failure for j in jobs].count(True) == 1
