"""Every convolution backend against a torch float64 autograd reference and against each other.

The grid is every backend in ``kernels.available()`` x the named CASES x {float32, float64} x
{forward, grad_inputs, grad_kernels}; a new ``kernels/backend_*.py`` joins it with no edit here.
A backend whose ``supports`` declines a case is skipped with its reason.

Two kinds of inputs:

* small integers in -4..4: every partial sum is an integer below 2**24, so any summation order
  gives the exact result in float32 as in float64, and the direct backends are held to
  equality (``np.array_equal``) with the reference and with each other. Only backends listed in
  INEXACT get a tolerance there;
* standard normal values: each backend within its (backend, dtype) entry of
  ``tests/tolerances.py``, scaled by the reduction length K of the output element.

Then: unusual memory layouts (read-only, non-contiguous, negative and zero strides), the
front door's error messages, and the registry (discovery, unavailable backends,
``NNBENCH_KERNEL``).
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import _registry, threads
from nnbench.machine import pinned_threads
from reference import convolve_with_gradients
from tests.tolerances import Tol, assert_close, tolerance

#: Backends that do not promise exact sums of small integers (a module declares ``EXACT = True``
#: to be held to equality): they do not compute the convolution as a sum of the products
#: themselves. fft: the transform rounds every value to the working precision and spreads that
#: error over the whole output (see ``kernels.backend_fft``); it is held to its table entry.
INEXACT = {name for name in kernels.available() if not kernels.get(name).exact}

DTYPES = ("float32", "float64")
PASSES = ("forward", "grad_inputs", "grad_kernels")
BACKENDS = kernels.available()


@dataclass(frozen=True)
class Case:
    """convolve(inputs (n, d, h, w), kernels (c, d, kh, kw), padding p)."""

    n: int
    d: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    p: int

    @property
    def id(self) -> str:
        k = f"{self.kh}" if self.kh == self.kw else f"{self.kh}x{self.kw}"
        return f"k{k}p{self.p}[{self.n},{self.d},{self.h},{self.w}]"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.n, self.d, self.h, self.w

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return self.c, self.d, self.kh, self.kw

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return kernels.output_shape(self.input_shape, self.kernel_shape, self.p)

    def reduction(self, pass_: str) -> int:
        """K: how many products are summed into one element of the pass's result."""
        _, _, oh, ow = self.output_shape
        return {
            "forward": self.d * self.kh * self.kw,
            "grad_inputs": self.c * self.kh * self.kw,
            "grad_kernels": self.n * oh * ow,
        }[pass_]


CASES = [
    Case(2, 3, 32, 32, c=8, kh=3, kw=3, p=1),  # 3 -> 8 channels, 3x3 'same'
    Case(2, 3, 32, 32, c=8, kh=1, kw=1, p=0),  # 1x1
    Case(2, 3, 32, 32, c=8, kh=5, kw=5, p=2),  # 5x5 'same'
    Case(2, 3, 32, 32, c=8, kh=7, kw=7, p=3),  # 7x7 'same'
    Case(1, 4, 8, 8, c=5, kh=3, kw=3, p=1),  # batch of one
    Case(3, 1, 10, 10, c=1, kh=3, kw=3, p=1),  # one channel in and out
    Case(2, 3, 9, 10, c=4, kh=4, kw=5, p=0),  # non-square image, non-square even kernel
    Case(2, 3, 12, 12, c=4, kh=3, kw=3, p=0),  # p = 0: valid
    Case(2, 3, 8, 8, c=4, kh=3, kw=3, p=2),  # p = k - 1: full
    Case(2, 2, 6, 7, c=3, kh=3, kw=3, p=4),  # p > k - 1: the output has a zero border
    Case(2, 3, 8, 8, c=4, kh=8, kw=8, p=0),  # kernel as large as the input: 1x1 output
    Case(2, 3, 5, 6, c=2, kh=7, kw=4, p=2),  # kernel taller than the input
    Case(2, 2, 16, 16, c=3, kh=11, kw=11, p=5),  # large kernel, where FFT pays off
    # Weight gradient of a 3 -> 8 channel 3x3 'same' Conv2D on 32x32 images, batch 4 (section
    # 5.7): convolve(flip(X)^T (d, n, 32, 32), dY^T (c, n, 32, 32), 1) -> (d, c, 3, 3).
    Case(3, 4, 32, 32, c=8, kh=32, kw=32, p=1),
    # Few input channels, many outputs: im2col's input gradient goes through col2im.
    Case(2, 1, 12, 12, c=8, kh=3, kw=3, p=1),
    Case(3, 2, 9, 11, c=12, kh=3, kw=5, p=0),
    # More input channels than loop's GEMV threshold: its weight gradient runs as GEMMs.
    Case(2, 6, 10, 10, c=5, kh=3, kw=3, p=1),
]
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


def grid(backends):
    """pytest params (backend(s), dtype, case) with ids like ``im2col-float32-k5p2[2,3,32,32]``."""
    return [
        pytest.param(
            b, dtype, case, id=f"{b if isinstance(b, str) else '~'.join(b)}-{dtype}-{case.id}"
        )
        for b in backends
        for dtype in DTYPES
        for case in CASES
    ]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module's tiny convolutions on one BLAS/FFT/torch thread.

    Thread start-up and spin-waiting dominate arrays this small, and on a shared 2-core machine
    they made the module 8x slower. Results do not depend on the thread count
    (``test_thread_count_does_not_change_results`` checks that with the work split and chunked).
    """
    with pinned_threads(1):
        yield


# --- the reference and the calls under test --------------------------------------------------


CALLS = {
    "forward": lambda x, k, gy, p, b: kernels.convolve(x, k, p, backend=b),
    "grad_inputs": lambda x, k, gy, p, b: kernels.grad_inputs(gy, k, p, backend=b),
    "grad_kernels": lambda x, k, gy, p, b: kernels.grad_kernels(x, gy, p, backend=b),
}


def make_inputs(case: Case, dtype: str, rng: np.random.Generator, integer: bool):
    """(inputs, kernels, grad_outputs) in ``dtype``: integers in -4..4 or standard normal."""
    shapes = case.input_shape, case.kernel_shape, case.output_shape
    if integer:
        return tuple(rng.integers(-4, 5, size=s).astype(dtype) for s in shapes)
    return tuple(rng.standard_normal(s).astype(dtype) for s in shapes)


def skip_unsupported(backend: str, case: Case, dtype: str) -> None:
    impl = kernels.get(backend)
    reason = impl.supports(case.input_shape, case.kernel_shape, case.p, np.dtype(dtype))
    if reason:
        pytest.skip(reason)


def check(name, backend, actual, expected, dtype, reduction, exact) -> None:
    """Exact equality for an exact backend on integer inputs, else its table tolerance."""
    if exact and backend not in INEXACT:
        assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {dtype}"
        assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
        diff = np.flatnonzero(actual != expected)
        assert diff.size == 0, (
            f"{name}: {diff.size} of {actual.size} elements are not exact; first at "
            f"{np.unravel_index(diff[0], actual.shape)}: {actual.flat[diff[0]]!r} != "
            f"{expected.flat[diff[0]]!r}"
        )
    else:
        assert_close(name, actual, expected, dtype=dtype, backend=backend, reduction=reduction)


# --- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("integer", [False, True], ids=["normal", "integer"])
@pytest.mark.parametrize("backend, dtype, case", grid(BACKENDS))
def test_against_reference(backend, dtype, case, integer, pass_, rng):
    skip_unsupported(backend, case, dtype)
    x, k, gy = make_inputs(case, dtype, rng, integer)
    expected = convolve_with_gradients(x, k, gy, case.p)[pass_]
    actual = CALLS[pass_](x, k, gy, case.p, backend)
    check(f"{pass_} ({backend})", backend, actual, expected, dtype, case.reduction(pass_), integer)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("pair, dtype, case", grid(itertools.combinations(BACKENDS, 2)))
def test_backends_agree(pair, dtype, case, pass_, rng):
    """Every pair, on both kinds of inputs: equal on integers if both are exact, else within
    the sum of their two tolerances (each is that close to the same float64 reference)."""
    for backend in pair:
        skip_unsupported(backend, case, dtype)
    first, second = pair
    name = f"{pass_} ({first} vs {second})"
    for integer in (True, False):
        x, k, gy = make_inputs(case, dtype, rng, integer)
        a, b = (CALLS[pass_](x, k, gy, case.p, backend) for backend in pair)
        assert a.dtype == b.dtype == np.dtype(dtype), f"{name}: dtypes {a.dtype}, {b.dtype}"
        if integer and not INEXACT.intersection(pair):
            check(name, first, a, b, dtype, case.reduction(pass_), exact=True)
        else:
            ta, tb = tolerance(dtype, first), tolerance(dtype, second)
            tol = Tol(rtol=ta.rtol + tb.rtol, atol=ta.atol + tb.atol)
            assert_close(name, a, b, dtype=dtype, reduction=case.reduction(pass_), tol=tol)


#: Cases for the thread checks: every case with a batch to split.
THREAD_CASES = [case for case in CASES if case.n >= 2]


@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_thread_count_does_not_change_results(backend, case, rng, monkeypatch):
    """Split over 2 threads in one-image chunks, every pass gives the single-thread result.

    Forced: any size is split (``MIN_PARALLEL_ELEMENTS`` 0), 2 threads whatever the cores, and
    a backend's ``CHUNK_BYTES`` at 1 byte, so that every image is its own chunk (a thread with
    a batch of 2 walks two) and a weight gradient is a sum of per-image parts. Integer inputs
    make every order of summation exact.
    """
    skip_unsupported(backend, case, "float32")
    x, k, gy = make_inputs(case, "float32", rng, integer=True)
    single = {p: CALLS[p](x, k, gy, case.p, backend) for p in PASSES}
    monkeypatch.setattr(threads, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(threads, "budget", lambda: 2)
    module = kernels.get(backend).module
    if hasattr(module, "CHUNK_BYTES"):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1)
    split_calls = []
    run = threads.run
    monkeypatch.setattr(
        threads, "run", lambda body, items: (split_calls.append(len(items)), run(body, items))
    )
    for pass_ in PASSES:
        check(
            f"{pass_} ({backend}, 2 threads, chunked)",
            backend,
            CALLS[pass_](x, k, gy, case.p, backend),
            single[pass_],
            "float32",
            case.reduction(pass_),
            exact=True,
        )
    if hasattr(module, "threads") and case == CASES[0]:  # 3x3 'same': every pass splits
        assert split_calls.count(2) >= len(PASSES), f"{backend} split only {split_calls}"


# --- memory layouts --------------------------------------------------------------------------


def _negative_strides(a: np.ndarray) -> np.ndarray:
    """The same values as ``a``, viewed through negative strides on every axis."""
    return np.ascontiguousarray(a[::-1, ::-1, ::-1, ::-1])[::-1, ::-1, ::-1, ::-1]


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _strided(a: np.ndarray) -> np.ndarray:
    """A view every other element of a twice-as-large buffer along the last two axes."""
    big = np.zeros(a.shape[:2] + (2 * a.shape[2], 2 * a.shape[3]), a.dtype)
    big[:, :, ::2, ::2] = a
    return big[:, :, ::2, ::2]


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _broadcast(a: np.ndarray) -> np.ndarray:
    """Zero strides along the batch axis (read-only, like every broadcast view)."""
    return np.broadcast_to(a[:1], a.shape)


LAYOUTS = {
    "read-only": _read_only,
    "fortran": np.asfortranarray,
    "channels-last": _channels_last,
    "strided": _strided,
    "negative-strides": _negative_strides,
    "broadcast": _broadcast,
}
LAYOUT_CASE = Case(3, 2, 7, 9, c=3, kh=3, kw=2, p=1)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_layouts(backend, dtype, layout, pass_, rng):
    """Every argument in an unusual layout: same result as for contiguous copies, and the
    arguments are left untouched."""
    case = LAYOUT_CASE
    skip_unsupported(backend, case, dtype)
    plain = make_inputs(case, dtype, rng, integer=True)
    args = tuple(LAYOUTS[layout](a) for a in plain)
    values = tuple(np.array(a) for a in args)  # what the views hold, contiguous
    expected = convolve_with_gradients(*values, case.p)[pass_]
    actual = CALLS[pass_](*args, case.p, backend)
    check(
        f"{pass_} ({backend}, {layout})",
        backend,
        actual,
        expected,
        dtype,
        case.reduction(pass_),
        exact=True,
    )
    for name, arg, before in zip(("inputs", "kernels", "grad_outputs"), args, values):
        assert np.array_equal(arg, before), f"{backend} modified its argument {name}"


# --- the front door: bad input ---------------------------------------------------------------


def _x(shape=(2, 3, 8, 8), dtype=np.float32):
    return np.zeros(shape, dtype)


def _k(shape=(4, 3, 3, 3), dtype=np.float32):
    return np.zeros(shape, dtype)


BAD_CONVOLVE = [
    (
        "inputs rank",
        lambda: kernels.convolve(_x((3, 8, 8)), _k()),
        ValueError,
        r"inputs must have 4 dimensions \(n, d, h, w\), got 3 with shape \(3, 8, 8\)",
    ),
    (
        "kernels rank",
        lambda: kernels.convolve(_x(), _k((4, 3, 3, 3, 1))),
        ValueError,
        r"kernels must have 4 dimensions \(c, d, kh, kw\), got 5",
    ),
    (
        "channel mismatch",
        lambda: kernels.convolve(_x(), _k((4, 2, 3, 3))),
        ValueError,
        r"channel mismatch: inputs has d=3 channels .* kernels expects d=2",
    ),
    (
        "negative padding",
        lambda: kernels.convolve(_x(), _k(), -1),
        ValueError,
        r"padding must be a non-negative int, got -1",
    ),
    (
        "float padding",
        lambda: kernels.convolve(_x(), _k(), 1.0),
        TypeError,
        r"padding must be a non-negative int, got 1\.0",
    ),
    (
        "bool padding",
        lambda: kernels.convolve(_x(), _k(), True),
        TypeError,
        r"padding must be a non-negative int, got True",
    ),
    (
        "string padding",
        lambda: kernels.convolve(_x(), _k(), "same"),
        TypeError,
        r"padding must be a non-negative int, got 'same'",
    ),
    (
        "empty output",
        lambda: kernels.convolve(_x(), _k((4, 3, 9, 3))),
        ValueError,
        r"empty output: .* give output \(2, 4, 0, 6\); need h \+ 2\*padding >= kh",
    ),
    (
        "integer dtype",
        lambda: kernels.convolve(_x(dtype=np.int64), _k(dtype=np.int64)),
        TypeError,
        r"inputs must have dtype float32 or float64, got int64",
    ),
    (
        "float16 kernels",
        lambda: kernels.convolve(_x(), _k(dtype=np.float16)),
        TypeError,
        r"kernels must have dtype float32 or float64, got float16",
    ),
    (
        "complex dtype",
        lambda: kernels.convolve(_x(dtype=np.complex64), _k()),
        TypeError,
        r"inputs must have dtype float32 or float64, got complex64",
    ),
    (
        "mixed dtypes",
        lambda: kernels.convolve(_x(), _k(dtype=np.float64)),
        TypeError,
        r"mixed dtypes: inputs is float32, kernels is float64",
    ),
    (
        "list inputs",
        lambda: kernels.convolve(_x().tolist(), _k()),
        TypeError,
        r"inputs must be a numpy.ndarray, got list",
    ),
    (
        "empty inputs",
        lambda: kernels.convolve(_x((0, 3, 8, 8)), _k()),
        ValueError,
        r"inputs must not be empty, got shape \(0, 3, 8, 8\)",
    ),
    (
        "empty kernels",
        lambda: kernels.convolve(_x(), _k((0, 3, 3, 3))),
        ValueError,
        r"kernels must not be empty, got shape \(0, 3, 3, 3\)",
    ),
    (
        "unknown backend",
        lambda: kernels.convolve(_x(), _k(), backend="nope"),
        ValueError,
        r"unknown backend 'nope'; available backends: " + re.escape(", ".join(BACKENDS)),
    ),
    (
        "backend not a name",
        lambda: kernels.convolve(_x(), _k(), backend=3),
        TypeError,
        r"backend must be a str naming a backend, got int",
    ),
]

BAD_GRADIENTS = [
    (
        "grad_inputs rank",
        lambda: kernels.grad_inputs(_x((2, 4, 6)), _k()),
        ValueError,
        r"grad_outputs must have 4 dimensions \(n, c, oh, ow\)",
    ),
    (
        "grad_inputs channel mismatch",
        lambda: kernels.grad_inputs(_x((2, 5, 6, 6)), _k()),
        ValueError,
        r"channel mismatch: grad_outputs has c=5 .* kernels has c=4",
    ),
    (
        "grad_inputs impossible shape",
        lambda: kernels.grad_inputs(_x((2, 4, 1, 1)), _k(), 2),
        ValueError,
        (
            r"cannot come from kernels \(4, 3, 3, 3\) with padding=2: the inputs would "
            r"have spatial shape \(-1, -1\)"
        ),
    ),
    (
        "grad_inputs mixed dtypes",
        lambda: kernels.grad_inputs(_x((2, 4, 6, 6), np.float64), _k()),
        TypeError,
        r"mixed dtypes: grad_outputs is float64, kernels is float32",
    ),
    (
        "grad_kernels batch mismatch",
        lambda: kernels.grad_kernels(_x(), _x((3, 4, 6, 6))),
        ValueError,
        r"batch mismatch: inputs has n=2 but grad_outputs has n=3",
    ),
    (
        "grad_kernels impossible shape",
        lambda: kernels.grad_kernels(_x(), _x((2, 4, 9, 9))),
        ValueError,
        r"the kernels would have spatial shape \(0, 0\)",
    ),
    (
        "grad_kernels negative padding",
        lambda: kernels.grad_kernels(_x(), _x((2, 4, 6, 6)), -2),
        ValueError,
        r"padding must be a non-negative int, got -2",
    ),
    (
        "grad_kernels list",
        lambda: kernels.grad_kernels(_x(), [[0.0]]),
        TypeError,
        r"grad_outputs must be a numpy.ndarray, got list",
    ),
]


@pytest.mark.parametrize(
    "call, error, message",
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CONVOLVE + BAD_GRADIENTS],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unsupported_case_names_the_reason():
    """A backend's ``supports`` reason reaches the caller of the front door."""
    module = type(sys)("backend_tiny")
    module.convolve = lambda inputs, kernels_, padding: None
    module.supports = lambda x_shape, k_shape, padding, dtype: (
        "kernels larger than 5x5" if k_shape[2] > 5 else None
    )
    tiny = _registry.load(module, "tiny")
    with pytest.raises(ValueError, match=r"backend 'tiny' cannot compute this case: kernels "):
        kernels.convolve(_x(), _k((4, 3, 7, 7)), 3, backend=tiny)


def test_numpy_integer_padding_is_accepted():
    out = kernels.convolve(_x(), _k(), np.int64(1), backend=BACKENDS[0])
    assert out.shape == (2, 4, 8, 8)


# --- the registry ----------------------------------------------------------------------------

KERNELS_DIR = Path(kernels.__file__).parent


def test_available_lists_every_importable_backend_sorted():
    names = sorted(p.stem[len(_registry.PREFIX) :] for p in KERNELS_DIR.glob("backend_*.py"))
    importable = []
    for name in names:
        try:
            importlib.import_module(f"kernels.backend_{name}")
        except ImportError:
            assert name in kernels.unavailable(), f"{name} fails to import but is not reported"
        else:
            importable.append(name)
    assert kernels.available() == sorted(kernels.available())
    assert kernels.available() == importable
    for name in kernels.available():
        assert kernels.get(name).name == name


def test_exactness_is_declared_by_each_backend_module():
    for name in kernels.available():
        assert kernels.get(name).exact is bool(getattr(kernels.get(name).module, "EXACT", False))
    # the FFT rounds through its transforms; the direct methods sum the products themselves
    assert "fft" not in kernels.available() or not kernels.get("fft").exact
    assert all(kernels.get(n).exact for n in ("loop", "im2col", "torch") if n in BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_release_scratch_leaves_later_calls_correct(backend, rng):
    x = rng.integers(-4, 5, (2, 3, 9, 10)).astype(np.float32)
    k = rng.integers(-4, 5, (4, 3, 3, 3)).astype(np.float32)
    before = kernels.convolve(x, k, 1, backend=backend)
    kernels.release_scratch()
    after = kernels.convolve(x, k, 1, backend=backend)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)


@pytest.fixture
def extra_backend_dir(tmp_path, monkeypatch):
    """A second directory on ``kernels.__path__``; the modules imported from it are forgotten
    afterwards, and nothing is written inside the repository."""
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("kernels."):
            del sys.modules[name]
    importlib.invalidate_caches()


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()


def test_backend_whose_import_fails_is_unavailable_with_its_reason(extra_backend_dir, monkeypatch):
    _write_module(
        extra_backend_dir,
        "backend_broken",
        """
        raise ImportError("libbroken is not installed")
        """,
    )
    found, missing = _registry.discover()
    assert "broken" not in found
    assert missing["broken"] == "ImportError: libbroken is not installed"
    assert sorted(found) == kernels.available()
    # What the front door says once the package was imported with this file present.
    monkeypatch.setattr(kernels, "_BACKENDS", found)
    monkeypatch.setattr(kernels, "_UNAVAILABLE", missing)
    assert kernels.unavailable()["broken"] == "ImportError: libbroken is not installed"
    assert "broken" not in kernels.available()
    with pytest.raises(
        ValueError,
        match=r"backend 'broken' is not available on this machine: ImportError: libbroken is "
        r"not installed; available backends: " + re.escape(", ".join(BACKENDS)),
    ):
        kernels.convolve(_x(), _k(), backend="broken")


def test_adding_a_backend_file_is_enough(extra_backend_dir, rng):
    """A fifth backend with only a forward gets both gradients from the generic backward."""
    _write_module(
        extra_backend_dir,
        "backend_scratch",
        """
        from kernels.backend_torch import convolve
        """,
    )
    found, missing = _registry.discover()
    assert "scratch" in found and "scratch" not in missing
    scratch = found["scratch"]
    assert not scratch.specialised_backward
    case = CASES[0]
    x, k, gy = make_inputs(case, "float64", rng, integer=True)
    expected = convolve_with_gradients(x, k, gy, case.p)
    for pass_ in PASSES:
        check(
            pass_,
            "scratch",
            CALLS[pass_](x, k, gy, case.p, scratch),
            expected[pass_],
            "float64",
            case.reduction(pass_),
            exact=True,
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_environment_variable_picks_the_default(backend, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    assert kernels.resolve(None).name == backend
    other = next(b for b in BACKENDS if b != backend) if len(BACKENDS) > 1 else backend
    assert kernels.resolve(other).name == other  # an explicit choice beats the variable


def test_environment_variable_with_unknown_backend(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "nope")
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; available backends: "):
        kernels.convolve(_x(), _k())


def test_default_backend_without_environment_variable(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    if kernels.DEFAULT_BACKEND not in BACKENDS:
        pytest.skip(f"default backend {kernels.DEFAULT_BACKEND!r} is not available here")
    assert kernels.resolve(None).name == kernels.DEFAULT_BACKEND


# --- fft without scipy -----------------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[0], CASES[9], CASES[11]], ids=lambda c: c.id)
def test_fft_falls_back_to_numpy_fft(case, monkeypatch, rng):
    """Where scipy is missing, backend_fft runs on numpy.fft (single-threaded)."""
    if "fft" not in BACKENDS:
        pytest.skip("the fft backend is not available")
    monkeypatch.setattr(kernels.get("fft").module, "_scipy_fft", None)
    x, k, gy = make_inputs(case, "float32", rng, integer=False)
    expected = convolve_with_gradients(x, k, gy, case.p)
    for pass_ in PASSES:
        assert_close(
            pass_,
            CALLS[pass_](x, k, gy, case.p, "fft"),
            expected[pass_],
            dtype="float32",
            backend="fft",
            reduction=case.reduction(pass_),
        )
