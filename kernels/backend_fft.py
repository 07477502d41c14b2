"""``fft`` backend: batched multi-channel convolution through real FFTs.

By the convolution theorem, the true convolution of an image with a kernel is a pointwise
product of their 2-D spectra, and the sum over input channels of section 3.3 becomes, at every
frequency ``f``, a small complex matrix product:

    Y[f] (n, c) = X[f] (n, d) @ K[f] (d, c)

so one call is: real FFT of every image and of every kernel, batched complex matmuls over the
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
once. That layout is exactly the stack of (b, d) and (d, c) matrices ``numpy.matmul`` hands to
the BLAS complex GEMM, with no further copy. The inverse runs in the opposite order and
transforms only the rows that are kept.

Chunks
------
The spectra of a whole batch are several times its size and would stream through memory
several times per call (FFTs, transposes, GEMM, inverse), so a call walks the batch in chunks
of images, about ``CHUNK_BYTES`` of spectra each (up to twice that where a thread's run of
the batch is not cut below ``MIN_CHUNK_IMAGES``), and takes each chunk from its images to its
rows of the output on one thread: real FFT, transpose, column FFT, the GEMM against the
kernels' spectra (computed once per call), the inverse and the copy out. The kernels are small
next to the batch, so their spectra are shared by every chunk.

Where a chunk would hold fewer than ``MIN_CHUNK_IMAGES`` images of a larger batch (many
channels, large images), its per-frequency products would be a few rows each, too small for
the BLAS, and there would be many calls of them: the call then runs on the whole batch at
once, each FFT on the budget's threads (scipy's ``workers``) and the stack of per-frequency
GEMMs split over the threads (``_matmul``). For the same reason a thread's run of the batch
holds at least ``MIN_CHUNK_IMAGES`` images (``min_rows`` of ``kernels.threads.over_batch``):
on many cores a call is cut into fewer runs than there are threads rather than into runs of
a few images each.

The weight gradient is the convolution of the flipped inputs, batch and channels swapped, with
grad_outputs as the "kernels" (section 5.7): at each frequency a (d, n) @ (n, c) product whose
reduction runs over the batch. ``grad_kernels`` therefore cuts the batch into chunks too:
each chunk's spectra of x and of grad_outputs give its share of the (d, c) products, the
shares are added up per frequency (``kernels.threads.sum_over_batch``) and transformed back
once. Those (d, c) sums are added once per chunk, so where they outweigh a chunk's own spectra
(d c > ``SUMS_PER_CHUNK`` b (d + c) per frequency, b the images of the shortest chunk,
``kernels.threads.shortest_run``) or a chunk would be too small, the weight gradient is
section 5.7's convolution on the whole batch instead
(``kernels._registry.generic_grad_kernels``). The input gradient is the forward on flipped,
transposed kernels (``kernels._registry.generic_grad_inputs``).

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
precision only) is used and the result is cast back to the input dtype. For the same reason a
NaN or inf anywhere in an image makes every output of that image NaN.

Speed
-----
The work is (n*d + c*d + n*c) 2-D FFTs of A = L_h * L_w points, about 2.5 * A * log2(A) flops
each, plus 4 * n * d * c * A flops of complex GEMM, plus about six passes of the spectra
through memory (FFTs and transposes). None of that grows with kh * kw, while a direct method
(loop, im2col, torch) does 2 * n * d * c * kh * kw flops per output pixel. For 3x3 the FFT even
needs fewer GEMM flops (4 * A against 18 * oh * ow), but its GEMMs are small (one (b, d) x
(d, c) product per frequency and chunk, about half of peak) and its FFTs and transposes are
memory-bound, so on 3x3 layers it is at best level with im2col and behind torch; as kh * kw
grows the direct methods' work grows with it and the FFT's does not, so past some kernel size
it overtakes them (the kernel-size sweep of the benchmark suite finds where, and the report
shows it). Both gradients cost about the same as the forward (the weight gradient's image-sized
"kernel" needs only L = h + 1 rows, above).

Threads: the chunks are shared out over the thread budget (``kernels.threads.over_batch``,
as the other numpy backends do; each thread runs its FFTs, ``workers=1``, and its GEMMs
single-threaded); the kernels' spectra, the final inverse of the weight gradient and the
whole-batch route run on the budget's threads. How a call is cut into chunks changes which
images share a GEMM, and the BLAS rounds a product of b images differently as b changes, so
results differ in the last bits with the thread count and ``CHUNK_BYTES`` (within the
tolerance; the FFT gives no exact results anyway).

Measured on the 2-core AMD EPYC (2026-12-01), against the whole-batch route alone (the design
before the chunks): on the recipe's nine passes, geometric mean, 1.2x as fast on one thread and
1.4x on two; on the other suites at two threads, 1.0-1.5x (batch, channel and kernel-size
sweeps), no case slower beyond noise. Chunks of 0.25-1 MB were slower than 2 MB (many small FFT
and GEMM calls), 4 MB about as fast. Before ``MIN_CHUNK_IMAGES`` and ``SUMS_PER_CHUNK``, chunks
of 1-3 images made the kernel-size sweep's weight gradients 1.4-4x slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import _profile, threads
from kernels._registry import generic_grad_kernels

#: the transforms round every value and spread the error over the whole output.
EXACT = False

#: Bytes of spectra per chunk of images (``convolve``, ``grad_kernels``): large enough that a
#: chunk's numpy and scipy calls are a small part of its time, small enough to stay in a core's
#: caches.
CHUNK_BYTES = 2 * 2**20
#: Fewest images worth a chunk: with fewer, a chunk's per-frequency products are too small for
#: the BLAS and its calls too many, and the call runs on the whole batch at once instead.
MIN_CHUNK_IMAGES = 8
#: A chunk's work, for how finely a call is cut (``kernels.threads.parts_for``, which counts
#: elements of copying), in copies of its spectra: real FFT, transpose, column FFT, GEMM,
#: inverse column FFT, transpose, inverse real FFT and the copy out each pass over them once
#: or more. Measured on one thread of the 2-core AMD EPYC: the recipe's conv3 forward takes
#: 8.0 ms, a copy of its spectra 0.34 ms, so 24 copies; 8 leaves the cut on the coarse side.
COPIES_PER_VALUE = 8
#: The weight gradient is summed in chunks only while its (d, c) sums per frequency are at most
#: this many times a chunk's own spectra (b (d + c) per frequency): adding up larger ones costs
#: more than the chunks save.
SUMS_PER_CHUNK = 2

#: scipy.fft keeps float32 in single precision and can run an FFT call on several threads;
#: without scipy, numpy.fft (tests/test_kernels.py runs that path too). Loaded on the first
#: call: the module-level ``_scipy_fft`` is replaced by the module, or None where scipy is
#: missing.
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


def _rfft(a: np.ndarray, n: int, axis: int, workers: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.rfft(a, n=n, axis=axis)
    return _scipy_fft.rfft(a, n=n, axis=axis, workers=workers)


def _fft(a: np.ndarray, n: int, axis: int, workers: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.fft(a, n=n, axis=axis)
    return _scipy_fft.fft(a, n=n, axis=axis, overwrite_x=True, workers=workers)


def _ifft(a: np.ndarray, axis: int, workers: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.ifft(a, axis=axis)
    return _scipy_fft.ifft(a, axis=axis, overwrite_x=True, workers=workers)


def _irfft(a: np.ndarray, n: int, axis: int, workers: int) -> np.ndarray:
    if _scipy() is None:
        return np.fft.irfft(a, n=n, axis=axis)
    return _scipy_fft.irfft(a, n=n, axis=axis, overwrite_x=True, workers=workers)


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


@dataclass(frozen=True)
class _Axes:
    """The DFT lengths of a call and the rows and columns of the full convolution it keeps."""

    length_h: int
    length_w: int
    rows: slice
    columns: slice
    top: int  # where the kept rows and columns start in the output
    left: int

    @classmethod
    def of(cls, h: int, w: int, kh: int, kw: int, padding: int) -> _Axes:
        length_h, first_h, count_h, start_h = _plan(h, kh, padding, real=False)
        length_w, first_w, count_w, start_w = _plan(w, kw, padding, real=True)
        rows, columns = slice(first_h, first_h + count_h), slice(first_w, first_w + count_w)
        return cls(length_h, length_w, rows, columns, first_h - start_h, first_w - start_w)

    @property
    def height(self) -> int:
        """How many rows of the full convolution are kept."""
        return self.rows.stop - self.rows.start

    @property
    def width(self) -> int:
        """How many columns of the full convolution are kept."""
        return self.columns.stop - self.columns.start

    def output(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A fresh array of ``shape`` (.., .., out_h, out_w) for the kept rows and columns:
        uninitialised where they fill it, all zeros where they do not (padding past the full
        support leaves a border that nothing writes)."""
        filled = (self.top, self.left, self.height, self.width) == (0, 0, *shape[-2:])
        return np.empty(shape, dtype) if filled else np.zeros(shape, dtype)

    def kept(self, out: np.ndarray) -> np.ndarray:
        """The view of ``out`` (.., .., out_h, out_w) the kept rows and columns fill."""
        return out[:, :, self.top : self.top + self.height, self.left : self.left + self.width]

    def values(self, h: int, channels: int) -> int:
        """Complex values a call holds per image of ``channels`` channels of h rows: its row
        spectra and its full spectra (several such sets live at once)."""
        return channels * (h + self.length_h) * (self.length_w // 2 + 1)


def _spectrum(images: np.ndarray, axes: _Axes, workers: int) -> np.ndarray:
    """(b, e, h, w) real -> (length_h, length_w // 2 + 1, b, e) complex, C-contiguous."""
    rows = _rfft(images, axes.length_w, -1, workers)
    return _fft(_contiguous(rows.transpose(2, 3, 0, 1)), axes.length_h, 0, workers)


def _contiguous(view: np.ndarray) -> np.ndarray:
    """A fresh C-contiguous copy of ``view``, made on the thread budget."""
    return threads.copy(np.empty_like(view, order="C"), view)


def _inverse(spectra: np.ndarray, axes: _Axes, workers: int) -> np.ndarray:
    """(length_h, length_w // 2 + 1, b, c) complex -> the kept rows and columns of the (b, c)
    real images (a view): only the kept rows are transformed along the columns."""
    kept = _ifft(spectra, 0, workers)[axes.rows]
    return _irfft(_contiguous(kept.transpose(2, 3, 0, 1)), axes.length_w, -1, workers)[
        ..., axes.columns
    ]


def _chunk_images(per_image: int, n: int, dtype) -> int | None:
    """Images per chunk for ``per_image`` complex values each, or None where a chunk of
    ``CHUNK_BYTES`` would hold fewer than ``MIN_CHUNK_IMAGES`` of a larger batch: the call
    then runs on the whole batch at once."""
    images = threads.rows_per_chunk(2 * per_image, dtype, CHUNK_BYTES)  # complex: 2 values
    return None if images < min(MIN_CHUNK_IMAGES, n) else images


def _work(n: int, per_image: int) -> int:
    """The work of ``n`` images of ``per_image`` complex values each, in elements of copying
    (``COPIES_PER_VALUE``), for ``kernels.threads``."""
    return COPIES_PER_VALUE * 2 * n * per_image


def _outputs(images: np.ndarray, k_hat: np.ndarray, axes: _Axes, workers: int, matmul):
    """The kept rows and columns (a view) of the outputs of ``images`` (b, d, h, w) against the
    kernels' spectra ``k_hat`` (length_h, length_w // 2 + 1, d, c)."""
    with _profile.stage("fft"):
        x_hat = _spectrum(images, axes, workers)  # (Lh, Lw/2+1, b, d)
    with _profile.stage("gemm"):
        y_hat = matmul(x_hat, k_hat)  # (Lh, Lw/2+1, b, c)
    del x_hat
    with _profile.stage("fft"):
        return _inverse(y_hat, axes, workers)


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    n, d, h, w = inputs.shape
    c, _, kh, kw = kernels.shape
    axes = _Axes.of(h, w, kh, kw, padding)
    out_h, out_w = h - kh + 1 + 2 * padding, w - kw + 1 + 2 * padding
    out = axes.output((n, c, out_h, out_w), inputs.dtype)
    kept = axes.kept(out)
    with _profile.stage("fft"):
        k_hat = _spectrum(kernels.transpose(1, 0, 2, 3), axes, threads.budget())

    per_image = axes.values(h, d) + axes.values(axes.height, c)
    images = _chunk_images(per_image, n, inputs.dtype)
    if images is None:  # the whole batch, each step on the budget's threads
        spectra = _outputs(inputs, k_hat, axes, threads.budget(), _matmul)
        with _profile.stage("fft"):
            threads.copy(kept, spectra)
        return out

    def chunk(s: slice) -> None:  # a run of images, start to end on this thread
        spectra = _outputs(inputs[s], k_hat, axes, 1, _profile.matmul)
        with _profile.stage("fft"):
            np.copyto(kept[s], spectra, casting="same_kind")

    threads.over_batch(chunk, n, _work(n, per_image), images, min_rows=MIN_CHUNK_IMAGES)
    return out


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    """The weight gradient: in chunks of the batch, each chunk's share of the per-frequency
    (d, c) products added up (module docstring), or, where those (d, c) sums would outweigh a
    chunk's own spectra or a chunk would be too small, the convolution of section 5.7 on the
    whole batch (``kernels._registry.generic_grad_kernels``)."""
    n, d, h, w = inputs.shape
    _, c, oh, ow = grad_outputs.shape
    axes = _Axes.of(h, w, oh, ow, padding)
    per_image = axes.values(h, d) + axes.values(oh, c)
    work = _work(n, per_image)
    images = _chunk_images(per_image, n, inputs.dtype)
    if images is None:
        return _whole_batch_grad_kernels(inputs, grad_outputs, padding)
    rows = threads.shortest_run(n, work, images, MIN_CHUNK_IMAGES)  # a chunk's images, fewest
    if d * c > SUMS_PER_CHUNK * rows * (d + c):
        return _whole_batch_grad_kernels(inputs, grad_outputs, padding)

    def chunk(s: slice) -> np.ndarray:  # a run of images' share of the product, per frequency
        with _profile.stage("fft"):
            x_hat = _spectrum(inputs[s, :, ::-1, ::-1], axes, 1)  # (Lh, Lw/2+1, b, d)
            g_hat = _spectrum(grad_outputs[s], axes, 1)  # (Lh, Lw/2+1, b, c)
        with _profile.stage("gemm"):
            return _profile.matmul(x_hat.swapaxes(-1, -2), g_hat)  # (Lh, Lw/2+1, d, c)

    spectra = threads.sum_over_batch(chunk, n, work, images, min_rows=MIN_CHUNK_IMAGES)
    kh, kw = h - oh + 1 + 2 * padding, w - ow + 1 + 2 * padding
    out = axes.output((c, d, kh, kw), inputs.dtype)
    with _profile.stage("fft"):
        full = _inverse(spectra, axes, threads.budget())  # (d, c, kept rows, kept columns)
        np.copyto(axes.kept(out), full.transpose(1, 0, 2, 3), casting="same_kind")
    return out


_whole_batch_grad_kernels = generic_grad_kernels(convolve)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked matmul a (..., m, k) @ b (..., k, n) of a whole batch, the stack of frequencies
    split over the thread budget.

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
