"""``im2col`` backend: column matrices built by strided copies, multiplied by BLAS GEMMs.

Every pass is a correlation of a zero-padded image with taps (``kernels._layout``):

    forward       y  = correlate(x, flip(k), p, p)
    grad_inputs   gx = correlate(gy, k^T, kh - 1 - p, kw - 1 - p)     (section 5.7)
                       or col2im: GEMMs to the (d*kh*kw) terms of each input, then their sum
    grad_kernels  gk = flip(sum over images of columns(x) (d*kh*kw, oh*ow) @ gy^T (oh*ow, c))

Threads (``kernels.threads``): when the batch is worth cutting into a slice per core, each slice
walks its images a chunk of about ``CHUNK_BYTES`` of column matrix at a time on its own thread,
with a single-threaded BLAS, so that the chunk stays in that core's caches. When there are more
cores than slices worth cutting, the forward's column matrix is built by slices over the whole
batch (up to ``threads.WHOLE_BATCH_BYTES``) and multiplied by ONE GEMM on the BLAS's own
threads, which scale without the GIL (at most as many as the cores,
``threads.blas_within_cores``). The weight gradient always adds per-slice (K, c) products
(``threads.sum_over_batch``); its rounding depends on how the batch was split, and integer
inputs still come out exact.

A chunk in a slice, per image (IMAGES, from ``IMAGES_MIN_OUTPUTS`` output positions on: each
image's GEMM is then large enough), in a few numpy calls and no Python loop over the images:

1. pad the chunk into a reused buffer whose zero border is written once (``_layout``);
2. build each image's column matrix (K = d*kh*kw rows, oh*ow columns) with ONE copy from a
   strided view of that buffer. Where the output is as wide as the image ('same' padding along
   w), the images are padded along h only and row (j, u, v) of an image's matrix is ONE run of
   oh*w values, the image shifted by (u - ph)*w + v - pw (``_ShiftedColumns``): a copy of whole
   images instead of rows of ow values, then the entries a shift wraps into the next or the
   previous row (where the horizontal padding would be) set to zero;
3. one stacked GEMM, taps (c, K) @ each image's columns, written straight into the chunk's rows
   of the NCHW result (no placing copy); the weight gradient's, columns @ the output gradient as
   it is (oh*ow, c), then a sum over the chunk's images (only where oh*ow >= ``IMAGES_SUM_RATIO``
   * c, so that those (K, c) products are small next to the columns). A chunk holds enough
   images that its stacked GEMM has more than ``threads.NUMPY_GIL_OUTPUTS`` outputs, or numpy
   would keep the GIL through it (``threads.gil_free_rows``);
4. col2im, for few input channels (about ``COL2IM_COST`` column copies per element against the
   c output channels the correlation unfolds) and 'same' padding: one GEMM per image, weights
   (K, c) @ the gradient as it is, then ONE np.sum over a strided view that lines up, for each
   input position, the kh*kw terms that land there (``_Col2imImages``). Otherwise col2im runs
   over the chunk (``_grad_inputs_col2im``): a transposing copy of the gradient, one GEMM, and
   kh*kw shifted adds on a padded grid.

The buffers and views of a chunk are made once per call and thread (``_PerThread``): what a
chunk runs in Python holds the GIL, and with two or more threads every such moment is one in
which the other threads' next numpy calls wait. On the 2-core AMD EPYC, in-process and
interleaved against the chunk-wide layouts below (the recipe's nine passes, 2 threads), this
route took 0.81-0.83x the time (geometric mean of two comparisons; 0.61-0.63x for the first
layer's input gradient, 0.92-0.97x for the 8x8 layer's forward and input gradient).

Smaller images (and the whole-batch GEMM) keep one GEMM over the chunk, (c, K) @ (K, b*oh*ow),
then a transposing copy of whole images into the result, its columns laid out three ways
(``_layout_for``):

- ROWS (image rows), when the kernel is narrow for its output (kw - 1 <= ow / ``ROWS_WASTE``):
  the image is padded channels-first (d, n, Hp + 1, Wp). Shifted by (u, v), image b is the run
  of oh*Wp values from flat position u*Wp + v, so row (j, u, v) of the column matrix is n such
  runs, copied whole. The run of an output row also covers the kw - 1 positions that wrap into
  the next row; their columns are multiplied and dropped, and the extra zero row below each
  image keeps the last run inside its image. col2im adds along the same runs. The weight
  gradient, whose GEMM reduces over those columns, does not use it.
- channels-first (d, n, Hp, Wp) copies runs of ow values and pads without transposing;
- channels-last (n, Hp, Wp, d) makes a patch row (kw, d) one contiguous run but pads through a
  transpose.

Channels-first is used when ow >= kw*d or ow >= 32, where its runs are long enough. The weight
gradient's GEMM is (K, M) @ (M, c) when the columns are a (K, M) buffer, which BLAS runs
1.3-1.8x faster than (c, M) @ (M, K) for these thin outputs, and (c, M) @ (M, K) when they are
the transpose of an (M, K) buffer (channels-last), 1.05-1.25x faster than the other way (one
core, per-chunk shapes of the recipe's layers, OpenBLAS on a Xeon).

A kernel larger than its image (the weight-gradient call of section 5.7) swaps image and taps
by pseudo-commutativity (section 5.6) when that shrinks the column matrix (c*h*w < n*kh*kw);
that call is not chunked.

What bounds it: its GEMMs, which the benchmark suite times alone at the same shapes and threads
(``extra_info["gemm_bound_s"]``), and the copies around them (``extra_info["breakdown_s"]``);
the report shows both. ``OPENBLAS_CORETYPE`` changes the first a lot: it selects which SGEMM
kernels OpenBLAS runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from kernels import _profile, threads
from kernels._layout import (
    bordered,
    grad_inputs_padding,
    grad_kernel_shape,
    pad_channels_first,
    pad_channels_last,
    pad_images,
    scratch,
    taps_forward,
    taps_grad_inputs,
    windows,
)

#: one GEMM of the products: exact while every partial sum is an integer below 2**24.
EXACT = True

#: Bytes of column matrix per chunk of images in a slice: large enough that a chunk's few numpy
#: calls are a small part of its time, small enough to stay in a core's caches.
CHUNK_BYTES = 2 * 2**20
#: Cost of one element of col2im (a GEMM output, then its part of the sum) in column copies.
COL2IM_COST = 4
#: Column-matrix layouts (``_layout_for``, ``_images_for``).
FIRST, LAST, ROWS, IMAGES = "channels-first", "channels-last", "image rows", "per image"
#: A slice multiplies image by image (IMAGES) from this many output positions per image on
#: (forward and input gradient: its GEMMs then write the result in place; weight gradient:
#: its GEMMs then read the gradient as it is). Below, each image's GEMM is too small.
IMAGES_MIN_OUTPUTS = 64
#: The weight gradient goes image by image only where oh*ow >= IMAGES_SUM_RATIO * c: each
#: image's (K, c) product is written and summed once more, and must be well under its (K, oh*ow)
#: columns (at 8x8 with c = 64 image by image took 1.05x the time of the chunk's one GEMM, at
#: 16x16 with c = 32 0.83-0.88x).
IMAGES_SUM_RATIO = 2
#: ROWS is used while its kw - 1 extra columns per output row are at most 1/ROWS_WASTE of ow.
ROWS_WASTE = 8
#: ``np.reshape(..., copy=False)`` (numpy 2.1): a view or an error, never a copy.
_RESHAPE_HAS_COPY = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    return _correlate(inputs, taps_forward(kernels), padding, padding)


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    n, c, oh, ow = grad_outputs.shape
    _, d, kh, kw = kernels.shape
    ph, pw = grad_inputs_padding(kernels, padding)
    h, w = oh + 2 * ph - kh + 1, ow + 2 * pw - kw + 1
    # Column-matrix sizes: col2im unfolds the d-channel input side, the forward on the
    # transposed kernels the c-channel output side (or, swapped, the kernels themselves).
    # col2im's GEMM output and the sum over its taps cost about COL2IM_COST column copies.
    col2im_size = COL2IM_COST * d * kh * kw * n * oh * ow
    if col2im_size < min(c * kh * kw * n * h * w, c * oh * ow * d * h * w):
        result = np.empty((n, d, h, w), grad_outputs.dtype)
        weights = np.ascontiguousarray(taps_forward(kernels).reshape(c, d * kh * kw).T)
        per_image = d * kh * kw * oh * ow
        chunk = threads.rows_per_chunk(per_image, grad_outputs.dtype, CHUNK_BYTES)
        rows = 1
        if _images_for(oh, ow) and (h, w) == (oh, ow):  # image by image, into the result
            col2im = _Col2imImages(weights, (c, oh, ow), (kh, kw), padding)
            rows = threads.gil_free_rows(per_image)  # its stacked GEMM's outputs

            def part(s: slice) -> None:
                col2im(grad_outputs[s], result[s])

        else:

            def part(s: slice) -> None:
                _grad_inputs_col2im(grad_outputs[s], weights, (d, kh, kw), padding, result[s])

        threads.over_batch(part, n, n * per_image, chunk, rows)
        return result
    return _correlate(grad_outputs, taps_grad_inputs(kernels), ph, pw)


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    n, d = inputs.shape[:2]
    _, c, oh, ow = grad_outputs.shape
    kh, kw = grad_kernel_shape(inputs, grad_outputs, padding)
    # Not ROWS: its longer reduction (the extra columns, against zero gradient) and the zero
    # columns' copy cost more than its shorter copy saves (measured on the recipe layers).
    images = _images_for(oh, ow) if oh * ow >= IMAGES_SUM_RATIO * c else None
    layout = images or _layout_for(d, kw, ow, rows=False)
    width = _width(layout, kw, ow)
    if layout == IMAGES:
        image_columns = _image_columns(inputs.shape[1:], (kh, kw), (padding, padding), inputs.dtype)

    def part(s: slice) -> np.ndarray:  # this chunk's share of the reduction over n*oh*ow
        if layout == IMAGES:  # (b, K, oh*ow) @ the gradient as it is, (b, oh*ow, c)
            columns = image_columns(inputs[s])
            gy = grad_outputs[s].reshape(-1, c, oh * ow).transpose(0, 2, 1)
            with _profile.stage("gemm"):
                products = _profile.matmul(columns, gy)  # (b, K, c)
            with _profile.stage("reduction"):
                return products.sum(axis=0)
        columns = _columns(inputs[s], kh, kw, padding, padding, layout)  # (K, M)
        with _profile.stage("layout"):
            gy = _by_channel(grad_outputs[s], width)  # (c, M)
        with _profile.stage("gemm"):  # each orientation as BLAS runs it faster (see above)
            if layout == LAST:  # columns.T is the contiguous (M, K) buffer
                return _profile.matmul(gy, columns.T).T  # (K, c), a view of a fresh array
            return _profile.matmul(columns, gy.T)  # (K, c), fresh

    per_image = d * kh * kw * oh * width
    chunk = threads.rows_per_chunk(per_image, inputs.dtype, CHUNK_BYTES)
    # IMAGES: a chunk's (b, K, c) product keeps the GIL with 500 outputs or fewer
    rows = threads.gil_free_rows(d * kh * kw * c) if layout == IMAGES else 1
    grad_taps = threads.sum_over_batch(part, n, n * per_image, chunk, rows).T  # (c, K)
    if layout == LAST:
        grad_taps = grad_taps.reshape(c, kh, kw, d).transpose(0, 3, 1, 2)
    else:
        grad_taps = grad_taps.reshape(c, d, kh, kw)
    return np.ascontiguousarray(grad_taps[:, :, ::-1, ::-1])  # the taps are the flipped kernel


def _grad_inputs_col2im(grad_outputs, weights, shape, padding, result) -> None:
    """One GEMM to the column matrix of the input gradient, then a col2im scatter-add.

    gx_pad[b, j, t + u, s + v] += sum_i gy[b, i, t, s] * flip(k)[i, j, u, v]: the GEMM
    weights (d*kh*kw, c) @ gy (c, n*oh*ow) gives every term, the kh*kw shifted adds place them.
    """
    n, _, oh, ow = grad_outputs.shape
    d, kh, kw = shape
    hp, wp = oh + kh - 1, ow + kw - 1  # the padded input, h + 2p by w + 2p
    # ROWS: each output row carries kw - 1 zero columns, so that a shift by (u, v) on the
    # padded grid is a shift by u*Wp + v of one run of oh*Wp values per image (the extra row
    # below each image takes what runs past its last row: zeros, as the gradient was zero).
    width = wp if _layout_for(d, kw, ow) == ROWS else ow
    with _profile.stage("layout"):
        gy = _by_channel(grad_outputs, width)  # (c, n*oh*width)
    with _profile.stage("gemm"):
        columns = scratch("im2col.columns", (d, kh, kw, n, oh, width), grad_outputs.dtype)
        _profile.matmul(weights, gy, out=columns.reshape(d * kh * kw, -1))
    with _profile.stage("col2im"):
        padded = scratch("im2col.col2im", (d, n, hp + (width == wp), wp), grad_outputs.dtype)
        padded.fill(0)
        if width == wp:
            flat, run = padded.reshape(d, n, -1), oh * wp
            for u in range(kh):
                for v in range(kw):
                    start = u * wp + v
                    flat[:, :, start : start + run] += columns[:, u, v].reshape(d, n, run)
        else:
            for u in range(kh):
                for v in range(kw):
                    padded[:, :, u : u + oh, v : v + ow] += columns[:, u, v]
    with _profile.stage("layout"):
        h, w = hp - 2 * padding, wp - 2 * padding
        interior = padded[:, :, padding : padding + h, padding : padding + w]
        np.copyto(result, interior.transpose(1, 0, 2, 3))


class _Col2imImages:
    """col2im of a 'same' convolution (oh = h, ow = w), image by image: one GEMM per image,
    weights (d*kh*kw, c) @ the gradient as it is (c, h*w), and one strided sum into the result.

    As in ``_ShiftedColumns``, the term of tap (u, v) at output q (q = t*w + s, flat in its
    image) lands at flat input position q + (u - p)*w + (v - p); the terms a shift by v - p
    wraps into another row are the ones the padding drops, and are zeroed. Each tap's terms
    sit in a block of h*w + 2*g values with g zeros on either side (g = p*w + p, the largest
    shift), blocks of consecutive taps adjacent: then input position i of every tap is one
    strided view, tap (u, v) at i - shift(u, v) of its block, which np.sum reduces over the
    taps in one call (kh*kw shifted adds would be kh*kw numpy calls per chunk).
    ``__call__(grad_outputs, result)`` does one chunk, in its thread's buffers.
    """

    def __init__(self, weights, grad_shape, window, padding):
        c, h, w = grad_shape
        kh, kw = window
        self.weights, self.padding = weights, padding
        self.shape = (c, h, w, kh, kw)
        self.buffers = _PerThread(self._buffers)

    def _buffers(self, rows: int, dtype) -> tuple:
        _, h, w, kh, kw = self.shape
        d = len(self.weights) // (kh * kw)
        p, area = self.padding, h * w
        guard = p * w + p
        block = area + 2 * guard
        blocks = scratch("im2col.col2im_blocks", (rows, d, kh, kw, block), dtype)
        blocks[..., :guard] = 0
        blocks[..., guard + area :] = 0
        item = blocks.itemsize
        by_image = np.ndarray(  # the GEMM's output, (rows, K, h*w) with rows of ``block``
            (rows, d * kh * kw, area), dtype, buffer=blocks, offset=guard * item,
            strides=(blocks.strides[0], block * item, item),
        )  # fmt: skip
        image_rows = np.ndarray(
            (rows, d, kh, kw, h, w), dtype, buffer=blocks, offset=guard * item,
            strides=(*blocks.strides[:4], w * item, item),
        )  # fmt: skip
        # input position i of tap (u, v): block (u, v), guard + i - (u - p)*w - (v - p)
        by_input = np.ndarray(
            (rows, d, area, kh, kw), dtype, buffer=blocks, offset=(guard + p * w + p) * item,
            strides=(*blocks.strides[:2], item, (kw * block - w) * item, (block - 1) * item),
        )  # fmt: skip
        by_input.flags.writeable = False
        return by_image, _wrapped(image_rows, p), by_input

    def __call__(self, grad_outputs: np.ndarray, result: np.ndarray) -> None:
        c, h, w, _, _ = self.shape
        m = len(grad_outputs)
        by_image, wrapped, by_input = self.buffers(m, grad_outputs.dtype)
        with _profile.stage("gemm"):
            _profile.matmul(self.weights, grad_outputs.reshape(m, c, h * w), out=by_image[:m])
        with _profile.stage("col2im"):
            for view in wrapped:
                view[:m] = 0
            np.sum(by_input[:m], axis=(3, 4), out=_reshaped(result, (m, -1, h * w)))


def _layout_for(d: int, kw: int, ow: int, rows: bool = True) -> str:
    """How the column matrix is laid out and built (see above); ``rows``: ROWS allowed."""
    if rows and (kw - 1) * ROWS_WASTE <= ow:
        return ROWS
    return FIRST if ow >= kw * d or ow >= 32 else LAST


def _images_for(oh: int, ow: int) -> str | None:
    """IMAGES where a slice's GEMMs go image by image (see above), else None."""
    return IMAGES if oh * ow >= IMAGES_MIN_OUTPUTS else None


def _width(layout: str, kw: int, ow: int) -> int:
    """Columns per output row in the column matrix: ROWS computes kw - 1 more (dropped)."""
    return ow + kw - 1 if layout == ROWS else ow


def _weights(taps: np.ndarray, layout: str) -> np.ndarray:
    """taps (c, d, kh, kw) as the contiguous (c, K) left operand, K in the columns' order."""
    c = taps.shape[0]
    if layout == LAST:
        return np.ascontiguousarray(taps.transpose(0, 2, 3, 1)).reshape(c, -1)  # (kh, kw, d)
    return np.ascontiguousarray(taps).reshape(c, -1)  # K ordered (d, kh, kw)


def _by_channel(grad_outputs: np.ndarray, width: int) -> np.ndarray:
    """grad_outputs (n, c, oh, ow) as a (c, n*oh*width) scratch matrix, rows padded with zeros
    to ``width`` (the zero columns are written once per shape, ``_layout.bordered``)."""
    n, c, oh, ow = grad_outputs.shape
    shape = (c, n, oh, width)
    gy = bordered("im2col.grad_outputs", shape, grad_outputs.dtype, slice(0, oh), slice(0, ow), 2)
    np.copyto(gy[:, :, :, :ow], grad_outputs.transpose(1, 0, 2, 3))
    return gy.reshape(c, -1)


def _by_image(product: np.ndarray, n: int, oh: int, ow: int) -> np.ndarray:
    """The (c, n*oh*width) GEMM product as (c, n, oh, ow): ROWS's extra columns dropped."""
    return product.reshape(product.shape[0], n, oh, -1)[..., :ow]


def _correlate(x: np.ndarray, taps: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """correlate(x (n, d, h, w), taps (c, d, kh, kw), pads ph, pw) -> fresh (n, c, oh, ow)."""
    n, d, h, w = x.shape
    c, _, kh, kw = taps.shape
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if c * h * w < n * kh * kw:
        # Pseudo-commutativity (section 5.6): the taps, flipped, become the image and the
        # image, flipped, the taps; output positions stay where they are.
        image, swapped_taps = taps[:, :, ::-1, ::-1], x[:, :, ::-1, ::-1]
        sph, spw = h + ph - kh, w + pw - kw
        layout = _layout_for(d, w, ow)
        swapped = np.empty((c, n, oh, ow), x.dtype)
        weights = _weights(swapped_taps, layout)
        _correlate_columns(image, weights, (h, w), (sph, spw), layout, swapped)
        return np.ascontiguousarray(swapped.transpose(1, 0, 2, 3))
    layout = _layout_for(d, kw, ow)
    result = np.empty((n, c, oh, ow), x.dtype)
    per_image = d * kh * kw * oh * _width(layout, kw, ow)
    batch = threads.whole_batch(n, n * per_image, per_image, x.dtype)
    if batch is not None:
        # More cores than slices worth cutting: the GEMM goes to the BLAS's own threads, which
        # scale without the GIL, and the slices only build the column matrix and place results.
        weights = _weights(taps, layout)
        for lo in range(0, n, batch):
            rows = slice(lo, min(lo + batch, n))
            _correlate_batch(x[rows], weights, (kh, kw), (ph, pw), layout, result[rows])
        return result
    # The pool alone keeps every core busy: each slice walks its images a cache-sized chunk at
    # a time, padding, unfolding, multiplying and placing it (one BLAS thread), or, where each
    # image's GEMM is large enough, multiplying image by image straight into the result.
    layout = _images_for(oh, ow) or layout
    weights = _weights(taps, layout)
    per_image = d * kh * kw * oh * _width(layout, kw, ow)
    chunk = threads.rows_per_chunk(per_image, x.dtype, CHUNK_BYTES)

    rows = 1
    if layout == IMAGES:
        image_columns = _image_columns(x.shape[1:], (kh, kw), (ph, pw), x.dtype)
        rows = threads.gil_free_rows(c * oh * ow)  # a stacked GEMM this small keeps the GIL

        def part(s: slice) -> None:  # each image's GEMM writes its rows of the result
            columns = image_columns(x[s])  # (b, K, oh*ow)
            with _profile.stage("gemm"):
                _profile.matmul(weights, columns, out=_reshaped(result[s], (len(columns), c, -1)))

    else:

        def part(s: slice) -> None:
            _correlate_columns(x[s], weights, (kh, kw), (ph, pw), layout, result[s])

    threads.over_batch(part, n, n * per_image, chunk, rows)
    return result


def _correlate_batch(x, weights, window, pads, layout, result) -> None:
    """result (n, c, oh, ow) = weights (c, K) @ columns (K, n*oh*ow) of x, in three steps: the
    column matrix built by slices of the batch in parallel, ONE GEMM on the BLAS's own threads,
    and the transposing copy into NCHW by slices again."""
    n, d = x.shape[:2]
    c = weights.shape[0]
    kh, kw = window
    oh, ow = result.shape[2:]
    m = oh * _width(layout, kw, ow)
    shape = (n * m, kh * kw * d) if layout == LAST else (d * kh * kw, n * m)
    columns = scratch("im2col.batch_columns", shape, x.dtype)

    def fill(s: slice) -> None:  # this slice's images into its columns of the shared matrix
        cols = slice(s.start * m, s.stop * m)
        _columns(x[s], kh, kw, *pads, layout, into=columns[cols] if layout == LAST
                 else columns[:, cols])  # fmt: skip

    threads.over_batch(fill, n, columns.size)
    operand = columns.T if layout == LAST else columns
    # the BLAS's own threads, at most the cores: the one step they scale well
    with _profile.stage("gemm"), threads.blas_within_cores():
        product = scratch("im2col.product", (c, n * m), x.dtype)
        _profile.matmul(weights, operand, out=product)
    by_image = _by_image(product, n, oh, ow)

    def place(s: slice) -> None:
        with _profile.stage("layout"):
            np.copyto(result[s], by_image[:, s].transpose(1, 0, 2, 3))

    threads.over_batch(place, n, result.size)


def _correlate_columns(x, weights, window, pads, layout, result) -> None:
    """result (n, c, oh, ow) = weights (c, K) applied to the (K, M) column matrix of x."""
    n = x.shape[0]
    oh, ow = result.shape[2:]
    columns = _columns(x, *window, *pads, layout)  # (K, M)
    with _profile.stage("gemm"):
        product = scratch("im2col.product", (weights.shape[0], columns.shape[1]), x.dtype)
        threads.matmul(weights, columns, out=product)  # split only when not in a slice
    with _profile.stage("layout"):
        np.copyto(result, _by_image(product, n, oh, ow).transpose(1, 0, 2, 3))


def _columns(x, kh: int, kw: int, ph: int, pw: int, layout: str, into=None):
    """The column matrix of x for (kh, kw) patches with pads (ph, pw), as a (K, M) matrix.

    Rows (the reduction K = d*kh*kw) are ordered (kh, kw, d) for LAST, else (d, kh, kw);
    columns (M = n*oh*width) are ordered (n, oh, width), where ROWS's width has kw - 1 extra
    columns. The matrix is a scratch buffer (FIRST, ROWS) or the transpose of one (LAST),
    filled by a single copy from a strided view. ``into``: write it there instead, a (K, M)
    block (FIRST, ROWS) or an (M, K) block (LAST) of a larger matrix.
    """
    d = x.shape[1]
    with _profile.stage("layout"):
        if layout == ROWS:
            padded = pad_channels_first(x, ph, pw, "im2col.padded", extra_rows=1)
            view = _row_runs(padded, kh, kw)  # (d, kh, kw, n, oh*Wp)
            if into is None:
                into = scratch("im2col.columns", (d * kh * kw, view[0, 0, 0].size), x.dtype)
            np.copyto(_reshaped(into, view.shape), view)
            return into
        if layout == FIRST:
            padded = pad_channels_first(x, ph, pw, "im2col.padded")  # (d, n, Hp, Wp)
            view = windows(padded, kh, kw, h_axis=2)  # (d, n, oh, ow, kh, kw)
            view = view.transpose(0, 4, 5, 1, 2, 3)  # (d, kh, kw, n, oh, ow)
            if into is None:
                into = scratch("im2col.columns", (d * kh * kw, view[0, 0, 0].size), x.dtype)
            np.copyto(_reshaped(into, view.shape), view)
            return into
        assert layout == LAST, layout  # IMAGES has its own builders (_image_columns)
        padded = pad_channels_last(x, ph, pw, "im2col.padded")  # (n, Hp, Wp, d)
        view = windows(padded, kh, kw, h_axis=1)  # (n, oh, ow, d, kh, kw)
        view = view.transpose(0, 1, 2, 4, 5, 3)  # (n, oh, ow, kh, kw, d)
        if into is None:
            into = scratch("im2col.columns", (view[..., 0, 0, 0].size, kh * kw * d), x.dtype)
        np.copyto(_reshaped(into, view.shape), view)
        return into.T


def _image_columns(shape, window, pads, dtype) -> Callable[[np.ndarray], np.ndarray]:
    """IMAGES's column matrices: a function of a chunk x (b, d, h, w) of images of ``shape``
    (d, h, w) giving its (b, K, oh*ow), K ordered (d, kh, kw), in a scratch buffer.

    Where the output is as wide as the image (ow = w: 'same' padding along w) and ph >= 0,
    by shifted runs of whole images (``_ShiftedColumns``); otherwise each image's rows are
    copied from windows of a fully padded buffer, runs of ow values.
    """
    d, w = shape[0], shape[2]
    (kh, kw), (ph, pw) = window, pads
    if w + 2 * pw - kw + 1 == w and ph >= 0:
        plans = _PerThread(lambda rows, dtype: _ShiftedColumns(rows, shape, window, pads, dtype))
        return lambda x: plans(len(x), dtype)(x)

    def windowed(x: np.ndarray) -> np.ndarray:
        with _profile.stage("layout"):
            padded = pad_images(x, ph, pw, "im2col.padded_images")  # (b, d, Hp, Wp)
            view = windows(padded, kh, kw, h_axis=2)  # (b, d, oh, ow, kh, kw)
            view = view.transpose(0, 1, 4, 5, 2, 3)  # (b, d, kh, kw, oh, ow)
            columns = scratch("im2col.columns", view.shape, x.dtype)
            np.copyto(columns, view)
            return columns.reshape(len(x), d * kh * kw, -1)

    return windowed


class _ShiftedColumns:
    """IMAGES's column matrices by shifted runs, for chunks of up to ``rows`` images on one
    thread: its buffers and views are made once, so that a chunk costs its numpy calls alone.

    The images are padded along h only, into (rows, d, g + h + 2*ph + g, w), where g zero
    rows above and below keep the reads of a shifted run inside the buffer. Row (j, u, v)
    of an image's matrix is then ONE run of oh*w values of that buffer, from flat position
    u*w + v - pw of channel j's padded image: a copy of whole images, not of rows of ow. A
    shift by v - pw != 0 wraps |v - pw| values of each output row into the next or previous
    image row: the positions the horizontal padding covers, zeroed after the copy.
    """

    def __init__(self, rows: int, shape, window, pads, dtype):
        d, h, w = shape
        (kh, kw), (ph, pw) = window, pads
        oh = h + 2 * ph - kh + 1
        guard = -(-pw // w)  # rows enough to hold a shift of pw values
        top = guard + ph
        height = h + 2 * top
        padded = bordered("im2col.padded_images", (rows, d, height, w), dtype,
                          slice(top, top + h), slice(0, w), 2)  # fmt: skip
        self.interior = padded[:, :, top : top + h]
        item = padded.itemsize
        self.runs = np.ndarray(
            (rows, d, kh, kw, oh * w),
            dtype,
            buffer=padded,
            offset=(guard * w - pw) * item,  # flat u*w + v - pw from the first padded row
            strides=(d * height * w * item, height * w * item, w * item, item, item),
        )
        self.runs.flags.writeable = False
        columns = scratch("im2col.columns", (rows, d, kh, kw, oh, w), dtype)
        self.columns = columns.reshape(self.runs.shape)
        self.by_image = columns.reshape(rows, d * kh * kw, oh * w)
        self.wrapped = _wrapped(columns, pw)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        m = len(x)
        with _profile.stage("layout"):
            np.copyto(self.interior[:m], x)
            np.copyto(self.columns[:m], self.runs[:m])
            for view in self.wrapped:
                view[:m] = 0
        return self.by_image[:m]


def _wrapped(columns: np.ndarray, pw: int) -> list[np.ndarray]:
    """The entries of ``columns`` (b, d, kh, kw, oh, w) that a shift by v - pw along rows of w
    values wraps into the previous or next row, the positions the horizontal padding covers
    (they read and receive nothing): one view per v != pw."""
    kw, w = columns.shape[3], columns.shape[5]
    return [
        columns[:, :, :, v, :, : pw - v] if v < pw else columns[:, :, :, v, :, max(0, w + pw - v) :]
        for v in range(kw)
        if v != pw
    ]


class _PerThread:
    """``make(rows, dtype)``'s object for the calling thread, made on its first use there (or
    again for a chunk of more rows than it was made for): one call's buffers and views, made
    once per thread instead of once per chunk."""

    def __init__(self, make: Callable):
        self.make, self.made = make, {}

    def __call__(self, rows: int, dtype):
        ident = threading.get_ident()
        made = self.made.get(ident)
        if made is None or made[0] < rows:
            made = self.made[ident] = (rows, self.make(rows, dtype))
        return made[1]


def _row_runs(padded: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """ROWS's column matrix as a read-only view of ``padded`` (d, n, Hp + 1, Wp), shaped
    (d, kh, kw, n, oh*Wp): row (j, u, v) holds, per image, the oh*Wp values from flat position
    u*Wp + v of channel j, i.e. the image shifted by (u, v) with kw - 1 wrapped columns per
    row (whose products are dropped). The last run of an image ends kw - 1 values past its
    padded rows, in the extra zero row."""
    d, n, rows, wp = padded.shape
    oh = rows - kh  # (Hp + 1) - kh = Hp - kh + 1
    item = padded.itemsize
    view = np.ndarray(
        (d, kh, kw, n, oh * wp),
        padded.dtype,
        buffer=padded,
        strides=(n * rows * wp * item, wp * item, item, rows * wp * item, item),
    )
    view.flags.writeable = False
    return view


def _reshaped(block: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``block`` viewed with ``shape``; raises rather than copying (a copy would be lost)."""
    if _RESHAPE_HAS_COPY:
        return np.reshape(block, shape, copy=False)
    view = block.view()
    view.shape = shape  # numpy < 2.1 (setting the shape is deprecated from numpy 2.5)
    return view
