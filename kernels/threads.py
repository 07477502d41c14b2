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
threads inside every small call. A call made from inside a slice runs inline.
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

CORES = os.cpu_count() or 1
#: Arrays with fewer elements are processed inline: splitting costs a few tens of microseconds.
MIN_PARALLEL_ELEMENTS = 1 << 17

try:
    from threadpoolctl import ThreadpoolController

    _BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
except ImportError:
    _BLAS = []

# The calling thread runs the first slice itself, so the pool needs one thread fewer.
_POOL = ThreadPoolExecutor(max(CORES - 1, 1), thread_name_prefix="kernels")
_inside = threading.local()

T = TypeVar("T")


def budget() -> int:
    """Threads a call may use: the BLAS thread limit in force, at most the cores, at least 1."""
    limit = _BLAS[0].num_threads if _BLAS else CORES
    return max(1, min(limit, CORES))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold the BLAS at one thread (process-wide) for the body, then restore the limit."""
    saved = [lib.num_threads for lib in _BLAS]
    for lib in _BLAS:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, threads in zip(_BLAS, saved):
            lib.set_num_threads(threads)


def split(n: int, parts: int) -> list[slice]:
    """``parts`` consecutive slices covering range(n), as equal as possible (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def parts_for(n: int, elements: int) -> int:
    """How many slices to cut ``n`` rows of ``elements`` elements in all into (1 = inline)."""
    if getattr(_inside, "active", False) or elements < MIN_PARALLEL_ELEMENTS:
        return 1
    return min(budget(), n)


def run(body: Callable[[T], object], items: list[T]) -> None:
    """Call ``body(item)`` for every item, in parallel; return when all are done.

    What the calls write must not overlap. An exception from any call is raised after every
    call has finished (none is left running on arrays the caller frees).
    """
    if len(items) == 1:
        body(items[0])
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
    so the result depends on the thread count and ``chunk`` but not on timing.
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
    _inside.active = True
    try:
        body(item)
    finally:
        _inside.active = False
