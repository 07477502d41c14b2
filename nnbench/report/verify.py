"""Verification summary computed on the spot: every backend against a float64 torch reference.

For each available backend x pass (forward, grad_inputs, grad_kernels) x dtype (float32,
float64), over the fixed shapes in ``CASES``:

* random normal inputs, rounded to the dtype, go through the public ``kernels`` functions;
  the reference is torch autograd in float64 on the same (rounded) values: ``conv2d`` with
  the kernel flipped (true convolution) for the forward pass, ``.backward`` for both
  gradients. Reported: the max absolute error, and the max relative error, where the
  relative error of a case is ``max|actual - reference| / max|reference|`` (normwise, so
  elements near zero do not blow it up), maximised over the cases.
* small integers (-4..4) make every sum exact in both dtypes, so ``loop``, ``im2col`` and
  ``torch`` must equal the reference exactly; ``fft`` rounds through sines and cosines and
  is not expected to.

A backend that declares a case out of its reach (``supports``) is skipped for that case with
its reason; a backend that raises is reported with the error instead of stopping the report.
"""

from __future__ import annotations

import datetime as _dt
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

import kernels
from nnbench.report.load import VERIFICATION_SCHEMA as SCHEMA
from reference import convolve_with_gradients

PASSES = ("forward", "grad_inputs", "grad_kernels")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Case:
    """One convolution: inputs (n, d, h, w), kernels (c, d, kh, kw), padding p."""

    name: str
    input_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    padding: int

    @property
    def id(self) -> str:
        return f"{self.name}[{','.join(map(str, self.input_shape))}]"


CASES: tuple[Case, ...] = (
    Case("batch1-k3p1", (1, 2, 7, 7), (3, 2, 3, 3), 1),
    Case("nonsquare-k4x5p1", (2, 2, 9, 10), (3, 2, 4, 5), 1),
    Case("valid-k3p0", (2, 3, 8, 8), (4, 3, 3, 3), 0),
    Case("full-k3p2", (2, 3, 8, 8), (4, 3, 3, 3), 2),
    Case("overpad-k3p4", (2, 2, 6, 6), (3, 2, 3, 3), 4),
    Case("c3to8-k3p1", (2, 3, 32, 32), (8, 3, 3, 3), 1),
    Case("c3to8-k5p2", (2, 3, 32, 32), (8, 3, 5, 5), 2),
    # The shape of a weight gradient: the "kernel" is as large as the image (section 5.7).
    Case("weightgrad-k16p1", (4, 2, 16, 16), (6, 2, 16, 16), 1),
)


@dataclass
class Check:
    """The verdict for one backend x pass x dtype over all cases."""

    backend: str
    pass_: str
    dtype: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    exact: bool | None = None  # None: no case ran
    cases: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exact_required(self) -> bool:
        # A backend module promises exact sums of small integers with EXACT = True.
        return self.backend in kernels.available() and kernels.get(self.backend).exact

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "pass": self.pass_,
            "dtype": self.dtype,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "exact": self.exact,
            "exact_required": self.exact_required,
            "cases": self.cases,
            "skipped": list(self.skipped),
            "errors": list(self.errors),
        }


@dataclass
class Verification:
    """All checks, the cases they ran on, and how long it took."""

    checks: list[Check]
    cases: tuple[Case, ...]
    seconds: float
    unavailable: dict[str, str]

    def rows(self) -> list[dict[str, object]]:
        return [check.as_dict() for check in self.checks]

    def payload(self, machine: dict | None = None) -> dict[str, object]:
        """JSON-ready record (schema ``SCHEMA``) the report renders and keeps beside itself."""
        return {
            "schema": SCHEMA,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine or {},
            "seconds": self.seconds,
            "cases": [
                {
                    "id": c.id,
                    "input_shape": list(c.input_shape),
                    "kernel_shape": list(c.kernel_shape),
                    "padding": c.padding,
                }
                for c in self.cases
            ],
            "unavailable": dict(self.unavailable),
            "checks": self.rows(),
        }


def _rng(case: Case, kind: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{case.id}/{kind}".encode()))


def _operands(case: Case, integers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 inputs, kernels and upstream gradient for ``case`` (integers in -4..4 or normal)."""
    rng = _rng(case, "int" if integers else "normal")
    out_shape = kernels.output_shape(case.input_shape, case.kernel_shape, case.padding)
    shapes = (case.input_shape, case.kernel_shape, out_shape)
    if integers:
        return tuple(rng.integers(-4, 5, size=s).astype(np.float64) for s in shapes)
    return tuple(rng.standard_normal(s) for s in shapes)


def _compute(backend: str, pass_: str, x, k, g, padding: int) -> np.ndarray:
    if pass_ == "forward":
        return kernels.convolve(x, k, padding, backend=backend)
    if pass_ == "grad_inputs":
        return kernels.grad_inputs(g, k, padding, backend=backend)
    return kernels.grad_kernels(x, g, padding, backend=backend)


def run(
    backends: list[str] | None = None,
    cases: tuple[Case, ...] = CASES,
    dtypes: tuple[str, ...] = DTYPES,
) -> Verification:
    """Check ``backends`` (default: all available) on ``cases``; never raises for a backend."""
    start = time.perf_counter()
    backends = kernels.available() if backends is None else list(backends)
    checks = {(b, p, d): Check(b, p, d) for b in backends for p in PASSES for d in dtypes}
    for case in cases:
        for integers in (False, True):
            x64, k64, g64 = _operands(case, integers)
            for dtype in dtypes:
                x, k, g = (a.astype(dtype) for a in (x64, k64, g64))
                # The reference sees exactly the values the backend sees.
                ref = convolve_with_gradients(
                    x.astype(np.float64), k.astype(np.float64), g.astype(np.float64), case.padding
                )
                for backend in backends:
                    impl = kernels.get(backend)
                    reason = impl.supports(
                        case.input_shape, case.kernel_shape, case.padding, np.dtype(dtype)
                    )
                    for pass_ in PASSES:
                        check = checks[(backend, pass_, dtype)]
                        if reason:
                            if not integers:
                                check.skipped.append(f"{case.id}: {reason}")
                            continue
                        try:
                            actual = _compute(backend, pass_, x, k, g, case.padding)
                        except Exception as exc:  # noqa: BLE001 - reported, not hidden
                            check.errors.append(f"{case.id}: {type(exc).__name__}: {exc}")
                            check.exact = False if integers else check.exact
                            continue
                        _record(check, actual, ref[pass_], integers, case)
    elapsed = time.perf_counter() - start
    return Verification(
        checks=list(checks.values()),
        cases=tuple(cases),
        seconds=elapsed,
        unavailable=kernels.unavailable(),
    )


def _record(check: Check, actual: np.ndarray, expected: np.ndarray, integers: bool, case) -> None:
    if actual.shape != expected.shape or actual.dtype != np.dtype(check.dtype):
        check.errors.append(
            f"{case.id}: got {actual.dtype}{list(actual.shape)}, "
            f"expected {check.dtype}{list(expected.shape)}"
        )
        if integers:
            check.exact = False
        return
    actual64 = actual.astype(np.float64)
    if integers:
        equal = bool(np.array_equal(actual64, expected))
        check.exact = equal if check.exact is None else (check.exact and equal)
        return
    check.cases += 1
    abs_err = float(np.max(np.abs(actual64 - expected)))
    if not np.isfinite(abs_err):
        abs_err = float("inf")
    scale = float(np.max(np.abs(expected)))
    rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
    check.max_abs_error = max(check.max_abs_error, abs_err)
    check.max_rel_error = max(check.max_rel_error, rel_err)
