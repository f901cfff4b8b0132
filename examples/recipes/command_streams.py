"""Recipe 3: a command's two output streams: both, merged, or only the one you need."""

from __future__ import annotations

import tempfile

import anyio

from fleetkit.connector.local import LocalConnector
from fleetkit.model import ConnectInfo

NOISY = "head -c 5000000 /dev/zero >&2; echo result: 42"  # 5 MB of stderr, one line of stdout


async def main() -> None:
    with tempfile.TemporaryDirectory() as sandbox:
        info = ConnectInfo(id="here", protocol="local", internal_addr=sandbox)
        async with LocalConnector().connect(info) as conn:
            both = await conn.run("echo out; echo err >&2")
            print(f"stdout={both.stdout_text!r} stderr={both.stderr_text!r}")
            merged = await conn.run("echo one; echo two >&2; echo three", stderr="stdout")
            print(f"merged={merged.stdout_text!r}")
            # Reading only stdout never deadlocks on an unread stderr.
            async with conn.stream(NOISY) as proc:
                lines = [chunk async for chunk in proc.stdout]
                status = await proc.wait()
            print(f"{b''.join(lines).decode().strip()} (exit {status.exit_code})")


if __name__ == "__main__":
    anyio.run(main)
