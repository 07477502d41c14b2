"""``compare``: a result against its reference, as a ``Verdict`` that can fail."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnbench.verify.tolerances import Tol, tolerance


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison.

    ``max_abs_error`` is the largest |actual - expected|; ``max_rel_error`` the normwise
    relative error max|actual - expected| / max|expected|; ``bound`` the allowed error at the
    worst element (0 when exactness was required); ``worst`` that element's index, with the
    values found and expected there. ``problem`` says what failed when it is not the numbers
    (shape, dtype, non-finite values).
    """

    name: str
    passed: bool
    max_abs_error: float
    max_rel_error: float
    bound: float
    exact: bool
    worst: tuple[int, ...] | None = None
    actual: float | None = None
    expected: float | None = None
    problem: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def message(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        where = (
            f"; worst at {list(self.worst)}: got {self.actual:.9g}, expected {self.expected:.9g}"
            if self.worst is not None
            else ""
        )
        rule = "exact equality" if self.exact else f"bound {self.bound:.3g}"
        status = "ok" if self.passed else "FAILED"
        return (
            f"{self.name}: {status}, max abs error {self.max_abs_error:.3g} "
            f"(relative {self.max_rel_error:.3g}) against {rule}{where}"
        )

    def check(self) -> Verdict:
        """Raise ``AssertionError`` with ``message()`` unless the verdict passed."""
        if not self.passed:
            raise AssertionError(self.message())
        return self

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "max_abs_error": _finite_or_none(self.max_abs_error),
            "max_rel_error": _finite_or_none(self.max_rel_error),
            "bound": self.bound,
            "exact": self.exact,
            "worst": None if self.worst is None else list(self.worst),
            "actual": _finite_or_none(self.actual),
            "expected": _finite_or_none(self.expected),
            "problem": self.problem,
        }


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compare(
    name: str,
    actual,
    expected,
    *,
    dtype=None,
    backend: str | None = None,
    reduction: int = 1,
    exact: bool = False,
    tol: Tol | None = None,
) -> Verdict:
    """Compare ``actual`` with ``expected`` (float64 reference); a ``Verdict`` names the tensor.

    With ``exact`` every element must be equal; otherwise each element within
    ``atol * sqrt(reduction) * scale + rtol * |expected|`` (``nnbench.verify.tolerances``),
    with ``tol`` or the table's entry for (``backend``, dtype). ``dtype`` (if given) is also
    the dtype ``actual`` must have.
    """
    expected = np.asarray(expected)
    if not isinstance(actual, np.ndarray):
        return _problem(name, exact, f"returned {type(actual).__name__}, not a numpy.ndarray")
    if actual.shape != expected.shape:
        return _problem(name, exact, f"shape {actual.shape} != expected {expected.shape}")
    if dtype is not None and actual.dtype != np.dtype(dtype):
        return _problem(name, exact, f"dtype {actual.dtype} != expected {np.dtype(dtype)}")
    exp64 = expected.astype(np.float64)
    err = np.abs(actual.astype(np.float64) - exp64)
    peak = float(np.max(np.abs(exp64), initial=0.0))
    finite = np.isfinite(err)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        return Verdict(
            name, False, math.inf, math.inf, 0.0, exact, index,
            float(actual[index]), float(exp64[index]), f"non-finite value at {list(index)}",
        )  # fmt: skip
    max_abs = float(np.max(err, initial=0.0))
    max_rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else math.inf)
    if exact:
        bound = np.zeros_like(err)
    else:
        tol = tol or tolerance(actual.dtype if dtype is None else dtype, backend)
        scale = max(1.0, peak)
        bound = tol.atol * math.sqrt(reduction) * scale + tol.rtol * np.abs(exp64)
    excess = err - bound
    passed = bool(np.all(excess <= 0))
    if err.size == 0:
        return Verdict(name, True, 0.0, 0.0, 0.0, exact)
    flat = int(np.argmax(excess if not passed else err))
    index = tuple(int(i) for i in np.unravel_index(flat, err.shape))
    return Verdict(
        name, passed, max_abs, max_rel, float(bound[index]), exact, index,
        float(actual[index]), float(exp64[index]),
    )  # fmt: skip


def _problem(name: str, exact: bool, problem: str) -> Verdict:
    return Verdict(name, False, math.inf, math.inf, 0.0, exact, problem=problem)


def assert_close(name: str, actual, expected, **options) -> None:
    """``compare(name, actual, expected, **options).check()``: raise unless it passes."""
    compare(name, actual, expected, **options).check()
