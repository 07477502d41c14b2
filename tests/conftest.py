"""Shared fixtures and options: a per-test RNG seeded from the test id, the shared data
directory, and the benchmark options (here so they work from the repository root)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest


def pytest_addoption(parser):
    group = parser.getgroup("nnbench benchmarks")
    group.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="threads for BLAS and torch in every benchmark (default: $NNBENCH_BENCH_THREADS, "
        "else all cores)",
    )
    group.addoption(
        "--bench-budget",
        type=float,
        default=None,
        help="seconds of timed rounds per benchmark (default: $NNBENCH_BENCH_BUDGET, else 1.5)",
    )


@pytest.fixture
def torch_single_thread():
    """Run torch on one thread for the duration of a test.

    These tests push tiny tensors through torch hundreds of times; with several intra-op
    threads on a busy 2-core machine, waking the pool costs 10-50 ms per call (measured here)
    against microseconds on one thread. The previous setting is restored afterwards.
    """
    import torch  # here, not at collection: nothing loads torch before it is needed

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
