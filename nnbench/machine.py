"""What machine a number was measured on, and one way to pin threads for every backend.

Every results file (accuracy runs, benchmarks, the report) carries ``machine_info()`` so a
number is never separated from the CPU, core count, thread counts and library versions that
produced it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

from kernels import threads
from nnbench import runtime

# Environment variables that change how fast the same code runs here; recorded with every result.
_PERFORMANCE_ENV = (
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_THREAD_TIMEOUT",
    "OPENBLAS_L2_SIZE",
    "MKL_NUM_THREADS",
    "NNBENCH_KERNEL",
)
_LIBRARIES = ("numpy", "torch", "pandas", "matplotlib", "threadpoolctl", "pytest-benchmark")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    """Cores this process may run on: its affinity, at most a cgroup CPU quota
    (``kernels.threads.CORES``)."""
    return threads.CORES


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def thread_info() -> dict[str, object]:
    """BLAS library and threads (threadpoolctl) and torch's intra-op threads."""
    blas = [
        {
            "library": pool.get("internal_api"),
            "version": pool.get("version"),
            "threads": pool.get("num_threads"),
            "architecture": pool.get("architecture"),
        }
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
    ]
    info: dict[str, object] = {"blas": blas}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch_threads"] = None
    return info


#: Where results live: writing them does not make the code that produced them differ.
RESULTS_DIR = "reports"


#: This project's checkout (where ``git`` runs by default).
CHECKOUT = Path(__file__).resolve().parents[1]


def git(*args: str, root: Path | None = None, timeout: float = 20) -> str | None:
    """``git -C root args`` (root: this checkout): its output, or None if git failed or is
    missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(CHECKOUT if root is None else root), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_revision(root: Path | None = None) -> dict[str, object]:
    """The git commit of this checkout and whether tracked files outside ``reports/`` differ
    from it (None outside a git checkout), so a result can be traced to the code that produced
    it. ``root`` defaults to this project's checkout."""
    root = CHECKOUT if root is None else Path(root)
    commit = git("rev-parse", "HEAD", root=root)
    if commit is None:
        return {"commit": None, "dirty": None}
    pathspec = (":(top)", f":(top,exclude){RESULTS_DIR}")  # the whole checkout, from anywhere
    status = git("status", "--porcelain", "--untracked-files=no", "--", *pathspec, root=root)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine_info() -> dict[str, object]:
    """Date, host, CPU, cores, thread counts and library versions, as a JSON-ready dict."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": cpu_count(),
        "threads": thread_info(),
        "versions": library_versions(),
        "environment": {name: os.environ.get(name) for name in _PERFORMANCE_ENV},
        "runtime": runtime.settings(),
        "source": source_revision(),
    }


@contextlib.contextmanager
def pinned_threads(threads: int | None = None) -> Iterator[int]:
    """Run the body with BLAS (threadpoolctl) and torch limited to the same thread count.

    ``threads=None`` means all cores. Yields the thread count in force.
    """
    threads = cpu_count() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    try:
        import torch
    except ImportError:
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


def thread_switch(threads: int) -> Callable[[], None]:
    """A function that sets BLAS (threadpoolctl) and torch to ``threads`` with a few C calls.

    For switching inside timed rounds: ``pinned_threads`` finds the libraries anew each time
    (about a millisecond), this finds them once. Call it inside ``pinned_threads``, which
    restores the counts at its end.
    """
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    try:
        import torch
    except ImportError:
        torch = None

    def switch() -> None:
        for lib in blas:
            lib.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)

    return switch


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Keep large buffers on the heap instead of fresh mmap'd pages (glibc only).

    A training step allocates and frees the same few multi-megabyte arrays over and over. By default
    glibc serves each with a fresh mmap, so every step pays a page fault per 4 KiB of output, which
    can cost more than the arithmetic of a small layer. Raising the mmap and trim thresholds lets
    freed blocks be reused. Returns whether it applied (False off glibc). Used by the accuracy runs
    and the benchmarks, identically for every backend.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(2 * threshold)) == 1
