"""GEMM that adds into its output: the C BLAS ``?gemm`` of numpy's own BLAS, through ctypes.

``np.matmul`` only writes its product: C = A B. The loop backend sums kh*kw such products on
one grid, and with ``np.matmul`` each product goes to a buffer that a second pass adds in (the
"reduction" of its profile, up to 46% of a forward). The C BLAS computes C = A B + beta C in
one pass, with operands of any row stride, each as it stands or transposed (a ``.T`` view).
``gemm_into(a, b, out, accumulate)`` calls it.

A product with a handful of outputs and a long reduction (the loop's weight gradient of a layer
with one or two output channels: (1, 57600) @ (57600, 15)) runs as one ``?gemv`` per output
row, or per column where there are fewer of those (at most ``GEMV_OUTPUTS`` outputs). The
GEMM packs its operands block by block along the reduction, and with so few outputs that
packing is the whole cost: one GEMM took 2-6x as long as the GEMVs (2-8 rows, reductions of
37-58k). The GEMVs stream each operand once.

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

#: Products with at most this many outputs run as GEMVs, one per output row or column.
GEMV_OUTPUTS = 64

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_NAMES = ("scipy_cblas_{}64_", "cblas_{}64_", "cblas_{}")
_PREFIX = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}
_CTYPE = {"s": ctypes.c_float, "d": ctypes.c_double}


def _numpy_module_path() -> str | None:
    try:
        from numpy._core import _multiarray_umath as module  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as module
    return getattr(module, "__file__", None)


@functools.cache
def _functions(prefix: str) -> tuple | None:
    """The CBLAS (``{prefix}gemm``, ``{prefix}gemv``) of numpy's BLAS, checked, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None
    path = _numpy_module_path()
    if path is None:
        return None
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    real, size, pointer, flag = _CTYPE[prefix], ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for name in _NAMES:
        gemm = getattr(library, name.format(prefix + "gemm"), None)
        gemv = getattr(library, name.format(prefix + "gemv"), None)
        if gemm is None or gemv is None:
            continue
        gemm.argtypes = [flag, flag, flag, size, size, size, real, pointer, size, pointer, size,
                         real, pointer, size]  # fmt: skip
        gemv.argtypes = [flag, flag, size, size, real, pointer, size, pointer, size, real,
                         pointer, size]  # fmt: skip
        gemm.restype = gemv.restype = None
        return (gemm, gemv) if _self_test(gemm, gemv, prefix) else None
    return None


def _self_test(gemm, gemv, prefix: str) -> bool:
    """A (3, 5) @ (5, 4) product added into an output, every operand a strided view, through
    the GEMM and through the GEMVs: as it stands, transposed (both operands ``.T``), and with
    b a ``.T`` view (the GEMVs' other branch, as in the loop's weight gradient); exact in
    either precision (small integers), so anything but the right numbers fails it."""
    dtype = np.float32 if prefix == "s" else np.float64
    values = np.arange(-7, 8, dtype=dtype)
    a = np.resize(values, (3, 7))[:, 1:6]
    b = np.resize(values[::-1], (5, 9))[:, 2:6]
    out = np.resize(values, (3, 6))[:, 1:5].copy()
    expected = out + a @ b
    transposed = np.ascontiguousarray(out.T)
    try:
        for call, function in ((_call, gemm), (_call_gemv, gemv)):
            result, result_t, result_b = out.copy(), transposed.copy(), out.copy()
            b_view = np.ascontiguousarray(b.T).T
            called = (
                call(function, a, b, result, 1.0)
                and call(function, b.T, a.T, result_t, 1.0)
                and call(function, a, b_view, result_b, 1.0)
            )
            if not (called and np.array_equal(result, expected)):
                return False
            if not (np.array_equal(result_t, expected.T) and np.array_equal(result_b, expected)):
                return False
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False
    return True


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


def _step(array: np.ndarray, axis: int) -> int | None:
    """The stride of ``array`` along ``axis`` in elements (1 where that axis has one entry),
    or None where it is not a positive whole number of them (a vector a GEMV takes)."""
    if array.shape[axis] == 1:
        return 1
    step, remainder = divmod(array.strides[axis], array.itemsize)
    return step if step > 0 and remainder == 0 else None


def _call_gemv(function, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> bool:
    """``out = a @ b + beta * out`` as one C BLAS ``?gemv`` per output row, out[i] = b^T a[i],
    or per output column (the same on the transposed product) where there are fewer columns;
    False (nothing done) where an operand's layout is not one the BLAS takes."""
    if out.shape[1] < out.shape[0]:
        return _call_gemv(function, b.T, a.T, out.T, beta)
    layout, x_step, y_step = _layout(b), _step(a, 1), _step(out, 1)
    if layout is None or x_step is None or y_step is None:
        return False
    trans_b, lead_b = layout
    k, n = b.shape
    # b stored row-major (k, n): out[i] = b^T a[i]; stored as its transpose (n, k): b' a[i]
    trans, rows, columns = (_TRANS, k, n) if trans_b == _NO_TRANS else (_NO_TRANS, n, k)
    x, y = a.ctypes.data, out.ctypes.data
    for i in range(out.shape[0]):
        function(_ROW_MAJOR, trans, rows, columns, 1.0, b.ctypes.data, lead_b,
                 x + i * a.strides[0], x_step, beta, y + i * out.strides[0], y_step)  # fmt: skip
    return True


def available(dtype) -> bool:
    """Whether ``gemm_into`` runs the C BLAS for ``dtype`` here (else numpy's fallback)."""
    prefix = _PREFIX.get(np.dtype(dtype))
    return prefix is not None and _functions(prefix) is not None


def gemm_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``: 2-D operands of one dtype,
    ``out`` (a.shape[0], b.shape[1]) and not overlapping ``a`` or ``b``."""
    functions = _functions(_PREFIX[out.dtype]) if out.dtype in _PREFIX else None
    if functions is not None and a.dtype == b.dtype == out.dtype and min(a.size, b.size) > 0:
        beta = 1.0 if accumulate else 0.0
        gemm, gemv = functions
        if out.size <= GEMV_OUTPUTS and _call_gemv(gemv, a, b, out, beta):
            return
        if _call(gemm, a, b, out, beta):
            return
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
