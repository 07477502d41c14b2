"""The verification core (``nnbench.verify``): cases, seeded operands, the tolerance rule and
the verdicts every check in nnbench goes through."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnbench.verify import (
    CHECK_CASES,
    TOLERANCES,
    ConvCase,
    Tol,
    assert_close,
    compare,
    operands,
    tolerance,
)
from nnbench.verify.tolerances import DIRECT, EPS32

CASE = ConvCase((2, 3, 6, 5), (4, 3, 3, 3), 1, label="tiny")


def test_case_id_reads_like_the_shapes_and_ignores_the_label():
    assert CASE.id == "k3p1[2,3,6,5]->4-float32"
    assert ConvCase((2, 3, 7, 6), (2, 3, 4, 5), 0, "float64").id == "k4x5p0[2,3,7,6]->2-float64"
    assert ConvCase((2, 3, 6, 5), (4, 3, 3, 3), 1, label="other") == CASE.with_dtype("float32")
    assert len({case.id for case in CHECK_CASES}) == len(CHECK_CASES)


def test_reduction_lengths_and_result_shapes():
    n, c, oh, ow = CASE.output_shape
    assert (n, c, oh, ow) == (2, 4, 6, 5)
    assert CASE.reduction_length("forward") == 3 * 3 * 3
    assert CASE.reduction_length("grad_inputs") == 4 * 3 * 3
    assert CASE.reduction_length("grad_kernels") == n * oh * ow
    assert CASE.shape_of("grad_kernels") == CASE.kernel_shape
    with pytest.raises(ValueError, match="pass must be one of"):
        CASE.reduction_length("backward")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_shape": (4, 2, 3, 3)}, "channel mismatch"),
        ({"kernel_shape": (4, 3, 9, 9), "padding": 0}, "empty output"),
        ({"padding": -1}, "padding"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": "no-such-type"}, "dtype"),
        ({"input_shape": (2, 3, 6)}, "4 entries"),
        ({"input_shape": (0, 3, 6, 5)}, "positive"),
    ],
    ids=lambda value: str(value),
)
def test_bad_cases_are_refused(kwargs, message):
    fields = {"input_shape": (2, 3, 6, 5), "kernel_shape": (4, 3, 3, 3), "padding": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        ConvCase(**fields)


def test_operands_are_seeded_from_the_id_and_shared():
    first = operands(CASE)
    assert operands(CASE) is first  # one float64 reference for every backend of a check
    again = operands(CASE, seed=None)
    np.testing.assert_array_equal(again.x, first.x)
    other = operands(CASE, seed=7)
    assert not np.array_equal(other.x, first.x)
    ints = operands(CASE, integer=True)
    assert np.array_equal(ints.x, np.round(ints.x)) and np.abs(ints.x).max() <= 4
    assert first.x.dtype == np.float32 and first.reference("forward").dtype == np.float64


def test_exact_comparison_names_the_first_difference():
    expected = np.arange(12.0).reshape(3, 4)
    actual = expected.astype(np.float32)
    assert compare("y", actual, expected, exact=True).passed
    actual[1, 2] += 1
    verdict = compare("y", actual, expected, exact=True)
    assert not verdict and verdict.worst == (1, 2) and verdict.bound == 0.0
    assert "y: FAILED" in verdict.message() and "exact equality" in verdict.message()


def test_the_bound_grows_with_sqrt_of_the_reduction():
    expected = np.ones(4)
    tol = Tol(rtol=0.0, atol=1e-3)
    actual = expected + 1.5e-3
    assert not compare("y", actual, expected, tol=tol, reduction=1)
    assert compare("y", actual, expected, tol=tol, reduction=4)  # bound 2e-3
    verdict = compare("y", actual, expected, tol=tol, reduction=4)
    assert math.isclose(verdict.bound, 2e-3) and math.isclose(verdict.max_rel_error, 1.5e-3)


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        (np.zeros((2, 2), np.float32), "shape (2, 2) != expected (2, 3)"),
        (np.zeros((2, 3), np.float64), "dtype float64 != expected float32"),
        ([[0.0] * 3] * 2, "not a numpy.ndarray"),
        (np.array([[0, np.nan, 0], [0, 0, 0]], np.float32), "non-finite value at [0, 1]"),
    ],
    ids=["shape", "dtype", "list", "nan"],
)
def test_problems_other_than_the_numbers_fail_with_a_reason(actual, problem):
    verdict = compare("y", actual, np.zeros((2, 3)), dtype="float32")
    assert not verdict and problem in verdict.message()
    with pytest.raises(AssertionError, match="y: "):
        verdict.check()
    assert verdict.as_dict()["max_abs_error"] is None  # JSON-safe: no inf


def test_table_entries_and_unknown_backends():
    assert tolerance("float32", "im2col") is TOLERANCES[("im2col", "float32")]
    assert tolerance(np.float64) is TOLERANCES[(None, "float64")]
    # a backend without an entry is held to the direct backends' bound, not the engine's
    assert tolerance("float32", "brand-new") is DIRECT["float32"]
    assert DIRECT["float32"].atol == 4 * EPS32


def test_assert_close_raises_with_the_tensor_name():
    with pytest.raises(AssertionError, match="grad_kernels: FAILED"):
        assert_close("grad_kernels", np.ones(3, np.float32), np.zeros(3), dtype="float32")
