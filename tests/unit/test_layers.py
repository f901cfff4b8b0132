"""The pure core does no I/O: a fresh interpreter and a look at the source prove it."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PURE = [
    "fleetkit.errors",
    "fleetkit.model",
    "fleetkit.policy",
    "fleetkit.planner",
    "fleetkit.forecast",
]
# Not even transitively: these mean an event loop or a cloud client in the core.
FORBIDDEN_LOADED = ["anyio", "asyncio", "asyncssh", "aiobotocore", "botocore", "trio"]
# The stdlib's time and random are loaded by dependencies (croniter imports random),
# so for those the rule is that the core's own source never imports them.
FORBIDDEN_IMPORTED = {*FORBIDDEN_LOADED, "time", "random", "socket", "subprocess"}


@pytest.mark.parametrize("module", [*PURE, "fleetkit.config"])
def test_pure_module_loads_no_io_library(module: str) -> None:
    """Importing a pure-core module pulls in none of the async or cloud libraries."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN_LOADED!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def _sources(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    origin = Path(spec.origin)
    return sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_source_imports_no_clock_or_io(module: str) -> None:
    """The pure core's own source imports no clock, randomness or I/O module."""
    found = []
    for path in _sources(module):
        found += [
            f"{path.name}: {n}" for n in _imports(path) if n.split(".")[0] in FORBIDDEN_IMPORTED
        ]
    assert found == []


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


# The fleet state is the runtime's pure core (h11's shape): it and the modules
# it builds on import no event loop, clock or I/O, and none of the driver's
# modules.
FLEET_PURE = ["_state", "_effects", "_stored", "_table", "_events", "_stats"]
FLEET_IO = {
    "_driver",
    "_hub",
    "_probe",
    "_calls",
    "_clock",
    "_fleet",
    "_slots",
    "_metrics",
    "_state_store",
}


@pytest.mark.parametrize("name", FLEET_PURE)
def test_fleet_state_imports_no_clock_io_or_driver(name: str) -> None:
    """The fleet state's modules import no anyio, clock or I/O, and no driver module."""
    spec = importlib.util.find_spec("fleetkit.fleet")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / f"{name}.py"
    found = [
        n
        for n in _imports(path)
        if n.split(".")[0] in FORBIDDEN_IMPORTED or n.split(".")[-1] in FLEET_IO
    ]
    assert found == []
