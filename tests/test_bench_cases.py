"""Unit tests of ``nnbench.bench``: the benchmark cases, the timed calls and their checks, the
profile and GEMM replay, memory, the record metadata (no timing asserts)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import kernels
from kernels._registry import load
from nnbench import bench, recipes
from nnbench.bench.cases import KERNEL_SIZES, KERNEL_SWEEP_WIDTHS
from nnbench.machine import pinned_threads

TINY = bench.BenchCase("recipe", "tiny", (2, 3, 6, 5), (4, 3, 3, 3), 1)
SMALL = bench.BenchCase("recipe", "small", (4, 8, 10, 10), (6, 8, 3, 3), 1)


# --- cases ----------------------------------------------------------------------------------


def test_flops_by_hand_and_ids_read_like_shapes():
    case = bench.BenchCase("recipe", "conv2", (128, 16, 16, 16), (32, 16, 3, 3), 1)
    assert case.flops == 2 * 128 * 32 * 16 * 16 * 16 * 3 * 3 == 301_989_888
    assert case.flops == recipes.conv_flops(case.input_shape, case.kernel_shape, 1)
    assert case.id == "k3p1[128,16,16,16]->32-float32" and case.suite == "recipe"
    with pytest.raises(ValueError, match="suite"):
        bench.BenchCase("nope", "x", (1, 1, 3, 3), (1, 1, 3, 3), 1)


def test_case_lists_are_well_formed():
    suites = {
        "recipe": bench.recipe_cases(),
        "kernel_size": bench.kernel_size_sweep(),
        "channels": bench.channel_sweep(),
        "batch": bench.batch_sweep(),
    }
    everything = bench.all_cases()
    assert everything == [case for cases in suites.values() for case in cases]
    assert len({case.id for case in everything}) == len(everything)
    for suite, cases in suites.items():
        assert {case.suite for case in cases} == {suite}
        assert len({case.label for case in cases}) == len(cases), suite
        assert all(case.same_padding and case.dtype == "float32" for case in cases)
    assert {case.kernel_shape[2] for case in suites["kernel_size"]} == set(KERNEL_SIZES)
    assert len({case.input_shape[:2] for case in suites["kernel_size"]}) == len(KERNEL_SWEEP_WIDTHS)
    assert set(bench.quick_cases()) <= set(everything)


def test_recipe_cases_are_the_recipe_layers_at_its_batch():
    model = recipes.build_cifar10_model(kernel=kernels.available()[0], preset="fast")
    shapes = recipes.conv_layer_shapes(model, recipes.CIFAR10_PRESETS["fast"].batch_size)
    cases = bench.recipe_cases("fast")
    assert [(c.input_shape, c.kernel_shape, c.padding) for c in cases] == [
        (s["input"], s["kernels"], s["padding"]) for s in shapes
    ]
    assert [c.label for c in cases] == [f"fast/conv{i}" for i in range(1, len(shapes) + 1)]


@pytest.mark.parametrize(
    ("keyword", "modules"),
    [
        ("recipe", {"test_bench_convolve.py", "test_bench_layer.py"}),
        ("scaling", {"test_bench_scaling.py"}),
    ],
)
def test_k_selects_a_suite_by_its_name(keyword, modules):
    """``-k recipe`` is the recipe suite; the scaling group, which times the same layers, is
    ``-k scaling`` only."""
    root = Path(__file__).parent
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-k", keyword, str(root / "benchmarks")],
        capture_output=True, text=True, cwd=root.parent, check=True,
    ).stdout  # fmt: skip
    found = {line.split("::")[0].rsplit("/", 1)[-1] for line in listed.splitlines() if "::" in line}
    assert found == modules


@pytest.mark.parametrize(
    ("cores", "ladder"), [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (16, [1, 2, 4, 8, 16])]
)
def test_thread_ladder_doubles_up_to_the_cores(cores, ladder):
    assert bench.thread_ladder(cores) == ladder


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_the_oversubscribed_count_asks_for_more_threads_than_cores(cores):
    assert bench.oversubscribed_threads(cores) == bench.OVERSUBSCRIPTION * cores > cores


# --- make_call and its verdict --------------------------------------------------------------


@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("backend", kernels.available())
def test_make_call_runs_one_call_and_its_verdict_passes(backend, pass_):
    if TINY.unsupported_by(backend):
        pytest.skip(TINY.unsupported_by(backend))
    call = bench.make_call(backend, TINY, pass_)
    verdict = call.check(call())
    assert verdict.passed, verdict.message()
    assert call.flops == TINY.flops


def _fake_backend(monkeypatch, name, convolve, supports=None):
    """Register a backend module built from ``convolve`` (as the registry would load a file)."""
    module = SimpleNamespace(convolve=convolve)
    if supports is not None:
        module.supports = supports
    monkeypatch.setitem(kernels._BACKENDS, name, load(module, name))
    return name


def _torch_convolve(inputs, kernels_, padding):
    return kernels.get("torch").convolve(inputs, kernels_, padding)


WRONG_BACKENDS = {
    # cross-correlation instead of convolution: the classic flip mistake
    "unflipped": lambda x, k, p: _torch_convolve(x, np.ascontiguousarray(k[:, :, ::-1, ::-1]), p),
    # right up to 0.1%: a "fast" shortcut that loses accuracy
    "off-by-0.1%": lambda x, k, p: _torch_convolve(x, k, p) * x.dtype.type(1.001),
    # half-precision arithmetic
    "float16": lambda x, k, p: _torch_convolve(
        x.astype(np.float16).astype(x.dtype), k.astype(np.float16).astype(k.dtype), p
    ),
    # one output channel dropped
    "dropped-channel": lambda x, k, p: _torch_convolve(x, k * (np.arange(len(k)) > 0)[:, None, None, None].astype(k.dtype), p),
    # silently up-casts
    "float64-out": lambda x, k, p: _torch_convolve(x, k, p).astype(np.float64),
}  # fmt: skip


@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("wrong", list(WRONG_BACKENDS))
def test_a_wrong_backend_gets_a_failed_verdict(monkeypatch, wrong, pass_):
    name = _fake_backend(monkeypatch, f"wrong-{wrong}", WRONG_BACKENDS[wrong])
    call = bench.make_call(name, SMALL, pass_)
    verdict = call.check(call())
    assert not verdict.passed
    assert verdict.message().startswith(f"{name} {pass_} {SMALL.id}: ")


def test_a_0_1_percent_error_fails_even_the_largest_recipe_reduction(monkeypatch):
    """The weight gradient of the recipe's first layer sums n*oh*ow = 131072 products."""
    name = _fake_backend(monkeypatch, "off", WRONG_BACKENDS["off-by-0.1%"])
    case = bench.recipe_cases()[0]
    assert case.reduction_length("grad_kernels") == 128 * 32 * 32
    call = bench.make_call(name, case, "grad_kernels")
    assert not call.check(call()).passed


def test_a_backend_that_writes_into_its_inputs_is_caught(monkeypatch):
    def scribbles(x, k, p):
        result = _torch_convolve(x, k, p)
        x[0, 0, 0, 0] += 1.0
        return result

    name = _fake_backend(monkeypatch, "scribbles", scribbles)
    call = bench.make_call(name, TINY.with_dtype("float64"), "forward")
    with pytest.raises(AssertionError, match="modified its input"):
        call.check(call())


def test_wrong_shape_and_non_array_fail():
    call = bench.make_call("torch", TINY, "forward")
    assert "shape" in call.check(call()[:, :, 1:]).message()
    assert "not a numpy.ndarray" in call.check(call().tolist()).message()


def test_unsupported_case_raises_with_the_backends_reason(monkeypatch):
    name = _fake_backend(
        monkeypatch, "picky", _torch_convolve, supports=lambda x, k, p, dtype: "kernels too big"
    )
    assert TINY.unsupported_by(name) == "kernels too big"
    assert TINY.unsupported_by("torch") is None
    with pytest.raises(bench.Unsupported, match="kernels too big"):
        bench.make_call(name, TINY, "forward")
    with pytest.raises(bench.Unsupported, match="kernels too big"):
        bench.layer_call(name, TINY)


def test_make_call_refuses_an_unknown_pass():
    with pytest.raises(ValueError, match="pass"):
        bench.make_call("torch", TINY, "backward")


# --- layer, steps, GEMMs --------------------------------------------------------------------


@pytest.mark.parametrize("backend", kernels.available())
def test_layer_call_is_checked_against_the_reference(backend):
    if TINY.unsupported_by(backend):
        pytest.skip(TINY.unsupported_by(backend))
    call = bench.layer_call(backend, TINY)
    assert call.flops == 3 * TINY.flops
    outputs, grad_inputs = call()
    assert all(v.passed for v in call.check((outputs, grad_inputs)))
    failed = [v for v in call.check((outputs + 1, grad_inputs)) if not v.passed]
    assert [v.name for v in failed] == [f"{backend} layer {TINY.id} outputs"]


def test_layer_call_needs_same_padding():
    valid = bench.BenchCase("channels", "valid", (2, 3, 7, 6), (2, 3, 4, 5), 0)
    with pytest.raises(ValueError, match="same"):
        bench.layer_call("torch", valid)


def test_train_step_call_mnist():
    spec = bench.STEP_MODELS["mnist"]()
    call = bench.train_step_call(spec, None)
    assert call.flops == 3 * recipes.model_forward_flops(spec.build(None)) * spec.batch_size
    loss = call()
    assert math.isfinite(loss) and call.check(loss).passed
    assert "loss is nan" in call.check(float("nan")).message()


@pytest.mark.slow
def test_engine_and_twin_steps_run_the_same_batch():
    engine = bench.train_step_call("cifar10-fast", "torch")
    twin = bench.twin_step_call("cifar10-fast")
    assert engine.check(engine()).passed and twin.check(twin()).passed
    assert twin.flops == engine.flops
    with pytest.raises(ValueError, match="twin"):
        bench.twin_step_call("mnist")


def test_sgemm_and_gemm_reference_calls_are_checked():
    call = bench.sgemm_call(64)
    assert call.flops == 2 * 64**3
    result = call()
    assert call.check(result).passed and not call.check(result * 1.01).passed
    reference = bench.gemm_reference_call(TINY)
    assert reference.flops == TINY.flops and reference.check(reference()).passed


def test_interleaved_runs_every_call_once_a_round_in_seeded_random_orders():
    order = []
    calls = [lambda name=name: order.append(name) for name in "abc"]
    times = bench.interleaved(*calls, rounds=20)
    assert order[:3] == list("abc") and [len(t) for t in times] == [20, 20, 20]
    rounds = ["".join(order[i : i + 3]) for i in range(3, len(order), 3)]
    assert all(sorted(r) == list("abc") for r in rounds)
    assert len(set(rounds)) > 1  # not one fixed order
    assert {r[0] for r in rounds} == set("abc")  # each call is sometimes first
    order.clear()
    bench.interleaved(*calls, rounds=20, warm_up=False)
    assert ["".join(order[i : i + 3]) for i in range(0, len(order), 3)] == rounds  # seeded


def test_interleaved_gives_each_call_its_own_times(monkeypatch):
    from nnbench.bench import runner

    monkeypatch.setattr(runner, "time_call", lambda fn: fn())  # a call's "time" is its result
    times = bench.interleaved(lambda: 1.0, lambda: 2.0, lambda: 3.0, rounds=7)
    assert times == ([1.0] * 7, [2.0] * 7, [3.0] * 7)


# --- profile: breakdown and the GEMMs alone -------------------------------------------------


@pytest.mark.parametrize("backend", ["im2col", "loop", "fft"])
def test_profile_records_stages_and_replays_the_same_gemms(backend):
    if backend not in kernels.available():
        pytest.skip(f"{backend} is not available")
    call = bench.make_call(backend, SMALL, "forward")
    stages, gemm_calls, replay = bench.profile_call(call.fn)
    assert gemm_calls >= 1 and replay is not None
    assert "gemm" in stages and all(seconds >= 0 for seconds in stages.values())
    assert set(stages) <= {"layout", "gemm", "reduction", "col2im", "fft", "transform"}
    replay()  # runs the recorded GEMMs alone, on fresh operands
    assert bench.median_seconds(replay, 2) > 0


@pytest.mark.parametrize("backend", ["im2col", "loop", "winograd"])
@pytest.mark.parametrize("pass_", bench.PASSES)
def test_the_replay_runs_the_gemms_that_ran_as_they_ran(backend, pass_):
    """Same shapes, strides, BLAS thread limit and grouping into parallel sections."""
    ran, replayed = _ran_and_replayed(backend, SMALL, pass_)

    def signature(profile):
        sections = sorted({g.section for g in profile.gemms})
        return sorted(
            (sections.index(g.section), g.a, g.b, g.out, g.blas_threads) for g in profile.gemms
        )

    assert ran.gemms and signature(replayed) == signature(ran)


#: A case whose first-layer channels take the loop backend's stacked branch (shifted copies of
#: one padded image, each kernel row one GEMM over a column slice of all of them).
THREE_CHANNELS = bench.BenchCase("recipe", "small-d3", (4, 3, 10, 10), (6, 3, 3, 3), 1)


@pytest.mark.parametrize("backend", ["im2col", "loop", "winograd"])
@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("case", [SMALL, THREE_CHANNELS], ids=lambda c: c.label)
def test_the_replay_shares_memory_where_the_call_did(backend, pass_, case):
    """Two operands of the replay overlap exactly where the call's did, at the same distance
    apart: the GEMMs alone see the caches as they did in the call (one operand of many GEMMs
    is read once from memory, not once per GEMM)."""
    from kernels import _profile

    with pinned_threads(1):  # one thread: the replay records its GEMMs in the call's order
        ran, replayed = _ran_and_replayed(backend, case, pass_)

    def operands(profile):
        return [
            _profile._span(spec, address)
            for gemm in profile.gemms
            for spec, address in zip((gemm.a, gemm.b, gemm.out), gemm.addresses)
            if spec is not None
        ]

    def layout(spans):
        overlaps = {
            (i, j): spans[i][0] - spans[j][0]
            for i in range(len(spans))
            for j in range(i)
            if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]
        }
        return overlaps, [low % 64 for low, _ in spans]  # and each at the call's alignment

    assert ran.gemms and layout(operands(replayed)) == layout(operands(ran))
    # the case this test is for (its weight gradient is one GEMM over the whole kernel)
    if backend == "loop" and case is THREE_CHANNELS and pass_ != "grad_kernels":
        assert layout(operands(ran))[0]


#: A case whose forward reduces over too many channels (24, for 10 outputs) to stack a kernel
#: row's offsets, with too many outputs for one GEMM to all of them; its input gradient (24
#: outputs from 10) stacks them. With 4 outputs, the forward is that one GEMM.
WIDE = bench.BenchCase("recipe", "wide", (2, 24, 6, 6), (10, 24, 3, 3), 1)
NARROW = bench.BenchCase("recipe", "narrow", (2, 24, 6, 6), (4, 24, 3, 3), 1)


@pytest.mark.parametrize(
    ("case", "pass_", "steps"),
    [(SMALL, "forward", 3), (SMALL, "grad_inputs", 3), (WIDE, "forward", 9),
     (WIDE, "grad_inputs", 3), (NARROW, "forward", 1)],
    ids=["kernel-rows-forward", "kernel-rows-grad_inputs", "offsets-forward",
         "kernel-rows-wide-grad_inputs", "scatter-forward"],
)  # fmt: skip
def test_the_replay_adds_into_its_output_where_the_call_did(case, pass_, steps):
    """The loop's correlation adds each offset's (or kernel row's) product into one grid
    (``gemm_into``): the first of a chunk writes, the others add, and its replay runs the same
    kinds of GEMM in the same order, so that the bound times the same work."""
    with pinned_threads(1):
        ran, replayed = _ran_and_replayed("loop", case, pass_)
    kinds = [(gemm.into, gemm.accumulate) for gemm in ran.gemms]
    assert kinds and kinds == [(gemm.into, gemm.accumulate) for gemm in replayed.gemms]
    assert kinds == [(True, False)] + [(True, True)] * (steps - 1)  # one chunk here


#: A batch that splits into many slices of several chunks each (see the test below).
SPLIT = bench.BenchCase("recipe", "split", (16, 8, 12, 12), (8, 8, 3, 3), 1)


@pytest.mark.parametrize("backend", ["im2col", "loop", "fft", "winograd"])
@pytest.mark.parametrize("pass_", bench.PASSES)
def test_no_thread_of_a_section_writes_what_another_touches(backend, pass_, monkeypatch):
    """Cut into 8 slices of one-image chunks: within a parallel section, no GEMM output of
    one thread overlaps an operand of another, in the call and in its replay. The replay lays
    out its operands by where the call's lay, across the whole call (``_operands``): memory
    that one thread freed and another then took would become one region there, written by
    threads running side by side, and the bound would be timed with cache lines bouncing
    between cores. Run as on many cores here, the call leaves no such region."""
    from kernels import threads

    monkeypatch.setattr(threads, "budget", lambda: 8)
    monkeypatch.setattr(threads, "THREAD_COST_ELEMENTS", 1e-9)
    monkeypatch.setattr(threads, "NUMPY_GIL_OUTPUTS", 0)
    module = kernels.get(backend).module if backend in kernels.available() else None
    if hasattr(module, "CHUNK_BYTES"):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1)
    ran, replayed = _ran_and_replayed(backend, SPLIT, pass_)
    in_call = _spans_by_section(ran)
    for name, spans in (("call", in_call), ("replay", _spans_by_section(replayed))):
        conflicts = [
            (section, writer, other)
            for section, ops in spans.items()
            for writer in ops
            if writer[1] == "out"
            for other in ops
            if other[0] != writer[0] and other[2] < writer[3] and writer[2] < other[3]
        ]
        assert not conflicts, f"{name}: {conflicts[:3]}"
    if pass_ == "grad_kernels" or backend == "fft":  # every such pass splits
        assert any(len({op[0] for op in ops}) > 2 for ops in in_call.values())


def _spans_by_section(profile) -> dict[int, list[tuple]]:
    """(thread, role, first byte, end byte) of every GEMM operand run in a parallel section."""
    from kernels import _profile

    spans: dict[int, list[tuple]] = {}
    for gemm in profile.gemms:
        if gemm.section == 0:
            continue
        roles = zip(("a", "b", "out"), (gemm.a, gemm.b, gemm.out), gemm.addresses)
        for role, spec, address in roles:
            if spec is not None and address is not None:
                span = (gemm.thread, role, *_profile._span(spec, address))
                spans.setdefault(gemm.section, []).append(span)
    return spans


def _ran_and_replayed(backend: str, case, pass_: str):
    """The profiles of one call of ``backend`` on ``case`` and of its GEMMs' replay (skips a
    backend that does not run here)."""
    if backend not in kernels.available() or case.unsupported_by(backend):
        pytest.skip(f"{backend} does not run here")
    from kernels import _profile

    call = bench.make_call(backend, case, pass_)
    with _profile.profiled() as ran:
        call.fn()
    replay = _profile.replay_plan(ran)
    with _profile.profiled() as replayed:
        replay()
    return ran, replayed


def test_profile_of_torch_records_no_gemm():
    call = bench.make_call("torch", SMALL, "forward")
    stages, gemm_calls, replay = bench.profile_call(call.fn)
    assert (stages, gemm_calls, replay) == ({}, 0, None)


# --- memory, rounds, metadata ---------------------------------------------------------------

MEBIBYTE = 1 << 20


def _allocate_32_mib():
    return np.ones(32 * MEBIBYTE // 8)


def test_peak_memory_sees_an_allocating_call():
    peak = bench.peak_memory_bytes(_allocate_32_mib)
    assert 30 * MEBIBYTE <= peak <= 64 * MEBIBYTE
    assert bench.memory_method() in ("rss-hwm", "tracemalloc")


def test_peak_memory_sees_torch_allocations():
    torch = pytest.importorskip("torch")
    if bench.memory_method() != "rss-hwm":
        pytest.skip("only /proc's high-water mark sees torch's allocator")
    peak = bench.peak_memory_bytes(lambda: torch.ones(32 * MEBIBYTE // 4).numpy())
    assert 30 * MEBIBYTE <= peak <= 64 * MEBIBYTE


def test_peak_memory_tracemalloc_fallback(monkeypatch):
    from nnbench.bench import memory

    monkeypatch.setattr(memory, "memory_method", lambda: "tracemalloc")
    peak = memory.peak_memory_bytes(_allocate_32_mib)
    assert 30 * MEBIBYTE <= peak <= 64 * MEBIBYTE


@pytest.mark.parametrize(
    ("seconds", "budget", "rounds"), [(0.0, 1.0, 100), (1e-5, 1.0, 100), (0.1, 1.0, 10), (5.0, 1.0, 3)]
)  # fmt: skip
def test_choose_rounds_fits_the_budget_within_bounds(seconds, budget, rounds):
    assert bench.choose_rounds(seconds, budget) == rounds


def test_extra_info_describes_a_case_and_a_caseless_record():
    call = bench.make_call("torch", TINY, "forward")
    verdict = call.check(call())
    info = bench.extra_info("torch", "forward", TINY, threads=2, peak_memory=123,
                            memory_method="rss-hwm", verdict=verdict, gemm_bound_s=None)  # fmt: skip
    assert info["flops"] == TINY.flops and info["case_id"] == TINY.id
    assert info["input_shape"] == list(TINY.input_shape) and info["suite"] == "recipe"
    assert info["verdict"]["passed"] is True and info["max_abs_error"] == verdict.max_abs_error
    assert "gemm_bound_s" in info and info["threads"] == 2
    step = bench.extra_info("numpy", "step", suite="step", label="mnist", flops=10)
    assert (step["suite"], step["label"], step["flops"], step["input_shape"]) == (
        "step", "mnist", 10, None,
    )  # fmt: skip
    assert step["verdict"] is None


def test_worst_verdict_prefers_a_failure():
    call = bench.layer_call("torch", TINY)
    outputs, grad_inputs = call()
    assert bench.worst_verdict(call.check((outputs, grad_inputs))).passed
    worst = bench.worst_verdict(call.check((outputs, grad_inputs * 2)))
    assert not worst.passed and worst.name.endswith("grad_inputs")


def test_the_suite_times_auto_and_its_candidates_in_the_same_rounds(tmp_path, monkeypatch):
    """One real auto benchmark through the suite: auto itself, every candidate its plan timed
    to the end and the control (auto's choice a second time) get one time per timed round (the
    warm-up round dropped), at least the suite's minimum for calls beside, and the medians
    recorded are those of the rounds recorded."""
    import json
    import statistics

    from tests.benchmarks.conftest import BESIDE_MIN_ROUNDS

    monkeypatch.setenv("NNBENCH_AUTO_CACHE", str(tmp_path / "plans.json"))
    out = tmp_path / "run.json"
    code = bench.run_suite(out, keyword="test_convolve and auto and forward and conv3", budget=1e-4)
    assert code == 0
    (record,) = json.loads(out.read_text())["benchmarks"]
    extra = record["extra_info"]
    timed = {name for name, seconds in extra["auto_seconds"].items() if seconds is not None}
    rounds = extra["beside_rounds_s"]
    assert set(rounds) == {"auto", bench.CONTROL} | timed and len(timed) >= 2
    assert extra["auto_choice"] in timed
    # warmed up: planned now, and the finalists' trial, if there were several, over
    finalists, trial = extra["auto_finalists"], extra["auto_trial"]
    assert extra["auto_source"] == "measured" and extra["auto_choice"] in finalists
    assert (trial is None) == (len(finalists) == 1) and (
        trial is None or set(trial) == set(finalists)
    )
    assert {len(times) for times in rounds.values()} == {record["stats"]["rounds"]}
    assert record["stats"]["rounds"] == BESIDE_MIN_ROUNDS  # the budget alone gives MIN_ROUNDS
    assert extra["beside_median_s"] == {
        name: pytest.approx(statistics.median(times), abs=1e-7) for name, times in rounds.items()
    }


def test_each_benchmark_session_plans_auto_afresh(tmp_path, monkeypatch):
    """auto's choices are made in the run that times them: neither taken from nor written to
    the user cache, nor kept from an earlier session in the same process; the environment is
    put back afterwards."""
    import json

    from nnbench import auto

    monkeypatch.delenv(auto.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    user_cache = auto.cache_path()
    assert str(user_cache).startswith(str(tmp_path))  # platformdirs follows XDG_CACHE_HOME
    sources = []
    for index in range(2):
        out = tmp_path / f"run{index}.json"
        keyword = "test_convolve and auto and forward and conv3"
        assert bench.run_suite(out, keyword=keyword, budget=1e-4) == 0
        (record,) = json.loads(out.read_text())["benchmarks"]
        sources.append(record["extra_info"]["auto_source"])
        assert auto.CACHE_ENV not in os.environ
    assert sources == ["measured", "measured"]
    assert not user_cache.exists()
    auto.forget()


def test_the_overhead_benchmark_runs_enough_rounds_for_its_ratio(tmp_path):
    """The engine and twin steps, interleaved: at least the suite's minimum of rounds whatever
    the budget, one twin time per timed round, and the ratio of the medians recorded."""
    import json
    import statistics

    from tests.benchmarks.conftest import BESIDE_MIN_ROUNDS

    if "torch" not in kernels.available():
        pytest.skip("the torch kernel is not available")
    out = tmp_path / "run.json"
    assert bench.run_suite(out, keyword="test_engine_overhead", budget=1e-4) == 0
    (record,) = json.loads(out.read_text())["benchmarks"]
    extra, stats = record["extra_info"], record["stats"]
    assert stats["rounds"] == BESIDE_MIN_ROUNDS == len(extra["twin_times_s"])
    assert extra["twin_median_s"] == pytest.approx(statistics.median(extra["twin_times_s"]))
    assert extra["ratio"] == pytest.approx(stats["median"] / extra["twin_median_s"])
