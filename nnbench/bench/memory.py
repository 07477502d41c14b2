"""Peak memory of one cold call.

``peak_memory_bytes`` runs a call once more, untimed, and reports the peak resident memory it
added: on Linux the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
minus the resident size before the call, after ``malloc_trim`` returned freed heap pages, so
numpy's and torch's allocations are both seen (tracemalloc does not see torch's allocator).
Elsewhere it falls back to tracemalloc (numpy only). ``memory_method()`` says which one is in
use. The result array counts as allocated, and so do the buffers a backend reuses across calls
(im2col's column matrix, loop's padded copy): ``kernels.release_scratch()`` drops them first, so
the number is what a cold call needs. FFT plan caches and BLAS work areas kept by the libraries
themselves are not counted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
import tracemalloc
from collections.abc import Callable

import kernels

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(field: str) -> int:
    with open(_STATUS, encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"{field} not in {_STATUS}")


def _reset_high_water_mark() -> None:
    with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
        fh.write("5")  # "5" resets VmHWM to the current VmRSS (Linux >= 4.0)


@functools.cache
def _malloc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: trim(0)) if trim is not None else (lambda: None)


@functools.cache
def memory_method() -> str:
    """``"rss-hwm"`` (Linux /proc: every allocator) or ``"tracemalloc"`` (numpy only)."""
    if sys.platform.startswith("linux"):
        try:
            _status_bytes("VmHWM")
            _reset_high_water_mark()
            return "rss-hwm"
        except OSError:
            pass
    return "tracemalloc"


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Peak extra memory of one ``fn()`` call, in bytes, its result included (untimed).

    Measured with ``memory_method()``; a call that allocates nothing new reports about 0.
    """
    kernels.release_scratch()  # a cold call: buffers reused across calls count too
    gc.collect()
    if memory_method() == "rss-hwm":
        _malloc_trim()()  # hand freed heap pages back, so reusing them shows up as growth
        before = _status_bytes("VmRSS")
        _reset_high_water_mark()
        result = fn()
        peak = _status_bytes("VmHWM")
        del result
        return max(0, peak - before)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - before)
