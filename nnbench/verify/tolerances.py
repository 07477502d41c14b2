"""The one tolerance table: how far from the float64 reference a result may be.

An element passes when

    |actual - expected| <= atol * sqrt(K) * scale + rtol * |expected|

where K is the length of the reduction that produced the element (d*kh*kw for a convolution's
forward pass, c*kh*kw for its input gradient, n*oh*ow for its weight gradient, 1 for
elementwise operations) and ``scale`` is max(1, max|expected|), so atol is relative to the size
of the numbers involved. The rounding error of a K-term sum in some blocked order grows like sqrt(K)
ulps of its largest partial sums (it is a sum of K small, nearly independent errors); a real mistake
(a wrong flip, a dropped channel, a result 0.1% off) does not shrink with K and fails at every K
used here. ``scale`` has a floor of 1, so below 1 the bound is absolute: the checks' operands
(normal values, He-scaled kernels) give outputs of order 1 and above. Keyed by (backend, dtype);
``backend=None`` is the engine's own numpy code (layers, losses). Each entry says why it is what it
is.

Exact backends (``EXACT = True``) are held to equality on small-integer inputs instead (every
partial sum is then an integer below 2**24); ``compare(..., exact=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
EPS64 = float(np.finfo(np.float64).eps)  # 2.22e-16


@dataclass(frozen=True)
class Tol:
    """rtol and atol, always together (see the module docstring for how they combine)."""

    rtol: float
    atol: float


#: Direct backends: blocked sums of K products. On the unit-test grid and the recipe layers
#: (normal operands, one and two threads) the worst error was 0.5 eps * sqrt(K) * scale in both
#: dtypes; 4 eps leaves 8x headroom, rtol covers Conv2D's bias add. A result 0.1% off fails
#: even the largest reduction benchmarked (K = 131072: bound 1.7e-4 of scale in float32).
_DIRECT32 = Tol(rtol=4 * EPS32, atol=4 * EPS32)
_DIRECT64 = Tol(rtol=4 * EPS64, atol=4 * EPS64)

#: What a backend without an entry of its own is held to.
DIRECT = {"float32": _DIRECT32, "float64": _DIRECT64}

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
    # Convolution backends that sum the products directly (see _DIRECT32 above). torch in
    # float64 is the reference's own kernel (error 0 there); it shares the entry so that all
    # direct backends read alike.
    ("loop", "float32"): _DIRECT32,
    ("loop", "float64"): _DIRECT64,
    ("im2col", "float32"): _DIRECT32,
    ("im2col", "float64"): _DIRECT64,
    ("torch", "float32"): _DIRECT32,
    ("torch", "float64"): _DIRECT64,
    # fft (kernels/backend_fft.py): the transforms round every spectrum value, and the inverse
    # spreads that error over the whole image, so the error is of order eps*log2(L_h*L_w)*
    # max|y| on every element, whatever K, and is not relative to the element itself. Worst
    # measured: 0.9 eps * sqrt(K) * scale, at K = 3 (a 1x1 kernel over 3 channels), in both
    # dtypes. 16 eps covers it with more than 10x headroom; integer inputs get no exactness
    # from the FFT and use this entry too.
    ("fft", "float32"): Tol(rtol=4 * EPS32, atol=16 * EPS32),
    ("fft", "float64"): Tol(rtol=4 * EPS64, atol=16 * EPS64),
    # winograd (kernels/backend_winograd.py, F(2x2,3x3)): every product carries the rounding of
    # the input and kernel transforms and the output transform adds several of them, so the
    # error is a small multiple of a direct sum's, still local to each 2x2 tile. Worst measured
    # on the 3x3 cases of the check grid (6 seeds) and the recipe layers, normal, uniform,
    # lognormal, t(2) and offset operands: 0.96 eps * sqrt(K) * scale, about twice im2col's.
    # The direct backends' 4 eps leaves 4x headroom.
    ("winograd", "float32"): _DIRECT32,
    ("winograd", "float64"): _DIRECT64,
}


def tolerance(dtype, backend: str | None = None) -> Tol:
    """The (rtol, atol) pair for ``backend`` in ``dtype``. A backend without an entry of its own
    is held to the direct backends' bound (a new backend must earn a looser one here);
    ``backend=None`` is the engine's entry."""
    dtype = np.dtype(dtype).name
    if (backend, dtype) in TOLERANCES:
        return TOLERANCES[(backend, dtype)]
    return TOLERANCES[(None, dtype)] if backend is None else DIRECT[dtype]
