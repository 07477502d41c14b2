"""``loop`` backend: two Python loops over kernel offsets (or output positions), one GEMM each.

This is the assignment's ``convolve_numpy`` (section 3.3.2: up to two nested loops), written so
that no step copies data. Every pass is a correlation (``kernels._layout``):

    forward       y  = correlate(x, flip(k), p, p)
    grad_inputs   gx = correlate(gy, k^T, kh - 1 - p, kw - 1 - p)     (section 5.7)
    grad_kernels  gk[:, :, kh-1-u, kw-1-v] = sum over (b, t, s) of gy * xpad shifted by (u, v)

Loop over kernel offsets (kh*kw steps). The image is padded once into a channels-first
buffer (d, n, Hp, Wp). Flattened to (d, N) with N = n*Hp*Wp, a shift of the image by (u, v) is
a shift of the flat index by u*Wp + v, so the shifted image of the whole batch is the column
slice ``flat[:, u*Wp+v : u*Wp+v+Q]``: a BLAS operand as it stands, no copy. Each offset is one
GEMM taps[u, v] (c, d) @ slice (d, Q), accumulated on the padded grid; the flat positions that
straddle a row or image border are computed and dropped (Hp*Wp/(oh*ow) - 1 extra work: 13% at
32x32, 27% at 16x16, 56% at 8x8). For grad_kernels the output gradient is placed on the same
grid (zeros elsewhere) and each offset is one GEMM gy (c, Q) @ slice^T (Q, d).

Loop over output positions (oh*ow steps), for kernels larger than their output, as in the
weight-gradient call of section 5.7. The image is padded channels-last (n, Hp, Wp, d); the
patch of output (t, s) for the whole batch is, in each image, the run of ((kh-1)*Wp + kw)*d
values starting at (t*Wp + s)*d: again a plain strided BLAS operand, against the taps laid on
the same (kh, Wp, d) grid with zeros in the Wp - kw columns outside the patch. Each position is
one GEMM (n, L) @ (L, c).

Which loop: ``_correlate`` estimates the multiply-adds (padding waste included, plus a
per-step overhead) of four plans -- offsets or positions, each as posed or with image and taps
swapped by pseudo-commutativity (section 5.6) -- and runs the cheapest. The swap matters when
the padding is mostly zeros: the input gradient of a 32x32 kernel over a 3x3 output (batch
16) took 516 ms looping over 1024 offsets on a 63x63 padded grid, and 1.5 ms swapped.

Chunks and threads: the offset loops run per chunk of images (about ``CHUNK_BYTES`` of image,
outputs and product on the padded grid, so they stay in the caches), the chunks shared out
over the thread budget (``kernels.threads``, a single-threaded BLAS per thread); the weight
gradient adds the chunks' parts. Measured on two threads (ms, forward / grad_inputs /
grad_kernels): the whole-batch code (one-thread copies, two-thread GEMMs) against chunks,
16->32 at 16x16 3.5/3.5/3.8 against 3.0/2.9/2.9; one chunk per thread against chunks, 32->32
at 32x32 23.1/23.1/23.1 against 16.6/16.8/17.2.

What bounds it. The GEMMs of the offset loop reduce over only d channels, and OpenBLAS
(Haswell kernels, see ``backend_im2col``) runs such thin GEMMs at 49 GF/s (d = 3), 73-102 GF/s
(d = 16, 32) and 110-126 GF/s (d = 64, 128) on one core, with each call packing its operands
and writing the whole (c, Q) product, which the accumulation adds in another pass. The border
waste adds 13% at 32x32, 27% at 16x16 and 56% at 8x8. The weight gradient has a tiny (c, d)
product per offset; up to ``GEMV_CHANNELS`` = 4 input channels it runs one GEMV per channel
instead, which halved the first layer's (3->16 at 32x32: 8.5 ms against 4.1 ms on one
thread). Those passes are bound by memory: each offset reads the whole chunk again. Python
overhead is about 5 us per GEMM or GEMV (chunks x kh*kw of them, times d with GEMVs): 0.1-0.3
ms of a 3-4 ms call on the recipe layers.

Measured with the benchmark suite (two threads, medians, forward + grad_inputs + grad_kernels
in ms against torch): 3->16 at 32x32 8.9 against 2.9 (0.32x), 16->32 at 16x16 8.7 against
2.4 (0.27x), 32->64 at 8x8 8.4 against 2.3 (0.27x); geometric mean of the nine passes 0.27x.
"""

from __future__ import annotations

import numpy as np

from kernels import threads
from kernels._layout import (
    embed_channels_first,
    grad_inputs_padding,
    grad_kernel_shape,
    pad_channels_first,
    pad_channels_last,
    scratch,
    taps_forward,
    taps_grad_inputs,
)

#: sums of products in BLAS: exact while every partial sum is an integer below 2**24.
EXACT = True

#: Bytes on the padded grid (image, outputs) per chunk of images in the offset loops.
CHUNK_BYTES = 4 * 2**20
#: Up to this many input channels, the weight gradient runs one GEMV per channel and offset.
GEMV_CHANNELS = 4


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    return _correlate(inputs, taps_forward(kernels), padding, padding)


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    ph, pw = grad_inputs_padding(kernels, padding)
    return _correlate(grad_outputs, taps_grad_inputs(kernels), ph, pw)


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    n, d, h, w = inputs.shape
    _, c, oh, ow = grad_outputs.shape
    kh, kw = grad_kernel_shape(inputs, grad_outputs, padding)
    hp, wp = h + 2 * padding, w + 2 * padding
    over_offsets = _cost(kh * kw, c * d * n * hp * wp)
    over_positions = _cost(oh * ow, c * d * n * ((kh - 1) * wp + kw))
    if over_offsets <= over_positions:

        def part(s: slice) -> np.ndarray:
            return _grad_kernels_over_offsets(inputs[s], grad_outputs[s], padding, kh, kw)

        grid = (d + c) * hp * wp  # image and gradient on the padded grid
        chunk = threads.rows_per_chunk(grid, inputs.dtype, CHUNK_BYTES)
        return threads.sum_over_batch(part, n, inputs.size + grad_outputs.size, chunk)
    return _grad_kernels_over_positions(inputs, grad_outputs, padding, kh, kw)


#: Python and call overhead of one loop step (about 5 us), in multiply-adds of GEMM work.
_STEP_OVERHEAD = 250_000


def _cost(steps: int, multiply_adds_per_step: int) -> int:
    """Estimated work of a loop of ``steps`` GEMMs, padding waste included."""
    return steps * (multiply_adds_per_step + _STEP_OVERHEAD)


def _correlate(x: np.ndarray, taps: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """correlate(x (n, d, h, w), taps (c, d, kh, kw), pads ph, pw) -> fresh (n, c, oh, ow).

    Four ways to loop; the estimated cheapest runs. Over kernel offsets or over output
    positions, each either as posed or with image and taps swapped by pseudo-commutativity
    (section 5.6): the flipped taps padded by (h + ph - kh, w + pw - kw) become the image and
    the flipped image the taps, output positions unchanged. The swap matters when the padding
    is mostly zeros, as in the input gradient of a kernel larger than its output.
    """
    n, d, h, w = x.shape
    c, _, kh, kw = taps.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    hs, ws = 2 * h + 2 * ph - kh, 2 * w + 2 * pw - kw  # the swapped image, padded
    plans = [
        (_cost(kh * kw, c * d * n * hp * wp), False, _correlate_over_offsets),
        (_cost(oh * ow, n * c * d * ((kh - 1) * wp + kw)), False, _correlate_over_positions),
        (_cost(h * w, n * d * c * hs * ws), True, _correlate_over_offsets),
        (_cost(oh * ow, c * n * d * ((h - 1) * ws + w)), True, _correlate_over_positions),
    ]
    _, swap, method = min(plans, key=lambda plan: plan[0])
    if swap:
        flipped_image, flipped_taps = taps[:, :, ::-1, ::-1], x[:, :, ::-1, ::-1]
        swapped = np.empty((c, n, oh, ow), x.dtype)
        method(flipped_image, flipped_taps, h + ph - kh, w + pw - kw, swapped)
        return np.ascontiguousarray(swapped.transpose(1, 0, 2, 3))
    result = np.empty((n, c, oh, ow), x.dtype)
    if method is _correlate_over_positions:  # one GEMM per position spans the whole batch
        method(x, taps, ph, pw, result)
        return result

    def part(s: slice) -> None:
        method(x[s], taps, ph, pw, result[s])

    grid = (d + 2 * c) * hp * wp  # image, outputs and one GEMM's product on the padded grid
    chunk = threads.rows_per_chunk(grid, x.dtype, CHUNK_BYTES)
    threads.over_batch(part, n, x.size + result.size, chunk)
    return result


def _correlate_over_offsets(x: np.ndarray, taps: np.ndarray, ph: int, pw: int, result) -> None:
    c, d, kh, kw = taps.shape
    padded = pad_channels_first(x, ph, pw, "loop.padded")  # (d, n, Hp, Wp)
    _, n, hp, wp = padded.shape
    flat = padded.reshape(d, n * hp * wp)
    reach = (kh - 1) * wp + kw - 1  # flat distance of the farthest tap
    q = flat.shape[1] - reach  # flat positions whose whole patch lies inside the buffer
    weights = np.ascontiguousarray(taps.transpose(2, 3, 0, 1))  # (kh, kw, c, d)
    grid = scratch("loop.grid", (c, n, hp, wp), x.dtype)  # outputs on the padded grid
    live = grid.reshape(c, -1)[:, :q]
    step = scratch("loop.step", (c, q), x.dtype)
    for u in range(kh):
        for v in range(kw):
            shifted = flat[:, u * wp + v : u * wp + v + q]
            if u == 0 and v == 0:
                np.matmul(weights[u, v], shifted, out=live)
            else:
                np.matmul(weights[u, v], shifted, out=step)
                live += step
    oh, ow = hp - kh + 1, wp - kw + 1
    np.copyto(result, grid[:, :, :oh, :ow].transpose(1, 0, 2, 3))


def _correlate_over_positions(x: np.ndarray, taps: np.ndarray, ph: int, pw: int, result) -> None:
    c, d, kh, kw = taps.shape
    padded = pad_channels_last(x, ph, pw, "loop.padded")  # (n, Hp, Wp, d)
    n, hp, wp, _ = padded.shape
    images = padded.reshape(n, hp * wp * d)
    run = ((kh - 1) * wp + kw) * d  # one patch, read row by row across the padded width
    laid = scratch("loop.taps", (c, kh, wp, d), x.dtype)  # taps on the padded grid
    laid[:, :, kw:, :] = 0
    laid[:, :, :kw, :] = taps.transpose(0, 2, 3, 1)
    laid_taps = laid.reshape(c, kh * wp * d)[:, :run].T  # (L, c)
    oh, ow = hp - kh + 1, wp - kw + 1
    step = scratch("loop.step", (n, c), x.dtype)
    for t in range(oh):
        for s in range(ow):
            start = (t * wp + s) * d
            np.matmul(images[:, start : start + run], laid_taps, out=step)
            result[:, :, t, s] = step


def _grad_kernels_over_offsets(inputs, grad_outputs, padding, kh, kw) -> np.ndarray:
    d = inputs.shape[1]
    c = grad_outputs.shape[1]
    padded = pad_channels_first(inputs, padding, padding, "loop.padded")  # (d, n, Hp, Wp)
    _, n, hp, wp = padded.shape
    flat = padded.reshape(d, n * hp * wp)
    q = flat.shape[1] - ((kh - 1) * wp + kw - 1)
    # The output gradient on the same padded grid, zero where no output exists, so that flat
    # position i of it pairs with flat position i + u*Wp + v of the image.
    gy = embed_channels_first(grad_outputs, hp, wp, "loop.grid").reshape(c, -1)[:, :q]
    result = np.empty((c, d, kh, kw), inputs.dtype)
    step = scratch("loop.step", (c, d), inputs.dtype)
    for u in range(kh):
        for v in range(kw):
            shifted = flat[:, u * wp + v : u * wp + v + q]
            if d <= GEMV_CHANNELS:  # a (c, q) x (q, d) GEMM this thin runs slower than d GEMVs
                for j in range(d):
                    np.matmul(gy, shifted[j], out=step[:, j])
            else:
                np.matmul(gy, shifted.T, out=step)
            result[:, :, kh - 1 - u, kw - 1 - v] = step  # the kernel is the flipped taps
    return result


def _grad_kernels_over_positions(inputs, grad_outputs, padding, kh, kw) -> np.ndarray:
    d = inputs.shape[1]
    _, c, oh, ow = grad_outputs.shape
    padded = pad_channels_last(inputs, padding, padding, "loop.padded")  # (n, Hp, Wp, d)
    n, hp, wp, _ = padded.shape
    images = padded.reshape(n, hp * wp * d)
    run = ((kh - 1) * wp + kw) * d
    gy = scratch("loop.grad_outputs", (oh, ow, c, n), inputs.dtype)
    np.copyto(gy, grad_outputs.transpose(2, 3, 1, 0))  # each position a contiguous (c, n)
    laid = scratch("loop.taps", (c, kh, wp, d), inputs.dtype)  # grad of taps on the grid
    live = laid.reshape(c, kh * wp * d)[:, :run]
    step = scratch("loop.step", (c, run), inputs.dtype)
    for t in range(oh):
        for s in range(ow):
            start = (t * wp + s) * d
            if t == 0 and s == 0:
                np.matmul(gy[t, s], images[:, start : start + run], out=live)
            else:
                np.matmul(gy[t, s], images[:, start : start + run], out=step)
                live += step
    grad_taps = laid[:, :, :kw, :].transpose(0, 3, 1, 2)  # (c, d, kh, kw)
    return np.ascontiguousarray(grad_taps[:, :, ::-1, ::-1])
