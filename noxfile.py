"""Developer sessions: tests (default), lint, typecheck, proto, docs and bench."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

HERE = Path(__file__).parent


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (unit, async and integration)."""
    session.install("-e", ".[test]")
    env = {"HYPOTHESIS_PROFILE": "ci"} if os.environ.get("CI") else {}
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests, bench and examples."""
    session.install(
        "-e", ".[test]", "mypy>=1.10", "types-croniter", "types-grpcio", "types-protobuf", "nox"
    )
    session.run("mypy")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the nesting API's Python code from src/fleetkit/_nesting_proto/nesting.proto."""
    session.install("grpcio-tools==1.85.1")
    session.chdir(HERE / "src")
    session.run(
        "python",
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
        "fleetkit/_nesting_proto/nesting.proto",
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site into site/ with warnings as errors (`-- serve` to browse it)."""
    session.install("-e", ".[test]")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark under bench/; each prints `BENCH name=value unit` lines."""
    session.install("-e", ".[test]")
    scripts = sorted(p for p in (HERE / "bench").glob("bench_*.py"))
    if session.posargs:
        scripts = [p for p in scripts if any(a in p.name for a in session.posargs)]
    for script in scripts:
        session.run("python", str(script))
