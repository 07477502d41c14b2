"""``kernels.convolve`` and both gradients: every available backend x every pass x every case.

Ids read ``<backend>-<pass>-<case id>`` (``im2col-forward-k3p1[128,16,16,16]->32``); each
(case, pass) is one group, so a shape's backends sit side by side in the table. A backend whose
``supports`` declines a case is skipped with its reason. Every backend of a group gets the same
operands (seeded from the case id).
"""

from __future__ import annotations

import pytest

import kernels
from nnbench import bench

CASES = {case.id: case for case in bench.all_cases()}


def _params():
    for case in CASES.values():
        for pass_ in bench.PASSES:
            for backend in kernels.available():
                yield pytest.param(backend, pass_, case.id, id=f"{backend}-{pass_}-{case.id}")


@pytest.mark.parametrize(("backend", "pass_", "case_id"), list(_params()))
def test_convolve(measure, backend, pass_, case_id):
    case = CASES[case_id]
    reason = bench.unsupported_reason(backend, case)
    if reason:
        pytest.skip(f"{backend} does not support {case.id}: {reason}")
    fn, check = bench.make_call(backend, case, pass_, bench.case_seed(case))
    measure(fn, check, group=f"{case.id} {pass_}", backend=backend, pass_=pass_, case=case)
