"""The engine's overhead around torch: a CIFAR-10 training step with the torch kernel against the
same network and batch in plain torch (``nnbench.torch_twin``), steps interleaved.

Each round times one twin step (pytest-benchmark's untimed ``setup``, timed here) and then one
engine step (timed by pytest-benchmark), so both see the same machine state; the record is the
engine's, with the twin's median and the ratio of medians in ``extra_info``. It runs at least
``BESIDE_MIN_ROUNDS`` rounds, as the benchmarks with calls beside them: in the 2-core runs of
bc9fd76, the 3 rounds that ``--bench-budget 0.5`` alone gave put the ratio at 1.14 to 1.22, where
runs of 20 rounds and more gave 1.12 to 1.16.
"""

from __future__ import annotations

import statistics

import pytest

import kernels
from nnbench import bench
from tests.benchmarks.conftest import paired_rounds


@pytest.mark.quick
@pytest.mark.parametrize("model", ["cifar10-fast"])
def test_engine_overhead(benchmark, bench_threads, bench_budget, model):
    if "torch" not in kernels.available():
        pytest.skip("the torch kernel is not available")
    engine = bench.train_step_call(model, "torch")
    twin = bench.twin_step_call(model)
    # a ratio of medians needs rounds, whatever the budget
    rounds = paired_rounds(bench.time_call(engine.fn) + bench.time_call(twin.fn), bench_budget)
    twin_times: list[float] = []
    benchmark.group = f"overhead {model}"
    loss = benchmark.pedantic(
        engine.fn,
        setup=lambda: twin_times.append(bench.time_call(twin.fn)),
        rounds=rounds,
        warmup_rounds=1,
        iterations=1,
    )
    verdict = engine.check(loss)
    twin_median = statistics.median(twin_times[1:])  # the first belongs to the warm-up round
    engine_median = benchmark.stats.stats.median
    spec = bench.STEP_MODELS[model]()
    benchmark.extra_info.update(
        bench.extra_info(
            "torch",
            "overhead",
            threads=bench_threads,
            verdict=verdict,
            suite="overhead",
            label=model,
            input_shape=(spec.batch_size, *spec.input_shape),
            dtype="float32",
            flops=engine.flops,
            twin_median_s=twin_median,
            twin_times_s=twin_times[1:],
            ratio=engine_median / twin_median,
        )
    )
    assert verdict.passed, verdict.message()
