"""The thread budget shared by the numpy backends and the engine's layers.

numpy runs its loops on one thread; only its BLAS uses several. Work the BLAS does not see
(layout copies, elementwise passes, many small GEMMs, reductions over the batch) is split here
into slices of the batch axis and run on a small pool of threads. numpy releases the GIL inside
its loops and BLAS calls, so the slices really run side by side. Not always: ``np.matmul``
holds it through a BLAS call whose output has 500 elements or fewer, so the backends' 2-D GEMMs
go through ``_profile.matmul``, which takes ``np.dot`` for those. A stacked product that small
holds it too: the engine's per-channel sums and im2col's per-image GEMMs cut their slices no
smaller (``gil_free_rows``); the loop backend's weight gradient still holds it where it runs
one GEMM per offset (kw * d above its ``STACK_DEPTH``) and their stacked (kw, c, d) output has
500 elements or fewer.

How many threads: the BLAS thread limit in force, at most the cores (``CORES``: those the
process may run on, and no more than a cgroup CPU quota leaves it). That is the limit that
``threadpoolctl.threadpool_limits`` (and ``nnbench.machine.pinned_threads``, which also sets
torch's) controls, so one setting pins numpy's BLAS, torch and this pool alike.

How many slices: waking a pool thread, and the Python between its numpy calls (which holds the
GIL, so the threads take turns there), costs each slice some time that the other slices wait
for in turn. With W the time of the whole work and s that serial cost per slice, P
slices take about W / P + P * s, least at P = sqrt(W / s). ``parts_for`` cuts a call that way,
counting W in elements and s as ``THREAD_COST_ELEMENTS`` elements' worth of work: small work
stays inline or on a few threads, and more cores never cut a call finer than it is worth: Python
threads stop paying off long before the cores run out, while the BLAS's own threads, which need
no GIL, keep scaling (the report's scaling section shows both). Callers pass the elements their
work touches (a backend: its column matrix or padded grid, not just its inputs).

While slices run, the BLAS is held at one thread (and restored afterwards): k slices then keep k
cores busy rather than k times the BLAS threads. A call with one slice holds it too, and the
engine's GEMMs go through ``matmul``, which splits their output columns over the pool. The one
place the BLAS's own threads run is a backend's large GEMM when there are more cores than
slices worth cutting (``whole_batch``), held at most at the cores (``blas_within_cores``). After
it, idle OpenBLAS threads keep spinning for a while unless ``nnbench.runtime.configure()``
shortened that, whatever the order in which numpy was loaded. The holds are process-wide, and
the lowest limit held applies: while a split call holds one thread, other threads' BLAS calls,
a whole-batch GEMM included, run on one thread too. A call made from inside a slice, or while
another thread is using the pool, runs its slices one after the other on the calling thread.
After ``os.fork`` the child starts a pool of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from kernels import _profile


def cgroup_cpus(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The CPUs a cgroup CPU quota leaves this process, rounded up (what a container's
    ``--cpus`` sets), or None where no quota is set or none can be read.

    Affinity says which cores a process may run on, not for how long: a container limited to
    4 CPUs on a 64-core host sees 64 cores, and 64 threads there take turns on 4 CPUs' worth
    of time. The quota is read from the process's cgroup (``membership``) and each one above
    it, the smallest wins: cgroup v2's ``cpu.max`` ("max" or "<quota> <period>") and v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none).
    """
    try:
        entries = [line.split(":", 2) for line in membership.read_text().splitlines()]
    except (OSError, UnicodeDecodeError):
        return None
    shares = []
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if controllers == "":  # v2, mounted at the root, or under unified/ beside v1
            mounts = [root, root / "unified"]
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        for mount in map(_normalised, mounts):
            directory = _normalised(mount / path.strip("/"))
            if not directory.is_relative_to(mount):
                # Inside a cgroup namespace, a cgroup outside the namespace's root shows as
                # "/../..": neither it nor the cgroups above it can be seen from here.
                continue
            while directory.is_relative_to(mount):  # this cgroup, then the ones above it
                share = _cpu_share(directory, v2=controllers == "")
                if share is not None:
                    shares.append(share)
                if directory == mount:
                    break
                directory = directory.parent
    return max(1, math.ceil(min(shares))) if shares else None


def _normalised(path: Path) -> Path:
    return Path(os.path.normpath(path))  # ".." resolved as text, no symbolic links followed


def _cpu_share(directory: Path, v2: bool) -> float | None:
    """quota / period of one cgroup directory, None where it sets none or cannot be read."""
    try:
        if v2:
            quota, period = (directory / "cpu.max").read_text().split()
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        share = int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return share if share > 0 else None


def _cores() -> int:
    """The cores this process may run on (affinity, cpusets), not all of the machine's, and
    at most what a cgroup CPU quota leaves it (``cgroup_cpus``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    return min(cores, quota) if quota else cores


CORES = _cores()

#: What one more slice costs (waking its thread, its Python under the GIL), counted as the
#: elements of copying that take as long. See the module docstring for how it is used.
THREAD_COST_ELEMENTS = 1 << 16

#: numpy releases the GIL in a loop only when the loop runs more than this many times: a
#: stacked product (``np.matmul`` of a stack, ``np.vecdot``) with this many outputs or fewer
#: holds it through all of its BLAS calls, and slices of one run one at a time.
NUMPY_GIL_OUTPUTS = 500


def gil_free_rows(outputs_per_row: int) -> int:
    """The fewest rows of a batch for which a stacked numpy product with ``outputs_per_row``
    outputs per row releases the GIL: the ``min_rows`` of a slice computing one."""
    return NUMPY_GIL_OUTPUTS // max(1, outputs_per_row) + 1


_inside = threading.local()
_blas_lock = threading.Lock()
_blas_holds: list[int] = []  # the thread limits of the holds in force (see _hold_blas)
_blas_saved: list[int | None] = []  # each BLAS's limit before the first hold (None: unread)
_blas_generation = 0  # bumped in a forked child: holds taken before the fork are not its own
_blas_controllers: list | None = None  # threadpoolctl controllers, found on first use

T = TypeVar("T")


def _blas() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded now (found once)."""
    global _blas_controllers
    if _blas_controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _blas_controllers = []
        else:
            found = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas_controllers = list(found)
    return _blas_controllers


def budget() -> int:
    """Threads a call may use: the BLAS thread limit in force, at most the cores, at least 1."""
    libs = _blas()
    limit = libs[0].num_threads if libs else CORES
    return max(1, min(limit or 1, CORES))


def single_threaded_blas() -> contextlib.AbstractContextManager[None]:
    """Hold the BLAS at one thread (process-wide) for the body, then restore the limit.

    Callers in several threads share one hold: the first saves the limit and the last
    restores it, so overlapping calls cannot leave the BLAS at one thread.
    """
    return _hold_blas(1)


def blas_within_cores() -> contextlib.AbstractContextManager[None]:
    """Hold the BLAS at no more threads than the cores for the body, then restore the limit.

    For the GEMMs a backend leaves to the BLAS's own threads (``whole_batch``): asked for more
    threads than cores, OpenBLAS's threads wait for each other in every GEMM while the OS takes
    turns running them, and a GEMM can take several times as long (measured on 16 cores at 32
    threads: up to 7x). Shared with ``single_threaded_blas`` like its holds: the lowest limit
    held wins.
    """
    return _hold_blas(CORES)


@contextlib.contextmanager
def _hold_blas(limit: int) -> Iterator[None]:
    """Hold the BLAS at most at ``limit`` threads for the body. The holds of all threads share
    one saved limit: the first saves it, each change applies the lowest limit held, and the
    last puts the saved limit back. Each change reads the limits in force, so a limit changed
    meanwhile (by another thread's ``threadpool_limits``) is held again too."""
    global _blas_saved
    libs = _blas()
    with _blas_lock:
        generation = _blas_generation
        if not _blas_holds:
            _blas_saved = [lib.num_threads for lib in libs]
        _blas_holds.append(limit)
        try:
            _apply_blas_holds(libs)
        except BaseException:
            _blas_holds.remove(limit)
            with contextlib.suppress(Exception):  # undo what was set before the failure
                _apply_blas_holds(libs)
            raise
    try:
        yield
    finally:
        with _blas_lock:
            if generation == _blas_generation:  # else a fork in the body already let go
                _blas_holds.remove(limit)
                _apply_blas_holds(libs)


def _apply_blas_holds(libs: list) -> None:
    """Set each BLAS to the lowest limit held, at most its saved limit (the saved limit itself
    when nothing is held); the caller holds ``_blas_lock``. A library whose limit could not be
    read is only ever set to a limit held."""
    lowest = min(_blas_holds, default=None)
    for lib, saved in zip(libs, _blas_saved):
        if lowest is None:
            wanted = saved
        else:
            wanted = lowest if saved is None else min(saved, lowest)
        if wanted is not None and lib.num_threads != wanted:
            lib.set_num_threads(wanted)


def split(n: int, parts: int) -> list[slice]:
    """``parts`` consecutive slices covering range(n), as equal as possible (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def rows_per_chunk(values_per_row: int, dtype: np.dtype, chunk_bytes: int) -> int:
    """Rows per chunk so that ``values_per_row`` values of ``dtype`` per row fill about
    ``chunk_bytes`` (at least one row)."""
    return max(1, chunk_bytes // (values_per_row * np.dtype(dtype).itemsize))


def parts_for(n: int, elements: int, min_rows: int = 1) -> int:
    """How many slices to cut ``n`` rows holding ``elements`` elements of work into (1 = inline):
    sqrt(elements / THREAD_COST_ELEMENTS), at most the budget and ``n // min_rows`` (so that
    every slice holds at least ``min_rows`` rows, or all ``n`` where there are fewer)."""
    if getattr(_inside, "active", False):
        return 1
    most = min(budget(), n // max(1, min_rows))
    return max(1, min(most, math.isqrt(int(max(elements, 0) / THREAD_COST_ELEMENTS))))


# --- the pool -------------------------------------------------------------------------------


class _Worker:
    """One pool thread, parked on its own lock until it is given a task."""

    def __init__(self, index: int):
        self.go = threading.Lock()
        self.done = threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task: tuple[Callable, object] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name=f"kernels-{index}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        _inside.active = True  # whatever a slice calls runs inline on this thread
        while True:
            self.go.acquire()
            body, item = self.task
            self.task = None
            try:
                body(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                self.error = exc
            self.done.release()


class _Pool:
    """Threads that wait on a lock each: waking k of them is k lock releases, no queue."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.busy = threading.Lock()  # one caller at a time; others run inline

    def run(self, body: Callable[[T], object], items: list[T]) -> None:
        extra = items[1:]
        while len(self.workers) < len(extra):
            self.workers.append(_Worker(len(self.workers)))
        workers = self.workers[: len(extra)]
        for worker, item in zip(workers, extra):
            worker.task = (body, item)
            worker.go.release()
        errors: list[BaseException] = []
        try:
            _inline(body, items[0])
        except BaseException as exc:  # noqa: BLE001 - raised once every slice is done
            errors.append(exc)
        pending = list(workers)
        while pending:  # every slice finishes before anything is raised, even a Ctrl-C:
            try:  # a worker's release left unconsumed would end a later call too early
                pending[0].done.acquire()
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt while waiting
                errors.append(exc)
                continue
            worker = pending.pop(0)
            if worker.error is not None:
                errors.append(worker.error)
                worker.error = None
        if errors:
            raise errors[0]


_POOL = _Pool()


def _after_fork_in_child() -> None:
    # The parent's pool threads do not exist in the child: their locks would wait forever.
    # A hold on the BLAS taken by a parent thread would never be released here: undo it.
    # Forked from inside a slice (a pool thread's, or the caller's own), the child is no
    # longer in one: the slices of that call stay in the parent, so its calls split again.
    global _POOL, _blas_lock, _blas_generation
    _POOL = _Pool()
    _inside.active = False
    _blas_lock = threading.Lock()
    _blas_generation += 1
    if _blas_holds:
        _blas_holds.clear()
        _apply_blas_holds(_blas())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(body: Callable[[T], object], items: list[T]) -> None:
    """Call ``body(item)`` for every item, in parallel; return when all are done.

    What the calls write must not overlap. An exception from any call is raised after every
    call has finished (none is left running on arrays the caller frees). Called from inside
    a slice, or while another thread uses the pool, the items run one after the other on the
    calling thread.
    """
    if getattr(_inside, "active", False):
        for item in items:
            body(item)
        return
    if len(items) == 1:
        with single_threaded_blas():
            _inline(body, items[0])
        return
    body = _profile.numbered(body)
    pool = _POOL
    if not pool.busy.acquire(blocking=False):  # another thread's slices hold the cores
        with single_threaded_blas():
            for item in items:
                _inline(body, item)
        return
    try:
        with single_threaded_blas():
            pool.run(body, items)
    finally:
        pool.busy.release()


def over_batch(
    body: Callable[[slice], object],
    n: int,
    elements: int,
    chunk: int | None = None,
    min_rows: int = 1,
) -> None:
    """Call ``body(s)`` for slices s covering range(n), in parallel.

    ``n`` rows hold ``elements`` elements of work in all (see ``parts_for``; each thread's run
    holds at least ``min_rows`` rows). Each thread takes one run of consecutive rows and, with
    ``chunk``, walks it ``chunk`` rows at a time, so that the temporaries of one call stay in
    cache (no chunk shorter than ``min_rows`` either: ``_chunks``).
    """
    run(functools.partial(_walk, body), _runs(n, elements, chunk, min_rows))


def shortest_run(n: int, elements: int, chunk: int | None = None, min_rows: int = 1) -> int:
    """The fewest rows that ``over_batch`` or ``sum_over_batch`` called with these arguments
    hands to one ``body`` call (as the budget stands now)."""
    runs = _runs(n, elements, chunk, min_rows)
    return min(piece.stop - piece.start for pieces in runs for piece in pieces)


def _runs(n: int, elements: int, chunk: int | None, min_rows: int) -> list[list[slice]]:
    """What each thread of an ``over_batch`` or ``sum_over_batch`` call walks: one run of
    consecutive rows per thread (``parts_for``), in chunks (``_chunks``)."""
    return [_chunks(rows, chunk, min_rows) for rows in split(n, parts_for(n, elements, min_rows))]


def copy(out: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``out[...] = source`` (same shape; a cast of the same kind allowed), the rows of the
    leading axis split over the thread budget like ``over_batch``. For the transposing and
    casting copies a backend makes between its layouts: memory-bound, and one core alone draws
    only part of a large machine's memory bandwidth. Returns ``out``."""
    over_batch(lambda s: np.copyto(out[s], source[s], casting="same_kind"), len(out), out.size)
    return out


def sum_over_batch(
    body: Callable[[slice], np.ndarray],
    n: int,
    elements: int,
    chunk: int | None = None,
    min_rows: int = 1,
) -> np.ndarray:
    """The sum of ``body(s)`` over slices s covering range(n), computed like ``over_batch``.

    Each thread adds up its own slices in order and the per-thread totals are added in order,
    so the result depends on how many slices there are and on ``chunk``, but not on timing.
    ``body`` must return a fresh, writable array: the others are added into the first one.
    """
    runs = _runs(n, elements, chunk, min_rows)
    totals: list[np.ndarray | None] = [None] * len(runs)

    def add_up(index: int) -> None:
        for part in runs[index]:
            value = body(part)
            if totals[index] is None:
                totals[index] = value
            else:
                totals[index] += value

    run(add_up, list(range(len(runs))))
    total = totals[0]
    for value in totals[1:]:
        total += value
    return total


#: What one more GEMM slice costs, counted as the multiply-adds one core does in that time.
THREAD_COST_MULTIPLY_ADDS = 1 << 21
#: Output columns a GEMM slice needs at least (narrower ones pack their operands for little).
MIN_COLUMNS_PER_PART = 16


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-D operands, its output columns split over the thread budget.

    Each slice is a single-threaded BLAS call, so the BLAS's own threads do not run (nor spin
    afterwards, stealing cores from the next pass, however the BLAS was set up). A GEMM too
    small to split runs on one thread. Each output column comes from one BLAS call over the
    whole reduction; the BLAS may still block that reduction differently for another slice
    width, so results can differ by rounding (not at all for sums of small integers).
    """
    if getattr(_inside, "active", False):  # in a slice, whose ``run`` holds the BLAS at one
        return _profile.matmul(a, b, out=out)  # thread already: no hold to take per GEMM
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    parts = min(budget(), n // MIN_COLUMNS_PER_PART, m * n * k // THREAD_COST_MULTIPLY_ADDS)
    if parts <= 1:
        with single_threaded_blas():
            return _profile.matmul(a, b, out=out)
    run(lambda s: _profile.matmul(a, b[:, s], out=out[:, s]), split(n, parts))
    return out


#: Bytes of a backend's GEMM operand per batch when its GEMMs run on the BLAS's own threads
#: (the larger, the better those are used; bounded so that memory stays bounded).
WHOLE_BATCH_BYTES = 64 * 2**20


def whole_batch(n: int, elements: int, per_row: int, dtype) -> int | None:
    """Rows per GEMM when a backend's GEMMs should run over whole batches on the BLAS's own
    threads (more cores than slices worth cutting: ``parts_for`` < ``budget``), at most
    ``WHOLE_BATCH_BYTES`` of ``per_row`` values each; None when slices keep every core busy."""
    if parts_for(n, elements) >= budget():
        return None
    return rows_per_chunk(per_row, dtype, WHOLE_BATCH_BYTES)


def _chunks(rows: slice, chunk: int | None, min_rows: int = 1) -> list[slice]:
    """``rows`` in ceil(size / chunk) runs of about ``chunk`` rows, as equal as possible (no
    short last run), the longer ones first. At most ``chunk`` rows each, unless that would cut
    a run shorter than ``min_rows``: there are then fewer, longer runs (10 rows in chunks of 8
    with min_rows 8: one run of 10, not two of 5). A thread's runs change shape at most once in
    a call, and once more at the start of the next call (back to the longer runs), so a scratch
    buffer's zero border (``_layout.bordered``) is redrawn at most twice a call, however many
    runs the thread walks; mixing the two lengths in any order could redraw it at every run."""
    size = rows.stop - rows.start
    if chunk is None or size <= chunk:
        return [rows]
    count = max(1, min(-(-size // chunk), size // max(1, min_rows)))
    longer = size % count  # runs one row longer than size // count
    bounds = [rows.start]
    for index in range(count):
        bounds.append(bounds[-1] + size // count + (index < longer))
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _walk(body: Callable[[slice], object], pieces: list[slice]) -> None:
    for piece in pieces:
        body(piece)


def _inline(body: Callable[[T], object], item: T) -> None:
    previous = getattr(_inside, "active", False)
    _inside.active = True
    try:
        body(item)
    finally:
        _inside.active = previous


# --- torch's OpenMP workers -----------------------------------------------------------------

#: Environment variables that tune libgomp's idle workers when it loads (their presence: tuned).
OPENMP_WAIT_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def release_openmp() -> None:
    """End the OpenMP worker threads of this thread's last parallel region, if they would spin.

    torch runs its kernels on libgomp's workers, which by default spin for up to 300000 polls
    after every parallel region, holding the cores that the engine's numpy passes and this
    module's pool need next. libgomp reads how long to spin once, when it loads, so
    ``nnbench.runtime.configure()`` can only shorten the spin when it runs before torch is
    loaded. This works whatever the order: ``omp_pause_resource_all`` (OpenMP 5.0) ends the
    workers, and the next parallel region starts them again (one thread start per worker).
    Called after each call of the torch backend; does nothing when
    ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is set (the spin was tuned when libgomp loaded,
    by the user or by ``configure``) or where no libgomp is loaded.
    """
    for pause in _openmp_pauses():
        pause(1)  # omp_pause_soft


@functools.cache
def _openmp_pauses() -> tuple:
    """``omp_pause_resource_all`` of every libgomp loaded now, if their spin is the default
    (decided on the first call of the torch backend, when torch has loaded its libgomp)."""
    if any(os.environ.get(name) for name in OPENMP_WAIT_SETTINGS):
        return ()
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return ()
    pauses = []
    for lib in ThreadpoolController().select(user_api="openmp").lib_controllers:
        if lib.prefix != "libgomp":  # LLVM's and Intel's runtimes sleep after a short spin
            continue
        try:
            pause = ctypes.CDLL(lib.filepath).omp_pause_resource_all
        except (OSError, AttributeError):  # an old libgomp without OpenMP 5.0
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        pauses.append(pause)
    return tuple(pauses)
