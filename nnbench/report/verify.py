"""The verification matrix, computed on the spot through the verification core.

For every available backend x pass (forward, grad_inputs, grad_kernels) x dtype (float32,
float64) x case of ``nnbench.verify.CHECK_CASES`` (the shapes the unit tests check), twice:

* normal operands: the result against the float64 torch reference, within the backend's entry
  of the tolerance table (``nnbench.verify.compare``);
* small-integer operands (-4..4, every sum exact): backends that promise exactness
  (``EXACT = True``) must equal the reference; the others are held to their tolerance.

Each (backend, pass, dtype) gets one ``Check``: PASS when every case passed, with the cases it
covered, the cases the backend declines (its ``supports``), every failed case with its error
and bound, and the case closest to its bound. A backend that raises fails that case with the
error; nothing stops the matrix. The calls run on one thread: the arrays are tiny, where thread
start-up would dominate, and thread independence has tests of its own
(``tests/test_kernels.py``).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field

import kernels
from nnbench.report.load import VERIFICATION_SCHEMA as SCHEMA
from nnbench.verify import CHECK_CASES, DTYPES, PASSES, ConvCase, check_backend

OPERANDS = ("normal", "integer")


def route(backend: str, pass_: str) -> str | None:
    """How ``backend`` computes ``pass_`` when it says so (its module's ``ROUTES``)."""
    routes = getattr(kernels.get(backend).module, "ROUTES", None) or {}
    return routes.get(pass_)


def rerouted(backend: str, pass_: str) -> str | None:
    """The other backend's algorithm a pass goes through ("im2col"), or None when the backend
    computes the pass itself."""
    return via(backend, route(backend, pass_))


def via(backend: str, route_text: str | None) -> str | None:
    """The algorithm a route names first, when it is not ``backend``'s own ("im2col (Winograd
    does not apply)" -> "im2col")."""
    first = route_text.split()[0] if route_text else backend
    return None if first == backend else first


@dataclass
class Check:
    """One cell of the matrix: ``backend`` computing ``pass_`` in ``dtype`` on every case."""

    backend: str
    pass_: str
    dtype: str
    exact_required: bool
    route: str | None = None
    checked: int = 0  # (case, operands) pairs compared
    failures: list[dict] = field(default_factory=list)  # verdicts of the failed pairs
    skipped: list[dict] = field(default_factory=list)  # {"case", "reason"}
    closest: dict | None = None  # the passed verdict with the largest error / bound
    exact_equal: bool | None = None  # integer operands equal the reference (exact backends)

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, case: ConvCase, kind: str, verdict) -> None:
        self.checked += 1
        record = {"case": case.id, "label": case.label, "operands": kind, **verdict.as_dict()}
        if kind == "integer" and self.exact_required:
            self.exact_equal = verdict.passed and (self.exact_equal is not False)
        if not verdict.passed:
            self.failures.append(record)
        elif _margin(record) >= _margin(self.closest):
            self.closest = record

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "pass": self.pass_,
            "dtype": self.dtype,
            "passed": self.passed,
            "exact_required": self.exact_required,
            "exact_equal": self.exact_equal,
            "route": self.route,
            "checked": self.checked,
            "failed": len(self.failures),
            "failures": self.failures,
            "skipped": self.skipped,
            "closest": self.closest,
        }


def _margin(record: dict | None) -> float:
    """error / bound at the worst element of a passed verdict (0 for an exact match)."""
    if record is None:
        return -1.0
    error = record.get("max_abs_error") or 0.0
    bound = record.get("bound") or 0.0
    return error / bound if bound > 0 else 0.0


def run(
    backends: list[str] | None = None,
    cases: tuple[ConvCase, ...] = CHECK_CASES,
    dtypes: tuple[str, ...] = DTYPES,
    machine: dict | None = None,
) -> dict:
    """Check ``backends`` (default: every available one) on ``cases``; the JSON-ready payload
    (schema ``SCHEMA``) the report renders and keeps beside itself. Never raises for a backend."""
    from nnbench.machine import pinned_threads

    start = time.perf_counter()
    backends = kernels.available() if backends is None else list(backends)
    checks = {
        (b, p, d): Check(b, p, d, kernels.get(b).exact, route(b, p))
        for b in backends
        for p in PASSES
        for d in dtypes
    }
    with pinned_threads(1):
        for base in cases:
            for dtype in dtypes:
                case = base.with_dtype(dtype)
                for kind in OPERANDS:
                    for backend in backends:
                        reason = case.unsupported_by(backend)
                        for pass_ in PASSES:
                            check = checks[(backend, pass_, dtype)]
                            if reason:
                                if kind == "normal":
                                    check.skipped.append({"case": case.id, "reason": reason})
                                continue
                            check.add(case, kind, _verdict(backend, case, pass_, kind))
    return {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine or {},
        "seconds": time.perf_counter() - start,
        "threads": 1,
        "cases": [case.as_dict() for case in cases],
        "operands": list(OPERANDS),
        "unavailable": kernels.unavailable(),
        "checks": [check.as_dict() for check in checks.values()],
    }


def _verdict(backend: str, case: ConvCase, pass_: str, kind: str):
    name = f"{backend} {pass_} {case.id} ({kind})"
    return check_backend(backend, case, pass_, integer=kind == "integer", name=name)


def failed_backends(payload: dict | None) -> dict[str, list[dict]]:
    """Backend -> its failed checks, from a verification payload."""
    failed: dict[str, list[dict]] = {}
    for check in (payload or {}).get("checks", []):
        if not check["passed"]:
            failed.setdefault(check["backend"], []).append(check)
    return failed
