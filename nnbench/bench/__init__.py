"""The benchmark suite's building blocks, shared by ``tests/benchmarks`` and the report.

* ``cases``   which convolutions are timed (``recipe_cases``, the sweeps, ``quick_cases``),
              each a ``nnbench.verify.ConvCase`` with its suite, and at which thread counts
              the scaling group times them (``thread_ladder``, ``oversubscribed_threads``);
* ``calls``   the timed calls and their checks (``make_call``, ``layer_call``,
              ``train_step_call``, ``twin_step_call``, ``sgemm_call``, ``gemm_reference_call``,
              ``profile_call``);
* ``memory``  the peak memory of one cold call;
* ``runner``  the timing protocol, ``extra_info`` and ``run_suite`` (the suite run in-process,
              which is how the report times its quick set).
"""

from nnbench.bench.calls import (
    STEP_MODELS,
    StepModel,
    TimedCall,
    Unsupported,
    cifar10_step_model,
    gemm_reference_call,
    layer_call,
    make_call,
    profile_call,
    sgemm_call,
    train_step_call,
    twin_step_call,
)
from nnbench.bench.cases import (
    OVERSUBSCRIPTION,
    SUITES,
    BenchCase,
    all_cases,
    batch_sweep,
    channel_sweep,
    kernel_size_sweep,
    oversubscribed_threads,
    quick_cases,
    recipe_cases,
    thread_ladder,
)
from nnbench.bench.memory import memory_method, peak_memory_bytes
from nnbench.bench.runner import (
    CONTROL,
    choose_rounds,
    extra_info,
    interleaved,
    median_seconds,
    run_suite,
    thread_counts,
    time_call,
    worst_verdict,
)
from nnbench.verify import PASSES

__all__ = [
    "CONTROL",
    "OVERSUBSCRIPTION",
    "PASSES",
    "STEP_MODELS",
    "SUITES",
    "BenchCase",
    "StepModel",
    "TimedCall",
    "Unsupported",
    "all_cases",
    "batch_sweep",
    "channel_sweep",
    "choose_rounds",
    "cifar10_step_model",
    "extra_info",
    "gemm_reference_call",
    "interleaved",
    "kernel_size_sweep",
    "layer_call",
    "make_call",
    "median_seconds",
    "memory_method",
    "oversubscribed_threads",
    "peak_memory_bytes",
    "profile_call",
    "quick_cases",
    "recipe_cases",
    "run_suite",
    "sgemm_call",
    "thread_counts",
    "thread_ladder",
    "time_call",
    "train_step_call",
    "twin_step_call",
    "worst_verdict",
]
