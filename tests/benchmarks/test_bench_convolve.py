"""``kernels.convolve`` and both gradients: every available backend x every pass x every case.

Ids read ``<backend>-<pass>-<case id>`` (``im2col-forward-k3p1[128,16,16,16]->32-float32``);
each (case, pass) is one group, so a shape's backends sit side by side in the table. A backend
whose ``supports`` declines a case is skipped with its reason. Every backend of a group gets the
same operands (seeded from the case id). Every record carries where the backend's time went
(``breakdown_s``) and the time of its GEMMs alone (``gemm_bound_s``). ``auto``, warmed up (its
plan settled: ``auto.settle``), records which backend it ran (``auto_choice``); auto itself
and the candidates it timed to the end are timed again in its rounds, in a new order each
round (``beside_median_s``, ``beside_rounds_s``): auto against the fastest in the same machine
state. The backend auto chose is timed there a second time (``control``,
``nnbench.bench.CONTROL``): two identical calls, whose ratio is what noise alone gives
at that many rounds. The quick set (``-m quick``: the report's) is the recipe layers and two
kernel sizes.
"""

from __future__ import annotations

import pytest

import kernels
from nnbench import bench

CASES = {case.id: case for case in bench.all_cases()}
#: Every backend, and ``auto`` (planned and settled before the rounds, which reuse the plan).
BACKENDS = [*kernels.available(), "auto"]
QUICK = {case.id for case in bench.quick_cases()}


def _params():
    for case in CASES.values():
        marks = [pytest.mark.quick] if case.id in QUICK else []
        for pass_ in bench.PASSES:
            for backend in BACKENDS:
                yield pytest.param(
                    backend, pass_, case.id, id=f"{backend}-{pass_}-{case.id}", marks=marks
                )


@pytest.mark.parametrize(("backend", "pass_", "case_id"), list(_params()))
def test_convolve(measure, backend, pass_, case_id):
    case = CASES[case_id]
    try:
        call = bench.make_call(backend, case, pass_)
    except bench.Unsupported as exc:
        pytest.skip(f"{backend} does not support {case.id}: {exc}")
    more = {}
    if backend == "auto":
        from nnbench import auto

        auto.settle(call.fn)  # warmed up: planned, and the finalists' trial on its calls over
        plan = auto.plan(pass_, case.input_shape, case.kernel_shape, case.padding, case.dtype)
        more = {"auto_choice": plan.backend, "auto_seconds": plan.seconds,
                "auto_race": plan.race, "auto_finalists": list(plan.finalists),
                "auto_trial": plan.trial, "auto_source": plan.source}  # fmt: skip
        # auto itself and the candidates it timed to the end, timed in the same rounds, in a
        # new order each round: auto against the fastest in the same machine state
        timed = [name for name, seconds in plan.seconds.items() if seconds is not None]
        more["beside"] = {"auto": call.fn}
        more["beside"].update({name: bench.make_call(name, case, pass_).fn for name in timed})
        if plan.backend in timed:  # the control: the chosen backend twice in the same rounds
            more["beside"][bench.CONTROL] = bench.make_call(plan.backend, case, pass_).fn
    measure(call, group=f"{case.id} {pass_}", backend=backend, pass_=pass_, case=case,
            profile=backend != "auto", **more)  # fmt: skip
