"""Helpers for tests that need a real component (sshd, moto, ...)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(message: str) -> NoReturn:
    """A real part the test needs is missing: skip here, fail under CI=true,
    where .ci/run provides every part and a skip would hide a defect."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_executable(path: str, install_hint: str) -> str:
    """Return ``path`` if it exists; else skip the test (fail it under CI=true)."""
    found = path if Path(path).exists() else shutil.which(path)
    if not found:
        missing(f"{path} is missing: {install_hint}")
    return found


def require_module(name: str, install_hint: str) -> None:
    """Skip (fail under CI=true) when an optional module cannot be imported."""
    try:
        __import__(name)
    except ImportError:
        missing(f"python module {name} is missing: {install_hint}")


def require_root(why: str) -> None:
    """Skip (fail under CI=true, which runs as root) when not running as root."""
    if os.geteuid() != 0:
        missing(f"{why} needs root")
