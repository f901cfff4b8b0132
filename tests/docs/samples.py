"""The Python code blocks of the Markdown docs, as modules mypy can check.

Samples are fragments: they use names the surrounding text introduces
(``group``, ``info``, ``fleet``...) and ``await`` at the top level. Each becomes
the body of an ``async def`` after :data:`PRELUDE`, which declares those names
with their types, so a sample that misuses the API fails ``mypy --strict``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL
)

# The free names the docs' samples use, with the types the text gives them.
PRELUDE = """\
from __future__ import annotations

import anyio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from fleetkit.connector import CommandResult, Connection, Connector
from fleetkit.connector.ssh import SSHConnector
from fleetkit.errors import ConnectTimeout
from fleetkit.executor import InstanceExecutor
from fleetkit.fleet import Fleet, Slot
from fleetkit.jobs import Job
from fleetkit.model import ConnectInfo, ConnectorConfig, Limits, Snapshot
from fleetkit.policy import Policy
from fleetkit.provider import InstanceGroup
from fleetkit.provider.local import LocalInstanceGroup as MyGroup

group: InstanceGroup
info: ConnectInfo
connector: Connector
connector_config: ConnectorConfig
conn: Connection
ssh: SSHConnector
fleet: Fleet
slot: Slot
executor: InstanceExecutor
job: Job
jobs: Sequence[Job]
host: ConnectInfo
vm: ConnectInfo
snapshot: Snapshot
policy: Policy
limits: Limits
now: float
tmp_path: Path
config: dict[str, Any]  # a nesting daemon's init config
"""


@attrs.frozen
class Sample:
    """One code block: where it is, and its text."""

    page: str
    line: int
    code: str

    @property
    def name(self) -> str:
        stem = re.sub(r"\W", "_", Path(self.page).stem)
        return f"sample_{stem}_{self.line}"

    def module(self) -> str:
        """The sample as a module: the prelude, then the code as an async function's body."""
        body = textwrap.indent(self.code, "    ") or "    pass\n"
        return f"{PRELUDE}\n\nasync def _sample() -> None:\n{body}"


def samples(docs: Path = DOCS) -> list[Sample]:
    """Every ```python block of every page under ``docs``, in page order."""
    found = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            code = textwrap.dedent(match.group("body"))
            if code.lstrip().startswith("--8<--"):
                continue  # a file under examples/ included whole: checked as itself
            found.append(Sample(str(page.relative_to(docs.parent)), line, code))
    return found
