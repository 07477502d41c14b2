"""Plumbing shared by the benchmarks: one thread count for the whole session, the timing
protocol of every test (``measure``), and the machine description saved with each run.

Options (registered in ``tests/conftest.py`` so they work from the repository root, as in
``pytest --benchmark-only --bench-threads 1``; the environment variables work too):

``--bench-threads N`` / ``NNBENCH_BENCH_THREADS``
    BLAS (threadpoolctl) and torch intra-op threads, the same for every backend, for the whole
    session. Default: all cores.
``--bench-budget SECONDS`` / ``NNBENCH_BENCH_BUDGET``
    About how long the timed rounds of one benchmark take; the rounds are that divided by the
    duration of one call, clamped to [bench.MIN_ROUNDS, bench.MAX_ROUNDS].

Other processes on the same cores distort timings (a 2-thread GEMM waits for its slower
thread), so every record carries the 1-minute load average at its end and the machine info the
load at the start and end of the session: compare them with the thread count before trusting a
run.

``auto`` plans afresh in each session: its choices go to a cache file of the session's own
(unless ``NNBENCH_AUTO_CACHE`` names one), so a run times the choices made in that run's
machine state. With the user cache, one plan made in a disturbed moment (on the 2-core AMD
EPYC, conv3's forward planned while other jobs ran: im2col 6.0 ms, torch 8.4 ms, where both
take 2.4-3.8 ms alone) was reused by every later run, which measured auto at 1.37x the fastest.
(auto now puts a cached choice on trial again with its finalists in each process; a session
still plans from the race, so that each run measures auto's whole choice, not a cached one.)
"""

from __future__ import annotations

import gc
import io
import os
import statistics

import pytest

from nnbench import auto, bench, machine, runtime

LOAD_AT_START = pytest.StashKey[list]()

THREADS_ENV = "NNBENCH_BENCH_THREADS"
BUDGET_ENV = "NNBENCH_BENCH_BUDGET"
#: Seconds of timed rounds per benchmark (auto's, with its candidates timed beside it: twice
#: that): up to MAX_ROUNDS rounds for the fast calls, MIN_ROUNDS for the slow ones whatever the
#: budget. The report's quick set and the committed runs use less (``--bench-budget 0.5``).
DEFAULT_BUDGET = 1.5
#: Rounds of the GEMM-bound replay, each with one more timed call of the benchmarked function
#: beside it (after the benchmark's own rounds).
BOUND_ROUNDS = 15
#: Rounds at least of a benchmark with calls beside it, whatever the budget: its ratios are
#: medians over rounds of per-round ratios. On the 2-core VM two identical calls timed so came
#: out up to 1.27x apart with the 3 to 5 rounds that --bench-budget 0.5 gives slow calls, and
#: at most 1.06x with the 8 or more of --bench-budget 2.
BESIDE_MIN_ROUNDS = 11


def paired_rounds(seconds: float, budget: float) -> int:
    """Rounds of a benchmark whose result is a ratio of calls timed in the same rounds, one
    round of them taking ``seconds``: what ``budget`` gives, and at least ``BESIDE_MIN_ROUNDS``."""
    return max(bench.choose_rounds(seconds, budget), BESIDE_MIN_ROUNDS)


def _setting(config, option: str, env: str, convert, default):
    value = config.getoption(option, default=None)
    if value is None and os.environ.get(env):
        try:
            value = convert(os.environ[env])
        except ValueError as exc:
            raise pytest.UsageError(f"{env} must be a number, got {os.environ[env]!r}") from exc
    return default if value is None else value


def _load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS does not tell)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def pytest_configure(config):
    """The runtime tuning the CLIs make (``nnbench.runtime.configure``), before anything loads
    torch, when benchmarks run: recorded in every run's machine info. Unit tests run untuned."""
    if config.getoption("benchmark_only", default=False):
        runtime.configure()


def pytest_unconfigure(config):
    """Close the handles to the ``--benchmark-json`` file that pytest-benchmark leaves open.

    Versions that declare the option as ``argparse.FileType("wb")`` (4.x, 5.0) get a handle to
    the file from every parse of the arguments, and pytest parses them more than once; the one
    written through is closed, the others never are. In a process that goes on after the run
    (``nnbench.bench.run_suite``, the report's quick set) each would be freed at some later,
    unrelated moment, with a ResourceWarning there. They were never written: closing writes
    nothing. Newer versions take a path and leave nothing open.
    """
    written = config.getoption("benchmark_json", default=None)
    if not isinstance(written, io.IOBase):  # a Path, or no JSON asked for
        return
    for obj in gc.get_objects():
        if type(obj) is io.BufferedWriter and not obj.closed and obj.name == written.name:
            obj.close()


def requested_threads(config) -> int | None:
    """The thread count asked for (None: all cores)."""
    threads = _setting(config, "--bench-threads", THREADS_ENV, int, None)
    if threads is not None and threads < 1:
        raise pytest.UsageError(f"--bench-threads must be >= 1, got {threads}")
    return threads


@pytest.fixture(scope="session", autouse=True)
def fresh_auto_plans(request, tmp_path_factory):
    """auto's choices in a cache file of this session's own (see the module docstring), and
    none held from before; the environment and auto's state are put back afterwards. Only
    when benchmarks run (a unit-test session collects these tests and skips them)."""
    if not request.config.getoption("benchmark_only", default=False) or os.environ.get(
        auto.CACHE_ENV
    ):
        yield auto.cache_path()
        return
    path = tmp_path_factory.mktemp("auto") / "plans.json"
    auto.forget()
    os.environ[auto.CACHE_ENV] = str(path)
    try:
        yield path
    finally:
        del os.environ[auto.CACHE_ENV]
        auto.forget()


@pytest.fixture(scope="session", autouse=True)
def bench_threads(request) -> int:
    """Pins BLAS and torch to the requested threads for every benchmark; the count in force."""
    request.config.stash[LOAD_AT_START] = _load_average()
    with machine.pinned_threads(requested_threads(request.config)) as threads:
        yield threads


@pytest.fixture(scope="session")
def bench_budget(request) -> float:
    budget = _setting(request.config, "--bench-budget", BUDGET_ENV, float, DEFAULT_BUDGET)
    if budget <= 0:
        raise pytest.UsageError(f"--bench-budget must be > 0 seconds, got {budget}")
    return budget


@pytest.fixture
def measure(benchmark, bench_threads, bench_budget):
    """Time one call the nnbench way (``nnbench.bench.runner``) and attach its ``extra_info``.

    ``measure(call, group=..., backend=..., pass_=..., case=None, threads=None, profile=False,
    beside=None, **info)``: one untimed call sizes the rounds, ``benchmark.pedantic`` times
    ``call.fn`` (one call per round, after one warm-up round), then the last result is checked
    against the float64 reference and one more untimed call measures the peak memory. With
    ``profile``, the call is also run once under ``kernels._profile`` (seconds per stage), and
    the GEMMs it ran are replayed alone, interleaved with the call in ``BOUND_ROUNDS`` more
    rounds: ``gemm_bound_s`` is the replay's median, ``gemm_bound_call_s`` the call's in those
    same rounds, whose ratio is the distance to the bound that the report shows (a ratio of
    two medians from one machine state, however the state drifted since the benchmark's own
    rounds). ``beside`` ({name: function}) are calls timed in the same rounds, each once
    before the benchmarked call (interleaved: the same machine state; in a new random order
    each round, seeded), the rounds sized to twice the budget for them all (at least
    ``BESIDE_MIN_ROUNDS``); their medians are ``beside_median_s`` and their times, round by
    round, ``beside_rounds_s`` (``bench.time_call``'s clock, as the suite's own timer unless
    ``--benchmark-timer`` says otherwise). A failed verdict is saved with the timings (the report marks the backend
    FAILED) and fails the test. ``info`` goes to ``bench.extra_info``.
    """

    def run(call, *, group, backend, pass_, case=None, threads=None, profile=False, beside=None,
            **info):  # fmt: skip
        benchmark.group = group
        beside = beside or {}
        seconds = bench.time_call(call.fn) + sum(map(bench.time_call, beside.values()))
        if beside:
            rounds = paired_rounds(seconds, bench_budget * 2)
        else:
            rounds = bench.choose_rounds(seconds, bench_budget)
        beside_times = {name: [] for name in beside}

        def setup():  # the calls beside, one round of ``bench.interleaved`` before every
            # round's timed call, its order seeded by the round: a new order each round, the
            # same sequence of orders in every benchmark
            seed = len(next(iter(beside_times.values())))
            round_ = bench.interleaved(*beside.values(), rounds=1, warm_up=False, seed=seed)
            for times, (taken,) in zip(beside_times.values(), round_):
                times.append(taken)

        result = benchmark.pedantic(call.fn, setup=setup if beside else None, rounds=rounds,
                                    warmup_rounds=1, iterations=1)  # fmt: skip
        verdict = bench.worst_verdict(call.check(result))
        del result
        memory = bench.peak_memory_bytes(call.fn)
        more = {}
        if beside:  # the first of each belongs to the warm-up round, any after the timed rounds
            # to a profiling run (--benchmark-cprofile); --benchmark-disable runs setup once
            kept = {name: times[1 : 1 + rounds] or times for name, times in beside_times.items()}
            more["beside_median_s"] = {name: statistics.median(t) for name, t in kept.items()}
            more["beside_rounds_s"] = {name: [round(x, 8) for x in t] for name, t in kept.items()}
        if profile:
            stages, gemm_calls, replay = bench.profile_call(call.fn)
            more.update(breakdown_s=stages, gemm_calls=gemm_calls, gemm_bound_s=None)
            if replay is not None:
                with_call, alone = bench.interleaved(call.fn, replay, rounds=BOUND_ROUNDS)
                more["gemm_bound_s"] = statistics.median(alone)
                more["gemm_bound_call_s"] = statistics.median(with_call)
        benchmark.extra_info.update(
            bench.extra_info(
                backend,
                pass_,
                case,
                threads=bench_threads if threads is None else threads,
                peak_memory=memory,
                memory_method=bench.memory_method(),
                verdict=verdict,
                **more,
                **info,
            )
        )
        benchmark.extra_info["rounds_budget_seconds"] = bench_budget
        # Other processes on the same cores distort timings; this says when they were there.
        load = _load_average()
        benchmark.extra_info["load_average_1min"] = load[0] if load else None
        if verdict is not None and not verdict.passed:
            pytest.fail(verdict.message(), pytrace=False)

    return run


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add nnbench's description (CPU, cores, BLAS and torch threads, versions) to the run."""
    described = machine.machine_info()
    described["bench_threads_requested"] = requested_threads(config)
    with machine.pinned_threads(requested_threads(config)):
        described["threads_in_benchmarks"] = machine.thread_info()
    described["load_average_at_start"] = config.stash.get(LOAD_AT_START, None)
    described["load_average_at_end"] = _load_average()
    machine_info["nnbench"] = described


def pytest_collection_modifyitems(config, items):
    """Let ``-k`` select by suite and label (``-k recipe``, ``-k "kernel_size and fft"``):
    case ids hold commas, which ``-k`` expressions cannot. A module with a ``SUITE`` of its own
    (the scaling group, which times the recipe's layers) is selected by that name instead."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cases = getattr(item.module, "CASES", None)
        if "case_id" in params and cases is not None:
            case = cases[params["case_id"]]
            suite = getattr(item.module, "SUITE", case.suite)
            item.extra_keyword_matches.update({suite, case.label})
