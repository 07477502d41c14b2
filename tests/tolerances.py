"""The one tolerance table of the test suite, and the one compare helper.

Every comparison against the torch reference (computed in float64 from the same inputs) goes
through ``assert_close``, which names the tensor that failed. Tolerances are keyed by
(backend, dtype); ``backend=None`` is the engine's own numpy code (layers, losses).

Convention: an element passes when

    |actual - expected| <= atol * K * scale + rtol * |expected|

where K is the length of the reduction that produced the element (d*kh*kw for a convolution,
1 for elementwise ops) and ``scale`` is max(1, max|expected|), so atol is relative to the size
of the numbers involved. Each entry says why it is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float


EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
EPS64 = float(np.finfo(np.float64).eps)  # 2.22e-16

TOLERANCES: dict[tuple[str | None, str], Tol] = {
    # Engine layers in float64: a handful of roundings per element, a few ulps each; 1e3 ulps
    # of headroom for BatchNorm's mean/variance reductions.
    (None, "float64"): Tol(rtol=1e3 * EPS64, atol=1e3 * EPS64),
    # Engine layers in float32: the same operations rounded at 2^-24; BatchNorm's variance and
    # softmax's exp amplify input rounding by a small constant, hence 64 ulps.
    (None, "float32"): Tol(rtol=64 * EPS32, atol=64 * EPS32),
    # Central differences in float64 with step h = 1e-6 (tests/test_gradcheck.py): truncation
    # error ~h^2 = 1e-12 and cancellation error ~eps64 * |f| / h ~ 1e-9 for |f| ~ 10; a wrong
    # backward is off by O(1), so 1e-6 separates the two by three orders on each side.
    ("finite-difference", "float64"): Tol(rtol=1e-6, atol=1e-6),
    # Convolution backends (tests/test_kernels.py, and Conv2D on each backend in test_layers).
    # A direct backend sums K = d*kh*kw products per output (n*oh*ow for grad_kernels) in
    # some blocked order; the rounding error of such a sum is at most about K*eps*sum|terms|
    # and in practice a fraction of eps*K*max|y|. Measured on the test_kernels grid (6 seeds,
    # normal inputs): at most 0.25 (float32) and 0.46 (float64) eps*K*scale. 4 eps leaves 8x
    # headroom and room for Conv2D's bias add (rtol), while an indexing or flipping bug is
    # off by O(scale) and fails by orders of magnitude. torch in float64 is the reference's
    # own kernel (error 0 there); it shares the entry so that all direct backends read alike.
    ("loop", "float32"): Tol(rtol=4 * EPS32, atol=4 * EPS32),
    ("loop", "float64"): Tol(rtol=4 * EPS64, atol=4 * EPS64),
    ("im2col", "float32"): Tol(rtol=4 * EPS32, atol=4 * EPS32),
    ("im2col", "float64"): Tol(rtol=4 * EPS64, atol=4 * EPS64),
    ("torch", "float32"): Tol(rtol=4 * EPS32, atol=4 * EPS32),
    ("torch", "float64"): Tol(rtol=4 * EPS64, atol=4 * EPS64),
    # fft (kernels/backend_fft.py): the transforms round every spectrum value, and the inverse
    # spreads that error over the whole image, so the error is of order eps*log2(L_h*L_w)*
    # max|y| on every element, whatever K, and is not relative to the element itself. Worst
    # measured: 5 eps*max|y| with K = 1 (1x1 kernel, one channel, 128x128 and 64 28x28 images,
    # heavy-tailed values), at most 0.9 eps*K*scale on the grid, in both dtypes. 16 eps covers
    # K = 1 with 3x headroom; integer inputs get no exactness from the FFT and use this entry.
    ("fft", "float32"): Tol(rtol=4 * EPS32, atol=16 * EPS32),
    ("fft", "float64"): Tol(rtol=4 * EPS64, atol=16 * EPS64),
    # winograd (kernels/backend_winograd.py, F(2x2,3x3)): each product carries the rounding of
    # the input and kernel transforms and the output transform adds nine of them, so the error
    # is a small multiple of a direct sum's, still local to each 2x2 tile. Worst measured
    # against torch float64 on the 3x3 cases of the test grid (6 seeds) and the CIFAR-10 recipe
    # layers [128,3,32,32]->16, [128,16,16,16]->32, [128,32,8,8]->64 (normal operands):
    # 0.20 (float32) and 0.22 (float64) eps*K*scale, at K = 9 (one input channel); at most
    # 0.32 with uniform, lognormal, t(2) and offset (100 + normal) operands. 4 eps leaves more
    # than 12x headroom. The weight gradient is im2col's (a direct sum). Small-integer inputs
    # come out exact (the transforms only hold 0, +-1, +-1/2), but EXACT is not declared.
    ("winograd", "float32"): Tol(rtol=4 * EPS32, atol=4 * EPS32),
    ("winograd", "float64"): Tol(rtol=4 * EPS64, atol=4 * EPS64),
}


def tolerance(dtype, backend: str | None = None) -> Tol:
    """The (rtol, atol) pair for ``backend`` in ``dtype``; a missing entry is a test bug."""
    key = (backend, np.dtype(dtype).name)
    if key not in TOLERANCES:
        key = (None, np.dtype(dtype).name)
    return TOLERANCES[key]


def assert_close(
    name: str,
    actual,
    expected,
    *,
    dtype=None,
    backend: str | None = None,
    reduction: int = 1,
    tol: Tol | None = None,
) -> None:
    """Assert ``actual`` matches ``expected`` elementwise; the message names the tensor ``name``."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{name}: shape {actual.shape} != expected {expected.shape}"
    )
    if dtype is not None:
        assert actual.dtype == np.dtype(dtype), (
            f"{name}: dtype {actual.dtype} != expected {np.dtype(dtype)}"
        )
    tol = tol or tolerance(actual.dtype if dtype is None else dtype, backend)
    exp64 = expected.astype(np.float64)
    err = np.abs(actual.astype(np.float64) - exp64)
    scale = max(1.0, float(np.max(np.abs(exp64), initial=0.0)))
    bound = tol.atol * reduction * scale + tol.rtol * np.abs(exp64)
    bad = ~(err <= bound)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(np.where(bad, err - bound, -np.inf))), err.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {err.size} elements differ beyond rtol={tol.rtol:.3g}, "
            f"atol={tol.atol:.3g}*K={reduction}*scale={scale:.3g}; worst at {idx}: "
            f"actual={actual[idx]!r} expected={expected[idx]!r} (max abs err {err.max():.3g})"
        )
