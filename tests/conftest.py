"""Shared fixtures: a per-test RNG seeded from the test id, and the shared data directory."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's node id: reproducible, different per case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def shared_data_dir() -> Path | None:
    """``$NNBENCH_DATA`` if set, else ../shared/data beside the checkout, if it exists."""
    env = os.environ.get("NNBENCH_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if (path / "mnist").is_dir() or (path / "cifar-10-batches-bin").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "no dataset copy: set NNBENCH_DATA to a folder with mnist/ and cifar-10-batches-bin/"
        )
    return path
