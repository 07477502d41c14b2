"""Every convolution backend against a torch float64 autograd reference.

The grid is every backend in ``kernels.available()`` x ``nnbench.verify.CHECK_CASES`` x
{float32, float64} x {forward, grad_inputs, grad_kernels}; a new ``kernels/backend_*.py`` joins
it with no edit here. A backend whose ``supports`` declines a case is skipped with its reason.
Operands, reference, ids and tolerances come from the verification core (``nnbench.verify``),
the same one the benchmarks and the report use.

Two kinds of inputs:

* small integers in -4..4: every partial sum is an integer below 2**24, so any summation order
  gives the exact result in float32 as in float64, and backends that declare ``EXACT = True``
  are held to equality with the reference. The others get their tolerance there;
* standard normal values: each backend within its (backend, dtype) entry of the tolerance
  table, scaled by the reduction length K of the output element.

Two backends that each agree with the same reference agree with each other within the sum of
their bounds, so there is no separate pairwise test. Then: thread independence, unusual memory
layouts (read-only, non-contiguous, negative and zero strides), the front door's error
messages, and the registry (discovery, unavailable backends, ``NNBENCH_KERNEL``).
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import _registry, threads
from nnbench.machine import pinned_threads
from nnbench.verify import CHECK_CASES, DTYPES, PASSES, ConvCase, compare, operands
from reference import convolve_with_gradients

BACKENDS = kernels.available()
CASES = CHECK_CASES


def grid():
    """pytest params (backend, case) with ids like ``im2col-k5p2[2,3,32,32]->8-float32``."""
    return [
        pytest.param(backend, case.with_dtype(dtype), id=f"{backend}-{case.with_dtype(dtype).id}")
        for backend in BACKENDS
        for dtype in DTYPES
        for case in CASES
    ]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module's tiny convolutions on one BLAS/FFT/torch thread.

    Thread start-up and spin-waiting dominate arrays this small, and on a shared 2-core machine
    they made the module 8x slower. Results do not depend on the thread count, but for fft's
    last bits (``test_thread_count_does_not_change_results`` checks that with the work split and
    chunked).
    """
    with pinned_threads(1):
        yield


# --- the calls under test --------------------------------------------------------------------


CALLS = {
    pass_: lambda a, b, p, backend, call=call: call(a, b, p, backend=backend)
    for pass_, call in kernels.PASS_FUNCTIONS.items()
}


def skip_unsupported(backend: str, case: ConvCase) -> None:
    reason = case.unsupported_by(backend)
    if reason:
        pytest.skip(reason)


def check(name, backend, case, pass_, actual, expected, integer) -> None:
    """Exact equality for an exact backend on integer inputs, else its table tolerance."""
    compare(
        name,
        actual,
        expected,
        dtype=case.dtype,
        backend=backend,
        reduction=case.reduction_length(pass_),
        exact=integer and kernels.get(backend).exact,
    ).check()


# --- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("integer", [False, True], ids=["normal", "integer"])
@pytest.mark.parametrize("backend, case", grid())
def test_against_reference(backend, case, integer, pass_):
    skip_unsupported(backend, case)
    ops = operands(case, integer=integer)
    actual = CALLS[pass_](*ops.arguments(pass_), case.padding, backend)
    ops.assert_unchanged(f"{pass_} ({backend})")
    check(f"{pass_} ({backend})", backend, case, pass_, actual, ops.reference(pass_), integer)


#: Cases for the thread checks: every case with a batch to split.
THREAD_CASES = [case for case in CASES if case.input_shape[0] >= 2]
#: Backends whose rounding changes with the chunks a call is cut into, integer inputs or not:
#: fft's spectra are not integers, and the BLAS runs a chunk's small complex GEMMs with other
#: kernels (another order of summation) as the chunk's number of images changes.
CHUNK_ROUNDED = {"fft"}


@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_thread_count_does_not_change_results(backend, case, monkeypatch):
    """Split over 2 threads in one-image chunks, every pass gives the single-thread result.

    Forced: any size is split (``THREAD_COST_ELEMENTS`` 1e-9, and no slice held back for the
    GIL: ``NUMPY_GIL_OUTPUTS`` 0), 2 threads whatever the cores, and a backend's
    ``CHUNK_BYTES`` at 1 byte, so that every image is its own chunk (a thread with a batch of 2
    walks two) and a weight gradient is a sum of per-image parts. Integer inputs
    make every order of summation exact, but for the backends of ``CHUNK_ROUNDED``, which are
    held to their tolerance against the reference instead.
    """
    skip_unsupported(backend, case)
    ops = operands(case, integer=True)
    single = {p: CALLS[p](*ops.arguments(p), case.padding, backend) for p in PASSES}
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "NUMPY_GIL_OUTPUTS", 0)
    monkeypatch.setattr(threads, "budget", lambda: 2)
    module = kernels.get(backend).module
    if hasattr(module, "CHUNK_BYTES"):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1)
    split_calls = []
    run = threads.run
    monkeypatch.setattr(
        threads, "run", lambda body, items: (split_calls.append(len(items)), run(body, items))
    )
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, backend)
        name = f"{pass_} ({backend}, 2 threads, chunked)"
        if backend in CHUNK_ROUNDED:  # held to its tolerance against the reference instead
            check(name, backend, case, pass_, actual, ops.reference(pass_), integer=False)
        else:
            compare(name, actual, single[pass_], dtype=case.dtype, exact=True).check()
    if hasattr(module, "threads") and case == CASES[0]:  # 3x3 'same': every pass splits
        assert split_calls.count(2) >= len(PASSES), f"{backend} split only {split_calls}"


#: The path each backend takes when there are more cores than slices worth cutting.
BLAS_THREADED_PATHS = {"im2col": "_correlate_batch", "loop": "_correlate_over_offsets_blas"}


@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("backend", sorted(BLAS_THREADED_PATHS))
def test_more_cores_than_slices_gives_the_same_result(backend, case, monkeypatch):
    """With more cores than slices worth cutting, im2col and loop run their GEMMs over the
    whole batch on the BLAS's threads, the copies around them in slices: the same result as
    the chunked path, exactly on integer inputs."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not available")
    ops = operands(case, integer=True)
    single = {p: CALLS[p](*ops.arguments(p), case.padding, backend) for p in PASSES}
    module = kernels.get(backend).module
    name = BLAS_THREADED_PATHS[backend]
    ran = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: (ran.append(1), original(*a)))
    monkeypatch.setattr(threads, "budget", lambda: 4)
    monkeypatch.setattr(threads, "parts_for", lambda n, elements, min_rows=1: min(2, n))
    for pass_ in PASSES:  # the weight gradient has no such path: it is summed over 2 slices
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, backend)
        compare(f"{pass_} ({backend}, BLAS-threaded GEMMs)", actual, single[pass_],
                dtype=case.dtype, exact=True).check()  # fmt: skip
    if case == CASES[0]:
        assert ran  # the path under test ran


@pytest.mark.parametrize("reshape_has_copy", [True, False], ids=["np.reshape", "set shape"])
def test_im2col_reshaped_is_a_view_or_an_error_never_a_copy(reshape_has_copy, monkeypatch):
    """The column matrix is written through ``_reshaped``: a copy would be lost."""
    from kernels import backend_im2col

    if not reshape_has_copy and np.lib.NumpyVersion(np.__version__) >= "2.5.0":
        pytest.skip("setting .shape is deprecated from numpy 2.5 (the path of numpy < 2.1)")
    if reshape_has_copy and np.lib.NumpyVersion(np.__version__) < "2.1.0":
        pytest.skip("np.reshape(copy=False) needs numpy 2.1")
    monkeypatch.setattr(backend_im2col, "_RESHAPE_HAS_COPY", reshape_has_copy)
    block = np.zeros((6, 12), np.float32)
    view = backend_im2col._reshaped(block, (2, 3, 4, 3))
    view[...] = 1
    assert np.shares_memory(view, block) and block.all()
    with pytest.raises((ValueError, AttributeError)):
        backend_im2col._reshaped(block.T, (72,))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
@pytest.mark.parametrize("col2im", [False, True], ids=["correlate", "col2im"])
@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "image rows", "per image"])
def test_im2col_gives_the_exact_result_in_each_column_layout(layout, col2im, case, monkeypatch):
    """Every pass of every check case with im2col's column matrix forced into one layout (the
    weight gradient too, which picks ROWS by itself never) and its input gradient forced
    through col2im or the correlation: exact on integer inputs, as the shape-picked layout is.
    ROWS's runs wrap past each output row; the wrapped columns are computed and dropped, and
    the extra zero row per image keeps the last run inside the buffer (without it, the view
    of the last image would reach past the buffer's end and be refused). Per image, the
    shifted runs wrap too (where the output is as wide as the input), their wrapped terms
    zeroed: the grid's 'same' cases take that route, the others the windowed copy."""
    from kernels import backend_im2col

    if "im2col" not in BACKENDS:
        pytest.skip("im2col is not available")
    images = layout == backend_im2col.IMAGES
    if not images:
        monkeypatch.setattr(backend_im2col, "_layout_for", lambda *args, **kwargs: layout)
    monkeypatch.setattr(backend_im2col, "IMAGES_MIN_OUTPUTS", 0 if images else 10**9)
    monkeypatch.setattr(backend_im2col, "IMAGES_SUM_RATIO", 0)
    monkeypatch.setattr(backend_im2col, "COL2IM_COST", 0 if col2im else 10**9)
    _check_im2col_exact(case, layout)


def _check_im2col_exact(case: ConvCase, label: str) -> None:
    """Every pass of ``case`` through im2col (as the test has set it up): exact on integer
    float64 inputs."""
    case = case.with_dtype("float64")
    ops = operands(case, integer=True)
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, "im2col")
        check(f"{pass_} (im2col, {label})", "im2col", case, pass_, actual,
              ops.reference(pass_), integer=True)  # fmt: skip


#: Per-image cases at the edges of the shifted runs: horizontal padding wider than the image
#: (pw > w: a run reaches more than one row past an image), single-pixel images, rows of
#: another height than the image's (oh != h), and an input gradient whose correlation has a
#: vertical pad of -2 (a 1x5 kernel: the windowed copy instead). Enough channels that no
#: pass swaps image and taps (section 5.6), which would leave the per-image route.
PER_IMAGE_EDGE_CASES = [ConvCase((2, 20, 3, 2), (20, 20, 7, 7), 3),
                        ConvCase((3, 30, 1, 1), (30, 30, 3, 3), 1),
                        ConvCase((2, 16, 2, 3), (16, 16, 5, 9), 4),
                        ConvCase((2, 3, 4, 6), (4, 3, 1, 5), 2)]  # fmt: skip


@pytest.mark.parametrize("col2im", [False, True], ids=["correlate", "col2im"])
@pytest.mark.parametrize("case", PER_IMAGE_EDGE_CASES, ids=lambda case: case.id)
def test_im2col_per_image_route_at_its_edges(case, col2im, monkeypatch):
    """Per image, every pass is exact at the edges of the shifted runs (see the cases): the
    guard rows of the padded buffer hold the reads, the wrapped terms are zeroed, and where the
    shift does not apply the windowed copy takes over."""
    from kernels import backend_im2col

    if "im2col" not in BACKENDS:
        pytest.skip("im2col is not available")
    monkeypatch.setattr(backend_im2col, "IMAGES_MIN_OUTPUTS", 0)
    monkeypatch.setattr(backend_im2col, "IMAGES_SUM_RATIO", 0)
    monkeypatch.setattr(backend_im2col, "COL2IM_COST", 0 if col2im else 10**9)
    _check_im2col_exact(case, "per image")


def test_im2col_per_image_gemms_in_slices_release_the_gil(monkeypatch):
    """Split over 2 threads in the smallest chunks, no per-image (stacked) GEMM of a slice has
    so few outputs that numpy would keep the GIL through it: each chunk holds enough images
    (here 4 for the forward's 144 outputs per image, 2 for col2im's 324, 14 for the weight
    gradient's 36)."""
    from kernels import _profile, backend_im2col

    if "im2col" not in BACKENDS:
        pytest.skip("im2col is not available")
    monkeypatch.setattr(backend_im2col, "IMAGES_MIN_OUTPUTS", 0)
    monkeypatch.setattr(backend_im2col, "IMAGES_SUM_RATIO", 0)
    monkeypatch.setattr(backend_im2col, "COL2IM_COST", 0)
    monkeypatch.setattr(backend_im2col, "CHUNK_BYTES", 1)
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "budget", lambda: 2)
    outputs = []
    matmul = _profile.matmul

    def recorded(a, b, out=None):
        result = matmul(a, b, out=out)
        if max(a.ndim, b.ndim) == 3:
            outputs.append(result.size)
        return result

    monkeypatch.setattr(_profile, "matmul", recorded)
    case = ConvCase((16, 1, 6, 6), (4, 1, 3, 3), 1, "float64")  # no pass swapped (5.6)
    ops = operands(case, integer=True)
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, "im2col")
        check(f"{pass_} (im2col, small chunks)", "im2col", case, pass_, actual,
              ops.reference(pass_), integer=True)  # fmt: skip
    assert len(outputs) >= len(PASSES) * 2  # every pass split, per image
    assert min(outputs) > threads.NUMPY_GIL_OUTPUTS


def test_im2col_per_thread_buffers_grow_for_a_longer_chunk():
    """A thread that walks a short chunk, then a longer one (slices run one after the other
    on one thread), gets buffers made again for the longer one: both chunks' columns are
    right."""
    from kernels import backend_im2col

    rng = np.random.default_rng(0)
    x = rng.integers(-4, 5, (5, 2, 6, 6)).astype(np.float32)
    shifted = backend_im2col._image_columns((2, 6, 6), (3, 3), (1, 1), x.dtype)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    expected = windows.transpose(0, 1, 4, 5, 2, 3).reshape(5, 18, 36)
    for rows in (slice(0, 1), slice(1, 4), slice(4, 5)):
        np.testing.assert_array_equal(shifted(x[rows]), expected[rows])


@pytest.mark.parametrize(
    ("h", "w", "ph", "pw", "kh", "kw"),
    [(8, 8, 1, 1, 3, 3), (5, 6, 2, 2, 7, 4), (6, 7, 4, 4, 3, 3), (8, 9, -1, -2, 3, 3),
     (9, 10, 0, 0, 4, 5), (4, 4, 3, 3, 1, 1), (3, 5, 1, 0, 2, 2), (2, 3, 0, 2, 2, 5)],
    ids=["3x3-same", "kernel-taller", "p-above-k-1", "crop", "valid", "1x1-wide-border",
         "ph-not-pw", "pw-not-ph"],
)  # fmt: skip
def test_shared_borders_shift_as_the_padded_image_does(h, w, ph, pw, kh, kw):
    """``pad_shared_borders``: for every output position (t, s) of every image and every
    offset (u, v), flat position (i*Gh + t)*Gw + s shifted by u*Gw + v holds the padded
    image's [i, t + u, s + v], zero included, though neighbours share their border."""
    from kernels._layout import pad_shared_borders, shared_border_grid

    rng = np.random.default_rng(0)
    x = rng.integers(1, 9, (3, 2, h, w)).astype(np.float64)  # no zero among the pixels
    grid = shared_border_grid(h, w, ph, pw, kh, kw)
    flat = pad_shared_borders(x, ph, pw, grid, "test.shared").reshape(2, -1)
    crop = (slice(max(0, -ph), h - max(0, -ph)), slice(max(0, -pw), w - max(0, -pw)))
    pads = ((0, 0), (0, 0), (max(0, ph),) * 2, (max(0, pw),) * 2)
    padded = np.pad(x[:, :, crop[0], crop[1]], pads)
    oh, ow = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    images, rows, cols = np.meshgrid(range(3), range(oh), range(ow), indexing="ij")
    starts = (images * grid[0] + rows) * grid[1] + cols
    for u in range(kh):
        for v in range(kw):
            np.testing.assert_array_equal(
                flat[:, starts + u * grid[1] + v],
                padded[:, :, u : u + oh, v : v + ow].transpose(1, 0, 2, 3),
            )


@pytest.mark.parametrize(
    ("h", "w", "ph", "pw", "kh", "kw"),
    [(8, 8, 1, 1, 3, 3), (5, 6, 2, 2, 7, 4), (6, 7, 4, 4, 3, 3), (8, 9, -1, -2, 3, 3),
     (9, 10, 0, 0, 4, 5), (3, 5, 1, 0, 2, 2), (2, 3, 0, 2, 2, 5), (4, 3, 1, 3, 3, 2),
     (16, 2, 3, 3, 7, 7), (4, 1, 3, 3, 3, 6)],
    ids=["3x3-same", "kernel-taller", "p-above-k-1", "crop", "valid", "ph-not-pw",
         "pw-not-ph", "pw-above-kw-1", "shift-past-the-width", "one-column"],
)  # fmt: skip
def test_column_copies_shift_as_the_padded_image_does(h, w, ph, pw, kh, kw):
    """``fill_column_copies``: for every output position (t, s) of every image and every
    offset (u, v), flat position (i*Gh + t)*ow + s of copy v, shifted by u*ow, holds the
    padded image's [i, t + u, s + v], zero included: no border columns, rows of exactly the
    output's width, neighbours sharing their zero rows. Written twice over NaN-filled memory
    (a second geometry between them), so no stale value is read as a zero."""
    from kernels._layout import column_copies_buffer, fill_column_copies, shared_border_grid

    rng = np.random.default_rng(0)
    x = rng.integers(1, 9, (3, 2, h, w)).astype(np.float64)  # no zero among the pixels
    crop = (slice(max(0, -ph), h - max(0, -ph)), slice(max(0, -pw), w - max(0, -pw)))
    pads = ((0, 0), (0, 0), (max(0, ph),) * 2, (max(0, pw),) * 2)
    padded = np.pad(x[:, :, crop[0], crop[1]], pads)
    oh, ow = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    rows = shared_border_grid(h, w, ph, pw, kh, kw)[0]
    for other in (False, True):
        buffer = column_copies_buffer(x, ph, pw, rows, kw, ow + other, "test.columns")
        buffer[...] = np.nan  # whatever a previous user left, the border rows included
        buffer = column_copies_buffer(x, ph, pw, rows, kw, ow, "test.columns")
        fill_column_copies(buffer, x, ph, pw, slice(None))
    flat = buffer.reshape(kw, 2, -1)
    images, out_rows, cols = np.meshgrid(range(3), range(oh), range(ow), indexing="ij")
    starts = (images * rows + out_rows) * ow + cols
    for u in range(kh):
        for v in range(kw):
            np.testing.assert_array_equal(
                flat[v][:, starts + u * ow],
                padded[:, :, u : u + oh, v : v + ow].transpose(1, 0, 2, 3),
            )


@pytest.mark.parametrize(
    ("first", "then"),
    [(((2, 3, 8, 8), (8, 3, 3, 3)), ((2, 3, 8, 14), (8, 3, 3, 9))),
     (((2, 4, 8, 8), (16, 4, 4, 2)), ((2, 4, 8, 10), (16, 4, 2, 4)))],
    ids=["whole-kernel-then-nine-column-copies", "4x2-then-2x4"],
)  # fmt: skip
def test_loop_copies_of_one_shape_never_lend_each_other_a_border(first, then):
    """The whole-kernel weight gradient's buffer holds copies whose border rows are image rows;
    a later loop call whose column copies have the same buffer shape (nine copies of a 3x9
    kernel; a 2x4 kernel after a 4x2 one) still finds zeros where its padding is."""
    rng = np.random.default_rng(5)
    for x_shape, k_shape in (first, then):
        x = rng.integers(-3, 4, x_shape).astype(np.float32)
        k = rng.integers(-3, 4, k_shape).astype(np.float32)
        y = rng.integers(-3, 4, kernels.convolve(x, k, 1, backend="loop").shape)
        y = y.astype(np.float32)
        wide = (x.astype(np.float64), k.astype(np.float64), y.astype(np.float64))
        for name, args in (("convolve", (x, k)), ("grad_kernels", (x, y))):
            reference = getattr(kernels, name)(*(wide[:2] if name == "convolve" else wide[::2]),
                                               1, backend="im2col")  # fmt: skip
            got = getattr(kernels, name)(*args, 1, backend="loop")
            np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize(
    ("d", "c", "kw", "wider", "copies"),
    [(3, 16, 3, 0.5, 3), (10, 1, 3, 0.5, 3), (11, 1, 3, 0.5, 1), (16, 32, 3, 0.5, 3),
     (64, 32, 3, 0.5, 3), (64, 31, 3, 0.5, 1), (16, 3, 3, 0.5, 1), (16, 32, 3, 2, 3),
     (32, 32, 3, 2, 1), (3, 1, 3, 2, 3), (64, 64, 1, 0.5, 1), (8, 8, 5, 0.5, 5)],
    ids=["first-layer", "few-channels-one-output", "11-channels-one-output", "widening",
         "half-as-many", "under-half", "input-gradient-16-to-3", "weight-gradient-widening",
         "weight-gradient-as-many", "weight-gradient-few-channels", "1x1", "5x5"],
)  # fmt: skip
def test_loop_stacks_a_kernel_row_for_few_channels_or_many_outputs(d, c, kw, wider, copies):
    """``_copies``: kw column copies (one GEMM per kernel row) while kw*d is at most
    ``STACK_DEPTH`` (32) or the c outputs are at least ``wider`` times the d channels (half,
    in a correlation; twice, in the weight gradient), else one GEMM per offset;
    ``_offset_weights`` lays the taps out to match."""
    from kernels import backend_loop

    assert backend_loop.STACK_DEPTH == 32
    assert backend_loop._copies(d, c, kw, wider) == copies
    if wider == 0.5:
        taps = np.arange(c * d * 3 * kw, dtype=np.float32).reshape(c, d, 3, kw)
        weights = backend_loop._offset_weights(taps)
        assert weights.shape == (3, kw // copies, c, copies * d)
        u, v, j = 2, kw - 1, d - 1
        column = (v % copies) * d + j
        np.testing.assert_array_equal(weights[u, v // copies, :, column], taps[:, j, u, v])


@pytest.mark.parametrize("backend", ["im2col", "loop"])
def test_scratch_shared_by_the_two_layouts_never_keeps_a_stale_border(backend):
    """Channels-first (d, n, Hp, Wp) and channels-last (n, Hp, Wp, d) padded buffers share a
    key and, when d = n = Hp = Wp, a shape: a border zeroed for one layout is not zero for the
    other. A 1x1 call then a 3x3 call (or two weight gradients) must both be right."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not available")
    kernels.release_scratch()
    for case in (ConvCase((6, 6, 4, 4), (6, 6, 1, 1), 1), ConvCase((6, 6, 4, 4), (6, 6, 3, 3), 1),
                 ConvCase((6, 6, 4, 4), (6, 6, 5, 5), 1)):  # fmt: skip
        ops = operands(case.with_dtype("float64"), integer=True)
        for pass_ in PASSES:
            actual = CALLS[pass_](*ops.arguments(pass_), case.padding, backend)
            check(f"{pass_} ({backend}) {case.id}", backend, case.with_dtype("float64"), pass_,
                  actual, ops.reference(pass_), integer=True)  # fmt: skip


# --- memory layouts --------------------------------------------------------------------------


def _negative_strides(a: np.ndarray) -> np.ndarray:
    """The same values as ``a``, viewed through negative strides on every axis."""
    return np.ascontiguousarray(a[::-1, ::-1, ::-1, ::-1])[::-1, ::-1, ::-1, ::-1]


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _strided(a: np.ndarray) -> np.ndarray:
    """A view every other element of a twice-as-large buffer along the last two axes."""
    big = np.zeros(a.shape[:2] + (2 * a.shape[2], 2 * a.shape[3]), a.dtype)
    big[:, :, ::2, ::2] = a
    return big[:, :, ::2, ::2]


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _broadcast(a: np.ndarray) -> np.ndarray:
    """Zero strides along the batch axis (read-only, like every broadcast view)."""
    return np.broadcast_to(a[:1], a.shape)


LAYOUTS = {
    "read-only": _read_only,
    "fortran": np.asfortranarray,
    "channels-last": _channels_last,
    "strided": _strided,
    "negative-strides": _negative_strides,
    "broadcast": _broadcast,
}
LAYOUT_CASE = ConvCase((3, 2, 7, 9), (3, 2, 3, 2), 1)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_layouts(backend, dtype, layout, pass_):
    """Every argument in an unusual layout: same result as for contiguous copies, and the
    arguments are left untouched."""
    case = LAYOUT_CASE.with_dtype(dtype)
    skip_unsupported(backend, case)
    ops = operands(case, integer=True)
    laid_out = {
        name: LAYOUTS[layout](getattr(ops, name)) for name in ("x", "kernels", "grad_outputs")
    }
    values = {name: np.array(a) for name, a in laid_out.items()}  # what the views hold
    expected = convolve_with_gradients(
        values["x"], values["kernels"], values["grad_outputs"], case.padding
    )[pass_]
    names = {"forward": ("x", "kernels"), "grad_inputs": ("grad_outputs", "kernels")}
    names = names.get(pass_, ("x", "grad_outputs"))
    actual = CALLS[pass_](*(laid_out[name] for name in names), case.padding, backend)
    check(f"{pass_} ({backend}, {layout})", backend, case, pass_, actual, expected, True)
    for name in names:
        assert np.array_equal(laid_out[name], values[name]), f"{backend} modified {name}"


# --- the front door: bad input ---------------------------------------------------------------


def _x(shape=(2, 3, 8, 8), dtype=np.float32):
    return np.zeros(shape, dtype)


def _k(shape=(4, 3, 3, 3), dtype=np.float32):
    return np.zeros(shape, dtype)


BAD_CONVOLVE = [
    (
        "inputs rank",
        lambda: kernels.convolve(_x((3, 8, 8)), _k()),
        ValueError,
        r"inputs must have 4 dimensions \(n, d, h, w\), got 3 with shape \(3, 8, 8\)",
    ),
    (
        "kernels rank",
        lambda: kernels.convolve(_x(), _k((4, 3, 3, 3, 1))),
        ValueError,
        r"kernels must have 4 dimensions \(c, d, kh, kw\), got 5",
    ),
    (
        "channel mismatch",
        lambda: kernels.convolve(_x(), _k((4, 2, 3, 3))),
        ValueError,
        r"channel mismatch: inputs has d=3 channels .* kernels expects d=2",
    ),
    (
        "negative padding",
        lambda: kernels.convolve(_x(), _k(), -1),
        ValueError,
        r"padding must be a non-negative int, got -1",
    ),
    (
        "float padding",
        lambda: kernels.convolve(_x(), _k(), 1.0),
        TypeError,
        r"padding must be a non-negative int, got 1\.0",
    ),
    (
        "bool padding",
        lambda: kernels.convolve(_x(), _k(), True),
        TypeError,
        r"padding must be a non-negative int, got True",
    ),
    (
        "string padding",
        lambda: kernels.convolve(_x(), _k(), "same"),
        TypeError,
        r"padding must be a non-negative int, got 'same'",
    ),
    (
        "empty output",
        lambda: kernels.convolve(_x(), _k((4, 3, 9, 3))),
        ValueError,
        r"empty output: .* give output \(2, 4, 0, 6\); need h \+ 2\*padding >= kh",
    ),
    (
        "integer dtype",
        lambda: kernels.convolve(_x(dtype=np.int64), _k(dtype=np.int64)),
        TypeError,
        r"inputs must have dtype float32 or float64, got int64",
    ),
    (
        "float16 kernels",
        lambda: kernels.convolve(_x(), _k(dtype=np.float16)),
        TypeError,
        r"kernels must have dtype float32 or float64, got float16",
    ),
    (
        "complex dtype",
        lambda: kernels.convolve(_x(dtype=np.complex64), _k()),
        TypeError,
        r"inputs must have dtype float32 or float64, got complex64",
    ),
    (
        "mixed dtypes",
        lambda: kernels.convolve(_x(), _k(dtype=np.float64)),
        TypeError,
        r"mixed dtypes: inputs is float32, kernels is float64",
    ),
    (
        "list inputs",
        lambda: kernels.convolve(_x().tolist(), _k()),
        TypeError,
        r"inputs must be a numpy.ndarray, got list",
    ),
    (
        "empty inputs",
        lambda: kernels.convolve(_x((0, 3, 8, 8)), _k()),
        ValueError,
        r"inputs must not be empty, got shape \(0, 3, 8, 8\)",
    ),
    (
        "empty kernels",
        lambda: kernels.convolve(_x(), _k((0, 3, 3, 3))),
        ValueError,
        r"kernels must not be empty, got shape \(0, 3, 3, 3\)",
    ),
    (
        "unknown backend",
        lambda: kernels.convolve(_x(), _k(), backend="nope"),
        ValueError,
        r"unknown backend 'nope'; available backends: " + re.escape(", ".join(BACKENDS)),
    ),
    (
        "backend not a name",
        lambda: kernels.convolve(_x(), _k(), backend=3),
        TypeError,
        r"backend must be a str naming a backend, got int",
    ),
]

BAD_GRADIENTS = [
    (
        "grad_inputs rank",
        lambda: kernels.grad_inputs(_x((2, 4, 6)), _k()),
        ValueError,
        r"grad_outputs must have 4 dimensions \(n, c, oh, ow\)",
    ),
    (
        "grad_inputs channel mismatch",
        lambda: kernels.grad_inputs(_x((2, 5, 6, 6)), _k()),
        ValueError,
        r"channel mismatch: grad_outputs has c=5 .* kernels has c=4",
    ),
    (
        "grad_inputs impossible shape",
        lambda: kernels.grad_inputs(_x((2, 4, 1, 1)), _k(), 2),
        ValueError,
        (
            r"cannot come from kernels \(4, 3, 3, 3\) with padding=2: the inputs would "
            r"have spatial shape \(-1, -1\)"
        ),
    ),
    (
        "grad_inputs mixed dtypes",
        lambda: kernels.grad_inputs(_x((2, 4, 6, 6), np.float64), _k()),
        TypeError,
        r"mixed dtypes: grad_outputs is float64, kernels is float32",
    ),
    (
        "grad_kernels batch mismatch",
        lambda: kernels.grad_kernels(_x(), _x((3, 4, 6, 6))),
        ValueError,
        r"batch mismatch: inputs has n=2 but grad_outputs has n=3",
    ),
    (
        "grad_kernels impossible shape",
        lambda: kernels.grad_kernels(_x(), _x((2, 4, 9, 9))),
        ValueError,
        r"the kernels would have spatial shape \(0, 0\)",
    ),
    (
        "grad_kernels negative padding",
        lambda: kernels.grad_kernels(_x(), _x((2, 4, 6, 6)), -2),
        ValueError,
        r"padding must be a non-negative int, got -2",
    ),
    (
        "grad_kernels list",
        lambda: kernels.grad_kernels(_x(), [[0.0]]),
        TypeError,
        r"grad_outputs must be a numpy.ndarray, got list",
    ),
]


@pytest.mark.parametrize(
    "call, error, message",
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CONVOLVE + BAD_GRADIENTS],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unsupported_case_names_the_reason():
    """A backend's ``supports`` reason reaches the caller of the front door."""
    module = type(sys)("backend_tiny")
    module.convolve = lambda inputs, kernels_, padding: None
    module.supports = lambda x_shape, k_shape, padding, dtype: (
        "kernels larger than 5x5" if k_shape[2] > 5 else None
    )
    tiny = _registry.load(module, "tiny")
    with pytest.raises(ValueError, match=r"backend 'tiny' cannot compute this case: kernels "):
        kernels.convolve(_x(), _k((4, 3, 7, 7)), 3, backend=tiny)


def test_numpy_integer_padding_is_accepted():
    out = kernels.convolve(_x(), _k(), np.int64(1), backend=BACKENDS[0])
    assert out.shape == (2, 4, 8, 8)


# --- the registry ----------------------------------------------------------------------------

KERNELS_DIR = Path(kernels.__file__).parent


def test_available_lists_every_importable_backend_sorted():
    names = sorted(p.stem[len(_registry.PREFIX) :] for p in KERNELS_DIR.glob("backend_*.py"))
    importable = []
    for name in names:
        try:
            importlib.import_module(f"kernels.backend_{name}")
        except ImportError:
            assert name in kernels.unavailable(), f"{name} fails to import but is not reported"
        else:
            importable.append(name)
    assert kernels.available() == sorted(kernels.available())
    assert kernels.available() == importable
    for name in kernels.available():
        assert kernels.get(name).name == name


def test_exactness_is_declared_by_each_backend_module():
    for name in kernels.available():
        assert kernels.get(name).exact is bool(getattr(kernels.get(name).module, "EXACT", False))
    # the FFT rounds through its transforms; the direct methods sum the products themselves
    assert "fft" not in kernels.available() or not kernels.get("fft").exact
    assert all(kernels.get(n).exact for n in ("loop", "im2col", "torch") if n in BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_release_scratch_leaves_later_calls_correct(backend, rng):
    x = rng.integers(-4, 5, (2, 3, 9, 10)).astype(np.float32)
    k = rng.integers(-4, 5, (4, 3, 3, 3)).astype(np.float32)
    before = kernels.convolve(x, k, 1, backend=backend)
    kernels.release_scratch()
    after = kernels.convolve(x, k, 1, backend=backend)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4)


@pytest.fixture
def extra_backend_dir(tmp_path, monkeypatch):
    """A second directory on ``kernels.__path__``; the modules imported from it are forgotten
    afterwards, and nothing is written inside the repository."""
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("kernels."):
            del sys.modules[name]
    importlib.invalidate_caches()


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()


def test_backend_whose_import_fails_is_unavailable_with_its_reason(extra_backend_dir, monkeypatch):
    _write_module(
        extra_backend_dir,
        "backend_broken",
        """
        raise ImportError("libbroken is not installed")
        """,
    )
    found, missing = _registry.discover()
    assert "broken" not in found
    assert missing["broken"] == "ImportError: libbroken is not installed"
    assert sorted(found) == kernels.available()
    # What the front door says once the package was imported with this file present.
    monkeypatch.setattr(kernels, "_BACKENDS", found)
    monkeypatch.setattr(kernels, "_UNAVAILABLE", missing)
    assert kernels.unavailable()["broken"] == "ImportError: libbroken is not installed"
    assert "broken" not in kernels.available()
    with pytest.raises(
        ValueError,
        match=r"backend 'broken' is not available on this machine: ImportError: libbroken is "
        r"not installed; available backends: " + re.escape(", ".join(BACKENDS)),
    ):
        kernels.convolve(_x(), _k(), backend="broken")


def test_adding_a_backend_file_is_enough(extra_backend_dir):
    """A fifth backend with only a forward gets both gradients from the generic backward."""
    _write_module(
        extra_backend_dir,
        "backend_scratch",
        """
        from kernels.backend_torch import convolve
        """,
    )
    found, missing = _registry.discover()
    assert "scratch" in found and "scratch" not in missing
    scratch = found["scratch"]
    assert not scratch.specialised_backward
    case = CASES[0].with_dtype("float64")
    ops = operands(case, integer=True)
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, scratch)
        compare(pass_, actual, ops.reference(pass_), dtype=case.dtype, exact=True).check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_environment_variable_picks_the_default(backend, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, backend)
    assert kernels.resolve(None).name == backend
    other = next(b for b in BACKENDS if b != backend) if len(BACKENDS) > 1 else backend
    assert kernels.resolve(other).name == other  # an explicit choice beats the variable


def test_environment_variable_with_unknown_backend(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "nope")
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; available backends: "):
        kernels.convolve(_x(), _k())


def test_default_backend_without_environment_variable(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    if kernels.DEFAULT_BACKEND not in BACKENDS:
        pytest.skip(f"default backend {kernels.DEFAULT_BACKEND!r} is not available here")
    assert kernels.resolve(None).name == kernels.DEFAULT_BACKEND


# --- fft's two routes ------------------------------------------------------------------------

FFT_ROUTES = {  # module settings that force each route on the small cases of the grid
    "chunks": {"CHUNK_BYTES": 1, "MIN_CHUNK_IMAGES": 1, "SUMS_PER_CHUNK": float("inf")},
    "whole-batch": {"CHUNK_BYTES": 1},  # one image a chunk: under MIN_CHUNK_IMAGES
}


@pytest.mark.parametrize("route", FFT_ROUTES)
@pytest.mark.parametrize("case", [c for c in CASES if c.input_shape[0] >= 2], ids=lambda c: c.id)
def test_fft_routes_agree_with_the_reference(case, route, monkeypatch):
    """Every pass through fft's chunks (an image each, two threads, the weight gradient summed
    over them) and through its whole-batch route (the stacked GEMM split over the threads, the
    weight gradient by section 5.7's convolution) is right, and takes the route asked for."""
    if "fft" not in BACKENDS:
        pytest.skip("the fft backend is not available")
    module = kernels.get("fft").module
    for name, value in FFT_ROUTES[route].items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "budget", lambda: 2)
    used = []  # each pass, then the route functions it called, in call order
    for owner, name in ((module, "_matmul"), (module, "_whole_batch_grad_kernels"),
                        (threads, "sum_over_batch")):  # fmt: skip
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, _spy(original, name, used))
    ops = operands(case)
    for pass_ in PASSES:
        used.append(pass_)
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, "fft")
        check(f"{pass_} (fft, {route})", "fft", case, pass_, actual, ops.reference(pass_), False)
    if route == "chunks":
        assert used == ["forward", "grad_inputs", "grad_kernels", "sum_over_batch"]
    else:  # the weight gradient's own convolution may be small enough for one chunk
        assert used[:5] == ["forward", "_matmul", "grad_inputs", "_matmul", "grad_kernels"]
        assert used[5] == "_whole_batch_grad_kernels" and "sum_over_batch" not in used


def _spy(function, name: str, calls: list):
    def spied(*args, **kwargs):
        calls.append(name)
        return function(*args, **kwargs)

    return spied


@pytest.mark.parametrize("budget", [1, 64])
def test_fft_cuts_many_cores_into_runs_of_whole_chunks(budget, monkeypatch):
    """On many cores a call is cut into fewer runs than threads, each of at least
    MIN_CHUNK_IMAGES images, and the weight gradient's route is judged on the images a run
    really holds: 32 images of 64 -> 64 channels take chunks on one thread, but on 64 threads
    runs of 8, whose (d, c) sums outweigh their spectra, send it to the whole-batch route."""
    if "fft" not in BACKENDS:
        pytest.skip("the fft backend is not available")
    module = kernels.get("fft").module
    case = ConvCase((32, 64, 4, 4), (64, 64, 3, 3), 1, "float64")
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)  # every slice worth a thread
    monkeypatch.setattr(threads, "budget", lambda: budget)
    used, runs = [], []
    whole = "_whole_batch_grad_kernels"
    monkeypatch.setattr(module, whole, _spy(getattr(module, whole), whole, used))
    monkeypatch.setattr(threads, "sum_over_batch", _spy(threads.sum_over_batch, "sums", used))
    split = threads.split
    monkeypatch.setattr(threads, "split", lambda n, parts: runs.append(split(n, parts)) or runs[-1])
    ops = operands(case)
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, "fft")
        check(f"{pass_} (fft, budget {budget})", "fft", case, pass_, actual,
              ops.reference(pass_), False)  # fmt: skip
    batch_runs = [s.stop - s.start for cut in runs if cut[-1].stop == 32 for s in cut]
    assert batch_runs and min(batch_runs) >= module.MIN_CHUNK_IMAGES
    if budget == 1:
        assert used == ["sums"]
    else:
        assert max(len(cut) for cut in runs if cut[-1].stop == 32) == 32 // 8
        assert used[0] == "_whole_batch_grad_kernels" and "sums" not in used


# --- fft without scipy -----------------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[0], CASES[9], CASES[11]], ids=lambda c: c.id)
def test_fft_falls_back_to_numpy_fft(case, monkeypatch):
    """Where scipy is missing, backend_fft runs on numpy.fft (single-threaded)."""
    if "fft" not in BACKENDS:
        pytest.skip("the fft backend is not available")
    monkeypatch.setattr(kernels.get("fft").module, "_scipy_fft", None)
    ops = operands(case)
    for pass_ in PASSES:
        actual = CALLS[pass_](*ops.arguments(pass_), case.padding, "fft")
        check(pass_, "fft", case, pass_, actual, ops.reference(pass_), integer=False)
