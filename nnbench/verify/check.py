"""Checking one backend: run a pass on a case's operands and judge the result."""

from __future__ import annotations

import math

import kernels
from nnbench.verify.cases import ConvCase, Operands, operands
from nnbench.verify.compare import Verdict, compare


def result_verdict(
    name: str, result, case: ConvCase, pass_: str, backend: str, ops: Operands, exact: bool = False
) -> Verdict:
    """``result`` of ``pass_`` against the float64 reference of ``ops``, with the case's dtype,
    the backend's tolerance and the pass's reduction length (or exactly, with ``exact``)."""
    return compare(
        name,
        result,
        ops.reference(pass_),
        dtype=case.dtype,
        backend=backend,
        reduction=case.reduction_length(pass_),
        exact=exact,
    )


def check_backend(
    backend: str, case: ConvCase, pass_: str, *, integer: bool = False, name: str | None = None
) -> Verdict:
    """Run ``backend``'s ``pass_`` through the public ``kernels`` function on the seeded
    operands of ``case`` (small integers with ``integer``) and judge the result; exact backends
    must be exact on integers. A backend that raises, or writes into its inputs, fails."""
    ops = operands(case, integer=integer)
    name = name or f"{backend} {pass_} {case.id}"
    try:
        result = kernels.PASS_FUNCTIONS[pass_](*ops.arguments(pass_), case.padding, backend=backend)
        ops.assert_unchanged(name)
    except Exception as exc:  # noqa: BLE001 - a failing backend is a failed verdict
        problem = f"raised {type(exc).__name__}: {exc}"
        return Verdict(name, False, math.inf, math.inf, 0.0, False, problem=problem)
    exact = integer and kernels.get(backend).exact
    return result_verdict(name, result, case, pass_, backend, ops, exact=exact)
