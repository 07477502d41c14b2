"""``winograd`` backend: 3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). Every pass served
here is a correlation of a zero-padded image with 3x3 taps (``kernels._layout``):

    forward       y  = correlate(x, flip(k), p, p)
    grad_inputs   gx = correlate(gy, k^T, 2 - p, 2 - p)         (section 5.7; a pad < 0 crops)

F(2x2, 3x3) computes each 2x2 tile of such a correlation from the 4x4 tile d of the padded
image that covers it (tiles overlap by two rows and two columns) and the 3x3 taps g as

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise over the 4x4 = 16 values)

        B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
              [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
              [0 -1  1  0]         [1/2 -1/2  1/2]
              [0  1  0 -1]         [ 0    0    1 ]

With many channels the elementwise product becomes a sum over the input channels, so for
each of the 16 transform coordinates xi there is one matrix product

    M[xi] (tiles, c) = V[xi] (tiles, d) @ U[xi] (d, c),     V = B^T d B,  U = G g G^T

run as ONE numpy matmul on the stacked (16, ...) arrays: 16 multiplications per 2x2 outputs
where a direct method needs 36, 2.25x fewer GEMM flops.

The batch is shared out over the thread budget (``kernels.threads.over_batch``, like
``backend_im2col``); each thread sets up its buffers and every view of them once
(``_Workspace``) and walks its run of images a chunk (about ``CHUNK_BYTES`` of buffers) at a
time. For each chunk:

1. layout: copy the chunk channels-last into a reused buffer (n, Hp, 2, tw + 1, d) whose zero
   border ``_layout.bordered`` writes once: padded column 2j + b sits at [:, :, b, j], so a
   tile column is a slice of whole (tw, d) runs. Hp and 2 (tw + 1) cover the last, partial
   tile with zeros (the output is cropped), and a negative pad crops the images instead;
2. transform, input: B^T d B as adds and subtracts of whole strided views, four numpy calls
   over the tile rows (row k of every tile is one stride-2 slice), four over the tile columns,
   writing V (4, 4, n, th, tw, d);
3. gemm: V (16, n*th*tw, d) @ U (16, d, c) -> M (16, n*th*tw, c), one call;
4. transform, output: A^T M A for every tile at once as one matmul with the 4 x 16 matrix
   (A^T kron A^T), memory-bound and not recorded as a GEMM of the convolution;
5. layout: four copies, one per position (a, e) in the 2x2 tile, into result[:, :, a::2, e::2]
   (fewer rows or columns there when the output is not a whole number of tiles).

Sixteen numpy calls per chunk, none a Python loop over images, tiles or channels; the
buffers are one ``_layout.bordered`` and one ``_layout.scratch`` buffer per thread (keys
"winograd.padded", "winograd.work"). The kernel transform U = G g G^T is computed once per
call, in float64, and rounded once.

Routes (``ROUTES``): the forward and the input gradient go through Winograd. The weight
gradient is not a 3x3 correlation (its "image" is the input, its "kernel" the output-sized
grad_outputs and its result the 3x3 taps), so F(2x2, 3x3) does not apply; it is computed by
``backend_im2col.grad_kernels``. ``supports`` declines every kernel that is not 3x3.

Precision: the products are no longer those of a direct sum. Each carries the rounding of
B^T d B and of G g G^T, and A^T M A adds terms that partly cancel, so the error is larger than
that of a direct sum of the same K = 9 d products, relative to the size of the inputs; unlike
the FFT's it stays within a tile. The matrices hold only 0, +-1 and +-1/2, so on small integers
every intermediate is a multiple of 1/4 and exact: the tests' integer inputs come out exact.
``EXACT`` is still False, as that promise is not kept for every small-integer input: the quarter
steps and the larger transformed values use up range that a direct sum keeps. The tolerance
table (``nnbench.verify.tolerances``) gives the measured worst case against a float64
reference. A NaN or inf input is not kept to the outputs a direct sum would give it: the
transforms carry it to every output of the tiles whose input tiles hold it, and turn an inf
into NaN (inf - inf in B^T d B, 0 * inf in A^T M A) where a direct sum gives inf.

F(4x4, 3x3) (36 products per 16 outputs, 4x fewer GEMM flops than direct) is not offered. Its
transforms hold 1/6, 1/12, 1/24 and coefficients up to 8, whose rounding is amplified
several-fold in float32, and by count its input transform needs two to three times the numpy
element operations per input value. Here the transforms and copies already take as long as
the GEMM, so its smaller GEMM is paid for with more memory passes. Measured on the 2-core AMD
EPYC (2026-11-30), forward, normal operands: a prototype (6x6 tiles gathered into one buffer,
each transform one matmul with B^T kron B^T and A^T kron A^T, the batch shared over the
threads as here) ran conv2, conv3 and c64 at 0.79-0.82, 0.69-0.73 and 0.75x im2col's speed
at 2 threads, where this F(2x2) ran at 0.79-0.80, 0.75-0.77 and 0.88-0.89x in the same runs;
on one thread 0.83-0.86, 0.91 and 1.11-1.33x against 0.85, 0.95-0.98 and 1.10-1.19x. Its
float32 error was 4.1e-6 to 6.8e-6 of max|y|, against 2.0e-7 to 4.2e-7 for F(2x2) and
5.2e-7 to 6.4e-7 for im2col.

What bounds it: memory traffic more than flops. The transformed tiles V are 4x the input and
the products M 4x the output (per channel), so steps 1, 2, 4 and 5 stream several times the
data an im2col call moves, while step 3's GEMMs are short in the reduction (K = d) and run
below a BLAS's peak for few channels. Winograd therefore gains where d and c are large and
loses where they are small. ``kernels._profile`` splits a call into "layout", "transform" and
"gemm".
"""

from __future__ import annotations

import itertools

import numpy as np

from kernels import _profile, backend_im2col, threads
from kernels._layout import (
    _interior,
    bordered,
    grad_inputs_padding,
    scratch,
    taps_forward,
    taps_grad_inputs,
)

#: F(2x2, 3x3) is exact on the tests' small integers, but that is not promised (see above).
EXACT = False

#: The algorithm behind each pass (a report shows the passes computed by another route).
ROUTES = {
    "forward": "winograd F(2x2,3x3)",
    "grad_inputs": "winograd F(2x2,3x3)",
    "grad_kernels": "im2col (Winograd does not apply)",
}

#: Bytes of scratch (padded chunk, transformed tiles, products, outputs) per chunk of images:
#: large enough that a chunk's sixteen numpy calls are a small part of its time, small enough
#: that its buffers stay in a core's caches.
CHUNK_BYTES = 2 * 2**20

#: Output tile m and input tile alpha = m + 2 of F(m x m, 3x3).
TILE = 2
ALPHA = TILE + 2

#: G of the kernel transform U = G g G^T.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: B^T of the input transform V = B^T d B (applied as the adds and subtracts of ``_input_1d``).
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
#: A^T of the output transform Y = A^T M A.
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
#: Y = A^T M A of every tile at once: (A^T kron A^T) (TILE^2, ALPHA^2) @ M (ALPHA^2, ...).
_OUTPUT_TRANSFORM = {np.dtype(t): np.kron(A_T, A_T).astype(t) for t in (np.float32, np.float64)}


def supports(input_shape, kernel_shape, padding, dtype) -> str | None:
    kh, kw = kernel_shape[2], kernel_shape[3]
    if (kh, kw) != (3, 3):
        return f"winograd F({TILE}x{TILE},3x3) needs 3x3 kernels, got {kh}x{kw}"
    return None


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    return _correlate(inputs, taps_forward(kernels), padding, padding)


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    ph, pw = grad_inputs_padding(kernels, padding)
    return _correlate(grad_outputs, taps_grad_inputs(kernels), ph, pw)


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    # Not a 3x3 correlation, so not Winograd's: see ROUTES.
    return backend_im2col.grad_kernels(inputs, grad_outputs, padding)


def transform_taps(taps: np.ndarray) -> np.ndarray:
    """U = G g G^T of taps (c, d, 3, 3) as the stacked right operand (ALPHA^2, d, c).

    Computed in float64 and rounded once to the taps' dtype.
    """
    c, d = taps.shape[:2]
    u = np.einsum("ru,cduv,sv->rsdc", G, taps.astype(np.float64), G, optimize=True)
    return u.reshape(ALPHA * ALPHA, d, c).astype(taps.dtype)


def _phase_columns(start: int, stop: int, phase: int) -> tuple[int, int]:
    """The j whose padded column TILE*j + phase lies in [start, stop), as (lo, hi)."""
    return (start - phase + TILE - 1) // TILE, (stop - phase + TILE - 1) // TILE


def _correlate(x: np.ndarray, taps: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """correlate(x (n, d, h, w), taps (c, d, 3, 3), pads ph, pw) -> fresh (n, c, oh, ow).

    Everything that does not depend on the chunk (views of x and of the result, where the
    interior of the padded buffer lies) is worked out here, once per call.
    """
    n, d, h, w = x.shape
    c = taps.shape[0]
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = -(-oh // TILE), -(-ow // TILE)
    weights = transform_taps(taps)
    result = np.empty((n, c, oh, ow), x.dtype)

    # The padded chunk (n, Hp, TILE, tw + 1, d) is one zero-bordered buffer (n, Hp, Wp', d)
    # with the column phases side by side; ``bordered`` keeps the border outside the hull of
    # their interiors, the gap between the two interiors is zeroed by each ``_Workspace``.
    src, rows, cols = _interior(x, ph, pw)
    wj = tw + 1
    spans = []  # (phase b, columns j in the buffer, the matching view of x, channels-last)
    for b in range(TILE):
        lo, hi = _phase_columns(cols.start, cols.stop, b)
        if hi > lo:
            view = src[:, :, :, TILE * lo + b - cols.start :: TILE].transpose(0, 2, 3, 1)
            spans.append((b, slice(lo, hi), view))
    merged = [(b * wj + j.start, b * wj + j.stop) for b, j, _ in spans]
    hull = slice(merged[0][0], merged[-1][1])
    gap = slice(merged[0][1], merged[-1][0]) if merged[0][1] < merged[-1][0] else None
    layout = (TILE * th + 2, TILE * wj, rows, hull, gap, spans)

    # Where output (a, e) of every tile goes: result[:, :, a::TILE, e::TILE], and how much of
    # the tile grid that view holds (less than (th, tw) when the last tile is partial).
    outputs = []
    for a in range(TILE):
        for e in range(TILE):
            dest = result[:, :, a::TILE, e::TILE]
            outputs.append((a, e, dest, dest.shape[2], dest.shape[3]))

    per_image = _buffer_sizes(1, d, c, th, tw, layout[0])
    chunk = threads.rows_per_chunk(sum(per_image), x.dtype, CHUNK_BYTES)

    def part(share: slice) -> None:  # one thread's run of images, a chunk at a time
        space = None
        for lo in range(share.start, share.stop, chunk):
            s = slice(lo, min(lo + chunk, share.stop))
            if space is None or space.images != s.stop - s.start:
                space = _Workspace(s.stop - s.start, weights, layout, outputs, (th, tw))
            space.run(s)

    threads.over_batch(part, n, n * sum(per_image[2:4]))  # work: V and M
    return result


def _buffer_sizes(n, d, c, th, tw, hp):
    """Elements of the padded chunk, row transform, V, M and outputs for n images."""
    tiles = n * th * tw
    return (
        n * hp * TILE * (tw + 1) * d,
        ALPHA * n * th * TILE * (tw + 1) * d,
        ALPHA * ALPHA * tiles * d,
        ALPHA * ALPHA * tiles * c,
        TILE * TILE * tiles * c,
    )


class _Workspace:
    """One thread's buffers for chunks of ``images`` images, with every view a chunk uses.

    Built once per run of equal chunks (a thread's share of the batch): the buffers come from
    one ``bordered`` and one ``scratch`` call and the views over them are the same for every
    chunk, so that a chunk costs its sixteen numpy calls and little Python besides (the calls
    that set them up took as long as a small chunk's arithmetic).
    """

    def __init__(self, images, weights, layout, outputs, tiles) -> None:
        hp, wp, rows, hull, gap, spans = layout
        th, tw = tiles
        d, c = weights.shape[1:]
        dtype = weights.dtype
        self.images = images
        self.weights = weights
        self.transform = _OUTPUT_TRANSFORM[dtype]
        merged = bordered("winograd.padded", (images, hp, wp, d), dtype, rows, hull, h_axis=1)
        if gap is not None:  # inside the hull but no phase's interior: never written below
            merged[:, rows, gap] = 0
        padded = merged.reshape(images, hp, TILE, tw + 1, d)
        self.spans = [(padded[:, rows, b, columns], view) for b, columns, view in spans]
        _, *sizes = _buffer_sizes(images, d, c, th, tw, hp)
        work = scratch("winograd.work", (sum(sizes),), dtype)
        ends = list(itertools.accumulate(sizes))
        self.by_rows = work[: ends[0]].reshape(ALPHA, images, th, TILE, tw + 1, d)
        tiled = work[ends[0] : ends[1]].reshape(ALPHA, ALPHA, images, th, tw, d)
        products = work[ends[1] : ends[2]].reshape(ALPHA * ALPHA, images * th * tw, c)
        grid = work[ends[2] :].reshape(TILE, TILE, images, th, tw, c)  # [a, e]: tile output
        # Rows: row k of every tile is padded row TILE*i + k.
        self.row_taps = [padded[:, k : k + TILE * th : TILE] for k in range(ALPHA)]
        # Columns: column k of tile j is padded column TILE*j + k, at [k % TILE, j + k // TILE].
        self.column_taps = [
            self.by_rows[:, :, :, k % TILE, k // TILE : k // TILE + tw] for k in range(ALPHA)
        ]
        self.tiled_by_column = tiled.transpose(1, 0, 2, 3, 4, 5)  # [s]: V[:, s]
        self.tiled = tiled.reshape(ALPHA * ALPHA, -1, d)
        self.products = products
        self.flat_products = products.reshape(ALPHA * ALPHA, -1)
        self.flat_grid = grid.reshape(TILE * TILE, -1)
        self.placements = [
            (dest, grid[a, e, :, :height, :width].transpose(0, 3, 1, 2))
            for a, e, dest, height, width in outputs
        ]

    def run(self, s: slice) -> None:
        """Rows s of the result (``images`` of them) from the same rows of the input."""
        with _profile.stage("layout"):
            for dest, view in self.spans:
                np.copyto(dest, view[s])
        with _profile.stage("transform"):
            _input_1d(self.row_taps, self.by_rows)
            _input_1d(self.column_taps, self.tiled_by_column)
        with _profile.stage("gemm"):
            _profile.matmul(self.tiled, self.weights, out=self.products)
        with _profile.stage("transform"):  # memory-bound: not one of the convolution's GEMMs
            np.matmul(self.transform, self.flat_products, out=self.flat_grid)
        with _profile.stage("layout"):
            for dest, source in self.placements:
                np.copyto(dest[s], source)


def _input_1d(t: list[np.ndarray], out: np.ndarray) -> None:
    """out[r] = sum_k B^T[r, k] t[k]: the 1-D input transform, one numpy call per output."""
    np.subtract(t[0], t[2], out=out[0])
    np.add(t[1], t[2], out=out[1])
    np.subtract(t[2], t[1], out=out[2])
    np.subtract(t[1], t[3], out=out[3])
