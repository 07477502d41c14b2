"""GEMM that adds into its output: the C BLAS ``?gemm`` of numpy's own BLAS, through ctypes.

``np.matmul`` only writes its product: C = A B. The loop backend sums kh*kw such products on
one grid, and with ``np.matmul`` each product goes to a buffer that a second pass adds in (the
"reduction" of its profile, up to 46% of a forward). The C BLAS computes C = A B + beta C in
one pass, with operands of any row stride. ``gemm_into(a, b, out, accumulate)`` calls it.

Which library: the one numpy's ``_multiarray_umath`` links, so that the thread limits
threadpoolctl sets are the ones that apply. ``dlsym`` on that module finds the symbols of the
libraries it depends on; the names tried are those of numpy's wheels (``scipy_cblas_sgemm64_``,
numpy 2; ``cblas_sgemm64_``, numpy 1) and of a plain CBLAS (``cblas_sgemm``). Integer arguments
go as 64-bit values: right for an ILP64 library and, on the 64-bit Linux ABIs (arguments in
64-bit registers or 8-byte stack slots, little-endian), for an LP64 one too, which reads their
low halves. So it is used on Linux x86-64 and aarch64 only, and only after a product with
strided operands and beta = 1 has come out right (``_self_test``). Anywhere else, for another
dtype, or for operands whose rows are not unit-stride, ``gemm_into`` computes the same with
``np.matmul`` and an add: the results agree, only slower.

ctypes releases the GIL for the call, whatever the output's size.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

import numpy as np

__all__ = ["available", "gemm_into"]

_ROW_MAJOR, _NO_TRANS = 101, 111
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
    try:
        _call(function, a, b, out, 1.0)
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False
    return bool(np.array_equal(out, expected))


def _lead(array: np.ndarray) -> int | None:
    """The row stride of a 2-D operand in elements, where the BLAS can take it, else None."""
    item = array.itemsize
    rows, columns = array.shape
    if array.strides[1] != item and columns > 1:
        return None
    lead = array.strides[0] // item if rows > 1 else columns
    if array.strides[0] % item or lead < max(1, columns):
        return None
    return lead


def _call(function, a: np.ndarray, b: np.ndarray, out: np.ndarray, beta: float) -> None:
    m, k = a.shape
    n = b.shape[1]
    function(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, _lead(a),
             b.ctypes.data, _lead(b), beta, out.ctypes.data, _lead(out))  # fmt: skip


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
        and None not in (_lead(a), _lead(b), _lead(out))
    ):
        _call(function, a, b, out, 1.0 if accumulate else 0.0)
    elif accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
