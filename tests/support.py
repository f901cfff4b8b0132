"""Helpers for tests that need a real component (sshd, moto, ...)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_executable(path: str, install_hint: str) -> str:
    """Return ``path`` if it exists; else skip the test (fail it under CI=true)."""
    found = path if Path(path).exists() else shutil.which(path)
    if not found:
        message = f"{path} is missing: {install_hint}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def require_module(name: str, install_hint: str) -> None:
    """Skip (fail under CI=true) when an optional module cannot be imported."""
    try:
        __import__(name)
    except ImportError:
        message = f"python module {name} is missing: {install_hint}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
