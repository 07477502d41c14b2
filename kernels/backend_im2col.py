"""``im2col`` backend: strided copies into column matrices, one GEMM per chunk of images.

Every pass is a correlation of a zero-padded image with taps (``kernels._layout``):

    forward       y  = correlate(x, flip(k), p, p)
    grad_inputs   gx = correlate(gy, k^T, kh - 1 - p, kw - 1 - p)     (section 5.7)
                       or col2im: one GEMM to (d*kh*kw, n*oh*ow), then kh*kw shifted adds
    grad_kernels  gk = flip(gy (c, n*oh*ow) @ columns(x) (n*oh*ow, d*kh*kw))

The batch is cut into chunks of about ``CHUNK_BYTES`` of column matrix, and the chunks are
shared out over the thread budget (``kernels.threads``: each thread takes a run of chunks and
calls a single-threaded BLAS). For each chunk of images:

1. pad the images into a reused zero-bordered buffer (one copy, ``_layout``);
2. build the column matrix, K = d*kh*kw rows by M = b*oh*ow columns, with ONE copy from a
   ``sliding_window_view`` of that buffer (no Python loop over the images or the offsets);
3. ONE GEMM, taps (c, K) @ columns (K, M) -> (c, b, oh, ow), into a reused buffer;
4. one transposing copy, whose runs are whole images, into the chunk's rows of the result.

The weight gradient adds the chunks' (c, K) products (``threads.sum_over_batch``), so its
rounding depends on the thread count; integer inputs still come out exact.

Choices, each measured here (CIFAR-10 recipe layers, batch 128, float32):

* Chunks and threads. Whole-batch calls ran the copies on one thread while the GEMM ran on
  two, and a column matrix of 10-150 MB went through memory twice. Chunks of 1-5 MB stay in
  the caches and every step runs on both cores. Two threads, forward / grad_inputs /
  grad_kernels in ms, the whole-batch code against 4 MB chunks: 3->16 at 32x32 2.5/2.9/3.1
  against 1.6/1.9/3.0; 16->32 at 16x16 3.5/5.2/3.6 against 2.3/2.9/2.3 (with the col2im rule
  below). One chunk per thread against 4 MB chunks: 32->32 at 32x32 23.5/23.2/23.6 against
  16.7/16.7/17.8. Smaller chunks pay per-call costs (0.25 MB: 2-4x slower on the small
  layers), larger ones fall out of the caches.
* Layout of the columns. Channels-last padding (n, Hp, Wp, d) makes a patch row (kw, d) one
  contiguous run, but padding into it transposes the input (slow at 32x32: 4 ms for 16 MB);
  channels-first (d, n, Hp, Wp) copies runs of ow values and pads without transposing. Pad
  plus column copy on one thread, channels-first against channels-last: 0.9 / 2.1 ms (3->16,
  32x32), 9.4 / 11.8 ms (32->32, 32x32), 8.1 / 5.6 ms (64->64, 16x16), 7.0 / 2.7 ms (128->128,
  8x8). Hence channels-first when ow >= kw*d or ow >= 32, channels-last otherwise.
* GEMM orientation (c, K) @ (K, M): 83 / 105 / 116 GF/s against 74 / 86 / 101 GF/s for
  (M, K) @ (K, c) on the 32-, 64- and 128-channel layers (one thread), and its output reaches
  NCHW with long runs.
* Scratch buffers (``_layout.scratch``, one set per thread): a 151 MB column copy took 12.8
  ms into fresh memory and 7.4 ms into a reused buffer. Results never alias them.
* grad_inputs: col2im unfolds the d input channels, the forward on transposed kernels the c
  output channels. col2im's kh*kw shifted adds run over rows of only ow values and cost about
  ``COL2IM_COST`` = 4 column copies per element (two threads, col2im against forward form:
  3->16 at 32x32 1.9 / 4.9 ms, 16->32 at 16x16 3.3 / 2.9 ms, 32->64 at 8x8 3.2 / 2.2 ms,
  64->64 at 16x16 18.4 / 12.8 ms), so col2im is taken only for few input channels.
* A kernel larger than its image (the weight-gradient call of section 5.7) swaps image and
  taps by pseudo-commutativity (section 5.6) when that shrinks the column matrix
  (c*h*w < n*kh*kw); that call is not chunked.

What bounds it: the GEMM, now 60-80% of the time. ``OPENBLAS_CORETYPE=Haswell``, set on this
machine and in CI, holds OpenBLAS to its AVX2 kernels: numpy SGEMM 2048^3 peaks at 249 GF/s
on two threads, and on the thin recipe shapes (c = 16-64 rows) the GEMM alone runs at
140-240 GF/s. torch's oneDNN (AVX-512, direct convolution, no column matrix) runs the same
layers at 180-380 GF/s, so even with free copies im2col would stay near 0.45-0.65x torch on
the 16- and 32-channel layers. Measured with the benchmark suite (two threads, medians,
forward + grad_inputs + grad_kernels in ms against torch): 3->16 at 32x32 5.9 against 2.9
(0.49x), 16->32 at 16x16 7.5 against 2.4 (0.31x), 32->64 at 8x8 5.9 against 2.3 (0.39x);
geometric mean of the nine passes 0.37x. The run before the chunks and threads gave 0.39x,
but against a torch 1.5-2x slower on these layers (that run predates the thread settings in
``kernels/__init__.py``); im2col itself got 25-35% faster.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kernels import threads
from kernels._layout import (
    grad_inputs_padding,
    grad_kernel_shape,
    pad_channels_first,
    pad_channels_last,
    scratch,
    taps_forward,
    taps_grad_inputs,
)

#: one GEMM of the products: exact while every partial sum is an integer below 2**24.
EXACT = True


#: Bytes of column matrix per chunk of images: measured best between 1 and 5 MB (below).
CHUNK_BYTES = 4 * 2**20
#: Cost of one element of col2im (a GEMM output, then kh*kw strided adds) in column copies.
COL2IM_COST = 4


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    return _correlate(inputs, taps_forward(kernels), padding, padding)


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    n, c, oh, ow = grad_outputs.shape
    _, d, kh, kw = kernels.shape
    ph, pw = grad_inputs_padding(kernels, padding)
    h, w = oh + 2 * ph - kh + 1, ow + 2 * pw - kw + 1
    # Column-matrix sizes: col2im unfolds the d-channel input side, the forward on the
    # transposed kernels the c-channel output side (or, swapped, the kernels themselves).
    # col2im's kh*kw shifted adds over short rows cost about COL2IM_COST column copies.
    col2im = COL2IM_COST * d * kh * kw * n * oh * ow
    if col2im < min(c * kh * kw * n * h * w, c * oh * ow * d * h * w):
        result = np.empty((n, d, h, w), grad_outputs.dtype)
        chunk = threads.rows_per_chunk(d * kh * kw * oh * ow, grad_outputs.dtype, CHUNK_BYTES)

        def part(s: slice) -> None:
            _grad_inputs_col2im(grad_outputs[s], kernels, padding, result[s])

        threads.over_batch(part, n, grad_outputs.size + result.size, chunk)
        return result
    return _correlate(grad_outputs, taps_grad_inputs(kernels), ph, pw)


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    n, d = inputs.shape[:2]
    _, c, oh, ow = grad_outputs.shape
    kh, kw = grad_kernel_shape(inputs, grad_outputs, padding)

    def part(s: slice) -> np.ndarray:  # this chunk's share of the reduction over n*oh*ow
        columns, channels_first = _columns(inputs[s], kh, kw, padding, padding)  # (K, M)
        gy = scratch("im2col.grad_outputs", (c, s.stop - s.start, oh, ow), inputs.dtype)
        np.copyto(gy, grad_outputs[s].transpose(1, 0, 2, 3))
        grad_taps = np.matmul(gy.reshape(c, -1), columns.T)  # (c, K), fresh
        if channels_first:
            return grad_taps.reshape(c, d, kh, kw)
        return grad_taps.reshape(c, kh, kw, d).transpose(0, 3, 1, 2)

    chunk = threads.rows_per_chunk(d * kh * kw * oh * ow, inputs.dtype, CHUNK_BYTES)
    grad_taps = threads.sum_over_batch(part, n, inputs.size + grad_outputs.size, chunk)
    return np.ascontiguousarray(grad_taps[:, :, ::-1, ::-1])  # the taps are the flipped kernel


def _grad_inputs_col2im(grad_outputs, kernels, padding, result) -> None:
    """One GEMM to the column matrix of the input gradient, then a col2im scatter-add.

    gx_pad[b, j, t + u, s + v] += sum_i gy[b, i, t, s] * flip(k)[i, j, u, v]: the GEMM
    (d*kh*kw, c) @ (c, n*oh*ow) gives every term, the kh*kw shifted adds place them.
    """
    n, c, oh, ow = grad_outputs.shape
    _, d, kh, kw = kernels.shape
    hp, wp = oh + kh - 1, ow + kw - 1  # the padded input, h + 2p by w + 2p
    gy = scratch("im2col.grad_outputs", (c, n, oh, ow), grad_outputs.dtype)
    np.copyto(gy, grad_outputs.transpose(1, 0, 2, 3))
    weights = taps_forward(kernels).reshape(c, d * kh * kw)
    columns = scratch("im2col.columns", (d, kh, kw, n, oh, ow), grad_outputs.dtype)
    np.matmul(weights.T, gy.reshape(c, -1), out=columns.reshape(d * kh * kw, -1))
    padded = scratch("im2col.padded", (d, n, hp, wp), grad_outputs.dtype)
    padded.fill(0)
    for u in range(kh):
        for v in range(kw):
            padded[:, :, u : u + oh, v : v + ow] += columns[:, u, v]
    h, w = hp - 2 * padding, wp - 2 * padding
    np.copyto(
        result, padded[:, :, padding : padding + h, padding : padding + w].transpose(1, 0, 2, 3)
    )


def _correlate(x: np.ndarray, taps: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """correlate(x (n, d, h, w), taps (c, d, kh, kw), pads ph, pw) -> fresh (n, c, oh, ow)."""
    n, d, h, w = x.shape
    c, _, kh, kw = taps.shape
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if c * h * w < n * kh * kw:
        # Pseudo-commutativity (section 5.6): the taps, flipped, become the image and the
        # image, flipped, the taps; output positions stay where they are.
        swapped = np.empty((c, n, oh, ow), x.dtype)
        _correlate_columns(
            taps[:, :, ::-1, ::-1], x[:, :, ::-1, ::-1], h + ph - kh, w + pw - kw, swapped
        )
        return np.ascontiguousarray(swapped.transpose(1, 0, 2, 3))
    result = np.empty((n, c, oh, ow), x.dtype)
    chunk = threads.rows_per_chunk(d * kh * kw * oh * ow, x.dtype, CHUNK_BYTES)

    def part(s: slice) -> None:
        _correlate_columns(x[s], taps, ph, pw, result[s])

    threads.over_batch(part, n, x.size + result.size, chunk)
    return result


def _correlate_columns(x: np.ndarray, taps: np.ndarray, ph: int, pw: int, result) -> None:
    """result (n, c, oh, ow) = correlate(x, taps, ph, pw) through one column matrix."""
    n = x.shape[0]
    c, _, kh, kw = taps.shape
    oh, ow = result.shape[2:]
    columns, channels_first = _columns(x, kh, kw, ph, pw)  # (K, M)
    if channels_first:
        weights = taps.reshape(c, -1)  # K ordered (d, kh, kw)
    else:
        weights = taps.transpose(0, 2, 3, 1).reshape(c, -1)  # K ordered (kh, kw, d)
    product = scratch("im2col.product", (c, n * oh * ow), x.dtype)
    np.matmul(weights, columns, out=product)
    np.copyto(result, product.reshape(c, n, oh, ow).transpose(1, 0, 2, 3))


def _columns(x: np.ndarray, kh: int, kw: int, ph: int, pw: int) -> tuple[np.ndarray, bool]:
    """The column matrix of x for (kh, kw) patches with pads (ph, pw), as a (K, M) matrix.

    Returns (columns, channels_first). Rows (the reduction K = d*kh*kw) are ordered (d, kh, kw)
    when channels_first, else (kh, kw, d); columns (M = n*oh*ow) are ordered (n, oh, ow). The
    matrix is a scratch buffer (channels-first) or the transpose of one (channels-last), filled
    by a single copy from a strided view.
    """
    d, w = x.shape[1], x.shape[3]
    ow = w + 2 * pw - kw + 1
    if ow >= kw * d or ow >= 32:
        padded = pad_channels_first(x, ph, pw, "im2col.padded")  # (d, n, Hp, Wp)
        view = sliding_window_view(padded, (kh, kw), axis=(2, 3))  # (d, n, oh, ow, kh, kw)
        view = view.transpose(0, 4, 5, 1, 2, 3)  # (d, kh, kw, n, oh, ow)
        columns = scratch("im2col.columns", view.shape, x.dtype)
        np.copyto(columns, view)
        return columns.reshape(d * kh * kw, -1), True
    padded = pad_channels_last(x, ph, pw, "im2col.padded")  # (n, Hp, Wp, d)
    view = sliding_window_view(padded, (kh, kw), axis=(1, 2))  # (n, oh, ow, d, kh, kw)
    view = view.transpose(0, 1, 2, 4, 5, 3)  # (n, oh, ow, kh, kw, d)
    columns = scratch("im2col.columns", view.shape, x.dtype)
    np.copyto(columns, view)
    return columns.reshape(-1, kh * kw * d).T, False
