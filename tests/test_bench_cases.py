"""Unit tests of ``nnbench.bench``, the benchmark cases and timed calls (no timing asserts)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

import kernels
from kernels._registry import load
from nnbench import bench, recipes

TINY = bench.Case("recipe", "tiny", (2, 3, 6, 5), (4, 3, 3, 3), 1)
TINY_VALID = bench.Case("channels", "tiny-valid", (2, 3, 7, 6), (2, 3, 4, 5), 0)

RECORD_KEYS = {"name", "fullname", "group", "params", "param", "extra_info", "stats"}
STATS_KEYS = {"min", "max", "mean", "median", "stddev", "rounds"}
EXTRA_INFO_KEYS = {
    "backend", "pass", "suite", "label", "input_shape", "kernel_shape", "padding", "dtype",
    "flops", "blas_threads", "torch_threads", "threads", "peak_memory_bytes", "memory_method",
    "max_abs_error",
}  # fmt: skip


# --- cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [TINY, TINY_VALID], ids=lambda c: c.id)
def test_flops_is_two_multiply_adds_per_term(case):
    n, d, h, w = case.input_shape
    c, _, kh, kw = case.kernel_shape
    oh, ow = h - kh + 1 + 2 * case.padding, w - kw + 1 + 2 * case.padding
    assert case.output_shape == (n, c, oh, ow)
    assert case.flops == 2 * n * c * oh * ow * d * kh * kw
    assert case.flops == recipes.conv_flops(case.input_shape, case.kernel_shape, case.padding)


def test_flops_by_hand():
    case = bench.Case("recipe", "conv2", (128, 16, 16, 16), (32, 16, 3, 3), 1)
    assert case.flops == 2 * 128 * 32 * 16 * 16 * 16 * 3 * 3 == 301_989_888


def test_case_ids_read_like_shapes():
    assert bench.Case("recipe", "x", (128, 16, 16, 16), (32, 16, 3, 3), 1).id == (
        "k3p1[128,16,16,16]->32"
    )
    assert TINY_VALID.id == "k4x5p0[2,3,7,6]->2"
    assert bench.Case("batch", "x", (1, 2, 5, 5), (3, 2, 3, 3), 1, "float64").id.endswith(
        "-float64"
    )


def test_reduction_lengths():
    n, _, oh, ow = TINY.output_shape
    assert TINY.reduction_length("forward") == 3 * 3 * 3
    assert TINY.reduction_length("grad_inputs") == 4 * 3 * 3
    assert TINY.reduction_length("grad_kernels") == n * oh * ow
    with pytest.raises(ValueError, match="pass_"):
        TINY.reduction_length("backward")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suite": "nope"}, "suite"),
        ({"kernel_shape": (4, 2, 3, 3)}, "channel mismatch"),
        ({"kernel_shape": (4, 3, 9, 9), "padding": 0}, "empty output"),
        ({"padding": -1}, "padding"),
        ({"dtype": "float16"}, "dtype"),
        ({"input_shape": (2, 3, 6)}, "4 entries"),
    ],
)
def test_bad_cases_are_refused(kwargs, message):
    fields = {**TINY.as_dict(), **kwargs}
    with pytest.raises(ValueError, match=message):
        bench.Case(**fields)


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
        assert cases, suite
        assert {case.suite for case in cases} == {suite}
        assert len({case.label for case in cases}) == len(cases), suite
        for case in cases:
            assert case.dtype == "float32"
            assert case.same_padding, case.id  # every case is also a Conv2D layer
            assert case.flops > 0
    sizes = {case.kernel_shape[2] for case in suites["kernel_size"]}
    assert sizes == set(bench.KERNEL_SIZES) == {1, 3, 5, 7, 9, 11}
    # each sweep varies exactly one thing
    assert len({(c.input_shape[0], c.input_shape[1]) for c in suites["kernel_size"]}) == len(
        bench.KERNEL_SWEEP_WIDTHS
    )
    assert len({c.input_shape[2:] for c in suites["channels"]}) == 1
    assert len({c.input_shape[1:] + c.kernel_shape for c in suites["batch"]}) == 1
    quick = bench.quick_cases()
    assert quick and set(quick) <= set(everything)


def test_recipe_cases_are_the_recipe_layers_at_its_batch():
    model = recipes.build_cifar10_model(kernel=kernels.available()[0], preset="fast")
    batch = recipes.CIFAR10_PRESETS["fast"].batch_size
    shapes = recipes.conv_layer_shapes(model, batch)
    cases = bench.recipe_cases("fast")
    assert [(c.input_shape, c.kernel_shape, c.padding) for c in cases] == [
        (s["input"], s["kernels"], s["padding"]) for s in shapes
    ]
    assert [c.label for c in cases] == [f"fast/conv{i}" for i in range(1, len(shapes) + 1)]


# --- make_call and its check ----------------------------------------------------------------


@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("case", [TINY, TINY_VALID], ids=lambda c: c.id)
@pytest.mark.parametrize("backend", kernels.available())
def test_make_call_runs_one_call_and_checks_it(backend, case, pass_, rng):
    if bench.unsupported_reason(backend, case):
        pytest.skip(bench.unsupported_reason(backend, case))
    fn, check = bench.make_call(backend, case, pass_, rng)
    error = check(fn())
    assert 0.0 <= error < 1e-3


def test_an_int_seed_shares_operands_between_backends_and_passes():
    first = bench.operands(TINY, 7)
    assert bench.operands(TINY, 7) is first
    assert bench.operands(TINY, 8) is not first
    fresh = bench.operands(TINY, np.random.default_rng(7))
    assert fresh is not first
    np.testing.assert_array_equal(fresh.x, first.x)


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
def test_check_fails_a_wrong_backend(monkeypatch, wrong, pass_, rng):
    name = _fake_backend(monkeypatch, f"wrong-{wrong}", WRONG_BACKENDS[wrong])
    case = bench.Case("recipe", "small", (4, 8, 10, 10), (6, 8, 3, 3), 1)
    fn, check = bench.make_call(name, case, pass_, rng)
    with pytest.raises(AssertionError, match=re.escape(f"{name} {pass_} {case.id}: ")):
        check(fn())


def test_check_fails_a_backend_that_writes_into_its_inputs(monkeypatch, rng):
    def scribbles(x, k, p):
        result = _torch_convolve(x, k, p)
        x[0, 0, 0, 0] += 1.0
        return result

    name = _fake_backend(monkeypatch, "scribbles", scribbles)
    fn, check = bench.make_call(name, TINY, "forward", rng)
    with pytest.raises(AssertionError, match="modified its input"):
        check(fn())


def test_check_fails_a_wrong_shape_and_a_non_array(monkeypatch, rng):
    fn, check = bench.make_call("torch", TINY, "forward", rng)
    with pytest.raises(AssertionError, match="shape"):
        check(fn()[:, :, 1:])
    with pytest.raises(TypeError, match="not a numpy.ndarray"):
        check(fn().tolist())


def test_unsupported_case_raises_with_the_backends_reason(monkeypatch, rng):
    name = _fake_backend(
        monkeypatch, "picky", _torch_convolve, supports=lambda x, k, p, dtype: "kernels too big"
    )
    assert bench.unsupported_reason(name, TINY) == "kernels too big"
    assert bench.unsupported_reason("torch", TINY) is None
    with pytest.raises(bench.Unsupported, match="kernels too big"):
        bench.make_call(name, TINY, "forward", rng)
    with pytest.raises(bench.Unsupported, match="kernels too big"):
        bench.layer_call(name, TINY, rng)


def test_make_call_refuses_an_unknown_pass(rng):
    with pytest.raises(ValueError, match="pass_"):
        bench.make_call("torch", TINY, "backward", rng)


# --- layer, step, sgemm ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", kernels.available())
def test_layer_call_is_checked_against_the_reference(backend, rng):
    call = bench.layer_call(backend, TINY, rng)
    assert call.flops == 3 * TINY.flops
    outputs, grad_inputs = call()
    assert outputs.shape == TINY.output_shape and grad_inputs.shape == TINY.input_shape
    assert call.check((outputs, grad_inputs)) < 1e-3
    with pytest.raises(AssertionError, match="outputs"):
        call.check((outputs + 1, grad_inputs))


def test_layer_call_needs_same_padding(rng):
    with pytest.raises(ValueError, match="same"):
        bench.layer_call("torch", TINY_VALID, rng)


def test_train_step_call_mnist(rng):
    spec = bench.STEP_MODELS["mnist"]()
    call = bench.train_step_call(spec, None, rng)
    model = spec.build(None)
    assert call.flops == 3 * recipes.model_forward_flops(model) * spec.batch_size
    loss = call()
    assert math.isfinite(loss)
    call.check(loss)
    with pytest.raises(AssertionError, match="loss"):
        call.check(float("nan"))


@pytest.mark.slow
def test_train_step_call_cifar10(rng):
    call = bench.train_step_call("cifar10-fast", "torch", rng)
    call.check(call())
    assert call.flops > 3 * sum(case.flops for case in bench.recipe_cases("fast"))


def test_sgemm_call_and_peak(rng):
    call = bench.sgemm_call(64, rng)
    assert call.flops == 2 * 64**3
    result = call()
    assert call.check(result) < 1e-3
    with pytest.raises(AssertionError, match="sgemm"):
        call.check(result * 1.01)
    assert bench.sgemm_gflops(64, repeats=1) > 0


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
    monkeypatch.setattr(bench, "memory_method", lambda: "tracemalloc")
    peak = bench.peak_memory_bytes(_allocate_32_mib)
    assert 30 * MEBIBYTE <= peak <= 64 * MEBIBYTE


@pytest.mark.parametrize(
    ("seconds", "budget", "rounds"),
    [(0.0, 1.0, bench.MAX_ROUNDS), (1e-5, 1.0, bench.MAX_ROUNDS), (0.1, 1.0, 10), (5.0, 1.0, 3)],
)
def test_choose_rounds_fits_the_budget_within_bounds(seconds, budget, rounds):
    assert bench.choose_rounds(seconds, budget) == rounds


def test_extra_info_describes_a_case_and_a_caseless_record():
    info = bench.extra_info(
        "torch", "forward", TINY, threads=2, peak_memory=123, max_abs_error=1e-6
    )
    assert set(info) == EXTRA_INFO_KEYS
    assert info["flops"] == TINY.flops
    assert info["input_shape"] == list(TINY.input_shape) and info["suite"] == "recipe"
    assert info["memory_method"] == bench.memory_method()
    step = bench.extra_info("numpy", "step", suite="step", label="mnist", flops=10)
    assert set(step) == EXTRA_INFO_KEYS
    assert (step["suite"], step["label"], step["flops"], step["input_shape"]) == (
        "step", "mnist", 10, None,
    )  # fmt: skip


# --- run_quick ------------------------------------------------------------------------------


def test_run_quick_returns_pytest_benchmark_shaped_records():
    backends = kernels.available()
    records = bench.run_quick(cases=[TINY], threads=1, repeats=2, sgemm_n=64)
    assert len(records) == 1 + len(backends) * len(bench.PASSES)
    sgemm, *conv = records
    assert sgemm["extra_info"]["pass"] == "sgemm" and sgemm["group"] == "sgemm"
    assert sgemm["extra_info"]["flops"] == 2 * 64**3
    for record in records:
        assert RECORD_KEYS <= set(record)
        assert STATS_KEYS <= set(record["stats"])
        assert record["stats"]["rounds"] == 2
        stats = record["stats"]
        assert 0 <= stats["min"] <= stats["median"] <= stats["max"]
        assert set(record["extra_info"]) == EXTRA_INFO_KEYS
        assert record["extra_info"]["threads"] == 1
        assert record["extra_info"]["peak_memory_bytes"] >= 0
    seen = {(r["extra_info"]["backend"], r["extra_info"]["pass"]) for r in conv}
    assert seen == {(b, p) for b in backends for p in bench.PASSES}
    for record in conv:
        backend, pass_ = record["extra_info"]["backend"], record["extra_info"]["pass"]
        assert record["name"] == f"test_convolve[{backend}-{pass_}-{TINY.id}]"
        assert record["group"] == f"{TINY.id} {pass_}"
        assert record["extra_info"]["max_abs_error"] < 1e-3
        assert record["params"] == {"backend": backend, "pass_": pass_, "case_id": TINY.id}


def test_run_quick_leaves_out_unsupported_backends(monkeypatch):
    name = _fake_backend(
        monkeypatch, "picky", _torch_convolve, supports=lambda x, k, p, dtype: "no thanks"
    )
    records = bench.run_quick(cases=[TINY], backends=["torch", name], repeats=1, sgemm_n=32)
    assert {r["extra_info"]["backend"] for r in records[1:]} == {"torch"}
