"""The thread budget shared by the numpy backends and the engine's layers.

numpy runs its loops on one thread; only its BLAS uses several. Work the BLAS does not see
(layout copies, elementwise passes, many small GEMMs) is split here into slices of the batch
axis and run on a small pool of threads. numpy releases the GIL inside such loops, so the slices
really run side by side.

How many threads: the BLAS thread limit in force, at most the cores. That is the limit that
``threadpoolctl.threadpool_limits`` (and ``nnbench.machine.pinned_threads``, which also sets
torch's) controls, so one setting pins numpy's BLAS, torch and this pool alike.

While slices run, the BLAS is held at one thread (and restored afterwards): k slices then keep k
cores busy rather than k times the BLAS threads, and OpenBLAS does not synchronise its own
threads inside every small call. That limit is process-wide: while it is held, other threads'
BLAS calls run on one thread too, and their split calls run inline. A call made from inside a
slice runs inline. After ``os.fork`` the child starts a pool of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

try:  # the cores this process may run on (affinity, cpusets), not all of the machine's
    CORES = len(os.sched_getaffinity(0))
except AttributeError:  # not Linux
    CORES = os.cpu_count() or 1
#: Arrays with fewer elements are processed inline: splitting costs a few tens of microseconds.
MIN_PARALLEL_ELEMENTS = 1 << 17

try:
    from threadpoolctl import ThreadpoolController

    _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
except ImportError:
    _BLAS = []

_inside = threading.local()
_blas_lock = threading.Lock()
_blas_holders = 0  # callers inside single_threaded_blas
_blas_saved: list[int] = []


def _new_pool() -> ThreadPoolExecutor:
    # The calling thread runs the first slice itself, so the pool needs one thread fewer.
    return ThreadPoolExecutor(max(CORES - 1, 1), thread_name_prefix="kernels")


def _after_fork_in_child() -> None:
    # The parent's pool threads do not exist in the child: its queue would wait forever.
    global _POOL, _blas_lock, _blas_holders
    _POOL = _new_pool()
    _blas_lock = threading.Lock()
    _blas_holders = 0


_POOL = _new_pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

T = TypeVar("T")


def budget() -> int:
    """Threads a call may use: the BLAS thread limit in force, at most the cores, at least 1."""
    limit = _BLAS[0].num_threads if _BLAS else CORES
    return max(1, min(limit, CORES))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold the BLAS at one thread (process-wide) for the body, then restore the limit.

    Callers in several threads share one hold: the first saves the limit and the last
    restores it, so overlapping calls cannot leave the BLAS at one thread.
    """
    global _blas_holders, _blas_saved
    with _blas_lock:
        if _blas_holders == 0:
            _blas_saved = [lib.num_threads for lib in _BLAS]
            for lib in _BLAS:
                lib.set_num_threads(1)
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_holders -= 1
            if _blas_holders == 0:
                for lib, threads in zip(_BLAS, _blas_saved):
                    lib.set_num_threads(threads)


def split(n: int, parts: int) -> list[slice]:
    """``parts`` consecutive slices covering range(n), as equal as possible (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def rows_per_chunk(values_per_row: int, dtype: np.dtype, chunk_bytes: int) -> int:
    """Rows per chunk so that ``values_per_row`` values of ``dtype`` per row fill about
    ``chunk_bytes`` (at least one row)."""
    return max(1, chunk_bytes // (values_per_row * np.dtype(dtype).itemsize))


def parts_for(n: int, elements: int) -> int:
    """How many slices to cut ``n`` rows of ``elements`` elements in all into (1 = inline)."""
    if getattr(_inside, "active", False) or elements < MIN_PARALLEL_ELEMENTS:
        return 1
    return min(budget(), n)


def run(body: Callable[[T], object], items: list[T]) -> None:
    """Call ``body(item)`` for every item, in parallel; return when all are done.

    What the calls write must not overlap. An exception from any call is raised after every
    call has finished (none is left running on arrays the caller frees). Called from inside
    a slice, the items run one after the other on the calling thread.
    """
    if len(items) == 1 or getattr(_inside, "active", False):
        for item in items:
            body(item)
        return
    with single_threaded_blas():
        futures = [_POOL.submit(_inline, body, item) for item in items[1:]]
        try:
            _inline(body, items[0])
        finally:
            errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def over_batch(
    body: Callable[[slice], object], n: int, elements: int, chunk: int | None = None
) -> None:
    """Call ``body(s)`` for slices s covering range(n), in parallel.

    ``n`` rows hold ``elements`` values in all (small work runs inline). Each thread takes one
    run of consecutive rows and, with ``chunk``, walks it ``chunk`` rows at a time, so that the
    temporaries of one call stay in cache.
    """
    run(lambda rows: _walk(body, rows, chunk), split(n, parts_for(n, elements)))


def sum_over_batch(
    body: Callable[[slice], np.ndarray], n: int, elements: int, chunk: int | None = None
) -> np.ndarray:
    """The sum of ``body(s)`` over slices s covering range(n), computed like ``over_batch``.

    Each thread adds up its own slices in order and the per-thread totals are added in order,
    so the result depends on the thread count and ``chunk`` but not on timing. ``body`` must
    return a fresh, writable array: the others are added into the first one in place.
    """
    parts = split(n, parts_for(n, elements))
    totals: list[np.ndarray | None] = [None] * len(parts)

    def add_up(index: int) -> None:
        for part in _chunks(parts[index], chunk):
            value = body(part)
            if totals[index] is None:
                totals[index] = value
            else:
                totals[index] += value

    run(add_up, list(range(len(parts))))
    total = totals[0]
    for value in totals[1:]:
        total += value
    return total


def _chunks(rows: slice, chunk: int | None) -> list[slice]:
    if chunk is None or rows.stop - rows.start <= chunk:
        return [rows]
    return [slice(lo, min(lo + chunk, rows.stop)) for lo in range(rows.start, rows.stop, chunk)]


def _walk(body: Callable[[slice], object], rows: slice, chunk: int | None) -> None:
    for part in _chunks(rows, chunk):
        body(part)


def _inline(body: Callable[[T], object], item: T) -> None:
    previous = getattr(_inside, "active", False)
    _inside.active = True
    try:
        body(item)
    finally:
        _inside.active = previous
