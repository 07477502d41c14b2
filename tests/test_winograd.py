"""What is particular to the ``winograd`` backend (kernels/backend_winograd.py).

The shared grid of tests/test_kernels.py holds it to the float64 reference on the common cases;
here: the transform matrices and the adds that apply them, partial tiles at every padding
(including p > k - 1, where the input gradient's padding is negative), unusual memory layouts
(the shared layout case has a 3x2 kernel, which this backend declines), fresh results, the
routes, the refusal of other kernel sizes, the one stacked GEMM per chunk, exactness on small
integers and the float64 path.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import _profile, backend_im2col, threads
from kernels import backend_winograd as winograd
from nnbench import verify
from nnbench.machine import pinned_threads
from nnbench.verify import ConvCase
from reference import convolve_with_gradients

PASSES = ("forward", "grad_inputs", "grad_kernels")
CALLS = {
    "forward": lambda x, k, gy, p: kernels.convolve(x, k, p, backend="winograd"),
    "grad_inputs": lambda x, k, gy, p: kernels.grad_inputs(gy, k, p, backend="winograd"),
    "grad_kernels": lambda x, k, gy, p: kernels.grad_kernels(x, gy, p, backend="winograd"),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny arrays: thread start-up would dominate (see tests/test_kernels.py)."""
    with pinned_threads(1):
        yield


def case_of(n, d, h, w, c, p, dtype="float64") -> ConvCase:
    """A 3x3 convolution case of the verification core."""
    return ConvCase((n, d, h, w), (c, d, 3, 3), p, dtype)


def operands(seed, n, d, h, w, c, p, dtype="float64", integer=False):
    """(inputs, kernels, grad_outputs) of ``case_of(...)``, drawn by the verification core."""
    drawn = verify.operands(case_of(n, d, h, w, c, p, dtype), integer=integer, seed=seed)
    return drawn.x, drawn.kernels, drawn.grad_outputs


# --- the transforms --------------------------------------------------------------------------


def test_adds_and_subtracts_are_the_documented_input_transform():
    """``_input_1d`` applied to the unit vectors gives the columns of ``B_T``."""
    unit = list(np.eye(4))
    out = np.empty((4, 4))
    winograd._input_1d(unit, out)
    np.testing.assert_array_equal(out, winograd.B_T)


def test_matrices_compute_a_correlation():
    """F(2, 3) in 1-D: A^T [(G g) * (B^T d)] is the correlation of d (4 values) with g (3)."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(4), rng.standard_normal(3)
    expected = np.array([d[0:3] @ g, d[1:4] @ g])
    actual = winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-14)


def test_kernel_transform_is_g_g_gt_stacked():
    rng = np.random.default_rng(1)
    taps = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    u = winograd.transform_taps(taps)
    assert u.shape == (16, 3, 5) and u.dtype == np.float32
    i, j = 2, 1
    expected = winograd.G @ taps[4, 2].astype(np.float64) @ winograd.G.T
    np.testing.assert_allclose(u[4 * i + j, 2, 4], expected[i, j], rtol=1e-7)


# --- partial tiles and every padding ---------------------------------------------------------

#: (h, w, p): odd and even sizes, one-row and one-column images, p = 0 .. 4 (p > 2 gives the
#: input gradient a negative padding, which crops).
SIZES = [
    (1, 1, 1),
    (1, 4, 1),
    (4, 1, 2),
    (3, 3, 0),
    (5, 7, 0),
    (6, 7, 1),
    (7, 6, 2),
    (2, 9, 3),
    (6, 5, 4),
    (9, 8, 4),
]


@pytest.mark.parametrize("h, w, p", SIZES, ids=[f"{h}x{w}p{p}" for h, w, p in SIZES])
def test_partial_tiles_and_paddings(h, w, p):
    case = case_of(2, 3, h, w, 4, p)
    x, k, gy = operands(h * 100 + w * 10 + p, 2, 3, h, w, 4, p)
    expected = convolve_with_gradients(x, k, gy, p)
    for pass_ in PASSES:
        verify.assert_close(f"{pass_} {case.id}", CALLS[pass_](x, k, gy, p), expected[pass_],
                            dtype=case.dtype, backend="winograd",
                            reduction=case.reduction_length(pass_))  # fmt: skip


@pytest.mark.parametrize("h, w, p", [(5, 7, 1), (8, 8, 1), (6, 7, 4)])
def test_exact_on_small_integers(h, w, p):
    """The transforms hold only 0, +-1 and +-1/2: every intermediate is a multiple of 1/4, so
    small integers give the exact result in float32 (EXACT stays False: not promised)."""
    x, k, gy = operands(h + w + p, 2, 16, h, w, 8, p, dtype="float32", integer=True)
    expected = convolve_with_gradients(x, k, gy, p)
    for pass_ in PASSES:
        actual = CALLS[pass_](x, k, gy, p)
        assert np.array_equal(actual, expected[pass_]), f"{pass_} is not exact"
    assert winograd.EXACT is False


def test_float64_is_computed_in_float64():
    """The float64 error is many orders below the float32 one (no float32 step in between)."""
    x, k, gy = operands(3, 2, 8, 9, 10, 6, 1)
    expected = convolve_with_gradients(x, k, gy, 1)
    errors = {}
    for dtype in ("float32", "float64"):
        args = tuple(a.astype(dtype) for a in (x, k, gy))
        for pass_ in ("forward", "grad_inputs"):
            actual = CALLS[pass_](*args, 1)
            assert actual.dtype == np.dtype(dtype)
            errors[dtype, pass_] = float(np.abs(actual - expected[pass_]).max())
    for pass_ in ("forward", "grad_inputs"):
        assert errors["float32", pass_] > 0
        assert errors["float64", pass_] < 1e-6 * errors["float32", pass_], errors


# --- memory layouts and fresh results --------------------------------------------------------

LAYOUTS = {
    "read-only": lambda a: _read_only(a),
    "negative-strides": lambda a: np.ascontiguousarray(a[..., ::-1, ::-1])[..., ::-1, ::-1],
    "strided": lambda a: np.repeat(np.repeat(a, 2, axis=2), 2, axis=3)[:, :, ::2, ::2],
    "channels-last": lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
    "fortran": np.asfortranarray,
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape),
}


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_layouts(layout):
    plain = operands(4, 3, 2, 7, 9, 3, 1, dtype="float32", integer=True)
    args = tuple(LAYOUTS[layout](a) for a in plain)
    values = tuple(np.array(a) for a in args)
    expected = convolve_with_gradients(*values, 1)
    for pass_ in PASSES:
        actual = CALLS[pass_](*args, 1)
        assert np.array_equal(actual, expected[pass_]), f"{pass_} with {layout} arguments"
    for name, arg, before in zip(("inputs", "kernels", "grad_outputs"), args, values):
        assert np.array_equal(arg, before), f"{name} was modified"


def test_results_are_fresh_arrays():
    """A result never aliases a scratch buffer that the next call overwrites."""
    x, k, gy = operands(5, 2, 3, 8, 8, 4, 1, dtype="float32")
    first = {pass_: CALLS[pass_](x, k, gy, 1) for pass_ in PASSES}
    kept = {pass_: value.copy() for pass_, value in first.items()}
    x2, k2, gy2 = operands(55, 2, 3, 8, 8, 4, 1, dtype="float32")
    second = {pass_: CALLS[pass_](x2, k2, gy2, 1) for pass_ in PASSES}
    for pass_ in PASSES:
        assert np.array_equal(first[pass_], kept[pass_]), f"{pass_} changed by a later call"
        assert not np.shares_memory(first[pass_], second[pass_])
        assert first[pass_].flags.c_contiguous and first[pass_].flags.writeable


# --- routes, refusals, structure --------------------------------------------------------------


def test_routes_name_every_pass_and_the_weight_gradient_goes_through_im2col():
    assert set(winograd.ROUTES) == set(PASSES)
    assert "winograd" in winograd.ROUTES["forward"]
    assert "winograd" in winograd.ROUTES["grad_inputs"]
    assert "im2col" in winograd.ROUTES["grad_kernels"]
    x, _, gy = operands(6, 2, 3, 9, 8, 4, 1, dtype="float32")
    ours = kernels.grad_kernels(x, gy, 1, backend="winograd")
    assert np.array_equal(ours, backend_im2col.grad_kernels(x, gy, 1))


@pytest.mark.parametrize("kh, kw", [(5, 5), (1, 1), (3, 5), (2, 3)])
def test_other_kernel_sizes_are_declined_with_the_reason(kh, kw):
    reason = winograd.supports((2, 3, 8, 8), (4, 3, kh, kw), 1, np.dtype(np.float32))
    assert reason == f"winograd F(2x2,3x3) needs 3x3 kernels, got {kh}x{kw}"
    x = np.zeros((2, 3, 8, 8), np.float32)
    k = np.zeros((4, 3, kh, kw), np.float32)
    with pytest.raises(ValueError, match=r"backend 'winograd' cannot compute this case: winograd"):
        kernels.convolve(x, k, 1, backend="winograd")


def test_3x3_is_supported_in_both_dtypes():
    for dtype in (np.float32, np.float64):
        assert winograd.supports((2, 3, 8, 8), (4, 3, 3, 3), 4, np.dtype(dtype)) is None


def test_one_stacked_gemm_per_chunk(monkeypatch):
    """Every chunk runs its 16 products as one matmul on (16, tiles, d) @ (16, d, c)."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)  # one image per chunk
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1)
    x, k, _ = operands(7, 3, 5, 7, 6, 4, 1, dtype="float32")
    with _profile.profiled() as profile:
        kernels.convolve(x, k, 1, backend="winograd")
    assert len(profile.gemms) == 3
    for gemm in profile.gemms:
        assert gemm.a[0] == (16, 4 * 3, 5) and gemm.b[0] == (16, 5, 4)
    assert {"layout", "transform", "gemm"} <= set(profile.seconds)
