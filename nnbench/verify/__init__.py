"""One verification core: the cases, their seeded operands, the tolerance table and the compare.

Every check of a convolution result in nnbench goes through here: the unit tests, the
benchmarks' post-timing checks and the report's verification matrix. The same case has the same
id everywhere (``ConvCase.id``), draws the same operands from the same seed
(``operands``), is held to the same bound (``TOLERANCES``) and gets a ``Verdict`` that can fail,
naming the error, the bound and the worst element (``compare``).

* ``cases``       ``ConvCase`` (shapes, padding, dtype, readable id) and ``operands`` (seeded
                  inputs with their float64 torch reference, computed once on first use);
* ``tolerances``  the one table of (rtol, atol) per (backend, dtype), each entry justified;
* ``compare``     ``compare(...) -> Verdict`` and ``assert_close`` (a verdict that raises);
* ``check``       ``check_backend`` (run a backend's pass on a case and judge it) and
                  ``result_verdict`` (judge a result already computed, as after a benchmark).
"""

from nnbench.verify.cases import (
    CHECK_CASES,
    DTYPES,
    PASSES,
    ConvCase,
    Operands,
    operands,
    seed_for,
)
from nnbench.verify.check import check_backend, result_verdict
from nnbench.verify.compare import Verdict, assert_close, compare
from nnbench.verify.tolerances import TOLERANCES, Tol, tolerance

__all__ = [
    "CHECK_CASES",
    "DTYPES",
    "PASSES",
    "TOLERANCES",
    "ConvCase",
    "Operands",
    "Tol",
    "Verdict",
    "assert_close",
    "check_backend",
    "compare",
    "operands",
    "result_verdict",
    "seed_for",
    "tolerance",
]
