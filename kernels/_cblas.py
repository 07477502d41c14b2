"""GEMM that adds into its output: the C BLAS ``?gemm`` of numpy's own BLAS, through ctypes.

``np.matmul`` only writes its product: C = A B. The loop backend sums kh*kw such products on
one grid, and with ``np.matmul`` each product goes to a buffer that a second pass adds in (the
"reduction" of its profile, up to 46% of a forward). The C BLAS computes C = A B + beta C in
one pass, with operands of any row stride, each as it stands or transposed (a ``.T`` view).
``gemm_into(a, b, out, accumulate)`` calls it.

Which library: the one numpy's ``_multiarray_umath`` links, so that the thread limits
threadpoolctl sets are the ones that apply. ``dlsym`` on that module finds the symbols of the
libraries it depends on; the names tried are those of numpy's wheels (``scipy_cblas_sgemm64_``,
numpy 2; ``cblas_sgemm64_``, numpy 1) and of a plain CBLAS (``cblas_sgemm``). Integer arguments
go as 64-bit values: right for an ILP64 library and, on the 64-bit Linux ABIs (arguments in
64-bit registers or 8-byte stack slots, little-endian), for an LP64 one too, which reads their
low halves. So it is used on Linux x86-64 and aarch64 only, and only after a product with
strided operands and beta = 1, as they stand and transposed, has come out right
(``_self_test``). Anywhere else, for another dtype, or for an operand with neither unit-stride
rows nor unit-stride columns (or an output without unit-stride rows), ``gemm_into`` computes
the same with ``np.matmul`` and an add: the results agree, only slower.

ctypes releases the GIL for the call, whatever the output's size.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

import numpy as np

__all__ = ["available", "gemm_into"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_NAMES = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_", "cblas_{}gemm")
_PREFIX = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}
_CTYPE = {"s": ctypes.c_float, "d": ctypes.c_double}


def _numpy_module_path() -> str | None:
    try:
        from numpy._core import _multiarray_umath as module  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as module
    return getattr(module, "__file__", None)


@functools.cache
def _function(prefix: str):
    """The CBLAS ``{prefix}gemm`` of numpy's BLAS, checked, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None
    path = _numpy_module_path()
    if path is None:
        return None
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    for name in _NAMES:
        function = getattr(library, name.format(prefix), None)
        if function is None:
            continue
        real, size = _CTYPE[prefix], ctypes.c_int64
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, size, size, size, real,
                             ctypes.c_void_p, size, ctypes.c_void_p, size, real,
                             ctypes.c_void_p, size]  # fmt: skip
        function.restype = None
        return function if _self_test(function, prefix) else None
    return None


def _self_test(function, prefix: str) -> bool:
    """A (3, 5) @ (5, 4) product added into an output, every operand a strided view: exact
    in either precision (small integers), so anything but the right numbers fails it."""
    dtype = np.float32 if prefix == "s" else np.float64
    values = np.arange(-7, 8, dtype=dtype)
    a = np.resize(values, (3, 7))[:, 1:6]
    b = np.resize(values[::-1], (5, 9))[:, 2:6]
    out = np.resize(values, (3, 6))[:, 1:5].copy()
    expected = out + a @ b
    out_t = np.ascontiguousarray(out.T)  # the same product transposed: both operands ``.T``
    try:
        called = _call(function, a, b, out, 1.0) and _call(function, b.T, a.T, out_t, 1.0)
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False
    return called and bool(np.array_equal(out, expected) and np.array_equal(out_t, expected.T))


def _layout(array: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension in elements) of a 2-D operand as the row-major BLAS
    takes it: rows of unit stride as they stand, or columns of unit stride as the transpose of
    a row-major matrix (a ``.T`` view); None where neither holds."""
    item = array.itemsize
    rows, columns = array.shape
    if array.strides[0] % item or array.strides[1] % item:
        return None
    row_step, column_step = array.strides[0] // item, array.strides[1] // item
    if column_step == 1 or columns == 1:
        lead = row_step if rows > 1 else columns
        return (_NO_TRANS, lead) if lead >= max(1, columns) else None
    if row_step == 1 or rows == 1:
        lead = column_step if columns > 1 else rows
        return (_TRANS, lead) if lead >= max(1, rows) else None
    return None


def _call(function, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> bool:
    """C BLAS ``out = a @ b + beta * out``; False (nothing done) where an operand's layout is
    not one the BLAS takes (``_layout``)."""
    layouts = _layout(a), _layout(b), _layout(out)
    if None in layouts or layouts[2][0] != _NO_TRANS:
        return False
    (trans_a, lead_a), (trans_b, lead_b), (_, lead_out) = layouts
    m, k = a.shape
    n = b.shape[1]
    function(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lead_a,
             b.ctypes.data, lead_b, beta, out.ctypes.data, lead_out)  # fmt: skip
    return True


def available(dtype) -> bool:
    """Whether ``gemm_into`` runs the C BLAS for ``dtype`` here (else numpy's fallback)."""
    prefix = _PREFIX.get(np.dtype(dtype))
    return prefix is not None and _function(prefix) is not None


def gemm_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``: 2-D operands of one dtype,
    ``out`` (a.shape[0], b.shape[1]) and not overlapping ``a`` or ``b``."""
    function = _function(_PREFIX[out.dtype]) if out.dtype in _PREFIX else None
    if (
        function is not None
        and a.dtype == b.dtype == out.dtype
        and min(a.size, b.size, out.size) > 0
        and _call(function, a, b, out, 1.0 if accumulate else 0.0)
    ):
        return
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
