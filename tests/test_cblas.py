"""``kernels._cblas``: the GEMM that adds into its output, through the C BLAS or numpy."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import kernels
from kernels import _cblas, threads


def _ints(rng, shape, dtype) -> np.ndarray:
    return rng.integers(-4, 5, shape).astype(dtype)  # integer sums: exact in any order


def _strided(rng, shape, dtype, extra: int = 7, shift: int = 3) -> np.ndarray:
    """A view with rows longer than its columns, starting mid-row: the loop's shifted images."""
    rows, columns = shape
    return _ints(rng, (rows, columns + extra), dtype)[:, shift : shift + columns]


#: (a, b, out) of each layout, as (rows, inner, columns); how each operand is laid out
LAYOUTS = {
    "contiguous": lambda r, t: (_ints(r, (5, 3), t), _ints(r, (3, 40), t), _ints(r, (5, 40), t)),
    "shifted views": lambda r, t: (_ints(r, (5, 3), t), _strided(r, (3, 40), t), _strided(r, (5, 40), t)),
    "one row": lambda r, t: (_ints(r, (1, 3), t), _strided(r, (3, 9), t), _strided(r, (1, 9), t)),
    "one column": lambda r, t: (_ints(r, (4, 6), t), _ints(r, (6, 1), t), _ints(r, (4, 1), t)),
    "transposed operand": lambda r, t: (_ints(r, (3, 5), t).T, _ints(r, (3, 8), t), _ints(r, (5, 8), t)),
    "transposed shifted view": lambda r, t: (_ints(r, (5, 40), t), _strided(r, (3, 40), t).T, _ints(r, (5, 3), t)),
    "both transposed": lambda r, t: (_strided(r, (40, 5), t).T, _strided(r, (3, 40), t).T, _ints(r, (5, 3), t)),
    "output transposed": lambda r, t: (_ints(r, (5, 6), t), _ints(r, (6, 4), t), _ints(r, (4, 5), t).T),
}  # fmt: skip


@pytest.fixture(params=["c-blas-gemm", "c-blas-gemv", "numpy"])
def route(request, monkeypatch) -> str:
    """How ``gemm_into`` computes: one C BLAS GEMM, GEMVs per output row or column (every
    product, not only the small ones), or numpy."""
    if request.param == "numpy":
        monkeypatch.setattr(_cblas, "_functions", lambda prefix: None)
    elif not _cblas.available(np.float32):
        pytest.skip("no C BLAS here")
    else:
        monkeypatch.setattr(_cblas, "GEMV_OUTPUTS", 10**9 if request.param.endswith("gemv") else 0)
    return request.param


@pytest.mark.parametrize("accumulate", [False, True], ids=["write", "add"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gemm_into_writes_or_adds_the_product(route, layout, dtype, accumulate, rng):
    a, b, out = LAYOUTS[layout](rng, dtype)
    before = out.copy()
    _cblas.gemm_into(a, b, out, accumulate)
    product = a.astype(np.float64) @ b
    np.testing.assert_array_equal(out, before + product if accumulate else product)


def test_transposed_operands_go_to_the_c_blas_and_a_transposed_output_does_not(rng):
    """A ``.T`` view (the loop's stacked weight gradient: gy @ shifted images^T) is passed as
    the BLAS's transpose flag, not copied or handed to numpy; an output must have unit-stride
    rows, else ``_call`` refuses it and ``gemm_into`` falls back."""
    if not _cblas.available(np.float32):
        pytest.skip("no C BLAS GEMM here")
    function = _cblas._functions("s")[0]
    a = _strided(rng, (40, 5), np.float32).T  # (5, 40), columns of unit stride
    b = _strided(rng, (3, 40), np.float32).T  # (40, 3)
    out = np.zeros((5, 3), np.float32)
    assert _cblas._call(function, a, b, out, 0.0)
    np.testing.assert_array_equal(out, a.astype(np.float64) @ b)
    assert not _cblas._call(function, a, b, np.zeros((3, 5), np.float32).T, 0.0)


def test_gemm_into_leaves_what_is_around_a_view_as_it_was(route, rng):
    """Writing into a window of a buffer (the loop's live part of its grid) touches nothing
    outside the window."""
    buffer = _ints(rng, (6, 50), np.float32)
    window = buffer[1:5, 3:43]
    outside = buffer.copy()
    _cblas.gemm_into(_ints(rng, (4, 3), np.float32), _strided(rng, (3, 40), np.float32),
                     window, True)  # fmt: skip
    outside[1:5, 3:43] = buffer[1:5, 3:43]
    np.testing.assert_array_equal(buffer, outside)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="the C BLAS is used on 64-bit Linux only",
)
def test_numpys_blas_gives_its_c_gemm_here():
    """On 64-bit Linux with numpy's OpenBLAS or MKL, the C BLAS is found and passes its
    self-test: otherwise the loop backend silently falls back to a slower path."""
    apis = {lib["internal_api"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    if not apis & {"openblas", "mkl"}:
        pytest.skip(f"numpy's BLAS here is {apis or 'unknown'}")
    assert _cblas.available(np.float32) and _cblas.available(np.float64)
    assert not _cblas.available(np.int64)


def _fails(*args):
    raise AssertionError("called")


@pytest.mark.parametrize("which", ["gemm", "gemv"])
@pytest.mark.parametrize("wrong", [lambda *args: None, _fails], ids=["computes-nothing", "raises"])
def test_self_test_refuses_a_blas_that_gets_it_wrong(which, wrong):
    if not _cblas.available(np.float32):
        pytest.skip("no C BLAS here")
    gemm, gemv = _cblas._functions("s")
    assert _cblas._self_test(gemm, gemv, "s")
    assert not _cblas._self_test(*((wrong, gemv) if which == "gemm" else (gemm, wrong)), "s")


@pytest.mark.parametrize(
    ("shape", "route"),
    [((2, 30_000, 9), "gemv"), ((9, 30_000, 2), "gemv"), ((8, 30_000, 9), "gemm")],
    ids=["two-rows", "two-columns", "72-outputs"],
)
def test_small_products_run_as_gemvs_and_larger_ones_as_one_gemm(shape, route, rng, monkeypatch):
    """At most ``GEMV_OUTPUTS`` outputs (the loop's weight gradient with one or two output
    channels): GEMVs, the other routine never called; more: one GEMM."""
    if not _cblas.available(np.float32):
        pytest.skip("no C BLAS here")
    gemm, gemv = _cblas._functions("s")
    monkeypatch.setattr(
        _cblas, "_functions", lambda prefix: (_fails, gemv) if route == "gemv" else (gemm, _fails)
    )
    m, k, n = shape
    a, b = _ints(rng, (m, k), np.float32), _strided(rng, (n, k), np.float32).T
    out = np.empty((m, n), np.float32)
    _cblas.gemm_into(a, b, out, False)
    np.testing.assert_array_equal(out, a.astype(np.float64) @ b)


@pytest.mark.parametrize("whole_batch", [False, True], ids=["chunks", "whole-batch"])
@pytest.mark.parametrize("pass_", ["forward", "grad_inputs", "grad_kernels"])
def test_loop_gives_the_same_numbers_with_either_route(pass_, whole_batch, rng, monkeypatch):
    """The loop backend's offsets add into one grid through ``gemm_into``, and its weight
    gradient's kernel rows (4 x 15 products here: GEMVs) come from it too: bit for bit the
    same result through the C BLAS as through numpy (integers: exact in any order)."""
    if whole_batch:  # the GEMMs on the BLAS's threads, as on many cores
        monkeypatch.setattr(threads, "whole_batch", lambda n, elements, per_row, dtype: n)
    x = _ints(rng, (3, 5, 9, 8), np.float32)
    k = _ints(rng, (4, 5, 3, 3), np.float32)
    y = _ints(rng, (3, 4, 9, 8), np.float32)
    operands = {"forward": (x, k), "grad_inputs": (y, k), "grad_kernels": (x, y)}[pass_]
    function = getattr(kernels, "convolve" if pass_ == "forward" else pass_)
    through_blas = function(*operands, 1, backend="loop")
    monkeypatch.setattr(_cblas, "_functions", lambda prefix: None)
    np.testing.assert_array_equal(function(*operands, 1, backend="loop"), through_blas)
    wide = [operand.astype(np.float64) for operand in operands]
    np.testing.assert_array_equal(through_blas, function(*wide, 1, backend="im2col"))


def test_gemm_into_lets_other_threads_run_during_the_blas_call(rng):
    """ctypes releases the GIL for the call: a small output (the size np.matmul would hold the
    GIL through) lets another Python thread run (``test_threads._another_thread_ran_during``)."""
    from tests.test_threads import _another_thread_ran_during

    if not _cblas.available(np.float32):
        pytest.skip("no C BLAS GEMM here")
    a, b = _ints(rng, (27, 200_000), np.float32), _ints(rng, (200_000, 16), np.float32)
    out = np.zeros((27, 16), np.float32)
    assert _another_thread_ran_during(lambda: _cblas.gemm_into(a, b, out, True))
