"""The qemu hypervisor's parts that need no guest: the cpio writer, config errors, accel choice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetkit.errors import ConfigError
from fleetkit.nesting import _cpio
from fleetkit.nesting.qemu import QemuHypervisor, choose_accel
from tests.support import require_executable


def test_the_cpio_archive_lists_with_busybox(tmp_path: Path) -> None:
    busybox = require_executable("busybox", "apt-get install busybox-static")
    archive = _cpio.newc(
        [
            _cpio.directory("etc"),
            _cpio.file("etc/hostname", b"vm-1\n", 0o600, 1000, 1000),
            _cpio.symlink("bin/sh", "busybox"),
            _cpio.node("dev/console", 5, 1),
        ]
    )
    assert len(archive) % 512 == 0
    listed = subprocess.run(
        [busybox, "cpio", "-tv"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    lines = listed.splitlines()
    assert [line.split()[-1] for line in lines[:3]] == ["etc", "etc/hostname", "busybox"]
    assert lines[1].startswith("-rw-------")
    assert "1000/1000" in lines[1]
    assert "bin/sh -> busybox" in lines[2]
    assert lines[3].startswith("crw-------")
    assert lines[3].split()[-1] == "dev/console"


@pytest.mark.anyio
async def test_a_bad_config_names_every_key(tmp_path: Path) -> None:
    hypervisor = QemuHypervisor(tmp_path)
    with pytest.raises(ConfigError) as raised:
        await hypervisor.init(
            {"memory_mib": 1, "machine": "pc", "pool_size": -1, "bogus": 1, "qemu": "no-such-qemu"}
        )
    paths = sorted(p.path for p in raised.value.problems)
    assert paths == [
        "config.bogus", "config.machine", "config.memory_mib", "config.pool_size", "config.qemu"
    ]  # fmt: skip
    assert all("\n" not in p.message for p in raised.value.problems)


def test_accel_follows_the_config_or_the_cpu() -> None:
    assert choose_accel("tcg") == ("tcg", "set by config.accel")
    accel, reason = choose_accel("auto")
    flags = Path("/proc/cpuinfo").read_text()
    if " vmx" not in flags and " svm" not in flags:
        assert accel == "tcg"
        assert reason
