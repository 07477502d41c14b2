"""``fft`` backend: batched multi-channel convolution through real FFTs.

By the convolution theorem, the true convolution of an image with a kernel is a pointwise
product of their 2-D spectra, and the sum over input channels of section 3.3 becomes, at every
frequency ``f``, a small complex matrix product:

    Y[f] (n, c) = X[f] (n, d) @ K[f] (d, c)

so one call is: real FFT of every image and of every kernel, one batched complex matmul over the
frequencies, one inverse real FFT of every output image, and a crop to the requested padding.

Sizes, and why there is no wrap-around
--------------------------------------
The linear ("full") convolution of an h-row image with a kh-row kernel has h + kh - 1 rows;
padding p keeps rows ``kh - 1 - p .. h - 1 + p`` of it (rows outside the full support, which
exist when p > kh - 1, are zeros). A DFT of length L computes the full convolution folded
modulo L, so a kept row r is exact as long as neither r + L nor r - L lands inside the support:
L >= (h + kh - 1) - first kept row, and L > last kept row. For a valid convolution that is
L >= h (overlap-save); for 'same' padding h + (kh - 1) / 2; for the weight gradient of a
32x32 'same' layer (a 32x32 "kernel", 3x3 output) 33 instead of 63. The wrapped rows land only
on rows that are thrown away. L is then rounded up to a length whose prime factors the FFT
handles fast (``scipy.fft.next_fast_len``). L is never below h, but it is below kh when
kh > h + p (the weight gradient of a layer with p > k - 1, for one). The FFT then crops the
kernel to L rows, which is exact too: kernel row b >= L only reaches full-convolution rows
>= L, all past the last kept one, and cropping only shrinks what could wrap around.

Layout
------
Each spectrum is built as (L_h, L_w/2 + 1, batch, channels), C-contiguous: the real FFT runs
along the contiguous image rows first, the (complex) half-spectra are transposed once, and the
column FFT then runs along the leading axis, where pocketfft transforms many adjacent columns at
once. That layout is exactly the stack of (n, d) and (d, c) matrices ``numpy.matmul`` hands to
the BLAS complex GEMM, with no further copy. The inverse runs in the opposite order and
transforms only the rows that are kept.

Precision
---------
With scipy installed, ``scipy.fft`` keeps single precision: float32 inputs are transformed in
complex64 and the output is float32. FFT round-off is not per element as in a direct sum: every
output picks up an error of order eps * log2(L) times the norm of the whole signal, so an output
that is small next to large ones has a large *relative* error (the absolute error is what is
bounded, at roughly 1e-6 of the largest output in float32 and 1e-15 in float64). Integer-valued
inputs therefore do not give integer outputs, unlike the direct backends (see
tests/test_kernels.py, where fft is the one backend held to a tolerance on integer inputs).
Without scipy, ``numpy.fft`` (the same pocketfft, single-threaded, and in numpy < 2 double
precision only) is used and the result is cast back to the input dtype.

Speed
-----
The work is (n*d + c*d + n*c) 2-D FFTs of A = L_h * L_w points, about 2.5 * A * log2(A) flops
each, plus 4 * n * d * c * A flops of complex GEMM, plus about six passes of the spectra
through memory (FFTs and transposes). None of that grows with kh * kw, while a direct method
(loop, im2col, torch) does 2 * n * d * c * kh * kw flops per output pixel. For 3x3 the FFT even
needs fewer GEMM flops (4 * A against 18 * oh * ow), but its GEMMs are small (one (n, d) x
(d, c) product per frequency, about half of peak) and its FFTs and transposes are
memory-bound, so on 3x3 layers it is at best level with im2col and behind torch; as kh * kw
grows the direct methods' work grows with it and the FFT's does not, so past some kernel size
it overtakes them (the kernel-size sweep of the benchmark suite finds where, and the report
shows it). Both gradients cost about the same as the forward (the weight gradient's image-sized
"kernel" needs only L = h + 1 rows, above).

Threads: the FFTs run on ``kernels.threads.budget()`` threads (the BLAS limit in force, so
``threadpoolctl.threadpool_limits`` pins both), and the stacked GEMM is split into as many
slices, each on a single-threaded BLAS, because OpenBLAS would synchronise its threads once per
frequency (see ``_matmul``). The transposing copies between the layouts, and the last copy into
the output, are split over their leading axis too (``kernels.threads.copy``: image rows or
images): they take as long as the FFTs, and on one thread they would not get faster with cores
at all.
"""

from __future__ import annotations

import numpy as np

from kernels import _profile, threads

#: the transforms round every value and spread the error over the whole output.
EXACT = False

#: scipy.fft keeps float32 in single precision and runs the FFTs on several threads; without
#: scipy, numpy.fft (tests/test_kernels.py runs that path too). Loaded on the first call: the
#: module-level ``_scipy_fft`` is replaced by the module, or None where scipy is missing.
_scipy_fft = "not loaded"


def _scipy():
    global _scipy_fft
    if isinstance(_scipy_fft, str):
        try:
            import scipy.fft
        except ImportError:
            _scipy_fft = None
        else:
            _scipy_fft = scipy.fft
    return _scipy_fft


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked matmul a (..., m, k) @ b (..., k, n), the stack split over the thread budget.

    Each product is small (n x d by d x c), so OpenBLAS would synchronise its threads once per
    frequency, and on a busy machine one descheduled thread stalls every one of those hundreds
    of syncs. One BLAS thread per slice of the stack (``kernels.threads``, as many slices as the
    work is worth) costs one synchronisation per call instead.
    """
    out = np.empty(a.shape[:-1] + b.shape[-1:], np.result_type(a, b))
    a, b, flat = (t.reshape(-1, *t.shape[-2:]) for t in (a, b, out))
    slices = threads.split(len(flat), threads.parts_for(len(flat), a.size + b.size + flat.size))
    threads.run(lambda s: _profile.matmul(a[s], b[s], out=flat[s]), slices)
    return out


def _rfft(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.rfft(a, n=n, axis=axis)
    return _scipy_fft.rfft(a, n=n, axis=axis, workers=threads.budget())


def _fft(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.fft(a, n=n, axis=axis)
    return _scipy_fft.fft(a, n=n, axis=axis, overwrite_x=True, workers=threads.budget())


def _ifft(a: np.ndarray, axis: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.ifft(a, axis=axis)
    return _scipy_fft.ifft(a, axis=axis, overwrite_x=True, workers=threads.budget())


def _irfft(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.irfft(a, n=n, axis=axis)
    return _scipy_fft.irfft(a, n=n, axis=axis, overwrite_x=True, workers=threads.budget())


def _next_fast_len(target: int, real: bool) -> int:
    if _scipy() is not None:
        return _scipy_fft.next_fast_len(target, real=real)
    length = target  # the smallest 5-smooth length >= target
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def _plan(size: int, ksize: int, padding: int, real: bool) -> tuple[int, int, int, int]:
    """One axis: (DFT length, first kept row of the full convolution, kept count, start).

    ``start`` = ksize - 1 - padding is the row of the full convolution that output row 0 reads;
    rows outside the full support (when padding > ksize - 1) are zeros and are not computed.
    """
    full = size + ksize - 1
    start = ksize - 1 - padding
    first = max(start, 0)
    last = min(size - 1 + padding, full - 1)
    length = _next_fast_len(max(full - first, last + 1), real=real)
    return length, first, last - first + 1, start


def _spectrum(images: np.ndarray, length_h: int, length_w: int) -> np.ndarray:
    """(b, e, h, w) real -> (length_h, length_w // 2 + 1, b, e) complex, C-contiguous."""
    rows = _rfft(images, length_w, axis=-1)
    return _fft(_contiguous(rows.transpose(2, 3, 0, 1)), length_h, axis=0)


def _contiguous(view: np.ndarray, dtype=None) -> np.ndarray:
    """A fresh C-contiguous copy of ``view`` (in ``dtype``), made on the thread budget."""
    return threads.copy(np.empty(view.shape, dtype or view.dtype), view)


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    n, _, h, w = inputs.shape
    c, _, kh, kw = kernels.shape
    length_h, first_h, count_h, start_h = _plan(h, kh, padding, real=False)
    length_w, first_w, count_w, start_w = _plan(w, kw, padding, real=True)

    with _profile.stage("fft"):
        x_hat = _spectrum(inputs, length_h, length_w)  # (Lh, Lw/2+1, n, d)
        k_hat = _spectrum(kernels.transpose(1, 0, 2, 3), length_h, length_w)  # (Lh, Lw/2+1, d, c)
    with _profile.stage("gemm"):
        y_hat = _matmul(x_hat, k_hat)  # (Lh, Lw/2+1, n, c)
    del x_hat, k_hat

    with _profile.stage("fft"):
        y_hat = _ifft(y_hat, axis=0)[first_h : first_h + count_h]
        y_hat = _contiguous(y_hat.transpose(2, 3, 0, 1))  # (n, c, kept rows, Lw/2+1)
        full = _irfft(y_hat, length_w, axis=-1)[..., first_w : first_w + count_w]

    out_h, out_w = h - kh + 1 + 2 * padding, w - kw + 1 + 2 * padding
    if (count_h, count_w) == (out_h, out_w):
        return _contiguous(full, inputs.dtype)
    out = np.zeros((n, c, out_h, out_w), dtype=inputs.dtype)
    top, left = first_h - start_h, first_w - start_w
    threads.copy(out[:, :, top : top + count_h, left : left + count_w], full)
    return out
