"""The timing protocol and the metadata of every benchmark record.

One protocol, used by the pytest-benchmark suite (``tests/benchmarks``) and, through that suite,
by the report's quick set (``run_suite``): one untimed call sizes the rounds to about a budget
of seconds (``choose_rounds``), pytest-benchmark times one call per round after one warm-up
round, then the result is checked against the float64 reference (a ``Verdict`` recorded with
the timings, so a fast wrong backend is reported as FAILED, never as fast) and one more untimed
call measures the peak memory. Numpy backends are also profiled once (``calls.profile_call``):
where their time goes, and the time of the same GEMMs alone, replayed with the same rounds.

``extra_info`` is what a record needs to be read without guessing: FLOPs, backend, pass, case,
threads asked for and in force, memory, verdict, breakdown and GEMM bound.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nnbench.verify import ConvCase, Verdict

#: Rounds of a timed benchmark are chosen so they take about the budget, within these bounds.
MIN_ROUNDS, MAX_ROUNDS = 3, 100
#: The name, in an auto record's rounds (``beside_rounds_s``), of a second call of the backend
#: auto chose: two identical calls in the same rounds, whose ratio is what the machine's noise
#: alone gives (``tests/benchmarks/test_bench_convolve.py``; the report reads it).
CONTROL = "control"


def choose_rounds(seconds_per_call: float, budget: float) -> int:
    """How many timed rounds fit ``budget`` seconds, at least MIN_ROUNDS, at most MAX_ROUNDS."""
    if seconds_per_call <= 0:
        return MAX_ROUNDS
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, round(budget / seconds_per_call))))


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one ``fn()`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    """The median of ``rounds`` timed calls of ``fn`` after one warm-up call (the suite's
    protocol, for a call timed on its own: ``scripts/probe_threads.py``'s grid)."""
    fn()
    return statistics.median(time_call(fn) for _ in range(max(1, rounds)))


def interleaved(
    *calls: Callable[[], object], rounds: int, warm_up: bool = True, seed: int = 0
) -> tuple[list[float], ...]:
    """Time ``calls`` in rounds, each once per round, ``rounds`` rounds (after one warm-up call
    of each, unless ``warm_up`` is false): every call sees the same machine state (turbo,
    caches, neighbours) round by round. Each round runs them in a new random order (seeded: the
    same sequence of orders for the same ``seed``), so that what a call leaves behind (cold
    caches, pool or OpenMP threads asleep or spinning) is the same mix of costs for all of them;
    a fixed or rotated order gives each call mostly one predecessor. One list of seconds per
    call, in the order given."""
    if warm_up:
        for call in calls:
            call()
    times: tuple[list[float], ...] = tuple([] for _ in calls)
    order = list(range(len(calls)))
    shuffle = random.Random(seed).shuffle
    for _ in range(max(1, rounds)):
        shuffle(order)
        for index in order:
            times[index].append(time_call(calls[index]))
    return times


def thread_counts() -> dict[str, int | None]:
    """Threads in force now: numpy's BLAS (threadpoolctl) and torch's intra-op pool."""
    import sys

    from threadpoolctl import threadpool_info

    blas = [pool.get("num_threads") for pool in threadpool_info() if pool.get("user_api") == "blas"]
    torch = sys.modules.get("torch")  # only if loaded: asking must not load it
    return {
        "blas_threads": max(blas) if blas else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }


def worst_verdict(verdicts: Verdict | Sequence[Verdict] | None) -> Verdict | None:
    """The verdict to record for a call: the first failed one, else the largest error."""
    if verdicts is None or isinstance(verdicts, Verdict):
        return verdicts
    failed = [v for v in verdicts if not v.passed]
    if failed:
        return failed[0]
    return max(verdicts, key=lambda v: v.max_rel_error, default=None)


def extra_info(
    backend: str,
    pass_: str,
    case: ConvCase | None = None,
    *,
    flops: int | None = None,
    threads: int | None = None,
    peak_memory: int | None = None,
    memory_method: str | None = None,
    verdict: Verdict | None = None,
    suite: str | None = None,
    label: str | None = None,
    input_shape: Sequence[int] | None = None,
    kernel_shape: Sequence[int] | None = None,
    padding: int | None = None,
    dtype: str | None = None,
    **more,
) -> dict:
    """The ``extra_info`` of one benchmark record.

    From ``case`` come suite, label, shapes, padding, dtype and FLOPs (the keyword arguments
    override them, and describe records without a case: layer, step, sgemm). ``threads`` is the
    count requested; the BLAS and torch counts actually in force are read here. ``more`` adds
    keys (the breakdown, the GEMM bound, the twin's timings).
    """
    info = {
        "suite": getattr(case, "suite", None),
        "label": None,
        "case_id": None,
        "input_shape": None,
        "kernel_shape": None,
        "padding": None,
        "dtype": None,
    }
    if case is not None:
        info.update(case.as_dict())
    overrides = {
        "suite": suite,
        "label": label,
        "padding": padding,
        "dtype": dtype,
        "input_shape": None if input_shape is None else list(input_shape),
        "kernel_shape": None if kernel_shape is None else list(kernel_shape),
    }
    info.update({key: value for key, value in overrides.items() if value is not None})
    if flops is None and case is not None:
        flops = case.flops
    return {
        "backend": backend,
        "pass": pass_,
        **info,
        "flops": None if flops is None else int(flops),
        **thread_counts(),
        "threads": threads,
        "peak_memory_bytes": None if peak_memory is None else int(peak_memory),
        "memory_method": memory_method if peak_memory is not None else None,
        "max_abs_error": None if verdict is None else verdict.as_dict()["max_abs_error"],
        "verdict": None if verdict is None else verdict.as_dict(),
        **more,
    }


#: Where the suite lives, beside the package in a checkout of the repository.
SUITE_DIR = Path(__file__).resolve().parents[2] / "tests" / "benchmarks"


def run_suite(
    json_path: str | Path,
    *,
    marker: str | None = None,
    keyword: str | None = None,
    threads: int | None = None,
    budget: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> int:
    """Run the pytest-benchmark suite in this process and write its JSON to ``json_path``.

    ``marker`` / ``keyword`` select tests (``-m`` / ``-k``); ``threads`` and ``budget`` are the
    suite's ``--bench-threads`` and ``--bench-budget``. ``progress(done, total, test_id)`` is
    called after each test. Returns pytest's exit code (1 when a test failed: a wrong result is
    still saved, with its failed verdict). The suite is the repository's ``tests/benchmarks``;
    ``FileNotFoundError`` where this installation has none. Like every benchmark run, it applies
    ``nnbench.runtime.configure()`` (the CLIs' tuning) to this process.
    """
    import pytest

    if not SUITE_DIR.is_dir():
        raise FileNotFoundError(
            f"the benchmark suite {SUITE_DIR} is not here: run from a checkout of the repository"
        )
    args = [
        str(SUITE_DIR),
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--rootdir={SUITE_DIR.parents[1]}",
    ]
    if marker:
        args += ["-m", marker]
    if keyword:
        args += ["-k", keyword]
    if threads is not None:
        args += ["--bench-threads", str(threads)]
    if budget is not None:
        args += ["--bench-budget", str(budget)]
    plugins = [_Progress(progress)] if progress is not None else []
    return int(pytest.main(args, plugins=plugins))


class _Progress:
    """A pytest plugin that reports (done, total, test id) after each test."""

    def __init__(self, report: Callable[[int, int, str], None]):
        self.report, self.total, self.done = report, 0, 0

    def pytest_collection_finish(self, session) -> None:
        self.total = len(session.items)

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        self.done += 1
        self.report(self.done, self.total, nodeid.rsplit("::", 1)[-1])
