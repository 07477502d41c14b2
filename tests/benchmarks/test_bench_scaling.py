"""How each backend scales with threads: the recipe layers at 1, 2, 4, ... threads up to the cores.

``pytest --benchmark-only -k scaling``. Every backend x pass x recipe layer is timed at each
thread count of ``bench.thread_ladder`` (BLAS, torch and the engine's pool pinned together for
that test), beside the bare numpy GEMM of the layer's im2col shape at the same threads (backend
``gemm``): the reference line a numpy backend's speed-up is measured against. That GEMM is also
timed in each backend's own rounds (``beside_median_s``), so that the backend's time relative to
the GEMM at each thread count comes from one stretch of time. Records carry ``suite =
"scaling"`` and the thread count; groups read ``scaling <case id> <pass>``.

The oversubscribed test asks for more threads than there are cores
(``bench.oversubscribed_threads``, twice the cores) and times each backend x pass x recipe layer
there and at the cores in the same rounds (``beside``, "cores"): whether asking for too many
threads slows a backend down. Records carry ``suite = "oversubscribed"``; groups read
``oversubscribed <case id> <pass>``.
"""

from __future__ import annotations

import dataclasses

import pytest

import kernels
from nnbench import bench, machine

CASES = {case.id: case for case in bench.recipe_cases()}
SUITE = "scaling"  # for -k: ``-k recipe`` selects the recipe suite, not this group
LADDER = bench.thread_ladder(machine.cpu_count())
OVERSUBSCRIBED = bench.oversubscribed_threads(machine.cpu_count())


def _params():
    # a layer's thread counts one after another: the speed-up compares records minutes apart
    # at most, not the whole group's span
    for case in CASES.values():
        for threads in LADDER:
            yield pytest.param("gemm", "forward", case.id, threads,
                               id=f"scaling-gemm-{case.id}-t{threads}")  # fmt: skip
        for pass_ in bench.PASSES:
            for backend in kernels.available():
                for threads in LADDER:
                    yield pytest.param(
                        backend, pass_, case.id, threads,
                        id=f"scaling-{backend}-{pass_}-{case.id}-t{threads}",
                    )  # fmt: skip


@pytest.mark.parametrize(("backend", "pass_", "case_id", "threads"), list(_params()))
def test_scaling(measure, backend, pass_, case_id, threads):
    case = CASES[case_id]
    with machine.pinned_threads(threads):
        gemm = bench.gemm_reference_call(case)
        beside = {}
        if backend == "gemm":
            call = gemm
        else:
            call = _call_or_skip(backend, case, pass_)
            beside = {"gemm": gemm.fn}
        measure(
            call,
            group=f"scaling {case.id} {pass_}",
            backend=backend,
            pass_=pass_,
            case=case,
            threads=threads,
            suite="scaling",
            beside=beside,
        )


def _call_or_skip(backend, case, pass_):
    try:
        return bench.make_call(backend, case, pass_)
    except bench.Unsupported as exc:
        pytest.skip(f"{backend} does not support {case.id}: {exc}")


def _oversubscribed_params():
    for case in CASES.values():
        for pass_ in bench.PASSES:
            for backend in kernels.available():
                yield pytest.param(
                    backend, pass_, case.id,
                    id=f"oversubscribed-{backend}-{pass_}-{case.id}-t{OVERSUBSCRIBED}",
                )  # fmt: skip


@pytest.mark.parametrize(("backend", "pass_", "case_id"), list(_oversubscribed_params()))
def test_oversubscribed(measure, backend, pass_, case_id):
    # Each timed call first sets its thread count (``machine.thread_switch``: a few C calls,
    # paid alike by the call at the cores and the oversubscribed one).
    case = CASES[case_id]
    cores = machine.cpu_count()
    with machine.pinned_threads(OVERSUBSCRIBED):
        call = _call_or_skip(backend, case, pass_)

        def at(threads):
            switch = machine.thread_switch(threads)

            def fn():
                switch()
                return call.fn()

            return fn

        measure(
            dataclasses.replace(call, fn=at(OVERSUBSCRIBED)),
            group=f"oversubscribed {case.id} {pass_}",
            backend=backend,
            pass_=pass_,
            case=case,
            threads=OVERSUBSCRIBED,
            suite="oversubscribed",
            beside={"cores": at(cores)},
            cores_threads=cores,
        )
