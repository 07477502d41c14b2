"""``loop`` backend: two Python loops over kernel offsets (or output positions), one GEMM each.

This is the assignment's ``convolve_numpy`` (section 3.3.2: up to two nested loops), written so
that no step copies data. Every pass is a correlation (``kernels._layout``):

    forward       y  = correlate(x, flip(k), p, p)
    grad_inputs   gx = correlate(gy, k^T, kh - 1 - p, kw - 1 - p)     (section 5.7)
    grad_kernels  gk[:, :, kh-1-u, kw-1-v] = sum over (b, t, s) of gy * xpad shifted by (u, v)

Loop over kernel offsets (kh*kw steps). The image is padded once into a channels-first
buffer in which neighbouring rows and images share their zero border
(``_layout.pad_shared_borders``: Gw = w + pw columns per row, Gh = h + ph rows per image,
and one more image after the last, of which only the border is read). Flattened to (d, N),
a shift of the image by (u, v) is a shift of the flat index by u*Gw + v, so the shifted
image of the whole batch is the column slice ``flat[:, u*Gw+v : u*Gw+v+Q]``: a BLAS operand
as it stands, no copy. Each offset is one GEMM taps[u, v] (c, d) @ slice (d, Q) that adds
into the output grid in the same pass (the C BLAS's beta = 1, ``kernels._cblas``; np.matmul
would write each product to a buffer for a second pass to add). The flat positions of the
borders are computed and dropped (Gh*Gw/(oh*ow) - 1 extra work with 'same' 3x3: 6% at
32x32, 13% at 16x16, 27% at 8x8; a border on each side, as in a plainly padded image, would
be twice that). For grad_kernels the output gradient is placed on the same grid (zeros
elsewhere) and each offset is one GEMM gy (c, Q) @ slice^T (Q, d).

Loop over kernel rows (kh steps), where the channels are few (kw * d at most
``STACK_DEPTH``, as in a first layer) or the outputs at least half as many as the channels
(twice as many in the weight gradient; ``_copies``): the buffer holds kw column copies of the padded
image (``_layout.fill_column_copies``), copy v the padded image's columns v .. v + ow - 1,
rows of exactly ow values, with no border columns, neighbouring images still sharing their
zero rows. Flattened to (kw*d, N) with Gw = ow, the column slice at u*Gw is the image under
all kw offsets of kernel row u at once, and each kernel row is one GEMM taps (c, kw*d) @
slice (kw*d, Q) that reduces over kw*d values. A GEMM over 3 channels runs far below the
BLAS's peak; each GEMM reads and writes the whole output grid it adds into (kh passes over
it instead of kh*kw); and the grid loses its border columns (one row per image is left:
12% extra work at 8x8, 6% at 16x16). The copies cost kw*d values per position, once. In
the weight gradient a kernel row is gy (c, Q) @ slice^T (Q, kw*d), and where the whole
kernel takes at most ``STACK_DEPTH`` values (3 channels, 3x3) its kh rows are stacked too
(copy u*kw + v is column copy v shifted by u rows, one flat copy), one GEMM for the kernel
(``_gradient_stacking``); with one or two output channels such a product has so few entries
that ``_cblas.gemm_into`` runs it as GEMVs.

Few outputs from many channels (no copies stacked, kh*kw*c at most ``SCATTER_PRODUCTS``, as
in the first layer's input gradient, 16 channels to 3): one GEMM gives every offset's
products at every position, and the offsets become shifted slices of those products, summed
by one np.sum over a strided view (``_correlate_by_scatter``), instead of kh*kw GEMMs of a few
rows, each rereading the image and rewriting the output.

Loop over output positions (oh*ow steps), for kernels larger than their output, as in the
weight-gradient call of section 5.7. The image is padded channels-last (n, Hp, Wp, d); the
patch of output (t, s) for the whole batch is, in each image, the run of ((kh-1)*Wp + kw)*d
values starting at (t*Wp + s)*d: again a plain strided BLAS operand, against the taps laid on
the same (kh, Wp, d) grid with zeros in the Wp - kw columns outside the patch. Each position is
one GEMM (n, L) @ (L, c).

Which loop: ``_correlate`` estimates the multiply-adds (padding waste included, plus a
per-step overhead) of four plans -- offsets or positions, each as posed or with image and taps
swapped by pseudo-commutativity (section 5.6) -- and runs the cheapest. The swap matters when
the padding is mostly zeros, as in the input gradient of a kernel larger than its output: the
posed loop would run over every offset of a large, mostly zero, padded grid.

Chunks and threads: the offset loops run per chunk of images (about ``CHUNK_BYTES`` of image
and outputs on the padded grid, so they stay in a core's caches), the chunks shared out over
the thread budget (``kernels.threads``, a single-threaded BLAS per thread, and no more threads
than the work is worth); the weight gradient adds the chunks' parts. Between its GEMMs a chunk
holds the GIL briefly, and with many threads those moments are what the threads wait on: the
correlation's GEMMs, and the weight gradient's per kernel row, go through ctypes, which
releases the GIL for each; in the per-offset weight gradient the kw offsets of one kernel row
are one numpy call (their shifted images are one strided view), a few numpy calls per row.

What bounds it: the GEMMs of the offset loop reduce over only d channels (c in the input
gradient), which BLAS runs far below its peak, and each reads and writes the whole (c, chunk)
grid it adds into. ``scripts/probe_loop_ceiling.py`` times the least GEMM work any loop over
offsets (or kernel rows) hands the BLAS, against torch. The benchmark suite records the time
of the loop's own GEMMs alone (``gemm_bound_s``) and where the rest goes (``breakdown_s``:
layout, gemm, reduction); the report shows both.
"""

from __future__ import annotations

import math

import numpy as np

from kernels import _profile, threads
from kernels._layout import (
    column_copies_buffer,
    embed_channels_first,
    fill_column_copies,
    fill_shared_borders,
    grad_inputs_padding,
    grad_kernel_shape,
    pad_channels_last,
    pad_shared_borders,
    scratch,
    shared_border_buffer,
    shared_border_grid,
    shared_border_span,
    taps_forward,
    taps_grad_inputs,
)

#: sums of products in BLAS: exact while every partial sum is an integer below 2**24.
EXACT = True

#: Bytes on the padded grid (image, outputs) per chunk of images in the offset loops.
CHUNK_BYTES = 4 * 2**20
#: A correlation that stacks no copies runs as one GEMM to every offset's products, summed as
#: shifted slices, while those products (kh * kw * c per position) are at most this many
#: (``_correlate_by_scatter``).
SCATTER_PRODUCTS = 72
#: While kw * d is at most this, the kw offsets of a kernel row are one GEMM (``_copies``).
STACK_DEPTH = 32


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    return _correlate(inputs, taps_forward(kernels), padding, padding)


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    ph, pw = grad_inputs_padding(kernels, padding)
    return _correlate(grad_outputs, taps_grad_inputs(kernels), ph, pw)


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    n, d, h, w = inputs.shape
    _, c, oh, ow = grad_outputs.shape
    kh, kw = grad_kernel_shape(inputs, grad_outputs, padding)
    wp = w + 2 * padding
    rows, copies = _gradient_stacking(d, c, kh, kw)
    stacked = rows * copies  # offsets per GEMM
    gh, gw = _offsets_grid(h, w, padding, padding, kh, kw, ow, copies)
    over_offsets = _cost(kh * kw // stacked, c * d * stacked * n * gh * gw)
    over_positions = _cost(oh * ow, c * d * n * ((kh - 1) * wp + kw))
    if over_offsets <= over_positions:

        def part(s: slice) -> np.ndarray:
            return _grad_kernels_over_offsets(inputs[s], grad_outputs[s], padding, kh, kw)

        grid = (stacked * d + c) * gh * gw  # image (and its shifted copies), gradient
        chunk = threads.rows_per_chunk(grid, inputs.dtype, CHUNK_BYTES)
        return threads.sum_over_batch(part, n, n * grid * kh * kw, chunk)
    with threads.single_threaded_blas():
        return _grad_kernels_over_positions(inputs, grad_outputs, padding, kh, kw)


#: Python and call overhead of one loop step, counted as the multiply-adds of GEMM work that
#: take as long.
_STEP_OVERHEAD = 250_000


def _cost(steps: int, multiply_adds_per_step: int) -> int:
    """Estimated work of a loop of ``steps`` GEMMs, padding waste included."""
    return steps * (multiply_adds_per_step + _STEP_OVERHEAD)


def _copies(d: int, c: int, kw: int, wider: float = 0.5) -> int:
    """Column copies of a d-channel image the offset loop stacks (``fill_column_copies``) for
    c outputs: kw (one GEMM per kernel row, reducing over kw * d) where kw * d is at most
    ``STACK_DEPTH`` or c >= ``wider`` * d, else 1 (one GEMM per offset, ``pad_shared_borders``).

    A GEMM that reduces over a few channels runs far below the BLAS's peak, and every GEMM of a
    correlation reads and writes the whole (c, positions) output grid it adds into: kh*kw
    passes over it per offset, kh per kernel row. The kw copies of the image cost kw*d values
    per position, once, and take the border columns out of the grid (12% of it at 8x8, 6% at
    16x16). So they pay where the reduction is short or the outputs are not far fewer than the
    image's channels: CIFAR-10 recipe, 2 threads, against one GEMM per offset, forward
    (c = 2d) 1.02-1.2x faster, input gradient (c = d/2) 1.04x (conv2) and 1.12-1.25x (conv3),
    but the first layer's input gradient (16 channels to 3) 0.83x. The weight gradient writes
    each product once, so its copies save only the rereading of the output gradient per
    offset: it asks for twice the image's channels (``wider`` = 2; the recipe's conv2 and
    conv3, c = 2d: 1.0-1.4x faster; c = d: 0.8-1.0x at 16x16, 1.0-1.2x with kernels of 7x7
    and more)."""
    return kw if kw * d <= STACK_DEPTH or c >= wider * d else 1


def _gradient_stacking(d: int, c: int, kh: int, kw: int) -> tuple[int, int]:
    """(kernel rows, column copies) per GEMM of the weight gradient's offset loop: the copies
    of ``_copies`` (twice the image's channels asked for), and all kh rows where the whole
    kernel reduces over at most ``STACK_DEPTH`` values (``_whole_kernel_copies``: the first
    layer's 3 channels, 3x3: one GEMM gy (c, Q) @ (Q, 27) instead of three (c, Q) @ (Q, 9),
    1.1-1.2x faster)."""
    copies = _copies(d, c, kw, wider=2)
    return (kh if copies > 1 and kh * kw * d <= STACK_DEPTH else 1), copies


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
    copies, swapped_copies = _copies(d, c, kw), _copies(d, n, w)
    gh, gw = _offsets_grid(h, w, ph, pw, kh, kw, ow, copies)
    ws = 2 * w + 2 * pw - kw  # the swapped image's padded width
    swapped = (kh, kw, h + ph - kh, w + pw - kw, h, w, ow, swapped_copies)
    swapped_grid = math.prod(_offsets_grid(*swapped))
    plans = [
        (_cost(kh * kw // copies, c * d * copies * n * gh * gw), False, _correlate_over_offsets),
        (_cost(oh * ow, n * c * d * ((kh - 1) * wp + kw)), False, _correlate_over_positions),
        (
            _cost(h * w // swapped_copies, n * d * swapped_copies * c * swapped_grid),
            True,
            _correlate_over_offsets,
        ),
        (_cost(oh * ow, c * n * d * ((h - 1) * ws + w)), True, _correlate_over_positions),
    ]
    _, swap, method = min(plans, key=lambda plan: plan[0])
    if swap:
        flipped_image, flipped_taps = taps[:, :, ::-1, ::-1], x[:, :, ::-1, ::-1]
        if method is _correlate_over_offsets:
            flipped_taps = _offset_weights(flipped_taps)
        swapped = np.empty((c, n, oh, ow), x.dtype)
        with threads.single_threaded_blas():
            method(flipped_image, flipped_taps, h + ph - kh, w + pw - kw, swapped)
        return np.ascontiguousarray(swapped.transpose(1, 0, 2, 3))
    result = np.empty((n, c, oh, ow), x.dtype)
    if method is _correlate_over_positions:  # one GEMM per position spans the whole batch
        with threads.single_threaded_blas():  # many small GEMMs: the BLAS's threads would spin
            method(x, taps, ph, pw, result)
        return result
    weights = _offset_weights(taps)
    scatter = copies == 1 and kh * kw * c <= SCATTER_PRODUCTS
    # per position: the image (its copies), or the image and every offset's products; outputs
    grid = ((d + kh * kw * c) if scatter else copies * d) * gh * gw + c * gh * gw
    batch = threads.whole_batch(n, n * grid, grid, x.dtype)
    if batch is not None:  # more cores than slices worth cutting: GEMMs on the BLAS's threads
        for lo in range(0, n, batch):
            rows = slice(lo, min(lo + batch, n))
            _correlate_over_offsets_blas(x[rows], weights, ph, pw, result[rows])
        return result

    body = _correlate_by_scatter if scatter else _correlate_over_offsets

    def part(s: slice) -> None:
        body(x[s], weights, ph, pw, result[s])

    chunk = threads.rows_per_chunk(grid, x.dtype, CHUNK_BYTES)
    threads.over_batch(part, n, n * grid, chunk)
    return result


def _offset_weights(taps: np.ndarray) -> np.ndarray:
    """taps (c, d, kh, kw) as (kh, kw / s, c, s * d), contiguous, with s = ``_copies``: one
    (c, d) matrix per offset, or one (c, kw * d) matrix per kernel row, column v * d + j for
    channel j at offset (u, v) (the row order of ``fill_column_copies``' copies)."""
    c, d, kh, kw = taps.shape
    copies = _copies(d, c, kw)
    by_row = taps.transpose(2, 3, 0, 1) if copies == 1 else taps.transpose(2, 0, 3, 1)
    return np.ascontiguousarray(by_row).reshape(kh, kw // copies, c, copies * d)


def _shifted_rows(padded: np.ndarray, u: int, kw: int, q: int) -> np.ndarray:
    """The kw shifted images of kernel row u, as a (kw, d, q) view of ``padded``
    (1, d, n + 1, Gh, Gw), ``pad_shared_borders``' single copy.

    Shift (u, v) of the flattened (d, (n+1)*Gh*Gw) buffer is the column slice starting at
    u*Gw + v; the kw slices of one row are one element apart, so all of them are one strided
    view and numpy runs their kw GEMMs in one call.
    """
    d, gw = padded.shape[1], padded.shape[4]
    item = padded.itemsize
    return np.ndarray(
        (kw, d, q),
        padded.dtype,
        buffer=padded,
        offset=u * gw * item,
        strides=(item, padded[0, 0].size * item, item),
    )


def _add_offsets(weights: np.ndarray, padded: np.ndarray, grid: np.ndarray, oh: int, ow: int):
    """grid (c, n, Gh, Gw) = the sum over offsets (u, v) of the taps at (u, v) (c, d) @ the
    image shifted by (u, v), from ``padded`` (s, d, n + 1, Gh, Gw: ``pad_shared_borders``,
    s = 1, or ``fill_column_copies``, s = kw and Gw = ow) and ``weights`` (kh, kw / s, c, s * d,
    ``_offset_weights``): one GEMM per offset (s = 1) or per kernel row (s = kw), each adding
    into the grid (``_cblas``), over the flat positions up to the last output (t < oh, s < ow
    of the last image); the rest of the grid is not written."""
    kh, steps, c, depth = weights.shape
    _, n, gh, gw = grid.shape
    q = shared_border_span(n, (gh, gw), oh, ow)
    flat = padded.reshape(depth, -1)
    live = grid.reshape(c, -1)[:, :q]
    with _profile.stage("gemm"):
        for u in range(kh):
            for v in range(steps):
                shift = u * gw + v
                _profile.gemm_into(weights[u, v], flat[:, shift : shift + q], live, shift > 0)


def _offsets_grid(h, w, ph, pw, kh, kw, ow, copies) -> tuple[int, int]:
    """Rows and columns per image of the offset loop's grid: ``shared_border_grid``'s, or,
    with column copies (``copies`` > 1, ``fill_column_copies``), its rows by the output's
    ``ow`` columns (no border columns)."""
    rows, columns = shared_border_grid(h, w, ph, pw, kh, kw)
    return (rows, ow) if copies > 1 else (rows, columns)


def _offsets_plan(x: np.ndarray, weights: np.ndarray, ph: int, pw: int, result: np.ndarray):
    """(copies, grid) of an offset loop over x with ``weights`` (``_offset_weights``) into
    ``result``: the image's column copies (1: none) and ``_offsets_grid``."""
    kh, steps, _, depth = weights.shape
    _, d, h, w = x.shape
    copies = depth // d
    ow = result.shape[3]
    return copies, _offsets_grid(h, w, ph, pw, kh, steps * copies, ow, copies)


def _padded_for_offsets(x, ph, pw, grid, copies, key) -> np.ndarray:
    """x padded for the offset loop on ``grid``: ``pad_shared_borders`` (one copy), or its
    column copies (``fill_column_copies``), as a (copies, d, n + 1, Gh, Gw) scratch buffer."""
    if copies == 1:
        return pad_shared_borders(x, ph, pw, grid, key)
    buffer = column_copies_buffer(x, ph, pw, grid[0], copies, grid[1], key)
    fill_column_copies(buffer, x, ph, pw, slice(None, x.shape[0]))
    return buffer


def _correlate_over_offsets(x: np.ndarray, weights: np.ndarray, ph: int, pw: int, result):
    c = weights.shape[2]
    n = x.shape[0]
    oh, ow = result.shape[2:]
    copies, grid_shape = _offsets_plan(x, weights, ph, pw, result)
    with _profile.stage("layout"):
        padded = _padded_for_offsets(x, ph, pw, grid_shape, copies, "loop.padded")
    grid = scratch("loop.grid", (c, n, *grid_shape), x.dtype)  # outputs on the padded grid
    _add_offsets(weights, padded, grid, oh, ow)
    with _profile.stage("layout"):
        np.copyto(result, grid[:, :, :oh, :ow].transpose(1, 0, 2, 3))


def _correlate_over_offsets_blas(x: np.ndarray, weights: np.ndarray, ph: int, pw: int, result):
    """``_correlate_over_offsets`` for a whole batch at once: the GEMMs on the BLAS's own
    threads, the copies around them as slices of the batch over the pool."""
    c = weights.shape[2]
    n = x.shape[0]
    oh, ow = result.shape[2:]
    copies, grid_shape = _offsets_plan(x, weights, ph, pw, result)
    if copies > 1:
        key = "loop.batch_padded"
        padded = column_copies_buffer(x, ph, pw, grid_shape[0], copies, grid_shape[1], key)
        fill = fill_column_copies
    else:
        padded = shared_border_buffer(x, ph, pw, grid_shape, "loop.batch_padded")
        fill = fill_shared_borders

    def pad(s: slice) -> None:
        with _profile.stage("layout"):
            fill(padded, x, ph, pw, s)

    threads.over_batch(pad, n, padded.size)
    grid = scratch("loop.grid", (c, n, *grid_shape), x.dtype)
    with threads.blas_within_cores():
        _add_offsets(weights, padded, grid, oh, ow)

    def place(s: slice) -> None:
        with _profile.stage("layout"):
            np.copyto(result[s], grid[:, s, :oh, :ow].transpose(1, 0, 2, 3))

    threads.over_batch(place, n, result.size)


def _correlate_by_scatter(x: np.ndarray, weights: np.ndarray, ph: int, pw: int, result):
    """``_correlate_over_offsets`` for few outputs: ONE GEMM, the taps of every offset
    (kh*kw*c, d) @ the padded image (d, positions), gives each offset's products at every flat
    position of the shared-border grid; the output at position p is then the sum over offsets
    (u, v) of their products at p + u*Gw + v. Laid out (kh, kw, c, positions), those terms are
    one strided view (offset (u, v) starts (u*kw + v)*c rows and u*Gw + v columns in), summed
    by one np.sum. A correlation to a few channels (the first layer's input gradient, 16 to 3)
    would run kh*kw GEMMs with a handful of rows each, every one rereading the image and
    rewriting the output: 1.3x (8 outputs) to 1.9x (3) slower than this on one thread."""
    kh, kw, c, d = weights.shape
    n = x.shape[0]
    oh, ow = result.shape[2:]
    grid_shape = shared_border_grid(*x.shape[2:], ph, pw, kh, kw)
    gw = grid_shape[1]
    q = shared_border_span(n, grid_shape, oh, ow)
    reach = (kh - 1) * gw + kw - 1 + q  # the positions the terms of the q outputs come from
    with _profile.stage("layout"):
        padded = pad_shared_borders(x, ph, pw, grid_shape, "loop.padded")
    products = scratch("loop.products", (kh, kw, c, reach), x.dtype)
    with _profile.stage("gemm"):
        flat = padded.reshape(d, -1)[:, :reach]
        _profile.gemm_into(
            weights.reshape(kh * kw * c, d), flat, products.reshape(-1, reach), False
        )
    item = products.itemsize
    terms = np.ndarray(
        (kh, kw, c, q),
        products.dtype,
        buffer=products,
        strides=((kw * c * reach + gw) * item, (c * reach + 1) * item, reach * item, item),
    )
    grid = scratch("loop.grid", (c, n, *grid_shape), x.dtype)
    with _profile.stage("reduction"):
        np.sum(terms, axis=(0, 1), out=grid.reshape(c, -1)[:, :q])
    with _profile.stage("layout"):
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
            _profile.matmul(images[:, start : start + run], laid_taps, out=step)
            result[:, :, t, s] = step


def _grad_kernels_over_offsets(inputs, grad_outputs, padding, kh, kw) -> np.ndarray:
    d = inputs.shape[1]
    c = grad_outputs.shape[1]
    n, _, oh, ow = grad_outputs.shape
    rows, copies = _gradient_stacking(d, c, kh, kw)
    grid_shape = _offsets_grid(*inputs.shape[2:], padding, padding, kh, kw, ow, copies)
    gh, gw = grid_shape
    q = shared_border_span(n, grid_shape, oh, ow)
    with _profile.stage("layout"):
        if rows > 1:
            padded = _whole_kernel_copies(inputs, padding, grid_shape, kh, kw, q)
        else:
            padded = _padded_for_offsets(
                inputs, padding, padding, grid_shape, copies, "loop.padded"
            )
        # The output gradient on the same padded grid, zero where no output exists, so that
        # flat position i of it pairs with flat position i + u*Gw + v of the image.
        gy = embed_channels_first(grad_outputs, gh, gw, "loop.gy_grid").reshape(c, -1)[:, :q]
    result = np.empty((c, d, kh, kw), inputs.dtype)
    if copies > 1:  # one GEMM per kernel row (or kernel): gy (c, q) @ its shifted images
        flat = padded.reshape(rows * copies * d, -1)
        products = scratch("loop.kernel_row", (c, rows * copies * d), inputs.dtype)
        # the kernel is the flipped taps: offset (u, v) is kernel entry (kh-1-u, kw-1-v)
        flipped = result[:, :, ::-1, ::-1]
        for step in range(kh // rows):
            start = step * gw
            with _profile.stage("gemm"):
                _profile.gemm_into(gy, flat[:, start : start + q].T, products, False)
            by_tap = products.reshape(c, rows, kw, d).transpose(0, 3, 1, 2)
            flipped[:, :, step : step + rows] = by_tap
        return result
    products = scratch("loop.kernel_row", (kw, c, d), inputs.dtype)
    for u in range(kh):
        rows = _shifted_rows(padded, u, kw, q)  # (kw, d, q)
        with _profile.stage("gemm"):
            _profile.matmul(gy, rows.transpose(0, 2, 1), out=products)
        result[:, :, kh - 1 - u, ::-1] = products.transpose(1, 2, 0)  # (c, d, kw)
    return result


def _whole_kernel_copies(inputs, padding, grid, kh, kw, q) -> np.ndarray:
    """kh*kw copies of the padded image, (kh*kw, d, n + 1, Gh, ow): copy u*kw + v is column
    copy v (``fill_column_copies``) shifted by u rows, over the q positions a GEMM reads.

    A buffer of its own key per kw: the shifted copies overwrite their border rows, so only
    the first kw copies, the ones ``fill_column_copies`` writes and relies on, keep the zero
    border ``bordered`` promises for the buffer's shape. Under another key (a column-copy
    buffer of the same shape) or another kw (4x2 and 2x4 kernels), a copy with rows where its
    border should be would pass for a zero-bordered one."""
    d = inputs.shape[1]
    key = f"loop.kernel_copies.{kw}"
    buffer = column_copies_buffer(inputs, padding, padding, grid[0], kh * kw, grid[1], key)
    fill_column_copies(buffer[:kw], inputs, padding, padding, slice(None, inputs.shape[0]))
    flat = buffer.reshape(kh, kw, d, -1)
    for u in range(1, kh):
        flat[u, :, :, :q] = flat[0, :, :, u * grid[1] : u * grid[1] + q]
    return buffer


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
                _profile.matmul(gy[t, s], images[:, start : start + run], out=live)
            else:
                _profile.matmul(gy[t, s], images[:, start : start + run], out=step)
                live += step
    grad_taps = laid[:, :, :kw, :].transpose(0, 3, 1, 2)  # (c, d, kh, kw)
    return np.ascontiguousarray(grad_taps[:, :, ::-1, ::-1])
