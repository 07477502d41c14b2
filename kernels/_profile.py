"""Where a backend's time goes: stage timings and a record of its GEMMs, only while profiled.

Backends mark their steps with ``with _profile.stage("layout"):`` (``"gemm"``, ``"col2im"``,
``"reduction"``, ...) and call ``_profile.matmul`` for their GEMMs (``_profile.gemm_into`` for
one that adds into its output, ``kernels._cblas``). Outside ``profiled()`` both
cost one attribute lookup and nothing is recorded: the hot path stays as it is.

Inside ``profiled()`` every stage adds its seconds (summed over the threads that ran it), and
every GEMM is recorded with its operands' shapes, strides, dtype and addresses, the thread that
ran it and the parallel section (``kernels.threads.run``) it ran in. ``replay_plan(record)``
then runs the same GEMMs on fresh operands of the same layout, sharing memory where the call's
shared it, section by section, each thread's GEMMs on one thread as before: the time of the
GEMMs alone, the backend's own bound.

``matmul`` is also where the GEMMs let other threads run. ``np.matmul`` releases the GIL only
when its output has more than 500 elements (numpy's threshold for releasing it in a loop); with
a smaller output it holds the GIL for the whole BLAS call, however long the reduction, and the
other threads' slices wait at their next numpy call. The weight gradient of a small layer is
such a GEMM: im2col's (K, M) @ (M, c) is 27 x 16 on the CIFAR-10 recipe's first layer (the
loop backend's are ``gemm_into`` calls, which release it whatever their size). ``np.dot`` of
2-D operands (or 2-D by 1-D) always releases it, but zero-fills its output before the BLAS
call, an extra pass that costs 5% on a wide output; so ``matmul`` takes ``np.dot`` for
outputs of at most ``DOT_OUTPUT_ELEMENTS`` elements.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from kernels import _cblas

__all__ = ["Profile", "gemm_into", "matmul", "numbered", "profiled", "replay_plan", "stage"]

#: Outputs up to this many elements are computed with ``np.dot``, which releases the GIL
#: whatever the output's size (see the module docstring); its zero-fill is then negligible.
DOT_OUTPUT_ELEMENTS = 1 << 14


@dataclass(frozen=True)
class Gemm:
    """One recorded matmul: operand (shape, strides in elements, dtype) and where it ran."""

    section: int  # 0: outside any parallel section
    thread: str
    a: tuple
    b: tuple
    out: tuple | None
    blas_threads: int = 0  # the BLAS limit in force when it ran (0: unknown)
    #: where a, b and out lay in memory (out: None when there was none), so that the replay
    #: lays its operands out as they were: one buffer where the call used one (``_operands``)
    addresses: tuple = ()
    #: ``gemm_into``'s: out = a @ b, or out += a @ b where True (the C BLAS's beta = 1)
    into: bool = False
    accumulate: bool = False


@dataclass
class Profile:
    """What ``profiled()`` collected: seconds per stage (summed over threads) and the GEMMs."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gemms: list[Gemm] = field(default_factory=list)
    sections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_active: Profile | None = None
_local = threading.local()


class _Null:
    """The stage of an unprofiled call: enters and leaves without doing anything."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


_NULL = _Null()


class _Timed:
    __slots__ = ("name", "profile", "start")

    def __init__(self, profile: Profile, name: str):
        self.profile, self.name = profile, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        elapsed = time.perf_counter() - self.start
        with self.profile.lock:
            self.profile.seconds[self.name] += elapsed


def stage(name: str):
    """A context manager that times its body as stage ``name`` while a profile is active."""
    profile = _active
    return _NULL if profile is None else _Timed(profile, name)


def _describe(array: np.ndarray) -> tuple:
    return array.shape, tuple(s // array.itemsize for s in array.strides), array.dtype.str


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, with the GIL released during the BLAS call (``np.dot``
    where the output is small, see the module docstring), recorded while a profile is active."""
    if _active is not None:
        _record(a, b, out)
    return _gemm(a, b, out)


def gemm_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    """``_cblas.gemm_into``: ``out = a @ b``, or ``out += a @ b`` in the same pass with
    ``accumulate``; recorded while a profile is active."""
    if _active is not None:
        _record(a, b, out, into=True, accumulate=accumulate)
    _cblas.gemm_into(a, b, out, accumulate)


def _record(a: np.ndarray, b: np.ndarray, out: np.ndarray | None, **kind: bool) -> None:
    from kernels import threads

    profile = _active
    if profile is None:
        return
    libs = threads._blas()
    gemm = Gemm(
        getattr(_local, "section", 0),
        threading.current_thread().name,
        _describe(a),
        _describe(b),
        None if out is None else _describe(out),
        libs[0].num_threads if libs else 0,
        (_address(a), _address(b), None if out is None else _address(out)),
        **kind,
    )
    with profile.lock:
        profile.gemms.append(gemm)


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``a @ b`` into ``out``: ``np.dot`` for a small output where it takes the operands as
    they are (2-D by 2-D or 1-D, each C- or F-contiguous, else it copies them; ``out`` None or
    C-contiguous, aligned and writeable, of the result's dtype), else ``np.matmul``."""
    if (
        a.ndim == 2
        and 1 <= b.ndim <= 2
        and a.shape[0] * (b.shape[1] if b.ndim == 2 else 1) <= DOT_OUTPUT_ELEMENTS
        and _one_segment(a)
        and _one_segment(b)
        and (out is None or (out.flags.carray and out.dtype == np.result_type(a, b)))
    ):
        return np.dot(a, b, out=out)
    return np.matmul(a, b, out=out)


def _one_segment(array: np.ndarray) -> bool:
    return array.flags.c_contiguous or array.flags.f_contiguous


def numbered(body):
    """``body`` itself, or, while a profile is active, ``body`` wrapped so that the GEMMs it
    runs are recorded as one parallel section (``kernels.threads.run`` calls this)."""
    profile = _active
    if profile is None:
        return body
    with profile.lock:
        profile.sections += 1
        number = profile.sections

    def in_section(item):
        previous = getattr(_local, "section", 0)
        _local.section = number
        try:
            return body(item)
        finally:
            _local.section = previous

    return in_section


@contextlib.contextmanager
def profiled() -> Iterator[Profile]:
    """Collect stage seconds and GEMMs of every backend call made in the body (one at a time:
    profiles do not nest)."""
    global _active
    if _active is not None:
        raise RuntimeError("a profile is already being collected")
    profile = Profile()
    _active = profile
    try:
        yield profile
    finally:
        _active = None


def _operand(spec: tuple, rng: np.random.Generator) -> np.ndarray:
    """A fresh array with the recorded shape, strides (in elements) and dtype."""
    shape, strides, dtype = spec
    dtype = np.dtype(dtype)
    if any(s == 0 for s in shape):
        return np.empty(shape, dtype)
    extent = 1 + sum((n - 1) * abs(s) for n, s in zip(shape, strides))
    base = rng.standard_normal(extent).astype(dtype)
    offset = sum((n - 1) * -s for n, s in zip(shape, strides) if s < 0)
    return np.ndarray(
        shape,
        dtype,
        buffer=base,
        offset=offset * dtype.itemsize,
        strides=tuple(s * dtype.itemsize for s in strides),
    )


def _operands(gemms: list[Gemm], rng: np.random.Generator) -> list[tuple]:
    """Fresh (a, b, out) for each GEMM, laid out in memory as the call's were: operands whose
    bytes overlapped in the call (a buffer reused chunk after chunk, the same operand of many
    GEMMs, shifted views of one image) are views of one fresh buffer at the same offsets, at
    the same alignment to 64 bytes, so that the replay finds them in the caches as the call
    did. Operands made one by one would read each from memory: when the loop backend ran 27
    GEMVs per chunk on one gradient, their replay took 1.5 to 2x the whole call's time. A
    region read as two dtypes, or an operand recorded without its address, gets an array of
    its own."""
    specs = [spec for gemm in gemms for spec in (gemm.a, gemm.b, gemm.out)]
    addresses = [address for gemm in gemms for address in (gemm.addresses or (None, None, None))]
    arrays: list[np.ndarray | None] = [None] * len(specs)
    spans = []
    for index, (spec, address) in enumerate(zip(specs, addresses)):
        if spec is not None and address is not None and all(n > 0 for n in spec[0]):
            spans.append((*_span(spec, address), index))
    spans.sort()
    regions: list[list] = []  # [first byte, end byte, operand indices]
    for low, high, index in spans:
        if regions and low < regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], high)
            regions[-1][2].append(index)
        else:
            regions.append([low, high, [index]])
    for low, high, members in regions:
        dtypes = {specs[index][2] for index in members}
        if len(dtypes) > 1:
            continue
        dtype = np.dtype(dtypes.pop())
        raw = rng.standard_normal(-(-(high - low + 64) // dtype.itemsize)).astype(dtype)
        shift = (low - raw.ctypes.data) % 64  # the call's alignment to 64 bytes
        for index in members:
            shape, strides, _ = specs[index]
            arrays[index] = np.ndarray(
                shape,
                dtype,
                buffer=raw,
                offset=shift + addresses[index] - low,
                strides=tuple(s * dtype.itemsize for s in strides),
            )
    for index, spec in enumerate(specs):
        if arrays[index] is None and spec is not None:
            arrays[index] = _operand(spec, rng)
    return [tuple(arrays[i : i + 3]) for i in range(0, len(arrays), 3)]


def _span(spec: tuple, address: int) -> tuple[int, int]:
    """The first byte and the end of the bytes an operand recorded at ``address`` covers."""
    shape, strides, dtype = spec
    item = np.dtype(dtype).itemsize
    low = address + sum((n - 1) * s * item for n, s in zip(shape, strides) if s < 0)
    high = address + sum((n - 1) * s * item for n, s in zip(shape, strides) if s > 0) + item
    return low, high


def replay_plan(profile: Profile, seed: int = 0):
    """A function that runs the recorded GEMMs alone, on operands made once and laid out as
    the call's were (``_operands``), as they ran: GEMMs outside a section on the calling
    thread, with the BLAS on one thread if it ran so (else on the threads in force, at most
    the cores), each section's GEMMs grouped by thread and run through ``kernels.threads.run``
    (which holds the BLAS at one thread, as it did)."""
    from kernels import threads

    rng = np.random.default_rng(seed)
    steps: list[tuple[int, list[list[tuple]]]] = []  # (section, per-thread operand lists)
    by_section: dict[int, dict[str, list[tuple]]] = {}
    held: set[int] = set()  # steps outside sections that ran with the BLAS on one thread
    for gemm, ops in zip(profile.gemms, _operands(profile.gemms, rng)):
        if gemm.section == 0:
            if gemm.blas_threads == 1:
                held.add(len(steps))
            steps.append((0, [[(gemm, ops)]]))
            continue
        if gemm.section not in by_section:
            by_section[gemm.section] = {}
            steps.append((gemm.section, []))
        by_section[gemm.section].setdefault(gemm.thread, []).append((gemm, ops))
    plan = [
        (number, groups if number == 0 else list(by_section[number].values()), index in held)
        for index, (number, groups) in enumerate(steps)
    ]

    def run_group(group: list[tuple]) -> None:
        for gemm, (a, b, out) in group:  # recorded too when the replay itself is profiled
            if gemm.into:
                gemm_into(a, b, out, gemm.accumulate)
            else:
                matmul(a, b, out=out)

    def replay() -> None:
        for number, groups, one_thread in plan:
            if number != 0:
                threads.run(run_group, groups)
            elif one_thread:
                with threads.single_threaded_blas():
                    run_group(groups[0])
            else:  # as a backend runs its whole-batch GEMMs: at most at the cores
                with threads.blas_within_cores():
                    run_group(groups[0])

    return replay
