"""The jobs file: a TOML list of ``[[job]]`` tables for ``fleetkit run``.

::

    [defaults]                 # optional; any job key except name, id and parallel
    shell = "bash"             # default: the runner's shell (config.toml's `shell`)
    timeout = "1m"

    [[job]]
    name = "unit tests"
    runner = "linux"           # optional: the [[runners]] entry by name; or
    tags = ["docker"]          # a runner whose tags include these
    script = ["make test"]     # a string, or a list of lines as in .gitlab-ci.yml
    parallel = 3               # three jobs, "unit tests 1/3" ... with CI_NODE_INDEX
    allow_failure = false
    [job.variables]
    PLAIN = "value"
    TOKEN = { value = "s3cret-value", masked = true }

Every problem in the file is reported at once, each with its path
(``job[2].timeout``), as a :class:`~fleetkit.errors.ConfigError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from fleetkit._files import MiB, read_bounded
from fleetkit._text import key_path
from fleetkit._toml_depth import nesting_depth
from fleetkit.config import parse_duration
from fleetkit.errors import ConfigError, Problem
from fleetkit.jobs._job import DEFAULT_TIMEOUT, SHELLS, Job, Variable, is_variable_name

__all__ = ["load_jobs", "parse_jobs"]

_JOB_KEYS = {
    "id",
    "name",
    "script",
    "shell",
    "variables",
    "timeout",
    "allow_failure",
    "image",
    "parallel",
    "runner",
    "tags",
}
_DEFAULT_KEYS = _JOB_KEYS - {"id", "name", "parallel", "script"}
# A jobs file of 10,000 jobs is a few megabytes; /dev/zero is not a jobs file.
_MAX_BYTES = 16 * MiB
# Go's time.Duration range, as for every other duration fleetkit reads.
_MAX_SECONDS = ((1 << 63) - 1) // 10**9
# A jobs file nests a script list and a variable table: 32 levels is plenty,
# and keeps tomllib's recursion bounded whatever the stack.
_MAX_DEPTH = 32
_TOO_DEEP = f"arrays or tables nested more than {_MAX_DEPTH} deep: not a jobs file"
# GitLab's bounds for `parallel:`.
_MAX_PARALLEL = 200


def load_jobs(path: str | Path) -> list[Job]:
    """Read a jobs file. Raises :class:`~fleetkit.errors.ConfigError` naming the
    file and every problem in it (a missing file included)."""
    source = str(path)
    try:
        raw = read_bounded(path, _MAX_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read jobs file: {exc.strerror}", source=source) from exc
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"not a usable path: {exc}", source=repr(source)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}): a jobs file is TOML, which is UTF-8",
            source=source,
        ) from None
    return parse_jobs(text, source=source)


def parse_jobs(text: str, *, source: str | None = None) -> list[Job]:
    """Parse the text of a jobs file into jobs, numbered from 1 unless given ``id``."""
    if nesting_depth(text) > _MAX_DEPTH:
        raise ConfigError(_TOO_DEEP, source=source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from exc
    except RecursionError:
        raise ConfigError(_TOO_DEEP, source=source) from None
    problems: list[Problem] = []
    for key in sorted(set(doc) - {"job", "defaults"}):
        problems.append(
            Problem(key_path("", key), "unknown key (expected [[job]] tables and [defaults])")
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append(Problem("defaults", "expected a table"))
        defaults = {}
    for key in sorted(set(defaults) - _DEFAULT_KEYS):
        problems.append(Problem(key_path("defaults", key), _unknown(key, _DEFAULT_KEYS)))
    tables = doc.get("job", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(Problem("job", "expected [[job]] tables"))
        tables = []
    if not tables and not problems:
        problems.append(Problem("job", "no [[job]] tables: nothing to run"))

    jobs: list[Job] = []
    for index, table in enumerate(tables):
        jobs += _jobs_of(table, defaults, f"job[{index}]", len(jobs) + 1, problems)
    seen: dict[int, str] = {}
    for job in jobs:
        if job.id in seen:
            problems.append(
                Problem(f"job {job.name!r}.id", f"id {job.id} also used by {seen[job.id]!r}")
            )
        seen.setdefault(job.id, job.name)
    if problems:
        raise ConfigError(problems, source=source)
    return jobs


def _unknown(key: str, allowed: set[str]) -> str:
    shown = key if len(key) <= 40 else key[:37] + "..."
    return f"unknown key {shown!r} (expected one of {', '.join(sorted(allowed))})"


def _jobs_of(
    table: Mapping[str, Any],
    defaults: Mapping[str, Any],
    path: str,
    next_id: int,
    problems: list[Problem],
) -> list[Job]:
    before = len(problems)
    for key in sorted(set(table) - _JOB_KEYS):
        problems.append(Problem(key_path(path, key), _unknown(key, _JOB_KEYS)))
    merged = {**defaults, **table}
    # A default table of variables is merged key by key, not replaced.
    if isinstance(defaults.get("variables"), dict) and isinstance(table.get("variables"), dict):
        merged["variables"] = {**defaults["variables"], **table["variables"]}

    def where(key: str) -> str:
        return f"{path}.{key}" if key in table else f"defaults.{key}"

    name = merged.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(Problem(f"{path}.name", "required: a non-empty string"))
        name = ""
    script = merged.get("script")
    if isinstance(script, list) and all(isinstance(line, str) for line in script):
        script = "\n".join(script)
    if not isinstance(script, str) or not script.strip():
        problems.append(
            Problem(f"{path}.script", "required: shell text, or a list of lines (strings)")
        )
        script = ""
    shell = merged.get("shell")  # None: the runner's shell
    if shell is not None and (not isinstance(shell, str) or shell not in SHELLS):
        shown = repr(shell[:40]) if isinstance(shell, str) else f"a {type(shell).__name__}"
        problems.append(Problem(where("shell"), f"expected one of {sorted(SHELLS)}, got {shown}"))
    timeout = _timeout(merged.get("timeout"), where("timeout"), problems)
    allow_failure = merged.get("allow_failure", False)
    if not isinstance(allow_failure, bool):
        problems.append(Problem(where("allow_failure"), "expected true or false"))
    image = merged.get("image")
    if image is not None and not isinstance(image, str):
        problems.append(Problem(where("image"), "expected a string"))
    runner = merged.get("runner")
    if runner is not None and (not isinstance(runner, str) or not runner):
        problems.append(Problem(where("runner"), "expected a runner's name (a string)"))
        runner = None
    tags = merged.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        problems.append(Problem(where("tags"), "expected a list of tags (strings)"))
        tags = []
    variables = _variables(merged.get("variables", {}), path, table, problems)
    parallel = table.get("parallel", 1)
    if (
        not isinstance(parallel, int)
        or isinstance(parallel, bool)
        or not 1 <= parallel <= _MAX_PARALLEL
    ):
        problems.append(Problem(f"{path}.parallel", f"expected an integer 1..{_MAX_PARALLEL}"))
        parallel = 1
    job_id = table.get("id", next_id)
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 0:
        problems.append(Problem(f"{path}.id", "expected an integer >= 0"))
        job_id = next_id
    if len(problems) > before:
        return []

    jobs = []
    for node in range(1, parallel + 1):
        node_vars = variables
        node_name = name
        if parallel > 1:
            node_name = f"{name} {node}/{parallel}"
            node_vars = [
                Variable("CI_NODE_INDEX", str(node)),
                Variable("CI_NODE_TOTAL", str(parallel)),
                *variables,
            ]
        try:
            jobs.append(
                Job(
                    id=job_id + node - 1,
                    name=node_name,
                    script=script,
                    shell=shell,
                    variables=node_vars,
                    timeout=timeout,
                    allow_failure=allow_failure,
                    image=image,
                    runner=runner,
                    tags=tags,
                )
            )
        except ConfigError as exc:
            # The job names itself in its problems; the file names the table.
            prefix = f"job {node_name!r}"
            problems += [Problem(p.path.replace(prefix, path, 1), p.message) for p in exc.problems]
            return []
    return jobs


def _timeout(value: Any, path: str, problems: list[Problem]) -> timedelta | float:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, str):
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            problems.append(Problem(path, str(exc)))
            return DEFAULT_TIMEOUT
    elif isinstance(value, int) and not isinstance(value, bool):
        if value > _MAX_SECONDS:
            problems.append(Problem(path, f"{value} seconds is out of range (about 292 years)"))
            return DEFAULT_TIMEOUT
        parsed = timedelta(seconds=value)
    else:
        problems.append(Problem(path, 'expected a duration like "90s" or "1h", or seconds'))
        return DEFAULT_TIMEOUT
    if parsed <= timedelta(0):
        problems.append(Problem(path, f"must be > 0s, got {value!r}"))
        return DEFAULT_TIMEOUT
    return parsed


def _variables(
    value: Any, path: str, table: Mapping[str, Any], problems: list[Problem]
) -> list[Variable]:
    base = f"{path}.variables" if "variables" in table else "defaults.variables"
    if not isinstance(value, dict):
        problems.append(Problem(base, "expected a table of NAME = value"))
        return []
    out = []
    for key, raw in value.items():
        where = key_path(base, key)
        if not is_variable_name(key):
            problems.append(
                Problem(
                    where, "a variable name is letters, digits and _, not starting with a digit"
                )
            )
        elif isinstance(raw, str | int | float) and not isinstance(raw, bool):
            out.append(Variable(key, str(raw)))
        elif isinstance(raw, dict):
            unknown = set(raw) - {"value", "masked"}
            masked = raw.get("masked", False)
            text = raw.get("value")
            if unknown:
                problems.append(Problem(where, _unknown(min(unknown), {"value", "masked"})))
            elif not isinstance(text, str) or not isinstance(masked, bool):
                # The value itself is left out: it may be the secret.
                problems.append(Problem(where, 'expected { value = "...", masked = true|false }'))
            else:
                out.append(Variable(key, text, masked))
        else:
            problems.append(Problem(where, "expected a string, or { value = ..., masked = ... }"))
    return out
